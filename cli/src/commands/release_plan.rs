//! `tokumei release plan --application ID [--k K] [--m M]`: what a build would generalise and suppress, and
//! the attack the result would face, before any file exists (operators, the chair, assigned members). A client of
//! the policy service: the plan is an order the core carries out; the command holds a session and the CA only.

use anyhow::{Context, Result};
use tokumei_proto::policy::v1 as pb;
use tokumei_release::builder::plan::PlanOutcome;

use crate::output::runtime;
use tokumei_client::policy::ServiceOptions;

/// Arguments of `tokumei release plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The application (approved or under review).
    #[arg(long)]
    pub application: String,
    /// k to try (default: the approval's, else 5).
    #[arg(long)]
    pub k: Option<u32>,
    /// m to try, 1 … 4 (default: the approval's, else 2).
    #[arg(long)]
    pub m: Option<u32>,
    /// Largest suppressed share to try, in [0, 1) (default: the approval's, else 0.05).
    #[arg(long = "max-suppression")]
    pub max_suppression: Option<f64>,
    /// Weight of the demographics in the release loss, in [0, 1] (default: the approval's, else 0.5): higher
    /// keeps age bands and regions finer at the cost of codes and dates.
    #[arg(long = "demographic-weight")]
    pub demographic_weight: Option<f64>,
    /// The policy service and the session.
    #[command(flatten)]
    pub service: ServiceOptions,
    /// How long to wait for the core.
    #[command(flatten)]
    pub wait: tokumei_client::core_orders::WaitOptions,
}

/// Runs `tokumei release plan`: asks the policy service, which admits the plan on the application and orders it
/// from the core; the core reads the store and reports the plan's aggregates.
pub fn run(a: PlanArgs, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let status = tokumei_client::core_orders::order(
            &a.service,
            &a.wait,
            pb::core_operation_request::Operation::PlanRelease(pb::PlanReleaseOperation {
                application_id: a.application.clone(),
                k: a.k,
                m: a.m,
                max_suppression: a.max_suppression,
                demographic_weight: a.demographic_weight,
            }),
            !json,
        )
        .await?;
        let outcome: PlanOutcome = serde_json::from_str(&status.result_json).context("the core's plan report")?;
        if json {
            println!("{}", serde_json::to_string_pretty(&outcome)?);
        } else {
            print_human(&outcome);
        }
        Ok(())
    })
}

fn print_human(p: &PlanOutcome) {
    let m = &p.privacy_model;
    println!(
        "提供計画 / release plan of {} ({}): k={}, m={}, suppression ≤ {:.1} %",
        p.application,
        if p.approved {
            "approved scope"
        } else {
            "scope applied for, not yet approved"
        },
        m.k,
        m.m,
        m.max_suppression * 100.0
    );
    println!("  対象 / cohort: {}", p.cohort);
    println!(
        "  患者 / patients {}: {} withheld ({:.1} %), {} birth dates top-coded (90+), {} duplicate rows merged",
        p.patients,
        p.suppressed_patients,
        share(p.suppressed_patients, p.patients),
        p.top_coded_birth_dates,
        p.merged_patient_rows
    );
    if !p.demographics.is_empty() {
        let levels: Vec<String> = p
            .demographics
            .iter()
            .map(|l| format!("{} {}/{}", l.column, l.level, l.max_level))
            .collect();
        println!("  属性の一般化 / demographics: {}", levels.join(", "));
    }
    if let Some(items) = &p.items {
        for t in &items.tables {
            let levels: Vec<String> = t.levels.iter().map(|(c, l)| format!("{c}@{l}")).collect();
            println!(
                "  {:<12} items {} ; rare items suppressed {} of {} rows ({:.1} %), loss {:.3}",
                t.table,
                levels.join(" "),
                t.suppressed_rows,
                t.rows_before,
                share(t.suppressed_rows, t.rows_before),
                t.loss
            );
        }
    }
    for e in &p.extremes {
        println!(
            "  {}.{}: extreme values top-coded {}, bottom-coded {}, withheld {}",
            e.table, e.column, e.top_coded, e.bottom_coded, e.withheld
        );
    }
    for c in &p.count_caps {
        println!(
            "  {}: 件数の上限 / rows per patient capped for {} of {} patients (top count {}), {} rows not released{}",
            c.table,
            c.patients_capped,
            c.patients,
            c.largest_count,
            c.rows_dropped,
            if c.withheld {
                " (withheld: fewer than k patients)"
            } else {
                ""
            }
        );
    }
    println!(
        "  情報損失 / release loss {:.3} (0 = as recorded, 1 = nothing left)",
        p.release_loss
    );
    for f in &p.check.attack {
        println!(
            "  攻撃 / attack m={} {}: below k {} ({:.1} %), unique {} ({:.1} %)",
            f.m,
            if f.m <= m.m as usize {
                "(promised)"
            } else {
                "(information)"
            },
            f.below_k,
            f.share_below_k * 100.0,
            f.unique,
            f.share_unique * 100.0
        );
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}
