//! The rows an analysis reads: one patient per row (a patient may have many rows), and named columns of numbers or
//! categories. The workspace fills it from its SQL engine; the analyses never see a pseudonym, only the workspace's
//! patient numbers, which stay inside as the checks' evidence.

use std::collections::BTreeMap;

use crate::output_check::PatientId;

/// Why an analysis cannot run. Names columns and counts, never a value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnalysisError {
    /// No column of that name.
    #[error("no column {0}")]
    UnknownColumn(String),
    /// The column holds the other kind of values.
    #[error("column {column} is not {expected}")]
    WrongKind {
        /// The column.
        column: String,
        /// `numeric` or `categorical`.
        expected: &'static str,
    },
    /// A column whose length differs from the frame's rows.
    #[error("column {column} has {got} values for {rows} rows")]
    Length {
        /// The column.
        column: String,
        /// Its values.
        got: usize,
        /// The frame's rows.
        rows: usize,
    },
    /// Too few complete rows for the analysis.
    #[error("{rows} complete row(s): the analysis needs at least {needed}")]
    TooFewRows {
        /// Complete rows found.
        rows: usize,
        /// Rows the analysis needs.
        needed: usize,
    },
    /// The design matrix has no inverse (a covariate is constant or a combination of others).
    #[error("the covariates are collinear (a column is constant or a combination of others)")]
    Collinear,
    /// The fit did not converge (in a logistic regression, usually complete separation).
    #[error("the fit did not converge in {0} iterations (complete separation?)")]
    NoConvergence(usize),
    /// An argument out of range.
    #[error("{0}")]
    Invalid(String),
}

/// A column's values; `None` is missing.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Numbers.
    Numeric(Vec<Option<f64>>),
    /// Categories (codes, bands).
    Categorical(Vec<Option<String>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Numeric(v) => v.len(),
            Column::Categorical(v) => v.len(),
        }
    }
}

/// The rows of an analysis.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    patients: Vec<PatientId>,
    columns: BTreeMap<String, Column>,
}

impl Frame {
    /// A frame of one row per entry of `patients` (the patient each row is about).
    pub fn new(patients: Vec<PatientId>) -> Frame {
        Frame {
            patients,
            columns: BTreeMap::new(),
        }
    }

    /// Adds `column` as `name`; its length must be the frame's.
    pub fn with(mut self, name: &str, column: Column) -> Result<Frame, AnalysisError> {
        if column.len() != self.patients.len() {
            return Err(AnalysisError::Length {
                column: name.to_owned(),
                got: column.len(),
                rows: self.patients.len(),
            });
        }
        self.columns.insert(name.to_owned(), column);
        Ok(self)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.patients.len()
    }

    /// The patient of each row.
    pub fn patients(&self) -> &[PatientId] {
        &self.patients
    }

    /// The numeric column `name`.
    pub fn numeric(&self, name: &str) -> Result<&[Option<f64>], AnalysisError> {
        match self.columns.get(name) {
            Some(Column::Numeric(v)) => Ok(v),
            Some(Column::Categorical(_)) => Err(AnalysisError::WrongKind {
                column: name.to_owned(),
                expected: "numeric",
            }),
            None => Err(AnalysisError::UnknownColumn(name.to_owned())),
        }
    }

    /// The categorical column `name`.
    pub fn categorical(&self, name: &str) -> Result<&[Option<String>], AnalysisError> {
        match self.columns.get(name) {
            Some(Column::Categorical(v)) => Ok(v),
            Some(Column::Numeric(_)) => Err(AnalysisError::WrongKind {
                column: name.to_owned(),
                expected: "categorical",
            }),
            None => Err(AnalysisError::UnknownColumn(name.to_owned())),
        }
    }
}
