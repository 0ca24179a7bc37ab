//! Equivalence-class tables keyed by packed generalised codes, and roll-up between nodes.
//!
//! A node's classes are a map from the packed tuple of generalised QI codes to a record count
//! (and, with sensitive attributes, one histogram per attribute). The bottom node's table is built
//! from rows once; every other table is *rolled up* from an already-computed finer table by
//! mapping each key field through `level a → level b` lookup tables — the number of classes, not
//! the number of rows, bounds the work.

use std::hash::Hash;

use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::fasthash::FastMap;
use crate::model::Hist;

/// An integer that holds all QI codes of a class side by side.
pub(crate) trait PackedKey: Copy + Eq + Hash + Send + Sync + Default + std::fmt::Debug + 'static {
    /// Reads a field.
    fn field(self, shift: u32, mask: u64) -> u32;
    /// Replaces a field.
    fn with_field(self, shift: u32, mask: u64, value: u32) -> Self;
}

impl PackedKey for u64 {
    #[inline]
    fn field(self, shift: u32, mask: u64) -> u32 {
        ((self >> shift) & mask) as u32
    }
    #[inline]
    fn with_field(self, shift: u32, mask: u64, value: u32) -> Self {
        (self & !(mask << shift)) | ((value as u64) << shift)
    }
}

impl PackedKey for u128 {
    #[inline]
    fn field(self, shift: u32, mask: u64) -> u32 {
        ((self >> shift) as u64 & mask) as u32
    }
    #[inline]
    fn with_field(self, shift: u32, mask: u64, value: u32) -> Self {
        (self & !((mask as u128) << shift)) | ((value as u128) << shift)
    }
}

/// Bit layout of packed keys: each QI gets enough bits for its leaf codes.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub shifts: Vec<u32>,
    pub masks: Vec<u64>,
    pub total_bits: u32,
}

impl Layout {
    pub fn new(ds: &Dataset) -> Self {
        let mut shifts = Vec::new();
        let mut masks = Vec::new();
        let mut total = 0u32;
        for q in &ds.qis {
            let m = q.hierarchy.domain_size().max(2) as u64;
            let bits = 64 - (m - 1).leading_zeros();
            shifts.push(total);
            masks.push(if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 });
            total += bits;
        }
        Self {
            shifts,
            masks,
            total_bits: total,
        }
    }
    #[inline]
    pub fn pack<K: PackedKey>(&self, codes: impl Iterator<Item = u32>) -> K {
        let mut k = K::default();
        for ((c, &s), &m) in codes.zip(&self.shifts).zip(&self.masks) {
            k = k.with_field(s, m, c);
        }
        k
    }
}

/// Classes of one node.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClassTable<K> {
    /// Levels of the node.
    pub levels: Vec<u32>,
    /// Packed generalised codes per class.
    pub keys: Vec<K>,
    /// Records per class.
    pub counts: Vec<u32>,
    /// `hists[attr][class]`: sensitive histogram (sorted by rank).
    pub hists: Vec<Vec<Hist>>,
}

impl<K: PackedKey> ClassTable<K> {
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Accumulates classes, in first-seen order (deterministic).
struct Grouper<K> {
    index: FastMap<K, u32>,
    table: ClassTable<K>,
    attrs: usize,
}

impl<K: PackedKey> Grouper<K> {
    fn new(levels: Vec<u32>, attrs: usize, capacity: usize) -> Self {
        let mut index = FastMap::default();
        index.reserve(capacity);
        Self {
            index,
            table: ClassTable {
                levels,
                hists: vec![Vec::new(); attrs],
                ..Default::default()
            },
            attrs,
        }
    }

    #[inline]
    fn slot(&mut self, key: K) -> usize {
        let t = &mut self.table;
        let attrs = self.attrs;
        *self.index.entry(key).or_insert_with(|| {
            t.keys.push(key);
            t.counts.push(0);
            for a in 0..attrs {
                t.hists[a].push(Vec::new());
            }
            (t.keys.len() - 1) as u32
        }) as usize
    }

