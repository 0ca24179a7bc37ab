//! End-to-end job: report fields, JSON shape, output writing, no-solution diagnosis, and
//! Arrow/Parquet input.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use tokumei_deid::Error;
use tokumei_deid::dataset::{Dataset, QiInput};
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::job::{JobConfig, run};
use tokumei_deid::metric::Metric;
use tokumei_deid::model::{LDiversity, LVariant, PrivacyModel};
use tokumei_deid::table::Table;
use tokumei_deid::transform::write_csv_file;
use tokumei_deid::verify::{VerifyConfig, verify_csv};

#[test]
fn adult_job_report_and_output_verify() {
    let (table, ds) = common::adult_dataset(false);
    let cfg = JobConfig {
        model: PrivacyModel {
            k: 5,
            suppression_limit: 0.05,
            ..Default::default()
        },
        metric: Metric::Loss,
        ..Default::default()
    };
    let out = run(&ds, &cfg).unwrap();
    let json: serde_json::Value = serde_json::from_str(&out.report.to_json()).unwrap();
    for key in [
        "transformation",
        "metric",
        "suppressed",
        "classes",
        "min_class_size",
        "nodes_checked",
        "lattice_size",
        "elapsed_ms",
        "risk",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["lattice_size"], 6480);
    assert_eq!(json["metric"]["name"], "loss");
    assert!(json["transformation"]["age"].is_u64());
    assert!(out.report.min_class_size >= 5);
    assert!(out.report.risk.after.prosecutor_max <= 0.2 + 1e-12);
    assert!(out.report.risk.before.prosecutor_max == 1.0);
    assert!(out.report.risk.after.sample_uniques == 0);
    assert!(out.report.human_summary().contains("prosecutor max"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    write_csv_file(&table, &ds, &out.anonymized, &path, b';').unwrap();
    let cfg = VerifyConfig {
        qis: common::ADULT_QIS.iter().map(|s| s.to_string()).collect(),
        k: 5,
        suppression_limit: Some(0.05),
        ..Default::default()
    };
    let v = verify_csv(&path, None, &cfg).unwrap();
    assert!(v.ok, "{:?}", v.violations);
    assert_eq!(v.suppressed, out.report.suppressed);
    assert_eq!(v.classes, out.report.classes);
    // The verifier catches a stricter k.
    let strict = VerifyConfig { k: 1000, ..cfg };
    assert!(!verify_csv(&path, None, &strict).unwrap().ok);
}

#[test]
fn no_solution_names_the_constraint_and_smallest_suppression() {
    let (_, ds) = common::adult_dataset(false);
    let cfg = JobConfig {
        model: PrivacyModel {
            k: 40000,
            suppression_limit: 0.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let Err(Error::NoSolution(ns)) = run(&ds, &cfg) else {
        panic!("k > n must fail")
    };
    assert!(ns.smallest_working_suppression.is_none());
    assert!(ns.to_string().contains("k-anonymity (k=40000)"));
}

#[test]
fn no_solution_reports_smallest_working_suppression() {
    // A single-level hierarchy (no generalisation possible): class z has one record and one
    // sensitive value, so k=2 with distinct 2-diversity needs exactly that record suppressed.
    let table = Table::from_rows(
        &["a", "s"],
        &[
            vec!["x", "1"],
            vec!["x", "2"],
            vec!["y", "1"],
            vec!["y", "1"],
            vec!["y", "2"],
            vec!["z", "3"],
        ],
    )
    .unwrap();
    let h = Hierarchy::parse_arx_csv("a", "x\ny\nz\n", b';').unwrap();
    let small = Dataset::encode(
        &table,
        vec![QiInput {
            name: "a".into(),
            hierarchy: h,
        }],
        vec![tokumei_deid::dataset::SensitiveInput {
            name: "s".into(),
            hierarchy: None,
        }],
        None,
    )
    .unwrap();
    let model = PrivacyModel {
        k: 2,
        l_diversity: Some(LDiversity {
            l: 2,
            variant: LVariant::Distinct,
        }),
        ..Default::default()
    };
    let Err(Error::NoSolution(ns)) = tokumei_deid::search::search(&small, &model, Metric::Loss) else {
        panic!()
    };
    assert_eq!(ns.smallest_working_suppression, Some(1.0 / 6.0));
    assert!(ns.to_string().contains("1 records"), "{ns}");
}

#[test]
fn arrow_and_parquet_input_match_csv() {
    let ages: ArrayRef = Arc::new(Int64Array::from(vec![Some(31), Some(33), None, Some(47)]));
    let sex: ArrayRef = Arc::new(StringArray::from(vec!["M", "F", "M", "F"]));
    let batch = RecordBatch::try_from_iter(vec![("age", ages), ("sex", sex)]).unwrap();
    let table = Table::from_record_batches(std::slice::from_ref(&batch)).unwrap();
    assert_eq!(table.rows(), 4);
    assert_eq!(table.column("age").unwrap().value(0), "31");
    assert_eq!(table.column("age").unwrap().value(2), "");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let back = Table::read_parquet(&path).unwrap();
    assert_eq!(back.names(), vec!["age", "sex"]);
    for row in 0..4 {
        assert_eq!(
            back.column("age").unwrap().value(row),
            table.column("age").unwrap().value(row)
        );
        assert_eq!(
            back.column("sex").unwrap().value(row),
            table.column("sex").unwrap().value(row)
        );
    }
}

/// A job builds one engine for the search, the apply and the untransformed classes; what it gets
/// must be exactly what the three separate calls give (row-level counting, with and without a
/// sensitive attribute, with and without suppression).
#[test]
fn one_engine_gives_what_search_apply_and_original_classes_give() {
    use tokumei_deid::search::{search, search_and_apply};
    use tokumei_deid::transform::{apply, original_class_sizes};
    for sensitive in [false, true] {
        let (_, ds) = common::adult_dataset(sensitive);
        for suppression_limit in [0.0, 0.05] {
            let model = PrivacyModel {
                k: 5,
                suppression_limit,
                l_diversity: sensitive.then_some(LDiversity {
                    l: 2,
                    variant: LVariant::Distinct,
                }),
                ..Default::default()
            };
            let one = search_and_apply(&ds, &model, Metric::Loss).unwrap();
            let found = search(&ds, &model, Metric::Loss).unwrap();
            let applied = apply(&ds, &model, Metric::Loss, &found.levels).unwrap();
            assert_eq!(one.found.levels, found.levels);
            assert_eq!(one.found.metric.value.to_bits(), found.metric.value.to_bits());
            assert_eq!(one.found.nodes_checked, found.nodes_checked);
            assert_eq!(one.applied.row_suppressed, applied.row_suppressed);
            assert_eq!(one.applied.class_sizes, applied.class_sizes);
            assert_eq!(one.applied.suppressed, applied.suppressed);
            assert_eq!(one.original_class_sizes, original_class_sizes(&ds).unwrap());
            assert_eq!(one.original_class_sizes.len(), 18_109);
        }
    }
}

/// The output is formatted in parallel blocks of rows; the bytes must be those of one writer, across
/// block boundaries, with suppressed rows and values that need quoting.
#[test]
fn output_in_parallel_blocks_equals_one_writer() {
    use tokumei_deid::transform::{apply, write_csv};
    let rows: Vec<Vec<String>> = (0..150_000usize)
        .map(|i| {
            vec![
                format!("{}", 20 + (i / 10) % 50),
                if i % 10 == 0 { "M" } else { "F" }.to_string(),
                match i % 1000 {
                    0 => "a \"quoted\"; note".to_string(),
                    1 => "two\nlines".to_string(),
                    2 => "carriage\rreturn".to_string(),
                    3 => String::new(),
                    4 => "comma, not special".to_string(),
                    _ => format!("n{}", i % 13),
                },
            ]
        })
        .collect();
    let header = ["age", "sex", "note"].map(String::from);
    let table = Table::from_rows(&header, &rows).unwrap();
    let age: String = (20..70)
        .map(|a| format!("{a};{}-{};*\n", a / 10 * 10, a / 10 * 10 + 9))
        .collect();
    let qis = vec![
        QiInput::from_arx_text("age", &age, b';').unwrap(),
        QiInput::from_arx_text("sex", "M;*\nF;*\n", b';').unwrap(),
    ];
    let ds = Dataset::encode(&table, qis, vec![], None).unwrap();
    let model = PrivacyModel {
        k: 2_000,
        suppression_limit: 0.5,
        ..Default::default()
    };
    // Ages at full detail with k = 2,000: the men's classes (300 each) are suppressed, the women's kept.
    let a = apply(&ds, &model, Metric::Loss, &[0, 0]).unwrap();
    assert_eq!(a.suppressed, 15_000);
    let mut ours = Vec::new();
    write_csv(&table, &ds, &a, &mut ours, b';').unwrap();
    let mut one = csv::WriterBuilder::new().delimiter(b';').from_writer(Vec::new());
    one.write_record(table.names()).unwrap();
    for row in 0..table.rows() {
        let rec: Vec<&str> = table
            .columns()
            .iter()
            .map(|c| {
                if c.name() != "note" && a.row_suppressed[row] {
                    "*"
                } else {
                    c.value(row)
                }
            })
            .collect();
        one.write_record(&rec).unwrap();
    }
    assert_eq!(ours, one.into_inner().unwrap());
}
