//! One recoding evaluated: items generalised, (k, k^m) enforced inside every demographic class by suppressing
//! the items that stay rare there, and the cost counted.
//!
//! Within one class, an itemset of at most m items that fewer than k patients hold is a violation. Items are
//! suppressed for the whole class (never for one patient only), which has a useful property: removing item x
//! from every member leaves the support of every itemset without x unchanged, so a removal never creates a
//! violation and the repair converges. Items rare on their own are removed first (no fix other than removing
//! them or their holders exists); remaining violating itemsets are then hit greedily by their least supported
//! item, deterministically.

use rayon::prelude::*;
use serde::Serialize;

use super::data::{MAX_FIELDS, RtData};
use super::loss::{ItemNode, Loss, loss};
use crate::error::{Error, Result};
use crate::fasthash::FastMap;

/// The model's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KmParams {
    /// Candidates an adversary must be left with.
    pub k: u32,
    /// Items the adversary is assumed to know (1 ..= 4).
    pub m: usize,
}

impl KmParams {
    /// Checks the parameters are within what the engine supports.
    pub fn validate(&self) -> Result<()> {
        if self.k < 2 {
            return Err(Error::Config("k must be at least 2".into()));
        }
        if !(1..=MAX_M).contains(&self.m) {
            return Err(Error::Config(format!("m must be between 1 and {MAX_M}")));
        }
        Ok(())
    }
}

/// Largest m the engine enumerates (the number of itemsets grows as n^m).
pub const MAX_M: usize = 4;

/// A generalised item: its kind and the group code of each field at the recoding's levels.
pub type Item = (u16, [u32; MAX_FIELDS]);

/// The outcome of one recoding.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The recoding.
    pub node: ItemNode,
    /// Suppressed event occurrences per kind.
    pub suppressed_per_kind: Vec<u64>,
    /// Suppressed event occurrences.
    pub suppressed: u64,
    /// Information loss (generalisation and suppression).
    pub loss: Loss,
    /// Per event, in input order: its item, or `None` when suppressed (only when asked for).
    pub detail: Option<Detail>,
}

/// The recoded events, for writing the release.
#[derive(Debug, Clone)]
pub struct Detail {
    /// The distinct generalised items.
    pub items: Vec<Item>,
    /// For each input event, the index of its item in `items`, or `None` when suppressed.
    pub item_of_event: Vec<Option<u32>>,
}

impl Evaluation {
    /// Whether the suppression stays within `max_share` of all events.
    pub fn within(&self, data: &RtData, max_share: f64) -> bool {
        self.suppressed as f64 <= max_share * data.event_count() as f64 + 1e-9
    }
}

/// Evaluates `node`; with `detail`, also returns every event's recoded item.
pub fn evaluate(data: &RtData, node: &ItemNode, params: &KmParams, detail: bool) -> Result<Evaluation> {
    params.validate()?;
    let maps: Vec<Vec<&[u32]>> = data
        .kinds()
        .iter()
        .zip(&node.levels)
        .map(|(kind, levels)| {
            kind.field_components()
                .into_iter()
                .map(|c| kind.components[c].hierarchy.level(levels[c] as usize).of_leaf())
                .collect()
        })
        .collect();
    let (items, ids) = intern(data, &maps);

    let removed: Vec<Vec<u32>> = data
        .classes()
        .par_iter()
        .map(|members| {
            let sets: Vec<Vec<u32>> = members
                .iter()
                .map(|&p| {
                    let mut s: Vec<u32> = data.events_of(p).map(|i| ids[i]).collect();
                    s.sort_unstable();
                    s.dedup();
                    s
                })
                .collect();
            repair_class(sets, params.k, params.m)
        })
        .collect();

    let kinds = data.kinds().len();
    let mut suppressed_per_kind = vec![0u64; kinds];
    let mut item_of_event = if detail {
        vec![None; data.sorted_events().len()]
    } else {
        Vec::new()
    };
    for (members, gone) in data.classes().iter().zip(&removed) {
        for &p in members {
            for i in data.events_of(p) {
                let suppressed = gone.binary_search(&ids[i]).is_ok();
                if suppressed {
                    suppressed_per_kind[data.sorted_events()[i].kind as usize] += 1;
                } else if detail {
                    item_of_event[data.original_index(i)] = Some(ids[i]);
                }
            }
        }
    }
    let suppressed = suppressed_per_kind.iter().sum();
    Ok(Evaluation {
        node: node.clone(),
        loss: loss(data, node, &suppressed_per_kind),
        suppressed_per_kind,
        suppressed,
        detail: detail.then_some(Detail { items, item_of_event }),
    })
}

