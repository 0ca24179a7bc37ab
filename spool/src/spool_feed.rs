//! The core store's side of the spool: a pull feed of committed entries, and the acknowledgement that lets the
//! gateway delete them.
//!
//! Two transports behind one trait, so the core's commit loop does not care where it runs:
//! [`LocalFeed`] reads the spool directory on the same host and acknowledges by writing `core.ack` (the gateway
//! applies it every few seconds); [`RemoteFeed`] opens an outbound mutual-TLS gRPC stream to the gateway's
//! `SpoolService` and acknowledges with the `Ack` RPC. Exactly-once is the core's job: it records the position of
//! the last applied entry in its own commits, resumes after it, and skips entries it already applied.

use crate::spool::{Position, SpoolError, read_after, write_ack};
use futures::FutureExt;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokumei_platform::config::{Config, CoreSource, resolve};
use tokumei_proto::spool::v1::spool_service_client::SpoolServiceClient;
use tokumei_proto::spool::v1::{AckRequest, PullRequest, SpoolEntry, SpoolFrame};
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// How often a [`LocalFeed`] looks for new entries while waiting.
const LOCAL_POLL: Duration = Duration::from_millis(100);

/// One entry handed to the core with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct FedEntry {
    /// Where the entry sits in the spool: what the core records and acknowledges.
    pub position: Position,
    /// The entry.
    pub entry: SpoolEntry,
}

/// Feed failures.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Reading or acknowledging the local spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The spool directory does not exist.
    #[error("no spool at {0}: is the gateway configured with the same spool.dir?")]
    NoSpool(String),
    /// A certificate or key file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Connecting to the gateway's spool service failed.
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        /// The spool service address.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The spool's key could not be unwrapped.
    #[error("spool key: {0}")]
    Key(String),
    /// The spool service returned an error status.
    #[error("spool service: {0}")]
    Status(#[from] tonic::Status),
    /// The gateway ended the stream (it is shutting down); the next call reconnects.
    #[error("the gateway closed the spool stream")]
    Closed,
    /// The core tried to acknowledge an entry it was never handed.
    #[error(
        "cannot acknowledge {upto}: the last entry handed out is {}",
        .last.map_or_else(|| "none".to_string(), |p| p.to_string())
    )]
    AckBeyondRead {
        /// The acknowledgement asked for.
        upto: Position,
        /// The last position handed out.
        last: Option<Position>,
    },
    /// A background task failed.
    #[error("spool feed task: {0}")]
    Task(String),
}

/// A source of committed spool entries for the core store.
#[async_trait::async_trait]
pub trait SpoolFeed: Send {
    /// Entries after the last one returned (initially after `start_after`), up to about `max_bytes` of payload
    /// (at least one when any is available); waits up to `wait` for new ones, returns empty if none came.
    async fn next_chunk(&mut self, max_bytes: usize, wait: Duration) -> Result<Vec<FedEntry>, FeedError>;
    /// Everything up to and including `upto` is committed in the core: the gateway may drop it.
    async fn ack(&mut self, upto: Position) -> Result<(), FeedError>;
    /// For status/logs.
    fn describe(&self) -> String;
}

fn check_ack(upto: Position, last: Option<Position>) -> Result<(), FeedError> {
    if last.is_some_and(|l| upto <= l) {
        Ok(())
    } else {
        Err(FeedError::AckBeyondRead { upto, last })
    }
}

/// Reads the spool directory of a gateway on the same host.
///
/// May hand out a frame written but not yet fsync'd by the gateway (see [`crate::spool::read_after`]); the
/// gateway fences new entries beyond such an acknowledgement after a machine crash.
#[derive(Debug)]
pub struct LocalFeed {
    dir: PathBuf,
    last: Option<Position>,
}

impl LocalFeed {
    /// A feed of the entries after `start_after` (from the oldest entry still in the spool when `None`).
    pub fn open(dir: &Path, start_after: Option<Position>) -> Result<LocalFeed, FeedError> {
        if !dir.is_dir() {
            return Err(FeedError::NoSpool(dir.display().to_string()));
        }
        Ok(LocalFeed {
            dir: dir.to_path_buf(),
            last: start_after,
        })
    }
}

#[async_trait::async_trait]
impl SpoolFeed for LocalFeed {
    async fn next_chunk(&mut self, max_bytes: usize, wait: Duration) -> Result<Vec<FedEntry>, FeedError> {
        let deadline = Instant::now() + wait;
        loop {
            let dir = self.dir.clone();
            let after = self.last;
            let chunk = tokio::task::spawn_blocking(move || read_after(&dir, after, max_bytes))
                .await
                .map_err(|e| FeedError::Task(e.to_string()))??;
            if let Some((p, _)) = chunk.last() {
                self.last = Some(*p);
                return Ok(chunk
                    .into_iter()
                    .map(|(position, entry)| FedEntry { position, entry })
                    .collect());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            tokio::time::sleep(LOCAL_POLL.min(deadline - now)).await;
        }
    }

    async fn ack(&mut self, upto: Position) -> Result<(), FeedError> {
        check_ack(upto, self.last)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_ack(&dir, upto))
            .await
            .map_err(|e| FeedError::Task(e.to_string()))??;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("local spool {}", self.dir.display())
    }
}

