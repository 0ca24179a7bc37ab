//! Exactly once across crashes: hospitals push while the core is killed with SIGKILL mid-commit over and
//! over, and the gateway is killed too (while it trims acknowledged segments). At the end every batch that got
//! a receipt is in the tables exactly once — no row lost, none applied twice.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokumei_ingest::client::{connect, push};
use tokumei_proto::ingest::v1::RecordBatch;

const ROUNDS: usize = 24;
const RECORDS_PER_BATCH: usize = 20;

fn start_core(home: &Home) -> Child {
    let mut child = Command::new(tokumei_bin())
        .args(["core", "run", "--config"])
        .arg(home.path().join("tokumei.toml"))
        .env("TOKUMEI_HOME", home.path())
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn core");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("core start line");
    assert!(line.starts_with("core started"), "core did not start: {line:?}");
    child
}

fn sql_counts(home: &Home, table: &str) -> BTreeMap<String, i64> {
    let query = format!("SELECT batch_id, count(*) AS n FROM {table} GROUP BY batch_id");
    let rows = common::core_orders::operator_sql(home.path(), &[], &query, true);
    rows.iter()
        .map(|r| (r["batch_id"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_and_gateway_killed_repeatedly_apply_every_acknowledged_batch_exactly_once() {
    let home = Home::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_261_122);
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut gw = home.start();
    let mut crashes = 0;
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut pushers = Vec::new();
        for pusher in 0..2 {
            let creds = home.creds(HOSPITAL_A);
            let endpoint = gw.endpoint();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            pushers.push(tokio::spawn(async move {
                let Ok(mut c) = connect(&endpoint, &creds, 16 << 20).await else {
                    return;
                };
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = format!("c{round:02}-{pusher}-{i:04}");
                    let records = (0..RECORDS_PER_BATCH)
                        .map(|r| valid_record(&format!("{round}-{pusher}-{i}-{r}")))
                        .collect();
                    match push(
                        &mut c,
                        vec![RecordBatch {
                            batch_id: id.clone(),
                            records,
                        }],
                    )
                    .await
                    {
                        Ok(r) => {
                            assert_eq!(r.accepted as usize, RECORDS_PER_BATCH);
                            acknowledged.lock().unwrap().insert(id);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        let mut core = start_core(&home);
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        // Every third round the gateway dies too, at a random moment of its trimming and serving.
        let kill_gateway = round % 3 == 1;
        if kill_gateway {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
            gw.kill9();
            crashes += 1;
        }
        let _ = core.kill();
        let _ = core.wait();
        crashes += 1;
        stop.store(true, Ordering::SeqCst);
        for p in pushers {
            let _ = p.await;
        }
        if kill_gateway {
            gw = home.start();
        }
    }
    assert!(crashes >= 20, "only {crashes} crashes");

    // Drain what is left, with the gateway up.
    let out = Command::new(tokumei_bin())
        .args(["--json", "core", "run", "--until-drained", "--config"])
        .arg(home.path().join("tokumei.toml"))
        .env("TOKUMEI_HOME", home.path())
        .bounded_output()
        .expect("drain");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 50,
        "too little pushed to be meaningful: {}",
        acknowledged.len()
    );
    for table in ["patients", "conditions"] {
        let counts = sql_counts(&home, table);
        for id in &acknowledged {
            assert_eq!(
                counts.get(id).copied(),
                Some(RECORDS_PER_BATCH as i64),
                "{table}: batch {id}"
            );
        }
        for (id, n) in &counts {
            assert_eq!(
                *n, RECORDS_PER_BATCH as i64,
                "{table}: batch {id} applied more than once"
            );
        }
    }
    gw.terminate();
}
