//! `tokumei stats`: a statistical table over a CSV/Parquet file or a core-store table, either
//! differentially private (OpenDP noise, spent from a project's budget in the ledger) or protected
//! by the minimum-cell rule with complementary suppression (the national databases' rule; not DP).
//!
//! The command is a client of the policy service either way and holds a session only. Over the store it asks for
//! an order the core computes (`stats_store`). Over a researcher's own file, so that a refused request has no side
//! effect: check the request's shape → the service admits it and spends a DP table's loss (refusal stops here,
//! before the file is read) → read and group the file → draw the noise, or apply the small-cell rule at the
//! threshold the service admitted → the service audits and records the table → write the table and report
//! atomically.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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

use crate::output::{runtime, write_atomically};
use tokumei_client::policy::PolicyClient;
use tokumei_client::refused;

/// Arguments of `tokumei stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Input table: CSV, or Parquet if the name ends in .parquet.
    #[arg(long, conflicts_with = "table", required_unless_present = "table")]
    pub input: Option<PathBuf>,
    /// A table of the core store's research view (opted-out and erased patients excluded).
    #[arg(long)]
    pub table: Option<String>,
    /// Group-by columns, comma-separated.
    #[arg(long = "group-by", value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// count | sum:COL:LO:HI | mean:COL:LO:HI | hist:COL:LO:HI:BINS | quantile:COL:LO:HI:Q.
    #[arg(long, default_value = "count")]
    pub measure: String,
    /// Column identifying the patient: the unit of privacy (default for --table: linkage_key).
    #[arg(long)]
    pub subject: Option<String>,
    /// Rows kept per patient; enters the sensitivity.
    #[arg(long = "max-contrib", default_value_t = 1)]
    pub max_contrib: u32,
    /// Pure differential privacy with Laplace noise at this ε.
    #[arg(long, conflicts_with = "rho")]
    pub epsilon: Option<f64>,
    /// Zero-concentrated DP with Gaussian noise at this ρ (reported as (ε, δ)).
    #[arg(long)]
    pub rho: Option<f64>,
    /// δ for partition selection (keys not public) and for reporting ρ as (ε, δ).
    #[arg(long)]
    pub delta: Option<f64>,
    /// CSV whose header names the group-by columns, one public key per line. Over the store every key must
    /// be a value of the column's code list or code system in the platform catalogue.
    #[arg(long = "public-keys", conflicts_with = "hierarchy")]
    pub public_keys: Option<PathBuf>,
    /// Generalise a group-by column first. Over the store: COL=LEVEL of the platform's hierarchy
    /// (prefecture=region, municipality_code=prefecture, icd10=category|block|chapter, birth_date=month|year|5years,
    /// yj_code=class4, jlac10=analyte, sex=value, ...; docs/statistics.md). Over a file: COL=HIERARCHY.csv:LEVEL
    /// (ARX format). When every group-by column has one whose level has a fixed list, the list is the public keys.
    #[arg(long, value_name = "COL=FILE:LEVEL")]
    pub hierarchy: Vec<String>,
    /// Delimiter of hierarchy files.
    #[arg(long = "hierarchy-delimiter", default_value = ";")]
    pub hierarchy_delimiter: String,
    /// Minimum cell size. Without --epsilon/--rho: the small-cell rule with complementary
    /// suppression (default 10). With DP: released cells whose noisy count is below it are blanked.
    #[arg(long = "min-cell")]
    pub min_cell: Option<u64>,
    /// Small-cell rule: treat zero cells as small too.
    #[arg(long = "suppress-zeros")]
    pub suppress_zeros: bool,
    /// The approved application (statistics channel) the table is made under; its DP budget pays for
    /// it. The request is checked against the approval's conditions first (recipient, channel, tables
    /// and columns — for --input the table name is the file's stem —, expiry, revocation, bans).
    #[arg(long, visible_alias = "application")]
    pub project: String,
    /// Output CSV.
    #[arg(long)]
    pub output: PathBuf,
    /// JSON report (mechanism, noise scale, loss, remaining budget, expected error per cell).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Plan only: print the mechanism, loss and expected error; spend nothing, draw nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Delimiter of the CSV input.
    #[arg(long, default_value = ",")]
    pub delimiter: String,
    /// The policy service and the session: the command is its client and holds nothing else.
    #[command(flatten)]
    pub service: tokumei_client::policy::ServiceOptions,
    /// How long to wait for the core (--table).
    #[command(flatten)]
    pub wait: crate::commands::store::WaitOptions,
}

/// The JSON report of a release.
#[derive(Serialize)]
struct Report {
    project: String,
    source: String,
    group_by: Vec<String>,
    key_columns: Vec<String>,
    measure: Measure,
    keys: String,
    protection: String,
    differentially_private: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    small_cell: Option<tokumei_store::statistics::SmallCellSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger_entry: Option<LedgerEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_epsilon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_delta: Option<f64>,
    cells: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_sha256: Option<String>,
    dry_run: bool,
}

