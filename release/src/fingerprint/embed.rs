//! Planning and embedding: which cells carry a mark, and writing one recipient's code into them.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cells::Sheet;
use super::prf::Prf;
use super::read::{Candidates, ColumnReader};
use super::value::{MAX_DECIMALS, parse_scaled, render_scaled};
use super::{DEFAULT_CUTOFF, FingerprintError, FingerprintKey, FingerprintPlan, MarkScheme, MarkedColumn};

/// Rows per parallel task when embedding.
const CHUNK: usize = 16 * 1024;

/// Share of the cell budget the expected number of marks may use; the rest (together with
/// [`BUDGET_SIGMAS`]) absorbs the randomness of the selection, so that [`embed`] practically never refuses
/// a plan made by [`plan`].
pub const BUDGET_SHARE: f64 = 0.9;

/// Standard deviations of the number of marked cells kept below the budget by [`plan`].
pub const BUDGET_SIGMAS: f64 = 5.0;

/// Share of a column's on-grid cells whose last digit must be non-zero for [`plan`] to mark it with the
/// boundary scheme ([`MarkScheme::Boundary`]): values that use their last decimal. Below it (whole numbers
/// written with decimals) a boundary mark would be the only non-zero digit in sight, so parity is used.
pub const BOUNDARY_MIN_SHARE: f64 = 0.5;

/// Values a code needs in a table before [`plan`] takes the decimals they use as its precision; codes with
/// fewer keep the column's (a few values of a two-decimal test may all end in 0 by chance).
pub const PRECISION_MIN_CELLS: usize = 20;

/// Decimal places a value of `q` units of 10^-`decimals` uses (trailing zeros dropped).
fn used_decimals(mut q: i64, mut decimals: u32) -> u32 {
    while decimals > 0 && q % 10 == 0 {
        q /= 10;
        decimals -= 1;
    }
    decimals
}

/// Fills `column`'s per-code precision from `sheet`: the most decimals any value of a code uses, for codes
/// with at least [`PRECISION_MIN_CELLS`] values on the column's grid.
fn find_precision(column: &mut MarkedColumn, sheet: &Sheet) {
    let decimals = column.decimals;
    let Some(precision) = column.precision.as_mut() else {
        return;
    };
    let (Some(values), Some(codes)) = (sheet.column(&column.column), sheet.column(&precision.code_column)) else {
        return;
    };
    let mut seen: HashMap<&str, (usize, u32)> = HashMap::new();
    for (value, code) in values.iter().zip(codes) {
        if let Some(v) = parse_scaled(value, decimals).filter(|v| v.on_grid) {
            let entry = seen.entry(precision.key(code)).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(used_decimals(v.q, decimals));
        }
    }
    precision.decimals = seen
        .into_iter()
        .filter(|(_, (n, _))| *n >= PRECISION_MIN_CELLS)
        .map(|(code, (_, d))| (code.to_owned(), d))
        .collect();
}

/// Decimal places of the cell of `row` of `spec`, whose code column (if any) is `codes`.
fn cell_decimals(spec: &MarkedColumn, codes: Option<&[String]>, row: usize) -> u32 {
    spec.decimals_at(codes.map(|c| c[row].as_str()))
}

/// The scheme for a column's cells: boundary when most on-grid values use their last digit (at their own
/// code's precision, when the column has one).
fn choose_scheme(spec: &MarkedColumn, sheet: &Sheet) -> MarkScheme {
    let Some(cells) = sheet.column(&spec.column) else {
        return MarkScheme::Parity;
    };
    let codes = spec.precision.as_ref().and_then(|p| sheet.column(&p.code_column));
    let (mut on_grid, mut used) = (0usize, 0usize);
    for (row, cell) in cells.iter().enumerate() {
        if let Some(v) = parse_scaled(cell, cell_decimals(spec, codes, row)).filter(|v| v.on_grid) {
            on_grid += 1;
            used += usize::from(v.q.rem_euclid(10) != 0);
        }
    }
    if on_grid > 0 && used as f64 >= BOUNDARY_MIN_SHARE * on_grid as f64 {
        MarkScheme::Boundary
    } else {
        MarkScheme::Parity
    }
}

/// The part of a value its position is keyed on, if the cell can carry a mark under `scheme`.
fn coarse_of(q: i64, scheme: MarkScheme) -> Option<i64> {
    match scheme {
        MarkScheme::Parity => Some(q.div_euclid(2)),
        MarkScheme::Boundary => matches!(q.rem_euclid(10), 4 | 5).then(|| q.div_euclid(10)),
    }
}

