//! The policy service on a loopback port inside this process, for the delivery benchmark (the demo runs the service
//! as a process of its own): the release zone then reaches it exactly as in production — over mutual TLS with its own
//! certificate — and holds no committee key or database.

use anyhow::{Context, Result};
use tokumei_keys::pki::PkiLayout;
use tokumei_policy::Policy;
use tokumei_policy::grpc::ServerTls;
use tokumei_release::delivery::{PolicyLink, PolicyLinkConfig};

/// A running policy service and the release zone's link to it; [`LocalPolicyService::stop`] ends it.
pub struct LocalPolicyService {
    /// The release zone's link (its certificate from the PKI).
    pub link: PolicyLink,
    /// Where it listens (`https://127.0.0.1:PORT`).
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tokumei_policy::grpc::ServeError>>,
}

/// Serves `policy` on 127.0.0.1 (a free port) with the PKI's server certificate, admitting the zones'
/// certificates from its CA, and connects the release zone's link.
pub async fn start(policy: Policy, pki: &PkiLayout) -> Result<LocalPolicyService> {
    tokumei_platform::tls::install_crypto_provider();
    let ca = std::fs::read(pki.ca_cert()).context("the PKI's CA certificate")?;
    let tls = ServerTls::from_files(&pki.gateway_cert(), &pki.gateway_key())?
        .with_zone_client_ca(ca)
        .with_zone_pins(
            tokumei_policy::grpc::zone_pins::ZonePins::load(&pki.zone_pins()).map_err(tokumei_client::reason)?,
        );
    let bound = tokumei_policy::grpc::bind(policy, "127.0.0.1:0".parse()?, Some(tls)).await?;
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    let link = PolicyLink::connect(&PolicyLinkConfig {
        url: format!("https://{addr}"),
        ca: pki.ca_cert(),
        cert: pki.release_cert(),
        key: pki.release_key(),
    })
    .await
    .context("the release zone's link to the policy service")?;
    Ok(LocalPolicyService {
        link,
        url: format!("https://{addr}"),
        stop,
        task,
    })
}

impl LocalPolicyService {
    /// Stops the service and waits for it.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("policy service task")??;
        Ok(())
    }
}
