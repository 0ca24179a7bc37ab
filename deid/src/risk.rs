//! Re-identification risk of a released table, computed from its equivalence-class sizes.
//!
//! Prosecutor risk assumes the attacker knows the target is in the data (risk of a record =
//! 1 / class size); marketer risk is the expected fraction re-identified when every record is
//! attacked; population uniqueness is estimated with the Pitman model (Hoshino 2001), fitted by
//! maximum likelihood to the class-size spectrum, for a population of `n / sampling_fraction`.

use serde::{Deserialize, Serialize};

/// One histogram bucket of class sizes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SizeBucket {
    /// Smallest class size in the bucket.
    pub min: u64,
    /// Largest class size in the bucket (None = unbounded).
    pub max: Option<u64>,
    /// Classes in the bucket.
    pub classes: u64,
    /// Records in those classes.
    pub records: u64,
}

/// Risk measures of one table (before or after anonymisation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RiskSummary {
    /// Records considered (kept records after anonymisation).
    pub records: u64,
    /// Equivalence classes.
    pub classes: u64,
    /// Highest prosecutor risk (1 / smallest class).
    pub prosecutor_max: f64,
    /// Average prosecutor risk over records.
    pub prosecutor_avg: f64,
    /// Threshold used for `records_above_threshold`.
    pub threshold: f64,
    /// Records whose prosecutor risk exceeds the threshold.
    pub records_above_threshold: u64,
    /// Fraction of records above the threshold.
    pub fraction_above_threshold: f64,
    /// Records that are unique in the sample (class of size 1).
    pub sample_uniques: u64,
    /// Fraction of sample-unique records.
    pub sample_uniqueness: f64,
    /// Marketer risk: expected fraction of records re-identified (classes / counting units).
    pub marketer: f64,
    /// Estimated fraction of population-unique individuals (Pitman model).
    pub population_uniqueness: f64,
    /// Sampling fraction assumed for the population estimate.
    pub sampling_fraction: f64,
    /// Class sizes, bucketed.
    pub class_size_histogram: Vec<SizeBucket>,
}

const BUCKETS: [(u64, Option<u64>); 9] = [
    (1, Some(1)),
    (2, Some(2)),
    (3, Some(4)),
    (5, Some(9)),
    (10, Some(19)),
    (20, Some(49)),
    (50, Some(99)),
    (100, Some(999)),
    (1000, None),
];

/// Summarises risk from `(size in counting units, records)` per class.
pub fn summarize(classes: &[(u64, u64)], threshold: f64, sampling_fraction: f64) -> RiskSummary {
    let records: u64 = classes.iter().map(|c| c.1).sum();
    let units: u64 = classes.iter().map(|c| c.0).sum();
    let min = classes.iter().map(|c| c.0).filter(|&s| s > 0).min();
    let avg = if records == 0 {
        0.0
    } else {
        classes.iter().map(|&(s, r)| r as f64 / s.max(1) as f64).sum::<f64>() / records as f64
    };
    let above: u64 = classes
        .iter()
        .filter(|&&(s, _)| 1.0 / s.max(1) as f64 > threshold)
        .map(|c| c.1)
        .sum();
    let uniques: u64 = classes.iter().filter(|&&(s, _)| s == 1).map(|c| c.1).sum();
    let frac = |x: u64| if records == 0 { 0.0 } else { x as f64 / records as f64 };
    let histogram = BUCKETS
        .iter()
        .map(|&(lo, hi)| {
            let inside = classes.iter().filter(|&&(s, _)| s >= lo && hi.is_none_or(|h| s <= h));
            let (c, r) = inside.fold((0, 0), |(c, r), &(_, rows)| (c + 1, r + rows));
            SizeBucket {
                min: lo,
                max: hi,
                classes: c,
                records: r,
            }
        })
        .filter(|b| b.classes > 0)
        .collect();
    RiskSummary {
        records,
        classes: classes.len() as u64,
        prosecutor_max: min.map_or(0.0, |m| 1.0 / m as f64),
        prosecutor_avg: avg,
        threshold,
        records_above_threshold: above,
        fraction_above_threshold: frac(above),
        sample_uniques: uniques,
        sample_uniqueness: frac(uniques),
        marketer: if units == 0 {
            0.0
        } else {
            classes.len() as f64 / units as f64
        },
        population_uniqueness: pitman_population_uniqueness(classes, sampling_fraction),
        sampling_fraction,
        class_size_histogram: histogram,
    }
}

