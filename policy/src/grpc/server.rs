//! Running the policy service: bind, then serve until shutdown.
//!
//! The service carries passwords, TOTP codes and session tokens, so it is served over TLS (the server's
//! certificate and key in PEM; clients authenticate with their session, not with certificates). Plaintext
//! is for development only and is refused on anything but a loopback address.
//!
//! Binding is separate from serving ([`bind`], then [`BoundServer::serve`]) so that the caller can
//! announce the address actually bound — port 0 picks a free one — once connections are accepted and
//! before any request arrives. Shutdown is graceful: the listener closes and requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use zeroize::Zeroizing;

use super::PolicyGrpc;
use crate::service::Policy;

/// Longest a request may take before it is cancelled (an argon2 check takes tens of milliseconds).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request accepted (an application form with its studies, an imported ban list).
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Why the service could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the address, or reading a PEM file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The certificate or key could not be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The configuration does not allow what was asked (plaintext off loopback).
    #[error("{0}")]
    Refused(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The server's certificate chain and private key, in PEM. The key is zeroed when dropped.
///
/// TLS is set up with rustls' process-wide crypto provider: a binary that links several providers must
/// install one (`rustls::crypto::ring::default_provider().install_default()`) before [`bind`].
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Zeroizing<Vec<u8>>,
    /// The CA that issues the zones' client certificates: client certificates are then asked for (optional:
    /// people authenticate with sessions); the core's is what `CoreOrderService` accepts, the release zone's what
    /// `ReleaseZoneService` accepts.
    zone_client_ca: Option<Vec<u8>>,
    /// The zones' pinned certificates: without them any certificate of the CA with a zone's CN is that zone.
    zone_pins: Option<super::zone_pins::ZonePins>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM bytes: the certificate chain (leaf first) and its private key.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> ServerTls {
        ServerTls {
            cert_pem,
            key_pem: Zeroizing::new(key_pem),
            zone_client_ca: None,
            zone_pins: None,
        }
    }

    /// Admits as a zone only its pinned certificates (`pki/zone-pins.json`).
    pub fn with_zone_pins(mut self, pins: super::zone_pins::ZonePins) -> ServerTls {
        self.zone_pins = Some(pins);
        self
    }

    /// Accepts client certificates issued by `ca_pem` (the zones' CA), so the core can take its orders and the
    /// release zone can ask for its decisions.
    pub fn with_zone_client_ca(mut self, ca_pem: Vec<u8>) -> ServerTls {
        self.zone_client_ca = Some(ca_pem);
        self
    }

    /// Reads the certificate chain and the key from PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls, ServeError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| ServeError::Io {
                what: format!("read {}", path.display()),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = Zeroizing::new(read(key)?);
        if !contains(&cert_pem, b"-----BEGIN CERTIFICATE-----") {
            return Err(ServeError::Tls(format!("{}: no PEM certificate found", cert.display())));
        }
        if !contains(&key_pem, b"PRIVATE KEY-----") {
            return Err(ServeError::Tls(format!("{}: no PEM private key found", key.display())));
        }
        Ok(ServerTls {
            cert_pem,
            key_pem,
            zone_client_ca: None,
            zone_pins: None,
        })
    }

    fn config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, self.key_pem.as_slice()))
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.zone_client_ca {
            Some(ca) => config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true),
            None => config,
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Refuses plaintext on an address that is not loopback.
fn check_plaintext(addr: SocketAddr) -> Result<(), ServeError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ServeError::Refused(format!(
            "refusing to serve the policy service in plaintext on {addr}: passwords and session tokens would \
             cross the network in clear. Give a TLS certificate and key, or listen on a loopback address \
             (127.0.0.1 or ::1) for development"
        )))
    }
}

/// A bound listener with its configured server, ready to serve.
pub struct BoundServer {
    policy: Policy,
    listener: TcpListener,
    addr: SocketAddr,
    server: Server,
    tls: bool,
    pins: Option<super::zone_pins::ZonePins>,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Checks the TLS set-up (or that plaintext is on loopback), then binds `listen`.
pub async fn bind(policy: Policy, listen: SocketAddr, tls: Option<ServerTls>) -> Result<BoundServer, ServeError> {
    let server = Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    let (server, is_tls) = match &tls {
        Some(t) => (
            server
                .tls_config(t.config())
                .map_err(|e| ServeError::Tls(e.to_string()))?,
            true,
        ),
        None => {
            check_plaintext(listen)?;
            (server, false)
        }
    };
    let listener = TcpListener::bind(listen).await.map_err(|source| ServeError::Io {
        what: format!("bind {listen}"),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        what: "listen address".into(),
        source,
    })?;
    if !is_tls {
        check_plaintext(addr)?;
    }
    let pins = tls.and_then(|t| t.zone_pins);
    Ok(BoundServer {
        policy,
        listener,
        addr,
        server,
        tls: is_tls,
        pins,
    })
}

impl BoundServer {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let BoundServer {
            policy,
            listener,
            addr,
            mut server,
            tls,
            pins,
        } = self;
        if tls {
            tracing::info!(%addr, "policy service listening (TLS)");
        } else {
            tracing::warn!(%addr, "INSECURE DEV MODE: policy service listening in plaintext on loopback");
        }
        // Every call recorded in the audit ledger, reads and refusals included.
        let core_orders = super::core_orders::CoreOrderGrpc::new(policy.clone())
            .with_pins(pins.clone())
            .into_server()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let release_zone = super::release_zone::ReleaseZoneGrpc::new(policy.clone())
            .with_pins(pins)
            .into_server()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let analysis = super::analysis::AnalysisGrpc::new(policy.clone())
            .into_server()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let service = super::audited::AuditedPolicyGrpc::new(PolicyGrpc::new(policy))
            .into_server()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        server
            .add_service(service)
            .add_service(core_orders)
            .add_service(release_zone)
            .add_service(analysis)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        tracing::info!(%addr, "policy service stopped");
        Ok(())
    }
}

/// Binds `listen` and serves the policy service until `shutdown` resolves. `tls` is required unless
/// `listen` is a loopback address.
pub async fn serve(
    policy: Policy,
    listen: SocketAddr,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    bind(policy, listen, tls).await?.serve(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback() {
        for ok in ["127.0.0.1:0", "[::1]:50051"] {
            assert!(
                check_plaintext(ok.parse().unwrap_or_else(|e| panic!("{e}"))).is_ok(),
                "{ok}"
            );
        }
        for refused in ["0.0.0.0:50051", "192.168.1.10:50051", "[::]:50051"] {
            let e = check_plaintext(refused.parse().unwrap_or_else(|e| panic!("{e}")));
            assert!(
                matches!(e, Err(ServeError::Refused(m)) if m.contains("loopback")),
                "{refused}"
            );
        }
    }

    #[test]
    fn pem_files_are_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(ServerTls::from_files(&cert, &key), Err(ServeError::Tls(_))));
        assert!(matches!(
            ServerTls::from_files(&dir.path().join("missing"), &key),
            Err(ServeError::Io { .. })
        ));
    }
}
