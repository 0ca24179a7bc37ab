//! Leak tracing: whose copy of a release a file found in the wild is.
//!
//! The file is read as text cells (CSV, or Parquet rendered as text), matched to the release's table by its
//! marked columns (row order, row subset, column order, dropped unmarked columns and the pseudonym column do
//! not matter), its marks are read with the release's fingerprint key and every recipient of the release is
//! scored. Only a recipient whose score an innocent would reach with probability below the configured bound
//! (Bonferroni-corrected over the recipients) is accused.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokumei_deid::table::Table as DeidTable;

use crate::error::{ReleaseError, Result};
use crate::fingerprint::{self, Cells, Verdict};
use crate::zone::{ReleaseRecord, ReleaseZone};

/// Default probability bound of accusing an innocent recipient.
pub const DEFAULT_FALSE_ACCUSATION_BOUND: f64 = 1e-6;

/// The outcome of a trace (read back by the release service's clients).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceReport {
    /// The release traced against.
    pub release: String,
    /// Its application.
    pub application: String,
    /// The table the file was matched to.
    pub table: String,
    /// Rows in the leaked file.
    pub rows: usize,
    /// The verdict: scores, bounds, accused recipients.
    pub verdict: Verdict,
}

/// Reads a leaked CSV or Parquet file as text cells.
pub fn read_leaked(path: &Path) -> Result<DeidTable> {
    let is_parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let table = if is_parquet {
        DeidTable::read_parquet(path)
    } else {
        DeidTable::read_csv(path, b',')
    };
    table.map_err(|e| ReleaseError::BadInput(format!("{}: {e}", path.display())))
}

/// Reads a leaked file received as bytes: Parquet if `name` ends in `.parquet`, CSV otherwise. Errors name the
/// format, never a cell.
pub fn read_leaked_bytes(name: &str, content: Vec<u8>) -> Result<DeidTable> {
    let is_parquet = Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let table = if is_parquet {
        DeidTable::from_parquet(bytes::Bytes::from(content))
    } else {
        DeidTable::from_csv_reader(content.as_slice(), b',')
    };
    table.map_err(|e| {
        ReleaseError::BadInput(format!(
            "the leaked file is not readable as {}: {e}",
            if is_parquet { "Parquet" } else { "CSV" }
        ))
    })
}

/// What the audit ledger keeps of a trace: the file's name, counts and the best candidate's score — never a cell
/// of the file.
pub fn ledger_details(report: &TraceReport, file_name: &str) -> serde_json::Value {
    let v = &report.verdict;
    serde_json::json!({
        "release": report.release,
        "file": Path::new(file_name).file_name().map(|n| n.to_string_lossy().into_owned()),
        "table": report.table,
        "rows": report.rows,
        "positions": v.positions,
        "accused": v.accused,
        "decidable": v.decidable,
        "bound": v.bound,
        "best": v.candidates.first().map(|c| serde_json::json!({
            "recipient": c.recipient, "score": c.score, "p_innocent": c.p_innocent
        })),
    })
}

/// Traces `leaked` against release `record`, optionally for a named table.
pub async fn trace(
    zone: &ReleaseZone,
    record: &ReleaseRecord,
    leaked: &DeidTable,
    table: Option<&str>,
    bound: f64,
) -> Result<TraceReport> {
    if !(bound > 0.0 && bound < 1.0) {
        return Err(ReleaseError::BadInput(format!(
            "false-accusation bound {bound} must be in (0, 1)"
        )));
    }
    let (name, plan) = match table {
        Some(t) => record
            .fingerprint
            .get_key_value(t)
            .ok_or_else(|| ReleaseError::BadInput(format!("release {} has no fingerprinted table {t}", record.id)))?,
        None => record
            .fingerprint
            .iter()
            .find(|(_, p)| p.columns.iter().all(|c| leaked.column_index(&c.column).is_some()))
            .ok_or_else(|| {
                ReleaseError::BadInput(format!(
                    "the file has none of release {}'s marked columns ({}): it cannot be traced",
                    record.id,
                    record
                        .fingerprint
                        .values()
                        .flat_map(|p| p.columns.iter().map(|c| c.column.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
    };
    let key = zone.fingerprint_key(record).await?;
    let marks = fingerprint::read_marks(&key, plan, leaked);
    let verdict = fingerprint::accuse(&key, &marks, &record.recipients(), bound);
    Ok(TraceReport {
        release: record.id.clone(),
        application: record.application.clone(),
        table: name.clone(),
        rows: Cells::rows(leaked),
        verdict,
    })
}
