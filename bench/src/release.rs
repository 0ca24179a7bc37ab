//! `tokumei bench release`: the release zone's figures (issue 7).
//!
//! Five parts, each skippable (`--parts`):
//! - `embed`: fingerprint embedding rate on a synthetic laboratory sheet with each test at its own precision
//!   (target ≥ 1 million rows/s);
//! - `trace`: a recipient's copy leaks as a random, shuffled 100,000-row subset without the pseudonym column,
//!   written as CSV and Parquet; reading the file, reading its marks and scoring 10 candidates is timed
//!   (target ≤ 1 s);
//! - `experiments`: the fingerprint experiments at full size (single leaker, innocents, colluders);
//! - `attacks`: the fingerprint attack suite (what leakers do to copies; every carrier; innocents);
//! - `build`: a release built from the core store under `--home` (anonymisation, verification, one
//!   fingerprinted copy, signed manifest, sealed at rest) for an approval filed and decided in a throw-away
//!   policy database;
//! - `download`: a large sealed file downloaded over TLS on loopback through the delivery servers
//!   (gRPC `RequestDownload`, then HTTPS), all in this process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokumei_policy::committee::{ApprovalConditions, Channel, PrivacyModel, TableRequest, japan_date};
use tokumei_policy::{Actor, Origin, Policy, Role, ServiceKey};
use tokumei_release::fingerprint::attacks;
use tokumei_release::fingerprint::experiments::{self, Experiment, Outcome};
use tokumei_release::fingerprint::{self, Cells, FingerprintKey, FingerprintPlan, Sheet};
use tokumei_release::zone::{CopyFile, PseudonymScope, ReleaseRecord, ReleaseZone};

use tokumei_client::output::{emit, runtime};
use tokumei_client::reason;
use tokumei_client::release_reason;

const BENCH: Origin<'static> = Origin("bench");
const PASSWORD: &str = "bench password, not for production";

/// Arguments of `tokumei bench release`.
#[derive(Args, Debug)]
pub struct ReleaseBench {
    /// Parts to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "embed,trace,experiments,build,download"
    )]
    pub parts: Vec<String>,
    /// Rows of the synthetic laboratory sheet (embedding, trace and experiments).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Seed of the synthetic sheets and experiments.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Timed embeddings (each on a fresh copy of the sheet).
    #[arg(long, default_value_t = 3)]
    pub embed_runs: usize,
    /// Rows of the leaked file traced.
    #[arg(long, default_value_t = 100_000)]
    pub leak_rows: usize,
    /// Candidate recipients of the traced release.
    #[arg(long, default_value_t = 10)]
    pub candidates: usize,
    /// Trials of the single-leaker experiment (10 % subset, 20 recipients).
    #[arg(long, default_value_t = 1000)]
    pub single_trials: usize,
    /// Trials of the innocents experiment.
    #[arg(long, default_value_t = 10_000)]
    pub innocent_trials: usize,
    /// Trials of the collusion experiment.
    #[arg(long, default_value_t = 200)]
    pub collusion_trials: usize,
    /// Colluders mixing their copies.
    #[arg(long, default_value_t = 3)]
    pub colluders: usize,
    /// Share of the rows a leaker keeps in the experiments.
    #[arg(long, default_value_t = 0.1)]
    pub subset_fraction: f64,
    /// Run the single-leaker and innocents experiments on this released table (CSV or Parquet, e.g. a
    /// recipient's `observations.csv`), re-marked under each experiment's key, instead of the synthetic
    /// sheet; its marked columns are the catalogue's for the table named by the file stem.
    #[arg(long)]
    pub sheet: Option<PathBuf>,
    /// Rows of the attack suite's synthetic table (about 8 per patient).
    #[arg(long, default_value_t = 20_000)]
    pub attack_rows: usize,
    /// Trials per attack case with guilty leakers.
    #[arg(long, default_value_t = 1000)]
    pub attack_trials: usize,
    /// Innocent trials per attack (outsiders' copies and the unmarked table).
    #[arg(long, default_value_t = 10_000)]
    pub attack_innocent_trials: usize,
    /// Attack cases: `all`, or `headline` (one leaker and three mixing, a tenth, ±1 unit and rounded).
    #[arg(long, default_value = "all")]
    pub attack_cases: String,
    /// The table the attack suite marks and leaks: `synthetic` (`--attack-rows` rows of the mixed-precision
    /// laboratory table), `build` (the observations the `build` part just released from the core store, read
    /// back through the zone in this process, never written out in clear), or `sheet` (the `--sheet` file).
    #[arg(long, default_value = "synthetic")]
    pub attack_source: String,
    /// Home of the core store the release is built from (default: $TOKUMEI_HOME).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Configuration file of that home (store and key service).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Event tables the `build` part's approval asks for beside `patients` (observations, conditions,
    /// encounters), with the columns the demo's file approval asks for; utility is reported per table.
    #[arg(long, value_delimiter = ',', default_value = "observations")]
    pub event_tables: Vec<String>,
    /// Keep the release built by the `build` part in the zone (default: removed after timing).
    #[arg(long)]
    pub keep_release: bool,
    /// Size of the file downloaded, MiB.
    #[arg(long, default_value_t = 512)]
    pub download_mib: usize,
    /// Downloads of that file (each with its own token).
    #[arg(long, default_value_t = 3)]
    pub download_runs: usize,
}

