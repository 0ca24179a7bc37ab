//! Experiments that measure what the fingerprint achieves on synthetic laboratory data: a single leaker
//! keeping a sample of rows, innocents (copies made for someone else, or unmarked), and colluders mixing
//! their copies cell by cell. Deterministic from their seeds; the unit tests run them at reduced size and a
//! benchmark command at full size.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cells::{Cells, Sheet};
use super::prf::Prf;
use super::read::{ColumnReader, Reading, Tally};
use super::value::format_scaled;
use super::{CodePrecision, MarkScheme, MarkedColumn, Marks, accuse, embed, fit_plan, plan, read_marks};
use super::{
    DEFAULT_BOUND, DEFAULT_CUTOFF, DEFAULT_MAX_CELL_FRACTION, FingerprintError, FingerprintKey, FingerprintPlan,
};

/// (JLAC10 code, unit, mean, standard deviation, minimum, decimals reported in practice) of the synthetic
/// tests.
const CODES: [(&str, &str, f64, f64, f64, i32); 10] = [
    ("3B035000002327201", "U/L", 25.0, 8.0, 5.0, 0),      // AST
    ("3B045000002327201", "U/L", 22.0, 10.0, 3.0, 0),     // ALT
    ("3C015000002327101", "mg/dL", 0.9, 0.3, 0.2, 2),     // creatinine
    ("3C025000002327101", "mg/dL", 15.0, 5.0, 2.0, 1),    // urea nitrogen
    ("3D010000001926101", "mg/dL", 110.0, 30.0, 40.0, 0), // glucose
    ("3D046000001906202", "%", 6.0, 1.0, 3.5, 1),         // HbA1c
    ("3F050000002327101", "mg/dL", 120.0, 35.0, 20.0, 0), // LDL cholesterol
    ("3F070000002327101", "mg/dL", 58.0, 15.0, 15.0, 0),  // HDL cholesterol
    ("3F015000002327101", "mg/dL", 130.0, 70.0, 20.0, 0), // triglycerides
    ("2A030000001930101", "g/dL", 13.5, 1.8, 5.0, 1),     // haemoglobin
];

/// Days covered by the synthetic dates (2021-01-01 to 2023-12-31).
const DAYS: i64 = 1095;

/// A synthetic table shaped like a release's laboratory observations — `pseudonym` (hex, ~8 rows per
/// person), `jlac10` (10 codes), `date` (3 years), `value` (2 decimals, plausible per code), `unit` — and
/// its marked column (`value`, 2 decimals, anchored on `date` and `jlac10`). Deterministic from `seed`.
pub fn synthetic_lab_sheet(rows: usize, seed: u64) -> (Sheet, Vec<MarkedColumn>) {
    lab_sheet(rows, seed, false)
}

/// The same table as a release writes real laboratory results: each test reported at its own precision
/// (enzymes and lipids in whole units, HbA1c and haemoglobin to 0.1, creatinine to 0.01), every value written
/// with 2 decimals; the marked column looks each cell's precision up by the JLAC10 analyte (5 characters),
/// as the catalogue declares for released observations.
pub fn mixed_precision_lab_sheet(rows: usize, seed: u64) -> (Sheet, Vec<MarkedColumn>) {
    lab_sheet(rows, seed, true)
}

fn lab_sheet(rows: usize, seed: u64, mixed: bool) -> (Sheet, Vec<MarkedColumn>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let people: Vec<String> = (0..(rows / 8).max(1))
        .map(|_| format!("{:016x}", rng.next_u64()))
        .collect();
    let mut columns: Vec<Vec<String>> = (0..5).map(|_| Vec::with_capacity(rows)).collect();
    for _ in 0..rows {
        let (code, unit, mean, sd, min, reported) = CODES[rng.random_range(0..CODES.len())];
        let mut value = (mean + sd * normal(&mut rng)).max(min);
        if mixed {
            let f = 10f64.powi(reported);
            value = (value * f).round() / f;
        }
        columns[0].push(people[rng.random_range(0..people.len())].clone());
        columns[1].push(code.to_string());
        columns[2].push(date(rng.random_range(0..DAYS)));
        columns[3].push(format_scaled((value * 100.0).round() as i64, 2));
        columns[4].push(unit.to_string());
    }
    let header = ["pseudonym", "jlac10", "date", "value", "unit"]
        .map(String::from)
        .to_vec();
    let marked = vec![MarkedColumn {
        column: "value".into(),
        decimals: 2,
        anchors: vec!["date".into(), "jlac10".into()],
        scheme: MarkScheme::Parity,
        precision: mixed.then(|| CodePrecision::new("jlac10", 5)),
    }];
    (Sheet { header, columns }, marked)
}

