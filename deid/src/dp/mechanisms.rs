//! The OpenDP measurements we use, built in one place so that planning (privacy maps, no data) and
//! releasing (sampling) always construct exactly the same measurement.
//!
//! All noise is integer (discrete Laplace / discrete Gaussian on `i64`): counts are integers and sums
//! are integers on their grid ([`super::grouping::SumGrid`]), so OpenDP's exact samplers and exact
//! (rational) privacy maps apply with no floating-point caveat.

use std::collections::HashMap;

use opendp::core::Measurement;
use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{
    make_gaussian, make_gaussian_threshold, make_laplace, make_laplace_threshold, make_private_quantile,
};
use opendp::measures::{Approximate, MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L1Distance, L01InfDistance, L2Distance, L02InfDistance, SymmetricDistance};

use crate::error::Result;

/// Noise on a vector of integers (public keys), pure DP.
pub type VecLaplace = Measurement<VectorDomain<AtomDomain<i64>>, L1Distance<i64>, MaxDivergence, Vec<i64>>;
/// Noise on a vector of integers (public keys), zCDP.
pub type VecGaussian =
    Measurement<VectorDomain<AtomDomain<i64>>, L2Distance<i64>, ZeroConcentratedDivergence, Vec<i64>>;
/// Noise + threshold on a map of group → count (partition selection), approximate pure DP.
pub type MapLaplaceThreshold = Measurement<
    MapDomain<AtomDomain<u32>, AtomDomain<i64>>,
    L01InfDistance<AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<u32, i64>,
>;
/// Noise + threshold on a map of group → count (partition selection), approximate zCDP.
pub type MapGaussianThreshold = Measurement<
    MapDomain<AtomDomain<u32>, AtomDomain<i64>>,
    L02InfDistance<AbsoluteDistance<i64>>,
    Approximate<ZeroConcentratedDivergence>,
    HashMap<u32, i64>,
>;

/// Discrete Laplace noise of `scale` on each element.
pub fn vec_laplace(scale: f64) -> Result<VecLaplace> {
    Ok(make_laplace(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
        scale,
        None,
    )?)
}

/// Discrete Gaussian noise of `scale` (σ) on each element.
pub fn vec_gaussian(scale: f64) -> Result<VecGaussian> {
    Ok(make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<i64>::default(),
        scale,
        None,
    )?)
}

fn count_map() -> MapDomain<AtomDomain<u32>, AtomDomain<i64>> {
    MapDomain::new(AtomDomain::<u32>::default(), AtomDomain::<i64>::default())
}

/// Discrete Laplace noise, then only groups whose noisy count reaches `threshold` are kept.
pub fn map_laplace_threshold(scale: f64, threshold: i64) -> Result<MapLaplaceThreshold> {
    Ok(make_laplace_threshold(
        count_map(),
        L01InfDistance::default(),
        scale,
        threshold,
        None,
    )?)
}

/// Discrete Gaussian noise, then only groups whose noisy count reaches `threshold` are kept.
pub fn map_gaussian_threshold(scale: f64, threshold: i64) -> Result<MapGaussianThreshold> {
    Ok(make_gaussian_threshold(
        count_map(),
        L02InfDistance::default(),
        scale,
        threshold,
        None,
    )?)
}

/// Exponential-mechanism quantile over `candidates`, pure DP.
pub fn quantile_pure(
    candidates: Vec<f64>,
    q: f64,
    scale: f64,
) -> Result<Measurement<VectorDomain<AtomDomain<f64>>, SymmetricDistance, MaxDivergence, f64>> {
    Ok(make_private_quantile(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        SymmetricDistance,
        MaxDivergence,
        candidates,
        q,
        scale,
    )?)
}

/// Exponential-mechanism quantile over `candidates`, zCDP.
pub fn quantile_zcdp(
    candidates: Vec<f64>,
    q: f64,
    scale: f64,
) -> Result<Measurement<VectorDomain<AtomDomain<f64>>, SymmetricDistance, ZeroConcentratedDivergence, f64>> {
    Ok(make_private_quantile(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        SymmetricDistance,
        ZeroConcentratedDivergence,
        candidates,
        q,
        scale,
    )?)
}

/// Smallest `scale` in `(0, ∞)` for which `loss(scale) ≤ target`, by bisection on OpenDP's own
/// privacy map (losses decrease as the scale grows). Returns the scale and its exact loss.
pub fn calibrate(target: f64, guess: f64, loss: impl Fn(f64) -> Result<f64>) -> Result<(f64, f64)> {
    let mut hi = guess.max(f64::MIN_POSITIVE);
    while loss(hi)? > target {
        hi *= 2.0;
        if !hi.is_finite() {
            return Err(crate::error::Error::Config(format!(
                "no noise scale reaches a privacy loss of {target}"
            )));
        }
    }
    let mut lo = hi;
    while lo > f64::MIN_POSITIVE && loss(lo)? <= target {
        lo /= 2.0;
    }
    for _ in 0..64 {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if loss(mid)? <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok((hi, loss(hi)?))
}

/// Smallest integer threshold in `[min, ∞)` for which `delta(threshold) ≤ target`. OpenDP refuses
/// thresholds below the L∞ sensitivity, so `min` is that sensitivity.
pub fn calibrate_threshold(target: f64, min: i64, delta: impl Fn(i64) -> Result<f64>) -> Result<(i64, f64)> {
    let min = min.max(1);
    if delta(min)? <= target {
        return Ok((min, delta(min)?));
    }
    let mut hi: i64 = min;
    while delta(hi)? > target {
        hi = hi.checked_mul(2).ok_or_else(|| {
            crate::error::Error::Config(format!("no threshold reaches δ = {target} at this noise scale"))
        })?;
    }
    let mut lo = (hi / 2).max(min); // delta(lo) > target
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if delta(mid)? <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok((hi, delta(hi)?))
}
