//! Property tests: on random small tables, hierarchies and models the optimised search returns
//! the exhaustive optimum (or both find none), and the applied output passes the verifier.

mod common;

use proptest::prelude::*;

use tokumei_deid::Error;
use tokumei_deid::dataset::{Dataset, QiInput, SensitiveInput};
use tokumei_deid::exhaustive::exhaustive;
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::metric::Metric;
use tokumei_deid::model::{LDiversity, LVariant, PrivacyModel, TCloseness, TDistance};
use tokumei_deid::search::search;
use tokumei_deid::table::Table;

/// A random valid hierarchy: `groupings[l][g]` maps group g at level l to a group at level l+1.
fn hierarchy_strategy() -> impl Strategy<Value = (usize, Vec<Vec<usize>>)> {
    (2usize..6, 0usize..3).prop_flat_map(|(m, inner)| {
        let mut sizes = vec![m];
        let mut strategies = Vec::new();
        for _ in 0..inner {
            let from = *sizes.last().unwrap_or(&m);
            let to = (from / 2).max(1);
            sizes.push(to);
            strategies.push(proptest::collection::vec(0..to, from));
        }
        (Just(m), strategies)
    })
}

fn build_hierarchy(name: &str, m: usize, groupings: &[Vec<usize>]) -> Hierarchy {
    let mut text = String::new();
    for leaf in 0..m {
        text.push_str(&format!("{name}{leaf}"));
        let mut g = leaf;
        for (l, map) in groupings.iter().enumerate() {
            g = map[g];
            text.push_str(&format!(";{name}L{}g{g}", l + 1));
        }
        text.push_str(";*\n");
    }
    Hierarchy::parse_arx_csv(name, &text, b';').expect("generated hierarchy is valid")
}

#[derive(Debug, Clone)]
struct Case {
    hierarchies: Vec<(usize, Vec<Vec<usize>>)>,
    rows: Vec<(Vec<usize>, usize, usize)>,
    k: u32,
    suppression: f64,
    metric: Metric,
    l: Option<LDiversity>,
    t: Option<TCloseness>,
    average_risk: Option<f64>,
    subjects: bool,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    proptest::collection::vec(hierarchy_strategy(), 1..4).prop_flat_map(|hierarchies| {
        let row = (
            hierarchies.iter().map(|(m, _)| 0..*m).collect::<Vec<_>>(),
            0usize..3,
            0usize..12,
        );
        let metric = prop_oneof![
            Just(Metric::Loss),
            Just(Metric::Discernibility),
            Just(Metric::Precision),
            Just(Metric::Aecs),
            Just(Metric::Entropy)
        ];
        let l = prop_oneof![
            3 => Just(None),
            1 => (1u32..3).prop_map(|l| Some(LDiversity { l, variant: LVariant::Distinct })),
            1 => (1u32..3).prop_map(|l| Some(LDiversity { l, variant: LVariant::Entropy })),
            1 => (1u32..3, 1.0f64..4.0).prop_map(|(l, c)| Some(LDiversity { l, variant: LVariant::Recursive { c } })),
        ];
        let t = prop_oneof![
            3 => Just(None),
            1 => (0.1f64..0.6).prop_map(|t| Some(TCloseness { t, distance: TDistance::Equal })),
            1 => (0.1f64..0.6).prop_map(|t| Some(TCloseness { t, distance: TDistance::Ordered })),
            1 => (0.1f64..0.6).prop_map(|t| Some(TCloseness { t, distance: TDistance::Hierarchical })),
        ];
        let risk = prop_oneof![3 => Just(None), 1 => (0.1f64..0.8).prop_map(Some)];
        (
            Just(hierarchies),
            proptest::collection::vec(row, 1..40),
            1u32..5,
            prop_oneof![Just(0.0), Just(0.1), Just(0.3)],
            metric,
            l,
            t,
            risk,
            any::<bool>(),
        )
            .prop_map(
                |(hierarchies, rows, k, suppression, metric, l, t, average_risk, subjects)| Case {
                    hierarchies,
                    rows,
                    k,
                    suppression,
                    metric,
                    l,
                    t,
                    average_risk,
                    subjects,
                },
            )
    })
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let d = case.hierarchies.len();
    let mut header: Vec<String> = (0..d).map(|j| format!("q{j}")).collect();
    header.push("s".into());
    header.push("id".into());
    let rows: Vec<Vec<String>> = case
        .rows
        .iter()
        .enumerate()
        .map(|(i, (vals, s, subj))| {
            let mut r: Vec<String> = vals.iter().enumerate().map(|(j, v)| format!("q{j}{v}")).collect();
            r.push(format!("s{s}"));
            r.push(if case.subjects {
                format!("p{subj}")
            } else {
                format!("r{i}")
            });
            r
        })
        .collect();
    let table = Table::from_rows(&header, &rows).expect("table");
    let qis: Vec<QiInput> = case
        .hierarchies
        .iter()
        .enumerate()
        .map(|(j, (m, g))| QiInput {
            name: format!("q{j}"),
            hierarchy: build_hierarchy(&format!("q{j}"), *m, g),
        })
        .collect();
    let sens_h = Hierarchy::parse_arx_csv("s", "s0;A;*\ns1;A;*\ns2;B;*\n", b';').expect("s");
    let uses_sensitive = case.l.is_some() || case.t.is_some();
    let sensitive = if uses_sensitive {
        vec![SensitiveInput {
            name: "s".into(),
            hierarchy: Some(sens_h.clone()),
        }]
    } else {
        vec![]
    };
    let subject = case.subjects.then_some("id");
    let ds = Dataset::encode(&table, qis, sensitive, subject).expect("encode");
    let model = PrivacyModel {
        k: case.k,
        l_diversity: case.l,
        t_closeness: case.t,
        average_risk: case.average_risk,
        suppression_limit: case.suppression,
    };
    let reference = exhaustive(&ds, &[(model.clone(), case.metric)]).expect("exhaustive");
    match (search(&ds, &model, case.metric), &reference[0].best) {
        (Ok(found), Some((levels, value))) => {
            prop_assert_eq!(&found.levels, levels);
            prop_assert_eq!(found.metric, *value);
            let sens = if uses_sensitive {
                vec![("s".to_string(), Some(sens_h))]
            } else {
                vec![]
            };
            common::apply_and_verify(&table, &ds, &model, case.metric, &found.levels, sens, subject);
        }
        (Err(Error::NoSolution(ns)), None) => {
            prop_assert!(ns.smallest_working_suppression.is_none_or(|s| s > case.suppression));
        }
        (got, want) => prop_assert!(false, "search {:?} vs exhaustive {:?}", got, want),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn search_equals_exhaustive_and_verifies(case in case_strategy()) {
        run_case(&case)?;
    }
}
