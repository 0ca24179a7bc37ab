//! Demo chapter 4 — statistics under the approval, asked by the researcher from her desk (a session and the CA): the
//! policy service checks the platform's rules and the approval's conditions, spends a DP table's loss from the
//! approval's budget in the ledger and orders the table from the core, which computes it over the research view;
//! the table comes back to her alone. A small-cell table is audited against earlier ones; a request over budget and
//! one grouped by the linkage key are refused before anything is computed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use tokumei_client::core_orders::WaitOptions;
use tokumei_client::refused;
use tokumei_client::statistics::{StatsArgs, store};
use tokumei_proto::policy::v1 as pb;

use crate::committee::Committee;

/// What the chapter shows, for the JSON report.
#[derive(Serialize, Default)]
pub struct StatsChapter {
    project: String,
    budget_epsilon: f64,
    /// Patients per prefecture, Laplace, all 47 prefecture codes from the catalogue.
    patients_by_prefecture: StatsSummary,
    /// Mean lab value per JLAC10 analyte, Gaussian noise, analytes chosen by DP partition selection.
    mean_lab_value_by_analyte: StatsSummary,
    /// Patients per prefecture × sex under the small-cell rule (not DP).
    small_cell_prefecture_by_sex: SmallCellDemo,
    /// The refusal of a request that would exceed the budget.
    refused_over_budget: String,
    /// The refusal of a request grouping by the linkage key (the platform's rule, whatever the approval lists).
    refused_linkage_key: String,
    ledger_entries: usize,
    spent_epsilon: f64,
    remaining_epsilon: f64,
}

#[derive(Serialize, Default)]
struct StatsSummary {
    output: String,
    order: u64,
    cells: u64,
    protection: String,
    epsilon: f64,
    rho: f64,
    delta: f64,
    expected_abs_error: Option<f64>,
    sample: Vec<(Vec<String>, String)>,
}

#[derive(Serialize, Default)]
struct SmallCellDemo {
    output: String,
    order: u64,
    cells: u64,
    primary_suppressed: u64,
    complementary_suppressed: u64,
}

/// A request over the store in the researcher's words, as `tokumei stats --table` takes it.
fn request(cast: &Committee, table: &str, group_by: &[&str], output: PathBuf) -> StatsArgs {
    StatsArgs {
        input: None,
        table: Some(table.to_owned()),
        group_by: group_by.iter().map(|c| (*c).to_owned()).collect(),
        measure: "count".into(),
        subject: None,
        max_contrib: 1,
        epsilon: None,
        rho: None,
        delta: None,
        public_keys: None,
        hierarchy: Vec::new(),
        hierarchy_delimiter: ";".into(),
        min_cell: None,
        suppress_zeros: false,
        project: cast.application.clone(),
        output,
        report: None,
        dry_run: false,
        delimiter: ",".into(),
        service: cast.desk.options(Some(&cast.researcher)),
        wait: WaitOptions { wait_secs: 120 },
    }
}

/// Asks for the table; returns the report and the order that computed it.
async fn ask(a: &StatsArgs) -> Result<Value> {
    let table = a.table.clone().context("a table of the store")?;
    store::make(a, store::spec(a, &table, None), false).await
}

fn summary(a: &StatsArgs, report: &Value) -> Result<StatsSummary> {
    let loss = &report["plan"]["loss"];
    let text = std::fs::read_to_string(&a.output)?;
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let headers = rows.headers()?.clone();
    let keys = a.group_by.len();
    let error_at = headers.iter().position(|h| h == "expected_abs_error");
    let mut sample = Vec::new();
    let mut expected_abs_error = None;
    for row in rows.records() {
        let row = row?;
        if expected_abs_error.is_none() {
            expected_abs_error = error_at.and_then(|i| row.get(i)).and_then(|e| e.parse().ok());
        }
        if sample.len() < 5 {
            let key = row.iter().take(keys).map(str::to_owned).collect();
            sample.push((key, row.get(keys).unwrap_or_default().to_owned()));
        }
    }
    Ok(StatsSummary {
        output: a.output.display().to_string(),
        order: report["order"].as_u64().unwrap_or_default(),
        cells: report["cells"].as_u64().unwrap_or_default(),
        protection: report["protection"].as_str().unwrap_or_default().to_owned(),
        epsilon: loss["epsilon"].as_f64().unwrap_or_default(),
        rho: loss["rho"].as_f64().unwrap_or_default(),
        delta: loss["delta"].as_f64().unwrap_or_default(),
        expected_abs_error,
        sample,
    })
}

/// The approval's budget as the ledger keeps it, shown to the researcher.
pub(crate) async fn budget(cast: &Committee) -> Result<tokumei_policy::budget_ledger::BudgetStatus> {
    let mut service = cast.desk.as_(&cast.researcher).await?;
    let request = service.request(pb::BudgetQuery {
        project: cast.application.clone(),
    })?;
    let text = service
        .client
        .show_budget(request)
        .await
        .map_err(refused)?
        .into_inner()
        .json;
    Ok(serde_json::from_str(&text)?)
}

