//! The platform's catalogue of the core store's columns: what each column is, which code system it follows,
//! along which hierarchy it may be coarsened, and which keys of it are public. One table that both exits use —
//! release builds and statistics — so that a rule set here cannot be forgotten by one of them.
//!
//! - `linkage_key` is the unit of privacy: a release replaces it by its own pseudonym, a statistic counts
//!   patients by it; it is never a key or a value of anything published. `id4_key` (the second linkage key of
//!   an insured record) and the provenance columns (hospital pseudonym, batch, ingestion time, linkage quality,
//!   source hospital) never leave the core.
//! - Patient demographics are the quasi-identifiers: the engine generalises them along their hierarchy.
//! - Event dates in clinical tables are coarsened by a fixed rule in releases; measured values are written with
//!   a fixed precision (and carry fingerprints there); free text is never published.
//! - **Every column is catalogued by name.** A column the catalogue does not know (a column added to the schema
//!   later) is withheld until someone decides what it is: the safe default, checked by a test over the schema.
//!
//! Hierarchies and public key lists come from here, not from the data: a hierarchy is a fixed function of a
//! value (a date's year, a code's chapter), and a level's public keys are that function applied to every
//! possible value of the code system — the same list whatever the store holds, so declaring them tells nobody
//! which values are present.

use chrono::Datelike;
use tokumei_deid::generators::Generator;

use crate::schema::Table;

/// What a column is, for every exit of the core.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnRole {
    /// The patient's linkage key: replaced by a per-release pseudonym; the unit of privacy of statistics.
    Pseudonym,
    /// Never published (provenance, second linkage keys).
    Withheld,
    /// Free text: never published verbatim (it can say anything, names included); the coded columns beside it
    /// carry what it is about.
    FreeText,
    /// A quasi-identifier, generalised by the engine along this hierarchy.
    QuasiIdentifier(Generator),
    /// An event date, coarsened by a fixed rule in releases.
    MonthDate,
    /// A measured value written with `decimals` places; may carry fingerprint marks.
    Measured {
        /// Decimal places written (the mark changes the last one by at most one unit).
        decimals: u32,
        /// Columns that key the selection of marked cells besides the value itself.
        anchors: &'static [&'static str],
        /// The column saying what each value measures, and how many leading characters of its code decide the
        /// precision the value is reported with (the JLAC10 analyte, the YJ ingredient): a lab table mixes
        /// whole-number tests with two-decimal ones, and a mark must stay within a test's own precision.
        per_code: Option<(&'static str, usize)>,
    },
    /// Published as stored (codes, categories, flags, counts).
    Plain,
}

impl ColumnRole {
    /// Whether a statistic may group by or measure the column: never a linkage key, provenance or free text.
    pub fn publishable(&self) -> bool {
        !matches!(
            self,
            ColumnRole::Pseudonym | ColumnRole::Withheld | ColumnRole::FreeText
        )
    }
}

/// The role of `column` of `table`; a column the catalogue does not name is withheld.
pub fn role(table: Table, column: &str) -> ColumnRole {
    catalogued_role(table, column).unwrap_or(ColumnRole::Withheld)
}

/// The role the catalogue gives by name, `None` for a column it does not know (a researcher's own file may have
/// columns of its own). Every arm names its columns: there is no catch-all, so a new schema column is withheld
/// until it is added here (tested).
pub fn catalogued_role(table: Table, column: &str) -> Option<ColumnRole> {
    use ColumnRole::*;
    Some(match (table, column) {
        (t, "linkage_key") if t.is_clinical() => Pseudonym,
        (t, "linkage_quality" | "hospital_pseudonym" | "source_hospital" | "batch_id" | "ingested_at")
            if t.is_clinical() =>
        {
            Withheld
        }
        (Table::Patients, "id4_key") => Withheld,
        (Table::Patients, "birth_date" | "death_date") => QuasiIdentifier(Generator::Date),
        (Table::Patients, "sex" | "long_term_storage") => QuasiIdentifier(Generator::Flat),
        (Table::Patients, "prefecture") => QuasiIdentifier(Generator::Prefecture),
        (Table::Patients, "municipality_code") => QuasiIdentifier(Generator::Municipality),
        (Table::Patients, "postal_prefix") => QuasiIdentifier(Generator::Mask { step: 1 }),
        (Table::Observations, "text_value") | (Table::Allergies, "substance") => FreeText,
        (Table::Encounters, "admission_date" | "discharge_date")
        | (Table::Conditions, "onset_date")
        | (Table::Medications, "start_date")
        | (Table::Observations, "date")
        | (Table::Allergies, "recorded_date") => MonthDate,
        (Table::Observations, "value") => Measured {
            decimals: 2,
            anchors: &["date", "jlac10"],
            per_code: Some(("jlac10", 5)),
        },
        (Table::Medications, "daily_dose") => Measured {
            decimals: 2,
            anchors: &["start_date", "yj_code"],
            per_code: Some(("yj_code", 7)),
        },
        (Table::Encounters, "kind" | "department")
        | (Table::Conditions, "icd10" | "disease_master_id" | "suspected" | "not_told")
        | (Table::Medications, "yj_code" | "days" | "dose_unit")
        | (Table::Observations, "jlac10" | "jlac11" | "unit")
        | (Table::Allergies, "yj_code") => Plain,
        _ => return None,
    })
}

