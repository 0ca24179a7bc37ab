//! `tokumei release ...`: build an approval into fingerprinted copies, verify a copy, list releases, serve and
//! download them, declare deletion.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokumei_policy::ServicePublicKey;
use tokumei_policy::committee::TableRequest;
use tokumei_release::builder;
use tokumei_release::manifest;

use crate::commands::access::{PolicyOptions, reason};
use crate::output::runtime;

/// Subcommands of `tokumei release`.
#[derive(clap::Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Build an approved application into one fingerprinted, verified, signed copy per recipient (operators).
    Build(BuildArgs),
    /// What a build would generalise and suppress, and the attack it would face, before any file exists.
    Plan(super::release_plan::PlanArgs),
    /// Check a downloaded copy: the manifest's signature and every file's SHA-256.
    Verify(VerifyArgs),
    /// Releases in the release zone.
    List(ListArgs),
    /// Declare that the data received under an approval has been deleted (recipients).
    DeclareDeleted(DeclareArgs),
    /// Serve the release zone to researchers: gRPC ReleaseService and the HTTPS download endpoint.
    Serve(super::release_serve::ServeArgs),
    /// Download a release copy (a recipient, with a two-factor session).
    Download(super::release_download::DownloadArgs),
    /// Replace the release zone's manifest key (the zone's account, the release service stopped): the old private
    /// key is destroyed, its public half kept under release/retired/ so copies built before still verify.
    RotateKey(RotateKeyArgs),
}

/// Arguments of `tokumei release rotate-key`.
#[derive(clap::Args, Debug)]
pub struct RotateKeyArgs {
    /// The policy service the rotation is recorded with (as `release serve`).
    #[command(flatten)]
    pub link: super::release_serve::LinkOptions,
}

/// Arguments of `tokumei release build`.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The approved application (file channel).
    #[arg(long, required_unless_present = "order")]
    pub application: Option<String>,
    /// Build only for these recipients (default: every recipient the approval names).
    #[arg(long = "recipient")]
    pub recipients: Vec<String>,
    /// Build only this part of the approved scope: TABLE=col1,col2 (repeatable; default: everything approved).
    #[arg(long = "table", value_name = "TABLE=COLUMNS")]
    pub tables: Vec<String>,
    /// Finish the release zone's half of a build order whose core half is done (after an interrupted build).
    #[arg(long, conflicts_with_all = ["application", "recipients", "tables"])]
    pub order: Option<u64>,
    /// The release service's gRPC address (https://HOST:PORT), which finishes the copies.
    #[arg(long = "release-server", env = "TOKUMEI_RELEASE_URL")]
    pub release_server: String,
    /// CA the release service's certificate must chain to (default: the policy service's CA).
    #[arg(long = "release-ca")]
    pub release_ca: Option<PathBuf>,
    /// The policy service and the session.
    #[command(flatten)]
    pub service: tokumei_client::policy::ServiceOptions,
    /// How long to wait for the core.
    #[command(flatten)]
    pub wait: tokumei_client::core_orders::WaitOptions,
}

/// Arguments of `tokumei release verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Directory holding a copy (manifest.json, manifest.sig and the files).
    pub dir: PathBuf,
    /// The release zone's manifest key (hex, or a file holding it). Default: $TOKUMEI_HOME/release/manifest.pub if
    /// present.
    #[arg(long = "public-key")]
    pub public_key: Option<String>,
}

/// Arguments of `tokumei release list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The release service's gRPC address (https://HOST:PORT).
    #[arg(long)]
    pub server: String,
    /// CA certificate (PEM) the release service's certificate must chain to.
    #[arg(long)]
    pub ca: PathBuf,
    /// Only releases of this application.
    #[arg(long)]
    pub application: Option<String>,
    /// The session: your own copies, and the releases of applications you may see.
    #[command(flatten)]
    pub policy: PolicyOptions,
}

/// Arguments of `tokumei release declare-deleted`.
#[derive(clap::Args, Debug)]
pub struct DeclareArgs {
    /// The release service's gRPC address (https://HOST:PORT).
    #[arg(long)]
    pub server: String,
    /// CA certificate (PEM) the release service's certificate must chain to.
    #[arg(long)]
    pub ca: PathBuf,
    /// The application whose data was deleted.
    #[arg(long)]
    pub application: String,
    /// What was deleted, where and how.
    #[arg(long)]
    pub statement: String,
    /// The recipient's session.
    #[command(flatten)]
    pub policy: PolicyOptions,
}

