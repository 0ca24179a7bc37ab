//! Recipient fingerprints, on two carriers: every copy's own pseudonyms ([`RecipientPseudonyms`], one leaked
//! row that keeps its pseudonym names its copy) and a collusion-resistant (Tardos) code embedded in
//! non-identifying measured values, in cells chosen by a keyed hash of what the row says — so the marks are
//! found again in a leaked file without row numbers, after shuffling, subsetting, dropping columns,
//! converting formats, rounding to one decimal and ±0.01 (a cell carries its mark in the last digit of its own
//! test's precision).
//!
//! Pure: no I/O. The builder embeds ([`embed`], [`RecipientPseudonyms::rewrite`]) in each recipient's copy
//! after anonymisation and re-verifies the privacy model; [`crate::trace`] reads a leaked file with
//! [`trace_cells`], which the attack suite ([`attacks`]) runs too.
//!
//! # Scheme of the value marks
//!
//! Every choice is a keyed PRF (HMAC-SHA256 under the release's [`FingerprintKey`], domain-separated):
//! - a cell's precision is its test's ([`CodePrecision`]: the most decimals the values of its JLAC10 analyte use,
//!   read off the table by [`plan`]; the column's declared decimals when the column has no code): a laboratory
//!   table reports enzymes in whole units, HbA1c to 0.1 and creatinine to 0.01, all written with 2 decimals, and
//!   a mark must neither show as a stray hundredth on a whole number nor be rounded away with it;
//! - a marked cell's value is q = round(v·10^decimals) at that precision. Under [`MarkScheme::Parity`] its *coarse* value
//!   ⌊q/2⌋ survives marking and the parity q mod 2 carries one code bit (a value moves by at most one unit of
//!   its last decimal); under [`MarkScheme::Boundary`] only cells ending in 4 or 5 are marked, to …3 or …6
//!   (at most two units), the coarse value is ⌊q/10⌋, and a reader tolerates ±1 unit and rounding to one
//!   decimal fewer (see [`MarkScheme`]);
//! - the keyed [`fit_plan`] keeps the boundary scheme only where it yields at least half of parity's positions:
//!   a boundary position must not be outvoted by unmarked cells read at it, and on a released laboratory table
//!   (dates generalised to years or `*`, whole-number tests) too few such positions exist — parity at each
//!   test's own precision is used there, which rounding to one decimal leaves on whole-number and 0.1 tests;
//! - per (column, coarse) the PRF picks no anchor (the position is keyed on the value alone and survives any
//!   column drop) or one of the column's anchors (keyed on the value and that column's text too: many more
//!   distinct positions, lost if the anchor column is dropped); the position is a 64-bit PRF of that;
//! - which positions are marked: a key-less [`plan`] marks a position iff PRF(position) < its rate; the
//!   builder's keyed [`fit_plan`] ranks the table's positions by the number of cells carrying them (fewest
//!   first, ties by the keyed selector) and takes them while the cell budget allows, keeping the chosen set in
//!   the plan ([`FingerprintPlan::positions`]) — the same cells in every recipient's copy;
//! - each position has a Tardos bias p = sin²(r), r uniform in [asin √t, π/2 − asin √t], and recipient j's
//!   bit there is 1 with probability p (symmetric Tardos code, Škorić et al.).
//!
//! Reading recomputes all of this from the leaked cells (numbers as parsed numbers, text trimmed), takes the
//! majority bit per position, and [`accuse`] bounds, for each candidate, the probability that an innocent
//! scores as high (a Chernoff bound on the exact per-position distributions, a true upper bound), accusing
//! at ε / (number of candidates).
//!
//! # Budget
//!
//! At most `max_cell_fraction` (policy: [`DEFAULT_MAX_CELL_FRACTION`], 1 %) of all cells of a file carry a
//! mark. [`embed`] takes the fraction as an argument (the plan's fields are fixed) and refuses to write
//! more. [`plan`] sets a rate without the key, keeping a margin for chance; [`fit_plan`] spends the budget
//! exactly with the key. Why fewest cells first: a leaked sample keeping a share f of the rows shows a position
//! carried by n cells with probability 1 − (1 − f)^n ≤ n·f, so per altered cell, rare positions are worth the
//! most at every sample size. On the demo's released laboratory table (15,908 rows, dates at year, values
//! mostly whole numbers) half the copy carried about 46 positions under the earlier rate selection and carries
//! about 340 now (P ≤ 10⁻⁶⁰ instead of 10⁻⁹).
//!
//! # What the experiments measure ([`experiments`], synthetic laboratory table, 5 columns, 1 marked)
//!
//! (Measured with the parity scheme, before the boundary scheme and the pseudonym carrier; the synthetic
//! values use their last decimal and now get the boundary scheme. The attack suite's figures in
//! docs/release.md are current.)
//!
//! With the default cutoff t = 1/900, ε = 10^-6, 20 candidates and a fitted plan (1 % of cells), dev build,
//! 2026-12-04 (`tokumei --json bench release --parts experiments --rows N`):
//! - 20,000 rows, one recipient leaks a random 10 % of the rows (shuffled, pseudonym dropped, columns
//!   reordered): identified in 1000/1000 trials (at least 72 positions read, 100 on average), no innocent accused; 50,000 rows:
//!   200/200 (214–250); 200,000 rows: 200/200 (920–1,000);
//! - 20,000 rows, 10,000 leaks of copies made for others or unmarked: no accusation;
//! - 3 colluders mixing their copies cell by cell, 10 % kept: a colluder accused in 0/200 trials at 20,000
//!   rows, 14/100 at 50,000 and 100/100 at 200,000; no innocent accused. Under the earlier rate selection
//!   the same experiment gave 193/200 at 20,000 rows: its positions were carried by many cells, so a
//!   position read in a mixed file was decided by the majority of the colluders' cells — a majority vote,
//!   the weakest collusion strategy, which a coalition that groups equal rows can avoid. With positions
//!   carried by one cell each, every position shows one colluder's bit and the code needs Tardos' length
//!   (about 1,000 positions here) to accuse; the fingerprint issue's structural marks add those carriers.
//!
//! Cells whose value repeats share a position (a value-keyed position of a common value is carried by every
//! row with that value), so positions are fewer than marked cells, markedly so on large tables (about 10,000
//! positions for 35,000 marked cells at 1 million rows); a position read in several cells is decided by
//! majority, which is also what makes cell-by-cell mixing of copies detectable.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

