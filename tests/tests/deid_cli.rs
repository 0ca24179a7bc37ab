//! `tokumei anonymize` and `tokumei verify` as scripts call them (the flag names are fixed by the issue).

mod common;

use common::BoundedOutput;

use common::{ADULT_QIS, adult};

use std::process::Command;

fn qi_args() -> Vec<String> {
    ADULT_QIS
        .iter()
        .flat_map(|q| {
            [
                "--qi".to_string(),
                format!("{q}={}", adult(&format!("adult_hierarchy_{q}.csv"))),
            ]
        })
        .collect()
}

fn tokumei(args: &[String]) -> std::process::Output {
    Command::new(common::tokumei_bin()).args(args).bounded_output().unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn anonymize_then_verify_adult() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let report = dir.path().join("report.json");
    let mut args = s(&["anonymize", "--input", &adult("adult.csv"), "--delimiter", ";"]);
    args.extend(qi_args());
    args.extend(s(&[
        "--insensitive",
        "salary-class",
        "--k",
        "5",
        "--suppression",
        "0.05",
        "--metric",
        "loss",
    ]));
    args.extend(s(&[
        "--output",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]));
    let o = tokumei(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for key in [
        "transformation",
        "metric",
        "suppressed",
        "classes",
        "min_class_size",
        "nodes_checked",
        "lattice_size",
        "elapsed_ms",
        "risk",
    ] {
        assert!(r.get(key).is_some(), "report lacks {key}: {r}");
    }
    assert_eq!(r["metric"]["name"], "loss");
    assert!(r["min_class_size"].as_u64().unwrap() >= 5);
    assert!(r["suppressed"].as_u64().unwrap() as f64 <= 0.05 * 30162.0);
    assert_eq!(r["transformation"].as_object().unwrap().len(), 8);

    // The independent verifier accepts the output for k=5 and rejects it for a stricter k.
    let mut verify = s(&["verify", "--input", out.to_str().unwrap()]);
    verify.extend(qi_args());
    let mut ok = verify.clone();
    ok.extend(s(&["--k", "5", "--suppression", "0.05"]));
    let o = tokumei(&ok);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let min = r["min_class_size"].as_u64().unwrap();
    let mut strict = verify.clone();
    strict.extend(s(&["--k", &(min + 1).to_string()]));
    assert!(!tokumei(&strict).status.success(), "verify accepted k={}", min + 1);
}

#[test]
fn impossible_model_exits_non_zero_and_names_the_constraint() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = s(&["anonymize", "--input", &adult("adult.csv"), "--delimiter", ";"]);
    args.extend(s(&["--qi", &format!("age={}", adult("adult_hierarchy_age.csv"))]));
    args.extend(s(&["--sensitive", "salary-class", "--k", "5", "--l", "3"]));
    args.extend(s(&[
        "--output",
        dir.path().join("o.csv").to_str().unwrap(),
        "--report",
        dir.path().join("r.json").to_str().unwrap(),
    ]));
    let o = tokumei(&args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("l-diversity"), "{err}");
    assert!(err.contains("suppression"), "{err}");
}