/// The code system of a column, for codebooks and key checks.
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

/// A platform hierarchy: a fixed function from a column's value to coarser labels, with named levels.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformHierarchy {
    /// The function (level 0 is the value itself, the last level `*`).
    pub generator: Generator,
    /// The name of each level, from the value up to `*`.
    pub levels: &'static [&'static str],
}

impl PlatformHierarchy {
    /// A value of the code system the hierarchy parses: with it a hierarchy can always be built, even over a
    /// column none of whose values parse (the function is the same whatever values it is built over).
    pub fn sample(&self) -> &'static str {
        match self.generator {
            Generator::Date => "2000-01-01",
            Generator::Prefecture => "01",
            Generator::Municipality => "01000",
            Generator::Icd10 => "A00",
            _ => "0",
        }
    }

    /// The level a request names, by name or by number.
    pub fn level(&self, name: &str) -> Option<usize> {
        let name = name.trim();
        self.levels
            .iter()
            .position(|l| *l == name)
            .or_else(|| name.parse::<usize>().ok().filter(|l| *l < self.levels.len()))
    }
}

const DATE_LEVELS: &[&str] = &["day", "month", "quarter", "year", "5years", "*"];

/// The hierarchy of a column, if the platform has one.
pub fn hierarchy(table: Table, column: &str) -> Option<PlatformHierarchy> {
    let (generator, levels): (Generator, &'static [&'static str]) = match (table, column) {
        (Table::Patients, "birth_date" | "death_date")
        | (Table::Encounters, "admission_date" | "discharge_date")
        | (Table::Conditions, "onset_date")
        | (Table::Medications, "start_date")
        | (Table::Observations, "date")
        | (Table::Allergies, "recorded_date") => (Generator::Date, DATE_LEVELS),
        (Table::Patients, "prefecture") => (Generator::Prefecture, &["prefecture", "region", "*"]),
        (Table::Patients, "municipality_code") => {
            (Generator::Municipality, &["municipality", "prefecture", "region", "*"])
        }
        (Table::Conditions, "icd10") => (Generator::Icd10, &["code", "category", "block", "chapter", "*"]),
        (Table::Medications | Table::Allergies, "yj_code") => {
            (Generator::Yj, &["code", "ingredient", "class4", "class3", "*"])
        }
        (Table::Observations, "jlac10") => (Generator::Jlac10, &["code", "analyte", "*"]),
        _ if code_list(table, column).is_some() => (Generator::Flat, &["value", "*"]),
        _ => return None,
    };
    Some(PlatformHierarchy { generator, levels })
}

/// The fixed code list of a categorical column, as the store writes it.
fn code_list(table: Table, column: &str) -> Option<&'static [&'static str]> {
    match (table, column) {
        (Table::Patients, "sex") => Some(&["F", "M", "O"]),
        (Table::Patients, "long_term_storage") | (Table::Conditions, "suspected" | "not_told") => {
            Some(&["false", "true"])
        }
        (Table::Encounters, "kind") => Some(&["emergency", "home", "inpatient", "outpatient", "virtual"]),
        _ => None,
    }
}

/// First year of the dates the platform lists as public keys (birth dates included).
pub const FIRST_YEAR: i32 = 1900;

/// Most keys a level's list may have; finer levels (days, raw codes) are not public lists — their keys are
/// chosen by DP partition selection, or not at all.
pub const MAX_LISTED_KEYS: usize = 5_000;

