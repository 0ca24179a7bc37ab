//! The core process: pulls committed entries from the gateway's spool, applies them, acknowledges, and
//! compacts on a schedule.
//!
//! Direction of connections: the core only ever connects *out* — to the spool directory on one host, or to
//! the gateway's `SpoolService` over mTLS on several hosts, and to the policy service for operators' orders
//! ([`crate::orders`]). It listens on nothing.

use crate::apply::{Applier, ApplyReport};
use crate::compaction;
use crate::error::StoreError;
use crate::orders::OrderSource;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokumei_platform::config::Config;
use tokumei_spool::spool_feed::{SpoolFeed, open_feed};

/// How the core runs.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// Stop once the spool holds nothing new (for batch runs, tests and the demo).
    pub until_drained: bool,
    /// Largest chunk pulled at once (bytes of spool payload).
    pub chunk_bytes: usize,
    /// How long one pull waits for new entries.
    pub poll: Duration,
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            until_drained: false,
            chunk_bytes: 64 * 1024 * 1024,
            poll: Duration::from_millis(500),
        }
    }
}

/// Totals over a run (what `tokumei core run --json` prints, and the demo reads back).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CoreTotals {
    /// Spool entries processed.
    pub entries: usize,
    /// Batches written.
    pub batches: usize,
    /// Records written.
    pub records: usize,
    /// Rows written over all tables.
    pub rows: usize,
    /// Records refused because the patient opted out.
    pub records_refused: usize,
    /// Opt-outs applied.
    pub opt_outs: usize,
    /// Keys stopped because a refused record linked them to a stopped person.
    pub keys_linked: usize,
    /// Erasures carried out.
    pub erasures: usize,
    /// Compaction passes that rewrote something.
    pub compactions: usize,
    /// Last acknowledged spool position.
    pub acknowledged_through: Option<String>,
    /// Wall time.
    pub seconds: f64,
}

impl CoreTotals {
    fn add(&mut self, r: &ApplyReport) {
        self.entries += r.entries;
        self.batches += r.batches;
        self.records += r.records;
        self.rows += r.rows;
        self.records_refused += r.records_refused;
        self.opt_outs += r.opt_outs;
        self.keys_linked += r.keys_linked;
        self.erasures += r.erasures.len();
    }
}

/// Exclusive right to write the store from this host: one core at a time, and maintenance commands refuse
/// while it runs (a zero-retention vacuum must never race another writer).
pub struct WriterLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl WriterLock {
    /// Takes the lock or fails at once.
    pub fn acquire(home: &Path) -> Result<WriterLock, StoreError> {
        let dir = home.join("run");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        let path = dir.join("store-writer.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Io(path.display().to_string(), e))?;
        match file.try_lock() {
            Ok(()) => Ok(WriterLock { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(path.display().to_string())),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io(path.display().to_string(), e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Runs the core until `shutdown` resolves (or, with `until_drained`, until the spool has nothing new).
pub async fn run(
    store: Arc<Store>,
    config: &Config,
    home: &Path,
    options: CoreOptions,
    orders: Option<OrderSource>,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&CoreTotals),
) -> Result<CoreTotals, StoreError> {
    let _lock = WriterLock::acquire(home)?;
    let started = Instant::now();
    let maintenance = Arc::new(tokio::sync::Mutex::new(()));
    let mut applier = Applier::open(store.clone(), maintenance.clone()).await?;
    let resume = applier.resume_after();
    tracing::info!(resume_after = ?resume.map(|p| p.to_string()), "core starting");
    let mut feed: Box<dyn SpoolFeed> = open_feed(config, home, resume)
        .await
        .map_err(|e| StoreError::Feed(e.to_string()))?;
    tracing::info!(feed = %feed.describe(), store = %store.location().describe(), "core pulling");

    let compactions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let compactor = {
        let every = store.config().compact_every_secs;
        let min_files = store.config().compact_min_files;
        let store = store.clone();
        let maintenance = maintenance.clone();
        let compactions = compactions.clone();
        tokio::spawn(async move {
            if every == 0 {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.tick().await;
            loop {
                tick.tick().await;
                let _guard = maintenance.lock().await;
                match compaction::compact(&store, min_files).await {
                    Ok(done) if !done.is_empty() => {
                        compactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(tables = done.len(), "compaction finished");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "compaction failed; will retry"),
                }
            }
        })
    };

    // Operators' orders, taken from the policy service (outbound, like the spool).
    // Erasures among them come back here, to run between chunks (see `ErasureJob`).
    let (erasure_tx, mut erasure_rx) = tokio::sync::mpsc::channel::<crate::orders::ErasureJob>(4);
    let order_taker = orders.map(|source| {
        tokio::spawn(crate::orders::serve(
            source,
            store.clone(),
            maintenance.clone(),
            erasure_tx.clone(),
        ))
    });

    let mut totals = CoreTotals::default();
    tokio::pin!(shutdown);
    let result = loop {
        while let Ok(job) = erasure_rx.try_recv() {
            let outcome = applier.carry_out_order(&job.request).await;
            // Whatever it removed (or failed half-way): a package read before it is not delivered.
            store.note_exclusions_changed();
            if let Ok(Some(cert)) = &outcome {
                totals.erasures += 1;
                tracing::info!(rows = cert.rows_removed, "operator's erasure carried out");
            }
            let _ = job.done.send(outcome.map_err(|e| e.to_string()));
        }
        let chunk = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            c = feed.next_chunk(options.chunk_bytes, options.poll) => c,
        };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => break Err(StoreError::Feed(e.to_string())),
        };
        if chunk.is_empty() {
            if options.until_drained {
                break Ok(());
            }
            continue;
        }
        let report = match applier.apply(&chunk).await {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        totals.add(&report);
        if report.opt_outs > 0 || !report.erasures.is_empty() {
            store.note_exclusions_changed();
        }
        if let Some(p) = report.committed_through {
            if let Err(e) = feed.ack(p).await {
                break Err(StoreError::Feed(e.to_string()));
            }
            totals.acknowledged_through = Some(p.to_string());
        }
        totals.seconds = started.elapsed().as_secs_f64();
        totals.compactions = compactions.load(std::sync::atomic::Ordering::Relaxed);
        on_progress(&totals);
        tracing::debug!(records = report.records, rows = report.rows, "applied chunk");
    };
    compactor.abort();
    if let Some(t) = order_taker {
        t.abort();
    }
    totals.seconds = started.elapsed().as_secs_f64();
    totals.compactions = compactions.load(std::sync::atomic::Ordering::Relaxed);
    result.map(|()| totals)
}
