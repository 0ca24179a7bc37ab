//! Small-cell tables published from the same population are *linked*: a cell one table suppresses can
//! be the difference of cells other tables publish. This module decides, exactly, whether a set of
//! published tables lets anyone recompute a suppressed entry.
//!
//! The attacker's view is modelled, not the data. Every table says how it groups each of its columns
//! (raw value → label; a value it did not count is absent), which cells it has and, for each published
//! entry (cell or margin), which cells it sums and its count. The columns of all tables together split
//! the population into *atoms*: one combination of value classes, a class being the raw values every
//! table labels alike. An atom's count is an unknown non-negative integer; two atoms that fall in
//! exactly the same entries of every table are merged into one unknown (a sum of non-negative integers
//! is any non-negative integer). Each published entry is one linear equation over the unknowns.
//!
//! A suppressed entry is *recoverable* when every non-negative integer solution of those equations gives
//! it the same value. [`recoverable`] decides this with linear programming: the entry's minimum and
//! maximum over the real relaxation bound it; when at most one integer lies between them the entry is
//! determined (the true data is a solution, so that integer is its value); otherwise the integer
//! minimum and maximum are solved by branch and bound (microlp) and compared. Integer programs are
//! needed because linked tables are not totally unimodular in general (three two-way tables over three
//! columns are the classic case): the relaxation can leave room the integers do not have.
//!
//! Refusing rather than guessing: a solver that cannot prove its answer within the time limit, a model
//! with more atoms than the limit, or published tables that contradict each other (no solution at all)
//! are errors, which callers treat as a refusal.
//!
//! Exactness is tested against a brute-force oracle that enumerates every data set of a tiny population
//! and recomputes every table (`tests` below).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use microlp::{ComparisonOp, OptimizationDirection, Problem, SolutionStatus, SolveOutcome};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::small_cell::{CellRef, ProtectedTable};

/// How one published table grouped one column: what an attacker learns from the table's definition
/// (its hierarchy or bins), never a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimension {
    /// Column of the population the grouping reads (a histogram's measured column for its bins).
    pub column: String,
    /// How the table labels every value the population holds in this column, in the values' sorted
    /// order. Values are named by rank, never stored: tables are only compared within one population,
    /// whose sorted values are the same for every table. Listing every value present models an attacker
    /// who knows which values occur — more than the tables say — so the audit errs towards a recovery.
    pub labels: Vec<ValueLabel>,
}

/// What a table did with one value of a grouped column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueLabel {
    /// Counted under this label, which the table shows.
    Shown(String),
    /// Counted under a label the table does not show: no row has it (a table of the data's own keys
    /// then says its combinations are 0), or it is outside the declared keys. Which label is not kept.
    Unshown,
    /// Not counted at all (outside the hierarchy; not a number, for bins).
    Uncounted,
}

impl From<Option<String>> for ValueLabel {
    /// A grouping's label (`None`: not counted), before the table says which labels it shows.
    fn from(label: Option<String>) -> Self {
        label.map_or(ValueLabel::Uncounted, ValueLabel::Shown)
    }
}

/// One published entry of a table: an interior cell or a margin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedEntry {
    /// Indexes into [`LinkedTable::cells`] of the interior cells this entry sums.
    pub cells: Vec<u32>,
    /// The count as published; `None` when suppressed.
    pub count: Option<u64>,
    /// The table shows this line only because it holds a row (keys as present in the data): at least 1.
    #[serde(default)]
    pub at_least_one: bool,
}

/// A published small-cell table as the attacker sees it: its grouping, its cells and every entry's
/// published count or suppression. Holds no suppressed value, so it can be stored and compared with
/// later requests without keeping what the suppression hid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedTable {
    /// The grouped columns, in the order of each cell's labels.
    pub dimensions: Vec<Dimension>,
    /// Labels of each interior cell, one per dimension.
    pub cells: Vec<Vec<String>>,
    /// Every entry of the publication, margins included.
    pub entries: Vec<LinkedEntry>,
    /// Whether the keys were declared (public keys, hierarchy levels, bins). Otherwise they are the
    /// combinations present in the data, and a combination the table does not show is known to be 0.
    pub keys_declared: bool,
    /// The minimum cell of the rule the table was protected with.
    pub threshold: u64,
}

