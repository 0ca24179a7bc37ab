//! What a researcher asks for: grouped statistics, their clamping bounds, the unit of privacy, the
//! privacy parameter and where the group keys come from.
//!
//! Everything here is declared by the analyst *before* the data are touched: bounds are never taken
//! from the data (that would leak the extremes), and group keys are either public (a code list or a
//! hierarchy level) or chosen by DP partition selection — never the raw set of keys present.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hierarchy::Hierarchy;

/// Clamping bounds of a numeric column: every value is clamped into `[lo, hi]`, so one row can move a
/// sum by at most `max(|lo|, |hi|)` — that is what makes the sensitivity finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// Lower bound (inclusive).
    pub lo: f64,
    /// Upper bound (inclusive).
    pub hi: f64,
}

impl Bounds {
    /// Refuses empty or non-finite bounds.
    pub fn new(lo: f64, hi: f64) -> Result<Self> {
        if !lo.is_finite() || !hi.is_finite() || lo >= hi {
            return Err(Error::Config(format!(
                "bounds must be finite with lo < hi, got [{lo}, {hi}]"
            )));
        }
        Ok(Self { lo, hi })
    }

    /// Largest absolute value a clamped value can take: one row's reach on a sum.
    pub fn magnitude(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }

    /// Clamps `v` into the bounds.
    pub fn clamp(&self, v: f64) -> f64 {
        v.clamp(self.lo, self.hi)
    }
}

/// The statistic computed per group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measure {
    /// Number of rows per group.
    Count,
    /// Sum of a clamped column.
    Sum {
        /// Column summed.
        column: String,
        /// Declared clamping bounds.
        bounds: Bounds,
    },
    /// Mean of a clamped column: a noisy sum over a noisy count, half the budget each.
    Mean {
        /// Column averaged.
        column: String,
        /// Declared clamping bounds.
        bounds: Bounds,
    },
    /// Counts per group and per equal-width bin of a clamped column (bins are public keys).
    Histogram {
        /// Column binned.
        column: String,
        /// Declared range; values outside are clamped into the first or last bin.
        bounds: Bounds,
        /// Number of equal-width bins.
        bins: u32,
    },
    /// A quantile (e.g. 0.5 for the median) of a clamped column, by OpenDP's exponential mechanism
    /// over a grid of candidates.
    Quantile {
        /// Column whose quantile is released.
        column: String,
        /// Declared range of the candidates.
        bounds: Bounds,
        /// Quantile in (0, 1).
        q: f64,
    },
}

/// Number of candidates a quantile chooses from (equally spaced over the bounds).
pub const QUANTILE_CANDIDATES: usize = 1025;

