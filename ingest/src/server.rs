//! Runs the gateway: key service, spool replay, mTLS listener, gRPC service, operator port, the core's spool
//! service and acknowledgement trimming, graceful shutdown.

use crate::config::{Config, resolve};
use crate::gateway::{Gateway, GatewaySettings};
use crate::keyservice::{KeyZone, SharedKeyService};
use crate::metrics::Metrics;
use crate::operator::{OperatorState, router};
use crate::registry::Registry;
use crate::spool::Spool;
use crate::spool_service::SpoolServer;
use crate::tls::{DevHospital, is_institution_code, server_config};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokumei_proto::ingest::v1::ingest_service_server::IngestServiceServer;
use tonic::transport::Server;

/// How often the gateway applies the core's acknowledgement file (`core.ack`, written by a same-host core).
/// Acknowledgements through the spool service are applied at once.
const ACK_POLL_INTERVAL: Duration = Duration::from_secs(3);
/// How often the hospital directory file is checked for a new version.
const DIRECTORY_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Key service.
    #[error(transparent)]
    Keys(#[from] crate::keyservice::KeyError),
    /// Spool.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Binding or serving.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A setting does not allow what was asked.
    #[error("{0}")]
    Refused(String),
    /// The hospital directory could not be taken.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
}

/// Options given on the command line rather than in the file.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Serve plaintext HTTP/2 on loopback, taking the hospital code from the `x-tokumei-dev-hospital` header.
    /// Only for local development; refused on non-loopback addresses.
    pub insecure_dev: bool,
}

/// Opens the configured key service ([`tokumei_keys::open_configured`]).
pub async fn open_key_service(config: &Config, home: &Path, zone: KeyZone) -> Result<SharedKeyService, ServeError> {
    Ok(crate::keyservice::open_configured(config, home, zone).await?)
}

/// A gateway running in this process (used by `serve`, the demo, the benchmark and tests).
pub struct RunningGateway {
    /// The hospital-facing address actually bound.
    pub addr: SocketAddr,
    /// The operator address actually bound.
    pub operator_addr: SocketAddr,
    /// The spool service address actually bound (`gateway.spool_listen`), if enabled.
    pub spool_addr: Option<SocketAddr>,
    /// Metrics, for in-process summaries.
    pub metrics: Arc<Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl RunningGateway {
    /// Asks for a graceful shutdown and waits until in-flight batches are finished.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.done
            .await
            .map_err(|e| ServeError::Refused(format!("gateway task: {e}")))?
    }

    /// Waits until the gateway stops (after `shutdown` resolves).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.done
            .await
            .map_err(|e| ServeError::Refused(format!("gateway task: {e}")))?
    }
}

