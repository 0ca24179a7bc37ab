//! `tokumei bench anonymize`: the anonymisation engine on Adult and on a large synthetic patient table.
//!
//! * Adult (30,162 records, 8 QIs, salary class insensitive): in-process search time, the median of
//!   warm runs, for k=5 with 0 % and 5 % suppression and the loss metric — the configurations ARX's
//!   published warm timings refer to.
//! * A synthetic patient table of `--rows` rows (default 10 million) with 6 QIs, generated
//!   deterministically in memory with skewed, correlated distributions (age skewed to the elderly,
//!   municipalities and 3-digit postal prefixes weighted by prefecture population, Zipf-distributed
//!   ICD-10 codes, rising admission years): wall time per phase and peak RSS for k=5, 1 % suppression,
//!   loss, optimal search.
//!
//! Whole-process figures (start-up, CSV parsing, writing the output) are measured separately with
//! `/usr/bin/time -v tokumei anonymize ...`; see docs/benchmarks-deid.md.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Args;
use serde::Serialize;
use tokumei_deid::dataset::{Dataset, QiInput};
use tokumei_deid::generators::Generator;
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::job::{self, JobConfig};
use tokumei_deid::metric::Metric;
use tokumei_deid::model::PrivacyModel;
use tokumei_deid::risk::summarize;
use tokumei_deid::search::search;
use tokumei_deid::table::{Column, Table};
use tokumei_deid::transform::apply;

use crate::host::{machine, peak_rss_mib};

use tokumei_client::output::emit;

/// Arguments of `tokumei bench anonymize`.
#[derive(Args, Debug)]
pub struct AnonymizeBench {
    /// Directory holding adult.csv and adult_hierarchy_*.csv.
    #[arg(long, default_value = "../shared/data/adult")]
    pub adult_dir: PathBuf,
    /// Warm runs per Adult configuration (the median is reported; one extra warm-up run is discarded).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Skip the Adult part.
    #[arg(long)]
    pub skip_adult: bool,
    /// Suppression limits to run on Adult (and its scaled copies), as fractions.
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 0.05])]
    pub suppression: Vec<f64>,
    /// Also run on Adult-like tables of this many rows: each column's values drawn independently
    /// from Adult's (fixed seed), so columns, value distributions and hierarchies are Adult's and
    /// the combinations new. Repeatable, e.g. `--scaled 300000,1000000` (the sizes of ARX's
    /// side-by-side reference, whose exact generator is not published).
    #[arg(long, value_delimiter = ',')]
    pub scaled: Vec<usize>,
    /// Write each scaled table as `adult-<rows>.csv` (`;`-separated, like adult.csv) into this
    /// directory, for whole-process runs of `tokumei anonymize`.
    #[arg(long)]
    pub write_scaled: Option<PathBuf>,
    /// Rows of the synthetic patient table (0 skips it).
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: usize,
    /// Seed of the synthetic generator (same seed, same table).
    #[arg(long, default_value_t = 20_260_501)]
    pub seed: u64,
}

const ADULT_QIS: [&str; 8] = [
    "sex",
    "age",
    "race",
    "marital-status",
    "education",
    "native-country",
    "workclass",
    "occupation",
];

#[derive(Serialize)]
struct AdultRow {
    k: u32,
    suppression: f64,
    runs: usize,
    search_ms_median: f64,
    search_ms_min: f64,
    search_ms_max: f64,
    /// Search + apply + risk before/after (everything `job::run` does).
    job_ms_median: f64,
    nodes_checked: u64,
    lattice_size: u64,
    levels: Vec<u32>,
    suppressed: u64,
    loss: f64,
    /// ARX 3.9.2's warm `anonymize()` for the same configuration, measured on this machine kind
    /// (`../shared/reference/arx-3.9.2.md`: the search alone, best of later calls in one JVM), in ms.
    arx_warm_ms: &'static str,
}