/// A marked cell's new value for `bit`.
fn marked_value(coarse: i64, bit: bool, scheme: MarkScheme) -> i64 {
    match scheme {
        MarkScheme::Parity => 2 * coarse + i64::from(bit),
        MarkScheme::Boundary => 10 * coarse + if bit { 6 } else { 3 },
    }
}

/// Chooses the selection rate for `sheet` so that embedding touches at most `max_cell_fraction` of all its
/// cells (rows × columns).
///
/// The number of marked cells is random (it depends on the key); cells that share a position are marked
/// together, so it is clustered. With M markable cells, the budget B = ⌊fraction × cells⌋ and V an upper
/// bound on Σ (cluster size)² (every cell of a column with the same coarse value in one cluster — the worst
/// case of the anchor choice), the rate r is the largest with r·M ≤ [`BUDGET_SHARE`]·B and
/// r·M + [`BUDGET_SIGMAS`]·√(r·V) ≤ B, and r ≤ 1. Selection is the same for every recipient, so if one copy
/// fits the budget, all do.
///
/// The cutoff is [`DEFAULT_CUTOFF`] (= 1/(300·c), c = 3 colluders, as in Tardos' code). Marked columns or
/// anchors that are not in `sheet` contribute nothing here; [`embed`] reports them. A fraction that is not
/// in (0, 1] gives rate 0 (nothing marked).
pub fn plan(mut columns: Vec<MarkedColumn>, sheet: &Sheet, max_cell_fraction: f64) -> FingerprintPlan {
    let budget = cell_budget(sheet.cells(), max_cell_fraction) as f64;
    let mut markable = 0u64;
    let mut clustered = 0f64;
    for column in &mut columns {
        let Some(cells) = sheet.column(&column.column) else {
            continue;
        };
        if column.decimals > MAX_DECIMALS {
            continue;
        }
        find_precision(column, sheet);
        column.scheme = choose_scheme(column, sheet);
        let codes = column.precision.as_ref().and_then(|p| sheet.column(&p.code_column));
        let mut groups: HashMap<i64, u64> = HashMap::new();
        for (row, cell) in cells.iter().enumerate() {
            if let Some(coarse) = parse_scaled(cell, cell_decimals(column, codes, row))
                .filter(|v| v.on_grid)
                .and_then(|v| coarse_of(v.q, column.scheme))
            {
                markable += 1;
                *groups.entry(coarse).or_default() += 1;
            }
        }
        clustered += groups.values().map(|&n| (n * n) as f64).sum::<f64>();
    }
    let rate = if markable == 0 || budget <= 0.0 {
        0.0
    } else {
        let m = markable as f64;
        // r·m + z·√(r·V) ≤ B with x = √r: m·x² + z·√V·x − B ≤ 0.
        let zv = BUDGET_SIGMAS * clustered.sqrt();
        let x = (-zv + (zv * zv + 4.0 * m * budget).sqrt()) / (2.0 * m);
        (x * x).min(BUDGET_SHARE * budget / m).min(1.0)
    };
    FingerprintPlan {
        columns,
        rate,
        cutoff: DEFAULT_CUTOFF,
        positions: None,
    }
}

/// ⌊fraction × cells⌋, 0 for a fraction outside (0, 1].
fn cell_budget(cells: usize, fraction: f64) -> usize {
    if fraction.is_finite() && fraction > 0.0 && fraction <= 1.0 {
        (fraction * cells as f64).floor() as usize
    } else {
        0
    }
}

