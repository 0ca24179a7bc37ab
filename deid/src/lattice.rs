//! The generalisation lattice: every combination of one level per QI.
//!
//! Nodes are numbered in mixed radix so that numeric order equals lexicographic order of level
//! vectors — which is also the deterministic tie-break between equally good transformations.

use crate::error::{Error, Result};

/// Largest lattice the search accepts (node states are kept in flat arrays).
pub const MAX_LATTICE: u64 = 64 * 1024 * 1024;

/// A full-domain generalisation lattice.
#[derive(Debug, Clone)]
pub struct Lattice {
    heights: Vec<u32>,
    strides: Vec<u64>,
    size: u64,
}

impl Lattice {
    /// Builds the lattice for hierarchies of the given heights (levels per QI).
    pub fn new(heights: &[usize]) -> Result<Self> {
        let mut strides = vec![1u64; heights.len()];
        let mut size: u64 = 1;
        for j in (0..heights.len()).rev() {
            strides[j] = size;
            size = size
                .checked_mul(heights[j].max(1) as u64)
                .filter(|&s| s <= MAX_LATTICE)
                .ok_or_else(|| Error::Config(format!("the lattice has more than {MAX_LATTICE} nodes")))?;
        }
        Ok(Self {
            heights: heights.iter().map(|&h| h.max(1) as u32).collect(),
            strides,
            size,
        })
    }
    /// Number of nodes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Number of QIs.
    pub fn dims(&self) -> usize {
        self.heights.len()
    }
    /// Levels per QI (hierarchy heights).
    pub fn heights(&self) -> &[u32] {
        &self.heights
    }
    /// Level vector of node `idx`.
    pub fn levels(&self, idx: u64) -> Vec<u32> {
        self.strides
            .iter()
            .zip(&self.heights)
            .map(|(&s, &h)| ((idx / s) % h as u64) as u32)
            .collect()
    }
    /// Level vector of node `idx`, written into `out` (no allocation in loops over the lattice).
    pub fn levels_into(&self, idx: u64, out: &mut Vec<u32>) {
        out.clear();
        out.extend(
            self.strides
                .iter()
                .zip(&self.heights)
                .map(|(&s, &h)| ((idx / s) % h as u64) as u32),
        );
    }
    /// Node index of a level vector.
    pub fn index(&self, levels: &[u32]) -> u64 {
        levels.iter().zip(&self.strides).map(|(&l, &s)| l as u64 * s).sum()
    }
    /// Level of QI `j` in node `idx`.
    #[inline]
    pub fn level_of(&self, idx: u64, j: usize) -> u32 {
        ((idx / self.strides[j]) % self.heights[j] as u64) as u32
    }
    /// Sum of levels (the node's height in the lattice).
    pub fn rank(&self, idx: u64) -> u32 {
        (0..self.dims()).map(|j| self.level_of(idx, j)).sum()
    }
    /// Direct generalisations (one QI one level up).
    pub fn successors(&self, idx: u64) -> impl Iterator<Item = u64> + '_ {
        (0..self.dims())
            .filter(move |&j| self.level_of(idx, j) + 1 < self.heights[j])
            .map(move |j| idx + self.strides[j])
    }
    /// Direct specialisations (one QI one level down).
    pub fn predecessors(&self, idx: u64) -> impl Iterator<Item = u64> + '_ {
        (0..self.dims())
            .filter(move |&j| self.level_of(idx, j) > 0)
            .map(move |j| idx - self.strides[j])
    }
    /// The most general node.
    pub fn top(&self) -> u64 {
        self.size - 1
    }
    /// True if `a` is a specialisation of (or equal to) `b`.
    pub fn le(&self, a: &[u32], b: &[u32]) -> bool {
        a.iter().zip(b).all(|(x, y)| x <= y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip() {
        let l = Lattice::new(&[2, 3, 4]).unwrap();
        assert_eq!(l.size(), 24);
        for i in 0..24 {
            assert_eq!(l.index(&l.levels(i)), i);
        }
        assert_eq!(l.levels(l.top()), vec![1, 2, 3]);
        assert_eq!(l.successors(0).count(), 3);
        assert_eq!(l.predecessors(l.top()).count(), 3);
    }
}
