//! `--insecure-dev`: the only plaintext listener, loopback only, identity from a header. Without the flag
//! nothing speaks plaintext.

mod common;

use common::*;
use tokumei_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use tokumei_proto::ingest::v1::{PushReceipt, RecordBatch};
use tonic::Code;

async fn plaintext_push(addr: &str, hospital: Option<&str>) -> Result<PushReceipt, tonic::Status> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut c = IngestServiceClient::new(ch);
    let mut req = tonic::Request::new(tokio_stream::iter(vec![RecordBatch {
        batch_id: "dev-1".into(),
        records: vec![valid_record("D1")],
    }]));
    if let Some(h) = hospital {
        req.metadata_mut().insert("x-tokumei-dev-hospital", h.parse().unwrap());
    }
    c.push(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_only_with_the_flag_and_only_on_loopback() {
    let home = Home::new();
    // Without the flag the listener speaks TLS only: a plaintext client gets nowhere.
    let tls = home.start();
    assert!(plaintext_push(&tls.addr, Some(HOSPITAL_A)).await.is_err());
    drop(tls);

    let dev = home.start_with(&["--insecure-dev"], &[]);
    let receipt = plaintext_push(&dev.addr, Some(HOSPITAL_A)).await.unwrap();
    assert_eq!(receipt.accepted, 1);
    let s = plaintext_push(&dev.addr, None).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = plaintext_push(&dev.addr, Some("not-a-code")).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    let spooled = spool_batches(&home.spool());
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0].0, HOSPITAL_A);
    drop(dev);

    // A non-loopback address is refused outright.
    let out = std::process::Command::new(tokumei_bin())
        .args([
            "ingest",
            "serve",
            "--insecure-dev",
            "--listen",
            "0.0.0.0:0",
            "--operator-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(home.path().join("tokumei.toml"))
        .env("TOKUMEI_HOME", home.path())
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
