//! Delivery: how a recipient gets their copy of a release out of the zone.
//!
//! Two listeners share one [`Delivery`] (the link to the policy service, the zone and the [`tokens::TokenTable`]).
//! The zone holds no policy database and no committee key: every authentication, decision and ledger entry is
//! the policy service's, asked over [`policy_link`] with the zone's own certificate.
//!
//! - **gRPC** `tokumei.release.v1.ReleaseService` ([`grpc`]), over TLS, authenticated with the session token
//!   of a two-factor login (`authorization: Bearer tks1....`). `ListReleases` shows the caller's copies;
//!   `RequestDownload` checks that the caller holds a copy, then asks the policy service to admit the
//!   download under the approval's conditions (named recipient, not banned, not expired or revoked, download
//!   limit — one download counted per request) which audits who, what, when and from where, records the
//!   provision for the public register, and issues a one-time token; `DeclareDeletion` records the
//!   recipient's declaration that the data was deleted.
//! - **HTTPS** `GET /v1/downloads/{token}` ([`https`]), which streams the file decrypted from the zone with
//!   HTTP Range support, so that a broken transfer resumes. Every request is audited (`download.transfer`,
//!   with the range, the byte count and the peer address) before a byte is sent.
//!
//! Tokens are one-time yet resumable: see [`tokens`]. Neither a token nor a session ever reaches the audit
//! ledger or the logs.
//!
//! [`serve`] binds both listeners (port 0 picks free ports) and returns their addresses with a handle on the
//! running servers.

pub mod grpc;
pub mod https;
pub mod policy_link;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::zone::ReleaseZone;
use tokens::TokenTable;

pub use policy_link::{Caller, PolicyLink, PolicyLinkConfig};
pub use tokens::{DEFAULT_TTL, DownloadGrant, IssuedToken, TokenError};

/// Longest a client may take to complete a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the delivery servers could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Binding an address or reading a PEM file failed.
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
    /// The configuration is not usable (a public URL that is not https, ...).
    #[error("{0}")]
    Config(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A server task panicked or was cancelled.
    #[error("server task: {0}")]
    Task(String),
}

/// The servers' certificate chain and private key, in PEM (the key is zeroed when dropped). Both listeners
/// present the same certificate.
#[derive(Clone)]
pub struct DeliveryTls {
    cert_pem: Vec<u8>,
    key_pem: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DeliveryTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryTls")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl DeliveryTls {
    /// From PEM bytes: the certificate chain (leaf first) and its private key.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> DeliveryTls {
        DeliveryTls {
            cert_pem,
            key_pem: Zeroizing::new(key_pem),
        }
    }

    /// Reads the certificate chain and the key from PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<DeliveryTls, DeliveryError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| DeliveryError::Io {
                what: format!("read {}", path.display()),
                source,
            })
        };
        let tls = DeliveryTls {
            cert_pem: read(cert)?,
            key_pem: Zeroizing::new(read(key)?),
        };
        tls.rustls_config()?;
        Ok(tls)
    }

    fn tonic_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                self.key_pem.as_slice(),
            ))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The rustls configuration of the HTTPS endpoint (HTTP/2 and HTTP/1.1 by ALPN).
    fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>, DeliveryError> {
        let certs = rustls_pemfile::certs(&mut self.cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DeliveryError::Tls(format!("certificate: {e}")))?;
        if certs.is_empty() {
            return Err(DeliveryError::Tls("no PEM certificate found".into()));
        }
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_slice())
            .map_err(|e| DeliveryError::Tls(format!("private key: {e}")))?
            .ok_or_else(|| DeliveryError::Tls("no PEM private key found".into()))?;
        // ring explicitly (tokumei's provider): no dependence on a process-wide default being installed.
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| DeliveryError::Tls(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| DeliveryError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// How to run delivery.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Address of the gRPC `ReleaseService` (port 0: any free port).
    pub grpc_listen: SocketAddr,
    /// Address of the HTTPS download endpoint (port 0: any free port).
    pub https_listen: SocketAddr,
    /// Certificate and key of both listeners.
    pub tls: DeliveryTls,
    /// Base of the download URLs handed to clients (`https://downloads.example.jp`); default
    /// `https://<bound HTTPS address>`, which suits a single host.
    pub public_url: Option<String>,
    /// How long a download token lives.
    pub token_ttl: Duration,
    /// What finishing builds needs (`None`: this service does not finish builds).
    pub builds: Option<BuildDesk>,
}

