//! The open store: encrypted object store, Delta tables, and DataFusion sessions over them.

use crate::encryption::{self, DataKeyring, EncryptedStore};
use crate::error::StoreError;
use crate::exclusion;
use crate::location::{Location, PlainStores, plain_stores};
use crate::persons::{self, Persons};
use crate::schema::{PhysicalSchema, Table};
use deltalake::DeltaTable;
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::logstore::{LogStoreRef, StorageConfig, default_logstore};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use std::path::Path;
use std::sync::Arc;
use tokumei_keys::KeyService;
use tokumei_platform::config::StoreConfig;
use url::Url;

/// Which rows a session may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every row, including opted-out patients: for operators and the core's own maintenance only.
    Operator,
    /// Opted-out and erased patients removed: every read path used for anonymisation, statistics and release.
    Research,
}

/// An open core store.
pub struct Store {
    location: Location,
    config: StoreConfig,
    erasure_log: std::path::PathBuf,
    plain: PlainStores,
    encrypted: Arc<dyn ObjectStore>,
    keys: Arc<DataKeyring>,
    /// When an opt-out or an erasure last changed who the research view holds (unix ms, this process's clock; the
    /// time it opened until then, since it cannot know what changed before): reported to the policy service with
    /// every poll for orders, so that a release package read before it is not delivered.
    exclusions_changed_at_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.location.describe())
    }
}

/// Table properties every table is created with.
const TABLE_PROPERTIES: [(&str, &str); 2] = [
    // Frequent checkpoints keep opening fast and let erasure drop old log entries soon.
    ("delta.checkpointInterval", "20"),
    // Old log entries are removed by erasure explicitly; keep the rest for a week of time travel.
    ("delta.logRetentionDuration", "interval 7 days"),
];

/// A DataFusion session over the research view — opted-out and erased patients excluded in the one exclusion
/// point (`exclusion.rs`), one person per patient — made only by [`Store::research_session`]. Readers that feed a
/// release or a statistic take this type, so an operator's session (which sees everyone) cannot be handed to them.
pub struct ResearchSession(SessionContext);

impl ResearchSession {
    /// The DataFusion context (the research view's tables under their names, nothing else).
    pub fn context(&self) -> &SessionContext {
        &self.0
    }
}

/// A DataFusion session over the operator view (everyone, the opt-out registry included), made only by
/// [`Store::operator_session`].
pub struct OperatorSession(SessionContext);

impl OperatorSession {
    /// The DataFusion context.
    pub fn context(&self) -> &SessionContext {
        &self.0
    }
}

impl Store {
    /// Opens the store (creating missing tables), unwrapping its data keys through the key service.
    pub async fn open(config: &StoreConfig, home: &Path, keys: &dyn KeyService) -> Result<Store, StoreError> {
        let location = Location::from_config(config, home)?;
        let plain = plain_stores(&location, config)?;
        let (ring, _file) = encryption::data_keys::open(plain.raw.as_ref(), keys).await?;
        let ring = Arc::new(ring);
        let encrypted: Arc<dyn ObjectStore> = Arc::new(EncryptedStore::new(
            plain.root.clone(),
            ring.clone(),
            plain.fsync_root.clone(),
        ));
        let store = Store {
            location,
            config: config.clone(),
            erasure_log: tokumei_platform::config::resolve(home, &config.erasure_log),
            plain,
            encrypted,
            keys: ring,
            exclusions_changed_at_ms: Arc::new(std::sync::atomic::AtomicI64::new(
                chrono::Utc::now().timestamp_millis(),
            )),
        };
        for t in Table::ALL {
            store.table(t).await?;
        }
        Ok(store)
    }