#[derive(Serialize)]
struct EmbedPart {
    rows: usize,
    total_cells: usize,
    seconds_generate: f64,
    seconds_plan: f64,
    seconds_fit_plan: f64,
    rate: f64,
    markable_cells: usize,
    marked_cells: usize,
    changed_cells: usize,
    marked_fraction: f64,
    seconds_embed: Vec<f64>,
    best_rows_per_second: f64,
    median_rows_per_second: f64,
}

#[derive(Serialize)]
struct TraceFile {
    format: String,
    path: String,
    bytes: u64,
    rows: usize,
    seconds_read: f64,
    seconds_read_marks: f64,
    seconds_accuse: f64,
    /// The pseudonym carrier: every distinct pseudonym decrypted under every candidate's key.
    seconds_pseudonyms: f64,
    pseudonyms_distinct: usize,
    pseudonyms_accused: Vec<String>,
    seconds_total: f64,
    positions: usize,
    erased_positions: usize,
    accused: Vec<String>,
    correct: bool,
    top_score: f64,
    top_log10_p_innocent: f64,
    second_score: f64,
}

#[derive(Serialize)]
struct TracePart {
    sheet_rows: usize,
    leak_rows: usize,
    candidates: usize,
    leaker: String,
    marked_cells: usize,
    files: Vec<TraceFile>,
}

#[derive(Serialize)]
struct ExperimentRun {
    name: String,
    rows: usize,
    recipients: usize,
    subset_fraction: f64,
    bound: f64,
    seconds: f64,
    outcome: Outcome,
}

#[derive(Serialize)]
struct BuildTable {
    table: String,
    rows: u64,
    classes: u64,
    min_class_size: u64,
    suppressed_patients: u64,
    marked_columns: Vec<String>,
    marked_cell_fraction: f64,
}

#[derive(Serialize)]
struct BuildPart {
    home: String,
    research_view_patients: usize,
    /// Rows of each event table the approval asks for, in the research view.
    research_view_events: BTreeMap<String, usize>,
    seconds_count: f64,
    seconds_policy_setup: f64,
    release: String,
    recipients: usize,
    patients: u64,
    suppressed_patients: u64,
    tables: Vec<BuildTable>,
    rows_total: u64,
    seconds_build: f64,
    rows_per_second: f64,
    /// Peak RSS of this process during the build (VmHWM, reset just before it where the kernel allows).
    peak_rss_mib: f64,
    peak_rss_reset: bool,
    /// Progress messages with their time since the start of the build.
    stages: Vec<(f64, String)>,
    release_kept: bool,
    /// The whole-record protection as verified on the copy: item levels, rare rows suppressed, extremes, the
    /// attack — the utility of the release on this cohort.
    record: Option<tokumei_release::manifest::RecordProtection>,
}

#[derive(Serialize)]
struct DownloadRun {
    seconds_request: f64,
    seconds_transfer: f64,
    mb_per_second: f64,
    mib_per_second: f64,
    http_version: String,
    sha256_ok: bool,
}

#[derive(Serialize)]
struct DownloadPart {
    bytes: u64,
    seconds_seal: f64,
    runs: Vec<DownloadRun>,
    best_mb_per_second: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    profile: &'static str,
    embed: Option<EmbedPart>,
    trace: Option<TracePart>,
    experiments: Vec<ExperimentRun>,
    attacks: Option<AttacksPart>,
    build: Option<BuildPart>,
    download: Option<DownloadPart>,
}

