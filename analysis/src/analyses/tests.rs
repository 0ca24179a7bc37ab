//! Each analysis against figures computed by hand from textbook formulas (closed forms that share nothing with the
//! code under test), and its evidence against what the output checks must see.

use super::regression::{self, Family};
use super::*;
use crate::output_check::{self, History, PatientId, Place, Rule, Rules, Verdict};

fn ids(list: &[u32]) -> Vec<PatientId> {
    list.iter().copied().map(PatientId).collect()
}

fn numbers(list: &[f64]) -> Column {
    Column::Numeric(list.iter().copied().map(Some).collect())
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{what}: {a} vs {b}");
}

#[test]
fn a_crosstab_counts_distinct_patients_and_keeps_its_zero_cells() {
    let frame = Frame::new(ids(&[1, 1, 2, 3, 4]))
        .with(
            "sex",
            Column::Categorical(vec![
                Some("F".into()),
                Some("F".into()),
                Some("M".into()),
                Some("F".into()),
                None,
            ]),
        )
        .unwrap()
        .with(
            "prefecture",
            Column::Categorical(["01", "02", "01", "01", "02"].map(|p| Some(p.to_owned())).to_vec()),
        )
        .unwrap();
    let t = crosstab::crosstab(&frame, "sex", Some("prefecture")).unwrap();
    assert_eq!(t.result.rows.1, ["F", "M"]);
    assert_eq!(t.result.columns.1, ["01", "02"]);
    // F×01: patients 1 and 3; F×02: patient 1; M×01: patient 2; M×02: nobody (patient 4 has no sex).
    assert_eq!(t.result.counts, [[2, 1], [1, 0]]);
    let report = output_check::check(&t.output, &History::new(), &Rules::default());
    assert!(report.has(Rule::Zero, Place::Cell(3)));
    assert!(report.has(Rule::Threshold, Place::Cell(0)));
    assert!(matches!(
        crosstab::crosstab(&frame, "age", None),
        Err(AnalysisError::UnknownColumn(c)) if c == "age"
    ));
}

#[test]
fn descriptive_statistics_and_the_contributions_the_checks_judge() {
    let frame = Frame::new(ids(&[1, 1, 2, 3]))
        .with("hba1c", numbers(&[1.0, 3.0, 5.0, 7.0]))
        .unwrap();
    let d = describe::describe(&frame, "hba1c", None).unwrap();
    let s = &d.result[0];
    assert_eq!((s.patients, s.rows), (3, 4));
    close(s.mean, 4.0, "mean");
    // Sample standard deviation: ((−3)² + (−1)² + 1² + 3²) / 3 = 20 / 3.
    close(s.sd, (20.0_f64 / 3.0).sqrt(), "sd");
    close(s.median, 4.0, "median");
    assert!(s.q1 < s.median && s.median < s.q3);
    let output_check::Output::Table(t) = &d.output else {
        panic!("a table")
    };
    assert_eq!(t.cells.len(), describe::CELLS_PER_GROUP);
    // Patient 1's two values make one contribution of 4 to the mean's total.
    let mut contributions = t.cells[0].contributions.clone();
    contributions.sort_by(f64::total_cmp);
    assert_eq!(contributions, [4.0, 5.0, 7.0]);
}

