//! `tokumei stats`: a statistical table over a CSV/Parquet file or a core-store table, either
//! differentially private (OpenDP noise, spent from a project's budget in the ledger) or protected
//! by the minimum-cell rule with complementary suppression (the national databases' rule; not DP).
//!
//! Order of work, so that a refused request has no side effect: read and group the data (bad
//! columns or values fail here) → calibrate the plan (no data, no noise) → admit and record the
//! loss in the ledger (refusal stops here, before any noise) → draw the noise → write the table
//! and report atomically.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokumei_catalogue::statistics::{Population, SMALL_CELL_FLOOR, StatsRefusal, StatsRules, check};
use tokumei_deid::dp::grouping::{Grouped, group};
use tokumei_deid::dp::plan::{Plan, plan};
use tokumei_deid::dp::release::{PrivateTable, release};
use tokumei_deid::dp::request::{Generalisation, Keys, Measure, Privacy, StatsRequest};
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::small_cell::{SmallCellRule, protect};
use tokumei_deid::spec;
use tokumei_deid::table::Table;
use tokumei_policy::budget_ledger::{BudgetLedger, LedgerEntry, SpendRequest};

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::output::runtime;
use tokumei_policy::committee::{TableRequest, UseKind};

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
    /// The policy service and the session (for --table: the command is its client and holds nothing else).
    #[command(flatten)]
    pub service: crate::commands::policy_client::ServiceOptions,
    /// How long to wait for the core (--table).
    #[command(flatten)]
    pub wait: crate::commands::store::WaitOptions,
    /// Policy database, for --input only (default $TOKUMEI_HOME/policy/policy.db; or postgres://...).
    #[arg(long, env = "TOKUMEI_POLICY_DB")]
    pub database: Option<String>,
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

