//! `tokumei bench analysis`: the remote analysis environment's own computations at the sizes issue 19 sets — a
//! logistic and a linear regression on 1 M rows × 10 covariates, and the automatic output checks of a 1,000-cell
//! table against a workspace history of earlier tables (differencing included).
//!
//! It also times a grouped query of a workspace's SQL over 10 M rows (patients by prefecture and sex, with a mean
//! and a distinct-patient count), through the same engine and limits as a workspace's.
//!
//! The rows are synthetic: covariates drawn uniformly, a binary outcome drawn from a known logistic model (the fit's
//! coefficients are reported beside the true ones, so a wrong fit shows), each row belonging to one of the patients.
//! The history's tables partition the same patients differently, so every new cell overlaps many earlier ones.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokumei_analysis::analyses::{Column, Frame, regression};
use tokumei_analysis::output_check::{self, Cell, History, Output, PatientId, Patients, Rules, Statistic, Table};

use crate::host::{machine, peak_rss_mib};
use tokumei_client::output::emit;

/// Arguments of `tokumei bench analysis`.
#[derive(Args, Debug)]
pub struct AnalysisBench {
    /// Rows of the regressions.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Covariates (besides the intercept).
    #[arg(long, default_value_t = 10)]
    pub covariates: usize,
    /// Patients the rows and the tables are about.
    #[arg(long, default_value_t = 100_000)]
    pub patients: u32,
    /// Cells of the checked table.
    #[arg(long, default_value_t = 1_000)]
    pub cells: usize,
    /// Earlier tables in the workspace's history (each of `cells` cells).
    #[arg(long, default_value_t = 50)]
    pub history: usize,
    /// Runs of each timed step (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seed.
    #[arg(long, default_value_t = 19)]
    pub seed: u64,
    /// Rows of the grouped query's table (0: skip it).
    #[arg(long, default_value_t = 10_000_000)]
    pub query_rows: usize,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    rows: usize,
    covariates: usize,
    patients: u32,
    seconds_logistic: f64,
    logistic_iterations: usize,
    /// Largest |estimate − true coefficient| of the logistic fit.
    logistic_largest_error: f64,
    seconds_linear: f64,
    cells: usize,
    history_tables: usize,
    history_sets: usize,
    milliseconds_checks: f64,
    check_verdict: String,
    check_findings: usize,
    query_rows: usize,
    /// `SELECT prefecture, sex, count(*), avg(value) ... GROUP BY prefecture, sex`.
    seconds_grouped_query: f64,
    /// The same with `count(DISTINCT patient)`.
    seconds_grouped_distinct_patients: f64,
    peak_rss_mib: f64,
}

/// A workspace table of `rows` rows: a 32-hex patient pseudonym (`rows / 10` patients), prefecture, sex, value.
fn query_table(
    rows: usize,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<tokumei_analysis::sql::arrow::record_batch::RecordBatch>> {
    use std::sync::Arc;
    use tokumei_analysis::sql::arrow::array::{ArrayRef, Float64Array, StringArray};
    use tokumei_analysis::sql::arrow::datatypes::{DataType, Field, Schema};
    use tokumei_analysis::sql::arrow::record_batch::RecordBatch;
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient", DataType::Utf8, false),
        Field::new("prefecture", DataType::Utf8, false),
        Field::new("sex", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]));
    let prefectures: Vec<String> = (1..=47).map(|p| format!("{p:02}")).collect();
    let patients = (rows / 10).max(1);
    let mut batches = Vec::new();
    let chunk = 1 << 20;
    for start in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - start);
        let ids: Vec<usize> = (0..n).map(|_| rng.random_range(0..patients)).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(ids.iter().map(|p| format!("{p:032x}")))),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|p| prefectures[p % 47].as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|p| if p % 2 == 0 { "F" } else { "M" }),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|_| rng.random_range(4.0..12.0)),
            )),
        ];
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(batches)
}

