//! Drawing the noise: runs a [`Plan`]'s OpenDP measurements on the [`Grouped`] aggregates and
//! assembles the released table. Call it only after the budget ledger admitted the plan's loss.

use std::collections::HashMap;

use serde::Serialize;

use crate::dp::grouping::Grouped;
use crate::dp::mechanisms::{
    map_gaussian_threshold, map_laplace_threshold, quantile_pure, quantile_zcdp, vec_gaussian, vec_laplace,
};
use crate::dp::plan::{Component, ComponentKind, Mechanism, Plan};
use crate::dp::request::{Measure, StatsRequest};
use crate::error::{Error, Result};

/// One released cell.
#[derive(Debug, Clone, Serialize)]
pub struct ReleasedCell {
    /// Group key parts (group-by columns, then the bin for histograms).
    pub key: Vec<String>,
    /// The noisy statistic.
    pub value: f64,
    /// Noisy count released alongside (mean, and partition-selected sums/quantiles), if any.
    pub count: Option<i64>,
    /// Expected absolute error of `value` (for means an estimate from the noisy count).
    pub expected_abs_error: Option<f64>,
    /// Half-width of a 95 % interval around `value` (for means an estimate).
    pub ci95_half_width: Option<f64>,
}

/// A released private table.
#[derive(Debug, Clone, Serialize)]
pub struct PrivateTable {
    /// Names of the key parts.
    pub key_columns: Vec<String>,
    /// Name of the statistic column.
    pub measure: String,
    /// The cells, sorted by key.
    pub cells: Vec<ReleasedCell>,
    /// How the table is protected, for the output's `protection` column.
    pub protection: String,
}

