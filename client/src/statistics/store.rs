//! A statistical table over the core store (`tokumei stats --table NAME`), asked of the policy service.
//!
//! The command holds a session and the CA only. The service checks the platform's rules and the approval, spends
//! a DP table's loss and orders the table from the core, which computes it over the research view; a small-cell
//! table is audited against earlier ones before it comes back. The table returns to the requester alone and is
//! written here, atomically, after its digest is checked. `--dry-run` plans locally from the catalogue (no data,
//! no session, nothing spent).

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokumei_catalogue::statistics::StatisticsSpec;
use tokumei_proto::policy::v1 as pb;

use super::StatsArgs;
use crate::output::write_atomically;

/// The request in the researcher's words.
pub fn spec(a: &StatsArgs, table: &str, public_keys: Option<Vec<Vec<String>>>) -> StatisticsSpec {
    StatisticsSpec {
        application: a.project.clone(),
        table: table.to_owned(),
        group_by: a.group_by.clone(),
        hierarchy: a.hierarchy.clone(),
        measure: a.measure.clone(),
        max_contrib: a.max_contrib,
        epsilon: a.epsilon,
        rho: a.rho,
        delta: a.delta,
        public_keys,
        min_cell: a.min_cell,
        suppress_zeros: a.suppress_zeros,
        subject: a.subject.clone(),
    }
}

/// The request as the policy service takes it.
pub fn to_proto(s: StatisticsSpec) -> pb::StatisticsOperation {
    pb::StatisticsOperation {
        application_id: s.application,
        table: s.table,
        group_by: s.group_by,
        hierarchy: s.hierarchy,
        measure: s.measure,
        max_contrib: s.max_contrib,
        epsilon: s.epsilon,
        rho: s.rho,
        delta: s.delta,
        keys_declared: s.public_keys.is_some(),
        public_keys: s
            .public_keys
            .unwrap_or_default()
            .into_iter()
            .map(|values| pb::KeyRow { values })
            .collect(),
        min_cell: s.min_cell,
        suppress_zeros: s.suppress_zeros,
        subject: s.subject,
    }
}

/// Asks the policy service for the table, waits for the core, checks the table against its digest and writes it
/// (and `--report`); returns the report (the table itself and the audit's view of it left out).
pub async fn make(a: &StatsArgs, spec: StatisticsSpec, progress: bool) -> Result<Value> {
    if a.dry_run {
        return dry_run(&spec);
    }
    let status = crate::core_orders::order(
        &a.service,
        &a.wait,
        pb::core_operation_request::Operation::Statistics(to_proto(spec)),
        progress,
    )
    .await?;
    let mut report: Value = serde_json::from_str(&status.result_json).context("the core's statistics report")?;
    let csv = report
        .get("csv")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("[REPORT_INCOMPLETE] the core's report carries no table"))?
        .to_owned();
    let digest = hex::encode(Sha256::digest(csv.as_bytes()));
    if report.get("csv_sha256").and_then(Value::as_str) != Some(digest.as_str()) {
        anyhow::bail!("[REPORT_CORRUPT] the table does not match its digest; nothing written");
    }
    write_atomically(&a.output, csv.as_bytes())?;
    // The report file keeps the figures, not the table again nor the audit's view of it.
    if let Some(map) = report.as_object_mut() {
        for heavy in ["csv", "linked"] {
            map.remove(heavy);
        }
        map.insert("order".into(), status.id.into());
        map.insert("output".into(), a.output.display().to_string().into());
        map.insert("output_sha256".into(), digest.into());
    }
    if let Some(path) = &a.report {
        write_atomically(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report)
}

/// The plan of a DP table (or the rule of a small-cell one), from the catalogue alone.
fn dry_run(spec: &StatisticsSpec) -> Result<Value> {
    let admitted = spec.admit().map_err(|r| anyhow!("{r}"))?;
    let plan = if admitted.private {
        Some(tokumei_deid::dp::plan::plan(&admitted.request)?)
    } else {
        None
    };
    let out = serde_json::json!({
        "application": spec.application,
        "source": format!("store:{}", spec.table),
        "dry_run": true,
        "differentially_private": admitted.private,
        "public_keys": match &admitted.request.keys {
            tokumei_deid::dp::request::Keys::Public(k) => Some(k.len()),
            tokumei_deid::dp::request::Keys::Select => None,
        },
        "plan": plan,
        "min_cell": spec.min_cell,
    });
    Ok(out)
}