impl LinkedTable {
    /// The attacker's view of a protected table. `cell_key(row, col)` gives the labels of interior cell
    /// `(row, col)` of [`ProtectedTable::table`], one per dimension (a 2-D table built from more
    /// grouping columns joins several labels into its column label; the caller knows how to split them).
    pub fn from_protected(
        protected: &ProtectedTable,
        dimensions: Vec<Dimension>,
        keys_declared: bool,
        cell_key: impl Fn(usize, usize) -> Vec<String>,
    ) -> Result<LinkedTable> {
        let table = protected.table();
        let rows = table.row_labels.len();
        let width = table.col_labels.as_ref().map_or(1, Vec::len);
        let index = |i: usize, j: usize| (i * width + j) as u32;
        let mut cells = Vec::with_capacity(rows * width);
        for i in 0..rows {
            for j in 0..width {
                cells.push(cell_key(i, j));
            }
        }
        let two_d = table.col_labels.is_some();
        let entries = protected
            .refs()
            .into_iter()
            .map(|r| {
                let (cells, line) = match r {
                    // A 2-D table fills combinations absent from the data with zeros: a cell is not a line.
                    CellRef::Cell(i, j) => (vec![index(i, j)], !two_d),
                    CellRef::RowTotal(i) => ((0..width).map(|j| index(i, j)).collect(), true),
                    CellRef::ColTotal(j) => ((0..rows).map(|i| index(i, j)).collect(), true),
                    CellRef::GrandTotal => ((0..rows * width).map(|k| k as u32).collect(), true),
                };
                LinkedEntry {
                    cells,
                    count: protected.published(r),
                    at_least_one: line && !keys_declared,
                }
            })
            .collect();
        // A label no cell carries is not kept: only that the value is counted under an unshown label.
        let mut dimensions = dimensions;
        for (d, dim) in dimensions.iter_mut().enumerate() {
            let shown: BTreeSet<&str> = cells
                .iter()
                .filter_map(|c: &Vec<String>| c.get(d))
                .map(String::as_str)
                .collect();
            for label in &mut dim.labels {
                if matches!(label, ValueLabel::Shown(l) if !shown.contains(l.as_str())) {
                    *label = ValueLabel::Unshown;
                }
            }
        }
        let linked = LinkedTable {
            dimensions,
            cells,
            entries,
            keys_declared,
            threshold: protected.rule().threshold,
        };
        linked.validate()?;
        Ok(linked)
    }

    /// Refuses a definition the model cannot read: cells with the wrong number of labels, entries
    /// naming cells that do not exist, a column grouped twice.
    pub fn validate(&self) -> Result<()> {
        let columns: BTreeSet<&str> = self.dimensions.iter().map(|d| d.column.as_str()).collect();
        if columns.len() != self.dimensions.len() {
            return Err(Error::Input("a linked table groups one column twice".into()));
        }
        if let Some(k) = self.cells.iter().position(|c| c.len() != self.dimensions.len()) {
            return Err(Error::Input(format!(
                "cell {k} has {} labels for {} dimensions",
                self.cells[k].len(),
                self.dimensions.len()
            )));
        }
        let n = self.cells.len() as u32;
        if self.entries.iter().any(|e| e.cells.iter().any(|&c| c >= n)) {
            return Err(Error::Input("an entry names a cell the table does not have".into()));
        }
        Ok(())
    }
}

/// Bounds on the work of one audit; exceeding one is an error (a refusal), never a pass.
#[derive(Debug, Clone, Copy)]
pub struct AuditLimits {
    /// Most atoms (combinations of value classes) enumerated.
    pub max_atoms: u64,
    /// Wall-clock time for all solves together.
    pub time_limit: Duration,
}

impl Default for AuditLimits {
    fn default() -> Self {
        AuditLimits {
            max_atoms: 2_000_000,
            time_limit: Duration::from_secs(60),
        }
    }
}

/// A suppressed entry that the published tables together determine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Recovered {
    /// Index of the table in the audited slice.
    pub table: usize,
    /// Index of the entry in [`LinkedTable::entries`].
    pub entry: usize,
}

/// What an audit found, with the size of the model it solved (for reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Every suppressed entry the tables together determine; empty when the set is safe.
    pub recovered: Vec<Recovered>,
    /// Unknowns after merging atoms that fall in the same entries.
    pub unknowns: usize,
    /// Suppressed entries examined.
    pub suppressed: usize,
}

