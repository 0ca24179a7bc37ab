//! Recodings of the event items and their information loss, computed exactly.
//!
//! The loss of a release's events is the mean over event occurrences of the event's generalisation: for each
//! component, its level divided by the hierarchy's top level, averaged over the kind's components (0 = as
//! recorded, 1 = every component at `*`); a suppressed occurrence counts 1. The same metric as ARX's
//! "generalisation intensity", extended by suppression as full loss. It is kept as an exact fraction (integer
//! numerator over one denominator per dataset) so that the search's bound and the exhaustive reference compare
//! equal values as equal.

use serde::Serialize;

use super::data::{ItemKind, RtData};

/// A full-domain recoding of the event items: one level per component of every kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ItemNode {
    /// `levels[kind][component]`.
    pub levels: Vec<Vec<u8>>,
}

impl ItemNode {
    /// Every component as recorded.
    pub fn bottom(kinds: &[ItemKind]) -> ItemNode {
        ItemNode {
            levels: kinds.iter().map(|k| vec![0; k.components.len()]).collect(),
        }
    }

    /// Every component at `*`.
    pub fn top(kinds: &[ItemKind]) -> ItemNode {
        ItemNode {
            levels: kinds
                .iter()
                .map(|k| k.components.iter().map(|c| (c.hierarchy.height() - 1) as u8).collect())
                .collect(),
        }
    }

    /// Every recoding, in mixed-radix order (kind-major), or `None` when there are more than `limit`.
    pub fn all(kinds: &[ItemKind], limit: usize) -> Option<Vec<ItemNode>> {
        let radices: Vec<usize> = kinds
            .iter()
            .flat_map(|k| k.components.iter().map(|c| c.hierarchy.height()))
            .collect();
        let mut total = 1usize;
        for r in &radices {
            total = total.checked_mul(*r)?;
            if total > limit {
                return None;
            }
        }
        let mut out = Vec::with_capacity(total);
        let mut digits = vec![0u8; radices.len()];
        for _ in 0..total {
            out.push(Self::from_flat(kinds, &digits));
            for (d, r) in digits.iter_mut().zip(&radices).rev() {
                *d += 1;
                if (*d as usize) < *r {
                    break;
                }
                *d = 0;
            }
        }
        Some(out)
    }

    /// The recodings one level coarser in exactly one component.
    pub fn successors(&self, kinds: &[ItemKind]) -> Vec<ItemNode> {
        let mut out = Vec::new();
        for (k, kind) in kinds.iter().enumerate() {
            for (c, comp) in kind.components.iter().enumerate() {
                if (self.levels[k][c] as usize) + 1 < comp.hierarchy.height() {
                    let mut n = self.clone();
                    n.levels[k][c] += 1;
                    out.push(n);
                }
            }
        }
        out
    }

    /// The recodings one level finer in exactly one component.
    pub fn predecessors(&self) -> Vec<ItemNode> {
        let mut out = Vec::new();
        for k in 0..self.levels.len() {
            for c in 0..self.levels[k].len() {
                if self.levels[k][c] > 0 {
                    let mut n = self.clone();
                    n.levels[k][c] -= 1;
                    out.push(n);
                }
            }
        }
        out
    }

    fn from_flat(kinds: &[ItemKind], digits: &[u8]) -> ItemNode {
        let mut it = digits.iter();
        ItemNode {
            levels: kinds
                .iter()
                .map(|k| k.components.iter().filter_map(|_| it.next().copied()).collect())
                .collect(),
        }
    }
}

/// An information loss as an exact fraction of the dataset's common denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Loss {
    /// Numerator (comparable across recodings of one dataset).
    pub numerator: u128,
    /// Denominator: events × the per-event scale.
    pub denominator: u128,
}

impl Loss {
    /// The loss as a share in `[0, 1]`.
    pub fn value(&self) -> f64 {
        if self.denominator == 0 {
            0.0
        } else {
            self.numerator as f64 / self.denominator as f64
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

/// The per-event scale: a common multiple of every kind's component count times its components' top levels,
/// so that every event's generalisation is an integer number of scale units.
pub fn scale(kinds: &[ItemKind]) -> u64 {
    kinds.iter().fold(1, |acc, k| {
        let c = k.components.len() as u64;
        k.components.iter().fold(acc, |acc, comp| {
            lcm(acc, c * (comp.hierarchy.height() as u64 - 1).max(1))
        })
    })
}

/// The generalisation of one event of each kind under `node`, in scale units (0 ..= scale).
pub fn event_weights(kinds: &[ItemKind], node: &ItemNode, scale: u64) -> Vec<u64> {
    kinds
        .iter()
        .zip(&node.levels)
        .map(|(k, levels)| {
            let c = k.components.len() as u64;
            k.components
                .iter()
                .zip(levels)
                .map(|(comp, &l)| scale / (c * (comp.hierarchy.height() as u64 - 1).max(1)) * l as u64)
                .sum()
        })
        .collect()
}

/// The loss of `node` when `suppressed[kind]` occurrences of each kind are suppressed.
pub fn loss(data: &RtData, node: &ItemNode, suppressed: &[u64]) -> Loss {
    let s = scale(data.kinds());
    let weights = event_weights(data.kinds(), node, s);
    let numerator = data
        .per_kind()
        .iter()
        .zip(&weights)
        .zip(suppressed)
        .map(|((&n, &w), &sup)| (n - sup) as u128 * w as u128 + sup as u128 * s as u128)
        .sum();
    Loss {
        numerator,
        denominator: data.event_count() as u128 * s as u128,
    }
}

/// A lower bound of `node`'s loss whatever is suppressed: its generalisation alone.
pub fn lower_bound(data: &RtData, node: &ItemNode) -> Loss {
    loss(data, node, &vec![0; data.kinds().len()])
}
