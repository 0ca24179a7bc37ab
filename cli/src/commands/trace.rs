//! `tokumei trace --release ID --file LEAKED`: whose copy a leaked file is, with the probability that an
//! innocent recipient would score as high; audited.

use std::path::PathBuf;

use anyhow::Result;
use tokumei_release::trace::{self, DEFAULT_FALSE_ACCUSATION_BOUND};

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::commands::release::{open_zone, release_reason};
use crate::output::runtime;

/// Arguments of `tokumei trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// The release the file is suspected to come from.
    #[arg(long)]
    pub release: String,
    /// The leaked file: CSV, or Parquet if the name ends in .parquet.
    #[arg(long)]
    pub file: PathBuf,
    /// The release table the file holds (default: found from the marked columns present).
    #[arg(long)]
    pub table: Option<String>,
    /// Accuse only when an innocent recipient would score this high with at most this probability.
    #[arg(long = "false-accusation-bound", default_value_t = DEFAULT_FALSE_ACCUSATION_BOUND)]
    pub bound: f64,
    /// Configuration file (key service).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Session and policy database.
    #[command(flatten)]
    pub policy: PolicyOptions,
}

/// Runs `tokumei trace`.
pub fn run(a: TraceArgs, json: bool) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let policy = open_policy(&a.policy).await?;
        let who = actor(&policy, &a.policy).await?;
        let zone = open_zone(a.config.as_deref()).await?;
        let record = zone.record(&a.release).map_err(release_reason)?;
        // Permission first: nothing is unwrapped, read or computed for someone who may not trace.
        policy
            .admit_trace(&who, &record.application, CLI)
            .await
            .map_err(reason)?;
        let leaked = trace::read_leaked(&a.file).map_err(release_reason)?;
        let report = trace::trace(&zone, &record, &leaked, a.table.as_deref(), a.bound)
            .await
            .map_err(release_reason)?;
        let v = &report.verdict;
        let entry = policy
            .record_trace(
                &who,
                &record.application,
                serde_json::json!({
                    "release": record.id,
                    "file": a.file.file_name().map(|n| n.to_string_lossy().into_owned()),
                    "table": report.table,
                    "rows": report.rows,
                    "positions": v.positions,
                    "accused": v.accused,
                    "decidable": v.decidable,
                    "bound": v.bound,
                    "best": v.candidates.first().map(|c| serde_json::json!({
                        "recipient": c.recipient, "score": c.score, "p_innocent": c.p_innocent
                    })),
                }),
                CLI,
            )
            .await
            .map_err(reason)?;
        if json {
            let mut out = serde_json::to_value(&report)?;
            out["audit_seq"] = serde_json::json!(entry.seq);
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        println!(
            "{} ({} rows) against release {} table {}: {} code positions read",
            a.file.display(),
            report.rows,
            report.release,
            report.table,
            v.positions
        );
        for c in v.candidates.iter().take(5) {
            println!(
                "  {:<20} score {:>8.2}  P(innocent scores this high) ≤ {:.2e}{}",
                c.recipient,
                c.score,
                c.p_innocent,
                if v.accused.contains(&c.recipient) {
                    "  ← accused"
                } else {
                    ""
                }
            );
        }
        println!("{}", v.explanation);
        println!(
            "(audit entry {}; a chair records the violation with `tokumei committee violation`)",
            entry.seq
        );
        Ok(())
    })
}
