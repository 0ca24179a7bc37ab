//! Accusation: the symmetric Tardos score of each candidate against the marks read from a leaked table,
//! and a rigorous bound on the probability that an innocent recipient scores that high.
//!
//! Why the bound is rigorous: an innocent recipient's bits are keyed-PRF outputs independent of the leaked
//! file (which was made from other recipients' bits, or none), so given the positions, their biases p_i and
//! the observed bits y_i, the innocent's score is a sum of independent two-point variables T_i (value v1_i
//! with probability p_i, v0_i otherwise). For every λ ≥ 0, P(Σ T_i ≥ S) ≤ exp(−λS + Σ ln E e^{λT_i})
//! (Chernoff); we evaluate that expression exactly (log-sum-exp) at the λ a safeguarded Newton search finds,
//! so an imprecise λ only loosens the bound. At the maximal score (every bit matching) the exact probability
//! Π P(x_i = y_i) is used. Accusing when n × bound ≤ ε (n candidates) keeps the probability of accusing any
//! innocent candidate ≤ ε (Bonferroni).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::FingerprintKey;
use super::prf::{Prf, bit_probability};
use super::read::Marks;

/// One position's score distribution for an innocent candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Term {
    /// ln P(x = 1) = ln p.
    pub ln_p1: f64,
    /// ln P(x = 0) = ln (1 − p).
    pub ln_p0: f64,
    /// Score if the candidate's bit is 1.
    pub v1: f64,
    /// Score if the candidate's bit is 0.
    pub v0: f64,
}

impl Term {
    /// The symmetric Tardos term for bias `p` and observed bit `y`: agreeing earns √((1−p)/p) on a 1 and
    /// √(p/(1−p)) on a 0, disagreeing costs the same amounts. The innocent's bit is 1 with the exact
    /// probability the PRF realises for `p` ([`bit_probability`]).
    pub(crate) fn new(p: f64, y: bool) -> Term {
        let up = ((1.0 - p) / p).sqrt();
        let down = (p / (1.0 - p)).sqrt();
        let (v1, v0) = if y { (up, -down) } else { (-up, down) };
        let q = bit_probability(p);
        Term {
            ln_p1: q.ln(),
            ln_p0: (1.0 - q).ln(),
            v1,
            v0,
        }
    }

    /// The candidate's term given its bit.
    pub(crate) fn score(&self, x: bool) -> f64 {
        if x { self.v1 } else { self.v0 }
    }

    fn max(&self) -> f64 {
        self.v1.max(self.v0)
    }

    fn ln_p_max(&self) -> f64 {
        if self.v1 > self.v0 { self.ln_p1 } else { self.ln_p0 }
    }
}

/// ln of the probability that an innocent matches every position (the exact probability of the maximal
/// score).
pub(crate) fn ln_perfect(terms: &[Term]) -> f64 {
    terms.iter().map(Term::ln_p_max).sum()
}

/// The maximal score (every position matching).
pub(crate) fn max_score(terms: &[Term]) -> f64 {
    terms.iter().map(Term::max).sum()
}

/// K(λ) = Σ ln E e^{λT_i}, K'(λ), K''(λ), and Σ |ln-terms| (for a rounding allowance).
fn cumulants(terms: &[Term], lambda: f64) -> (f64, f64, f64, f64) {
    let (mut k, mut k1, mut k2, mut mag) = (0.0, 0.0, 0.0, 0.0);
    for t in terms {
        let la = t.ln_p1 + lambda * t.v1;
        let lb = t.ln_p0 + lambda * t.v0;
        let m = la.max(lb);
        let ea = (la - m).exp();
        let eb = (lb - m).exp();
        let z = ea + eb;
        let term = m + z.ln();
        k += term;
        mag += term.abs() + m.abs();
        let w = ea / z;
        k1 += w * t.v1 + (1.0 - w) * t.v0;
        let d = t.v1 - t.v0;
        k2 += w * (1.0 - w) * d * d;
    }
    (k, k1, k2, mag)
}

/// An upper bound on ln P(innocent score ≥ `s`) (see the module documentation).
pub(crate) fn ln_tail_bound(terms: &[Term], s: f64) -> f64 {
    if s.is_nan() || s <= 0.0 {
        return 0.0;
    }
    if terms.is_empty() {
        return f64::NEG_INFINITY;
    }
    // Any mismatch lowers the score by |v1 − v0| = 1/√(p(1−p)) ≥ 2, so above max − 1 only the perfect match
    // remains, whose probability is exact.
    if s > max_score(terms) - 1.0 {
        return ln_perfect(terms).min(0.0);
    }
    // f(λ) = K(λ) − λs is convex with f(0) = 0, f'(0) = −s < 0 and a minimum where K'(λ) = s < max. Any
    // λ ≥ 0 gives a valid bound; keep the best evaluated.
    let mut best = 0.0f64;
    let mut evaluate = |lambda: f64| {
        let (k, k1, k2, mag) = cumulants(terms, lambda);
        // Allowance for rounding in the sums, so the value stays an upper bound.
        let f = k - lambda * s + 1e-12 * (mag + (lambda * s).abs()) + 1e-300;
        best = best.min(f);
        (k1 - s, k2)
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    loop {
        let (g, _) = evaluate(hi);
        if g >= 0.0 || hi > 1e12 {
            break;
        }
        lo = hi;
        hi *= 2.0;
    }
    let mut lambda = 0.5 * (lo + hi);
    for _ in 0..200 {
        let (g, k2) = evaluate(lambda);
        if g > 0.0 {
            hi = lambda;
        } else {
            lo = lambda;
        }
        if g.abs() <= 1e-12 * s.max(1.0) || hi - lo <= 1e-15 * hi {
            break;
        }
        let newton = lambda - g / k2;
        lambda = if newton.is_finite() && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
    }
    best
}

/// One candidate's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// The recipient.
    pub recipient: String,
    /// Symmetric Tardos score (mean 0, variance 1 per position for an innocent).
    pub score: f64,
    /// Upper bound on the probability that an innocent recipient scores at least this much.
    pub p_innocent: f64,
    /// log10 of `p_innocent` (readable when it underflows).
    pub log10_p_innocent: f64,
    /// Whether the candidate is accused (n × `p_innocent` ≤ the bound).
    pub accused: bool,
}

