//! Planning a release: which OpenDP measurements, at which noise scale and threshold, for what
//! privacy loss — all computed from the request alone, with no data and no noise, so the budget can
//! be checked (and a researcher can see the expected error) before anything is drawn.

use serde::Serialize;

use crate::dp::accounting::{PrivacyLoss, zcdp_epsilon};
use crate::dp::grouping::SumGrid;
use crate::dp::mechanisms::{
    calibrate, calibrate_threshold, map_gaussian_threshold, map_laplace_threshold, quantile_pure, quantile_zcdp,
    vec_gaussian, vec_laplace,
};
use crate::dp::request::{Keys, Measure, Privacy, QUANTILE_CANDIDATES, StatsRequest};
use crate::dp::utility::{discrete_gaussian_expected_abs, discrete_laplace_expected_abs};
use crate::error::{Error, Result};

/// The noise family, which follows from the privacy parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Discrete Laplace noise, pure ε-DP.
    Laplace,
    /// Discrete Gaussian noise, ρ-zCDP.
    Gaussian,
}

/// What one measurement of the plan releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// Noisy counts of the declared keys.
    Count,
    /// Noisy counts, keeping only keys above the threshold (partition selection).
    ThresholdCount,
    /// Noisy clamped sums of the released keys.
    Sum,
    /// Exponential-mechanism quantile of each released key.
    Quantile,
}

/// One OpenDP measurement of a plan and its calibration.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// What it releases.
    pub kind: ComponentKind,
    /// Share of the request's ε or ρ given to it.
    pub share: f64,
    /// Sensitivity in output units (rows for counts, value units for sums, rows for quantiles).
    pub sensitivity: f64,
    /// Noise scale in output units (Laplace t or Gaussian σ; the exponential mechanism's scale).
    pub scale: f64,
    /// Noise scale in the measurement's own units (grid units for sums).
    pub internal_scale: f64,
    /// Threshold on noisy counts (partition selection only).
    pub threshold: Option<i64>,
    /// Its privacy loss as OpenDP's privacy map states it.
    pub loss: PrivacyLoss,
    /// Expected absolute error of each released cell, in output units (None for quantiles, whose
    /// error depends on the data).
    pub expected_abs_error: Option<f64>,
    /// Half-width of a 95 % interval around each released cell (OpenDP's accuracy functions).
    pub ci95_half_width: Option<f64>,
}

/// A calibrated, data-independent plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Noise family.
    pub mechanism: Mechanism,
    /// What one "individual" is: a subject (patient) with at most `max_contrib` rows, or a row.
    pub unit_of_privacy: String,
    /// Rows kept per subject.
    pub max_contrib: u32,
    /// The measurements.
    pub components: Vec<Component>,
    /// Total privacy loss (basic composition of the components).
    pub loss: PrivacyLoss,
    /// The loss as (ε, δ) on its own (zCDP converted at the request's δ).
    pub reported_epsilon: f64,
    /// δ of [`Plan::reported_epsilon`].
    pub reported_delta: f64,
    /// Grid of exact sums (sum and mean).
    pub grid: Option<SumGrid>,
    /// Quantile candidates (quantile measure).
    pub candidates: Option<Vec<f64>>,
    /// OpenDP version that calibrated and will sample.
    pub opendp_version: &'static str,
}

/// Version of the OpenDP crate this build uses.
pub const OPENDP_VERSION: &str = "0.16";

/// A threshold high enough that it does not matter for the ε part of the threshold map.
const FAR_THRESHOLD: i64 = 1 << 40;

