//! The stable transformation in front of every noise mechanism: rows → per-group aggregates, with
//! per-subject contribution bounding, clamping and (optional) generalisation of the group columns.
//!
//! Its stability is what the noise is calibrated to, so it is stated here, next to the code:
//! neighbouring data sets differ in one subject (patient), who after bounding keeps at most `N =
//! max_contrib` rows. Removing that subject therefore changes
//! * the vector of group counts by at most `N` in L1, in L2 and in L∞, and touches at most `N` groups;
//! * the vector of clamped sums by at most `N · max(|lo|, |hi|)` in each of those norms;
//! * each group's multiset of clamped values by at most `N` elements (for quantiles).
//!
//! Which `N` rows a subject keeps depends only on that subject's own rows (the first `N` in input
//! order among the rows that can contribute), so bounding one subject never changes another's rows.
//! Sums are computed exactly in integers on a power-of-two grid (see [`SumGrid`]) so that no
//! floating-point rounding can exceed the stated sensitivity.

use std::collections::HashMap;

use crate::dp::request::{Bounds, Keys, Measure, StatsRequest};
use crate::error::{Error, Result};
use crate::linked_tables::{Dimension, ValueLabel};
use crate::table::Table;

/// Group ids are dense indexes into [`Grouped::keys`].
pub type GroupId = u32;

/// Fixed-point grid for exact sums: a clamped value `v` is represented as `round(v / step)`, with
/// `step` a power of two chosen so that `max(|lo|, |hi|) / step ≤ 2^30`. Sums of up to 2^32 such
/// integers fit in an `i64` exactly, and the per-row bound `ceil(max / step)` is exact.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SumGrid {
    /// Grid step (a power of two).
    pub step: f64,
    /// Largest |value| of one row on the grid: `ceil(max(|lo|, |hi|) / step)`.
    pub per_row: i64,
}

impl SumGrid {
    /// Grid for the given bounds.
    pub fn for_bounds(bounds: &Bounds) -> Self {
        let m = bounds.magnitude();
        let exp = if m > 0.0 { m.log2().ceil() as i32 - 30 } else { -30 };
        let step = 2f64.powi(exp);
        Self {
            step,
            per_row: (m / step).ceil() as i64,
        }
    }

    /// A clamped value on the grid.
    pub fn quantise(&self, v: f64) -> i64 {
        (v / self.step).round() as i64
    }
}

/// Per-group aggregates after bounding: the input of the noise mechanisms.
#[derive(Debug, Clone, Default)]
pub struct Grouped {
    /// Column names of the key parts (group-by columns, then `bin` for a histogram).
    pub key_columns: Vec<String>,
    /// Key of each group.
    pub keys: Vec<Vec<String>>,
    /// Whether the keys are public (declared) — otherwise they are candidates for partition selection.
    pub public: bool,
    /// Rows per group.
    pub counts: Vec<i64>,
    /// Clamped sums per group on [`Grouped::grid`] (sum and mean measures).
    pub sums: Vec<i64>,
    /// Grid of the sums.
    pub grid: Option<SumGrid>,
    /// Clamped values per group (quantile measure only).
    pub values: Vec<Vec<f64>>,
    /// How each key column's values were labelled, for the audit of linked small-cell tables.
    pub dimensions: Vec<Dimension>,
}

