//! The rules on a fitted model and on a survival curve.

use super::Rules;
use super::model::{Model, Survival};
use super::report::{Finding, Place, Rule, Verdict};

fn finding(rule: Rule, verdict: Verdict, place: Place, message: String) -> Finding {
    Finding {
        rule,
        verdict,
        place,
        counterpart: None,
        message,
    }
}

/// The threshold on the patients behind a whole model or curve (`what` names it in the reason).
fn too_few(patients: &super::model::Patients, rules: &Rules, what: &str) -> Option<Finding> {
    ((patients.len() as u64) < rules.threshold).then(|| {
        finding(
            Rule::Threshold,
            Verdict::Refused,
            Place::Whole,
            format!("fewer than {} patients behind the {what}", rules.threshold),
        )
    })
}

/// A model needs enough residual degrees of freedom and enough patients: with few, its coefficients come close to
/// the patients' own values.
pub fn check_model(model: &Model, rules: &Rules) -> Vec<Finding> {
    let mut out = Vec::new();
    if model.residual_dof() < rules.dof_threshold {
        out.push(finding(
            Rule::DegreesOfFreedom,
            Verdict::Refused,
            Place::Whole,
            format!(
                "fewer than {} residual degrees of freedom (observations minus parameters)",
                rules.dof_threshold
            ),
        ));
    }
    if model.largest_patient_leverage > 1.0 / rules.threshold as f64 {
        out.push(finding(
            Rule::InfluentialPatient,
            Verdict::Refused,
            Place::Whole,
            format!(
                "one patient carries more than 1/{} of the fit (a covariate that singles out fewer than {} patients?)",
                rules.threshold, rules.threshold
            ),
        ));
    }
    if model.largest_patient_dfbetas > INFLUENCE_REVIEW {
        out.push(finding(
            Rule::InfluentialPatient,
            Verdict::Review,
            Place::Whole,
            format!(
                "one patient moves a coefficient by more than {INFLUENCE_REVIEW} of its standard error: read how the \
                 outcome was made (an outcome set for one patient alone shows here)"
            ),
        ));
    }
    out.extend(too_few(&model.patients, rules, "model"));
    out
}

/// The shift of a coefficient by one patient (in its standard errors) above which a model goes to review. Among
/// honest data of a hundred patients or more a single patient rarely moves a coefficient by half its error; an
/// outcome that is one patient's value and a constant elsewhere moves it by about one.
pub const INFLUENCE_REVIEW: f64 = 0.5;

/// A survival curve may leave only where its risk set holds at least the threshold, and each step must move the
/// risk table by at least the threshold (ACRO's rule: a drop of one dates one patient's event or censoring). Steps
/// past the first small risk set are all refused (the curve is truncated there), and a curve of fewer patients
/// than the threshold is refused as a whole.
pub fn check_survival(curve: &Survival, rules: &Rules) -> Vec<Finding> {
    let mut out: Vec<Finding> = too_few(&curve.patients, rules, "curve").into_iter().collect();
    let mut truncated = false;
    for (i, step) in curve.steps.iter().enumerate() {
        let place = Place::Step(i);
        if truncated || step.at_risk < rules.survival_threshold {
            truncated = true;
            out.push(finding(
                Rule::SmallRiskSet,
                Verdict::Refused,
                place,
                format!(
                    "fewer than {} patients at risk: truncate the curve before this step",
                    rules.survival_threshold
                ),
            ));
            continue;
        }
        let moved = step.events + step.censored;
        if moved > 0 && moved < rules.survival_threshold {
            out.push(finding(
                Rule::SmallStep,
                Verdict::Refused,
                place,
                format!(
                    "the risk table drops by fewer than {} patients: group times into intervals so that each step moves by at least that many",
                    rules.survival_threshold
                ),
            ));
        }
    }
    out
}
