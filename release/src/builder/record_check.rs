//! The (k, k^m) check of a whole copy, from what its files say: the patient file's rows (everything but the
//! pseudonym) are the demographics, and every other file's rows are items made of every cell but the pseudonym
//! and the measured values. The counting is `deid::verify_km`'s, which shares no code with the engine.

use std::collections::BTreeMap;

use serde::Serialize;
use tokumei_deid::verify_km::{AttackFigure, KmReport, WrittenRecords, attack, verify_km};
use tokumei_store::Table;

use crate::catalogue::{self, ColumnRole};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;

/// The verified model of a copy and the attack measured on it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RecordCheck {
    /// The model as verified, in words.
    pub model: String,
    /// k.
    pub k: u32,
    /// m.
    pub m: usize,
    /// Patients in the copy.
    pub patients: u64,
    /// Demographic classes.
    pub classes: u64,
    /// Event rows read as items.
    pub items: u64,
    /// Fewest candidates any patient has against an adversary knowing the demographics and m items.
    pub smallest_support: u64,
    /// The linkage attack for m = 1 … m + 2 (the last two are information: the model does not promise them).
    pub attack: Vec<AttackFigure>,
    /// Patients whose number of rows in some event table is shared by fewer than k patients of that table
    /// (an adversary who knows how often someone was admitted or tested), recounted on the copy. Information,
    /// like the one-value attack: counts are capped by the builder ([`super::counts`]) but are not part of
    /// the verified model, since capping after the item search may not remove items.
    #[serde(default)]
    pub rare_counts: u64,
    /// The one-value adversary, as information: knows the demographic row and one event together with its
    /// measured value as released (a lab result seen on a letter). Measured values are not items, so the model
    /// does not bound this; `None` when no measured value is released.
    #[serde(default)]
    pub one_value: Option<AttackFigure>,
}

/// The records the one-value adversary matches on: each event's item text with one measured value appended.
fn one_value_records(sheets: &[(Table, &Sheet)], base: &WrittenRecords) -> Option<WrittenRecords> {
    let mut items = Vec::new();
    for (table, sheet) in sheets.iter().filter(|(t, _)| *t != Table::Patients) {
        let roles: Vec<bool> = sheet
            .header
            .iter()
            .map(|h| matches!(catalogue::role(*table, h), ColumnRole::Measured { .. }))
            .collect();
        for r in 0..sheet.columns.first().map_or(0, Vec::len) {
            let mut text = table.name().to_owned();
            for (column, _) in sheet
                .columns
                .iter()
                .zip(&roles)
                .skip(1)
                .filter(|(_, measured)| !**measured)
            {
                text.push('|');
                text.push_str(&column[r]);
            }
            for c in (1..sheet.header.len()).filter(|&c| roles[c] && !sheet.columns[c][r].is_empty()) {
                items.push((
                    sheet.columns[0][r].clone(),
                    format!("{text}|{}={}", sheet.header[c], sheet.columns[c][r]),
                ));
            }
        }
    }
    (!items.is_empty()).then(|| WrittenRecords {
        demographics: base.demographics.clone(),
        items,
    })
}

/// What a copy's files say, as the verifier reads it.
pub fn written_records(sheets: &[(Table, &Sheet)]) -> Result<WrittenRecords> {
    let mut out = WrittenRecords::default();
    for (table, sheet) in sheets {
        let rows = sheet.columns.first().map_or(0, Vec::len);
        if *table == Table::Patients {
            let mut demographics = BTreeMap::new();
            for r in 0..rows {
                let row: Vec<String> = sheet.columns[1..].iter().map(|c| c[r].clone()).collect();
                if demographics.insert(sheet.columns[0][r].clone(), row).is_some() {
                    return Err(ReleaseError::VerificationFailed(
                        "the patient file has two rows for one pseudonym".into(),
                    ));
                }
            }
            out.demographics = Some(demographics);
            continue;
        }
        let item_columns: Vec<usize> = (1..sheet.header.len())
            .filter(|&c| !matches!(catalogue::role(*table, &sheet.header[c]), ColumnRole::Measured { .. }))
            .collect();
        for r in 0..rows {
            let mut text = table.name().to_owned();
            for &c in &item_columns {
                text.push('|');
                text.push_str(&sheet.header[c]);
                text.push('=');
                text.push_str(&sheet.columns[c][r]);
            }
            out.items.push((sheet.columns[0][r].clone(), text));
        }
    }
    Ok(out)
}

