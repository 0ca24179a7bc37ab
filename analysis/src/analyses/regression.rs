//! Linear (ordinary least squares) and logistic (maximum likelihood by iteratively reweighted least squares)
//! regression with standard errors, test statistics and p-values. The normal equations are accumulated in one pass
//! over the rows; `nalgebra` factorises and inverts them, `statrs` gives the reference distributions.

use nalgebra::{DMatrix, DVector};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use super::{Analysed, AnalysisError, Frame};
use crate::output_check::{Model, Output, Patients};

/// Which model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Ordinary least squares; t statistics.
    Linear,
    /// Binary outcome (0/1), logit link; z statistics.
    Logistic,
}

/// One estimated coefficient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coefficient {
    /// `(intercept)` or the covariate's column.
    pub name: String,
    /// The estimate.
    pub estimate: f64,
    /// Its standard error.
    pub std_error: f64,
    /// Estimate / standard error (t for linear, z for logistic).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    /// Linear or logistic.
    pub family: Family,
    /// The outcome column.
    pub outcome: String,
    /// Intercept first, then the covariates in the order asked.
    pub coefficients: Vec<Coefficient>,
    /// Complete rows used.
    pub observations: u64,
    /// Observations minus parameters.
    pub residual_dof: u64,
    /// R² (linear).
    pub r_squared: Option<f64>,
    /// Log-likelihood at the estimate (logistic).
    pub log_likelihood: Option<f64>,
    /// IRLS iterations (logistic; 1 for linear).
    pub iterations: usize,
}

/// Most IRLS iterations before giving up.
pub const MAX_ITERATIONS: usize = 50;

/// The complete rows: outcome, design (intercept first, row-major) and their patients.
struct Design {
    y: Vec<f64>,
    x: Vec<f64>,
    p: usize,
    /// The patient of each complete row.
    rows: Vec<crate::output_check::PatientId>,
    patients: Patients,
}

fn design(frame: &Frame, outcome: &str, covariates: &[&str]) -> Result<Design, AnalysisError> {
    let y_col = frame.numeric(outcome)?;
    let x_cols = covariates
        .iter()
        .map(|c| frame.numeric(c))
        .collect::<Result<Vec<_>, _>>()?;
    let p = covariates.len() + 1;
    let (mut y, mut x, mut patients) = (Vec::new(), Vec::new(), Vec::new());
    'rows: for (i, patient) in frame.patients().iter().enumerate() {
        let Some(yi) = y_col[i].filter(|v| v.is_finite()) else {
            continue;
        };
        let start = x.len();
        x.push(1.0);
        for col in &x_cols {
            match col[i].filter(|v| v.is_finite()) {
                Some(v) => x.push(v),
                None => {
                    x.truncate(start);
                    continue 'rows;
                }
            }
        }
        y.push(yi);
        patients.push(*patient);
    }
    if y.len() <= p {
        return Err(AnalysisError::TooFewRows {
            rows: y.len(),
            needed: p + 1,
        });
    }
    Ok(Design {
        y,
        x,
        p,
        patients: Patients::new(patients.clone()),
        rows: patients,
    })
}

/// Σ w·x·xᵀ and Σ w·z·x over the rows, in one pass (`weight` and `target` of each row's linear predictor).
fn normal_equations(d: &Design, mut row: impl FnMut(usize, &[f64]) -> (f64, f64)) -> (DMatrix<f64>, DVector<f64>) {
    let p = d.p;
    let mut xtx = vec![0.0; p * p];
    let mut xtz = vec![0.0; p];
    for (i, xi) in d.x.chunks_exact(p).enumerate() {
        let (w, z) = row(i, xi);
        for a in 0..p {
            let wa = w * xi[a];
            xtz[a] += wa * z;
            for b in a..p {
                xtx[a * p + b] += wa * xi[b];
            }
        }
    }
    let m = DMatrix::from_fn(p, p, |a, b| if a <= b { xtx[a * p + b] } else { xtx[b * p + a] });
    (m, DVector::from_vec(xtz))
}