#[test]
fn ordinary_least_squares_matches_the_closed_form_of_a_simple_regression() {
    let (x, y) = ([1.0, 2.0, 3.0, 4.0, 5.0], [5.1, 7.9, 11.2, 13.8, 17.0]);
    let frame = Frame::new(ids(&[1, 2, 3, 4, 5]))
        .with("x", numbers(&x))
        .unwrap()
        .with("y", numbers(&y))
        .unwrap();
    let fit = regression::linear(&frame, "y", &["x"]).unwrap();
    // By hand: x̄ = 3, ȳ = 11, Sxx = 10, Sxy = 29.7; slope 2.97, intercept 2.09; RSS 0.091 on 3 degrees of freedom.
    let n = 5.0;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let rss: f64 = x.iter().zip(&y).map(|(a, b)| (b - intercept - slope * a).powi(2)).sum();
    let sigma2 = rss / (n - 2.0);
    let c = &fit.result.coefficients;
    close(c[1].estimate, 2.97, "slope");
    close(c[0].estimate, intercept, "intercept");
    close(c[1].std_error, (sigma2 / sxx).sqrt(), "SE slope");
    close(
        c[0].std_error,
        (sigma2 * (1.0 / n + mx * mx / sxx)).sqrt(),
        "SE intercept",
    );
    close(c[1].statistic, c[1].estimate / c[1].std_error, "t");
    assert!(c[1].p_value < 1e-4, "{}", c[1].p_value);
    assert_eq!(fit.result.residual_dof, 3);
    close(
        fit.result.r_squared.unwrap(),
        1.0 - rss / y.iter().map(|v| (v - my).powi(2)).sum::<f64>(),
        "R²",
    );
    // Three residual degrees of freedom: the checks refuse it.
    let report = output_check::check(&fit.output, &History::new(), &Rules::default());
    assert!(report.has(Rule::DegreesOfFreedom, Place::Whole));
}

/// A 2×2 table as rows: `(x, y)` repeated.
fn two_by_two(a: usize, b: usize, c: usize, d: usize) -> Frame {
    let mut rows = Vec::new();
    rows.extend(std::iter::repeat_n((0.0, 1.0), a));
    rows.extend(std::iter::repeat_n((0.0, 0.0), b));
    rows.extend(std::iter::repeat_n((1.0, 1.0), c));
    rows.extend(std::iter::repeat_n((1.0, 0.0), d));
    let patients = (0..rows.len() as u32).map(PatientId).collect();
    Frame::new(patients)
        .with("x", Column::Numeric(rows.iter().map(|r| Some(r.0)).collect()))
        .unwrap()
        .with("y", Column::Numeric(rows.iter().map(|r| Some(r.1)).collect()))
        .unwrap()
}

#[test]
fn logistic_regression_on_a_binary_covariate_gives_the_log_odds_ratio_and_woolfs_standard_error() {
    // Unexposed: 10 cases, 20 non-cases; exposed: 25 cases, 15 non-cases.
    let (a, b, c, d): (f64, f64, f64, f64) = (10.0, 20.0, 25.0, 15.0);
    let fit = regression::logistic(&two_by_two(10, 20, 25, 15), "y", &["x"]).unwrap();
    let k = &fit.result.coefficients;
    assert_eq!(fit.result.family, Family::Logistic);
    close(k[0].estimate, (a / b).ln(), "intercept = log odds of the unexposed");
    close(k[1].estimate, ((c / d) / (a / b)).ln(), "slope = log odds ratio");
    close(k[0].std_error, (1.0 / a + 1.0 / b).sqrt(), "SE intercept");
    close(
        k[1].std_error,
        (1.0 / a + 1.0 / b + 1.0 / c + 1.0 / d).sqrt(),
        "Woolf's SE",
    );
    // Log-likelihood of the saturated fit: Σ n log p over the four cells.
    let ll = a * (a / (a + b)).ln() + b * (b / (a + b)).ln() + c * (c / (c + d)).ln() + d * (d / (c + d)).ln();
    close(fit.result.log_likelihood.unwrap(), ll, "log-likelihood");
    assert_eq!(fit.result.observations, 70);
}

#[test]
fn a_covariate_that_singles_out_one_patient_is_caught_by_the_leverage() {
    // y for 200 patients; d = 1 for patient 17 alone: intercept + slope would be patient 17's own value.
    let n = 200u32;
    let y: Vec<f64> = (0..n).map(|i| 5.0 + f64::from(i % 7) / 3.0).collect();
    let d: Vec<f64> = (0..n).map(|i| if i == 17 { 1.0 } else { 0.0 }).collect();
    let x: Vec<f64> = (0..n).map(|i| f64::from(i % 11)).collect();
    let frame = Frame::new((0..n).map(PatientId).collect())
        .with("y", numbers(&y))
        .unwrap()
        .with("d", numbers(&d))
        .unwrap()
        .with("x", numbers(&x))
        .unwrap();
    let singled = regression::linear(&frame, "y", &["d"]).unwrap();
    let c = &singled.result.coefficients;
    close(c[0].estimate + c[1].estimate, y[17], "the patient's own value");
    let report = output_check::check(&singled.output, &History::new(), &Rules::default());
    assert_eq!(report.verdict, Verdict::Refused);
    assert!(report.has(Rule::InfluentialPatient, Place::Whole), "{report:?}");
    // An ordinary covariate spreads the fit over everyone.
    let spread = regression::linear(&frame, "y", &["x"]).unwrap();
    assert_eq!(
        output_check::check(&spread.output, &History::new(), &Rules::default()).verdict,
        Verdict::Safe
    );
}

