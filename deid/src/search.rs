//! Globally optimal full-domain generalisation.
//!
//! Nodes are visited in ascending order of a metric lower bound (static for Loss, Precision and
//! Entropy; propagated from evaluated specialisations for Discernibility and AECS). A node is
//! skipped when
//! * it is known to violate the monotone part of the model (an evaluated generalisation of it
//!   did — see [`crate::model`] for which parts are monotone), or
//! * its lower bound already exceeds the best solution (suppression only raises every metric
//!   above its generalisation-only value, and that value grows with generalisation).
//!
//! Before a node of unknown feasibility is evaluated, a binary search along an upward path from it
//! locates the feasibility frontier, so a few evaluations classify whole down-sets. Class tables
//! are rolled up from the smallest cached finer table instead of from rows.

use std::cmp::Ordering;
use std::sync::Arc;

use rayon::prelude::*;

use crate::classes::{ClassTable, Layout, PackedKey};
use crate::dataset::Dataset;
use crate::error::{Error, NoSolution, Result};
use crate::evaluate::{Engine, Evaluation};
use crate::fasthash::FastMap;
use crate::lattice::Lattice;
use crate::metric::{Metric, MetricValue, Score};
use crate::model::PrivacyModel;

/// The optimal transformation found by [`search`].
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// Level per QI.
    pub levels: Vec<u32>,
    /// Its metric value.
    pub metric: MetricValue,
    /// Records it suppresses.
    pub suppressed: u64,
    /// Nodes whose classes were computed.
    pub nodes_checked: u64,
    /// Size of the lattice.
    pub lattice_size: u64,
}

/// Runs a closure generic over the packed key width chosen for the data.
pub(crate) trait WithKey {
    type Out;
    fn run<K: PackedKey>(self, layout: Layout) -> Self::Out;
}

pub(crate) fn dispatch<W: WithKey>(ds: &Dataset, w: W) -> Result<W::Out> {
    let layout = Layout::new(ds);
    match layout.total_bits {
        0..=64 => Ok(w.run::<u64>(layout)),
        65..=128 => Ok(w.run::<u128>(layout)),
        bits => Err(Error::Config(format!(
            "the QI domains need {bits} bits per class key; at most 128 are supported (fewer or coarser QIs)"
        ))),
    }
}

/// What a job takes from one engine (one bottom class table): the optimum, the optimum applied, and the classes
/// of the untransformed data.
#[derive(Debug, Clone)]
pub struct Optimised {
    /// The optimal transformation.
    pub found: SearchOutcome,
    /// It, applied: what [`crate::transform::apply`] gives for it.
    pub applied: crate::transform::Anonymized,
    /// Class sizes of the untransformed data: what [`crate::transform::original_class_sizes`] gives.
    pub original_class_sizes: Vec<(u64, u64)>,
}

/// Finds the optimal transformation and applies it, building the engine — the bottom class table — once for the
/// search, the apply and the untransformed classes (what [`search`], [`crate::transform::apply`] and
/// [`crate::transform::original_class_sizes`] would give, with one table built instead of three).
pub fn search_and_apply(ds: &Dataset, model: &PrivacyModel, metric: Metric) -> Result<Optimised> {
    let (found, applied) = optimise(ds, model, metric, true)?;
    let (applied, original) = applied.ok_or_else(|| Error::Config("the optimum was not applied".into()))?;
    let original_class_sizes = match original {
        Some(sizes) => sizes,
        None => crate::transform::original_class_sizes(ds)?,
    };
    Ok(Optimised {
        found,
        applied,
        original_class_sizes,
    })
}

/// Finds the optimal transformation. Returns [`Error::NoSolution`] (with the smallest suppression
/// limit that would work) if no node is feasible.
pub fn search(ds: &Dataset, model: &PrivacyModel, metric: Metric) -> Result<SearchOutcome> {
    Ok(optimise(ds, model, metric, false)?.0)
}

/// The optimum applied, and the untransformed classes when the engine has them at hand.
type Applied = (crate::transform::Anonymized, Option<Vec<(u64, u64)>>);

/// The optimum under one engine, and — when `apply` — the optimum applied by that same engine.
fn optimise(
    ds: &Dataset,
    model: &PrivacyModel,
    metric: Metric,
    apply: bool,
) -> Result<(SearchOutcome, Option<Applied>)> {
    model.validate(ds)?;
    let lattice = Lattice::new(&ds.heights())?;
    struct Run<'a> {
        ds: &'a Dataset,
        model: &'a PrivacyModel,
        metric: Metric,
        lattice: Lattice,
        apply: bool,
    }
    impl WithKey for Run<'_> {
        type Out = Result<(SearchOutcome, Option<Applied>)>;
        fn run<K: PackedKey>(self, layout: Layout) -> Self::Out {
            let engine = Engine::<K>::new(self.ds, self.model, self.metric, layout);
            let found = optimum(&engine, &self.lattice)?;
            let applied = self.apply.then(|| {
                (
                    crate::transform::applied(&engine, &found.levels),
                    engine.original_class_sizes(),
                )
            });
            Ok((found, applied))
        }
    }
    dispatch(
        ds,
        Run {
            ds,
            model,
            metric,
            lattice,
            apply,
        },
    )?
}

