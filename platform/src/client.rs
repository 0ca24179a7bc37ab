//! The hospital side of the contract: an mTLS channel to the gateway and a push helper. Used by `tokumei push`,
//! the demo, the benchmark and the tests, so they all exercise the same path a vendor integration would.

use std::path::{Path, PathBuf};
use tokumei_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use tokumei_proto::ingest::v1::{PushReceipt, RecordBatch};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A certificate or key file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Connecting failed.
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        /// The gateway address.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The gateway returned an error status.
    #[error("gateway: {0}")]
    Status(#[from] tonic::Status),
}

/// Where a hospital's credentials are.
#[derive(Debug, Clone)]
pub struct HospitalCredentials {
    /// CA that signed the gateway's certificate.
    pub ca: PathBuf,
    /// The hospital's client certificate.
    pub cert: PathBuf,
    /// The hospital's private key.
    pub key: PathBuf,
}

/// Client side of mutual TLS from PEM files: trust `ca`, present `cert` and `key`. Hospitals and the core both
/// connect this way; the error names the file that could not be read.
pub fn mutual_tls(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTlsConfig, (PathBuf, std::io::Error)> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| (p.to_path_buf(), e));
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?)))
}

/// Opens an mTLS channel to the gateway (`https://host:port`).
pub async fn connect(
    endpoint: &str,
    creds: &HospitalCredentials,
    max_message_bytes: usize,
) -> Result<IngestServiceClient<Channel>, ClientError> {
    crate::tls::install_crypto_provider();
    let tls = mutual_tls(&creds.ca, &creds.cert, &creds.key).map_err(|(p, source)| ClientError::Io {
        path: p.display().to_string(),
        source,
    })?;
    let connect_err = |source| ClientError::Connect {
        endpoint: endpoint.to_string(),
        source,
    };
    let channel = Endpoint::from_shared(endpoint.to_string())
        .map_err(connect_err)?
        .tls_config(tls)
        .map_err(connect_err)?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .connect()
        .await
        .map_err(connect_err)?;
    Ok(IngestServiceClient::new(channel)
        .max_encoding_message_size(max_message_bytes)
        .max_decoding_message_size(max_message_bytes))
}

/// Sends batches as one client stream and returns the single receipt.
pub async fn push(
    client: &mut IngestServiceClient<Channel>,
    batches: Vec<RecordBatch>,
) -> Result<PushReceipt, ClientError> {
    let stream = tokio_stream::iter(batches);
    Ok(client.push(stream).await?.into_inner())
}

/// The machine-readable reason of a gateway's refusal (its `ErrorInfo`), if any: what a hospital's integration
/// branches on, rather than the wording of the message.
pub fn status_reason(s: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    s.get_details_error_info().map(|i| i.reason)
}