/// Every suppressed entry of `tables` that the published entries of all of them determine (see the
/// module documentation). The tables must describe the same population.
pub fn recoverable(tables: &[LinkedTable], limits: &AuditLimits) -> Result<Audit> {
    let mut values: HashMap<&str, usize> = HashMap::new();
    for t in tables {
        t.validate()?;
        // Values are named by rank: one population lists the same values in every table.
        for d in &t.dimensions {
            if *values.entry(d.column.as_str()).or_insert(d.labels.len()) != d.labels.len() {
                return Err(Error::Input(
                    "the tables list different values of one column (not one population)".into(),
                ));
            }
        }
    }
    let model = Model::build(tables, limits.max_atoms)?;
    let deadline = Instant::now() + limits.time_limit;
    let mut published: Vec<(&[u32], u64)> = model
        .entries
        .iter()
        .zip(model.keys.iter())
        .filter_map(|(vars, &(t, e))| tables[t].entries[e].count.map(|c| (vars.as_slice(), c)))
        .collect();
    if !model.zeros.is_empty() {
        published.push((model.zeros.as_slice(), 0));
    }
    let facts = Facts {
        published: &published,
        at_least_one: model
            .entries
            .iter()
            .zip(model.keys.iter())
            .filter(|&(_, &(t, e))| tables[t].entries[e].at_least_one)
            .map(|(vars, _)| vars.as_slice())
            .collect(),
    };
    let in_equation: BTreeSet<u32> = published.iter().flat_map(|(v, _)| v.iter().copied()).collect();
    let mut audit = Audit {
        recovered: Vec::new(),
        unknowns: model.unknowns,
        suppressed: 0,
    };
    for (vars, &(t, e)) in model.entries.iter().zip(model.keys.iter()) {
        if tables[t].entries[e].count.is_some() {
            continue;
        }
        audit.suppressed += 1;
        // An unknown in no published equation can grow freely: the entry has no upper bound. An entry
        // over no unknown (a declared key no value carries) is not reported: that would say the value
        // does not occur, which nothing else tells.
        if vars.is_empty() || vars.iter().any(|v| !in_equation.contains(v)) {
            continue;
        }
        if determined(model.unknowns, &facts, vars, deadline)? {
            audit.recovered.push(Recovered { table: t, entry: e });
        }
    }
    Ok(audit)
}

/// What the published tables say about the unknowns.
struct Facts<'a> {
    /// Sums of unknowns with their value (published entries, and zeros of unlisted combinations).
    published: &'a [(&'a [u32], u64)],
    /// Sums of unknowns known to be at least 1 (lines a table shows because they hold a row).
    at_least_one: Vec<&'a [u32]>,
}

/// Whether `target` (a sum of unknowns) takes one value over every non-negative integer solution.
fn determined(unknowns: usize, facts: &Facts<'_>, target: &[u32], deadline: Instant) -> Result<bool> {
    let relaxed = |direction| optimum(unknowns, facts, target, direction, false, deadline);
    let (Some(lo), Some(hi)) = (
        relaxed(OptimizationDirection::Minimize)?,
        relaxed(OptimizationDirection::Maximize)?,
    ) else {
        return Ok(false);
    };
    const TOL: f64 = 1e-6;
    if (hi + TOL).floor() <= (lo - TOL).ceil() {
        return Ok(true);
    }
    let integer = |direction| optimum(unknowns, facts, target, direction, true, deadline);
    match (
        integer(OptimizationDirection::Minimize)?,
        integer(OptimizationDirection::Maximize)?,
    ) {
        (Some(lo), Some(hi)) => Ok((hi - lo).abs() < 0.5),
        _ => Ok(false),
    }
}

