//! `tokumei policy serve`: the committee zone's gRPC service (`tokumei.policy.v1.PolicyService`) for the
//! web console and other clients.
//!
//! It opens the same policy database, service key and `policy.toml` as the `user`, `apply` and `committee`
//! commands, so a session obtained over gRPC and one obtained with `tokumei user login` are equally valid.
//! TLS is the default (`--tls-cert`, `--tls-key`); plaintext needs `--insecure-dev` and a loopback address.
//! Once the port is bound it prints `policy service listening on ADDR` (scripts and tests wait for that
//! line); SIGTERM or Ctrl-C stop it after the requests in flight have finished.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tokumei_ingest::pki::PkiLayout;
use tokumei_ingest::server::termination_signal;
use tokumei_policy::grpc::{ServerTls, bind};

use tokumei_policy::on_home::PurposeKey;

use crate::commands::access::{PolicyOptions, reason};
use crate::output::runtime;

/// `tokumei policy ...`
#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Serve `tokumei.policy.v1.PolicyService` until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Replace one of the policy service's purpose keys (its account, on the committee host, with the service
    /// stopped): the old private key is destroyed, its public half kept under `policy/retired/`, and the
    /// rotation recorded in the audit ledger.
    RotateKey(RotateArgs),
}

/// Which key `tokumei policy rotate-key` replaces, and what rotating it means for its holders.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KeyPurpose {
    /// Session tokens: every session ends; people log in again.
    Session,
    /// Exported ban lists: partner processors trust the new `bans.pub`.
    Bans,
    /// The hospital directory: the gateway's `[gateway.directory] public_key` pins the new `directory.pub`; publish
    /// the directory again.
    Directory,
    /// Core orders: the core's `[core.orders] public_key` pins the new `core-order.pub`; orders still queued are
    /// refused by the core.
    CoreOrder,
    /// The audit ledger (`service.key`): entries from now on are signed with the new key; the rotation's own entry
    /// is signed with the old one and names the new public key, so an inspector who trusts the old key can follow.
    /// Entries signed before still verify (the retired public half is kept); inspectors verify bundles across the
    /// rotation with both keys.
    Ledger,
}

impl From<KeyPurpose> for PurposeKey {
    fn from(p: KeyPurpose) -> PurposeKey {
        match p {
            KeyPurpose::Session => PurposeKey::Session,
            KeyPurpose::Bans => PurposeKey::Bans,
            KeyPurpose::Directory => PurposeKey::Directory,
            KeyPurpose::CoreOrder => PurposeKey::CoreOrder,
            KeyPurpose::Ledger => PurposeKey::Ledger,
        }
    }
}

/// `tokumei policy rotate-key`
#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// The key to replace.
    #[arg(long, value_enum)]
    purpose: KeyPurpose,
    #[command(flatten)]
    policy: PolicyOptions,
}

/// `tokumei policy serve`
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// The server's certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Plaintext gRPC, allowed only on a loopback address. Development only: passwords and session tokens
    /// travel in clear.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_dev: bool,
    /// The CA that issues the zones' client certificates: the core (CN tokumei-core) then takes its orders here,
    /// and the release zone (CN tokumei-release) asks for its decisions, over mutual TLS. Without it neither can
    /// (needs TLS).
    #[arg(long, alias = "core-client-ca", requires = "tls_cert")]
    zone_client_ca: Option<PathBuf>,
    /// The zones' pinned certificates (JSON: CN → SHA-256 list; default `$TOKUMEI_HOME/pki/zone-pins.json`, written
    /// by `tokumei pki init`): only these are the core and the release zone, whatever else the CA issued.
    #[arg(long, requires = "zone_client_ca")]
    zone_pins: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyOptions,
}

/// Runs `tokumei policy ...`.
pub fn run(command: PolicyCommand, json: bool) -> Result<()> {
    match command {
        PolicyCommand::Serve(args) => serve(args),
        PolicyCommand::RotateKey(args) => rotate_key(args, json),
    }
}

/// `tokumei policy rotate-key`: the rotation is the policy zone's ([`tokumei_policy::on_home::rotate`]).
fn rotate_key(args: RotateArgs, json: bool) -> Result<()> {
    let purpose = PurposeKey::from(args.purpose);
    let home = tokumei_ingest::home::tokumei_home();
    let done = runtime()?
        .block_on(tokumei_policy::on_home::rotate(
            &home,
            args.policy.database.as_deref(),
            purpose,
        ))
        .map_err(reason)?;
    let out = serde_json::json!({
        "purpose": purpose.name(),
        "old_key_id": done.old.key_id(),
        "new_key_id": done.new.key_id(),
        "public_key": done.new.to_hex(),
    });
    crate::output::emit(json, &out, |_| {
        println!(
            "{} key rotated: {} → {} (restart the policy service; new public key {})",
            purpose.name(),
            done.old.key_id(),
            done.new.key_id(),
            done.new.to_hex()
        )
    })
}

fn serve(args: ServeArgs) -> Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key, args.insecure_dev) {
        (Some(cert), Some(key), false) => {
            let tls = ServerTls::from_files(cert, key)?;
            Some(match &args.zone_client_ca {
                Some(ca) => {
                    let tls =
                        tls.with_zone_client_ca(std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?);
                    let default = PkiLayout::new(tokumei_ingest::home::tokumei_home().join("pki")).zone_pins();
                    match args.zone_pins.clone().or_else(|| default.exists().then_some(default)) {
                        Some(path) => {
                            tls.with_zone_pins(tokumei_policy::grpc::zone_pins::ZonePins::load(&path).map_err(reason)?)
                        }
                        None => {
                            tracing::warn!(
                                "no zone pins (pki/zone-pins.json): any certificate of the zones' CA with a zone's \
                                 name is admitted as that zone"
                            );
                            tls
                        }
                    }
                }
                None => tls,
            })
        }
        (None, None, true) => {
            if !args.listen.ip().is_loopback() {
                bail!(
                    "--insecure-dev is only allowed on a loopback address (127.0.0.1 or ::1), not {}",
                    args.listen
                );
            }
            None
        }
        _ => bail!("give --tls-cert and --tls-key, or --insecure-dev to serve plaintext on loopback"),
    };
    crate::output::init_service_logging();
    // rustls needs a process-wide crypto provider when several are compiled in (ring is tokumei's).
    tokumei_ingest::tls::install_crypto_provider();
    runtime()?.block_on(async {
        let home = tokumei_ingest::home::tokumei_home();
        // The hold on the home's keys lives as long as the service: no key is rotated under it.
        let (policy, _keys_in_use) = tokumei_policy::on_home::open_service(&home, args.policy.database.as_deref())
            .await
            .map_err(reason)?;
        let server = bind(policy, args.listen, tls).await.context("policy service")?;
        // Machine-readable readiness line for scripts and tests: printed once the port accepts connections.
        println!("policy service listening on {}", server.local_addr());
        server.serve(termination_signal()).await.context("policy service")?;
        Ok(())
    })
}
