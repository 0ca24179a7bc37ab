//! The rules on a table's cells taken one at a time: threshold, zeros, extremes, and the two dominance rules on
//! magnitudes.

use super::Rules;
use super::model::{Cell, Statistic, Table};
use super::report::{Finding, Place, Rule, Verdict};

/// Every finding on `table`'s cells, one cell at a time.
pub fn check(table: &Table, rules: &Rules) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, cell) in table.cells.iter().enumerate() {
        let place = Place::Cell(i);
        let mut found = |rule: Rule, verdict: Verdict, message: String| {
            out.push(Finding {
                rule,
                verdict,
                place,
                counterpart: None,
                message,
            });
        };
        let n = cell.patients.len() as u64;
        if n == 0 {
            if rules.zeros_need_review {
                found(
                    Rule::Zero,
                    Verdict::Review,
                    "a zero cell says that nobody in the group has the attribute: is it structural?".into(),
                );
            }
            continue;
        }
        if n < rules.threshold {
            found(
                Rule::Threshold,
                Verdict::Refused,
                format!("fewer than {} patients behind the cell", rules.threshold),
            );
        }
        if matches!(cell.statistic, Statistic::Minimum | Statistic::Maximum) {
            found(
                Rule::Extreme,
                Verdict::Refused,
                "a minimum or a maximum is one patient's own value: release a quantile or a banded range".into(),
            );
        }
        if cell.statistic.is_magnitude() {
            for (rule, verdict, message) in dominance(cell, rules) {
                found(rule, verdict, message);
            }
        }
    }
    out
}

/// The dominance rules on a magnitude cell's contributions.
fn dominance(cell: &Cell, rules: &Rules) -> Vec<(Rule, Verdict, String)> {
    let mut out = Vec::new();
    if cell.contributions.iter().any(|c| *c < 0.0 || !c.is_finite()) {
        out.push((
            Rule::NegativeContributions,
            Verdict::Review,
            "some contributions are negative or not finite: the dominance rules cannot judge the cell".into(),
        ));
        return out;
    }
    if cell.contributions.len() != cell.patients.len() {
        out.push((
            Rule::NegativeContributions,
            Verdict::Review,
            "the contributions do not match the patients: the dominance rules cannot judge the cell".into(),
        ));
        return out;
    }
    let mut sorted = cell.contributions.clone();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().sum();
    if total <= 0.0 {
        return out;
    }
    let top_n: f64 = sorted.iter().take(rules.nk_n).sum();
    if top_n > rules.nk_k * total {
        out.push((
            Rule::DominanceNk,
            Verdict::Refused,
            format!(
                "the largest {} contributors make up more than {:.0} % of the cell",
                rules.nk_n,
                rules.nk_k * 100.0
            ),
        ));
    }
    // The second-largest contributor knows its own value: the rest of the total, less the largest, is what hides
    // the largest from them.
    let largest = sorted.first().copied().unwrap_or(0.0);
    let second = sorted.get(1).copied().unwrap_or(0.0);
    let remainder = total - largest - second;
    if largest > 0.0 && remainder < rules.p_percent * largest {
        out.push((
            Rule::DominancePPercent,
            Verdict::Refused,
            format!(
                "the second-largest contributor could estimate the largest to within {:.0} %",
                rules.p_percent * 100.0
            ),
        ));
    }
    out
}
