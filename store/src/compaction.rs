//! Compaction: the core commits often and small (one file per table per pull), which makes scans slow; this
//! rewrites small files into large ones and removes the replaced files.
//!
//! Compaction commits are Delta "optimize" commits: ingest appends keep committing meanwhile (appends do not
//! conflict with a rewrite of other files), so ingest is never blocked. Only erasure waits for it, because a
//! zero-retention vacuum must not run while compaction has written files it has not committed yet; both
//! take the store's maintenance lock.

use crate::error::StoreError;
use crate::schema::Table;
use crate::store::Store;
use deltalake::operations::vacuum::VacuumMode;
use serde::Serialize;
use std::num::NonZeroU64;

/// What compaction did to one table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableCompaction {
    /// Table name.
    pub table: String,
    /// Small files before.
    pub small_files: usize,
    /// Files written.
    pub files_added: u64,
    /// Files replaced.
    pub files_removed: u64,
    /// Replaced files physically deleted.
    pub files_deleted: u64,
}

/// Compacts every table that has at least `min_files` files smaller than the target (0 = always).
pub async fn compact(store: &Store, min_files: usize) -> Result<Vec<TableCompaction>, StoreError> {
    let target = store.config().target_file_bytes.max(1024 * 1024);
    let mut out = Vec::new();
    for t in Table::ALL {
        let table = store.table(t).await?;
        let small = table
            .snapshot()?
            .log_data()
            .into_iter()
            .filter(|f| (f.size() as u64) < target)
            .count();
        if small < 2 || small < min_files {
            continue;
        }
        let (table, metrics) = table
            .optimize()
            .with_session_state(store.operation_session()?)
            .with_target_size(NonZeroU64::new(target).unwrap_or(NonZeroU64::MIN))
            .await?;
        // Readers of the previous version keep a grace period; the replaced files then go.
        let (_, vacuum) = table
            .vacuum()
            .with_retention_period(chrono::Duration::minutes(5))
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Lite)
            .await?;
        out.push(TableCompaction {
            table: t.name().to_string(),
            small_files: small,
            files_added: metrics.num_files_added,
            files_removed: metrics.num_files_removed,
            files_deleted: vacuum.files_deleted.len() as u64,
        });
    }
    Ok(out)
}