mod accuse;
pub mod attacks;
mod carriers;
mod cells;
mod embed;
pub mod experiments;
mod prf;
mod pseudonyms;
mod read;
mod value;

#[cfg(test)]
mod tests;

pub use accuse::{CandidateScore, Verdict, accuse};
pub use carriers::{Traced, reads_pseudonyms, trace_cells};
pub use cells::{Cells, Sheet};
pub use embed::{
    BOUNDARY_MIN_POSITION_SHARE, BOUNDARY_MIN_SHARE, BUDGET_SHARE, BUDGET_SIGMAS, EmbedReport, embed, fit_plan, plan,
};
pub use pseudonyms::{PSEUDONYM_COLUMN, PseudonymMatch, PseudonymVerdict, RecipientPseudonyms, trace_pseudonyms};
pub use read::{Marks, ReadPosition, read_marks};
pub use value::{MAX_DECIMALS, Scaled, format_scaled, parse_scaled, render_scaled};

/// The most cells of a file a recipient's fingerprint may alter (1 %), the release policy's default.
pub const DEFAULT_MAX_CELL_FRACTION: f64 = 0.01;

/// Collusion size the code is parameterised for: up to 3 recipients mixing their copies.
pub const DEFAULT_COLLUDERS: u32 = 3;

/// Tardos cutoff t = 1/(300·c) for c = [`DEFAULT_COLLUDERS`] (Tardos' choice; biases stay in [t, 1 − t],
/// which bounds the weight of any single position).
pub const DEFAULT_CUTOFF: f64 = 1.0 / (300.0 * DEFAULT_COLLUDERS as f64);

/// Default bound on the probability of accusing any innocent candidate.
pub const DEFAULT_BOUND: f64 = 1e-6;

