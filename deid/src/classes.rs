//! Equivalence-class tables keyed by packed generalised codes, and roll-up between nodes.
//!
//! A node's classes are a map from the packed tuple of generalised QI codes to a record count
//! (and, with sensitive attributes, one histogram per attribute). The bottom node's table is built
//! from rows once; every other table is *rolled up* from an already-computed finer table by
//! mapping each key field through `level a → level b` lookup tables — the number of classes, not
//! the number of rows, bounds the work.

use std::hash::Hash;
use std::sync::Mutex;

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

/// Zeroed slot arrays for dense grouping, kept between roll-ups so that a roll-up neither
/// allocates nor faults in fresh pages. Owned by the engine, so they are freed with it.
#[derive(Debug, Default)]
pub(crate) struct SlotPool(Mutex<Vec<Vec<u32>>>);

impl SlotPool {
    fn take(&self, size: usize) -> Vec<u32> {
        let mut slots = self
            .0
            .lock()
            .map_or_else(|_| Vec::new(), |mut p| p.pop().unwrap_or_default());
        if slots.len() < size {
            slots.resize(size, 0);
        }
        slots
    }
    fn give(&self, slots: Vec<u32>) {
        if let Ok(mut p) = self.0.lock() {
            p.push(slots);
        }
    }
}

/// Largest key space grouped by direct addressing (4 Mi slots, 16 MiB per concurrent roll-up).
const DENSE_MAX: usize = 1 << 22;

/// Direct addressing of a node's classes: the mixed-radix number of a key's generalised codes
/// indexes a slot array, so grouping is one array access per class instead of a hash probe.
#[derive(Debug, Clone)]
pub(crate) struct DensePlan {
    /// Per QI: (shift, mask, stride).
    fields: Vec<(u32, u64, usize)>,
    size: usize,
}

impl DensePlan {
    /// A plan for the node `levels` when its key space is small enough to address directly,
    /// given that about `inputs` keys will be grouped into one array (sparse large arrays cost
    /// more than hashing, and each concurrent chunk takes an array of its own).
    pub fn new(ds: &Dataset, layout: &Layout, levels: &[u32], inputs: usize) -> Option<Self> {
        let inputs = inputs.min(PAR_CHUNK);
        let mut size = 1usize;
        let mut fields = Vec::with_capacity(levels.len());
        for (j, &l) in levels.iter().enumerate() {
            let m = ds.qis[j].hierarchy.level(l as usize).labels().len().max(1);
            fields.push((layout.shifts[j], layout.masks[j], size));
            size = size.checked_mul(m)?;
            if size > DENSE_MAX {
                return None;
            }
        }
        (size <= (1 << 18).max(inputs.saturating_mul(8))).then_some(Self { fields, size })
    }
    #[inline]
    fn index<K: PackedKey>(&self, key: K) -> usize {
        self.fields
            .iter()
            .map(|&(shift, mask, stride)| key.field(shift, mask) as usize * stride)
            .sum()
    }
}

/// How a grouper finds a key's class.
enum Index<'p, K> {
    Hash(FastMap<K, u32>),
    /// Slot `i` holds class number + 1 (0 = none yet).
    Dense(&'p DensePlan, Vec<u32>, &'p SlotPool),
}

/// Accumulates classes, in first-seen order (deterministic, and the same order whichever index
/// is used).
struct Grouper<'p, K> {
    index: Index<'p, K>,
    table: ClassTable<K>,
    attrs: usize,
}

impl<'p, K: PackedKey> Grouper<'p, K> {
    fn new(levels: Vec<u32>, attrs: usize, capacity: usize, dense: Option<(&'p DensePlan, &'p SlotPool)>) -> Self {
        let index = match dense {
            Some((plan, pool)) => Index::Dense(plan, pool.take(plan.size), pool),
            None => {
                let mut index = FastMap::default();
                index.reserve(capacity);
                Index::Hash(index)
            }
        };
        Self {
            index,
            table: ClassTable {
                levels,
                keys: Vec::with_capacity(capacity),
                counts: Vec::with_capacity(capacity),
                hists: vec![Vec::new(); attrs],
            },
            attrs,
        }
    }

    /// Appends a new, empty class.
    #[inline]
    fn add(table: &mut ClassTable<K>, attrs: usize, key: K) -> u32 {
        table.keys.push(key);
        table.counts.push(0);
        for a in 0..attrs {
            table.hists[a].push(Vec::new());
        }
        (table.keys.len() - 1) as u32
    }

    /// The class of `key`, added if new.
    #[inline]
    fn slot(&mut self, key: K) -> usize {
        match &mut self.index {
            Index::Hash(index) => {
                let (t, attrs) = (&mut self.table, self.attrs);
                *index.entry(key).or_insert_with(|| Self::add(t, attrs, key)) as usize
            }
            Index::Dense(plan, _, _) => {
                let i = plan.index(key);
                self.slot_at(i, || key)
            }
        }
    }

