//! The anonymisation engine over a DataFusion table (`tokumei_deid::datafusion`) must give exactly
//! the result of the CSV path on the same rows — same transformation, metric, suppression, risk and
//! output rows — and its output must pass the independent verifier.
//!
//! Adult is registered with DataFusion's own CSV reader (schema inferred, so `age` arrives as an
//! Int64 column and exercises the adapter's value rendering), not through the deid reader.

mod common;

use common::{ADULT_DIR, ADULT_QIS};

use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{CsvReadOptions, SessionContext, col, lit};
use tokumei_deid::Error;
use tokumei_deid::datafusion::{table_from_context, table_from_dataframe};
use tokumei_deid::dataset::{Dataset, QiInput};
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::job::{self, JobConfig, JobOutput};
use tokumei_deid::metric::Metric;
use tokumei_deid::model::PrivacyModel;
use tokumei_deid::table::Table;
use tokumei_deid::transform::write_csv;
use tokumei_deid::verify::{VerifyConfig, verify_table};

/// All columns of adult.csv in file order: the 8 QIs and the insensitive salary class.
const COLUMNS: [&str; 9] = [
    "sex",
    "age",
    "race",
    "marital-status",
    "education",
    "native-country",
    "workclass",
    "occupation",
    "salary-class",
];

fn adult_csv() -> PathBuf {
    Path::new(ADULT_DIR).join("adult.csv")
}

fn qis() -> Vec<QiInput> {
    ADULT_QIS
        .iter()
        .map(|n| QiInput {
            name: n.to_string(),
            hierarchy: Hierarchy::read_arx_csv(&Path::new(ADULT_DIR).join(format!("adult_hierarchy_{n}.csv")), b';')
                .expect("hierarchy"),
        })
        .collect()
}

fn config() -> JobConfig {
    JobConfig {
        model: PrivacyModel {
            k: 5,
            suppression_limit: 0.05,
            ..Default::default()
        },
        metric: Metric::Loss,
        ..Default::default()
    }
}

async fn adult_context() -> SessionContext {
    let ctx = SessionContext::new();
    ctx.register_csv(
        "adult",
        adult_csv().to_str().expect("utf-8 path"),
        CsvReadOptions::new().delimiter(b';').has_header(true),
    )
    .await
    .expect("register adult.csv");
    ctx
}

struct Run {
    out: JobOutput,
    /// Output CSV lines (header first, then the data lines sorted: DataFusion gives no row order).
    lines: Vec<String>,
}

fn anonymise(table: &Table) -> Run {
    let ds = Dataset::encode(table, qis(), vec![], None).expect("encode");
    let mut out = job::run(&ds, &config()).expect("job");
    out.report.elapsed_ms = 0;
    let mut buf = Vec::new();
    write_csv(table, &ds, &out.anonymized, &mut buf, b',').expect("write");
    let text = String::from_utf8(buf).expect("utf-8 output");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[1..].sort_unstable();

    // The independent verifier re-reads the written output and recounts everything.
    let written = Table::from_csv_reader(text.as_bytes(), b',').expect("read back");
    let cfg = config();
    let report = verify_table(
        &written,
        &VerifyConfig {
            qis: ADULT_QIS.iter().map(|s| s.to_string()).collect(),
            k: cfg.model.k,
            l_diversity: None,
            t_closeness: None,
            sensitive: vec![],
            subject: None,
            suppression_limit: Some(cfg.model.suppression_limit),
            average_risk: None,
        },
    )
    .expect("verify");
    assert!(report.ok, "verifier found violations: {:?}", report.violations);
    assert_eq!(report.records, table.rows() as u64);
    Run { out, lines }
}