/// Calibrates every measurement of `request`.
pub fn plan(request: &StatsRequest) -> Result<Plan> {
    request.validate()?;
    let mechanism = match request.privacy {
        Privacy::Epsilon(_) => Mechanism::Laplace,
        Privacy::Rho(_) => Mechanism::Gaussian,
    };
    let total = request.privacy.value();
    let n = request.max_contrib as i64;
    let select = matches!(request.keys, Keys::Select);
    let kinds: Vec<ComponentKind> = match (&request.measure, select) {
        (Measure::Count | Measure::Histogram { .. }, false) => vec![ComponentKind::Count],
        (Measure::Count | Measure::Histogram { .. }, true) => vec![ComponentKind::ThresholdCount],
        (Measure::Sum { .. }, false) => vec![ComponentKind::Sum],
        (Measure::Mean { .. }, false) => vec![ComponentKind::Count, ComponentKind::Sum],
        (Measure::Sum { .. } | Measure::Mean { .. }, true) => vec![ComponentKind::ThresholdCount, ComponentKind::Sum],
        (Measure::Quantile { .. }, false) => vec![ComponentKind::Quantile],
        (Measure::Quantile { .. }, true) => vec![ComponentKind::ThresholdCount, ComponentKind::Quantile],
    };
    let share = total / kinds.len() as f64;
    let delta = request.delta.unwrap_or(0.0);
    // δ for selection; with zCDP the other half is kept for reporting the loss as (ε, δ).
    let selection_delta = if mechanism == Mechanism::Gaussian {
        delta / 2.0
    } else {
        delta
    };
    let grid = match &request.measure {
        Measure::Sum { bounds, .. } | Measure::Mean { bounds, .. } => Some(SumGrid::for_bounds(bounds)),
        _ => None,
    };
    let candidates = match &request.measure {
        Measure::Quantile { bounds, .. } => Some(
            (0..QUANTILE_CANDIDATES)
                .map(|i| bounds.lo + (bounds.hi - bounds.lo) * i as f64 / (QUANTILE_CANDIDATES - 1) as f64)
                .collect::<Vec<f64>>(),
        ),
        _ => None,
    };
    let q = match &request.measure {
        Measure::Quantile { q, .. } => *q,
        _ => 0.5,
    };

    let mut components = Vec::new();
    for kind in kinds {
        let c = match kind {
            ComponentKind::Count => {
                let d = n;
                let (scale, loss) = calibrate_vector(mechanism, share, d)?;
                noise_component(kind, mechanism, share, d as f64, scale, 1.0, None, loss)?
            }
            ComponentKind::ThresholdCount => {
                if selection_delta <= 0.0 {
                    return Err(Error::Config("partition selection needs δ > 0".into()));
                }
                let d = (request.max_contrib, n, n);
                let (scale, threshold, loss) = match mechanism {
                    Mechanism::Laplace => {
                        let (s, _) = calibrate(share, d.1 as f64 / share, |s| {
                            Ok(map_laplace_threshold(s, FAR_THRESHOLD)?.map(&d)?.0)
                        })?;
                        let (t, _) =
                            calibrate_threshold(selection_delta, n, |t| Ok(map_laplace_threshold(s, t)?.map(&d)?.1))?;
                        let (eps, del) = map_laplace_threshold(s, t)?.map(&d)?;
                        (
                            s,
                            t,
                            PrivacyLoss {
                                epsilon: eps,
                                rho: 0.0,
                                delta: del,
                            },
                        )
                    }
                    Mechanism::Gaussian => {
                        let (s, _) = calibrate(share, d.1 as f64 / (2.0 * share).sqrt(), |s| {
                            Ok(map_gaussian_threshold(s, FAR_THRESHOLD)?.map(&d)?.0)
                        })?;
                        let (t, _) =
                            calibrate_threshold(selection_delta, n, |t| Ok(map_gaussian_threshold(s, t)?.map(&d)?.1))?;
                        let (rho, del) = map_gaussian_threshold(s, t)?.map(&d)?;
                        (
                            s,
                            t,
                            PrivacyLoss {
                                epsilon: 0.0,
                                rho,
                                delta: del,
                            },
                        )
                    }
                };
                if loss.epsilon > share * (1.0 + 1e-9) || loss.rho > share * (1.0 + 1e-9) {
                    return Err(Error::Config(format!(
                        "OpenDP's threshold map gives {loss:?} above the share {share}; refusing"
                    )));
                }
                noise_component(kind, mechanism, share, d.1 as f64, scale, 1.0, Some(threshold), loss)?
            }
            ComponentKind::Sum => {
                let grid = grid.ok_or_else(|| Error::Config("sum without bounds".into()))?;
                let d = n
                    .checked_mul(grid.per_row)
                    .ok_or_else(|| Error::Config("max-contrib too large".into()))?;
                let (scale, loss) = calibrate_vector(mechanism, share, d)?;
                noise_component(
                    kind,
                    mechanism,
                    share,
                    d as f64 * grid.step,
                    scale,
                    grid.step,
                    None,
                    loss,
                )?
            }
            ComponentKind::Quantile => {
                let cands = candidates.clone().unwrap_or_default();
                let d = request.max_contrib;
                let (scale, loss) = match mechanism {
                    Mechanism::Laplace => {
                        let (s, eps) = calibrate(share, d as f64 / share, |s| {
                            Ok(quantile_pure(cands.clone(), q, s)?.map(&d)?)
                        })?;
                        (
                            s,
                            PrivacyLoss {
                                epsilon: eps,
                                ..Default::default()
                            },
                        )
                    }
                    Mechanism::Gaussian => {
                        let (s, rho) = calibrate(share, d as f64 / (8.0 * share).sqrt(), |s| {
                            Ok(quantile_zcdp(cands.clone(), q, s)?.map(&d)?)
                        })?;
                        (
                            s,
                            PrivacyLoss {
                                rho,
                                ..Default::default()
                            },
                        )
                    }
                };
                Component {
                    kind,
                    share,
                    sensitivity: d as f64,
                    scale,
                    internal_scale: scale,
                    threshold: None,
                    loss,
                    expected_abs_error: None,
                    ci95_half_width: None,
                }
            }
        };
        components.push(c);
    }
    let loss = PrivacyLoss::total(components.iter().map(|c| &c.loss));
    let (reported_epsilon, reported_delta) = if loss.rho > 0.0 {
        let conversion = delta - loss.delta;
        if conversion <= 0.0 {
            return Err(Error::Config("δ is too small to report the zCDP loss as (ε, δ)".into()));
        }
        (loss.epsilon + zcdp_epsilon(loss.rho, conversion)?, delta)
    } else {
        (loss.epsilon, loss.delta)
    };
    let unit_of_privacy = match &request.subject {
        Some(s) => format!("one subject (column {s:?}) with at most {} rows", request.max_contrib),
        None => "one row".to_string(),
    };
    Ok(Plan {
        mechanism,
        unit_of_privacy,
        max_contrib: request.max_contrib,
        components,
        loss,
        reported_epsilon,
        reported_delta,
        grid,
        candidates,
        opendp_version: OPENDP_VERSION,
    })
}

