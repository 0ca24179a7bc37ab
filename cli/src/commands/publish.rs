//! `tokumei publish decisions|provisions` (the public registers, JSON and CSV) and
//! `tokumei report regulator --period YYYY-Qn` (the periodic report, with the core's figures).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use tokumei_policy::transparency::{DecisionEntry, ProvisionEntry, RegulatorReport};
use tokumei_store::regulator::CoreFigures;

use tokumei_proto::policy::v1 as pb;

use crate::output::{emit, runtime};
use tokumei_client::policy::{PolicyClient, ServiceOptions};
use tokumei_client::refused;

/// Which register.
#[derive(clap::Subcommand, Debug)]
pub enum PublishCommand {
    /// Approved applications: purpose, recipient organisation, data scope, date, fees.
    Decisions {
        /// Directory to write decisions.json and decisions.csv to.
        #[arg(long)]
        out: PathBuf,
    },
    /// What was provided to whom under which approval.
    Provisions {
        /// Directory to write provisions.json and provisions.csv to.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `tokumei publish ...` with the service options: a client of the policy service.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    #[command(subcommand)]
    command: PublishCommand,
    #[command(flatten)]
    service: ServiceOptions,
}

/// `tokumei report ...`
#[derive(clap::Subcommand, Debug)]
pub enum ReportCommand {
    /// The periodic report to the regulator.
    Regulator {
        /// Quarter, e.g. 2026-Q4 (Japanese calendar quarters, JST).
        #[arg(long)]
        period: String,
        /// Also write the report here (JSON).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `tokumei report ...` with the policy options.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
    #[command(flatten)]
    service: ServiceOptions,
    #[command(flatten)]
    wait: tokumei_client::core_orders::WaitOptions,
}

fn write_register<T: Serialize>(dir: &Path, name: &str, rows: &[T]) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json_path = dir.join(format!("{name}.json"));
    crate::output::write_atomically(&json_path, &serde_json::to_vec_pretty(rows)?)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    let csv_path = dir.join(format!("{name}.csv"));
    crate::output::write_atomically(&csv_path, &w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
    Ok((json_path, csv_path))
}

/// Runs `tokumei publish ...`.
pub fn run_publish(args: PublishArgs, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let service = PolicyClient::connect(&args.service).await?;
        let (register, out) = match args.command {
            PublishCommand::Decisions { out } => ("decisions", out),
            PublishCommand::Provisions { out } => ("provisions", out),
        };
        let text = service
            .client
            .clone()
            .max_decoding_message_size(1 << 30)
            .publish_register(service.request(pb::RegisterRef {
                register: register.to_owned(),
            })?)
            .await
            .map_err(refused)?
            .into_inner()
            .json;
        // Read back as the register's rows, so the CSV keeps their columns in order.
        let (files, n) = if register == "decisions" {
            let rows: Vec<DecisionEntry> = serde_json::from_str(&text)?;
            (write_register(&out, register, &rows)?, rows.len())
        } else {
            let rows: Vec<ProvisionEntry> = serde_json::from_str(&text)?;
            (write_register(&out, register, &rows)?, rows.len())
        };
        emit(
            json,
            &serde_json::json!({"entries": n, "json": files.0, "csv": files.1}),
            |_| {
                println!(
                    "{n} entr{} written to {} and {}",
                    if n == 1 { "y" } else { "ies" },
                    files.0.display(),
                    files.1.display()
                );
            },
        )
    })
}

#[derive(Serialize)]
struct FullReport {
    #[serde(flatten)]
    policy: RegulatorReport,
    core: Option<CoreFigures>,
    core_unavailable: Option<String>,
}

/// Runs `tokumei report ...`.
pub fn run_report(args: ReportArgs, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let service = PolicyClient::connect(&args.service).await?;
        let ReportCommand::Regulator { period, out } = args.command;
        let text = service
            .client
            .clone()
            .regulator_report(service.request(pb::PeriodRef { period: period.clone() })?)
            .await
            .map_err(refused)?
            .into_inner()
            .json;
        let report: RegulatorReport = serde_json::from_str(&text)?;
        // The core's half: an order the core carries out (counts only); without a running core the report says so.
        let figures = tokumei_client::core_orders::order(
            &args.service,
            &args.wait,
            pb::core_operation_request::Operation::RegulatorFigures(pb::PeriodRef { period: period.clone() }),
            false,
        )
        .await
        .and_then(|status| Ok(serde_json::from_str::<CoreFigures>(&status.result_json)?));
        let (core, core_unavailable) = match figures {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let full = FullReport { policy: report, core, core_unavailable };
        if let Some(path) = &out {
            crate::output::write_atomically(path, &serde_json::to_vec_pretty(&full)?)?;
        }
        emit(json, &full, |f| {
            let p = &f.policy;
            println!("regulator report {} ({} – {})", p.period, p.from, p.to);
            match (&f.core, &f.core_unavailable) {
                (Some(c), _) => {
                    println!(
                        "  hospitals providing {}, patient records {}, clinical rows {}",
                        c.hospitals_providing, c.patient_records_received, c.clinical_rows_received
                    );
                    println!(
                        "  opt-outs {}, erasure requests {}, erasures completed {}",
                        c.opt_outs_handled, c.erasure_requests_handled, c.erasures_completed
                    );
                }
                (None, Some(e)) => println!("  core store figures unavailable: {e}"),
                (None, None) => {}
            }
            println!(
                "  applications received {}, approved {}, refused {} (+{} refused at filing), revoked {}",
                p.applications_received, p.applications_approved, p.applications_refused, p.applications_refused_at_filing, p.approvals_revoked
            );
            println!(
                "  provisions {}, releases built {}, downloads {}, violations {}, denied actions {}, deletion declarations overdue {}",
                p.provisions, p.releases_built, p.downloads, p.violations, p.denied_actions, p.deletion_declarations_overdue
            );
            println!(
                "  statistics: differentially private releases {}, small-cell tables (not DP, no loss figure) {}",
                p.dp_releases, p.small_cell_tables
            );
            println!("  audit ledger head: seq {} hash {}", p.audit_head.seq, p.audit_head.hash);
            if let Some(path) = &out {
                println!("  written to {}", path.display());
            }
        })
    })
}
