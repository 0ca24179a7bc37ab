//! A workspace of the remote analysis environment as the core runs it: the requests it answers, its state on disk
//! and the conversions between its SQL and the analyses. The core's runner (`tokumei_release::workspace`) reads the
//! approval's cohort into the workspace's SQL engine, calls [`answer::answer`] and seals what only the researcher may
//! read; this module holds everything else, free of the store, so that it is tested on its own.

pub mod answer;
pub mod columns;
pub mod request;
pub mod state;

#[cfg(test)]
mod tests;

pub use answer::{Answer, Context, answer};
pub use request::{AnalysisSpec, WorkspaceRequest};
pub use state::WorkspaceState;

use crate::sql::SqlError;

/// Why a workspace request failed. Each has a code the researcher, the ledger and the policy service read; none
/// carries a value of the data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkspaceError {
    /// The query was refused or failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The request is malformed.
    #[error("[INVALID_ARGUMENT] {0}")]
    Invalid(String),
    /// An analysis's frame has no `patient` column.
    #[error("[NO_PATIENT_COLUMN] an analysis's query must return the column `patient` (the workspace pseudonym)")]
    NoPatientColumn,
    /// The analysis could not be run (a missing column, too few rows, collinear covariates...).
    #[error("[ANALYSIS_FAILED] {0}")]
    Analysis(String),
    /// An upload is not a valid table.
    #[error("[UPLOAD_INVALID] {0}")]
    Upload(String),
    /// No result of that number in the workspace.
    #[error("[UNKNOWN_RESULT] the workspace keeps no result {0}")]
    UnknownResult(u64),
    /// The result has already left.
    #[error("[ALREADY_RELEASED] result {0} has already been released")]
    AlreadyReleased(u64),
    /// An approved output is refused at release by the rules it now breaks (outputs released since its request).
    #[error("[OUTPUT_REFUSED] the output now breaks rules {0}: it is not released")]
    OutputRefused(String),
    /// Too large for the workspace's index.
    #[error("[TOO_LARGE] {0}")]
    TooLarge(String),
    /// The workspace's files could not be read or written.
    #[error("[WORKSPACE_STATE] {0}")]
    State(String),
}

impl WorkspaceError {
    /// The machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            WorkspaceError::Sql(e) => e.code(),
            WorkspaceError::Invalid(_) => "INVALID_ARGUMENT",
            WorkspaceError::NoPatientColumn => "NO_PATIENT_COLUMN",
            WorkspaceError::Analysis(_) => "ANALYSIS_FAILED",
            WorkspaceError::Upload(_) => "UPLOAD_INVALID",
            WorkspaceError::UnknownResult(_) => "UNKNOWN_RESULT",
            WorkspaceError::AlreadyReleased(_) => "ALREADY_RELEASED",
            WorkspaceError::OutputRefused(_) => "OUTPUT_REFUSED",
            WorkspaceError::TooLarge(_) => "TOO_LARGE",
            WorkspaceError::State(_) => "WORKSPACE_STATE",
        }
    }
}
