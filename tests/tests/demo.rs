//! The README's first command: `tokumei demo` tells the story and its report says what happened.

mod common;

#[test]
fn demo_tells_chapter_one_and_leaks_nothing() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::tokumei_bin())
        .args(["--json", "demo", "--patients", "300"])
        .env("TOKUMEI_HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hospitals = r["hospitals"].as_array().unwrap();
    assert_eq!(hospitals.len(), 3);
    for h in hospitals {
        assert_eq!(h["sent"], 304);
        assert_eq!(h["accepted"], 300);
        for reason in [
            "MY_NUMBER_PRESENT",
            "INVALID_ICD10",
            "DATE_OUT_OF_RANGE",
            "MISSING_IDENTITY",
        ] {
            assert_eq!(h["rejected"][reason], 1, "{h}");
        }
    }
    assert!(r["replayed_batch"].as_str().unwrap().contains("replayed=true"));
    assert!(r["reused_batch_id"].as_str().unwrap().contains("BATCH_ID_REUSED"));
    assert!(r["foreign_ca"].as_str().unwrap().contains("refused"));
    assert!(r["record_after_opt_out"].as_str().unwrap().contains("OPTED_OUT"));
    assert!(r["erase"].as_str().unwrap().contains("RECORDED"));
    assert_eq!(r["spool_records"], 900);
    assert_eq!(r["identifiers_found_in_spool"], 0);
    assert!(r["identifiers_checked"].as_u64().unwrap() > 500);
}