/// Interns the generalised items of every event (sorted-event order): the distinct items and each event's id.
/// Where the kind and the group codes fit one `u64` in mixed radix (always, for the platform's hierarchies), the
/// map is keyed by that number instead of the padded item, which is several times cheaper to hash.
fn intern(data: &RtData, maps: &[Vec<&[u32]>]) -> (Vec<Item>, Vec<u32>) {
    let item_of = |e: &super::data::Event| {
        let mut key = [0u32; MAX_FIELDS];
        for (f, map) in maps[e.kind as usize].iter().enumerate() {
            key[f] = map[e.leaves[f] as usize];
        }
        (e.kind, key)
    };
    let mut items: Vec<Item> = Vec::new();
    // Radix of each field of each kind: its number of groups at the recoding's level.
    let radices: Vec<Vec<u64>> = maps
        .iter()
        .map(|fields| {
            fields
                .iter()
                .map(|m| m.iter().max().map_or(1, |&g| u64::from(g) + 1))
                .collect()
        })
        .collect();
    let span: Option<u64> = radices
        .iter()
        .map(|r| r.iter().try_fold(1u64, |acc, &x| acc.checked_mul(x)))
        .try_fold(0u64, |acc, size| acc.checked_add(size?));
    let Some(_) = span else {
        let mut interner: FastMap<Item, u32> = FastMap::default();
        let ids = data
            .sorted_events()
            .iter()
            .map(|e| {
                let item = item_of(e);
                *interner.entry(item).or_insert_with(|| {
                    items.push(item);
                    (items.len() - 1) as u32
                })
            })
            .collect();
        return (items, ids);
    };
    // Kind k's codes start after the codes of kinds 0..k.
    let mut offsets = Vec::with_capacity(radices.len());
    let mut next = 0u64;
    for r in &radices {
        offsets.push(next);
        next += r.iter().product::<u64>();
    }
    let mut interner: FastMap<u64, u32> = FastMap::default();
    let ids = data
        .sorted_events()
        .iter()
        .map(|e| {
            let kind = e.kind as usize;
            let mut code = 0u64;
            for (f, map) in maps[kind].iter().enumerate() {
                code = code * radices[kind][f] + u64::from(map[e.leaves[f] as usize]);
            }
            *interner.entry(offsets[kind] + code).or_insert_with(|| {
                items.push(item_of(e));
                (items.len() - 1) as u32
            })
        })
        .collect();
    (items, ids)
}

/// Padded itemset key (unused slots `u32::MAX`).
type Key = [u32; MAX_M];

/// Counts, for every itemset of 1..=m items held by some member, how many members hold it.
fn count_itemsets(sets: &[Vec<u32>], m: usize) -> FastMap<Key, u32> {
    let mut counts: FastMap<Key, u32> = FastMap::default();
    let mut idx = [0usize; MAX_M];
    for s in sets {
        for size in 1..=m.min(s.len()) {
            // Combinations of `size` positions out of `s.len()`, in lexicographic order.
            for (j, slot) in idx.iter_mut().enumerate().take(size) {
                *slot = j;
            }
            loop {
                let mut key = [u32::MAX; MAX_M];
                for j in 0..size {
                    key[j] = s[idx[j]];
                }
                *counts.entry(key).or_insert(0) += 1;
                // Advance the rightmost index that can still move, and reset the ones after it.
                let n = s.len();
                let mut j = size;
                while j > 0 && idx[j - 1] == n - size + j - 1 {
                    j -= 1;
                }
                if j == 0 {
                    break;
                }
                idx[j - 1] += 1;
                for t in j..size {
                    idx[t] = idx[t - 1] + 1;
                }
            }
        }
    }
    counts
}

