//! One anonymisation job end to end, on an already encoded dataset: search, apply, measure risk,
//! report. Pure: reading inputs and writing outputs is left to the caller.

use std::time::Instant;

use crate::dataset::Dataset;
use crate::error::Result;
use crate::metric::Metric;
use crate::model::PrivacyModel;
use crate::report::{MetricReport, Report, RiskReport};
use crate::risk::summarize;
use crate::search::{Optimised, search_and_apply};
use crate::transform::Anonymized;

/// Job settings besides the data.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    /// Privacy model and suppression limit.
    pub model: PrivacyModel,
    /// Utility metric to optimise.
    pub metric: Metric,
    /// Prosecutor-risk threshold for "records above threshold" (default 0.2 = classes below 5).
    pub risk_threshold: f64,
    /// Sampling fraction for the population-uniqueness estimate.
    pub sampling_fraction: f64,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            model: PrivacyModel::default(),
            metric: Metric::Loss,
            risk_threshold: 0.2,
            sampling_fraction: 0.01,
        }
    }
}

/// Result of a job.
#[derive(Debug, Clone)]
pub struct JobOutput {
    /// The report.
    pub report: Report,
    /// The applied transformation (for writing the output).
    pub anonymized: Anonymized,
}

/// Finds the optimal transformation, applies it and reports utility and risk.
pub fn run(ds: &Dataset, cfg: &JobConfig) -> Result<JobOutput> {
    let start = Instant::now();
    let Optimised {
        found,
        applied: anonymized,
        original_class_sizes,
    } = search_and_apply(ds, &cfg.model, cfg.metric)?;
    let before = summarize(&original_class_sizes, cfg.risk_threshold, cfg.sampling_fraction);
    let after = summarize(&anonymized.class_sizes, cfg.risk_threshold, cfg.sampling_fraction);
    let report = Report {
        transformation: ds
            .qis
            .iter()
            .zip(&found.levels)
            .map(|(q, &l)| (q.name.clone(), l))
            .collect(),
        qi_order: ds.qis.iter().map(|q| q.name.clone()).collect(),
        metric: MetricReport {
            name: cfg.metric.name().to_string(),
            value: found.metric.value,
        },
        suppressed: anonymized.suppressed,
        suppressed_fraction: anonymized.suppressed as f64 / ds.n as f64,
        records: ds.n as u64,
        subjects: ds.subjects.as_ref().map(|_| ds.n_subjects as u64),
        classes: anonymized.class_sizes.len() as u64,
        min_class_size: anonymized.class_sizes.iter().map(|c| c.0).min().unwrap_or(0),
        nodes_checked: found.nodes_checked,
        lattice_size: found.lattice_size,
        elapsed_ms: start.elapsed().as_millis() as u64,
        model: cfg.model.clone(),
        risk: RiskReport { before, after },
    };
    Ok(JobOutput { report, anonymized })
}