/// A standard normal variate (Box–Muller).
fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `days` after 2021-01-01 as YYYY-MM-DD (civil-from-days).
fn date(days: i64) -> String {
    let z = days + 18628 + 719_468; // 2021-01-01 is day 18628 of the Unix epoch.
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The parameters of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Rows of the synthetic table.
    pub rows: usize,
    /// Candidate recipients (each has a copy).
    pub recipients: usize,
    /// Trials.
    pub trials: usize,
    /// Share of the rows the leaked file keeps (a random sample, shuffled).
    pub subset_fraction: f64,
    /// Bound on the probability of accusing an innocent.
    pub bound: f64,
    /// Cell budget of each copy.
    pub max_cell_fraction: f64,
    /// Tardos cutoff of the plan.
    pub cutoff: f64,
    /// Seed of the table, the key and every trial.
    pub seed: u64,
}

impl Experiment {
    /// The defaults of a release: 20 recipients, a 10 % leak, bound 10^-6, 1 % of cells.
    pub fn new(rows: usize, trials: usize, seed: u64) -> Experiment {
        Experiment {
            rows,
            recipients: 20,
            trials,
            subset_fraction: 0.1,
            bound: DEFAULT_BOUND,
            max_cell_fraction: DEFAULT_MAX_CELL_FRACTION,
            cutoff: DEFAULT_CUTOFF,
            seed,
        }
    }
}

/// What an experiment found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Trials run.
    pub trials: usize,
    /// Trials where a guilty recipient was accused (always 0 when no candidate is guilty).
    pub identified: usize,
    /// Trials where at least one innocent candidate was accused (must be 0).
    pub innocent_accused: usize,
    /// Trials where the marks could not decide at all (too few positions).
    pub undecidable: usize,
    /// Fewest positions read in a trial.
    pub min_positions: usize,
    /// Mean positions read per trial.
    pub mean_positions: f64,
    /// Cells marked in each copy.
    pub marked_cells: usize,
    /// Cells of each copy.
    pub total_cells: usize,
    /// Trials whose marks were also read the slow way ([`read_marks`] on the leaked view) and compared with
    /// the precomputed per-row readings the experiment uses for speed.
    pub verified: usize,
    /// Verified trials where the two differed (must be 0).
    pub mismatches: usize,
}

/// A leaked file as a view of copies: a selection of rows (in any order) and columns (in any order, some
/// dropped); with several copies, every cell of a marked column comes from one of them, chosen at random
/// per cell (a collusion). Reading it is the same as reading the file it stands for, without copying cells.
#[derive(Debug, Clone)]
pub struct LeakedView<'a> {
    copies: Vec<&'a Sheet>,
    rows: Vec<usize>,
    columns: Vec<usize>,
    mixed: Vec<bool>,
    salt: u64,
}

impl<'a> LeakedView<'a> {
    /// A view of `copies` (at least one, all with the same header and rows, as copies of one table are):
    /// `rows` and `columns` index the first copy (and must be in range: reading a cell indexes them); cells
    /// of the columns named in `mixed` come from a copy chosen by a hash of `salt`, the row and the column.
    pub fn new(copies: Vec<&'a Sheet>, rows: Vec<usize>, columns: Vec<usize>, mixed: &[&str], salt: u64) -> Self {
        let mixed = match copies.first() {
            Some(first) => columns
                .iter()
                .map(|&c| first.header.get(c).is_some_and(|h| mixed.contains(&h.as_str())))
                .collect(),
            None => Vec::new(),
        };
        LeakedView {
            copies,
            rows,
            columns,
            mixed,
            salt,
        }
    }

