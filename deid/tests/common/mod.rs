#![allow(dead_code)]
//! Shared helpers for integration tests.

use std::path::PathBuf;

use tokumei_deid::dataset::{Dataset, QiInput, SensitiveInput};
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::table::Table;

pub fn adult_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/adult"))
}

pub const ADULT_QIS: [&str; 8] = [
    "sex",
    "age",
    "race",
    "marital-status",
    "education",
    "native-country",
    "workclass",
    "occupation",
];

pub fn adult_table() -> Table {
    Table::read_csv(&adult_dir().join("adult.csv"), b';').expect("adult.csv")
}

pub fn adult_hierarchy(name: &str) -> Hierarchy {
    Hierarchy::read_arx_csv(&adult_dir().join(format!("adult_hierarchy_{name}.csv")), b';').expect("hierarchy")
}

pub fn adult_qis() -> Vec<QiInput> {
    ADULT_QIS
        .iter()
        .map(|n| QiInput {
            name: n.to_string(),
            hierarchy: adult_hierarchy(n),
        })
        .collect()
}

pub fn adult_dataset(sensitive: bool) -> (Table, Dataset) {
    let table = adult_table();
    let sens = if sensitive {
        vec![SensitiveInput {
            name: "salary-class".into(),
            hierarchy: None,
        }]
    } else {
        vec![]
    };
    let ds = Dataset::encode(&table, adult_qis(), sens, None).expect("encode");
    (table, ds)
}

use tokumei_deid::metric::Metric;
use tokumei_deid::model::PrivacyModel;
use tokumei_deid::transform::{apply, write_csv};
use tokumei_deid::verify::{VerifyConfig, VerifyReport, verify_table};

/// Applies `levels`, writes the output CSV to memory, reads it back and runs the independent
/// verifier with the same model.
pub fn apply_and_verify(
    table: &Table,
    ds: &Dataset,
    model: &PrivacyModel,
    metric: Metric,
    levels: &[u32],
    sensitive: Vec<(String, Option<Hierarchy>)>,
    subject: Option<&str>,
) -> VerifyReport {
    let a = apply(ds, model, metric, levels).expect("apply");
    assert!(a.feasible, "applied transformation must be feasible");
    let mut buf = Vec::new();
    write_csv(table, ds, &a, &mut buf, b',').expect("write");
    let out = Table::from_csv_reader(buf.as_slice(), b',').expect("read back");
    assert_eq!(out.rows(), table.rows());
    assert_eq!(out.names(), table.names());
    let cfg = VerifyConfig {
        qis: ds.qis.iter().map(|q| q.name.clone()).collect(),
        k: model.k,
        l_diversity: model.l_diversity,
        t_closeness: model.t_closeness,
        sensitive,
        subject: subject.map(str::to_string),
        suppression_limit: Some(model.suppression_limit),
        average_risk: model.average_risk,
    };
    let report = verify_table(&out, &cfg).expect("verify");
    assert!(report.ok, "verifier found violations: {:?}", report.violations);
    // Rows generalised to `*` in every QI are indistinguishable from suppressed ones.
    assert!(report.suppressed >= a.suppressed);
    report
}