/// Applies the transformation described in the module documentation.
pub fn group(table: &Table, request: &StatsRequest) -> Result<Grouped> {
    request.validate_shape()?;
    /// The label id of a value the group's hierarchy does not cover (its rows are not counted).
    const UNCOVERED: u32 = u32::MAX;
    let rows = table.rows();
    // Per group-by column: code → label id, and the label list.
    let mut label_of_code: Vec<Vec<u32>> = Vec::new();
    let mut labels: Vec<Vec<String>> = Vec::new();
    let mut label_ids: Vec<HashMap<String, u32>> = Vec::new();
    for col in &request.group_by {
        let column = table.column(col)?;
        let generalisation = request.generalise.iter().find(|g| &g.column == col);
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut of_code = Vec::with_capacity(column.dict().len());
        for value in column.dict() {
            let label = match generalisation {
                None => value.clone(),
                Some(g) => {
                    // A value the researcher's hierarchy does not cover is not counted, as a key outside a
                    // public key list is not: no error, no count — either would tell a caller, for free
                    // and as often as asked, which values the column holds.
                    let Some(leaf) = g.hierarchy.leaf_code(value) else {
                        of_code.push(UNCOVERED);
                        continue;
                    };
                    g.hierarchy
                        .label(g.level, g.hierarchy.level(g.level).of_leaf()[leaf as usize])
                        .to_string()
                }
            };
            let next = names.len() as u32;
            let id = *ids.entry(label.clone()).or_insert_with(|| {
                names.push(label);
                next
            });
            of_code.push(id);
        }
        label_of_code.push(of_code);
        labels.push(names);
        label_ids.push(ids);
    }

    // The measured column, parsed once per distinct value; `None` = empty (the row is skipped).
    let measured: Option<(&[u32], Vec<Option<f64>>)> = match request.measure.column() {
        None => None,
        Some(col) => {
            let column = table.column(col)?;
            // A value that is not a finite number is skipped like an empty one: an error naming it, its line
            // or even how many there are would let a caller probe the column without spending budget.
            let parsed = column
                .dict()
                .iter()
                .map(|value| value.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
                .collect();
            Some((column.codes(), parsed))
        }
    };
    let (bounds, bins) = match &request.measure {
        Measure::Count => (None, 0u32),
        Measure::Histogram { bounds, bins, .. } => (Some(*bounds), *bins),
        Measure::Sum { bounds, .. } | Measure::Mean { bounds, .. } | Measure::Quantile { bounds, .. } => {
            (Some(*bounds), 0)
        }
    };
    let bin_labels: Vec<String> = match bounds {
        Some(b) if bins > 0 => {
            let width = (b.hi - b.lo) / bins as f64;
            (0..bins)
                .map(|i| {
                    let lo = b.lo + width * i as f64;
                    let hi = if i + 1 == bins {
                        b.hi
                    } else {
                        b.lo + width * (i + 1) as f64
                    };
                    if i + 1 == bins {
                        format!("[{lo}, {hi}]")
                    } else {
                        format!("[{lo}, {hi})")
                    }
                })
                .collect()
        }
        _ => Vec::new(),
    };

    // Public keys: make sure every label exists, then index the keys.
    let mut key_columns = request.group_by.clone();
    if bins > 0 {
        key_columns.push("bin".to_string());
    }
    let public_keys: Option<Vec<Vec<u32>>> = match &request.keys {
        Keys::Select => None,
        Keys::Public(keys) => {
            let mut coded = Vec::with_capacity(keys.len());
            for key in keys {
                let mut parts = Vec::with_capacity(key.len());
                for (i, part) in key.iter().enumerate() {
                    let next = labels[i].len() as u32;
                    let id = *label_ids[i].entry(part.clone()).or_insert_with(|| {
                        labels[i].push(part.clone());
                        next
                    });
                    parts.push(id);
                }
                coded.push(parts);
            }
            Some(coded)
        }
    };
    // Mixed-radix combination of the label ids (and bin), dense when small.
    let mut radix: Vec<u64> = labels.iter().map(|l| l.len().max(1) as u64).collect();
    if bins > 0 {
        radix.push(bins as u64);
    }
    let space: u128 = radix.iter().map(|&r| r as u128).product();
    if space > u64::MAX as u128 {
        return Err(Error::Config("too many group-by combinations".into()));
    }
    let mut index = GroupIndex::new(space as u64);
    let mut keys: Vec<Vec<String>> = Vec::new();
    let combine = |parts: &[u32], bin: Option<u32>| -> u64 {
        let mut id = 0u64;
        for (i, &p) in parts.iter().enumerate() {
            id = id * radix[i] + p as u64;
        }
        if let Some(b) = bin {
            id = id * bins as u64 + b as u64;
        }
        id
    };
    if let Some(public) = &public_keys {
        for (k, parts) in public.iter().enumerate() {
            let bins_iter: Vec<Option<u32>> = if bins > 0 {
                (0..bins).map(Some).collect()
            } else {
                vec![None]
            };
            for bin in bins_iter {
                let combined = combine(parts, bin);
                if index.get(combined).is_some() {
                    return Err(Error::Config(format!(
                        "public key {:?} is declared twice",
                        request_key(request, k)
                    )));
                }
                index.insert(combined, keys.len() as GroupId);
                let mut key = request_key(request, k);
                if let Some(b) = bin {
                    key.push(bin_labels[b as usize].clone());
                }
                keys.push(key);
            }
        }
    }

    let mut out = Grouped {
        key_columns,
        public: public_keys.is_some(),
        grid: None,
        ..Default::default()
    };
    let grid = match &request.measure {
        Measure::Sum { bounds, .. } | Measure::Mean { bounds, .. } => Some(SumGrid::for_bounds(bounds)),
        _ => None,
    };
    out.grid = grid;
    let mut counts = vec![0i64; keys.len()];
    let mut sums = vec![0i64; if grid.is_some() { keys.len() } else { 0 }];
    let quantile = matches!(request.measure, Measure::Quantile { .. });
    let mut values: Vec<Vec<f64>> = if quantile {
        vec![Vec::new(); keys.len()]
    } else {
        Vec::new()
    };

    let subject_codes = match &request.subject {
        Some(s) => Some(table.column(s)?.codes()),
        None => None,
    };
    let mut kept_per_subject: Vec<u32> = match &request.subject {
        Some(s) => vec![0; table.column(s)?.dict().len()],
        None => Vec::new(),
    };
    let group_codes: Vec<&[u32]> = request
        .group_by
        .iter()
        .map(|c| table.column(c).map(|c| c.codes()))
        .collect::<Result<_>>()?;
    let mut parts = vec![0u32; group_codes.len()];
    for row in 0..rows {
        let value = match &measured {
            None => None,
            Some((codes, parsed)) => match parsed[codes[row] as usize] {
                None => continue,
                Some(v) => Some(bounds.map_or(v, |b| b.clamp(v))),
            },
        };
        for (i, codes) in group_codes.iter().enumerate() {
            parts[i] = label_of_code[i][codes[row] as usize];
        }
        if parts.contains(&UNCOVERED) {
            continue;
        }
        let bin = match (bins, value, bounds) {
            (0, _, _) => None,
            (_, Some(v), Some(b)) => Some(bin_of(v, &b, bins)),
            _ => None,
        };
        let combined = combine(&parts, bin);
        let group = match index.get(combined) {
            Some(g) => g,
            None if public_keys.is_some() => continue,
            None => {
                let g = keys.len() as GroupId;
                index.insert(combined, g);
                let mut key: Vec<String> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| labels[i][p as usize].clone())
                    .collect();
                if let Some(b) = bin {
                    key.push(bin_labels[b as usize].clone());
                }
                keys.push(key);
                counts.push(0);
                if grid.is_some() {
                    sums.push(0);
                }
                if quantile {
                    values.push(Vec::new());
                }
                g
            }
        };
        // Contribution bounding: only after the row is known to contribute.
        if let Some(subjects) = subject_codes {
            let kept = &mut kept_per_subject[subjects[row] as usize];
            if *kept >= request.max_contrib {
                continue;
            }
            *kept += 1;
        }
        let g = group as usize;
        counts[g] += 1;
        if let (Some(grid), Some(v)) = (grid, value) {
            sums[g] += grid.quantise(v);
        }
        if quantile && let Some(v) = value {
            values[g].push(v);
        }
    }
    out.dimensions = dimensions(request, &labels, &label_of_code, table, &bin_labels)?;
    out.keys = keys;
    out.counts = counts;
    out.sums = sums;
    out.values = values;
    Ok(out)
}

