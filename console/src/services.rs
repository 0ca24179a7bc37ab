//! The console's connections to the zones' services: one channel each, opened lazily and shared by every
//! signed-in person (HTTP/2 multiplexes their requests), each request carrying its own person's session. A
//! refusal comes back as a [`PageError`] with the service's reason code and message — a service's messages name
//! columns, rules and counts, never a data value.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokumei_proto::analysis::v1::analysis_service_client::AnalysisServiceClient;
use tokumei_proto::policy::v1::policy_service_client::PolicyServiceClient;
use tokumei_proto::release::v1::release_service_client::ReleaseServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::{ConsoleConfig, ConsoleError};

/// The services' clients.
#[derive(Clone)]
pub struct Services {
    /// The committee zone's `PolicyService`.
    pub policy: PolicyServiceClient<Channel>,
    /// The analysis environment's service (served by the policy service).
    pub analysis: AnalysisServiceClient<Channel>,
    /// The release zone's `ReleaseService`, if configured.
    pub release: Option<ReleaseServiceClient<Channel>>,
}

/// A lazily connected channel to `url`, trusting only `ca` for `https://` (plaintext only to loopback).
fn channel(url: &str, ca: Option<&std::path::Path>, what: &str) -> Result<Channel, ConsoleError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConsoleError::Config(format!("{what} {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120));
    if url.starts_with("https://") {
        tokumei_platform::tls::install_crypto_provider();
        let ca = ca.ok_or_else(|| ConsoleError::Config(format!("{what}: the CA of its certificate is needed")))?;
        let pem = std::fs::read(ca).map_err(|source| ConsoleError::Io {
            what: format!("reading {}", ca.display()),
            source,
        })?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|e| ConsoleError::Config(format!("{what} TLS: {e}")))?;
    } else if !is_loopback_url(url) {
        return Err(ConsoleError::Config(format!(
            "[PLAINTEXT_REFUSED] {what} {url} is plaintext to a host that is not loopback: use https://"
        )));
    }
    Ok(endpoint.connect_lazy())
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Services {
    /// The services named by `config` (nothing is contacted until the first request).
    pub fn connect(config: &ConsoleConfig) -> Result<Services, ConsoleError> {
        let policy = channel(&config.policy_url, Some(&config.policy_ca), "--policy-url")?;
        let release = match &config.release_url {
            Some(url) => Some(ReleaseServiceClient::new(channel(
                url,
                config.release_ca.as_deref().or(Some(&config.policy_ca)),
                "--release-url",
            )?)),
            None => None,
        };
        Ok(Services {
            policy: PolicyServiceClient::new(policy.clone()),
            analysis: AnalysisServiceClient::new(policy),
            release,
        })
    }
}

impl Services {
    /// The release service's client, or the page saying the console was started without one.
    pub fn release_client(&self) -> Result<ReleaseServiceClient<Channel>, PageError> {
        self.release.clone().ok_or_else(PageError::no_release_service)
    }
}

/// `message` carrying `token` (a person's policy session) as its bearer.
pub fn authed<T>(token: &str, message: T) -> Result<tonic::Request<T>, PageError> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| PageError::new(StatusCode::UNAUTHORIZED, "SESSION_INVALID", "the session is not valid"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// A page that could not be shown or an act that was refused: the HTTP status, the machine-readable reason and
/// a message that names no data value.
#[derive(Debug)]
pub struct PageError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The reason code (`NOT_RECIPIENT`, `CSRF_INVALID`, ...).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
}

impl PageError {
    /// An error of the console's own.
    pub fn new(status: StatusCode, reason: &str, message: &str) -> PageError {
        PageError {
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }

    /// A service's refusal, with its `ErrorInfo` reason (else the status code's name).
    pub fn refused(status: tonic::Status) -> PageError {
        let reason = tokumei_platform::client::status_reason(&status)
            .unwrap_or_else(|| format!("{:?}", status.code()).to_uppercase());
        let http = match status.code() {
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        // A transport failure's text names hosts and certificates: it goes to the console's log, not the page.
        let message = if http == StatusCode::BAD_GATEWAY || http == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(%reason, code = ?status.code(), message = status.message(), "a service call failed");
            "a service of the platform could not be reached; try again later".to_owned()
        } else {
            status.message().to_owned()
        };
        PageError {
            status: http,
            reason,
            message,
        }
    }

    /// The release service is not configured.
    pub fn no_release_service() -> PageError {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "RELEASE_SERVICE_NOT_CONFIGURED",
            "this console was started without --release-url",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.status, crate::layout::error_page(&self)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_to_loopback() {
        assert!(is_loopback_url("http://127.0.0.1:50061"));
        assert!(is_loopback_url("http://localhost:1"));
        assert!(!is_loopback_url("http://10.0.0.5:50061"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example:80"));
    }

    #[test]
    fn a_refusal_keeps_its_reason() {
        let status = tonic::Status::permission_denied("nope");
        let e = PageError::refused(status);
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.reason, "PERMISSIONDENIED");
    }
}
