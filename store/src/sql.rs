//! An operator's SQL query, carried out in the core for an order of the policy service.
//!
//! Read-only (no DDL, DML or statements: DataFusion refuses them before planning), over the research view or —
//! with `all_rows` — the operator view (opted-out patients and the registry included). The rows are written as JSON
//! and sealed to the key the operator's client made for this one query (`tokumei_keys::sealed_result`): the report
//! carries the row count, the column names and ciphertext, so the policy service, which keeps the report until it
//! is read, never holds the rows. A query that fails reports a code only (`SQL_REFUSED`, `SQL_ERROR`,
//! `SQL_TIMEOUT`, `RESULT_TOO_LARGE`); DataFusion's message, which may quote the query, stays in the core's log.

use std::time::Duration;

use deltalake::datafusion::execution::context::SQLOptions;
use serde_json::json;

use crate::error::StoreError;
use crate::store::{Store, View};

/// Longest a query may run.
pub const QUERY_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Largest result (JSON bytes before sealing): the report must fit the policy service's 3 MiB once hex-encoded.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

fn declined(code: &str, message: impl Into<String>) -> StoreError {
    StoreError::Declined {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Runs `query` and seals its rows to `recipient_key` for order `order_id`.
pub async fn run(
    store: &Store,
    order_id: u64,
    query: &str,
    all_rows: bool,
    recipient_key: &str,
) -> Result<serde_json::Value, StoreError> {
    if !tokumei_keys::sealed_result::is_recipient_key(recipient_key) {
        return Err(declined(
            "INVALID_ARGUMENT",
            "the recipient key is not an X25519 public key",
        ));
    }
    let view = if all_rows { View::Operator } else { View::Research };
    let ctx = store.session(view).await?;
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx.sql_with_options(query, read_only).await.map_err(|e| {
        let code = if e.to_string().contains("not supported") || e.to_string().contains("not allowed") {
            "SQL_REFUSED"
        } else {
            "SQL_ERROR"
        };
        tracing::info!(target: "tokumei::audit", order = order_id, code, "operator sql refused");
        declined(code, "the query was refused or could not be planned")
    })?;
    let batches = tokio::time::timeout(QUERY_TIME_LIMIT, frame.collect())
        .await
        .map_err(|_| declined("SQL_TIMEOUT", "the query ran longer than its limit"))?
        .map_err(|_| declined("SQL_ERROR", "the query failed"))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let columns: Vec<String> = batches
        .first()
        .map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect())
        .unwrap_or_default();
    let mut text = Vec::new();
    {
        let mut w = deltalake::arrow::json::ArrayWriter::new(&mut text);
        for b in &batches {
            w.write(b)
                .map_err(|_| declined("SQL_ERROR", "the rows could not be written"))?;
        }
        w.finish()
            .map_err(|_| declined("SQL_ERROR", "the rows could not be written"))?;
    }
    if text.is_empty() {
        text.extend_from_slice(b"[]");
    }
    if text.len() > MAX_RESULT_BYTES {
        return Err(declined(
            "RESULT_TOO_LARGE",
            format!("the result is larger than {MAX_RESULT_BYTES} bytes; select fewer rows or columns"),
        ));
    }
    let sealed = tokumei_keys::sealed_result::seal(
        recipient_key,
        &text,
        &tokumei_keys::sealed_result::order_context(order_id),
    )
    .map_err(|_| declined("SEAL_FAILED", "the result could not be sealed"))?;
    Ok(json!({"rows": rows, "columns": columns, "sealed": hex::encode(sealed)}))
}
