//! Rare counts (特異な記述): how many rows a patient has in an event table is itself something an acquaintance
//! may know ("admitted twelve times", "a hundred lab tests last year"), and the record's items do not cover it.
//!
//! Every event table's rows-per-patient counts are coarsened by truncation so that **every count value is
//! shared by at least k patients** of the table: walking the distinct counts
//! from the largest down, patients are gathered until k are together, and all of them keep as many rows as
//! the smallest count among them (so the largest released count is a top code held by k patients or more);
//! a remainder of fewer than k at the bottom joins the group above it. A table with rows of fewer than k
//! patients is withheld whole.
//!
//! Which rows a truncated patient keeps: one row of each of their distinct items first (in row order), then
//! repeats — so the patient's *set* of items, which is what (k, k^m) is about, is kept whenever it fits.
//!
//! Capping runs twice ([`super::protect`]): **before** the item search, on the rows as recorded, where it may
//! drop items ([`Drop::Items`]) because the search that follows sees the capped rows and makes them
//! (k, k^m)-anonymous; and **after** it, because suppressing rare items removes rows and may make a count
//! rare again — then only repeated items are dropped ([`Drop::RepeatsOnly`]), which leaves every patient's item
//! set and so the verified model untouched. A patient whose distinct items alone make a rare count keeps
//! them; those patients are counted ([`CountCap::rare_after`]) and reported, never hidden.
//!
//! The counts are made safe on their own, not together with the demographic class: an adversary who knows both
//! a rare class-and-count combination is not covered (docs/release.md, "Limits"). Counts only are reported.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tokumei_store::Table;

use crate::catalogue::{self, ColumnRole};
use crate::fingerprint::Sheet;

/// What capping did to one event table's rows-per-patient counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountCap {
    /// The table.
    pub table: String,
    /// Patients with rows in the table before capping.
    pub patients: u64,
    /// Patients whose count was lowered.
    pub patients_capped: u64,
    /// Rows not released because of the caps.
    pub rows_dropped: u64,
    /// Distinct items a patient lost because they had more than their cap (0 when every item set fitted).
    pub items_dropped: u64,
    /// The largest count released (the top code), 0 when the table is withheld or empty.
    pub largest_count: u64,
    /// Whether the whole table was withheld (rows of fewer than k patients).
    pub withheld: bool,
    /// Patients whose count is still shared by fewer than k patients after both passes (their distinct items
    /// alone exceed the cap; see the module documentation).
    #[serde(default)]
    pub rare_after: u64,
}

/// What a capping pass may remove from a patient over the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Any rows, repeats first (before the item search).
    Items,
    /// Only rows whose item the patient keeps in another row (after the item search).
    RepeatsOnly,
}

impl CountCap {
    /// Adds a later pass's figures to this one's (same table).
    pub fn absorb(&mut self, later: CountCap) {
        self.patients_capped += later.patients_capped;
        self.rows_dropped += later.rows_dropped;
        self.items_dropped += later.items_dropped;
        self.largest_count = later.largest_count;
        self.withheld |= later.withheld;
        self.rare_after = later.rare_after;
    }
}

/// The cap of every count value: `cap[n]` is how many rows a patient with `n` rows keeps.
fn caps(histogram: &BTreeMap<usize, u64>, k: u64) -> BTreeMap<usize, usize> {
    let mut groups: Vec<(Vec<usize>, u64)> = Vec::new();
    let mut current: (Vec<usize>, u64) = (Vec::new(), 0);
    for (&count, &patients) in histogram.iter().rev() {
        current.0.push(count);
        current.1 += patients;
        if current.1 >= k {
            groups.push(std::mem::take(&mut current));
        }
    }
    if !current.0.is_empty() {
        match groups.last_mut() {
            Some(last) => {
                last.0.extend(current.0);
                last.1 += current.1;
            }
            None => groups.push(current),
        }
    }
    let mut out = BTreeMap::new();
    for (counts, _) in groups {
        let floor = counts.iter().copied().min().unwrap_or(0);
        for c in counts {
            out.insert(c, floor);
        }
    }
    out
}

