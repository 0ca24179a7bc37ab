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

use crate::commands::access::{PolicyOptions, open_policy};
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

impl KeyPurpose {
    fn name(self) -> &'static str {
        match self {
            KeyPurpose::Session => "session",
            KeyPurpose::Bans => "bans",
            KeyPurpose::Directory => "directory",
            KeyPurpose::CoreOrder => "core-order",
            KeyPurpose::Ledger => "ledger",
        }
    }

    fn path(self, home: &std::path::Path) -> PathBuf {
        use tokumei_policy::service_key as k;
        match self {
            KeyPurpose::Session => k::session_key_path(home),
            KeyPurpose::Bans => k::bans_key_path(home),
            KeyPurpose::Directory => k::directory_key_path(home),
            KeyPurpose::CoreOrder => k::core_order_key_path(home),
            KeyPurpose::Ledger => k::default_key_path(home),
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

fn rotate_key(args: RotateArgs, json: bool) -> Result<()> {
    let home = tokumei_ingest::home::tokumei_home();
    let path = args.purpose.path(&home);
    // A running service would go on signing with the key being retired: refused while one holds the keys.
    let _keys = tokumei_policy::service_key::KeysInUse::rotating(&home).map_err(crate::commands::access::reason)?;
    runtime()?.block_on(async {
        // The ledger is opened first: a database that cannot be reached stops the rotation before a key changes.
        // It holds the ledger key as it was, so the rotation's entry (which names the new key) is signed by the old.
        let policy = open_policy(&args.policy).await?;
        if matches!(args.purpose, KeyPurpose::Ledger) {
            let legacy = policy
                .legacy_sealed_seeds()
                .await
                .map_err(crate::commands::access::reason)?;
            anyhow::ensure!(
                legacy == 0,
                "[LEGACY_SEEDS] {legacy} account(s) have a second factor sealed by an earlier version under a key \
                 derived from the ledger key; it is re-sealed at their next sign-in (or reset their credentials) — \
                 rotating now would lose it"
            );
        }
        let previous = tokumei_policy::ServiceKey::load_or_create(&path).map_err(crate::commands::access::reason)?;
        let (old, new) = tokumei_policy::service_key::rotate(&path).map_err(crate::commands::access::reason)?;
        let event = tokumei_policy::audit_ledger::AuditEvent::new(
            "policy-service",
            "key.rotated",
            format!("key {}", args.purpose.name()),
            tokumei_policy::audit_ledger::Outcome::Ok,
        )
        .source("cli")
        .details(serde_json::json!({
            "old_key_id": old.key_id(),
            "new_key_id": new.key_id(),
            "new_public_key": new.to_hex(),
        }));
        if let Err(e) = policy.audit(event).await {
            // No key may be in force that the ledger does not name: the old one goes back.
            tokumei_policy::service_key::undo_rotation(&path, &previous).map_err(crate::commands::access::reason)?;
            return Err(crate::commands::access::reason(e)
                .context("the rotation could not be recorded; the old key is in force again"));
        }
        let out = serde_json::json!({
            "purpose": args.purpose.name(),
            "old_key_id": old.key_id(),
            "new_key_id": new.key_id(),
            "public_key": new.to_hex(),
        });
        crate::output::emit(json, &out, |_| {
            println!(
                "{} key rotated: {} → {} (restart the policy service; new public key {})",
                args.purpose.name(),
                old.key_id(),
                new.key_id(),
                new.to_hex()
            )
        })
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
                        Some(path) => tls.with_zone_pins(
                            tokumei_policy::grpc::zone_pins::ZonePins::load(&path)
                                .map_err(crate::commands::access::reason)?,
                        ),
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    // rustls needs a process-wide crypto provider when several are compiled in (ring is tokumei's).
    tokumei_ingest::tls::install_crypto_provider();
    // Held (shared with other services of this home) while the service runs, so no key is rotated under it.
    let _keys = tokumei_policy::service_key::KeysInUse::serving(&tokumei_ingest::home::tokumei_home())
        .map_err(crate::commands::access::reason)?;
    runtime()?.block_on(async {
        // The core-order key is the service's alone: no other command loads it (see `Policy::with_core_order_key`).
        let core_order_key = tokumei_policy::ServiceKey::load_or_create(
            &tokumei_policy::service_key::core_order_key_path(&tokumei_ingest::home::tokumei_home()),
        )
        .map_err(crate::commands::access::reason)?;
        // So is the session key: people log in here and nowhere else.
        let session_key = tokumei_policy::ServiceKey::load_or_create(&tokumei_policy::service_key::session_key_path(
            &tokumei_ingest::home::tokumei_home(),
        ))
        .map_err(crate::commands::access::reason)?;
        // And the keys of what it publishes: ban lists for other processors, the hospital directory for the gateway.
        let home = tokumei_ingest::home::tokumei_home();
        let load = |path: &std::path::Path| {
            tokumei_policy::ServiceKey::load_or_create(path).map_err(crate::commands::access::reason)
        };
        let bans_key = load(&tokumei_policy::service_key::bans_key_path(&home))?;
        let directory_key = load(&tokumei_policy::service_key::directory_key_path(&home))?;
        // And the key that seals second-factor seeds: only the service checks codes.
        let seed_key = load(&tokumei_policy::service_key::totp_seal_key_path(&home))?;
        let policy = open_policy(&args.policy)
            .await?
            .with_seed_key(&seed_key)
            .with_core_order_key(core_order_key)
            .with_session_key(session_key)
            .with_bans_key(bans_key)
            .with_directory_key(directory_key);
        let server = bind(policy, args.listen, tls).await.context("policy service")?;
        // Machine-readable readiness line for scripts and tests: printed once the port accepts connections.
        println!("policy service listening on {}", server.local_addr());
        server.serve(termination_signal()).await.context("policy service")?;
        Ok(())
    })
}
