//! Hospital-side tools: `tokumei synth` writes a FHIR R4 Bundle, `tokumei push --fhir` sends it over mTLS.

mod common;

use common::*;
use std::process::Command;

fn tokumei(home: &Home, args: &[&str]) -> std::process::Output {
    Command::new(tokumei_bin())
        .args(args)
        .env("TOKUMEI_HOME", home.path())
        .bounded_output()
        .unwrap()
}

#[test]
fn synth_bundle_pushes_through_the_gateway_idempotently() {
    let home = Home::new();
    let gw = home.start();
    let bundle = home.path().join("bundle.json");
    let out = tokumei(
        &home,
        &[
            "synth",
            "--patients",
            "120",
            "--seed",
            "5",
            "--hospital",
            HOSPITAL_A,
            "--output",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    assert_eq!(json["resourceType"], "Bundle");

    let endpoint = gw.endpoint();
    let push = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "push",
            "--gateway",
            &endpoint,
            "--hospital",
            HOSPITAL_A,
            "--fhir",
            bundle.to_str().unwrap(),
            "--batch-size",
            "50",
        ];
        args.extend_from_slice(extra);
        let out = tokumei(&home, &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = push(&[]);
    assert_eq!(first["records"], 120);
    assert_eq!(first["accepted"], 120, "{first}");
    assert_eq!(first["batches"], 3);
    let again = push(&[]);
    assert_eq!(again["replayed_batches"], 3);
    let records: usize = spool_batches(&home.spool()).iter().map(|(_, _, r)| r.len()).sum();
    assert_eq!(records, 120);

    // Same data from the CLI's synthetic path.
    let out = tokumei(
        &home,
        &[
            "--json",
            "push",
            "--gateway",
            &gw.endpoint(),
            "--hospital",
            HOSPITAL_B,
            "--synth",
            "30",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accepted"], 30);
}

#[test]
fn hand_written_jp_core_bundle_is_accepted() {
    let home = Home::new();
    let gw = home.start();
    let bundle = home.path().join("jp-core.json");
    std::fs::write(&bundle, include_str!("data/jp_core_bundle.json")).unwrap();
    let out = tokumei(
        &home,
        &[
            "--json",
            "push",
            "--gateway",
            &gw.endpoint(),
            "--hospital",
            HOSPITAL_A,
            "--fhir",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accepted"], 1, "{v}");
    let spooled = spool_batches(&home.spool());
    let r = &spooled[0].2[0];
    assert_eq!(r.conditions[0].icd10, "E11.9");
    assert_eq!(r.medications[0].yj_code, "3962002F1020");
    assert_eq!(r.observations[0].jlac10, "3D046000001920402");
    assert_eq!(r.postal_prefix, "160");

    // A file that is not a Bundle is refused before anything is sent.
    std::fs::write(&bundle, r#"{"resourceType":"Patient"}"#).unwrap();
    let out = tokumei(
        &home,
        &[
            "push",
            "--gateway",
            &gw.endpoint(),
            "--hospital",
            HOSPITAL_A,
            "--fhir",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("bundle"));
}