/// The optimum of `target` under the published equations; `None` when unbounded.
fn optimum(
    unknowns: usize,
    facts: &Facts<'_>,
    target: &[u32],
    direction: OptimizationDirection,
    integer: bool,
    deadline: Instant,
) -> Result<Option<f64>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Config("the linked-table audit ran out of time".into()));
    }
    let mut problem = Problem::new(direction);
    problem.set_time_limit(left);
    let in_target: BTreeSet<u32> = target.iter().copied().collect();
    let vars: Vec<_> = (0..unknowns as u32)
        .map(|v| {
            let c = if in_target.contains(&v) { 1.0 } else { 0.0 };
            if integer {
                problem.add_integer_var(c, (0, i32::MAX))
            } else {
                problem.add_var(c, (0.0, f64::INFINITY))
            }
        })
        .collect();
    for (members, count) in facts.published {
        let expr: Vec<_> = members.iter().map(|&v| (vars[v as usize], 1.0)).collect();
        problem.add_constraint(expr, ComparisonOp::Eq, *count as f64);
    }
    for members in facts.at_least_one.iter().filter(|m| !m.is_empty()) {
        let expr: Vec<_> = members.iter().map(|&v| (vars[v as usize], 1.0)).collect();
        problem.add_constraint(expr, ComparisonOp::Ge, 1.0);
    }
    match problem.solve() {
        Ok(SolveOutcome::Solution(s)) if s.status() == SolutionStatus::Optimal => Ok(Some(s.objective())),
        Ok(_) => Err(Error::Config(
            "the linked-table audit could not prove an optimum in time".into(),
        )),
        Err(microlp::Error::Unbounded) => Ok(None),
        Err(microlp::Error::Infeasible) => Err(Error::Input(
            "the published tables contradict each other (not one population)".into(),
        )),
        Err(e) => Err(Error::Config(format!("linked-table audit solver: {e}"))),
    }
}

/// The unknowns and, for every entry of every table, which unknowns it sums.
struct Model {
    unknowns: usize,
    /// `(table, entry)` of each element of `entries`.
    keys: Vec<(usize, usize)>,
    /// Unknowns summed by each entry (sorted).
    entries: Vec<Vec<u32>>,
    /// Unknowns a table with the data's own keys shows to be 0 (combinations it does not list).
    zeros: Vec<u32>,
}

/// Marks, in an atom's signature, a combination a table with the data's own keys does not list.
const FORCED_ZERO: u32 = u32::MAX;

/// The label id of [`ValueLabel::Unshown`]: no cell carries it.
const UNSHOWN: u32 = u32::MAX;

/// Per column: each value class's label id in every table that groups the column (`None`: not counted).
struct ColumnClasses {
    /// `(table, dimension)` of the tables grouping this column.
    users: Vec<(usize, usize)>,
    /// `classes[k][u]`: label id in `users[u]` of class `k` (`None`: that table does not count it).
    classes: Vec<Vec<Option<u32>>>,
}