/// The plan that, under this key, marks as many distinct code positions as ⌊`max_cell_fraction` × cells⌋
/// altered cells allow — exactly, not in expectation.
///
/// Cells that share a position (equal coarse value and anchor) are marked together, and a leaked sample
/// keeping a share f of the rows still shows a position of n cells with probability 1 − (1 − f)^n ≤ n·f:
/// per cell of the budget, positions carried by few cells are worth the most at every sample size. So the
/// positions of the sheet are ranked by the number of cells that carry them (fewest first), ties broken by
/// the keyed selector (so the choice depends on the key, not on the order of rows), and taken while the
/// budget allows. The chosen set is kept in the plan ([`FingerprintPlan::positions`]; the rate becomes 1),
/// so the tracer needs no cluster sizes. Which cells are marked depends on the key but not on the
/// recipient, so every copy uses the same count and [`embed`] with the same budget never refuses. The
/// cutoff and columns are kept; the plan is checked as by [`embed`].
///
/// A boundary-scheme column is also fitted under parity, and keeps the boundary scheme only if that yields
/// at least [`BOUNDARY_MIN_POSITION_SHARE`] of parity's positions: a boundary position is read by every cell of
/// its 10-unit bin and must not be outvoted by the unmarked ones ([`MAX_INTERFERENCE`]), which on a laboratory
/// table with coarse anchors (dates generalised, ten test codes, whole-number tests) leaves a few hundred
/// positions whatever the table's size — there, parity at each test's own precision (a whole-number test moves
/// by one, and rounding to one decimal leaves it) is the better code.
pub fn fit_plan(
    key: &FingerprintKey,
    plan: &FingerprintPlan,
    sheet: &Sheet,
    max_cell_fraction: f64,
) -> Result<FingerprintPlan, FingerprintError> {
    let fitted = fit_schemes(key, plan, sheet, max_cell_fraction)?;
    if plan.columns.iter().all(|c| c.scheme.is_parity()) {
        return Ok(fitted);
    }
    let mut parity = plan.clone();
    for column in &mut parity.columns {
        column.scheme = MarkScheme::Parity;
    }
    let alternative = fit_schemes(key, &parity, sheet, max_cell_fraction)?;
    let count = |p: &FingerprintPlan| p.positions.as_ref().map_or(0, |s| s.len()) as f64;
    Ok(if count(&fitted) >= BOUNDARY_MIN_POSITION_SHARE * count(&alternative) {
        fitted
    } else {
        alternative
    })
}

/// Sums two tallies of counts per position (the smaller into the larger).
fn merge_counts(a: HashMap<u64, u32>, b: HashMap<u64, u32>) -> HashMap<u64, u32> {
    let (small, mut large) = if a.len() < b.len() { (a, b) } else { (b, a) };
    for (position, n) in small {
        *large.entry(position).or_default() += n;
    }
    large
}

/// Unmarked cells a boundary position may be read at, per marked cell carrying it, for [`fit_plan`] to keep it.
/// Such cells show the same bit in every copy — noise to the tracer, never evidence against an innocent (the
/// bound holds for any file that does not depend on the innocent's code) — so a position is worth marking as
/// long as its marked cells outvote them in what a leak keeps: here at least two marked cells per such cell.
pub const MAX_INTERFERENCE: f64 = 0.5;

/// Share of the parity fit's positions a boundary fit must reach to be kept (see [`fit_plan`]).
pub const BOUNDARY_MIN_POSITION_SHARE: f64 = 0.5;

/// [`fit_plan`] with the plan's schemes as they are.
pub(crate) fn fit_schemes(
    key: &FingerprintKey,
    plan: &FingerprintPlan,
    sheet: &Sheet,
    max_cell_fraction: f64,
) -> Result<FingerprintPlan, FingerprintError> {
    sheet.check()?;
    let resolved = resolve(plan, sheet)?;
    let prf = Prf::new(key);
    let rows = sheet.rows();
    let allowed = cell_budget(sheet.cells(), max_cell_fraction);
    let readers: Vec<Option<ColumnReader>> = resolved.iter().map(|r| ColumnReader::new(r.spec, sheet)).collect();
    let (counts, interfered) = (0..rows.div_ceil(CHUNK))
        .into_par_iter()
        .map(|i| {
            let mut counts: HashMap<u64, u32> = HashMap::new();
            let mut interfered: HashMap<u64, u32> = HashMap::new();
            for (r, reader) in resolved.iter().zip(&readers) {
                for row in i * CHUNK..((i + 1) * CHUNK).min(rows) {
                    let own = locate(&prf, sheet, r, row).map(|cell| cell.position);
                    if let Some(position) = own {
                        *counts.entry(position).or_default() += 1;
                    }
                    // A position this cell would be read at without being marked there shows its bit in every
                    // copy alike: counted, so that positions such cells would outvote are left out. (Under
                    // parity every cell read is markable at the one position it is read at.)
                    if r.spec.scheme == MarkScheme::Parity {
                        continue;
                    }
                    let read_at = match reader.as_ref().map(|x| x.candidates(&prf, sheet, row)) {
                        Some(Candidates::One { position, .. }) => [Some(position), None],
                        Some(Candidates::Rounded { up, down }) => [Some(up), Some(down)],
                        _ => [None, None],
                    };
                    for p in read_at.into_iter().flatten().filter(|&p| Some(p) != own) {
                        *interfered.entry(p).or_default() += 1;
                    }
                }
            }
            (counts, interfered)
        })
        .reduce(
            || (HashMap::new(), HashMap::new()),
            |(a, ia), (b, ib)| (merge_counts(a, b), merge_counts(ia, ib)),
        );
    let mut ranked: Vec<(u32, f64, u64)> = counts
        .into_iter()
        .filter(|(p, n)| {
            interfered
                .get(p)
                .is_none_or(|&m| m as f64 <= MAX_INTERFERENCE * f64::from(*n))
        })
        .map(|(p, n)| (n, prf.selector(p), p))
        .collect();
    ranked.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut marked = 0usize;
    let mut chosen = Vec::new();
    for (n, _, position) in ranked {
        // Ranked by size: once one does not fit, none after it does.
        if marked + n as usize > allowed {
            break;
        }
        marked += n as usize;
        chosen.push(position);
    }
    Ok(FingerprintPlan {
        columns: plan.columns.clone(),
        rate: 1.0,
        cutoff: plan.cutoff,
        positions: Some(super::MarkedPositions::new(chosen)),
    })
}

