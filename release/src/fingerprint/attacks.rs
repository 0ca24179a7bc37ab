//! The attack suite: what leakers actually do to a copy before it is found, and what tracing still finds.
//!
//! Each case takes a synthetic laboratory table shaped like a release's (`patient_pseudonym` in the
//! release's form, `jlac10`, `date`, `value` written with 2 decimals but reported at each test's own precision
//! — whole units, 0.1 or 0.01 —, `unit`), or a released table itself ([`run_on`]), makes every recipient's copy exactly
//! as the builder does (value marks, then recipient pseudonyms), lets one leaker or a coalition produce a
//! file — a sample of rows, shuffled, columns reordered, then the attack — and traces it with
//! [`trace_cells`], the decision the release service runs. Innocent trials leak copies made for outsiders
//! and the unmarked table under the same attack; any accusation there is a false one. Deterministic from the
//! seed; the unit tests run it small and `tokumei bench release --parts attacks` at full size.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cells::Sheet;
use super::experiments::{Source, mixed_precision_lab_sheet};
use super::pseudonyms::{PSEUDONYM_COLUMN, RecipientPseudonyms};
use super::{
    DEFAULT_BOUND, DEFAULT_MAX_CELL_FRACTION, FingerprintError, FingerprintKey, FingerprintPlan, embed, fit_plan, plan,
    trace_cells,
};

/// What the leaker does to the file (after sampling rows, shuffling and reordering columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// Nothing more.
    AsReceived,
    /// Values rounded to one decimal.
    Round,
    /// ±1 unit of the last decimal written (0.01) added to every value at random: damage nobody would notice
    /// in a two-decimal value (a whole-number test written `183.00` becomes `183.01`).
    Noise,
    /// ±1 unit, then rounded to one decimal.
    RoundNoise,
    /// Codes re-coded one level up their hierarchy (JLAC10 code → analyte).
    Recode,
    /// Re-coded, ±1 unit, rounded.
    RecodeRoundNoise,
    /// Every column dropped but the codes and dates.
    CodesAndDates,
    /// Written as a spreadsheet would re-save it (`;`-separated, CRLF, every cell quoted, upper-case hex)
    /// and read back by the trace's reader.
    Reencode,
    /// Pseudonyms replaced, consistently, by new random ones (the file still joins).
    ReplacePseudonyms,
    /// Pseudonyms replaced, values ±1 unit and rounded: everything a careful leaker does to values and ids.
    ReplaceRoundNoise,
    /// Pseudonyms replaced, every value moved by ±1 unit of its own test's precision as the leaker sees it in
    /// the file (1 for a whole-number test, 0.1 for HbA1c, 0.01 for creatinine), then rounded: visible damage
    /// to every value, the strongest edit of the suite.
    ReplaceRoundTestNoise,
}

impl Attack {
    /// Every attack, in the order of the docs' table.
    pub const ALL: [Attack; 11] = [
        Attack::AsReceived,
        Attack::Round,
        Attack::Noise,
        Attack::RoundNoise,
        Attack::Recode,
        Attack::RecodeRoundNoise,
        Attack::CodesAndDates,
        Attack::Reencode,
        Attack::ReplacePseudonyms,
        Attack::ReplaceRoundNoise,
        Attack::ReplaceRoundTestNoise,
    ];

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Attack::AsReceived => "as received",
            Attack::Round => "rounded to 0.1",
            Attack::Noise => "±1 unit noise",
            Attack::RoundNoise => "±1 unit, rounded to 0.1",
            Attack::Recode => "codes one level up",
            Attack::RecodeRoundNoise => "codes up, ±1 unit, rounded",
            Attack::CodesAndDates => "codes and dates only",
            Attack::Reencode => "re-saved (; CRLF quoted)",
            Attack::ReplacePseudonyms => "pseudonyms replaced",
            Attack::ReplaceRoundNoise => "pseudonyms replaced, ±1 unit, rounded",
            Attack::ReplaceRoundTestNoise => "pseudonyms replaced, ±1 test unit, rounded",
        }
    }
}

/// Who leaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leakers {
    /// One recipient.
    One,
    /// Three recipients mixing their copies cell by cell (the pseudonyms of one of them, so files join).
    MixThree,
    /// Three recipients taking, per cell, the value most of them have.
    MajorityThree,
    /// Three recipients averaging their values (to 2 decimals).
    AverageThree,
}

