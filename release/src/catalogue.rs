//! What each column of the core store becomes in a release. The roles themselves are the platform's catalogue
//! ([`tokumei_store::catalogue`], shared with statistics); this module adds what only releases need:
//! - `linkage_key` becomes the release's pseudonym ([`crate::pseudonym`]); provenance never leaves the core;
//! - patient demographics are generalised by the `deid` engine until the approved privacy model holds;
//! - event dates are coarsened by a fixed rule;
//! - measured values are written with a fixed precision and may carry the recipient's fingerprint in their last
//!   significant digit — the last digit of the precision their code is reported with ([`crate::fingerprint`]);
//!   they are never quasi-identifiers.

use tokumei_deid::generators::Generator;
use tokumei_store::Table;

pub use tokumei_store::catalogue::{ColumnRole, code_system, hierarchy, role};

use crate::fingerprint::{CodePrecision, MarkScheme, MarkedColumn};

/// Name of the pseudonym column in every released file.
pub const PSEUDONYM: &str = "patient_pseudonym";

/// The fingerprint columns of a table among the released `columns`: measured values whose anchors are
/// released too (anchors that are not released are left out of the selection key).
pub fn marked_columns(table: Table, columns: &[String]) -> Vec<MarkedColumn> {
    columns
        .iter()
        .filter_map(|c| match role(table, c) {
            ColumnRole::Measured {
                decimals,
                anchors,
                per_code,
            } => Some(MarkedColumn {
                column: c.clone(),
                decimals,
                anchors: anchors
                    .iter()
                    .filter(|a| columns.iter().any(|c| c == *a))
                    .map(|a| (*a).to_owned())
                    .collect(),
                // `fingerprint::plan` chooses the scheme and each code's precision from the values.
                scheme: MarkScheme::Parity,
                precision: per_code
                    .filter(|(code, _)| columns.iter().any(|c| c == code))
                    .map(|(code, prefix)| CodePrecision::new(code, prefix)),
            }),
            _ => None,
        })
        .collect()
}

/// A short description of a role for the codebook.
pub fn describe(role: &ColumnRole) -> String {
    match role {
        ColumnRole::Pseudonym => "patient pseudonym for this release (HMAC-SHA-256 of the core's linkage key)".into(),
        ColumnRole::Withheld | ColumnRole::FreeText => "withheld".into(),
        ColumnRole::QuasiIdentifier(g) => format!("quasi-identifier, generalised ({})", generator_name(g)),
        ColumnRole::MonthDate => "date, released as YYYY-MM".into(),
        ColumnRole::Measured { decimals, per_code, .. } => match per_code {
            Some((code, _)) => format!(
                "measured value, written with {decimals} decimal places; a copy may differ from another by up to \
                 two units of the precision its {code} code is reported with (e.g. 2 for a whole-number test, 0.02 \
                 for a two-decimal one)"
            ),
            None => format!(
                "measured value, {decimals} decimal places; the last may differ by up to two units between copies"
            ),
        },
        ColumnRole::Plain => "as recorded".into(),
    }
}

fn generator_name(g: &Generator) -> &'static str {
    match g {
        Generator::Date => "day → month → quarter → year → 5 years → *",
        Generator::Flat => "value → *",
        Generator::Municipality => "municipality → prefecture → region → *",
        Generator::Prefecture => "prefecture → region → *",
        Generator::Mask { .. } => "digits masked from the right",
        _ => "hierarchy",
    }
}