    /// The class at dense slot `i`, added with the key `key()` if new. Meant for a dense index;
    /// with a hash index it falls back to [`Grouper::slot`] on `key()`.
    #[inline]
    fn slot_at(&mut self, i: usize, key: impl FnOnce() -> K) -> usize {
        let Index::Dense(_, slots, _) = &mut self.index else {
            return self.slot(key());
        };
        match slots[i] {
            0 => {
                let c = Self::add(&mut self.table, self.attrs, key());
                slots[i] = c + 1;
                c as usize
            }
            s => (s - 1) as usize,
        }
    }

    /// Adds class `i` of `t` into class `slot`.
    #[inline]
    fn absorb(&mut self, slot: usize, t: &ClassTable<K>, i: usize) {
        self.table.counts[slot] += t.counts[i];
        for a in 0..self.attrs {
            self.table.hists[a][slot].extend_from_slice(&t.hists[a][i]);
        }
    }

    fn finish(mut self) -> ClassTable<K> {
        if let Index::Dense(plan, mut slots, pool) = self.index {
            for &key in &self.table.keys {
                slots[plan.index(key)] = 0;
            }
            pool.give(slots);
        }
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

/// Initial class capacity of a rolled-up table (its size is not known in advance).
const ROLL_CAPACITY: usize = 1024;

/// Builds the bottom node's table (all levels 0) from rows, in parallel chunks merged in order.
pub(crate) fn bottom_table<K: PackedKey>(ds: &Dataset, layout: &Layout, pool: &SlotPool) -> ClassTable<K> {
    let attrs = ds.sensitive.len();
    let levels = vec![0u32; ds.qis.len()];
    let plan = DensePlan::new(ds, layout, &levels, ds.n);
    let dense = plan.as_ref().map(|p| (p, pool));
    let chunks: Vec<ClassTable<K>> = (0..ds.n)
        .into_par_iter()
        .step_by(PAR_CHUNK)
        .map(|start| {
            let end = (start + PAR_CHUNK).min(ds.n);
            // Sized for a chunk of mostly distinct rows, so the table never grows (re-hashing) midway.
            let mut g = Grouper::<K>::new(levels.clone(), attrs, (end - start) / 2, dense);
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
    // At least as many classes as the largest chunk has.
    let capacity = chunks.iter().map(ClassTable::len).max().unwrap_or(0);
    merge(
        levels,
        attrs,
        dense,
        capacity,
        chunks.iter().map(|c| (c, 0..c.len(), None)),
    )
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
    /// With a dense target: the slot index straight from a source key.
    dense: Option<DenseRoll<'a>>,
}

/// Per QI: (shift, mask, the source level → target level table if the level changes, stride):
/// the slot of a source key without building the coarser key.
struct DenseRoll<'a>(Vec<(u32, u64, Option<&'a [u32]>, usize)>);

impl DenseRoll<'_> {
    #[inline]
    fn index<K: PackedKey>(&self, key: K) -> usize {
        self.0
            .iter()
            .map(|&(shift, mask, up, stride)| {
                let code = key.field(shift, mask);
                up.map_or(code, |up| up[code as usize]) as usize * stride
            })
            .sum()
    }
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
        Self { changes, dense: None }
    }

