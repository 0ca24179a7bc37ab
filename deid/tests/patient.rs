//! Patient-level counting: several rows per subject; classes count distinct subjects and all rows
//! of a subject are suppressed together.

mod common;

use tokumei_deid::dataset::{Dataset, QiInput, SensitiveInput};
use tokumei_deid::exhaustive::exhaustive;
use tokumei_deid::metric::Metric;
use tokumei_deid::model::{LDiversity, LVariant, PrivacyModel};
use tokumei_deid::search::search;
use tokumei_deid::table::Table;

fn visits() -> Table {
    // patient, age, sex, diagnosis: patients p1..p12, 1-4 visits each.
    let mut rows = Vec::new();
    let data = [
        ("p1", "31", "M", &["E11", "E11", "I10"][..]),
        ("p2", "33", "M", &["E11"]),
        ("p3", "34", "M", &["J45", "J45"]),
        ("p4", "36", "F", &["I10", "E11", "K21", "K21"]),
        ("p5", "38", "F", &["J45"]),
        ("p6", "41", "F", &["I10", "I10"]),
        ("p7", "43", "M", &["K21"]),
        ("p8", "47", "M", &["E11", "J45"]),
        ("p9", "52", "F", &["I10"]),
        ("p10", "55", "F", &["K21", "E11", "E11"]),
        ("p11", "58", "M", &["J45"]),
        ("p12", "61", "M", &["I10", "I10", "I10", "I10"]),
    ];
    for (p, age, sex, dx) in data {
        for d in dx {
            rows.push(vec![p.to_string(), age.to_string(), sex.to_string(), d.to_string()]);
        }
    }
    Table::from_rows(&["patient".to_string(), "age".into(), "sex".into(), "dx".into()], &rows).unwrap()
}

fn dataset(table: &Table, subject: bool) -> Dataset {
    let mut age = String::new();
    for a in 30..70 {
        age.push_str(&format!(
            "{a};{}-{};{}-{};*\n",
            a / 5 * 5,
            a / 5 * 5 + 4,
            a / 10 * 10,
            a / 10 * 10 + 9
        ));
    }
    let qis = vec![
        QiInput::from_arx_text("age", &age, b';').unwrap(),
        QiInput::from_arx_text("sex", "M;*\nF;*\n", b';').unwrap(),
    ];
    let sens = vec![SensitiveInput {
        name: "dx".into(),
        hierarchy: None,
    }];
    Dataset::encode(table, qis, sens, subject.then_some("patient")).unwrap()
}

#[test]
fn classes_count_distinct_subjects() {
    let table = visits();
    let with = dataset(&table, true);
    let without = dataset(&table, false);
    assert_eq!(with.n_subjects, 12);
    let model = PrivacyModel {
        k: 3,
        suppression_limit: 0.0,
        ..Default::default()
    };
    let a = search(&with, &model, Metric::Loss).unwrap();
    let b = search(&without, &model, Metric::Loss).unwrap();
    // Counting rows makes small classes look bigger, so row counting generalises less.
    assert!(a.metric.value >= b.metric.value, "{:?} vs {:?}", a.levels, b.levels);
    common::apply_and_verify(
        &table,
        &with,
        &model,
        Metric::Loss,
        &a.levels,
        vec![("dx".into(), None)],
        Some("patient"),
    );
}

#[test]
fn patient_level_search_matches_exhaustive_and_verifies() {
    let table = visits();
    let ds = dataset(&table, true);
    let mut configs = Vec::new();
    for k in [2, 3, 4] {
        for suppression_limit in [0.0, 0.2, 0.4] {
            for metric in [
                Metric::Loss,
                Metric::Discernibility,
                Metric::Precision,
                Metric::Entropy,
                Metric::Aecs,
            ] {
                configs.push((
                    PrivacyModel {
                        k,
                        suppression_limit,
                        ..Default::default()
                    },
                    metric,
                ));
            }
            configs.push((
                PrivacyModel {
                    k,
                    suppression_limit,
                    l_diversity: Some(LDiversity {
                        l: 2,
                        variant: LVariant::Distinct,
                    }),
                    ..Default::default()
                },
                Metric::Loss,
            ));
            configs.push((
                PrivacyModel {
                    k,
                    suppression_limit,
                    l_diversity: Some(LDiversity {
                        l: 2,
                        variant: LVariant::Entropy,
                    }),
                    ..Default::default()
                },
                Metric::Loss,
            ));
        }
    }
    let reference = exhaustive(&ds, &configs).unwrap();
    let mut solved = 0;
    for ((model, metric), ex) in configs.iter().zip(reference) {
        match (search(&ds, model, *metric), ex.best) {
            (Ok(found), Some((levels, value))) => {
                assert_eq!(found.levels, levels, "{} {:?}", model.describe(), metric);
                assert_eq!(found.metric, value);
                let report = common::apply_and_verify(
                    &table,
                    &ds,
                    model,
                    *metric,
                    &found.levels,
                    vec![("dx".into(), None)],
                    Some("patient"),
                );
                assert!(report.min_class_size >= model.k as u64 || report.classes == 0);
                solved += 1;
            }
            (Err(tokumei_deid::Error::NoSolution(_)), None) => {}
            (got, want) => panic!("{got:?} vs {want:?}"),
        }
    }
    assert!(solved > 10);
}

#[test]
fn suppressing_a_subject_removes_all_its_rows() {
    let table = visits();
    let ds = dataset(&table, true);
    // k=2 at full detail with plenty of suppression allowed: unique patients are suppressed whole.
    let model = PrivacyModel {
        k: 2,
        suppression_limit: 1.0,
        ..Default::default()
    };
    let a = tokumei_deid::transform::apply(&ds, &model, Metric::Loss, &[0, 0]).unwrap();
    let patients = table.column("patient").unwrap();
    for row in 0..table.rows() {
        for other in 0..table.rows() {
            if patients.value(row) == patients.value(other) {
                assert_eq!(a.row_suppressed[row], a.row_suppressed[other]);
            }
        }
    }
    assert_eq!(a.suppressed as usize, table.rows(), "every patient has a unique age");
}

/// With patient-level counting the job's one engine hands back the same optimum, applied table
/// and untransformed classes (distinct subjects per class) as the separate calls.
#[test]
fn one_engine_gives_what_the_separate_calls_give() {
    use tokumei_deid::search::search_and_apply;
    use tokumei_deid::transform::{apply, original_class_sizes};
    let table = visits();
    let ds = dataset(&table, true);
    for suppression_limit in [0.0, 0.3] {
        let model = PrivacyModel {
            k: 2,
            suppression_limit,
            ..Default::default()
        };
        let one = search_and_apply(&ds, &model, Metric::Loss).unwrap();
        let found = search(&ds, &model, Metric::Loss).unwrap();
        let applied = apply(&ds, &model, Metric::Loss, &found.levels).unwrap();
        assert_eq!(one.found.levels, found.levels);
        assert_eq!(one.applied.row_suppressed, applied.row_suppressed);
        assert_eq!(one.applied.class_sizes, applied.class_sizes);
        let original = original_class_sizes(&ds).unwrap();
        assert_eq!(one.original_class_sizes, original);
        // Twelve patients of distinct (age, sex): twelve classes of one subject each.
        assert_eq!(original.len(), 12);
        assert!(original.iter().all(|&(subjects, _)| subjects == 1));
    }
}
