//! Privacy models and the per-class predicates that implement them.
//!
//! A class is a set of records sharing the same generalised QI tuple. Models are split in two
//! groups because that is what decides which pruning is sound:
//! * *superset-closed* predicates (k-anonymity, distinct l-diversity): a class that contains a valid
//!   class is valid, so with any suppression limit the records to suppress shrink as the
//!   transformation gets coarser — infeasibility propagates to all specialisations;
//! * *union-closed only* predicates (entropy / recursive-(c,l) diversity, t-closeness): the union of
//!   valid classes is valid, so monotonicity holds only when nothing may be suppressed.
//!
//! The average re-identification risk is a dataset-level threshold, monotone only without
//! suppression.

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, EncodedSensitive};
use crate::error::{Error, Result};

/// Variant of l-diversity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LVariant {
    /// At least `l` distinct sensitive values per class.
    Distinct,
    /// Entropy of the sensitive distribution at least `log(l)`.
    Entropy,
    /// Recursive (c,l): `r1 < c (r_l + ... + r_m)` with counts sorted descending.
    Recursive {
        /// The constant `c`.
        c: f64,
    },
}

/// l-diversity requirement, applied to every sensitive attribute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LDiversity {
    /// The `l`.
    pub l: u32,
    /// Which definition.
    pub variant: LVariant,
}

/// Ground distance of t-closeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TDistance {
    /// Every pair of values at distance 1 (variational distance).
    Equal,
    /// Values ordered (hierarchy order, numeric, or lexicographic); distance |i-j|/(m-1).
    Ordered,
    /// Distance through the sensitive attribute's hierarchy (Li et al.).
    Hierarchical,
}

/// t-closeness requirement, applied to every sensitive attribute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TCloseness {
    /// Maximal earth mover's distance between a class and the whole table.
    pub t: f64,
    /// Ground distance.
    pub distance: TDistance,
}

/// The combined privacy model plus the suppression limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyModel {
    /// k of k-anonymity (distinct subjects per class with patient-level counting); 1 disables it.
    pub k: u32,
    /// Optional l-diversity.
    pub l_diversity: Option<LDiversity>,
    /// Optional t-closeness.
    pub t_closeness: Option<TCloseness>,
    /// Optional threshold on the average re-identification (prosecutor) risk.
    pub average_risk: Option<f64>,
    /// Fraction of records (rows) that may be suppressed.
    pub suppression_limit: f64,
}

impl Default for PrivacyModel {
    fn default() -> Self {
        Self {
            k: 2,
            l_diversity: None,
            t_closeness: None,
            average_risk: None,
            suppression_limit: 0.0,
        }
    }
}

/// Floating-point slack for entropy and distance comparisons, shared with nothing else on purpose:
/// the verifier uses its own copy.
pub(crate) const EPS: f64 = 1e-9;

/// Sparse histogram of sensitive ranks: sorted `(rank, count)` pairs.
pub(crate) type Hist = Vec<(u32, u32)>;