/// The median seconds of the two grouped queries over `rows` rows, through a workspace's SQL engine and limits.
fn grouped_queries(a: &AnalysisBench, rng: &mut rand::rngs::StdRng) -> Result<(f64, f64)> {
    use tokumei_analysis::sql::{Limits, WorkspaceSql};
    if a.query_rows == 0 {
        return Ok((f64::NAN, f64::NAN));
    }
    let batches = query_table(a.query_rows, rng)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let sql = WorkspaceSql::new(Limits::default())?;
        sql.register("observations", batches)?;
        let mut times = (Vec::new(), Vec::new());
        for _ in 0..a.runs.max(1) {
            let started = Instant::now();
            let rows = sql
                .query("SELECT prefecture, sex, count(*) AS n, avg(value) AS mean FROM observations GROUP BY prefecture, sex")
                .await?;
            times.0.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(rows.iter().map(|b| b.num_rows()).sum::<usize>() == 94, "94 groups expected");
            let started = Instant::now();
            sql.query(
                "SELECT prefecture, sex, count(DISTINCT patient) AS patients FROM observations GROUP BY prefecture, sex",
            )
            .await?;
            times.1.push(started.elapsed().as_secs_f64());
        }
        Ok((median(times.0), median(times.1)))
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Rows with `covariates` uniform covariates and a 0/1 outcome from the logistic model `truth`.
fn frame(a: &AnalysisBench, truth: &[f64], rng: &mut rand::rngs::StdRng) -> Result<Frame> {
    let mut xs = vec![Vec::with_capacity(a.rows); a.covariates];
    let mut y = Vec::with_capacity(a.rows);
    let mut y_linear = Vec::with_capacity(a.rows);
    let mut patients = Vec::with_capacity(a.rows);
    for i in 0..a.rows {
        let mut eta = truth[0];
        let mut linear = truth[0];
        for (j, column) in xs.iter_mut().enumerate() {
            let x: f64 = rng.random_range(-1.0..1.0);
            eta += truth[j + 1] * x;
            linear += truth[j + 1] * x;
            column.push(Some(x));
        }
        let p = 1.0 / (1.0 + (-eta).exp());
        y.push(Some(if rng.random::<f64>() < p { 1.0 } else { 0.0 }));
        y_linear.push(Some(linear + rng.random_range(-1.0..1.0)));
        patients.push(PatientId(u32::try_from(i).unwrap_or(u32::MAX) % a.patients.max(1)));
    }
    let mut frame = Frame::new(patients)
        .with("y", Column::Numeric(y))?
        .with("y_linear", Column::Numeric(y_linear))?;
    for (j, column) in xs.into_iter().enumerate() {
        frame = frame.with(&format!("x{j}"), Column::Numeric(column))?;
    }
    Ok(frame)
}

/// A table of `cells` sum cells partitioning the patients at random, with one contribution per patient.
fn table(a: &AnalysisBench, rng: &mut rand::rngs::StdRng) -> Output {
    let cells = a.cells.max(1);
    let mut members = vec![Vec::new(); cells];
    for p in 0..a.patients {
        members[rng.random_range(0..cells)].push(PatientId(p));
    }
    Output::Table(Table {
        cells: members
            .into_iter()
            .map(|ids| Cell {
                statistic: Statistic::Sum,
                contributions: ids.iter().map(|_| rng.random_range(0.0..100.0)).collect(),
                patients: Patients::new(ids),
            })
            .collect(),
    })
}

/// Runs the benchmark and prints its report.
pub fn run(a: AnalysisBench, json: bool) -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let truth: Vec<f64> = (0..=a.covariates).map(|j| 0.5 - 0.1 * j as f64).collect();
    let frame = frame(&a, &truth, &mut rng)?;
    let names: Vec<String> = (0..a.covariates).map(|j| format!("x{j}")).collect();
    let covariates: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut logistic_times, mut linear_times) = (Vec::new(), Vec::new());
    let mut fit = None;
    for _ in 0..a.runs.max(1) {
        let started = Instant::now();
        fit = Some(regression::logistic(&frame, "y", &covariates)?);
        logistic_times.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        regression::linear(&frame, "y_linear", &covariates)?;
        linear_times.push(started.elapsed().as_secs_f64());
    }
    let fit = fit.map(|f| f.result);
    let largest_error = fit.as_ref().map_or(f64::NAN, |f| {
        f.coefficients
            .iter()
            .zip(&truth)
            .map(|(c, t)| (c.estimate - t).abs())
            .fold(0.0, f64::max)
    });
    let mut history = History::new();
    for n in 0..a.history {
        history.record(n as u64, &table(&a, &mut rng))?;
    }
    let output = table(&a, &mut rng);
    let rules = Rules::default();
    let mut check_times = Vec::new();
    let mut report = None;
    for _ in 0..a.runs.max(1) {
        let started = Instant::now();
        report = Some(output_check::check(&output, &history, &rules));
        check_times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let report = report.map(|r| (format!("{:?}", r.verdict).to_lowercase(), r.findings.len()));
    let (seconds_grouped_query, seconds_grouped_distinct_patients) = grouped_queries(&a, &mut rng)?;
    let out = Report {
        machine: machine(),
        rows: a.rows,
        covariates: a.covariates,
        patients: a.patients,
        seconds_logistic: median(logistic_times),
        logistic_iterations: fit.as_ref().map_or(0, |f| f.iterations),
        logistic_largest_error: largest_error,
        seconds_linear: median(linear_times),
        cells: a.cells,
        history_tables: a.history,
        history_sets: history.sets(),
        milliseconds_checks: median(check_times),
        check_verdict: report.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
        check_findings: report.map_or(0, |r| r.1),
        query_rows: a.query_rows,
        seconds_grouped_query,
        seconds_grouped_distinct_patients,
        peak_rss_mib: peak_rss_mib(None),
    };
    emit(json, &out, |r| {
        println!(
            "{} — {} rows × {} covariates, {} patients",
            r.machine, r.rows, r.covariates, r.patients
        );
        println!(
            "  logistic regression: {:.2} s ({} IRLS iterations; largest |estimate − truth| {:.3})",
            r.seconds_logistic, r.logistic_iterations, r.logistic_largest_error
        );
        println!("  linear regression: {:.2} s", r.seconds_linear);
        println!(
            "  automatic checks of a {}-cell table against {} earlier tables ({} sets): {:.1} ms, {} ({} findings)",
            r.cells, r.history_tables, r.history_sets, r.milliseconds_checks, r.check_verdict, r.check_findings
        );
        println!(
            "  grouped query over {} rows (94 groups): {:.2} s; with count(DISTINCT patient): {:.2} s",
            r.query_rows, r.seconds_grouped_query, r.seconds_grouped_distinct_patients
        );
        println!("  peak RSS {:.0} MiB", r.peak_rss_mib);
    })
}