/// Why a copy could not be marked. Never contains key material or cell values.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// A marked column of the plan is not in the table.
    #[error("marked column {0:?} is not in the table")]
    UnknownColumn(String),
    /// An anchor of a marked column is not in the table.
    #[error("anchor {anchor:?} of marked column {column:?} is not in the table")]
    UnknownAnchor {
        /// The marked column.
        column: String,
        /// The missing anchor.
        anchor: String,
    },
    /// An anchor is itself a marked column: its text would differ between copies and the positions with it.
    #[error("anchor {anchor:?} of marked column {column:?} is itself marked")]
    AnchorMarked {
        /// The marked column.
        column: String,
        /// The marked anchor.
        anchor: String,
    },
    /// More decimals than exact integer arithmetic supports.
    #[error("marked column {column:?} declares {decimals} decimals, at most {max} are supported")]
    Decimals {
        /// The marked column.
        column: String,
        /// Its declared decimals.
        decimals: u32,
        /// [`MAX_DECIMALS`].
        max: u32,
    },
    /// The plan's rate or cutoff is out of range, or a column is listed twice.
    #[error("invalid fingerprint plan: {0}")]
    InvalidPlan(String),
    /// Marking would alter more cells than the budget allows; nothing was written.
    #[error("fingerprint would mark {marked} cells, the budget allows {allowed} of {total}")]
    BudgetExceeded {
        /// Cells that would be marked.
        marked: usize,
        /// ⌊fraction × total⌋.
        allowed: usize,
        /// All cells of the table.
        total: usize,
    },
    /// The sheet's columns do not line up.
    #[error("malformed sheet: {0}")]
    Sheet(String),
}

/// The secret a release's fingerprints are drawn from (one per release, wrapped by the key service).
pub struct FingerprintKey(Zeroizing<[u8; 32]>);

impl FingerprintKey {
    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> FingerprintKey {
        FingerprintKey(Zeroizing::new(bytes))
    }

    /// The key bytes (for keying the PRF only).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

/// One column that carries marks: a measured value whose last significant digit may change by one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedColumn {
    /// Column name.
    pub column: String,
    /// Decimal places the value is written with; the tolerance is one unit of the last one (10^-decimals).
    pub decimals: u32,
    /// Columns whose values key the selection of some of this column's cells (besides the value itself),
    /// so that rows with equal values still carry different code positions. Cells keyed on an anchor that a
    /// leaker dropped are lost; cells keyed on the value alone survive any column drop.
    pub anchors: Vec<String>,
    /// How a cell carries its bit; [`plan`] chooses it from the column's values (absent in records made
    /// before the boundary scheme: parity).
    #[serde(default, skip_serializing_if = "MarkScheme::is_parity")]
    pub scheme: MarkScheme,
    /// The precision of each cell, by the code of its row, when the column mixes tests reported with different
    /// precisions (whole-number enzymes beside two-decimal creatinine): marks then live in each cell's own last
    /// significant digit, so rounding the column to one decimal leaves whole-number tests' marks intact.
    /// Absent: every cell has the column's `decimals` (records made before per-code precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<CodePrecision>,
}

impl MarkedColumn {
    /// Decimal places of a cell whose row has `code` (the text of the precision's code column): its code's
    /// precision, or the column's when the column has none or the code is not known.
    pub(crate) fn decimals_at(&self, code: Option<&str>) -> u32 {
        match (&self.precision, code) {
            (Some(p), Some(code)) => p.decimals_of(code, self.decimals),
            _ => self.decimals,
        }
    }
}

/// The decimal places a measured column's values are reported with, per code of the row (filled in by
/// [`plan`] from the values; kept in the release record with the plan, never given to recipients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodePrecision {
    /// The column naming what each value measures.
    pub code_column: String,
    /// Leading characters of a code that decide its precision (the JLAC10 analyte): a leaker who re-codes one
    /// level up keeps them, so the tracer still knows each cell's precision.
    pub prefix: usize,
    /// Decimal places each code prefix's values use, at most the column's. Codes not listed (too few values to
    /// tell) use the column's.
    #[serde(default)]
    pub decimals: std::collections::BTreeMap<String, u32>,
}

impl CodePrecision {
    /// A precision by `prefix` leading characters of `code_column`, before [`plan`] has read the values.
    pub fn new(code_column: &str, prefix: usize) -> CodePrecision {
        CodePrecision {
            code_column: code_column.to_owned(),
            prefix,
            decimals: std::collections::BTreeMap::new(),
        }
    }

