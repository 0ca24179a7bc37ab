//! Demo chapter 9 — the remote analysis environment (Visiting 解析): sato analyses pseudonymised data where it lies,
//! and a result leaves only once checked. The committee approves an on-platform application with pseudonymised
//! detail; sato is refused until the chair registers her as a certified user (認定利活用者); she runs a query and a
//! regression in the workspace (the core answers, sealed to her); she asks for a cross-tabulation by prefecture
//! and sex to leave — the automatic checks flag its small cells, the output checker cannot approve it and asks for
//! changes; the fixed table (by sex) is approved by the checker, released signed, and fetched with its signature
//! verified. The operator reads the usage report.

use std::collections::BTreeSet;

use anyhow::Result;
use chrono::{Duration, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokumei_client::analysis;
use tokumei_client::core_orders::WaitOptions;
use tokumei_policy::Role;
use tokumei_policy::committee::{ApprovalConditions, Channel, PrivacyModel, japan_date};

use crate::committee::{Committee, assign, decide, file, form, vote};
use crate::desk::{activate, expect_reason, invite};

/// HbA1c (NGSP) in JLAC10, as the synthetic hospitals code it.
const HBA1C_JLAC10: &str = "3D046000001920402";

/// What the chapter shows, for the JSON report.
#[derive(Serialize, Default)]
pub struct AnalysisChapter {
    /// The on-platform approval.
    pub application: String,
    /// sato before her certification.
    pub not_certified: String,
    /// Patients the first query counted.
    pub patients_counted: u64,
    /// Rows the query scanned, as the ledger keeps it.
    pub rows_scanned: u64,
    /// Coefficients of the regression (HbA1c on sex).
    pub regression: Value,
    /// The disclosive output: its request, the checks' verdict and the rules they found.
    pub disclosive_output: u64,
    /// See `disclosive_output`.
    pub disclosive_verdict: String,
    /// See `disclosive_output`.
    pub disclosive_rules: Vec<String>,
    /// The checker trying to approve it anyway.
    pub approval_refused: String,
    /// The fixed output, approved and released.
    pub released_output: u64,
    /// The checks' verdict on it.
    pub released_verdict: String,
    /// SHA-256 of the signed output.
    pub released_sha256: String,
    /// The usage report's line for sato.
    pub usage: Value,
}

fn rules_of(report: &Value) -> Vec<String> {
    let mut rules: Vec<String> = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["findings"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["rule"].as_str().map(str::to_owned))
        .collect();
    rules.sort();
    rules.dedup();
    rules
}

/// An on-platform approval with pseudonymised detail for sato, decided by the committee.
async fn approve(cast: &Committee, say: &impl Fn(&str)) -> Result<String> {
    let desk = &cast.desk;
    let mut application = form(Channel::OnPlatform);
    application.title = "HbA1c and sex in diabetes care (workspace)".into();
    application.methods = "Regression and cross-tabulations in the platform's analysis environment".into();
    let app = file(desk, &cast.researcher, &application).await?;
    assign(desk, &cast.chair, &app.id, &["mei", "kenta", "chika"]).await?;
    for member in cast.members.iter().chain([&cast.chair]) {
        vote(desk, member, &app.id, "Analysis on the platform; outputs checked").await?;
    }
    let conditions = ApprovalConditions {
        tables: application.tables.clone(),
        cohort_filter: String::new(),
        privacy: Some(PrivacyModel {
            k: 5,
            l: None,
            t: None,
            max_suppression: 0.05,
            m: 1,
            demographic_weight: None,
        }),
        dp_budget: None,
        channel: Channel::OnPlatform,
        expires_on: japan_date(Utc::now()) + Duration::days(180),
        max_downloads: 0,
        recipients: BTreeSet::from(["sato".to_owned()]),
        link_releases: false,
        pseudonymised: true,
        statistics: Default::default(),
    };
    let decided = decide(desk, &cast.chair, &app.id, &conditions).await?;
    say(&format!(
        "   sato files {} on the on-platform channel; the committee approves it with pseudonymised detail (仮名加工医療情報): {}",
        app.id, decided.status
    ));
    Ok(app.id)
}

/// Runs the chapter.
pub async fn chapter(cast: &Committee, say: &impl Fn(&str)) -> Result<AnalysisChapter> {
    let mut out = AnalysisChapter::default();
    let desk = &cast.desk;
    let code = invite(
        desk,
        &cast.administrators,
        ("oto", "Oto Hara (output checker)", "trc"),
        &[Role::OutputChecker],
    )
    .await?;
    let (checker, _) = activate(desk, "oto", &code).await?;
    let id = approve(cast, say).await?;
    out.application = id.clone();
    let wait = WaitOptions { wait_secs: 120 };
    let sato = desk.options(Some(&cast.researcher));
    let ask = |request: Value| analysis::ask(&sato, &wait, &id, request, false);

    let count = json!({"request": "query", "sql": "SELECT count(DISTINCT patient) AS patients FROM patients"});
    out.not_certified = expect_reason(ask(count.clone()).await, "NOT_CERTIFIED")?;
    say(&format!("   sato opens the workspace: {}", out.not_certified));
    let expires = (japan_date(Utc::now()) + Duration::days(365)).to_string();
    analysis::certify(&desk.options(Some(&cast.chair)), "sato", "MHLW-2026-0042", &expires).await?;
    let counted = ask(count).await?;
    out.patients_counted = counted
        .private
        .as_ref()
        .and_then(|r| r["rows"][0][0].as_f64())
        .unwrap_or(0.0) as u64;
    out.rows_scanned = counted.report["rows_scanned"].as_u64().unwrap_or(0);
    say(&format!(
        "   chika registers sato as a certified user (認定利活用者); her query counts {} patients (workspace pseudonyms, {} rows scanned, answer sealed to her desk)",
        out.patients_counted, out.rows_scanned
    ));

    let regression = ask(json!({"request": "analyse", "spec": {
        "analysis": "linear",
        "sql": format!(
            "SELECT o.patient, o.value AS hba1c, CASE WHEN p.sex = 'F' THEN 1.0 ELSE 0.0 END AS female \
             FROM observations o JOIN patients p ON o.patient = p.patient WHERE o.jlac10 = '{}' AND o.value IS NOT NULL",
            HBA1C_JLAC10
        ),
        "outcome": "hba1c",
        "covariates": ["female"],
    }}))
    .await?;
    out.regression = regression
        .private
        .as_ref()
        .map(|r| r["coefficients"].clone())
        .unwrap_or_default();
    say(&format!(
        "   a linear regression of HbA1c on sex, kept as result {} (automatic checks: {})",
        regression.report["result"],
        regression.report["verdict"].as_str().unwrap_or("?")
    ));

    let crosstab = |sql: &str, rows: &str, columns: Option<&str>| json!({"request": "analyse", "spec": {"analysis": "crosstab", "sql": sql, "rows": rows, "columns": columns}});
    let by_prefecture = ask(crosstab(
        "SELECT patient, prefecture, sex FROM patients",
        "prefecture",
        Some("sex"),
    ))
    .await?;
    let requested = ask(json!({"request": "prepare_output", "result": by_prefecture.report["result"]})).await?;
    out.disclosive_output = requested.order;
    out.disclosive_verdict = requested.report["verdict"].as_str().unwrap_or_default().to_owned();
    out.disclosive_rules = rules_of(&requested.report);
    say(&format!(
        "   she asks for patients by prefecture × sex to leave (output request {}): the automatic checks say {} ({})",
        out.disclosive_output,
        out.disclosive_verdict,
        out.disclosive_rules.join(", ")
    ));
    let oto = desk.options(Some(&checker));
    out.approval_refused = expect_reason(
        analysis::decide(&oto, out.disclosive_output, "approve", "looks fine").await,
        "CHECKS_REFUSED",
    )?;
    analysis::decide(
        &oto,
        out.disclosive_output,
        "changes",
        "Cells under 10 patients: drop prefecture or group it into regions",
    )
    .await?;
    say(&format!(
        "   oto (output checker, another organisation) tries to approve it: {}; asks for changes instead",
        out.approval_refused
    ));

    let by_sex = ask(crosstab("SELECT patient, sex FROM patients", "sex", None)).await?;
    let fixed = ask(json!({"request": "prepare_output", "result": by_sex.report["result"]})).await?;
    out.released_output = fixed.order;
    out.released_verdict = fixed.report["verdict"].as_str().unwrap_or_default().to_owned();
    analysis::decide(
        &oto,
        fixed.order,
        "approve",
        "Margins by sex only; every cell well above the threshold",
    )
    .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let o = analysis::output(&sato, fixed.order).await?;
        if o["state"] == "released" {
            break;
        }
        anyhow::ensure!(o["state"] == "releasing", "the approved output is {}", o["state"]);
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the approved output was not released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let signed = analysis::fetch(&sato, fixed.order, None).await?;
    out.released_sha256 = signed.sha256.clone();
    say(&format!(
        "   the fixed table (by sex; checks: {}) is approved by oto, checked again by the core against every released output, signed and recorded as a provision; sato fetches it, signature verified (sha256 {}…)",
        out.released_verdict,
        &out.released_sha256[..16]
    ));

    let usage = analysis::usage(&desk.options(Some(&cast.operator)), Some(&id)).await?;
    out.usage = usage["workspaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["user"] == "sato")
        .cloned()
        .unwrap_or_default();
    say(&format!(
        "   the operator's usage report for {}: {} — every query and output request on the ledger by its shape and hash",
        id, out.usage["usage"]
    ));
    Ok(out)
}