/// The outcome of tracing a leaked table against a list of candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Code positions the score is computed on.
    pub positions: usize,
    /// Positions found but erased (tied readings).
    pub erased_positions: usize,
    /// Every candidate, by score (highest first).
    pub candidates: Vec<CandidateScore>,
    /// The accused recipients, by score.
    pub accused: Vec<String>,
    /// Whether the marks could attribute a copy at all: a candidate matching every position would be
    /// accused. When false, no one is accused because there are too few marks, not because no copy matched.
    pub decidable: bool,
    /// The bound on the probability of accusing any innocent candidate.
    pub bound: f64,
    /// The score of a perfectly matching copy.
    pub max_score: f64,
    /// One line for the operator.
    pub explanation: String,
}

/// Scores every candidate against `marks` and accuses those whose score an innocent reaches with probability
/// at most `bound` / `candidates.len()` — so the probability of accusing any innocent candidate is at most
/// `bound` (for a bound outside (0, 1], no one is accused). The leaked copy's owner must be among the
/// candidates to be found; with colluders, typically the most involved one is.
pub fn accuse(key: &FingerprintKey, marks: &Marks, candidates: &[String], bound: f64) -> Verdict {
    let prf = Prf::new(key);
    let biases: Vec<f64> = marks
        .positions
        .iter()
        .map(|p| prf.bias(p.position, marks.cutoff))
        .collect();
    let terms: Vec<Term> = marks
        .positions
        .iter()
        .zip(&biases)
        .map(|(p, &b)| Term::new(b, p.bit))
        .collect();
    let n = candidates.len().max(1) as f64;
    let ln_budget = if bound.is_finite() && bound > 0.0 && bound <= 1.0 {
        bound.ln() - n.ln()
    } else {
        f64::NEG_INFINITY
    };
    let max = max_score(&terms);
    let decidable = !terms.is_empty() && ln_perfect(&terms) <= ln_budget;

    let mut scored: Vec<CandidateScore> = candidates
        .par_iter()
        .map(|recipient| {
            let score: f64 = marks
                .positions
                .iter()
                .zip(&biases)
                .zip(&terms)
                .map(|((p, &b), t)| t.score(prf.bit(recipient, p.position, b)))
                .sum();
            let ln_p = ln_tail_bound(&terms, score);
            CandidateScore {
                recipient: recipient.clone(),
                score,
                p_innocent: ln_p.exp(),
                log10_p_innocent: ln_p / std::f64::consts::LN_10,
                accused: ln_p <= ln_budget,
            }
        })
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.recipient.cmp(&b.recipient)));
    let accused: Vec<String> = scored
        .iter()
        .filter(|c| c.accused)
        .map(|c| c.recipient.clone())
        .collect();

    let explanation = if !decidable {
        format!(
            "too few marks: {} positions found ({} erased); even a copy matching every one could not be \
             attributed with a false-accusation probability of at most {bound:e} among {} candidates",
            terms.len(),
            marks.erased_positions,
            candidates.len()
        )
    } else if !accused.is_empty() {
        let worst = scored
            .iter()
            .filter(|c| c.accused)
            .map(|c| c.log10_p_innocent)
            .fold(f64::MIN, f64::max);
        format!(
            "accused {}: an innocent recipient would score this high with probability at most 10^{worst:.1} \
             each, so at most {bound:e} for any of {} candidates ({} positions)",
            accused.join(", "),
            candidates.len(),
            terms.len()
        )
    } else {
        match scored.first() {
            Some(top) => format!(
                "no one accused: the best candidate, {}, scores {:.1} of a possible {max:.1} (an innocent \
                 scores that high with probability up to 10^{:.1}; {} positions, bound {bound:e})",
                top.recipient,
                top.score,
                top.log10_p_innocent,
                terms.len()
            ),
            None => format!("no candidates given ({} positions)", terms.len()),
        }
    };
    Verdict {
        positions: terms.len(),
        erased_positions: marks.erased_positions,
        candidates: scored,
        accused,
        decidable,
        bound,
        max_score: max,
        explanation,
    }
}
