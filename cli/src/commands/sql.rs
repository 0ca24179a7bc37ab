//! `tokumei sql "<query>"`: an operator's read-only query over the core store, asked of the policy service.
//!
//! By default the query sees the research view (opted-out and erased patients removed, no registry) — what every
//! downstream consumer sees. `--all-rows` shows the raw tables including the opt-out registry, for operators
//! investigating the store itself. The command holds a session and the CA only: the policy service authorises
//! `run_operator_sql` and queues the query as an order; the core runs it read-only and seals the rows to a key this
//! process made for the one query (HPKE) — the policy service, which keeps the report until it is read, never holds
//! the rows, and the private key never leaves this process. The ledger keeps the query's shape (literals replaced by
//! `?`), its SHA-256, the view and the row count.

use anyhow::{Context, anyhow};
use clap::Args;
use serde_json::Value;
use tokumei_keys::sealed_result::{RecipientKey, order_context};
use tokumei_proto::policy::v1 as pb;

use crate::output::runtime;
use tokumei_client::core_orders::WaitOptions;
use tokumei_client::policy::ServiceOptions;

/// Arguments of `tokumei sql`.
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The query (DataFusion SQL, read-only). Tables: patients, encounters, conditions, medications, observations,
    /// allergies (and opt_outs with --all-rows).
    pub query: String,
    /// Include opted-out patients and the registry (operator investigation only).
    #[arg(long)]
    pub all_rows: bool,
    /// The policy service and the operator's session.
    #[command(flatten)]
    pub service: ServiceOptions,
    /// How long to wait for the core.
    #[command(flatten)]
    pub wait: WaitOptions,
}

/// Runs `tokumei sql`.
pub fn run(a: SqlArgs, json: bool) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let key = RecipientKey::generate();
        let operation = pb::core_operation_request::Operation::Sql(pb::SqlOperation {
            query: a.query.clone(),
            all_rows: a.all_rows,
            recipient_key: key.public_hex().to_owned(),
        });
        let status = tokumei_client::core_orders::order(&a.service, &a.wait, operation, !json).await?;
        let report: Value = serde_json::from_str(&status.result_json).context("the core's report")?;
        let sealed = report["sealed"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| anyhow!("[REPORT_INCOMPLETE] the core's report carries no rows"))?;
        let text = key
            .open(&sealed, &order_context(status.id))
            .map_err(|e| anyhow!("[RESULT_UNREADABLE] {e}"))?;
        let rows: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&text).context("the rows")?;
        if json {
            println!("{}", serde_json::to_string(&rows)?);
        } else {
            let columns: Vec<String> = report["columns"]
                .as_array()
                .map(|c| c.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            print_table(&columns, &rows);
            println!("{} row(s)", rows.len());
        }
        anyhow::Ok(())
    })
}

/// The rows as a plain text table (columns in the query's order; null as empty).
fn print_table(columns: &[String], rows: &[serde_json::Map<String, Value>]) {
    let cell = |row: &serde_json::Map<String, Value>, c: &str| match row.get(c) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        println!("| {} |", padded.join(" | "));
    };
    line(columns.to_vec());
    println!(
        "|{}|",
        widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")
    );
    for r in rows {
        line(columns.iter().map(|c| cell(r, c)).collect());
    }
}
