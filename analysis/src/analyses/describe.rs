//! Descriptive statistics of a numeric column, overall or by group: patients, rows, mean, standard deviation and
//! quartiles. No minimum or maximum: each is one patient's own value, and the checks would refuse it.

use std::collections::BTreeMap;

use serde::Serialize;
use statrs::statistics::{Data, OrderStatistics, Statistics};

use super::{Analysed, AnalysisError, Frame};
use crate::output_check::{Cell, Output, PatientId, Patients, Statistic, Table};

/// The statistics of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The group's value (`all` without grouping).
    pub group: String,
    /// Distinct patients.
    pub patients: u64,
    /// Rows with a value.
    pub rows: u64,
    /// Mean of the rows' values.
    pub mean: f64,
    /// Sample standard deviation (NaN for one row).
    pub sd: f64,
    /// First quartile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
}

/// How many output cells each group has, in this order: mean, standard deviation, first quartile, median, third
/// quartile.
pub const CELLS_PER_GROUP: usize = 5;

/// Describes `value`, by `group` if given; rows with a missing value or group are left out.
pub fn describe(frame: &Frame, value: &str, group: Option<&str>) -> Result<Analysed<Vec<Summary>>, AnalysisError> {
    let values = frame.numeric(value)?;
    let groups = group.map(|g| frame.categorical(g)).transpose()?;
    let mut by_group: BTreeMap<&str, (Vec<f64>, BTreeMap<PatientId, f64>)> = BTreeMap::new();
    for (i, patient) in frame.patients().iter().enumerate() {
        let Some(v) = values[i].filter(|v| v.is_finite()) else {
            continue;
        };
        let g = match &groups {
            Some(g) => match g[i].as_deref() {
                Some(g) => g,
                None => continue,
            },
            None => "all",
        };
        let (rows, per_patient) = by_group.entry(g).or_default();
        rows.push(v);
        *per_patient.entry(*patient).or_default() += v;
    }
    let mut result = Vec::with_capacity(by_group.len());
    let mut table = Table::default();
    for (g, (rows, per_patient)) in by_group {
        let patients = Patients::new(per_patient.keys().copied().collect());
        let mean = rows.iter().mean();
        let sd = rows.iter().std_dev();
        let mut data = Data::new(rows.clone());
        let summary = Summary {
            group: g.to_owned(),
            patients: patients.len() as u64,
            rows: rows.len() as u64,
            mean,
            sd,
            q1: data.lower_quartile(),
            median: data.median(),
            q3: data.upper_quartile(),
        };
        // The mean's dominance is judged on each patient's share of the group's total.
        table.cells.push(Cell {
            statistic: Statistic::Mean,
            patients: patients.clone(),
            contributions: per_patient.values().copied().collect(),
        });
        table.cells.push(Cell {
            statistic: Statistic::Spread,
            patients: patients.clone(),
            contributions: Vec::new(),
        });
        for _ in 0..3 {
            table.cells.push(Cell {
                statistic: Statistic::Quantile,
                patients: patients.clone(),
                contributions: Vec::new(),
            });
        }
        result.push(summary);
    }
    Ok(Analysed {
        result,
        output: Output::Table(table),
    })
}
