//! The core store's figures for the regulator's periodic report: counts of what was received and what was done
//! with patients' requests in a window, read in the operator's view (every row received) — never a row.
//!
//! The core computes them when the policy service orders `regulator_figures` (`crate::orders`); the window comes
//! in the order, computed once by the policy service, so both halves of the report count the same quarter.

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, Int64Array};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::schema::Table;
use crate::store::Store;

/// The core store's part of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreFigures {
    /// Hospitals that sent records in the period.
    pub hospitals_providing: u64,
    /// Patient records received (rows of `patients`).
    pub patient_records_received: u64,
    /// Clinical rows received in all tables.
    pub clinical_rows_received: u64,
    /// Opt-out requests registered.
    pub opt_outs_handled: u64,
    /// Erasure requests registered.
    pub erasure_requests_handled: u64,
    /// Erasures carried out (certificates issued).
    pub erasures_completed: u64,
}

/// The figures of the window `[from, to)`.
pub async fn figures(store: &Store, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<CoreFigures, StoreError> {
    let (from_us, to_us) = (from.timestamp_micros(), to.timestamp_micros());
    let session = store.operator_session().await?;
    let ctx = session.context();
    let window = |col: &str| format!("CAST({col} AS BIGINT) >= {from_us} AND CAST({col} AS BIGINT) < {to_us}");
    let count = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&sql).await?.collect().await?;
            let mut n = 0u64;
            for b in &batches {
                if let Some(c) = b.column(0).as_any().downcast_ref::<Int64Array>() {
                    n += (0..c.len()).map(|i| c.value(i).max(0) as u64).sum::<u64>();
                }
            }
            Ok::<u64, StoreError>(n)
        }
    };
    let hospitals = count(format!(
        "SELECT COUNT(DISTINCT source_hospital) FROM patients WHERE {}",
        window("ingested_at")
    ))
    .await?;
    let patients = count(format!("SELECT COUNT(*) FROM patients WHERE {}", window("ingested_at"))).await?;
    let mut clinical = 0;
    for t in Table::CLINICAL {
        clinical += count(format!(
            "SELECT COUNT(*) FROM {} WHERE {}",
            t.name(),
            window("ingested_at")
        ))
        .await?;
    }
    let requests = |kind: &str| {
        format!(
            "SELECT COUNT(DISTINCT request_id) FROM opt_outs WHERE kind {kind} 'ERASE' AND {}",
            window("requested_at")
        )
    };
    let erasures = count(requests("=")).await?;
    let opt_outs = count(requests("<>")).await?;
    let completed = crate::erasure::certificates(&store.erasure_log_path())?
        .iter()
        .filter(|c| chrono::DateTime::parse_from_rfc3339(&c.completed_at).is_ok_and(|t| t >= from && t < to))
        .count() as u64;
    Ok(CoreFigures {
        hospitals_providing: hospitals,
        patient_records_received: patients,
        clinical_rows_received: clinical,
        opt_outs_handled: opt_outs,
        erasure_requests_handled: erasures,
        erasures_completed: completed,
    })
}
