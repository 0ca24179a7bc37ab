//! Integer encoding of a [`Table`] for the engine: one `u32` leaf code per row and QI, sensitive
//! values ranked in their natural order, and subject ids for patient-level counting.
//!
//! Encoding happens once per job; afterwards the search only touches integer arrays.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hierarchy::Hierarchy;
use crate::table::{Column, Table};

/// A quasi-identifier to encode: a column and its hierarchy.
#[derive(Debug, Clone)]
pub struct QiInput {
    /// Column name.
    pub name: String,
    /// Its generalisation hierarchy.
    pub hierarchy: Hierarchy,
}

impl QiInput {
    /// A QI with a hierarchy given as ARX CSV text (`value;level1;…;*` per line): the shape tests
    /// and small jobs state hierarchies in.
    pub fn from_arx_text(name: &str, text: &str, delimiter: u8) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            hierarchy: Hierarchy::parse_arx_csv(name, text, delimiter)?,
        })
    }
}

/// A sensitive attribute: a column and optionally a hierarchy (needed for hierarchical
/// t-closeness; also fixes the value order for ordered t-closeness).
#[derive(Debug, Clone)]
pub struct SensitiveInput {
    /// Column name.
    pub name: String,
    /// Optional hierarchy of the sensitive values.
    pub hierarchy: Option<Hierarchy>,
}

/// An encoded quasi-identifier.
#[derive(Debug, Clone)]
pub struct EncodedQi {
    /// Column name.
    pub name: String,
    /// Hierarchy (leaf codes refer to its lines).
    pub hierarchy: Hierarchy,
    /// Leaf code per row.
    pub codes: Vec<u32>,
    /// Number of rows per leaf code.
    pub freq: Vec<u64>,
    /// `up[from][to]`: code at level `from` → code at level `to` (`to >= from`, else empty).
    pub(crate) up: Vec<Vec<Vec<u32>>>,
}

impl EncodedQi {
    /// Highest level (height - 1).
    pub fn max_level(&self) -> usize {
        self.hierarchy.height() - 1
    }
}

/// An encoded sensitive attribute. Codes are ranks in the attribute's order.
#[derive(Debug, Clone)]
pub struct EncodedSensitive {
    /// Column name.
    pub name: String,
    /// Distinct values, indexed by rank.
    pub values: Vec<String>,
    /// Rank of every row's value.
    pub codes: Vec<u32>,
    /// Distribution of the whole table over ranks (t-closeness reference).
    pub overall: Vec<f64>,
    /// For hierarchical ground distance: `tree[L-1][rank]` is the node of the value at level `L`
    /// (`L = 1..=tree.len()`), the last level being a single root.
    pub tree: Option<Vec<Vec<u32>>>,
}

/// The encoded engine input.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Number of rows.
    pub n: usize,
    /// Quasi-identifiers.
    pub qis: Vec<EncodedQi>,
    /// Sensitive attributes.
    pub sensitive: Vec<EncodedSensitive>,
    /// Subject id per row (patient-level counting), if requested.
    pub subjects: Option<Vec<u32>>,
    /// Number of distinct subjects (equals `n` without a subject column).
    pub n_subjects: usize,
}

impl Dataset {
    /// Encodes `table`; fails if a QI value is missing from its hierarchy (with the data line).
    pub fn encode(
        table: &Table,
        qis: Vec<QiInput>,
        sensitive: Vec<SensitiveInput>,
        subject: Option<&str>,
    ) -> Result<Self> {
        let n = table.rows();
        if n == 0 {
            return Err(Error::Input("the input has no records".into()));
        }
        if qis.is_empty() {
            return Err(Error::Config("at least one quasi-identifier is required".into()));
        }
        let mut names: Vec<&str> = qis.iter().map(|q| q.name.as_str()).collect();
        names.extend(sensitive.iter().map(|s| s.name.as_str()));
        names.extend(subject);
        let mut seen = std::collections::HashSet::new();
        for name in names {
            if !seen.insert(name) {
                return Err(Error::Config(format!("column {name:?} is given more than one role")));
            }
        }
        let qis = qis
            .into_iter()
            .map(|q| encode_qi(table, q))
            .collect::<Result<Vec<_>>>()?;
        let sensitive = sensitive
            .into_iter()
            .map(|s| encode_sensitive(table, s))
            .collect::<Result<Vec<_>>>()?;
        let (subjects, n_subjects) = match subject {
            Some(name) => {
                let col = table.column(name)?;
                (Some(col.codes().to_vec()), col.dict().len())
            }
            None => (None, n),
        };
        Ok(Self {
            n,
            qis,
            sensitive,
            subjects,
            n_subjects,
        })
    }