/// Starts the gateway; it runs until `stop` is called or `external_shutdown` resolves.
pub async fn start(
    config: &Config,
    home: &Path,
    options: ServeOptions,
    external_shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningGateway, ServeError> {
    crate::tls::install_crypto_provider();
    let keys = open_key_service(config, home, KeyZone::Gateway).await?;
    tracing::info!(keys = %keys.describe(), "key service ready");
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(Mutex::new(Registry::default()));
    let spool_dir = resolve(home, &config.spool.dir);
    let retention = config.spool.batch_retention_days;
    std::fs::create_dir_all(&spool_dir).map_err(|source| ServeError::Io {
        what: format!("creating {}", spool_dir.display()),
        source,
    })?;
    // The spool is sealed at rest under a key the key service wraps (created on first start).
    let seal = Arc::new(
        crate::spool_seal::SpoolSeal::open_or_create(&spool_dir, keys.as_ref())
            .await
            .map_err(crate::spool::SpoolError::from)?,
    );
    crate::spool_seal::unlock(&spool_dir, seal.clone());
    // Outcomes past the idempotency window are dropped before they are read back, so a restart does not
    // load what the running gateway had already forgotten.
    if retention > 0 {
        let removed = crate::spool::expire_index(&spool_dir, batch_cutoff_ms(retention))?;
        if removed > 0 {
            tracing::info!(
                batches = removed,
                days = retention,
                "forgot batch outcomes past the idempotency window"
            );
        }
    }
    let spool = {
        let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
        let m = metrics.clone();
        let mut entries = 0u64;
        let spool = Spool::open(
            &spool_dir,
            config.spool.segment_bytes,
            seal,
            |replayed| {
                entries += 1;
                reg.replay(replayed);
            },
            move |g| {
                m.fsync_latency.observe(g.fsync.as_secs_f64());
                m.group_size.observe(g.commits as f64);
            },
        )?;
        tracing::info!(spool = %spool_dir.display(), entries, batches = reg.batch_count(), opted_out = reg.opted_out_count(), "spool replayed");
        spool
    };
    let directory = match &config.gateway.directory {
        Some(d) => {
            let key = crate::directory::verifying_key(&d.public_key)?;
            let watch = Arc::new(crate::directory::DirectoryWatch::open(&d.path, key)?);
            let current = watch.current();
            tracing::info!(hospitals = current.len(), issued_at = %current.issued_at, "hospital directory in force");
            Some(watch)
        }
        None => {
            tracing::warn!(
                "no hospital directory configured ([gateway.directory]): every certificate the CA issued may push"
            );
            None
        }
    };
    let settings = GatewaySettings {
        max_message_bytes: config.gateway.max_message_bytes,
        records_per_second: config.gateway.records_per_second,
        request_timeout: Duration::from_secs(config.gateway.request_timeout_secs),
        patient_requests_per_minute: config.gateway.patient_requests_per_minute,
        directory: directory.clone(),
    };
    // Acknowledged segments are deleted at start too, not only while running: an erased patient's data must not
    // outlive the core's acknowledgement because the gateway was restarted.
    match spool.apply_ack_file().await {
        Ok(Some(r)) if r.segments_removed > 0 => {
            tracing::info!(
                acked = %r.acked,
                segments = r.segments_removed,
                "trimmed acknowledged spool segments at start"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "applying the core's acknowledgement failed; nothing was trimmed"),
    }
    let (stopping_tx, stopping) = watch::channel(false);
    let stopping_tx = Arc::new(stopping_tx);
    spawn_ack_poller(spool.clone(), stopping.clone());
    if let Some(watch) = directory {
        spawn_directory_reload(watch, stopping.clone());
    }
    if retention > 0 {
        spawn_batch_expiry(spool.clone(), registry.clone(), retention, stopping.clone());
    }
    let spool_server = match config.gateway.spool_listen {
        Some(listen) => Some(start_spool_service(config, home, listen, spool.clone(), stopping.clone()).await?),
        None => None,
    };
    let spool_addr = spool_server.as_ref().map(|(a, _)| *a);
    let gateway = Gateway::new(keys, spool.clone(), registry, metrics.clone(), settings);
    let ready = Arc::new(AtomicBool::new(true));

    let operator = TcpListener::bind(config.gateway.operator_listen)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("bind operator port {}", config.gateway.operator_listen),
            source,
        })?;
    let operator_addr = operator.local_addr().map_err(|source| ServeError::Io {
        what: "operator address".into(),
        source,
    })?;
    let op_router = router(OperatorState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        spool,
    });
    let (op_stop_tx, op_stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(operator, op_router)
            .with_graceful_shutdown(async move {
                let _ = op_stop_rx.await;
            })
            .await;
    });

    let listener = TcpListener::bind(config.gateway.listen)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("bind {}", config.gateway.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        what: "listen address".into(),
        source,
    })?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let shutdown = {
        let gateway = gateway.clone();
        let ready = ready.clone();
        let stopping_tx = stopping_tx.clone();
        async move {
            tokio::select! {
                _ = stop_rx => {},
                _ = external_shutdown => {},
            }
            tracing::info!("shutting down: finishing in-flight batches");
            ready.store(false, Ordering::SeqCst);
            stopping_tx.send_replace(true);
            gateway.begin_shutdown();
        }
    };
    let max = config.gateway.max_message_bytes;
    // One decoded request may occupy at most three times the wire limit: with the wire bytes buffered, a
    // stream's message stays within four times the limit (docs/ingest.md).
    tokumei_proto::bounded::set_decoded_budget(max.saturating_mul(3));
    {
        // Refusals made while decoding — a unary one never reaches a handler — are counted and logged here.
        let metrics = metrics.clone();
        tokumei_proto::bounded::on_refusal(move |reason, code| {
            metrics.refuse(reason);
            tracing::warn!(code = ?code, reason, "request refused while decoding");
        });
    }
    // No server-wide timeout layer: it answers CANCELLED without a reason; each RPC runs under
    // `request_timeout_secs` itself and answers DEADLINE_EXCEEDED with one.
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // Batches are large (about 0.8 MB per 1,000 records): let them flow without waiting for WINDOW_UPDATEs.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20));
    let hospital_server = if options.insecure_dev {
        if !addr.ip().is_loopback() {
            return Err(ServeError::Refused(
                "--insecure-dev is only allowed on a loopback address".into(),
            ));
        }
        tracing::warn!(%addr, "INSECURE DEV MODE: plaintext gRPC, hospital identity from the x-tokumei-dev-hospital header");
        let dev_identity = |mut req: tonic::Request<()>| {
            let code = req
                .metadata()
                .get("x-tokumei-dev-hospital")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .filter(|c| is_institution_code(c))
                .ok_or_else(|| {
                    tonic::Status::permission_denied(
                        "x-tokumei-dev-hospital must be a 10-digit medical-institution code",
                    )
                })?;
            req.extensions_mut().insert(DevHospital(code));
            Ok(req)
        };
        let svc = tonic::service::interceptor::InterceptedService::new(
            IngestServiceServer::new(gateway).max_decoding_message_size(max),
            dev_identity,
        );
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let mut router = router;
        tokio::spawn(async move {
            let r = router
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            let _ = op_stop_tx.send(());
            r.map_err(ServeError::from)
        })
    } else {
        let tls = server_config(
            &resolve(home, &config.tls.client_ca),
            &resolve(home, &config.tls.cert),
            &resolve(home, &config.tls.key),
        )?;
        let incoming = tls_incoming(
            listener,
            tls,
            Duration::from_secs(config.gateway.handshake_timeout_secs),
            Some(metrics.clone()),
        );
        let svc = IngestServiceServer::new(gateway).max_decoding_message_size(max);
        let mut router = router;
        tokio::spawn(async move {
            let r = router
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            let _ = op_stop_tx.send(());
            r.map_err(ServeError::from)
        })
    };
    let done = tokio::spawn(async move {
        let r = hospital_server
            .await
            .map_err(|e| ServeError::Refused(format!("gateway task: {e}")))?;
        // Whatever ended the hospital listener ends the spool service and the acknowledgement poller too.
        stopping_tx.send_replace(true);
        if let Some((_, task)) = spool_server {
            task.await
                .map_err(|e| ServeError::Refused(format!("spool service task: {e}")))??;
        }
        r
    });
    tracing::info!(%addr, %operator_addr, spool_service = ?spool_addr, "gateway listening");
    Ok(RunningGateway {
        addr,
        operator_addr,
        spool_addr,
        metrics,
        shutdown: Some(stop_tx),
        done,
    })
}

