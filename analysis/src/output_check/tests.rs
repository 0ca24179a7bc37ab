//! Each rule against cases computed by hand, the verdict's arithmetic, and differencing against a brute-force search
//! over every pair of sets on small random workspaces.

use super::*;

fn patients(range: std::ops::Range<u32>) -> Patients {
    Patients::new(range.map(PatientId).collect())
}

fn count(range: std::ops::Range<u32>) -> Cell {
    Cell {
        statistic: Statistic::Count,
        patients: patients(range),
        contributions: Vec::new(),
    }
}

/// A sum over one patient per contribution.
fn sum(contributions: &[f64]) -> Cell {
    Cell {
        statistic: Statistic::Sum,
        patients: patients(0..contributions.len() as u32),
        contributions: contributions.to_vec(),
    }
}

fn table(cells: Vec<Cell>) -> Output {
    Output::Table(Table { cells })
}

fn alone(output: &Output, rules: &Rules) -> CheckReport {
    check(output, &History::new(), rules)
}

fn rules_found(report: &CheckReport, place: Place) -> Vec<Rule> {
    report
        .findings
        .iter()
        .filter(|f| f.place == place)
        .map(|f| f.rule)
        .collect()
}

#[test]
fn the_threshold_refuses_cells_of_fewer_than_ten_patients() {
    let r = alone(&table(vec![count(0..9), count(100..110)]), &Rules::default());
    assert_eq!(rules_found(&r, Place::Cell(0)), [Rule::Threshold]);
    assert_eq!(r.verdict_at(Place::Cell(0)), Verdict::Refused);
    assert_eq!(r.verdict_at(Place::Cell(1)), Verdict::Safe, "ten patients are enough");
    assert_eq!(r.verdict, Verdict::Refused);
}

#[test]
fn zeros_go_to_review_unless_the_tre_says_otherwise() {
    let t = table(vec![count(0..0), count(0..20)]);
    let r = alone(&t, &Rules::default());
    assert_eq!(rules_found(&r, Place::Cell(0)), [Rule::Zero]);
    assert_eq!(r.verdict, Verdict::Review);
    let lenient = Rules {
        zeros_need_review: false,
        ..Rules::default()
    };
    assert_eq!(alone(&t, &lenient).verdict, Verdict::Safe);
}

#[test]
fn minima_and_maxima_are_refused_however_many_patients() {
    for statistic in [Statistic::Minimum, Statistic::Maximum] {
        let cell = Cell {
            statistic,
            ..count(0..500)
        };
        let r = alone(&table(vec![cell]), &Rules::default());
        assert_eq!(rules_found(&r, Place::Cell(0)), [Rule::Extreme], "{statistic:?}");
        assert_eq!(r.verdict, Verdict::Refused);
    }
    let median = Cell {
        statistic: Statistic::Quantile,
        ..count(0..500)
    };
    assert_eq!(alone(&table(vec![median]), &Rules::default()).verdict, Verdict::Safe);
}

#[test]
fn the_nk_rule_refuses_a_cell_two_contributors_dominate() {
    // 50 + 41 = 91 of 100: more than 90 %.
    let mut dominated = vec![50.0, 41.0];
    dominated.extend([1.0; 9]);
    let r = alone(&table(vec![sum(&dominated)]), &Rules::default());
    assert!(r.has(Rule::DominanceNk, Place::Cell(0)), "{r:?}");
    // 50 + 40 = 90 of 100: exactly 90 % is not more than 90 %.
    let mut spread = vec![50.0, 40.0];
    spread.extend([1.0; 10]);
    let r = alone(&table(vec![sum(&spread)]), &Rules::default());
    assert!(!r.has(Rule::DominanceNk, Place::Cell(0)), "{r:?}");
    assert!(!r.has(Rule::DominancePPercent, Place::Cell(0)), "{r:?}");
    assert_eq!(r.verdict, Verdict::Safe);
}