#[derive(Serialize)]
struct AdultReport {
    records: usize,
    qis: usize,
    load_ms: f64,
    encode_ms: f64,
    rows: Vec<AdultRow>,
}

#[derive(Serialize)]
struct SyntheticReport {
    rows: usize,
    qis: Vec<String>,
    distinct_values: Vec<usize>,
    lattice_size: u64,
    /// Generating the row values (excluded from the total).
    generate_s: f64,
    /// Interning the string values into the dictionary-encoded table (what a CSV/Arrow reader does).
    table_s: f64,
    /// Building the hierarchies from the distinct values with the built-in generators.
    hierarchies_s: f64,
    encode_s: f64,
    search_s: f64,
    apply_s: f64,
    risk_s: f64,
    /// table + hierarchies + encode + search + apply + risk.
    total_s: f64,
    nodes_checked: u64,
    levels: Vec<u32>,
    suppressed: u64,
    loss: f64,
    classes: u64,
    peak_rss_mib: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    threads: usize,
    adult: Option<AdultReport>,
    /// Adult-like tables of `--scaled` rows.
    scaled: Vec<AdultReport>,
    synthetic: Option<SyntheticReport>,
    /// Peak RSS of the whole benchmark process (VmHWM).
    peak_rss_mib: f64,
}

