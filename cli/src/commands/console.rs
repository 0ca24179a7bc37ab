//! `tokumei console serve`: the web console (tokumei-console), a client of the policy and release services.
//! It prints `console listening on https://ADDR` (with `--json`: `{"url": "..."}` on one line) once it accepts
//! connections; SIGTERM or Ctrl-C stop it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tokumei_console::ConsoleConfig;
use tokumei_ingest::home::tokumei_home;
use tokumei_ingest::server::termination_signal;

use crate::output::runtime;

/// `tokumei console ...`
#[derive(clap::Subcommand, Debug)]
pub enum ConsoleCommand {
    /// Serve the console.
    Serve(ServeArgs),
}

/// Arguments of `tokumei console serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The console's certificate chain (PEM).
    #[arg(long, requires = "tls_key", conflicts_with = "insecure_dev")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Plaintext HTTP, for development on loopback only (refused on any other address).
    #[arg(long)]
    insecure_dev: bool,
    /// The policy service (`https://host:port`).
    #[arg(long, env = "TOKUMEI_POLICY_URL", default_value = "https://127.0.0.1:50061")]
    policy_url: String,
    /// CA of the policy service's certificate (default $TOKUMEI_HOME/pki/ca.crt).
    #[arg(long, env = "TOKUMEI_POLICY_CA")]
    policy_ca: Option<PathBuf>,
    /// The release service's gRPC address (`https://host:port`); without it, no downloads.
    #[arg(long)]
    release_url: Option<String>,
    /// CA of the release service's certificate (default: the policy service's).
    #[arg(long)]
    release_ca: Option<PathBuf>,
    /// Directory of the public registers operators publish from the console (default $TOKUMEI_HOME/console/published).
    #[arg(long)]
    published: Option<PathBuf>,
    /// The policy service's public key, against which released analysis outputs are checked (default
    /// $TOKUMEI_HOME/policy/service.pub when it exists).
    #[arg(long)]
    platform_key: Option<PathBuf>,
}

/// Runs `tokumei console ...`.
pub fn run(command: ConsoleCommand, json: bool) -> Result<()> {
    let ConsoleCommand::Serve(args) = command;
    crate::output::init_service_logging();
    let tls = match (args.tls_cert, args.tls_key, args.insecure_dev) {
        (Some(cert), Some(key), false) => Some((cert, key)),
        (None, None, true) => None,
        _ => anyhow::bail!("[TLS_REQUIRED] give --tls-cert and --tls-key, or --insecure-dev on loopback"),
    };
    let home = tokumei_home();
    let published = args.published.unwrap_or_else(|| home.join("console").join("published"));
    std::fs::create_dir_all(&published).with_context(|| format!("creating {}", published.display()))?;
    let config = ConsoleConfig {
        policy_url: args.policy_url,
        policy_ca: args.policy_ca.unwrap_or_else(|| home.join("pki").join("ca.crt")),
        release_url: args.release_url,
        release_ca: args.release_ca,
        tls,
        published: Some(published),
        platform_key: args.platform_key.or_else(|| {
            let default = home.join("policy").join("service.pub");
            default.exists().then_some(default)
        }),
    };
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    runtime()?.block_on(async {
        let running = tokumei_console::serve(&config, args.listen, termination_signal())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let url = format!("{scheme}://{}", running.addr);
        if json {
            println!("{}", serde_json::json!({ "url": url }));
        } else {
            println!("console listening on {url}");
        }
        running.task.await.context("console")?;
        Ok(())
    })
}
