//! `tokumei sql "<query>"`: operator queries over the core store through DataFusion.
//!
//! By default the query sees the research view (opted-out and erased patients removed, no registry) — what
//! every downstream consumer sees. `--all-rows` shows the raw tables including the opt-out registry, for
//! operators investigating the store itself. Every query is logged with its text (the policy ledger will
//! record it too).

use crate::commands::store::open_store;
use crate::output::runtime;
use clap::Args;
use deltalake::arrow::util::pretty::pretty_format_batches;
use std::path::PathBuf;
use tokumei_ingest::config::Config;
use tokumei_ingest::home::tokumei_home;
use tokumei_store::View;

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The query (DataFusion SQL). Tables: patients, encounters, conditions, medications, observations,
    /// allergies (and opt_outs with --all-rows).
    pub query: String,
    /// Configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Include opted-out patients and the registry (operator investigation only).
    #[arg(long)]
    pub all_rows: bool,
}

pub fn run(a: SqlArgs, json: bool) -> anyhow::Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let home = tokumei_home();
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(&cfg, &home).await?;
        let view = if a.all_rows { View::Operator } else { View::Research };
        tracing::info!(target: "tokumei::audit", query = %a.query, all_rows = a.all_rows, "operator sql");
        let ctx = store.session(view).await?;
        let batches = ctx.sql(&a.query).await?.collect().await?;
        if json {
            let mut buf = Vec::new();
            {
                let mut w = deltalake::arrow::json::ArrayWriter::new(&mut buf);
                for b in &batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
            println!("{}", String::from_utf8_lossy(&buf));
        } else {
            println!("{}", pretty_format_batches(&batches)?);
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            println!("{rows} row(s)");
        }
        anyhow::Ok(())
    })
}