/// Pulls from the gateway's `SpoolService` over mutual TLS (multi-host). The connection is outbound from the
/// core; a broken stream is reopened on the next call from the last entry received.
pub struct RemoteFeed {
    endpoint: String,
    client: SpoolServiceClient<Channel>,
    stream: Option<Streaming<SpoolFrame>>,
    /// Last position returned to the caller.
    last: Option<Position>,
    /// Last position received from the gateway (`pending` included): where a new stream starts.
    received: Option<Position>,
    /// Received but held back because it would have exceeded the byte budget.
    pending: Option<FedEntry>,
}

impl RemoteFeed {
    /// Connects to the spool service at `url` (`https://host:port`) with the core's certificate and key, trusting
    /// `ca` for the gateway's certificate.
    pub async fn connect(
        url: &str,
        ca: &Path,
        cert: &Path,
        key: &Path,
        start_after: Option<Position>,
    ) -> Result<RemoteFeed, FeedError> {
        tokumei_platform::tls::install_crypto_provider();
        let tls = tokumei_platform::client::mutual_tls(ca, cert, key).map_err(|(p, source)| FeedError::Io {
            path: p.display().to_string(),
            source,
        })?;
        let connect_err = |source| FeedError::Connect {
            endpoint: url.to_string(),
            source,
        };
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(connect_err)?
            .tls_config(tls)
            .map_err(connect_err)?
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            .connect()
            .await
            .map_err(connect_err)?;
        let client = SpoolServiceClient::new(channel)
            .max_decoding_message_size(crate::spool::MAX_FRAME_MESSAGE)
            .max_encoding_message_size(64 * 1024);
        Ok(RemoteFeed {
            endpoint: url.to_string(),
            client,
            stream: None,
            last: start_after,
            received: start_after,
            pending: None,
        })
    }

    async fn stream(&mut self) -> Result<&mut Streaming<SpoolFrame>, FeedError> {
        if self.stream.is_none() {
            let req = PullRequest {
                after_seq: self.received.map_or(0, Position::to_seq),
                has_after: self.received.is_some(),
                max_entries: 0,
            };
            let s = self.client.pull(req).await?.into_inner();
            self.stream = Some(s);
        }
        self.stream.as_mut().ok_or(FeedError::Closed)
    }
}

#[async_trait::async_trait]
impl SpoolFeed for RemoteFeed {
    async fn next_chunk(&mut self, max_bytes: usize, wait: Duration) -> Result<Vec<FedEntry>, FeedError> {
        let mut out: Vec<FedEntry> = Vec::new();
        let mut bytes = 0usize;
        if let Some(p) = self.pending.take() {
            bytes = p.entry.encoded_len();
            out.push(p);
        }
        let deadline = tokio::time::Instant::now() + wait;
        while bytes < max_bytes {
            let received = self.received;
            let stream = match self.stream().await {
                Ok(s) => s,
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            };
            let next = if out.is_empty() {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Ok(r) => r,
                    Err(_) => break,
                }
            } else {
                // Only what has already arrived: do not hold a chunk back waiting for more.
                match stream.message().now_or_never() {
                    Some(r) => r,
                    None => break,
                }
            };
            match next {
                Ok(Some(frame)) => {
                    let position = Position::from_seq(frame.seq);
                    let Some(entry) = frame.entry else {
                        continue;
                    };
                    if received.is_some_and(|r| position <= r) {
                        // Never hand out an entry twice, whatever the server sends.
                        continue;
                    }
                    self.received = Some(position);
                    let n = entry.encoded_len();
                    let fed = FedEntry { position, entry };
                    if !out.is_empty() && bytes.saturating_add(n) > max_bytes {
                        self.pending = Some(fed);
                        break;
                    }
                    out.push(fed);
                    bytes = bytes.saturating_add(n);
                }
                Ok(None) => {
                    self.stream = None;
                    if out.is_empty() {
                        return Err(FeedError::Closed);
                    }
                    break;
                }
                Err(status) => {
                    self.stream = None;
                    if out.is_empty() {
                        return Err(status.into());
                    }
                    break;
                }
            }
        }
        if let Some(e) = out.last() {
            self.last = Some(e.position);
        }
        Ok(out)
    }

    async fn ack(&mut self, upto: Position) -> Result<(), FeedError> {
        check_ack(upto, self.last)?;
        self.client
            .ack(AckRequest {
                upto_seq: upto.to_seq(),
            })
            .await?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("gateway spool service {}", self.endpoint)
    }
}

