//! The command line as a client of the policy service: it holds a session, never a key or a database.
//!
//! Commands that act through the policy zone's gRPC service take `--policy-url` (`TOKUMEI_POLICY_URL`) and, for
//! `https://`, the CA that issued the service's certificate (`--policy-ca`, `TOKUMEI_POLICY_CA`, default
//! `$TOKUMEI_HOME/pki/ca.crt`). Refusals come back as `[REASON] message` from the service's `ErrorInfo`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokumei_platform::home::tokumei_home;
use tokumei_proto::policy::v1::policy_service_client::PolicyServiceClient;
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use zeroize::Zeroizing;

use crate::session::given_or_saved_session;

/// Where the policy service is and who is calling. `Debug` leaves the session out: it is a bearer token.
#[derive(clap::Args, Clone)]
pub struct ServiceOptions {
    /// The policy service (`https://host:port`; `http://` only on loopback for development).
    #[arg(
        long,
        env = "TOKUMEI_POLICY_URL",
        default_value = "https://127.0.0.1:50061",
        global = true
    )]
    pub policy_url: String,
    /// CA of the policy service's certificate (default $TOKUMEI_HOME/pki/ca.crt).
    #[arg(long, env = "TOKUMEI_POLICY_CA", global = true)]
    pub policy_ca: Option<PathBuf>,
    /// Session token from `tokumei user login` (default: the saved session).
    #[arg(long, env = "TOKUMEI_SESSION", hide_env_values = true, global = true)]
    pub session: Option<String>,
}

impl std::fmt::Debug for ServiceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOptions")
            .field("policy_url", &self.policy_url)
            .field("policy_ca", &self.policy_ca)
            .field("session", &self.session.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A connected client and the caller's session (none before login).
pub struct PolicyClient {
    /// The gRPC client.
    pub client: PolicyServiceClient<Channel>,
    /// The analysis environment's service, on the same connection.
    pub analysis: tokumei_proto::analysis::v1::analysis_service_client::AnalysisServiceClient<Channel>,
    session: Option<Zeroizing<String>>,
}

impl PolicyClient {
    /// Connects to the service named by `options` with the caller's session.
    pub async fn connect(options: &ServiceOptions) -> Result<PolicyClient> {
        let session = given_or_saved_session(options.session.as_deref())?;
        PolicyClient::open(options, Some(session)).await
    }

    /// Connects without a session: logging in, enrolling, confirming an authenticator.
    pub async fn connect_anonymous(options: &ServiceOptions) -> Result<PolicyClient> {
        PolicyClient::open(options, None).await
    }

    async fn open(options: &ServiceOptions, session: Option<Zeroizing<String>>) -> Result<PolicyClient> {
        check_plaintext(&options.policy_url)?;
        let mut endpoint = Endpoint::from_shared(options.policy_url.clone())
            .with_context(|| format!("--policy-url {}", options.policy_url))?
            .connect_timeout(std::time::Duration::from_secs(10));
        if options.policy_url.starts_with("https://") {
            tokumei_platform::tls::install_crypto_provider();
            let ca_path = options
                .policy_ca
                .clone()
                .unwrap_or_else(|| tokumei_home().join("pki").join("ca.crt"));
            let ca = std::fs::read(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
            endpoint = endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the policy service at {}", options.policy_url))?;
        Ok(PolicyClient {
            client: PolicyServiceClient::new(channel.clone()),
            analysis: tokumei_proto::analysis::v1::analysis_service_client::AnalysisServiceClient::new(channel),
            session,
        })
    }

    /// `message` with the caller's session attached (as it is, before login).
    pub fn request<T>(&self, message: T) -> Result<Request<T>> {
        let mut request = Request::new(message);
        let Some(session) = &self.session else {
            return Ok(request);
        };
        let value = format!("Bearer {}", session.as_str())
            .parse()
            .map_err(|_| anyhow::anyhow!("[SESSION_INVALID] the session token is not printable text"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Refuses a plaintext URL to anything but a loopback address: passwords, codes and sessions would cross the
/// network in clear (the service refuses to listen so too; this keeps a mistyped or planted URL from
/// collecting them).
fn check_plaintext(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Ok(());
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(
        loopback,
        "[PLAINTEXT_REFUSED] --policy-url {url} is plaintext to a host that is not loopback: use https://"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_plaintext;

    #[test]
    fn plaintext_only_to_loopback() {
        for ok in [
            "https://policy.example.jp:7450",
            "http://127.0.0.1:50061",
            "http://[::1]:50061",
            "http://localhost:50061",
        ] {
            assert!(check_plaintext(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://policy.example.jp:7450",
            "http://10.0.40.5:7450",
            "http://[2001:db8::1]:7450",
            "http://127.0.0.1.evil.example:80",
        ] {
            assert!(check_plaintext(refused).is_err(), "{refused}");
        }
    }
}
