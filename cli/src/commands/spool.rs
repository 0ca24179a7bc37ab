//! `tokumei spool status`: what the gateway's spool holds (counts only — it holds no direct identifiers).

use crate::output::emit;
use clap::Subcommand;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokumei_ingest::config::{Config, resolve};
use tokumei_ingest::home::tokumei_home;
use tokumei_ingest::spool::{list_segments, read_all, segment_path};
use tokumei_proto::spool::v1::{RequestKind, spool_entry::Entry};

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

#[derive(Serialize, Default)]
pub struct SpoolStatus {
    pub dir: String,
    pub segments: usize,
    pub bytes: u64,
    pub entries: u64,
    pub batches: u64,
    pub records: u64,
    pub rejections: u64,
    pub opt_outs: u64,
    pub erasures: u64,
    pub by_hospital: BTreeMap<String, HospitalCounts>,
}

#[derive(Serialize, Default)]
pub struct HospitalCounts {
    pub batches: u64,
    pub records: u64,
    pub rejections: u64,
}

/// Reads a spool directory and counts what it holds.
pub fn status(dir: &std::path::Path) -> anyhow::Result<SpoolStatus> {
    let mut s = SpoolStatus {
        dir: dir.display().to_string(),
        ..Default::default()
    };
    if !dir.exists() {
        return Ok(s);
    }
    let segs = list_segments(dir)?;
    s.segments = segs.len();
    for seg in &segs {
        s.bytes += std::fs::metadata(segment_path(dir, *seg))?.len();
    }
    read_all(dir, |_, e| {
        s.entries += 1;
        match e.entry {
            Some(Entry::Batch(b)) => {
                s.batches += 1;
                s.records += b.records.len() as u64;
                s.rejections += b.rejections.len() as u64;
                let h = s.by_hospital.entry(b.hospital_code).or_default();
                h.batches += 1;
                h.records += b.records.len() as u64;
                h.rejections += b.rejections.len() as u64;
            }
            Some(Entry::Request(r)) => {
                if r.kind == RequestKind::Erase as i32 {
                    s.erasures += 1;
                } else {
                    s.opt_outs += 1;
                }
            }
            None => {}
        }
    })?;
    Ok(s)
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