/// Runs a `tokumei release` subcommand.
pub fn run(command: ReleaseCommand, json: bool) -> Result<()> {
    match command {
        ReleaseCommand::Build(a) => build(a, json),
        ReleaseCommand::Plan(a) => super::release_plan::run(a, json),
        ReleaseCommand::Verify(a) => verify(a, json),
        ReleaseCommand::List(a) => list(a, json),
        ReleaseCommand::DeclareDeleted(a) => declare(a, json),
        ReleaseCommand::Serve(a) => super::release_serve::run(a, json),
        ReleaseCommand::Download(a) => super::release_download::run(a, json),
        ReleaseCommand::RotateKey(a) => rotate_key(a, json),
    }
}

/// `tokumei release rotate-key`: the policy service is reached first (an unreachable one stops the rotation before
/// the key changes), the key replaced, then `release.key_rotated` recorded through the zone's link.
fn rotate_key(a: RotateKeyArgs, json: bool) -> Result<()> {
    tokumei_ingest::tls::install_crypto_provider();
    let home = tokumei_ingest::home::tokumei_home();
    runtime()?.block_on(async {
        let link = tokumei_release::delivery::PolicyLink::connect(&a.link.config())
            .await
            .map_err(|e| anyhow::anyhow!("[POLICY_UNAVAILABLE] {e}"))?;
        let (old, new) = tokumei_policy::service_key::rotate(&manifest::manifest_key_path(&home)).map_err(reason)?;
        let event = tokumei_policy::audit_ledger::AuditEvent::new(
            "release-zone",
            "release.key_rotated",
            "key manifest",
            tokumei_policy::audit_ledger::Outcome::Ok,
        )
        .source("cli")
        .details(serde_json::json!({"old_key_id": old.key_id(), "new_key_id": new.key_id()}));
        let seq = link.record(&event).await.map_err(|s| {
            anyhow::anyhow!(
                "[{}] the rotation could not be recorded",
                tokumei_release::delivery::policy_link::reason_of(&s)
            )
        })?;
        let out = serde_json::json!({
            "old_key_id": old.key_id(),
            "new_key_id": new.key_id(),
            "public_key": new.to_hex(),
            "audit_seq": seq,
        });
        crate::output::emit(json, &out, |_| {
            println!(
                "manifest key rotated: {} → {} (copies signed by the old key still verify here; recipients verifying \
                 elsewhere need the new public key {}; audit entry {seq})",
                old.key_id(),
                new.key_id(),
                new.to_hex()
            )
        })
    })
}

/// `tokumei release build`: runs the build client ([`tokumei_client::release_build`]) and prints the release.
fn build(a: BuildArgs, json: bool) -> Result<()> {
    let request = tokumei_client::release_build::BuildRequest {
        application: a.application.as_deref(),
        order: a.order,
        recipients: &a.recipients,
        tables: parse_tables(&a.tables)?,
        release_server: &a.release_server,
        release_ca: a.release_ca.as_deref(),
        service: &a.service,
        wait: &a.wait,
    };
    let (order, outcome) = runtime()?.block_on(tokumei_client::release_build::build(&request, !json))?;
    if json {
        let mut out = serde_json::to_value(&outcome)?;
        out["order"] = serde_json::json!(order);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_outcome(&outcome);
        println!("  core order {order}");
    }
    Ok(())
}

