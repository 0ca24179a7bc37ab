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
use crate::fingerprint::{self, Cells, Marks, PseudonymVerdict, Verdict};
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
    /// The carriers read, each with its share of the bound (`values:TABLE`, `pseudonyms`).
    pub carriers: Vec<String>,
    /// The value marks' verdict: scores, bounds, accused recipients (no positions when no marked column).
    pub verdict: Verdict,
    /// The pseudonym carrier's verdict (`None` for a release without recipient pseudonyms).
    pub pseudonyms: Option<PseudonymVerdict>,
    /// Accused on any carrier (each carrier accuses at its share of the bound, so the probability of accusing
    /// any innocent is at most the whole bound).
    pub accused: Vec<String>,
    /// One line for the operator: what each carrier found.
    pub explanation: String,
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
        "carriers": report.carriers,
        "positions": v.positions,
        "accused": report.accused,
        "accused_by_values": v.accused,
        "decidable": v.decidable,
        "bound": report.verdict.bound + report.pseudonyms.as_ref().map_or(0.0, |p| p.bound),
        "pseudonyms": report.pseudonyms.as_ref().map(|p| serde_json::json!({
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
            None => record
                .fingerprint
                .iter()
                .find(|(_, p)| p.columns.iter().all(|c| leaked.column_index(&c.column).is_some())),
        };
    let pseudonym_carrier = record.pseudonym_scope == PseudonymScope::Recipient
        && leaked.column_index(fingerprint::PSEUDONYM_COLUMN).is_some();
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
    let share = bound / f64::from(u8::from(plan.is_some()) + u8::from(pseudonym_carrier));
    let key = zone.fingerprint_key(record).await?;
    let recipients = record.recipients();
    let mut carriers = Vec::new();
    let verdict = match plan {
        Some((name, plan)) => {
            carriers.push(format!("values:{name}"));
            fingerprint::accuse(&key, &fingerprint::read_marks(&key, plan, leaked), &recipients, share)
        }
        None => {
            let mut v = fingerprint::accuse(&key, &Marks::empty(), &recipients, 0.0);
            v.explanation = "no marked value column in the file".into();
            v
        }
    };
    let pseudonyms = pseudonym_carrier.then(|| {
        carriers.push("pseudonyms".into());
        fingerprint::trace_pseudonyms(&key, leaked, &recipients, share)
    });
    let mut accused: Vec<String> = verdict.accused.clone();
    for r in pseudonyms.iter().flat_map(|p| &p.accused) {
        if !accused.contains(r) {
            accused.push(r.clone());
        }
    }
    let explanation = explain(&verdict, pseudonyms.as_ref(), plan.is_some());
    Ok(TraceReport {
        release: record.id.clone(),
        application: record.application.clone(),
        table: plan.map(|(n, _)| n.clone()).unwrap_or_default(),
        rows: Cells::rows(leaked),
        carriers,
        verdict,
        pseudonyms,
        accused,
        explanation,
    })
}

/// The operator's line: each carrier's finding.
fn explain(values: &Verdict, pseudonyms: Option<&PseudonymVerdict>, values_read: bool) -> String {
    let mut parts = Vec::new();
    if values_read {
        parts.push(format!("value marks: {}", values.explanation));
    }
    if let Some(p) = pseudonyms {
        parts.push(match p.candidates.first() {
            Some(top) if p.accused.is_empty() => format!(
                "pseudonyms: no one accused ({} distinct read, {} unmatched; best {} with {} matching)",
                p.distinct_read, p.unmatched, top.recipient, top.matches
            ),
            Some(_) => format!(
                "pseudonyms: accused {} ({} distinct read; {}; an innocent matches that many with probability at \
                 most 10^{:.1} each, bound {:e})",
                p.accused.join(", "),
                p.distinct_read,
                p.candidates
                    .iter()
                    .filter(|c| c.accused)
                    .map(|c| format!("{} of {} are {}'s", c.matches, p.well_formed, c.recipient))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.candidates
                    .iter()
                    .filter(|c| c.accused)
                    .map(|c| c.log10_p_innocent)
                    .fold(f64::MIN, f64::max),
                p.bound
            ),
            None => "pseudonyms: no candidates".into(),
        });
    }
    parts.join("; ")
}
