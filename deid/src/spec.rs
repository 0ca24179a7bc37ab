//! TOML job specs and the small parsers shared with the command line.
//!
//! A spec names the QIs with either an ARX CSV hierarchy file (relative to the spec) or a built-in
//! [`Generator`], plus the privacy model:
//!
//! ```toml
//! k = 5
//! suppression = 0.05
//! metric = "loss"
//! subject = "patient_id"
//! insensitive = ["visit_id"]
//!
//! [[qi]]
//! name = "age"
//! generator = { type = "interval", widths = [5, 10, 20] }
//!
//! [[qi]]
//! name = "municipality"
//! generator = { type = "municipality" }
//!
//! [[qi]]
//! name = "education"
//! hierarchy = "education.csv"
//!
//! [[sensitive]]
//! name = "diagnosis"
//! generator = { type = "icd10" }
//!
//! [l_diversity]
//! l = 2
//! variant = "entropy"       # distinct | entropy | recursive (with c = ...)
//!
//! [t_closeness]
//! t = 0.2
//! distance = "hierarchical" # equal | ordered | hierarchical
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dataset::{QiInput, SensitiveInput};
use crate::error::{Error, Result};
use crate::generators::Generator;
use crate::hierarchy::Hierarchy;
use crate::metric::Metric;
use crate::model::{LDiversity, LVariant, TCloseness, TDistance};
use crate::table::Table;

/// An attribute with its hierarchy source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeSpec {
    /// Column name.
    pub name: String,
    /// ARX CSV hierarchy file (relative paths are resolved against the spec's directory).
    pub hierarchy: Option<PathBuf>,
    /// Built-in generator instead of a file.
    pub generator: Option<Generator>,
}

/// `[l_diversity]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LSpec {
    /// The l.
    pub l: u32,
    /// distinct | entropy | recursive.
    #[serde(default)]
    pub variant: Option<String>,
    /// c of recursive (c,l)-diversity.
    #[serde(default)]
    pub c: Option<f64>,
}

/// `[t_closeness]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TSpec {
    /// The t.
    pub t: f64,
    /// equal | ordered | hierarchical.
    #[serde(default)]
    pub distance: Option<String>,
}

