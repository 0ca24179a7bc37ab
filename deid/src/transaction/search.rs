//! Choosing the recoding: the least information loss whose suppression stays within the approved share.
//!
//! A greedy walk runs first (from the bottom, each step the one-level generalisation with the least total loss
//! until the suppression fits, then one-level refinements while they stay feasible and lower the loss); its loss
//! is the bound to beat. Then, where the lattice can be listed, recodings are visited in ascending order of their
//! generalisation loss (a lower bound of their total loss, since suppression only adds) until that bound exceeds
//! the best total found — branch and bound over the whole lattice of full-domain cuts, proven optimal when it
//! stops that way. When the lattice is too large or the evaluation budget runs out first, the best recoding seen
//! is kept and the outcome says it is not proven optimal (`greedy`). Deterministic: ties go to the smaller
//! generalisation bound, then the lexicographically smaller recoding.

use rayon::prelude::*;
use serde::Serialize;

use super::data::RtData;
use super::evaluate::{Evaluation, KmParams, evaluate};
use super::loss::{ItemNode, lower_bound};
use crate::error::{Error, Result};

/// What the search may do.
#[derive(Debug, Clone, Copy)]
pub struct SearchConfig {
    /// The model.
    pub params: KmParams,
    /// Largest share of event occurrences that may be suppressed.
    pub max_suppressed_share: f64,
    /// Largest lattice the exact search enumerates.
    pub max_lattice: usize,
    /// Most recodings the exact search evaluates after the greedy walk before giving up the proof.
    pub max_evaluations: usize,
    /// Bound on the exact search's work, in events × recodings evaluated: large releases get fewer exact
    /// evaluations (never fewer than 16), so a build's time stays bounded; the outcome then says `greedy`.
    pub max_event_evaluations: u64,
}

impl SearchConfig {
    /// The platform's defaults for a model.
    pub fn new(params: KmParams, max_suppressed_share: f64) -> Self {
        SearchConfig {
            params,
            max_suppressed_share,
            max_lattice: 1_000_000,
            max_evaluations: 2_000,
            max_event_evaluations: 200_000_000,
        }
    }
}

/// How the recoding was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Branch and bound over every recoding: optimal.
    Exact,
    /// Greedy walk: a documented heuristic.
    Greedy,
}

/// The chosen recoding, evaluated with every event's item.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// The evaluation of the chosen recoding, with detail.
    pub evaluation: Evaluation,
    /// Recodings evaluated.
    pub evaluated: usize,
    /// How it was found.
    pub strategy: Strategy,
}

/// Finds the recoding of least loss that satisfies the model within the suppression share.
pub fn search(data: &RtData, cfg: &SearchConfig) -> Result<SearchOutcome> {
    cfg.params.validate()?;
    // The greedy walk first: cheap, and its loss is the bound the exact search must beat.
    let (mut best, mut evaluated, seen) = greedy(data, cfg)?;
    let mut proven = false;
    let mut exact_evaluations = 0usize;
    let budget = cfg
        .max_evaluations
        .min((cfg.max_event_evaluations / data.event_count().max(1)).max(16) as usize);
    if let Some(mut nodes) = ItemNode::all(data.kinds(), cfg.max_lattice) {
        let mut keyed: Vec<_> = nodes.drain(..).map(|n| (lower_bound(data, &n), n)).collect();
        keyed.sort();
        proven = true;
        for (bound, node) in keyed {
            // Strictly above: a recoding whose bound equals the best loss may still tie it and come first.
            if best.as_ref().is_some_and(|b| bound.numerator > b.loss.numerator) {
                break;
            }
            if exact_evaluations >= budget {
                proven = false;
                break;
            }
            // A recoding the walk already evaluated is not evaluated again (it still counts against the budget,
            // so the outcome is the same as without the memo).
            let e = match seen.get(&node) {
                Some(e) => e.clone(),
                None => evaluate(data, &node, &cfg.params, false)?,
            };
            exact_evaluations += 1;
            // Equal losses go to the node earlier in the walk's order, as in the exhaustive reference.
            let better = best.as_ref().is_none_or(|b| {
                e.loss < b.loss || (e.loss == b.loss && (bound, &node) < (lower_bound(data, &b.node), &b.node))
            });
            if e.within(data, cfg.max_suppressed_share) && better {
                best = Some(e);
            }
        }
    }
    evaluated += exact_evaluations;
    let strategy = if proven { Strategy::Exact } else { Strategy::Greedy };
    let Some(best) = best else {
        let top = evaluate(data, &ItemNode::top(data.kinds()), &cfg.params, false)?;
        return Err(Error::Infeasible(format!(
            "no recoding of the event items reaches k={} for any {} item(s) within {:.1} % suppressed events: \
             even with every code and period at its top level {} of {} events would be suppressed",
            cfg.params.k,
            cfg.params.m,
            cfg.max_suppressed_share * 100.0,
            top.suppressed,
            data.event_count()
        )));
    };
    let evaluation = evaluate(data, &best.node, &cfg.params, true)?;
    Ok(SearchOutcome {
        evaluation,
        evaluated,
        strategy,
    })
}

/// Every recoding the greedy walk evaluated, for the exact phase to reuse.
type Seen = std::collections::HashMap<ItemNode, Evaluation>;

/// Evaluates `nodes` (the one-level neighbours of a walk step) concurrently, remembering each; the order of the
/// result is the order of `nodes`, so the choice made from it does not depend on scheduling.
fn evaluate_all(data: &RtData, cfg: &SearchConfig, nodes: Vec<ItemNode>, seen: &mut Seen) -> Result<Vec<Evaluation>> {
    let evaluations: Vec<Evaluation> = nodes
        .par_iter()
        .map(|n| evaluate(data, n, &cfg.params, false))
        .collect::<Result<_>>()?;
    for e in &evaluations {
        seen.insert(e.node.clone(), e.clone());
    }
    Ok(evaluations)
}

/// The greedy walk; `None` when even the top is not feasible. Also returns every recoding it evaluated.
fn greedy(data: &RtData, cfg: &SearchConfig) -> Result<(Option<Evaluation>, usize, Seen)> {
    // Only feasible outcomes leave this function.
    let mut seen = Seen::new();
    let mut evaluated = 1;
    let mut current = evaluate(data, &ItemNode::bottom(data.kinds()), &cfg.params, false)?;
    seen.insert(current.node.clone(), current.clone());
    while !current.within(data, cfg.max_suppressed_share) {
        let mut next: Option<Evaluation> = None;
        let successors = evaluate_all(data, cfg, current.node.successors(data.kinds()), &mut seen)?;
        for e in successors {
            evaluated += 1;
            if next.as_ref().is_none_or(|b| (e.loss, &e.node) < (b.loss, &b.node)) {
                next = Some(e);
            }
        }
        match next {
            Some(n) => current = n,
            None => return Ok((None, evaluated, seen)),
        }
    }
    // Refine: one level down anywhere, while it stays feasible and lowers the loss.
    loop {
        let mut better: Option<Evaluation> = None;
        let predecessors = evaluate_all(data, cfg, current.node.predecessors(), &mut seen)?;
        for e in predecessors {
            evaluated += 1;
            if e.within(data, cfg.max_suppressed_share)
                && e.loss < current.loss
                && better.as_ref().is_none_or(|b| (e.loss, &e.node) < (b.loss, &b.node))
            {
                better = Some(e);
            }
        }
        match better {
            Some(b) => current = b,
            None => return Ok((Some(current), evaluated, seen)),
        }
    }
}
