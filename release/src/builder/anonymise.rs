//! The approved privacy model on the patients file: the `deid` engine finds the optimal generalisation of the
//! demographic quasi-identifiers (classes count distinct patients), and the independent verifier recounts the
//! result. Patients the engine suppresses are withheld from every file of the release.

use std::collections::HashSet;

use tokumei_deid::dataset::{Dataset, QiInput};
use tokumei_deid::generators::Generator;
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::job::{self, JobConfig};
use tokumei_deid::model::PrivacyModel as DeidModel;
use tokumei_deid::report::RiskReport;
use tokumei_deid::table::{Column, Table as DeidTable};
use tokumei_deid::transform;
use tokumei_deid::verify::{VerifyConfig, VerifyReport, verify_table};
use tokumei_policy::committee::PrivacyModel;
use tokumei_store::Table;

use crate::catalogue::{self, ColumnRole, PSEUDONYM};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;

/// What the anonymisation did to a file.
#[derive(Debug, Clone, Default)]
pub struct Anonymised {
    /// Quasi-identifiers and the level applied.
    pub generalisation: Vec<(String, u32)>,
    /// Pseudonyms of suppressed patients: their rows leave every file.
    pub withheld: HashSet<String>,
    /// Patients before suppression.
    pub patients: u64,
    /// Risk before and after (for the engine's optimum; `None` for a coarser node chosen by the joint search).
    pub risk: Option<RiskReport>,
    /// Level applied to each quasi-identifier, in column order.
    pub levels: Vec<u32>,
    /// Highest level of each quasi-identifier's hierarchy.
    pub max_levels: Vec<u32>,
}

/// The quasi-identifiers among a sheet's columns.
pub fn quasi_identifiers(table: Table, sheet: &Sheet) -> Vec<(usize, Generator)> {
    sheet
        .header
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match catalogue::role(table, c) {
            ColumnRole::QuasiIdentifier(g) => Some((i, g)),
            _ => None,
        })
        .collect()
}

/// The deid table of a sheet (the verifier's and the engine's input).
pub fn to_table(sheet: &Sheet) -> Result<DeidTable> {
    let columns = sheet
        .header
        .iter()
        .zip(&sheet.columns)
        .map(|(name, values)| {
            let mut c = Column::new(name.clone());
            for v in values {
                c.push(v);
            }
            c
        })
        .collect();
    Ok(DeidTable::from_columns(columns)?)
}

