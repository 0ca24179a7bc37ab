//! The HTTPS download endpoint: `GET /v1/downloads/{token}` (and `HEAD`).
//!
//! - Without `Range`: `200` with the whole file. With one range (`Range: bytes=a-b`, `a-` or `-n`): `206`
//!   with `Content-Range`. A range that starts past the end, several ranges at once or a malformed range
//!   are `416` with `Content-Range: bytes */LEN` (strict on purpose: answering `200` instead would send, and
//!   use up, the whole file). `If-Range` with another entity tag than the file's is honoured by sending
//!   the whole file.
//! - `ETag` is the file's SHA-256 (the client verifies its download against it), `Accept-Ranges: bytes`,
//!   `Content-Disposition: attachment`, `Cache-Control: no-store`.
//! - The file is decrypted from the zone [`CHUNK`] bytes at a time as the connection takes it: memory use
//!   does not grow with file size.
//! - Every request with a known token is audited before any byte is sent: `download.transfer` on
//!   `release R`, by the token's recipient, from `https:<peer address>`, with the file, the range and the
//!   byte count (refusals too, as `denied` with their reason). If the ledger cannot be written, nothing is
//!   sent (`503 AUDIT_UNAVAILABLE`). The token never appears in the ledger or the logs.
//! - Errors are JSON `{"reason": "...", "message": "..."}`: `TOKEN_INVALID` (404), `TOKEN_USED` and
//!   `TOKEN_EXPIRED` (410), `RANGE_NOT_SATISFIABLE` (416), `NOT_FOUND` (404), `AUDIT_UNAVAILABLE` (503),
//!   `INTERNAL` (500).
//!
//! TLS is rustls (HTTP/2 or HTTP/1.1 by ALPN); a plaintext client gets nothing but a failed handshake.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::json;
use tokio::net::TcpListener;
use tokumei_policy::audit_ledger::{AuditEvent, Outcome};

use super::tokens::{DownloadGrant, TokenError, TokenId};
use super::{Delivery, DeliveryError};
use crate::error::ReleaseError;
use crate::sealed_file::SealedFile;
pub use tokumei_platform::https::Peer;

/// Bytes decrypted and handed to the connection at a time.
pub const CHUNK: u64 = 1 << 20;

/// A transfer longer than this re-checks the approval again before going on: a revocation or ban stops a
/// download under way within this many bytes, not only the next request.
pub const RECHECK_EVERY: u64 = 16 * CHUNK;

/// How long transfers in flight may go on after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An HTTP error in the endpoint's JSON shape.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    reason: std::borrow::Cow<'static, str>,
    message: String,
    content_range: Option<String>,
}

impl HttpError {
    fn new(
        status: StatusCode,
        reason: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> HttpError {
        HttpError {
            status,
            reason: reason.into(),
            message: message.into(),
            content_range: None,
        }
    }

    fn internal(e: &dyn std::fmt::Display) -> HttpError {
        tracing::error!(error = %e, "download failed");
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error in the download service (details are in the server's log)",
        )
    }
}

impl From<&TokenError> for HttpError {
    fn from(e: &TokenError) -> HttpError {
        let status = match e {
            TokenError::Invalid => StatusCode::NOT_FOUND,
            TokenError::Used(_) | TokenError::Expired(_) => StatusCode::GONE,
        };
        HttpError::new(status, e.reason(), e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"reason": self.reason, "message": self.message}).to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(range) = self.content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
            headers.insert(header::CONTENT_RANGE, range);
        }
        response
    }
}

/// What the client asked for, against a file of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (applicable) `Range`: the whole file, `200`.
    Full,
    /// One satisfiable range (end exclusive), `206`.
    Partial(Range<u64>),
    /// `416`: starts past the end, several ranges, or malformed.
    Unsatisfiable(&'static str),
}

