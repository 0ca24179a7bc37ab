//! Utility metrics, their exact comparison keys, and lower bounds for pruning.
//!
//! Metrics are computed from integer aggregates wherever the definition allows, so the same node
//! gets bit-identical scores however its class table was built (roll-up order, thread count) and
//! ties are real ties. Loss is compared through `∏ (1 + loss_j)`, which orders nodes exactly like
//! the geometric mean but is monotone under IEEE rounding.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;

/// Selectable utility metric (lower is better for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// ARX's default "Loss" (gs-factor 0.5, geometric mean over QIs).
    #[default]
    Loss,
    /// Discernibility: Σ |class|² over kept classes + n × suppressed.
    Discernibility,
    /// Precision: mean over QIs of mean level/height, a suppressed record counting 1.
    Precision,
    /// Average equivalence class size: n / (kept classes + 1 if anything is suppressed).
    Aecs,
    /// Non-uniform entropy: Σ over records and QIs of −log2 P(original | generalised).
    Entropy,
}

impl Metric {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Discernibility => "discernibility",
            Self::Precision => "precision",
            Self::Aecs => "aecs",
            Self::Entropy => "entropy",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Loss,
            Self::Discernibility,
            Self::Precision,
            Self::Aecs,
            Self::Entropy,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

/// Exact comparison key of a metric value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Score {
    /// A non-negative rational `num / den`, compared exactly.
    Ratio {
        /// Numerator.
        num: u128,
        /// Denominator (> 0).
        den: u128,
    },
    /// A float compared with `total_cmp`.
    Float(f64),
}

impl Score {
    /// Total order between scores of the same metric.
    pub fn compare(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Ratio { num: a, den: b }, Self::Ratio { num: c, den: d }) => (a * d).cmp(&(c * b)),
            (Self::Float(a), Self::Float(b)) => a.total_cmp(b),
            (Self::Ratio { .. }, Self::Float(_)) => Ordering::Less,
            (Self::Float(_), Self::Ratio { .. }) => Ordering::Greater,
        }
    }
}

/// A metric value: the comparison key and the reported number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricValue {
    /// Key used for optimisation and tie-breaking.
    pub score: Score,
    /// Value as reported (e.g. the geometric-mean loss).
    pub value: f64,
}

/// What the metric needs to know about a node after suppression.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeSums {
    /// Records suppressed.
    pub suppressed: u64,
    /// Per QI: Σ over suppressed records of the hierarchy lines their generalised value covers.
    pub suppressed_lines: Vec<u64>,
    /// Σ over kept classes of rows².
    pub kept_sq: u128,
    /// Number of kept classes.
    pub kept_classes: u64,
    /// Non-uniform entropy added by suppression (only filled for [`Metric::Entropy`]).
    pub entropy_extra: f64,
}