impl Leakers {
    fn count(self) -> usize {
        if self == Leakers::One { 1 } else { 3 }
    }

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Leakers::One => "1 leaker",
            Leakers::MixThree => "3 mixing",
            Leakers::MajorityThree => "3 majority",
            Leakers::AverageThree => "3 averaging",
        }
    }
}

/// One line of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The attack.
    pub attack: Attack,
    /// Who leaks.
    pub leakers: Leakers,
    /// Share of the rows kept.
    pub fraction: f64,
}

/// The suite's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    /// Rows of the synthetic table (about 8 per patient).
    pub rows: usize,
    /// Recipients (each has a copy and is a candidate).
    pub recipients: usize,
    /// Trials per case with guilty leakers.
    pub trials: usize,
    /// Trials per attack leaking outsiders' copies or the unmarked table.
    pub innocent_trials: usize,
    /// Bound on accusing any innocent.
    pub bound: f64,
    /// Seed of the table, the key and every trial.
    pub seed: u64,
}

impl Suite {
    /// A release's defaults: 10 recipients, bound 10⁻⁶.
    pub fn new(rows: usize, trials: usize, innocent_trials: usize, seed: u64) -> Suite {
        Suite {
            rows,
            recipients: 10,
            trials,
            innocent_trials,
            bound: DEFAULT_BOUND,
            seed,
        }
    }
}

/// What one case found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseOutcome {
    /// The case.
    pub case: Case,
    /// Trials with guilty leakers.
    pub trials: usize,
    /// Of those, trials where a leaker was accused.
    pub identified: usize,
    /// Of those, trials where an innocent candidate was accused as well (must be 0).
    pub innocent_accused: usize,
    /// Trials where the value marks accused a leaker.
    pub by_values: usize,
    /// Trials where the pseudonyms accused a leaker.
    pub by_pseudonyms: usize,
    /// Trials where the file kept no carrier at all (the real trace refuses it as untraceable).
    pub no_carrier: usize,
    /// Mean value-mark positions read per trial.
    pub mean_positions: f64,
}

/// Innocent trials of one attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InnocentOutcome {
    /// The attack.
    pub attack: Attack,
    /// Share of the rows kept.
    pub fraction: f64,
    /// Trials.
    pub trials: usize,
    /// Trials where any candidate was accused (must be 0).
    pub accused: usize,
}

/// The copies every trial leaks from.
struct Setup {
    key: FingerprintKey,
    plan: FingerprintPlan,
    candidates: Vec<String>,
    /// The candidates' copies, then the outsiders', then the unmarked table (release pseudonyms).
    sheets: Vec<Sheet>,
}

const OUTSIDERS: usize = 5;

/// The synthetic table in a release's form: the pseudonym column named and shaped as in a release (32 hex).
fn release_like(rows: usize, seed: u64) -> Source {
    let (mut sheet, marked) = mixed_precision_lab_sheet(rows, seed);
    if let Some(c) = sheet.index_of("pseudonym") {
        sheet.header[c] = PSEUDONYM_COLUMN.into();
        for cell in &mut sheet.columns[c] {
            // 16 hex of the synthetic id, extended by a hash of it to the release's 32.
            let h = cell.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            cell.push_str(&format!("{:016x}", super::experiments::splitmix(h)));
        }
    }
    (sheet, marked)
}

fn setup(s: &Suite, (original, marked): Source) -> Result<Setup, FingerprintError> {
    let mut rng = StdRng::seed_from_u64(s.seed ^ 0x6b65_795f_6174_6b73);
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    let key = FingerprintKey::from_bytes(bytes);
    let rough = plan(marked, &original, DEFAULT_MAX_CELL_FRACTION);
    let plan = fit_plan(&key, &rough, &original, DEFAULT_MAX_CELL_FRACTION)?;
    let candidates: Vec<String> = (0..s.recipients).map(|i| format!("recipient-{i:02}")).collect();
    let outsiders: Vec<String> = (0..OUTSIDERS).map(|i| format!("outsider-{i}")).collect();
    let mut sheets = candidates
        .iter()
        .chain(&outsiders)
        .collect::<Vec<_>>()
        .par_iter()
        .map(|recipient| {
            let mut copy = original.clone();
            embed(&key, recipient, &plan, &mut copy, DEFAULT_MAX_CELL_FRACTION)?;
            if let Some(c) = copy.index_of(PSEUDONYM_COLUMN) {
                RecipientPseudonyms::new(&key, recipient).rewrite(&mut copy.columns[c])?;
            }
            Ok(copy)
        })
        .collect::<Result<Vec<Sheet>, FingerprintError>>()?;
    sheets.push(original);
    Ok(Setup {
        key,
        plan,
        candidates,
        sheets,
    })
}

