//! Errors of the release zone, each with a machine-readable reason code for audits and gRPC statuses.

use tokumei_policy::PolicyError;

/// Why a release operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The policy service refused or failed (approval conditions, session, bans): carries its reason code.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The approval cannot be turned into a release (channel, missing privacy model, unknown column...).
    #[error("{0}")]
    NotReleasable(String),
    /// The anonymised result failed independent verification; nothing was written.
    #[error("verification failed: {0}")]
    VerificationFailed(String),
    /// No such release, file or recipient copy.
    #[error("not found: {0}")]
    NotFound(String),
    /// A manifest's signature or a file's hash does not match.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// A leaked file could not be read or does not look like the release.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The anonymisation engine failed.
    #[error(transparent)]
    Deid(Box<tokumei_deid::Error>),
    /// The core store failed.
    #[error(transparent)]
    Store(Box<tokumei_store::StoreError>),
    /// The key service failed.
    #[error("key service: {0}")]
    Keys(String),
    /// Encryption at rest failed (tampered or truncated file, wrong key).
    #[error("encrypted file: {0}")]
    Sealed(String),
    /// DataFusion failed.
    #[error(transparent)]
    DataFusion(Box<deltalake::datafusion::error::DataFusionError>),
    /// Arrow or Parquet failed.
    #[error("arrow/parquet: {0}")]
    Arrow(String),
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// JSON (manifest, record) failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl ReleaseError {
    /// A stable code for audits, gRPC `ErrorInfo` and `--json` output.
    pub fn reason(&self) -> String {
        match self {
            ReleaseError::Policy(e) => e.reason().to_string(),
            ReleaseError::NotReleasable(_) => "NOT_RELEASABLE".into(),
            ReleaseError::VerificationFailed(_) => "VERIFICATION_FAILED".into(),
            ReleaseError::NotFound(_) => "NOT_FOUND".into(),
            ReleaseError::Integrity(_) => "INTEGRITY".into(),
            ReleaseError::BadInput(_) => "BAD_INPUT".into(),
            ReleaseError::Deid(_) => "ANONYMISATION_FAILED".into(),
            ReleaseError::Store(_) | ReleaseError::DataFusion(_) => "CORE_STORE".into(),
            ReleaseError::Keys(_) => "KEY_SERVICE".into(),
            ReleaseError::Sealed(_) => "SEALED_FILE".into(),
            ReleaseError::Arrow(_) | ReleaseError::Io { .. } | ReleaseError::Json(_) => "INTERNAL".into(),
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> ReleaseError {
        ReleaseError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<tokumei_deid::Error> for ReleaseError {
    fn from(e: tokumei_deid::Error) -> Self {
        match e {
            tokumei_deid::Error::Infeasible(why) => ReleaseError::NotReleasable(why),
            other => ReleaseError::Deid(Box::new(other)),
        }
    }
}

impl From<tokumei_store::StoreError> for ReleaseError {
    fn from(e: tokumei_store::StoreError) -> Self {
        ReleaseError::Store(Box::new(e))
    }
}

impl From<deltalake::datafusion::error::DataFusionError> for ReleaseError {
    fn from(e: deltalake::datafusion::error::DataFusionError) -> Self {
        ReleaseError::DataFusion(Box::new(e))
    }
}

/// Results of this crate.
pub type Result<T, E = ReleaseError> = std::result::Result<T, E>;
