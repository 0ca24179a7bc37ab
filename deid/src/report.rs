//! The job report: a serde structure for machines (`REPORT.json`) and a short table for humans.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::model::PrivacyModel;
use crate::risk::RiskSummary;

/// Metric name and value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricReport {
    /// Metric name (`loss`, `discernibility`, ...).
    pub name: String,
    /// Value of the chosen transformation.
    pub value: f64,
}

/// Risk before and after anonymisation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RiskReport {
    /// Original data (no generalisation, nothing suppressed).
    pub before: RiskSummary,
    /// Released data (kept records only).
    pub after: RiskSummary,
}

/// Everything a job reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// QI name → generalisation level.
    pub transformation: BTreeMap<String, u32>,
    /// QI names in input order (the JSON object above is sorted by name).
    pub qi_order: Vec<String>,
    /// Utility metric.
    pub metric: MetricReport,
    /// Suppressed records.
    pub suppressed: u64,
    /// Suppressed fraction of all records.
    pub suppressed_fraction: f64,
    /// Records in the input.
    pub records: u64,
    /// Distinct subjects (patient-level counting only).
    pub subjects: Option<u64>,
    /// Equivalence classes in the output (kept records).
    pub classes: u64,
    /// Smallest class (distinct subjects with patient-level counting).
    pub min_class_size: u64,
    /// Nodes whose classes were computed by the search.
    pub nodes_checked: u64,
    /// Nodes in the lattice.
    pub lattice_size: u64,
    /// Wall-clock time of encoding, search, transformation and risk analysis.
    pub elapsed_ms: u64,
    /// The privacy model that was enforced.
    pub model: PrivacyModel,
    /// Risk before and after.
    pub risk: RiskReport,
}

impl Report {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Short human summary: transformation, metric, suppression, classes and a risk table.
    pub fn human_summary(&self) -> String {
        let mut s = String::new();
        let levels: Vec<String> = self
            .qi_order
            .iter()
            .map(|q| format!("{q}={}", self.transformation.get(q).copied().unwrap_or_default()))
            .collect();
        let _ = writeln!(s, "model:          {}", self.model.describe());
        let _ = writeln!(s, "transformation: {}", levels.join(" "));
        let _ = writeln!(s, "metric:         {} = {:.6}", self.metric.name, self.metric.value);
        let _ = writeln!(
            s,
            "suppressed:     {} of {} records ({:.2}%, limit {:.2}%)",
            self.suppressed,
            self.records,
            100.0 * self.suppressed_fraction,
            100.0 * self.model.suppression_limit
        );
        let _ = writeln!(s, "classes:        {} (smallest {})", self.classes, self.min_class_size);
        let _ = writeln!(
            s,
            "search:         {} of {} nodes checked in {} ms",
            self.nodes_checked, self.lattice_size, self.elapsed_ms
        );
        let (b, a) = (&self.risk.before, &self.risk.after);
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "risk", "before", "after");
        let rows: [(&str, f64, f64); 6] = [
            ("prosecutor max", b.prosecutor_max, a.prosecutor_max),
            ("prosecutor average", b.prosecutor_avg, a.prosecutor_avg),
            (
                "records above threshold",
                b.fraction_above_threshold,
                a.fraction_above_threshold,
            ),
            ("sample uniques", b.sample_uniqueness, a.sample_uniqueness),
            ("marketer", b.marketer, a.marketer),
            (
                "population uniques (Pitman)",
                b.population_uniqueness,
                a.population_uniqueness,
            ),
        ];
        for (name, x, y) in rows {
            let _ = writeln!(s, "{name:<28} {x:>12.6} {y:>12.6}");
        }
        s
    }
}
