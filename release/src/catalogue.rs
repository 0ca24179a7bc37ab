//! What each column of the core store becomes in a release: the platform's rules, in one table.
//!
//! The committee approves tables and columns; how a column is protected is not left to each build:
//! - `linkage_key` becomes the release's pseudonym ([`crate::pseudonym`]); the other provenance columns
//!   (hospital pseudonym, batch, ingestion time, linkage quality, source hospital) never leave the core;
//! - patient demographics are the quasi-identifiers: the `deid` engine generalises them (optimal lattice
//!   search) until the approved privacy model holds, counting distinct patients per class;
//! - event dates in clinical tables are released at month precision (a fixed rule: exact dates of visits,
//!   prescriptions and tests are what an acquaintance knows);
//! - measured values (lab results, daily doses) are written with a fixed precision and may carry the
//!   recipient's fingerprint in their last digit ([`crate::fingerprint`]); they are never quasi-identifiers.

use tokumei_deid::generators::Generator;
use tokumei_store::Table;

use crate::fingerprint::MarkedColumn;

/// Name of the pseudonym column in every released file.
pub const PSEUDONYM: &str = "patient_pseudonym";

/// What a released column is.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnRole {
    /// The patient's pseudonym for this release (from `linkage_key`).
    Pseudonym,
    /// Never released (provenance).
    Withheld,
    /// Free text: never released verbatim (it can say anything, names included); the coded columns beside it
    /// carry what it is about.
    FreeText,
    /// A quasi-identifier, generalised by the engine along this hierarchy.
    QuasiIdentifier(Generator),
    /// A date released at month precision (`YYYY-MM`).
    MonthDate,
    /// A measured value written with `decimals` places; may carry fingerprint marks.
    Measured {
        /// Decimal places written (the mark changes the last one by at most one unit).
        decimals: u32,
        /// Columns that key the selection of marked cells besides the value itself.
        anchors: &'static [&'static str],
    },
    /// Released as stored (codes, categories, flags, counts).
    Plain,
}

/// The role of `column` of `table`.
pub fn role(table: Table, column: &str) -> ColumnRole {
    use ColumnRole::*;
    match (table, column) {
        (_, "linkage_key") => Pseudonym,
        (_, "linkage_quality" | "hospital_pseudonym" | "source_hospital" | "batch_id" | "ingested_at") => Withheld,
        (Table::Patients, "birth_date" | "death_date") => QuasiIdentifier(Generator::Date),
        (Table::Patients, "sex" | "long_term_storage") => QuasiIdentifier(Generator::Flat),
        (Table::Observations, "text_value") | (Table::Allergies, "substance") => FreeText,
        (Table::Patients, "prefecture") => QuasiIdentifier(Generator::Prefecture),
        (Table::Patients, "municipality_code") => QuasiIdentifier(Generator::Municipality),
        (Table::Patients, "postal_prefix") => QuasiIdentifier(Generator::Mask { step: 1 }),
        (Table::Encounters, "admission_date" | "discharge_date")
        | (Table::Conditions, "onset_date")
        | (Table::Medications, "start_date")
        | (Table::Observations, "date")
        | (Table::Allergies, "recorded_date") => MonthDate,
        (Table::Observations, "value") => Measured {
            decimals: 2,
            anchors: &["date", "jlac10"],
        },
        (Table::Medications, "daily_dose") => Measured {
            decimals: 2,
            anchors: &["start_date", "yj_code"],
        },
        _ => Plain,
    }
}

/// The fingerprint columns of a table among the released `columns`: measured values whose anchors are
/// released too (anchors that are not released are left out of the selection key).
pub fn marked_columns(table: Table, columns: &[String]) -> Vec<MarkedColumn> {
    columns
        .iter()
        .filter_map(|c| match role(table, c) {
            ColumnRole::Measured { decimals, anchors } => Some(MarkedColumn {
                column: c.clone(),
                decimals,
                anchors: anchors
                    .iter()
                    .filter(|a| columns.iter().any(|c| c == *a))
                    .map(|a| (*a).to_owned())
                    .collect(),
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
        ColumnRole::Measured { decimals, .. } => {
            format!("measured value, {decimals} decimal places; the last may differ by one unit between copies")
        }
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

/// The code system of a column, for the codebook.
pub fn code_system(table: Table, column: &str) -> Option<&'static str> {
    match (table, column) {
        (Table::Conditions, "icd10") => Some("ICD-10 (WHO, Japanese edition)"),
        (Table::Conditions, "disease_master_id") => Some("MEDIS standard disease master"),
        (Table::Medications | Table::Allergies, "yj_code") => Some("YJ code (individual drug code)"),
        (Table::Observations, "jlac10") => Some("JLAC10"),
        (Table::Observations, "jlac11") => Some("JLAC11"),
        (Table::Patients, "municipality_code") => Some("JIS X 0402 local government code"),
        (Table::Patients, "prefecture") => Some("JIS X 0401 prefecture code"),
        _ => None,
    }
}