/// Runs the chapter: two DP tables, a small-cell table, and two refusals.
pub async fn chapter(home: &Path, cast: &Committee, say: &impl Fn(&str)) -> Result<StatsChapter> {
    let project = cast.application.clone();
    let status = budget(cast).await?;
    say(&format!(
        "   the approval of {project} gave it a budget of ε={}, δ={:e} in the ledger; sato asks from her desk (a session and the CA): the policy service checks each table against the platform's rules and the approval, spends its loss, and the core computes it",
        status.project.budget.epsilon, status.project.budget.delta
    ));
    let out_dir = home.join("statistics");
    let mut chapter = StatsChapter {
        project,
        budget_epsilon: status.project.budget.epsilon,
        ..Default::default()
    };

    // 1. Patients per prefecture: the 47 codes of the catalogue's level are the public keys; Laplace at ε = 0.5.
    let mut by_prefecture = request(
        cast,
        "patients",
        &["prefecture"],
        out_dir.join("patients_by_prefecture.csv"),
    );
    by_prefecture.hierarchy = vec!["prefecture=prefecture".into()];
    by_prefecture.epsilon = Some(0.5);
    let report = ask(&by_prefecture).await?;
    chapter.patients_by_prefecture = summary(&by_prefecture, &report)?;
    let s = &chapter.patients_by_prefecture;
    say(&format!(
        "   patients by prefecture, ε=0.5 Laplace, all 47 prefectures declared (order {}): {} cells, expected |error| {:.2} per cell; e.g. {:?}",
        s.order,
        s.cells,
        s.expected_abs_error.unwrap_or_default(),
        &s.sample[..s.sample.len().min(3)]
    ));

    // 2. Mean lab value per analyte: keys by DP partition selection, ≤ 5 results per patient, zCDP.
    let mut labs = request(
        cast,
        "observations",
        &["jlac10"],
        out_dir.join("mean_lab_value_by_analyte.csv"),
    );
    labs.measure = "mean:value:0:500".into();
    labs.max_contrib = 5;
    labs.rho = Some(0.005);
    labs.delta = Some(1e-6);
    let report = ask(&labs).await?;
    chapter.mean_lab_value_by_analyte = summary(&labs, &report)?;
    let s = &chapter.mean_lab_value_by_analyte;
    say(&format!(
        "   mean lab value by JLAC10 analyte, ρ=0.005 Gaussian, ≤5 results per patient, analytes chosen by DP partition selection (order {}): {} released ({})",
        s.order, s.cells, s.protection
    ));

    // 3. The national databases' rule, for a table published without DP.
    let by_sex = request(
        cast,
        "patients",
        &["prefecture", "sex"],
        out_dir.join("patients_by_prefecture_and_sex.csv"),
    );
    let report = ask(&by_sex).await?;
    let suppressed = &report["small_cell"];
    chapter.small_cell_prefecture_by_sex = SmallCellDemo {
        output: by_sex.output.display().to_string(),
        order: report["order"].as_u64().unwrap_or_default(),
        cells: report["cells"].as_u64().unwrap_or_default(),
        primary_suppressed: suppressed["primary_suppressed"].as_u64().unwrap_or_default(),
        complementary_suppressed: suppressed["complementary_suppressed"].as_u64().unwrap_or_default(),
    };
    let s = &chapter.small_cell_prefecture_by_sex;
    say(&format!(
        "   patients by prefecture × sex without DP (minimum cell 10; order {}): {} small cells suppressed, {} more so none can be recomputed from the totals; audited against earlier tables",
        s.order, s.primary_suppressed, s.complementary_suppressed
    ));

    // 4. The same request once more: over budget, refused before any order is queued.
    by_prefecture.output = out_dir.join("refused.csv");
    chapter.refused_over_budget = crate::desk::expect_reason(ask(&by_prefecture).await, "BUDGET_EXCEEDED")?;
    say(&format!("   another ε=0.5 request: {}", chapter.refused_over_budget));

    // 5. Patients by sex × the core's linkage key: refused by the platform's rules before the approval is even
    // consulted, and audited.
    let mut linkage = request(
        cast,
        "patients",
        &["sex", "linkage_key"],
        out_dir.join("refused-linkage.csv"),
    );
    linkage.epsilon = Some(0.001);
    chapter.refused_linkage_key = crate::desk::expect_reason(ask(&linkage).await, "COLUMN_NOT_GROUPABLE")?;
    say(&format!(
        "   sato asks for patients by sex × linkage_key: {} (audited)",
        chapter.refused_linkage_key
    ));
    let status = budget(cast).await?;
    chapter.ledger_entries = status.entries.len();
    chapter.spent_epsilon = status.spent.epsilon;
    chapter.remaining_epsilon = status.spent.remaining_epsilon(&status.project.budget);
    say(&format!(
        "   ledger: {} releases, spent ε={:.4} of 1 (pure ε + ρ converted once at δ), remaining ε={:.4}",
        chapter.ledger_entries, chapter.spent_epsilon, chapter.remaining_epsilon
    ));
    Ok(chapter)
}
