//! `tokumei risk attack --server URL --ca CA --release ID`: the re-identification attack re-measured on the sealed
//! copies of a built release (operators, auditors, the committee chair). A client of the release service, which
//! holds the copies' keys; the policy service admits the measurement before any file is opened and records the
//! figures.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokumei_release::risk::ReleaseRisk;

use crate::commands::access::{PolicyOptions, session_token};
use crate::output::runtime;
use tokumei_client::release::{assess_risk, connect};

/// Subcommands of `tokumei risk`.
#[derive(clap::Subcommand, Debug)]
pub enum RiskCommand {
    /// Measure the linkage attack (demographics + m event items) on every copy of a built release.
    Attack(AttackArgs),
}

/// Arguments of `tokumei risk attack`.
#[derive(clap::Args, Debug)]
pub struct AttackArgs {
    /// The release service's gRPC address (https://HOST:PORT).
    #[arg(long)]
    pub server: String,
    /// CA certificate (PEM) the release service's certificate must chain to.
    #[arg(long)]
    pub ca: PathBuf,
    /// The release.
    #[arg(long)]
    pub release: String,
    /// Adversary strengths (items known), comma-separated, 1 … 4 (default: 1 … m + 2).
    #[arg(long, value_delimiter = ',')]
    pub m: Vec<usize>,
    /// The session (operator, auditor or chair).
    #[command(flatten)]
    pub policy: PolicyOptions,
}

/// Runs `tokumei risk ...`.
pub fn run(command: RiskCommand, json: bool) -> Result<()> {
    match command {
        RiskCommand::Attack(a) => attack(a, json),
    }
}

fn attack(a: AttackArgs, json: bool) -> Result<()> {
    tokumei_ingest::tls::install_crypto_provider();
    let session = session_token(&a.policy)?;
    let ca = std::fs::read(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    runtime()?.block_on(async {
        let mut client = connect(&a.server, &ca).await?;
        let (report, audit_seq) = assess_risk(&mut client, &session, &a.release, &a.m).await?;
        if json {
            let mut out = serde_json::to_value(&report)?;
            out["audit_seq"] = serde_json::json!(audit_seq);
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print_human(&report);
        }
        if report.holds {
            Ok(())
        } else {
            anyhow::bail!(
                "[MODEL_BROKEN] release {}: on some copy a promised m (1 … {}) leaves patients with fewer than k={} \
                 candidates, or was not measured",
                report.release,
                report.m,
                report.k
            )
        }
    })
}

fn print_human(report: &ReleaseRisk) {
    println!(
        "再識別攻撃 / linkage attack on release {} (application {}): k={}, m={} approved",
        report.release, report.application, report.k, report.m
    );
    for c in &report.copies {
        println!(
            "  {} — {} patients, tables {}{}",
            c.recipient,
            c.patients,
            c.tables.join(", "),
            if c.agrees_with_manifest {
                "; figures equal the manifest's"
            } else {
                "; figures DIFFER from the manifest's"
            }
        );
        for f in &c.attack {
            println!(
                "    m={} {}: k 未満 / below k {} ({:.1} %), 一意 / unique {} ({:.1} %)",
                f.m,
                if f.m <= report.m { "(promised)" } else { "(information)" },
                f.below_k,
                f.share_below_k * 100.0,
                f.unique,
                f.share_unique * 100.0
            );
        }
        if let Some(f) = &c.one_value {
            println!(
                "    one measured value as released (information): below k {} ({:.1} %), unique {} ({:.1} %)",
                f.below_k,
                f.share_below_k * 100.0,
                f.unique,
                f.share_unique * 100.0
            );
        }
    }
    println!(
        "{} (recorded in the audit ledger)",
        if report.holds {
            "モデル成立 / the model holds on every copy"
        } else {
            "モデル不成立 / the model does NOT hold"
        }
    );
}
