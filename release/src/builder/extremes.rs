//! Rare and extreme values (特異な記述): the values that single a person out whatever the rest of the record
//! says — a very old age, a laboratory value far outside everyone else's.
//!
//! - Birth dates of patients aged [`TOP_AGE`] or more on the build date are top-coded to one label before the
//!   demographic search, so "born in 1921" never appears: [`top_code_birth_dates`].
//! - Measured values are winsorised per code (the lab test or drug as recorded): every value above the largest
//!   value that at least k distinct patients reach is lowered to it, and likewise at the bottom, so the most
//!   extreme released value of every code is shared by k patients or more. A code measured in fewer than k
//!   patients has its values withheld (empty), since any value of it would be that rare: [`winsorise`].
//!
//! Counts are reported per column; values never are.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;
use serde::Serialize;
use tokumei_store::Table;

use crate::catalogue::{self, ColumnRole};
use crate::fingerprint::Sheet;

/// Ages at or above this are top-coded (the convention of census and HIPAA Safe Harbor tables).
pub const TOP_AGE: i32 = 90;

/// What was done to one measured column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ExtremesReport {
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Values lowered to the top bucket.
    pub top_coded: u64,
    /// Values raised to the bottom bucket.
    pub bottom_coded: u64,
    /// Values withheld because their code was measured in fewer than k patients.
    pub withheld: u64,
}

/// Whether a cell holds a top-coded birth date.
pub fn is_top_coded(value: &str) -> bool {
    value.ends_with(TOP_CODED_SUFFIX)
}

/// What follows the cutoff date in a top-coded birth date ("on or before").
const TOP_CODED_SUFFIX: &str = "以前";

/// The label of top-coded birth dates on `today`: the last birth date still aged [`TOP_AGE`] or more.
pub fn top_code_label(today: NaiveDate) -> String {
    let cutoff = cutoff(today);
    format!("{cutoff}{TOP_CODED_SUFFIX}")
}

fn cutoff(today: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    let year = today.year() - TOP_AGE;
    // 29 February in a year that has none: the day before 1 March.
    NaiveDate::from_ymd_opt(year, today.month(), today.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, 2, 28))
        .unwrap_or(today)
}

/// Replaces every birth date of a patient aged [`TOP_AGE`] or more on `today` by [`top_code_label`];
/// returns how many were replaced. Dates that do not parse are left for the hierarchy to refuse.
pub fn top_code_birth_dates(values: &mut [String], today: NaiveDate) -> u64 {
    let cutoff = cutoff(today);
    let label = top_code_label(today);
    let mut n = 0;
    for v in values.iter_mut() {
        if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d")
            && d <= cutoff
        {
            *v = label.clone();
            n += 1;
        }
    }
    n
}

/// Winsorises every measured column of `sheet` per code, so that each code's extreme buckets hold `k` patients.
pub fn winsorise(table: Table, sheet: &mut Sheet, k: u32) -> Vec<ExtremesReport> {
    let mut reports = Vec::new();
    for col in 1..sheet.header.len() {
        let ColumnRole::Measured { decimals, per_code, .. } = catalogue::role(table, &sheet.header[col]) else {
            continue;
        };
        // The column that says what the value measures (the code, as recorded, it is grouped by).
        let code = per_code.and_then(|(c, _)| sheet.header.iter().position(|h| h == c));
        let mut report = ExtremesReport {
            table: table.name().to_owned(),
            column: sheet.header[col].clone(),
            ..ExtremesReport::default()
        };
        let mut groups: BTreeMap<&str, Vec<(f64, usize)>> = BTreeMap::new();
        for r in 0..sheet.columns[0].len() {
            if let Ok(v) = sheet.columns[col][r].parse::<f64>() {
                let g = code.map_or("", |c| sheet.columns[c][r].as_str());
                groups.entry(g).or_default().push((v, r));
            }
        }
        let mut updates: Vec<(usize, Option<f64>)> = Vec::new();
        for rows in groups.values_mut() {
            rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let patients: HashSet<&str> = rows.iter().map(|(_, r)| sheet.columns[0][*r].as_str()).collect();
            if patients.len() < k as usize {
                report.withheld += rows.len() as u64;
                updates.extend(rows.iter().map(|(_, r)| (*r, None)));
                continue;
            }
            let threshold = |iter: &mut dyn Iterator<Item = &(f64, usize)>| {
                let mut seen: HashSet<&str> = HashSet::new();
                for (v, r) in iter {
                    seen.insert(sheet.columns[0][*r].as_str());
                    if seen.len() >= k as usize {
                        return *v;
                    }
                }
                f64::NAN
            };
            let high = threshold(&mut rows.iter().rev());
            let low = threshold(&mut rows.iter());
            for (v, r) in rows.iter() {
                if *v > high {
                    report.top_coded += 1;
                    updates.push((*r, Some(high)));
                } else if *v < low {
                    report.bottom_coded += 1;
                    updates.push((*r, Some(low)));
                }
            }
        }
        for (r, v) in updates {
            sheet.columns[col][r] = v.map_or_else(String::new, |v| format!("{v:.prec$}", prec = decimals as usize));
        }
        reports.push(report);
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet(rows: &[(&str, &str, &str)]) -> Sheet {
        Sheet {
            header: vec!["patient_pseudonym".into(), "jlac10".into(), "value".into()],
            columns: vec![
                rows.iter().map(|r| r.0.to_owned()).collect(),
                rows.iter().map(|r| r.1.to_owned()).collect(),
                rows.iter().map(|r| r.2.to_owned()).collect(),
            ],
        }
    }

    #[test]
    fn extremes_are_pulled_to_the_kth_patient_and_rare_codes_withheld() {
        let mut s = sheet(&[
            ("a", "X", "1.00"),
            ("b", "X", "5.00"),
            ("c", "X", "6.00"),
            ("d", "X", "7.00"),
            ("e", "X", "99.00"),
            ("a", "Y", "3.00"),
        ]);
        let r = winsorise(Table::Observations, &mut s, 2);
        assert_eq!(s.columns[2], ["5.00", "5.00", "6.00", "7.00", "7.00", ""]);
        assert_eq!(r[0].top_coded, 1);
        assert_eq!(r[0].bottom_coded, 1);
        assert_eq!(r[0].withheld, 1);
    }

    #[test]
    fn extreme_buckets_count_patients_not_rows() {
        // One patient with three very high values does not make the top bucket safe.
        let mut s = sheet(&[
            ("a", "X", "90.00"),
            ("a", "X", "91.00"),
            ("a", "X", "92.00"),
            ("b", "X", "10.00"),
            ("c", "X", "11.00"),
        ]);
        winsorise(Table::Observations, &mut s, 2);
        assert_eq!(s.columns[2], ["11.00", "11.00", "11.00", "11.00", "11.00"]);
    }

    #[test]
    fn the_very_old_are_top_coded() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let mut v = vec![
            "1936-12-03".to_owned(),
            "1936-12-04".to_owned(),
            "1920-01-01".to_owned(),
            String::new(),
        ];
        assert_eq!(top_code_birth_dates(&mut v, today), 2);
        assert_eq!(v[0], "1936-12-03以前");
        assert_eq!(v[1], "1936-12-04");
        assert_eq!(v[2], v[0]);
    }
}