impl Measure {
    /// Parses the CLI form: `count`, `sum:COL:LO:HI`, `mean:COL:LO:HI`, `hist:COL:LO:HI:BINS`,
    /// `quantile:COL:LO:HI:Q`. Numbers are taken from the right, so a column name may contain `:`.
    pub fn parse(text: &str) -> Result<Measure> {
        let bad = |why: &str| Error::Config(format!("measure {text:?}: {why}"));
        if text == "count" {
            return Ok(Measure::Count);
        }
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            bad("expected count|sum:COL:LO:HI|mean:COL:LO:HI|hist:COL:LO:HI:BINS|quantile:COL:LO:HI:Q")
        })?;
        let extra = matches!(kind, "hist" | "histogram" | "quantile");
        let mut parts: Vec<&str> = rest.rsplitn(if extra { 4 } else { 3 }, ':').collect();
        parts.reverse();
        if parts.len() != if extra { 4 } else { 3 } || parts[0].is_empty() {
            return Err(bad("missing column or bounds"));
        }
        let num = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| bad(&format!("{s:?} is not a number")))
        };
        let column = parts[0].to_string();
        let bounds = Bounds::new(num(parts[1])?, num(parts[2])?).map_err(|e| bad(&e.to_string()))?;
        match kind {
            "sum" => Ok(Measure::Sum { column, bounds }),
            "mean" => Ok(Measure::Mean { column, bounds }),
            "hist" | "histogram" => {
                let bins: u32 = parts[3]
                    .trim()
                    .parse()
                    .map_err(|_| bad("bins must be a positive integer"))?;
                if bins == 0 || bins > 10_000 {
                    return Err(bad("bins must be between 1 and 10000"));
                }
                Ok(Measure::Histogram { column, bounds, bins })
            }
            "quantile" => {
                let q = num(parts[3])?;
                if !(q > 0.0 && q < 1.0) {
                    return Err(bad("the quantile must be strictly between 0 and 1"));
                }
                Ok(Measure::Quantile { column, bounds, q })
            }
            other => Err(bad(&format!("unknown measure {other:?}"))),
        }
    }

    /// The numeric column the measure reads, if any.
    pub fn column(&self) -> Option<&str> {
        match self {
            Measure::Count => None,
            Measure::Sum { column, .. }
            | Measure::Mean { column, .. }
            | Measure::Histogram { column, .. }
            | Measure::Quantile { column, .. } => Some(column),
        }
    }

    /// Short name used in output headers and the ledger.
    pub fn name(&self) -> &'static str {
        match self {
            Measure::Count => "count",
            Measure::Sum { .. } => "sum",
            Measure::Mean { .. } => "mean",
            Measure::Histogram { .. } => "histogram",
            Measure::Quantile { .. } => "quantile",
        }
    }
}

/// The privacy parameter, which also picks the noise: pure ε-DP with (discrete) Laplace noise, or
/// ρ-zCDP with (discrete) Gaussian noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Privacy {
    /// Pure differential privacy, Laplace noise.
    Epsilon(f64),
    /// Zero-concentrated DP, Gaussian noise; reported as (ε, δ) at the request's δ.
    Rho(f64),
}

impl Privacy {
    /// The parameter's value (ε or ρ).
    pub fn value(&self) -> f64 {
        match self {
            Privacy::Epsilon(v) | Privacy::Rho(v) => *v,
        }
    }
}

/// Where the released group keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Keys {
    /// Declared keys (a code list, or every label of a hierarchy level): every key appears in the
    /// output, with noise, even when no row has it; rows with other keys are not counted.
    Public(Vec<Vec<String>>),
    /// DP partition selection: a key appears only if its noisy count clears a threshold derived
    /// from ε and δ (OpenDP's noise-threshold mechanism). Needs δ > 0.
    Select,
}

/// A group-by column generalised to a hierarchy level before grouping (e.g. age → 10-year bands).
#[derive(Debug, Clone)]
pub struct Generalisation {
    /// Group-by column.
    pub column: String,
    /// Its hierarchy.
    pub hierarchy: Hierarchy,
    /// Level (0 = the raw values).
    pub level: usize,
}

impl Generalisation {
    /// Every label of the chosen level: public keys that come from the hierarchy, not the data.
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self.hierarchy.level(self.level).labels().to_vec();
        labels.sort();
        labels.dedup();
        labels
    }
}

/// A whole request for a private statistical table.
#[derive(Debug, Clone)]
pub struct StatsRequest {
    /// Group-by columns (may be empty: one grand total).
    pub group_by: Vec<String>,
    /// Generalisations of some group-by columns.
    pub generalise: Vec<Generalisation>,
    /// The statistic.
    pub measure: Measure,
    /// Column identifying the person (patient) a row belongs to; `None` makes each row its own
    /// unit of privacy.
    pub subject: Option<String>,
    /// Maximum rows kept per subject (the rest are dropped); enters every sensitivity.
    pub max_contrib: u32,
    /// ε or ρ for the whole request.
    pub privacy: Privacy,
    /// δ for partition selection and for reporting zCDP as (ε, δ).
    pub delta: Option<f64>,
    /// Public keys or partition selection.
    pub keys: Keys,
}

