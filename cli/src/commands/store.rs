//! `tokumei store ...`: operator commands on the core store.

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::output::{emit, runtime};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use tokumei_ingest::config::Config;
use tokumei_ingest::home::tokumei_home;
use tokumei_ingest::server::open_key_service;
use tokumei_policy::{Actor, Policy};
use tokumei_proto::spool::v1::{PatientRequestEntry, RequestKind};
use tokumei_store::core::WriterLock;
use tokumei_store::{Store, compaction, encryption, status};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Tables, row counts, files, bytes and the last batch applied.
    Status {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Session (an operator's) and policy database.
        #[command(flatten)]
        policy: PolicyOptions,
    },
    /// Compact small files now (the running core also does this on a schedule).
    Compact {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Session (an operator's) and policy database.
        #[command(flatten)]
        policy: PolicyOptions,
    },
    /// Erase one patient from every table and from disk, and write an erasure certificate. Hospitals normally
    /// send erasures through the gateway; this is for requests that reach the operator directly.
    Erase {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Session (an operator's) and policy database.
        #[command(flatten)]
        policy: PolicyOptions,
        /// Linkage key (64 hex characters); repeatable.
        #[arg(long = "linkage-key", required_unless_present = "hospital_pseudonym")]
        linkage_keys: Vec<String>,
        /// Hospital pseudonym (64 hex characters).
        #[arg(long)]
        hospital_pseudonym: Option<String>,
        /// The request's reference, recorded in the certificate.
        #[arg(long)]
        request_id: String,
    },
    /// Rotate the key-encryption key and re-wrap the data keys (no data is rewritten).
    RotateKeys {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Session (an operator's) and policy database.
        #[command(flatten)]
        policy: PolicyOptions,
        /// Also start a new data key for objects written from now on.
        #[arg(long)]
        new_data_key: bool,
    },
}

/// Opens the configured key service and the store.
pub async fn open_store(cfg: &Config, home: &Path) -> anyhow::Result<Store> {
    let keys = open_key_service(cfg, home, tokumei_ingest::keyservice::KeyZone::Core).await?;
    Ok(Store::open(&cfg.store, home, keys.as_ref()).await?)
}

fn hex32(s: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    let b = hex::decode(s).map_err(|_| anyhow::anyhow!("{what} must be 64 hex characters"))?;
    anyhow::ensure!(b.len() == 32, "{what} must be 64 hex characters");
    Ok(b)
}

/// An operator's session, authorised for core operations before any key is opened (refusals audited).
async fn operator(options: &PolicyOptions) -> anyhow::Result<(Policy, Actor)> {
    let policy = open_policy(options).await?;
    let who = actor(&policy, options).await?;
    policy.admit_core_operation(&who, CLI).await.map_err(reason)?;
    Ok((policy, who))
}

/// Runs a core operation and audits its outcome as `core.<operation>` with `details` of the result (counts and
/// references only). The operation's own error is returned after the failure is recorded.
async fn audited<T>(
    policy: &Policy,
    who: &Actor,
    operation: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
    details: impl FnOnce(&T) -> serde_json::Value,
) -> anyhow::Result<T> {
    let result = work.await;
    let outcome = match &result {
        Ok(v) => Ok(details(v)),
        Err(_) => Err("CORE_OPERATION_FAILED"),
    };
    policy
        .record_core_operation(who, operation, CLI, outcome)
        .await
        .map_err(reason)?;
    result
}

pub fn run(cmd: StoreCommand, json: bool) -> anyhow::Result<()> {
    let home = tokumei_home();
    let rt = runtime()?;
    match cmd {
        StoreCommand::Status { config, policy } => {
            let cfg = Config::load(config.as_deref())?;
            rt.block_on(async {
                operator(&policy).await?;
                let store = open_store(&cfg, &home).await?;
                let s = status::status(&store).await?;
                emit(json, &s, |s| {
                    println!("store {} ({} data key(s))", s.location, s.data_keys);
                    println!(
                        "  {:<13} {:>8} {:>12} {:>6} {:>12}  {:<22} last batch",
                        "table", "version", "rows", "files", "bytes", "applied through"
                    );
                    for t in &s.tables {
                        println!(
                            "  {:<13} {:>8} {:>12} {:>6} {:>12}  {:<22} {}",
                            t.table,
                            t.version,
                            t.rows,
                            t.files,
                            t.bytes,
                            t.applied_through.as_deref().unwrap_or("-"),
                            t.last_batch.as_deref().unwrap_or("-")
                        );
                    }
                    if let Some(b) = s.bytes_on_disk {
                        println!("  {b} bytes on disk (encrypted)");
                    }
                })
            })
        }
        StoreCommand::Compact { config, policy } => {
            let cfg = Config::load(config.as_deref())?;
            rt.block_on(async {
                let (policy, who) = operator(&policy).await?;
                let _lock = WriterLock::acquire(&home)?;
                let work = async {
                    let store = open_store(&cfg, &home).await?;
                    Ok(compaction::compact(&store, 0).await?)
                };
                let done = audited(
                    &policy,
                    &who,
                    "compact",
                    work,
                    |d: &Vec<_>| serde_json::json!({"tables_compacted": d.len()}),
                )
                .await?;
                emit(json, &done, |d| {
                    if d.is_empty() {
                        println!("nothing to compact");
                    }
                    for t in d {
                        println!(
                            "{}: {} small files → {} file(s); {} replaced files deleted",
                            t.table, t.small_files, t.files_added, t.files_deleted
                        );
                    }
                })
            })
        }
        StoreCommand::Erase {
            config,
            linkage_keys,
            hospital_pseudonym,
            request_id,
            policy,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let mut keys = Vec::new();
            for k in &linkage_keys {
                keys.push(hex32(k, "--linkage-key")?);
            }
            let pseudonym = hospital_pseudonym
                .as_deref()
                .map(|p| hex32(p, "--hospital-pseudonym"))
                .transpose()?;
            rt.block_on(async {
                let (policy, who) = operator(&policy).await?;
                let _lock = WriterLock::acquire(&home)?;
                let store = open_store(&cfg, &home).await?;
                let key_count = keys.len() + usize::from(pseudonym.is_some());
                let entry = PatientRequestEntry {
                    hospital_code: "operator".into(),
                    request_id,
                    kind: RequestKind::Erase as i32,
                    linkage_keys: keys,
                    hospital_pseudonym: pseudonym.unwrap_or_default(),
                    matched_by: "operator".into(),
                    id4_keys: Vec::new(),
                };
                let reference = entry.request_id.clone();
                let work = async {
                    tokumei_store::apply::carry_out(&store, &entry)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("an erasure produced no certificate"))
                };
                // The ledger names the request and the counts, never the keys.
                let cert = audited(&policy, &who, "erase", work, |c| {
                    serde_json::json!({
                        "request_id": reference, "keys": key_count,
                        "rows_removed": c.rows_removed, "files_destroyed": c.files_destroyed,
                    })
                })
                .await?;
                emit(json, &cert, |c| {
                    println!(
                        "erased request {}: {} rows removed, {} files destroyed; certificate appended to {}",
                        c.request_id,
                        c.rows_removed,
                        c.files_destroyed,
                        store.erasure_log_path().display()
                    );
                    for t in &c.tables {
                        println!(
                            "  {:<13} {:>8} rows {:>4} files",
                            t.table, t.rows_removed, t.files_destroyed
                        );
                    }
                })
            })
        }
        StoreCommand::RotateKeys {
            config,
            new_data_key,
            policy,
        } => {
            let cfg = Config::load(config.as_deref())?;
            rt.block_on(async {
                let (policy, who) = operator(&policy).await?;
                let work = async {
                    let keys = open_key_service(&cfg, &home, tokumei_ingest::keyservice::KeyZone::Core).await?;
                    let store = Store::open(&cfg.store, &home, keys.as_ref()).await?;
                    Ok(encryption::data_keys::rotate(store.raw_store().as_ref(), keys.as_ref(), new_data_key).await?)
                };
                let r = audited(&policy, &who, "rotate_keys", work, |r| {
                    serde_json::json!({"kek_version": r.kek_version, "rewrapped": r.rewrapped, "new_data_key": r.new_data_key.is_some()})
                })
                .await?;
                emit(json, &r, |r| {
                    println!(
                        "key-encryption key now at version {}; {} data key(s) re-wrapped, no data rewritten{}",
                        r.kek_version,
                        r.rewrapped,
                        r.new_data_key
                            .map(|k| format!("; new objects use data key {k}"))
                            .unwrap_or_default()
                    )
                })
            })
        }
    }
}