fn assert_same(csv: &Run, df: &Run) {
    assert_eq!(
        df.out.report, csv.out.report,
        "reports differ (transformation, metric, risk, ...)"
    );
    assert_eq!(df.out.anonymized.levels, csv.out.anonymized.levels);
    assert_eq!(df.out.anonymized.suppressed, csv.out.anonymized.suppressed);
    assert_eq!(
        df.out.anonymized.metric.value.to_bits(),
        csv.out.anonymized.metric.value.to_bits()
    );
    assert_eq!(df.lines.len(), csv.lines.len());
    assert!(df.lines == csv.lines, "anonymised output rows differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adult_through_datafusion_equals_csv_path() {
    let ctx = adult_context().await;
    // DataFusion inferred a numeric age: the adapter must render it exactly as the CSV text.
    let schema = ctx.table("adult").await.expect("table").schema().as_arrow().clone();
    assert_eq!(
        schema.field_with_name("age").expect("age").data_type(),
        &DataType::Int64
    );

    let df_table = table_from_context(&ctx, "adult", &COLUMNS)
        .await
        .expect("table from context");
    let csv_table = Table::read_csv(&adult_csv(), b';').expect("adult.csv");
    assert_eq!(df_table.names(), csv_table.names());
    assert_eq!(df_table.rows(), csv_table.rows());

    let csv = anonymise(&csv_table);
    let df = anonymise(&df_table);
    assert_same(&csv, &df);
    // The job is not trivial: k=5 on 8 QIs needs both generalisation and some suppression.
    assert!(csv.out.report.transformation.values().any(|&l| l > 0));
    assert!(csv.out.report.suppressed > 0);
    assert!(csv.out.report.suppressed as f64 <= 0.05 * csv_table.rows() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_reads_only_the_named_columns() {
    let ctx = adult_context().await;
    let t = table_from_context(&ctx, "adult", &["age", "sex"])
        .await
        .expect("projection");
    assert_eq!(t.names(), vec!["age", "sex"]);
    assert!(t.column("salary-class").is_err());
    let err = table_from_context(&ctx, "adult", &["age", "diagnosis"])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownColumn(ref c) if c == "diagnosis"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohort_filtered_in_datafusion_equals_filtered_csv() {
    let ctx = adult_context().await;
    let df = ctx
        .table("adult")
        .await
        .expect("table")
        .filter(col("sex").eq(lit("Female")).and(col("age").gt_eq(lit(40i64))))
        .expect("filter")
        .select_columns(&COLUMNS)
        .expect("projection");
    let df_table = table_from_dataframe(df).await.expect("table from dataframe");

    // Reference: the same cohort selected in Rust from the CSV path's table.
    let all = Table::read_csv(&adult_csv(), b';').expect("adult.csv");
    let (sex, age) = (all.column("sex").expect("sex"), all.column("age").expect("age"));
    let rows: Vec<Vec<&str>> = (0..all.rows())
        .filter(|&r| sex.value(r) == "Female" && age.value(r).parse::<i64>().expect("numeric age") >= 40)
        .map(|r| all.columns().iter().map(|c| c.value(r)).collect())
        .collect();
    let names = all.names();
    let csv_table = Table::from_rows(&names, &rows).expect("cohort table");
    assert!(
        csv_table.rows() > 1000 && csv_table.rows() < all.rows() / 2,
        "{}",
        csv_table.rows()
    );
    assert_eq!(df_table.rows(), csv_table.rows());

    let csv = anonymise(&csv_table);
    let df = anonymise(&df_table);
    assert_same(&csv, &df);
    assert_eq!(csv.out.report.records, csv_table.rows() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_cohort_is_refused_by_the_engine() {
    let ctx = adult_context().await;
    let df = ctx
        .table("adult")
        .await
        .expect("table")
        .filter(col("age").lt(lit(0i64)))
        .expect("filter")
        .select_columns(&COLUMNS)
        .expect("projection");
    let t = table_from_dataframe(df).await.expect("empty table");
    assert_eq!(t.rows(), 0);
    assert_eq!(t.names(), COLUMNS.to_vec());
    let err = Dataset::encode(&t, qis(), vec![], None).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
}