/// A markable cell: its position, the coarse part of its value, and its value in units of its own last
/// decimal, which is 10^`scale` units of the column's.
struct Located {
    position: u64,
    coarse: i64,
    q: i64,
    scale: u32,
}

/// The markable cell of `row` (`None` if the cell is not markable).
fn locate(prf: &Prf, sheet: &Sheet, r: &Resolved, row: usize) -> Option<Located> {
    let decimals = cell_decimals(r.spec, r.code.map(|c| sheet.columns[c].as_slice()), row);
    let v = parse_scaled(&sheet.columns[r.column][row], decimals).filter(|v| v.on_grid)?;
    let coarse = coarse_of(v.q, r.spec.scheme)?;
    let scale = r.spec.decimals - decimals;
    // Any marked value of this cell must be writable in units of the column's last decimal.
    (v.q.abs() + 10).checked_mul(10i64.checked_pow(scale)?)?;
    let name = r.spec.column.as_str();
    let anchor = match prf.anchor_choice(name, coarse, r.anchors.len()) {
        0 => None,
        i => Some((
            r.spec.anchors[i - 1].as_str(),
            sheet.columns[r.anchors[i - 1]][row].trim(),
        )),
    };
    Some(Located {
        position: prf.position(name, coarse, anchor),
        coarse,
        q: v.q,
        scale,
    })
}

/// What embedding did to one copy (no secret: counts only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedReport {
    /// Cells of the marked columns whose value lies on the column's decimal grid.
    pub markable: usize,
    /// Cells selected to carry a mark (their parity now encodes the recipient's bit).
    pub marked: usize,
    /// Marked cells whose value actually changed (parity: by one unit of the last decimal; boundary: by one
    /// or two).
    pub changed: usize,
    /// All cells of the sheet (rows × columns), the base of the budget.
    pub total_cells: usize,
    /// The most cells the budget allowed to mark.
    pub allowed: usize,
}

/// One marked column resolved against a sheet.
struct Resolved<'a> {
    spec: &'a MarkedColumn,
    column: usize,
    anchors: Vec<usize>,
    /// The code column of a per-code precision.
    code: Option<usize>,
}

/// Writes `recipient`'s code into `sheet` (a copy that is about to be given to that recipient).
///
/// The budget is an argument (the plan's fields are fixed): if more than ⌊`max_cell_fraction` × cells⌋
/// cells would be marked, nothing is written and [`FingerprintError::BudgetExceeded`] is returned — the
/// release must not carry more alteration than declared. Every marked column and anchor must be in the
/// sheet, anchors must not be marked themselves (their text must be the same in every copy), decimals at
/// most [`MAX_DECIMALS`], and the plan's rate in [0, 1] and cutoff in (0, 1/2).
///
/// A marked cell's value becomes 2·⌊q/2⌋ + bit units of its last decimal under the parity scheme (it moves by
/// at most one unit), or 10·⌊q/10⌋ + 3 or 6 under the boundary scheme (from …4 or …5: one or two units);
/// unmarked cells and all other columns are left byte for byte. Rows are processed in parallel.
pub fn embed(
    key: &FingerprintKey,
    recipient: &str,
    plan: &FingerprintPlan,
    sheet: &mut Sheet,
    max_cell_fraction: f64,
) -> Result<EmbedReport, FingerprintError> {
    sheet.check()?;
    let resolved = resolve(plan, sheet)?;
    let prf = Prf::new(key);
    let rows = sheet.rows();
    let total_cells = sheet.cells();
    let allowed = cell_budget(total_cells, max_cell_fraction);

    let shared: &Sheet = sheet;
    let chunks: Vec<Chunk> = (0..rows.div_ceil(CHUNK))
        .into_par_iter()
        .map(|i| {
            scan(
                &prf,
                recipient,
                plan,
                shared,
                &resolved,
                i * CHUNK..((i + 1) * CHUNK).min(rows),
            )
        })
        .collect();

    let mut report = EmbedReport {
        markable: 0,
        marked: 0,
        changed: 0,
        total_cells,
        allowed,
    };
    for chunk in &chunks {
        report.markable += chunk.markable;
        report.marked += chunk.marked;
        report.changed += chunk.changes.len();
    }
    if report.marked > allowed {
        return Err(FingerprintError::BudgetExceeded {
            marked: report.marked,
            allowed,
            total: total_cells,
        });
    }
    let targets: Vec<(usize, u32)> = resolved.iter().map(|r| (r.column, r.spec.decimals)).collect();
    for chunk in chunks {
        for change in chunk.changes {
            let (column, decimals) = targets[change.column];
            let cell = &mut sheet.columns[column][change.row];
            cell.clear();
            render_scaled(change.q, decimals, cell);
        }
    }
    Ok(report)
}