/// Unwraps the key of the spool in `dir` through the configured key service and unlocks it for this
/// process's readers (a same-host core, `tokumei spool status`). False when the spool has no key file (written
/// before sealing, or no gateway has started yet): its files are then plain and need none.
pub async fn unlock_local_spool(config: &Config, home: &Path, dir: &Path) -> Result<bool, FeedError> {
    if !dir.join(crate::spool_seal::KEY_FILE).exists() {
        return Ok(false);
    }
    // The spool's key is the gateway's: a same-host core opens it as the gateway zone (with OpenBao its token needs
    // decrypt on the gateway's KEK — single-host deployments only; across hosts the gateway serves the spool).
    let keys = tokumei_keys::open_configured(config, home, tokumei_keys::KeyZone::Gateway)
        .await
        .map_err(|e| FeedError::Key(e.to_string()))?;
    crate::spool_seal::unlock_with(dir, keys.as_ref())
        .await
        .map_err(|e| FeedError::Key(e.to_string()))?;
    Ok(true)
}

/// Opens the feed the configuration asks for (`[core] source`): the local spool directory (`spool.dir`) or the
/// gateway's spool service (`core.gateway_spool_url` with `core.ca`, `core.cert`, `core.key`), resuming after
/// `start_after`.
pub async fn open_feed(
    config: &Config,
    home: &Path,
    start_after: Option<Position>,
) -> Result<Box<dyn SpoolFeed>, FeedError> {
    match config.core.source {
        CoreSource::Local => {
            let dir = resolve(home, &config.spool.dir);
            unlock_local_spool(config, home, &dir).await?;
            Ok(Box::new(LocalFeed::open(&dir, start_after)?))
        }
        CoreSource::Remote => {
            let c = &config.core;
            Ok(Box::new(
                RemoteFeed::connect(
                    &c.gateway_spool_url,
                    &resolve(home, &c.ca),
                    &resolve(home, &c.cert),
                    &resolve(home, &c.key),
                    start_after,
                )
                .await?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Spool, read_ack};
    use tokumei_proto::spool::v1::{BatchCommit, spool_entry::Entry};

    fn entry(i: u32) -> SpoolEntry {
        SpoolEntry {
            entry: Some(Entry::Batch(BatchCommit {
                hospital_code: "1310000001".into(),
                batch_id: format!("b{i}"),
                content_digest: vec![1; 32],
                ..Default::default()
            })),
            committed_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn local_feed_follows_the_spool_live_and_acknowledges() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 150, crate::spool::tests::test_seal(), |_| {}, |_| {}).unwrap();
        let mut positions = Vec::new();
        for i in 0..10 {
            positions.push(spool.commit(&entry(i)).await.unwrap());
        }
        let mut feed = LocalFeed::open(dir.path(), None).unwrap();
        assert!(feed.describe().contains("local spool"));
        let mut got = Vec::new();
        loop {
            let c = feed.next_chunk(64, Duration::from_millis(10)).await.unwrap();
            if c.is_empty() {
                break;
            }
            got.extend(c.into_iter().map(|e| e.position));
        }
        assert_eq!(got, positions);
        // Nothing new: waits, then returns empty.
        let started = Instant::now();
        assert!(
            feed.next_chunk(1 << 20, Duration::from_millis(150))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(started.elapsed() >= Duration::from_millis(140));
        // A commit during the wait is picked up.
        let s = spool.clone();
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.commit(&entry(10)).await.unwrap()
        });
        let c = feed.next_chunk(1 << 20, Duration::from_secs(5)).await.unwrap();
        let p10 = later.await.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].position, p10);
        // Acknowledge: never beyond what was handed out, recorded in core.ack, applied by the gateway.
        let beyond = Position {
            segment: p10.segment,
            offset: p10.offset + 1,
        };
        assert!(matches!(feed.ack(beyond).await, Err(FeedError::AckBeyondRead { .. })));
        feed.ack(positions[4]).await.unwrap();
        assert_eq!(read_ack(dir.path()).unwrap(), Some(positions[4]));
        let report = spool.apply_ack_file().await.unwrap().unwrap();
        assert!(report.segments_removed > 0);
        // A feed resuming at its acknowledged position still gets exactly the rest.
        let mut resumed = LocalFeed::open(dir.path(), Some(positions[4])).unwrap();
        let c = resumed.next_chunk(1 << 20, Duration::ZERO).await.unwrap();
        let mut expected = positions[5..].to_vec();
        expected.push(p10);
        assert_eq!(c.into_iter().map(|e| e.position).collect::<Vec<_>>(), expected);
        assert!(matches!(
            LocalFeed::open(&dir.path().join("nope"), None),
            Err(FeedError::NoSpool(_))
        ));
    }
}
