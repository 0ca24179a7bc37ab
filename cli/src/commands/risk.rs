//! `tokumei risk attack --release ID`: the re-identification attack re-measured on the sealed copies of a
//! built release (operators, auditors, the committee chair); authorised before any file is opened, the
//! figures recorded in the audit ledger.

use std::path::PathBuf;

use anyhow::Result;
use tokumei_policy::authorization::Action;
use tokumei_release::risk::{self, ReleaseRisk};

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::commands::release::{open_zone, release_reason};
use crate::output::runtime;

/// Subcommands of `tokumei risk`.
#[derive(clap::Subcommand, Debug)]
pub enum RiskCommand {
    /// Measure the linkage attack (demographics + m event items) on every copy of a built release.
    Attack(AttackArgs),
}

/// Arguments of `tokumei risk attack`.
#[derive(clap::Args, Debug)]
pub struct AttackArgs {
    /// The release.
    #[arg(long)]
    pub release: String,
    /// Adversary strengths (items known), comma-separated, 1 … 4 (default: 1 … m + 2).
    #[arg(long, value_delimiter = ',')]
    pub m: Vec<usize>,
    /// Configuration file (key service).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Session and policy database.
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
    let rt = runtime()?;
    rt.block_on(async {
        let policy = open_policy(&a.policy).await?;
        let who = actor(&policy, &a.policy).await?;
        let (zone, _) = open_zone(a.config.as_deref()).await?;
        let record = zone.record(&a.release).map_err(release_reason)?;
        policy
            .admit_release_review(&who, &record.application, Action::AssessReleaseRisk, CLI)
            .await
            .map_err(reason)?;
        let ms = (!a.m.is_empty()).then_some(a.m.as_slice());
        let report = risk::measure(&zone, &record, ms).await.map_err(release_reason)?;
        let entry = policy
            .record_release_review(
                &who,
                &record.application,
                Action::AssessReleaseRisk,
                serde_json::json!({
                    "release": report.release,
                    "k": report.k,
                    "m": report.m,
                    "holds": report.holds,
                    "copies": report.copies.iter().map(|c| serde_json::json!({
                        "recipient": c.recipient,
                        "patients": c.patients,
                        "attack": c.attack,
                        "agrees_with_manifest": c.agrees_with_manifest,
                    })).collect::<Vec<_>>(),
                }),
                CLI,
            )
            .await
            .map_err(reason)?;
        if json {
            let mut out = serde_json::to_value(&report)?;
            out["audit_seq"] = serde_json::json!(entry.seq);
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print_human(&report, entry.seq);
        }
        if report.holds {
            Ok(())
        } else {
            anyhow::bail!(
                "[MODEL_BROKEN] release {}: some patient has fewer than k={} candidates for m ≤ {}",
                report.release,
                report.k,
                report.m
            )
        }
    })
}

fn print_human(report: &ReleaseRisk, audit_seq: i64) {
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
        "{} (audit entry {audit_seq})",
        if report.holds {
            "モデル成立 / the model holds on every copy"
        } else {
            "モデル不成立 / the model does NOT hold"
        }
    );
}
