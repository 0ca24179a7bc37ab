//! What the automatic checks say: a verdict per finding and for the whole output, with reasons an output checker
//! and the researcher can act on. A finding names its rule, the cell or step, and the rule's parameters — never a
//! value of the output nor a patient.

use serde::{Deserialize, Serialize};

/// How a check judged a cell, or the output as a whole. Ordered: the output's verdict is its worst finding's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing found: a human checker still approves, but has nothing to look at here.
    Safe,
    /// A human checker must look: the rule cannot tell on its own (zeros, negative contributions, small steps).
    Review,
    /// Disclosive: the output cannot leave as it is.
    Refused,
}

/// The rule a finding comes from: its stable code is what the console, the CLI and the ledger show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Rule {
    /// Fewer patients behind a cell than the threshold.
    Threshold,
    /// A zero cell: says that nobody in the group has the attribute.
    Zero,
    /// The largest `n` contributors make up more than `k` of a magnitude cell.
    DominanceNk,
    /// The second-largest contributor could estimate the largest to within `p` of its value.
    DominancePPercent,
    /// Dominance cannot be judged: some contributions are negative.
    NegativeContributions,
    /// A minimum or a maximum: one patient's own value.
    Extreme,
    /// A model with too few residual degrees of freedom.
    DegreesOfFreedom,
    /// A model one patient's rows carry too much of (a covariate that singles them out).
    InfluentialPatient,
    /// A survival curve step whose risk set is below the threshold.
    SmallRiskSet,
    /// A survival curve step whose risk table drops by fewer patients than the threshold.
    SmallStep,
    /// The output and an earlier one (or two of its own cells) differ by fewer patients than the threshold.
    Differencing,
}

impl Rule {
    /// The stable code (`THRESHOLD`, `DOMINANCE_NK`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Rule::Threshold => "THRESHOLD",
            Rule::Zero => "ZERO",
            Rule::DominanceNk => "DOMINANCE_NK",
            Rule::DominancePPercent => "DOMINANCE_P_PERCENT",
            Rule::NegativeContributions => "NEGATIVE_CONTRIBUTIONS",
            Rule::Extreme => "EXTREME",
            Rule::DegreesOfFreedom => "DEGREES_OF_FREEDOM",
            Rule::InfluentialPatient => "INFLUENTIAL_PATIENT",
            Rule::SmallRiskSet => "SMALL_RISK_SET",
            Rule::SmallStep => "SMALL_STEP",
            Rule::Differencing => "DIFFERENCING",
        }
    }
}

/// Where in the output a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "at", content = "index", rename_all = "snake_case")]
pub enum Place {
    /// The output as a whole (a model, a population).
    Whole,
    /// A table's cell, by its position.
    Cell(usize),
    /// A survival curve's step, by its position.
    Step(usize),
}

/// An earlier output a differencing finding pairs this one with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Counterpart {
    /// The earlier output's number in the workspace (`None`: another place of the same output).
    pub output: Option<u64>,
    /// Where in it.
    pub place: Place,
}

/// One thing a rule found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// What it means for the place.
    pub verdict: Verdict,
    /// Where.
    pub place: Place,
    /// For differencing: what it differs from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterpart: Option<Counterpart>,
    /// The reason in words, with the rule's parameters and never a value of the output.
    pub message: String,
}

/// Every finding of the automatic checks, and the verdict they add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The worst verdict of any finding (`Safe` without findings).
    pub verdict: Verdict,
    /// The findings, by place then rule.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// The report of `findings`.
    pub fn of(mut findings: Vec<Finding>) -> CheckReport {
        findings.sort_by_key(|f| (f.place, f.rule));
        let verdict = findings.iter().map(|f| f.verdict).max().unwrap_or(Verdict::Safe);
        CheckReport { verdict, findings }
    }

    /// The verdict of one place: its worst finding's, `Safe` without any.
    pub fn verdict_at(&self, place: Place) -> Verdict {
        self.findings
            .iter()
            .filter(|f| f.place == place)
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Safe)
    }

    /// Whether `rule` found something at `place`.
    pub fn has(&self, rule: Rule, place: Place) -> bool {
        self.findings.iter().any(|f| f.rule == rule && f.place == place)
    }
}
