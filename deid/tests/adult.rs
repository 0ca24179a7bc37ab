//! Adult (30,162 records, 8 QIs, 6,480 nodes): the optimised search must return exactly the
//! exhaustive optimum, and every output must pass the independent verifier.

mod common;

use tokumei_deid::Error;
use tokumei_deid::exhaustive::exhaustive;
use tokumei_deid::metric::Metric;
use tokumei_deid::model::{LDiversity, LVariant, PrivacyModel, TCloseness, TDistance};
use tokumei_deid::search::search;

fn check_all(sensitive: bool, configs: Vec<(PrivacyModel, Metric)>) {
    let (table, ds) = common::adult_dataset(sensitive);
    let reference = exhaustive(&ds, &configs).expect("exhaustive");
    for ((model, metric), ex) in configs.iter().zip(&reference) {
        let label = format!(
            "{} / suppression {} / {}",
            model.describe(),
            model.suppression_limit,
            metric.name()
        );
        match (search(&ds, model, *metric), &ex.best) {
            (Ok(found), Some((levels, value))) => {
                assert_eq!(&found.levels, levels, "{label}: search and exhaustive disagree");
                assert_eq!(found.metric, *value, "{label}");
                assert!(found.nodes_checked <= found.lattice_size);
                let sens = if sensitive {
                    vec![("salary-class".to_string(), None)]
                } else {
                    vec![]
                };
                common::apply_and_verify(&table, &ds, model, *metric, &found.levels, sens, None);
            }
            (Err(Error::NoSolution(_)), None) => {}
            (got, want) => panic!("{label}: search {got:?} vs exhaustive {want:?}"),
        }
    }
}

#[test]
fn adult_k_suppression_metric_grid_matches_exhaustive() {
    let mut configs = Vec::new();
    for k in [2, 5, 10, 50, 100] {
        for suppression_limit in [0.0, 0.05] {
            for metric in [Metric::Loss, Metric::Discernibility, Metric::Precision] {
                configs.push((
                    PrivacyModel {
                        k,
                        suppression_limit,
                        ..Default::default()
                    },
                    metric,
                ));
            }
        }
    }
    assert_eq!(configs.len(), 30);
    check_all(false, configs);
}

#[test]
fn adult_l_diversity_and_t_closeness_match_exhaustive() {
    let mut configs = Vec::new();
    let ls = [
        LDiversity {
            l: 2,
            variant: LVariant::Distinct,
        },
        LDiversity {
            l: 2,
            variant: LVariant::Recursive { c: 3.0 },
        },
        LDiversity {
            l: 2,
            variant: LVariant::Entropy,
        },
    ];
    for suppression_limit in [0.0, 0.05] {
        for l in ls {
            configs.push((
                PrivacyModel {
                    k: 5,
                    l_diversity: Some(l),
                    suppression_limit,
                    ..Default::default()
                },
                Metric::Loss,
            ));
        }
        configs.push((
            PrivacyModel {
                k: 5,
                t_closeness: Some(TCloseness {
                    t: 0.2,
                    distance: TDistance::Equal,
                }),
                suppression_limit,
                ..Default::default()
            },
            Metric::Loss,
        ));
        configs.push((
            PrivacyModel {
                k: 5,
                average_risk: Some(0.05),
                suppression_limit,
                ..Default::default()
            },
            Metric::Loss,
        ));
        configs.push((
            PrivacyModel {
                k: 5,
                l_diversity: Some(ls[0]),
                suppression_limit,
                ..Default::default()
            },
            Metric::Entropy,
        ));
        configs.push((
            PrivacyModel {
                k: 5,
                suppression_limit,
                ..Default::default()
            },
            Metric::Aecs,
        ));
    }
    check_all(true, configs);
}