#[test]
fn the_p_percent_rule_refuses_what_the_second_largest_could_estimate() {
    // With k = 0.99 the (n, k) rule lets these through: 150 of 159 is 94 %.
    let rules = Rules {
        nk_k: 0.99,
        ..Rules::default()
    };
    // The second-largest (50) knows the total 159 and its own value: the largest is 159 − 50 − (5 + 4) = 100 give
    // or take 9, less than 10 % of 100.
    let mut close = vec![100.0, 50.0, 5.0, 4.0];
    close.extend([0.0; 6]);
    let r = alone(&table(vec![sum(&close)]), &rules);
    assert_eq!(rules_found(&r, Place::Cell(0)), [Rule::DominancePPercent]);
    // The rest hides it by 10 exactly: not less than 10 % of 100.
    let mut hidden = vec![100.0, 50.0, 10.0];
    hidden.extend([0.0; 7]);
    assert_eq!(alone(&table(vec![sum(&hidden)]), &rules).verdict, Verdict::Safe);
    // With ACRO's k = 0.9 the first case is refused by both rules: the p % rule at p = 0.1 never refuses what the
    // (n = 2, k = 0.9) rule lets through.
    let r = alone(&table(vec![sum(&close)]), &Rules::default());
    assert_eq!(
        rules_found(&r, Place::Cell(0)),
        [Rule::DominanceNk, Rule::DominancePPercent]
    );
}

#[test]
fn negative_contributions_go_to_review_instead_of_dominance() {
    let mut with_negative = vec![100.0, -50.0];
    with_negative.extend([1.0; 10]);
    let r = alone(&table(vec![sum(&with_negative)]), &Rules::default());
    assert_eq!(rules_found(&r, Place::Cell(0)), [Rule::NegativeContributions]);
    assert_eq!(r.verdict, Verdict::Review);
}

#[test]
fn dominance_applies_to_means_but_not_to_counts() {
    let mut dominated = vec![1000.0];
    dominated.extend([1.0; 19]);
    let mean = Cell {
        statistic: Statistic::Mean,
        ..sum(&dominated)
    };
    assert!(alone(&table(vec![mean]), &Rules::default()).has(Rule::DominanceNk, Place::Cell(0)));
    let as_count = Cell {
        statistic: Statistic::Count,
        ..sum(&dominated)
    };
    assert_eq!(alone(&table(vec![as_count]), &Rules::default()).verdict, Verdict::Safe);
}

#[test]
fn a_model_needs_ten_residual_degrees_of_freedom() {
    let model = |observations, parameters, n| {
        Output::Model(Model {
            observations,
            parameters,
            patients: patients(0..n),
            largest_patient_leverage: 0.0,
            largest_patient_dfbetas: 0.0,
        })
    };
    // 15 observations, 6 parameters: 9 residual degrees of freedom.
    let r = alone(&model(15, 6, 15), &Rules::default());
    assert_eq!(rules_found(&r, Place::Whole), [Rule::DegreesOfFreedom]);
    assert_eq!(alone(&model(16, 6, 16), &Rules::default()).verdict, Verdict::Safe);
    // Over-parameterised: no residual degrees of freedom at all.
    assert!(alone(&model(4, 6, 4), &Rules::default()).has(Rule::DegreesOfFreedom, Place::Whole));
    // Many observations of few patients (repeated measures): the patients count, for the threshold and for the
    // degrees of freedom (8 patients, 3 parameters: 5).
    let r = alone(&model(400, 3, 8), &Rules::default());
    assert_eq!(rules_found(&r, Place::Whole), [Rule::Threshold, Rule::DegreesOfFreedom]);
    // One patient carrying more than a tenth of the fit.
    let influential = Output::Model(Model {
        observations: 1000,
        parameters: 2,
        patients: patients(0..1000),
        largest_patient_leverage: 0.99,
        largest_patient_dfbetas: 0.0,
    });
    assert_eq!(
        rules_found(&alone(&influential, &Rules::default()), Place::Whole),
        [Rule::InfluentialPatient]
    );
}

#[test]
fn a_survival_curve_is_truncated_at_its_first_small_risk_set_and_small_steps_refused() {
    let step = |at_risk, events, censored| SurvivalStep {
        at_risk,
        events,
        censored,
    };
    let curve = Output::Survival(Survival {
        steps: vec![
            step(100, 8, 2),  // moves by 10: fine
            step(90, 1, 0),   // one event dates one patient: refused
            step(89, 0, 5),   // five censored: the drop in the risk table shows them too
            step(84, 0, 65),  // censoring only, but 65 of them: fine
            step(19, 10, 0),  // fine
            step(9, 10, 0),   // at risk below 10: refused
            step(120, 10, 0), // after the truncation: refused too
        ],
        patients: patients(0..100),
    });
    let r = alone(&curve, &Rules::default());
    let found: Vec<(Place, Rule, Verdict)> = r.findings.iter().map(|f| (f.place, f.rule, f.verdict)).collect();
    assert_eq!(
        found,
        [
            (Place::Step(1), Rule::SmallStep, Verdict::Refused),
            (Place::Step(2), Rule::SmallStep, Verdict::Refused),
            (Place::Step(5), Rule::SmallRiskSet, Verdict::Refused),
            (Place::Step(6), Rule::SmallRiskSet, Verdict::Refused),
        ]
    );
    // A curve of fewer than 10 patients is refused as a whole, whatever its steps.
    let few = Output::Survival(Survival {
        steps: vec![step(12, 12, 0)],
        patients: patients(0..6),
    });
    assert!(alone(&few, &Rules::default()).has(Rule::Threshold, Place::Whole));
}

