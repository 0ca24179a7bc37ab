//! `tokumei bench stats`: differentially private grouped statistics on a large synthetic table
//! (the target: 10 million rows, 1,000 groups, noisy counts and bounded means ≤ 2 s), with
//! the error at the chosen ε measured against the exact values.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tokumei_deid::dp::grouping::group;
use tokumei_deid::dp::plan::plan;
use tokumei_deid::dp::release::release;
use tokumei_deid::dp::request::{Bounds, Keys, Measure, Privacy, StatsRequest};
use tokumei_deid::table::{Column, Table};

use tokumei_client::output::emit;

/// Arguments of `tokumei bench stats`.
#[derive(Args, Debug)]
pub struct StatsBench {
    /// Rows of the synthetic table.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: usize,
    /// Distinct groups (public keys).
    #[arg(long, default_value_t = 1000)]
    pub groups: usize,
    /// ε of each release.
    #[arg(long, default_value_t = 1.0)]
    pub epsilon: f64,
    /// Rows per patient in the table (and the per-patient cap of the capped run).
    #[arg(long, default_value_t = 5)]
    pub rows_per_patient: usize,
}

#[derive(Serialize)]
struct Run {
    measure: String,
    unit_of_privacy: String,
    seconds_group: f64,
    seconds_plan: f64,
    seconds_noise: f64,
    seconds_total: f64,
    expected_abs_error_per_cell: Option<f64>,
    mean_abs_error_per_cell: f64,
    max_abs_error: f64,
}

#[derive(Serialize)]
struct Report {
    rows: usize,
    groups: usize,
    epsilon: f64,
    seconds_build_table: f64,
    runs: Vec<Run>,
}

/// Runs the benchmark.
pub fn run(a: StatsBench, json: bool) -> Result<()> {
    let started = Instant::now();
    // Deterministic table: group g = row mod groups (shuffled by a multiplier), value in 0..200,
    // `rows_per_patient` consecutive rows per patient.
    let mut g = Column::new("g");
    let mut v = Column::new("v");
    let mut p = Column::new("p");
    let group_names: Vec<String> = (0..a.groups).map(|i| format!("g{i:05}")).collect();
    let values: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let mut exact_count = vec![0i64; a.groups];
    let mut exact_sum = vec![0f64; a.groups];
    let mut patient = String::new();
    for row in 0..a.rows {
        let gi = (row.wrapping_mul(2_654_435_761) >> 7) % a.groups;
        let vi = (row.wrapping_mul(40_503) >> 3) % 200;
        g.push(&group_names[gi]);
        v.push(&values[vi]);
        if row % a.rows_per_patient == 0 {
            patient = format!("p{}", row / a.rows_per_patient);
        }
        p.push(&patient);
        exact_count[gi] += 1;
        exact_sum[gi] += vi as f64;
    }
    let table = Table::from_columns(vec![g, v, p])?;
    let seconds_build_table = started.elapsed().as_secs_f64();
    let keys = Keys::Public(group_names.iter().map(|k| vec![k.clone()]).collect());
    let mut runs = Vec::new();
    let cases = [
        (Measure::Count, None, 1u32),
        (
            Measure::Mean {
                column: "v".into(),
                bounds: Bounds::new(0.0, 200.0)?,
            },
            None,
            1,
        ),
        (Measure::Count, Some("p".to_string()), a.rows_per_patient as u32),
        (
            Measure::Mean {
                column: "v".into(),
                bounds: Bounds::new(0.0, 200.0)?,
            },
            Some("p".to_string()),
            a.rows_per_patient as u32,
        ),
    ];
    for (measure, subject, cap) in cases {
        let request = StatsRequest {
            group_by: vec!["g".into()],
            generalise: vec![],
            measure: measure.clone(),
            subject,
            max_contrib: cap,
            privacy: Privacy::Epsilon(a.epsilon),
            delta: None,
            keys: keys.clone(),
        };
        let t0 = Instant::now();
        let grouped = group(&table, &request)?;
        let t1 = Instant::now();
        let plan = plan(&request)?;
        let t2 = Instant::now();
        let out = release(&plan, &request, &grouped)?;
        let t3 = Instant::now();
        let mut errors = Vec::with_capacity(out.cells.len());
        for cell in &out.cells {
            let gi: usize = cell.key[0][1..].parse()?;
            let exact = match measure {
                Measure::Count => exact_count[gi] as f64,
                _ => exact_sum[gi] / exact_count[gi].max(1) as f64,
            };
            errors.push((cell.value - exact).abs());
        }
        runs.push(Run {
            measure: measure.name().to_string(),
            unit_of_privacy: plan.unit_of_privacy.clone(),
            seconds_group: (t1 - t0).as_secs_f64(),
            seconds_plan: (t2 - t1).as_secs_f64(),
            seconds_noise: (t3 - t2).as_secs_f64(),
            seconds_total: (t3 - t0).as_secs_f64(),
            expected_abs_error_per_cell: out.cells.first().and_then(|c| c.expected_abs_error),
            mean_abs_error_per_cell: errors.iter().sum::<f64>() / errors.len().max(1) as f64,
            max_abs_error: errors.iter().cloned().fold(0.0, f64::max),
        });
    }
    let report = Report {
        rows: a.rows,
        groups: a.groups,
        epsilon: a.epsilon,
        seconds_build_table,
        runs,
    };
    emit(json, &report, |r| {
        println!(
            "{} rows, {} groups, ε={} (table built in {:.1}s)",
            r.rows, r.groups, r.epsilon, r.seconds_build_table
        );
        for run in &r.runs {
            println!(
                "  {:<5} per {:<45} {:.3}s (group {:.3}s, plan {:.3}s, noise {:.3}s); |error| per cell: expected {}, measured mean {:.4}, max {:.4}",
                run.measure,
                run.unit_of_privacy,
                run.seconds_total,
                run.seconds_group,
                run.seconds_plan,
                run.seconds_noise,
                run.expected_abs_error_per_cell
                    .map(|e| format!("{e:.4}"))
                    .unwrap_or_else(|| "-".into()),
                run.mean_abs_error_per_cell,
                run.max_abs_error
            );
        }
    })
}
