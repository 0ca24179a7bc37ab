//! `tokumei stats --table NAME`: a statistical table over the core store, asked of the policy service.
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

use super::stats::StatsArgs;

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

pub(crate) fn to_proto(s: StatisticsSpec) -> pb::StatisticsOperation {
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

/// Runs `tokumei stats --table`.
pub async fn run(a: &StatsArgs, spec: StatisticsSpec, json: bool) -> Result<()> {
    if a.dry_run {
        return dry_run(&spec, json);
    }
    let status = super::store::order(
        &a.service,
        &a.wait,
        pb::core_operation_request::Operation::Statistics(to_proto(spec)),
        json,
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
    crate::output::write_atomically(&a.output, csv.as_bytes())?;
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
        crate::output::write_atomically(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

/// The plan of a DP table (or the rule of a small-cell one), from the catalogue alone.
fn dry_run(spec: &StatisticsSpec, json: bool) -> Result<()> {
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
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("試算 / dry run for {}: nothing spent, no data read", spec.application);
        print_plan(&out);
    }
    Ok(())
}

fn print_human(r: &Value) {
    println!(
        "統計表 / wrote {} cells to {} (order {})",
        r["cells"],
        r["output"].as_str().unwrap_or("-"),
        r["order"]
    );
    println!("protection: {}", r["protection"].as_str().unwrap_or("-"));
    print_plan(r);
    if let Some(s) = r.get("small_cell") {
        println!(
            "suppressed: {} primary, {} complementary (margins: {})",
            s["primary_suppressed"],
            s["complementary_suppressed"],
            s["margins"].as_str().unwrap_or("-")
        );
    }
}

fn print_plan(r: &Value) {
    let Some(p) = r.get("plan").filter(|p| p.is_object()) else {
        return;
    };
    println!("unit of privacy: {}", p["unit_of_privacy"].as_str().unwrap_or("-"));
    for c in p["components"].as_array().into_iter().flatten() {
        println!(
            "  {}: noise scale {:.4}, expected |error| per cell {}",
            c["kind"].as_str().unwrap_or("-"),
            c["scale"].as_f64().unwrap_or(f64::NAN),
            c["expected_abs_error"]
                .as_f64()
                .map_or_else(|| "data-dependent".to_owned(), |e| format!("{e:.4}"))
        );
    }
    let loss = &p["loss"];
    println!(
        "privacy loss: ε={} ρ={} δ={} (reported as ε={}, δ={})",
        loss["epsilon"], loss["rho"], loss["delta"], p["reported_epsilon"], p["reported_delta"]
    );
}