/// The histogram bin of a clamped value.
fn bin_of(v: f64, b: &Bounds, bins: u32) -> u32 {
    (((v - b.lo) / (b.hi - b.lo) * bins as f64).floor() as i64).clamp(0, bins as i64 - 1) as u32
}

/// How the grouping labelled every value present in each key column (a histogram's measured column for
/// its bins): the definition a published table is audited with against other tables of the population.
fn dimensions(
    request: &StatsRequest,
    labels: &[Vec<String>],
    label_of_code: &[Vec<u32>],
    table: &Table,
    bin_labels: &[String],
) -> Result<Vec<Dimension>> {
    let mut out = Vec::with_capacity(request.group_by.len() + 1);
    for (i, col) in request.group_by.iter().enumerate() {
        let column = table.column(col)?;
        let mut by_value: Vec<(&String, Option<String>)> = column
            .dict()
            .iter()
            .zip(&label_of_code[i])
            .map(|(value, &id)| (value, labels[i].get(id as usize).cloned()))
            .collect();
        by_value.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.push(Dimension {
            column: col.clone(),
            labels: by_value.into_iter().map(|(_, label)| ValueLabel::from(label)).collect(),
        });
    }
    if let Measure::Histogram { column, bounds, bins } = &request.measure {
        let mut values: Vec<&String> = table.column(column)?.dict().iter().collect();
        values.sort_unstable();
        let labels = values
            .into_iter()
            .map(|value| {
                value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .map(|v| bin_labels[bin_of(bounds.clamp(v), bounds, *bins) as usize].clone())
                    .into()
            })
            .collect();
        out.push(Dimension {
            column: column.clone(),
            labels,
        });
    }
    Ok(out)
}

fn request_key(request: &StatsRequest, k: usize) -> Vec<String> {
    match &request.keys {
        Keys::Public(keys) => keys[k].clone(),
        Keys::Select => Vec::new(),
    }
}

/// combined key → group id; a dense table when the key space is small, a hash map otherwise.
enum GroupIndex {
    Dense(Vec<GroupId>),
    Sparse(crate::fasthash::FastMap<u64, GroupId>),
}

impl GroupIndex {
    const DENSE_LIMIT: u64 = 1 << 24;

    fn new(space: u64) -> Self {
        if space <= Self::DENSE_LIMIT {
            GroupIndex::Dense(vec![GroupId::MAX; space as usize])
        } else {
            GroupIndex::Sparse(Default::default())
        }
    }

    fn get(&self, combined: u64) -> Option<GroupId> {
        match self {
            GroupIndex::Dense(v) => v.get(combined as usize).copied().filter(|&g| g != GroupId::MAX),
            GroupIndex::Sparse(m) => m.get(&combined).copied(),
        }
    }

    fn insert(&mut self, combined: u64, group: GroupId) {
        match self {
            GroupIndex::Dense(v) => v[combined as usize] = group,
            GroupIndex::Sparse(m) => {
                m.insert(combined, group);
            }
        }
    }
}