/// Pitman-model estimate of the fraction of population uniques.
pub fn pitman_population_uniqueness(classes: &[(u64, u64)], sampling_fraction: f64) -> f64 {
    let n: u64 = classes.iter().map(|c| c.0).sum();
    let k = classes.len() as u64;
    if n == 0 || k == 0 {
        return 0.0;
    }
    if k == n {
        return 1.0;
    }
    if k == 1 {
        return 0.0;
    }
    let spectrum = size_spectrum(classes);
    let (nf, kf) = (n as f64, k as f64);
    let loglik = |alpha: f64, theta: f64| -> f64 {
        let first = if alpha > 1e-9 {
            (kf - 1.0) * alpha.ln() + ln_gamma(theta / alpha + kf) - ln_gamma(theta / alpha + 1.0)
        } else {
            (kf - 1.0) * theta.ln()
        };
        let second = ln_gamma(theta + nf) - ln_gamma(theta + 1.0);
        let third: f64 = spectrum
            .iter()
            .map(|&(j, f)| f as f64 * (ln_gamma(j as f64 - alpha) - ln_gamma(1.0 - alpha)))
            .sum();
        first - second + third
    };
    // Maximise over alpha in (0,1), theta > 0 with Nelder–Mead on (logit alpha, log theta).
    let to = |p: [f64; 2]| (1.0 / (1.0 + (-p[0]).exp()), p[1].exp());
    let f = |p: [f64; 2]| {
        let (a, t) = to(p);
        let v = -loglik(a, t);
        if v.is_finite() { v } else { f64::MAX }
    };
    let best = nelder_mead(f, [0.0, kf.ln()], 400);
    let (alpha, theta) = to(best);
    let big_n = (nf / sampling_fraction.clamp(1e-12, 1.0)).max(nf);
    let log_pu = ln_gamma(theta + 1.0) + ln_gamma(theta + alpha + big_n - 1.0)
        - ln_gamma(theta + alpha)
        - ln_gamma(theta + big_n);
    let pu = log_pu.exp();
    if pu.is_finite() { pu.clamp(0.0, 1.0) } else { 0.0 }
}

/// (class size, number of classes of that size), by ascending size. Sorting a flat list beats a
/// tree map by far on the hundreds of thousands of classes of an untransformed table.
fn size_spectrum(classes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sizes: Vec<u64> = classes.iter().map(|c| c.0).collect();
    sizes.sort_unstable();
    let mut spectrum: Vec<(u64, u64)> = Vec::new();
    for s in sizes {
        match spectrum.last_mut() {
            Some((size, count)) if *size == s => *count += 1,
            _ => spectrum.push((s, 1)),
        }
    }
    spectrum
}

fn nelder_mead(f: impl Fn([f64; 2]) -> f64, start: [f64; 2], iterations: usize) -> [f64; 2] {
    let mut simplex = [start, [start[0] + 1.0, start[1]], [start[0], start[1] + 1.0]];
    let mut values = simplex.map(&f);
    for _ in 0..iterations {
        let mut idx = [0usize, 1, 2];
        idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let (b, m, w) = (idx[0], idx[1], idx[2]);
        let centroid = [
            (simplex[b][0] + simplex[m][0]) / 2.0,
            (simplex[b][1] + simplex[m][1]) / 2.0,
        ];
        let along = |t: f64| {
            [
                centroid[0] + t * (simplex[w][0] - centroid[0]),
                centroid[1] + t * (simplex[w][1] - centroid[1]),
            ]
        };
        let r = along(-1.0);
        let fr = f(r);
        if fr < values[b] {
            let e = along(-2.0);
            let fe = f(e);
            if fe < fr {
                (simplex[w], values[w]) = (e, fe)
            } else {
                (simplex[w], values[w]) = (r, fr)
            }
        } else if fr < values[m] {
            (simplex[w], values[w]) = (r, fr);
        } else {
            let c = along(0.5);
            let fc = f(c);
            if fc < values[w] {
                (simplex[w], values[w]) = (c, fc);
            } else {
                for i in [m, w] {
                    simplex[i] = [
                        (simplex[i][0] + simplex[b][0]) / 2.0,
                        (simplex[i][1] + simplex[b][1]) / 2.0,
                    ];
                    values[i] = f(simplex[i]);
                }
            }
        }
        if (values[w] - values[b]).abs() < 1e-10 {
            break;
        }
    }
    let i = (0..3).min_by(|&a, &b| values[a].total_cmp(&values[b])).unwrap_or(0);
    simplex[i]
}

/// ln Γ(x) for x > 0 (Lanczos approximation, reflection below 0.5).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-10);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-10);
    }

    #[test]
    fn spectrum_counts_sizes_in_ascending_order() {
        assert_eq!(
            size_spectrum(&[(5, 5), (1, 1), (5, 7), (2, 2), (1, 3)]),
            vec![(1, 2), (2, 1), (5, 2)]
        );
        assert!(size_spectrum(&[]).is_empty());
    }

    #[test]
    fn summary_basics() {
        let s = summarize(&[(1, 1), (2, 2), (5, 5)], 0.2, 0.01);
        assert_eq!(s.records, 8);
        assert_eq!(s.prosecutor_max, 1.0);
        assert_eq!(s.sample_uniques, 1);
        assert_eq!(s.records_above_threshold, 3);
        assert!((s.prosecutor_avg - 3.0 / 8.0).abs() < 1e-12);
        assert!((0.0..=1.0).contains(&s.population_uniqueness));
    }
}
