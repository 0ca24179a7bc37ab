//! Watching a workspace's queries for the patterns of a re-identification attempt, for the operators' console: a
//! query that isolates very few patients, a chain of queries narrowing down on the same small group, and the same
//! query shape asked over and over with different values (a search by trial and error). The results stay in the
//! workspace either way — the output checks stop a disclosive result at the exit — but an attempt is worth knowing
//! of before anything is asked to leave, and the approval's conditions forbid it.
//!
//! A query is observed with its shape (the text with every literal replaced, as the ledger keeps it), its user
//! and the patients its result is about (the environment knows them; they never leave). Alerts name the rule, the
//! user and the queries by their number in the workspace — never a value or a patient.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::output_check::Patients;

/// One query as the monitor sees it.
#[derive(Debug, Clone)]
pub struct Query {
    /// Its number in the workspace (the ledger's reference).
    pub number: u64,
    /// When it ran, milliseconds since the epoch.
    pub at_ms: i64,
    /// Who ran it.
    pub user: String,
    /// The text with its literals replaced (`WHERE age > ?`).
    pub shape: String,
    /// The patients its result is about.
    pub patients: Patients,
}

/// The thresholds of the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorRules {
    /// A result about fewer patients than this (and at least one) is an alert.
    pub few_patients: u64,
    /// This many queries in a row, each result a strict subset of the one before, end in an alert when the last is
    /// about fewer than `narrowing_below` patients.
    pub narrowing_steps: usize,
    /// See `narrowing_steps`.
    pub narrowing_below: u64,
    /// This many queries of one shape within `repeat_window_ms` by one user are an alert.
    pub repeats: usize,
    /// See `repeats`.
    pub repeat_window_ms: i64,
}

impl Default for MonitorRules {
    fn default() -> MonitorRules {
        MonitorRules {
            few_patients: 10,
            narrowing_steps: 3,
            narrowing_below: 50,
            repeats: 20,
            repeat_window_ms: 10 * 60 * 1000,
        }
    }
}

/// What the monitor raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Alert {
    /// A result about very few patients.
    FewPatients {
        /// The user.
        user: String,
        /// The query.
        query: u64,
    },
    /// Results narrowing down on one group, query after query.
    Narrowing {
        /// The user.
        user: String,
        /// The chain's queries, oldest first.
        queries: Vec<u64>,
    },
    /// One shape asked many times in a short while.
    Repeated {
        /// The user.
        user: String,
        /// The latest of them.
        query: u64,
        /// How many within the window.
        count: usize,
    },
}

/// The monitor of one workspace: the recent queries of each user.
#[derive(Debug, Default)]
pub struct Monitor {
    rules: MonitorRules,
    /// Each user's chain of strictly narrowing results (numbers and populations), the latest last.
    chains: HashMap<String, Vec<(u64, Patients)>>,
    /// Each user's and shape's recent times.
    shapes: HashMap<(String, String), VecDeque<i64>>,
}

impl Monitor {
    /// A monitor applying `rules`.
    pub fn new(rules: MonitorRules) -> Monitor {
        Monitor {
            rules,
            ..Monitor::default()
        }
    }

    /// Observes `query`; returns the alerts it raises.
    pub fn observe(&mut self, query: &Query) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let n = query.patients.len() as u64;
        if n > 0 && n < self.rules.few_patients {
            alerts.push(Alert::FewPatients {
                user: query.user.clone(),
                query: query.number,
            });
        }
        if let Some(chain) = self.narrowing(query) {
            alerts.push(Alert::Narrowing {
                user: query.user.clone(),
                queries: chain,
            });
        }
        let times = self
            .shapes
            .entry((query.user.clone(), query.shape.clone()))
            .or_default();
        times.push_back(query.at_ms);
        while times
            .front()
            .is_some_and(|t| query.at_ms - *t > self.rules.repeat_window_ms)
        {
            times.pop_front();
        }
        if times.len() >= self.rules.repeats {
            alerts.push(Alert::Repeated {
                user: query.user.clone(),
                query: query.number,
                count: times.len(),
            });
            // One alert per `repeats` queries of a burst: the count starts again.
            times.clear();
        }
        alerts
    }

    /// Extends the user's chain when the result is a strict subset of the chain's last; returns the chain when it
    /// has become long enough and small enough.
    fn narrowing(&mut self, query: &Query) -> Option<Vec<u64>> {
        let chain = self.chains.entry(query.user.clone()).or_default();
        // An empty result narrows nothing down, and the same population again (a re-run, or a count of the same
        // group) neither extends nor breaks the chain.
        if query.patients.is_empty() || chain.last().is_some_and(|(_, last)| *last == query.patients) {
            return None;
        }
        let narrower = chain
            .last()
            .is_some_and(|(_, last)| strict_subset(&query.patients, last));
        if !narrower {
            chain.clear();
        }
        chain.push((query.number, query.patients.clone()));
        let small = (query.patients.len() as u64) < self.rules.narrowing_below;
        if chain.len() >= self.rules.narrowing_steps && small {
            let numbers = chain.iter().map(|(n, _)| *n).collect();
            // Reported once; a further narrowing starts a new chain from here.
            let last = chain.pop();
            chain.clear();
            chain.extend(last);
            return Some(numbers);
        }
        None
    }
}

