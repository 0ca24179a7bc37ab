//! The release service as its clients reach it (`release download`, `trace`, the demo, the benchmarks): one TLS channel trusting
//! only the given CA, the session in the `authorization` metadata, refusals as `[REASON] message`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokumei_proto::release::v1 as pb;
use tokumei_proto::release::v1::release_service_client::ReleaseServiceClient;
use tokumei_release::risk::ReleaseRisk;
use tokumei_release::trace::TraceReport;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::refused;

/// The `authorization` metadata value carrying the session (a secret: never printed).
pub type Bearer = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// Connects to the release service's gRPC address `server` (`https://HOST:PORT`), trusting only `ca_pem`.
pub async fn connect(server: &str, ca_pem: &[u8]) -> Result<ReleaseServiceClient<Channel>> {
    let channel = Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("bad --server {server:?}"))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .context("TLS configuration")?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    Ok(ReleaseServiceClient::new(channel))
}

/// The metadata value for `session`.
pub fn bearer(session: &str) -> Result<Bearer> {
    format!("Bearer {session}")
        .parse()
        .map_err(|_| anyhow!("[SESSION_INVALID] the session token is not valid metadata"))
}

/// `message` with the session attached.
pub fn authed<T>(bearer: &Bearer, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer.clone());
    request
}

/// Size of the chunks a leaked file is sent in (the service takes at most 1 MiB each).
const CHUNK_BYTES: usize = 1024 * 1024;

/// A leak to trace: the file found, the release it is suspected to come from.
#[derive(Debug)]
pub struct LeakToTrace<'a> {
    /// The release.
    pub release: &'a str,
    /// The leaked file (CSV, or Parquet if its name ends in `.parquet`).
    pub file: &'a Path,
    /// The release table it holds, if known.
    pub table: Option<&'a str>,
    /// The false-accusation bound.
    pub bound: f64,
}

/// A leaked file as the release service takes it: 1 MiB chunks, the first naming the release, the file and the
/// table (the service checks the session and the role before it reads any). At least one chunk, even for an empty
/// file; `content` is dropped once copied into them.
pub fn leak_chunks(content: Vec<u8>, release: &str, file_name: &str, table: &str) -> Vec<pb::TraceLeakChunk> {
    let mut chunks: Vec<pb::TraceLeakChunk> = content
        .chunks(CHUNK_BYTES)
        .map(|part| pb::TraceLeakChunk {
            content: part.to_vec(),
            ..Default::default()
        })
        .collect();
    drop(content);
    if chunks.is_empty() {
        chunks.push(pb::TraceLeakChunk::default());
    }
    chunks[0].release_id = release.to_owned();
    chunks[0].file_name = file_name.to_owned();
    chunks[0].table = table.to_owned();
    chunks
}

/// Hands `leak` to the release service, which reads it, scores every recipient with the release's fingerprint
/// key (which never leaves the zone) and has the policy service admit and record the trace. The report and the
/// audit entry's number.
pub async fn trace_leak(
    client: &mut ReleaseServiceClient<Channel>,
    session: &str,
    leak: &LeakToTrace<'_>,
) -> Result<(TraceReport, i64)> {
    let content = std::fs::read(leak.file).with_context(|| format!("reading {}", leak.file.display()))?;
    let file_name = leak
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut chunks = leak_chunks(content, leak.release, &file_name, leak.table.unwrap_or_default());
    chunks[0].false_accusation_bound = leak.bound;
    let answer = client
        .trace_leak(authed(&bearer(session)?, tokio_stream::iter(chunks)))
        .await
        .map_err(refused)?
        .into_inner();
    let report = serde_json::from_str(&answer.report_json).context("the release service's trace report")?;
    Ok((report, answer.audit_seq))
}

/// Asks the release service to re-measure the linkage attack on every sealed copy of `release` (adversaries
/// 1 … m of the approval plus `extra`); the policy service admits it and records the figures. The measurement
/// and its audit entry's number.
pub async fn assess_risk(
    client: &mut ReleaseServiceClient<Channel>,
    session: &str,
    release: &str,
    extra: &[usize],
) -> Result<(ReleaseRisk, i64)> {
    let m = extra
        .iter()
        .map(|&m| u32::try_from(m).map_err(|_| anyhow!("[BAD_INPUT] m = {m} is out of range")))
        .collect::<Result<Vec<u32>>>()?;
    let answer = client
        .assess_risk(authed(
            &bearer(session)?,
            pb::AssessRiskRequest {
                release_id: release.to_owned(),
                m,
            },
        ))
        .await
        .map_err(refused)?
        .into_inner();
    let report = serde_json::from_str(&answer.report_json).context("the release service's risk report")?;
    Ok((report, answer.audit_seq))
}