/// Patients whose rows-per-patient count in some event file of the copy is held by fewer than `k` patients of
/// that file — recounted from the written rows, independently of how the builder capped them.
pub fn rare_counts(sheets: &[(Table, &Sheet)], k: u32) -> u64 {
    let mut exposed: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (_, sheet) in sheets.iter().filter(|(t, _)| *t != Table::Patients) {
        let Some(pseudonyms) = sheet.columns.first() else {
            continue;
        };
        let mut per_patient: BTreeMap<&str, u64> = BTreeMap::new();
        for p in pseudonyms {
            *per_patient.entry(p.as_str()).or_insert(0) += 1;
        }
        let mut holders: BTreeMap<u64, u64> = BTreeMap::new();
        for n in per_patient.values() {
            *holders.entry(*n).or_insert(0) += 1;
        }
        for (p, n) in &per_patient {
            if holders[n] < u64::from(k) {
                exposed.insert(p);
            }
        }
    }
    exposed.len() as u64
}

/// The attack on a copy for each adversary in `ms`, and the one-value adversary, without judging: what
/// `tokumei risk attack` reports on a release already built.
pub fn measure(sheets: &[(Table, &Sheet)], k: u32, ms: &[usize]) -> Result<(Vec<AttackFigure>, Option<AttackFigure>)> {
    let records = written_records(sheets)?;
    let figures = attack(&records, k, ms)?;
    let one_value = match one_value_records(sheets, &records) {
        Some(r) => attack(&r, k, &[1])?.into_iter().next(),
        None => None,
    };
    Ok((figures, one_value))
}