/// The file a coalition writes from `copies` (indices into the setup's sheets; the first is the front whose
/// pseudonyms are kept): rows sampled, shuffled, columns reordered, values combined per `leakers`.
fn combine(setup: &Setup, copies: &[usize], leakers: Leakers, fraction: f64, rng: &mut StdRng) -> Sheet {
    let front = &setup.sheets[copies[0]];
    let rows = front.rows();
    let keep = ((rows as f64 * fraction).round() as usize).clamp(1.min(rows), rows);
    let mut picked = rand::seq::index::sample(rng, rows, keep).into_vec();
    picked.shuffle(rng);
    let mut sheet = front.subset(&picked);
    if let Some(v) = sheet.index_of("value") {
        for (i, &r) in picked.iter().enumerate() {
            let cells: Vec<&str> = copies.iter().map(|&c| setup.sheets[c].columns[v][r].as_str()).collect();
            sheet.columns[v][i] = match leakers {
                Leakers::One => continue,
                Leakers::MixThree => cells[rng.random_range(0..cells.len())].to_owned(),
                Leakers::MajorityThree => majority(&cells),
                Leakers::AverageThree => average(&cells),
            };
        }
    }
    sheet.shuffle_columns(rng);
    sheet
}

fn majority(cells: &[&str]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for c in cells {
        *counts.entry(c).or_default() += 1;
    }
    // Most frequent; the first copy's on a tie.
    let best = counts.values().copied().max().unwrap_or(0);
    cells
        .iter()
        .find(|c| counts.get(*c) == Some(&best))
        .map_or_else(String::new, |c| (*c).to_owned())
}

fn average(cells: &[&str]) -> String {
    let values: Vec<f64> = cells.iter().filter_map(|c| c.trim().parse().ok()).collect();
    if values.len() != cells.len() || values.is_empty() {
        return cells.first().map_or_else(String::new, |c| (*c).to_owned());
    }
    format!("{:.2}", values.iter().sum::<f64>() / values.len() as f64)
}

/// Applies `attack` to a leaked file; returns what the trace reads.
fn apply(attack: Attack, mut sheet: Sheet, rng: &mut StdRng) -> Sheet {
    let test_noise = attack == Attack::ReplaceRoundTestNoise;
    let noise = test_noise
        || matches!(
            attack,
            Attack::Noise | Attack::RoundNoise | Attack::RecodeRoundNoise | Attack::ReplaceRoundNoise
        );
    let round = matches!(
        attack,
        Attack::Round
            | Attack::RoundNoise
            | Attack::RecodeRoundNoise
            | Attack::ReplaceRoundNoise
            | Attack::ReplaceRoundTestNoise
    );
    if let Some(v) = sheet.index_of("value") {
        let units = if test_noise {
            reported_units(&sheet, v)
        } else {
            HashMap::new()
        };
        let code = sheet.index_of("jlac10");
        for row in 0..sheet.rows() {
            let cell = &sheet.columns[v][row];
            let Ok(mut x) = cell.trim().parse::<f64>() else {
                continue;
            };
            let written = written_decimals(cell);
            if noise {
                let test = code.map_or("", |c| sheet.columns[c][row].as_str());
                let unit = units.get(test).copied().unwrap_or(0.01);
                x += if rng.random_bool(0.5) { unit } else { -unit };
            }
            if noise || round {
                let decimals = if round { 1 } else { written };
                sheet.columns[v][row] = format!("{x:.decimals$}");
            }
        }
    }
    if matches!(attack, Attack::Recode | Attack::RecodeRoundNoise)
        && let Some(c) = sheet.index_of("jlac10")
    {
        for cell in &mut sheet.columns[c] {
            cell.truncate(5);
        }
    }
    if matches!(
        attack,
        Attack::ReplacePseudonyms | Attack::ReplaceRoundNoise | Attack::ReplaceRoundTestNoise
    ) && let Some(c) = sheet.index_of(PSEUDONYM_COLUMN)
    {
        let mut fresh: HashMap<String, String> = HashMap::new();
        for cell in &mut sheet.columns[c] {
            let new = fresh
                .entry(std::mem::take(cell))
                .or_insert_with(|| format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64()));
            *cell = new.clone();
        }
    }
    if attack == Attack::CodesAndDates {
        sheet.select_columns(&["jlac10", "date"]);
    }
    if attack == Attack::Reencode {
        return reencode(&sheet).unwrap_or(sheet);
    }
    sheet
}