    /// Which copy (index into the copies given) and which of its rows a cell of the view comes from.
    pub fn source(&self, row: usize, col: usize) -> (usize, usize) {
        let (c, r) = (self.columns[col], self.rows[row]);
        let copy = if self.mixed[col] {
            (splitmix(self.salt ^ splitmix((r as u64) << 16 ^ c as u64)) % self.copies.len() as u64) as usize
        } else {
            0
        };
        (copy, r)
    }

    /// The view as a sheet (what the leaker would write).
    pub fn to_sheet(&self) -> Sheet {
        let Some(first) = self.copies.first() else {
            return Sheet::default();
        };
        let names: Vec<&str> = self.columns.iter().map(|&c| first.header[c].as_str()).collect();
        Sheet::from_cells(self, &names)
    }
}

impl Cells for LeakedView<'_> {
    fn rows(&self) -> usize {
        if self.copies.is_empty() { 0 } else { self.rows.len() }
    }

    fn column_index(&self, name: &str) -> Option<usize> {
        let first = self.copies.first()?;
        self.columns.iter().position(|&c| first.header[c] == name)
    }

    fn cell(&self, row: usize, col: usize) -> &str {
        let (copy, r) = self.source(row, col);
        &self.copies[copy].columns[self.columns[col]][r]
    }
}

/// SplitMix64 finaliser (cheap, well-mixed; for experiment randomness only).
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every `VERIFY_EVERY`-th trial is also read through [`read_marks`] on the view and compared.
const VERIFY_EVERY: usize = 25;

/// The fixed part of an experiment: table, key, plan, the copies made once, and every row's reading.
struct Setup {
    key: FingerprintKey,
    plan: FingerprintPlan,
    marked: Vec<String>,
    candidates: Vec<String>,
    /// The copies, then the unmarked table.
    sheets: Vec<Sheet>,
    /// `readings[sheet][marked column][row]`: what reading that cell gives (all anchors present).
    readings: Vec<Vec<Vec<Reading>>>,
    marked_cells: usize,
}

impl Setup {
    fn original(&self) -> &Sheet {
        &self.sheets[self.sheets.len() - 1]
    }

    fn copies(&self) -> usize {
        self.sheets.len() - 1
    }
}

/// A table and its marked columns: what an experiment marks and leaks.
pub type Source = (Sheet, Vec<MarkedColumn>);

fn setup(
    e: &Experiment,
    (original, marked): Source,
    copies_for: &[String],
    candidates: Vec<String>,
) -> Result<Setup, FingerprintError> {
    let mut rng = StdRng::seed_from_u64(splitmix(e.seed ^ 0x006b_6579));
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    let key = FingerprintKey::from_bytes(bytes);
    let mut plan = plan(marked, &original, e.max_cell_fraction);
    plan.cutoff = e.cutoff;
    let plan = fit_plan(&key, &plan, &original, e.max_cell_fraction)?;
    let copies: Vec<(Sheet, usize)> = copies_for
        .par_iter()
        .map(|recipient| {
            let mut copy = original.clone();
            let report = embed(&key, recipient, &plan, &mut copy, e.max_cell_fraction)?;
            Ok((copy, report.marked))
        })
        .collect::<Result<_, FingerprintError>>()?;
    let marked_cells = copies.first().map_or(0, |c| c.1);
    let mut sheets: Vec<Sheet> = copies.into_iter().map(|c| c.0).collect();
    sheets.push(original);
    let prf = Prf::new(&key);
    let readings = sheets
        .par_iter()
        .map(|sheet| {
            plan.columns
                .iter()
                .map(|spec| match ColumnReader::new(spec, sheet) {
                    Some(reader) => (0..sheet.rows()).map(|r| reader.read(&prf, &plan, sheet, r)).collect(),
                    None => Vec::new(),
                })
                .collect()
        })
        .collect();
    Ok(Setup {
        key,
        marked: plan.columns.iter().map(|c| c.column.clone()).collect(),
        plan,
        candidates,
        sheets,
        readings,
        marked_cells,
    })
}