/// The optimal node of `lattice` under `engine`, or why there is none.
fn optimum<K: PackedKey>(engine: &Engine<'_, K>, lattice: &Lattice) -> Result<SearchOutcome> {
    let mut s = Searcher::new(engine, lattice);
    s.run();
    match s.best {
        Some((idx, eval)) => Ok(SearchOutcome {
            levels: lattice.levels(idx),
            metric: eval.metric,
            suppressed: eval.suppressed,
            nodes_checked: s.checked,
            lattice_size: lattice.size(),
        }),
        None => Err(Error::NoSolution(Box::new(diagnose(engine, lattice)))),
    }
}

const INFEASIBLE: u8 = 1;
const MONO_FEASIBLE: u8 = 2;
const EVALUATED: u8 = 4;

struct Searcher<'e, 'a, K> {
    engine: &'e Engine<'a, K>,
    lattice: &'e Lattice,
    state: Vec<u8>,
    /// Lower bounds propagated from evaluated nodes (Discernibility, AECS).
    dyn_lb: FastMap<u64, Score>,
    cache: Vec<Arc<ClassTable<K>>>,
    cache_entries: usize,
    cache_budget: usize,
    best: Option<(u64, Evaluation)>,
    checked: u64,
}

impl<'e, 'a, K: PackedKey> Searcher<'e, 'a, K> {
    fn new(engine: &'e Engine<'a, K>, lattice: &'e Lattice) -> Self {
        let bottom = Arc::new(engine.bottom.clone());
        let entries = bottom.len();
        Self {
            engine,
            lattice,
            state: vec![0; lattice.size() as usize],
            dyn_lb: FastMap::default(),
            cache: vec![bottom],
            cache_entries: entries,
            cache_budget: (4 * entries).max(1 << 20),
            best: None,
            checked: 0,
        }
    }

    /// Is `score` at node `idx` not better than the best solution (ties broken by node order)?
    fn beaten(&self, score: &Score, idx: u64) -> bool {
        match &self.best {
            None => false,
            Some((b, e)) => match score.compare(&e.metric.score) {
                Ordering::Greater => true,
                Ordering::Equal => idx > *b,
                Ordering::Less => false,
            },
        }
    }

    fn run(&mut self) {
        let engine = self.engine;
        let mctx = &engine.mctx;
        let n = self.lattice.size();
        let mut order: Vec<(Option<Score>, u32, u64)> = (0..n)
            .into_par_iter()
            .map_init(Vec::new, |levels, idx| {
                self.lattice.levels_into(idx, levels);
                (mctx.static_bound(levels), levels.iter().sum(), idx)
            })
            .collect();
        order.par_sort_unstable_by(|a, b| {
            let bound = match (&a.0, &b.0) {
                (Some(x), Some(y)) => x.compare(y),
                _ => Ordering::Equal,
            };
            bound.then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
        });
        let dynamic = order.first().is_some_and(|o| o.0.is_none());
        let use_binary = self.engine.model.has_monotone_part();
        for (bound, _, idx) in order {
            let mut lb = bound;
            if dynamic {
                lb = self.dyn_lb.get(&idx).copied();
                for p in self.lattice.predecessors(idx) {
                    if let Some(x) = self.dyn_lb.get(&p)
                        && lb.is_none_or(|l| x.compare(&l) == Ordering::Greater)
                    {
                        lb = Some(*x);
                    }
                }
                if let Some(l) = lb {
                    self.dyn_lb.insert(idx, l);
                }
            }
            if self.state[idx as usize] & INFEASIBLE != 0 {
                continue;
            }
            if let Some(l) = &lb
                && self.beaten(l, idx)
            {
                if !dynamic
                    && self
                        .best
                        .as_ref()
                        .is_some_and(|(_, e)| l.compare(&e.metric.score) == Ordering::Greater)
                {
                    break;
                }
                continue;
            }
            if self.state[idx as usize] & EVALUATED != 0 {
                continue;
            }
            if use_binary && self.state[idx as usize] & MONO_FEASIBLE == 0 {
                self.binary_search(idx);
                if self.state[idx as usize] & (INFEASIBLE | EVALUATED) != 0 {
                    continue;
                }
            }
            self.evaluate(idx);
        }
    }

