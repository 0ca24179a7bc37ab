//! Reading every carrier a leaked file keeps and combining their verdicts — the one decision the release
//! service's trace and the attack suite share.
//!
//! Which carriers are read depends on the file's columns alone (never on a score), and the false-accusation
//! bound is split evenly between them, so the probability of accusing any innocent on any carrier stays
//! within the bound (Bonferroni over carriers, as each carrier is over candidates).

use serde::{Deserialize, Serialize};

use super::cells::Cells;
use super::pseudonyms::{PSEUDONYM_COLUMN, PseudonymVerdict, trace_pseudonyms};
use super::{FingerprintKey, FingerprintPlan, Marks, Verdict, accuse, read_marks};

/// What every carrier of a file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traced {
    /// The carriers read (`values:TABLE`, `pseudonyms`).
    pub carriers: Vec<String>,
    /// The value marks' verdict (no positions when no marked column was read).
    pub verdict: Verdict,
    /// The pseudonym carrier's verdict (`None` when not read).
    pub pseudonyms: Option<PseudonymVerdict>,
    /// Accused on any carrier.
    pub accused: Vec<String>,
    /// One line for the operator: what each carrier found.
    pub explanation: String,
}

/// Whether the pseudonym carrier can be read in `cells` of a release whose copies have recipient pseudonyms.
pub fn reads_pseudonyms<C: Cells + ?Sized>(recipient_pseudonyms: bool, cells: &C) -> bool {
    recipient_pseudonyms && cells.column_index(PSEUDONYM_COLUMN).is_some()
}

/// Reads the value marks of `plan` (named table, if any) and, when [`reads_pseudonyms`], the pseudonyms of
/// `cells`, and accuses among `candidates` with at most `bound` probability of accusing any innocent.
pub fn trace_cells<C: Cells + ?Sized>(
    key: &FingerprintKey,
    plan: Option<(&str, &FingerprintPlan)>,
    recipient_pseudonyms: bool,
    cells: &C,
    candidates: &[String],
    bound: f64,
) -> Traced {
    let pseudonym_carrier = reads_pseudonyms(recipient_pseudonyms, cells);
    let read = u8::from(plan.is_some()) + u8::from(pseudonym_carrier);
    let share = bound / f64::from(read.max(1));
    let mut carriers = Vec::new();
    let verdict = match plan {
        Some((name, plan)) => {
            carriers.push(format!("values:{name}"));
            accuse(key, &read_marks(key, plan, cells), candidates, share)
        }
        None => {
            let mut v = accuse(key, &Marks::empty(), candidates, 0.0);
            v.explanation = "no marked value column in the file".into();
            v
        }
    };
    let pseudonyms = pseudonym_carrier.then(|| {
        carriers.push("pseudonyms".into());
        trace_pseudonyms(key, cells, candidates, share)
    });
    let mut accused: Vec<String> = verdict.accused.clone();
    for r in pseudonyms.iter().flat_map(|p| &p.accused) {
        if !accused.contains(r) {
            accused.push(r.clone());
        }
    }
    let explanation = explain(&verdict, pseudonyms.as_ref(), plan.is_some());
    Traced {
        carriers,
        verdict,
        pseudonyms,
        accused,
        explanation,
    }
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
