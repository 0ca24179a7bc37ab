//! Mutual TLS for the gateway: TLS 1.3 only, client certificates required and verified against the configured
//! CA, and the hospital's identity taken from its certificate — never from the payload.
//!
//! A hospital certificate names its 10-digit medical-institution code (医療機関コード) as the subject common
//! name. A certificate from the same CA without such a code (the core's, an operator's) cannot push.

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::Path;
use std::sync::Arc;

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or key.
    #[error("{path}: no {what} found")]
    Empty {
        /// The file.
        path: String,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// The process-wide crypto provider (ring). Installing it is idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    let pem = std::fs::read(path).map_err(io)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// SHA-256 (hex) of the DER of the first certificate of a PEM file: what mutual TLS presents, and what the
/// platform's directory pins a hospital's certificate by.
pub fn certificate_sha256(path: &Path) -> Result<String, TlsError> {
    use sha2::Digest;
    let certs = load_certs(path)?;
    let first = certs.first().ok_or_else(|| TlsError::Empty {
        path: path.display().to_string(),
        what: "certificate",
    })?;
    Ok(hex::encode(sha2::Sha256::digest(first.as_ref())))
}

/// Reads the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    let pem = std::fs::read(path).map_err(io)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(io)?
        .ok_or_else(|| TlsError::Empty {
            path: path.display().to_string(),
            what: "private key",
        })
}

/// The gateway's server configuration: TLS 1.3 only, client certificate mandatory, HTTP/2 via ALPN.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Whom a request comes from, as established by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HospitalIdentity {
    /// 10-digit medical-institution code.
    pub code: String,
}

/// Inserted into request extensions by the `--insecure-dev` plaintext listener (loopback only), which has no
/// certificate to read the identity from.
#[derive(Debug, Clone)]
pub struct DevHospital(pub String);

/// True for a 10-digit medical-institution code (prefecture 01–47 + 8 digits).
pub fn is_institution_code(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()) && s[..2].parse::<u8>().is_ok_and(|p| (1..=47).contains(&p))
}

/// The subject common name of a DER certificate.
pub fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

impl HospitalIdentity {
    /// The hospital behind a request: the verified client certificate's CN, or the dev-mode identity.
    pub fn from_request<T>(req: &tonic::Request<T>) -> Result<Self, String> {
        if let Some(DevHospital(code)) = req.extensions().get::<DevHospital>() {
            return Ok(HospitalIdentity { code: code.clone() });
        }
        let certs = req.peer_certs().ok_or("no client certificate")?;
        let leaf = certs.first().ok_or("no client certificate")?;
        let cn = subject_cn(leaf.as_ref()).ok_or("certificate subject has no common name")?;
        if !is_institution_code(&cn) {
            return Err("certificate subject is not a 10-digit medical-institution code".into());
        }
        Ok(HospitalIdentity { code: cn })
    }
}