    /// Walks upward from `start` and binary-searches the first node of the path that satisfies
    /// the monotone part of the model; every evaluation classifies a down- or up-set.
    fn binary_search(&mut self, start: u64) {
        let engine = self.engine;
        let mctx = &engine.mctx;
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next = self
                .lattice
                .successors(cur)
                .map(|s| (mctx.path_heuristic(&self.lattice.levels(s)), s))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let Some((_, next)) = next else { break };
            if self.state[next as usize] & MONO_FEASIBLE != 0 {
                break;
            }
            path.push(next);
            cur = next;
        }
        let (mut lo, mut hi) = (0usize, path.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let node = path[mid] as usize;
            if self.state[node] & INFEASIBLE == 0 && self.state[node] & MONO_FEASIBLE == 0 {
                self.evaluate(path[mid]);
            }
            if self.state[node] & INFEASIBLE != 0 {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
    }

    fn evaluate(&mut self, idx: u64) {
        let levels = self.lattice.levels(idx);
        let eval = if self.engine.units.is_some() {
            self.engine.evaluate(&levels, None)
        } else {
            let src = self
                .cache
                .iter()
                .filter(|t| self.lattice.le(&t.levels, &levels))
                .min_by_key(|t| t.len())
                .cloned()
                .unwrap_or_else(|| Arc::new(self.engine.bottom.clone()));
            let table = if src.levels == levels {
                src
            } else {
                Arc::new(self.engine.table_from(&src, &levels))
            };
            let eval = self.engine.evaluate(&levels, Some(&table));
            self.remember(table);
            eval
        };
        self.checked += 1;
        self.state[idx as usize] |= EVALUATED;
        if eval.mono_infeasible {
            self.mark_down(idx);
        } else {
            self.mark_up(idx);
        }
        if let Some(g) = eval.gen_bound {
            let entry = self.dyn_lb.entry(idx).or_insert(g);
            if g.compare(entry) == Ordering::Greater {
                *entry = g;
            }
        }
        if eval.feasible && !self.beaten(&eval.metric.score, idx) {
            self.best = Some((idx, eval));
        }
    }

    fn remember(&mut self, table: Arc<ClassTable<K>>) {
        if self.cache.iter().any(|t| t.levels == table.levels) {
            return;
        }
        let len = table.len();
        while self.cache_entries + len > self.cache_budget {
            // Evict the largest table other than the bottom (index 0), if it is larger than the new one.
            let Some((i, biggest)) = self.cache.iter().enumerate().skip(1).max_by_key(|(_, t)| t.len()) else {
                return;
            };
            if biggest.len() <= len {
                return;
            }
            self.cache_entries -= biggest.len();
            self.cache.swap_remove(i);
        }
        self.cache_entries += len;
        self.cache.push(table);
    }

    fn mark_down(&mut self, idx: u64) {
        let mut stack = vec![idx];
        while let Some(x) = stack.pop() {
            if self.state[x as usize] & INFEASIBLE != 0 {
                continue;
            }
            self.state[x as usize] |= INFEASIBLE;
            stack.extend(
                self.lattice
                    .predecessors(x)
                    .filter(|p| self.state[*p as usize] & INFEASIBLE == 0),
            );
        }
    }

    fn mark_up(&mut self, idx: u64) {
        let mut stack = vec![idx];
        while let Some(x) = stack.pop() {
            if self.state[x as usize] & MONO_FEASIBLE != 0 {
                continue;
            }
            self.state[x as usize] |= MONO_FEASIBLE;
            stack.extend(
                self.lattice
                    .successors(x)
                    .filter(|s| self.state[*s as usize] & MONO_FEASIBLE == 0),
            );
        }
    }
}

/// Explains an infeasible job: finds the node needing the least suppression and lists the
/// constraints violated there.
pub(crate) fn diagnose<K: PackedKey>(engine: &Engine<'_, K>, lattice: &Lattice) -> NoSolution {
    let model = engine.model;
    let n = engine.ds.n as f64;
    let best_idx = if model.has_non_superset_closed() {
        // Suppression needs are not monotone: look at every node.
        (0..lattice.size())
            .into_par_iter()
            .map(|idx| {
                let e = engine.evaluate(&lattice.levels(idx), None);
                (if e.avg_risk_ok { e.suppressed } else { u64::MAX }, idx)
            })
            .min()
            .map_or(lattice.top(), |(_, idx)| idx)
    } else {
        // Violations only shrink under generalisation: the top node needs the least suppression.
        lattice.top()
    };
    let levels = lattice.levels(best_idx);
    let detail = engine.detail(&levels);
    let mut failed: Vec<String> = detail
        .violations
        .iter()
        .map(|(name, records)| {
            let what = match *name {
                "k-anonymity" => format!("k-anonymity (k={})", model.k),
                "l-diversity" => "l-diversity".to_string(),
                other => other.to_string(),
            };
            format!(
                "{what}: {records} records ({:.2}%) in violating classes",
                100.0 * *records as f64 / n
            )
        })
        .collect();
    if !detail.eval.avg_risk_ok {
        failed.push(format!(
            "average re-identification risk above {} even after suppression",
            model.average_risk.unwrap_or_default()
        ));
    }
    let smallest = detail.eval.avg_risk_ok.then(|| detail.eval.suppressed as f64 / n);
    NoSolution {
        suppression_limit: model.suppression_limit,
        smallest_working_suppression: smallest.filter(|&s| s < 1.0),
        at_levels: levels,
        failed_constraints: failed,
    }
}
