//! `tokumei release build`, `release verify` and `trace` end to end on synthetic hospital data pushed through the
//! gateway into the core: every approval condition refuses a build (and the refusal is audited), the built copies
//! are k-anonymous by an independent recount, exclude the opted-out patient, carry pseudonyms that join with no
//! other release, differ between recipients only by marks within the declared tolerance, verify against the
//! platform key — and a leaked subset of one copy is traced to its recipient, and to no one else.

mod common;

use common::BoundedOutput;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use common::core_orders::{BuildZones, CoreWithOrders};
use common::people::{self, FileApproval, Person, approved_file_application, run_json, session_env};
use common::release_server::ReleaseServer;
use common::{HOSPITAL_A, Home, files_under, tokumei_bin};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokumei_ingest::synth::Synth;
use tokumei_proto::ingest::v1::{PatientRequest, RecordBatch};

const PATIENTS: u64 = 5000;
const PLANTED_VALUE: f64 = 987.65;
const TABLES: &[(&str, &[&str])] = &[
    ("patients", &["linkage_key", "birth_date", "sex", "prefecture"]),
    ("observations", &["linkage_key", "jlac10", "date", "value", "unit"]),
];

/// The core order a refusal says is waiting ("... core order N ...").
fn order_named(err: &str) -> u64 {
    err.split("core order ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the order to resume")
}

/// `tokumei ARGS` as the operator whose environment `env` is, whatever the outcome.
fn refused_or_done(home: &Home, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(common::tokumei_bin());
    command.env("TOKUMEI_HOME", home.path());
    for (k, v) in env {
        command.env(k, v);
    }
    command.args(args).bounded_output().expect("run tokumei")
}

/// Runs `tokumei --json ARGS` expecting failure; returns stderr.
fn refused(home: &Home, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(tokumei_bin())
        .env("TOKUMEI_HOME", home.path())
        .env_remove("TOKUMEI_SESSION")
        .envs(env.iter().copied())
        .arg("--json")
        .args(args)
        .bounded_output()
        .expect("run tokumei");
    assert!(
        !out.status.success(),
        "tokumei {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn push_cohort(home: &Home) {
    let gw = home.start();
    let mut client = gw.client(home, HOSPITAL_A).await;
    let synth = Synth::new(7);
    let mut records = synth.records(HOSPITAL_A, 0, PATIENTS);
    // The patient who opts out carries a lab value no one else has.
    let mut planted = synth.records(HOSPITAL_A, 90_000, 1).remove(0);
    let obs = planted
        .observations
        .first_mut()
        .expect("synthetic patients have lab results");
    obs.value = PLANTED_VALUE;
    records.push(planted.clone());
    let batches: Vec<RecordBatch> = records
        .chunks(1000)
        .enumerate()
        .map(|(i, c)| RecordBatch {
            batch_id: format!("b{i}"),
            records: c.to_vec(),
        })
        .collect();
    tokumei_ingest::client::push(&mut client, batches).await.expect("push");
    client
        .opt_out(PatientRequest {
            request_id: "oo-1".into(),
            insurance: planted.insurance.clone(),
            ..Default::default()
        })
        .await
        .expect("opt out");
    common::drain_core(home);
}

/// A recipient's copy, decrypted from the release zone as the download service would serve it.
async fn copy_of(home: &Home, release: &str, recipient: &str, dir: &Path) -> PathBuf {
    let cfg = tokumei_ingest::config::Config::load(Some(&home.path().join("tokumei.toml"))).expect("config");
    let keys =
        tokumei_ingest::server::open_key_service(&cfg, home.path(), tokumei_ingest::keyservice::KeyZone::Release)
            .await
            .expect("keys");
    let zone = tokumei_release::zone::ReleaseZone::new(home.path(), keys);
    let record = zone.record(release).expect("record");
    let out = dir.join(format!("{release}-{recipient}"));
    std::fs::create_dir_all(&out).unwrap();
    for f in &record.copies[recipient] {
        let bytes = zone
            .open_copy_file(&record, recipient, &f.name)
            .await
            .unwrap()
            .read_all()
            .unwrap();
        std::fs::write(out.join(&f.name), bytes).unwrap();
    }
    out
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(header).unwrap();
    for r in rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

/// Independent recount: distinct patients per (birth_date, sex, prefecture) class.
fn min_class(patients: &Path) -> usize {
    let (h, rows) = read_csv(patients);
    let (p, b, s, f) = (
        column(&h, "patient_pseudonym"),
        column(&h, "birth_date"),
        column(&h, "sex"),
        column(&h, "prefecture"),
    );
    let mut classes: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        classes
            .entry((r[b].clone(), r[s].clone(), r[f].clone()))
            .or_default()
            .insert(r[p].clone());
    }
    classes.values().map(BTreeSet::len).min().unwrap_or(0)
}

/// The linkage adversary recounted from a copy's CSV files, sharing nothing with the platform: a patient's
/// released demographic row plus up to `m` (1 or 2) of their observation items (every column but the
/// pseudonym and the measured value). Returns (patients, patients left with fewer than `k` candidates, patients
/// singled out).
fn attack_recount(copy: &Path, k: usize, m: usize) -> (u64, u64, u64) {
    use std::collections::HashMap;
    let (h, rows) = read_csv(&copy.join("patients.csv"));
    let p = column(&h, "patient_pseudonym");
    let demographics: HashMap<String, Vec<String>> = rows
        .into_iter()
        .map(|r| {
            let key = r[p].clone();
            let rest = r
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i != p)
                .map(|(_, v)| v)
                .collect();
            (key, rest)
        })
        .collect();
    let (h, rows) = read_csv(&copy.join("observations.csv"));
    let (p, value) = (column(&h, "patient_pseudonym"), column(&h, "value"));
    let mut items: HashMap<String, BTreeSet<Vec<String>>> = HashMap::new();
    for r in rows {
        let item = r
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != p && *i != value)
            .map(|(_, v)| v.clone())
            .collect();
        items.entry(r[p].clone()).or_default().insert(item);
    }
    // Every combination of at most m of a patient's distinct items.
    let combos = |set: &BTreeSet<Vec<String>>| -> Vec<Vec<Vec<String>>> {
        let list: Vec<&Vec<String>> = set.iter().collect();
        let mut out: Vec<Vec<Vec<String>>> = list.iter().map(|i| vec![(*i).clone()]).collect();
        if m >= 2 {
            for a in 0..list.len() {
                for b in a + 1..list.len() {
                    out.push(vec![list[a].clone(), list[b].clone()]);
                }
            }
        }
        out
    };
    let mut support: HashMap<(Vec<String>, Vec<Vec<String>>), usize> = HashMap::new();
    for (patient, set) in &items {
        for c in combos(set) {
            *support.entry((demographics[patient].clone(), c)).or_default() += 1;
        }
    }
    let (mut below_k, mut unique) = (0, 0);
    for (patient, demo) in &demographics {
        let class = demographics.values().filter(|d| *d == demo).count();
        let smallest = items.get(patient).map_or(class, |set| {
            combos(set)
                .into_iter()
                .map(|c| support[&(demo.clone(), c)])
                .min()
                .unwrap_or(class)
                .min(class)
        });
        below_k += u64::from(smallest < k);
        unique += u64::from(smallest == 1);
    }
    (demographics.len() as u64, below_k, unique)
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Borrowed pairs of an owned environment.
fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Entries of the ledger with `action` and `outcome`.
async fn audit_count(home: &Home, action: &str, outcome: &str) -> usize {
    people::ledger(home.path())
        .await
        .iter()
        .filter(|e| e.action == action && e.outcome == outcome)
        .count()
}