/// A job spec (`--spec job.toml`). Command-line flags override its values.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Input file (CSV or Parquet).
    pub input: Option<PathBuf>,
    /// Input delimiter (single character, `\t` for tab).
    pub delimiter: Option<String>,
    /// Delimiter of hierarchy files (default `;`, ARX's).
    pub hierarchy_delimiter: Option<String>,
    /// k of k-anonymity.
    pub k: Option<u32>,
    /// Suppression limit (fraction).
    pub suppression: Option<f64>,
    /// Metric name.
    pub metric: Option<String>,
    /// Subject (patient) column for patient-level counting.
    pub subject: Option<String>,
    /// Quasi-identifiers.
    #[serde(default)]
    pub qi: Vec<AttributeSpec>,
    /// Sensitive attributes.
    #[serde(default)]
    pub sensitive: Vec<AttributeSpec>,
    /// Insensitive columns (kept as they are; listed for documentation).
    #[serde(default)]
    pub insensitive: Vec<String>,
    /// l-diversity.
    pub l_diversity: Option<LSpec>,
    /// t-closeness.
    pub t_closeness: Option<TSpec>,
    /// Average re-identification risk threshold.
    pub average_risk: Option<f64>,
    /// Prosecutor-risk threshold for the report.
    pub risk_threshold: Option<f64>,
    /// Sampling fraction for the population estimate.
    pub sampling_fraction: Option<f64>,
    /// Directory relative paths are resolved against (set by [`JobSpec::read`]).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl JobSpec {
    /// Parses a spec from TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Spec(e.to_string()))
    }

    /// Reads a spec file (I/O); relative paths inside it refer to its directory.
    pub fn read(path: &Path) -> Result<Self> {
        let mut spec = Self::from_toml(&std::fs::read_to_string(path)?)?;
        spec.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(spec)
    }

    /// l-diversity from the spec, if any.
    pub fn l_diversity(&self) -> Result<Option<LDiversity>> {
        self.l_diversity
            .as_ref()
            .map(|l| {
                let variant = match (l.variant.as_deref().unwrap_or("distinct"), l.c) {
                    ("recursive", Some(c)) => LVariant::Recursive { c },
                    ("recursive", None) => return Err(Error::Spec("recursive l-diversity needs c".into())),
                    (v, _) => parse_l_variant(v)?,
                };
                Ok(LDiversity { l: l.l, variant })
            })
            .transpose()
    }

    /// t-closeness from the spec, if any.
    pub fn t_closeness(&self) -> Result<Option<TCloseness>> {
        self.t_closeness
            .as_ref()
            .map(|t| {
                Ok(TCloseness {
                    t: t.t,
                    distance: parse_t_distance(t.distance.as_deref().unwrap_or("equal"))?,
                })
            })
            .transpose()
    }

    /// Metric from the spec, if any.
    pub fn metric(&self) -> Result<Option<Metric>> {
        self.metric.as_deref().map(parse_metric).transpose()
    }

    /// Resolves the QI hierarchies (files are read, generators run on the column's values).
    pub fn qi_inputs(&self, table: &Table) -> Result<Vec<QiInput>> {
        self.qi
            .iter()
            .map(|a| {
                Ok(QiInput {
                    name: a.name.clone(),
                    hierarchy: self
                        .resolve(a, table)?
                        .ok_or_else(|| Error::Spec(format!("QI {:?} needs a hierarchy file or a generator", a.name)))?,
                })
            })
            .collect()
    }

    /// Resolves the sensitive attributes (hierarchy optional).
    pub fn sensitive_inputs(&self, table: &Table) -> Result<Vec<SensitiveInput>> {
        self.sensitive
            .iter()
            .map(|a| {
                Ok(SensitiveInput {
                    name: a.name.clone(),
                    hierarchy: self.resolve(a, table)?,
                })
            })
            .collect()
    }

    fn resolve(&self, a: &AttributeSpec, table: &Table) -> Result<Option<Hierarchy>> {
        match (&a.hierarchy, &a.generator) {
            (Some(_), Some(_)) => Err(Error::Spec(format!(
                "{:?}: give either a hierarchy file or a generator",
                a.name
            ))),
            (Some(file), None) => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    self.base_dir.join(file)
                };
                let delim = parse_delimiter(self.hierarchy_delimiter.as_deref().unwrap_or(";"))?;
                Ok(Some(Hierarchy::read_arx_csv(&path, delim)?))
            }
            (None, Some(g)) => {
                let col = table.column(&a.name)?;
                let values: Vec<&str> = col.dict().iter().map(String::as_str).collect();
                Ok(Some(g.generate(&values)?))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Parses a delimiter argument: one character, or `\t` / `tab`.
pub fn parse_delimiter(s: &str) -> Result<u8> {
    match s {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 => Ok(s.as_bytes()[0]),
        _ => Err(Error::Config(format!(
            "delimiter must be a single ASCII character, got {s:?}"
        ))),
    }
}

/// Parses `distinct`, `entropy` or `recursive:C`.
pub fn parse_l_variant(s: &str) -> Result<LVariant> {
    match s {
        "distinct" => Ok(LVariant::Distinct),
        "entropy" => Ok(LVariant::Entropy),
        _ => match s.strip_prefix("recursive:").map(str::parse::<f64>) {
            Some(Ok(c)) => Ok(LVariant::Recursive { c }),
            _ => Err(Error::Config(format!(
                "l-diversity variant must be distinct, entropy or recursive:C, got {s:?}"
            ))),
        },
    }
}

/// Parses `equal`, `ordered` or `hierarchical`.
pub fn parse_t_distance(s: &str) -> Result<TDistance> {
    match s {
        "equal" => Ok(TDistance::Equal),
        "ordered" => Ok(TDistance::Ordered),
        "hierarchical" => Ok(TDistance::Hierarchical),
        _ => Err(Error::Config(format!(
            "t-closeness distance must be equal, ordered or hierarchical, got {s:?}"
        ))),
    }
}

/// Parses a metric name.
pub fn parse_metric(s: &str) -> Result<Metric> {
    Metric::parse(s).ok_or_else(|| {
        Error::Config(format!(
            "metric must be loss, discernibility, precision, aecs or entropy, got {s:?}"
        ))
    })
}

/// Splits a `NAME=VALUE` argument (VALUE optional).
pub fn split_assignment(s: &str) -> (&str, Option<&str>) {
    match s.split_once('=') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}
