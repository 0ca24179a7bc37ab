//! A cross-tabulation: distinct patients per combination of one or two categorical columns. Every combination of
//! the values seen is a cell, zeros included (so that the checks see the zeros a reader would).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Analysed, AnalysisError, Frame};
use crate::output_check::{Cell, Output, PatientId, Patients, Statistic, Table};

/// Patients per row value × column value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrossTab {
    /// The row column and its values, sorted.
    pub rows: (String, Vec<String>),
    /// The column column and its values (one `all` column without a second variable).
    pub columns: (String, Vec<String>),
    /// Distinct patients, `counts[row][column]`; cell `row * columns + column` of the output.
    pub counts: Vec<Vec<u64>>,
}

/// Cross-tabulates `rows` by `columns` (or alone); rows with a missing value in either are left out.
pub fn crosstab(frame: &Frame, rows: &str, columns: Option<&str>) -> Result<Analysed<CrossTab>, AnalysisError> {
    let r = frame.categorical(rows)?;
    let c = columns.map(|name| frame.categorical(name)).transpose()?;
    let mut cells: BTreeMap<(&str, &str), Vec<PatientId>> = BTreeMap::new();
    let (mut row_values, mut column_values) = (BTreeSet::new(), BTreeSet::new());
    for (i, patient) in frame.patients().iter().enumerate() {
        let Some(rv) = r[i].as_deref() else { continue };
        let cv = match &c {
            Some(c) => match c[i].as_deref() {
                Some(v) => v,
                None => continue,
            },
            None => "all",
        };
        row_values.insert(rv);
        column_values.insert(cv);
        cells.entry((rv, cv)).or_default().push(*patient);
    }
    let mut counts = Vec::with_capacity(row_values.len());
    let mut table = Table::default();
    for rv in &row_values {
        let mut line = Vec::with_capacity(column_values.len());
        for cv in &column_values {
            let patients = Patients::new(cells.remove(&(*rv, *cv)).unwrap_or_default());
            line.push(patients.len() as u64);
            table.cells.push(Cell {
                statistic: Statistic::Count,
                patients,
                contributions: Vec::new(),
            });
        }
        counts.push(line);
    }
    let owned = |set: BTreeSet<&str>| set.into_iter().map(str::to_owned).collect::<Vec<_>>();
    Ok(Analysed {
        result: CrossTab {
            rows: (rows.to_owned(), owned(row_values)),
            columns: (columns.unwrap_or("all").to_owned(), owned(column_values)),
            counts,
        },
        output: Output::Table(table),
    })
}
