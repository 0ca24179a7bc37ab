//! Tests of the fingerprint: exact value arithmetic, the rigour of the accusation bound, the budget and
//! tolerance of embedding, robustness of reading, and the experiments at reduced size.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::accuse::{Term, ln_perfect, ln_tail_bound, max_score};
use super::experiments::{
    Experiment, LeakedView, collusion, innocents, mixed_precision_lab_sheet, single_leaker, synthetic_lab_sheet,
};
use super::prf::Prf;
use super::*;

fn key(seed: u8) -> FingerprintKey {
    FingerprintKey::from_bytes([seed; 32])
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// The synthetic table, its plan and copies for `recipients`.
fn copies(rows: usize, seed: u64, k: &FingerprintKey, recipients: &[String]) -> (Sheet, FingerprintPlan, Vec<Sheet>) {
    let (sheet, marked) = synthetic_lab_sheet(rows, seed);
    let plan = plan(marked, &sheet, DEFAULT_MAX_CELL_FRACTION);
    let plan = fit_plan(k, &plan, &sheet, DEFAULT_MAX_CELL_FRACTION).unwrap();
    let copies = recipients
        .iter()
        .map(|r| {
            let mut copy = sheet.clone();
            embed(k, r, &plan, &mut copy, DEFAULT_MAX_CELL_FRACTION).unwrap();
            copy
        })
        .collect();
    (sheet, plan, copies)
}

// ---- values ----

#[test]
fn rendering_is_exact_for_every_small_value() {
    for decimals in 0..=4u32 {
        let mut out = String::new();
        for q in -30_000i64..=30_000 {
            out.clear();
            render_scaled(q, decimals, &mut out);
            let parsed = parse_scaled(&out, decimals).unwrap();
            assert_eq!(parsed, Scaled { q, on_grid: true }, "{out}");
            let places = out.split_once('.').map_or(0, |(_, f)| f.len());
            assert_eq!(places, decimals as usize, "{out}");
            assert!(!out.starts_with("-0") || out.trim_start_matches(['-', '0', '.']).len() < out.len() - 1);
            assert_eq!(out.starts_with('-'), q < 0, "{out}");
        }
    }
    assert_eq!(format_scaled(0, 2), "0.00");
    assert_eq!(format_scaled(-1, 2), "-0.01");
    assert_eq!(format_scaled(-100, 2), "-1.00");
    assert_eq!(format_scaled(12345, 2), "123.45");
    assert_eq!(format_scaled(7, 0), "7");
    assert_eq!(format_scaled(-7, 3), "-0.007");
    assert_eq!(format_scaled(1 << 53, 15), "9.007199254740992");
}

#[test]
fn parsing_compares_numbers_not_text() {
    let q = |s: &str| parse_scaled(s, 2).map(|v| v.q);
    assert_eq!(q("0.10"), Some(10));
    assert_eq!(q("0.1"), Some(10));
    assert_eq!(q(" 0.1 "), Some(10));
    assert_eq!(q("1e-1"), Some(10));
    assert_eq!(q("0.09999999999999999"), Some(10));
    assert_eq!(q("0.10000000000000001"), Some(10));
    assert_eq!(q("+.5"), Some(50));
    assert_eq!(q("5."), Some(500));
    assert_eq!(q("-0.00"), Some(0));
    assert_eq!(q("-25.125"), Some(-2513));
    assert_eq!(q("25.125"), Some(2513));
    for bad in [
        "",
        " ",
        ".",
        "-",
        "abc",
        "1,5",
        "NaN",
        "inf",
        "-infinity",
        "1e300",
        "12.3.4",
    ] {
        assert_eq!(q(bad), None, "{bad:?}");
    }
    assert!(parse_scaled("25.10", 2).unwrap().on_grid);
    assert!(parse_scaled("25.1", 2).unwrap().on_grid);
    assert!(!parse_scaled("25.125", 2).unwrap().on_grid);
    assert!(!parse_scaled("0.09999999999999999", 2).unwrap().on_grid);
    assert_eq!(parse_scaled("1.5", 16), None);
}

proptest! {
    #[test]
    fn rendering_round_trips(q in -(1i64 << 53)..=(1i64 << 53), decimals in 0u32..=15) {
        let text = format_scaled(q, decimals);
        prop_assert_eq!(parse_scaled(&text, decimals), Some(Scaled { q, on_grid: true }));
        prop_assert_eq!(text.split_once('.').map_or(0, |(_, f)| f.len()), decimals as usize);
    }

    #[test]
    fn float_conversion_keeps_the_integer(q in -1_000_000_000_000i64..=1_000_000_000_000, decimals in 0u32..=4) {
        // What a Parquet double column written back as text looks like.
        let float = q as f64 / 10f64.powi(decimals as i32);
        prop_assert_eq!(parse_scaled(&float.to_string(), decimals).map(|v| v.q), Some(q));
        prop_assert_eq!(parse_scaled(&format!("{float:e}"), decimals).map(|v| v.q), Some(q));
    }

    #[test]
    fn parity_change_moves_by_at_most_one_unit(q in -(1i64 << 52)..(1i64 << 52), bit in any::<bool>()) {
        let changed = 2 * q.div_euclid(2) + i64::from(bit);
        prop_assert!((changed - q).abs() <= 1);
        prop_assert_eq!(changed.div_euclid(2), q.div_euclid(2));
    }
}

// ---- the bound ----

/// Every innocent codeword's (score, probability), by score (highest first), and the cumulative
/// probabilities: P(S ≥ s) = cumulative[number of outcomes with score ≥ s − 1].
fn outcomes(terms: &[Term]) -> (Vec<(f64, f64)>, Vec<f64>) {
    let n = terms.len();
    let mut outcomes: Vec<(f64, f64)> = (0..1u32 << n)
        .map(|word| {
            let mut score = 0.0;
            let mut ln_p = 0.0;
            for (i, t) in terms.iter().enumerate() {
                let x = word >> i & 1 == 1;
                score += t.score(x);
                ln_p += if x { t.ln_p1 } else { t.ln_p0 };
            }
            (score, ln_p.exp())
        })
        .collect();
    outcomes.sort_by(|a, b| b.0.total_cmp(&a.0));
    let cumulative = outcomes
        .iter()
        .scan(0.0, |acc, o| {
            *acc += o.1;
            Some(*acc)
        })
        .collect();
    (outcomes, cumulative)
}

#[test]
fn chernoff_bound_is_above_the_exact_tail() {
    let prf = Prf::new(&key(9));
    let mut rng = StdRng::seed_from_u64(4);
    let mut checked = 0;
    for round in 0..60u64 {
        let cutoff = [DEFAULT_CUTOFF, 0.01, 0.1, 0.3][round as usize % 4];
        let terms: Vec<Term> = (0..12u64)
            .map(|i| Term::new(prf.bias(round * 100 + i, cutoff), rng.random()))
            .collect();
        let (outcomes, cumulative) = outcomes(&terms);
        let exact = |s: f64| match outcomes.partition_point(|o| o.0 >= s) {
            0 => 0.0,
            k => cumulative[k - 1],
        };
        for &(s, _) in &outcomes {
            // At every achievable score, and just above it (where the tail drops to the next outcome).
            for s in [s, s + 1e-9] {
                let (bound, exact) = (ln_tail_bound(&terms, s).exp(), exact(s));
                assert!(
                    bound >= exact * (1.0 - 1e-9),
                    "round {round}: s {s}: bound {bound} < exact {exact}"
                );
                assert!(bound <= 1.0);
                checked += 1;
            }
        }
        // The perfect match is exact.
        let top = max_score(&terms);
        assert!((ln_tail_bound(&terms, top) - ln_perfect(&terms)).abs() < 1e-12);
        assert!((ln_perfect(&terms).exp() - cumulative[0]).abs() <= 1e-12 * cumulative[0]);
        assert_eq!(outcomes[0].0, top);
    }
    assert_eq!(checked, 60 * 4096 * 2);
}

#[test]
fn chernoff_bound_is_not_vacuous() {
    // 400 positions, a score 6 standard deviations up: the bound is small but not below the Gaussian tail
    // by more than the usual Chernoff slack.
    let prf = Prf::new(&key(3));
    let terms: Vec<Term> = (0..400u64)
        .map(|i| Term::new(prf.bias(i, DEFAULT_CUTOFF), i % 3 == 0))
        .collect();
    let p = ln_tail_bound(&terms, 6.0 * 20.0).exp();
    assert!(p < 1e-5, "{p}");
    assert!(p > 1e-12, "{p}");
    assert_eq!(ln_tail_bound(&terms, 0.0), 0.0);
    assert_eq!(ln_tail_bound(&terms, -5.0), 0.0);
    assert_eq!(ln_tail_bound(&[], 1.0), f64::NEG_INFINITY);
}

// ---- keys ----

#[test]
fn keys_stay_redacted() {
    let k = FingerprintKey::from_bytes([0xab; 32]);
    assert_eq!(format!("{k:?}"), "FingerprintKey(<redacted>)");
    assert_eq!(format!("{:?}", Prf::new(&k)), "Prf(<redacted>)");
    let (mut sheet, marked) = synthetic_lab_sheet(1000, 1);
    let mut plan = plan(marked, &sheet, 0.01);
    plan.rate = 1.0;
    let err = embed(&k, "r", &plan, &mut sheet, 0.01).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("ab, ab") && !text.to_lowercase().contains("abab") && !text.contains("171, 171"),
        "{text}"
    );
}