/// A spinner on stderr (hidden with `--json`).
fn spinner(json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn random_key() -> FingerprintKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    FingerprintKey::from_bytes(bytes)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Resets VmHWM to the current RSS (Linux: `5` in /proc/self/clear_refs).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A fresh scratch directory under the system's temporary directory.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tokumei-bench-release-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs the benchmark.
pub fn run(a: ReleaseBench, json: bool) -> Result<()> {
    let want = |p: &str| a.parts.iter().any(|x| x.trim() == p);
    for p in &a.parts {
        anyhow::ensure!(
            ["embed", "trace", "experiments", "attacks", "build", "download"].contains(&p.trim()),
            "unknown part {p:?} (embed, trace, experiments, attacks, build, download)"
        );
    }
    let bar = spinner(json);
    let mut report = Report {
        machine: crate::host::machine(),
        profile: if cfg!(debug_assertions) { "dev" } else { "release" },
        embed: None,
        trace: None,
        experiments: Vec::new(),
        attacks: None,
        build: None,
        download: None,
    };
    if want("embed") {
        report.embed = Some(embed_part(&a, &bar)?);
    }
    if want("trace") {
        report.trace = Some(trace_part(&a, &bar)?);
    }
    if want("experiments") {
        report.experiments = experiments_part(&a, &bar)?;
    }
    let rt = runtime()?;
    let mut built = None;
    if want("build") {
        let (part, observations) = rt.block_on(build_part(&a, &bar))?;
        report.build = Some(part);
        built = observations;
    }
    if want("attacks") {
        report.attacks = Some(attacks_part(&a, &bar, built)?);
    }
    if want("download") {
        report.download = Some(rt.block_on(download_part(&a, &bar))?);
    }
    bar.finish_and_clear();
    emit(json, &report, human)
}

fn human(r: &Report) {
    println!("release benchmark — {} ({} build)", r.machine, r.profile);
    if let Some(e) = &r.embed {
        println!(
            "embed     {} rows ({} cells): plan {:.3}s, fit_plan {:.3}s; {} cells marked ({:.3} %), {} changed",
            e.rows,
            e.total_cells,
            e.seconds_plan,
            e.seconds_fit_plan,
            e.marked_cells,
            e.marked_fraction * 100.0,
            e.changed_cells
        );
        println!(
            "          embed {} → best {:.0} rows/s, median {:.0} rows/s (target ≥ 1,000,000)",
            e.seconds_embed
                .iter()
                .map(|s| format!("{s:.3}s"))
                .collect::<Vec<_>>()
                .join(" "),
            e.best_rows_per_second,
            e.median_rows_per_second
        );
    }
    if let Some(t) = &r.trace {
        println!(
            "trace     {} of {} rows leaked by {} ({} candidates):",
            t.leak_rows, t.sheet_rows, t.leaker, t.candidates
        );
        for f in &t.files {
            println!(
                "          {:<8} {:>10} bytes  read {:.3}s  marks {:.3}s  accuse {:.3}s  pseudonyms {:.3}s  total {:.3}s (target ≤ 1 s); {} positions, accused {:?}; {} pseudonyms, accused {:?}{}",
                f.format,
                f.bytes,
                f.seconds_read,
                f.seconds_read_marks,
                f.seconds_accuse,
                f.seconds_pseudonyms,
                f.seconds_total,
                f.positions,
                f.accused,
                f.pseudonyms_distinct,
                f.pseudonyms_accused,
                if f.correct && f.pseudonyms_accused == [t.leaker.clone()] {
                    ""
                } else {
                    "  ← WRONG"
                }
            );
        }
    }
    if let Some(x) = &r.attacks {
        println!(
            "attacks   {}: {} rows, {} patients, {} recipients, {} trials per case, {} innocent trials per attack ({:.0}s)",
            x.source, x.rows, x.patients, x.suite.recipients, x.suite.trials, x.suite.innocent_trials, x.seconds
        );
        let schemes: Vec<String> = x.outcome.schemes.iter().map(|(c, s)| format!("{c}: {s:?}")).collect();
        println!(
            "          fitted plan: {} positions ({})",
            x.outcome.positions,
            schemes.join(", ")
        );
        print!("{}", x.markdown);
    }
    for e in &r.experiments {
        println!(
            "{:<22} {} rows, {} recipients: identified {}/{}, innocents accused {}, undecidable {}, positions min {} mean {:.0}; {:.1}s",
            e.name,
            e.rows,
            e.recipients,
            e.outcome.identified,
            e.outcome.trials,
            e.outcome.innocent_accused,
            e.outcome.undecidable,
            e.outcome.min_positions,
            e.outcome.mean_positions,
            e.seconds
        );
    }
    if let Some(b) = &r.build {
        println!(
            "build     {} from {} ({} patients, events {:?} in the research view): {} rows in {:.1}s = {:.0} rows/s, peak RSS {:.0} MiB",
            b.release,
            b.home,
            b.research_view_patients,
            b.research_view_events,
            b.rows_total,
            b.seconds_build,
            b.rows_per_second,
            b.peak_rss_mib
        );
        for t in &b.tables {
            println!(
                "          {:<12} {:>9} rows  classes {:>6}  min class {:>4}  suppressed {:>5}  marked {:.3} %",
                t.table,
                t.rows,
                t.classes,
                t.min_class_size,
                t.suppressed_patients,
                t.marked_cell_fraction * 100.0
            );
        }
    }
    if let Some(d) = &r.download {
        println!(
            "download  {} bytes over TLS on loopback: {} → best {:.0} MB/s",
            d.bytes,
            d.runs
                .iter()
                .map(|r| format!(
                    "{:.2}s {:.0} MB/s ({})",
                    r.seconds_transfer, r.mb_per_second, r.http_version
                ))
                .collect::<Vec<_>>()
                .join(", "),
            d.best_mb_per_second
        );
    }
}

/// A keyed plan for `sheet` (as the builder makes them): the key-less rate, then fitted to the key.
fn keyed_plan(
    key: &FingerprintKey,
    columns: Vec<fingerprint::MarkedColumn>,
    sheet: &Sheet,
) -> Result<(FingerprintPlan, f64, f64)> {
    let t = Instant::now();
    let plan = fingerprint::plan(columns, sheet, fingerprint::DEFAULT_MAX_CELL_FRACTION);
    let seconds_plan = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let plan = fingerprint::fit_plan(key, &plan, sheet, fingerprint::DEFAULT_MAX_CELL_FRACTION)?;
    Ok((plan, seconds_plan, t.elapsed().as_secs_f64()))
}

fn embed_part(a: &ReleaseBench, bar: &ProgressBar) -> Result<EmbedPart> {
    bar.set_message(format!("embed: generating {} rows", a.rows));
    let t = Instant::now();
    let (sheet, columns) = experiments::mixed_precision_lab_sheet(a.rows, a.seed);
    let seconds_generate = t.elapsed().as_secs_f64();
    let key = random_key();
    bar.set_message("embed: planning");
    let (plan, seconds_plan, seconds_fit_plan) = keyed_plan(&key, columns, &sheet)?;
    let mut seconds_embed = Vec::new();
    let mut last = None;
    for i in 0..a.embed_runs.max(1) {
        bar.set_message(format!("embed: run {}/{}", i + 1, a.embed_runs.max(1)));
        let mut copy = sheet.clone();
        let t = Instant::now();
        let r = fingerprint::embed(
            &key,
            &format!("recipient-{i:03}"),
            &plan,
            &mut copy,
            fingerprint::DEFAULT_MAX_CELL_FRACTION,
        )?;
        seconds_embed.push(t.elapsed().as_secs_f64());
        last = Some(r);
        drop(copy);
    }
    let r = last.context("no embedding ran")?;
    let rates: Vec<f64> = seconds_embed.iter().map(|s| a.rows as f64 / s).collect();
    Ok(EmbedPart {
        rows: a.rows,
        total_cells: r.total_cells,
        seconds_generate,
        seconds_plan,
        seconds_fit_plan,
        rate: plan.rate,
        markable_cells: r.markable,
        marked_cells: r.marked,
        changed_cells: r.changed,
        marked_fraction: r.marked as f64 / r.total_cells.max(1) as f64,
        best_rows_per_second: rates.iter().cloned().fold(0.0, f64::max),
        median_rows_per_second: median(&rates),
        seconds_embed,
    })
}

fn trace_part(a: &ReleaseBench, bar: &ProgressBar) -> Result<TracePart> {
    bar.set_message(format!("trace: generating and marking {} rows", a.rows));
    let (sheet, columns) = experiments::mixed_precision_lab_sheet(a.rows, a.seed ^ 0x7472);
    let key = random_key();
    let (plan, _, _) = keyed_plan(&key, columns, &sheet)?;
    let candidates: Vec<String> = (0..a.candidates.max(1)).map(|i| format!("recipient-{i:03}")).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed ^ 0x6c65616b);
    let leaker = candidates[(rng.next_u64() % candidates.len() as u64) as usize].clone();
    let mut copy = sheet;
    let embedded = fingerprint::embed(&key, &leaker, &plan, &mut copy, fingerprint::DEFAULT_MAX_CELL_FRACTION)?;
    let keep = a.leak_rows.min(copy.rows());
    let mut rows = rand::seq::index::sample(&mut rng, copy.rows(), keep).into_vec();
    rows.shuffle(&mut rng);
    let mut leaked = copy.subset(&rows);
    drop(copy);
    // The leak keeps its pseudonyms, in a release's form (32 hex) and the leaker's own, as a copy has them.
    if let Some(c) = leaked.index_of("pseudonym") {
        leaked.header[c] = fingerprint::PSEUDONYM_COLUMN.into();
        for cell in &mut leaked.columns[c] {
            *cell = cell.repeat(2);
        }
        fingerprint::RecipientPseudonyms::new(&key, &leaker).rewrite(&mut leaked.columns[c])?;
    }
    leaked.shuffle_columns(&mut rng);
    let dir = scratch("trace")?;
    let csv = dir.join("found-online.csv");
    std::fs::write(
        &csv,
        tokumei_release::builder::files::leaked_file_bytes(tokumei_store::Table::Observations, &leaked, false)
            .map_err(release_reason)?,
    )?;
    let mut paths = vec![("csv", csv)];
    match tokumei_release::builder::files::leaked_file_bytes(tokumei_store::Table::Observations, &leaked, true) {
        Ok(bytes) => {
            let p = dir.join("found-online.parquet");
            std::fs::write(&p, bytes)?;
            paths.push(("parquet", p));
        }
        Err(e) => tracing::warn!("no Parquet leak: {e}"),
    }
    drop(leaked);
    let mut files = Vec::new();
    for (format, path) in paths {
        bar.set_message(format!("trace: {format}"));
        let t0 = Instant::now();
        let table = tokumei_release::trace::read_leaked(&path).map_err(release_reason)?;
        let t1 = Instant::now();
        let marks = fingerprint::read_marks(&key, &plan, &table);
        let t2 = Instant::now();
        let verdict = fingerprint::accuse(
            &key,
            &marks,
            &candidates,
            tokumei_release::trace::DEFAULT_FALSE_ACCUSATION_BOUND,
        );
        let t3 = Instant::now();
        let pseudonyms = fingerprint::trace_pseudonyms(
            &key,
            &table,
            &candidates,
            tokumei_release::trace::DEFAULT_FALSE_ACCUSATION_BOUND,
        );
        let t4 = Instant::now();
        files.push(TraceFile {
            format: format.into(),
            bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            path: path.display().to_string(),
            rows: Cells::rows(&table),
            seconds_read: (t1 - t0).as_secs_f64(),
            seconds_read_marks: (t2 - t1).as_secs_f64(),
            seconds_accuse: (t3 - t2).as_secs_f64(),
            seconds_pseudonyms: (t4 - t3).as_secs_f64(),
            pseudonyms_distinct: pseudonyms.well_formed,
            pseudonyms_accused: pseudonyms.accused,
            seconds_total: (t4 - t0).as_secs_f64(),
            positions: verdict.positions,
            erased_positions: verdict.erased_positions,
            correct: verdict.accused == [leaker.clone()],
            top_score: verdict.candidates.first().map_or(0.0, |c| c.score),
            top_log10_p_innocent: verdict.candidates.first().map_or(0.0, |c| c.log10_p_innocent),
            second_score: verdict.candidates.get(1).map_or(0.0, |c| c.score),
            accused: verdict.accused,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(TracePart {
        sheet_rows: a.rows,
        leak_rows: keep,
        candidates: candidates.len(),
        leaker,
        marked_cells: embedded.marked,
        files,
    })
}

#[derive(Serialize)]
struct AttacksPart {
    /// What the suite ran on.
    source: String,
    /// Rows and distinct patients of that table.
    rows: usize,
    patients: usize,
    suite: attacks::Suite,
    seconds: f64,
    #[serde(flatten)]
    outcome: attacks::SuiteOutcome,
    markdown: String,
}

fn attacks_part(a: &ReleaseBench, bar: &ProgressBar, built: Option<experiments::Source>) -> Result<AttacksPart> {
    let suite = attacks::Suite::new(a.attack_rows, a.attack_trials, a.attack_innocent_trials, a.seed);
    let cases = match a.attack_cases.as_str() {
        "all" => attacks::cases(),
        "headline" => attacks::headline_cases(),
        other => anyhow::bail!("unknown --attack-cases {other:?} (all, headline)"),
    };
    let (name, source) = match (a.attack_source.as_str(), built) {
        ("synthetic", _) => ("synthetic mixed-precision laboratory table".to_owned(), None),
        ("build", Some(built)) => ("observations released by the build part".to_owned(), Some(built)),
        ("build", None) => anyhow::bail!("--attack-source build needs the build part (--parts build,attacks)"),
        ("sheet", _) => {
            let path = a.sheet.as_deref().context("--attack-source sheet needs --sheet FILE")?;
            (
                format!("released table {}", path.display()),
                Some(released_sheet(path)?),
            )
        }
        (other, _) => anyhow::bail!("unknown --attack-source {other:?} (synthetic, build, sheet)"),
    };
    let (rows, patients) = source
        .as_ref()
        .map_or((a.attack_rows, a.attack_rows / 8), |(sheet, _)| {
            let distinct: BTreeSet<&str> = sheet
                .column(tokumei_release::catalogue::PSEUDONYM)
                .map(|c| c.iter().map(String::as_str).collect())
                .unwrap_or_default();
            (sheet.rows(), distinct.len())
        });
    let progress = |m: &str| bar.set_message(format!("attacks: {m}"));
    let t = Instant::now();
    let outcome = match source {
        Some(source) => attacks::run_on(&suite, source, &cases, &progress)?,
        None => attacks::run(&suite, &cases, &progress)?,
    };
    Ok(AttacksPart {
        source: name,
        rows,
        patients,
        suite,
        seconds: t.elapsed().as_secs_f64(),
        markdown: attacks::markdown(&outcome.cases, &outcome.innocents),
        outcome,
    })
}

fn experiments_part(a: &ReleaseBench, bar: &ProgressBar) -> Result<Vec<ExperimentRun>> {
    let source = a.sheet.as_deref().map(released_sheet).transpose()?;
    let rows = source.as_ref().map_or(a.rows, |(s, _)| s.rows());
    let mut out = Vec::new();
    let mut one = |name: &str,
                   trials: usize,
                   f: &dyn Fn(&Experiment) -> Result<Outcome, fingerprint::FingerprintError>|
     -> Result<()> {
        if trials == 0 {
            return Ok(());
        }
        bar.set_message(format!("experiments: {name}, {trials} trials on {rows} rows"));
        let mut e = Experiment::new(rows, trials, a.seed);
        e.subset_fraction = a.subset_fraction;
        let t = Instant::now();
        let outcome = f(&e)?;
        out.push(ExperimentRun {
            name: name.to_owned(),
            rows: e.rows,
            recipients: e.recipients,
            subset_fraction: e.subset_fraction,
            bound: e.bound,
            seconds: t.elapsed().as_secs_f64(),
            outcome,
        });
        Ok(())
    };
    if let Some(source) = &source {
        one("single leaker (released table)", a.single_trials, &|e| {
            experiments::single_leaker_on(e, source.clone())
        })?;
        one("innocents (released table)", a.innocent_trials, &|e| {
            experiments::innocents_on(e, source.clone())
        })?;
        return Ok(out);
    }
    one("single leaker", a.single_trials, &experiments::single_leaker)?;
    one("innocents", a.innocent_trials, &experiments::innocents)?;
    let colluders = a.colluders;
    one(&format!("{colluders} colluders"), a.collusion_trials, &|e| {
        experiments::collusion(e, colluders)
    })?;
    Ok(out)
}

/// A released table as an experiment's source: its cells and the catalogue's marked columns for the table
/// its file stem names.
fn released_sheet(path: &Path) -> Result<experiments::Source> {
    let table = tokumei_release::trace::read_leaked(path).map_err(release_reason)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let kind = tokumei_store::Table::from_name(stem)
        .with_context(|| format!("{}: the file stem names no table of the store", path.display()))?;
    source_of(&table, kind).with_context(|| format!("{}: table {stem} has no marked column", path.display()))
}

/// A released table's cells and the catalogue's marked columns for it (`None` if it has none).
fn source_of(table: &tokumei_deid::table::Table, kind: tokumei_store::Table) -> Option<experiments::Source> {
    let names: Vec<String> = table.names().iter().map(|n| (*n).to_owned()).collect();
    let marked = tokumei_release::catalogue::marked_columns(kind, &names);
    (!marked.is_empty()).then(|| (Sheet::from_cells(table, &names), marked))
}

/// Enrols an invited person with a password and TOTP and logs them in: (actor, session token).
async fn activate(policy: &Policy, username: &str, invitation: &str) -> Result<(Actor, String)> {
    let (actor, token) = crate::staff::activate(policy, (username, PASSWORD), invitation, BENCH).await?;
    Ok((actor, token.to_string()))
}

async fn person(
    policy: &Policy,
    admins: &crate::staff::Administrators,
    username: &str,
    org: &str,
    roles: &[Role],
) -> Result<(Actor, String)> {
    let code = crate::staff::invite(policy, admins, (username, username, org), roles, BENCH).await?;
    activate(policy, username, code.expose()).await
}

/// The tables of the bench's application.
/// The approval's tables: `patients` and the event tables asked for, with the demo's columns.
fn tables(event_tables: &[String]) -> Result<Vec<TableRequest>> {
    let request = |table: &str, columns: &[&str]| TableRequest {
        table: table.into(),
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
    };
    let mut out = vec![request("patients", &["linkage_key", "birth_date", "sex", "prefecture"])];
    for t in event_tables {
        out.push(match t.as_str() {
            "observations" => request(t, &["linkage_key", "jlac10", "date", "value", "unit"]),
            "conditions" => request(t, &["linkage_key", "icd10", "onset_date"]),
            "encounters" => request(
                t,
                &["linkage_key", "admission_date", "discharge_date", "kind", "department"],
            ),
            _ => anyhow::bail!("--event-tables: {t} is not one of observations, conditions, encounters"),
        });
    }
    Ok(out)
}

/// A fresh policy database in `dir` with an operator, a researcher (`sato`), a chair and three members, and a
/// file-channel application by sato, approved with k = 5 for sato.
struct Approved {
    policy: Policy,
    /// The hold on the home's keys, as a running service keeps it.
    _keys_in_use: tokumei_policy::service_key::KeysInUse,
    operator: Actor,
    researcher_session: String,
    application: String,
}

async fn approved_application(dir: &Path, tables: &[TableRequest]) -> Result<Approved> {
    std::fs::create_dir_all(dir.join("policy"))?;
    // The benchmark plays the policy service: it logs its people in with the service's session key.
    let (policy, keys_in_use) = tokumei_policy::on_home::open_service(dir, None).await.map_err(reason)?;
    let [first, second] = crate::staff::bootstrap(&policy, BENCH).await?;
    let admins = crate::staff::Administrators {
        first: activate(&policy, "aoi", first.expose()).await?.0,
        second: activate(&policy, "ren", second.expose()).await?.0,
    };
    let (op, _) = person(&policy, &admins, "op", "platform", &[Role::Operator]).await?;
    let (sato, session) = person(&policy, &admins, "sato", "univ-a", &[Role::Researcher]).await?;
    let (chair, _) = person(
        &policy,
        &admins,
        "chika",
        "univ-c",
        &[Role::CommitteeChair, Role::CommitteeMember],
    )
    .await?;
    let mut members = Vec::new();
    for (name, org) in [("mei", "univ-m"), ("kenta", "hosp-k"), ("sora", "law-s")] {
        members.push(person(&policy, &admins, name, org, &[Role::CommitteeMember]).await?.0);
    }
    let mut f = tokumei_demo::committee::form(Channel::File);
    f.title = "Laboratory trajectories (benchmark)".into();
    f.methods = "Regression on patient-level laboratory results, k-anonymous demographics".into();
    f.tables = tables.to_vec();
    f.requested_epsilon = None;
    let app = policy.file_application(&sato, f, None, BENCH).await.map_err(reason)?;
    let reviewers: Vec<String> = members.iter().chain([&chair]).map(|m| m.username.clone()).collect();
    policy
        .assign(&chair, &app.id, &reviewers, BENCH)
        .await
        .map_err(reason)?;
    for m in members.iter().chain([&chair]) {
        policy
            .vote(m, &app.id, true, "Benchmark approval", BENCH)
            .await
            .map_err(reason)?;
    }
    let conditions = ApprovalConditions {
        tables: tables.to_vec(),
        cohort_filter: String::new(),
        privacy: Some(PrivacyModel {
            k: 5,
            l: None,
            t: None,
            max_suppression: 0.05,
            m: 2,
            demographic_weight: None,
        }),
        dp_budget: None,
        channel: Channel::File,
        expires_on: japan_date(Utc::now()) + chrono::Duration::days(90),
        max_downloads: 10,
        recipients: BTreeSet::from(["sato".to_owned()]),
        link_releases: false,
        pseudonymised: false,
        statistics: Default::default(),
    };
    policy
        .decide(&chair, &app.id, Some(conditions), BENCH)
        .await
        .map_err(reason)?;
    Ok(Approved {
        policy,
        _keys_in_use: keys_in_use,
        operator: op,
        researcher_session: session,
        application: app.id,
    })
}

/// The build part's figures, and the released observations (the first recipient's copy, read back through the
/// zone) when the attack suite is to run on them.
async fn build_part(a: &ReleaseBench, bar: &ProgressBar) -> Result<(BuildPart, Option<experiments::Source>)> {
    let home = a.home.clone().unwrap_or_else(tokumei_platform::home::tokumei_home);
    let cfg = tokumei_platform::config::Config::load(a.config.as_deref())?;
    bar.set_message(format!("build: opening the store under {}", home.display()));
    let keys = tokumei_keys::open_configured(&cfg, &home, tokumei_keys::KeyZone::Core).await?;
    let store = tokumei_store::Store::open(&cfg.store, &home, keys.as_ref()).await?;
    let t = Instant::now();
    let view = store.research_session().await?;
    let ctx = view.context();
    let patients = ctx.table("patients").await?.count().await?;
    let mut events = BTreeMap::new();
    for t in &a.event_tables {
        events.insert(t.clone(), ctx.table(t.as_str()).await?.count().await?);
    }
    let seconds_count = t.elapsed().as_secs_f64();
    drop(view);

    bar.set_message("build: committee approval in a scratch policy database");
    let dir = scratch("policy")?;
    let t = Instant::now();
    let approved = approved_application(&dir, &tables(&a.event_tables)?).await?;
    let seconds_policy_setup = t.elapsed().as_secs_f64();
    let zone = ReleaseZone::new(&home, keys.clone());
    let service_key =
        ServiceKey::load_or_create(&tokumei_release::manifest::manifest_key_path(&dir)).map_err(reason)?;
    let cx = tokumei_release::builder::BuildContext {
        policy: &approved.policy,
        actor: &approved.operator,
        origin: BENCH,
        store: &store,
        zone: &zone,
        service_key: &service_key,
        home: &home,
        core_keys: keys.as_ref(),
    };
    let stages: Mutex<Vec<(f64, String)>> = Mutex::new(Vec::new());
    let reset = reset_hwm();
    let started = Instant::now();
    let say = |m: &str| {
        bar.set_message(format!("build: {m}"));
        if let Ok(mut s) = stages.lock() {
            s.push((started.elapsed().as_secs_f64(), m.to_owned()));
        }
    };
    let outcome = tokumei_release::builder::build(
        &cx,
        &approved.application,
        &tokumei_release::builder::BuildRequest::default(),
        &say,
    )
    .await
    .map_err(release_reason)?;
    let seconds_build = started.elapsed().as_secs_f64();
    let peak_rss_mib = crate::host::peak_rss_mib(None);
    let tables: Vec<BuildTable> = outcome
        .protection
        .iter()
        .map(|p| BuildTable {
            table: p.table.clone(),
            rows: p.rows,
            classes: p.classes,
            min_class_size: p.min_class_size,
            suppressed_patients: p.suppressed_patients,
            marked_columns: p.marked_columns.clone(),
            marked_cell_fraction: p.marked_cell_fraction,
        })
        .collect();
    let rows_total: u64 = tables.iter().map(|t| t.rows).sum();
    let observations = if a.attack_source == "build" {
        bar.set_message("build: reading the released observations back for the attack suite");
        let record = zone.record(&outcome.release).map_err(release_reason)?;
        let recipient = outcome.recipients.first().context("the release has no recipient")?;
        let bytes = zone
            .open_copy_file(&record, recipient, "observations.csv")
            .await
            .and_then(|mut f| f.read_all())
            .map_err(release_reason)?;
        let table = tokumei_release::trace::read_leaked_bytes("observations.csv", bytes).map_err(release_reason)?;
        Some(source_of(&table, tokumei_store::Table::Observations).context("the observations have no marked column")?)
    } else {
        None
    };
    if !a.keep_release
        && let Ok(d) = zone.release_dir(&outcome.release)
    {
        let _ = std::fs::remove_dir_all(d);
    }
    approved.policy.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let part = BuildPart {
        home: home.display().to_string(),
        research_view_patients: patients,
        research_view_events: events,
        seconds_count,
        seconds_policy_setup,
        release: outcome.release.clone(),
        recipients: outcome.recipients.len(),
        patients: outcome.patients,
        suppressed_patients: outcome.suppressed_patients,
        tables,
        rows_total,
        seconds_build,
        rows_per_second: rows_total as f64 / seconds_build,
        peak_rss_mib,
        peak_rss_reset: reset,
        stages: stages.into_inner().unwrap_or_default(),
        release_kept: a.keep_release,
        record: outcome.record.clone(),
    };
    Ok((part, observations))
}

/// Deterministic pseudo-random bytes (xorshift): incompressible, so nothing on the way can shortcut them.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn download_part(a: &ReleaseBench, bar: &ProgressBar) -> Result<DownloadPart> {
    use tokumei_proto::release::v1 as pb;
    use tokumei_proto::release::v1::release_service_client::ReleaseServiceClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    tokumei_platform::tls::install_crypto_provider();
    let home = scratch("download")?;
    bar.set_message("download: certificates, key service and policy");
    let code = tokumei_synth::hospital_codes(1)
        .into_iter()
        .next()
        .context("hospital code")?;
    let pki = tokumei_keys::pki::PkiLayout::new(home.join("pki"));
    tokumei_keys::pki::init(&pki, std::slice::from_ref(&code), &["localhost".into()])?;
    let config = home.join("tokumei.toml");
    std::fs::write(
        &config,
        "[gateway]\nlisten = \"127.0.0.1:0\"\noperator_listen = \"127.0.0.1:0\"\n",
    )?;
    let cfg = tokumei_platform::config::Config::load(Some(&config))?;
    let keys = tokumei_keys::open_configured(&cfg, &home, tokumei_keys::KeyZone::Release).await?;
    let zone = ReleaseZone::new(&home, keys);
    let approved = approved_application(&home, &tables(&["observations".to_owned()])?).await?;

    let bytes = (a.download_mib as u64) << 20;
    bar.set_message(format!("download: sealing {} MiB", a.download_mib));
    let plain = noise(bytes as usize, a.seed);
    let sha256 = tokumei_release::manifest::sha256_hex(&plain);
    let id = "rel-bench-download";
    let t = Instant::now();
    let (cipher, data_key) = zone.new_data_key(id).await.map_err(release_reason)?;
    let (_, fingerprint_key) = zone.new_fingerprint_key(id).await.map_err(release_reason)?;
    std::fs::create_dir_all(zone.copy_dir(id, "sato").map_err(release_reason)?)?;
    let name = "observations.parquet";
    tokumei_release::sealed_file::write(
        &cipher,
        &plain,
        &zone.copy_path(id, "sato", name).map_err(release_reason)?,
    )
    .map_err(release_reason)?;
    let seconds_seal = t.elapsed().as_secs_f64();
    drop(plain);
    let record = ReleaseRecord {
        id: id.to_owned(),
        application: approved.application.clone(),
        approval_revision: 1,
        built_at: Utc::now(),
        built_by: "op".into(),
        expires_on: japan_date(Utc::now()) + chrono::Duration::days(90),
        tables: tables(&["observations".to_owned()])?,
        copies: [(
            "sato".to_owned(),
            vec![CopyFile {
                name: name.to_owned(),
                sha256: sha256.clone(),
                bytes,
            }],
        )]
        .into(),
        data_key,
        fingerprint_key,
        fingerprint: Default::default(),
        pseudonym_scope: PseudonymScope::Release,
    };
    zone.commit(&record).map_err(release_reason)?;

    let policy_service = crate::local_policy::start(approved.policy.clone(), &pki).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokumei_release::delivery::serve(
        tokumei_release::delivery::DeliveryConfig {
            grpc_listen: "127.0.0.1:0".parse()?,
            https_listen: "127.0.0.1:0".parse()?,
            tls: tokumei_release::delivery::DeliveryTls::from_files(&pki.gateway_cert(), &pki.gateway_key())?,
            public_url: None,
            token_ttl: tokumei_release::delivery::DEFAULT_TTL,
            builds: None,
        },
        policy_service.link.clone(),
        zone.clone(),
        async move {
            let _ = stopped.await;
        },
    )
    .await?;
    let ca = std::fs::read(pki.ca_cert())?;
    let channel = Endpoint::from_shared(format!("https://{}", running.grpc))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)))?
        .connect()
        .await
        .context("TLS connection to the release service")?;
    let mut client = ReleaseServiceClient::new(channel);
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?;
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", approved.researcher_session).parse()?;
    let mut runs = Vec::new();
    for i in 0..a.download_runs.max(1) {
        bar.set_message(format!("download: run {}/{}", i + 1, a.download_runs.max(1)));
        let t0 = Instant::now();
        let mut request = tonic::Request::new(pb::RequestDownloadRequest {
            release_id: id.to_owned(),
            file: name.to_owned(),
        });
        request.metadata_mut().insert("authorization", bearer.clone());
        let grant = client
            .request_download(request)
            .await
            .map_err(|s| anyhow::anyhow!("RequestDownload refused: {s:?}"))?
            .into_inner();
        let t1 = Instant::now();
        let mut response = http.get(&grant.url).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "download refused: HTTP {}",
            response.status()
        );
        let version = format!("{:?}", response.version());
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await? {
            received += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let seconds_transfer = t1.elapsed().as_secs_f64();
        anyhow::ensure!(received == bytes, "received {received} of {bytes} bytes");
        runs.push(DownloadRun {
            seconds_request: (t1 - t0).as_secs_f64(),
            seconds_transfer,
            mb_per_second: bytes as f64 / 1e6 / seconds_transfer,
            mib_per_second: bytes as f64 / (1u64 << 20) as f64 / seconds_transfer,
            http_version: version,
            sha256_ok: hex::encode(hasher.finalize()) == sha256,
        });
    }
    let _ = stop.send(());
    let _ = running.wait().await;
    policy_service.stop().await?;
    approved.policy.close().await;
    let _ = std::fs::remove_dir_all(&home);
    Ok(DownloadPart {
        bytes,
        seconds_seal,
        best_mb_per_second: runs.iter().map(|r| r.mb_per_second).fold(0.0, f64::max),
        runs,
    })
}
