//! `tokumei publish decisions|provisions` (the public registers, JSON and CSV) and
//! `tokumei report regulator --period YYYY-Qn` (the periodic report, with the core's figures).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use tokumei_ingest::config::Config;
use tokumei_ingest::home::tokumei_home;
use tokumei_policy::committee::Provision;
use tokumei_policy::transparency::{DecisionEntry, RegulatorReport, quarter};

use tokumei_proto::policy::v1 as pb;

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::commands::policy_client::{PolicyClient, ServiceOptions, refusal};
use crate::output::{emit, runtime};

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
        /// Configuration file of the core store (for the hospitals' figures).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `tokumei report ...` with the policy options.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
    #[command(flatten)]
    policy: PolicyOptions,
}

fn write_register<T: Serialize>(dir: &Path, name: &str, rows: &[T]) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json_path = dir.join(format!("{name}.json"));
    crate::commands::stats::write_atomically(&json_path, &serde_json::to_vec_pretty(rows)?)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    let csv_path = dir.join(format!("{name}.csv"));
    crate::commands::stats::write_atomically(&csv_path, &w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
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
            .map_err(refusal)?
            .into_inner()
            .json;
        // Read back as the register's rows, so the CSV keeps their columns in order.
        let (files, n) = if register == "decisions" {
            let rows: Vec<DecisionEntry> = serde_json::from_str(&text)?;
            (write_register(&out, register, &rows)?, rows.len())
        } else {
            let rows: Vec<Provision> = serde_json::from_str(&text)?;
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

/// The core store's figures for the period (what hospitals sent, what patients asked).
#[derive(Debug, Serialize)]
pub(crate) struct CoreFigures {
    /// Hospitals that sent records in the period.
    pub(crate) hospitals_providing: u64,
    /// Patient records received (rows of `patients`).
    pub(crate) patient_records_received: u64,
    /// Clinical rows received in all tables.
    pub(crate) clinical_rows_received: u64,
    /// Opt-out requests registered.
    pub(crate) opt_outs_handled: u64,
    /// Erasure requests registered.
    pub(crate) erasure_requests_handled: u64,
    /// Erasures carried out (certificates issued).
    pub(crate) erasures_completed: u64,
}

#[derive(Serialize)]
struct FullReport {
    #[serde(flatten)]
    policy: RegulatorReport,
    core: Option<CoreFigures>,
    core_unavailable: Option<String>,
}

async fn core_figures(config: Option<&Path>, period: &str) -> Result<CoreFigures> {
    let cfg = Config::load(config)?;
    let home = tokumei_home();
    let store = crate::commands::store::open_store(&cfg, &home).await?;
    core_figures_of(&store, period).await
}

/// The figures of `period` read from an open core store (operator view: every row received).
pub(crate) async fn core_figures_of(store: &tokumei_store::Store, period: &str) -> Result<CoreFigures> {
    use deltalake::arrow::array::{Array, Int64Array};
    let (from, to) = quarter(period).map_err(reason)?;
    let (from_us, to_us) = (from.timestamp_micros(), to.timestamp_micros());
    let ctx = store.session(tokumei_store::View::Operator).await?;
    let window = |col: &str| format!("CAST({col} AS BIGINT) >= {from_us} AND CAST({col} AS BIGINT) < {to_us}");
    let count = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&sql).await?.collect().await?;
            let mut n = 0u64;
            for b in &batches {
                if let Some(c) = b.column(0).as_any().downcast_ref::<Int64Array>() {
                    n += (0..c.len()).map(|i| c.value(i).max(0) as u64).sum::<u64>();
                }
            }
            anyhow::Ok(n)
        }
    };
    let hospitals = count(format!(
        "SELECT COUNT(DISTINCT source_hospital) FROM patients WHERE {}",
        window("ingested_at")
    ))
    .await?;
    let patients = count(format!("SELECT COUNT(*) FROM patients WHERE {}", window("ingested_at"))).await?;
    let mut clinical = 0;
    for t in tokumei_store::schema::Table::CLINICAL {
        clinical += count(format!(
            "SELECT COUNT(*) FROM {} WHERE {}",
            t.name(),
            window("ingested_at")
        ))
        .await?;
    }
    let requests = |kind: &str| {
        format!(
            "SELECT COUNT(DISTINCT request_id) FROM opt_outs WHERE kind {kind} 'ERASE' AND {}",
            window("requested_at")
        )
    };
    let erasures = count(requests("=")).await?;
    let opt_outs = count(requests("<>")).await?;
    let completed = tokumei_store::erasure::certificates(&store.erasure_log_path())?
        .iter()
        .filter(|c| chrono::DateTime::parse_from_rfc3339(&c.completed_at).is_ok_and(|t| t >= from && t < to))
        .count() as u64;
    Ok(CoreFigures {
        hospitals_providing: hospitals,
        patient_records_received: patients,
        clinical_rows_received: clinical,
        opt_outs_handled: opt_outs,
        erasure_requests_handled: erasures,
        erasures_completed: completed,
    })
}

/// Runs `tokumei report ...`.
pub fn run_report(args: ReportArgs, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let policy = open_policy(&args.policy).await?;
        let a = actor(&policy, &args.policy).await?;
        let ReportCommand::Regulator { period, out, config } = args.command;
        let report = policy.regulator_report(&a, &period, CLI).await.map_err(reason)?;
        let (core, core_unavailable) = match core_figures(config.as_deref(), &period).await {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let full = FullReport { policy: report, core, core_unavailable };
        if let Some(path) = &out {
            crate::commands::stats::write_atomically(path, &serde_json::to_vec_pretty(&full)?)?;
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
