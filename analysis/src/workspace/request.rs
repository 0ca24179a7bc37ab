//! What a workspace is asked: the contract between the policy service, which admits a request on its approval and
//! signs it into a core order, and the core, which answers it in the workspace.

use serde::{Deserialize, Serialize};

/// Longest SQL text a request may carry (bytes).
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// Largest upload (CSV bytes): code lists and cohort definitions, not data sets.
pub const MAX_UPLOAD_BYTES: usize = 1024 * 1024;

/// Most columns an upload may have.
pub const MAX_UPLOAD_COLUMNS: usize = 64;

/// Longest name of a column or an upload.
pub const MAX_NAME_CHARS: usize = 64;

/// One request to a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum WorkspaceRequest {
    /// A read-only SQL query; its rows are sealed to the researcher and stay out of every other zone.
    Query {
        /// The query.
        sql: String,
        /// Its shape (literals replaced), as the ledger keeps it: what the monitoring compares.
        shape: String,
    },
    /// A built-in analysis; its result is kept in the workspace under the order's number, for an output request.
    Analyse {
        /// What to run.
        spec: AnalysisSpec,
        /// The shape of its query (literals replaced), for the monitoring.
        #[serde(default)]
        shape: String,
    },
    /// An auxiliary table the researcher brings (a code list, a cohort definition).
    Upload {
        /// Its name: the table is `upload_<name>` in the workspace's SQL.
        name: String,
        /// CSV with a header line.
        csv: String,
    },
    /// The checks of a kept result as an output request, and its content for the output checker.
    PrepareOutput {
        /// The result (the number of the order that computed it).
        result: u64,
    },
    /// The release of a result an output checker approved: checked again against every output released since the
    /// request, then recorded in the workspace's history.
    ReleaseOutput {
        /// The result.
        result: u64,
    },
}

/// A built-in analysis over the rows of a query. The query must return a `patient` column (the workspace
/// pseudonym): every analysis counts and checks patients, not rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "analysis", rename_all = "snake_case")]
pub enum AnalysisSpec {
    /// Patients per value of `rows` (× `columns`).
    Crosstab {
        /// The frame's query.
        sql: String,
        /// The row variable.
        rows: String,
        /// The column variable, if any.
        #[serde(default)]
        columns: Option<String>,
    },
    /// Mean, SD and quartiles of `value` (by `group`).
    Describe {
        /// The frame's query.
        sql: String,
        /// The measured column.
        value: String,
        /// The grouping column, if any.
        #[serde(default)]
        group: Option<String>,
    },
    /// Ordinary least squares.
    Linear {
        /// The frame's query.
        sql: String,
        /// The outcome column.
        outcome: String,
        /// The covariates (numeric columns).
        covariates: Vec<String>,
    },
    /// Logistic regression (outcome 0/1).
    Logistic {
        /// The frame's query.
        sql: String,
        /// The outcome column.
        outcome: String,
        /// The covariates (numeric columns).
        covariates: Vec<String>,
    },
    /// Kaplan–Meier curves.
    KaplanMeier {
        /// The frame's query.
        sql: String,
        /// Time to event or censoring.
        time: String,
        /// 1 for an event, 0 for censoring.
        event: String,
        /// The grouping column, if any.
        #[serde(default)]
        group: Option<String>,
    },
}

impl AnalysisSpec {
    /// The frame's query.
    pub fn sql(&self) -> &str {
        match self {
            AnalysisSpec::Crosstab { sql, .. }
            | AnalysisSpec::Describe { sql, .. }
            | AnalysisSpec::Linear { sql, .. }
            | AnalysisSpec::Logistic { sql, .. }
            | AnalysisSpec::KaplanMeier { sql, .. } => sql,
        }
    }

    /// The analysis's name, as the ledger and the output checker see it.
    pub fn kind(&self) -> &'static str {
        match self {
            AnalysisSpec::Crosstab { .. } => "crosstab",
            AnalysisSpec::Describe { .. } => "describe",
            AnalysisSpec::Linear { .. } => "linear",
            AnalysisSpec::Logistic { .. } => "logistic",
            AnalysisSpec::KaplanMeier { .. } => "kaplan_meier",
        }
    }

    /// The columns it names.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            AnalysisSpec::Crosstab { rows, columns, .. } => {
                std::iter::once(rows.as_str()).chain(columns.as_deref()).collect()
            }
            AnalysisSpec::Describe { value, group, .. } => {
                std::iter::once(value.as_str()).chain(group.as_deref()).collect()
            }
            AnalysisSpec::Linear {
                outcome, covariates, ..
            }
            | AnalysisSpec::Logistic {
                outcome, covariates, ..
            } => std::iter::once(outcome.as_str())
                .chain(covariates.iter().map(String::as_str))
                .collect(),
            AnalysisSpec::KaplanMeier { time, event, group, .. } => [time.as_str(), event.as_str()]
                .into_iter()
                .chain(group.as_deref())
                .collect(),
        }
    }
}

/// Why a request is malformed (before anything is read).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("[INVALID_ARGUMENT] {0}")]
pub struct Malformed(pub String);

impl WorkspaceRequest {
    /// Checks the request's sizes and names: what the policy service checks before it signs an order, and the core
    /// again before it answers.
    pub fn validate(&self) -> Result<(), Malformed> {
        match self {
            WorkspaceRequest::Query { sql, shape } => {
                check_sql(sql)?;
                check_sql(shape)
            }
            WorkspaceRequest::Analyse { spec, .. } => {
                check_sql(spec.sql())?;
                if let AnalysisSpec::Linear { covariates, .. } | AnalysisSpec::Logistic { covariates, .. } = spec
                    && covariates.is_empty()
                {
                    return Err(Malformed("a regression needs at least one covariate".into()));
                }
                spec.columns().into_iter().try_for_each(check_name)
            }
            WorkspaceRequest::Upload { name, csv } => {
                check_name(name)?;
                if csv.len() > MAX_UPLOAD_BYTES {
                    return Err(Malformed(format!(
                        "an upload may hold at most {MAX_UPLOAD_BYTES} bytes"
                    )));
                }
                Ok(())
            }
            WorkspaceRequest::PrepareOutput { .. } | WorkspaceRequest::ReleaseOutput { .. } => Ok(()),
        }
    }
}

fn check_sql(sql: &str) -> Result<(), Malformed> {
    if sql.trim().is_empty() {
        return Err(Malformed("the query is empty".into()));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(Malformed(format!("a query may hold at most {MAX_SQL_BYTES} bytes")));
    }
    Ok(())
}

/// A name of a column or an upload: a letter, then letters, digits and `_`.
pub fn check_name(name: &str) -> Result<(), Malformed> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().count() <= MAX_NAME_CHARS;
    if valid {
        Ok(())
    } else {
        Err(Malformed(format!(
            "a name must be a letter followed by letters, digits or _, at most {MAX_NAME_CHARS} characters"
        )))
    }
}
