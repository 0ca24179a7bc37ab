//! The gateway's `tokumei.spool.v1.SpoolService`: how the core store pulls the spool across hosts.
//!
//! The core zone accepts no connections, so the core connects out to this service on its own listener
//! (`gateway.spool_listen`, mutual TLS 1.3 against `tls.client_ca`). Only the core's certificate
//! (CN [`CORE_COMMON_NAME`]) may call it; a hospital's certificate from the same CA is refused with
//! `PERMISSION_DENIED` / [`NOT_THE_CORE`]. `Pull` serves only fsync'd frames (up to the writer's durable end) and
//! waits on the writer's notification for new ones; `Ack` records the core's acknowledgement and trims at once.

use crate::gateway::status;
use crate::spool::{Position, Spool, SpoolError, read_durable_after};
use crate::tls::subject_cn;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokumei_proto::spool::v1::spool_service_server::{SpoolService, SpoolServiceServer};
use tokumei_proto::spool::v1::{AckReply, AckRequest, PullRequest, SpoolFrame};
use tonic::{Code, Request, Response, Status};

/// Subject CN of the core store's client certificate (issued by `tokumei pki init`): the only identity the spool
/// service answers.
pub const CORE_COMMON_NAME: &str = "tokumei-core";

/// `ErrorInfo.reason` when a certificate other than the core's calls the spool service.
pub const NOT_THE_CORE: &str = "NOT_THE_CORE";
/// `ErrorInfo.reason` when the entries after the requested position were already removed.
pub const POSITION_TRIMMED: &str = "SPOOL_POSITION_TRIMMED";
/// `ErrorInfo.reason` when a position lies beyond what is durable in the spool.
pub const POSITION_BEYOND_END: &str = "SPOOL_POSITION_BEYOND_END";
/// `ErrorInfo.reason` when the spool could not be read or trimmed.
pub const SPOOL_FAILED: &str = "SPOOL_FAILED";

/// Payload bytes read from disk per step of a `Pull` stream.
const CHUNK_BYTES: usize = 4 << 20;
/// Frames buffered per stream ahead of HTTP/2 flow control.
const STREAM_BUFFER: usize = 16;
// Largest message the service sends: one spool frame (at most 256 MiB) plus its envelope.
pub use crate::spool::MAX_FRAME_MESSAGE;

/// The service; cheap to clone.
#[derive(Clone)]
pub struct SpoolServer {
    spool: Spool,
    stopping: watch::Receiver<bool>,
}

impl SpoolServer {
    /// Serves `spool`. Open `Pull` streams end when `stopping` becomes true, so that a graceful shutdown does not
    /// wait for the core to hang up.
    pub fn new(spool: Spool, stopping: watch::Receiver<bool>) -> Self {
        SpoolServer { spool, stopping }
    }

    /// The tonic service with message limits fit for spool frames.
    pub fn into_service(self) -> SpoolServiceServer<SpoolServer> {
        SpoolServiceServer::new(self)
            .max_encoding_message_size(MAX_FRAME_MESSAGE)
            .max_decoding_message_size(64 * 1024)
    }
}

/// Refuses every caller but the core store: the CN of the verified client certificate must be
/// [`CORE_COMMON_NAME`] (the TLS layer already checked that it chains to the configured CA).
fn require_core<T>(req: &Request<T>) -> Result<(), Status> {
    let cn = req
        .peer_certs()
        .and_then(|certs| certs.first().and_then(|leaf| subject_cn(leaf.as_ref())));
    if cn.as_deref() == Some(CORE_COMMON_NAME) {
        Ok(())
    } else {
        tracing::warn!(
            cn = cn.as_deref().unwrap_or("<none>"),
            "spool service refused a client that is not the core"
        );
        Err(status(
            Code::PermissionDenied,
            NOT_THE_CORE,
            format!("only the core store's certificate (CN {CORE_COMMON_NAME}) may use the spool service"),
        ))
    }
}

fn spool_status(e: &SpoolError) -> Status {
    match e {
        SpoolError::Missing { .. } => status(Code::FailedPrecondition, POSITION_TRIMMED, e.to_string()),
        SpoolError::BeyondEnd { .. } => status(Code::OutOfRange, POSITION_BEYOND_END, e.to_string()),
        _ => {
            tracing::error!(error = %e, "spool service failed");
            status(
                Code::Internal,
                SPOOL_FAILED,
                "the gateway could not read or trim its spool",
            )
        }
    }
}

/// Streams the durable entries after `after` into `tx` until the core hangs up, `max_entries` were sent (if not
/// 0), an error occurs, or the gateway stops.
async fn feed(
    spool: Spool,
    mut after: Option<Position>,
    max_entries: u32,
    tx: mpsc::Sender<Result<SpoolFrame, Status>>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut durable = spool.watch_durable();
    let mut sent = 0u64;
    let dir = spool.dir().to_path_buf();
    loop {
        if *stopping.borrow() {
            return;
        }
        let end = *durable.borrow_and_update();
        let d = dir.clone();
        let chunk = tokio::task::spawn_blocking(move || read_durable_after(&d, after, CHUNK_BYTES, end)).await;
        let chunk = match chunk {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let _ = tx.send(Err(spool_status(&e))).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool read task failed");
                let _ = tx
                    .send(Err(status(Code::Internal, SPOOL_FAILED, "spool read task failed")))
                    .await;
                return;
            }
        };
        if chunk.is_empty() {
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = stopping.changed() => return,
                // A safety net: a missed notification costs at most this much latency.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            }
            continue;
        }
        for (position, entry) in chunk {
            let frame = SpoolFrame {
                seq: position.to_seq(),
                entry: Some(entry),
            };
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
            after = Some(position);
            sent += 1;
            if max_entries > 0 && sent >= u64::from(max_entries) {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl SpoolService for SpoolServer {
    type PullStream = ReceiverStream<Result<SpoolFrame, Status>>;

    #[tracing::instrument(name = "spool.pull", skip_all, fields(after))]
    async fn pull(&self, request: Request<PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        require_core(&request)?;
        let r = request.into_inner();
        let after = r.has_after.then(|| Position::from_seq(r.after_seq));
        if let Some(a) = after {
            tracing::Span::current().record("after", a.to_string());
            let end = self.spool.durable_end();
            if a >= end {
                return Err(spool_status(&SpoolError::BeyondEnd { after: a, end }));
            }
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(feed(
            self.spool.clone(),
            after,
            r.max_entries,
            tx,
            self.stopping.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(name = "spool.ack", skip_all, fields(upto))]
    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckReply>, Status> {
        require_core(&request)?;
        let upto = Position::from_seq(request.into_inner().upto_seq);
        tracing::Span::current().record("upto", upto.to_string());
        let report = self.spool.ack(upto).await.map_err(|e| spool_status(&e))?;
        Ok(Response::new(AckReply {
            acked_seq: report.acked.to_seq(),
            segments_removed: report.segments_removed,
        }))
    }
}
