//! The platform's services as the demo runs them from chapter 3 on: the installer's bootstrap (once, on the host),
//! then the policy service, the core taking orders (listening on nothing) and the release service, each a process
//! of its own on loopback with the demo's home. Everything the chapters do after that goes through them: the demo
//! holds sessions and the CA, as the people's desks do.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokumei_keys::pki::PkiLayout;
use tokumei_platform::config::{Config, CoreOrdersConfig};
use tokumei_policy::identity::directory::invitation_claim;
use zeroize::Zeroizing;

use crate::desk::Desk;
use crate::process::{Service, run_to_end, start};

/// The running services and where they listen.
pub struct Platform {
    /// The policy service's desk view (its URL and CA).
    pub desk: Desk,
    /// The release service's gRPC URL (downloads, traces, risk, builds' release half).
    pub release_url: String,
    /// Kept running until the demo ends; dropped (SIGTERM) in reverse order of start.
    running: Vec<Service>,
}

impl Platform {
    /// Keeps `service` running with the platform, stopped before every service started earlier.
    pub fn keep(&mut self, service: Service) {
        self.running.push(service);
    }

    /// Stops the services (the release service first, the policy service last) and checks each stopped cleanly.
    pub fn stop(mut self) -> Result<()> {
        while let Some(service) = self.running.pop() {
            service.stop()?;
        }
        Ok(())
    }
}

impl Drop for Platform {
    /// On an error path too, the services stop in the reverse order of their start: the release service and the
    /// core before the policy service they ask.
    fn drop(&mut self) {
        while let Some(service) = self.running.pop() {
            drop(service);
        }
    }
}

/// The two administrators' invitation codes, from the installer's bootstrap.
pub struct Bootstrapped {
    /// aoi's code.
    pub first: Zeroizing<String>,
    /// ren's code.
    pub second: Zeroizing<String>,
}

/// The installer's one act on the host (`tokumei user bootstrap`, a process of its own): the first two
/// administrators, each with a code made on their side. Allowed once per installation.
pub fn bootstrap(home: &Path) -> Result<Bootstrapped> {
    let (first, first_claim) = invitation_claim().map_err(tokumei_client::reason)?;
    let (second, second_claim) = invitation_claim().map_err(tokumei_client::reason)?;
    run_to_end(
        home,
        &[
            "--json",
            "user",
            "bootstrap",
            "--username",
            "aoi",
            "--name",
            "Aoi Sasaki (administrator)",
            "--claim",
            &first_claim,
            "--second-username",
            "ren",
            "--second-name",
            "Ren Fujita (administrator)",
            "--second-claim",
            &second_claim,
            "--organisation",
            "platform",
        ],
    )?;
    Ok(Bootstrapped {
        first: Zeroizing::new(first.expose().to_owned()),
        second: Zeroizing::new(second.expose().to_owned()),
    })
}

/// Starts the policy service, the core with `[core.orders]` and the release service on `home`.
pub fn start_services(home: &Path, cfg: &Config, pki: &PkiLayout) -> Result<Platform> {
    let path = |p: PathBuf| p.display().to_string();
    let (policy, line) = start(
        home,
        &[
            "policy",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &path(pki.gateway_cert()),
            "--tls-key",
            &path(pki.gateway_key()),
            "--zone-client-ca",
            &path(pki.ca_cert()),
        ],
    )?;
    let addr = line
        .strip_prefix("policy service listening on ")
        .with_context(|| format!("the policy service did not start: {line}"))?;
    let desk = Desk::new(&format!("https://{addr}"), &pki.ca_cert());
    let mut running = vec![policy];
    // The core's configuration pins the core-order key's public half (created by the policy service; read once,
    // here, by the installer).
    let public_key = std::fs::read_to_string(tokumei_policy::service_key::public_key_path(
        &tokumei_policy::service_key::core_order_key_path(home),
    ))?;
    let mut core_cfg = cfg.clone();
    core_cfg.core.ca = pki.ca_cert();
    core_cfg.core.cert = pki.core_cert();
    core_cfg.core.key = pki.core_key();
    core_cfg.core.orders = Some(CoreOrdersConfig {
        policy_url: desk.url.clone(),
        public_key: public_key.trim().to_owned(),
        ca: None,
        poll_ms: 200,
        release_key: None,
        outbox: None,
    });
    let config = home.join("core-orders.toml");
    std::fs::write(&config, toml::to_string(&core_cfg)?)?;
    let (core, line) = start(home, &["core", "run", "--config", &path(config.clone())])?;
    anyhow::ensure!(line.contains("orders from"), "the core did not start: {line}");
    running.push(core);
    let (release, line) = start(
        home,
        &[
            "--json",
            "release",
            "serve",
            "--grpc-listen",
            "127.0.0.1:0",
            "--https-listen",
            "127.0.0.1:0",
            "--cert",
            &path(pki.gateway_cert()),
            "--key",
            &path(pki.gateway_key()),
            "--config",
            &path(config),
            "--policy-url",
            &desk.url,
        ],
    )?;
    let listening: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("the release service did not start: {line}"))?;
    let grpc = listening["grpc"].as_str().context("the release service's address")?;
    let release_url = format!("https://{grpc}");
    running.push(release);
    Ok(Platform {
        desk,
        release_url,
        running,
    })
}
