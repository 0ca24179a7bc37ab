//! Hierarchy reading, validation errors (with line numbers), generators and TOML specs.

mod common;

use tokumei_deid::Error;
use tokumei_deid::dataset::{Dataset, QiInput};
use tokumei_deid::error::HierarchyProblem;
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::spec::JobSpec;
use tokumei_deid::table::Table;

fn problem(text: &str) -> (usize, HierarchyProblem) {
    match Hierarchy::parse_arx_csv("h.csv", text, b';') {
        Err(Error::Hierarchy { line, problem, .. }) => (line, problem),
        other => panic!("expected a hierarchy error, got {other:?}"),
    }
}

#[test]
fn adult_hierarchies_load_with_domain_sizes() {
    let age = common::adult_hierarchy("age");
    assert_eq!(age.domain_size(), 100);
    assert_eq!(age.height(), 5);
    assert_eq!(common::adult_hierarchy("native-country").domain_size(), 41);
}

#[test]
fn ragged_row_is_refused_with_its_line() {
    let (line, p) = problem("a;x;*\nb;x;*\nc;*\n");
    assert_eq!(line, 3);
    assert_eq!(p, HierarchyProblem::Ragged { expected: 3, found: 2 });
}

#[test]
fn two_parents_are_refused_with_the_line() {
    let (line, p) = problem("a;x;*\nb;y;*\nc;x;z\n");
    assert_eq!(line, 3);
    assert!(
        matches!(p, HierarchyProblem::TwoParents { ref value, level: 1, first_line: 1, .. } if value == "x"),
        "{p:?}"
    );
    let msg = Hierarchy::parse_arx_csv("h.csv", "a;x;*\nb;y;*\nc;x;z\n", b';')
        .unwrap_err()
        .to_string();
    assert!(msg.contains("h.csv") && msg.contains("line 3"), "{msg}");
}

#[test]
fn duplicate_leaf_is_refused() {
    let (line, p) = problem("a;*\nb;*\na;*\n");
    assert_eq!(line, 3);
    assert_eq!(
        p,
        HierarchyProblem::DuplicateValue {
            value: "a".into(),
            first_line: 1
        }
    );
}

#[test]
fn empty_hierarchy_is_refused() {
    assert_eq!(problem("").1, HierarchyProblem::Empty);
}

#[test]
fn data_value_missing_from_hierarchy_is_counted_never_named() {
    let table = Table::from_rows(&["x"], &[vec!["a"], vec!["b"], vec!["q"], vec!["q"]]).unwrap();
    let h = Hierarchy::parse_arx_csv("h.csv", "a;*\nb;*\n", b';').unwrap();
    let err = Dataset::encode(
        &table,
        vec![QiInput {
            name: "x".into(),
            hierarchy: h,
        }],
        vec![],
        None,
    )
    .unwrap_err();
    match err {
        // The column and a count; never the value or its line (a chosen hierarchy would read the column).
        Error::MissingValue { column, uncovered } => {
            assert_eq!((column.as_str(), uncovered), ("x", 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn custom_delimiter_and_round_trip() {
    let h = Hierarchy::parse_arx_csv("h", "1,0-4,*\n2,0-4,*\n", b',').unwrap();
    let again = Hierarchy::parse_arx_csv("h", &h.to_arx_csv(b';'), b';').unwrap();
    assert_eq!(again.domain_size(), 2);
    assert_eq!(again.label(1, 0), "0-4");
}

#[test]
fn interval_widths_that_do_not_nest_are_refused() {
    let spec =
        JobSpec::from_toml("[[qi]]\nname = \"age\"\ngenerator = { type = \"interval\", widths = [5, 7] }\n").unwrap();
    let table = Table::from_rows(&["age"], &[vec!["6"], vec!["8"]]).unwrap();
    // 5-9 would need to sit under both 0-6 and 7-13.
    assert!(matches!(
        spec.qi_inputs(&table),
        Err(Error::Hierarchy {
            problem: HierarchyProblem::TwoParents { .. },
            ..
        })
    ));
}

#[test]
fn generator_rejects_bad_values_with_line() {
    let spec = JobSpec::from_toml("[[qi]]\nname = \"d\"\ngenerator = { type = \"date\" }\n").unwrap();
    let table = Table::from_rows(&["d"], &[vec!["2020-01-05"], vec!["zz-marker-7731"]]).unwrap();
    match spec.qi_inputs(&table) {
        Err(Error::Hierarchy {
            line,
            problem: HierarchyProblem::Generator(msg),
            ..
        }) => {
            assert_eq!(line, 0, "no rank of the value either");
            // The rule, never the value.
            assert!(!msg.contains("zz-marker-7731"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn spec_with_every_generator() {
    let spec = JobSpec::from_toml(
        r#"
k = 2
suppression = 0.1
metric = "precision"
[[qi]]
name = "age"
generator = { type = "interval", widths = [5, 10, 20] }
[[qi]]
name = "date"
generator = { type = "date" }
[[qi]]
name = "city"
generator = { type = "municipality" }
[[qi]]
name = "zip"
generator = { type = "postal" }
[[qi]]
name = "icd"
generator = { type = "icd10" }
[[qi]]
name = "yj"
generator = { type = "yj" }
[[qi]]
name = "lab"
generator = { type = "jlac10" }
[[qi]]
name = "code"
generator = { type = "mask", step = 2 }
[[qi]]
name = "flag"
generator = { type = "flat" }
[[sensitive]]
name = "dx"
[l_diversity]
l = 2
variant = "recursive"
c = 2.5
[t_closeness]
t = 0.3
distance = "ordered"
"#,
    )
    .unwrap();
    let header = ["age", "date", "city", "zip", "icd", "yj", "lab", "code", "flag", "dx"];
    let rows = vec![
        vec![
            "34",
            "2021-03-04",
            "131016",
            "100-0001",
            "E11.9",
            "2171014F1020",
            "3D010000001926101",
            "ab12",
            "y",
            "a",
        ],
        vec![
            "71",
            "2019-12-31",
            "011002",
            "0600000",
            "I21",
            "1149019F1560",
            "3D045000002327101",
            "ab1",
            "n",
            "b",
        ],
    ];
    let table = Table::from_rows(&header, &rows).unwrap();
    let qis = spec.qi_inputs(&table).unwrap();
    let heights: Vec<usize> = qis.iter().map(|q| q.hierarchy.height()).collect();
    assert_eq!(heights, vec![5, 6, 4, 5, 5, 5, 3, 4, 2]);
    assert_eq!(spec.k, Some(2));
    assert_eq!(spec.metric().unwrap(), Some(tokumei_deid::metric::Metric::Precision));
    assert!(spec.l_diversity().unwrap().is_some());
    assert!(spec.t_closeness().unwrap().is_some());
    let ds = Dataset::encode(&table, qis, spec.sensitive_inputs(&table).unwrap(), None).unwrap();
    assert_eq!(ds.qis.len(), 9);
}

#[test]
fn unknown_spec_keys_are_refused() {
    assert!(matches!(JobSpec::from_toml("kk = 3"), Err(Error::Spec(_))));
}
