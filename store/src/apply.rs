//! Applies spool entries to the tables exactly once.
//!
//! Every table commit carries a Delta application transaction (`txn`) with app id [`APP_ID`] and, as version,
//! the spool sequence number of the last entry it contains ([`Position::to_seq`]). The transaction is part of
//! the same atomic commit as the rows, so after any crash a table knows exactly which entries it holds:
//! entries at or below its version are skipped, per table. Delta has no multi-table transactions, and does
//! not need one here — a table that committed a run before the crash skips it, the others apply it. The core
//! acknowledges a position to the gateway only once every table holds everything up to it.
//!
//! Opt-out and erasure entries are applied in spool order between batch runs, so records sent after an
//! opt-out never reach the tables, and an erasure removes everything sent before it.

use crate::erasure::{self, ErasureCertificate, ErasureTarget};
use crate::error::StoreError;
use crate::request_reach::{self, Reach};
use crate::rows::Rows;
use crate::schema::{PhysicalSchema, Table};
use crate::store::Store;
use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokumei_proto::spool::v1::{PatientRequestEntry, RequestKind, spool_entry::Entry};
use tokumei_spool::spool::Position;
use tokumei_spool::spool_feed::FedEntry;

/// The application id of the core's Delta transactions.
pub const APP_ID: &str = "tokumei-core-spool";

/// What one call to [`Applier::apply`] did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ApplyReport {
    /// Spool entries looked at.
    pub entries: usize,
    /// Batches whose records were written (to at least one table).
    pub batches: usize,
    /// Records written.
    pub records: usize,
    /// Rows written over all tables.
    pub rows: usize,
    /// Records dropped because their patient opted out or was erased.
    pub records_refused: usize,
    /// Opt-out requests applied.
    pub opt_outs: usize,
    /// Keys stopped because a refused record linked them to a stopped person.
    pub keys_linked: usize,
    /// Erasures carried out.
    pub erasures: Vec<ErasureCertificate>,
    /// Everything up to here is committed in every table: safe to acknowledge.
    pub committed_through: Option<Position>,
}

/// The pseudonyms no record may be stored under.
#[derive(Debug, Default)]
pub struct OptOutSet {
    linkage_keys: HashSet<String>,
    hospital_pseudonyms: HashSet<String>,
    /// (hospital code, ID4 key): keys that stop one hospital's records only.
    hospital_keys: HashSet<(String, String)>,
}

impl OptOutSet {
    /// True when a record `hospital` sent with these pseudonyms (hex) must not be stored.
    pub fn refuses(&self, hospital: &str, linkage_key: &str, id4_key: Option<&str>, hospital_pseudonym: &str) -> bool {
        let scoped = |k: &str| self.hospital_keys.contains(&(hospital.to_string(), k.to_string()));
        self.linkage_keys.contains(linkage_key)
            || id4_key.is_some_and(|k| self.linkage_keys.contains(k) || scoped(k))
            || scoped(linkage_key)
            || self.hospital_pseudonyms.contains(hospital_pseudonym)
    }

    /// True when one of these keys is stopped everywhere (not only at one hospital).
    pub fn stops_everywhere(&self, linkage_key: &str, id4_key: Option<&str>) -> bool {
        self.linkage_keys.contains(linkage_key) || id4_key.is_some_and(|k| self.linkage_keys.contains(k))
    }

    /// Number of pseudonyms held.
    pub fn len(&self) -> usize {
        self.linkage_keys.len() + self.hospital_pseudonyms.len() + self.hospital_keys.len()
    }

    fn extend(&mut self, hospital: &str, reach: &Reach) {
        self.linkage_keys.extend(reach.platform_keys.iter().cloned());
        self.hospital_keys
            .extend(reach.hospital_keys.iter().map(|k| (hospital.to_string(), k.clone())));
        self.hospital_pseudonyms
            .extend(reach.hospital_pseudonym.iter().cloned());
    }

