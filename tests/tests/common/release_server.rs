//! `tokumei release serve` as the tests run it: beside the policy service of the same installation (over TLS,
//! admitting the zones' certificates), from a home of its own that holds the release zone's files and no
//! `policy/` directory — no policy database, no committee key. Whatever the release service does, it can only
//! do by asking the policy service.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tokumei_proto::release::v1::release_service_client::ReleaseServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::policy_server::Server;
use super::{Home, tokumei_bin};

/// The release service and the policy service it asks; both stopped when dropped (the policy service only if
/// it was started for this release service).
pub struct ReleaseServer {
    policy: Option<Server>,
    policy_addr: String,
    child: Child,
    /// The gRPC address.
    pub grpc: String,
    /// The HTTPS address.
    pub https: String,
    /// The release service's own home (links to the release zone's files; no `policy/`).
    pub zone_home: PathBuf,
}

/// Directory, inside the installation's home, of the release service's own home.
const ZONE_HOME: &str = "release-zone-home";

/// A home for the release service: every top-level entry of `home` linked (the release zone's directory made
/// first, so releases built later are seen), except the committee zone's.
pub fn release_zone_home(home: &Path) -> PathBuf {
    let zone_home = home.join(ZONE_HOME);
    std::fs::create_dir_all(&zone_home).expect("release zone home");
    std::fs::create_dir_all(home.join("release")).expect("release zone directory");
    // The outbox the core writes build packages to: the release zone reads the same directory.
    std::fs::create_dir_all(home.join("outbox")).expect("outbox");
    for entry in std::fs::read_dir(home).expect("home").flatten() {
        let name = entry.file_name();
        let link = zone_home.join(&name);
        if name == "policy" || name == ZONE_HOME || link.exists() {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), &link).expect("link into the release zone home");
    }
    zone_home
}

impl ReleaseServer {
    /// Starts the policy service of `home`, then `tokumei release serve EXTRA` from the release zone's home,
    /// logging to `log`.
    pub fn start(home: &Home, log: &Path, extra: &[&str]) -> ReleaseServer {
        let policy = Server::start_tls(home.path());
        let addr = policy.addr.clone();
        ReleaseServer::start_linked(home, log, extra, &addr, Some(policy))
    }

    /// `tokumei release serve EXTRA` asking the policy service at `policy_addr` (already running; `owned`, if
    /// given, is stopped with this server).
    pub fn start_linked(
        home: &Home,
        log: &Path,
        extra: &[&str],
        policy_addr: &str,
        owned: Option<Server>,
    ) -> ReleaseServer {
        let zone_home = release_zone_home(home.path());
        let mut child = Command::new(tokumei_bin())
            .args([
                "--json",
                "release",
                "serve",
                "--grpc-listen",
                "127.0.0.1:0",
                "--https-listen",
                "127.0.0.1:0",
            ])
            .arg("--cert")
            .arg(home.pki.gateway_cert())
            .arg("--key")
            .arg(home.pki.gateway_key())
            .arg("--config")
            .arg(zone_home.join("tokumei.toml"))
            .arg("--policy-url")
            .arg(format!("https://{policy_addr}"))
            .args(extra)
            .env("TOKUMEI_HOME", &zone_home)
            .env_remove("TOKUMEI_POLICY_DB")
            .env_remove("TOKUMEI_POLICY_URL")
            .env_remove("TOKUMEI_POLICY_CA")
            .env_remove("TOKUMEI_SESSION")
            .env(
                "RUST_LOG",
                "debug,h2=info,hyper=info,rustls=info,tonic=info,tower=info,sqlx=warn",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log).expect("log file")))
            .spawn()
            .expect("spawn tokumei release serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "release service did not start ({e}): {line:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let grpc = v["grpc"].as_str().expect("grpc address").to_owned();
        let https = v["https"].as_str().expect("https address").to_owned();
        assert_eq!(v["public_url"], format!("https://{https}"));
        ReleaseServer {
            policy: owned,
            policy_addr: policy_addr.to_owned(),
            child,
            grpc,
            https,
            zone_home,
        }
    }

    /// The address of the policy service it asks.
    pub fn policy_addr(&self) -> &str {
        &self.policy_addr
    }

    /// The gRPC URL (`https://HOST:PORT`).
    pub fn url(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// A client of the release service trusting the development CA.
    pub async fn client(&self, home: &Home) -> ReleaseServiceClient<Channel> {
        let ca = std::fs::read(home.pki.ca_cert()).expect("CA certificate");
        let channel = Endpoint::from_shared(format!("https://{}", self.grpc))
            .expect("endpoint")
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .expect("TLS config")
            .connect()
            .await
            .expect("TLS connection to the release service");
        ReleaseServiceClient::new(channel)
    }

    /// Whether the release service's home has stayed free of committee files (it never created a policy
    /// database or key of its own).
    pub fn holds_no_committee_files(&self) -> bool {
        !self.zone_home.join("policy").exists()
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.policy.take());
    }
}