/// Smallest noise scale on an integer vector with sensitivity `d` (L1 for Laplace, L2 for Gaussian)
/// whose OpenDP privacy map stays within `share`, and that loss.
fn calibrate_vector(mechanism: Mechanism, share: f64, d: i64) -> Result<(f64, PrivacyLoss)> {
    Ok(match mechanism {
        Mechanism::Laplace => {
            let (s, epsilon) = calibrate(share, d as f64 / share, |s| Ok(vec_laplace(s)?.map(&d)?))?;
            (
                s,
                PrivacyLoss {
                    epsilon,
                    ..Default::default()
                },
            )
        }
        Mechanism::Gaussian => {
            let (s, rho) = calibrate(
                share,
                d as f64 / (2.0 * share).sqrt(),
                |s| Ok(vec_gaussian(s)?.map(&d)?),
            )?;
            (
                s,
                PrivacyLoss {
                    rho,
                    ..Default::default()
                },
            )
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn noise_component(
    kind: ComponentKind,
    mechanism: Mechanism,
    share: f64,
    sensitivity: f64,
    internal_scale: f64,
    unit: f64,
    threshold: Option<i64>,
    loss: PrivacyLoss,
) -> Result<Component> {
    let (expected, ci) = match mechanism {
        Mechanism::Laplace => (
            discrete_laplace_expected_abs(internal_scale),
            opendp::accuracy::discrete_laplacian_scale_to_accuracy(internal_scale, 0.05)?,
        ),
        Mechanism::Gaussian => (
            discrete_gaussian_expected_abs(internal_scale),
            // OpenDP's discrete version sums the pmf term by term (and overflows an i32 for the huge
            // grid-unit scales of sums); above 10^4 the continuous interval is the same to < 1 unit.
            if internal_scale > 1e4 {
                opendp::accuracy::gaussian_scale_to_accuracy(internal_scale, 0.05)?
            } else {
                opendp::accuracy::discrete_gaussian_scale_to_accuracy(internal_scale, 0.05)?
            },
        ),
    };
    Ok(Component {
        kind,
        share,
        sensitivity,
        scale: internal_scale * unit,
        internal_scale,
        threshold,
        loss,
        expected_abs_error: Some(expected * unit),
        ci95_half_width: Some(ci * unit),
    })
}
