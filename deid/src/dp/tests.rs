//! Tests of the DP module: the noise has the stated scale, bounds and per-subject caps hold (checked
//! on the transformation itself), public keys all appear, partition selection hides rare keys.

use super::grouping::{SumGrid, group};
use super::plan::{ComponentKind, Mechanism, plan};
use super::release::release;
use super::request::{Bounds, Keys, Measure, Privacy, StatsRequest};
use super::utility::discrete_laplace_expected_abs;
use crate::table::Table;

fn table(header: &[&str], rows: &[Vec<String>]) -> Table {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    Table::from_rows(&header, rows).unwrap()
}

fn request(measure: Measure, privacy: Privacy, keys: Keys) -> StatsRequest {
    StatsRequest {
        group_by: vec!["g".into()],
        generalise: vec![],
        measure,
        subject: None,
        max_contrib: 1,
        privacy,
        delta: None,
        keys,
    }
}

fn public(keys: &[&str]) -> Keys {
    Keys::Public(keys.iter().map(|k| vec![k.to_string()]).collect())
}

/// Mean and variance of many draws of the noise, against the distribution's own moments.
fn moments(draws: &[i64]) -> (f64, f64) {
    let n = draws.len() as f64;
    let mean = draws.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = draws.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

#[test]
fn laplace_noise_has_the_stated_scale() {
    // 40,000 public keys with count 0 → 40,000 independent draws in one release.
    let keys: Vec<String> = (0..40_000).map(|i| format!("k{i:05}")).collect();
    let t = table(&["g"], &[vec!["k00000".into()]]);
    let mut r = request(
        Measure::Count,
        Privacy::Epsilon(0.5),
        Keys::Public(keys.iter().map(|k| vec![k.clone()]).collect()),
    );
    r.group_by = vec!["g".into()];
    let p = plan(&r).unwrap();
    let c = &p.components[0];
    assert_eq!(c.kind, ComponentKind::Count);
    // sensitivity 1, ε 0.5 → scale 2 (OpenDP's calibration may differ in the last bits).
    assert!((c.scale - 2.0).abs() < 1e-9, "scale {}", c.scale);
    assert!(p.loss.epsilon <= 0.5 && p.loss.epsilon > 0.5 - 1e-9);
    let grouped = group(&t, &r).unwrap();
    let out = release(&p, &r, &grouped).unwrap();
    assert_eq!(out.cells.len(), 40_000);
    let draws: Vec<i64> = out
        .cells
        .iter()
        .map(|c| c.value as i64 - if c.key[0] == "k00000" { 1 } else { 0 })
        .collect();
    let (mean, var) = moments(&draws);
    // Discrete Laplace(t): variance 2q/(1-q)^2 with q = e^(-1/t).
    let q = (-1.0f64 / c.scale).exp();
    let expected_var = 2.0 * q / (1.0 - q).powi(2);
    let n = draws.len() as f64;
    // Mean within 5 standard errors; variance within 5 % (its relative s.e. here is ~1.3 %).
    assert!(mean.abs() < 5.0 * (expected_var / n).sqrt(), "mean {mean}");
    assert!(
        (var / expected_var - 1.0).abs() < 0.05,
        "variance {var} vs {expected_var}"
    );
    let mean_abs = draws.iter().map(|&x| x.abs() as f64).sum::<f64>() / n;
    let expected_abs = discrete_laplace_expected_abs(c.scale);
    assert!(
        (mean_abs / expected_abs - 1.0).abs() < 0.03,
        "E|X| {mean_abs} vs {expected_abs}"
    );
    assert!((c.expected_abs_error.unwrap() - expected_abs).abs() < 1e-12);
    // The 95 % interval covers about 95 % of draws.
    let ci = c.ci95_half_width.unwrap();
    let covered = draws.iter().filter(|&&x| (x.abs() as f64) <= ci).count() as f64 / n;
    assert!(covered >= 0.94, "coverage {covered}");
}

#[test]
fn gaussian_noise_has_the_stated_scale() {
    let keys: Vec<Vec<String>> = (0..40_000).map(|i| vec![format!("k{i:05}")]).collect();
    let t = table(&["g"], &[vec!["none".into()]]);
    let mut r = request(Measure::Count, Privacy::Rho(0.02), Keys::Public(keys));
    r.delta = Some(1e-6);
    let p = plan(&r).unwrap();
    let c = &p.components[0];
    // ρ = Δ²/(2σ²) → σ = 1/√0.04 = 5.
    assert!((c.scale - 5.0).abs() < 1e-6, "scale {}", c.scale);
    assert!(p.reported_epsilon > 0.0 && p.reported_delta == 1e-6);
    let out = release(&p, &r, &group(&t, &r).unwrap()).unwrap();
    let draws: Vec<i64> = out.cells.iter().map(|c| c.value as i64).collect();
    let (mean, var) = moments(&draws);
    let n = draws.len() as f64;
    assert!(mean.abs() < 5.0 * (25.0 / n).sqrt(), "mean {mean}");
    assert!((var / 25.0 - 1.0).abs() < 0.05, "variance {var}");
}

#[test]
fn sum_noise_scales_with_the_bounds_and_the_cap() {
    let mut r = request(
        Measure::Sum {
            column: "v".into(),
            bounds: Bounds::new(-50.0, 200.0).unwrap(),
        },
        Privacy::Epsilon(1.0),
        public(&["a"]),
    );
    let p1 = plan(&r).unwrap();
    r.subject = Some("g".into());
    r.max_contrib = 3;
    let p3 = plan(&r).unwrap();
    // Laplace scale = N · max(|lo|,|hi|) / ε, up to the grid's rounding of the bound (exact here).
    assert!(
        (p1.components[0].scale - 200.0).abs() < 1e-6,
        "{}",
        p1.components[0].scale
    );
    assert!(
        (p3.components[0].scale - 600.0).abs() < 1e-6,
        "{}",
        p3.components[0].scale
    );
    assert!((p3.components[0].sensitivity - 600.0).abs() < 1e-9);
}

#[test]
fn outliers_are_clamped_and_never_move_a_sum_beyond_the_bound() {
    let bounds = Bounds::new(0.0, 100.0).unwrap();
    let base: Vec<Vec<String>> = (0..50).map(|i| vec!["a".into(), format!("{}", i % 7 * 10)]).collect();
    let mut with_outlier = base.clone();
    with_outlier.push(vec!["a".into(), "1e12".into()]);
    let mut with_negative = base.clone();
    with_negative.push(vec!["a".into(), "-1e12".into()]);
    let r = request(
        Measure::Sum {
            column: "v".into(),
            bounds,
        },
        Privacy::Epsilon(1.0),
        public(&["a"]),
    );
    let grid = SumGrid::for_bounds(&bounds);
    let s0 = group(&table(&["g", "v"], &base), &r).unwrap().sums[0];
    let s1 = group(&table(&["g", "v"], &with_outlier), &r).unwrap().sums[0];
    let s2 = group(&table(&["g", "v"], &with_negative), &r).unwrap().sums[0];
    assert_eq!(s1 - s0, grid.quantise(100.0));
    assert_eq!(s2 - s0, 0);
    assert!((s1 - s0) <= grid.per_row);
    // The exact sum is exact: 50 rows of multiples of 10.
    let expected: f64 = (0..50).map(|i| (i % 7 * 10) as f64).sum();
    assert_eq!(s0 as f64 * grid.step, expected);
}

/// Deterministic pseudo-random numbers for the property test (no dependency on `rand`).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn removing_one_subject_moves_the_aggregates_by_at_most_the_stated_sensitivity() {
    let mut rng = Lcg(7);
    let bounds = Bounds::new(-20.0, 30.0).unwrap();
    for case in 0..200 {
        let cap = 1 + rng.next(4) as u32;
        let subjects = 2 + rng.next(8);
        let rows: Vec<Vec<String>> = (0..rng.next(60) + 1)
            .map(|_| {
                vec![
                    format!("p{}", rng.next(subjects)),
                    format!("g{}", rng.next(4)),
                    format!("{}", rng.next(200) as i64 - 100),
                ]
            })
            .collect();
        let victim = format!("p{}", rng.next(subjects));
        let without: Vec<Vec<String>> = rows.iter().filter(|r| r[0] != victim).cloned().collect();
        let mut r = request(
            Measure::Sum {
                column: "v".into(),
                bounds,
            },
            Privacy::Epsilon(1.0),
            public(&["g0", "g1", "g2", "g3"]),
        );
        r.subject = Some("p".into());
        r.max_contrib = cap;
        let header = ["p", "g", "v"];
        let a = group(&table(&header, &rows), &r).unwrap();
        let b = if without.is_empty() {
            super::grouping::Grouped {
                counts: vec![0; 4],
                sums: vec![0; 4],
                ..Default::default()
            }
        } else {
            group(&table(&header, &without), &r).unwrap()
        };
        let grid = a.grid.unwrap();
        let l1_counts: i64 = a.counts.iter().zip(&b.counts).map(|(x, y)| (x - y).abs()).sum();
        let l1_sums: i64 = a.sums.iter().zip(&b.sums).map(|(x, y)| (x - y).abs()).sum();
        let touched = a.counts.iter().zip(&b.counts).filter(|(x, y)| x != y).count();
        assert!(l1_counts <= cap as i64, "case {case}: counts moved {l1_counts} > {cap}");
        assert!(
            l1_sums <= cap as i64 * grid.per_row,
            "case {case}: sums moved {l1_sums}"
        );
        assert!(touched <= cap as usize, "case {case}");
        // And the cap is binding: nobody keeps more than `cap` rows.
        assert!(a.counts.iter().sum::<i64>() <= subjects as i64 * cap as i64);
    }
}

