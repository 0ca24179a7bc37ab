//! `tokumei trace --server URL --ca CA --release ID --file LEAKED`: whose copy a leaked file is, with the
//! probability that an innocent recipient would score as high. A client of the release service: the file goes to
//! the zone, which holds the fingerprint key; the policy service admits the trace first and records the verdict.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokumei_release::trace::DEFAULT_FALSE_ACCUSATION_BOUND;

use crate::commands::access::{PolicyOptions, session_token};
use crate::output::runtime;
use tokumei_client::release::{LeakToTrace, connect, trace_leak};

/// Arguments of `tokumei trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// The release service's gRPC address (https://HOST:PORT).
    #[arg(long)]
    pub server: String,
    /// CA certificate (PEM) the release service's certificate must chain to.
    #[arg(long)]
    pub ca: PathBuf,
    /// The release the file is suspected to come from.
    #[arg(long)]
    pub release: String,
    /// The leaked file: CSV, or Parquet if the name ends in .parquet (at most 64 MiB).
    #[arg(long)]
    pub file: PathBuf,
    /// The release table the file holds (default: found from the marked columns present).
    #[arg(long)]
    pub table: Option<String>,
    /// Accuse only when an innocent recipient would score this high with at most this probability.
    #[arg(long = "false-accusation-bound", default_value_t = DEFAULT_FALSE_ACCUSATION_BOUND)]
    pub bound: f64,
    /// The operator's session.
    #[command(flatten)]
    pub policy: PolicyOptions,
}

/// Runs `tokumei trace`.
pub fn run(a: TraceArgs, json: bool) -> Result<()> {
    tokumei_ingest::tls::install_crypto_provider();
    let session = session_token(&a.policy)?;
    let ca = std::fs::read(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    runtime()?.block_on(async {
        let mut client = connect(&a.server, &ca).await?;
        let leak = LeakToTrace {
            release: &a.release,
            file: &a.file,
            table: a.table.as_deref(),
            bound: a.bound,
        };
        let (report, audit_seq) = trace_leak(&mut client, &session, &leak).await?;
        if json {
            let mut out = serde_json::to_value(&report)?;
            out["audit_seq"] = serde_json::json!(audit_seq);
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        let v = &report.traced.verdict;
        println!(
            "{} ({} rows) against release {}: carriers read {}; {} code positions in the values",
            a.file.display(),
            report.rows,
            report.release,
            report.traced.carriers.join(", "),
            v.positions
        );
        let matches = |r: &str| {
            report
                .traced
                .pseudonyms
                .as_ref()
                .and_then(|p| p.candidates.iter().find(|c| c.recipient == r))
                .map_or(String::new(), |c| format!("  pseudonyms {:>6}", c.matches))
        };
        for c in v.candidates.iter().take(5) {
            println!(
                "  {:<20} score {:>8.2}  P(innocent scores this high) ≤ {:.2e}{}{}",
                c.recipient,
                c.score,
                c.p_innocent,
                matches(&c.recipient),
                if report.traced.accused.contains(&c.recipient) {
                    "  ← accused"
                } else {
                    ""
                }
            );
        }
        println!("{}", report.traced.explanation);
        println!("(audit entry {audit_seq}; a chair records the violation with `tokumei committee violation`)");
        Ok(())
    })
}