/// The marks of a view from the precomputed readings of its rows — the same as [`read_marks`] on the view
/// (a cell's reading depends only on its row's named cells), without recomputing the keyed hashes. `None`
/// if the view lacks a marked column or an anchor (the precomputed readings assume them all).
fn cached_marks(setup: &Setup, view: &LeakedView, sources: &[usize]) -> Option<Marks> {
    let mut tally = Tally::default();
    for (m, spec) in setup.plan.columns.iter().enumerate() {
        let col = view.column_index(&spec.column)?;
        if spec.anchors.iter().any(|a| view.column_index(a).is_none()) {
            return None;
        }
        tally.cells_read += view.rows();
        for row in 0..view.rows() {
            let (copy, r) = view.source(row, col);
            tally.add(*setup.readings.get(*sources.get(copy)?)?.get(m)?.get(r)?);
        }
    }
    Some(tally.finish(Vec::new(), setup.plan.cutoff))
}

fn recipients(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// A random sample of `fraction` of `rows` rows in random order.
fn sample_rows(rng: &mut StdRng, rows: usize, fraction: f64) -> Vec<usize> {
    let keep = ((rows as f64 * fraction).round() as usize).clamp(1.min(rows), rows);
    let mut picked = rand::seq::index::sample(rng, rows, keep).into_vec();
    picked.shuffle(rng);
    picked
}

/// All columns but the pseudonym (the synthetic sheet's or a release's), in random order.
fn leaked_columns(rng: &mut StdRng, sheet: &Sheet) -> Vec<usize> {
    let mut columns: Vec<usize> = (0..sheet.width())
        .filter(|&c| !matches!(sheet.header[c].as_str(), "pseudonym" | "patient_pseudonym"))
        .collect();
    columns.shuffle(rng);
    columns
}

/// One trial's leak: the view, the indices (into the setup's sheets) of the copies it is made of, and the
/// guilty candidates (indices into the candidates).
struct Leak<'s> {
    view: LeakedView<'s>,
    sources: Vec<usize>,
    guilty: Vec<usize>,
}

/// One trial's result.
#[derive(Default, Clone, Copy)]
struct TrialResult {
    identified: bool,
    innocent: bool,
    undecidable: bool,
    positions: usize,
    verified: bool,
    mismatch: bool,
}

fn run<'s, F: Fn(&mut StdRng) -> Leak<'s> + Sync>(e: &Experiment, setup: &'s Setup, trial: F) -> Outcome {
    let results: Vec<TrialResult> = (0..e.trials)
        .into_par_iter()
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(splitmix(e.seed ^ splitmix(t as u64 + 1)));
            let leak = trial(&mut rng);
            let verify = t % VERIFY_EVERY == 0;
            let (marks, mismatch) = match cached_marks(setup, &leak.view, &leak.sources) {
                Some(marks) if verify => {
                    let mismatch = read_marks(&setup.key, &setup.plan, &leak.view) != marks;
                    (marks, mismatch)
                }
                Some(marks) => (marks, false),
                None => (read_marks(&setup.key, &setup.plan, &leak.view), false),
            };
            let verdict = accuse(&setup.key, &marks, &setup.candidates, e.bound);
            let is_guilty = |name: &String| leak.guilty.iter().any(|&g| setup.candidates[g] == *name);
            TrialResult {
                identified: verdict.accused.iter().any(is_guilty),
                innocent: verdict.accused.iter().any(|a| !is_guilty(a)),
                undecidable: !verdict.decidable,
                positions: verdict.positions,
                verified: verify,
                mismatch,
            }
        })
        .collect();
    let count = |f: fn(&TrialResult) -> bool| results.iter().filter(|r| f(r)).count();
    Outcome {
        trials: e.trials,
        identified: count(|r| r.identified),
        innocent_accused: count(|r| r.innocent),
        undecidable: count(|r| r.undecidable),
        min_positions: results.iter().map(|r| r.positions).min().unwrap_or(0),
        mean_positions: results.iter().map(|r| r.positions as f64).sum::<f64>() / e.trials.max(1) as f64,
        marked_cells: setup.marked_cells,
        total_cells: setup.original().cells(),
        verified: count(|r| r.verified),
        mismatches: count(|r| r.mismatch),
    }
}