/// How often batch outcomes past the idempotency window are forgotten while running.
const BATCH_EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// The commit time before which a batch outcome is forgotten.
fn batch_cutoff_ms(days: u32) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    now - i64::from(days) * 86_400_000
}

/// Forgets batch outcomes past the idempotency window, in memory and in `index.log`, every
/// [`BATCH_EXPIRY_INTERVAL`] until the gateway stops. Only acknowledged batches are in `index.log`; the memory
/// side forgets by commit time, which a batch still waiting for the core's acknowledgement after the whole
/// window would also pass — such a spool is an incident the operator sees long before.
fn spawn_batch_expiry(spool: Spool, registry: Arc<Mutex<Registry>>, days: u32, stopping: watch::Receiver<bool>) {
    spawn_every(BATCH_EXPIRY_INTERVAL, stopping, move || {
        let (spool, registry) = (spool.clone(), registry.clone());
        async move {
            let cutoff = batch_cutoff_ms(days);
            let forgotten = registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .expire_batches(cutoff);
            match spool.expire_batches(cutoff).await {
                Ok(n) if n > 0 || forgotten > 0 => {
                    tracing::info!(
                        batches = forgotten,
                        index_records = n,
                        days,
                        "forgot batch outcomes past the idempotency window"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "expiring batch outcomes from the spool index failed"),
            }
        }
    });
}

/// Runs `work` every `interval` (not at once) until the gateway stops.
fn spawn_every<F, Fut>(interval: Duration, mut stopping: watch::Receiver<bool>, work: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = stopping.changed() => return,
            }
            if *stopping.borrow() {
                return;
            }
            work().await;
        }
    });
}