/// The Cholesky factor of the normal equations, refused when they are singular or nearly so: a pivot that is tiny
/// next to the largest means a covariate is (numerically) constant or a combination of others.
fn factorise(m: DMatrix<f64>) -> Result<nalgebra::Cholesky<f64, nalgebra::Dyn>, AnalysisError> {
    let cholesky = m.cholesky().ok_or(AnalysisError::Collinear)?;
    let pivots = cholesky.l_dirty().diagonal();
    let (smallest, largest) = (pivots.min(), pivots.max());
    // NaN pivots compare false and are refused too.
    if smallest.partial_cmp(&(1e-7 * largest)) != Some(std::cmp::Ordering::Greater) {
        return Err(AnalysisError::Collinear);
    }
    Ok(cholesky)
}

fn dot(x: &[f64], beta: &DVector<f64>) -> f64 {
    x.iter().zip(beta.iter()).map(|(a, b)| a * b).sum()
}

fn coefficients(
    names: &[&str],
    beta: &DVector<f64>,
    covariance: &DMatrix<f64>,
    p_value: impl Fn(f64) -> f64,
) -> Vec<Coefficient> {
    std::iter::once("(intercept)")
        .chain(names.iter().copied())
        .enumerate()
        .map(|(i, name)| {
            let std_error = covariance[(i, i)].max(0.0).sqrt();
            let statistic = beta[i] / std_error;
            Coefficient {
                name: name.to_owned(),
                estimate: beta[i],
                std_error,
                statistic,
                p_value: p_value(statistic.abs()),
            }
        })
        .collect()
}

/// The model as the checks see it. `inverse` is (Xᵀ W X)⁻¹ and `weight` each row's weight in it: a row's leverage
/// is wᵢ xᵢᵀ (Xᵀ W X)⁻¹ xᵢ, and a patient's the sum over their rows — near 1 when the fit reproduces that patient
/// (a covariate that is non-zero for them alone, say), which the degrees of freedom do not show.
///
/// Beside it, each patient's shift of the coefficients: a row's is (Xᵀ W X)⁻¹ xᵢ rᵢ / (1 − hᵢ) for its residual rᵢ
/// (exact for least squares, Pregibon's one-step for the logistic model), summed over the patient's rows and read in
/// standard errors (`covariance`'s diagonal).
fn evidence(
    d: &Design,
    inverse: &DMatrix<f64>,
    covariance: &DMatrix<f64>,
    weight: impl Fn(&[f64]) -> f64,
    residual: impl Fn(usize, &[f64]) -> f64,
) -> Output {
    let mut by_patient: std::collections::HashMap<crate::output_check::PatientId, (f64, Vec<f64>)> =
        std::collections::HashMap::new();
    let mut u = vec![0.0; d.p];
    for (i, (xi, patient)) in d.x.chunks_exact(d.p).zip(&d.rows).enumerate() {
        for (a, ua) in u.iter_mut().enumerate() {
            *ua = xi.iter().enumerate().map(|(b, xb)| inverse[(a, b)] * xb).sum();
        }
        let quadratic: f64 = xi.iter().zip(&u).map(|(x, v)| x * v).sum();
        let h = weight(xi) * quadratic;
        let scale = residual(i, xi) / (1.0 - h).max(1e-9);
        let entry = by_patient.entry(*patient).or_insert_with(|| (0.0, vec![0.0; d.p]));
        entry.0 += h;
        for (shift, ua) in entry.1.iter_mut().zip(&u) {
            *shift += ua * scale;
        }
    }
    let errors: Vec<f64> = (0..d.p).map(|j| covariance[(j, j)].max(0.0).sqrt()).collect();
    let dfbetas = by_patient
        .values()
        .flat_map(|(_, shift)| {
            shift
                .iter()
                .zip(&errors)
                .filter(|(_, e)| **e > 0.0)
                .map(|(s, e)| (s / e).abs())
        })
        .fold(0.0, f64::max);
    Output::Model(Model {
        observations: d.y.len() as u64,
        parameters: d.p as u64,
        patients: d.patients.clone(),
        largest_patient_leverage: by_patient.values().map(|(h, _)| *h).fold(0.0, f64::max),
        largest_patient_dfbetas: dfbetas,
    })
}