/// One recipient leaks a random `subset_fraction` of the rows of their copy, shuffled, without the pseudonym
/// column, with the other columns reordered; the trace runs against all `recipients` candidates.
pub fn single_leaker(e: &Experiment) -> Result<Outcome, FingerprintError> {
    single_leaker_on(e, synthetic_lab_sheet(e.rows, e.seed))
}

/// [`single_leaker`] on a given table (e.g. a released laboratory table, re-marked under the experiment's
/// key), so the figures of a real release's shape can be measured; `e.rows` is ignored.
pub fn single_leaker_on(e: &Experiment, source: Source) -> Result<Outcome, FingerprintError> {
    let candidates = recipients("recipient", e.recipients);
    let s = setup(e, source, &candidates, candidates.clone())?;
    Ok(run(e, &s, |rng| {
        let leaker = rng.random_range(0..s.copies());
        let copy = &s.sheets[leaker];
        let rows = sample_rows(rng, copy.rows(), e.subset_fraction);
        let columns = leaked_columns(rng, copy);
        Leak {
            view: LeakedView::new(vec![copy], rows, columns, &[], 0),
            sources: vec![leaker],
            guilty: vec![leaker],
        }
    }))
}

/// Leaks of files the candidates never had: copies made for 5 other recipients and the unmarked table,
/// at random (sampled and transformed as in [`single_leaker`]); any accusation is a false one.
pub fn innocents(e: &Experiment) -> Result<Outcome, FingerprintError> {
    innocents_on(e, synthetic_lab_sheet(e.rows, e.seed))
}

/// [`innocents`] on a given table; `e.rows` is ignored.
pub fn innocents_on(e: &Experiment, source: Source) -> Result<Outcome, FingerprintError> {
    let outsiders = recipients("outsider", 5);
    let s = setup(e, source, &outsiders, recipients("recipient", e.recipients))?;
    Ok(run(e, &s, |rng| {
        let source = rng.random_range(0..s.sheets.len());
        let sheet = &s.sheets[source];
        let rows = sample_rows(rng, sheet.rows(), e.subset_fraction);
        let columns = leaked_columns(rng, sheet);
        Leak {
            view: LeakedView::new(vec![sheet], rows, columns, &[], 0),
            sources: vec![source],
            guilty: Vec::new(),
        }
    }))
}

/// `colluders` recipients (distinct, random) mix their copies: every marked cell comes from a random one of
/// them; the rows kept (`subset_fraction`) are shuffled, the pseudonym dropped, the columns reordered.
pub fn collusion(e: &Experiment, colluders: usize) -> Result<Outcome, FingerprintError> {
    let candidates = recipients("recipient", e.recipients);
    let s = setup(e, synthetic_lab_sheet(e.rows, e.seed), &candidates, candidates.clone())?;
    let marked: Vec<&str> = s.marked.iter().map(String::as_str).collect();
    Ok(run(e, &s, |rng| {
        let guilty = rand::seq::index::sample(rng, s.copies(), colluders.clamp(1, s.copies())).into_vec();
        let copies: Vec<&Sheet> = guilty.iter().map(|&g| &s.sheets[g]).collect();
        let rows = sample_rows(rng, s.original().rows(), e.subset_fraction);
        let columns = leaked_columns(rng, s.original());
        let salt = rng.next_u64();
        Leak {
            view: LeakedView::new(copies, rows, columns, &marked, salt),
            sources: guilty.clone(),
            guilty,
        }
    }))
}