    /// The part of a code its precision is looked up by (whole characters, surrounding space ignored).
    pub fn key<'a>(&self, code: &'a str) -> &'a str {
        let code = code.trim();
        code.char_indices().nth(self.prefix).map_or(code, |(i, _)| &code[..i])
    }

    /// The decimal places of a cell whose row has `code`, for a column written with `column_decimals`.
    pub fn decimals_of(&self, code: &str, column_decimals: u32) -> u32 {
        self.decimals
            .get(self.key(code))
            .map_or(column_decimals, |&d| d.min(column_decimals))
    }
}

/// How a marked cell carries its bit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkScheme {
    /// The parity of the last decimal (moves a value by at most one unit; erased by rounding or ±1 unit).
    /// For columns whose values rarely use their last decimal (whole numbers written with decimals).
    #[default]
    Parity,
    /// Cells whose last digit is 4 or 5 — the ones rounding to one decimal fewer sends up or down — become
    /// …3 (bit 0) or …6 (bit 1), at most two units away; the position is keyed on the value without its last
    /// digit. ±1 unit leaves the digit in 2–4 or 5–7 (read as is); rounding sends …3 down and …6 up, and a
    /// cell ending in 0 is read at both boundaries it may have come from. For columns whose values use their
    /// last decimal.
    Boundary,
}

impl MarkScheme {
    /// Whether this is the parity scheme (omitted from records, for compatibility).
    pub fn is_parity(&self) -> bool {
        *self == MarkScheme::Parity
    }
}

/// How one table of a release is marked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FingerprintPlan {
    /// The marked columns (never quasi-identifiers or the sensitive attribute).
    pub columns: Vec<MarkedColumn>,
    /// Probability that a markable cell is selected (set so that at most the cell budget is touched).
    pub rate: f64,
    /// Tardos cutoff t: position biases lie in [t, 1 - t].
    pub cutoff: f64,
    /// The positions chosen to carry marks when the plan was fitted with the key ([`fit_plan`]): a position
    /// is then marked iff it is in this set (and its selector is below `rate`). Kept with the release (never
    /// given to recipients; without the key the ids say nothing about values), so the tracer knows the
    /// positions without having to find them from cluster sizes a leaked sample no longer shows. `None` for
    /// a key-less plan ([`plan`]): the rate alone selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<MarkedPositions>,
}

impl FingerprintPlan {
    /// Whether `cells` has every marked column and what reading it needs (the code column of a per-code
    /// precision): whether this plan's marks can be read there at all.
    pub fn readable_in<C: Cells + ?Sized>(&self, cells: &C) -> bool {
        self.columns.iter().all(|c| {
            cells.column_index(&c.column).is_some()
                && c.precision
                    .as_ref()
                    .is_none_or(|p| cells.column_index(&p.code_column).is_some())
        })
    }

    /// Whether cells at `position` carry a mark under this plan.
    pub(crate) fn selects(&self, prf: &prf::Prf, position: u64) -> bool {
        prf.selected(position, self.rate) && self.positions.as_ref().is_none_or(|p| p.contains(position))
    }
}

/// A set of code positions, stored compactly (base64 of the sorted ids, little-endian) in the release
/// record — a fitted plan of a million-row table holds tens of thousands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MarkedPositions(Vec<u64>);

impl MarkedPositions {
    /// The set of `ids` (any order, duplicates dropped).
    pub fn new(mut ids: Vec<u64>) -> MarkedPositions {
        ids.sort_unstable();
        ids.dedup();
        MarkedPositions(ids)
    }

    /// Whether `position` is in the set.
    pub fn contains(&self, position: u64) -> bool {
        self.0.binary_search(&position).is_ok()
    }

    /// Number of positions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for MarkedPositions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        let bytes: Vec<u8> = self.0.iter().flat_map(|p| p.to_le_bytes()).collect();
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for MarkedPositions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(deserializer)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("marked positions are not base64"))?;
        if bytes.len() % 8 != 0 {
            return Err(serde::de::Error::custom("marked positions are not whole 64-bit ids"));
        }
        let ids = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(MarkedPositions::new(ids))
    }
}