    /// True when nobody opted out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes fed entries into the store.
pub struct Applier {
    store: Arc<Store>,
    tables: BTreeMap<Table, DeltaTable>,
    applied: BTreeMap<Table, Option<u64>>,
    opted_out: OptOutSet,
    maintenance: Arc<tokio::sync::Mutex<()>>,
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}

async fn applied_version(table: &DeltaTable) -> Result<Option<u64>, StoreError> {
    let v = table
        .snapshot()?
        .transaction_version(table.log_store().as_ref(), APP_ID)
        .await?;
    Ok(v.and_then(|v| u64::try_from(v).ok()))
}

impl Applier {
    /// Completes any interrupted erasure, then loads every table, the version each has applied, and the opt-out
    /// registry.
    pub async fn open(store: Arc<Store>, maintenance: Arc<tokio::sync::Mutex<()>>) -> Result<Applier, StoreError> {
        {
            let _guard = maintenance.lock().await;
            complete_pending_erasures(&store).await?;
        }
        let mut tables = BTreeMap::new();
        let mut applied = BTreeMap::new();
        for t in Table::ALL {
            let table = store.table(t).await?;
            applied.insert(t, applied_version(&table).await?);
            tables.insert(t, table);
        }
        // A request is applied only after every earlier batch was flushed, and writes to no clinical table: a
        // clinical table therefore holds everything up to the registry's version, whatever its own says.
        let registry_version = applied.get(&Table::OptOuts).copied().flatten();
        for t in Table::CLINICAL {
            if let Some(v) = applied.get_mut(&t) {
                *v = (*v).max(registry_version);
            }
        }
        let registry = tables
            .get(&Table::OptOuts)
            .ok_or_else(|| StoreError::Invalid("registry not open".into()))?;
        let opted_out = load_opt_outs(&store, registry).await?;
        Ok(Applier {
            store,
            tables,
            applied,
            opted_out,
            maintenance,
        })
    }

    /// The position to resume pulling after: the lowest position every table has applied (None = from the
    /// start of the spool).
    pub fn resume_after(&self) -> Option<Position> {
        let mut lowest: Option<u64> = None;
        for v in self.applied.values() {
            let v = (*v)?;
            lowest = Some(lowest.map_or(v, |l| l.min(v)));
        }
        lowest.map(Position::from_seq)
    }

    /// The opt-out set as loaded and extended.
    pub fn opted_out(&self) -> &OptOutSet {
        &self.opted_out
    }

    fn needs(&self, t: Table, seq: u64) -> bool {
        self.applied.get(&t).copied().flatten().is_none_or(|v| seq > v)
    }

    /// Applies entries in order; returns how far everything is committed.
    pub async fn apply(&mut self, entries: &[FedEntry]) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport {
            entries: entries.len(),
            ..Default::default()
        };
        let limit = self.store.config().commit_records.max(1);
        let mut rows = Rows::default();
        let mut run = Run::default();
        for fed in entries {
            let seq = fed.position.to_seq();
            match &fed.entry.entry {
                Some(Entry::Batch(b)) => {
                    let wanted: [bool; 6] = std::array::from_fn(|i| self.needs(Table::CLINICAL[i], seq));
                    let ingested_at_us = fed.entry.committed_at_ms.saturating_mul(1000);
                    let mut any = false;
                    for r in &b.records {
                        let lk = hex::encode(&r.linkage_key);
                        let hp = hex::encode(&r.hospital_pseudonym);
                        let id4 = (!r.id4_key.is_empty()).then(|| hex::encode(&r.id4_key));
                        if self.opted_out.refuses(&b.hospital_code, &lk, id4.as_deref(), &hp) {
                            report.records_refused += 1;
                            // A refused record may be the only link between a stopped person's key and another
                            // of theirs (insured key and ID4 key): the other is stopped too, or the person's
                            // earlier rows under it would stay in research.
                            if self.opted_out.stops_everywhere(&lk, id4.as_deref()) {
                                for k in std::iter::once(lk.as_str()).chain(id4.as_deref()) {
                                    if self.opted_out.linkage_keys.insert(k.to_string()) {
                                        run.linked.push((b.hospital_code.clone(), k.to_string()));
                                    }
                                }
                            }
                            continue;
                        }
                        if wanted.iter().any(|w| *w) {
                            rows.add_record(b, ingested_at_us, r, &wanted);
                            run.records += 1;
                            any = true;
                        }
                    }
                    if any {
                        run.batches.push(format!("{}/{}", b.hospital_code, b.batch_id));
                    }
                    run.last = Some(fed.position);
                    run.first.get_or_insert(fed.position);
                    if run.records >= limit {
                        self.flush(&mut rows, &mut run, &mut report).await?;
                    }
                }
                Some(Entry::Request(r)) => {
                    self.flush(&mut rows, &mut run, &mut report).await?;
                    self.apply_request(fed.position, r, &mut report).await?;
                    report.committed_through = Some(fed.position);
                }
                None => {
                    run.last = Some(fed.position);
                }
            }
        }
        self.flush(&mut rows, &mut run, &mut report).await?;
        Ok(report)
    }