/// Runs `tokumei bench anonymize`; a table by default, JSON with `json`.
pub fn run(a: AnonymizeBench, json: bool) -> Result<()> {
    let runs = a.runs.max(1);
    let (mut adult, mut scaled) = (None, Vec::new());
    if !a.skip_adult || !a.scaled.is_empty() {
        let (table, qis, load_ms) = load_adult(&a.adult_dir)?;
        if !a.skip_adult {
            adult = Some(bench_table(&table, qis.clone(), load_ms, runs, &a.suppression)?);
        }
        for &rows in &a.scaled {
            progress(&format!("Adult-like table of {rows} records: drawing"));
            let t = Instant::now();
            let big = scale_adult(&table, rows)?;
            let made_ms = ms(t.elapsed());
            if let Some(dir) = &a.write_scaled {
                let path = dir.join(format!("adult-{rows}.csv"));
                progress(&format!("writing {}", path.display()));
                write_table(&big, &path)?;
            }
            scaled.push(bench_table(&big, qis.clone(), made_ms, runs, &a.suppression)?);
        }
    }
    let synthetic = if a.rows == 0 {
        None
    } else {
        Some(bench_synthetic(a.rows, a.seed)?)
    };
    let report = Report {
        machine: machine(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        adult,
        scaled,
        synthetic,
        peak_rss_mib: peak_rss_mib(None),
    };
    emit(json, &report, print_human)
}

fn progress(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[bench anonymize] {msg}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Adult's table and its QIs with ARX's hierarchies, and how long reading them took.
fn load_adult(dir: &Path) -> Result<(Table, Vec<QiInput>, f64)> {
    progress(&format!("Adult: loading {}", dir.display()));
    let t = Instant::now();
    let table = Table::read_csv(&dir.join("adult.csv"), b';')
        .with_context(|| format!("reading {}/adult.csv (set --adult-dir)", dir.display()))?;
    let qis = ADULT_QIS
        .iter()
        .map(|n| {
            let path = dir.join(format!("adult_hierarchy_{n}.csv"));
            Ok(QiInput {
                name: n.to_string(),
                hierarchy: Hierarchy::read_arx_csv(&path, b';')
                    .with_context(|| format!("reading {}", path.display()))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((table, qis, ms(t.elapsed())))
}

/// ARX 3.9.2's warm `anonymize()` on this machine kind (`../shared/reference/arx-3.9.2.md`), in ms.
fn arx_warm_ms(records: usize, suppression: f64) -> &'static str {
    match (records, suppression == 0.0) {
        (30_162, true) => "31–37",
        (30_162, false) if suppression == 0.05 => "602–627",
        (300_000, true) => "445",
        (300_000, false) if suppression == 0.05 => "8038",
        (1_000_000, true) => "1352",
        (1_000_000, false) if suppression == 0.05 => "29612",
        _ => "—",
    }
}

/// An Adult-like table of `rows` records: every column's values drawn independently from that
/// column of Adult (with replacement, fixed seed), so columns, value distributions and hierarchies
/// are Adult's while the QI combinations are new. (Drawing whole records instead would repeat each
/// Adult record ~33 times at 1M rows, and k = 5 would hold without any generalisation.)
fn scale_adult(adult: &Table, rows: usize) -> Result<Table> {
    let mut rng = Rng(0x00AD_0017 ^ rows as u64);
    let n = adult.rows() as u64;
    let columns = adult
        .columns()
        .iter()
        .map(|col| {
            let mut c = Column::new(col.name());
            for _ in 0..rows {
                c.push(col.value((rng.next_u64() % n) as usize));
            }
            c
        })
        .collect();
    Ok(Table::from_columns(columns)?)
}

/// Writes `table` as `;`-separated text with a header, like adult.csv.
fn write_table(table: &Table, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = csv::WriterBuilder::new()
        .delimiter(b';')
        .from_writer(std::io::BufWriter::new(file));
    w.write_record(table.names())?;
    for row in 0..table.rows() {
        w.write_record(table.columns().iter().map(|c| c.value(row)))?;
    }
    w.flush()?;
    Ok(())
}

/// Median in-process timings of `search` and of a whole `job::run` on one table, per suppression limit.
fn bench_table(
    table: &Table,
    qis: Vec<QiInput>,
    load_ms: f64,
    runs: usize,
    suppressions: &[f64],
) -> Result<AdultReport> {
    let records = table.rows();
    let t = Instant::now();
    let ds = Dataset::encode(table, qis, vec![], None)?;
    let encode_ms = ms(t.elapsed());
    let mut rows = Vec::new();
    for &suppression in suppressions {
        let cfg = JobConfig {
            model: PrivacyModel {
                k: 5,
                suppression_limit: suppression,
                ..Default::default()
            },
            metric: Metric::Loss,
            ..Default::default()
        };
        progress(&format!(
            "{records} records: k=5, suppression {:.0} %, {runs} warm runs",
            suppression * 100.0
        ));
        let warm = search(&ds, &cfg.model, cfg.metric)?;
        let mut search_ms = Vec::with_capacity(runs);
        let mut job_ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let found = search(&ds, &cfg.model, cfg.metric)?;
            search_ms.push(ms(t.elapsed()));
            ensure!(found.levels == warm.levels, "search is not deterministic");
            let t = Instant::now();
            let out = job::run(&ds, &cfg)?;
            job_ms.push(ms(t.elapsed()));
            ensure!(out.anonymized.levels == warm.levels, "job and search disagree");
        }
        let suppressed = apply(&ds, &cfg.model, cfg.metric, &warm.levels)?.suppressed;
        rows.push(AdultRow {
            k: cfg.model.k,
            suppression,
            runs,
            search_ms_min: search_ms.iter().copied().fold(f64::INFINITY, f64::min),
            search_ms_max: search_ms.iter().copied().fold(0.0, f64::max),
            search_ms_median: median(search_ms),
            job_ms_median: median(job_ms),
            nodes_checked: warm.nodes_checked,
            lattice_size: warm.lattice_size,
            levels: warm.levels,
            suppressed,
            loss: warm.metric.value,
            arx_warm_ms: arx_warm_ms(records, suppression),
        });
    }
    Ok(AdultReport {
        records,
        qis: ADULT_QIS.len(),
        load_ms,
        encode_ms,
        rows,
    })
}

// ---------------------------------------------------------------------------------------------
// Synthetic patient table
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast and fully specified, so the table is the same on every build.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Sampling from a discrete distribution by binary search on the cumulative weights.
struct Cdf(Vec<f64>);

impl Cdf {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut acc = 0.0;
        Self(
            weights
                .into_iter()
                .map(|w| {
                    acc += w;
                    acc
                })
                .collect(),
        )
    }
    fn sample(&self, r: &mut Rng) -> usize {
        let total = *self.0.last().unwrap_or(&0.0);
        let u = r.unit() * total;
        self.0.partition_point(|&c| c <= u).min(self.0.len() - 1)
    }
}

fn zipf(n: usize, s: f64) -> impl Iterator<Item = f64> {
    (1..=n).map(move |i| 1.0 / (i as f64).powf(s))
}

/// Approximate 2020 census populations of the 47 prefectures (JIS order), in units of 10,000.
const PREFECTURE_POP: [u32; 47] = [
    522, 124, 121, 230, 96, 107, 183, 287, 193, 194, 734, 628, 1405, 924, 220, 104, 113, 77, 81, 205, 198, 363, 754,
    177, 141, 258, 884, 547, 132, 92, 55, 67, 189, 280, 134, 72, 95, 133, 69, 514, 81, 131, 174, 112, 107, 159, 147,
];

/// The generated table before it is turned into strings: one small code per row and QI.
struct Generated {
    /// Value labels per QI.
    pools: Vec<Vec<String>>,
    /// Codes per QI into its pool.
    codes: Vec<Vec<u16>>,
}

const SYN_QIS: [&str; 6] = ["age", "sex", "municipality", "postal3", "icd10", "admission_year"];

fn generate(rows: usize, seed: u64) -> Generated {
    let mut r = Rng(seed);
    // Age 0–100, hospital population: a few children, most patients 65+, mode around 80.
    let age_cdf = Cdf::new((0..=100).map(|a: u32| {
        let a = a as f64;
        let children = if a < 15.0 { 0.6 } else { 0.0 };
        let adults = 0.5 + a / 40.0;
        let elderly = 6.0 * (-((a - 80.0) / 9.0).powi(2) / 2.0).exp();
        children + adults + elderly
    }));
    // Municipalities: per prefecture a Zipf-weighted list; 3-digit postal prefixes owned by the
    // prefecture, each municipality mostly in one prefix.
    let pref_cdf = Cdf::new(PREFECTURE_POP.iter().map(|&p| p as f64));
    let mut municipalities: Vec<String> = Vec::new();
    let mut postals: Vec<String> = Vec::new();
    let mut muni_offset = Vec::new();
    let mut muni_cdfs = Vec::new();
    let mut primary: Vec<u16> = Vec::new();
    let mut secondary: Vec<u16> = Vec::new();
    let mut next_postal = 100usize;
    for (p, &pop) in PREFECTURE_POP.iter().enumerate() {
        let n_muni = 12 + pop as usize / 12;
        let n_post = 3 + pop as usize / 50;
        muni_offset.push(municipalities.len());
        muni_cdfs.push(Cdf::new(zipf(n_muni, 1.0)));
        let base = postals.len();
        for i in 0..n_post {
            postals.push(format!("{:03}", next_postal + i));
        }
        next_postal += n_post;
        for i in 0..n_muni {
            municipalities.push(format!("{:02}{:03}", p + 1, 100 + 2 * i));
            primary.push((base + i % n_post) as u16);
            secondary.push((base + (i + 1) % n_post) as u16);
        }
    }
    // ICD-10: 2,000 four-character codes (letters other than U), Zipf-distributed in a fixed
    // shuffled order, so a few codes (the hypertensions and diabetes of this world) dominate.
    let letters: Vec<char> = ('A'..='Z').filter(|&c| c != 'U').collect();
    let mut all_codes: Vec<String> = Vec::new();
    for &l in &letters {
        for nn in 0..100 {
            for sub in 0..10 {
                all_codes.push(format!("{l}{nn:02}{sub}"));
            }
        }
    }
    let mut shuffle = Rng(seed ^ 0x1CD1_0000);
    for i in (1..all_codes.len()).rev() {
        let j = (shuffle.next_u64() % (i as u64 + 1)) as usize;
        all_codes.swap(i, j);
    }
    all_codes.truncate(2000);
    let icd_cdf = Cdf::new(zipf(all_codes.len(), 1.07));
    // Admission years 2010–2025, rising.
    let years: Vec<String> = (2010..=2025).map(|y: u32| y.to_string()).collect();
    let year_cdf = Cdf::new((0..years.len()).map(|i| 1.0 + 0.08 * i as f64));

    let mut codes: Vec<Vec<u16>> = (0..SYN_QIS.len()).map(|_| Vec::with_capacity(rows)).collect();
    for _ in 0..rows {
        codes[0].push(age_cdf.sample(&mut r) as u16);
        codes[1].push(u16::from(r.unit() < 0.52));
        let p = pref_cdf.sample(&mut r);
        let m = muni_offset[p] + muni_cdfs[p].sample(&mut r);
        codes[2].push(m as u16);
        codes[3].push(if r.unit() < 0.85 { primary[m] } else { secondary[m] });
        codes[4].push(icd_cdf.sample(&mut r) as u16);
        codes[5].push(year_cdf.sample(&mut r) as u16);
    }
    Generated {
        pools: vec![
            (0..=100).map(|a: u32| a.to_string()).collect(),
            vec!["M".to_string(), "F".to_string()],
            municipalities,
            postals,
            all_codes,
            years,
        ],
        codes,
    }
}

fn hierarchy_generators() -> [Generator; 6] {
    [
        Generator::Interval {
            widths: vec![5, 10, 20],
            origin: 0,
        },
        Generator::Flat,
        Generator::Municipality,
        Generator::Prefix { lengths: vec![2, 1] },
        Generator::Icd10,
        Generator::Interval {
            widths: vec![2, 4],
            origin: 2010,
        },
    ]
}

fn bench_synthetic(rows: usize, seed: u64) -> Result<SyntheticReport> {
    progress(&format!("synthetic: generating {rows} rows"));
    let t = Instant::now();
    let generated = generate(rows, seed);
    let generate_s = t.elapsed().as_secs_f64();

    progress("synthetic: building the dictionary-encoded table");
    let t = Instant::now();
    let columns: Vec<Column> = SYN_QIS
        .iter()
        .zip(&generated.codes)
        .zip(&generated.pools)
        .map(|((name, codes), pool)| {
            let mut c = Column::new(*name);
            for &code in codes {
                c.push(&pool[code as usize]);
            }
            c
        })
        .collect();
    drop(generated);
    let table = Table::from_columns(columns)?;
    let table_s = t.elapsed().as_secs_f64();

    progress("synthetic: hierarchies");
    let t = Instant::now();
    let qis = SYN_QIS
        .iter()
        .zip(hierarchy_generators())
        .map(|(name, g)| {
            let col = table.column(name)?;
            let values: Vec<&str> = col.dict().iter().map(String::as_str).collect();
            Ok(QiInput {
                name: name.to_string(),
                hierarchy: g.generate(&values)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let hierarchies_s = t.elapsed().as_secs_f64();
    let distinct_values = table.columns().iter().map(|c| c.dict().len()).collect();

    progress("synthetic: encoding");
    let t = Instant::now();
    let ds = Dataset::encode(&table, qis, vec![], None)?;
    let encode_s = t.elapsed().as_secs_f64();

    let model = PrivacyModel {
        k: 5,
        suppression_limit: 0.01,
        ..Default::default()
    };
    progress("synthetic: optimal search (k=5, 1 % suppression, loss)");
    let t = Instant::now();
    let found = search(&ds, &model, Metric::Loss)?;
    let search_s = t.elapsed().as_secs_f64();

    progress("synthetic: applying the transformation");
    let t = Instant::now();
    let anonymized = apply(&ds, &model, Metric::Loss, &found.levels)?;
    let apply_s = t.elapsed().as_secs_f64();
    ensure!(anonymized.feasible, "the found transformation is not feasible");

    let t = Instant::now();
    let risk = summarize(&anonymized.class_sizes, 0.2, 0.01);
    let risk_s = t.elapsed().as_secs_f64();
    ensure!(
        risk.prosecutor_max <= 1.0 / model.k as f64 + 1e-12,
        "risk after anonymisation above 1/k"
    );

    Ok(SyntheticReport {
        rows,
        qis: SYN_QIS.iter().map(|s| s.to_string()).collect(),
        distinct_values,
        lattice_size: found.lattice_size,
        generate_s,
        table_s,
        hierarchies_s,
        encode_s,
        search_s,
        apply_s,
        risk_s,
        total_s: table_s + hierarchies_s + encode_s + search_s + apply_s + risk_s,
        nodes_checked: found.nodes_checked,
        levels: found.levels,
        suppressed: anonymized.suppressed,
        loss: found.metric.value,
        classes: anonymized.class_sizes.len() as u64,
        peak_rss_mib: peak_rss_mib(None),
    })
}

fn print_table(name: &str, a: &AdultReport, load: &str) {
    println!();
    println!(
        "{name}: {} records, {} QIs ({load} {:.1} ms, encode {:.1} ms)",
        a.records, a.qis, a.load_ms, a.encode_ms
    );
    println!(
        "{:>3} {:>6} {:>12} {:>10} {:>10} {:>10} {:>8} {:>10} {:>9} {:>12}",
        "k", "supp", "search ms", "min", "max", "job ms", "nodes", "suppressed", "loss", "ARX warm ms"
    );
    for row in &a.rows {
        println!(
            "{:>3} {:>5.0}% {:>12.2} {:>10.2} {:>10.2} {:>10.2} {:>8} {:>10} {:>9.5} {:>12}",
            row.k,
            row.suppression * 100.0,
            row.search_ms_median,
            row.search_ms_min,
            row.search_ms_max,
            row.job_ms_median,
            format!("{}/{}", row.nodes_checked, row.lattice_size),
            row.suppressed,
            row.loss,
            row.arx_warm_ms
        );
    }
    if let Some(first) = a.rows.first() {
        println!(
            "(median of {} warm runs; levels in QI order: {:?})",
            first.runs, first.levels
        );
    }
}

fn print_human(r: &Report) {
    println!("anonymisation benchmark — {}", r.machine);
    if let Some(a) = &r.adult {
        print_table("Adult", a, "load");
    }
    for a in &r.scaled {
        print_table("Adult-like", a, "drawn in");
    }
    if let Some(s) = &r.synthetic {
        println!();
        println!(
            "synthetic: {} rows, QIs {} (distinct {:?}), lattice {} nodes, k=5, 1% suppression, loss",
            s.rows,
            s.qis.join(","),
            s.distinct_values,
            s.lattice_size
        );
        println!("{:<28} {:>10}", "phase", "seconds");
        for (name, v) in [
            ("generate (excluded)", s.generate_s),
            ("table (intern strings)", s.table_s),
            ("hierarchies", s.hierarchies_s),
            ("encode", s.encode_s),
            ("search", s.search_s),
            ("apply", s.apply_s),
            ("risk", s.risk_s),
            ("total (without generate)", s.total_s),
        ] {
            println!("{name:<28} {v:>10.2}");
        }
        println!(
            "nodes checked {}, levels {:?}, suppressed {} ({:.3}%), classes {}, loss {:.5}",
            s.nodes_checked,
            s.levels,
            s.suppressed,
            100.0 * s.suppressed as f64 / s.rows as f64,
            s.classes,
            s.loss
        );
        println!("peak RSS after the synthetic run {:.1} MiB", s.peak_rss_mib);
    }
    println!("process peak RSS {:.1} MiB", r.peak_rss_mib);
}