    /// Heights (number of levels) of all QIs: the lattice dimensions.
    pub fn heights(&self) -> Vec<usize> {
        self.qis.iter().map(|q| q.hierarchy.height()).collect()
    }
}

/// Maps every dictionary value of `col` to a hierarchy leaf code; counts the values it does not cover.
fn leaf_lut(col: &Column, h: &Hierarchy) -> Result<Vec<u32>> {
    let lut: Vec<Option<u32>> = col.dict().iter().map(|v| h.leaf_code(v)).collect();
    let uncovered = lut.iter().filter(|l| l.is_none()).count();
    if uncovered > 0 {
        return Err(Error::MissingValue {
            column: col.name().to_string(),
            uncovered,
        });
    }
    Ok(lut.into_iter().flatten().collect())
}

fn encode_qi(table: &Table, q: QiInput) -> Result<EncodedQi> {
    let col = table.column(&q.name)?;
    let lut = leaf_lut(col, &q.hierarchy)?;
    let codes: Vec<u32> = col
        .codes()
        .par_iter()
        .with_min_len(1 << 16)
        .map(|&c| lut[c as usize])
        .collect();
    let mut freq = vec![0u64; q.hierarchy.domain_size()];
    let mut dict_freq = vec![0u64; col.dict().len()];
    for &c in col.codes() {
        dict_freq[c as usize] += 1;
    }
    for (d, f) in dict_freq.iter().enumerate() {
        freq[lut[d] as usize] += f;
    }
    let h = q.hierarchy.height();
    let up = (0..h)
        .map(|from| {
            (0..h)
                .map(|to| {
                    if to >= from {
                        q.hierarchy.map_between(from, to)
                    } else {
                        Vec::new()
                    }
                })
                .collect()
        })
        .collect();
    Ok(EncodedQi {
        name: q.name,
        hierarchy: q.hierarchy,
        codes,
        freq,
        up,
    })
}

fn encode_sensitive(table: &Table, s: SensitiveInput) -> Result<EncodedSensitive> {
    let col = table.column(&s.name)?;
    let dict = col.dict();
    // Order of the distinct values: hierarchy line order, else numeric, else lexicographic.
    let mut order: Vec<usize> = (0..dict.len()).collect();
    let mut leaf_of: Vec<u32> = Vec::new();
    if let Some(h) = &s.hierarchy {
        leaf_of = leaf_lut(col, h)?;
        order.sort_by_key(|&d| leaf_of[d]);
    } else {
        let nums: Option<Vec<f64>> = dict.iter().map(|v| v.trim().parse::<f64>().ok()).collect();
        match nums {
            Some(x) => order.sort_by(|&a, &b| x[a].total_cmp(&x[b]).then(dict[a].cmp(&dict[b]))),
            None => order.sort_by(|&a, &b| dict[a].cmp(&dict[b])),
        }
    }
    let mut rank_of = vec![0u32; dict.len()];
    for (rank, &d) in order.iter().enumerate() {
        rank_of[d] = rank as u32;
    }
    let values: Vec<String> = order.iter().map(|&d| dict[d].clone()).collect();
    let codes: Vec<u32> = col.codes().iter().map(|&c| rank_of[c as usize]).collect();
    let mut overall = vec![0f64; values.len()];
    for &c in &codes {
        overall[c as usize] += 1.0;
    }
    let n = codes.len() as f64;
    overall.iter_mut().for_each(|x| *x /= n);
    let tree = s.hierarchy.as_ref().map(|h| {
        let mut levels: Vec<Vec<u32>> = (1..h.height())
            .map(|l| {
                order
                    .iter()
                    .map(|&d| h.level(l).of_leaf()[leaf_of[d] as usize])
                    .collect()
            })
            .collect();
        if levels.last().is_none_or(|top| top.iter().any(|&c| c != top[0])) {
            levels.push(vec![0; values.len()]);
        }
        levels
    });
    Ok(EncodedSensitive {
        name: s.name,
        values,
        codes,
        overall,
        tree,
    })
}
