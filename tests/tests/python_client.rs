//! The ingest contract from another stack: a hospital vendor's Python grpcio client (tests/python/) against a
//! real gateway. Needs `grpcio`, `grpcio-tools` and `grpcio-status` (scripts/test.sh installs them from PyPI and
//! sets `TOKUMEI_TEST_PYTHON`); skipped with a message without it.

mod common;

use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_sees_the_documented_contract() {
    let Some(python) = test_server("TOKUMEI_TEST_PYTHON", "Python with grpcio") else {
        return;
    };
    let home = Home::new();
    let gw = home.start();
    let creds = home.creds(HOSPITAL_A);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let endpoint = gw
        .endpoint()
        .trim_start_matches("https://")
        .replace("127.0.0.1", "localhost");
    let out = Command::new(python)
        .arg(root.join("tests/python/hospital_client.py"))
        .arg(&endpoint)
        .arg(&creds.ca)
        .arg(&creds.cert)
        .arg(&creds.key)
        .arg(root.join("proto"))
        .bounded_output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the Python client found a broken promise:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().filter(|l| l.starts_with("ok")).count() >= 11, "{stdout}");
}