/// `tokumei trace --server S --ca CA --release R --file F`: a client of the release service, holding nothing but
/// the CA and a session.
fn trace_args(home: &Home, server: &ReleaseServer, release: &str, file: &Path) -> Vec<String> {
    [
        "trace",
        "--server",
        &format!("https://{}", server.grpc),
        "--ca",
        home.pki.ca_cert().to_str().unwrap(),
        "--release",
        release,
        "--file",
        file.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `trace` from an empty desk (a home with no key, database or store): whatever it learns, the release
/// service computed.
fn trace(
    desk: &Path,
    home: &Home,
    server: &ReleaseServer,
    who: &Person,
    release: &str,
    file: &Path,
) -> serde_json::Value {
    let args = trace_args(home, server, release, file);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = run_json(desk, &args, &session_env(&[], who), None);
    assert!(
        files_under(desk).is_empty(),
        "the trace client wrote {:?}",
        files_under(desk)
    );
    v
}

/// `tokumei trace` expected to fail, from an empty desk: its stderr.
fn trace_refused(desk: &Path, home: &Home, server: &ReleaseServer, who: &Person, release: &str, file: &Path) -> String {
    let args = trace_args(home, server, release, file);
    let out = Command::new(tokumei_bin())
        .env("TOKUMEI_HOME", desk)
        .env("TOKUMEI_SESSION", who.session.as_str())
        .arg("--json")
        .args(&args)
        .bounded_output()
        .expect("run tokumei");
    assert!(!out.status.success(), "trace {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_build_verify_and_trace_end_to_end() {
    let home = Home::new();
    push_cohort(&home).await;
    let db: &[(&str, &str)] = &[];
    let committee = people::committee(home.path(), db);
    let op = &committee.op;
    let rika = people::invite(home.path(), db, "rika", "univ-a", "researcher");
    let yui = people::invite(home.path(), db, "yui", "univ-a", "researcher");
    let today = Utc::now().date_naive();
    let approve = |expires_on, tables| {
        approved_file_application(
            home.path(),
            db,
            &committee,
            &rika,
            &FileApproval {
                recipients: &["rika", "yui"],
                expires_on,
                max_downloads: 10,
                tables,
                amends: None,
            },
        )
    };
    let app = approve(today + chrono::Duration::days(90), TABLES);
    let op_env = session_env(db, op);
    // Before the release zone ever published its intake key, no build is queued (the core would have nobody to
    // seal the package to): refused with its reason, not as a server fault.
    {
        let core = CoreWithOrders::start(home.path(), &[]);
        let mut env = core.client_env(home.path());
        env.push(("TOKUMEI_SESSION".into(), op.session.clone()));
        let args = [
            "release",
            "build",
            "--application",
            &app,
            "--release-server",
            "https://127.0.0.1:1",
        ];
        let err = refused(&home, &args, &as_refs(&env));
        assert!(err.contains("RELEASE_ZONE_NOT_REGISTERED"), "{err}");
    }
    // A build goes through the zones' services: the operator's client holds a session and the CA, nothing else.
    let zones = BuildZones::start(&home, &home.path().join("release-build.log"));
    let desk = tempfile::tempdir().unwrap();
    let build_in =
        |zones: &BuildZones, who: &Person, app: &str, extra: &[&str]| -> (Vec<String>, Vec<(String, String)>) {
            let mut args = vec!["--application", app];
            args.extend_from_slice(extra);
            (zones.build_args(&home, &args), zones.env(home.path(), &who.session))
        };
    let build_ok = |zones: &BuildZones, app: &str, extra: &[&str]| -> serde_json::Value {
        let (args, env) = build_in(zones, op, app, extra);
        let out = run_json(
            desk.path(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &as_refs(&env),
            None,
        );
        assert!(files_under(desk.path()).is_empty(), "the build client wrote a file");
        out
    };
    let build_refused = |zones: &BuildZones, who: &Person, app: &str, extra: &[&str]| -> String {
        let (args, env) = build_in(zones, who, app, extra);
        refused(
            &home,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &as_refs(&env),
        )
    };

    // Refusals, each with its condition's code, before any data is read.
    let err = build_refused(&zones, op, &app, &["--table", "observations=jlac10,value,text_value"]);
    assert!(err.contains("COLUMN_NOT_APPROVED"), "{err}");
    let err = build_refused(&zones, op, &app, &["--recipient", "kai"]);
    assert!(err.contains("RECIPIENT_NOT_APPROVED"), "{err}");
    let err = build_refused(&zones, &rika, &app, &[]);
    assert!(err.contains("ROLE_NOT_PERMITTED"), "{err}");
    let expired = approve(today - chrono::Duration::days(1), TABLES);
    let err = build_refused(&zones, op, &expired, &[]);
    assert!(err.contains("APPROVAL_EXPIRED"), "{err}");
    let revoked = approve(today + chrono::Duration::days(90), TABLES);
    people::run_client(
        home.path(),
        db,
        &committee.chair,
        &["committee", "revoke", &revoked, "--reason", "test"],
    );
    let err = build_refused(&zones, op, &revoked, &[]);
    assert!(err.contains("APPROVAL_REVOKED"), "{err}");
    // A column the platform never releases is refused by the core, before it reads any data (the reason code
    // comes back through the order; the column's name stays in the core's log).
    let provenance = approve(
        today + chrono::Duration::days(90),
        &[("observations", &["linkage_key", "value", "source_hospital"])],
    );
    let err = build_refused(&zones, op, &provenance, &[]);
    assert!(err.contains("NOT_RELEASABLE"), "{err}");

    // The release. An insider who can write the release zone's directory swaps its published intake key for one of
    // their own: the core does not read that file — it seals to the key the policy service signed into the order
    // (the one the zone published over its certificate) — so the build still reaches the zone, and only the zone.
    let published = home.path().join("release/intake.pub");
    let genuine = std::fs::read_to_string(&published).expect("published intake key");
    let insider = tokumei_keys::sealed_result::RecipientKey::generate();
    std::fs::write(&published, insider.public_hex()).expect("swapped");
    let built = build_ok(&zones, &app, &[]);
    std::fs::write(&published, genuine).expect("restored");
    assert!(
        files_under(&home.path().join("outbox")).is_empty(),
        "the delivered package left the outbox"
    );
    // The order is delivered once: finishing it again is refused, and nothing is built twice.
    let order = built["order"].as_u64().expect("the build's core order");
    let (args, env) = (
        zones.build_args(&home, &["--order", &order.to_string()]),
        zones.env(home.path(), &op.session),
    );
    let err = refused(
        &home,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &as_refs(&env),
    );
    assert!(err.contains("BUILD_NOT_DELIVERABLE"), "{err}");

    // What crosses the outbox is sealed to the release zone and pinned by the policy service. The core's half of
    // another approval's build is done while the release zone is out of reach: the package waits in the outbox.
    let waiting = approve(today + chrono::Duration::days(90), TABLES);
    let mut args = zones.build_args(&home, &["--application", &waiting]);
    let at = args.iter().position(|a| a == "--release-server").unwrap();
    args[at + 1] = "https://127.0.0.1:1".into();
    let err = refused(
        &home,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &as_refs(&env),
    );
    assert!(err.contains("RELEASE_ZONE_UNAVAILABLE"), "{err}");
    let waiting_order = order_named(&err);
    let package = home.path().join("outbox").join(format!("build-{waiting_order}.sealed"));
    let sealed = std::fs::read(&package).expect("the package waits in the outbox");
    // Nothing in it reads in clear (HPKE to the zone's intake key): not even a table's or a column's name.
    for clear in ["observations", "patient_pseudonym", "jlac10", &waiting] {
        assert!(!common::contains(&sealed, clear), "the package shows {clear:?}");
    }
    let resume = zones.build_args(&home, &["--order", &waiting_order.to_string()]);
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    // A byte changed at rest: refused against the SHA-256 the core reported, nothing built.
    let mut changed = sealed.clone();
    let at = changed.len() / 2;
    changed[at] ^= 1;
    std::fs::write(&package, &changed).unwrap();
    let err = refused(&home, &resume, &as_refs(&env));
    assert!(err.contains("INTEGRITY"), "{err}");
    // Another package put in its place (an insider's own, sealed to the zone's key for that order): not the one
    // the core reported.
    let forged = tokumei_keys::sealed_result::seal(
        std::fs::read_to_string(home.path().join("release/intake.pub"))
            .unwrap()
            .trim(),
        b"{}",
        format!("tokumei/build-package/v1 order {waiting_order}").as_bytes(),
    )
    .unwrap();
    std::fs::write(&package, &forged).unwrap();
    let err = refused(&home, &resume, &as_refs(&env));
    assert!(err.contains("INTEGRITY"), "{err}");
    // The genuine package, after an operator's erasure reached the core's research view: the package was read
    // before it and may carry the erased patient, so it is not delivered (and the order closes: build again).
    std::fs::write(&package, &sealed).unwrap();
    let erased = refused_or_done(
        &home,
        &[
            "--json",
            "store",
            "erase",
            "--linkage-key",
            &"e5".repeat(32),
            "--request-id",
            "between-halves",
        ],
        &as_refs(&env),
    );
    assert!(erased.status.success(), "{}", String::from_utf8_lossy(&erased.stderr));
    let err = refused(&home, &resume, &as_refs(&env));
    assert!(err.contains("DATA_CHANGED_SINCE_BUILD"), "{err}");
    let err = refused(&home, &resume, &as_refs(&env));
    assert!(err.contains("BUILD_NOT_DELIVERABLE"), "the order closed: {err}");
    assert!(
        !home
            .path()
            .join("release/releases")
            .join(format!("R-{waiting}-1"))
            .exists(),
        "nothing read before the erasure reached the release zone"
    );
    // A new build after the erasure reads the view as it now stands, and waits again (the zone still away).
    let err = refused(
        &home,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &as_refs(&env),
    );
    assert!(err.contains("RELEASE_ZONE_UNAVAILABLE"), "{err}");
    let waiting_order = order_named(&err);
    let resume = zones.build_args(&home, &["--order", &waiting_order.to_string()]);
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    // The genuine package, after the chair revoked the approval: the release zone's half is refused too.
    people::run_client(
        home.path(),
        db,
        &committee.chair,
        &["committee", "revoke", &waiting, "--reason", "test"],
    );
    let err = refused(&home, &resume, &as_refs(&env));
    assert!(err.contains("APPROVAL_REVOKED"), "{err}");
    assert!(
        !home
            .path()
            .join("release/releases")
            .join(format!("R-{waiting}-1"))
            .exists(),
        "nothing of the revoked approval reached the release zone"
    );
    drop(zones);
    let release = built["release"].as_str().unwrap().to_owned();
    assert_eq!(built["recipients"], serde_json::json!(["rika", "yui"]), "{built}");
    assert!(built["suppressed_patients"].as_u64().unwrap() as f64 <= 0.05 * built["patients"].as_u64().unwrap() as f64);
    let dir = tempfile::tempdir().unwrap();
    let rika_copy = copy_of(&home, &release, "rika", dir.path()).await;
    // yui downloads her copy through the release service: two-factor session, one-time tokens over HTTPS.
    let yui_copy = dir.path().join("yui-download");
    let server = ReleaseServer::start(&home, &home.path().join("release-serve.log"), &[]);
    let downloaded = run_json(
        home.path(),
        &[
            "release",
            "download",
            "--server",
            &format!("https://{}", server.grpc),
            "--ca",
            home.pki.ca_cert().to_str().unwrap(),
            "--release",
            &release,
            "--out",
            yui_copy.to_str().unwrap(),
        ],
        &session_env(db, &yui),
        None,
    );
    drop(server);
    assert!(yui_copy.join("observations.parquet").exists(), "{downloaded}");
    let v = run_json(
        home.path(),
        &["release", "verify", yui_copy.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(v["manifest"]["recipient"], "yui", "{v}");

    // Verification against the platform key; a changed byte is caught.
    let v = run_json(
        home.path(),
        &["release", "verify", rika_copy.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(v["trusted_key"], true, "{v}");
    assert_eq!(v["manifest"]["recipient"], "rika");
    let tampered = dir.path().join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    for f in std::fs::read_dir(&rika_copy).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), tampered.join(f.file_name())).unwrap();
    }
    let mut bytes = std::fs::read(tampered.join("observations.csv")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(tampered.join("observations.csv"), bytes).unwrap();
    let err = refused(&home, &["release", "verify", tampered.to_str().unwrap()], &[]);
    assert!(err.contains("INTEGRITY") && err.contains("observations.csv"), "{err}");

    // Manifests are the release zone's word, signed with its own key: a manifest re-signed with the committee's
    // general service key (which the committee host's processes hold) is not a platform manifest.
    let resigned = dir.path().join("resigned");
    std::fs::create_dir_all(&resigned).unwrap();
    for f in std::fs::read_dir(&rika_copy).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), resigned.join(f.file_name())).unwrap();
    }
    let manifest: tokumei_release::manifest::Manifest =
        serde_json::from_slice(&std::fs::read(resigned.join("manifest.json")).unwrap()).unwrap();
    let general = tokumei_policy::ServiceKey::load_or_create(&home.path().join("policy/service.key")).unwrap();
    let (bytes, signature) = tokumei_release::manifest::sign(&manifest, &general).unwrap();
    std::fs::write(resigned.join("manifest.json"), bytes).unwrap();
    std::fs::write(resigned.join("manifest.sig"), signature).unwrap();
    let err = refused(&home, &["release", "verify", resigned.to_str().unwrap()], &[]);
    assert!(err.contains("INTEGRITY") && err.contains("not by the trusted"), "{err}");

    // k-anonymity by an independent recount, in both copies.
    assert!(min_class(&rika_copy.join("patients.csv")) >= 5);
    assert!(min_class(&yui_copy.join("patients.csv")) >= 5);
    // The opted-out patient's lab value is in neither copy (marks move the last digit by one at most).
    for copy in [&rika_copy, &yui_copy] {
        let (h, rows) = read_csv(&copy.join("observations.csv"));
        let v = column(&h, "value");
        assert!(
            rows.iter()
                .all(|r| r[v].parse::<f64>().map_or(true, |x| (x - PLANTED_VALUE).abs() > 0.011))
        );
        assert!(!h.contains(&"linkage_key".to_owned()) && !h.contains(&"source_hospital".to_owned()));
    }
    // The copies differ in their pseudonyms (every copy has its own, one for one: the same rows join) and
    // otherwise only in marked cells of `value`, on ≤ 1 % of cells, each within its test's own precision: a
    // marked value moves by at most two units of the precision its analyte is reported with (…4/…5 → …3/…6),
    // so two copies differ by at most three, and a whole-number test stays a whole number.
    let (h, a) = read_csv(&rika_copy.join("observations.csv"));
    let (_, b) = read_csv(&yui_copy.join("observations.csv"));
    assert_eq!(a.len(), b.len());
    let v = column(&h, "value");
    let p = column(&h, "patient_pseudonym");
    let code = column(&h, "jlac10");
    let used = |x: &str| x.split_once('.').map_or(0, |(_, f)| f.trim_end_matches('0').len());
    let mut precision: HashMap<&str, usize> = HashMap::new();
    for r in a.iter().chain(&b) {
        let d = precision.entry(&r[code][..5]).or_default();
        *d = (*d).max(used(&r[v]));
    }
    let mut one_for_one: HashMap<&str, &str> = HashMap::new();
    let mut differing = 0;
    for (ra, rb) in a.iter().zip(&b) {
        assert_ne!(ra[p], rb[p], "a pseudonym shared by two copies");
        assert_eq!(
            *one_for_one.entry(&ra[p]).or_insert(&rb[p]),
            rb[p].as_str(),
            "pseudonyms not one for one"
        );
        for c in (0..h.len()).filter(|&c| c != p) {
            if ra[c] != rb[c] {
                assert_eq!(c, v, "only the marked column may differ: {ra:?} vs {rb:?}");
                let (x, y): (f64, f64) = (ra[c].parse().unwrap(), rb[c].parse().unwrap());
                let unit = 10f64.powi(-(precision[&ra[code][..5]] as i32));
                assert!((x - y).abs() <= 3.0 * unit + 1e-9, "{x} vs {y}");
                differing += 1;
            }
        }
    }
    let images: HashSet<&&str> = one_for_one.values().collect();
    assert_eq!(images.len(), one_for_one.len(), "two patients merged in a copy");
    assert!(differing > 0, "the copies carry different fingerprints");
    assert!(
        (differing as f64) <= 0.01 * (a.len() * h.len()) as f64,
        "{differing} cells differ"
    );

    // The attack re-measured on the sealed copies (an auditor would run it; the operator here), agreeing with
    // the manifests and with this test's own recount of the one-item adversary; a researcher may not run it.
    // Both through the release service (which holds the copies' keys), from an empty desk.
    let server = ReleaseServer::start(&home, &home.path().join("release-zone.log"), &[]);
    let desk = tempfile::tempdir().unwrap();
    let zone_url = format!("https://{}", server.grpc);
    let ca = home.pki.ca_cert().to_str().unwrap().to_owned();
    let risk_of = |id: &str| -> Vec<String> {
        ["risk", "attack", "--server", &zone_url, "--ca", &ca, "--release", id]
            .map(String::from)
            .to_vec()
    };
    let risk_args = risk_of(&release);
    let risk_args: Vec<&str> = risk_args.iter().map(String::as_str).collect();
    let risk = run_json(desk.path(), &risk_args, &op_env, None);
    assert!(files_under(desk.path()).is_empty(), "the risk client wrote a file");
    assert_eq!(risk["holds"], true, "{risk}");
    assert_eq!(risk["m"], 1, "{risk}");
    let copies = risk["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{risk}");
    for c in copies {
        assert_eq!(c["agrees_with_manifest"], true, "{c}");
        let ms: Vec<u64> = c["attack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["m"].as_u64().unwrap())
            .collect();
        assert_eq!(ms, vec![1, 2, 3], "{c}");
        let copy = if c["recipient"] == "rika" {
            &rika_copy
        } else {
            &yui_copy
        };
        // m = 1 is promised (nobody below k); m = 2 is information, where patients below k are expected: both
        // must equal this test's own count, patient for patient.
        for m in [1, 2] {
            let (patients, below_k, unique) = attack_recount(copy, 5, m);
            let figure = &c["attack"][m - 1];
            assert_eq!(figure["m"].as_u64().unwrap(), m as u64, "{c}");
            assert_eq!(figure["patients"].as_u64().unwrap(), patients, "{c}");
            assert_eq!(figure["below_k"].as_u64().unwrap(), below_k, "m={m}: {c}");
            assert_eq!(figure["unique"].as_u64().unwrap(), unique, "m={m}: {c}");
            if m == 1 {
                assert_eq!(below_k, 0, "{c}");
            }
        }
    }
    let err = refused(&home, &risk_args, &session_env(db, &rika));
    assert!(err.contains("ROLE_NOT_PERMITTED"), "{err}");
    // Nor does she learn whether a release exists.
    let missing = risk_of("R-A-2099-0001-1");
    let err = refused(
        &home,
        &missing.iter().map(String::as_str).collect::<Vec<_>>(),
        &session_env(db, &rika),
    );
    assert!(
        err.contains("ROLE_NOT_PERMITTED") && !err.contains("NOT_FOUND"),
        "{err}"
    );
    let mut too_strong = risk_args.clone();
    too_strong.extend(["--m", "5"]);
    let err = refused(&home, &too_strong, &op_env);
    assert!(err.contains("BAD_INPUT"), "{err}");
    // The plan of the approval at another (k, m): what a build would do, nothing written. The core plans it, as
    // an order from the policy service; the command runs from an empty desk with a session and the CA.
    let releases_before = std::fs::read_dir(home.path().join("release")).map_or(0, |d| d.count());
    let mut core = CoreWithOrders::start(home.path(), &[]);
    let service: Vec<(String, String)> = core.client_env(home.path());
    let with = |person: &Person| -> Vec<(String, String)> {
        let mut env = service.clone();
        env.push(("TOKUMEI_SESSION".into(), person.session.clone()));
        env
    };
    let (op_service, rika_service) = (with(op), with(&rika));
    let plan_args = ["release", "plan", "--application", &app, "--m", "2"];
    let plan = run_json(desk.path(), &plan_args, &as_refs(&op_service), None);
    assert!(files_under(desk.path()).is_empty(), "the plan client wrote a file");
    assert_eq!(plan["approved"], true, "{plan}");
    assert_eq!(plan["privacy_model"]["m"], 2, "{plan}");
    assert!(plan["patients"].as_u64().unwrap() > 1000, "{plan}");
    for a in plan["check"]["attack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["m"].as_u64().unwrap() <= 2)
    {
        assert_eq!(a["below_k"], 0, "{plan}");
    }
    assert_eq!(
        std::fs::read_dir(home.path().join("release")).map_or(0, |d| d.count()),
        releases_before,
        "a plan writes nothing to the release zone"
    );
    let err = refused(&home, &plan_args, &as_refs(&rika_service));
    assert!(err.contains("ROLE_NOT_PERMITTED"), "{err}");
    // A model the core could not run is refused by the policy service before anything is queued.
    let err = refused(
        &home,
        &["release", "plan", "--application", &app, "--k", "1"],
        &as_refs(&op_service),
    );
    assert!(err.contains("INVALID_ARGUMENT") && err.contains("k=1"), "{err}");
    core.stop_core();
    drop(core);

    // The release zone's manifest key is rotated (recorded through the zone's link to the policy service): the old
    // private key is gone, copies signed by it still verify against the zone's keys, new copies carry the new key.
    let old_key = std::fs::read(home.path().join("release/manifest.key")).unwrap();
    let policy_service = common::policy_server::Server::start_tls(home.path());
    let rotated = run_json(
        home.path(),
        &[
            "release",
            "rotate-key",
            "--policy-url",
            &format!("https://{}", policy_service.addr),
        ],
        &[],
        None,
    );
    drop(policy_service);
    assert_ne!(rotated["old_key_id"], rotated["new_key_id"], "{rotated}");
    assert_ne!(
        std::fs::read(home.path().join("release/manifest.key")).unwrap(),
        old_key
    );
    let v = run_json(
        home.path(),
        &["release", "verify", rika_copy.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(
        v["trusted_key"], true,
        "a copy signed before the rotation still verifies: {v}"
    );
    assert_eq!(v["key_id"], rotated["old_key_id"], "{v}");
    // A second release of the same approval: its pseudonyms join with none of the first's.
    let zones = BuildZones::start(&home, &home.path().join("release-build-2.log"));
    let second = build_ok(&zones, &app, &["--recipient", "rika"]);
    drop(zones);
    let second_copy = copy_of(&home, second["release"].as_str().unwrap(), "rika", dir.path()).await;
    let v = run_json(
        home.path(),
        &["release", "verify", second_copy.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(v["key_id"], rotated["new_key_id"], "signed with the new key: {v}");
    let pseudonyms = |copy: &Path| -> HashSet<String> {
        let (h, rows) = read_csv(&copy.join("patients.csv"));
        let p = column(&h, "patient_pseudonym");
        rows.into_iter().map(|r| r[p].clone()).collect()
    };
    let (first, other) = (pseudonyms(&rika_copy), pseudonyms(&second_copy));
    assert!(first.len() > 1000 && other.len() > 1000);
    assert_eq!(first.intersection(&other).count(), 0, "pseudonyms join across releases");
    // A sealed copy changed at rest: the attack cannot be measured on it, and the failure is audited.
    let second_id = second["release"].as_str().unwrap();
    let sealed: Vec<PathBuf> = walk(&home.path().join("release").join("releases").join(second_id))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "patients.csv.sealed"))
        .collect();
    assert_eq!(sealed.len(), 1, "{sealed:?}");
    let mut bytes = std::fs::read(&sealed[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&sealed[0], bytes).unwrap();
    let tampered = risk_of(second_id);
    let err = refused(&home, &tampered.iter().map(String::as_str).collect::<Vec<_>>(), &op_env);
    assert!(err.contains("SEALED_FILE") || err.contains("INTEGRITY"), "{err}");

    // yui's copy leaks: half of it at random, shuffled, without the pseudonym, columns reordered. (Since releases
    // are (k, k^m)-anonymous over the whole record, lab dates may be generalised and the marks' anchors carry
    // less: a 10 % subset may not hold enough positions to accuse at 1e-6 — see docs/release.md, "Limits".)
    let (h, rows) = read_csv(&yui_copy.join("observations.csv"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut rows = rows;
    rows.shuffle(&mut rng);
    rows.truncate(rows.len() / 2);
    let keep: Vec<usize> = [
        column(&h, "value"),
        column(&h, "unit"),
        column(&h, "date"),
        column(&h, "jlac10"),
    ]
    .to_vec();
    let leaked_header: Vec<String> = keep.iter().map(|&i| h[i].clone()).collect();
    let leaked_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| keep.iter().map(|&i| r[i].clone()).collect())
        .collect();
    let leaked = dir.path().join("leaked.csv");
    write_csv(&leaked, &leaked_header, &leaked_rows);
    // The operator traces through the release service (which holds the fingerprint key), from an empty desk.
    let before = audit_count(&home, "trace.leak", "ok").await;
    let t = trace(desk.path(), &home, &server, op, &release, &leaked);
    assert_eq!(t["accused"], serde_json::json!(["yui"]), "{t}");
    assert!(t["audit_seq"].as_i64().unwrap() > 0, "{t}");
    // rika's whole copy as Parquet: rika, and only rika.
    let t = trace(
        desk.path(),
        &home,
        &server,
        op,
        &release,
        &rika_copy.join("observations.parquet"),
    );
    assert_eq!(t["accused"], serde_json::json!(["rika"]), "{t}");
    // The other release's copy (other fingerprint key) accuses no one.
    let t = trace(
        desk.path(),
        &home,
        &server,
        op,
        &release,
        &second_copy.join("observations.csv"),
    );
    assert_eq!(t["accused"], serde_json::json!([]), "{t}");
    assert_eq!(
        audit_count(&home, "trace.leak", "ok").await,
        before + 3,
        "each verdict is on the ledger"
    );
    // yui's copy leaks again, as a leaker who read docs/release.md would: a tenth of the rows, every value
    // rounded to one decimal and moved by ±0.01 at random (marks of tests reported to 0.01 are gone; whole-number
    // tests keep theirs, too few in a tenth of this small table to accuse on their own), pseudonyms kept so the
    // file still joins. Every copy has its own pseudonyms: yui is named by them.
    let (h, rows) = read_csv(&yui_copy.join("observations.csv"));
    let value = column(&h, "value");
    let mut rows = rows;
    rows.shuffle(&mut rng);
    rows.truncate(rows.len() / 10);
    for row in &mut rows {
        if let Ok(v) = row[value].parse::<f64>() {
            let noisy = v + if rng.random_bool(0.5) { 0.01 } else { -0.01 };
            row[value] = format!("{:.1}", noisy);
        }
    }
    let rounded = dir.path().join("rounded.csv");
    write_csv(&rounded, &h, &rows);
    let t = trace(desk.path(), &home, &server, op, &release, &rounded);
    assert_eq!(t["accused"], serde_json::json!(["yui"]), "{t}");
    assert_eq!(t["pseudonyms"]["accused"], serde_json::json!(["yui"]), "{t}");
    assert!(
        [serde_json::json!([]), serde_json::json!(["yui"])].contains(&t["verdict"]["accused"]),
        "the value marks accuse no one else: {t}"
    );
    assert_eq!(
        t["carriers"],
        serde_json::json!(["values:observations", "pseudonyms"]),
        "{t}"
    );
    // The patient file has no marked value, but its pseudonyms are rika's own.
    let t = trace(
        desk.path(),
        &home,
        &server,
        op,
        &release,
        &rika_copy.join("patients.csv"),
    );
    assert_eq!(t["accused"], serde_json::json!(["rika"]), "{t}");
    assert_eq!(t["carriers"], serde_json::json!(["pseudonyms"]), "{t}");
    // Pseudonyms replaced and no marked column: nothing to read, and the trace says so.
    let (h, rows) = read_csv(&rika_copy.join("patients.csv"));
    let p = column(&h, "patient_pseudonym");
    let renamed: Vec<String> = h
        .iter()
        .enumerate()
        .map(|(i, c)| if i == p { "id".to_owned() } else { c.clone() })
        .collect();
    let stripped = dir.path().join("stripped.csv");
    write_csv(&stripped, &renamed, &rows);
    let err = trace_refused(desk.path(), &home, &server, op, &release, &stripped);
    assert!(err.contains("BAD_INPUT") && err.contains("marked columns"), "{err}");
    // A file that is not CSV or Parquet cannot be traced either.
    let garbage = dir.path().join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 this is not parquet").unwrap();
    let err = trace_refused(desk.path(), &home, &server, op, &release, &garbage);
    assert!(err.contains("BAD_INPUT") && err.contains("Parquet"), "{err}");
    // An unknown release: the operator, who may trace, is told it does not exist.
    let err = trace_refused(desk.path(), &home, &server, op, "R-nothing-1", &leaked);
    assert!(err.contains("NOT_FOUND"), "{err}");
    // A researcher (yui, the leaker herself, wanting to know how she was caught) may not trace, and is told so
    // before anything is read: for a release that exists and for one that does not alike (no oracle), and the
    // refusals are on the ledger; no verdict is.
    let denied = audit_count(&home, "rpc.TraceLeak", "denied").await;
    for id in [release.as_str(), "R-nothing-1"] {
        let err = trace_refused(desk.path(), &home, &server, &yui, id, &leaked);
        assert!(err.contains("ROLE_NOT_PERMITTED"), "{err}");
    }
    assert_eq!(audit_count(&home, "rpc.TraceLeak", "denied").await, denied + 2);
    assert_eq!(audit_count(&home, "trace.leak", "ok").await, before + 5);
    // Without a session: refused, recorded as anonymous.
    let args = trace_args(&home, &server, &release, &leaked);
    let err = refused(&home, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(err.contains("SESSION_INVALID"), "{err}");
    // `release list` asks the release service: it needs a session and shows only what the caller may see.
    let (zone_url, ca_path) = (format!("https://{}", server.grpc), home.pki.ca_cert());
    let list = [
        "release",
        "list",
        "--server",
        &zone_url,
        "--ca",
        ca_path.to_str().unwrap(),
    ];
    let err = refused(&home, &list, &[]);
    assert!(err.contains("SESSION_INVALID"), "{err}");
    let listed = |person: &Person| -> Vec<serde_json::Value> {
        run_json(desk.path(), &list, &session_env(db, person), None)
            .as_array()
            .expect("list")
            .iter()
            .filter(|r| r["release"] == release.as_str())
            .cloned()
            .collect()
    };
    // The operator sees the release and its recipients, without files: not a recipient.
    let seen = listed(op);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["standing"], "NOT_RECIPIENT", "{seen:?}");
    assert_eq!(seen[0]["files"], serde_json::json!([]), "{seen:?}");
    assert_eq!(seen[0]["recipients"], serde_json::json!(["rika", "yui"]), "{seen:?}");
    let hers = listed(&rika);
    assert_eq!(hers.len(), 1, "a recipient sees her release");
    assert!(!hers[0]["files"].as_array().unwrap().is_empty(), "{hers:?}");
    let stranger = people::invite(home.path(), db, "kai", "univ-k", "researcher");
    assert!(listed(&stranger).is_empty(), "a stranger sees nothing");
    drop(server);

    // A banned recipient stops further builds.
    people::run_client(
        home.path(),
        db,
        &committee.chair,
        &[
            "committee",
            "violation",
            "--person",
            "yui",
            "--kind",
            "leak",
            "--description",
            "traced",
            "--application",
            &app,
        ],
    );
    let zones = BuildZones::start(&home, &home.path().join("release-build-3.log"));
    let err = build_refused(&zones, op, &app, &[]);
    assert!(err.contains("BANNED"), "{err}");
    drop(zones);
    // Deletion declared by the researcher, through the release service, from her own (empty) desk.
    let server = ReleaseServer::start(&home, &home.path().join("release-declare.log"), &[]);
    let declared = run_json(
        desk.path(),
        &[
            "release",
            "declare-deleted",
            "--server",
            &format!("https://{}", server.grpc),
            "--ca",
            home.pki.ca_cert().to_str().unwrap(),
            "--application",
            &app,
            "--statement",
            "all copies deleted",
        ],
        &session_env(db, &rika),
        None,
    );
    assert!(declared["audit_seq"].as_i64().unwrap() > 0, "{declared}");
    assert!(files_under(desk.path()).is_empty());
    drop(server);

    let entries = people::ledger(home.path()).await;
    let count = |action: &str, outcome: &str, reason: Option<&str>| {
        entries
            .iter()
            .filter(|e| {
                e.action == action && e.outcome == outcome && reason.is_none_or(|r| e.reason.as_deref() == Some(r))
            })
            .count()
    };
    for code in [
        "COLUMN_NOT_APPROVED",
        "RECIPIENT_NOT_APPROVED",
        "APPROVAL_EXPIRED",
        "APPROVAL_REVOKED",
        "BANNED",
    ] {
        assert!(
            count("build_release", "denied", Some(code)) >= 1,
            "no audited refusal {code}"
        );
    }
    assert_eq!(count("release.build", "ok", None), 2);
    assert_eq!(count("core.build_release", "failed", Some("NOT_RELEASABLE")), 1);
    assert_eq!(
        count("core.build_release", "ok", None),
        4,
        "the core's half of each build (two delivered, two waiting)"
    );
    assert_eq!(
        count("release.deliver", "ok", None),
        6,
        "each build claimed by the release zone: the two delivered, three tries of the first waiting one and one of \
         the second"
    );
    assert_eq!(count("release.build", "failed", Some("INTEGRITY")), 2);
    assert_eq!(count("release.build", "denied", Some("DATA_CHANGED_SINCE_BUILD")), 1);
    assert_eq!(count("release.deliver", "denied", Some("BUILD_NOT_DELIVERABLE")), 2);
    assert_eq!(count("trace.leak", "ok", None), 5);
    assert_eq!(count("assess_release_risk", "ok", None), 1);
    assert_eq!(count("assess_release_risk", "failed", None), 1);
    assert_eq!(count("assess_release_risk", "denied", Some("ROLE_NOT_PERMITTED")), 2);
    assert_eq!(
        count("core.plan_release", "ok", None),
        1,
        "the core's plan, recorded with its figures"
    );
    assert_eq!(
        count("release.key_rotated", "ok", None),
        1,
        "the manifest key's rotation is on the ledger"
    );
    assert_eq!(count("plan_release", "denied", Some("ROLE_NOT_PERMITTED")), 1);
    assert_eq!(count("deletion.declare", "ok", None), 1);
}
