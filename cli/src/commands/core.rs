//! `tokumei core run`: the isolated core. It pulls from the gateway's spool (directory or mTLS SpoolService),
//! writes the encrypted tables, acknowledges, and compacts. It listens on nothing.

use crate::output::{emit, runtime};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokumei_ingest::config::Config;
use tokumei_ingest::home::tokumei_home;
use tokumei_ingest::keyservice::KeyZone;
use tokumei_ingest::server::open_key_service;
use tokumei_ingest::server::termination_signal;
use tokumei_store::Store;
use tokumei_store::core::{CoreOptions, run as run_core};
use tokumei_store::orders::OrderSource;

#[derive(Subcommand, Debug)]
pub enum CoreCommand {
    /// Pull, apply and acknowledge until SIGINT/SIGTERM (or until the spool is drained).
    Run {
        /// Configuration file (defaults apply when omitted).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Exit once the spool holds nothing new.
        #[arg(long)]
        until_drained: bool,
    },
}

pub fn run(cmd: CoreCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        CoreCommand::Run { config, until_drained } => {
            let cfg = Config::load(config.as_deref())?;
            let home = tokumei_home();
            let rt = runtime()?;
            rt.block_on(async {
                let _telemetry = tokumei_ingest::telemetry::init(&cfg.telemetry, "info")?;
                let keys = open_key_service(&cfg, &home, KeyZone::Core).await?;
                let store = Arc::new(Store::open(&cfg.store, &home, keys.as_ref()).await?);
                let orders = match &cfg.core.orders {
                    Some(o) => Some(
                        OrderSource::connect(&cfg, o, &home, keys.clone())?
                            .with_planner(Arc::new(tokumei_release::builder::plan::CorePlanner::new(&home, o))),
                    ),
                    None => None,
                };
                let bar = if json || !until_drained {
                    ProgressBar::hidden()
                } else {
                    let b = ProgressBar::new_spinner();
                    b.set_style(ProgressStyle::with_template("{spinner} core: {msg}")?);
                    b.enable_steady_tick(Duration::from_millis(200));
                    b
                };
                // Machine-readable readiness line for scripts and tests.
                println!(
                    "core started store {}{}",
                    store.location().describe(),
                    cfg.core
                        .orders
                        .as_ref()
                        .map(|o| format!(" orders from {}", o.policy_url))
                        .unwrap_or_default()
                );
                let options = CoreOptions {
                    until_drained,
                    ..Default::default()
                };
                let totals = run_core(store, &cfg, &home, options, orders, termination_signal(), |t| {
                    bar.set_message(format!("{} records, {} rows, through {:?}", t.records, t.rows, t.acknowledged_through));
                })
                .await?;
                bar.finish_and_clear();
                emit(json, &totals, |t| {
                    println!(
                        "core: {} entries, {} batches, {} records ({} rows) in {:.1}s; {} refused (opted out), {} opt-outs, {} erasures, {} compactions; acknowledged through {}",
                        t.entries,
                        t.batches,
                        t.records,
                        t.rows,
                        t.seconds,
                        t.records_refused,
                        t.opt_outs,
                        t.erasures,
                        t.compactions,
                        t.acknowledged_through.as_deref().unwrap_or("-")
                    )
                })
            })
        }
    }
}
