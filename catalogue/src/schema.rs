//! The core's tables and their columns: one place that says what the store holds.
//!
//! Every clinical table carries the same provenance columns — who the patient is under pseudonyms
//! (`linkage_key`, `hospital_pseudonym`), how good the linkage is, which hospital sent the row, in which batch
//! and when — so that opt-out, erasure and audits work the same way on all of them.

/// The kind of value a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text (codes, pseudonyms in hex).
    Text,
    /// A calendar date.
    Date,
    /// A UTC instant, microseconds.
    Timestamp,
    /// A 32-bit integer.
    Int,
    /// A 64-bit float.
    Float,
    /// A boolean.
    Bool,
}

/// One column.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Value kind.
    pub kind: Kind,
    /// Whether it may be null.
    pub nullable: bool,
}

const fn col(name: &'static str, kind: Kind, nullable: bool) -> Column {
    Column { name, kind, nullable }
}

/// Provenance columns present on every clinical table, in this order.
pub const PROVENANCE: [Column; 6] = [
    col("linkage_key", Kind::Text, false),
    col("linkage_quality", Kind::Text, false),
    col("hospital_pseudonym", Kind::Text, false),
    col("source_hospital", Kind::Text, false),
    col("batch_id", Kind::Text, false),
    col("ingested_at", Kind::Timestamp, false),
];

/// The tables of the core store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per pushed patient record: demographics as quasi-identifiers.
    Patients,
    /// Visits and admissions.
    Encounters,
    /// Diagnoses (ICD-10).
    Conditions,
    /// Prescriptions (YJ codes).
    Medications,
    /// Laboratory results (JLAC10/11).
    Observations,
    /// Allergies.
    Allergies,
    /// The opt-out and erasure registry: pseudonyms whose records must never be read or stored again.
    OptOuts,
}

impl Table {
    /// The six clinical tables.
    pub const CLINICAL: [Table; 6] = [
        Table::Patients,
        Table::Encounters,
        Table::Conditions,
        Table::Medications,
        Table::Observations,
        Table::Allergies,
    ];

    /// Every table including the registry.
    pub const ALL: [Table; 7] = [
        Table::Patients,
        Table::Encounters,
        Table::Conditions,
        Table::Medications,
        Table::Observations,
        Table::Allergies,
        Table::OptOuts,
    ];

    /// The table's name (directory and SQL name).
    pub fn name(self) -> &'static str {
        match self {
            Table::Patients => "patients",
            Table::Encounters => "encounters",
            Table::Conditions => "conditions",
            Table::Medications => "medications",
            Table::Observations => "observations",
            Table::Allergies => "allergies",
            Table::OptOuts => "opt_outs",
        }
    }

    /// Looks a table up by name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// True for the six clinical tables.
    pub fn is_clinical(self) -> bool {
        self != Table::OptOuts
    }

    /// Columns after the provenance columns (clinical tables), or all columns (registry).
    pub fn own_columns(self) -> &'static [Column] {
        use Kind::*;
        match self {
            Table::Patients => {
                const {
                    &[
                        col("birth_date", Date, true),
                        col("sex", Text, true),
                        col("postal_prefix", Text, true),
                        col("municipality_code", Text, true),
                        col("prefecture", Text, true),
                        col("death_date", Date, true),
                        col("long_term_storage", Bool, false),
                        // Added in schema 2: the ID4 key of an insured record, linking its two keys.
                        col("id4_key", Text, true),
                    ]
                }
            }
            Table::Encounters => {
                const {
                    &[
                        col("admission_date", Date, true),
                        col("discharge_date", Date, true),
                        col("kind", Text, true),
                        col("department", Text, true),
                    ]
                }
            }
            Table::Conditions => {
                const {
                    &[
                        col("icd10", Text, true),
                        col("disease_master_id", Text, true),
                        col("onset_date", Date, true),
                        col("suspected", Bool, false),
                        col("not_told", Bool, false),
                    ]
                }
            }
            Table::Medications => {
                const {
                    &[
                        col("yj_code", Text, true),
                        col("start_date", Date, true),
                        col("days", Int, true),
                        col("daily_dose", Float, true),
                        col("dose_unit", Text, true),
                    ]
                }
            }
            Table::Observations => {
                const {
                    &[
                        col("jlac10", Text, true),
                        col("jlac11", Text, true),
                        col("date", Date, true),
                        col("value", Float, true),
                        col("unit", Text, true),
                        col("text_value", Text, true),
                    ]
                }
            }
            Table::Allergies => {
                const {
                    &[
                        col("yj_code", Text, true),
                        col("substance", Text, true),
                        col("recorded_date", Date, true),
                    ]
                }
            }
            Table::OptOuts => {
                const {
                    &[
                        col("linkage_key", Text, true),
                        col("hospital_pseudonym", Text, true),
                        col("kind", Text, false),
                        col("request_id", Text, false),
                        col("source_hospital", Text, false),
                        col("requested_at", Timestamp, false),
                        // Added in schema 2: `PLATFORM` (null before) or `HOSPITAL` (an ID4 key that reached
                        // none of the requesting hospital's patients: it stops that hospital's records only).
                        col("scope", Text, true),
                    ]
                }
            }
        }
    }

    /// Columns added after the table was first released, in order: nullable and at the end, so that opening a
    /// table written before them only has to append them (old rows read null).
    pub fn added_columns(self) -> &'static [&'static str] {
        match self {
            Table::Patients => &["id4_key"],
            Table::OptOuts => &["scope"],
            _ => &[],
        }
    }

    /// Every column in order.
    pub fn columns(self) -> Vec<Column> {
        let mut out = Vec::new();
        if self.is_clinical() {
            out.extend_from_slice(&PROVENANCE);
        }
        out.extend_from_slice(self.own_columns());
        out
    }
}
