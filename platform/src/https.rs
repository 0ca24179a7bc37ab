//! The accept loop of the platform's HTTP endpoints (the release zone's downloads, the web console): TLS by
//! rustls (or plaintext, for a development console on loopback only), at most [`MAX_CONNECTIONS`] connections at
//! once (the next waits to be accepted), a handshake timeout, and — for HTTP/1.1-only endpoints such as the
//! console — a header-read timeout from the first byte of every request, the first included, so that a client that
//! connects and sends nothing cannot hold a connection. Each request carries its [`Peer`] (the audit ledger records
//! where a request came from); requests in flight get a short grace period at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; the accept loop waits for one to end before accepting more.
pub const MAX_CONNECTIONS: usize = 1024;

/// Which HTTP versions an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only: every request's head, the first included, must arrive within the header-read timeout.
    Http1,
    /// HTTP/1.1 or HTTP/2, as the client's first bytes say (the release zone's downloads offer both by ALPN).
    Auto,
}

/// The peer address of a connection, put in each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(
    /// The client's address.
    pub SocketAddr,
);

/// Serves `app` on `listener` — over TLS with `tls`, in plaintext when it is `None` — until `shutdown` resolves;
/// then requests in flight get `grace` before they are cut.
pub async fn serve(
    app: Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    protocols: Protocols,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            slot = slots.clone().acquire_owned() => {
                let Ok(slot) = slot else { break };
                let accepted = tokio::select! {
                    () = &mut shutdown => break,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(ok) => ok,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an HTTP connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    match acceptor {
                        None => connection(tcp, peer, app, protocols).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => connection(tls, peer, app, protocols).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
        }
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(grace, drain).await;
    connections.abort_all();
}

/// One connection's requests, each with its [`Peer`].
async fn connection<S>(stream: S, peer: SocketAddr, app: Router, protocols: Protocols)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        let mut app = app.clone();
        async move { app.call(request).await }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if protocols == Protocols::Http1 {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
