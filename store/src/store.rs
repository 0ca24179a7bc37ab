//! The open store: encrypted object store, Delta tables, and DataFusion sessions over them.

use crate::encryption::{self, DataKeyring, EncryptedStore};
use crate::error::StoreError;
use crate::exclusion;
use crate::location::{Location, PlainStores, plain_stores};
use crate::schema::Table;
use deltalake::DeltaTable;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::logstore::{LogStoreRef, StorageConfig, default_logstore};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use std::path::Path;
use std::sync::Arc;
use tokumei_ingest::config::StoreConfig;
use tokumei_ingest::keyservice::KeyService;
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
            erasure_log: tokumei_ingest::config::resolve(home, &config.erasure_log),
            plain,
            encrypted,
            keys: ring,
        };
        for t in Table::ALL {
            store.table(t).await?;
        }
        Ok(store)
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
        let mut table = DeltaTable::new(self.log_store(t)?);
        match table.load().await {
            Ok(()) => Ok(table),
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

    /// Names the research view of `t` as it is now: the Delta versions of the table and of the opt-out
    /// registry that filters it. Two equal names read the same patients; any write to either (ingest,
    /// erasure, opt-out, compaction) gives a new name. Statistics published from linked small-cell
    /// tables are audited per name, so a table of a changed population is never taken for the same one.
    pub async fn research_snapshot(&self, t: Table) -> Result<String, StoreError> {
        let version = |table: &DeltaTable| table.version().map_or(-1, |v| v as i64);
        let data = self.table(t).await?;
        let registry = self.table(Table::OptOuts).await?;
        Ok(format!(
            "{}@{}+{}@{}",
            t.name(),
            version(&data),
            Table::OptOuts.name(),
            version(&registry)
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

    /// A DataFusion session with every table registered under its name. In the [`View::Research`] view the
    /// clinical tables are the opt-out-filtered views of [`exclusion`]; the raw tables are not registered.
    pub async fn session(&self, view: View) -> Result<SessionContext, StoreError> {
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
        for (t, provider) in providers {
            match view {
                View::Operator => {
                    ctx.register_table(t.name(), provider)?;
                }
                View::Research if t.is_clinical() => {
                    ctx.register_table(t.name(), exclusion::filtered(&ctx, provider, registry.clone())?)?;
                }
                View::Research => {}
            }
        }
        Ok(ctx)
    }
}