/// Parses a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`) against a file of `len` bytes.
/// Units other than bytes are ignored (the whole file), as HTTP allows.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeRequest {
    let Some(value) = value else {
        return RangeRequest::Full;
    };
    let value = value.trim();
    let Some((unit, spec)) = value.split_once('=') else {
        return RangeRequest::Unsatisfiable("malformed Range header");
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    if spec.contains(',') {
        return RangeRequest::Unsatisfiable("one range per request");
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Unsatisfiable("malformed Range header");
    };
    let number = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // -n: the last n bytes.
        (true, false) => match number(last) {
            Some(0) | None => RangeRequest::Unsatisfiable("malformed or empty suffix range"),
            Some(_) if len == 0 => RangeRequest::Unsatisfiable("the file is empty"),
            Some(n) => RangeRequest::Partial(len.saturating_sub(n)..len),
        },
        // a-: from a to the end.
        (false, true) => match number(first) {
            Some(a) if a < len => RangeRequest::Partial(a..len),
            Some(_) => RangeRequest::Unsatisfiable("the range starts past the end of the file"),
            None => RangeRequest::Unsatisfiable("malformed Range header"),
        },
        // a-b, inclusive.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b && a < len => RangeRequest::Partial(a..b.saturating_add(1).min(len)),
            (Some(a), Some(b)) if a <= b => RangeRequest::Unsatisfiable("the range starts past the end of the file"),
            _ => RangeRequest::Unsatisfiable("malformed Range header"),
        },
        (true, true) => RangeRequest::Unsatisfiable("malformed Range header"),
    }
}

/// The router of the endpoint (the accept loop adds each request's [`Peer`]).
pub fn router(delivery: Delivery) -> Router {
    Router::new()
        .route("/v1/downloads/{token}", get(download))
        .with_state(delivery)
}

async fn download(State(delivery): State<Delivery>, Path(token): Path<String>, request: Request) -> Response {
    let source = match request.extensions().get::<Peer>() {
        Some(Peer(addr)) => format!("https:{addr}"),
        None => "https:unknown".to_owned(),
    };
    let head = request.method() == Method::HEAD;
    match transfer(&delivery, &token, head, request.headers(), &source).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// The ledger entry of one request (never the token).
fn transfer_event(grant: &DownloadGrant, source: &str, outcome: Outcome, details: serde_json::Value) -> AuditEvent {
    let mut details = details;
    if let Some(map) = details.as_object_mut() {
        map.insert("file".into(), json!(grant.file));
        map.insert("user".into(), json!(grant.recipient));
        map.insert("application".into(), json!(grant.application));
    }
    AuditEvent::new(
        &grant.recipient,
        "download.transfer",
        format!("release {}", grant.release),
        outcome,
    )
    .source(source)
    .details(details)
}

async fn audit(delivery: &Delivery, event: AuditEvent) -> Result<(), HttpError> {
    delivery.policy.record(&event).await.map(|_| ()).map_err(|e| {
        tracing::error!(reason = %super::policy_link::reason_of(&e), "audit ledger unavailable: download refused");
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "AUDIT_UNAVAILABLE",
            "the audit ledger cannot be written; nothing was sent. Try again later",
        )
    })
}

