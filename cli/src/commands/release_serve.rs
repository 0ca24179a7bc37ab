//! `tokumei release serve`: the release zone's researcher-facing services — gRPC `ReleaseService` (list,
//! request a download, declare deletion) and the HTTPS download endpoint — over TLS.
//!
//! It opens no policy database and no committee key: it asks the policy service (`--policy-url`) over mutual
//! TLS with the release zone's certificate (`--zone-cert`, CN `tokumei-release`) for every authentication,
//! decision and ledger entry (sessions from `tokumei user login` are forwarded there). It opens the key service
//! of `tokumei.toml` under the release zone's key (which unwraps each release's data key). Once both ports are bound it prints `release service listening on grpc=ADDR
//! https=ADDR` (with `--json`: `{"grpc": "...", "https": "...", "public_url": "..."}` on one line); SIGTERM
//! or Ctrl-C stop it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tokumei_ingest::config::Config;
use tokumei_ingest::home::tokumei_home;
use tokumei_ingest::server::{open_key_service, termination_signal};
use tokumei_release::delivery::{DeliveryConfig, DeliveryTls, PolicyLink, PolicyLinkConfig, serve};
use tokumei_release::zone::ReleaseZone;

use crate::output::runtime;

/// Arguments of `tokumei release serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address of the gRPC ReleaseService (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:50071")]
    grpc_listen: SocketAddr,
    /// Address of the HTTPS download endpoint (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    https_listen: SocketAddr,
    /// The servers' certificate chain (PEM), used by both listeners.
    #[arg(long)]
    cert: PathBuf,
    /// The servers' private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Base of the download URLs given to clients (default https://<bound HTTPS address>).
    #[arg(long)]
    public_url: Option<String>,
    /// Lifetime of a download token, in seconds (one download of one file, resumable until then).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    token_ttl: u64,
    /// Configuration file (key service; default: built-in defaults under $TOKUMEI_HOME).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the core writes build packages sealed to this zone (default $TOKUMEI_HOME/outbox).
    #[arg(long)]
    outbox: Option<PathBuf>,
    #[command(flatten)]
    link: LinkOptions,
}

/// How the release zone reaches the policy service.
#[derive(clap::Args, Debug)]
pub struct LinkOptions {
    /// The policy service (`https://host:port`).
    #[arg(long, env = "TOKUMEI_POLICY_URL", default_value = "https://127.0.0.1:50061")]
    policy_url: String,
    /// CA of the policy service's certificate (default $TOKUMEI_HOME/pki/ca.crt).
    #[arg(long, env = "TOKUMEI_POLICY_CA")]
    policy_ca: Option<PathBuf>,
    /// The release zone's client certificate, CN tokumei-release (default $TOKUMEI_HOME/pki/release-zone.crt).
    #[arg(long)]
    zone_cert: Option<PathBuf>,
    /// Its private key (default $TOKUMEI_HOME/pki/release-zone.key).
    #[arg(long)]
    zone_key: Option<PathBuf>,
}

impl LinkOptions {
    pub(crate) fn config(&self) -> PolicyLinkConfig {
        let pki = tokumei_ingest::pki::PkiLayout::new(tokumei_home().join("pki"));
        PolicyLinkConfig {
            url: self.policy_url.clone(),
            ca: self.policy_ca.clone().unwrap_or_else(|| pki.ca_cert()),
            cert: self.zone_cert.clone().unwrap_or_else(|| pki.release_cert()),
            key: self.zone_key.clone().unwrap_or_else(|| pki.release_key()),
        }
    }
}

/// Runs `tokumei release serve`.
pub fn run(args: ServeArgs, json: bool) -> Result<()> {
    crate::output::init_service_logging();
    // rustls needs a process-wide crypto provider when several are compiled in (ring is tokumei's).
    tokumei_ingest::tls::install_crypto_provider();
    let tls = DeliveryTls::from_files(&args.cert, &args.key).context("TLS certificate")?;
    let cfg = Config::load(args.config.as_deref())?;
    let home = tokumei_home();
    runtime()?.block_on(async {
        let policy = PolicyLink::connect(&args.link.config())
            .await
            .context("the policy service")?;
        let keys = open_key_service(&cfg, &home, tokumei_ingest::keyservice::KeyZone::Release)
            .await
            .context("key service")?;
        // Finishing builds: the manifest key signs each copy, the intake key opens the core's packages (created on
        // first start; its public half, release/intake.pub, is what the core pins).
        let manifest_key =
            tokumei_policy::ServiceKey::load_or_create(&tokumei_release::manifest::manifest_key_path(&home))
                .map_err(|e| anyhow::anyhow!("[{}] the manifest key: {e}", e.reason()))?;
        let intake = tokumei_release::intake::load_or_create(&home, keys.as_ref())
            .await
            .map_err(|e| anyhow::anyhow!("[{}] the intake key: {e}", e.reason()))?;
        // The policy service signs the key into every build order: the core seals to what the zone published here.
        policy.publish_intake_key(intake.public_hex()).await.map_err(|s| {
            anyhow::anyhow!(
                "[{}] publishing the intake key",
                tokumei_release::delivery::policy_link::reason_of(&s)
            )
        })?;
        let builds = tokumei_release::delivery::BuildDesk {
            manifest_key: std::sync::Arc::new(manifest_key),
            intake: std::sync::Arc::new(intake),
            outbox: args
                .outbox
                .clone()
                .unwrap_or_else(|| tokumei_release::intake::default_outbox(&home)),
        };
        let zone = ReleaseZone::new(&home, keys);
        let config = DeliveryConfig {
            grpc_listen: args.grpc_listen,
            https_listen: args.https_listen,
            tls,
            public_url: args.public_url.clone(),
            token_ttl: Duration::from_secs(args.token_ttl),
            builds: Some(builds),
        };
        let running = serve(config, policy, zone, termination_signal())
            .await
            .context("release service")?;
        // Readiness line for scripts and tests: printed once both ports accept connections.
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "grpc": running.grpc.to_string(),
                    "https": running.https.to_string(),
                    "public_url": running.public_url,
                })
            );
        } else {
            println!(
                "release service listening on grpc={} https={} (downloads at {})",
                running.grpc, running.https, running.public_url
            );
        }
        running.wait().await.context("release service")?;
        Ok(())
    })
}