#[test]
fn differencing_against_an_earlier_output_finds_the_few_patients_between_nested_cells() {
    let mut history = History::new();
    history.record(1, &table(vec![count(0..100), count(100..300)])).unwrap();
    // The same group less three patients (a filter that excludes them): 100 − 97 discloses the three.
    let r = check(&table(vec![count(0..97)]), &history, &Rules::default());
    assert_eq!(rules_found(&r, Place::Cell(0)), [Rule::Differencing]);
    assert_eq!(
        r.findings[0].counterpart,
        Some(Counterpart {
            output: Some(1),
            place: Place::Cell(0)
        })
    );
    // Larger too: the earlier group plus five patients.
    let r = check(&table(vec![count(100..305)]), &history, &Rules::default());
    assert!(r.has(Rule::Differencing, Place::Cell(0)));
    // Ten apart is what the threshold allows; overlapping but not nested discloses nothing by subtraction.
    assert_eq!(
        check(&table(vec![count(0..90)]), &history, &Rules::default()).verdict,
        Verdict::Safe
    );
    let mut overlapping: Vec<PatientId> = (0..97).map(PatientId).collect();
    overlapping.push(PatientId(5000));
    let cell = Cell {
        patients: Patients::new(overlapping),
        ..count(0..0)
    };
    assert_eq!(
        check(&table(vec![cell]), &history, &Rules::default()).verdict,
        Verdict::Safe
    );
    // The very same group again is no difference at all.
    assert_eq!(
        check(&table(vec![count(0..100)]), &history, &Rules::default()).verdict,
        Verdict::Safe
    );
}

#[test]
fn a_model_refitted_without_one_patient_is_refused() {
    let model = |range| {
        Output::Model(Model {
            observations: 2000,
            parameters: 11,
            patients: patients(range),
            largest_patient_leverage: 0.01,
            largest_patient_dfbetas: 0.0,
        })
    };
    let mut history = History::new();
    history.record(7, &model(0..200)).unwrap();
    let r = check(&model(1..200), &history, &Rules::default());
    assert_eq!(rules_found(&r, Place::Whole), [Rule::Differencing]);
    assert_eq!(r.findings[0].counterpart.and_then(|c| c.output), Some(7));
}

#[test]
fn a_margin_and_a_cell_of_the_same_table_are_compared_too() {
    // "All patients" and "all but the 80+": the margin gives away the 80+ band's four patients.
    let r = alone(&table(vec![count(0..104), count(0..100)]), &Rules::default());
    assert!(r.has(Rule::Differencing, Place::Cell(0)), "{r:?}");
    assert_eq!(
        r.findings[0].counterpart,
        Some(Counterpart {
            output: None,
            place: Place::Cell(1)
        })
    );
    // Disjoint cells of a cross-tabulation are never nested.
    assert_eq!(
        alone(&table(vec![count(0..50), count(50..100)]), &Rules::default()).verdict,
        Verdict::Safe
    );
}

#[test]
fn no_message_repeats_a_value_of_the_output() {
    // Seven patients, contributions summing to 7,777: neither number may appear in a reason.
    let mut seven = vec![7000.0, 700.0, 70.0];
    seven.extend([1.75; 4]);
    let mut history = History::new();
    history.record(3, &table(vec![count(0..16)])).unwrap();
    let r = check(
        &table(vec![sum(&seven), count(0..7), count(0..0)]),
        &history,
        &Rules::default(),
    );
    assert!(r.findings.len() >= 4, "{r:?}");
    assert!(r.findings.iter().any(|f| f.rule == Rule::Differencing), "{r:?}");
    for f in &r.findings {
        assert!(!f.message.contains('7'), "{}", f.message);
    }
}