/// Digits after the decimal point of a cell as written.
fn written_decimals(cell: &str) -> usize {
    cell.trim().split_once('.').map_or(0, |(_, f)| f.len())
}

/// One unit of each test's own precision as a leaker sees it in the file: 10^-d for the most decimals d any
/// value of that code uses (trailing zeros dropped) — so ±1 unit moves a whole-number test by 1, a creatinine
/// value by 0.01.
fn reported_units(sheet: &Sheet, value: usize) -> HashMap<String, f64> {
    let Some(code) = sheet.index_of("jlac10") else {
        return HashMap::new();
    };
    let mut used: HashMap<String, i32> = HashMap::new();
    for row in 0..sheet.rows() {
        let cell = sheet.columns[value][row].trim();
        let d = cell.split_once('.').map_or(0, |(_, f)| f.trim_end_matches('0').len());
        let e = used.entry(sheet.columns[code][row].clone()).or_insert(0);
        *e = (*e).max(d as i32);
    }
    used.into_iter().map(|(c, d)| (c, 10f64.powi(-d))).collect()
}

/// The file as a spreadsheet re-saves it, read back by the trace's own reader.
fn reencode(sheet: &Sheet) -> Option<Sheet> {
    let mut out = csv::WriterBuilder::new()
        .delimiter(b';')
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
    out.write_record(&sheet.header).ok()?;
    for r in 0..sheet.rows() {
        let row: Vec<String> = sheet.row(r).iter().map(|c| c.to_uppercase()).collect();
        out.write_record(&row).ok()?;
    }
    let bytes = out.into_inner().ok()?;
    let table = crate::trace::read_leaked_bytes("leak.csv", bytes).ok()?;
    let names: Vec<String> = (0..sheet.width()).map(|c| sheet.header[c].clone()).collect();
    Some(Sheet::from_cells(&table, &names))
}

/// What one trial's trace says.
struct Trial {
    accused: Vec<String>,
    by_values: Vec<String>,
    by_pseudonyms: Vec<String>,
    carriers: usize,
    positions: usize,
}

fn trace(setup: &Setup, sheet: &Sheet, bound: f64) -> Trial {
    let plan = setup.plan.readable_in(sheet).then_some(("observations", &setup.plan));
    let t = trace_cells(&setup.key, plan, true, sheet, &setup.candidates, bound);
    Trial {
        accused: t.accused,
        by_values: t.verdict.accused,
        by_pseudonyms: t.pseudonyms.map(|p| p.accused).unwrap_or_default(),
        carriers: t.carriers.len(),
        positions: t.verdict.positions,
    }
}