/// Every label of `level` of the column's platform hierarchy, computed from the code system alone (never from
/// the data), or `None` when the level has no public list: the value level of open code systems (ICD-10
/// codes, YJ, JLAC10, municipalities) and levels with more than [`MAX_LISTED_KEYS`] labels.
pub fn public_keys(table: Table, column: &str, level: usize) -> Option<Vec<String>> {
    let h = hierarchy(table, column)?;
    if level + 1 == h.levels.len() {
        return Some(vec!["*".into()]);
    }
    let inputs: Vec<String> = match h.generator {
        Generator::Flat => code_list(table, column)?.iter().map(|s| (*s).to_owned()).collect(),
        Generator::Prefecture => (1..=47).map(|p| format!("{p:02}")).collect(),
        // Every prefecture's first code stands for all its municipalities above level 0.
        Generator::Municipality if level >= 1 => (1..=47).map(|p| format!("{p:02}000")).collect(),
        // Every category A00–Z99 stands for all its codes above level 0.
        Generator::Icd10 if level >= 1 => ('A'..='Z')
            .flat_map(|l| (0..100).map(move |n| format!("{l}{n:02}")))
            .collect(),
        // Every month of every year stands for all its days above level 0.
        Generator::Date if level >= 1 => (FIRST_YEAR..=chrono::Utc::now().year())
            .flat_map(|y| (1..=12).map(move |m| format!("{y:04}-{m:02}-01")))
            .collect(),
        _ => return None,
    };
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let generated = h.generator.generate(&refs).ok()?;
    let mut labels = generated.level(level).labels().to_vec();
    labels.sort();
    labels.dedup();
    (labels.len() <= MAX_LISTED_KEYS).then_some(labels)
}