/// Generalises the sheet's quasi-identifiers in place under `model`, removing suppressed patients' rows: at the
/// engine's optimum, or at `levels` (a coarser node the whole-record search prefers).
pub fn anonymise(table: Table, sheet: &mut Sheet, model: &PrivacyModel, levels: Option<&[u32]>) -> Result<Anonymised> {
    let qis = quasi_identifiers(table, sheet);
    let patients = sheet.columns[0].iter().collect::<HashSet<_>>().len() as u64;
    if qis.is_empty() || sheet.columns[0].is_empty() {
        return Ok(Anonymised {
            patients,
            ..Anonymised::default()
        });
    }
    let input = to_table(sheet)?;
    let qi_inputs = qis
        .iter()
        .map(|(i, g)| {
            Ok(QiInput {
                name: sheet.header[*i].clone(),
                hierarchy: hierarchy(g, &sheet.columns[*i])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ds = Dataset::encode(&input, qi_inputs, Vec::new(), Some(PSEUDONYM))?;
    let cfg = JobConfig {
        model: DeidModel {
            k: model.k,
            l_diversity: None,
            t_closeness: None,
            average_risk: None,
            suppression_limit: model.max_suppression,
        },
        ..JobConfig::default()
    };
    let (applied, risk) = match levels {
        None => {
            let out = job::run(&ds, &cfg).map_err(|e| match e {
                tokumei_deid::Error::NoSolution(n) => ReleaseError::NotReleasable(format!(
                    "no generalisation of the demographics reaches k={} within {:.1} % suppression: {n}",
                    model.k,
                    model.max_suppression * 100.0
                )),
                other => other.into(),
            })?;
            (out.anonymized, Some(out.report.risk))
        }
        Some(levels) => {
            let a = transform::apply(&ds, &cfg.model, cfg.metric, levels)?;
            if !a.feasible {
                return Err(ReleaseError::VerificationFailed(
                    "a coarser demographic generalisation did not satisfy k".into(),
                ));
            }
            (a, None)
        }
    };
    let mut withheld = HashSet::new();
    for ((q, (col, _)), &chosen) in ds.qis.iter().zip(&qis).zip(&applied.levels) {
        let level = q.hierarchy.level(chosen as usize);
        let labels: Vec<&str> = level
            .of_leaf()
            .iter()
            .map(|&g| level.labels()[g as usize].as_str())
            .collect();
        for (row, cell) in sheet.columns[*col].iter_mut().enumerate() {
            *cell = labels[q.codes[row] as usize].to_owned();
        }
    }
    for (row, suppressed) in applied.row_suppressed.iter().enumerate() {
        if *suppressed {
            withheld.insert(sheet.columns[0][row].clone());
        }
    }
    super::select::withhold(sheet, &withheld);
    Ok(Anonymised {
        generalisation: ds
            .qis
            .iter()
            .zip(&applied.levels)
            .map(|(q, l)| (q.name.clone(), *l))
            .collect(),
        withheld,
        patients,
        risk,
        levels: applied.levels.clone(),
        max_levels: ds.qis.iter().map(|q| q.max_level() as u32).collect(),
    })
}

/// A generator's hierarchy over a column's values; missing values (empty cells) and top-coded values
/// ([`super::extremes`]) get their own chain, the same label at every level up to `*`.
fn hierarchy(generator: &Generator, values: &[String]) -> Result<Hierarchy> {
    let mut distinct: Vec<&str> = values
        .iter()
        .map(String::as_str)
        .filter(|v| !v.is_empty() && !super::extremes::is_top_coded(v))
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let mut top_coded: Vec<&str> = values
        .iter()
        .map(String::as_str)
        .filter(|v| super::extremes::is_top_coded(v))
        .collect();
    top_coded.sort_unstable();
    top_coded.dedup();
    let has_empty = values.iter().any(String::is_empty);
    if distinct.is_empty() {
        let mut rows = Vec::new();
        for v in top_coded.iter().copied().chain(has_empty.then_some("")) {
            rows.push((rows.len() + 1, vec![v.to_owned(), "*".into()]));
        }
        return Ok(Hierarchy::from_rows("missing or top-coded values", rows)?);
    }
    let generated = generator.generate(&distinct)?;
    if !has_empty && top_coded.is_empty() {
        return Ok(generated);
    }
    let height = generated.height();
    let leaves = generated.level(0);
    let mut rows: Vec<(usize, Vec<String>)> = (0..leaves.labels().len())
        .map(|leaf| {
            let chain = (0..height)
                .map(|l| {
                    let level = generated.level(l);
                    level.labels()[level.of_leaf()[leaf] as usize].clone()
                })
                .collect();
            (leaf + 1, chain)
        })
        .collect();
    for label in top_coded {
        let mut chain = vec![label.to_owned(); height - 1];
        chain.push("*".into());
        rows.push((rows.len() + 1, chain));
    }
    if has_empty {
        let mut missing = vec![String::new(); height - 1];
        missing.push("*".into());
        rows.push((rows.len() + 1, missing));
    }
    Ok(Hierarchy::from_rows(generated.source(), rows)?)
}

/// Recounts a file's classes with the independent verifier (distinct patients per class).
pub fn verify(table: Table, sheet: &Sheet, model: &PrivacyModel) -> Result<Option<VerifyReport>> {
    let qis = quasi_identifiers(table, sheet);
    if qis.is_empty() || sheet.columns[0].is_empty() {
        return Ok(None);
    }
    let cfg = VerifyConfig {
        qis: qis.iter().map(|(i, _)| sheet.header[*i].clone()).collect(),
        k: model.k,
        subject: Some(PSEUDONYM.to_owned()),
        ..VerifyConfig::default()
    };
    let report = verify_table(&to_table(sheet)?, &cfg)?;
    if !report.ok {
        return Err(ReleaseError::VerificationFailed(format!(
            "{}: {} violation(s): {}",
            table.name(),
            report.violation_count,
            report.violations.join("; ")
        )));
    }
    Ok(Some(report))
}