#[test]
fn a_patient_with_many_rows_counts_at_most_max_contrib_times() {
    let mut rows: Vec<Vec<String>> = (0..1000).map(|_| vec!["heavy".into(), "a".into()]).collect();
    rows.extend((0..10).map(|i| vec![format!("light{i}"), "a".into()]));
    let mut r = request(Measure::Count, Privacy::Epsilon(1.0), public(&["a"]));
    r.group_by = vec!["g".into()];
    r.subject = Some("p".into());
    r.max_contrib = 5;
    let g = group(&table(&["p", "g"], &rows), &r).unwrap();
    assert_eq!(g.counts, vec![15]);
    // Without a subject column each row is its own unit, and max-contrib > 1 is refused.
    r.subject = None;
    assert!(plan(&r).is_err());
}

#[test]
fn every_public_key_appears_even_when_empty_and_others_are_dropped() {
    let rows: Vec<Vec<String>> = (0..30)
        .map(|i| vec![if i < 20 { "a" } else { "zz-undeclared" }.into()])
        .collect();
    let r = request(Measure::Count, Privacy::Epsilon(1.0), public(&["a", "b", "c"]));
    let t = table(&["g"], &rows);
    let g = group(&t, &r).unwrap();
    assert_eq!(g.counts, vec![20, 0, 0]);
    let out = release(&plan(&r).unwrap(), &r, &g).unwrap();
    let keys: Vec<&str> = out.cells.iter().map(|c| c.key[0].as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
}

#[test]
fn partition_selection_hides_rare_keys_and_keeps_common_ones() {
    let mut rows: Vec<Vec<String>> = (0..5000).map(|_| vec!["common".into()]).collect();
    rows.push(vec!["rare".into()]);
    let mut r = request(Measure::Count, Privacy::Epsilon(1.0), Keys::Select);
    r.delta = Some(1e-6);
    let p = plan(&r).unwrap();
    let c = &p.components[0];
    assert_eq!(c.kind, ComponentKind::ThresholdCount);
    let threshold = c.threshold.unwrap();
    // With scale 1/ε and δ = 1e-6 the threshold is about ln(1/δ)/ε ≈ 14.
    assert!((10..=20).contains(&threshold), "threshold {threshold}");
    assert!(p.loss.delta <= 1e-6 && p.loss.delta > 0.0);
    let t = table(&["g"], &rows);
    let g = group(&t, &r).unwrap();
    for _ in 0..200 {
        let out = release(&p, &r, &g).unwrap();
        let keys: Vec<&str> = out.cells.iter().map(|c| c.key[0].as_str()).collect();
        assert_eq!(keys, ["common"]);
    }
    // Without δ the keys must be public.
    r.delta = None;
    assert!(plan(&r).is_err());
}

#[test]
fn means_split_the_budget_and_stay_within_the_bounds() {
    let rows: Vec<Vec<String>> = (0..2000)
        .map(|i| vec![if i % 2 == 0 { "a" } else { "b" }.into(), format!("{}", 40 + i % 21)])
        .collect();
    let r = request(
        Measure::Mean {
            column: "v".into(),
            bounds: Bounds::new(0.0, 100.0).unwrap(),
        },
        Privacy::Epsilon(1.0),
        public(&["a", "b", "empty"]),
    );
    let p = plan(&r).unwrap();
    assert_eq!(p.components.len(), 2);
    assert!((p.components[0].share - 0.5).abs() < 1e-12);
    assert!(p.loss.epsilon <= 1.0);
    let out = release(&p, &r, &group(&table(&["g", "v"], &rows), &r).unwrap()).unwrap();
    for cell in &out.cells {
        assert!((0.0..=100.0).contains(&cell.value));
        if cell.key[0] != "empty" {
            assert!((cell.value - 50.0).abs() < 5.0, "{cell:?}");
        }
    }
}

#[test]
fn quantiles_and_histograms_release_every_declared_cell() {
    let rows: Vec<Vec<String>> = (0..3000).map(|i| vec!["a".into(), format!("{}", i % 100)]).collect();
    let t = table(&["g", "v"], &rows);
    let r = request(
        Measure::Quantile {
            column: "v".into(),
            bounds: Bounds::new(0.0, 100.0).unwrap(),
            q: 0.5,
        },
        Privacy::Epsilon(1.0),
        public(&["a"]),
    );
    let p = plan(&r).unwrap();
    let out = release(&p, &r, &group(&t, &r).unwrap()).unwrap();
    assert!(
        (out.cells[0].value - 50.0).abs() < 10.0,
        "median {}",
        out.cells[0].value
    );
    let r = request(
        Measure::Histogram {
            column: "v".into(),
            bounds: Bounds::new(0.0, 100.0).unwrap(),
            bins: 4,
        },
        Privacy::Epsilon(1.0),
        public(&["a", "b"]),
    );
    let g = group(&t, &r).unwrap();
    assert_eq!(g.counts, vec![750, 750, 750, 750, 0, 0, 0, 0]);
    let out = release(&plan(&r).unwrap(), &r, &g).unwrap();
    assert_eq!(out.cells.len(), 8);
    assert_eq!(out.key_columns, ["g", "bin"]);
    assert_eq!(plan(&r).unwrap().mechanism, Mechanism::Laplace);
}

#[test]
fn partition_selection_with_a_per_patient_cap_starts_at_the_cap() {
    let mut r = request(Measure::Count, Privacy::Rho(0.02), Keys::Select);
    r.subject = Some("p".into());
    r.max_contrib = 5;
    r.delta = Some(1e-6);
    let p = plan(&r).unwrap();
    let t = p.components[0].threshold.unwrap();
    assert!(t >= 5, "threshold {t} below the L∞ sensitivity");
    assert!(p.loss.rho <= 0.02 && p.loss.delta <= 0.5e-6);
    let mut r1 = r.clone();
    r1.max_contrib = 1;
    assert!(
        plan(&r1).unwrap().components[0].threshold.unwrap() < t,
        "a larger cap needs a larger threshold"
    );
}

#[test]
fn gaussian_sums_plan_with_huge_grid_scales() {
    let mut r = request(
        Measure::Mean {
            column: "v".into(),
            bounds: Bounds::new(0.0, 500.0).unwrap(),
        },
        Privacy::Rho(0.02),
        Keys::Select,
    );
    r.delta = Some(1e-6);
    let p = plan(&r).unwrap();
    let sum = p.components.iter().find(|c| c.kind == ComponentKind::Sum).unwrap();
    assert!(sum.internal_scale > 1e6);
    // σ = Δ/√(2ρ) with ρ = 0.01 per half: 500/√0.02 ≈ 3536 value units.
    assert!(
        (sum.scale / (500.0 / 0.02f64.sqrt()) - 1.0).abs() < 1e-3,
        "{}",
        sum.scale
    );
    assert!(sum.ci95_half_width.unwrap() > sum.expected_abs_error.unwrap());
}