/// Per-dataset precomputations for one metric.
#[derive(Debug, Clone)]
pub(crate) struct MetricCtx {
    pub metric: Metric,
    n: u64,
    /// Per QI: domain size m_j.
    m: Vec<u64>,
    /// Per QI: height H_j (max level).
    h: Vec<u64>,
    /// LCM of the non-zero heights (precision denominators).
    lcm: u64,
    /// Loss: per QI and level, Σ over all records of the lines of their generalised value.
    lines_total: Vec<Vec<u64>>,
    /// Entropy: per QI and level, Σ over records of −log2 P(leaf | generalised value).
    entropy_total: Vec<Vec<f64>>,
    /// Entropy: per QI, level and leaf, −log2 P(leaf | generalised value at level).
    pub entropy_leaf: Vec<Vec<Vec<f64>>>,
    /// Entropy: per QI and leaf, −log2(freq(leaf) / n).
    entropy_suppressed: Vec<Vec<f64>>,
    /// Loss without suppression: per QI and level, the factor `1 + loss` of the product (None
    /// for a QI with one value, which the product skips). Makes the static bound of a node d
    /// multiplications — it is needed for every node of the lattice.
    loss_factors: Vec<Vec<Option<f64>>>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl MetricCtx {
    pub fn new(ds: &Dataset, metric: Metric) -> Self {
        let n = ds.n as u64;
        let m = ds.qis.iter().map(|q| q.hierarchy.domain_size() as u64).collect();
        let h: Vec<u64> = ds.qis.iter().map(|q| q.max_level() as u64).collect();
        let lcm = h.iter().filter(|&&x| x > 0).fold(1u64, |acc, &x| acc / gcd(acc, x) * x);
        let mut lines_total = Vec::new();
        let mut entropy_total = Vec::new();
        let mut entropy_leaf = Vec::new();
        let mut entropy_suppressed = Vec::new();
        for q in &ds.qis {
            if metric == Metric::Entropy {
                entropy_suppressed.push(
                    q.freq
                        .iter()
                        .map(|&f| if f == 0 { 0.0 } else { -(f as f64 / n as f64).log2() })
                        .collect(),
                );
            }
            let hier = &q.hierarchy;
            let mut lt = Vec::new();
            let mut et = Vec::new();
            let mut el = Vec::new();
            for l in 0..hier.height() {
                let level = hier.level(l);
                lt.push(
                    q.freq
                        .iter()
                        .zip(level.of_leaf())
                        .map(|(&f, &g)| f * level.lines()[g as usize] as u64)
                        .sum(),
                );
                if metric == Metric::Entropy {
                    let mut gen_freq = vec![0u64; level.labels().len()];
                    for (&f, &g) in q.freq.iter().zip(level.of_leaf()) {
                        gen_freq[g as usize] += f;
                    }
                    let per_leaf: Vec<f64> = q
                        .freq
                        .iter()
                        .zip(level.of_leaf())
                        .map(|(&f, &g)| {
                            if f == 0 {
                                0.0
                            } else {
                                -(f as f64 / gen_freq[g as usize] as f64).log2()
                            }
                        })
                        .collect();
                    et.push(q.freq.iter().zip(&per_leaf).map(|(&f, &e)| f as f64 * e).sum());
                    el.push(per_leaf);
                }
            }
            lines_total.push(lt);
            entropy_total.push(et);
            entropy_leaf.push(el);
        }
        let mut ctx = Self {
            metric,
            n,
            m,
            h,
            lcm,
            lines_total,
            entropy_total,
            entropy_leaf,
            entropy_suppressed,
            loss_factors: Vec::new(),
        };
        ctx.loss_factors = (0..ctx.m.len())
            .map(|j| {
                (0..ctx.lines_total[j].len())
                    .map(|l| ctx.loss_factor(j, l, 0, 0))
                    .collect()
            })
            .collect();
        ctx
    }

    /// `1 + loss` of QI `j` at level `l` with `suppressed` records of which the suppressed
    /// records' own generalised values cover `suppressed_lines` lines; None for a one-value QI.
    #[inline]
    fn loss_factor(&self, j: usize, l: usize, suppressed: u64, suppressed_lines: u64) -> Option<f64> {
        let (n, m) = (self.n, self.m[j]);
        if m <= 1 {
            return None;
        }
        let a = self.lines_total[j][l] as u128 + (suppressed as u128 * m as u128) - suppressed_lines as u128;
        let num = a.saturating_sub(n as u128) as f64;
        let den = (n as u128 * m as u128 - n as u128) as f64;
        let loss = if den > 0.0 { (num / den).max(0.0) } else { 0.0 };
        Some(1.0 + loss)
    }

    /// Entropy a suppressed record with leaf `leaf` of QI `j` at level `level` adds on top of its
    /// generalisation-only contribution: suppression counts as "*" over the whole table, i.e.
    /// P(leaf | *) = freq(leaf) / n.
    #[inline]
    pub fn entropy_suppression_extra(&self, j: usize, level: usize, leaf: u32) -> f64 {
        self.entropy_suppressed[j][leaf as usize] - self.entropy_leaf[j][level][leaf as usize]
    }

    /// Lower bound of the metric for every node at or above `levels` in the lattice, known
    /// without touching data (None for data-dependent metrics).
    pub fn static_bound(&self, levels: &[u32]) -> Option<Score> {
        if self.metric == Metric::Loss {
            // The product `value` forms with nothing suppressed, in the same order: the same float.
            let product = levels
                .iter()
                .zip(&self.loss_factors)
                .filter_map(|(&l, f)| f[l as usize])
                .fold(1.0f64, |p, f| p * f);
            return Some(Score::Float(product));
        }
        let zero = NodeSums {
            suppressed_lines: vec![0; levels.len()],
            ..Default::default()
        };
        match self.metric {
            Metric::Loss | Metric::Precision | Metric::Entropy => Some(self.value(levels, &zero).score),
            Metric::Discernibility | Metric::Aecs => None,
        }
    }

    /// Heuristic "how generalised" score used to walk paths in the lattice for metrics without a
    /// static bound.
    pub fn path_heuristic(&self, levels: &[u32]) -> f64 {
        match self.static_bound(levels) {
            Some(Score::Float(x)) => x,
            Some(Score::Ratio { num, den }) => num as f64 / den as f64,
            None => levels
                .iter()
                .zip(&self.h)
                .map(|(&l, &h)| if h == 0 { 0.0 } else { l as f64 / h as f64 })
                .sum(),
        }
    }

    /// Generalisation-only value usable as a lower bound for this node and all its
    /// generalisations (data-dependent metrics only): Σ |class|² for discernibility and
    /// n / classes for AECS.
    pub fn generalisation_bound(&self, all_sq: u128, all_classes: u64) -> Option<Score> {
        match self.metric {
            Metric::Discernibility => Some(Score::Ratio { num: all_sq, den: 1 }),
            Metric::Aecs => Some(Score::Ratio {
                num: self.n as u128,
                den: all_classes.max(1) as u128,
            }),
            _ => None,
        }
    }

    /// The metric value of a node given its suppression sums.
    pub fn value(&self, levels: &[u32], s: &NodeSums) -> MetricValue {
        let n = self.n;
        let kept = n - s.suppressed;
        match self.metric {
            Metric::Loss => {
                let mut product = 1.0f64;
                for (j, &l) in levels.iter().enumerate() {
                    if let Some(f) = self.loss_factor(j, l as usize, s.suppressed, s.suppressed_lines[j]) {
                        product *= f;
                    }
                }
                let d = levels.len() as f64;
                MetricValue {
                    score: Score::Float(product),
                    value: product.powf(1.0 / d) - 1.0,
                }
            }
            Metric::Discernibility => {
                let num = s.kept_sq + n as u128 * s.suppressed as u128;
                MetricValue {
                    score: Score::Ratio { num, den: 1 },
                    value: num as f64,
                }
            }
            Metric::Precision => {
                let mut num: u128 = 0;
                for (j, &l) in levels.iter().enumerate() {
                    let h = self.h[j];
                    if let Some(scale) = self.lcm.checked_div(h) {
                        num += kept as u128 * l as u128 * scale as u128;
                    }
                    num += s.suppressed as u128 * self.lcm as u128;
                }
                let den = n as u128 * levels.len() as u128 * self.lcm as u128;
                MetricValue {
                    score: Score::Ratio { num, den },
                    value: num as f64 / den as f64,
                }
            }
            Metric::Aecs => {
                let classes = s.kept_classes + u64::from(s.suppressed > 0);
                let den = classes.max(1) as u128;
                MetricValue {
                    score: Score::Ratio { num: n as u128, den },
                    value: n as f64 / den as f64,
                }
            }
            Metric::Entropy => {
                let mut total = 0.0;
                for (j, &l) in levels.iter().enumerate() {
                    total += self.entropy_total[j][l as usize];
                }
                total += s.entropy_extra;
                MetricValue {
                    score: Score::Float(total),
                    value: total,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::QiInput;
    use crate::lattice::Lattice;
    use crate::table::Table;

    /// The static bound of Loss is read from per-level factors; it must be the very float that
    /// `value` gives with nothing suppressed, on every node (the search orders and prunes by it).
    #[test]
    fn loss_static_bound_is_value_without_suppression_on_every_node() {
        let rows: Vec<Vec<String>> = (0..40)
            .map(|i| {
                vec![
                    format!("{}", 20 + i % 17),
                    ["M", "F"][i % 2].to_string(),
                    "x".to_string(),
                ]
            })
            .collect();
        let header = ["age".to_string(), "sex".to_string(), "one".to_string()];
        let table = Table::from_rows(&header, &rows).unwrap();
        let age: String = (20..37)
            .map(|a| format!("{a};{}-{};*\n", a / 5 * 5, a / 5 * 5 + 4))
            .collect();
        let qis = vec![
            QiInput::from_arx_text("age", &age, b';').unwrap(),
            QiInput::from_arx_text("sex", "M;*\nF;*\n", b';').unwrap(),
            QiInput::from_arx_text("one", "x;*\n", b';').unwrap(),
        ];
        let ds = Dataset::encode(&table, qis, vec![], None).unwrap();
        let ctx = MetricCtx::new(&ds, Metric::Loss);
        let lattice = Lattice::new(&ds.heights()).unwrap();
        let zero = NodeSums {
            suppressed_lines: vec![0; 3],
            ..Default::default()
        };
        for idx in 0..lattice.size() {
            let levels = lattice.levels(idx);
            let Some(Score::Float(bound)) = ctx.static_bound(&levels) else {
                panic!("loss has a static bound");
            };
            let Score::Float(value) = ctx.value(&levels, &zero).score else {
                panic!("loss scores are floats");
            };
            assert_eq!(bound.to_bits(), value.to_bits(), "node {levels:?}");
        }
    }
}
