//! `tokumei store status`: what each table holds and how far the core has read the spool.

use crate::apply::APP_ID;
use crate::error::StoreError;
use crate::schema::Table;
use crate::store::Store;
use futures::StreamExt;
use serde::Serialize;
use tokumei_spool::spool::Position;

/// One table's state.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    /// Table name.
    pub table: String,
    /// Delta version.
    pub version: i64,
    /// Rows (from the commit statistics).
    pub rows: u64,
    /// Active data files.
    pub files: usize,
    /// Bytes of the active data files (plaintext Parquet).
    pub bytes: u64,
    /// Last spool position applied to this table.
    pub applied_through: Option<String>,
    /// Last batch written to this table (`hospital/batch id`), if any.
    pub last_batch: Option<String>,
    /// Time of the last commit, RFC 3339.
    pub last_commit: Option<String>,
}

/// The store's state.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// Location.
    pub location: String,
    /// Data keys in use.
    pub data_keys: usize,
    /// Per table.
    pub tables: Vec<TableStatus>,
    /// Bytes on disk under the store directory (sealed), for local stores.
    pub bytes_on_disk: Option<u64>,
}

fn num_records(stats: Option<String>) -> u64 {
    stats
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("numRecords").and_then(|n| n.as_u64()))
        .unwrap_or(0)
}

/// Bytes of every file under a directory (what the store occupies on disk, sealed).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Reads the state of every table.
pub async fn status(store: &Store) -> Result<StoreStatus, StoreError> {
    let mut tables = Vec::new();
    for t in Table::ALL {
        let table = store.table(t).await?;
        let snapshot = table.snapshot()?;
        let mut rows = 0;
        let mut files = 0;
        let mut bytes = 0;
        for f in snapshot.log_data() {
            rows += num_records(f.stats());
            files += 1;
            bytes += f.size().max(0) as u64;
        }
        let applied = snapshot
            .transaction_version(table.log_store().as_ref(), APP_ID)
            .await?
            .and_then(|v| u64::try_from(v).ok())
            .map(|v| Position::from_seq(v).to_string());
        let mut last_batch = None;
        let mut last_commit = None;
        let mut history = table.history(Some(20));
        while let Some(c) = history.next().await {
            let c = c?;
            if last_commit.is_none() {
                last_commit = c
                    .timestamp
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            if let Some(b) = c
                .info
                .get("tokumei.batches")
                .and_then(|v| v.as_array())
                .and_then(|a| a.last())
                .and_then(|v| v.as_str())
            {
                last_batch = Some(b.to_string());
                break;
            }
        }
        tables.push(TableStatus {
            table: t.name().to_string(),
            version: table.version().map_or(-1, |v| v as i64),
            rows,
            files,
            bytes,
            applied_through: applied,
            last_batch,
            last_commit,
        });
    }
    Ok(StoreStatus {
        location: store.location().describe(),
        data_keys: store.data_key_count(),
        tables,
        bytes_on_disk: store.location().local_dir().map(dir_bytes),
    })
}