fn resolve<'a>(plan: &'a FingerprintPlan, sheet: &Sheet) -> Result<Vec<Resolved<'a>>, FingerprintError> {
    if !(plan.rate.is_finite() && (0.0..=1.0).contains(&plan.rate)) {
        return Err(FingerprintError::InvalidPlan(format!(
            "rate {} is not in [0, 1]",
            plan.rate
        )));
    }
    if !(plan.cutoff.is_finite() && plan.cutoff > 0.0 && plan.cutoff < 0.5) {
        return Err(FingerprintError::InvalidPlan(format!(
            "cutoff {} is not in (0, 1/2)",
            plan.cutoff
        )));
    }
    let mut out = Vec::with_capacity(plan.columns.len());
    for (i, spec) in plan.columns.iter().enumerate() {
        if plan.columns[..i].iter().any(|c| c.column == spec.column) {
            return Err(FingerprintError::InvalidPlan(format!(
                "column {:?} is marked twice",
                spec.column
            )));
        }
        if spec.decimals > MAX_DECIMALS {
            return Err(FingerprintError::Decimals {
                column: spec.column.clone(),
                decimals: spec.decimals,
                max: MAX_DECIMALS,
            });
        }
        let column = sheet
            .index_of(&spec.column)
            .ok_or_else(|| FingerprintError::UnknownColumn(spec.column.clone()))?;
        let mut anchors = Vec::with_capacity(spec.anchors.len());
        for anchor in &spec.anchors {
            if plan.columns.iter().any(|c| &c.column == anchor) {
                return Err(FingerprintError::AnchorMarked {
                    column: spec.column.clone(),
                    anchor: anchor.clone(),
                });
            }
            anchors.push(sheet.index_of(anchor).ok_or_else(|| FingerprintError::UnknownAnchor {
                column: spec.column.clone(),
                anchor: anchor.clone(),
            })?);
        }
        let code = match &spec.precision {
            Some(p) if plan.columns.iter().any(|c| c.column == p.code_column) => {
                return Err(FingerprintError::AnchorMarked {
                    column: spec.column.clone(),
                    anchor: p.code_column.clone(),
                });
            }
            Some(p) => Some(
                sheet
                    .index_of(&p.code_column)
                    .ok_or_else(|| FingerprintError::UnknownAnchor {
                        column: spec.column.clone(),
                        anchor: p.code_column.clone(),
                    })?,
            ),
            None => None,
        };
        out.push(Resolved {
            spec,
            column,
            anchors,
            code,
        });
    }
    Ok(out)
}

struct Change {
    column: usize,
    row: usize,
    /// The new value in units of the column's last decimal.
    q: i64,
}

struct Chunk {
    markable: usize,
    marked: usize,
    changes: Vec<Change>,
}

fn scan(
    prf: &Prf,
    recipient: &str,
    plan: &FingerprintPlan,
    sheet: &Sheet,
    resolved: &[Resolved],
    rows: std::ops::Range<usize>,
) -> Chunk {
    let mut chunk = Chunk {
        markable: 0,
        marked: 0,
        changes: Vec::new(),
    };
    for (ri, r) in resolved.iter().enumerate() {
        for row in rows.clone() {
            let Some(cell) = locate(prf, sheet, r, row) else {
                continue;
            };
            chunk.markable += 1;
            if !plan.selects(prf, cell.position) {
                continue;
            }
            chunk.marked += 1;
            let bit = prf.bit(recipient, cell.position, prf.bias(cell.position, plan.cutoff));
            let q = marked_value(cell.coarse, bit, r.spec.scheme);
            if q != cell.q {
                // Written with the column's decimals, like every other cell of it (`locate` checked the range).
                let q = q * 10i64.pow(cell.scale);
                chunk.changes.push(Change { column: ri, row, q });
            }
        }
    }
    chunk
}
