//! `tokumei audit ...`: verify the hash-chained, signed audit ledger, export an inspection bundle, verify
//! a bundle offline, and read recent entries. There is no command that changes or deletes an entry.
//!
//! `verify` and `export` are clients of the policy service (a session and its CA, never the database);
//! `verify-bundle` needs nothing but the bundle and the key.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use tokumei_policy::ServicePublicKey;
use tokumei_policy::audit_ledger::{InspectionBundle, verify_bundle_with_keys};
use tokumei_proto::policy::v1 as pb;

use crate::commands::access::reason;
use crate::output::{emit, runtime};
use tokumei_client::policy::{PolicyClient, ServiceOptions};
use tokumei_client::refused;

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
        /// The platform's ledger key (64 hex digits or a file holding them); repeat it for a bundle that spans a
        /// rotation of the ledger key (the old key and the new). Default: the bundle's own key, which only proves
        /// internal consistency.
        #[arg(long)]
        public_key: Vec<String>,
    },
}

/// `tokumei audit ...` with the service options.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    #[command(flatten)]
    service: ServiceOptions,
}

/// Largest inspection bundle accepted from the service (a long window of a busy ledger).
const MAX_BUNDLE_BYTES: usize = 1 << 30;

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
        let keys = if public_key.is_empty() {
            vec![ServicePublicKey::from_hex(&bundle.public_key).map_err(reason)?]
        } else {
            public_key.iter().map(|k| key_from(k)).collect::<Result<Vec<_>>>()?
        };
        let report = verify_bundle_with_keys(&bundle, &keys);
        emit(json, &report, print_bundle_report)?;
        anyhow::ensure!(report.is_ok(), "[AUDIT_LEDGER_TAMPERED] the bundle does not verify");
        return Ok(());
    }
    runtime()?.block_on(async {
        let service = PolicyClient::connect(&args.service).await?;
        let mut client = service.client.clone().max_decoding_message_size(MAX_BUNDLE_BYTES);
        match args.command {
            AuditCommand::Verify => {
                let report = client
                    .verify_audit(service.request(pb::Empty {})?)
                    .await
                    .map_err(refused)?
                    .into_inner();
                emit(json, &report, print_report)?;
                anyhow::ensure!(report.ok, "[AUDIT_LEDGER_TAMPERED] the audit ledger does not verify");
                Ok(())
            }
            AuditCommand::Export { from, to, out } => {
                let (from, to) = (instant(&from)?, instant(&to)?);
                let window = pb::AuditWindow {
                    from: from.to_rfc3339(),
                    to: to.to_rfc3339(),
                };
                let text = client
                    .export_audit(service.request(window)?)
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .json;
                let bundle: InspectionBundle =
                    serde_json::from_str(&text).context("the service's bundle is not an inspection bundle")?;
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

fn print_report(r: &pb::AuditVerification) {
    if r.ok {
        println!("audit ledger OK: {} entries verified", r.entries_checked);
    } else {
        println!("audit ledger BROKEN at entry {}: {}", r.first_bad_seq, r.problem);
    }
    println!("head: seq {} hash {}", r.head_seq, r.head_hash);
}

fn print_bundle_report(r: &tokumei_policy::audit_ledger::VerifyReport) {
    match &r.first_bad {
        None => println!("bundle OK: {} entries verified", r.entries_checked),
        Some(bad) => match bad.seq {
            Some(seq) => println!("bundle BROKEN at entry {seq}: {}", bad.message),
            None => println!("bundle BROKEN: {}", bad.message),
        },
    }
    println!("head: seq {} hash {}", r.head.seq, r.head.hash);
}