impl PrivacyModel {
    /// Checks the model against the data (sensitive attributes present, hierarchy for
    /// hierarchical distance, sane numbers).
    pub fn validate(&self, ds: &Dataset) -> Result<()> {
        if self.k == 0 {
            return Err(Error::Config("k must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.suppression_limit) {
            return Err(Error::Config(
                "the suppression limit must be a fraction between 0 and 1".into(),
            ));
        }
        if (self.l_diversity.is_some() || self.t_closeness.is_some()) && ds.sensitive.is_empty() {
            return Err(Error::Config(
                "l-diversity and t-closeness need a sensitive attribute".into(),
            ));
        }
        if let Some(l) = &self.l_diversity {
            if l.l == 0 {
                return Err(Error::Config("l must be at least 1".into()));
            }
            if let LVariant::Recursive { c } = l.variant
                && c <= 0.0
            {
                return Err(Error::Config("c of recursive (c,l)-diversity must be positive".into()));
            }
        }
        if let Some(t) = &self.t_closeness {
            if !(0.0..=1.0).contains(&t.t) {
                return Err(Error::Config("t must be between 0 and 1".into()));
            }
            if t.distance == TDistance::Hierarchical
                && let Some(s) = ds.sensitive.iter().find(|s| s.tree.is_none())
            {
                return Err(Error::Config(format!(
                    "hierarchical t-closeness needs a hierarchy for sensitive attribute {:?}",
                    s.name
                )));
            }
        }
        if let Some(r) = self.average_risk
            && !(0.0..=1.0).contains(&r)
        {
            return Err(Error::Config(
                "the average risk threshold must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }

    /// Largest number of records that may be suppressed out of `n`.
    pub(crate) fn max_suppressed(&self, n: usize) -> u64 {
        (self.suppression_limit * n as f64 + 1e-9).floor() as u64
    }

    /// True when the whole model is monotone under generalisation, so an infeasible node makes
    /// all its specialisations infeasible.
    pub(crate) fn fully_monotone(&self) -> bool {
        self.suppression_limit == 0.0 || !self.has_non_superset_closed()
    }

    /// True if some part of the model is only union-closed (or dataset-level).
    pub(crate) fn has_non_superset_closed(&self) -> bool {
        self.average_risk.is_some()
            || self.t_closeness.is_some()
            || self.l_diversity.is_some_and(|l| l.variant != LVariant::Distinct)
    }

    /// True if the superset-closed part constrains anything (so binary search over it helps).
    pub(crate) fn has_monotone_part(&self) -> bool {
        self.k > 1
            || self
                .l_diversity
                .is_some_and(|l| l.variant == LVariant::Distinct && l.l > 1)
            || self.fully_monotone()
    }

    /// Superset-closed predicates: k (in counting units) and distinct l-diversity.
    pub(crate) fn class_ok_superset_closed(&self, units: u64, hists: &[&Hist]) -> bool {
        if units < self.k as u64 {
            return false;
        }
        match self.l_diversity {
            Some(LDiversity {
                l,
                variant: LVariant::Distinct,
            }) => hists.iter().all(|h| h.len() >= l as usize),
            _ => true,
        }
    }

    /// Union-closed-only predicates: entropy/recursive l-diversity and t-closeness.
    pub(crate) fn class_ok_rest(&self, sens: &[EncodedSensitive], hists: &[&Hist]) -> bool {
        if let Some(LDiversity { l, variant }) = self.l_diversity {
            for h in hists {
                let ok = match variant {
                    LVariant::Distinct => true,
                    LVariant::Entropy => entropy(h) >= (l as f64).ln() - EPS,
                    LVariant::Recursive { c } => recursive_ok(h, l, c),
                };
                if !ok {
                    return false;
                }
            }
        }
        if let Some(t) = self.t_closeness {
            for (h, s) in hists.iter().zip(sens) {
                if emd(h, s, t.distance) > t.t + EPS {
                    return false;
                }
            }
        }
        true
    }

    /// Names of the constraints a class violates (for the "no solution" diagnosis).
    pub(crate) fn class_violations(&self, units: u64, sens: &[EncodedSensitive], hists: &[&Hist]) -> Vec<&'static str> {
        let mut out = Vec::new();
        if units < self.k as u64 {
            out.push("k-anonymity");
        }
        if self.l_diversity.is_some() {
            let only_l = PrivacyModel {
                k: 1,
                t_closeness: None,
                ..self.clone()
            };
            if !only_l.class_ok_superset_closed(u64::MAX, hists) || !only_l.class_ok_rest(sens, hists) {
                out.push("l-diversity");
            }
        }
        if self.t_closeness.is_some() {
            let only_t = PrivacyModel {
                k: 1,
                l_diversity: None,
                ..self.clone()
            };
            if !only_t.class_ok_rest(sens, hists) {
                out.push("t-closeness");
            }
        }
        out
    }

    /// Short description of the model, for messages.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("k-anonymity (k={})", self.k)];
        if let Some(l) = self.l_diversity {
            parts.push(match l.variant {
                LVariant::Distinct => format!("distinct l-diversity (l={})", l.l),
                LVariant::Entropy => format!("entropy l-diversity (l={})", l.l),
                LVariant::Recursive { c } => format!("recursive (c,l)-diversity (c={c}, l={})", l.l),
            });
        }
        if let Some(t) = self.t_closeness {
            parts.push(format!("t-closeness (t={}, {:?} distance)", t.t, t.distance));
        }
        if let Some(r) = self.average_risk {
            parts.push(format!("average re-identification risk <= {r}"));
        }
        parts.join(", ")
    }
}

/// Shannon entropy (natural log) of a histogram.
fn entropy(h: &Hist) -> f64 {
    let total: f64 = h.iter().map(|&(_, c)| c as f64).sum();
    if total == 0.0 {
        return 0.0;
    }
    -h.iter()
        .filter(|&&(_, c)| c > 0)
        .map(|&(_, c)| {
            let p = c as f64 / total;
            p * p.ln()
        })
        .sum::<f64>()
}

fn recursive_ok(h: &Hist, l: u32, c: f64) -> bool {
    let mut counts: Vec<u64> = h.iter().map(|&(_, c)| c as u64).filter(|&c| c > 0).collect();
    let l = l as usize;
    if counts.len() < l {
        return false;
    }
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let tail: u64 = counts[l - 1..].iter().sum();
    (counts[0] as f64) < c * tail as f64
}

/// Earth mover's distance between a class histogram and the table's distribution.
pub(crate) fn emd(h: &Hist, s: &EncodedSensitive, distance: TDistance) -> f64 {
    let total: f64 = h.iter().map(|&(_, c)| c as f64).sum();
    if total == 0.0 {
        return 0.0;
    }
    let m = s.overall.len();
    let mut diff: Vec<f64> = s.overall.iter().map(|q| -q).collect();
    for &(r, c) in h {
        diff[r as usize] += c as f64 / total;
    }
    match distance {
        TDistance::Equal => 0.5 * diff.iter().map(|d| d.abs()).sum::<f64>(),
        TDistance::Ordered => {
            if m <= 1 {
                return 0.0;
            }
            let mut cum = 0.0;
            let mut sum = 0.0;
            for d in &diff[..m - 1] {
                cum += d;
                sum += cum.abs();
            }
            sum / (m - 1) as f64
        }
        TDistance::Hierarchical => {
            let Some(tree) = &s.tree else { return 0.0 };
            let height = tree.len() as f64;
            // extra[node] at the current level, starting with the leaves.
            let mut extra = diff;
            let mut cost = 0.0;
            let mut child_of: Vec<u32> = (0..m as u32).collect();
            for (li, level) in tree.iter().enumerate() {
                let groups = level.iter().copied().max().map_or(0, |x| x as usize + 1);
                let mut pos = vec![0.0; groups];
                let mut neg = vec![0.0; groups];
                let mut next = vec![0.0; groups];
                // Map each child node (code at previous level) to its parent once.
                let mut parent_of_child: Vec<Option<u32>> = vec![None; extra.len()];
                for leaf in 0..m {
                    parent_of_child[child_of[leaf] as usize] = Some(level[leaf]);
                }
                for (child, e) in extra.iter().enumerate() {
                    if let Some(p) = parent_of_child[child] {
                        let p = p as usize;
                        if *e > 0.0 {
                            pos[p] += e;
                        } else {
                            neg[p] -= e;
                        }
                        next[p] += e;
                    }
                }
                let weight = (li + 1) as f64 / height;
                cost += weight * pos.iter().zip(&neg).map(|(a, b)| a.min(*b)).sum::<f64>();
                extra = next;
                child_of = level.clone();
            }
            cost
        }
    }
}