/// A set of item ids as a bitmap: the repair tests membership for every item of every member.
struct ItemBits(Vec<u64>);

impl ItemBits {
    /// An empty set for ids below `bound`.
    fn new(bound: u32) -> ItemBits {
        ItemBits(vec![0; (bound as usize).div_ceil(64)])
    }
    fn insert(&mut self, x: u32) {
        self.0[(x / 64) as usize] |= 1 << (x % 64);
    }
    fn contains(&self, x: u32) -> bool {
        self.0[(x / 64) as usize] & (1 << (x % 64)) != 0
    }
}

/// Repairs one class: the items to suppress in it (sorted), so that every itemset of at most `m` items of every
/// member is held by at least `k` members. A class smaller than `k` loses every item.
fn repair_class(mut sets: Vec<Vec<u32>>, k: u32, m: usize) -> Vec<u32> {
    let finish = |mut removed: Vec<u32>| {
        removed.sort_unstable();
        removed.dedup();
        removed
    };
    if sets.len() < k as usize {
        return finish(sets.into_iter().flatten().collect());
    }
    let mut removed: Vec<u32> = Vec::new();
    // Items held by fewer than k members are rare whatever else is known: they go first, all at once, before any
    // combination is counted (removing an item never changes another item's holders, so one pass suffices, the
    // holders of the items left stay what they are here, and the loop below only ever meets combinations of
    // items that are each held by k members).
    let mut holders: FastMap<u32, u32> = FastMap::default();
    for s in &sets {
        for &x in s {
            *holders.entry(x).or_insert(0) += 1;
        }
    }
    let bound = holders.keys().max().map_or(0, |&x| x + 1);
    let rare: Vec<u32> = holders.iter().filter(|(_, c)| **c < k).map(|(x, _)| *x).collect();
    if !rare.is_empty() {
        let mut bits = ItemBits::new(bound);
        for &x in &rare {
            bits.insert(x);
        }
        for s in &mut sets {
            s.retain(|&x| !bits.contains(x));
        }
        removed.extend(rare);
    }
    if m == 1 {
        return finish(removed);
    }
    let single = |x: u32| holders.get(&x).copied().unwrap_or(0);
    loop {
        // The violating combinations in ascending order (every item in them is held by k members).
        let violating: Vec<Key> = if m == 2 {
            let mut v: Vec<u64> = count_pairs(&sets)
                .into_iter()
                .filter(|(_, c)| *c < k)
                .map(|(pair, _)| pair)
                .collect();
            v.sort_unstable();
            v.into_iter()
                .map(|pair| [(pair >> 32) as u32, pair as u32, u32::MAX, u32::MAX])
                .collect()
        } else {
            let mut v: Vec<Key> = count_itemsets(&sets, m)
                .into_iter()
                .filter(|(_, c)| *c < k)
                .map(|(key, _)| key)
                .collect();
            v.sort_unstable();
            v
        };
        if violating.is_empty() {
            break;
        }
        // Each violating combination not yet hit loses its least held item.
        let mut chosen = ItemBits::new(bound);
        for key in &violating {
            let members = key.iter().take_while(|&&x| x != u32::MAX);
            if members.clone().any(|&x| chosen.contains(x)) {
                continue;
            }
            if let Some(&x) = members.min_by_key(|&&x| (single(x), x)) {
                chosen.insert(x);
                removed.push(x);
            }
        }
        for s in &mut sets {
            s.retain(|&x| !chosen.contains(x));
        }
    }
    finish(removed)
}