/// Fits `outcome ~ covariates` by ordinary least squares; rows with a missing value are left out.
pub fn linear(frame: &Frame, outcome: &str, covariates: &[&str]) -> Result<Analysed<Fit>, AnalysisError> {
    let d = design(frame, outcome, covariates)?;
    let (xtx, xty) = normal_equations(&d, |i, _| (1.0, d.y[i]));
    let cholesky = factorise(xtx)?;
    let beta = cholesky.solve(&xty);
    let n = d.y.len();
    let mean = d.y.iter().sum::<f64>() / n as f64;
    let (mut rss, mut tss) = (0.0, 0.0);
    for (xi, yi) in d.x.chunks_exact(d.p).zip(&d.y) {
        rss += (yi - dot(xi, &beta)).powi(2);
        tss += (yi - mean).powi(2);
    }
    let dof = (n - d.p) as f64;
    let inverse = cholesky.inverse();
    let covariance = &inverse * (rss / dof);
    let t = StudentsT::new(0.0, 1.0, dof).map_err(|e| AnalysisError::Invalid(e.to_string()))?;
    let fit = Fit {
        family: Family::Linear,
        outcome: outcome.to_owned(),
        coefficients: coefficients(covariates, &beta, &covariance, |s| 2.0 * t.sf(s)),
        observations: n as u64,
        residual_dof: (n - d.p) as u64,
        r_squared: (tss > 0.0).then(|| 1.0 - rss / tss),
        log_likelihood: None,
        iterations: 1,
    };
    Ok(Analysed {
        result: fit,
        output: evidence(&d, &inverse, &covariance, |_| 1.0, |i, xi| d.y[i] - dot(xi, &beta)),
    })
}

/// Fits a logistic regression of the 0/1 `outcome` on `covariates` by IRLS; rows with a missing value are left out.
pub fn logistic(frame: &Frame, outcome: &str, covariates: &[&str]) -> Result<Analysed<Fit>, AnalysisError> {
    let d = design(frame, outcome, covariates)?;
    if d.y.iter().any(|y| *y != 0.0 && *y != 1.0) {
        return Err(AnalysisError::Invalid(format!(
            "the outcome {outcome} of a logistic regression must be 0 or 1"
        )));
    }
    let mut beta = DVector::zeros(d.p);
    for iteration in 1..=MAX_ITERATIONS {
        // Newton's step: (Xᵀ W X) Δ = Xᵀ (y − μ).
        let (information, score) = normal_equations(&d, |i, xi| {
            let mu = 1.0 / (1.0 + (-dot(xi, &beta)).exp());
            let w = (mu * (1.0 - mu)).max(1e-12);
            (w, (d.y[i] - mu) / w)
        });
        let cholesky = factorise(information)?;
        let step = cholesky.solve(&score);
        beta += &step;
        if step.amax() < 1e-10 * (1.0 + beta.amax()) {
            let (information, _) = normal_equations(&d, |_, xi| {
                let mu = 1.0 / (1.0 + (-dot(xi, &beta)).exp());
                (mu * (1.0 - mu), 0.0)
            });
            let covariance = factorise(information)?.inverse();
            let log_likelihood =
                d.x.chunks_exact(d.p)
                    .zip(&d.y)
                    .map(|(xi, yi)| {
                        let eta = dot(xi, &beta);
                        // log σ(η) and log(1 − σ(η)), stable for large |η|.
                        let log1pexp = if eta > 0.0 {
                            eta + (-eta).exp().ln_1p()
                        } else {
                            eta.exp().ln_1p()
                        };
                        yi * eta - log1pexp
                    })
                    .sum();
            let normal = Normal::standard();
            let fit = Fit {
                family: Family::Logistic,
                outcome: outcome.to_owned(),
                coefficients: coefficients(covariates, &beta, &covariance, |s| 2.0 * normal.sf(s)),
                observations: d.y.len() as u64,
                residual_dof: (d.y.len() - d.p) as u64,
                r_squared: None,
                log_likelihood: Some(log_likelihood),
                iterations: iteration,
            };
            return Ok(Analysed {
                result: fit,
                output: evidence(
                    &d,
                    &covariance,
                    &covariance,
                    |xi| {
                        let mu = 1.0 / (1.0 + (-dot(xi, &beta)).exp());
                        mu * (1.0 - mu)
                    },
                    |i, xi| d.y[i] - 1.0 / (1.0 + (-dot(xi, &beta)).exp()),
                ),
            });
        }
        if !beta.iter().all(|b| b.is_finite()) {
            break;
        }
    }
    Err(AnalysisError::NoConvergence(MAX_ITERATIONS))
}