    async fn flush(&mut self, rows: &mut Rows, run: &mut Run, report: &mut ApplyReport) -> Result<(), StoreError> {
        let Some(last) = run.last else {
            return Ok(());
        };
        let seq = last.to_seq();
        let first = run.first.unwrap_or(last);
        let metadata = vec![
            ("tokumei.spool.first".to_string(), serde_json::json!(first.to_string())),
            ("tokumei.spool.last".to_string(), serde_json::json!(last.to_string())),
            ("tokumei.batches".to_string(), serde_json::json!(run.batches)),
        ];
        let mut writes = Vec::new();
        for (i, t) in Table::CLINICAL.iter().enumerate() {
            let acc = &mut rows.tables[i];
            if acc.is_empty() {
                continue;
            }
            report.rows += acc.len();
            let batch = acc.finish()?;
            let table = self
                .tables
                .get(t)
                .cloned()
                .ok_or_else(|| StoreError::Invalid(format!("table {} not open", t.name())))?;
            let props = CommitProperties::default()
                .with_application_transaction(Transaction::new(APP_ID, seq as i64))
                .with_metadata(metadata.clone());
            writes.push(async move {
                let table = table
                    .write(vec![batch])
                    .with_save_mode(SaveMode::Append)
                    .with_writer_properties(writer_properties())
                    .with_commit_properties(props)
                    .await?;
                Ok::<_, StoreError>((*t, table))
            });
        }
        for (t, table) in futures::future::try_join_all(writes).await? {
            self.tables.insert(t, table);
        }
        for t in Table::CLINICAL {
            // Tables without rows in this run hold everything up to here too.
            if self.needs(t, seq) {
                self.applied.insert(t, Some(seq));
            }
        }
        // After the clinical tables: a registry version then still means "every table holds all before it".
        if !run.linked.is_empty() && self.needs(Table::OptOuts, seq) {
            self.append_registry(linked_rows(&run.linked)?, seq, metadata).await?;
            self.applied.insert(Table::OptOuts, Some(seq));
            report.keys_linked += run.linked.len();
        }
        report.batches += run.batches.len();
        report.records += run.records;
        report.committed_through = Some(last);
        *run = Run::default();
        Ok(())
    }

    /// Appends rows to the registry in one commit carrying the spool position `seq` as its transaction.
    async fn append_registry(
        &mut self,
        rows: RecordBatch,
        seq: u64,
        metadata: Vec<(String, serde_json::Value)>,
    ) -> Result<(), StoreError> {
        let table = self
            .tables
            .get(&Table::OptOuts)
            .cloned()
            .ok_or_else(|| StoreError::Invalid("registry not open".into()))?;
        let props = CommitProperties::default()
            .with_application_transaction(Transaction::new(APP_ID, seq as i64))
            .with_metadata(metadata);
        let table = table
            .write(vec![rows])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props)
            .await?;
        self.tables.insert(Table::OptOuts, table);
        Ok(())
    }

    /// An operator's opt-out or erasure (a core order), carried out by the applier itself between chunks: the
    /// person's records still arriving through the spool are refused from now on (the opt-out set is extended
    /// before anything is written), and the table handles it appends through are reloaded after the erasure
    /// rewrote and vacuumed them.
    pub async fn carry_out_order(&mut self, r: &PatientRequestEntry) -> Result<Option<ErasureCertificate>, StoreError> {
        let reach = request_reach::reach(&self.store, r).await?;
        self.opted_out.extend(&r.hospital_code, &reach);
        let result = {
            let _guard = self.maintenance.lock().await;
            carry_out(&self.store, r).await
        };
        for t in Table::ALL {
            self.tables.insert(t, self.store.table(t).await?);
        }
        result
    }

    /// Applies an opt-out or erasure: its reach is worked out and written to the registry first (the decision,
    /// durable), then the erasure runs; an erasure interrupted between the two is completed at the next open
    /// ([`complete_pending_erasures`]).
    async fn apply_request(
        &mut self,
        position: Position,
        r: &PatientRequestEntry,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let seq = position.to_seq();
        if !self.needs(Table::OptOuts, seq) {
            return Ok(());
        }
        let reach = request_reach::reach(&self.store, r).await?;
        self.opted_out.extend(&r.hospital_code, &reach);
        let kind = RequestKind::try_from(r.kind).unwrap_or(RequestKind::Unspecified);
        let metadata = vec![(
            "tokumei.request".to_string(),
            serde_json::json!(format!("{}/{}", r.hospital_code, r.request_id)),
        )];
        self.append_registry(registry_rows(r, kind, &reach)?, seq, metadata)
            .await?;
        for t in Table::ALL {
            // Clinical tables hold everything up to a request (see `open`).
            if self.needs(t, seq) {
                self.applied.insert(t, Some(seq));
            }
        }
        if kind == RequestKind::Erase {
            let _guard = self.maintenance.lock().await;
            let cert = erasure::erase(&self.store, &target(r, &reach)).await?;
            for t in Table::CLINICAL {
                self.tables.insert(t, self.store.table(t).await?);
            }
            report.erasures.push(cert);
        } else {
            report.opt_outs += 1;
        }
        Ok(())
    }
}

