//! `tokumei audit ...`: verify the hash-chained, signed audit ledger, export an inspection bundle, verify
//! a bundle offline, and read recent entries. There is no command that changes or deletes an entry.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use tokumei_policy::ServicePublicKey;
use tokumei_policy::audit_ledger::{InspectionBundle, verify_bundle};

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::output::{emit, runtime};

/// `tokumei audit ...`
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every entry's hash, link, sequence and signature; names the first bad entry.
    Verify,
    /// Write the inspection bundle of [--from, --to) (auditors).
    Export {
        /// First day (YYYY-MM-DD, UTC) or RFC 3339 instant.
        #[arg(long)]
        from: String,
        /// Day after the last (YYYY-MM-DD, UTC) or RFC 3339 instant.
        #[arg(long)]
        to: String,
        /// Output file (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an inspection bundle offline against the platform's public key (no database needed).
    VerifyBundle {
        /// The bundle.
        file: PathBuf,
        /// The platform's public key (64 hex digits or a file holding them); default: the bundle's own
        /// key, which only proves internal consistency.
        #[arg(long)]
        public_key: Option<String>,
    },
}

/// `tokumei audit ...` with the policy options.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    #[command(flatten)]
    policy: PolicyOptions,
}

fn instant(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let d: NaiveDate = text
        .parse()
        .with_context(|| format!("{text:?} is neither YYYY-MM-DD nor RFC 3339"))?;
    Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_default())
}

fn key_from(text: &str) -> Result<ServicePublicKey> {
    let t = std::fs::read_to_string(text).unwrap_or_else(|_| text.to_owned());
    ServicePublicKey::from_hex(&t).map_err(reason)
}

/// Runs `tokumei audit ...`.
pub fn run(args: AuditArgs, json: bool) -> Result<()> {
    if let AuditCommand::VerifyBundle { file, public_key } = &args.command {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let bundle: InspectionBundle = serde_json::from_str(&text).context("not an inspection bundle")?;
        let key = match public_key {
            Some(k) => key_from(k)?,
            None => ServicePublicKey::from_hex(&bundle.public_key).map_err(reason)?,
        };
        let report = verify_bundle(&bundle, &key);
        emit(json, &report, print_report)?;
        anyhow::ensure!(report.is_ok(), "[AUDIT_LEDGER_TAMPERED] the bundle does not verify");
        return Ok(());
    }
    runtime()?.block_on(async {
        let policy = open_policy(&args.policy).await?;
        let a = actor(&policy, &args.policy).await?;
        match args.command {
            AuditCommand::Verify => {
                let report = policy.verify_audit(&a, CLI).await.map_err(reason)?;
                emit(json, &report, print_report)?;
                anyhow::ensure!(report.is_ok(), "[AUDIT_LEDGER_TAMPERED] the audit ledger does not verify");
                Ok(())
            }
            AuditCommand::Export { from, to, out } => {
                let (from, to) = (instant(&from)?, instant(&to)?);
                let bundle = policy.export_audit(&a, from, to, CLI).await.map_err(reason)?;
                std::fs::write(&out, serde_json::to_vec_pretty(&bundle)?)?;
                emit(json, &json!({"file": out, "entries": bundle.entries.len()}), |_| {
                    println!(
                        "{} entr{} from {} to {} written to {} (verify with: tokumei audit verify-bundle {} --public-key KEY)",
                        bundle.entries.len(),
                        if bundle.entries.len() == 1 { "y" } else { "ies" },
                        from.to_rfc3339(),
                        to.to_rfc3339(),
                        out.display(),
                        out.display()
                    );
                })
            }
            AuditCommand::VerifyBundle { .. } => Ok(()),
        }
    })
}

fn print_report(r: &tokumei_policy::audit_ledger::VerifyReport) {
    match &r.first_bad {
        None => println!("audit ledger OK: {} entries verified", r.entries_checked),
        Some(bad) => match bad.seq {
            Some(seq) => println!("audit ledger BROKEN at entry {seq}: {}", bad.message),
            None => println!("audit ledger BROKEN: {}", bad.message),
        },
    }
    println!("head: seq {} hash {}", r.head.seq, r.head.hash);
}