/// Whether `key` is a value the catalogue knows for the column: in its code list, or well formed in its code
/// system. `None` when the catalogue has no code list or system for the column (its keys cannot be declared).
pub fn is_known_value(table: Table, column: &str, key: &str) -> Option<bool> {
    if let Some(list) = code_list(table, column) {
        return Some(list.contains(&key));
    }
    let h = hierarchy(table, column)?;
    let alnum = |n: usize| key.len() == n && key.bytes().all(|b| b.is_ascii_alphanumeric());
    Some(match h.generator {
        Generator::Jlac10 => alnum(17),
        Generator::Yj => alnum(12),
        Generator::Prefecture => public_keys(table, column, 0).is_some_and(|k| k.iter().any(|v| v == key)),
        // Letter, two digits, optionally a dot and one to four subdivision characters: the generator alone reads
        // only the first three, so "E11" followed by anything would pass.
        Generator::Icd10 => {
            let b = key.as_bytes();
            let tail = key.get(3..).unwrap_or_default();
            let tail = tail.strip_prefix('.').unwrap_or(tail);
            b.len() >= 3
                && b[0].is_ascii_uppercase()
                && b[1].is_ascii_digit()
                && b[2].is_ascii_digit()
                && tail.len() <= 4
                && tail.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        }
        // The generator's own parser: a date, a municipality code of a real prefecture, an ICD-10 code.
        g => g.generate(&[key]).is_ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_column_is_catalogued_by_name() {
        for table in Table::CLINICAL {
            for column in table.columns() {
                assert!(
                    catalogued_role(table, column.name).is_some(),
                    "{}.{} has no catalogue entry",
                    table.name(),
                    column.name
                );
            }
        }
        assert_eq!(role(Table::Patients, "a_column_added_later"), ColumnRole::Withheld);
    }

    #[test]
    fn linkage_keys_provenance_and_free_text_are_never_publishable() {
        for table in Table::CLINICAL {
            for c in [
                "linkage_key",
                "linkage_quality",
                "hospital_pseudonym",
                "source_hospital",
                "batch_id",
            ] {
                assert!(!role(table, c).publishable(), "{}.{c}", table.name());
            }
        }
        // The attack: an insured record's ID4 key is a second stable linkage key across every release.
        assert_eq!(role(Table::Patients, "id4_key"), ColumnRole::Withheld);
        assert!(!role(Table::Observations, "text_value").publishable());
        assert!(!role(Table::Allergies, "substance").publishable());
    }

    #[test]
    fn public_key_lists_come_from_the_code_system() {
        assert_eq!(public_keys(Table::Patients, "prefecture", 0).map(|k| k.len()), Some(47));
        assert_eq!(public_keys(Table::Patients, "prefecture", 1).map(|k| k.len()), Some(8));
        assert_eq!(
            public_keys(Table::Patients, "prefecture", 2),
            Some(vec!["*".to_owned()])
        );
        assert_eq!(
            public_keys(Table::Patients, "municipality_code", 1).map(|k| k.len()),
            Some(47)
        );
        assert_eq!(public_keys(Table::Patients, "municipality_code", 0), None);
        assert_eq!(
            public_keys(Table::Patients, "sex", 0),
            Some(vec!["F".to_owned(), "M".to_owned(), "O".to_owned()])
        );
        let chapters = public_keys(Table::Conditions, "icd10", 3).unwrap_or_default();
        assert!(
            chapters.len() >= 22 && chapters.iter().any(|c| c == "IX I00-I99"),
            "{chapters:?}"
        );
        let years = public_keys(Table::Patients, "birth_date", 3).unwrap_or_default();
        assert_eq!(years.first().map(String::as_str), Some("1900"));
        assert_eq!(years.len(), (chrono::Utc::now().year() - FIRST_YEAR + 1) as usize);
        // Open code systems and day-level dates have no list.
        assert_eq!(public_keys(Table::Conditions, "icd10", 0), None);
        assert_eq!(public_keys(Table::Observations, "jlac10", 0), None);
        assert_eq!(public_keys(Table::Patients, "birth_date", 0), None);
        assert_eq!(public_keys(Table::Encounters, "department", 0), None);
    }

    #[test]
    fn every_listed_label_is_what_the_generator_gives_a_real_value() {
        // The listed keys and the labels the grouping computes from stored values must be the same strings.
        let cases = [
            (Table::Patients, "municipality_code", "131016", 1),
            (Table::Patients, "municipality_code", "131016", 2),
            (Table::Conditions, "icd10", "I10", 1),
            (Table::Conditions, "icd10", "E11.9", 2),
            (Table::Conditions, "icd10", "E11.9", 3),
            (Table::Patients, "birth_date", "1957-03-14", 1),
            (Table::Patients, "birth_date", "1957-03-14", 2),
            (Table::Patients, "birth_date", "1957-03-14", 4),
        ];
        for (table, column, value, level) in cases {
            let h = hierarchy(table, column).unwrap_or_else(|| panic!("{column} has a hierarchy"));
            let generated = h.generator.generate(&[value]).unwrap_or_else(|e| panic!("{e}"));
            let label = generated.label(level, generated.level(level).of_leaf()[0]).to_owned();
            let keys = public_keys(table, column, level).unwrap_or_default();
            assert!(keys.contains(&label), "{column} level {level}: {label} not listed");
        }
    }

    #[test]
    fn every_hierarchy_parses_its_own_sample() {
        for table in Table::CLINICAL {
            for column in table.columns() {
                if let Some(h) = hierarchy(table, column.name) {
                    assert!(h.generator.accepts(h.sample()), "{}.{}", table.name(), column.name);
                }
            }
        }
    }

    #[test]
    fn levels_are_named_or_numbered() {
        let h = hierarchy(Table::Conditions, "icd10").unwrap_or_else(|| panic!("icd10 has a hierarchy"));
        assert_eq!(h.level("chapter"), Some(3));
        assert_eq!(h.level("2"), Some(2));
        assert_eq!(h.level("9"), None);
        assert_eq!(h.level("decade"), None);
    }

    #[test]
    fn declared_keys_are_checked_against_the_code_system() {
        assert_eq!(is_known_value(Table::Patients, "sex", "F"), Some(true));
        assert_eq!(is_known_value(Table::Patients, "sex", "female"), Some(false));
        assert_eq!(is_known_value(Table::Patients, "prefecture", "13"), Some(true));
        assert_eq!(is_known_value(Table::Patients, "prefecture", "48"), Some(false));
        assert_eq!(is_known_value(Table::Conditions, "icd10", "E11.9"), Some(true));
        assert_eq!(is_known_value(Table::Conditions, "icd10", "diabetes"), Some(false));
        assert_eq!(is_known_value(Table::Conditions, "icd10", "E11ZZMARK4242"), Some(false));
        assert_eq!(is_known_value(Table::Conditions, "icd10", "E119"), Some(true));
        assert_eq!(
            is_known_value(Table::Observations, "jlac10", "3D010000001926101"),
            Some(true)
        );
        assert_eq!(is_known_value(Table::Observations, "jlac10", "3D010"), Some(false));
        assert_eq!(is_known_value(Table::Patients, "birth_date", "1957-03-14"), Some(true));
        assert_eq!(is_known_value(Table::Encounters, "department", "内科"), None);
    }
}
