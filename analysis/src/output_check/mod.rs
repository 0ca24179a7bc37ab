//! Automatic output checking: what runs on every output request before a human output checker sees it, modelled on
//! the SACRO / ACRO rules of UK trusted research environments and going further where the environment knows more
//! than a checker reading a file can (see docs/analysis.md for the rule-by-rule comparison).
//!
//! Each rule marks a place of the output — a cell, a step, the whole — safe, for review, or refused, with a reason
//! that names the rule and its parameters and never a value. The verdict of the output is its worst finding's: a
//! refused output cannot leave as it is; one for review waits for the checker's eye on the places marked; a safe
//! one still waits for the checker's approval (DP answers, charged to the approval's budget, are the exception and
//! do not come here).
//!
//! - [`cells`]: threshold, zeros, extremes and the (n, k) and p % dominance rules on magnitudes;
//! - [`models`]: residual degrees of freedom of a model; risk sets and step sizes of a survival curve;
//! - [`differencing`]: nested populations, against every earlier output of the workspace and within the output.

pub mod cells;
pub mod differencing;
pub mod model;
pub mod models;
pub mod report;

use serde::{Deserialize, Serialize};

pub use differencing::History;
pub use model::{Cell, Model, Output, PatientId, Patients, Statistic, Survival, SurvivalStep, Table};
pub use report::{CheckReport, Counterpart, Finding, Place, Rule, Verdict};

/// The parameters of the rules (a TRE's "risk appetite"). The defaults are ACRO's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    /// Fewest patients behind a cell, a model or a curve (ACRO `safe_threshold`).
    pub threshold: u64,
    /// Fewest residual degrees of freedom of a model (ACRO `safe_dof_threshold`).
    pub dof_threshold: u64,
    /// The `n` of the (n, k) rule: how many of the largest contributors are taken together (ACRO `safe_nk_n`).
    pub nk_n: usize,
    /// The `k` of the (n, k) rule: the share of the total they may not exceed (ACRO `safe_nk_k`).
    pub nk_k: f64,
    /// The `p` of the p % rule: the share of the largest contribution the rest must hide it by (ACRO
    /// `safe_pratio_p`).
    pub p_percent: f64,
    /// Fewest patients at risk at a published step of a survival curve (ACRO `survival_safe_threshold`).
    pub survival_threshold: u64,
    /// Whether zero cells go to review (ACRO `zeros_are_disclosive`).
    pub zeros_need_review: bool,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            threshold: 10,
            dof_threshold: 10,
            nk_n: 2,
            nk_k: 0.9,
            p_percent: 0.1,
            survival_threshold: 10,
            zeros_need_review: true,
        }
    }
}

/// Runs every rule that applies to `output`, differencing included against the workspace's `history`.
pub fn check(output: &Output, history: &History, rules: &Rules) -> CheckReport {
    let mut findings = match output {
        Output::Table(t) => cells::check(t, rules),
        Output::Model(m) => models::check_model(m, rules),
        Output::Survival(s) => models::check_survival(s, rules),
    };
    findings.extend(differencing::check(output, history, rules));
    CheckReport::of(findings)
}

#[cfg(test)]
mod tests;
