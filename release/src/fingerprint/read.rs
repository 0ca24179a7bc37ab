//! Reading the marks of a (leaked) table: which code positions it carries and which bit each shows.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::cells::Cells;
use super::prf::Prf;
use super::value::parse_scaled;
use super::{FingerprintKey, FingerprintPlan, MarkScheme, MarkedColumn};

/// One code position found in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadPosition {
    /// The position id (a keyed hash of the cell's coarse value and anchor).
    pub position: u64,
    /// The bit the table shows there (the majority of its cells).
    pub bit: bool,
    /// Cells that showed `bit`.
    pub readings: u32,
    /// Cells that showed the other bit (a mix of copies, or edits).
    pub dissent: u32,
}

/// The marks found in a table: the observed codeword, and counts that say how much of it was there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marks {
    /// The positions found with a decided bit, by position id.
    pub positions: Vec<ReadPosition>,
    /// Positions whose cells were split evenly between 0 and 1 (dropped: no bit can be claimed).
    pub erased_positions: usize,
    /// Cells of the marked columns that were examined (rows × marked columns present).
    pub cells_read: usize,
    /// Of those, cells whose value parsed as a number.
    pub parsed_cells: usize,
    /// Of those, cells at a selected position (the readings).
    pub selected_cells: usize,
    /// Cells skipped because the anchor their position depends on is not in the table.
    pub skipped_missing_anchor: usize,
    /// Marked columns of the plan that the table does not have.
    pub missing_columns: Vec<String>,
    /// The plan's Tardos cutoff (the biases the accusation needs are derived from it).
    pub cutoff: f64,
}

impl Marks {
    /// No marks at all (a file without a marked column): nothing can be attributed on this carrier.
    pub fn empty() -> Marks {
        Marks {
            positions: Vec::new(),
            erased_positions: 0,
            cells_read: 0,
            parsed_cells: 0,
            selected_cells: 0,
            skipped_missing_anchor: 0,
            missing_columns: Vec::new(),
            cutoff: super::DEFAULT_CUTOFF,
        }
    }
}

/// Reads the marks of `cells` under `plan`: for every row and marked column present, recomputes the cell's
/// coarse value, anchor and position (by column names — rows and columns may be in any order) and, at
/// selected positions, the parity. A position's bit is the majority of its cells; ties are erased.
///
/// Cells are compared as parsed numbers and trimmed text only, so a CSV ↔ Parquet conversion changes
/// nothing. Sequential (a leak is traced once); allocation is per position found, not per cell.
pub fn read_marks<C: Cells + ?Sized>(key: &FingerprintKey, plan: &FingerprintPlan, cells: &C) -> Marks {
    let prf = Prf::new(key);
    let rows = cells.rows();
    let mut tally = Tally::default();
    let mut missing = Vec::new();
    for spec in &plan.columns {
        let Some(reader) = ColumnReader::new(spec, cells) else {
            missing.push(spec.column.clone());
            continue;
        };
        tally.cells_read += rows;
        for row in 0..rows {
            tally.add(reader.read(&prf, plan, cells, row));
        }
    }
    tally.finish(missing, plan.cutoff)
}

/// What one cell of a marked column says. A pure function of the row's named cells, so it may be computed
/// once per row of a copy and reused for every leak built from that copy (see the experiments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Not a number.
    Unparsed,
    /// Its position depends on an anchor column the table lacks.
    MissingAnchor,
    /// A position that carries no mark.
    Unselected,
    /// A marked position and the bit read there.
    Selected { position: u64, bit: bool },
    /// A boundary-scheme cell ending in 0, perhaps rounded from either side: the marked positions among the
    /// two it may have come from — the boundary below it (bit 1: rounded up from …6) and the one at it
    /// (bit 0: rounded down from …3).
    Rounded { up: Option<u64>, down: Option<u64> },
}

/// Where a cell would be read, before the plan's selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Candidates {
    /// Not a number on the column's grid.
    Unparsed,
    /// Its position depends on an anchor column the table lacks.
    MissingAnchor,
    /// A digit no mark is read from.
    None,
    /// One position and the bit shown there.
    One { position: u64, bit: bool },
    /// A boundary cell ending in 0: bit 1 at `up`, bit 0 at `down`.
    Rounded { up: u64, down: u64 },
}

/// A marked column located in a table.
pub(crate) struct ColumnReader<'p> {
    spec: &'p MarkedColumn,
    column: usize,
    anchors: Vec<Option<usize>>,
    /// The code column of a per-code precision.
    code: Option<usize>,
}

