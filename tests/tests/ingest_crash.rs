//! Durability: kill -9 the gateway while hospitals push, restart it, and check that every batch that got a
//! receipt is in the spool exactly once — and that resending everything stores nothing twice.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokumei_ingest::client::{connect, push};
use tokumei_proto::ingest::v1::RecordBatch;

const ROUNDS: usize = 5;
const PUSHERS: usize = 4;

fn make_batch(round: usize, pusher: usize, i: usize) -> RecordBatch {
    let records = (0..50)
        .map(|r| valid_record(&format!("K{round}-{pusher}-{i}-{r}")))
        .collect();
    RecordBatch {
        batch_id: format!("crash-{round}-{pusher}-{i:05}"),
        records,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_push_loses_no_acknowledged_batch_and_duplicates_none() {
    let home = Home::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut sent: Vec<(usize, usize, usize)> = Vec::new();
    let sent_log: Arc<Mutex<Vec<(usize, usize, usize)>>> = Arc::default();
    for round in 0..ROUNDS {
        let mut gw = home.start();
        let endpoint = gw.endpoint();
        let mut tasks = Vec::new();
        for pusher in 0..PUSHERS {
            let creds = home.creds(if pusher % 2 == 0 { HOSPITAL_A } else { HOSPITAL_B });
            let endpoint = endpoint.clone();
            let acknowledged = acknowledged.clone();
            let sent_log = sent_log.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut c) = connect(&endpoint, &creds, 16 << 20).await else {
                    return;
                };
                for i in 0.. {
                    sent_log.lock().unwrap().push((round, pusher, i));
                    // Two batches per stream: a receipt covers both.
                    let batches = vec![make_batch(round, pusher, 2 * i), make_batch(round, pusher, 2 * i + 1)];
                    let ids: Vec<String> = batches.iter().map(|b| b.batch_id.clone()).collect();
                    match push(&mut c, batches).await {
                        Ok(r) => {
                            assert_eq!(r.accepted, 100);
                            acknowledged.lock().unwrap().extend(ids);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..600))).await;
        gw.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        // Restart and verify after every crash.
        let gw = home.start();
        let spooled = spool_batches(&home.spool());
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (_, id, records) in &spooled {
            *counts.entry(id.as_str()).or_default() += 1;
            assert_eq!(records.len(), 50, "batch {id} partially written");
        }
        for id in acknowledged.lock().unwrap().iter() {
            assert_eq!(
                counts.get(id.as_str()).copied(),
                Some(1),
                "acknowledged batch {id} lost or duplicated after crash {round}"
            );
        }
        assert!(counts.values().all(|&n| n == 1), "a batch was stored twice");
        drop(gw);
    }
    sent.extend(sent_log.lock().unwrap().iter().copied());
    assert!(
        acknowledged.lock().unwrap().len() >= ROUNDS,
        "too few receipts to prove anything"
    );

    // Hospitals retry everything they sent (acknowledged or not): nothing is stored twice.
    let gw = home.start();
    let mut a = connect(&gw.endpoint(), &home.creds(HOSPITAL_A), 16 << 20)
        .await
        .unwrap();
    let mut b = connect(&gw.endpoint(), &home.creds(HOSPITAL_B), 16 << 20)
        .await
        .unwrap();
    for (round, pusher, i) in sent {
        let c = if pusher % 2 == 0 { &mut a } else { &mut b };
        let r = push(
            c,
            vec![make_batch(round, pusher, 2 * i), make_batch(round, pusher, 2 * i + 1)],
        )
        .await
        .unwrap();
        assert_eq!(r.accepted, 100);
    }
    let spooled = spool_batches(&home.spool());
    let mut ids: Vec<&str> = spooled.iter().map(|(_, id, _)| id.as_str()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicates after retrying everything");
    for id in acknowledged.lock().unwrap().iter() {
        assert!(ids.binary_search(&id.as_str()).is_ok());
    }
}
