//! Gateway counters and histograms, exposed in Prometheus text format on the operator port.
//!
//! Labels carry hospital codes and reason codes only — never anything about a patient.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: the sending hospital's medical-institution code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HospitalLabel {
    /// 10-digit medical-institution code.
    pub hospital: String,
}

/// Label: a rejection reason code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// UPPER_SNAKE reason.
    pub reason: String,
}

/// Label: what happened to a batch or request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// e.g. committed, replayed, conflict, opt_out, erase.
    pub outcome: String,
}

/// All gateway metrics.
pub struct Metrics {
    /// Records accepted, by hospital.
    pub accepted: Family<HospitalLabel, Counter>,
    /// Records rejected, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Batches by outcome.
    pub batches: Family<OutcomeLabel, Counter>,
    /// Opt-out and erase requests by kind.
    pub requests: Family<OutcomeLabel, Counter>,
    /// Whole requests refused (a stream or a patient request answered with an error status), by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Seconds from the first message of a push stream to its receipt.
    pub receipt_latency: Histogram,
    /// Seconds spent in each spool fdatasync.
    pub fsync_latency: Histogram,
    /// Commits made durable per fsync.
    pub group_size: Histogram,
    /// Push streams currently open.
    pub open_streams: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokumei_ingest");
        let m = Metrics {
            accepted: Family::default(),
            rejected: Family::default(),
            batches: Family::default(),
            requests: Family::default(),
            refused: Family::default(),
            receipt_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            fsync_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            open_streams: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records_accepted",
            "Records accepted into the spool",
            m.accepted.clone(),
        );
        registry.register("records_rejected", "Records rejected, by reason", m.rejected.clone());
        registry.register("batches", "Batches by outcome", m.batches.clone());
        registry.register("patient_requests", "Opt-out and erase requests", m.requests.clone());
        registry.register(
            "requests_refused",
            "Whole requests refused with an error status, by reason",
            m.refused.clone(),
        );
        registry.register(
            "receipt_latency_seconds",
            "Push stream start to durable receipt",
            m.receipt_latency.clone(),
        );
        registry.register(
            "spool_fsync_seconds",
            "Duration of spool fdatasync",
            m.fsync_latency.clone(),
        );
        registry.register(
            "spool_group_commits",
            "Commits made durable per fsync",
            m.group_size.clone(),
        );
        registry.register(
            "open_push_streams",
            "Push streams currently open",
            m.open_streams.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Increments a reason counter.
    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Increments the refused-request counter of a reason.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Increments a batch outcome counter.
    pub fn batch(&self, outcome: &str) {
        self.batches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}