impl<'p> ColumnReader<'p> {
    /// `None` if the table lacks the column, or the code column its precision is looked up by.
    pub(crate) fn new<C: Cells + ?Sized>(spec: &'p MarkedColumn, cells: &C) -> Option<ColumnReader<'p>> {
        let code = match &spec.precision {
            Some(p) => Some(cells.column_index(&p.code_column)?),
            None => None,
        };
        Some(ColumnReader {
            spec,
            column: cells.column_index(&spec.column)?,
            anchors: spec.anchors.iter().map(|a| cells.column_index(a)).collect(),
            code,
        })
    }

    /// Reads the cell of `row`.
    pub(crate) fn read<C: Cells + ?Sized>(&self, prf: &Prf, plan: &FingerprintPlan, cells: &C, row: usize) -> Reading {
        match self.candidates(prf, cells, row) {
            Candidates::Unparsed => Reading::Unparsed,
            Candidates::MissingAnchor => Reading::MissingAnchor,
            Candidates::None => Reading::Unselected,
            Candidates::One { position, bit } if plan.selects(prf, position) => Reading::Selected { position, bit },
            Candidates::One { .. } => Reading::Unselected,
            Candidates::Rounded { up, down } => {
                let (up, down) = (
                    Some(up).filter(|&p| plan.selects(prf, p)),
                    Some(down).filter(|&p| plan.selects(prf, p)),
                );
                if up.is_none() && down.is_none() {
                    Reading::Unselected
                } else {
                    Reading::Rounded { up, down }
                }
            }
        }
    }

    /// The positions (marked or not) the cell of `row` is read at, with the bit it shows there: what the
    /// planner needs to keep positions that unmarkable cells would also be read at out of the plan.
    pub(crate) fn candidates<C: Cells + ?Sized>(&self, prf: &Prf, cells: &C, row: usize) -> Candidates {
        let spec = self.spec;
        // `code` is located exactly when the column has a per-code precision (`new`).
        let decimals = spec.decimals_at(self.code.map(|c| cells.cell(row, c)));
        let tolerant = self.code.is_some();
        // Off the decimal grid (a value with more decimals than released): never a marked cell, as in `embed`;
        // except at a code's own precision, where a leaker's noise in a digit the test does not report (183.01
        // for 183) is rounded away.
        let Some(v) = parse_scaled(cells.cell(row, self.column), decimals).filter(|v| v.on_grid || tolerant) else {
            return Candidates::Unparsed;
        };
        let (coarse, bit) = match spec.scheme {
            MarkScheme::Parity => (v.q.div_euclid(2), v.q.rem_euclid(2) == 1),
            MarkScheme::Boundary => match v.q.rem_euclid(10) {
                2..=4 => (v.q.div_euclid(10), false),
                5..=7 => (v.q.div_euclid(10), true),
                0 => {
                    let k = v.q.div_euclid(10);
                    return match (self.position(prf, cells, row, k - 1), self.position(prf, cells, row, k)) {
                        (Some(up), Some(down)) => Candidates::Rounded { up, down },
                        _ => Candidates::MissingAnchor,
                    };
                }
                _ => return Candidates::None,
            },
        };
        match self.position(prf, cells, row, coarse) {
            Some(position) => Candidates::One { position, bit },
            None => Candidates::MissingAnchor,
        }
    }

    /// The position of a cell of `row` whose value's coarse part is `coarse` (`None`: its anchor is missing).
    fn position<C: Cells + ?Sized>(&self, prf: &Prf, cells: &C, row: usize, coarse: i64) -> Option<u64> {
        let spec = self.spec;
        let anchor = match prf.anchor_choice(&spec.column, coarse, self.anchors.len()) {
            0 => None,
            i => Some((
                spec.anchors[i - 1].as_str(),
                cells.cell(row, self.anchors[i - 1]?).trim(),
            )),
        };
        Some(prf.position(&spec.column, coarse, anchor))
    }
}

/// Readings gathered into marks.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: HashMap<u64, [u32; 2]>,
    /// Cells examined (the caller adds rows × columns present).
    pub(crate) cells_read: usize,
    parsed_cells: usize,
    selected_cells: usize,
    skipped_missing_anchor: usize,
}

impl Tally {
    /// Counts one cell's reading.
    pub(crate) fn add(&mut self, reading: Reading) {
        match reading {
            Reading::Unparsed => return,
            Reading::MissingAnchor => self.skipped_missing_anchor += 1,
            Reading::Unselected => {}
            Reading::Selected { position, bit } => {
                self.selected_cells += 1;
                self.counts.entry(position).or_default()[usize::from(bit)] += 1;
            }
            Reading::Rounded { up, down } => {
                self.selected_cells += 1;
                if let Some(p) = up {
                    self.counts.entry(p).or_default()[1] += 1;
                }
                if let Some(p) = down {
                    self.counts.entry(p).or_default()[0] += 1;
                }
            }
        }
        self.parsed_cells += 1;
    }

    /// The marks: a majority bit per position, ties erased, positions by id.
    pub(crate) fn finish(self, missing_columns: Vec<String>, cutoff: f64) -> Marks {
        let mut marks = Marks {
            positions: Vec::with_capacity(self.counts.len()),
            erased_positions: 0,
            cells_read: self.cells_read,
            parsed_cells: self.parsed_cells,
            selected_cells: self.selected_cells,
            skipped_missing_anchor: self.skipped_missing_anchor,
            missing_columns,
            cutoff,
        };
        for (position, [zeros, ones]) in self.counts {
            if zeros == ones {
                marks.erased_positions += 1;
            } else {
                marks.positions.push(ReadPosition {
                    position,
                    bit: ones > zeros,
                    readings: zeros.max(ones),
                    dissent: zeros.min(ones),
                });
            }
        }
        marks.positions.sort_unstable_by_key(|p| p.position);
        marks
    }
}