    /// Notes that an opt-out or an erasure has just changed the research view (after it is committed).
    pub fn note_exclusions_changed(&self) {
        self.exclusions_changed_at_ms.fetch_max(
            chrono::Utc::now().timestamp_millis(),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// When the research view last lost a patient to an opt-out or an erasure, as far as this process knows (see
    /// the field's documentation).
    pub fn exclusions_changed_at_ms(&self) -> i64 {
        self.exclusions_changed_at_ms.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Where the store is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Where erasure certificates are appended.
    pub fn erasure_log_path(&self) -> std::path::PathBuf {
        self.erasure_log.clone()
    }

    /// The unencrypted store rooted at the location (key file only).
    pub fn raw_store(&self) -> Arc<dyn ObjectStore> {
        self.plain.raw.clone()
    }

    /// Number of data keys in use.
    pub fn data_key_count(&self) -> usize {
        self.keys.len()
    }

    /// URL of a table.
    pub fn table_url(&self, t: Table) -> Result<Url, StoreError> {
        self.location.table_url(t.name())
    }

    fn log_store(&self, t: Table) -> Result<LogStoreRef, StoreError> {
        let url = self.table_url(t)?;
        let prefix = ObjectPath::from_url_path(url.path()).map_err(|e| StoreError::Object(e.into()))?;
        let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(self.encrypted.clone(), prefix));
        Ok(default_logstore(
            prefixed,
            self.encrypted.clone(),
            &url,
            &StorageConfig::default(),
        ))
    }

    /// Loads a table at its latest version, creating it if it does not exist yet.
    pub async fn table(&self, t: Table) -> Result<DeltaTable, StoreError> {
        if let Some(dir) = self.location.local_dir() {
            // Delta's kernel refuses a local table location that does not exist yet.
            let dir = dir.join(t.name());
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        }
        let log_store = self.log_store(t)?;
        // Looked up first rather than inferred from a failed load: the kernel logs a failed load at ERROR
        // ("No files in log segment"), which an operator would read as a fault on every new store.
        let exists = log_store.is_delta_table_location().await?;
        let mut table = DeltaTable::new(log_store);
        let loaded = if exists {
            table.load().await
        } else {
            Err(deltalake::DeltaTableError::NotATable(t.name().to_owned()))
        };
        match loaded {
            Ok(()) => migrate(table, t).await,
            Err(deltalake::DeltaTableError::NotATable(_)) => {
                let created = table
                    .create()
                    .with_table_name(t.name())
                    .with_columns(t.delta_columns())
                    .with_configuration(TABLE_PROPERTIES.iter().map(|(k, v)| (*k, Some(*v))))
                    .await;
                match created {
                    Ok(t) => Ok(t),
                    // Created concurrently by another process: load theirs.
                    Err(_) => {
                        let mut again = DeltaTable::new(self.log_store(t)?);
                        again.load().await?;
                        Ok(again)
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Names the research view of `t` as it is now: the Delta versions of the table, of the opt-out registry
    /// that filters it and of `patients`, whose links key its rows by person. Two equal names read the same patients; any write to either (ingest,
    /// erasure, opt-out, compaction) gives a new name. Statistics published from linked small-cell
    /// tables are audited per name, so a table of a changed population is never taken for the same one.
    pub async fn research_snapshot(&self, t: Table) -> Result<String, StoreError> {
        let version = |table: &DeltaTable| table.version().map_or(-1, |v| v as i64);
        let data = self.table(t).await?;
        let registry = self.table(Table::OptOuts).await?;
        // Research views key rows by person, and persons come from the links in `patients`.
        let patients = self.table(Table::Patients).await?;
        Ok(format!(
            "{}@{}+{}@{}+{}@{}",
            t.name(),
            version(&data),
            Table::OptOuts.name(),
            version(&registry),
            Table::Patients.name(),
            version(&patients)
        ))
    }

    /// A bare session whose object stores decrypt: for Delta operations that read files (delete, optimize).
    pub fn operation_session(&self) -> Result<Arc<dyn deltalake::datafusion::catalog::Session>, StoreError> {
        Ok(Arc::new(self.bare_session()?.state()))
    }

    /// A session with no tables registered whose object stores decrypt (Delta's planner installed).
    pub fn bare_session(&self) -> Result<SessionContext, StoreError> {
        let ctx = deltalake::delta_datafusion::create_session().into_inner();
        self.register_encrypted(&ctx)?;
        Ok(ctx)
    }

    fn register_encrypted(&self, ctx: &SessionContext) -> Result<(), StoreError> {
        // DataFusion ships a plain `file://` store; every read must go through the decrypting store instead.
        let table_url = self.table_url(Table::Patients)?;
        let root = Url::parse(&format!(
            "{}://{}",
            table_url.scheme(),
            table_url.host_str().unwrap_or("")
        ))
        .map_err(|e| StoreError::Config(e.to_string()))?;
        ctx.runtime_env().register_object_store(&root, self.encrypted.clone());
        Ok(())
    }

    /// A session over the research view: what anonymisation, release builds and statistics read.
    pub async fn research_session(&self) -> Result<ResearchSession, StoreError> {
        Ok(ResearchSession(self.session(View::Research).await?))
    }

    /// A session over the operator view (opted-out patients and the registry included): operators' queries and
    /// the regulator's counts, never a release.
    pub async fn operator_session(&self) -> Result<OperatorSession, StoreError> {
        Ok(OperatorSession(self.session(View::Operator).await?))
    }

    /// A DataFusion session with every table registered under its name. In the [`View::Research`] view the
    /// clinical tables are the opt-out-filtered views of [`exclusion`]; the raw tables are not registered.
    pub(crate) async fn session(&self, view: View) -> Result<SessionContext, StoreError> {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        self.register_encrypted(&ctx)?;
        let mut providers = Vec::new();
        for t in Table::ALL {
            let table = self.table(t).await?;
            providers.push((t, table.table_provider().await?));
        }
        let registry = providers
            .iter()
            .find(|(t, _)| *t == Table::OptOuts)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| StoreError::Invalid("no opt-out registry".into()))?;
        let person_keys = match view {
            View::Research => {
                let persons = Persons::load(self).await?;
                if persons.merged() == 0 {
                    None
                } else {
                    let batch = persons.person_keys()?;
                    let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?);
                    Some(table)
                }
            }
            View::Operator => None,
        };
        for (t, provider) in providers {
            match view {
                View::Operator => {
                    ctx.register_table(t.name(), provider)?;
                }
                View::Research if t.is_clinical() => {
                    let filtered = exclusion::filtered(&ctx, provider, registry.clone())?;
                    let research = persons::keyed_by_person(&ctx, filtered, person_keys.clone())?;
                    ctx.register_table(t.name(), research)?;
                }
                View::Research => {}
            }
        }
        Ok(ctx)
    }
}

/// Appends the columns `t` gained since `table` was created ([`Table::added_columns`]); a no-op when current.
async fn migrate(table: DeltaTable, t: Table) -> Result<DeltaTable, StoreError> {
    let present: Vec<String> = table
        .snapshot()?
        .schema()
        .fields()
        .map(|f| f.name().to_string())
        .collect();
    let missing: Vec<_> = t
        .delta_columns()
        .into_iter()
        .filter(|c| t.added_columns().contains(&c.name().as_str()) && !present.iter().any(|p| p == c.name()))
        .collect();
    if missing.is_empty() {
        return Ok(table);
    }
    tracing::info!(
        table = t.name(),
        columns = missing.len(),
        "adding columns to a table of an earlier schema"
    );
    let log_store = table.log_store();
    match table.add_columns().with_fields(missing).await {
        Ok(migrated) => Ok(migrated),
        // Another process migrated it first: take theirs.
        Err(first) => {
            let mut again = DeltaTable::new(log_store);
            again.load().await?;
            let now: Vec<String> = again
                .snapshot()?
                .schema()
                .fields()
                .map(|f| f.name().to_string())
                .collect();
            if t.added_columns().iter().all(|c| now.iter().any(|n| n == c)) {
                Ok(again)
            } else {
                Err(first.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persons::Persons;
    use deltalake::arrow::array::{BooleanArray, Date32Array, StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::record_batch::RecordBatch;
    use deltalake::protocol::SaveMode;
    use tokumei_keys::local::{LocalKeyring, Passphrase};

    /// A `patients` table written before `id4_key` existed: its columns are appended on open, its rows read
    /// null, and research reads it as before.
    #[tokio::test]
    async fn a_table_of_the_earlier_schema_is_migrated_on_open() {
        let home = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::open_or_create(
            &home.path().join("keyring.json"),
            &Passphrase::Value(zeroize::Zeroizing::new("test passphrase".into())),
        )
        .unwrap();
        let store = Store::open(&StoreConfig::default(), home.path(), &ring).await.unwrap();
        // Replace `patients` with a table of the first schema holding one row.
        let dir = home.path().join("store").join("patients");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let old: Vec<_> = Table::Patients
            .delta_columns()
            .into_iter()
            .filter(|c| c.name() != "id4_key")
            .collect();
        let created = DeltaTable::new(store.log_store(Table::Patients).unwrap())
            .create()
            .with_columns(old.clone())
            .await
            .unwrap();
        let schema = Arc::new(
            Table::Patients
                .arrow_schema()
                .project(&(0..old.len()).collect::<Vec<_>>())
                .unwrap(),
        );
        let text = |v: &str| Arc::new(StringArray::from(vec![v])) as _;
        let row = RecordBatch::try_new(
            schema,
            vec![
                text("aa"),
                text("INSURED"),
                text("bb"),
                text("1310000017"),
                text("b1"),
                Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
                Arc::new(Date32Array::from(vec![Some(0)])),
                text("F"),
                text("100"),
                text("131016"),
                text("13"),
                Arc::new(Date32Array::from(vec![None])),
                Arc::new(BooleanArray::from(vec![false])),
            ],
        )
        .unwrap();
        created.write(vec![row]).with_save_mode(SaveMode::Append).await.unwrap();

        let migrated = store.table(Table::Patients).await.unwrap();
        let names: Vec<String> = migrated
            .snapshot()
            .unwrap()
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(names.last().map(String::as_str), Some("id4_key"));
        // Opening again is a no-op (no new version).
        let version = migrated.version();
        assert_eq!(store.table(Table::Patients).await.unwrap().version(), version);
        assert_eq!(Persons::load(&store).await.unwrap().merged(), 0);
        let ctx = store.session(View::Research).await.unwrap();
        let rows = ctx
            .sql("SELECT count(*) AS n FROM patients WHERE linkage_key = 'aa'")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(rows[0].num_rows(), 1);
        let n = rows[0]
            .column(0)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(n.value(0), 1);
    }
}