fn trial_rng(s: &Suite, salt: u64, t: usize) -> StdRng {
    StdRng::seed_from_u64(s.seed ^ salt.rotate_left(17) ^ (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// One guilty trial, scored.
struct Scored {
    identified: bool,
    innocent: bool,
    by_values: bool,
    by_pseudonyms: bool,
    no_carrier: bool,
    positions: usize,
}

fn run_case(s: &Suite, setup: &Setup, case: Case, salt: u64) -> CaseOutcome {
    let trials: Vec<Scored> = (0..s.trials)
        .into_par_iter()
        .map(|t| {
            let mut rng = trial_rng(s, salt, t);
            let guilty = rand::seq::index::sample(&mut rng, setup.candidates.len(), case.leakers.count()).into_vec();
            let sheet = combine(setup, &guilty, case.leakers, case.fraction, &mut rng);
            let sheet = apply(case.attack, sheet, &mut rng);
            let r = trace(setup, &sheet, s.bound);
            let is_guilty = |name: &String| guilty.iter().any(|&g| setup.candidates[g] == *name);
            Scored {
                identified: r.accused.iter().any(is_guilty),
                innocent: r.accused.iter().any(|a| !is_guilty(a)),
                by_values: r.by_values.iter().any(is_guilty),
                by_pseudonyms: r.by_pseudonyms.iter().any(is_guilty),
                no_carrier: r.carriers == 0,
                positions: r.positions,
            }
        })
        .collect();
    let count = |f: fn(&Scored) -> bool| trials.iter().filter(|t| f(t)).count();
    CaseOutcome {
        case,
        trials: s.trials,
        identified: count(|t| t.identified),
        innocent_accused: count(|t| t.innocent),
        by_values: count(|t| t.by_values),
        by_pseudonyms: count(|t| t.by_pseudonyms),
        no_carrier: count(|t| t.no_carrier),
        mean_positions: trials.iter().map(|t| t.positions as f64).sum::<f64>() / s.trials.max(1) as f64,
    }
}

fn run_innocents(s: &Suite, setup: &Setup, attack: Attack, fraction: f64, salt: u64) -> InnocentOutcome {
    let first_outsider = setup.candidates.len();
    let accused = (0..s.innocent_trials)
        .into_par_iter()
        .filter(|&t| {
            let mut rng = trial_rng(s, salt, t);
            let source = rng.random_range(first_outsider..setup.sheets.len());
            let sheet = combine(setup, &[source], Leakers::One, fraction, &mut rng);
            let sheet = apply(attack, sheet, &mut rng);
            !trace(setup, &sheet, s.bound).accused.is_empty()
        })
        .count();
    InnocentOutcome {
        attack,
        fraction,
        trials: s.innocent_trials,
        accused,
    }
}

/// The suite's cases: every attack by one leaker on a tenth and on the whole copy; the three coalitions on
/// a tenth and on the whole copy, as received and after ±1 unit and rounding.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for fraction in [0.1, 1.0] {
        for attack in Attack::ALL {
            out.push(Case {
                attack,
                leakers: Leakers::One,
                fraction,
            });
        }
        for leakers in [Leakers::MixThree, Leakers::MajorityThree, Leakers::AverageThree] {
            for attack in [Attack::AsReceived, Attack::RoundNoise, Attack::ReplacePseudonyms] {
                out.push(Case {
                    attack,
                    leakers,
                    fraction,
                });
            }
        }
    }
    out
}

/// What a run of the suite found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteOutcome {
    /// How each marked column carries its bits, as the fitted plan chose (boundary or parity).
    pub schemes: Vec<(String, super::MarkScheme)>,
    /// Code positions the fitted plan marks.
    pub positions: usize,
    /// Every case's outcome.
    pub cases: Vec<CaseOutcome>,
    /// The innocent trials of every attack the cases use.
    pub innocents: Vec<InnocentOutcome>,
}

/// Runs `cases` and the innocent trials of every attack they use (on a tenth of the rows) on the synthetic
/// table of `s.rows` rows; `progress` is told each case as it starts.
pub fn run(s: &Suite, cases: &[Case], progress: &(dyn Fn(&str) + Sync)) -> Result<SuiteOutcome, FingerprintError> {
    run_on(s, release_like(s.rows, s.seed), cases, progress)
}

/// [`run`] on `source`, a released table (its `patient_pseudonym` column, if any, is rewritten per copy as the
/// builder does) and its marked columns; `s.rows` is ignored.
pub fn run_on(
    s: &Suite,
    source: Source,
    cases: &[Case],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<SuiteOutcome, FingerprintError> {
    progress("making the copies");
    let setup = setup(s, source)?;
    let mut outcomes = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        progress(&format!(
            "case {}/{}: {}, {}, {:.0} % of rows",
            i + 1,
            cases.len(),
            case.attack.label(),
            case.leakers.label(),
            case.fraction * 100.0
        ));
        outcomes.push(run_case(s, &setup, *case, i as u64 + 1));
    }
    let mut innocents = Vec::new();
    if s.innocent_trials > 0 {
        // Every attack the cases use, in the table's order.
        let used: Vec<Attack> = Attack::ALL
            .into_iter()
            .filter(|a| cases.iter().any(|c| c.attack == *a))
            .collect();
        for (i, attack) in used.iter().enumerate() {
            progress(&format!("innocents: {}", attack.label()));
            innocents.push(run_innocents(s, &setup, *attack, 0.1, 1_000 + i as u64));
        }
    }
    Ok(SuiteOutcome {
        schemes: setup
            .plan
            .columns
            .iter()
            .map(|c| (c.column.clone(), c.scheme))
            .collect(),
        positions: setup.plan.positions.as_ref().map_or(0, |p| p.len()),
        cases: outcomes,
        innocents,
    })
}