/// Verifies (k, k^m) on a copy and measures the attack; refuses when any patient has fewer than k candidates.
pub fn check(sheets: &[(Table, &Sheet)], k: u32, m: usize) -> Result<RecordCheck> {
    let records = written_records(sheets)?;
    let report: KmReport = verify_km(&records, k, m)?;
    if !report.ok {
        return Err(ReleaseError::VerificationFailed(format!(
            "(k={k}, m={m}) over the patient record: {} of {} patients have fewer than {k} candidates: {}",
            report.exposed_patients,
            report.patients,
            report.violations.join("; ")
        )));
    }
    let rare = rare_counts(sheets, k);
    let ms: Vec<usize> = (1..=(m + 2).min(4)).collect();
    let tables: Vec<&str> = sheets.iter().map(|(t, _)| t.name()).collect();
    Ok(RecordCheck {
        model: format!(
            "(k={k}, k^m with m={m}) over the whole patient record: {} — every patient's demographic row with any \
             {m} of their event items matches at least {k} patients",
            tables.join(" + ")
        ),
        k,
        m,
        patients: report.patients,
        classes: report.classes,
        items: report.items,
        smallest_support: report.smallest_support,
        rare_counts: rare,
        attack: attack(&records, k, &ms)?,
        one_value: match one_value_records(sheets, &records) {
            Some(r) => attack(&r, k, &[1])?.into_iter().next(),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet(header: &[&str], rows: &[&[&str]]) -> Sheet {
        Sheet {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            columns: (0..header.len())
                .map(|c| rows.iter().map(|r| r[c].to_owned()).collect())
                .collect(),
        }
    }

    /// Five patients in one demographic class, each with the same two diagnoses (k = 5, m = 2 holds); then one
    /// written cell is changed, as a bug or a hand edit after the engine would — the verifier must refuse.
    #[test]
    fn a_planted_violation_in_a_written_file_is_caught() {
        let people = ["p1", "p2", "p3", "p4", "p5"];
        let patient_rows: Vec<Vec<&str>> = people.iter().map(|p| vec![*p, "1950-1954", "F"]).collect();
        let patient_refs: Vec<&[&str]> = patient_rows.iter().map(Vec::as_slice).collect();
        let patients = sheet(&["patient_pseudonym", "birth_date", "sex"], &patient_refs);
        let mut condition_rows: Vec<Vec<&str>> = Vec::new();
        for p in people {
            condition_rows.push(vec![p, "E11", "2024"]);
            condition_rows.push(vec![p, "I10", "2023"]);
        }
        let condition_refs: Vec<&[&str]> = condition_rows.iter().map(Vec::as_slice).collect();
        let mut conditions = sheet(&["patient_pseudonym", "icd10", "onset_date"], &condition_refs);
        let checked = check(&[(Table::Patients, &patients), (Table::Conditions, &conditions)], 5, 2).unwrap();
        assert_eq!(checked.smallest_support, 5);
        assert!(checked.attack.iter().all(|a| a.below_k == 0));

        conditions.columns[1][3] = "C16".into(); // p2's hypertension becomes a stomach cancer nobody else has
        let err = check(&[(Table::Patients, &patients), (Table::Conditions, &conditions)], 5, 2).unwrap_err();
        assert!(matches!(err, ReleaseError::VerificationFailed(_)), "{err}");
        assert!(!err.to_string().contains("C16"), "no data value in the error: {err}");
        // The event file alone (no patient file) is checked too, everyone in one class.
        assert!(check(&[(Table::Conditions, &conditions)], 5, 2).is_err());
        // A measured value is not an item: changing one does not make a violation.
        let mut labs = sheet(
            &["patient_pseudonym", "jlac10", "date", "value"],
            &people
                .iter()
                .map(|p| [*p, "3D010", "2024", "6.10"])
                .collect::<Vec<_>>()
                .iter()
                .map(|r| &r[..])
                .collect::<Vec<_>>(),
        );
        labs.columns[3][0] = "13.70".into();
        let checked = check(&[(Table::Patients, &patients), (Table::Observations, &labs)], 5, 2).unwrap();
        // ... but the one-value adversary who saw that result singles the patient out, and it is reported.
        let one = checked.one_value.unwrap();
        assert_eq!((one.below_k, one.unique), (5, 1), "{one:?}");
    }

    #[test]
    fn a_patient_with_a_rare_number_of_rows_is_counted() {
        let people = ["p1", "p2", "p3", "p4", "p5"];
        let patient_rows: Vec<Vec<&str>> = people.iter().map(|p| vec![*p, "1950-1954", "F"]).collect();
        let patient_refs: Vec<&[&str]> = patient_rows.iter().map(Vec::as_slice).collect();
        let patients = sheet(&["patient_pseudonym", "birth_date", "sex"], &patient_refs);
        let mut rows: Vec<Vec<&str>> = people.iter().map(|p| vec![*p, "E11", "2024"]).collect();
        let ok = sheet(
            &["patient_pseudonym", "icd10", "onset_date"],
            &rows.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        );
        assert_eq!(
            check(&[(Table::Patients, &patients), (Table::Conditions, &ok)], 5, 2)
                .unwrap()
                .rare_counts,
            0
        );
        // p3 is written with the same diagnosis three times: the items are unchanged, the count is unique.
        rows.push(vec!["p3", "E11", "2024"]);
        rows.push(vec!["p3", "E11", "2024"]);
        let planted = sheet(
            &["patient_pseudonym", "icd10", "onset_date"],
            &rows.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        );
        assert_eq!(
            rare_counts(&[(Table::Conditions, &planted)], 5),
            5,
            "p3's 3 and the others' 1 are each rare"
        );
        let checked = check(&[(Table::Patients, &patients), (Table::Conditions, &planted)], 5, 2).unwrap();
        assert_eq!(
            checked.rare_counts, 5,
            "the items are (k, k^m); the counts are reported"
        );
    }

    #[test]
    fn two_rows_for_one_pseudonym_are_refused() {
        let patients = sheet(&["patient_pseudonym", "sex"], &[&["p1", "F"], &["p1", "M"]]);
        assert!(written_records(&[(Table::Patients, &patients)]).is_err());
    }
}