/// What the zone needs to finish builds whose core half is done: its manifest key, its intake key and the outbox
/// the core writes packages to.
#[derive(Clone)]
pub struct BuildDesk {
    /// Signs each copy's manifest.
    pub manifest_key: Arc<tokumei_policy::ServiceKey>,
    /// Opens the packages the core sealed to the zone.
    pub intake: Arc<tokumei_keys::sealed_result::RecipientKey>,
    /// Where the core writes packages.
    pub outbox: std::path::PathBuf,
}

impl std::fmt::Debug for BuildDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildDesk")
            .field("intake", &self.intake.public_hex())
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

/// What the gRPC service and the HTTPS endpoint share; cheap to clone.
#[derive(Debug, Clone)]
pub struct Delivery {
    policy: PolicyLink,
    zone: ReleaseZone,
    tokens: Arc<TokenTable>,
    public_url: Arc<str>,
    builds: Option<BuildDesk>,
}

impl Delivery {
    /// Delivery of `zone`'s releases under the policy service behind `policy`, handing out URLs under
    /// `public_url` for tokens living `token_ttl`.
    pub fn new(policy: PolicyLink, zone: ReleaseZone, public_url: &str, token_ttl: Duration) -> Delivery {
        Delivery {
            policy,
            zone,
            tokens: Arc::new(TokenTable::new(token_ttl)),
            public_url: Arc::from(public_url.trim_end_matches('/')),
            builds: None,
        }
    }

    /// The same delivery, finishing builds with `desk`.
    pub fn with_builds(mut self, desk: Option<BuildDesk>) -> Delivery {
        self.builds = desk;
        self
    }

    /// The link to the policy service (authentication, admissions, audit).
    pub fn policy(&self) -> &PolicyLink {
        &self.policy
    }

    /// The zone holding the copies.
    pub fn zone(&self) -> &ReleaseZone {
        &self.zone
    }

    /// The tokens in force.
    pub fn tokens(&self) -> &TokenTable {
        &self.tokens
    }

    /// The download URL of `token`.
    pub fn download_url(&self, token: &str) -> String {
        format!("{}/v1/downloads/{token}", self.public_url)
    }
}

/// Both servers, running; dropping this handle does not stop them (the shutdown future given to [`serve`]
/// does).
#[derive(Debug)]
pub struct RunningDelivery {
    /// The gRPC address actually bound.
    pub grpc: SocketAddr,
    /// The HTTPS address actually bound.
    pub https: SocketAddr,
    /// The base of the download URLs handed out.
    pub public_url: String,
    task: tokio::task::JoinHandle<Result<(), DeliveryError>>,
}

impl RunningDelivery {
    /// Waits until both servers have stopped (after the shutdown future resolved), or one failed.
    pub async fn wait(self) -> Result<(), DeliveryError> {
        self.task.await.map_err(|e| DeliveryError::Task(e.to_string()))?
    }
}

/// Binds the gRPC and HTTPS listeners and serves both until `shutdown` resolves. Returns once both accept
/// connections, with their bound addresses. The gRPC listener's TLS (tonic) uses rustls' process-wide
/// crypto provider: a binary linking several providers installs one first.
pub async fn serve(
    config: DeliveryConfig,
    policy: PolicyLink,
    zone: ReleaseZone,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningDelivery, DeliveryError> {
    let rustls = config.tls.rustls_config()?;
    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr).await.map_err(|source| DeliveryError::Io {
            what: format!("bind {addr}"),
            source,
        })?;
        let bound = listener.local_addr().map_err(|source| DeliveryError::Io {
            what: "listen address".into(),
            source,
        })?;
        Ok::<_, DeliveryError>((listener, bound))
    };
    let (https_listener, https_addr) = bind(config.https_listen).await?;
    let (grpc_listener, grpc_addr) = bind(config.grpc_listen).await?;
    let public_url = match &config.public_url {
        Some(u) if u.starts_with("https://") => u.trim_end_matches('/').to_owned(),
        Some(u) => {
            return Err(DeliveryError::Config(format!(
                "public URL {u:?} must start with https://"
            )));
        }
        None => format!("https://{https_addr}"),
    };
    let delivery = Delivery::new(policy, zone, &public_url, config.token_ttl).with_builds(config.builds.clone());
    let shutdown = shutdown.shared();
    let grpc = grpc::serve(delivery.clone(), grpc_listener, &config.tls, shutdown.clone())?;
    let https = https::serve(delivery, https_listener, rustls, shutdown);
    tracing::info!(grpc = %grpc_addr, https = %https_addr, "release delivery listening (TLS)");
    let task = tokio::spawn(async move {
        let (g, h) = tokio::join!(grpc, https);
        g.and(h)
    });
    Ok(RunningDelivery {
        grpc: grpc_addr,
        https: https_addr,
        public_url,
        task,
    })
}
