//! `tokumei spool status`: what the gateway's spool holds (counts only — it holds no direct identifiers).

use crate::output::emit;
use clap::Subcommand;
use std::path::PathBuf;
use tokumei_ingest::config::{Config, resolve};
use tokumei_ingest::home::tokumei_home;
use tokumei_spool::status::status;

#[derive(Subcommand, Debug)]
pub enum SpoolCommand {
    /// Segments, entries, batches and records per hospital, opt-out and erase requests.
    Status {
        /// Configuration file (for `spool.dir`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Spool directory (overrides the configuration).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: SpoolCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        SpoolCommand::Status { config, dir } => {
            let cfg = Config::load(config.as_deref())?;
            let home = tokumei_home();
            let dir = dir.unwrap_or_else(|| resolve(&home, &cfg.spool.dir));
            // The spool is sealed at rest: unwrap its key through the key service first.
            crate::output::runtime()?.block_on(tokumei_ingest::spool_feed::unlock_local_spool(&cfg, &home, &dir))?;
            let s = status(&dir)?;
            emit(json, &s, |s| {
                println!(
                    "spool {}: {} segment(s), {} bytes, {} batches, {} records, {} rejections, {} opt-outs, {} erasures",
                    s.dir, s.segments, s.bytes, s.batches, s.records, s.rejections, s.opt_outs, s.erasures
                );
                for (h, c) in &s.by_hospital {
                    println!(
                        "  {h}: {} batches, {} records, {} rejected",
                        c.batches, c.records, c.rejections
                    );
                }
            })
        }
    }
}