async fn transfer(
    delivery: &Delivery,
    token: &str,
    head: bool,
    headers: &HeaderMap,
    source: &str,
) -> Result<Response, HttpError> {
    let method = if head { "HEAD" } else { "GET" };
    let (id, grant) = match delivery.tokens.redeem(token) {
        Ok(ok) => ok,
        Err(e) => {
            if let Some(grant) = e.grant() {
                let event =
                    transfer_event(grant, source, Outcome::Denied, json!({"method": method})).reason(e.reason());
                audit(delivery, event).await?;
            } else {
                tracing::info!(%source, "download with an unknown token refused");
            }
            return Err(HttpError::from(&e));
        }
    };
    // The approval is re-checked at every request, not only when the token was issued: a revocation (of the
    // approval or anything it amends), a ban of the person or organisation, or expiry stops the token too.
    if let Err(e) = still_allowed(delivery, id, &grant).await {
        let event = transfer_event(&grant, source, Outcome::Denied, json!({"method": method})).reason(e.reason.clone());
        audit(delivery, event).await?;
        return Err(e);
    }
    let len = grant.bytes;
    let etag = format!("\"{}\"", grant.sha256);
    let if_range_matches = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let range_header = headers.get(header::RANGE).map(|v| v.to_str().unwrap_or("\u{0}"));
    let requested = if if_range_matches {
        parse_range(range_header, len)
    } else {
        RangeRequest::Full
    };
    let (range, partial) = match requested {
        RangeRequest::Full => (0..len, false),
        RangeRequest::Partial(r) => (r, true),
        RangeRequest::Unsatisfiable(why) => {
            let event = transfer_event(
                &grant,
                source,
                Outcome::Denied,
                json!({"method": method, "range": range_header.unwrap_or_default()}),
            )
            .reason("RANGE_NOT_SATISFIABLE");
            audit(delivery, event).await?;
            let mut e = HttpError::new(StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_NOT_SATISFIABLE", why);
            e.content_range = Some(format!("bytes */{len}"));
            return Err(e);
        }
    };
    let file = open(delivery, &grant).await?;
    let bytes = if head { 0 } else { range.end - range.start };
    let range_text = if range.is_empty() {
        "none".to_owned()
    } else {
        format!("{}-{}", range.start, range.end - 1)
    };
    let event = transfer_event(
        &grant,
        source,
        Outcome::Ok,
        json!({"method": method, "range": range_text, "bytes": bytes, "file_bytes": len, "partial": partial}),
    );
    audit(delivery, event).await?;

    let mut builder = Response::builder()
        .status(if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, range.end - range.start)
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", grant.file),
        );
    if partial {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{len}", range.start, range.end - 1),
        );
    }
    let body = if head {
        Body::empty()
    } else {
        if range.is_empty() {
            // An empty file: one full request is the whole download.
            delivery.tokens.record_sent(id, 0..0);
        }
        Body::from_stream(stream(
            delivery.clone(),
            id,
            grant.clone(),
            source.to_owned(),
            file,
            range,
        ))
    };
    builder.body(body).map_err(|e| HttpError::internal(&e))
}

/// Whether the approval still allows the grant's recipient to receive it; if not, the token is forgotten
/// (later requests are `TOKEN_INVALID`) and the refusal carries the policy's reason code.
async fn still_allowed(delivery: &Delivery, id: TokenId, grant: &DownloadGrant) -> Result<(), HttpError> {
    match delivery
        .policy
        .recheck_transfer(&grant.recipient, &grant.application)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if super::policy_link::unavailable(&e) => {
            tracing::error!(reason = %super::policy_link::reason_of(&e), "policy service unavailable: download refused");
            Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "POLICY_UNAVAILABLE",
                "the approval cannot be checked now; nothing was sent. Try again later",
            ))
        }
        Err(e) => {
            delivery.tokens.forget(id);
            Err(HttpError::new(
                StatusCode::FORBIDDEN,
                super::policy_link::reason_of(&e),
                "the approval no longer allows this download (the reason code says why)",
            ))
        }
    }
}

/// Opens the grant's sealed file and checks it is the file the token was issued for.
async fn open(delivery: &Delivery, grant: &DownloadGrant) -> Result<SealedFile, HttpError> {
    let zone = delivery.zone.clone();
    let release = grant.release.clone();
    let record = tokio::task::spawn_blocking(move || zone.record(&release))
        .await
        .map_err(|e| HttpError::internal(&e))?;
    let opened = match record {
        Ok(record) => {
            delivery
                .zone
                .open_copy_file(&record, &grant.recipient, &grant.file)
                .await
        }
        Err(e) => Err(e),
    };
    let file = match opened {
        Ok(f) => f,
        Err(ReleaseError::NotFound(what)) => {
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("not found: {what}"),
            ));
        }
        Err(e) => return Err(HttpError::internal(&e)),
    };
    if file.plain_len() != grant.bytes {
        return Err(HttpError::internal(&format!(
            "release {} file {}: {} bytes on disk, {} recorded",
            grant.release,
            grant.file,
            file.plain_len(),
            grant.bytes
        )));
    }
    Ok(file)
}

