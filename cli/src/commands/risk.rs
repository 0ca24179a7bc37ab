//! `tokumei risk attack --release ID`: the re-identification attack re-measured on the sealed copies of a
//! built release (operators, auditors, the committee chair); authorised before any file is opened, the
//! figures recorded in the audit ledger.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokumei_policy::ServicePublicKey;
use tokumei_release::risk::{self, ReleaseRisk, RiskContext};

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
        let zone = open_zone(a.config.as_deref()).await?;
        let trusted = platform_key()?;
        let cx = RiskContext {
            policy: &policy,
            actor: &who,
            origin: CLI,
            zone: &zone,
            trusted: &trusted,
        };
        let report = risk::assess(&cx, &a.release, &a.m).await.map_err(release_reason)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
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

/// The release zone's manifest key (`$TOKUMEI_HOME/release/manifest.pub`): every copy's manifest must carry its
/// signature.
fn platform_key() -> Result<ServicePublicKey> {
    let home = tokumei_ingest::home::tokumei_home();
    let path = tokumei_policy::service_key::public_key_path(&tokumei_release::manifest::manifest_key_path(&home));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("[NOT_FOUND] the release zone's manifest key {}", path.display()))?;
    ServicePublicKey::from_hex(text.trim()).map_err(reason)
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
