//! The store's errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A setting is missing or invalid.
    #[error("store configuration: {0}")]
    Config(String),
    /// A local file operation failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    Object(#[from] object_store::Error),
    /// The Delta Lake layer failed.
    #[error("delta table: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    /// A query failed.
    #[error("query: {0}")]
    Query(#[from] deltalake::datafusion::error::DataFusionError),
    /// Building Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    /// Data keys.
    #[error(transparent)]
    DataKeys(#[from] crate::encryption::DataKeyError),
    /// The spool feed failed.
    #[error("spool feed: {0}")]
    Feed(String),
    /// Taking or carrying out operators' orders failed.
    #[error("core orders: {0}")]
    Orders(String),
    /// Another process holds the store's writer lock.
    #[error("the store at {0} is being written by another process (a running core?); stop it first")]
    Locked(String),
    /// An argument was invalid.
    #[error("{0}")]
    Invalid(String),
    /// Work an order asked was declined for a reason with a stable code (reported to the policy service; the
    /// message stays in the core's log).
    #[error("[{code}] {message}")]
    Declined {
        /// The reason code (`A-Z`, `_`).
        code: String,
        /// What was wrong (names columns and rules, never a value).
        message: String,
    },
}
