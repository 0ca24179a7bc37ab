//! Leak tracing: whose copy of a release a file found in the wild is.
//!
//! The file is read as text cells (CSV, or Parquet rendered as text), matched to the release's table by its
//! marked columns (row order, row subset, column order, dropped unmarked columns and the pseudonym column do
//! not matter), its value marks and (for releases with recipient pseudonyms) its pseudonyms are read with the
//! release's fingerprint key and every recipient of the release is
//! scored. Only a recipient whose score an innocent would reach with probability below the configured bound
//! (Bonferroni-corrected over the recipients) is accused.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokumei_deid::table::Table as DeidTable;

use crate::error::{ReleaseError, Result};
use crate::fingerprint::{self, Cells, Traced};
use crate::zone::{PseudonymScope, ReleaseRecord, ReleaseZone};

/// Default probability bound of accusing an innocent recipient.
pub const DEFAULT_FALSE_ACCUSATION_BOUND: f64 = 1e-6;

/// The outcome of a trace (read back by the release service's clients).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceReport {
    /// The release traced against.
    pub release: String,
    /// Its application.
    pub application: String,
    /// The table whose value marks were read (empty when the file has none of the marked columns).
    pub table: String,
    /// Rows in the leaked file.
    pub rows: usize,
    /// What every carrier read says: carriers, the value marks' and the pseudonyms' verdicts, the accused.
    #[serde(flatten)]
    pub traced: Traced,
}

/// Reads a leaked CSV or Parquet file as text cells.
pub fn read_leaked(path: &Path) -> Result<DeidTable> {
    let is_parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let table = if is_parquet {
        DeidTable::read_parquet(path)
    } else {
        let bytes = std::fs::read(path).map_err(|e| ReleaseError::io(format!("reading {}", path.display()), e))?;
        DeidTable::from_csv_reader(bytes.as_slice(), sniff_delimiter(&bytes))
    };
    table.map_err(|e| ReleaseError::BadInput(format!("{}: {e}", path.display())))
}

/// The field separator of a CSV file as a spreadsheet may have re-saved it: the most frequent of `,` `;` and
/// tab on the header line, outside quotes (`,` on a tie). A leaker's re-encoding must not hide the marks.
pub fn sniff_delimiter(content: &[u8]) -> u8 {
    let line = content.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], std::cmp::Reverse(i))).unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        [b',', b';', b'\t'][best]
    }
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
        DeidTable::from_csv_reader(content.as_slice(), sniff_delimiter(&content))
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
    let v = &report.traced.verdict;
    serde_json::json!({
        "release": report.release,
        "file": Path::new(file_name).file_name().map(|n| n.to_string_lossy().into_owned()),
        "table": report.table,
        "rows": report.rows,
        "carriers": report.traced.carriers,
        "positions": v.positions,
        "accused": report.traced.accused,
        "accused_by_values": v.accused,
        "decidable": v.decidable,
        "bound": v.bound + report.traced.pseudonyms.as_ref().map_or(0.0, |p| p.bound),
        "pseudonyms": report.traced.pseudonyms.as_ref().map(|p| serde_json::json!({
            "distinct_read": p.distinct_read,
            "unmatched": p.unmatched,
            "accused": p.accused,
            "matches": p.candidates.iter().map(|c| (c.recipient.clone(), c.matches)).collect::<std::collections::BTreeMap<_, _>>(),
        })),
        "best": v.candidates.first().map(|c| serde_json::json!({
            "recipient": c.recipient, "score": c.score, "p_innocent": c.p_innocent
        })),
    })
}

/// Traces `leaked` against release `record` on every carrier the file keeps: the value marks of `table` (or
/// of the release table whose marked columns the file has) and, for a release with recipient pseudonyms, the
/// pseudonym column. The bound is split evenly between the carriers read — which carriers depends on the
/// file's columns alone, never on a score — so the probability of accusing any innocent stays within it.
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
    let plan =
        match table {
            Some(t) => Some(record.fingerprint.get_key_value(t).ok_or_else(|| {
                ReleaseError::BadInput(format!("release {} has no fingerprinted table {t}", record.id))
            })?),
            None => record.fingerprint.iter().find(|(_, p)| p.readable_in(leaked)),
        };
    let pseudonym_carrier = fingerprint::reads_pseudonyms(record.pseudonym_scope == PseudonymScope::Recipient, leaked);
    if plan.is_none() && !pseudonym_carrier {
        return Err(ReleaseError::BadInput(format!(
            "the file has none of release {}'s marked columns ({}){}: it cannot be traced",
            record.id,
            record
                .fingerprint
                .values()
                .flat_map(|p| p.columns.iter().map(|c| c.column.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            if record.pseudonym_scope == PseudonymScope::Recipient {
                format!(" and no {} column", fingerprint::PSEUDONYM_COLUMN)
            } else {
                String::new()
            }
        )));
    }
    let key = zone.fingerprint_key(record).await?;
    let traced = fingerprint::trace_cells(
        &key,
        plan.map(|(n, p)| (n.as_str(), p)),
        record.pseudonym_scope == PseudonymScope::Recipient,
        leaked,
        &record.recipients(),
        bound,
    );
    Ok(TraceReport {
        release: record.id.clone(),
        application: record.application.clone(),
        table: plan.map(|(n, _)| n.clone()).unwrap_or_default(),
        rows: Cells::rows(leaked),
        traced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_re_saved_csv_is_read_with_its_own_separator() {
        assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3"), b',');
        assert_eq!(sniff_delimiter(b"a;b;c\r\n1;2,5;3"), b';');
        assert_eq!(sniff_delimiter(b"a\tb\tc\n"), b'\t');
        assert_eq!(
            sniff_delimiter(b"\"x;y\",b\n"),
            b',',
            "separators inside quotes do not count"
        );
        assert_eq!(sniff_delimiter(b"single\n"), b',');
        assert_eq!(sniff_delimiter(b""), b',');
        let t = read_leaked_bytes("leak.csv", b"value;jlac10\r\n\"5.30\";3B035\r\n".to_vec()).unwrap();
        assert_eq!((Cells::rows(&t), t.column_index("jlac10").is_some()), (1, true));
    }
}
