//! `tokumei stats`: parses the request, runs the researcher's statistics client ([`tokumei_client::statistics`]:
//! over a file or over the store, a client of the policy service either way) and prints what it did.

use anyhow::Result;
use serde_json::Value;
use tokumei_client::statistics::{StatsArgs, file, store};

use crate::output::{emit, runtime};

/// Runs `tokumei stats`.
pub fn run(a: StatsArgs, json: bool) -> Result<()> {
    if let Some(table) = a.table.clone() {
        let declared = match &a.public_keys {
            Some(path) => Some(tokumei_client::statistics::read_public_keys(path, &a.group_by)?),
            None => None,
        };
        let spec = store::spec(&a, &table, declared);
        let report = runtime()?.block_on(store::make(&a, spec, !json))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else if a.dry_run {
            println!("試算 / dry run for {}: nothing spent, no data read", a.project);
            print_plan(&report);
        } else {
            print_store_table(&report);
        }
        return Ok(());
    }
    let report = runtime()?.block_on(file::make(&a, !json))?;
    print_file_table(&report, json)
}

fn print_file_table(report: &file::Report, json: bool) -> Result<()> {
    emit(json, report, |r| {
        if r.dry_run {
            println!("dry run for project {}: nothing spent, no noise drawn", r.project);
        } else {
            println!("wrote {} cells to {}", r.cells, r.output.as_deref().unwrap_or("-"));
        }
        println!(
            "protection: {}",
            if r.protection.is_empty() {
                "(differential privacy, see plan)"
            } else {
                &r.protection
            }
        );
        if let Some(p) = &r.plan {
            println!("unit of privacy: {}", p.unit_of_privacy);
            for c in &p.components {
                println!(
                    "  {:?}: noise scale {:.4}{}, expected |error| per cell {}, 95% within ±{}",
                    c.kind,
                    c.scale,
                    c.threshold.map(|t| format!(", threshold {t}")).unwrap_or_default(),
                    c.expected_abs_error
                        .map(|e| format!("{e:.4}"))
                        .unwrap_or_else(|| "data-dependent".into()),
                    c.ci95_half_width
                        .map(|e| format!("{e:.4}"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            println!(
                "privacy loss: ε={:.6} ρ={:.6} δ={:.2e} (reported as ε={:.6}, δ={:.2e})",
                p.loss.epsilon, p.loss.rho, p.loss.delta, p.reported_epsilon, p.reported_delta
            );
        }
        if let Some(s) = &r.small_cell {
            println!(
                "suppressed: {} primary, {} complementary (margins: {})",
                s.primary_suppressed, s.complementary_suppressed, s.margins
            );
        }
        if let (Some(e), Some(d)) = (r.remaining_epsilon, r.remaining_delta) {
            println!("remaining budget of {}: ε={e:.6}, δ={d:.2e}", r.project);
        }
    })
}

fn print_store_table(r: &Value) {
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