impl StatsRequest {
    /// Checks everything that can be checked without data: a refused request must never spend.
    pub fn validate(&self) -> Result<()> {
        let v = self.privacy.value();
        if !v.is_finite() || v <= 0.0 {
            return Err(Error::Config(format!("epsilon/rho must be finite and > 0, got {v}")));
        }
        if let Some(d) = self.delta
            && !(d > 0.0 && d < 1.0)
        {
            return Err(Error::Config(format!("delta must be in (0, 1), got {d}")));
        }
        if matches!(self.keys, Keys::Select) && self.delta.is_none() {
            return Err(Error::Config(
                "the group keys are not public: declare them (--public-keys or a hierarchy for every group-by column) \
                 or give --delta for DP partition selection"
                    .into(),
            ));
        }
        if matches!(self.privacy, Privacy::Rho(_)) && self.delta.is_none() {
            return Err(Error::Config("zCDP (--rho) is reported as (ε, δ): give --delta".into()));
        }
        self.validate_shape()
    }

    /// The checks that do not involve the privacy parameters (also used by non-DP tables).
    pub fn validate_shape(&self) -> Result<()> {
        if self.max_contrib == 0 {
            return Err(Error::Config("max-contrib must be at least 1".into()));
        }
        if self.subject.is_none() && self.max_contrib != 1 {
            return Err(Error::Config(
                "max-contrib needs --subject (without it every row is its own subject)".into(),
            ));
        }
        for g in &self.generalise {
            if !self.group_by.contains(&g.column) {
                return Err(Error::Config(format!(
                    "hierarchy for {:?}, which is not a group-by column",
                    g.column
                )));
            }
            if g.level >= g.hierarchy.height() {
                return Err(Error::Config(format!(
                    "hierarchy for {:?} has levels 0..{}, not {}",
                    g.column,
                    g.hierarchy.height() - 1,
                    g.level
                )));
            }
        }
        if let Keys::Public(keys) = &self.keys {
            let width = self.group_by.len();
            // The row's number, never its values: a declared key may be a value of the data.
            if let Some(row) = keys.iter().position(|k| k.len() != width) {
                return Err(Error::Config(format!(
                    "public key number {} does not have {width} parts (one per group-by column)",
                    row + 1
                )));
            }
            if keys.is_empty() {
                return Err(Error::Config("the public key list is empty".into()));
            }
        }
        if let Some(c) = self.measure.column()
            && self.group_by.iter().any(|g| g == c)
        {
            return Err(Error::Config(format!("{c:?} is both grouped by and measured")));
        }
        Ok(())
    }

    /// Public keys from the hierarchies when every group-by column has one (their cross product),
    /// so `--hierarchy` alone is enough to declare the keys.
    pub fn keys_from_hierarchies(group_by: &[String], generalise: &[Generalisation]) -> Option<Vec<Vec<String>>> {
        let mut keys: Vec<Vec<String>> = vec![Vec::new()];
        for col in group_by {
            let g = generalise.iter().find(|g| &g.column == col)?;
            let labels = g.labels();
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    labels.iter().map(move |l| {
                        let mut k = k.clone();
                        k.push(l.clone());
                        k
                    })
                })
                .collect();
        }
        Some(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_measures() {
        assert_eq!(Measure::parse("count").unwrap(), Measure::Count);
        assert_eq!(
            Measure::parse("sum:dose:mg:-5:10").unwrap(),
            Measure::Sum {
                column: "dose:mg".into(),
                bounds: Bounds { lo: -5.0, hi: 10.0 }
            }
        );
        assert!(matches!(
            Measure::parse("hist:age:0:100:10").unwrap(),
            Measure::Histogram { bins: 10, .. }
        ));
        assert!(matches!(
            Measure::parse("quantile:age:0:100:0.5").unwrap(),
            Measure::Quantile { .. }
        ));
        for bad in [
            "sum:x:1",
            "sum:x:5:1",
            "mean:x:a:b",
            "quantile:x:0:1:1.5",
            "hist:x:0:1:0",
            "median:x:0:1",
            "sum::0:1",
        ] {
            assert!(Measure::parse(bad).is_err(), "{bad}");
        }
    }
}