/// Counts, for every pair of items held together by some member, how many members hold it; the pair `(a, b)`
/// with `a < b` is the key `a << 32 | b` (the sets are sorted).
fn count_pairs(sets: &[Vec<u32>]) -> FastMap<u64, u32> {
    let mut counts: FastMap<u64, u32> = FastMap::default();
    for s in sets {
        for (i, &a) in s.iter().enumerate() {
            for &b in &s[i + 1..] {
                *counts.entry(u64::from(a) << 32 | u64::from(b)).or_insert(0) += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn counts_every_itemset_once_per_member() {
        let sets = vec![vec![1, 2, 3], vec![1, 2], vec![3]];
        let c = count_itemsets(&sets, 2);
        let k = |v: &[u32]| {
            let mut key = [u32::MAX; MAX_M];
            key[..v.len()].copy_from_slice(v);
            c[&key]
        };
        assert_eq!(k(&[1]), 2);
        assert_eq!(k(&[3]), 2);
        assert_eq!(k(&[1, 2]), 2);
        assert_eq!(k(&[1, 3]), 1);
        assert_eq!(k(&[2, 3]), 1);
        assert_eq!(c.len(), 6);
        let c3 = count_itemsets(&sets, 3);
        assert_eq!(c3.len(), 7);
    }

    /// The repair as first written (every itemset counted each round, B-tree sets): the reference the faster
    /// version must agree with exactly.
    fn repair_reference(mut sets: Vec<Vec<u32>>, k: u32, m: usize) -> Vec<u32> {
        let mut removed: BTreeSet<u32> = BTreeSet::new();
        if sets.len() < k as usize {
            return sets
                .into_iter()
                .flatten()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
        }
        loop {
            let counts = count_itemsets(&sets, m);
            let single = |x: u32| {
                let mut key = [u32::MAX; MAX_M];
                key[0] = x;
                counts.get(&key).copied().unwrap_or(0)
            };
            let mut chosen: BTreeSet<u32> = counts
                .iter()
                .filter(|(key, c)| key[1] == u32::MAX && **c < k)
                .map(|(key, _)| key[0])
                .collect();
            if chosen.is_empty() {
                let mut violating: Vec<&Key> = counts.iter().filter(|(_, c)| **c < k).map(|(key, _)| key).collect();
                if violating.is_empty() {
                    break;
                }
                violating.sort_unstable();
                for key in violating {
                    let members = key.iter().take_while(|&&x| x != u32::MAX);
                    if members.clone().any(|x| chosen.contains(x)) {
                        continue;
                    }
                    if let Some(&x) = members.min_by_key(|&&x| (single(x), x)) {
                        chosen.insert(x);
                    }
                }
            }
            for s in &mut sets {
                s.retain(|x| !chosen.contains(x));
            }
            removed.extend(chosen);
        }
        removed.into_iter().collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn the_repair_equals_the_reference(
            raw in proptest::collection::vec(proptest::collection::vec(0u32..12, 0..7), 0..14),
            k in 2u32..5,
            m in 1usize..4,
        ) {
            let sets: Vec<Vec<u32>> = raw
                .into_iter()
                .map(|mut s| {
                    s.sort_unstable();
                    s.dedup();
                    s
                })
                .collect();
            proptest::prop_assert_eq!(repair_class(sets.clone(), k, m), repair_reference(sets, k, m));
        }
    }

    #[test]
    fn pair_counts_agree_with_the_general_count() {
        let sets = vec![vec![1, 2, 3, 7], vec![1, 2], vec![2, 3, 7], vec![3]];
        let general = count_itemsets(&sets, 2);
        let pairs = count_pairs(&sets);
        let from_general: BTreeSet<(u64, u32)> = general
            .iter()
            .filter(|(key, _)| key[1] != u32::MAX)
            .map(|(key, c)| (u64::from(key[0]) << 32 | u64::from(key[1]), *c))
            .collect();
        let from_pairs: BTreeSet<(u64, u32)> = pairs.into_iter().collect();
        assert_eq!(from_pairs, from_general);
    }

    #[test]
    fn repair_removes_rare_items_then_hits_rare_pairs() {
        // k = 2, m = 2: item 9 is rare alone; the pair {1, 2} is held by one member only.
        let sets = vec![vec![1, 2, 9], vec![1, 3], vec![2, 3]];
        let removed = repair_class(sets, 2, 2);
        assert!(removed.contains(&9));
        // Every pair among {1, 2, 3} is held once: the greedy removes items until none is left rare.
        let sets = vec![vec![1, 2], vec![1, 2], vec![1, 3], vec![1, 3]];
        assert!(repair_class(sets, 2, 2).is_empty());
    }
}