/// The cases that the fingerprint issue's figures are stated for: one leaker and three mixing colluders,
/// a tenth of the rows, ±1 unit and rounded, with pseudonyms kept and replaced; and the strongest edit (±1 unit
/// of each test's own precision) with pseudonyms replaced.
pub fn headline_cases() -> Vec<Case> {
    [
        (Attack::RoundNoise, Leakers::One),
        (Attack::RoundNoise, Leakers::MixThree),
        (Attack::ReplaceRoundNoise, Leakers::One),
        (Attack::ReplacePseudonyms, Leakers::One),
        (Attack::ReplacePseudonyms, Leakers::MixThree),
        (Attack::ReplaceRoundNoise, Leakers::MixThree),
        (Attack::ReplaceRoundTestNoise, Leakers::One),
        (Attack::ReplaceRoundTestNoise, Leakers::MixThree),
    ]
    .into_iter()
    .map(|(attack, leakers)| Case {
        attack,
        leakers,
        fraction: 0.1,
    })
    .collect()
}

/// The suite's results as the Markdown table of docs/release.md.
pub fn markdown(outcomes: &[CaseOutcome], innocents: &[InnocentOutcome]) -> String {
    let mut out = String::from(
        "| attack | leakers | rows kept | leaker accused | by values | by pseudonyms | innocents accused (same trials) | mean positions |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes.iter().filter(|o| o.trials > 0) {
        out.push_str(&format!(
            "| {} | {} | {:.0} % | {}/{} | {} | {} | {} | {:.0} |\n",
            o.case.attack.label(),
            o.case.leakers.label(),
            o.case.fraction * 100.0,
            o.identified,
            o.trials,
            o.by_values,
            o.by_pseudonyms,
            o.innocent_accused,
            o.mean_positions
        ));
    }
    if !innocents.is_empty() {
        out.push_str("\n| attack on an outsider's or the unmarked copy (10 % of rows) | trials | anyone accused |\n|---|---|---|\n");
        for i in innocents {
            out.push_str(&format!("| {} | {} | {} |\n", i.attack.label(), i.trials, i.accused));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(all: &[CaseOutcome], attack: Attack, leakers: Leakers, fraction: f64) -> &CaseOutcome {
        all.iter()
            .find(|o| o.case.attack == attack && o.case.leakers == leakers && o.case.fraction == fraction)
            .unwrap_or_else(|| panic!("no case {attack:?} {leakers:?} {fraction}"))
    }

    #[test]
    fn the_suite_finds_what_each_carrier_should_and_never_an_innocent() {
        let s = Suite::new(8_000, 12, 40, 7);
        let SuiteOutcome {
            schemes,
            cases: all,
            innocents,
            ..
        } = run(&s, &cases(), &|_| {}).unwrap();
        // At this size the fit keeps the boundary scheme (its positions reach half of parity's).
        assert_eq!(schemes, vec![("value".to_owned(), super::super::MarkScheme::Boundary)]);
        for o in &all {
            assert_eq!(o.innocent_accused, 0, "{o:?}");
        }
        for i in &innocents {
            assert_eq!(i.accused, 0, "{i:?}");
        }
        // Pseudonyms kept: every value attack is traced, on a tenth, by one leaker and by every coalition.
        for attack in [
            Attack::AsReceived,
            Attack::Round,
            Attack::Noise,
            Attack::RoundNoise,
            Attack::Recode,
            Attack::RecodeRoundNoise,
            Attack::Reencode,
        ] {
            let o = outcome(&all, attack, Leakers::One, 0.1);
            assert_eq!(o.by_pseudonyms, o.trials, "{o:?}");
        }
        for leakers in [Leakers::MixThree, Leakers::MajorityThree, Leakers::AverageThree] {
            let o = outcome(&all, Attack::RoundNoise, leakers, 0.1);
            assert_eq!(o.identified, o.trials, "{o:?}");
        }
        // Value marks alone (pseudonyms replaced): the whole copy is traced as received and after ±1 unit and
        // rounding to one decimal (the boundary scheme).
        for attack in [Attack::ReplacePseudonyms, Attack::ReplaceRoundNoise] {
            let o = outcome(&all, attack, Leakers::One, 1.0);
            assert_eq!((o.by_values, o.by_pseudonyms), (o.trials, 0), "{o:?}");
        }
        // Nothing left to read.
        let o = outcome(&all, Attack::CodesAndDates, Leakers::One, 0.1);
        assert_eq!(o.no_carrier, o.trials, "{o:?}");
    }

    #[test]
    fn a_re_saved_file_reads_as_the_original() {
        let (sheet, _) = release_like(50, 3);
        let back = reencode(&sheet).unwrap();
        assert_eq!(back.header, sheet.header);
        assert_eq!(back.rows(), sheet.rows());
        let p = sheet.index_of(PSEUDONYM_COLUMN).unwrap();
        assert_eq!(back.columns[p][0], sheet.columns[p][0].to_uppercase());
    }
}