    fn finish(mut self) -> ClassTable<K> {
        for per_attr in &mut self.table.hists {
            for h in per_attr.iter_mut() {
                compact(h);
            }
        }
        self.table
    }
}

/// Sorts a histogram and merges equal ranks.
fn compact(h: &mut Hist) {
    if h.len() <= 1 {
        return;
    }
    h.sort_unstable_by_key(|&(r, _)| r);
    let mut w = 0;
    for i in 1..h.len() {
        if h[i].0 == h[w].0 {
            h[w].1 += h[i].1;
        } else {
            w += 1;
            h[w] = h[i];
        }
    }
    h.truncate(w + 1);
}

const PAR_CHUNK: usize = 1 << 17;

/// Builds the bottom node's table (all levels 0) from rows, in parallel chunks merged in order.
pub(crate) fn bottom_table<K: PackedKey>(ds: &Dataset, layout: &Layout) -> ClassTable<K> {
    let attrs = ds.sensitive.len();
    let levels = vec![0u32; ds.qis.len()];
    let chunks: Vec<ClassTable<K>> = (0..ds.n)
        .into_par_iter()
        .step_by(PAR_CHUNK)
        .map(|start| {
            let end = (start + PAR_CHUNK).min(ds.n);
            let mut g = Grouper::<K>::new(levels.clone(), attrs, 1024);
            for row in start..end {
                let key = layout.pack::<K>(ds.qis.iter().map(|q| q.codes[row]));
                let slot = g.slot(key);
                g.table.counts[slot] += 1;
                for (a, s) in ds.sensitive.iter().enumerate() {
                    push_hist(&mut g.table.hists[a][slot], s.codes[row], 1);
                }
            }
            g.finish()
        })
        .collect();
    if chunks.len() == 1 {
        return chunks.into_iter().next().unwrap_or_default();
    }
    merge(levels, attrs, chunks.iter().map(|c| (c, 0..c.len(), None)))
}

#[inline]
fn push_hist(h: &mut Hist, rank: u32, count: u32) {
    match h.last_mut() {
        Some(last) if last.0 == rank => last.1 += count,
        _ => h.push((rank, count)),
    }
}

/// Field re-mapping from one node to a coarser one.
pub(crate) struct RollUp<'a> {
    changes: Vec<(u32, u64, &'a [u32])>,
}

impl<'a> RollUp<'a> {
    pub fn new(ds: &'a Dataset, layout: &Layout, from: &[u32], to: &[u32]) -> Self {
        let changes = (0..from.len())
            .filter(|&j| from[j] != to[j])
            .map(|j| {
                (
                    layout.shifts[j],
                    layout.masks[j],
                    ds.qis[j].up[from[j] as usize][to[j] as usize].as_slice(),
                )
            })
            .collect();
        Self { changes }
    }
    #[inline]
    pub fn map<K: PackedKey>(&self, mut key: K) -> K {
        for &(shift, mask, table) in &self.changes {
            key = key.with_field(shift, mask, table[key.field(shift, mask) as usize]);
        }
        key
    }
}

/// Merges tables (optionally re-keyed) into one.
fn merge<'a, K: PackedKey>(
    levels: Vec<u32>,
    attrs: usize,
    parts: impl Iterator<Item = (&'a ClassTable<K>, std::ops::Range<usize>, Option<&'a RollUp<'a>>)>,
) -> ClassTable<K> {
    let mut g = Grouper::<K>::new(levels, attrs, 1024);
    for (t, range, roll) in parts {
        for i in range {
            let key = roll.map_or(t.keys[i], |r| r.map(t.keys[i]));
            let slot = g.slot(key);
            g.table.counts[slot] += t.counts[i];
            for a in 0..attrs {
                g.table.hists[a][slot].extend_from_slice(&t.hists[a][i]);
            }
        }
    }
    g.finish()
}

/// Rolls `src` up to the coarser node `to`.
pub(crate) fn roll_up<K: PackedKey>(ds: &Dataset, layout: &Layout, src: &ClassTable<K>, to: &[u32]) -> ClassTable<K> {
    let attrs = ds.sensitive.len();
    let roll = RollUp::new(ds, layout, &src.levels, to);
    if src.len() < 2 * PAR_CHUNK {
        return merge(to.to_vec(), attrs, std::iter::once((src, 0..src.len(), Some(&roll))));
    }
    // Large tables: roll up chunks in parallel, then merge the (much smaller) partial tables.
    let parts: Vec<ClassTable<K>> = (0..src.len())
        .into_par_iter()
        .step_by(PAR_CHUNK)
        .map(|start| {
            let end = (start + PAR_CHUNK).min(src.len());
            merge(to.to_vec(), attrs, std::iter::once((src, start..end, Some(&roll))))
        })
        .collect();
    merge(to.to_vec(), attrs, parts.iter().map(|p| (p, 0..p.len(), None)))
}