/// Caps the rows-per-patient counts of event table `table` in `sheet` (pseudonym first) so every count value
/// is shared by at least `k` patients (see the module documentation).
pub fn cap_counts(table: Table, sheet: &mut Sheet, k: u32, mode: Drop) -> CountCap {
    let k = u64::from(k.max(1));
    let rows = sheet.columns.first().map_or(0, Vec::len);
    let item_columns: Vec<usize> = (1..sheet.header.len())
        .filter(|&c| !matches!(catalogue::role(table, &sheet.header[c]), ColumnRole::Measured { .. }))
        .collect();
    let mut rows_of: HashMap<&str, Vec<usize>> = HashMap::new();
    for r in 0..rows {
        rows_of.entry(sheet.columns[0][r].as_str()).or_default().push(r);
    }
    let mut report = CountCap {
        table: table.name().to_owned(),
        patients: rows_of.len() as u64,
        ..CountCap::default()
    };
    let mut histogram: BTreeMap<usize, u64> = BTreeMap::new();
    for list in rows_of.values() {
        *histogram.entry(list.len()).or_default() += 1;
    }
    let mut drop = vec![false; rows];
    if report.patients < k && mode == Drop::Items {
        report.withheld = report.patients > 0;
        report.rows_dropped = rows as u64;
        drop.iter_mut().for_each(|d| *d = true);
    } else {
        let cap = caps(&histogram, k);
        let mut released: HashMap<usize, u64> = HashMap::new();
        let mut kept_counts = Vec::with_capacity(rows_of.len());
        for list in rows_of.values() {
            let item = |r: usize| -> Vec<&str> { item_columns.iter().map(|&c| sheet.columns[c][r].as_str()).collect() };
            let mut seen: HashSet<Vec<&str>> = HashSet::new();
            let (firsts, repeats): (Vec<usize>, Vec<usize>) = list.iter().partition(|&&r| seen.insert(item(r)));
            let mut keep = cap.get(&list.len()).copied().unwrap_or(list.len());
            if mode == Drop::RepeatsOnly {
                keep = keep.max(firsts.len());
            }
            let keep = keep.min(list.len());
            *released.entry(keep).or_default() += 1;
            kept_counts.push(keep);
            if keep == list.len() {
                continue;
            }
            report.patients_capped += 1;
            report.rows_dropped += (list.len() - keep) as u64;
            report.items_dropped += firsts.len().saturating_sub(keep) as u64;
            for &r in firsts.iter().chain(&repeats).skip(keep) {
                drop[r] = true;
            }
        }
        report.largest_count = kept_counts.iter().copied().max().unwrap_or(0) as u64;
        report.rare_after = kept_counts.iter().filter(|n| released[*n] < k).count() as u64;
    }
    super::select::drop_rows(sheet, &drop);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet(rows: &[(&str, &str)]) -> Sheet {
        Sheet {
            header: vec!["patient_pseudonym".into(), "icd10".into()],
            columns: vec![
                rows.iter().map(|r| r.0.to_owned()).collect(),
                rows.iter().map(|r| r.1.to_owned()).collect(),
            ],
        }
    }

    /// Rows per pseudonym in a sheet, recounted by hand.
    fn counts(s: &Sheet) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for p in &s.columns[0] {
            *out.entry(p.clone()).or_default() += 1;
        }
        out
    }

    #[test]
    fn every_count_value_is_shared_by_k_patients_and_the_tail_is_top_coded() {
        // Counts: a,b,c have 1; d,e have 2; f has 3; g has 9 (the "admitted nine times" patient).
        let mut rows = vec![
            ("a", "A"),
            ("b", "A"),
            ("c", "A"),
            ("d", "A"),
            ("d", "B"),
            ("e", "A"),
            ("e", "B"),
        ];
        rows.extend([("f", "A"), ("f", "B"), ("f", "A")]);
        rows.extend(std::iter::repeat_n(("g", "A"), 8).chain([("g", "B")]));
        let mut s = sheet(&rows);
        let r = cap_counts(Table::Conditions, &mut s, 3, Drop::Items);
        let after = counts(&s);
        let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
        for n in after.values() {
            *histogram.entry(*n).or_default() += 1;
        }
        // 9, 3, 2 gather d, e, f, g at 2 rows; 1 keeps a, b, c.
        assert_eq!(histogram, BTreeMap::from([(1, 3), (2, 4)]));
        assert_eq!((r.patients, r.patients_capped, r.rows_dropped), (7, 2, 8));
        assert_eq!(r.largest_count, 2);
        // g keeps both of its distinct diagnoses, not two copies of the first.
        let g: BTreeSet<&str> = (0..s.columns[0].len())
            .filter(|&i| s.columns[0][i] == "g")
            .map(|i| s.columns[1][i].as_str())
            .collect();
        assert_eq!(g, BTreeSet::from(["A", "B"]));
        assert_eq!(r.items_dropped, 0);
    }

    #[test]
    fn a_remainder_at_the_bottom_joins_the_group_above() {
        // k = 2: counts 5, 4 (one each) make a group at 4; count 1 (one patient) joins it, so all keep 1.
        let mut s = sheet(&[
            ("a", "A"),
            ("b", "A"),
            ("b", "B"),
            ("b", "C"),
            ("b", "D"),
            ("c", "A"),
            ("c", "B"),
            ("c", "C"),
            ("c", "D"),
            ("c", "E"),
        ]);
        let r = cap_counts(Table::Conditions, &mut s, 2, Drop::Items);
        assert!(counts(&s).values().all(|&n| n == 1));
        assert_eq!(r.items_dropped, 3 + 4, "distinct items beyond the cap are reported");
    }

    #[test]
    fn a_table_of_fewer_than_k_patients_is_withheld() {
        let mut s = sheet(&[("a", "A"), ("b", "A")]);
        let r = cap_counts(Table::Conditions, &mut s, 5, Drop::Items);
        assert!(r.withheld && s.columns[0].is_empty());
    }

    #[test]
    fn counts_already_shared_are_left_alone() {
        let mut s = sheet(&[("a", "A"), ("b", "A"), ("a", "B"), ("b", "B")]);
        let before = s.clone();
        let r = cap_counts(Table::Conditions, &mut s, 2, Drop::Items);
        assert_eq!(s.columns, before.columns);
        assert_eq!((r.patients_capped, r.rows_dropped, r.largest_count), (0, 0, 2));
    }

    #[test]
    fn after_the_search_only_repeats_go_and_what_stays_rare_is_counted() {
        // k = 2: b has 4 rows but only 2 distinct items, c has 5 distinct items; a has 1 row.
        let rows = [
            ("a", "A"),
            ("b", "A"),
            ("b", "A"),
            ("b", "B"),
            ("b", "B"),
            ("c", "A"),
            ("c", "B"),
            ("c", "C"),
            ("c", "D"),
            ("c", "E"),
        ];
        let mut s = sheet(&rows);
        let r = cap_counts(Table::Conditions, &mut s, 2, Drop::RepeatsOnly);
        let after = counts(&s);
        // Caps would be 1 for everyone; b can go down to its 2 distinct items, c keeps its 5.
        assert_eq!(
            after,
            BTreeMap::from([("a".into(), 1), ("b".into(), 2), ("c".into(), 5)])
        );
        assert_eq!((r.items_dropped, r.rows_dropped, r.rare_after), (0, 2, 3));
        // The item sets are untouched.
        let items: BTreeSet<(String, String)> = (0..s.columns[0].len())
            .map(|i| (s.columns[0][i].clone(), s.columns[1][i].clone()))
            .collect();
        let before: BTreeSet<(String, String)> = rows.iter().map(|(p, i)| ((*p).into(), (*i).into())).collect();
        assert_eq!(items, before);
    }

    use std::collections::BTreeSet;
}
