//! The core's side of the spool against a real gateway process: the mutual-TLS spool service (only the core's
//! certificate may pull and acknowledge), live delivery in spool order, trimming after acknowledgements, and
//! idempotent replays of batches whose segments were already deleted.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use tokumei_ingest::client::{ClientError, push};
use tokumei_ingest::gateway::status_reason;
use tokumei_ingest::spool::{Position, list_segments, read_ack, usage};
use tokumei_ingest::spool_feed::{FedEntry, FeedError, LocalFeed, RemoteFeed, SpoolFeed};
use tokumei_proto::ingest::v1::{PatientRecord, PatientRequest, PushReceipt, RecordBatch};
use tokumei_proto::spool::v1::spool_entry::Entry;
use tokumei_proto::spool::v1::spool_service_client::SpoolServiceClient;
use tokumei_proto::spool::v1::{AckRequest, PullRequest};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn batch(id: &str, records: Vec<PatientRecord>) -> RecordBatch {
    RecordBatch {
        batch_id: id.into(),
        records,
    }
}

fn records(prefix: &str, n: usize) -> Vec<PatientRecord> {
    (0..n).map(|i| valid_record(&format!("{prefix}{i}"))).collect()
}

/// A home whose gateway serves the spool service on a free port; small segments so that trimming has work.
fn spool_home() -> (Home, String) {
    let port = free_port();
    let home = Home::with_config(&format!(
        "spool_listen = \"127.0.0.1:{port}\"\n[spool]\nsegment_bytes = 2048\n"
    ));
    (home, format!("https://127.0.0.1:{port}"))
}

async fn core_feed(home: &Home, url: &str, after: Option<Position>) -> RemoteFeed {
    RemoteFeed::connect(
        url,
        &home.pki.ca_cert(),
        &home.pki.core_cert(),
        &home.pki.core_key(),
        after,
    )
    .await
    .expect("core connects to the spool service")
}

async fn raw_client(url: &str, ca: &Path, cert: &Path, key: &Path) -> Result<SpoolServiceClient<Channel>, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    let ch = Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(SpoolServiceClient::new(ch))
}

fn batch_id(e: &FedEntry) -> String {
    match &e.entry.entry {
        Some(Entry::Batch(b)) => b.batch_id.clone(),
        Some(Entry::Request(r)) => format!("request:{}", r.request_id),
        None => String::new(),
    }
}

/// Pulls until `n` entries arrived (or the deadline passes).
async fn pull_n(feed: &mut dyn SpoolFeed, n: usize) -> Vec<FedEntry> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(feed.next_chunk(64 << 10, Duration::from_secs(2)).await.expect("pull"));
    }
    out
}