fn target(r: &PatientRequestEntry, reach: &Reach) -> ErasureTarget {
    ErasureTarget {
        request_id: r.request_id.clone(),
        source_hospital: r.hospital_code.clone(),
        linkage_keys: reach.erase_keys.iter().cloned().collect(),
        hospital_pseudonym: reach.hospital_pseudonym.clone(),
    }
}

#[derive(Default)]
struct Run {
    first: Option<Position>,
    last: Option<Position>,
    records: usize,
    batches: Vec<String>,
    /// (hospital, key) stopped because a refused record linked it to a stopped person.
    linked: Vec<(String, String)>,
}

fn registry_rows(r: &PatientRequestEntry, kind: RequestKind, reach: &Reach) -> Result<RecordBatch, StoreError> {
    let erase = kind == RequestKind::Erase;
    // (key, scope, kind): an erasure's keys outside `erase_keys` are excluded, not destroyed — OPT_OUT rows.
    let kind_of = |k: &str| {
        if erase && reach.erase_keys.contains(k) {
            "ERASE"
        } else {
            "OPT_OUT"
        }
    };
    let mut keys: Vec<(Option<&str>, &str, &str)> = reach
        .platform_keys
        .iter()
        .map(|k| (Some(k.as_str()), SCOPE_PLATFORM, kind_of(k)))
        .chain(
            reach
                .hospital_keys
                .iter()
                .map(|k| (Some(k.as_str()), SCOPE_HOSPITAL, "OPT_OUT")),
        )
        .collect();
    if keys.is_empty() || (erase && reach.erase_keys.is_empty()) {
        // The request itself is on record (an erasure that reached no key still has its certificate).
        keys.push((None, SCOPE_PLATFORM, if erase { "ERASE" } else { "OPT_OUT" }));
    }
    let n = keys.len();
    let now = chrono::Utc::now().timestamp_micros();
    Ok(RecordBatch::try_new(
        Table::OptOuts.arrow_schema(),
        vec![
            Arc::new(StringArray::from(keys.iter().map(|k| k.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(vec![reach.hospital_pseudonym.as_deref(); n])),
            Arc::new(StringArray::from(keys.iter().map(|k| k.2).collect::<Vec<_>>())),
            Arc::new(StringArray::from(vec![r.request_id.as_str(); n])),
            Arc::new(StringArray::from(vec![r.hospital_code.as_str(); n])),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
            Arc::new(StringArray::from(keys.iter().map(|k| Some(k.1)).collect::<Vec<_>>())),
        ],
    )?)
}

/// Registry rows for keys stopped because a refused record linked them to a stopped person.
fn linked_rows(linked: &[(String, String)]) -> Result<RecordBatch, StoreError> {
    let n = linked.len();
    let now = chrono::Utc::now().timestamp_micros();
    Ok(RecordBatch::try_new(
        Table::OptOuts.arrow_schema(),
        vec![
            Arc::new(StringArray::from(
                linked.iter().map(|(_, k)| Some(k.as_str())).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(StringArray::from(vec!["OPT_OUT"; n])),
            Arc::new(StringArray::from(vec![LINKED_BY_REFUSED_RECORD; n])),
            Arc::new(StringArray::from(
                linked.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![Some(SCOPE_PLATFORM); n])),
        ],
    )?)
}

/// The `request_id` of registry rows written for keys a refused record linked to a stopped person.
pub const LINKED_BY_REFUSED_RECORD: &str = "linked-by-refused-record";

/// Registry scope of a key that stops its person everywhere (also what a null scope, written before scopes
/// existed, means).
pub const SCOPE_PLATFORM: &str = "PLATFORM";
/// Registry scope of an ID4 key that stops the requesting hospital's records only.
pub const SCOPE_HOSPITAL: &str = "HOSPITAL";

/// One row of the opt-out registry.
struct RegistryRow {
    linkage_key: Option<String>,
    hospital_pseudonym: Option<String>,
    kind: String,
    request_id: String,
    source_hospital: String,
    scope: Option<String>,
}

async fn registry(store: &Store, registry: &DeltaTable) -> Result<Vec<RegistryRow>, StoreError> {
    let ctx = store.bare_session()?;
    ctx.register_table(Table::OptOuts.name(), registry.table_provider().await?)?;
    let batches = ctx
        .sql("SELECT linkage_key, hospital_pseudonym, kind, request_id, source_hospital, scope FROM opt_outs")
        .await?
        .collect()
        .await?;
    let mut rows = Vec::new();
    for b in &batches {
        // The view may hand back Utf8View; a cast to Utf8 covers both.
        let cols = (0..6)
            .map(|i| deltalake::arrow::compute::cast(b.column(i), &deltalake::arrow::datatypes::DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        let text: Vec<&StringArray> = cols
            .iter()
            .map(|c| c.as_any().downcast_ref::<StringArray>())
            .collect::<Option<_>>()
            .ok_or_else(|| StoreError::Invalid("opt_outs: a column is not text".into()))?;
        let at = |c: usize, i: usize| text[c].is_valid(i).then(|| text[c].value(i).to_string());
        for i in 0..b.num_rows() {
            rows.push(RegistryRow {
                linkage_key: at(0, i),
                hospital_pseudonym: at(1, i),
                kind: at(2, i).unwrap_or_default(),
                request_id: at(3, i).unwrap_or_default(),
                source_hospital: at(4, i).unwrap_or_default(),
                scope: at(5, i),
            });
        }
    }
    Ok(rows)
}

/// Reads the opt-out registry (an already loaded table) into memory.
pub async fn load_opt_outs(store: &Store, table: &DeltaTable) -> Result<OptOutSet, StoreError> {
    let mut set = OptOutSet::default();
    for row in registry(store, table).await? {
        if let Some(k) = row.linkage_key {
            if row.scope.as_deref() == Some(SCOPE_HOSPITAL) {
                set.hospital_keys.insert((row.source_hospital, k));
            } else {
                set.linkage_keys.insert(k);
            }
        }
        if let Some(p) = row.hospital_pseudonym {
            set.hospital_pseudonyms.insert(p);
        }
    }
    Ok(set)
}

/// Carries out erasures the registry records but the erasure log does not certify: a crash came between the
/// registry write and the erasure. Erasure is idempotent, so one finished but uncertified runs again harmlessly.
pub async fn complete_pending_erasures(store: &Store) -> Result<Vec<ErasureCertificate>, StoreError> {
    let certified: HashSet<(String, String)> = erasure::certificates(&store.erasure_log_path())?
        .into_iter()
        .map(|c| (c.source_hospital, c.request_id))
        .collect();
    let mut pending: BTreeMap<(String, String), Reach> = BTreeMap::new();
    for row in registry(store, &store.table(Table::OptOuts).await?).await? {
        let id = (row.source_hospital, row.request_id);
        if row.kind != "ERASE" || certified.contains(&id) {
            continue;
        }
        let reach = pending.entry(id).or_default();
        if let Some(k) = row.linkage_key
            && row.scope.as_deref() != Some(SCOPE_HOSPITAL)
        {
            reach.erase_keys.insert(k);
        }
        if row.hospital_pseudonym.is_some() {
            reach.hospital_pseudonym = row.hospital_pseudonym;
        }
    }
    let mut done = Vec::new();
    for ((hospital, request_id), reach) in pending {
        tracing::warn!(hospital = %hospital, "completing an erasure interrupted before its certificate");
        let target = ErasureTarget {
            request_id,
            source_hospital: hospital,
            linkage_keys: reach.erase_keys.into_iter().collect(),
            hospital_pseudonym: reach.hospital_pseudonym,
        };
        done.push(erasure::erase(store, &target).await?);
    }
    Ok(done)
}

/// Carries out an erasure or opt-out made outside the spool (an operator's `tokumei store erase`) exactly as
/// one from the spool: reach worked out, registry written, then the erasure. The caller holds the writer lock.
pub async fn carry_out(store: &Store, request: &PatientRequestEntry) -> Result<Option<ErasureCertificate>, StoreError> {
    let reach = request_reach::reach(store, request).await?;
    let kind = RequestKind::try_from(request.kind).unwrap_or(RequestKind::OptOut);
    let batch = registry_rows(request, kind, &reach)?;
    store
        .table(Table::OptOuts)
        .await?
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .await?;
    if kind == RequestKind::Erase {
        return Ok(Some(erasure::erase(store, &target(request, &reach)).await?));
    }
    Ok(None)
}