/// The decrypted bytes of `range`, [`CHUNK`] at a time; each chunk handed to the connection is recorded
/// against the token.
fn stream(
    delivery: Delivery,
    id: TokenId,
    grant: DownloadGrant,
    source: String,
    file: SealedFile,
    range: Range<u64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::try_unfold((Some(file), range.start), move |(file, pos)| {
        let delivery = delivery.clone();
        let grant = grant.clone();
        let source = source.clone();
        let (start, end) = (range.start, range.end);
        async move {
            let Some(mut file) = file else {
                return Ok(None);
            };
            if pos >= end {
                return Ok(None);
            }
            if pos > start
                && (pos - start).is_multiple_of(RECHECK_EVERY)
                && let Err(e) = still_allowed(&delivery, id, &grant).await
            {
                let event = transfer_event(&grant, &source, Outcome::Denied, json!({"sent_until": pos}))
                    .reason(e.reason.clone());
                let _ = audit(&delivery, event).await;
                return Err(std::io::Error::other(format!("download stopped: {}", e.reason)));
            }
            let next = end.min(pos.saturating_add(CHUNK));
            let (file, read) = tokio::task::spawn_blocking(move || {
                let read = file.read_range(pos..next);
                (file, read)
            })
            .await
            .map_err(std::io::Error::other)?;
            let chunk = read.map_err(|e| {
                tracing::error!(error = %e, "reading a sealed file during a download");
                std::io::Error::other(e.to_string())
            })?;
            if chunk.len() as u64 != next - pos {
                return Err(std::io::Error::other("sealed file shorter than recorded"));
            }
            delivery.tokens.record_sent(id, pos..next);
            Ok(Some((Bytes::from(chunk), (Some(file), next))))
        }
    })
}

/// Accepts TLS connections on `listener` and serves the endpoint on each until `shutdown` resolves; then
/// transfers in flight get a short grace period before they are cut.
pub(super) async fn serve(
    delivery: Delivery,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DeliveryError> {
    tokumei_platform::https::serve(
        router(delivery),
        listener,
        Some(tls),
        tokumei_platform::https::Protocols::Auto,
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await;
    tracing::info!("release downloads: no longer accepting connections");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        let p = |v: &str| parse_range(Some(v), 100);
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(p("bytes=0-9"), Partial(0..10));
        assert_eq!(p("bytes=90-200"), Partial(90..100));
        assert_eq!(p("bytes=50-"), Partial(50..100));
        assert_eq!(p("bytes=-10"), Partial(90..100));
        assert_eq!(p("bytes=-500"), Partial(0..100));
        assert_eq!(p("items=0-1"), Full);
        assert!(matches!(p("bytes=100-"), Unsatisfiable(_)));
        assert!(matches!(p("bytes=100-120"), Unsatisfiable(_)));
        assert!(matches!(p("bytes=0-1,5-6"), Unsatisfiable(_)));
        assert!(matches!(p("bytes=9-1"), Unsatisfiable(_)));
        assert!(matches!(p("bytes=-0"), Unsatisfiable(_)));
        assert!(matches!(p("bytes=a-b"), Unsatisfiable(_)));
        assert!(matches!(p("bytes=+1-2"), Unsatisfiable(_)));
        assert!(matches!(parse_range(Some("bytes=0-"), 0), Unsatisfiable(_)));
    }
}
