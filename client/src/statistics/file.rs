//! A table over the researcher's own file, so that a refused request has no side effect: check the request's
//! shape → the policy service admits it and spends a DP table's loss (refusal stops here, before the file is read) →
//! read and group the file → draw the noise, or apply the small-cell rule at the threshold the service admitted →
//! the service audits and records the table → write the table and report atomically. This process holds the file
//! and a session, nothing of the platform's.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokumei_catalogue::statistics::{Population, SMALL_CELL_FLOOR, StatisticsSpec};
use tokumei_deid::dp::grouping::group;
use tokumei_deid::dp::plan::{Plan, plan};
use tokumei_deid::dp::release::release;
use tokumei_deid::dp::request::{Generalisation, Keys, Measure, Privacy, StatsRequest};
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::small_cell::{SmallCellRule, protect};
use tokumei_deid::spec;
use tokumei_deid::table::Table;
use tokumei_policy::budget_ledger::LedgerEntry;
use tokumei_policy::file_statistics::FileAdmission;
use tokumei_proto::policy::v1 as pb;

use super::StatsArgs;
use crate::output::write_atomically;
use crate::policy::PolicyClient;
use crate::refused;

/// What a table over a file did (what `--json` and `--report` hold).
#[derive(Serialize)]
pub struct Report {
    /// The approval the table is made under.
    pub project: String,
    /// `file:<stem>`: the table as approvals name it.
    pub source: String,
    /// The grouped columns asked for.
    pub group_by: Vec<String>,
    /// The key columns of the table made (after generalisation).
    pub key_columns: Vec<String>,
    /// What each cell holds.
    pub measure: Measure,
    /// How the keys were chosen, in words.
    pub keys: String,
    /// The protection applied, in words.
    pub protection: String,
    /// Whether the table is differentially private (else: the small-cell rule).
    pub differentially_private: bool,
    /// The DP plan: mechanism, noise scales, loss, expected errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// What the small-cell rule suppressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub small_cell: Option<tokumei_deid::published_table::SmallCellSummary>,
    /// The budget ledger's entry for the loss paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_entry: Option<LedgerEntry>,
    /// ε left in the approval's budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_epsilon: Option<f64>,
    /// δ left in the approval's budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_delta: Option<f64>,
    /// Cells written (suppressed ones included).
    pub cells: usize,
    /// The table's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// SHA-256 of the table's bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    /// Planned only: nothing read, spent or drawn.
    pub dry_run: bool,
}