// ---- embedding ----

#[test]
fn embedding_stays_within_budget_and_tolerance() {
    let k = key(1);
    let (original, marked) = synthetic_lab_sheet(20_000, 11);
    let plan = plan(marked, &original, 0.01);
    assert!(plan.rate > 0.0 && plan.rate <= 1.0);
    assert_eq!(plan.cutoff, 1.0 / 900.0);
    // Laboratory values use their last decimal: the boundary scheme, on cells ending in 4 or 5.
    assert_eq!(plan.columns[0].scheme, MarkScheme::Boundary);
    let value = original.index_of("value").unwrap();
    let boundary_cells = original.columns[value]
        .iter()
        .filter(|c| matches!(parse_scaled(c, 2).unwrap().q.rem_euclid(10), 4 | 5))
        .count();
    let mut marked_counts = Vec::new();
    for recipient in names("r", 4) {
        let mut copy = original.clone();
        let report = embed(&k, &recipient, &plan, &mut copy, 0.01).unwrap();
        assert_eq!(report.total_cells, 100_000);
        assert_eq!(report.markable, boundary_cells);
        assert!(report.marked <= report.total_cells / 100, "{report:?}");
        // The key-less rate keeps a wide margin under the boundary scheme (a value-only position is shared by
        // every cell of its 0.1-wide bin); the builder fits the plan with the key instead.
        assert!(
            report.marked as f64 > 0.3 * 0.01 * report.total_cells as f64,
            "{report:?}"
        );
        // Every marked cell changes (…4 and …5 become …3 or …6).
        assert_eq!(report.changed, report.marked, "{report:?}");
        marked_counts.push(report.marked);
        let mut changed = 0;
        for c in 0..original.width() {
            for r in 0..original.rows() {
                let (old, new) = (&original.columns[c][r], &copy.columns[c][r]);
                if c != value {
                    assert_eq!(old, new);
                    continue;
                }
                if old != new {
                    changed += 1;
                    let (a, b) = (parse_scaled(old, 2).unwrap().q, parse_scaled(new, 2).unwrap().q);
                    assert!((1..=2).contains(&(a - b).abs()), "{old} -> {new}");
                    assert!(
                        matches!(a.rem_euclid(10), 4 | 5) && matches!(b.rem_euclid(10), 3 | 6),
                        "{old} -> {new}"
                    );
                    assert_eq!(a.div_euclid(10), b.div_euclid(10), "{old} -> {new}");
                    let (fa, fb): (f64, f64) = (old.parse().unwrap(), new.parse().unwrap());
                    assert!((fa - fb).abs() <= 0.02 + 1e-9, "{old} -> {new}");
                    assert_eq!(new.split_once('.').unwrap().1.len(), 2, "{new}");
                }
            }
        }
        assert_eq!(changed, report.changed);
    }
    // The selection does not depend on the recipient.
    assert!(marked_counts.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn budget_is_enforced_without_writing() {
    let k = key(2);
    let (original, marked) = synthetic_lab_sheet(5_000, 3);
    let mut plan = plan(marked, &original, 0.01);
    plan.rate = 0.5;
    let mut copy = original.clone();
    match embed(&k, "r", &plan, &mut copy, 0.01) {
        Err(FingerprintError::BudgetExceeded { marked, allowed, total }) => {
            assert_eq!(total, 25_000);
            assert_eq!(allowed, 250);
            assert!(marked > allowed);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(copy, original);
    // A stricter budget than the plan was made for is refused too.
    let plan = super::plan(plan.columns, &original, 0.01);
    let mut copy = original.clone();
    assert!(matches!(
        embed(&k, "r", &plan, &mut copy, 0.001),
        Err(FingerprintError::BudgetExceeded { .. })
    ));
    assert_eq!(copy, original);
    assert!(embed(&k, "r", &plan, &mut copy, 0.01).is_ok());
}

#[test]
fn plans_fit_small_tables_for_any_key() {
    // The margin of the plan: many keys, small tables (where a plain 80 % of the budget would often fail).
    for rows in [20, 100, 300, 1000] {
        let (original, marked) = synthetic_lab_sheet(rows, rows as u64);
        let plan = plan(marked, &original, 0.01);
        for seed in 0..100u8 {
            let mut copy = original.clone();
            let report = embed(&key(seed), "r", &plan, &mut copy, 0.01).unwrap();
            assert!(report.marked <= report.allowed);
        }
    }
}

#[test]
fn a_fitted_plan_uses_the_budget_exactly() {
    let (original, marked) = synthetic_lab_sheet(20_000, 31);
    let loose = plan(marked, &original, 0.01);
    for seed in 0..5u8 {
        let k = key(seed);
        let fitted = fit_plan(&k, &loose, &original, 0.01).unwrap();
        assert!(fitted.cutoff == loose.cutoff && fitted.columns == loose.columns);
        let chosen = fitted.positions.as_ref().unwrap();
        let mut copy = original.clone();
        let report = embed(&k, "r", &fitted, &mut copy, 0.01).unwrap();
        assert!(
            report.marked <= report.allowed && report.marked * 100 >= report.allowed * 97,
            "{report:?}"
        );
        // The whole copy shows every chosen position, and only those.
        let marks = read_marks(&k, &fitted, &copy);
        assert_eq!(marks.positions.len(), chosen.len());
        assert!(marks.positions.iter().all(|p| chosen.contains(p.position)));
        // The record keeps the set through its JSON form.
        let back: FingerprintPlan = serde_json::from_str(&serde_json::to_string(&fitted).unwrap()).unwrap();
        assert_eq!(back, fitted);
    }
}

/// The largest rate whose rate-only selection stays within the budget under `k` (bisection with [`embed`]):
/// the selection the fitted plan replaced.
fn best_rate(k: &FingerprintKey, loose: &FingerprintPlan, sheet: &Sheet) -> FingerprintPlan {
    let (mut lo, mut hi) = (loose.rate, 1.0f64);
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        let trial = FingerprintPlan {
            rate: mid,
            ..loose.clone()
        };
        if embed(k, "r", &trial, &mut sheet.clone(), 0.01).is_ok() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    FingerprintPlan {
        rate: lo,
        ..loose.clone()
    }
}

#[test]
fn fewest_cells_first_carries_more_positions_than_a_rate_at_every_sample_size() {
    // The same budget spent on positions carried by few cells: more positions in the whole copy and in a
    // tenth of it, so smaller leaks are traced.
    // (Parity marks: under the boundary scheme a rate plan also selects positions that unmarked cells are
    // read at, which the fitted plan excludes, so counts of positions read do not compare.)
    let (original, marked) = synthetic_lab_sheet(20_000, 41);
    let mut loose = plan(marked, &original, 0.01);
    loose.columns[0].scheme = MarkScheme::Parity;
    loose.rate = 0.0; // the rate was set for the boundary scheme's fewer markable cells
    let k = key(9);
    let fitted = fit_plan(&k, &loose, &original, 0.01).unwrap();
    let by_rate = best_rate(&k, &loose, &original);
    let mut rng = StdRng::seed_from_u64(5);
    let mut rows: Vec<usize> = (0..original.rows()).collect();
    rows.shuffle(&mut rng);
    let tenth: Vec<usize> = rows[..original.rows() / 10].to_vec();
    let mut counts = Vec::new();
    for p in [&fitted, &by_rate] {
        let mut copy = original.clone();
        let report = embed(&k, "r", p, &mut copy, 0.01).unwrap();
        let whole = read_marks(&k, p, &copy).positions.len();
        let view = LeakedView::new(vec![&copy], tenth.clone(), (0..copy.header.len()).collect(), &[], 0);
        let sample = read_marks(&k, p, &view).positions.len();
        counts.push((report.marked, whole, sample));
    }
    let ((fm, fw, fs), (rm, rw, rs)) = (counts[0], counts[1]);
    assert!(
        fm >= rm,
        "the fitted plan uses at least the budget a rate can: {counts:?}"
    );
    assert!(fw > rw && fs > rs, "{counts:?}");
}

#[test]
fn fitted_plan_is_a_function_of_the_key_not_of_row_order() {
    let (original, marked) = synthetic_lab_sheet(3_000, 43);
    let loose = plan(marked, &original, 0.01);
    let mut reversed = original.clone();
    for column in &mut reversed.columns {
        column.reverse();
    }
    let a = fit_plan(&key(3), &loose, &original, 0.01).unwrap();
    let b = fit_plan(&key(3), &loose, &reversed, 0.01).unwrap();
    let c = fit_plan(&key(4), &loose, &original, 0.01).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.positions, c.positions);
}

#[test]
fn a_fitted_plan_that_fits_everything_marks_every_cell() {
    // When every markable cell fits, the rate is 1.
    let rows: Vec<Vec<String>> = (0..300)
        .map(|i| (0..100).map(|c| format!("{}.{}", i, c % 10)).collect())
        .collect();
    let header: Vec<String> = (0..100).map(|c| format!("c{c}")).collect();
    let wide = Sheet::from_rows(&header, &rows).unwrap();
    let spec = vec![MarkedColumn {
        column: "c0".into(),
        decimals: 1,
        anchors: vec![],
        scheme: MarkScheme::Parity,
        precision: None,
    }];
    let fitted = fit_plan(&key(1), &plan(spec, &wide, 0.01), &wide, 0.01).unwrap();
    assert_eq!(fitted.rate, 1.0);
    assert_eq!(fitted.positions.as_ref().map(MarkedPositions::len), Some(300));
    let report = embed(&key(1), "r", &fitted, &mut wide.clone(), 0.01).unwrap();
    assert_eq!((report.marked, report.allowed), (300, 300));
}

#[test]
fn invalid_plans_are_refused() {
    let k = key(5);
    let (mut sheet, marked) = synthetic_lab_sheet(100, 5);
    let good = plan(marked, &sheet, 0.01);
    let with = |f: &dyn Fn(&mut FingerprintPlan)| {
        let mut p = good.clone();
        f(&mut p);
        p
    };
    let cases = [
        with(&|p| p.columns[0].column = "nope".into()),
        with(&|p| p.columns[0].anchors.push("missing".into())),
        with(&|p| p.columns[0].anchors.push("value".into())),
        with(&|p| p.columns[0].decimals = 16),
        with(&|p| p.rate = f64::NAN),
        with(&|p| p.rate = 1.5),
        with(&|p| p.cutoff = 0.0),
        with(&|p| p.cutoff = 0.5),
        with(&|p| {
            let c = p.columns[0].clone();
            p.columns.push(c)
        }),
    ];
    let before = sheet.clone();
    for case in &cases {
        assert!(embed(&k, "r", case, &mut sheet, 0.01).is_err(), "{case:?}");
    }
    assert_eq!(sheet, before);
    assert!(matches!(
        embed(&k, "r", &cases[0], &mut sheet, 0.01),
        Err(FingerprintError::UnknownColumn(c)) if c == "nope"
    ));
    let mut ragged = sheet.clone();
    ragged.columns[1].pop();
    assert!(matches!(
        embed(&k, "r", &good, &mut ragged, 0.01),
        Err(FingerprintError::Sheet(_))
    ));
    // An unknown column in the plan counts as nothing to mark.
    assert_eq!(plan(cases[0].columns.clone(), &sheet, 0.01).rate, 0.0);
    assert_eq!(plan(good.columns.clone(), &sheet, 0.0).rate, 0.0);
}

#[test]
fn negative_and_odd_values_are_marked_within_tolerance() {
    let k = key(6);
    let rows: Vec<Vec<String>> = (0..4000)
        .map(|i| vec![format!("{}", i % 7), format_scaled(i - 2000, 1)])
        .collect();
    let original = Sheet::from_rows(&["group", "delta"], &rows).unwrap();
    let marked = vec![MarkedColumn {
        column: "delta".into(),
        decimals: 1,
        anchors: vec!["group".into()],
        scheme: MarkScheme::Parity,
        precision: None,
    }];
    let plan = plan(marked.clone(), &original, 0.01);
    assert_eq!(plan.columns[0].scheme, MarkScheme::Boundary);
    let mut copy = original.clone();
    let report = embed(&k, "r", &plan, &mut copy, 0.01).unwrap();
    assert!(report.changed > 0);
    for (old, new) in original.columns[1].iter().zip(&copy.columns[1]) {
        let (a, b) = (parse_scaled(old, 1).unwrap().q, parse_scaled(new, 1).unwrap().q);
        assert!((a - b).abs() <= 2, "{old} -> {new}");
        assert_eq!(a.div_euclid(10), b.div_euclid(10), "{old} -> {new}");
        assert_ne!(new, "-0.0");
    }
    // Whole numbers written with a decimal: parity, one unit at most.
    let whole: Vec<Vec<String>> = (0..4000)
        .map(|i| vec![format!("{}", i % 7), format_scaled(10 * (i - 2000), 1)])
        .collect();
    let original = Sheet::from_rows(&["group", "delta"], &whole).unwrap();
    let plan = super::plan(marked, &original, 0.01);
    assert_eq!(plan.columns[0].scheme, MarkScheme::Parity);
    let mut copy = original.clone();
    assert!(embed(&k, "r", &plan, &mut copy, 0.01).unwrap().changed > 0);
    for (old, new) in original.columns[1].iter().zip(&copy.columns[1]) {
        let (a, b) = (parse_scaled(old, 1).unwrap().q, parse_scaled(new, 1).unwrap().q);
        assert!((a - b).abs() <= 1, "{old} -> {new}");
        assert_ne!(new, "-0.0");
    }
}

/// Decimals of a value as reported: the digits after the point, trailing zeros dropped.
fn used_decimals_of(text: &str) -> usize {
    text.split_once('.').map_or(0, |(_, f)| f.trim_end_matches('0').len())
}

/// The reported precision of each JLAC10 analyte in the mixed synthetic table (what a laboratory sends).
fn reported(code: &str) -> u32 {
    match &code[..5] {
        "3C015" => 2,
        "3C025" | "3D046" | "2A030" => 1,
        _ => 0,
    }
}

#[test]
fn marks_stay_within_each_tests_own_precision() {
    let k = key(12);
    let (original, marked) = mixed_precision_lab_sheet(20_000, 12);
    let rough = plan(marked, &original, DEFAULT_MAX_CELL_FRACTION);
    let precision = rough.columns[0].precision.as_ref().unwrap();
    assert_eq!(precision.decimals.get("3B035"), Some(&0));
    assert_eq!(precision.decimals.get("3C015"), Some(&2));
    assert_eq!(precision.decimals.get("3D046"), Some(&1));
    assert_eq!(precision.decimals.len(), 10);
    // Each cell at its own precision uses its last digit: the boundary scheme.
    assert_eq!(rough.columns[0].scheme, MarkScheme::Boundary);
    let plan = fit_plan(&k, &rough, &original, DEFAULT_MAX_CELL_FRACTION).unwrap();
    let mut copy = original.clone();
    let report = embed(&k, "r", &plan, &mut copy, DEFAULT_MAX_CELL_FRACTION).unwrap();
    assert!(report.changed > 100, "{report:?}");
    let (code, value) = (
        original.index_of("jlac10").unwrap(),
        original.index_of("value").unwrap(),
    );
    let mut whole_changed = 0;
    for row in 0..original.rows() {
        let (old, new) = (&original.columns[value][row], &copy.columns[value][row]);
        let d = reported(&original.columns[code][row]);
        // Written as every other cell (2 decimals), never finer than the test reports, at most 2 units away.
        assert_eq!(new.split_once('.').map(|(_, f)| f.len()), Some(2), "{new}");
        assert!(used_decimals_of(new) <= d as usize, "{old} -> {new}");
        let (a, b) = (parse_scaled(old, d).unwrap().q, parse_scaled(new, d).unwrap().q);
        assert!((a - b).abs() <= 2, "{old} -> {new}");
        whole_changed += usize::from(d == 0 && a != b);
    }
    assert!(whole_changed > 0);
}

#[test]
fn rounding_a_mixed_precision_copy_keeps_the_marks_of_its_whole_number_tests() {
    // The attack: pseudonyms gone, every value ±1 unit of its test's precision and rounded to one decimal. With
    // the column's precision alone (two decimals) most tests are whole numbers, so parity is chosen, and
    // rounding erases every mark; at each test's own precision the marks survive.
    let recipients = names("r", 10);
    let (original, marked) = mixed_precision_lab_sheet(20_000, 13);
    let leak = |copy: &Sheet, rng: &mut StdRng| -> Sheet {
        let (code, value) = (copy.index_of("jlac10").unwrap(), copy.index_of("value").unwrap());
        let mut leaked = copy.clone();
        for row in 0..copy.rows() {
            let unit = 10f64.powi(-(reported(&copy.columns[code][row]) as i32));
            let x: f64 = copy.columns[value][row].parse().unwrap();
            let x = x + if rng.random_bool(0.5) { unit } else { -unit };
            leaked.columns[value][row] = format!("{x:.1}");
        }
        leaked.drop_column("pseudonym");
        leaked
    };
    for per_code in [false, true] {
        let k = key(13);
        let mut marked = marked.clone();
        if !per_code {
            marked[0].precision = None;
        }
        let rough = plan(marked, &original, DEFAULT_MAX_CELL_FRACTION);
        let plan = fit_plan(&k, &rough, &original, DEFAULT_MAX_CELL_FRACTION).unwrap();
        let mut copy = original.clone();
        embed(&k, &recipients[3], &plan, &mut copy, DEFAULT_MAX_CELL_FRACTION).unwrap();
        let leaked = leak(&copy, &mut StdRng::seed_from_u64(13));
        let verdict = accuse(&k, &read_marks(&k, &plan, &leaked), &recipients, DEFAULT_BOUND);
        if per_code {
            assert_eq!(verdict.accused, vec![recipients[3].clone()], "{}", verdict.explanation);
        } else {
            assert_eq!(plan.columns[0].scheme, MarkScheme::Parity);
            assert!(verdict.accused.is_empty(), "{}", verdict.explanation);
        }
        // Innocent: the unmarked table under the same attack.
        let innocent = leak(&original, &mut StdRng::seed_from_u64(14));
        let verdict = accuse(&k, &read_marks(&k, &plan, &innocent), &recipients, DEFAULT_BOUND);
        assert!(verdict.accused.is_empty(), "{}", verdict.explanation);
    }
}

#[test]
fn a_small_table_with_coarse_anchors_falls_back_to_parity_at_each_tests_precision() {
    // Like the demo's laboratory table: dates released as `*`, three whole-number tests, 30,000 rows.
    // Boundary positions there are nearly all read by unmarked cells too; the fit keeps parity, at each test's
    // own precision: a whole-number value moves by one and stays whole, so rounding to one decimal keeps it.
    let mut rng = StdRng::seed_from_u64(15);
    let codes = ["3B035000002327201", "3D010000001926101", "3F015000002327101"];
    let rows: Vec<Vec<String>> = (0..30_000)
        .map(|_| {
            let code = codes[rng.random_range(0..3)];
            let value = format_scaled(100 * rng.random_range(20..5000i64), 2);
            vec![code.to_owned(), "*".to_owned(), value]
        })
        .collect();
    let original = Sheet::from_rows(&["jlac10", "date", "value"], &rows).unwrap();
    let marked = vec![MarkedColumn {
        column: "value".into(),
        decimals: 2,
        anchors: vec!["date".into(), "jlac10".into()],
        scheme: MarkScheme::Parity,
        precision: Some(CodePrecision::new("jlac10", 5)),
    }];
    let k = key(15);
    let rough = plan(marked, &original, DEFAULT_MAX_CELL_FRACTION);
    assert_eq!(rough.columns[0].scheme, MarkScheme::Boundary);
    let fitted = fit_plan(&k, &rough, &original, DEFAULT_MAX_CELL_FRACTION).unwrap();
    assert_eq!(fitted.columns[0].scheme, MarkScheme::Parity);
    assert!(fitted.positions.as_ref().unwrap().len() > 20);
    let recipients = names("r", 5);
    let mut copy = original.clone();
    assert!(
        embed(&k, &recipients[2], &fitted, &mut copy, DEFAULT_MAX_CELL_FRACTION)
            .unwrap()
            .changed
            > 0
    );
    for (old, new) in original.columns[2].iter().zip(&copy.columns[2]) {
        assert!(new.ends_with(".00"), "{new}");
        let (a, b) = (parse_scaled(old, 0).unwrap().q, parse_scaled(new, 0).unwrap().q);
        assert!((a - b).abs() <= 1, "{old} -> {new}");
    }
    let mut leaked = copy.clone();
    for cell in &mut leaked.columns[2] {
        *cell = format!("{:.1}", cell.parse::<f64>().unwrap());
    }
    let verdict = accuse(&k, &read_marks(&k, &fitted, &leaked), &recipients, DEFAULT_BOUND);
    assert_eq!(verdict.accused, vec![recipients[2].clone()], "{}", verdict.explanation);
}

#[test]
fn per_code_precision_needs_its_code_column() {
    let k = key(14);
    let (original, marked) = mixed_precision_lab_sheet(2_000, 14);
    let plan = plan(marked, &original, DEFAULT_MAX_CELL_FRACTION);
    assert!(plan.readable_in(&original));
    let mut without = original.clone();
    without.drop_column("jlac10");
    assert!(!plan.readable_in(&without));
    assert!(matches!(
        embed(&k, "r", &plan, &mut without.clone(), DEFAULT_MAX_CELL_FRACTION),
        Err(FingerprintError::UnknownAnchor { .. })
    ));
    let marks = read_marks(&k, &plan, &without);
    assert_eq!(marks.missing_columns, vec!["value".to_owned()]);
    // A record from before per-code precision reads as it did.
    let json = r#"{"column":"value","decimals":2,"anchors":["date"]}"#;
    let old: MarkedColumn = serde_json::from_str(json).unwrap();
    assert_eq!(old.precision, None);
    assert_eq!(serde_json::to_string(&old).unwrap(), json);
    // Prefixes are whole characters; codes shorter than the prefix are their own key.
    let p = CodePrecision::new("code", 5);
    assert_eq!(p.key(" 3C015000002327101 "), "3C015");
    assert_eq!(p.key("3C0"), "3C0");
    assert_eq!(p.key("検査コード七字"), "検査コード");
}

// ---- reading and accusing ----

#[test]
fn a_full_copy_names_its_recipient() {
    let k = key(7);
    let recipients = names("r", 5);
    let (original, plan, copies) = copies(20_000, 7, &k, &recipients);
    for (i, copy) in copies.iter().enumerate() {
        let marks = read_marks(&k, &plan, copy);
        assert_eq!(marks.erased_positions, 0);
        assert!(marks.positions.iter().all(|p| p.dissent == 0));
        assert_eq!(marks.cells_read, 20_000);
        let verdict = accuse(&k, &marks, &recipients, DEFAULT_BOUND);
        assert!(verdict.decidable);
        assert_eq!(verdict.accused, vec![recipients[i].clone()], "{}", verdict.explanation);
        assert_eq!(verdict.candidates[0].recipient, recipients[i]);
        assert!((verdict.candidates[0].score - verdict.max_score).abs() < 1e-6);
        assert!(verdict.explanation.starts_with("accused"));
        let json = serde_json::to_string(&verdict).unwrap();
        assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap().accused, verdict.accused);
    }
    // The unmarked table: decidable (many positions) but nobody accused.
    let marks = read_marks(&k, &plan, &original);
    let verdict = accuse(&k, &marks, &recipients, DEFAULT_BOUND);
    assert!(verdict.decidable);
    assert!(verdict.accused.is_empty(), "{}", verdict.explanation);
    assert!(verdict.explanation.starts_with("no one accused"));
    // A different key sees nothing attributable.
    let other = key(8);
    let verdict = accuse(
        &other,
        &read_marks(&other, &plan, &copies[0]),
        &recipients,
        DEFAULT_BOUND,
    );
    assert!(verdict.accused.is_empty());
}

#[test]
fn too_few_marks_is_said_plainly() {
    let k = key(10);
    let recipients = names("r", 20);
    let (original, plan, copies) = copies(20_000, 10, &k, &recipients);
    let tiny = copies[3].subset(&(0..60).collect::<Vec<_>>());
    let marks = read_marks(&k, &plan, &tiny);
    let verdict = accuse(&k, &marks, &recipients, DEFAULT_BOUND);
    assert!(!verdict.decidable);
    assert!(verdict.accused.is_empty());
    assert!(
        verdict.explanation.starts_with("too few marks"),
        "{}",
        verdict.explanation
    );
    assert!(
        verdict
            .explanation
            .contains(&format!("{} positions", marks.positions.len()))
    );
    // decidable ⇔ a perfect match would be accused.
    let terms: Vec<Term> = marks
        .positions
        .iter()
        .map(|p| Term::new(Prf::new(&k).bias(p.position, plan.cutoff), p.bit))
        .collect();
    assert_eq!(
        verdict.decidable,
        ln_perfect(&terms) + (20f64).ln() <= DEFAULT_BOUND.ln()
    );
    // No marked column at all.
    let mut bare = original.clone();
    bare.drop_column("value");
    let marks = read_marks(&k, &plan, &bare);
    assert_eq!(marks.missing_columns, vec!["value".to_string()]);
    let verdict = accuse(&k, &marks, &recipients, DEFAULT_BOUND);
    assert!(!verdict.decidable && verdict.accused.is_empty() && verdict.positions == 0);
    assert!(verdict.explanation.starts_with("too few marks: 0 positions"));
    // No candidates, silly bounds: nobody accused.
    let marks = read_marks(&k, &plan, &copies[0]);
    assert!(accuse(&k, &marks, &[], DEFAULT_BOUND).accused.is_empty());
    for bound in [0.0, -1.0, f64::NAN, 2.0] {
        assert!(accuse(&k, &marks, &recipients, bound).accused.is_empty());
    }
}

#[test]
fn marks_survive_text_and_float_round_trips() {
    let k = key(11);
    let recipients = names("r", 8);
    let (_, plan, copies) = copies(20_000, 12, &k, &recipients);
    let copy = &copies[5];
    let expected = read_marks(&k, &plan, copy);
    // Through a float column: "0.10" becomes "0.1", "25.00" becomes "25", padded with spaces.
    let mut floated = copy.clone();
    let value = floated.index_of("value").unwrap();
    for cell in &mut floated.columns[value] {
        let f: f64 = cell.parse().unwrap();
        *cell = format!(" {f} ");
    }
    assert_ne!(&floated, copy);
    assert_eq!(read_marks(&k, &plan, &floated), expected);
    // Through CSV text into the anonymisation engine's table (columns reordered, pseudonym dropped).
    let mut csv = String::from("date,unit,value,jlac10\n");
    for r in 0..copy.rows() {
        let cell = |name: &str| copy.column(name).unwrap()[r].clone();
        let f: f64 = cell("value").parse().unwrap();
        csv.push_str(&format!(
            "{},{},{:e},{}\n",
            cell("date"),
            cell("unit"),
            f,
            cell("jlac10")
        ));
    }
    let table = tokumei_deid::table::Table::from_csv_reader(csv.as_bytes(), b',').unwrap();
    let marks = read_marks(&k, &plan, &table);
    assert_eq!(marks.positions, expected.positions);
    assert_eq!(
        accuse(&k, &marks, &recipients, DEFAULT_BOUND).accused,
        vec![recipients[5].clone()]
    );
}

#[test]
fn a_view_reads_like_the_file_it_stands_for() {
    let k = key(12);
    let recipients = names("r", 3);
    let (_, plan, copies) = copies(5_000, 13, &k, &recipients);
    let mut rng = StdRng::seed_from_u64(1);
    let rows: Vec<usize> = (0..800).map(|_| rng.random_range(0..5_000)).collect();
    let view = LeakedView::new(copies.iter().collect(), rows, vec![3, 1, 2, 4], &["value"], 99);
    let sheet = view.to_sheet();
    assert_eq!(sheet.header, vec!["value", "jlac10", "date", "unit"]);
    assert_eq!(read_marks(&k, &plan, &view), read_marks(&k, &plan, &sheet));
}

#[test]
fn dropping_anchor_columns_still_traces_a_single_leaker() {
    let k = key(13);
    let recipients = names("r", 20);
    let (_, plan, copies) = copies(20_000, 14, &k, &recipients);
    // (Dropping every column but the values leaves few positions under the boundary scheme — a value-only
    // position is shared by every cell of its 0.1-wide bin, which unmarked cells interfere with — see
    // docs/release.md; such a file has no codes, dates or patients left to use.)
    for (i, dropped) in [vec!["date"], vec!["jlac10"], vec!["date", "unit"]]
        .into_iter()
        .enumerate()
    {
        let mut leaked = copies[i].clone();
        for column in &dropped {
            assert!(leaked.drop_column(column));
        }
        leaked.shuffle(&mut StdRng::seed_from_u64(i as u64));
        let marks = read_marks(&k, &plan, &leaked);
        assert!(marks.skipped_missing_anchor > 0);
        let verdict = accuse(&k, &marks, &recipients, DEFAULT_BOUND);
        assert_eq!(
            verdict.accused,
            vec![recipients[i].clone()],
            "{dropped:?}: {}",
            verdict.explanation
        );
        eprintln!(
            "dropped {dropped:?}: {} positions; {}",
            verdict.positions, verdict.explanation
        );
    }
}

#[test]
fn sheet_helpers_keep_rows_aligned() {
    let sheet = Sheet::from_rows(&["a", "b"], &[vec!["1", "x"], vec!["2", "y"], vec!["3", "z"]]).unwrap();
    assert_eq!(sheet.rows(), 3);
    assert_eq!(sheet.cells(), 6);
    let sub = sheet.subset(&[2, 0, 7]);
    assert_eq!(sub.row(0), vec!["3", "z"]);
    assert_eq!(sub.row(1), vec!["1", "x"]);
    assert_eq!(sub.rows(), 2);
    let mut shuffled = sheet.clone();
    shuffled.shuffle(&mut StdRng::seed_from_u64(3));
    let mut rows: Vec<Vec<&str>> = (0..3).map(|r| shuffled.row(r)).collect();
    rows.sort();
    assert_eq!(rows, vec![vec!["1", "x"], vec!["2", "y"], vec!["3", "z"]]);
    let mut cols = sheet.clone();
    cols.select_columns(&["b", "a", "c"]);
    assert_eq!(cols.header, vec!["b", "a"]);
    assert_eq!(cols.row(1), vec!["y", "2"]);
    assert!(cols.drop_column("b") && !cols.drop_column("b"));
    assert!(Sheet::from_rows(&["a"], &[vec!["1", "2"]]).is_err());
    assert_eq!(synthetic_lab_sheet(50, 1), synthetic_lab_sheet(50, 1));
    let (lab, _) = synthetic_lab_sheet(2000, 2);
    assert!(
        lab.column("date")
            .unwrap()
            .iter()
            .all(|d| d.len() == 10 && ("2021".."2024").contains(&&d[..4]))
    );
    assert!(
        lab.column("value")
            .unwrap()
            .iter()
            .all(|v| parse_scaled(v, 2).is_some_and(|s| s.on_grid))
    );
}

// ---- experiments (reduced size) ----

#[test]
fn experiment_single_leaker_from_a_tenth_of_the_rows() {
    let e = Experiment::new(20_000, 1000, 21);
    let outcome = single_leaker(&e).unwrap();
    eprintln!("single leaker: {outcome:?}");
    assert!(outcome.verified > 0 && outcome.mismatches == 0, "{outcome:?}");
    assert!(outcome.identified >= 999, "{outcome:?}");
    assert_eq!(outcome.innocent_accused, 0, "{outcome:?}");
    assert!(outcome.marked_cells * 100 <= outcome.total_cells);
}

#[test]
fn experiment_innocents_are_never_accused() {
    let e = Experiment::new(20_000, 10_000, 22);
    let outcome = innocents(&e).unwrap();
    eprintln!("innocents: {outcome:?}");
    assert!(outcome.verified > 0 && outcome.mismatches == 0, "{outcome:?}");
    assert_eq!(outcome.innocent_accused, 0, "{outcome:?}");
    assert_eq!(outcome.identified, 0);
}

#[test]
fn experiment_three_colluders_mixing_cells() {
    let mut e = Experiment::new(30_000, 200, 23);
    e.subset_fraction = 1.0;
    let outcome = collusion(&e, 3).unwrap();
    eprintln!("3 colluders: {outcome:?}");
    assert!(outcome.verified > 0 && outcome.mismatches == 0, "{outcome:?}");
    assert_eq!(outcome.innocent_accused, 0, "{outcome:?}");
    assert!(outcome.identified * 100 >= 95 * outcome.trials, "{outcome:?}");
}

#[test]
#[ignore = "throughput measurement: cargo test -p tokumei-release --lib fingerprint::tests::throughput -- --ignored --nocapture"]
fn throughput() {
    let (original, marked) = synthetic_lab_sheet(1_000_000, 1);
    let k = key(1);
    let started = std::time::Instant::now();
    let plan = plan(marked, &original, 0.01);
    eprintln!("plan: {:?}", started.elapsed());
    for _ in 0..3 {
        let mut copy = original.clone();
        let started = std::time::Instant::now();
        let report = embed(&k, "r", &plan, &mut copy, 0.01).unwrap();
        let t = started.elapsed();
        eprintln!(
            "embed 1M rows: {t:?} ({:.2} M rows/s) {report:?}",
            1.0 / t.as_secs_f64()
        );
        let started = std::time::Instant::now();
        let marks = read_marks(&k, &plan, &copy);
        eprintln!(
            "read 1M rows: {:?}, {} positions",
            started.elapsed(),
            marks.positions.len()
        );
        let started = std::time::Instant::now();
        let verdict = accuse(&k, &marks, &names("r", 100), 1e-6);
        eprintln!(
            "accuse 100 candidates: {:?}; {}",
            started.elapsed(),
            verdict.explanation
        );
    }
}

#[test]
#[ignore = "parameter sweep: SWEEP_ROWS=20000 SWEEP_SUBSET=1.0 cargo test -p tokumei-release --lib fingerprint::tests::sweep -- --ignored --nocapture"]
fn sweep() {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let rows = var("SWEEP_ROWS").map_or(20_000, |v| v as usize);
    let subset = var("SWEEP_SUBSET").unwrap_or(1.0);
    let cutoffs = var("SWEEP_CUTOFF").map_or(vec![DEFAULT_CUTOFF, 0.01, 0.03, 0.05, 0.1], |c| vec![c]);
    for cutoff in cutoffs {
        let mut e = Experiment::new(rows, 1000, 21);
        e.cutoff = cutoff;
        let t = std::time::Instant::now();
        let single = single_leaker(&e).unwrap();
        eprintln!("rows {rows} cutoff {cutoff:.4}: single {single:?} in {:?}", t.elapsed());
        e.trials = 200;
        e.subset_fraction = subset;
        let t = std::time::Instant::now();
        let coll = collusion(&e, 3).unwrap();
        eprintln!(
            "rows {rows} cutoff {cutoff:.4} subset {subset}: 3 colluders {coll:?} in {:?}",
            t.elapsed()
        );
    }
}

#[test]
#[ignore = "measurement: cargo test --workspace --lib fingerprint::tests::scheme_positions -- --ignored --nocapture"]
fn scheme_positions() {
    for rows in [20_000usize, 50_000, 100_000, 200_000, 400_000, 800_000] {
        let (sheet, marked) = mixed_precision_lab_sheet(rows, 7);
        let rough = plan(marked, &sheet, DEFAULT_MAX_CELL_FRACTION);
        let k = key(7);
        let b = super::embed::fit_schemes(&k, &rough, &sheet, DEFAULT_MAX_CELL_FRACTION).unwrap();
        let mut p = rough.clone();
        p.columns[0].scheme = MarkScheme::Parity;
        let p = super::embed::fit_schemes(&k, &p, &sheet, DEFAULT_MAX_CELL_FRACTION).unwrap();
        let n = |x: &FingerprintPlan| x.positions.as_ref().map_or(0, |s| s.len());
        eprintln!("rows {rows}: boundary {} parity {}", n(&b), n(&p));
    }
}