impl Model {
    fn build(tables: &[LinkedTable], max_atoms: u64) -> Result<Model> {
        // Label ids per (table, dimension), and each table's cells by their label ids.
        let mut label_ids: Vec<Vec<HashMap<&str, u32>>> = Vec::with_capacity(tables.len());
        let mut cell_of: Vec<HashMap<Vec<u32>, u32>> = Vec::with_capacity(tables.len());
        for t in tables {
            let mut ids: Vec<HashMap<&str, u32>> = vec![HashMap::new(); t.dimensions.len()];
            for (d, dim) in t.dimensions.iter().enumerate() {
                for label in dim.labels.iter().filter_map(|l| match l {
                    ValueLabel::Shown(l) => Some(l),
                    _ => None,
                }) {
                    let next = ids[d].len() as u32;
                    ids[d].entry(label.as_str()).or_insert(next);
                }
            }
            let mut cells = HashMap::new();
            for (k, labels) in t.cells.iter().enumerate() {
                // A cell whose label no value carries covers no atom (a declared key with no data).
                let coded: Option<Vec<u32>> = labels
                    .iter()
                    .enumerate()
                    .map(|(d, l)| ids[d].get(l.as_str()).copied())
                    .collect();
                if let Some(coded) = coded {
                    cells.insert(coded, k as u32);
                }
            }
            label_ids.push(ids);
            cell_of.push(cells);
        }
        let columns = Self::classes(tables, &label_ids);
        let atoms = columns
            .iter()
            .try_fold(1u64, |acc, c| acc.checked_mul(c.classes.len() as u64))
            .filter(|&n| n <= max_atoms)
            .ok_or_else(|| {
                Error::Config(format!(
                    "the linked tables combine into more than {max_atoms} value combinations"
                ))
            })?;
        // Where each table's dimensions sit among the columns.
        let position: Vec<Vec<(usize, usize)>> = tables
            .iter()
            .enumerate()
            .map(|(t, table)| {
                (0..table.dimensions.len())
                    .map(|d| {
                        columns
                            .iter()
                            .enumerate()
                            .find_map(|(c, col)| col.users.iter().position(|&u| u == (t, d)).map(|u| (c, u)))
                            .unwrap_or((0, 0))
                    })
                    .collect()
            })
            .collect();
        // Enumerate atoms; merge those with the same cell in every table.
        let mut unknown_of: HashMap<Vec<Option<u32>>, u32> = HashMap::new();
        let mut class = vec![0usize; columns.len()];
        for _ in 0..atoms {
            let signature: Vec<Option<u32>> = tables
                .iter()
                .enumerate()
                .map(|(t, _)| {
                    let coded: Option<Vec<u32>> = position[t]
                        .iter()
                        .map(|&(c, u)| columns[c].classes[class[c]][u])
                        .collect();
                    match coded {
                        None => None,
                        Some(k) => match cell_of[t].get(&k) {
                            Some(&cell) => Some(cell),
                            // Labelled in every dimension but not shown: 0 when the keys are the data's own.
                            None if !tables[t].keys_declared => Some(FORCED_ZERO),
                            None => None,
                        },
                    }
                })
                .collect();
            if signature.iter().any(Option::is_some) {
                let next = unknown_of.len() as u32;
                unknown_of.entry(signature).or_insert(next);
            }
            // Next combination (mixed radix).
            for (c, col) in columns.iter().enumerate() {
                class[c] += 1;
                if class[c] < col.classes.len() {
                    break;
                }
                class[c] = 0;
            }
        }
        // Entries over unknowns.
        let mut keys = Vec::new();
        let mut entries = Vec::new();
        let mut zeros = Vec::new();
        for (t, table) in tables.iter().enumerate() {
            let mut unknowns_of_cell: Vec<Vec<u32>> = vec![Vec::new(); table.cells.len()];
            for (signature, &u) in &unknown_of {
                match signature[t] {
                    Some(FORCED_ZERO) => zeros.push(u),
                    Some(cell) => unknowns_of_cell[cell as usize].push(u),
                    None => {}
                }
            }
            for (e, entry) in table.entries.iter().enumerate() {
                let mut vars: Vec<u32> = entry
                    .cells
                    .iter()
                    .flat_map(|&c| unknowns_of_cell[c as usize].iter().copied())
                    .collect();
                vars.sort_unstable();
                vars.dedup();
                keys.push((t, e));
                entries.push(vars);
            }
        }
        zeros.sort_unstable();
        zeros.dedup();
        Ok(Model {
            unknowns: unknown_of.len(),
            keys,
            entries,
            zeros,
        })
    }

    /// Splits every column's values into classes labelled alike by every table grouping the column.
    fn classes(tables: &[LinkedTable], label_ids: &[Vec<HashMap<&str, u32>>]) -> Vec<ColumnClasses> {
        let mut users: std::collections::BTreeMap<&str, Vec<(usize, usize)>> = Default::default();
        for (t, table) in tables.iter().enumerate() {
            for (d, dim) in table.dimensions.iter().enumerate() {
                users.entry(dim.column.as_str()).or_default().push((t, d));
            }
        }
        users
            .into_values()
            .map(|users| {
                // Values by rank: the same population lists the same sorted values in every table.
                let mut of_value: HashMap<usize, Vec<Option<u32>>> = HashMap::new();
                for (u, &(t, d)) in users.iter().enumerate() {
                    for (rank, label) in tables[t].dimensions[d].labels.iter().enumerate() {
                        let sig = of_value.entry(rank).or_insert_with(|| vec![None; users.len()]);
                        sig[u] = match label {
                            ValueLabel::Shown(l) => label_ids[t][d].get(l.as_str()).copied(),
                            // In no cell: a lookup of a combination holding it fails, as it must.
                            ValueLabel::Unshown => Some(UNSHOWN),
                            ValueLabel::Uncounted => None,
                        };
                    }
                }
                let classes: BTreeSet<Vec<Option<u32>>> = of_value.into_values().collect();
                ColumnClasses {
                    users,
                    classes: classes.into_iter().collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