/// Whether `a` is a strict subset of `b` (both sorted).
fn strict_subset(a: &Patients, b: &Patients) -> bool {
    if a.len() >= b.len() {
        return false;
    }
    let mut rest = b.ids().iter();
    a.ids().iter().all(|x| rest.by_ref().any(|y| y == x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output_check::PatientId;

    fn query(number: u64, at_ms: i64, shape: &str, range: std::ops::Range<u32>) -> Query {
        Query {
            number,
            at_ms,
            user: "sato".into(),
            shape: shape.into(),
            patients: Patients::new(range.map(PatientId).collect()),
        }
    }

    #[test]
    fn a_result_about_few_patients_is_an_alert_but_an_empty_one_is_not() {
        let mut m = Monitor::new(MonitorRules::default());
        assert_eq!(
            m.observe(&query(1, 0, "a", 0..3)),
            [Alert::FewPatients {
                user: "sato".into(),
                query: 1
            }]
        );
        assert!(m.observe(&query(2, 0, "b", 0..0)).is_empty());
        assert!(m.observe(&query(3, 0, "c", 0..10)).is_empty());
    }

    #[test]
    fn three_narrowing_results_ending_small_are_an_alert() {
        let mut m = Monitor::new(MonitorRules::default());
        assert!(m.observe(&query(1, 0, "a", 0..1000)).is_empty());
        assert!(m.observe(&query(2, 0, "b", 0..200)).is_empty());
        let alerts = m.observe(&query(3, 0, "c", 0..40));
        assert_eq!(
            alerts,
            [Alert::Narrowing {
                user: "sato".into(),
                queries: vec![1, 2, 3]
            }]
        );
        // Not a subset: the chain starts again.
        assert!(m.observe(&query(4, 0, "d", 35..45)).is_empty());
        // Empty results and re-runs of the same population neither extend nor break a chain.
        let mut m = Monitor::new(MonitorRules::default());
        assert!(m.observe(&query(1, 0, "a", 0..1000)).is_empty());
        assert!(m.observe(&query(2, 0, "b", 0..0)).is_empty());
        assert!(m.observe(&query(3, 0, "a", 0..1000)).is_empty());
        assert!(m.observe(&query(4, 0, "c", 0..200)).is_empty());
        assert!(m.observe(&query(5, 0, "c", 0..200)).is_empty());
        assert_eq!(m.observe(&query(6, 0, "d", 0..30)).len(), 1);
        // Narrowing but still large: no alert.
        let mut m = Monitor::new(MonitorRules::default());
        for (n, top) in [(1, 5000), (2, 4000), (3, 3000)] {
            assert!(m.observe(&query(n, 0, "a", 0..top)).is_empty());
        }
    }

    #[test]
    fn one_shape_many_times_in_the_window_is_an_alert_every_repeats_queries() {
        let rules = MonitorRules {
            repeats: 5,
            repeat_window_ms: 1000,
            ..MonitorRules::default()
        };
        let mut m = Monitor::new(rules);
        let mut raised = Vec::new();
        for n in 0..12 {
            // Disjoint large results, so only the repetition rule can speak.
            let start = n as u32 * 100;
            raised.extend(m.observe(&query(n, n as i64 * 100, "WHERE birth_date = ?", start..start + 100)));
        }
        assert_eq!(
            raised,
            [
                Alert::Repeated {
                    user: "sato".into(),
                    query: 4,
                    count: 5
                },
                Alert::Repeated {
                    user: "sato".into(),
                    query: 9,
                    count: 5
                }
            ]
        );
        // Spread out beyond the window: never five at once.
        let mut m = Monitor::new(MonitorRules {
            repeats: 5,
            repeat_window_ms: 1000,
            ..MonitorRules::default()
        });
        for n in 0..12 {
            let start = n as u32 * 100;
            assert!(m.observe(&query(n, n as i64 * 300, "s", start..start + 100)).is_empty());
        }
    }
}
