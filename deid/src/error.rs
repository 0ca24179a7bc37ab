//! Error type of the engine.
//!
//! Every failure a user can cause (bad hierarchy, value missing from a hierarchy, unreadable input,
//! impossible constraints) is a typed variant so callers can react to it and messages can point to
//! the offending line instead of panicking.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a hierarchy was refused; carried inside [`Error::Hierarchy`] together with the line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HierarchyProblem {
    /// The hierarchy has no lines at all.
    Empty,
    /// A line has a different number of levels than the first line (ARX requires a rectangle).
    Ragged {
        /// Number of cells on the first line.
        expected: usize,
        /// Number of cells on the offending line.
        found: usize,
    },
    /// The same leaf value appears on two lines, so its generalisation would be ambiguous.
    DuplicateValue {
        /// The repeated value.
        value: String,
        /// Line where it first appeared.
        first_line: usize,
    },
    /// A generalised value has two different parents, so the hierarchy is not a tree and roll-up
    /// from a finer level would be ill-defined.
    TwoParents {
        /// The value with two parents.
        value: String,
        /// Level (0 = leaf) of that value.
        level: usize,
        /// Parent seen first.
        first_parent: String,
        /// Conflicting parent on this line.
        second_parent: String,
        /// Line where the first parent was seen.
        first_line: usize,
    },
    /// A built-in generator could not handle a value (e.g. a non-numeric age for an interval generator).
    Generator(String),
}

impl fmt::Display for HierarchyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "hierarchy is empty"),
            Self::Ragged { expected, found } => {
                write!(f, "ragged row: {found} levels where the first line has {expected}")
            }
            Self::DuplicateValue { value, first_line } => {
                write!(f, "value {value:?} already defined on line {first_line}")
            }
            Self::TwoParents {
                value,
                level,
                first_parent,
                second_parent,
                first_line,
            } => write!(
                f,
                "value {value:?} at level {level} generalises to two parents: {first_parent:?} (line {first_line}) and {second_parent:?}"
            ),
            Self::Generator(msg) => write!(f, "{msg}"),
        }
    }
}

/// All errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid hierarchy; `line` is 1-based within `source_name`.
    #[error("hierarchy {source_name}, line {line}: {problem}")]
    Hierarchy {
        /// File name or generator description the hierarchy came from.
        source_name: String,
        /// 1-based line number of the problem.
        line: usize,
        /// What is wrong.
        problem: HierarchyProblem,
    },
    /// Data values of a quasi-identifier (or a grouped column with a hierarchy) are not covered by its
    /// hierarchy. Neither the values nor their lines are named: with a hierarchy of their choosing, a caller
    /// could otherwise read a column value by value, or learn which row holds a guessed value.
    #[error("column {column:?}: {uncovered} distinct value(s) missing from its hierarchy")]
    MissingValue {
        /// Column name.
        column: String,
        /// Distinct values of the column that the hierarchy does not cover.
        uncovered: usize,
    },
    /// A column named in the configuration does not exist in the input.
    #[error("unknown column {0:?}")]
    UnknownColumn(String),
    /// The configuration is inconsistent (e.g. l-diversity without a sensitive attribute).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No recoding of the event items satisfies (k, k^m) within the suppression share.
    #[error("infeasible: {0}")]
    Infeasible(String),
    /// The job spec (TOML) is malformed.
    #[error("invalid job spec: {0}")]
    Spec(String),
    /// The input table is malformed or unsupported.
    #[error("invalid input: {0}")]
    Input(String),
    /// No transformation satisfies the privacy models within the suppression limit.
    #[error(transparent)]
    NoSolution(#[from] Box<NoSolution>),
    /// CSV reading or writing failed.
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    /// File system error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Arrow conversion failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Parquet decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// OpenDP refused a construction or failed to sample (e.g. a scale it cannot represent). The
    /// message is OpenDP's own, so the cause is not lost in translation.
    #[error("opendp: {0}")]
    OpenDp(String),
    /// Planning or executing a DataFusion query failed (feature `datafusion`). Boxed: the
    /// DataFusion error is large and would bloat every `Result` of the engine.
    #[cfg(feature = "datafusion")]
    #[error("datafusion: {0}")]
    DataFusion(Box<::datafusion::error::DataFusionError>),
}

#[cfg(feature = "datafusion")]
impl From<::datafusion::error::DataFusionError> for Error {
    fn from(e: ::datafusion::error::DataFusionError) -> Self {
        Self::DataFusion(Box::new(e))
    }
}

impl From<opendp::error::Error> for Error {
    fn from(e: opendp::error::Error) -> Self {
        Self::OpenDp(format!("{:?}: {}", e.variant, e.message.unwrap_or_default()))
    }
}

/// Details of an infeasible job: which constraint failed and how much suppression would have been
/// needed, so the operator can decide whether to relax the limit or the model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NoSolution {
    /// Suppression limit that was requested (fraction of records).
    pub suppression_limit: f64,
    /// Smallest suppression limit (fraction of records) for which a solution exists, if any.
    pub smallest_working_suppression: Option<f64>,
    /// Transformation (levels per QI, in QI order) that needs that smallest suppression.
    pub at_levels: Vec<u32>,
    /// Human-readable description of each violated constraint at that transformation.
    pub failed_constraints: Vec<String>,
}

impl fmt::Display for NoSolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no transformation satisfies the privacy model within the suppression limit {}",
            self.suppression_limit
        )?;
        if !self.failed_constraints.is_empty() {
            write!(f, "; failing: {}", self.failed_constraints.join("; "))?;
        }
        match self.smallest_working_suppression {
            Some(s) => write!(
                f,
                "; the smallest suppression limit that would work is {s:.6} (transformation {:?})",
                self.at_levels
            ),
            None => write!(f, "; no suppression limit below 100% would work"),
        }
    }
}

impl std::error::Error for NoSolution {}