#[test]
fn a_regression_refuses_separation_collinearity_and_outcomes_that_are_not_binary() {
    // Complete separation: the outcome is the covariate.
    assert_eq!(
        regression::logistic(&two_by_two(0, 10, 10, 0), "y", &["x"]).unwrap_err(),
        AnalysisError::NoConvergence(regression::MAX_ITERATIONS)
    );
    let frame = Frame::new(ids(&[1, 2, 3, 4, 5, 6]))
        .with("x", numbers(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
        .unwrap()
        .with("twice", numbers(&[2.0, 4.0, 6.0, 8.0, 10.0, 12.0]))
        .unwrap()
        .with("y", numbers(&[1.0, 3.0, 2.0, 5.0, 4.0, 6.0]))
        .unwrap();
    assert_eq!(
        regression::linear(&frame, "y", &["x", "twice"]).unwrap_err(),
        AnalysisError::Collinear
    );
    assert!(matches!(
        regression::logistic(&frame, "y", &["x"]),
        Err(AnalysisError::Invalid(m)) if m.contains("0 or 1")
    ));
    assert!(matches!(
        regression::linear(&frame, "y", &["x", "twice", "y", "x", "twice"]),
        Err(AnalysisError::TooFewRows { rows: 6, needed: 7 })
    ));
}

#[test]
fn kaplan_meier_matches_the_product_limit_by_hand() {
    let frame = Frame::new(ids(&[1, 2, 3, 4, 5, 6]))
        .with("days", numbers(&[1.0, 2.0, 2.0, 3.0, 4.0, 5.0]))
        .unwrap()
        .with("died", numbers(&[1.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
        .unwrap();
    let curves = survival::kaplan_meier(&frame, "days", "died", None).unwrap();
    let steps = &curves[0].result.steps;
    let got: Vec<(u64, u64, u64)> = steps.iter().map(|s| (s.at_risk, s.events, s.censored)).collect();
    assert_eq!(got, [(6, 1, 0), (5, 1, 1), (3, 1, 0), (2, 0, 1), (1, 1, 0)]);
    // S = 5/6, × 4/5, × 2/3, unchanged, × 0.
    for (step, s) in steps.iter().zip([5.0 / 6.0, 2.0 / 3.0, 4.0 / 9.0, 4.0 / 9.0, 0.0]) {
        close(step.survival, s, "survival");
    }
    // Greenwood at day 3: 1/(6·5) + 1/(5·4) + 1/(3·2) = 1/4, so SE = 4/9 · 1/2.
    close(steps[2].std_error, 4.0 / 9.0 * 0.5, "Greenwood");
    // Six patients: every step's risk set is below 10.
    let report = output_check::check(&curves[0].output, &History::new(), &Rules::default());
    assert_eq!(report.verdict, Verdict::Refused);
    assert!(report.has(Rule::SmallRiskSet, Place::Step(0)));
    let bad = Frame::new(ids(&[1]))
        .with("days", numbers(&[-1.0]))
        .unwrap()
        .with("died", numbers(&[1.0]))
        .unwrap();
    assert!(survival::kaplan_meier(&bad, "days", "died", None).is_err());
}

#[test]
fn errors_name_columns_never_values() {
    let frame = Frame::new(ids(&[1, 2]))
        .with("secret_value", numbers(&[123456.0, 654321.0]))
        .unwrap();
    let e = regression::logistic(&frame, "secret_value", &[])
        .unwrap_err()
        .to_string();
    assert!(!e.contains("123456") && !e.contains("654321"), "{e}");
    let e = Frame::new(ids(&[1]))
        .with("x", numbers(&[1.0, 2.0]))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "column x has 2 values for 1 rows");
}