/// `tokumei stats --input FILE`: a table over the researcher's own file. The policy service admits it and spends a
/// DP table's loss before any noise is drawn here; the table made is recorded there (a small-cell table audited
/// against earlier ones first). This process holds the file and a session, nothing of the platform's.
pub async fn make(a: &StatsArgs, progress: bool) -> Result<Report> {
    let (request, spec) = file_request(a)?;
    let source = format!("file:{}", spec.table);
    if a.dry_run {
        return dry_run(a, &request, &source);
    }
    {
        let service = PolicyClient::connect(&a.service).await?;
        let mut client = service.client.clone();
        // Refused (and audited by the service) before the file is read.
        let reply = client
            .admit_file_statistics(service.request(super::store::to_proto(spec.clone()))?)
            .await
            .map_err(refused)?;
        let admission: FileAdmission =
            serde_json::from_str(&reply.into_inner().json).context("the policy service's admission")?;
        let (table, population) = load(a, progress)?;
        let grouped = group(&table, &request)?;
        drop(table);
        let mut report = Report {
            project: a.project.clone(),
            source,
            group_by: request.group_by.clone(),
            key_columns: grouped.key_columns.clone(),
            measure: request.measure.clone(),
            keys: String::new(),
            protection: String::new(),
            differentially_private: admission.differentially_private,
            plan: None,
            small_cell: None,
            ledger_entry: admission.ledger_entry.clone(),
            remaining_epsilon: Some(admission.remaining_epsilon),
            remaining_delta: Some(admission.remaining_delta),
            cells: 0,
            output: None,
            output_sha256: None,
            dry_run: false,
        };
        let mut record = pb::FileStatisticsRecord {
            statistics: Some(super::store::to_proto(spec)),
            ..Default::default()
        };
        let small_cell = !admission.differentially_private;
        let bytes = if admission.differentially_private {
            let plan = plan(&request)?;
            // The service planned the same request; a different loss means the two read it differently (the
            // figures crossed JSON, so they are compared to a relative 1e-9).
            let same = |paid: f64, planned: f64| (paid - planned).abs() <= 1e-9 * planned.abs().max(f64::MIN_POSITIVE);
            let paid = admission.ledger_entry.as_ref().map(|e| e.loss);
            let matches = paid.is_some_and(|p| {
                same(p.epsilon, plan.loss.epsilon) && same(p.rho, plan.loss.rho) && same(p.delta, plan.loss.delta)
            });
            if !matches {
                bail!(
                    "[PLAN_MISMATCH] the loss paid ({paid:?}) is not the loss of this table's plan ({:?}); no noise drawn",
                    plan.loss
                );
            }
            let table = release(&plan, &request, &grouped)?;
            report.keys = keys_description(&request.keys, &plan);
            report.protection = table.protection.clone();
            report.cells = table.cells.len();
            report.plan = Some(plan);
            tokumei_deid::published_table::private_table_csv(&table, a.min_cell)?
        } else {
            let rule = SmallCellRule {
                threshold: admission.min_cell.unwrap_or(SMALL_CELL_FLOOR),
                suppress_zeros: a.suppress_zeros,
            };
            let (counts, dims) = tokumei_deid::published_table::count_table(&grouped)?;
            let protected = protect(&counts, &rule)?;
            let protection = format!(
                "small-cell: counts below {} suppressed, plus complementary suppression",
                rule.threshold
            );
            report.keys = if grouped.public {
                "public (declared)".into()
            } else {
                "as present in the data".into()
            };
            report.small_cell = Some(tokumei_deid::published_table::SmallCellSummary::of(
                rule, &protected, dims,
            ));
            report.cells = protected.refs().len();
            let linked = tokumei_deid::published_table::linked_table(&grouped, &protected)?;
            record.linked_json = serde_json::to_string(&linked)?;
            record.population_json = serde_json::to_string(&population)?;
            let bytes = tokumei_deid::published_table::small_cell_csv(&grouped, &protected, dims, &protection)?;
            report.protection = protection;
            bytes
        };
        if small_cell {
            record.cells = u64::try_from(report.cells).unwrap_or(u64::MAX);
            // A small-cell table the differencing audit refuses is never written. (A DP table was recorded when
            // its loss was spent.)
            let recorded = client
                .record_file_statistics(service.request(record)?)
                .await
                .map_err(refused)?;
            let recorded: serde_json::Value =
                serde_json::from_str(&recorded.into_inner().json).context("the policy service's record")?;
            if let Some(entry) = recorded.get("ledger_entry").filter(|e| !e.is_null()) {
                report.ledger_entry = Some(serde_json::from_value(entry.clone()).context("the ledger entry")?);
            }
        }
        write_atomically(&a.output, &bytes)?;
        report.output = Some(a.output.display().to_string());
        report.output_sha256 = Some(hex::encode(Sha256::digest(&bytes)));
        write_report(a, &report)?;
        Ok(report)
    }
}

/// Writes the JSON report beside the table when `--report` asks for it.
fn write_report(a: &StatsArgs, report: &Report) -> Result<()> {
    if let Some(path) = &a.report {
        write_atomically(path, &serde_json::to_vec_pretty(report)?)?;
    }
    Ok(())
}

/// The request as this command computes it (with the researcher's hierarchy files) and as the service admits it
/// (the file's stem, the generalised columns' levels, the keys the hierarchies give).
fn file_request(a: &StatsArgs) -> Result<(StatsRequest, StatisticsSpec)> {
    let measure = Measure::parse(&a.measure)?;
    let privacy = match (a.epsilon, a.rho) {
        (Some(e), None) => Some(Privacy::Epsilon(e)),
        (None, Some(r)) => Some(Privacy::Rho(r)),
        (None, None) => None,
        (Some(_), Some(_)) => bail!("give --epsilon or --rho, not both"),
    };
    let declared = match &a.public_keys {
        Some(path) => Some(super::read_public_keys(path, &a.group_by)?),
        None => None,
    };
    let hierarchy_delimiter = spec::parse_delimiter(&a.hierarchy_delimiter)?;
    let generalise = a
        .hierarchy
        .iter()
        .map(|h| parse_generalisation(h, hierarchy_delimiter))
        .collect::<Result<Vec<_>>>()?;
    let keys = match declared {
        Some(keys) => Keys::Public(keys),
        None => StatsRequest::keys_from_hierarchies(&a.group_by, &generalise).map_or(Keys::Select, Keys::Public),
    };
    let levels = generalise.iter().map(|g| format!("{}={}", g.column, g.level)).collect();
    let request = StatsRequest {
        group_by: a.group_by.clone(),
        generalise,
        measure,
        subject: a.subject.clone(),
        max_contrib: a.max_contrib,
        // Not a DP release when absent; the value is then never used (only `validate_shape` runs).
        privacy: privacy.unwrap_or(Privacy::Epsilon(f64::INFINITY)),
        delta: a.delta,
        keys: keys.clone(),
    };
    if privacy.is_some() {
        request.validate()?;
    } else {
        request.validate_shape()?;
    }
    let spec = StatisticsSpec {
        application: a.project.clone(),
        table: super::table_name(a)?,
        group_by: a.group_by.clone(),
        hierarchy: levels,
        measure: a.measure.clone(),
        max_contrib: a.max_contrib,
        epsilon: a.epsilon,
        rho: a.rho,
        delta: a.delta,
        public_keys: match keys {
            Keys::Public(k) => Some(k),
            Keys::Select => None,
        },
        min_cell: a.min_cell,
        suppress_zeros: a.suppress_zeros,
        subject: a.subject.clone(),
    };
    Ok((request, spec))
}