fn print_outcome(outcome: &builder::BuildOutcome) {
    println!(
        "提供データ / release {} of {} built for {} recipient(s): {} patients, {} suppressed",
        outcome.release,
        outcome.application,
        outcome.recipients.len(),
        outcome.patients,
        outcome.suppressed_patients
    );
    for p in &outcome.protection {
        let generalised = p
            .generalisation
            .iter()
            .map(|(q, l)| format!("{q}@{l}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "  {:<12} {:>8} rows  classes {:>5}  min class {:>4}  marked {:.3} % of cells {}",
            p.table,
            p.rows,
            p.classes,
            p.min_class_size,
            p.marked_cell_fraction * 100.0,
            generalised
        );
    }
    println!("  files per copy: {}", outcome.files.join(", "));
}

fn parse_tables(args: &[String]) -> Result<Vec<TableRequest>> {
    args.iter()
        .map(|a| {
            let (table, columns) = a
                .split_once('=')
                .with_context(|| format!("--table expects TABLE=col1,col2, got {a:?}"))?;
            Ok(TableRequest {
                table: table.trim().to_owned(),
                columns: columns
                    .split(',')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect(),
            })
        })
        .collect()
}

/// The keys a copy may be signed with: the one given, else the release zone's current and retired manifest keys
/// under `$TOKUMEI_HOME/release` (none: the copy is only checked for self-consistency).
fn trusted_keys(arg: Option<&str>) -> Result<Option<Vec<ServicePublicKey>>> {
    let text = match arg {
        Some(a) if Path::new(a).exists() => std::fs::read_to_string(a).with_context(|| format!("reading {a}"))?,
        Some(a) => a.to_owned(),
        None => {
            let home = tokumei_ingest::home::tokumei_home();
            return match tokumei_release::zone::manifest_public_keys(&home.join("release")) {
                Ok(keys) => Ok(Some(keys)),
                Err(tokumei_release::ReleaseError::NotFound(_)) => Ok(None),
                Err(e) => Err(tokumei_client::release_reason(e)),
            };
        }
    };
    Ok(Some(vec![ServicePublicKey::from_hex(text.trim()).map_err(reason)?]))
}

fn verify(a: VerifyArgs, json: bool) -> Result<()> {
    let trusted = trusted_keys(a.public_key.as_deref())?;
    let v = manifest::verify_dir(&a.dir, trusted.as_deref()).map_err(tokumei_client::release_reason)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: release {} for {} (application {}), {} files, SHA-256 and signature OK (key {}{})",
            a.dir.display(),
            v.manifest.release,
            v.manifest.recipient,
            v.manifest.application,
            v.files_checked,
            v.key_id,
            if v.trusted_key {
                ", the trusted platform key"
            } else {
                "; no trusted key given: self-consistent only"
            }
        );
        println!(
            "  privacy model (k={}, k^m with m={}) over the whole record (suppression ≤ {:.1} %), expires {}",
            v.manifest.privacy_model.k,
            v.manifest.privacy_model.m,
            v.manifest.privacy_model.max_suppression * 100.0,
            v.manifest.expires_on
        );
    }
    Ok(())
}

/// `tokumei release list`: a client of the release service (`ListReleases`).
fn list(a: ListArgs, json: bool) -> Result<()> {
    tokumei_ingest::tls::install_crypto_provider();
    let session = crate::commands::access::session_token(&a.policy)?;
    let ca = std::fs::read(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    runtime()?.block_on(async {
        use tokumei_client::refused;
        use tokumei_client::release::{authed, bearer, connect};
        let mut client = connect(&a.server, &ca).await?;
        let releases = client
            .list_releases(authed(
                &bearer(&session)?,
                tokumei_proto::release::v1::ListReleasesRequest {
                    application: a.application.clone().unwrap_or_default(),
                },
            ))
            .await
            .map_err(refused)?
            .into_inner()
            .releases;
        if json {
            let rows: Vec<_> = releases
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "release": r.id, "application": r.application, "built_at": r.built_at,
                        "expires_on": r.expires_on, "recipients": r.recipients, "standing": r.standing,
                        "files": r.files.iter().map(|f| &f.name).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            for r in &releases {
                println!(
                    "{}  {}  built {}  expires {}  {}  recipients {}",
                    r.id,
                    r.application,
                    r.built_at,
                    r.expires_on,
                    r.standing,
                    r.recipients.join(",")
                );
            }
        }
        Ok(())
    })
}

/// `tokumei release declare-deleted`: a client of the release service (`DeclareDeletion`), from the recipient's
/// machine with their session and the CA only.
fn declare(a: DeclareArgs, json: bool) -> Result<()> {
    tokumei_ingest::tls::install_crypto_provider();
    let session = crate::commands::access::session_token(&a.policy)?;
    let ca = std::fs::read(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    runtime()?.block_on(async {
        use tokumei_client::refused;
        use tokumei_client::release::{authed, bearer, connect};
        let mut client = connect(&a.server, &ca).await?;
        let audit_seq = client
            .declare_deletion(authed(
                &bearer(&session)?,
                tokumei_proto::release::v1::DeclareDeletionRequest {
                    application_id: a.application.clone(),
                    statement: a.statement.clone(),
                },
            ))
            .await
            .map_err(refused)?
            .into_inner()
            .audit_seq;
        if json {
            println!(
                "{}",
                serde_json::json!({"application": a.application, "audit_seq": audit_seq})
            );
        } else {
            println!("deletion of {} declared (audit entry {audit_seq})", a.application);
        }
        Ok(())
    })
}