fn receipt_position(r: &PushReceipt) -> Position {
    let (s, o) = r.batches[0].spool_position.split_once(':').expect("segment:offset");
    Position {
        segment: s.parse().unwrap(),
        offset: o.parse().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_pulls_in_order_and_live_and_its_ack_trims_the_spool() {
    let (home, url) = spool_home();
    let mut gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut b = gw.client(&home, HOSPITAL_B).await;
    let mut expected = Vec::new();
    for i in 0..6 {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        let r = push(c, vec![batch(&format!("s-{i}"), records(&format!("S{i}-"), 4))])
            .await
            .unwrap();
        expected.push((format!("s-{i}"), receipt_position(&r)));
    }
    assert!(
        list_segments(&home.spool()).unwrap().len() > 2,
        "small segments expected"
    );

    // Everything so far, in spool order, with the positions the receipts named.
    let mut feed = core_feed(&home, &url, None).await;
    assert!(feed.describe().contains(&url));
    let got = pull_n(&mut feed, 6).await;
    let got_ids: Vec<(String, Position)> = got.iter().map(|e| (batch_id(e), e.position)).collect();
    assert_eq!(got_ids, expected);
    assert!(
        got.iter()
            .all(|e| matches!(&e.entry.entry, Some(Entry::Batch(b)) if b.records.len() == 4))
    );

    // Live: a batch pushed while the core waits arrives on the open stream.
    let pusher = {
        let mut a = gw.client(&home, HOSPITAL_A).await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            push(&mut a, vec![batch("s-live", records("LIVE-", 2))]).await.unwrap()
        })
    };
    let live = pull_n(&mut feed, 1).await;
    let live_receipt = pusher.await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(batch_id(&live[0]), "s-live");
    assert_eq!(live[0].position, receipt_position(&live_receipt));

    // Acknowledge everything: every old segment goes (the active one is rotated away), the ack is on disk.
    let last = live[0].position;
    feed.ack(last).await.unwrap();
    assert_eq!(read_ack(&home.spool()).unwrap(), Some(last));
    let segs = list_segments(&home.spool()).unwrap();
    assert_eq!(segs.len(), 1, "only the fresh active segment remains: {segs:?}");
    assert!(segs[0] > last.segment);
    assert!(spool_batches(&home.spool()).is_empty());
    let u = usage(&home.spool()).unwrap();
    assert_eq!(u.acked, Some(last));
    assert!(u.index_bytes > 0);

    // The stream keeps going across the rotation.
    let r = push(&mut a, vec![batch("s-after", records("AFTER-", 1))])
        .await
        .unwrap();
    let next = pull_n(&mut feed, 1).await;
    assert_eq!(next.len(), 1);
    assert_eq!(batch_id(&next[0]), "s-after");
    assert_eq!(next[0].position, receipt_position(&r));

    // A fresh core resuming at its acknowledged position gets exactly the rest.
    let mut resumed = core_feed(&home, &url, Some(last)).await;
    let rest = pull_n(&mut resumed, 1).await;
    assert_eq!(
        rest.iter().map(batch_id).collect::<Vec<_>>(),
        vec!["s-after".to_string()]
    );

    // Raw protocol: max_entries ends the stream; positions that are not durable or no longer there are refused.
    let mut raw = raw_client(&url, &home.pki.ca_cert(), &home.pki.core_cert(), &home.pki.core_key())
        .await
        .unwrap();
    let mut s = raw
        .pull(PullRequest {
            after_seq: 0,
            has_after: false,
            max_entries: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let f = s.message().await.unwrap().unwrap();
    assert_eq!(Position::from_seq(f.seq), next[0].position);
    assert!(s.message().await.unwrap().is_none(), "stream ends after max_entries");
    let beyond = Position {
        segment: next[0].position.segment + 5,
        offset: 8,
    };
    let e = raw
        .ack(AckRequest {
            upto_seq: beyond.to_seq(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert_eq!(status_reason(&e).as_deref(), Some("SPOOL_POSITION_BEYOND_END"));
    let e = raw
        .pull(PullRequest {
            after_seq: expected[0].1.to_seq(),
            has_after: true,
            max_entries: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(status_reason(&e).as_deref(), Some("SPOOL_POSITION_TRIMMED"));
    // A lower acknowledgement does not move the acknowledgement back.
    let reply = raw
        .ack(AckRequest {
            upto_seq: expected[0].1.to_seq(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(Position::from_seq(reply.acked_seq), last);
    assert_eq!(reply.segments_removed, 0);

    // A graceful shutdown does not wait for the core to hang up: open pull streams are ended.
    let status = gw.terminate();
    assert!(status.success(), "gateway exited with {status}");
    assert!(feed.next_chunk(1 << 20, Duration::from_secs(5)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_core_certificate_may_use_the_spool_service() {
    let (home, url) = spool_home();
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    push(&mut a, vec![batch("x-1", records("X", 1))]).await.unwrap();

    // A hospital's certificate from the same CA: TLS succeeds, the service refuses.
    let mut feed = RemoteFeed::connect(
        &url,
        &home.pki.ca_cert(),
        &home.pki.hospital_cert(HOSPITAL_A),
        &home.pki.hospital_key(HOSPITAL_A),
        None,
    )
    .await
    .unwrap();
    match feed.next_chunk(1 << 20, Duration::from_secs(2)).await {
        Err(FeedError::Status(s)) => {
            assert_eq!(s.code(), Code::PermissionDenied);
            assert_eq!(status_reason(&s).as_deref(), Some("NOT_THE_CORE"));
        }
        other => panic!("a hospital pulled the spool: {other:?}"),
    }
    let mut raw = raw_client(
        &url,
        &home.pki.ca_cert(),
        &home.pki.hospital_cert(HOSPITAL_B),
        &home.pki.hospital_key(HOSPITAL_B),
    )
    .await
    .unwrap();
    let e = raw.ack(AckRequest { upto_seq: 1 << 40 }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(status_reason(&e).as_deref(), Some("NOT_THE_CORE"));
    assert_eq!(read_ack(&home.spool()).unwrap(), None);

    // A core certificate from another CA: the handshake fails, nothing reaches the service.
    let other = tempfile::tempdir().unwrap();
    let other_pki = tokumei_ingest::pki::PkiLayout::new(other.path());
    tokumei_ingest::pki::init(&other_pki, &[], &[]).unwrap();
    let foreign = async {
        let mut c = raw_client(&url, &home.pki.ca_cert(), &other_pki.core_cert(), &other_pki.core_key()).await?;
        c.pull(PullRequest::default())
            .await
            .map_err(|s| s.to_string())?
            .into_inner()
            .message()
            .await
            .map_err(|s| s.to_string())
    };
    let r = foreign.await;
    assert!(r.is_err(), "a certificate from a foreign CA got through: {r:?}");
    if let Err(msg) = &r {
        assert!(
            !msg.contains("NOT_THE_CORE"),
            "the foreign certificate reached the service: {msg}"
        );
    }

    // No client certificate at all.
    let no_cert = async {
        let tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(home.pki.ca_cert()).unwrap()));
        let ch = Endpoint::from_shared(url.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        SpoolServiceClient::new(ch)
            .pull(PullRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| s.to_string())
    };
    assert!(no_cert.await.is_err(), "a client without a certificate got through");

    // Plaintext HTTP/2 to the TLS listener.
    let plain = async {
        let ch = Endpoint::from_shared(url.replace("https://", "http://"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        SpoolServiceClient::new(ch)
            .pull(PullRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| s.to_string())
    };
    assert!(plain.await.is_err(), "a plaintext connection got through");

    // The core itself is served.
    let mut core = core_feed(&home, &url, None).await;
    assert_eq!(pull_n(&mut core, 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_are_trimmed_yet_replays_and_opt_outs_survive_restarts() {
    // Local mode: the core reads the spool directory and acknowledges by writing core.ack.
    let home = Home::with_config("[spool]\nsegment_bytes = 4096\n");
    let mut gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut bad = valid_record("T-BAD");
    bad.birth_date = "1950-02-30".into();
    let sent = vec![valid_record("T-1"), bad, valid_record("T-2")];
    let first = push(&mut a, vec![batch("t-1", sent.clone())]).await.unwrap();
    assert_eq!((first.accepted, first.rejected.len()), (2, 1));
    let patient = valid_record("T-OPT");
    let r = a
        .opt_out(PatientRequest {
            request_id: "t-req".into(),
            insurance: patient.insurance.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, "RECORDED");
    for i in 0..4 {
        push(
            &mut a,
            vec![batch(&format!("t-fill-{i}"), records(&format!("F{i}-"), 3))],
        )
        .await
        .unwrap();
    }

    unlock_spool(&home.spool());
    let mut feed = LocalFeed::open(&home.spool(), None).unwrap();
    let got = pull_n(&mut feed, 6).await;
    assert_eq!(got.len(), 6);
    assert_eq!(batch_id(&got[0]), "t-1");
    assert_eq!(batch_id(&got[1]), "request:t-req");
    let last = got[5].position;
    feed.ack(last).await.unwrap();

    // The running gateway applies the acknowledgement within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !spool_batches(&home.spool()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        spool_batches(&home.spool()).is_empty(),
        "acknowledged batches still on disk"
    );
    assert_eq!(list_segments(&home.spool()).unwrap().len(), 1);
    // Nothing clinical or identifying is kept once the segments are gone (summaries only).
    let bytes = all_bytes(&home.spool());
    for planted in ["3962002F1020", "E11.9", "1950-04-01", "06135018"] {
        assert!(!contains(&bytes, planted), "{planted} still in the spool directory");
    }

    // Restart: the registry is rebuilt from index.log; replays and conflicts behave as before the trim.
    gw.terminate();
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let again = push(&mut a, vec![batch("t-1", sent.clone())]).await.unwrap();
    assert!(again.batches[0].replayed);
    assert_eq!(again.accepted, first.accepted);
    assert_eq!(again.rejected, first.rejected);
    assert_eq!(again.batches[0].spool_position, first.batches[0].spool_position);
    let mut changed = sent.clone();
    changed[0].conditions[0].icd10 = "I10".into();
    match push(&mut a, vec![batch("t-1", changed)]).await {
        Err(ClientError::Status(s)) => {
            assert_eq!(s.code(), Code::AlreadyExists);
            assert_eq!(status_reason(&s).as_deref(), Some("BATCH_ID_REUSED"));
        }
        other => panic!("reused batch id accepted after trim: {other:?}"),
    }
    // The opt-out still holds, and its request id is still known.
    let r = push(&mut a, vec![batch("t-after", vec![patient.clone()])])
        .await
        .unwrap();
    assert_eq!(r.accepted, 0);
    assert_eq!(r.rejected[0].reason, "OPTED_OUT");
    let again = a
        .opt_out(PatientRequest {
            request_id: "t-req".into(),
            insurance: patient.insurance.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, "ALREADY_RECORDED");
    // Nothing was stored twice, and the core picks up where it acknowledged.
    let mut resumed = LocalFeed::open(&home.spool(), Some(last)).unwrap();
    let rest = pull_n(&mut resumed, 1).await;
    assert_eq!(
        rest.iter().map(batch_id).collect::<Vec<_>>(),
        vec!["t-after".to_string()]
    );
}
