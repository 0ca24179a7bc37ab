//! Kaplan–Meier survival curves with Greenwood standard errors and the risk table, overall or by group. At a time
//! with both events and censorings, the events count first (censored patients were at risk at that time).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Analysed, AnalysisError, Frame};
use crate::output_check::{Output, PatientId, Patients, Survival, SurvivalStep};

/// One time of the curve with at least one event or censoring.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The time.
    pub time: f64,
    /// Patients at risk just before it.
    pub at_risk: u64,
    /// Events at it.
    pub events: u64,
    /// Censored at it.
    pub censored: u64,
    /// Survival just after it.
    pub survival: f64,
    /// Greenwood standard error of the survival.
    pub std_error: f64,
}

/// A curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    /// The group (`all` without grouping).
    pub group: String,
    /// Patients.
    pub patients: u64,
    /// Its steps in time order.
    pub steps: Vec<Step>,
}

/// Estimates survival from `time` and `event` (1 = event, 0 = censored), one row per patient, by `group` if given.
/// Rows with a missing value are left out; a negative time or an event other than 0/1 is refused.
pub fn kaplan_meier(
    frame: &Frame,
    time: &str,
    event: &str,
    group: Option<&str>,
) -> Result<Vec<Analysed<Curve>>, AnalysisError> {
    let times = frame.numeric(time)?;
    let events = frame.numeric(event)?;
    let groups = group.map(|g| frame.categorical(g)).transpose()?;
    let mut by_group: BTreeMap<&str, Vec<(f64, bool, PatientId)>> = BTreeMap::new();
    for (i, patient) in frame.patients().iter().enumerate() {
        let (Some(t), Some(e)) = (times[i], events[i]) else {
            continue;
        };
        if !t.is_finite() || t < 0.0 {
            return Err(AnalysisError::Invalid(format!(
                "column {time} holds a negative or non-finite time"
            )));
        }
        if e != 0.0 && e != 1.0 {
            return Err(AnalysisError::Invalid(format!(
                "column {event} must be 0 (censored) or 1 (event)"
            )));
        }
        let g = match &groups {
            Some(g) => match g[i].as_deref() {
                Some(g) => g,
                None => continue,
            },
            None => "all",
        };
        by_group.entry(g).or_default().push((t, e == 1.0, *patient));
    }
    // One row per patient: a patient counted twice would stand for two in every risk set.
    let mut seen = std::collections::HashSet::new();
    if !frame.patients().iter().all(|p| seen.insert(*p)) {
        return Err(AnalysisError::Invalid(
            "a survival curve needs one row per patient (time to the first event or to censoring)".to_owned(),
        ));
    }
    Ok(by_group.into_iter().map(|(g, rows)| curve(g, rows)).collect())
}

fn curve(group: &str, mut rows: Vec<(f64, bool, PatientId)>) -> Analysed<Curve> {
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let patients = Patients::new(rows.iter().map(|r| r.2).collect());
    let mut at_risk = rows.len() as u64;
    let (mut survival, mut greenwood) = (1.0_f64, 0.0_f64);
    let mut steps = Vec::new();
    let mut evidence = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let time = rows[i].0;
        let (mut events, mut censored) = (0u64, 0u64);
        while i < rows.len() && rows[i].0 == time {
            if rows[i].1 {
                events += 1;
            } else {
                censored += 1;
            }
            i += 1;
        }
        if events > 0 {
            survival *= 1.0 - events as f64 / at_risk as f64;
            if at_risk > events {
                greenwood += events as f64 / (at_risk as f64 * (at_risk - events) as f64);
            }
        }
        steps.push(Step {
            time,
            at_risk,
            events,
            censored,
            survival,
            std_error: survival * greenwood.sqrt(),
        });
        evidence.push(SurvivalStep {
            at_risk,
            events,
            censored,
        });
        at_risk -= events + censored;
    }
    Analysed {
        result: Curve {
            group: group.to_owned(),
            patients: patients.len() as u64,
            steps,
        },
        output: Output::Survival(Survival {
            steps: evidence,
            patients,
        }),
    }
}
