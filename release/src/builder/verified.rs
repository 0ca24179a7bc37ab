//! A recipient's copy as the independent verifiers passed it: the only thing the release's file writers accept.
//!
//! As OpenDP carries a measurement's properties in its type, the builder carries "verified" in one: a
//! [`VerifiedCopy`] is made only by [`VerifiedCopy::verify`], which recounts every file's demographic classes
//! (k distinct patients, `deid::verify`) and the whole record's (k, k^m) with the linkage attack
//! (`record_check`, over `deid::verify_km`) on the cells exactly as they will be written — fingerprints included —
//! and [`files::copy_files`](super::files::copy_files) takes nothing else. A change that wrote a sheet without
//! verifying it would not compile.

use tokumei_deid::verify::VerifyReport;
use tokumei_policy::committee::PrivacyModel;
use tokumei_store::Table;

use super::anonymise;
use super::record_check::{self, RecordCheck};
use crate::error::Result;
use crate::fingerprint::Sheet;

/// One verified file of a copy.
#[derive(Debug)]
pub struct VerifiedTable {
    table: Table,
    sheet: Sheet,
    classes: Option<VerifyReport>,
}

impl VerifiedTable {
    /// Which table.
    pub fn table(&self) -> Table {
        self.table
    }

    /// Its cells, as verified.
    pub fn sheet(&self) -> &Sheet {
        &self.sheet
    }

    /// The demographic recount (`None` when the file has no quasi-identifier or no row).
    pub fn classes(&self) -> Option<&VerifyReport> {
        self.classes.as_ref()
    }
}

/// A copy whose every file and whole record passed the independent verifiers under the approval's model.
#[derive(Debug)]
pub struct VerifiedCopy {
    tables: Vec<VerifiedTable>,
    record: RecordCheck,
}

impl VerifiedCopy {
    /// Verifies `tables` under `model` (refusing with `VERIFICATION_FAILED` if any file or the whole record falls
    /// short) and wraps them.
    pub fn verify(tables: Vec<(Table, Sheet)>, model: &PrivacyModel) -> Result<VerifiedCopy> {
        let mut verified = Vec::with_capacity(tables.len());
        for (table, sheet) in tables {
            let classes = anonymise::verify(table, &sheet, model)?;
            verified.push(VerifiedTable { table, sheet, classes });
        }
        let refs: Vec<(Table, &Sheet)> = verified.iter().map(|t| (t.table, &t.sheet)).collect();
        let record = record_check::check(&refs, model.k, model.m as usize)?;
        Ok(VerifiedCopy {
            tables: verified,
            record,
        })
    }

    /// The verified files, in the copy's order.
    pub fn tables(&self) -> &[VerifiedTable] {
        &self.tables
    }

    /// The whole-record recount and the attack measured on it.
    pub fn record(&self) -> &RecordCheck {
        &self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(k: u32) -> PrivacyModel {
        PrivacyModel {
            k,
            l: None,
            t: None,
            max_suppression: 0.05,
            m: 1,
            demographic_weight: None,
        }
    }

    fn patients(rows: &[[&str; 3]]) -> Sheet {
        let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.to_vec()).collect();
        Sheet::from_rows(&["patient_pseudonym", "sex", "prefecture"], &rows).expect("sheet")
    }

    #[test]
    fn only_a_copy_the_verifiers_pass_becomes_a_verified_copy() {
        let ok = patients(&[
            ["p1", "F", "13"],
            ["p2", "F", "13"],
            ["p3", "M", "14"],
            ["p4", "M", "14"],
        ]);
        let copy = VerifiedCopy::verify(vec![(Table::Patients, ok)], &model(2)).expect("2-anonymous");
        assert_eq!(copy.tables().len(), 1);
        assert!(copy.tables()[0].classes().is_some());
        // A unique patient (one M in 14): refused, and there is no other way to make the type.
        let unique = patients(&[["p1", "F", "13"], ["p2", "F", "13"], ["p3", "M", "14"]]);
        let err = VerifiedCopy::verify(vec![(Table::Patients, unique)], &model(2)).unwrap_err();
        assert_eq!(err.reason(), "VERIFICATION_FAILED");
    }
}
