//! Erasure (破棄): a patient's rows leave every table, every file that held them is destroyed, old table
//! versions that could bring them back are dropped, and a certificate says what was done.
//!
//! Steps, per clinical table: delete the rows (Delta rewrites the files that held them); vacuum with zero
//! retention so the rewritten files are physically removed; write a checkpoint and remove every older log
//! entry, because old commits list the removed files and carry per-file statistics that may hold the
//! patient's values. Time travel to before the erasure is therefore impossible by design. The caller must hold
//! the store's maintenance lock: nothing else may write files while a zero-retention vacuum runs.

use crate::error::StoreError;
use crate::schema::Table;
use crate::store::Store;
use deltalake::datafusion::prelude::{Expr, col, lit};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::checkpoints::{cleanup_expired_logs_for, create_checkpoint};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Whose rows to erase.
#[derive(Debug, Clone)]
pub struct ErasureTarget {
    /// The request id (hospital's or operator's).
    pub request_id: String,
    /// Hospital that asked (or `operator`).
    pub source_hospital: String,
    /// Linkage keys, lowercase hex.
    pub linkage_keys: Vec<String>,
    /// Hospital pseudonym, lowercase hex, when the request named the hospital's patient id.
    pub hospital_pseudonym: Option<String>,
}

/// What was removed from one table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableErasure {
    /// Table name.
    pub table: String,
    /// Rows removed.
    pub rows_removed: u64,
    /// Data files physically deleted (the old files that held the rows, and any other unreferenced files).
    pub files_destroyed: u64,
    /// Old log entries and checkpoints deleted.
    pub log_entries_removed: u64,
}

/// The erasure certificate written to the operator log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErasureCertificate {
    /// Request id.
    pub request_id: String,
    /// Who asked.
    pub source_hospital: String,
    /// SHA-256 (hex) of each erased linkage key: identifies the patient to an auditor who holds the key,
    /// without putting the key itself in the log.
    pub linkage_key_sha256: Vec<String>,
    /// SHA-256 (hex) of the hospital pseudonym, when one was given.
    pub hospital_pseudonym_sha256: Option<String>,
    /// Per table.
    pub tables: Vec<TableErasure>,
    /// Total rows removed.
    pub rows_removed: u64,
    /// Total files destroyed.
    pub files_destroyed: u64,
    /// Completion time, RFC 3339 UTC.
    pub completed_at: String,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn predicate(target: &ErasureTarget) -> Option<Expr> {
    let mut parts: Vec<Expr> = Vec::new();
    if !target.linkage_keys.is_empty() {
        parts.push(col("linkage_key").in_list(target.linkage_keys.iter().map(|k| lit(k.clone())).collect(), false));
    }
    if let Some(p) = &target.hospital_pseudonym {
        parts.push(col("hospital_pseudonym").eq(lit(p.clone())));
    }
    parts.into_iter().reduce(Expr::or)
}

/// Erases a patient from every clinical table. Idempotent: erasing again removes nothing and still certifies;
/// a target with no key certifies that nothing was removed.
pub async fn erase(store: &Store, target: &ErasureTarget) -> Result<ErasureCertificate, StoreError> {
    let mut tables = Vec::new();
    for t in Table::CLINICAL {
        tables.push(match predicate(target) {
            Some(pred) => erase_table(store, t, pred).await?,
            // A request that reached nobody (an ID4 key the hospital never sent): certified as removing nothing.
            None => TableErasure {
                table: t.name().to_string(),
                rows_removed: 0,
                files_destroyed: 0,
                log_entries_removed: 0,
            },
        });
    }
    let cert = ErasureCertificate {
        request_id: target.request_id.clone(),
        source_hospital: target.source_hospital.clone(),
        linkage_key_sha256: target.linkage_keys.iter().map(|k| sha256_hex(k)).collect(),
        hospital_pseudonym_sha256: target.hospital_pseudonym.as_deref().map(sha256_hex),
        rows_removed: tables.iter().map(|t| t.rows_removed).sum(),
        files_destroyed: tables.iter().map(|t| t.files_destroyed).sum(),
        tables,
        completed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    record(store, &cert)?;
    Ok(cert)
}

async fn erase_table(store: &Store, t: Table, pred: Expr) -> Result<TableErasure, StoreError> {
    let table = store.table(t).await?;
    let (table, metrics) = table
        .delete()
        .with_predicate(pred)
        .with_session_state(store.operation_session()?)
        .await?;
    let rows_removed = metrics.num_deleted_rows.unwrap_or(0) as u64;
    let (table, vacuum) = table
        .vacuum()
        .with_retention_period(chrono::Duration::zero())
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .await?;
    create_checkpoint(&table, None).await?;
    let version = table.version().unwrap_or(0);
    // Every log file before the checkpoint just written goes, regardless of age.
    let cutoff = chrono::Utc::now().timestamp_millis() + 60_000;
    let removed = cleanup_expired_logs_for(version, table.log_store().as_ref(), cutoff, None).await?;
    Ok(TableErasure {
        table: t.name().to_string(),
        rows_removed,
        files_destroyed: vacuum.files_deleted.len() as u64,
        log_entries_removed: removed as u64,
    })
}

/// Appends the certificate to the operator's erasure log (fsync'd) and to the structured log.
fn record(store: &Store, cert: &ErasureCertificate) -> Result<(), StoreError> {
    let line = serde_json::to_string(cert).map_err(|e| StoreError::Invalid(e.to_string()))?;
    tracing::info!(target: "tokumei::erasure", certificate = %line, "erasure completed");
    let path = store.erasure_log_path();
    append_line(&path, &line)
}

fn append_line(path: &Path, line: &str) -> Result<(), StoreError> {
    let io = |e| StoreError::Io(path.display().to_string(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // A torn last line (crash while appending) is closed first, so the new certificate stays readable.
    let torn = std::fs::read(path)
        .map(|b| b.last().is_some_and(|c| *c != b'\n'))
        .unwrap_or(false);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let prefix = if torn { "\n" } else { "" };
    f.write_all(format!("{prefix}{line}\n").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Reads every certificate from the erasure log.
pub fn certificates(path: &Path) -> Result<Vec<ErasureCertificate>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io(path.display().to_string(), e)),
    };
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str(l) {
            Ok(c) => out.push(c),
            // A line cut by a crash while it was appended: its erasure has no certificate and is redone
            // (erasure is idempotent); the log stays readable.
            Err(_) => tracing::warn!(path = %path.display(), line = i + 1, "skipping an unreadable erasure-log line"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_certificate_line_is_skipped_and_closed_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("erasure.jsonl");
        let cert = |id: &str| ErasureCertificate {
            request_id: id.into(),
            source_hospital: "h".into(),
            linkage_key_sha256: Vec::new(),
            hospital_pseudonym_sha256: None,
            tables: Vec::new(),
            rows_removed: 0,
            files_destroyed: 0,
            completed_at: "t".into(),
        };
        append_line(&path, &serde_json::to_string(&cert("a")).unwrap()).unwrap();
        // A crash in the middle of the next append.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"request_id":"b","sour"#).unwrap();
        drop(f);
        assert_eq!(certificates(&path).unwrap(), vec![cert("a")]);
        append_line(&path, &serde_json::to_string(&cert("c")).unwrap()).unwrap();
        // The torn line now sits between two certificates: skipped, both read.
        assert_eq!(certificates(&path).unwrap(), vec![cert("a"), cert("c")]);
    }
}
