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
use tokumei_ingest::server::termination_signal;
use tokumei_policy::grpc::{ServerTls, bind};

use crate::commands::access::{PolicyOptions, open_policy};
use crate::output::runtime;

/// `tokumei policy ...`
#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Serve `tokumei.policy.v1.PolicyService` until SIGINT/SIGTERM.
    Serve(ServeArgs),
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
    #[command(flatten)]
    policy: PolicyOptions,
}

/// Runs `tokumei policy ...`.
pub fn run(command: PolicyCommand, _json: bool) -> Result<()> {
    match command {
        PolicyCommand::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key, args.insecure_dev) {
        (Some(cert), Some(key), false) => {
            let tls = ServerTls::from_files(cert, key)?;
            Some(match &args.zone_client_ca {
                Some(ca) => {
                    tls.with_zone_client_ca(std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?)
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
        let policy = open_policy(&args.policy)
            .await?
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
