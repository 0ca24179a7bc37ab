//! Independent verifier of (k, k^m)-anonymity, and the linkage attack measured on a release, from the written
//! files alone.
//!
//! Shares no code with [`crate::transaction`]: it never sees hierarchies, recodings or integer codes, only what
//! a recipient reads — each patient's demographic cells as written and each event as the text of its item
//! columns. Patients are grouped by their demographic row; inside a group every itemset of at most m of a
//! patient's distinct items is counted by recursive enumeration over text-derived indices. A patient is exposed
//! at m when some itemset of at most m of their items (or their demographic row alone) is shared by fewer than
//! k patients: an adversary who knows that much about them is left with fewer than k candidates.
//! Reports name classes by ordinal and give counts, never a value.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::error::{Error, Result};

/// What a release wrote, reduced to what the attack uses.
#[derive(Debug, Clone, Default)]
pub struct WrittenRecords {
    /// Each patient's demographic cells as written; `None` for a release without a patient file (then every
    /// patient shares one empty demographic row).
    pub demographics: Option<BTreeMap<String, Vec<String>>>,
    /// `(patient, item text)` for every released event row, e.g. `conditions|icd10=E11|onset_date=2024`.
    pub items: Vec<(String, String)>,
}

/// One adversary's success against a release.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AttackFigure {
    /// Items the adversary knows (besides the demographic row).
    pub m: usize,
    /// Patients in the release.
    pub patients: u64,
    /// Patients left with fewer than k candidates.
    pub below_k: u64,
    /// Patients singled out (one candidate).
    pub unique: u64,
    /// `below_k / patients`.
    pub share_below_k: f64,
    /// `unique / patients`.
    pub share_unique: f64,
}

/// The verifier's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct KmReport {
    /// Whether every patient has at least k candidates for every itemset of at most m items.
    pub ok: bool,
    /// k checked.
    pub k: u32,
    /// m checked.
    pub m: usize,
    /// Patients.
    pub patients: u64,
    /// Demographic classes.
    pub classes: u64,
    /// Event rows read.
    pub items: u64,
    /// Patients with fewer than k candidates.
    pub exposed_patients: u64,
    /// Smallest number of candidates of any patient (0 without patients).
    pub smallest_support: u64,
    /// Up to 20 violations, by class ordinal and counts.
    pub violations: Vec<String>,
}