/// `tokumei stats --input FILE`: a table over the researcher's own file, its loss spent in the policy database.
fn run_file(a: StatsArgs, json: bool) -> Result<()> {
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
    let subject = a.subject.clone();
    let request = StatsRequest {
        group_by: a.group_by.clone(),
        generalise,
        measure,
        subject,
        max_contrib: a.max_contrib,
        // Not a DP release when absent; the value is then never used (only `validate_shape` runs).
        privacy: privacy.unwrap_or(Privacy::Epsilon(f64::INFINITY)),
        delta: a.delta,
        keys,
    };
    if privacy.is_some() {
        request.validate()?;
    } else {
        request.validate_shape()?;
        if !matches!(request.measure, Measure::Count | Measure::Histogram { .. }) {
            bail!("without --epsilon or --rho only counts (count, hist) can be published, under the small-cell rule");
        }
        if a.delta.is_some() {
            bail!("--delta only applies to differentially private tables (--epsilon or --rho)");
        }
    }
    let source = match &a.input {
        Some(p) => p.display().to_string(),
        None => bail!("give --input FILE or --table NAME"),
    };
    let query = describe(&a, &request, &source);

    let rt = runtime()?;
    rt.block_on(async {
        let options = PolicyOptions {
            database: a.database.clone(),
            session: a.service.session.clone(),
        };
        let policy = open_policy(&options).await?;
        let who = actor(&policy, &options).await?;
        // What the platform never allows, whatever the approval says: refused and audited before any data.
        let rules = StatsRules {
            table: tokumei_store::Table::from_name(&table_name(&a)?),
            from_store: false,
            subject_given: a.subject.as_deref(),
            request: &request,
            small_cell_threshold: privacy.is_none().then(|| a.min_cell.unwrap_or(SMALL_CELL_FLOOR)),
        };
        if let Err(refusal) = check(&rules) {
            refuse(&policy, &who, &a.project, refusal).await?;
        }
        // Outside the approval (or no approval at all): refused, and audited, before reading any data.
        let used = [TableRequest {
            table: table_name(&a)?,
            columns: tokumei_catalogue::statistics::columns_used(&request),
        }];
        let approved = policy
            .admit_use(&who, &a.project, UseKind::Statistics, &used, CLI)
            .await
            .map_err(reason)?;
        // The committee's rules for this approval: which mechanism, which groupings.
        let committee_rules = approved.conditions.map(|c| c.statistics).unwrap_or_default();
        // Without --min-cell a small-cell table uses the approval's minimum (never below the floor).
        let small_cell_threshold = privacy.is_none().then(|| {
            a.min_cell.unwrap_or_else(|| {
                committee_rules
                    .small_cell_min
                    .unwrap_or(SMALL_CELL_FLOOR)
                    .max(SMALL_CELL_FLOOR)
            })
        });
        // A histogram's bins group by its column as surely as --group-by does.
        let mut groupings = request.group_by.clone();
        if let Measure::Histogram { column, .. } = &request.measure {
            groupings.push(column.clone());
        }
        let this_use = tokumei_policy::committee::StatisticsUse {
            table: &used[0].table,
            group_by: &groupings,
            small_cell: small_cell_threshold,
        };
        if let Err(e) = committee_rules.check(&a.project, &this_use) {
            let refusal = StatsRefusal {
                code: e.reason(),
                message: e.to_string(),
            };
            refuse(&policy, &who, &a.project, refusal).await?;
        }
        let ledger = policy.budget().clone();
        let status = ledger.status(&a.project).await.map_err(reason)?;

        let (table, population) = load(&a)?;
        let grouped = group(&table, &request)?;
        drop(table);

        match privacy {
            Some(_) => {
                let plan = plan(&request)?;
                let mut report = Report {
                    project: a.project.clone(),
                    source: source.clone(),
                    group_by: request.group_by.clone(),
                    key_columns: grouped.key_columns.clone(),
                    measure: request.measure.clone(),
                    keys: keys_description(&request.keys, &plan),
                    protection: String::new(),
                    differentially_private: true,
                    plan: Some(plan.clone()),
                    small_cell: None,
                    ledger_entry: None,
                    remaining_epsilon: Some(status.spent.remaining_epsilon(&status.project.budget)),
                    remaining_delta: Some(status.spent.remaining_delta(&status.project.budget)),
                    cells: 0,
                    output: None,
                    output_sha256: None,
                    dry_run: a.dry_run,
                };
                if a.dry_run {
                    report.cells = if grouped.public { grouped.keys.len() } else { 0 };
                    return finish(&a, report, json);
                }
                let entry = record_dp_release(&ledger, &a.project, &who.username, &query, &plan).await?;
                let table = release(&plan, &request, &grouped)?;
                let digest = write_private_table(&a.output, &table, a.min_cell)?;
                let cells = i64::try_from(table.cells.len()).unwrap_or(i64::MAX);
                policy
                    .record_provision(&who, &a.project, &query, cells, CLI)
                    .await
                    .map_err(reason)?;
                let after = ledger.status(&a.project).await?;
                report.protection = table.protection.clone();
                report.cells = table.cells.len();
                report.ledger_entry = Some(entry);
                report.remaining_epsilon = Some(after.spent.remaining_epsilon(&after.project.budget));
                report.remaining_delta = Some(after.spent.remaining_delta(&after.project.budget));
                report.output = Some(a.output.display().to_string());
                report.output_sha256 = Some(digest);
                finish(&a, report, json)
            }
            None => {
                let rule = SmallCellRule {
                    threshold: small_cell_threshold.unwrap_or(SMALL_CELL_FLOOR),
                    suppress_zeros: a.suppress_zeros,
                };
                let (counts, dims) = tokumei_store::statistics::count_table(&grouped)?;
                let protected = protect(&counts, &rule)?;
                let summary = tokumei_store::statistics::SmallCellSummary::of(rule, &protected, dims);
                let protection = format!(
                    "small-cell: counts below {} suppressed, plus complementary suppression",
                    rule.threshold
                );
                let mut report = Report {
                    project: a.project.clone(),
                    source: source.clone(),
                    group_by: request.group_by.clone(),
                    key_columns: grouped.key_columns.clone(),
                    measure: request.measure.clone(),
                    keys: if grouped.public {
                        "public (declared)".into()
                    } else {
                        "as present in the data".into()
                    },
                    protection: protection.clone(),
                    differentially_private: false,
                    plan: None,
                    small_cell: Some(summary),
                    ledger_entry: None,
                    remaining_epsilon: None,
                    remaining_delta: None,
                    cells: protected.refs().len(),
                    output: None,
                    output_sha256: None,
                    dry_run: a.dry_run,
                };
                if a.dry_run {
                    return finish(&a, report, json);
                }
                // Audited against every earlier small-cell table of the population, then recorded (as not
                // differentially private) with its definition, in one transaction.
                let linked = tokumei_store::statistics::linked_table(&grouped, &protected)?;
                let published = tokumei_policy::statistics::publish_small_cell(
                    &ledger,
                    &a.project,
                    &who.username,
                    &query,
                    &rule,
                    &linked,
                    &population,
                )
                .await
                .map_err(reason)?;
                let entry = match published {
                    Ok(entry) => entry,
                    Err(refusal) => return refuse(&policy, &who, &a.project, refusal).await,
                };
                let digest = write_small_cell_table(&a.output, &grouped, &protected, dims, &protection)?;
                let cells = i64::try_from(protected.refs().len()).unwrap_or(i64::MAX);
                policy
                    .record_provision(&who, &a.project, &query, cells, CLI)
                    .await
                    .map_err(reason)?;
                report.ledger_entry = Some(entry);
                report.output = Some(a.output.display().to_string());
                report.output_sha256 = Some(digest);
                finish(&a, report, json)
            }
        }
    })
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

/// Admits and records a DP plan's loss (refused with the remaining budget when it does not fit).
/// Call before drawing any noise.
pub(crate) async fn record_dp_release(
    ledger: &BudgetLedger,
    project: &str,
    actor: &str,
    query: &str,
    plan: &Plan,
) -> Result<LedgerEntry> {
    let request = SpendRequest {
        actor: actor.to_string(),
        query: query.to_string(),
        mechanism: format!("{:?}", plan.mechanism).to_lowercase(),
        loss: plan.loss,
        reported_epsilon: plan.reported_epsilon,
        reported_delta: plan.reported_delta,
        differentially_private: true,
    };
    ledger.spend(project, request).await.map_err(reason)
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

fn describe(a: &StatsArgs, r: &StatsRequest, source: &str) -> String {
    let mut q = format!(
        "stats source={source} group_by={} measure={}",
        r.group_by.join(","),
        a.measure
    );
    if let Some(s) = &r.subject {
        q.push_str(&format!(" subject={s} max_contrib={}", r.max_contrib));
    }
    for h in &a.hierarchy {
        q.push_str(&format!(" hierarchy={h}"));
    }
    match (&a.public_keys, &r.keys) {
        (Some(p), _) => q.push_str(&format!(" public_keys={}", p.display())),
        (None, Keys::Public(k)) => q.push_str(&format!(" public_keys=hierarchy({})", k.len())),
        (None, Keys::Select) => q.push_str(" keys=selected"),
    }
    if let Some(e) = a.epsilon {
        q.push_str(&format!(" epsilon={e}"));
    }
    if let Some(r) = a.rho {
        q.push_str(&format!(" rho={r}"));
    }
    if let Some(d) = a.delta {
        q.push_str(&format!(" delta={d}"));
    }
    if let Some(m) = a.min_cell {
        q.push_str(&format!(" min_cell={m}"));
    }
    q
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

/// Writes the DP table; returns the SHA-256 of the file.
pub(crate) fn write_private_table(path: &Path, table: &PrivateTable, min_cell: Option<u64>) -> Result<String> {
    let bytes = tokumei_store::statistics::private_table_csv(table, min_cell)?;
    write_atomically(path, &bytes)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Writes a small-cell table; returns the SHA-256 of the file.
pub(crate) fn write_small_cell_table(
    path: &Path,
    grouped: &Grouped,
    protected: &tokumei_deid::small_cell::ProtectedTable,
    dims: usize,
    protection: &str,
) -> Result<String> {
    let bytes = tokumei_store::statistics::small_cell_csv(grouped, protected, dims, protection)?;
    write_atomically(path, &bytes)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Writes to a temporary file beside `path`, fsyncs and renames: a reader never sees half a table.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Audits a refusal of a statistics request and returns it as the command's error.
async fn refuse<T>(
    policy: &tokumei_policy::Policy,
    who: &tokumei_policy::Actor,
    project: &str,
    r: StatsRefusal,
) -> Result<T> {
    let e = policy.refuse_statistics(&who.username, project, r, CLI).await;
    Err(anyhow!("[{}] {e}", e.reason()))
}