/// Re-reads the hospital directory every [`DIRECTORY_POLL_INTERVAL`] when its file changed; a file that does
/// not verify is refused (logged) and the directory in force stays.
fn spawn_directory_reload(watch: Arc<crate::directory::DirectoryWatch>, stopping: watch::Receiver<bool>) {
    spawn_every(DIRECTORY_POLL_INTERVAL, stopping, move || {
        let watch = watch.clone();
        async move {
            match watch.reload_if_changed() {
                Ok(true) => {
                    let d = watch.current();
                    tracing::info!(hospitals = d.len(), issued_at = %d.issued_at, "new hospital directory in force");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "hospital directory update refused; the previous one stays in force")
                }
            }
        }
    });
}

/// Applies `core.ack` every [`ACK_POLL_INTERVAL`] until the gateway stops.
fn spawn_ack_poller(spool: Spool, stopping: watch::Receiver<bool>) {
    spawn_every(ACK_POLL_INTERVAL, stopping, move || {
        let spool = spool.clone();
        async move {
            if let Err(e) = spool.apply_ack_file().await {
                tracing::error!(error = %e, "applying the core's acknowledgement failed");
            }
        }
    });
}

/// Binds `gateway.spool_listen` and serves the spool service over mutual TLS 1.3 until `stopping`.
async fn start_spool_service(
    config: &Config,
    home: &Path,
    listen: SocketAddr,
    spool: Spool,
    stopping: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<(), ServeError>>), ServeError> {
    let listener = TcpListener::bind(listen).await.map_err(|source| ServeError::Io {
        what: format!("bind spool service {listen}"),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        what: "spool service address".into(),
        source,
    })?;
    // The same CA as the hospitals': the certificate check admits the core and the hospitals alike, and the
    // service itself refuses every identity but the core's.
    let tls = server_config(
        &resolve(home, &config.tls.client_ca),
        &resolve(home, &config.tls.cert),
        &resolve(home, &config.tls.key),
    )?;
    let incoming = tls_incoming(
        listener,
        tls,
        Duration::from_secs(config.gateway.handshake_timeout_secs),
        None,
    );
    let service = SpoolServer::new(spool, stopping.clone()).into_service();
    let mut stop = stopping;
    let task = tokio::spawn(async move {
        Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(ServeError::from)
    });
    tracing::info!(%addr, "spool service listening (core certificate only)");
    Ok((addr, task))
}

type TlsConn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Accepts TCP connections and completes TLS handshakes concurrently, yielding only verified connections:
/// a client without a valid certificate never reaches the gRPC layer. Refused and timed-out handshakes are
/// counted on `metrics` (`TLS_HANDSHAKE_REFUSED`, `TLS_HANDSHAKE_TIMEOUT`) when given.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    metrics: Option<Arc<Metrics>>,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let refused = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "TLS handshake refused");
                        "TLS_HANDSHAKE_REFUSED"
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                        "TLS_HANDSHAKE_TIMEOUT"
                    }
                };
                if let Some(m) = metrics {
                    m.refuse(refused);
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