/// Runs `tokumei stats`: over the store as a client of the policy service, over a file in this process.
pub fn run(a: StatsArgs, json: bool) -> Result<()> {
    if let Some(table) = a.table.clone() {
        let declared = match &a.public_keys {
            Some(path) => Some(read_public_keys(path, &a.group_by)?),
            None => None,
        };
        let spec = super::stats_store::spec(&a, &table, declared);
        return runtime()?.block_on(super::stats_store::run(&a, spec, json));
    }
    run_file(a, json)
}

/// `tokumei stats --input FILE`: a table over the researcher's own file. The policy service admits it and spends a
/// DP table's loss before any noise is drawn here; the table made is recorded there (a small-cell table audited
/// against earlier ones first). This process holds the file and a session, nothing of the platform's.
fn run_file(a: StatsArgs, json: bool) -> Result<()> {
    let (request, spec) = file_request(&a)?;
    let source = format!("file:{}", spec.table);
    if a.dry_run {
        return dry_run_file(&a, &request, &source, json);
    }
    runtime()?.block_on(async {
        let service = PolicyClient::connect(&a.service).await?;
        let mut client = service.client.clone();
        // Refused (and audited by the service) before the file is read.
        let reply = client
            .admit_file_statistics(service.request(super::stats_store::to_proto(spec.clone()))?)
            .await
            .map_err(refused)?;
        let admission: FileAdmission =
            serde_json::from_str(&reply.into_inner().json).context("the policy service's admission")?;
        let (table, population) = load(&a)?;
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
            statistics: Some(super::stats_store::to_proto(spec)),
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
            tokumei_store::statistics::private_table_csv(&table, a.min_cell)?
        } else {
            let rule = SmallCellRule {
                threshold: admission.min_cell.unwrap_or(SMALL_CELL_FLOOR),
                suppress_zeros: a.suppress_zeros,
            };
            let (counts, dims) = tokumei_store::statistics::count_table(&grouped)?;
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
            report.small_cell = Some(tokumei_store::statistics::SmallCellSummary::of(rule, &protected, dims));
            report.cells = protected.refs().len();
            let linked = tokumei_store::statistics::linked_table(&grouped, &protected)?;
            record.linked_json = serde_json::to_string(&linked)?;
            record.population_json = serde_json::to_string(&population)?;
            let bytes = tokumei_store::statistics::small_cell_csv(&grouped, &protected, dims, &protection)?;
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
        finish(&a, report, json)
    })
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
        Some(path) => Some(read_public_keys(path, &a.group_by)?),
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
        table: table_name(a)?,
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
fn dry_run_file(a: &StatsArgs, request: &StatsRequest, source: &str, json: bool) -> Result<()> {
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
    finish(a, report, json)
}

/// The table a request reads, as approvals name it: the store table, or the input file's stem.
fn table_name(a: &StatsArgs) -> Result<String> {
    match (&a.table, &a.input) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(p)) => p
            .file_stem()
            .map(|s| s.to_string_lossy().split('.').next().unwrap_or_default().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("{}: cannot name the input table", p.display())),
        (None, None) => bail!("give --input FILE or --table NAME"),
    }
}

fn finish(a: &StatsArgs, report: Report, json: bool) -> Result<()> {
    if let Some(path) = &a.report {
        let text = serde_json::to_vec_pretty(&report)?;
        write_atomically(path, &text)?;
    }
    crate::output::emit(json, &report, |r| {
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

/// Reads a public-key CSV; its header must name exactly the group-by columns (in any order).
fn read_public_keys(path: &Path, group_by: &[String]) -> Result<Vec<Vec<String>>> {
    let mut reader = csv::ReaderBuilder::new()
        .from_path(path)
        .with_context(|| format!("reading public keys {}", path.display()))?;
    let header: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_string()).collect();
    let wanted: BTreeSet<&String> = group_by.iter().collect();
    let got: BTreeSet<&String> = header.iter().collect();
    if wanted != got || header.len() != group_by.len() {
        bail!(
            "the header of {} ({header:?}) must name the group-by columns {group_by:?}",
            path.display()
        );
    }
    let order: Vec<usize> = group_by
        .iter()
        .map(|g| header.iter().position(|h| h == g).unwrap_or_default())
        .collect();
    let mut keys = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{} line {}", path.display(), line + 2))?;
        keys.push(
            order
                .iter()
                .map(|&i| record.get(i).unwrap_or_default().to_string())
                .collect(),
        );
    }
    Ok(keys)
}

/// Reads the request's columns from the input file, and names the population they come from (its digest).
fn load(a: &StatsArgs) -> Result<(Table, Population)> {
    let Some(path) = &a.input else {
        bail!("give --input FILE or --table NAME");
    };
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("reading the table");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    // Streamed: the file is not held twice in memory.
    let mut digest = Sha256::new();
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    std::io::copy(&mut file, &mut digest).with_context(|| format!("reading {}", path.display()))?;
    let population = Population {
        name: format!("file:{}", hex::encode(digest.finalize())),
        source: table_name(a)?,
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

fn keys_description(keys: &Keys, plan: &Plan) -> String {
    match keys {
        Keys::Public(k) => format!("public: {} declared keys, every one released", k.len()),
        Keys::Select => {
            let t = plan.components.iter().find_map(|c| c.threshold).unwrap_or_default();
            format!("DP partition selection: a key is released only if its noisy count is at least {t}")
        }
    }
}