/// For each patient (in name order), the fewest candidates over every itemset of at most `m` of their items.
fn fewest_candidates(records: &WrittenRecords, m: usize) -> Result<BTreeMap<String, (usize, u64)>> {
    let mut items_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (patient, item) in &records.items {
        items_of.entry(patient.as_str()).or_default().insert(item.as_str());
    }
    let empty: Vec<String> = Vec::new();
    let mut groups: BTreeMap<&[String], Vec<&str>> = BTreeMap::new();
    match &records.demographics {
        Some(rows) => {
            let unknown = items_of.keys().filter(|p| !rows.contains_key(**p)).count();
            if unknown > 0 {
                return Err(Error::Input(format!(
                    "{unknown} patient(s) have event rows but no row in the patient file"
                )));
            }
            for (patient, row) in rows {
                groups.entry(row.as_slice()).or_default().push(patient.as_str());
            }
        }
        None => {
            groups.insert(&empty, items_of.keys().copied().collect());
        }
    }
    let mut out = BTreeMap::new();
    for (ordinal, members) in groups.values().enumerate() {
        let mut index: HashMap<&str, u32> = HashMap::new();
        let sets: Vec<Vec<u32>> = members
            .iter()
            .map(|p| {
                let mut s: Vec<u32> = items_of
                    .get(p)
                    .map(|items| {
                        items
                            .iter()
                            .map(|i| {
                                let next = index.len() as u32;
                                *index.entry(i).or_insert(next)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                s.sort_unstable();
                s
            })
            .collect();
        let mut support: HashMap<u128, u64> = HashMap::new();
        for s in &sets {
            subsets(s, m, 0, 0, 0, &mut |key| *support.entry(key).or_insert(0) += 1);
        }
        for (p, s) in members.iter().zip(&sets) {
            let mut fewest = members.len() as u64;
            subsets(s, m, 0, 0, 0, &mut |key| fewest = fewest.min(support[&key]));
            out.insert((*p).to_owned(), (ordinal, fewest));
        }
    }
    Ok(out)
}

/// Calls `visit` with every non-empty subset of `set[from..]` of at most `left` more elements, packed with
/// `prefix` (four 32-bit slots, one more than an index so that 0 means empty).
fn subsets(set: &[u32], left: usize, from: usize, prefix: u128, depth: u32, visit: &mut dyn FnMut(u128)) {
    if left == 0 {
        return;
    }
    for i in from..set.len() {
        let key = prefix | ((set[i] as u128 + 1) << (32 * depth));
        visit(key);
        subsets(set, left - 1, i + 1, key, depth + 1, visit);
    }
}

/// Verifies (k, k^m) on written records.
pub fn verify_km(records: &WrittenRecords, k: u32, m: usize) -> Result<KmReport> {
    if !(1..=4).contains(&m) {
        return Err(Error::Config("m must be between 1 and 4".into()));
    }
    let fewest = fewest_candidates(records, m)?;
    let classes = fewest.values().map(|(c, _)| *c).collect::<BTreeSet<_>>().len() as u64;
    let mut per_class: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    for (class, n) in fewest.values() {
        if *n < k as u64 {
            let e = per_class.entry(*class).or_insert((0, u64::MAX));
            e.0 += 1;
            e.1 = e.1.min(*n);
        }
    }
    let exposed: u64 = per_class.values().map(|(n, _)| n).sum();
    Ok(KmReport {
        ok: exposed == 0,
        k,
        m,
        patients: fewest.len() as u64,
        classes,
        items: records.items.len() as u64,
        exposed_patients: exposed,
        smallest_support: fewest.values().map(|(_, n)| *n).min().unwrap_or(0),
        violations: per_class
            .iter()
            .take(20)
            .map(|(class, (n, least))| {
                format!(
                    "demographic class #{class}: {n} patient(s) hold an itemset of at most {m} item(s) shared by \
                     only {least} patient(s) (k={k})"
                )
            })
            .collect(),
    })
}

/// The linkage attack for each adversary strength in `ms`: who knows a patient's demographic row and up to m of
/// their items, how often they are left with fewer than k candidates, and how often with one.
pub fn attack(records: &WrittenRecords, k: u32, ms: &[usize]) -> Result<Vec<AttackFigure>> {
    ms.iter()
        .map(|&m| {
            if !(1..=4).contains(&m) {
                return Err(Error::Config("m must be between 1 and 4".into()));
            }
            let fewest = fewest_candidates(records, m)?;
            let patients = fewest.len() as u64;
            let below_k = fewest.values().filter(|(_, n)| *n < k as u64).count() as u64;
            let unique = fewest.values().filter(|(_, n)| *n == 1).count() as u64;
            let share = |x: u64| if patients == 0 { 0.0 } else { x as f64 / patients as f64 };
            Ok(AttackFigure {
                m,
                patients,
                below_k,
                unique,
                share_below_k: share(below_k),
                share_unique: share(unique),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(demo: &[(&str, &str)], items: &[(&str, &str)]) -> WrittenRecords {
        WrittenRecords {
            demographics: Some(
                demo.iter()
                    .map(|(p, d)| ((*p).to_owned(), vec![(*d).to_owned()]))
                    .collect(),
            ),
            items: items.iter().map(|(p, i)| ((*p).to_owned(), (*i).to_owned())).collect(),
        }
    }

    #[test]
    fn a_shared_pair_passes_and_a_rare_pair_is_caught() {
        let demo = [("a", "F"), ("b", "F"), ("c", "F")];
        let ok = records(&demo, &[("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x")]);
        // x: 3 holders, y: 2, {x, y}: 2.
        let r = verify_km(&ok, 2, 2).unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.smallest_support, 2);
        let bad = records(&demo, &[("a", "x"), ("a", "y"), ("b", "x"), ("c", "y")]);
        let r = verify_km(&bad, 2, 2).unwrap();
        assert!(!r.ok);
        assert_eq!(r.exposed_patients, 1);
        assert_eq!(r.smallest_support, 1);
        let r1 = verify_km(&bad, 2, 1).unwrap();
        assert!(r1.ok, "every single item is shared by two");
    }

    #[test]
    fn small_demographic_classes_are_exposed_whatever_the_items() {
        let r = verify_km(&records(&[("a", "F"), ("b", "M")], &[]), 2, 1).unwrap();
        assert_eq!(r.exposed_patients, 2);
        assert_eq!(r.classes, 2);
    }

    #[test]
    fn events_of_an_unlisted_patient_are_refused() {
        assert!(verify_km(&records(&[("a", "F")], &[("z", "x")]), 2, 1).is_err());
    }

    #[test]
    fn attack_counts_unique_patients() {
        let mut r = records(
            &[("a", "F"), ("b", "F"), ("c", "F")],
            &[("a", "x"), ("b", "x"), ("c", "y")],
        );
        r.demographics = None;
        let f = attack(&r, 2, &[1, 2]).unwrap();
        assert_eq!(f[0].below_k, 1);
        assert_eq!(f[0].unique, 1);
        assert_eq!(f[0].patients, 3);
    }
}