/// A small deterministic generator (xorshift64*), so the search needs no dependency and repeats exactly.
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as u32 % below
    }

    fn set(&mut self) -> Patients {
        Patients::new((0..12).filter(|_| self.next(2) == 0).map(PatientId).collect())
    }

    fn table(&mut self) -> Vec<Patients> {
        (0..1 + self.next(3)).map(|_| self.set()).collect()
    }
}

fn nested_within(a: &Patients, b: &Patients, threshold: u64) -> bool {
    let (a, b): (std::collections::BTreeSet<_>, std::collections::BTreeSet<_>) =
        (a.ids().iter().collect(), b.ids().iter().collect());
    let difference = (a.len() as u64).abs_diff(b.len() as u64);
    (a.is_subset(&b) || b.is_subset(&a)) && difference > 0 && difference < threshold && !a.is_empty() && !b.is_empty()
}

#[test]
fn differencing_finds_exactly_the_nested_pairs_a_brute_force_search_finds() {
    let rules = Rules {
        threshold: 4,
        ..Rules::default()
    };
    let as_output = |sets: &[Patients]| {
        table(
            sets.iter()
                .map(|p| Cell {
                    patients: p.clone(),
                    ..count(0..0)
                })
                .collect(),
        )
    };
    // The sets a table releases, found independently: each non-empty cell, and the union of them all when there
    // are several (the table's population).
    let placed = |sets: &[Patients]| {
        let mut out: Vec<(Place, Patients)> = sets
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(i, p)| (Place::Cell(i), p.clone()))
            .collect();
        if out.len() > 1 {
            let union: std::collections::BTreeSet<PatientId> =
                out.iter().flat_map(|(_, p)| p.ids().iter().copied()).collect();
            out.push((Place::Whole, Patients::new(union.into_iter().collect())));
        }
        out
    };
    let mut draw = Draw(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2000 {
        let earlier: Vec<Vec<Patients>> = (0..draw.next(5)).map(|_| draw.table()).collect();
        let new = draw.table();
        let mut history = History::new();
        for (n, sets) in earlier.iter().enumerate() {
            history.record(n as u64, &as_output(sets)).unwrap();
        }
        let mut expected = std::collections::BTreeSet::new();
        let mine_placed = placed(&new);
        for (i, mine) in &mine_placed {
            for (n, sets) in earlier.iter().enumerate() {
                for (j, theirs) in placed(sets) {
                    if nested_within(mine, &theirs, rules.threshold) {
                        expected.insert((*i, Some(n as u64), j));
                    }
                }
            }
            for (j, other) in &mine_placed {
                if j > i && nested_within(mine, other, rules.threshold) {
                    expected.insert((*i, None, *j));
                }
            }
        }
        let found: std::collections::BTreeSet<(Place, Option<u64>, Place)> =
            differencing::check(&as_output(&new), &history, &rules)
                .iter()
                .map(|f| {
                    let c = f.counterpart.expect("differencing names its counterpart");
                    (f.place, c.output, c.place)
                })
                .collect();
        assert_eq!(found, expected, "earlier {earlier:?} new {new:?}");
    }
}

#[test]
fn a_patient_number_beyond_any_cohort_is_refused_not_indexed() {
    let far = table(vec![Cell {
        patients: Patients::new(vec![PatientId(u32::MAX)]),
        ..count(0..0)
    }]);
    let mut history = History::new();
    assert!(history.record(1, &far).is_err());
    assert_eq!(history.sets(), 0);
    let r = check(&far, &history, &Rules::default());
    assert_eq!(r.verdict, Verdict::Refused);
    assert!(r.has(Rule::Differencing, Place::Whole));
    // Repeats in a deserialised list count once.
    let cell: Patients = serde_json::from_str("[3, 3, 3, 1]").unwrap();
    assert_eq!(cell.len(), 2);
}

#[test]
fn the_report_serialises_with_stable_codes() {
    let r = alone(&table(vec![count(0..3)]), &Rules::default());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["verdict"], "refused");
    assert_eq!(json["findings"][0]["rule"], "THRESHOLD");
    assert_eq!(
        json["findings"][0]["place"],
        serde_json::json!({"at": "cell", "index": 0})
    );
    assert_eq!(Rule::DominancePPercent.code(), "DOMINANCE_P_PERCENT");
}