    /// Also computes slot indexes straight from source keys, for grouping under `plan`.
    fn with_dense(mut self, ds: &'a Dataset, from: &[u32], to: &[u32], plan: &DensePlan) -> Self {
        let fields = plan
            .fields
            .iter()
            .enumerate()
            .map(|(j, &(shift, mask, stride))| {
                let up = (from[j] != to[j]).then(|| ds.qis[j].up[from[j] as usize][to[j] as usize].as_slice());
                (shift, mask, up, stride)
            })
            .collect();
        self.dense = Some(DenseRoll(fields));
        self
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
    dense: Option<(&DensePlan, &SlotPool)>,
    capacity: usize,
    parts: impl Iterator<Item = (&'a ClassTable<K>, std::ops::Range<usize>, Option<&'a RollUp<'a>>)>,
) -> ClassTable<K> {
    let dense_roll = |roll: Option<&'a RollUp<'a>>| roll.and_then(|r| r.dense.as_ref().map(|d| (r, d)));
    let mut g = Grouper::<K>::new(levels, attrs, capacity, dense);
    for (t, range, roll) in parts {
        match (dense_roll(roll), dense.is_some()) {
            // Straight from the source key to the slot: independent table look-ups, and the
            // coarser key is only built for a new class.
            (Some((r, d)), true) => {
                for i in range {
                    let key = t.keys[i];
                    let slot = g.slot_at(d.index(key), || r.map(key));
                    g.absorb(slot, t, i);
                }
            }
            _ => {
                for i in range {
                    let key = roll.map_or(t.keys[i], |r| r.map(t.keys[i]));
                    let slot = g.slot(key);
                    g.absorb(slot, t, i);
                }
            }
        }
    }
    g.finish()
}

/// Rolls `src` up to the coarser node `to`.
pub(crate) fn roll_up<K: PackedKey>(
    ds: &Dataset,
    layout: &Layout,
    pool: &SlotPool,
    src: &ClassTable<K>,
    to: &[u32],
) -> ClassTable<K> {
    let attrs = ds.sensitive.len();
    let plan = DensePlan::new(ds, layout, to, src.len());
    let mut roll = RollUp::new(ds, layout, &src.levels, to);
    if let Some(p) = &plan {
        roll = roll.with_dense(ds, &src.levels, to, p);
    }
    let dense = plan.as_ref().map(|p| (p, pool));
    if src.len() < 2 * PAR_CHUNK {
        return merge(
            to.to_vec(),
            attrs,
            dense,
            ROLL_CAPACITY,
            std::iter::once((src, 0..src.len(), Some(&roll))),
        );
    }
    // Large tables: roll up chunks in parallel, then merge the (much smaller) partial tables.
    let parts: Vec<ClassTable<K>> = (0..src.len())
        .into_par_iter()
        .step_by(PAR_CHUNK)
        .map(|start| {
            let end = (start + PAR_CHUNK).min(src.len());
            merge(
                to.to_vec(),
                attrs,
                dense,
                ROLL_CAPACITY,
                std::iter::once((src, start..end, Some(&roll))),
            )
        })
        .collect();
    merge(
        to.to_vec(),
        attrs,
        dense,
        ROLL_CAPACITY,
        parts.iter().map(|p| (p, 0..p.len(), None)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{QiInput, SensitiveInput};
    use crate::lattice::Lattice;
    use crate::table::Table;

    /// Direct addressing must give the very table hashing gives — same classes in the same
    /// (first-seen) order, same counts and histograms — on every node, from every finer node.
    #[test]
    fn dense_grouping_equals_hash_grouping_on_every_roll_up() {
        let rows: Vec<Vec<String>> = (0..300usize)
            .map(|i| {
                vec![
                    format!("{}", 20 + (i * 7) % 23),
                    ["M", "F"][(i / 3) % 2].to_string(),
                    ["a", "b", "c", "d"][(i * 5) % 4].to_string(),
                    ["I10", "E11", "J45"][(i * 11) % 3].to_string(),
                ]
            })
            .collect();
        let header = ["age", "sex", "zone", "dx"].map(String::from);
        let table = Table::from_rows(&header, &rows).unwrap();
        let age: String = (20..43)
            .map(|a| format!("{a};{}-{};*\n", a / 5 * 5, a / 5 * 5 + 4))
            .collect();
        let qis = vec![
            QiInput::from_arx_text("age", &age, b';').unwrap(),
            QiInput::from_arx_text("sex", "M;*\nF;*\n", b';').unwrap(),
            QiInput::from_arx_text("zone", "a;ab;*\nb;ab;*\nc;cd;*\nd;cd;*\n", b';').unwrap(),
        ];
        let sens = vec![SensitiveInput {
            name: "dx".into(),
            hierarchy: None,
        }];
        let ds = Dataset::encode(&table, qis, sens, None).unwrap();
        let layout = Layout::new(&ds);
        let pool = SlotPool::default();
        let bottom = bottom_table::<u64>(&ds, &layout, &pool);
        let lattice = Lattice::new(&ds.heights()).unwrap();
        let same = |a: &ClassTable<u64>, b: &ClassTable<u64>| {
            assert_eq!(a.levels, b.levels);
            assert_eq!(a.keys, b.keys);
            assert_eq!(a.counts, b.counts);
            assert_eq!(a.hists, b.hists);
        };
        let mut dense_used = 0;
        for from in 0..lattice.size() {
            let src = roll_up(&ds, &layout, &pool, &bottom, &lattice.levels(from));
            for to in 0..lattice.size() {
                let (f, t) = (lattice.levels(from), lattice.levels(to));
                if !lattice.le(&f, &t) {
                    continue;
                }
                let rolled = roll_up(&ds, &layout, &pool, &src, &t);
                let roll = RollUp::new(&ds, &layout, &f, &t);
                let hashed = merge(
                    t.clone(),
                    1,
                    None,
                    16,
                    std::iter::once((&src, 0..src.len(), Some(&roll))),
                );
                same(&rolled, &hashed);
                dense_used += usize::from(DensePlan::new(&ds, &layout, &t, src.len()).is_some());
            }
        }
        assert!(dense_used > 0, "the dense path was never taken");
        // Slot arrays come back zeroed: a second roll-up of the bottom gives the same table.
        let top = lattice.levels(lattice.top());
        same(
            &roll_up(&ds, &layout, &pool, &bottom, &top),
            &roll_up(&ds, &layout, &pool, &bottom, &top),
        );
    }
}