/// `--dry-run` over a file: the plan of a DP table (or the rule of a small-cell one), with nothing read, spent or
/// asked of the service.
fn dry_run(a: &StatsArgs, request: &StatsRequest, source: &str) -> Result<Report> {
    let private = a.epsilon.is_some() || a.rho.is_some();
    let plan = if private { Some(plan(request)?) } else { None };
    let report = Report {
        project: a.project.clone(),
        source: source.to_owned(),
        group_by: request.group_by.clone(),
        key_columns: request.group_by.clone(),
        measure: request.measure.clone(),
        keys: match &plan {
            Some(p) => keys_description(&request.keys, p),
            None => String::new(),
        },
        protection: String::new(),
        differentially_private: private,
        cells: match &request.keys {
            Keys::Public(k) => k.len(),
            Keys::Select => 0,
        },
        plan,
        small_cell: None,
        ledger_entry: None,
        remaining_epsilon: None,
        remaining_delta: None,
        output: None,
        output_sha256: None,
        dry_run: true,
    };
    write_report(a, &report)?;
    Ok(report)
}

/// A `--hierarchy COL=FILE:LEVEL` argument, its ARX-format hierarchy read.
fn parse_generalisation(arg: &str, delimiter: u8) -> Result<Generalisation> {
    let (column, rest) = spec::split_assignment(arg);
    let rest = rest.ok_or_else(|| anyhow!("--hierarchy expects COL=FILE:LEVEL, got {arg:?}"))?;
    let (file, level) = rest
        .rsplit_once(':')
        .and_then(|(f, l)| l.parse::<usize>().ok().map(|l| (f, l)))
        .ok_or_else(|| anyhow!("--hierarchy expects COL=FILE:LEVEL (LEVEL a number), got {arg:?}"))?;
    let hierarchy =
        Hierarchy::read_arx_csv(Path::new(file), delimiter).with_context(|| format!("reading hierarchy {file}"))?;
    Ok(Generalisation {
        column: column.to_string(),
        hierarchy,
        level,
    })
}

/// Reads the request's columns from the input file, and names the population they come from (its digest).
fn load(a: &StatsArgs, progress: bool) -> Result<(Table, Population)> {
    let Some(path) = &a.input else {
        bail!("give --input FILE or --table NAME");
    };
    let spinner = if progress {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_message("reading the table");
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner
    } else {
        indicatif::ProgressBar::hidden()
    };
    // Streamed: the file is not held twice in memory.
    let mut digest = Sha256::new();
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    std::io::copy(&mut file, &mut digest).with_context(|| format!("reading {}", path.display()))?;
    let population = Population {
        name: format!("file:{}", hex::encode(digest.finalize())),
        source: super::table_name(a)?,
    };
    let is_parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let table = if is_parquet {
        Table::read_parquet(path)
    } else {
        Table::read_csv(path, spec::parse_delimiter(&a.delimiter)?)
    }
    .with_context(|| format!("reading {}", path.display()))?;
    spinner.finish_and_clear();
    Ok((table, population))
}

/// How the table's keys were chosen, in words.
fn keys_description(keys: &Keys, plan: &Plan) -> String {
    match keys {
        Keys::Public(k) => format!("public: {} declared keys, every one released", k.len()),
        Keys::Select => {
            let t = plan.components.iter().find_map(|c| c.threshold).unwrap_or_default();
            format!("DP partition selection: a key is released only if its noisy count is at least {t}")
        }
    }
}
