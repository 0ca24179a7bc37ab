//! The reference the search is tested against: every recoding evaluated, the feasible one of least loss kept
//! (ties to the smaller generalisation bound, then the lexicographically smaller recoding — the search's order).

use super::data::RtData;
use super::evaluate::{Evaluation, evaluate};
use super::loss::{ItemNode, lower_bound};
use super::search::SearchConfig;
use crate::error::{Error, Result};

/// The optimum by brute force; `None` when no recoding is feasible. Refuses lattices above `cfg.max_lattice`.
pub fn optimum(data: &RtData, cfg: &SearchConfig) -> Result<Option<Evaluation>> {
    let nodes = ItemNode::all(data.kinds(), cfg.max_lattice)
        .ok_or_else(|| Error::Config("lattice too large for the exhaustive reference".into()))?;
    let mut best: Option<(Evaluation, _)> = None;
    for node in nodes {
        let e = evaluate(data, &node, &cfg.params, false)?;
        if !e.within(data, cfg.max_suppressed_share) {
            continue;
        }
        let key = (e.loss, lower_bound(data, &node), node);
        if best.as_ref().is_none_or(|(_, b)| key < *b) {
            best = Some((e, key));
        }
    }
    Ok(best.map(|(e, _)| e))
}
