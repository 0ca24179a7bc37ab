//! Exhaustive evaluation of every lattice node — the reference the optimised search is tested
//! against. No pruning, no bounds, no evaluation order: every node is evaluated (its classes
//! rolled up from its parent in a fixed spanning tree of the lattice), and several configurations
//! share one pass.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::classes::{ClassTable, Layout, PackedKey};
use crate::dataset::Dataset;
use crate::error::Result;
use crate::evaluate::Engine;
use crate::lattice::Lattice;
use crate::metric::{Metric, MetricValue};
use crate::model::PrivacyModel;
use crate::search::{WithKey, dispatch};

/// Evaluates one node for every configuration: (node, per-config metric if feasible).
type NodeEval<'f, K> = dyn Fn(u64, Option<&ClassTable<K>>) -> (u64, Vec<Option<MetricValue>>) + Sync + 'f;

/// Result of an exhaustive run for one configuration.
#[derive(Debug, Clone)]
pub struct ExhaustiveOutcome {
    /// Optimal levels and metric (lowest metric, then lowest node in lexicographic order), if any
    /// node is feasible.
    pub best: Option<(Vec<u32>, MetricValue)>,
    /// Number of feasible nodes.
    pub feasible_nodes: u64,
}

/// Evaluates every node of the lattice for each `(model, metric)` configuration.
pub fn exhaustive(ds: &Dataset, configs: &[(PrivacyModel, Metric)]) -> Result<Vec<ExhaustiveOutcome>> {
    for (model, _) in configs {
        model.validate(ds)?;
    }
    let lattice = Lattice::new(&ds.heights())?;
    struct Run<'a> {
        ds: &'a Dataset,
        configs: &'a [(PrivacyModel, Metric)],
        lattice: Lattice,
    }
    impl WithKey for Run<'_> {
        type Out = Vec<ExhaustiveOutcome>;
        fn run<K: PackedKey>(self, layout: Layout) -> Self::Out {
            let engines: Vec<Engine<'_, K>> = self
                .configs
                .iter()
                .map(|(m, metric)| Engine::<K>::new(self.ds, m, *metric, layout.clone()))
                .collect();
            let Some(first) = engines.first() else {
                return Vec::new();
            };
            let lattice = &self.lattice;
            let evaluate = |idx: u64, table: Option<&ClassTable<K>>| -> (u64, Vec<Option<MetricValue>>) {
                let levels = lattice.levels(idx);
                let res = engines
                    .iter()
                    .map(|e| {
                        let ev = e.evaluate(&levels, table);
                        ev.feasible.then_some(ev.metric)
                    })
                    .collect();
                (idx, res)
            };
            let mut per_node: Vec<(u64, Vec<Option<MetricValue>>)> = if first.units.is_some() {
                (0..lattice.size())
                    .into_par_iter()
                    .map(|idx| evaluate(idx, None))
                    .collect()
            } else {
                // Spanning tree of the lattice: a node's children raise one QI at or after the
                // last QI raised on the way to it, so every node is visited exactly once and its
                // table is rolled up from its tree parent.
                fn walk<K: PackedKey>(
                    first: &Engine<'_, K>,
                    lattice: &Lattice,
                    table: &ClassTable<K>,
                    idx: u64,
                    from_dim: usize,
                    eval: &NodeEval<'_, K>,
                ) -> Vec<(u64, Vec<Option<MetricValue>>)> {
                    let mut out = vec![eval(idx, Some(table))];
                    let children: Vec<(usize, u64)> = (from_dim..lattice.dims())
                        .filter(|&j| lattice.level_of(idx, j) + 1 < lattice.heights()[j])
                        .map(|j| (j, idx + lattice.index(&unit(lattice.dims(), j))))
                        .collect();
                    let nested: Vec<Vec<_>> = children
                        .into_par_iter()
                        .map(|(j, child)| {
                            let t = first.table_from(table, &lattice.levels(child));
                            walk(first, lattice, &t, child, j, eval)
                        })
                        .collect();
                    out.extend(nested.into_iter().flatten());
                    out
                }
                walk(first, lattice, &first.bottom, 0, 0, &evaluate)
            };
            per_node.sort_unstable_by_key(|(idx, _)| *idx);
            let per_node: Vec<Vec<Option<MetricValue>>> = per_node.into_iter().map(|(_, r)| r).collect();
            (0..engines.len())
                .map(|c| {
                    let mut best: Option<(u64, MetricValue)> = None;
                    let mut feasible = 0;
                    for (idx, res) in per_node.iter().enumerate() {
                        if let Some(m) = res[c] {
                            feasible += 1;
                            // Strictly better only: equal scores keep the earlier (smaller) node.
                            if best
                                .as_ref()
                                .is_none_or(|(_, b)| m.score.compare(&b.score) == Ordering::Less)
                            {
                                best = Some((idx as u64, m));
                            }
                        }
                    }
                    ExhaustiveOutcome {
                        best: best.map(|(i, m)| (lattice.levels(i), m)),
                        feasible_nodes: feasible,
                    }
                })
                .collect()
        }
    }
    dispatch(ds, Run { ds, configs, lattice })
}

fn unit(dims: usize, j: usize) -> Vec<u32> {
    let mut v = vec![0; dims];
    v[j] = 1;
    v
}