/// Runs the plan. Each call draws fresh noise.
pub fn release(plan: &Plan, request: &StatsRequest, grouped: &Grouped) -> Result<PrivateTable> {
    let component = |kind: ComponentKind| plan.components.iter().find(|c| c.kind == kind);
    // 1. Which groups are released, with their noisy counts when a count component exists.
    let (released, noisy_counts): (Vec<usize>, Option<Vec<i64>>) =
        if let Some(c) = component(ComponentKind::ThresholdCount) {
            let threshold = c
                .threshold
                .ok_or_else(|| Error::Config("threshold missing from plan".into()))?;
            let input: HashMap<u32, i64> = grouped
                .counts
                .iter()
                .enumerate()
                .map(|(g, &count)| (g as u32, count))
                .collect();
            let out = match plan.mechanism {
                Mechanism::Laplace => map_laplace_threshold(c.internal_scale, threshold)?.invoke(&input)?,
                Mechanism::Gaussian => map_gaussian_threshold(c.internal_scale, threshold)?.invoke(&input)?,
            };
            let mut ids: Vec<usize> = out.keys().map(|&g| g as usize).collect();
            ids.sort_by(|a, b| grouped.keys[*a].cmp(&grouped.keys[*b]));
            let counts = ids.iter().map(|g| out[&(*g as u32)]).collect();
            (ids, Some(counts))
        } else if !grouped.public {
            return Err(Error::Config("group keys are neither public nor selected".into()));
        } else {
            let mut ids: Vec<usize> = (0..grouped.keys.len()).collect();
            ids.sort_by(|a, b| grouped.keys[*a].cmp(&grouped.keys[*b]));
            let counts = match component(ComponentKind::Count) {
                None => None,
                Some(c) => {
                    let exact: Vec<i64> = ids.iter().map(|&g| grouped.counts[g]).collect();
                    Some(noisy_vector(plan.mechanism, c, &exact)?)
                }
            };
            (ids, counts)
        };
    // 2. The statistic.
    let count_component = component(ComponentKind::ThresholdCount).or(component(ComponentKind::Count));
    let mut cells = Vec::with_capacity(released.len());
    match &request.measure {
        Measure::Count | Measure::Histogram { .. } => {
            let c = count_component.ok_or_else(|| Error::Config("count component missing".into()))?;
            let counts = noisy_counts.unwrap_or_default();
            for (i, &g) in released.iter().enumerate() {
                cells.push(ReleasedCell {
                    key: grouped.keys[g].clone(),
                    value: counts[i] as f64,
                    count: None,
                    expected_abs_error: c.expected_abs_error,
                    ci95_half_width: c.ci95_half_width,
                });
            }
        }
        Measure::Sum { .. } => {
            let (sums, c) = noisy_sums(plan, grouped, &released)?;
            for (i, &g) in released.iter().enumerate() {
                cells.push(ReleasedCell {
                    key: grouped.keys[g].clone(),
                    value: sums[i],
                    count: noisy_counts.as_ref().map(|n| n[i]),
                    expected_abs_error: c.expected_abs_error,
                    ci95_half_width: c.ci95_half_width,
                });
            }
        }
        Measure::Mean { bounds, .. } => {
            let (sums, s) = noisy_sums(plan, grouped, &released)?;
            let c = count_component.ok_or_else(|| Error::Config("count component missing".into()))?;
            let counts = noisy_counts.unwrap_or_default();
            for (i, &g) in released.iter().enumerate() {
                let n = counts[i].max(1) as f64;
                let mean = bounds.clamp(sums[i] / n);
                // Delta-method estimate from released values only (post-processing).
                let err = |sum_err: Option<f64>, count_err: Option<f64>| match (sum_err, count_err) {
                    (Some(se), Some(ce)) => Some(((se + mean.abs() * ce) / n).min(bounds.hi - bounds.lo)),
                    _ => None,
                };
                cells.push(ReleasedCell {
                    key: grouped.keys[g].clone(),
                    value: mean,
                    count: Some(counts[i]),
                    expected_abs_error: err(s.expected_abs_error, c.expected_abs_error),
                    ci95_half_width: err(s.ci95_half_width, c.ci95_half_width),
                });
            }
        }
        Measure::Quantile { .. } => {
            let c =
                component(ComponentKind::Quantile).ok_or_else(|| Error::Config("quantile component missing".into()))?;
            let cands = plan.candidates.clone().unwrap_or_default();
            let q = match &request.measure {
                Measure::Quantile { q, .. } => *q,
                _ => 0.5,
            };
            for (i, &g) in released.iter().enumerate() {
                let values = &grouped.values[g];
                let value = match plan.mechanism {
                    Mechanism::Laplace => quantile_pure(cands.clone(), q, c.internal_scale)?.invoke(values)?,
                    Mechanism::Gaussian => quantile_zcdp(cands.clone(), q, c.internal_scale)?.invoke(values)?,
                };
                cells.push(ReleasedCell {
                    key: grouped.keys[g].clone(),
                    value,
                    count: noisy_counts.as_ref().map(|n| n[i]),
                    expected_abs_error: None,
                    ci95_half_width: None,
                });
            }
        }
    }
    let protection = match plan.mechanism {
        Mechanism::Laplace => format!("dp:laplace epsilon={:.6}", plan.reported_epsilon),
        Mechanism::Gaussian => {
            format!(
                "dp:gaussian rho={:.6} (epsilon={:.6} delta={:.1e})",
                plan.loss.rho, plan.reported_epsilon, plan.reported_delta
            )
        }
    };
    Ok(PrivateTable {
        key_columns: grouped.key_columns.clone(),
        measure: request.measure.name().to_string(),
        cells,
        protection,
    })
}

fn noisy_vector(mechanism: Mechanism, c: &Component, exact: &[i64]) -> Result<Vec<i64>> {
    Ok(match mechanism {
        Mechanism::Laplace => vec_laplace(c.internal_scale)?.invoke(&exact.to_vec())?,
        Mechanism::Gaussian => vec_gaussian(c.internal_scale)?.invoke(&exact.to_vec())?,
    })
}

fn noisy_sums<'p>(plan: &'p Plan, grouped: &Grouped, released: &[usize]) -> Result<(Vec<f64>, &'p Component)> {
    let c = plan
        .components
        .iter()
        .find(|c| c.kind == ComponentKind::Sum)
        .ok_or_else(|| Error::Config("sum component missing".into()))?;
    let grid = plan.grid.ok_or_else(|| Error::Config("sum grid missing".into()))?;
    let exact: Vec<i64> = released.iter().map(|&g| grouped.sums[g]).collect();
    let noisy = noisy_vector(plan.mechanism, c, &exact)?;
    Ok((noisy.into_iter().map(|v| v as f64 * grid.step).collect(), c))
}
