//! The core store end to end: gateway → spool → `tokumei core run` → encrypted Delta tables → SQL; opt-out
//! filtering, erasure down to the bytes on disk (including old table versions), encryption at rest.

mod common;

use common::core_orders::CoreWithOrders;
use common::*;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokumei_ingest::client::push;
use tokumei_ingest::keyservice::local::{LocalKeyring, Passphrase};
use tokumei_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use tokumei_proto::ingest::v1::{PatientRecord, PatientRequest, RecordBatch};
use tokumei_store::encryption::{EncryptedStore, data_keys};
use tonic::transport::Channel;

const PLANTED: &str = "PLANTEDZQXJ";
const CLINICAL_TABLES: [&str; 6] = [
    "patients",
    "encounters",
    "conditions",
    "medications",
    "observations",
    "allergies",
];

fn batch(id: &str, records: Vec<PatientRecord>) -> RecordBatch {
    RecordBatch {
        batch_id: id.into(),
        records,
    }
}

fn tokumei(home: &Home, args: &[&str]) -> std::process::Output {
    tokumei_env(home, args, &[])
}

fn tokumei_env(home: &Home, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let out = tokumei_unchecked(home, args, env);
    assert!(
        out.status.success(),
        "tokumei {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `tokumei ARGS --config HOME/tokumei.toml`, whatever its exit status.
fn tokumei_unchecked(home: &Home, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(tokumei_bin());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args)
        .arg("--config")
        .arg(home.path().join("tokumei.toml"))
        .env("TOKUMEI_HOME", home.path())
        .env("RUST_LOG", "warn")
        .bounded_output()
        .expect("run tokumei")
}

fn core_drain(home: &Home) -> serde_json::Value {
    let out = tokumei(home, &["--json", "core", "run", "--until-drained"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .lines()
        .skip_while(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("core output {text:?}: {e}"))
}

fn sql(home: &Home, query: &str, all_rows: bool) -> Vec<serde_json::Value> {
    common::core_orders::operator_sql(home.path(), &[], query, all_rows)
}

fn count(home: &Home, query: &str, all_rows: bool) -> i64 {
    sql(home, query, all_rows)[0]["n"].as_i64().expect("n")
}

fn store_dir(home: &Home) -> PathBuf {
    home.path().join("store")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Every file under the store, decrypted with the store's own keys. Fails if any file (other than the
/// wrapped key file) is not a sealed object — which proves nothing is written in the clear.
async fn decrypted_files(home: &Home) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = store_dir(home);
    let ring = LocalKeyring::open_or_create(
        &home.path().join("keyring/core/keyring.json"),
        &Passphrase::from_env_or_file(home.path().join("secrets/core/keyring.passphrase"), false),
    )
    .expect("keyring");
    let raw: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&dir).unwrap());
    let (keys, _) = data_keys::open(raw.as_ref(), &ring).await.expect("data keys");
    let sealed = EncryptedStore::new(raw, Arc::new(keys), None);
    let mut out = Vec::new();
    for f in files_under(&dir) {
        let rel = f.strip_prefix(&dir).unwrap().to_string_lossy().to_string();
        if rel == data_keys::KEY_FILE {
            continue;
        }
        let bytes = sealed
            .get(&object_store::path::Path::from(rel.as_str()))
            .await
            .unwrap_or_else(|e| panic!("{rel} is not a sealed object: {e}"))
            .bytes()
            .await
            .unwrap();
        out.push((f, bytes.to_vec()));
    }
    out
}

fn linkage_key_of(home: &Home, batch_id: &str) -> String {
    let rows = sql(
        home,
        &format!("SELECT DISTINCT linkage_key FROM patients WHERE batch_id = '{batch_id}'"),
        true,
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0]["linkage_key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_is_queryable_and_nothing_is_plaintext_on_disk() {
    let home = Home::new();
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut planted = valid_record("PLANT1");
    planted.encounters[0].department = PLANTED.into();
    let records: Vec<PatientRecord> = (0..40).map(|i| valid_record(&format!("RT{i}"))).collect();
    let r = push(&mut a, vec![batch("rt-1", records), batch("rt-2", vec![planted])])
        .await
        .unwrap();
    assert_eq!(r.accepted, 41);

    let totals = core_drain(&home);
    assert_eq!(totals["records"], 41, "{totals}");
    assert_eq!(count(&home, "SELECT count(*) AS n FROM patients", false), 41);
    assert_eq!(
        count(
            &home,
            "SELECT count(*) AS n FROM conditions WHERE icd10 = 'E11.9'",
            false
        ),
        41
    );
    assert_eq!(
        count(
            &home,
            &format!("SELECT count(*) AS n FROM encounters WHERE department = '{PLANTED}'"),
            false
        ),
        1
    );
    // Draining again applies nothing: the tables know what they hold.
    assert_eq!(core_drain(&home)["records"], 0);
    assert_eq!(count(&home, "SELECT count(*) AS n FROM patients", false), 41);

    // The planted value and every pseudonym are nowhere on disk in the clear...
    let key = linkage_key_of(&home, "rt-2");
    let on_disk = all_bytes(&store_dir(&home));
    assert!(!on_disk.is_empty());
    assert!(
        !contains(&on_disk, PLANTED),
        "planted value found in plaintext under the store"
    );
    assert!(
        !contains(&on_disk, &key),
        "linkage key found in plaintext under the store"
    );
    assert!(!contains(&on_disk, "E11.9"));
    assert!(!contains(&on_disk, "PAR1"), "a Parquet file is stored unencrypted");
    // ...but every file opens with the store's keys and the value is inside.
    let files = decrypted_files(&home).await;
    assert!(files.iter().any(|(_, b)| contains(b, PLANTED)));

    // Status reports the tables: the core, running as a service, answers the operator's order.
    let orders = CoreWithOrders::start(home.path(), &[]);
    let s = client_ok(&home, &orders, &["--json", "store", "status"]);
    let patients = s["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "patients")
        .unwrap();
    assert_eq!(patients["rows"], 41);
    // Batches of one stream are committed concurrently: either may be last in the spool.
    let last = patients["last_batch"].as_str().unwrap_or_default();
    assert!(
        last == format!("{HOSPITAL_A}/rt-1") || last == format!("{HOSPITAL_A}/rt-2"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_out_is_excluded_from_every_research_read_and_erasure_destroys_the_bytes() {
    let home = Home::new();
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut erased = valid_record("ER1");
    erased.encounters[0].department = PLANTED.into();
    let opted = valid_record("OO1");
    let others: Vec<PatientRecord> = (0..10).map(|i| valid_record(&format!("KEEP{i}"))).collect();
    push(
        &mut a,
        vec![
            batch("er", vec![erased.clone()]),
            batch("oo", vec![opted.clone()]),
            batch("keep", others),
        ],
    )
    .await
    .unwrap();
    core_drain(&home);
    let erased_key = linkage_key_of(&home, "er");
    let opted_key = linkage_key_of(&home, "oo");
    // Several commits, so that old table versions and old files hold the patient.
    for i in 0..3 {
        push(
            &mut a,
            vec![batch(&format!("more-{i}"), vec![valid_record(&format!("M{i}"))])],
        )
        .await
        .unwrap();
        core_drain(&home);
    }

    a.opt_out(PatientRequest {
        request_id: "oo-req".into(),
        insurance: opted.insurance.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    a.erase(PatientRequest {
        request_id: "er-req".into(),
        insurance: erased.insurance.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let totals = core_drain(&home);
    assert_eq!(
        (totals["opt_outs"].as_u64(), totals["erasures"].as_u64()),
        (Some(1), Some(1)),
        "{totals}"
    );

    for table in CLINICAL_TABLES {
        // Opt-out: gone from the research view, still present for operators.
        let q = format!("SELECT count(*) AS n FROM {table} WHERE linkage_key = '{opted_key}'");
        assert_eq!(
            count(&home, &q, false),
            0,
            "{table}: opted-out rows visible to research"
        );
        assert_eq!(count(&home, &q, true), 1, "{table}: opt-out must not delete");
        // Erasure: gone for everyone.
        let q = format!("SELECT count(*) AS n FROM {table} WHERE linkage_key = '{erased_key}'");
        assert_eq!(count(&home, &q, true), 0, "{table}: erased rows still stored");
    }
    assert_eq!(count(&home, "SELECT count(*) AS n FROM patients", false), 13);
    assert_eq!(count(&home, "SELECT count(*) AS n FROM patients", true), 14);

    // The certificate.
    let log = std::fs::read_to_string(home.path().join("log/erasure-certificates.jsonl")).unwrap();
    let cert: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(cert["request_id"], "er-req");
    assert_eq!(cert["rows_removed"], 6, "{cert}");
    assert!(cert["files_destroyed"].as_u64().unwrap() >= 6, "{cert}");
    assert!(
        !log.contains(&erased_key),
        "the certificate must hold a hash of the key, not the key"
    );

    // No file under the store — data, log, checkpoint, any old version — holds the erased patient's value or
    // key once decrypted; only the opt-out registry keeps the key, to refuse the patient's future records.
    for (path, bytes) in decrypted_files(&home).await {
        assert!(
            !contains(&bytes, PLANTED),
            "{} still holds the erased value",
            path.display()
        );
        if !path.to_string_lossy().contains("/opt_outs/") {
            assert!(
                !contains(&bytes, &erased_key),
                "{} still holds the erased key",
                path.display()
            );
        }
    }
    drop(gw);
}

/// `tokumei ARGS` as a client of the policy service (no `--config`: the command opens no store and no key).
fn client(home: &Home, orders: &CoreWithOrders, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(tokumei_bin());
    for (k, v) in orders.client_env(home.path()) {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args)
        .env("TOKUMEI_HOME", home.path())
        .env("RUST_LOG", "warn")
        .bounded_output()
        .expect("run tokumei")
}

fn client_ok(home: &Home, orders: &CoreWithOrders, args: &[&str]) -> serde_json::Value {
    let out = client(home, orders, args, &[]);
    assert!(
        out.status.success(),
        "tokumei {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Two patients pushed through a gateway and drained into the store, an operator whose session is saved in the
/// home, and the first patient's linkage key.
async fn two_patients_and_an_operator(
    home: &Home,
) -> (Gateway, IngestServiceClient<Channel>, common::people::Person, String) {
    let gw = home.start();
    let mut a = gw.client(home, HOSPITAL_A).await;
    push(&mut a, vec![batch("x", vec![valid_record("X1"), valid_record("X2")])])
        .await
        .unwrap();
    core_drain(home);
    let op = common::people::operator(home.path(), &[]);
    std::fs::write(home.path().join("session.token"), &op.session).unwrap();
    let rows = sql(home, "SELECT linkage_key FROM patients ORDER BY linkage_key", true);
    let key = rows[0]["linkage_key"].as_str().unwrap().to_string();
    (gw, a, op, key)
}

/// The regulator's report from both zones, each through its service: the policy part from the policy service, the
/// core's counts as an order the core carries out. An auditor gets both, holding nothing but a session; a
/// researcher neither; the ledger keeps counts only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_regulator_report_comes_from_both_zones_through_their_services() {
    let home = Home::new();
    let (gw, _a, _op, key) = two_patients_and_an_operator(&home).await;
    let orders = CoreWithOrders::start(home.path(), &[]);
    let auditor = common::people::invite(home.path(), &[], "audra", "audit-o", "auditor");
    let rika = common::people::invite(home.path(), &[], "rika", "univ-a", "researcher");
    let period = tokumei_policy::transparency::current_quarter(chrono::Utc::now());
    let report = ["--json", "report", "regulator", "--period", period.as_str()];
    let out = client(
        &home,
        &orders,
        &report,
        &[("TOKUMEI_SESSION", auditor.session.as_str())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["period"], period.as_str(), "{v}");
    assert!(v["core_unavailable"].is_null(), "{v}");
    assert_eq!(v["core"]["hospitals_providing"], 1, "{v}");
    assert_eq!(v["core"]["patient_records_received"], 2, "{v}");
    assert!(v["core"]["clinical_rows_received"].as_u64().unwrap() > 0, "{v}");
    assert!(v["audit_head"]["seq"].as_u64().unwrap() > 0, "{v}");
    // A researcher gets neither half: the policy part is refused, and so is the core's.
    let out = client(&home, &orders, &report, &[("TOKUMEI_SESSION", rika.session.as_str())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ROLE_NOT_PERMITTED"), "{err}");
    // The auditor's role reaches the regulator's counts only: no other core operation.
    let out = client(
        &home,
        &orders,
        &["--json", "store", "status"],
        &[("TOKUMEI_SESSION", auditor.session.as_str())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ROLE_NOT_PERMITTED"), "{err}");
    // Nor can the auditor read other orders, nor learn which numbers exist: the operator's query (number 1, asked
    // while the patients were set up), the operator's status order (number 3, after the auditor's own) and a number
    // never issued are refused alike; the auditor's own reads back.
    client_ok(&home, &orders, &["--json", "store", "status"]);
    let own = client(
        &home,
        &orders,
        &["--json", "store", "order", "--id", "2"],
        &[("TOKUMEI_SESSION", auditor.session.as_str())],
    );
    assert!(own.status.success(), "{}", String::from_utf8_lossy(&own.stderr));
    for id in ["1", "3", "999"] {
        let out = client(
            &home,
            &orders,
            &["--json", "store", "order", "--id", id],
            &[("TOKUMEI_SESSION", auditor.session.as_str())],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("ROLE_NOT_PERMITTED"),
            "order {id}: {err}"
        );
    }
    // On the ledger: the order and its counts, under the auditor; no key, no row.
    let ledger = common::people::ledger(home.path()).await;
    let done: Vec<_> = ledger
        .iter()
        .filter(|e| e.action == "core.regulator_figures" && e.outcome == "ok")
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].actor, "audra");
    let details: serde_json::Value = serde_json::from_str(&done[0].details).unwrap();
    assert_eq!(details["patient_records_received"], 2, "{details}");
    for e in &ledger {
        assert!(!e.details.contains(&key), "{} names a linkage key", e.action);
    }
    drop(orders);
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_erase_and_key_rotation() {
    let home = Home::new();
    let (gw, mut a, _op, key) = two_patients_and_an_operator(&home).await;
    // From here the core runs as a service and takes operators' orders from the policy service.
    let orders = CoreWithOrders::start(home.path(), &[]);
    // Counted through the running core: an operator's query is an order too.
    let n = |orders: &CoreWithOrders, q: &str| {
        client_ok(&home, orders, &["--json", "sql", q, "--all-rows"])[0]["n"]
            .as_i64()
            .expect("n")
    };
    // Nobody erases, compacts or rotates without an operator's session: a forged session and a
    // researcher's are refused by the policy service before anything is queued, and nothing is removed.
    let rika = common::people::invite(home.path(), &[], "rika", "univ-a", "researcher");
    let erase = [
        "--json",
        "store",
        "erase",
        "--linkage-key",
        &key,
        "--request-id",
        "op-0",
    ];
    for (session, code) in [
        ("tks1.forged.forged", "SESSION_INVALID"),
        (rika.session.as_str(), "ROLE_NOT_PERMITTED"),
    ] {
        for args in [
            &erase[..],
            &["store", "compact"],
            &["store", "rotate-keys"],
            &["store", "status"],
        ] {
            let out = client(&home, &orders, args, &[("TOKUMEI_SESSION", session)]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains(code), "{args:?}: {err}");
        }
    }
    assert_eq!(n(&orders, "SELECT count(*) AS n FROM patients"), 2);
    let cert = client_ok(&home, &orders, &erase.map(|a| if a == "op-0" { "op-1" } else { a }));
    assert_eq!(cert["rows_removed"], 6, "{cert}");
    assert_eq!(n(&orders, "SELECT count(*) AS n FROM patients"), 1);
    // The erased key is now in the registry.
    assert_eq!(
        n(
            &orders,
            &format!("SELECT count(*) AS n FROM opt_outs WHERE linkage_key = '{key}'")
        ),
        1
    );
    // The running core refuses the erased patient's records still on their way (it carried the erasure out in
    // its own loop, so its opt-out set knows the key): the hospital sends both patients again.
    push(
        &mut a,
        vec![batch("x-again", vec![valid_record("X1"), valid_record("X2")])],
    )
    .await
    .unwrap();
    let again = "SELECT count(*) AS n FROM patients WHERE batch_id = 'x-again'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while n(&orders, again) < 1 {
        assert!(std::time::Instant::now() < deadline, "the core did not apply the batch");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(n(&orders, again), 1, "the erased patient came back");
    assert_eq!(
        n(
            &orders,
            &format!("SELECT count(*) AS n FROM patients WHERE linkage_key = '{key}'")
        ),
        0
    );

    // Rotation re-wraps the data keys: data files are untouched and still readable.
    let before: Vec<_> = files_under(&store_dir(&home))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let key_file_before = std::fs::read(store_dir(&home).join(data_keys::KEY_FILE)).unwrap();
    let r = client_ok(&home, &orders, &["--json", "store", "rotate-keys"]);
    assert_eq!(r["kek_version"], 2, "{r}");
    assert_ne!(
        std::fs::read(store_dir(&home).join(data_keys::KEY_FILE)).unwrap(),
        key_file_before
    );
    for (p, bytes) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "rotation rewrote {}", p.display());
    }
    assert_eq!(n(&orders, "SELECT count(*) AS n FROM patients"), 2);
    // A new data key, used by the core from its next start; old objects still open.
    let r = client_ok(&home, &orders, &["--json", "store", "rotate-keys", "--new-data-key"]);
    assert_eq!(r["new_data_key"], true, "{r}");
    let mut orders = orders;
    orders.stop_core();
    push(&mut a, vec![batch("y", vec![valid_record("Y1")])]).await.unwrap();
    core_drain(&home);
    assert_eq!(count(&home, "SELECT count(*) AS n FROM patients", true), 3);
    let s = client_ok(&home, &orders, &["--json", "store", "order", "--id", "1"]);
    assert_eq!(s["state"], "done", "{s}");
    drop(orders);
    let orders = CoreWithOrders::start(home.path(), &[]);
    client_ok(&home, &orders, &["--json", "store", "compact"]);
    assert_eq!(n(&orders, "SELECT count(*) AS n FROM patients"), 3);
    let status = client_ok(&home, &orders, &["--json", "store", "status"]);
    assert_eq!(status["data_keys"], 2, "{status}");

    // Every operation and every refusal is in the audit ledger; the erasure by its reference and counts,
    // never by the key.
    let entries = common::people::ledger(home.path()).await;
    let ok = |action: &str| {
        entries
            .iter()
            .filter(|e| e.action == action && e.outcome == "ok")
            .count()
    };
    assert_eq!(
        (
            ok("core.erase"),
            ok("core.rotate_keys"),
            ok("core.compact"),
            ok("core.status")
        ),
        (1, 2, 1, 1)
    );
    // Five operations, and the operator's queries (orders too).
    let queries = ok("core.sql");
    assert!(queries >= 10, "{queries}");
    assert_eq!(
        (ok("core.requested"), ok("core.order_taken")),
        (5 + queries, 5 + queries)
    );
    let erased = entries.iter().find(|e| e.action == "core.erase").unwrap();
    assert_eq!(
        erased.actor, "op",
        "the outcome is recorded under the operator who asked"
    );
    let d = erased.details_value().unwrap();
    assert_eq!(
        (d["request_id"].as_str(), d["rows_removed"].as_u64(), d["keys"].as_u64()),
        (Some("op-1"), Some(6), Some(1))
    );
    let denied = entries
        .iter()
        .filter(|e| e.action == "operate_core" && e.outcome == "denied" && e.actor == "rika")
        .count();
    assert_eq!(denied, 4, "each refused operation of the researcher is audited");
    // Nor in the operator's own queries above, which named it: the ledger keeps their shape and a digest.
    for e in &entries {
        let text = format!("{} {} {:?} {}", e.actor, e.resource, e.reason, e.details);
        assert!(!text.contains(&key), "the erased key is in audit entry {}", e.seq);
    }
    // Nor does the committee zone keep it once the core has acted: the order's payload is emptied.
    let db = tokumei_policy::PolicyDb::open(&tokumei_policy::default_url(home.path()))
        .await
        .unwrap();
    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload FROM core_orders")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(
        payloads.iter().all(|p| !p.contains(&key)),
        "an order still names the key"
    );
    drop(gw);
}

/// Waits until order `id` is neither queued nor taken; its status.
fn settled(home: &Home, orders: &CoreWithOrders, id: u64) -> serde_json::Value {
    for _ in 0..100 {
        let s = client_ok(home, orders, &["--json", "store", "order", "--id", &id.to_string()]);
        if s["state"] != "queued" && s["state"] != "taken" {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("order {id} never settled");
}

/// The attacks on the order path: a caller who is not the core, an order slipped into the database, a replayed
/// order, and a client that holds nothing but a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_acts_only_on_signed_fresh_orders_taken_with_its_certificate() {
    use tokumei_proto::policy::v1 as pb;
    use tokumei_proto::policy::v1::core_order_service_client::CoreOrderServiceClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let home = Home::new();
    let (gw, _a, op, key) = two_patients_and_an_operator(&home).await;
    let mut orders = CoreWithOrders::start(home.path(), &[]);

    // 1. Only the core's certificate takes orders: no certificate (an operator's session is not enough), or a
    //    hospital's certificate from the same CA, is refused.
    tokumei_ingest::tls::install_crypto_provider();
    let pki = home.path().join("pki");
    let ca = Certificate::from_pem(std::fs::read(pki.join("ca.crt")).unwrap());
    let url = format!("https://{}", orders.policy.addr);
    let hospital = Identity::from_pem(
        std::fs::read(home.creds(HOSPITAL_A).cert).unwrap(),
        std::fs::read(home.creds(HOSPITAL_A).key).unwrap(),
    );
    for identity in [None, Some(hospital)] {
        let mut tls = ClientTlsConfig::new().ca_certificate(ca.clone());
        if let Some(i) = identity {
            tls = tls.identity(i);
        }
        let channel = Endpoint::from_shared(url.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = CoreOrderServiceClient::new(channel);
        let mut take = tonic::Request::new(pb::CoreState::default());
        take.metadata_mut()
            .insert("authorization", format!("Bearer {}", op.session).parse().unwrap());
        let e = c.take_core_orders(take).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let e = c
            .report_core_order(pb::CoreOrderReport {
                id: 1,
                ok: true,
                result_json: "{}".into(),
                reason: String::new(),
                exclusions_changed_at_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    }

    // 2. A client that holds nothing but a session and the service's CA: an empty home, no keyring, no
    //    database, no configuration.
    let bare = tempfile::tempdir().unwrap();
    let out = Command::new(tokumei_bin())
        .args(["--json", "store", "status"])
        .env("TOKUMEI_HOME", bare.path())
        .env("TOKUMEI_SESSION", &op.session)
        .env("TOKUMEI_POLICY_URL", &url)
        .env("TOKUMEI_POLICY_CA", pki.join("ca.crt"))
        .bounded_output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<_> = files_under(bare.path());
    assert!(listed.is_empty(), "the client wrote {listed:?}");

    // 3. An order slipped into the policy database, signed with another key: the core refuses it, nothing is
    //    erased.
    let db = tokumei_policy::PolicyDb::open(&tokumei_policy::default_url(home.path()))
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let forged = format!(
        r#"{{"id":900,"requested_by":"op","issued_at_ms":{now},"expires_at_ms":{},"operation":"erase","linkage_keys":["{key}"],"hospital_pseudonym":null,"request_id":"forged"}}"#,
        now + 600_000
    );
    let other = tokumei_policy::ServiceKey::generate();
    let signature = hex::encode(other.sign(tokumei_policy::SignaturePurpose::CoreOrder, forged.as_bytes()));
    let insert = |id: i64, payload: String, signature: String| {
        let db = db.clone();
        async move {
            sqlx::query(
                "INSERT INTO core_orders (id, operation, payload, signature, key_count, requested_by, \
                 requested_at_ms, expires_at_ms, state) VALUES ($1, 'erase', $2, $3, 1, 'op', $4, $5, 'queued')",
            )
            .bind(id)
            .bind(payload)
            .bind(signature)
            .bind(now)
            .bind(now + 600_000)
            .execute(db.pool())
            .await
            .unwrap();
        }
    };
    insert(900, forged.clone(), signature).await;
    // Signed with the general service key, which every in-process command on the committee host loads: not the
    // key the core pins, so refused too.
    let general =
        tokumei_policy::ServiceKey::load_or_create(&tokumei_policy::service_key::default_key_path(home.path()))
            .unwrap();
    let by_general = forged.replace("\"id\":900", "\"id\":901");
    let signature = hex::encode(general.sign(tokumei_policy::SignaturePurpose::CoreOrder, by_general.as_bytes()));
    insert(901, by_general, signature).await;
    for id in [900, 901] {
        let s = settled(&home, &orders, id);
        assert_eq!(
            (s["state"].as_str(), s["reason"].as_str()),
            (Some("failed"), Some("ORDER_SIGNATURE_INVALID")),
            "{s}"
        );
    }
    assert_eq!(count(&home, "SELECT count(*) AS n FROM patients", true), 2);

    // 4. A genuine order captured while queued, replayed after it was carried out (put back in the queue under
    //    its own number, or under another): refused, the store is not touched again.
    orders.stop_core();
    let queued = client_ok(&home, &orders, &["--json", "store", "compact", "--wait-secs", "0"]);
    let id = queued["order"].as_i64().unwrap();
    let (payload, signature): (String, String) =
        sqlx::query_as("SELECT payload, signature FROM core_orders WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    drop(orders);
    let orders = CoreWithOrders::start(home.path(), &[]);
    let s = settled(&home, &orders, u64::try_from(id).unwrap());
    assert_eq!(s["state"], "done", "{s}");
    sqlx::query("UPDATE core_orders SET state = 'queued', payload = $2, signature = $3 WHERE id = $1")
        .bind(id)
        .bind(&payload)
        .bind(&signature)
        .execute(db.pool())
        .await
        .unwrap();
    let s = settled(&home, &orders, u64::try_from(id).unwrap());
    assert_eq!(
        (s["state"].as_str(), s["reason"].as_str()),
        (Some("failed"), Some("ORDER_REPLAYED")),
        "{s}"
    );
    insert(7000, payload, signature).await;
    let s = settled(&home, &orders, 7000);
    assert_eq!(
        (s["state"].as_str(), s["reason"].as_str()),
        (Some("failed"), Some("ORDER_UNREADABLE")),
        "{s}"
    );
    let entries = common::people::ledger(home.path()).await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action == "core.compact" && e.outcome == "ok")
            .count(),
        1,
        "the replays did not run"
    );

    // 5. With no core taking orders, the command says so instead of hanging.
    drop(orders);
    let orders = {
        let mut o = CoreWithOrders::start(home.path(), &[]);
        o.stop_core();
        o
    };
    let out = client(&home, &orders, &["store", "status", "--wait-secs", "1"], &[]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("CORE_NOT_RESPONDING"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(gw);
}

/// The same store with its data keys wrapped by OpenBao transit (the `bao server -dev` of scripts/test.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_openbao_keys_round_trip_erase_and_rotation() {
    let Some((addr, token)) = bao() else {
        return;
    };
    let prefix = format!("store-test-{}-", rand::random::<u32>());
    let home = Home::with_config(&format!(
        "[keys]\nbackend = \"openbao\"\n[keys.openbao]\naddress = \"{addr}\"\ntoken_env = \"TEST_BAO_TOKEN\"\nmount = \"transit\"\nkey_prefix = \"{prefix}\"\n"
    ));
    let env = [("TEST_BAO_TOKEN", token.as_str())];
    let gw = home.start_with(&[], &env);
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut planted = valid_record("BAO1");
    planted.encounters[0].department = PLANTED.into();
    push(&mut a, vec![batch("bao", vec![planted.clone(), valid_record("BAO2")])])
        .await
        .unwrap();
    let drain = |home: &Home| tokumei_env(home, &["--json", "core", "run", "--until-drained"], &env);
    drain(&home);
    let n = |home: &Home, q: &str| {
        common::core_orders::operator_sql(home.path(), &env, q, true)[0]["n"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(n(&home, "SELECT count(*) AS n FROM patients"), 2);
    let key_file = std::fs::read_to_string(store_dir(&home).join(data_keys::KEY_FILE)).unwrap();
    assert!(
        key_file.contains("\"openbao\"") && key_file.contains("vault:v1:"),
        "{key_file}"
    );
    assert!(!contains(&all_bytes(&store_dir(&home)), PLANTED));

    a.erase(PatientRequest {
        request_id: "bao-erase".into(),
        insurance: planted.insurance.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    drain(&home);
    assert_eq!(n(&home, "SELECT count(*) AS n FROM patients"), 1);
    assert_eq!(
        n(
            &home,
            &format!("SELECT count(*) AS n FROM encounters WHERE department = '{PLANTED}'")
        ),
        0
    );

    // The core holds the OpenBao token; the operator's command holds nothing but a session.
    let mut orders = CoreWithOrders::start(home.path(), &env);
    let r = client_ok(&home, &orders, &["--json", "store", "rotate-keys"]);
    assert!(r["kek_version"].as_u64().unwrap() >= 2, "{r}");
    orders.stop_core();
    let key_file = std::fs::read_to_string(store_dir(&home).join(data_keys::KEY_FILE)).unwrap();
    assert!(!key_file.contains("vault:v1:"), "{key_file}");
    assert_eq!(n(&home, "SELECT count(*) AS n FROM patients"), 1);
    // A wrong token cannot open the store.
    let out = Command::new(tokumei_bin())
        .args(["core", "run", "--until-drained", "--config"])
        .arg(home.path().join("tokumei.toml"))
        .env("TOKUMEI_HOME", home.path())
        .env("TEST_BAO_TOKEN", "not-a-token")
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    drop(gw);
}

/// The S3 switch: the same tables in an S3-compatible bucket (moto's server, started by scripts/test.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_in_an_s3_bucket() {
    let Some(endpoint) = test_server("TOKUMEI_TEST_S3_ENDPOINT", "moto's S3 server") else {
        return;
    };
    let bucket = format!("tokumei-{}", rand::random::<u32>());
    let created = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .status()
        .unwrap();
    assert!(created.success(), "could not create bucket {bucket}");
    let home = Home::with_config(&format!(
        "[store]\nlocation = \"s3://{bucket}/core\"\n[store.s3]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\nallow_http = true\n"
    ));
    let env = [
        ("TOKUMEI_S3_ACCESS_KEY_ID", "test"),
        ("TOKUMEI_S3_SECRET_ACCESS_KEY", "test"),
    ];
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut planted = valid_record("S31");
    planted.encounters[0].department = PLANTED.into();
    push(&mut a, vec![batch("s3", vec![planted.clone(), valid_record("S32")])])
        .await
        .unwrap();
    tokumei_env(&home, &["--json", "core", "run", "--until-drained"], &env);
    let n = |q: &str| {
        common::core_orders::operator_sql(home.path(), &env, q, true)[0]["n"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(n("SELECT count(*) AS n FROM patients"), 2);
    assert_eq!(
        n(&format!(
            "SELECT count(*) AS n FROM encounters WHERE department = '{PLANTED}'"
        )),
        1
    );
    assert!(!store_dir(&home).exists(), "an S3 store must not write tables locally");
    a.erase(PatientRequest {
        request_id: "s3-erase".into(),
        insurance: planted.insurance.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    tokumei_env(&home, &["--json", "core", "run", "--until-drained"], &env);
    assert_eq!(n("SELECT count(*) AS n FROM patients"), 1);
    assert_eq!(
        n(&format!(
            "SELECT count(*) AS n FROM encounters WHERE department = '{PLANTED}'"
        )),
        0
    );
    drop(gw);
}

/// Every key a person's rows are stored under (raw tables, operator view).
fn rows_of(home: &Home, table: &str, batches: &[&str]) -> i64 {
    rows_in(home, table, batches, true)
}

fn research_rows_of(home: &Home, table: &str, batches: &[&str]) -> i64 {
    rows_in(home, table, batches, false)
}

/// Rows of `table` from these batches, in every row (`all_rows`) or in the research view.
fn rows_in(home: &Home, table: &str, batches: &[&str], all_rows: bool) -> i64 {
    let list = batches.iter().map(|b| format!("'{b}'")).collect::<Vec<_>>().join(",");
    count(
        home,
        &format!("SELECT count(*) AS n FROM {table} WHERE batch_id IN ({list})"),
        all_rows,
    )
}

fn insured_as(mut r: PatientRecord, number: &str) -> PatientRecord {
    if let Some(ins) = r.insurance.as_mut() {
        ins.number = number.into();
    }
    r
}

/// The attack from issue 18: a patient sent with insurance, opted out or erased by kana name + birth date + sex,
/// kept their rows; a change of insurance made one person several for k and DP caps; any hospital could erase
/// any patient by a guessable name. Now the core stores both keys of a record, works out whom a request reaches,
/// and keys research rows by person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_under_two_insurances_is_one_person_for_counts_opt_out_and_erasure() {
    let home = Home::new();
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut b = gw.client(&home, HOSPITAL_B).await;
    // P: at A under insurance 1, at B under insurance 2 after a job change (same kana, birth date, sex).
    let p = valid_record("PERSONP");
    let p_at_b = insured_as(valid_record("PERSONP"), "88PERSONP");
    // E: the same at A and B, to be erased by B with kana + birth date + sex only.
    let e = valid_record("PERSONE");
    let e_at_b = insured_as(valid_record("PERSONE"), "88PERSONE");
    // S: sent by A only; B will try to erase S by name. T: sent by A only; B will make up a record for T.
    let s = valid_record("PERSONS");
    let t = valid_record("PERSONT");
    // Q: at B without kana (insurance only: nothing links it yet), at A with insurance and kana.
    let mut q_at_b = insured_as(valid_record("PERSONQ"), "88PERSONQ");
    q_at_b.kana_name.clear();
    let q = valid_record("PERSONQ");
    let others: Vec<PatientRecord> = (0..4).map(|i| valid_record(&format!("OTHER{i}"))).collect();
    push(
        &mut a,
        vec![
            batch("p-a", vec![p.clone()]),
            batch("e-a", vec![e.clone()]),
            batch("s-a", vec![s.clone()]),
            batch("t-a", vec![t.clone()]),
            batch("q-a", vec![q.clone()]),
            batch("others", others),
        ],
    )
    .await
    .unwrap();
    push(
        &mut b,
        vec![
            batch("p-b", vec![p_at_b]),
            batch("e-b", vec![e_at_b]),
            batch("q-b", vec![q_at_b]),
        ],
    )
    .await
    .unwrap();
    core_drain(&home);

    // Two insured keys in the raw tables, one person in research: what k and DP caps count.
    let distinct = |all_rows: bool| {
        count(
            &home,
            "SELECT count(DISTINCT linkage_key) AS n FROM patients WHERE batch_id IN ('p-a','p-b')",
            all_rows,
        )
    };
    assert_eq!(distinct(true), 2, "stored under both insured keys");
    assert_eq!(distinct(false), 1, "research must see one person");
    let keys = sql(
        &home,
        "SELECT DISTINCT linkage_key FROM encounters WHERE batch_id IN ('p-a','p-b')",
        false,
    );
    assert_eq!(keys.len(), 1, "every table keys the person alike: {keys:?}");
    let columns = sql(
        &home,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'patients'",
        false,
    );
    assert!(
        !columns.iter().any(|c| c["column_name"] == "id4_key"),
        "research views do not carry the ID4 key"
    );
    assert_eq!(
        count(&home, "SELECT count(DISTINCT linkage_key) AS n FROM patients", false),
        10
    );

    let id4 = |r: &PatientRecord, id: &str| PatientRequest {
        request_id: id.into(),
        kana_name: r.kana_name.clone(),
        birth_date: r.birth_date.clone(),
        sex: r.sex,
        ..Default::default()
    };
    // A opts P out by kana + birth date + sex: A's rows and B's rows (another insurance) leave research.
    let r = a.opt_out(id4(&p, "p-opt-out")).await.unwrap().into_inner();
    assert_eq!((r.status.as_str(), r.matched_by.as_str()), ("RECORDED", "ID4"));
    // B erases E by kana + birth date + sex: B's own record is destroyed; A's record of E (linked to B's only
    // through the guessable name) leaves research but is not destroyed on B's word.
    b.erase(id4(&e, "e-erase")).await.unwrap();
    // A opts Q out by insurance: Q's record at B (no kana, not linked yet) stays until something links it.
    a.opt_out(PatientRequest {
        request_id: "q-opt-out".into(),
        insurance: q.insurance.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    // B tries to erase S, whom only A sent: nothing of S may go.
    b.erase(id4(&s, "s-erase-by-b")).await.unwrap();
    core_drain(&home);

    for table in CLINICAL_TABLES {
        assert_eq!(
            research_rows_of(&home, table, &["p-a", "p-b"]),
            0,
            "{table}: opted-out P visible"
        );
        assert_eq!(
            rows_of(&home, table, &["p-a", "p-b"]),
            2,
            "{table}: an opt-out keeps rows"
        );
        assert_eq!(rows_of(&home, table, &["e-b"]), 0, "{table}: erased E still stored");
        assert_eq!(
            rows_of(&home, table, &["e-a"]),
            1,
            "{table}: B destroyed A's record on a name"
        );
        assert_eq!(
            research_rows_of(&home, table, &["e-a"]),
            0,
            "{table}: E still in research"
        );
        assert_eq!(
            research_rows_of(&home, table, &["q-b"]),
            1,
            "{table}: nothing links Q at B yet"
        );
        assert_eq!(
            research_rows_of(&home, table, &["s-a"]),
            1,
            "{table}: B reached A's patient S"
        );
    }
    let log = std::fs::read_to_string(home.path().join("log/erasure-certificates.jsonl")).unwrap();
    let certs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cert = |id: &str| certs.iter().find(|c| c["request_id"] == id).cloned().expect(id);
    assert_eq!(cert("e-erase")["rows_removed"], 6, "B's own record of six rows");
    assert_eq!(cert("s-erase-by-b")["rows_removed"], 0);

    // Later records: P under a third insurance at B is refused by the core (the ID4 key is now the person's,
    // everywhere); S keeps flowing from A; S from B (the hospital that asked) is refused at the gateway.
    let p_again = insured_as(valid_record("PERSONP"), "99PERSONP");
    let receipt = push(&mut b, vec![batch("p-b-2", vec![p_again])]).await.unwrap();
    assert_eq!(
        receipt.accepted, 1,
        "the gateway does not know B's patient is A's opted-out P"
    );
    let s_at_b = insured_as(valid_record("PERSONS"), "88PERSONS");
    let receipt = push(&mut b, vec![batch("s-b", vec![s_at_b])]).await.unwrap();
    assert_eq!(receipt.rejected[0].reason, "OPTED_OUT");
    push(&mut a, vec![batch("s-a-2", vec![valid_record("PERSONS")])])
        .await
        .unwrap();
    // Q at B again, now with kana: the record is refused (its ID4 key is Q's), and it is the link that shows
    // Q's earlier record at B is Q's — that one leaves research too.
    let q_again = insured_as(valid_record("PERSONQ"), "88PERSONQ");
    assert_eq!(
        push(&mut b, vec![batch("q-b-2", vec![q_again])])
            .await
            .unwrap()
            .accepted,
        1
    );
    let drained = core_drain(&home);
    assert_eq!(drained["records_refused"], 2, "{drained}");
    // P's third insurance and Q's insurance at B: both linked to a stopped person by their refused records.
    assert_eq!(drained["keys_linked"], 2, "{drained}");
    assert_eq!(rows_of(&home, "patients", &["p-b-2", "q-b-2"]), 0);
    assert_eq!(research_rows_of(&home, "patients", &["s-a", "s-a-2"]), 2);
    assert_eq!(
        research_rows_of(&home, "encounters", &["q-b"]),
        0,
        "Q's earlier record at B"
    );

    // B makes up a record under T's name (ID4 only) and then erases "its patient" by name: only the made-up
    // record is destroyed; A's record of T is not.
    let mut fake = valid_record("FAKET");
    fake.insurance = None;
    fake.kana_name = t.kana_name.clone();
    push(&mut b, vec![batch("fake-t", vec![fake])]).await.unwrap();
    core_drain(&home);
    b.erase(id4(&t, "t-erase-after-fake")).await.unwrap();
    core_drain(&home);
    for table in CLINICAL_TABLES {
        assert_eq!(
            rows_of(&home, table, &["t-a"]),
            1,
            "{table}: a made-up record let B destroy A's data"
        );
        assert_eq!(rows_of(&home, table, &["fake-t"]), 0, "{table}");
    }
    let log = std::fs::read_to_string(home.path().join("log/erasure-certificates.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["request_id"].as_str(), last["rows_removed"].as_u64()),
        (Some("t-erase-after-fake"), Some(6))
    );
    drop(gw);
}

/// The attack from issue 18: four all-rejected batches of 0.8 MB left a 102 MB `index.log` and 340 MiB of
/// memory after a restart (baseline 58 MiB), because every rejection was kept for good. Now a batch keeps its
/// rejection counts per reason and its first 1,000 rejections; a restart returns to a fresh gateway's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_rejected_batches_leave_a_small_index_and_a_restart_returns_to_baseline_memory() {
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(1500));
    let fresh = Home::new();
    let baseline = {
        let gw = fresh.start();
        settle().await;
        process_memory(gw.child.id(), "VmRSS")
    };
    let home = Home::new();
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let rejected = |b: &str| {
        let records: Vec<PatientRecord> = (0..5_000)
            .map(|i| {
                let mut r = valid_record(&format!("{b}-{i}"));
                r.birth_date = "1950-13-45".into();
                r
            })
            .collect();
        batch(b, records)
    };
    for b in ["rj-1", "rj-2", "rj-3", "rj-4"] {
        let receipt = push(&mut a, vec![rejected(b)]).await.unwrap();
        assert_eq!((receipt.accepted, receipt.rejected_total), (0, 5_000));
    }
    core_drain(&home);
    // The gateway applies the core's acknowledgement within a few seconds: segments summarised, then deleted.
    let index = home.spool().join("index.log");
    for _ in 0..100 {
        if index.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut gw = gw;
    gw.terminate();
    let index_bytes = std::fs::metadata(&index).expect("index.log").len();
    assert!(
        index_bytes < 1 << 20,
        "index.log is {index_bytes} bytes for 20,000 rejections"
    );

    let gw = home.start();
    settle().await;
    let after = process_memory(gw.child.id(), "VmRSS");
    assert!(
        after <= baseline + baseline / 10,
        "{} MiB after restart against a fresh gateway's {} MiB",
        after >> 20,
        baseline >> 20
    );
    // A resent batch is still answered from its summary: every rejection counted, the first 1,000 listed.
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let receipt = push(&mut a, vec![rejected("rj-2")]).await.unwrap();
    assert!(receipt.batches[0].replayed);
    assert_eq!(receipt.rejected_total, 5_000);
    assert_eq!(receipt.batches[0].rejected, 5_000);
    assert_eq!(receipt.rejected.len(), 1_000);
    assert_eq!(receipt.rejected_by_reason[0].count, 5_000);
    eprintln!(
        "index.log {index_bytes} bytes; RSS {} MiB after restart, fresh {} MiB",
        after >> 20,
        baseline >> 20
    );
}

/// An operator's query as an insider would try to read it: the rows come back sealed to the operator's client, so
/// the committee zone's database never holds them and a second operator following the order sees its state only; a
/// researcher is refused before anything is queued; a query that would write is refused by the core; the ledger
/// keeps the query's shape, never its literals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sql_rows_never_rest_in_the_committee_zone() {
    let home = Home::new();
    {
        let gw = home.start();
        let mut a = gw.client(&home, HOSPITAL_A).await;
        push(
            &mut a,
            vec![batch("sq", vec![valid_record("SQ1"), valid_record("SQ2")])],
        )
        .await
        .unwrap();
    }
    core_drain(&home);
    common::people::ensure_operator_session(home.path());
    let op2 = common::people::invite(home.path(), &[], "op2", "platform", "operator");
    let rika = common::people::invite(home.path(), &[], "rika", "univ-a", "researcher");
    let core = CoreWithOrders::start(home.path(), &[]);
    let service = core.client_env(home.path());
    // The operator's own session is the one saved in the home; others pass theirs.
    let client = |session: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(tokumei_bin());
        cmd.env("TOKUMEI_HOME", home.path())
            .env("RUST_LOG", "warn")
            .envs(service.iter().map(|(k, v)| (k, v)))
            .arg("--json")
            .args(args);
        if let Some(s) = session {
            cmd.env("TOKUMEI_SESSION", s);
        }
        cmd.bounded_output().expect("tokumei")
    };
    let out = client(
        None,
        &[
            "sql",
            "SELECT linkage_key FROM patients ORDER BY linkage_key",
            "--all-rows",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<String> = rows
        .iter()
        .map(|r| r["linkage_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2);
    // The committee zone's database, WAL included, holds neither key: the rows crossed it sealed.
    let policy_bytes: Vec<u8> = ["policy.db", "policy.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(home.path().join("policy").join(f)).ok())
        .flatten()
        .collect();
    for k in &keys {
        assert!(
            !contains(&policy_bytes, k),
            "a linkage key rests in the policy database"
        );
    }
    // The order as its operator, as another operator, as a researcher.
    let order = |session: Option<&str>| client(session, &["store", "order", "--id", "1"]);
    let mine: serde_json::Value = serde_json::from_slice(&order(None).stdout).unwrap();
    assert_eq!(mine["operation"], "sql", "{mine}");
    assert!(mine["result"]["sealed"].is_string(), "{mine}");
    assert!(!mine.to_string().contains(&keys[0]), "the report holds a row in clear");
    let theirs: serde_json::Value = serde_json::from_slice(&order(Some(&op2.session)).stdout).unwrap();
    assert_eq!(theirs["state"], "done", "{theirs}");
    assert!(
        theirs["result"].is_null(),
        "another operator read the sealed rows: {theirs}"
    );
    // A researcher may not query the store at all; a query that writes is refused by the core.
    let refused = client(Some(&rika.session), &["sql", "SELECT count(*) AS n FROM patients"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ROLE_NOT_PERMITTED"));
    for write in [
        "CREATE TABLE copy AS SELECT * FROM patients",
        "INSERT INTO patients SELECT * FROM patients",
        "DROP TABLE patients",
    ] {
        let out = client(None, &["sql", write]);
        assert!(!out.status.success(), "{write} ran");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("SQL_"),
            "{write}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A literal in the query reaches the core, never the ledger.
    let literal = format!("SELECT count(*) AS n FROM patients WHERE linkage_key = '{}'", keys[0]);
    let out = client(None, &["sql", &literal, "--all-rows"]);
    let n: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(n[0]["n"], 1);
    drop(core);
    let auditor = common::people::invite(home.path(), &[], "audra", "audit-o", "auditor");
    let bundle = home.path().join("bundle.json");
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today.to_string(), (today + chrono::Duration::days(2)).to_string());
    common::people::run_client(
        home.path(),
        &[],
        &auditor,
        &[
            "audit",
            "export",
            "--from",
            &from,
            "--to",
            &to,
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    let ledger = std::fs::read_to_string(&bundle).unwrap();
    assert!(
        ledger.contains("linkage_key = ?"),
        "the query's shape is not on the ledger"
    );
    for k in &keys {
        assert!(!ledger.contains(k.as_str()), "a linkage key is on the ledger");
    }
    let entries: serde_json::Value = serde_json::from_str(&ledger).unwrap();
    let sql_outcomes: Vec<String> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "core.sql")
        .map(|e| {
            format!(
                "{} {}",
                e["outcome"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(sql_outcomes.len(), 5, "{sql_outcomes:?}");
    assert_eq!(
        sql_outcomes.iter().filter(|o| o.starts_with("failed SQL_")).count(),
        3,
        "{sql_outcomes:?}"
    );
}
