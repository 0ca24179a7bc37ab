//! `tokumei release serve` and `tokumei release download` end to end: real binaries, real TLS, the
//! committee's approvals enforced at download time, one-time yet resumable tokens, and every transfer in
//! the audit ledger with the peer's address and never a token.
//!
//! Releases are put in the zone directly with the release crate's API (sealed with a data key wrapped by
//! the home's local keyring, which the server opens from the same `tokumei.toml`), so the test does not
//! depend on the builder.

mod common;

use common::BoundedOutput;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use common::people::{self, Committee, FileApproval, Person, approved_file_application};
use common::release_server::ReleaseServer as Server;
use common::{Home, tokumei_bin};
use tokumei_ingest::config::Config;
use tokumei_ingest::server::open_key_service;
use tokumei_policy::committee::TableRequest;
use tokumei_proto::policy::v1 as ppb;
use tokumei_proto::policy::v1::release_zone_service_client::ReleaseZoneServiceClient;
use tokumei_proto::release::v1 as pb;
use tokumei_proto::release::v1::release_service_client::ReleaseServiceClient;
use tokumei_release::sealed_file;
use tokumei_release::zone::{CopyFile, PseudonymScope, ReleaseRecord, ReleaseZone};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

const TABLES: &[(&str, &[&str])] = &[("observations", &["jlac10", "value", "date"])];

/// Size of the big file: larger than every buffer between the server and the client (HTTP/2 windows, TLS
/// records, socket buffers), so that a transfer dropped early has really not been sent whole.
const BIG: usize = 24 << 20;

fn authed<T>(message: T, person: &Person) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", person.session).parse().expect("metadata value"),
    );
    request
}

/// The `ErrorInfo` reason of a refusal, checking its domain.
fn reason(status: &Status) -> String {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "policy.tokumei");
    info.reason.clone()
}

fn assert_refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>, code: Code, expected: &str) {
    let status = result.expect_err("the call must be refused");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (code, expected),
        "{status:?}"
    );
}

fn sha256(bytes: &[u8]) -> String {
    tokumei_release::manifest::sha256_hex(bytes)
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough to defeat any buffering shortcut.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Puts release `id` of `application` in the zone with `files` as `recipient`'s copy, sealed under a
/// fresh data key wrapped by the home's keyring.
async fn put_release(home: &Home, id: &str, application: &str, recipient: &str, files: &[(&str, &[u8])]) {
    let cfg = Config::load(Some(&home.path().join("tokumei.toml"))).expect("config");
    let keys = open_key_service(&cfg, home.path(), tokumei_ingest::keyservice::KeyZone::Release)
        .await
        .expect("key service");
    let zone = ReleaseZone::new(home.path(), keys);
    let (cipher, data_key) = zone.new_data_key(id).await.expect("data key");
    let (_, fingerprint_key) = zone.new_fingerprint_key(id).await.expect("fingerprint key");
    std::fs::create_dir_all(zone.copy_dir(id, recipient).expect("copy dir")).expect("create copy dir");
    let mut copy = Vec::new();
    for (name, bytes) in files {
        let path = zone.copy_path(id, recipient, name).expect("copy path");
        sealed_file::write(&cipher, bytes, &path).expect("seal");
        copy.push(CopyFile {
            name: (*name).to_owned(),
            sha256: sha256(bytes),
            bytes: bytes.len() as u64,
        });
    }
    let record = ReleaseRecord {
        id: id.to_owned(),
        application: application.to_owned(),
        approval_revision: 1,
        built_at: Utc::now(),
        built_by: "op".into(),
        expires_on: Utc::now().date_naive() + chrono::Duration::days(90),
        tables: TABLES
            .iter()
            .map(|(t, cols)| TableRequest {
                table: (*t).to_owned(),
                columns: cols.iter().map(|c| (*c).to_owned()).collect(),
            })
            .collect(),
        copies: BTreeMap::from([(recipient.to_owned(), copy)]),
        data_key,
        fingerprint_key,
        fingerprint: BTreeMap::new(),
        pseudonym_scope: PseudonymScope::Release,
    };
    zone.commit(&record).expect("commit the release");
}

fn http_client(home: &Home) -> reqwest::Client {
    let ca = std::fs::read(home.pki.ca_cert()).expect("CA certificate");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .build()
        .expect("HTTPS client")
}

/// The JSON error body of a refused download: (status, reason).
async fn http_refusal(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("error body")).expect("JSON error body");
    assert!(body["message"].is_string(), "{body}");
    (status, body["reason"].as_str().expect("reason").to_owned())
}

async fn request_download(
    client: &mut ReleaseServiceClient<Channel>,
    person: &Person,
    release: &str,
    file: &str,
    tokens: &mut Vec<String>,
) -> pb::RequestDownloadResponse {
    let grant = client
        .request_download(authed(
            pb::RequestDownloadRequest {
                release_id: release.into(),
                file: file.into(),
            },
            person,
        ))
        .await
        .unwrap_or_else(|s| panic!("request download of {file}: {s:?}"))
        .into_inner();
    assert!(
        grant.url.ends_with(&format!("/v1/downloads/{}", grant.token)),
        "URL carries the token"
    );
    assert!(!format!("{grant:?}").contains(&grant.token), "Debug redacts the token");
    tokens.push(grant.token.clone());
    grant
}

/// `tokumei --json release download ...` as `person`: the JSON summary, or the error text.
fn cli_download(
    home: &Home,
    person: &Person,
    server: &Server,
    out: &Path,
    extra: &[&str],
) -> Result<serde_json::Value, String> {
    let output = Command::new(tokumei_bin())
        .args(["--json", "release", "download", "--server"])
        .arg(format!("https://{}", server.grpc))
        .arg("--ca")
        .arg(home.pki.ca_cert())
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("TOKUMEI_HOME", home.path())
        .env("TOKUMEI_SESSION", &person.session)
        .env_remove("TOKUMEI_POLICY_DB")
        .bounded_output()
        .expect("run tokumei release download");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("JSON summary"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

struct World {
    home: Home,
    committee: Committee,
    rika: Person,
    nao: Person,
    /// Approved for rika until next year, 100 downloads: release R-<main>-1.
    main: String,
    /// Expired two days ago: release R-<expired>-1.
    expired: String,
    /// One download only: release R-<limited>-1.
    limited: String,
}

fn world() -> World {
    let home = Home::new();
    let db: &[(&str, &str)] = &[];
    let committee = people::committee(home.path(), db);
    let rika = people::invite(home.path(), db, "rika", "univ-a", "researcher");
    let nao = people::invite(home.path(), db, "nao", "univ-b", "researcher");
    let today = Utc::now().date_naive();
    let approve = |expires_on, max_downloads| {
        approved_file_application(
            home.path(),
            db,
            &committee,
            &rika,
            &FileApproval {
                recipients: &["rika"],
                expires_on,
                max_downloads,
                tables: TABLES,
                amends: None,
            },
        )
    };
    let main = approve(today + chrono::Duration::days(180), 100);
    let expired = approve(today - chrono::Duration::days(2), 10);
    let limited = approve(today + chrono::Duration::days(180), 1);
    World {
        home,
        committee,
        rika,
        nao,
        main,
        expired,
        limited,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_delivery_end_to_end() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let w = world();
    let home = &w.home;
    let big = noise(BIG, 7);
    let codebook = br#"{"observations": {"jlac10": "JLAC10 code", "value": "result", "date": "YYYY-MM"}}"#.to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "files": [{"name": "observations.csv", "sha256": sha256(&big), "bytes": big.len(), "rows": 123_456}]
    }))
    .expect("manifest");
    let main_release = format!("R-{}-1", w.main);
    put_release(
        home,
        &main_release,
        &w.main,
        "rika",
        &[
            ("observations.csv", &big),
            ("codebook.json", &codebook),
            ("manifest.json", &manifest),
        ],
    )
    .await;
    let small = noise(10_000, 11);
    let expired_release = format!("R-{}-1", w.expired);
    put_release(
        home,
        &expired_release,
        &w.expired,
        "rika",
        &[("observations.csv", &small)],
    )
    .await;
    let limited_release = format!("R-{}-1", w.limited);
    put_release(
        home,
        &limited_release,
        &w.limited,
        "rika",
        &[("observations.csv", &small)],
    )
    .await;

    let log = home.path().join("release-serve.log");
    let server = Server::start(home, &log, &[]);
    let mut client = server.client(home).await;
    let http = http_client(home);
    let mut tokens: Vec<String> = Vec::new();

    // --- Listing: the recipient sees her three copies with their files; someone else sees nothing.
    let listing = client
        .list_releases(authed(pb::ListReleasesRequest::default(), &w.rika))
        .await
        .expect("list releases")
        .into_inner();
    let ids: Vec<&str> = listing.releases.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let main = listing
        .releases
        .iter()
        .find(|r| r.id == main_release)
        .expect("main release listed");
    assert_eq!(main.application, w.main);
    assert_eq!(main.standing, "AVAILABLE");
    let expired = listing
        .releases
        .iter()
        .find(|r| r.id == expired_release)
        .expect("expired release listed");
    assert_eq!(
        (expired.standing.as_str(), expired.files.len()),
        ("APPROVAL_EXPIRED", 0),
        "an expired copy is listed with its reason and no files to fetch"
    );
    let listed: BTreeMap<&str, (&str, u64)> = main
        .files
        .iter()
        .map(|f| (f.name.as_str(), (f.sha256.as_str(), f.bytes)))
        .collect();
    assert_eq!(listed["observations.csv"], (sha256(&big).as_str(), BIG as u64));
    let others = client
        .list_releases(authed(pb::ListReleasesRequest::default(), &w.nao))
        .await
        .expect("list releases")
        .into_inner();
    assert!(others.releases.is_empty());
    // Every call is in the audit ledger, listings and sessionless calls included.
    let _ = client
        .list_releases(Request::new(pb::ListReleasesRequest::default()))
        .await;
    let entries = people::ledger(home.path()).await;
    let listed_by = |who: &str, outcome: &str| {
        entries
            .iter()
            .filter(|e| e.action == "rpc.ListReleases" && e.actor == who && e.outcome == outcome)
            .count()
    };
    assert_eq!((listed_by("rika", "ok"), listed_by("nao", "ok")), (1, 1));
    assert!(entries.iter().any(|e| e.action == "rpc.ListReleases"
        && e.actor == "anonymous"
        && e.reason.as_deref() == Some("SESSION_INVALID")));

    // --- No session, a forged session, a non-recipient.
    assert_refused(
        client
            .request_download(Request::new(pb::RequestDownloadRequest {
                release_id: main_release.clone(),
                file: "observations.csv".into(),
            }))
            .await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    let forged = Person {
        username: "rika".into(),
        session: "tks1.forged.forged".into(),
    };
    assert_refused(
        client
            .request_download(authed(
                pb::RequestDownloadRequest {
                    release_id: main_release.clone(),
                    file: "observations.csv".into(),
                },
                &forged,
            ))
            .await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    assert_refused(
        client
            .request_download(authed(
                pb::RequestDownloadRequest {
                    release_id: main_release.clone(),
                    file: "observations.csv".into(),
                },
                &w.nao,
            ))
            .await,
        Code::PermissionDenied,
        "NOT_RECIPIENT",
    );
    assert_refused(
        client
            .request_download(authed(
                pb::RequestDownloadRequest {
                    release_id: main_release.clone(),
                    file: "secrets.csv".into(),
                },
                &w.rika,
            ))
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );

    // --- The CLI downloads the whole copy, resuming observations.csv from a partial file left behind.
    let out = home.path().join("download");
    std::fs::create_dir_all(&out).expect("out dir");
    let resume_at = 3_000_000usize;
    std::fs::write(out.join("observations.csv.partial"), &big[..resume_at]).expect("partial file");
    let summary = cli_download(home, &w.rika, &server, &out, &["--release", &main_release])
        .unwrap_or_else(|e| panic!("download failed: {e}"));
    let files = summary["files"].as_array().expect("files");
    assert_eq!(files.len(), 3, "{summary}");
    let obs = files
        .iter()
        .find(|f| f["name"] == "observations.csv")
        .expect("observations in the summary");
    assert_eq!(obs["status"], "downloaded");
    assert_eq!(obs["resumed_from"], resume_at as u64, "{summary}");
    assert_eq!(obs["transferred"], (BIG - resume_at) as u64, "{summary}");
    assert_eq!(
        std::fs::read(out.join("observations.csv")).expect("downloaded file"),
        big
    );
    assert_eq!(std::fs::read(out.join("codebook.json")).expect("codebook"), codebook);
    assert_eq!(std::fs::read(out.join("manifest.json")).expect("manifest"), manifest);
    assert!(!out.join("observations.csv.partial").exists());
    // Run again: everything is in place with the right hash, nothing is fetched (no download used).
    let again = cli_download(home, &w.rika, &server, &out, &["--release", &main_release])
        .unwrap_or_else(|e| panic!("second run failed: {e}"));
    assert!(
        again["files"]
            .as_array()
            .expect("files")
            .iter()
            .all(|f| f["status"] == "already_present"),
        "{again}"
    );
    // Someone else cannot, with the CLI either.
    let err = cli_download(
        home,
        &w.nao,
        &server,
        &home.path().join("nao"),
        &["--release", &main_release],
    )
    .expect_err("nao holds no copy");
    assert!(err.contains("[NOT_FOUND]"), "{err}");

    // --- One token: HEAD, ranges, a refused range, resumption, then used up.
    let grant = request_download(&mut client, &w.rika, &main_release, "observations.csv", &mut tokens).await;
    assert_eq!(
        (grant.bytes, grant.sha256.as_str()),
        (BIG as u64, sha256(&big).as_str())
    );
    assert!(
        grant.expires_at > Utc::now().timestamp() + 200,
        "default lifetime is 300 s"
    );
    let head = http.head(&grant.url).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], BIG.to_string().as_str());
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    assert_eq!(head.headers()["etag"], format!("\"{}\"", sha256(&big)).as_str());
    assert!(
        head.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .contains("observations.csv")
    );
    let r = http
        .get(&grant.url)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .expect("range request");
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 100-199/{BIG}").as_str());
    assert_eq!(r.headers()["content-length"], "100");
    assert_eq!(r.bytes().await.expect("body").as_ref(), &big[100..200]);
    let r = http
        .get(&grant.url)
        .header("Range", "bytes=-10")
        .send()
        .await
        .expect("suffix range");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &big[BIG - 10..]);
    let r = http
        .get(&grant.url)
        .header("Range", format!("bytes={BIG}-"))
        .send()
        .await
        .expect("unsatisfiable range");
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], format!("bytes */{BIG}").as_str());
    assert_eq!(http_refusal(r).await, (416, "RANGE_NOT_SATISFIABLE".to_owned()));
    // A transfer dropped after a couple of MiB, then resumed on the same token from where it stopped.
    let mut received = Vec::new();
    {
        let mut r = http.get(&grant.url).send().await.expect("full GET");
        assert_eq!(r.status(), 200);
        while received.len() < 2 << 20 {
            let chunk = r.chunk().await.expect("chunk").expect("more bytes");
            received.extend_from_slice(&chunk);
        }
    } // Dropped: the connection (or HTTP/2 stream) is reset.
    let r = http
        .get(&grant.url)
        .header("Range", format!("bytes={}-", received.len()))
        .send()
        .await
        .expect("resume");
    assert_eq!(r.status(), 206, "the token still resumes after a partial transfer");
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes {}-{}/{BIG}", received.len(), BIG - 1).as_str()
    );
    received.extend_from_slice(&r.bytes().await.expect("rest"));
    assert_eq!(received.len(), BIG);
    assert_eq!(sha256(&received), sha256(&big), "resumed download is the file");
    // Every byte has now been sent once: the token is used up.
    let r = http.get(&grant.url).send().await.expect("GET after use");
    assert_eq!(http_refusal(r).await, (410, "TOKEN_USED".to_owned()));
    let r = http
        .get(&grant.url)
        .header("Range", "bytes=0-0")
        .send()
        .await
        .expect("range after use");
    assert_eq!(http_refusal(r).await, (410, "TOKEN_USED".to_owned()));
    // Unknown and malformed tokens.
    let unknown = format!("https://{}/v1/downloads/{}", server.https, "A".repeat(43));
    assert_eq!(
        http_refusal(http.get(&unknown).send().await.expect("GET")).await,
        (404, "TOKEN_INVALID".to_owned())
    );
    let malformed = format!("https://{}/v1/downloads/not-a-token", server.https);
    assert_eq!(
        http_refusal(http.get(&malformed).send().await.expect("GET")).await,
        (404, "TOKEN_INVALID".to_owned())
    );

    // --- A small file in one request uses its token at once.
    let grant = request_download(&mut client, &w.rika, &main_release, "codebook.json", &mut tokens).await;
    let r = http.get(&grant.url).send().await.expect("GET codebook");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").as_ref(), codebook.as_slice());
    assert_eq!(
        http_refusal(http.get(&grant.url).send().await.expect("GET again")).await,
        (410, "TOKEN_USED".to_owned())
    );

    // --- The approval's conditions, enforced at download time.
    assert_refused(
        client
            .request_download(authed(
                pb::RequestDownloadRequest {
                    release_id: expired_release.clone(),
                    file: "observations.csv".into(),
                },
                &w.rika,
            ))
            .await,
        Code::FailedPrecondition,
        "APPROVAL_EXPIRED",
    );
    let grant = request_download(&mut client, &w.rika, &limited_release, "observations.csv", &mut tokens).await;
    assert_eq!(http.get(&grant.url).send().await.expect("GET").status(), 200);
    assert_refused(
        client
            .request_download(authed(
                pb::RequestDownloadRequest {
                    release_id: limited_release.clone(),
                    file: "observations.csv".into(),
                },
                &w.rika,
            ))
            .await,
        Code::FailedPrecondition,
        "DOWNLOAD_LIMIT_REACHED",
    );

    // --- Deletion declared over gRPC.
    let declared = client
        .declare_deletion(authed(
            pb::DeclareDeletionRequest {
                application_id: w.expired.clone(),
                statement: "Deleted every copy from the analysis workstation (shred -u) on expiry".into(),
            },
            &w.rika,
        ))
        .await
        .expect("declare deletion")
        .into_inner();
    assert!(declared.audit_seq > 0);
    assert_refused(
        client
            .declare_deletion(authed(
                pb::DeclareDeletionRequest {
                    application_id: w.expired.clone(),
                    statement: "not mine".into(),
                },
                &w.nao,
            ))
            .await,
        Code::PermissionDenied,
        "NOT_RECIPIENT",
    );

    // --- Nothing in plaintext: neither HTTP on the HTTPS port nor gRPC without TLS.
    let plain = plaintext_http(&server.https);
    assert!(
        !plain.starts_with(b"HTTP/"),
        "plaintext HTTP must get no HTTP answer: {:?}",
        String::from_utf8_lossy(&plain)
    );
    let plain_url = format!("http://{}/v1/downloads/{}", server.https, "A".repeat(43));
    let plain = tokio::time::timeout(Duration::from_secs(10), reqwest::Client::new().get(&plain_url).send()).await;
    assert!(!matches!(plain, Ok(Ok(ref r)) if r.status().is_success()), "{plain:?}");
    let plain_grpc = async {
        let mut c = ReleaseServiceClient::connect(format!("http://{}", server.grpc))
            .await
            .map_err(|e| e.to_string())?;
        c.list_releases(authed(pb::ListReleasesRequest::default(), &w.rika))
            .await
            .map_err(|e| e.to_string())
    };
    let plain_grpc = tokio::time::timeout(Duration::from_secs(10), plain_grpc).await;
    assert!(
        !matches!(plain_grpc, Ok(Ok(_))),
        "a plaintext gRPC client must get nowhere"
    );

    // --- A short-lived token expires (a second server on the same zone, tokens of 1 s).
    let log2 = home.path().join("release-serve-ttl.log");
    let short = Server::start(home, &log2, &["--token-ttl", "1"]);
    let mut short_client = short.client(home).await;
    let grant = request_download(&mut short_client, &w.rika, &main_release, "manifest.json", &mut tokens).await;
    assert!(grant.expires_at <= Utc::now().timestamp() + 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        http_refusal(http.get(&grant.url).send().await.expect("GET")).await,
        (410, "TOKEN_EXPIRED".to_owned())
    );
    drop(short);

    // --- The audit ledger: verified, with every transfer, its peer and range, and never a token.
    check_ledger(home, &w, &main_release, resume_at, &tokens).await;
    drop(server);
    for path in [&log, &log2] {
        let text = std::fs::read_to_string(path).expect("server log");
        for t in &tokens {
            assert!(
                !text.contains(t.as_str()),
                "a token leaked into the server log {}",
                path.display()
            );
        }
        for p in [&w.rika, &w.nao] {
            assert!(!text.contains(&p.session), "a session leaked into the server log");
        }
        // A log file is not a terminal: no colour codes for the operator's log tools to trip on.
        assert!(
            !text.contains('\u{1b}'),
            "ANSI escape codes in the server log {}",
            path.display()
        );
    }
}

/// Sends a plaintext HTTP request to `addr` and returns whatever comes back within a few seconds.
fn plaintext_http(addr: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = s.write_all(format!("GET /v1/downloads/{} HTTP/1.1\r\nHost: {addr}\r\n\r\n", "A".repeat(43)).as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

async fn check_ledger(home: &Home, w: &World, main_release: &str, resume_at: usize, tokens: &[String]) {
    let verified = people::run_client(home.path(), &[], &w.committee.op, &["audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    let entries = people::ledger(home.path()).await;
    for e in &entries {
        let text = format!(
            "{} {} {} {} {:?} {:?} {}",
            e.actor, e.action, e.resource, e.outcome, e.reason, e.source, e.details
        );
        for t in tokens {
            assert!(!text.contains(t.as_str()), "a token in audit entry {}", e.seq);
        }
    }
    let resource = format!("release {main_release}");
    let transfers: Vec<(&str, serde_json::Value, &str, Option<&str>)> = entries
        .iter()
        .filter(|e| e.action == "download.transfer" && e.resource == resource)
        .map(|e| {
            (
                e.outcome.as_str(),
                e.details_value().expect("details"),
                e.source.as_deref().unwrap_or_default(),
                e.reason.as_deref(),
            )
        })
        .collect();
    assert!(
        transfers
            .iter()
            .all(|(_, d, src, _)| src.starts_with("https:127.0.0.1:") && d["user"] == "rika"),
        "every transfer carries the peer address and the user: {transfers:?}"
    );
    let has = |outcome: &str, range: &str, file: &str| {
        transfers
            .iter()
            .any(|(o, d, _, _)| *o == outcome && d["range"] == range && d["file"] == file)
    };
    assert!(has("ok", "100-199", "observations.csv"), "{transfers:?}");
    assert!(
        has("ok", &format!("{resume_at}-{}", BIG - 1), "observations.csv"),
        "the CLI's resumption: {transfers:?}"
    );
    assert!(has("ok", &format!("0-{}", BIG - 1), "observations.csv"));
    let ok_bytes = transfers
        .iter()
        .find(|(o, d, _, _)| *o == "ok" && d["range"] == "100-199")
        .map(|(_, d, _, _)| d["bytes"].clone());
    assert_eq!(ok_bytes, Some(serde_json::json!(100)));
    for reason in ["TOKEN_USED", "TOKEN_EXPIRED", "RANGE_NOT_SATISFIABLE"] {
        assert!(
            transfers
                .iter()
                .any(|(o, _, _, r)| *o == "denied" && *r == Some(reason)),
            "{reason} audited: {transfers:?}"
        );
    }
    let admissions: Vec<_> = entries.iter().filter(|e| e.action == "download_release").collect();
    assert!(
        admissions.iter().any(|e| e.outcome == "ok"
            && e.actor == "rika"
            && e.source.as_deref().is_some_and(|s| s.starts_with("grpc:127.0.0.1:"))),
        "admitted downloads are audited with the gRPC peer"
    );
    for reason in ["APPROVAL_EXPIRED", "DOWNLOAD_LIMIT_REACHED", "NOT_RECIPIENT"] {
        assert!(
            admissions
                .iter()
                .any(|e| e.outcome == "denied" && e.reason.as_deref() == Some(reason)),
            "{reason} audited"
        );
    }
    let provision = entries
        .iter()
        .filter(|e| e.action == "provision" && e.outcome == "ok")
        .map(|e| e.details_value().expect("details"))
        .find(|d| d["description"] == format!("release {main_release} file observations.csv"))
        .expect("provisions recorded for the register");
    assert_eq!(provision["rows"], 123_456, "rows from the copy's manifest");
    let declaration = entries
        .iter()
        .find(|e| e.action == "deletion.declare")
        .expect("deletion declared");
    assert_eq!(
        (
            declaration.actor.as_str(),
            declaration.resource.as_str(),
            declaration.outcome.as_str()
        ),
        ("rika", format!("application {}", w.expired).as_str(), "ok")
    );
    assert!(declaration.source.as_deref().is_some_and(|s| s.starts_with("grpc:")));
}

/// The committee's word stops data already on its way: revoking an approval revokes its change requests,
/// kills the download tokens issued under it and cuts a transfer under way; a ban does the same to tokens
/// issued before it. Each refusal is in the audit ledger with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_and_bans_reach_issued_tokens_and_change_requests() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let home = Home::new();
    let db: &[(&str, &str)] = &[];
    let committee = people::committee(home.path(), db);
    let rika = people::invite(home.path(), db, "rika", "univ-a", "researcher");
    let expires_on = Utc::now().date_naive() + chrono::Duration::days(180);
    let approve = |amends: Option<&str>| {
        approved_file_application(
            home.path(),
            db,
            &committee,
            &rika,
            &FileApproval {
                recipients: &["rika"],
                expires_on,
                max_downloads: 100,
                tables: TABLES,
                amends,
            },
        )
    };
    let parent = approve(None);
    let change = approve(Some(&parent));
    let other = approve(None);
    // Larger than the re-check interval plus every buffer between server and client, so that the server is
    // held back by flow control before its second re-check (the revocation comes in between).
    let long = 40usize << 20;
    let big = noise(long, 5);
    let small = noise(10_000, 6);
    let (parent_release, change_release, other_release) =
        (format!("R-{parent}-1"), format!("R-{change}-1"), format!("R-{other}-1"));
    put_release(&home, &parent_release, &parent, "rika", &[("observations.csv", &big)]).await;
    put_release(&home, &change_release, &change, "rika", &[("observations.csv", &small)]).await;
    put_release(&home, &other_release, &other, "rika", &[("observations.csv", &small)]).await;

    let log = home.path().join("release-serve.log");
    let server = Server::start(&home, &log, &[]);
    let mut client = server.client(&home).await;
    let http = http_client(&home);
    let mut tokens = Vec::new();

    // Two tokens before the revocation: one used for a first range, one streaming the whole file.
    let first = request_download(&mut client, &rika, &parent_release, "observations.csv", &mut tokens).await;
    let r = http
        .get(&first.url)
        .header("Range", "bytes=0-99")
        .send()
        .await
        .expect("range");
    assert_eq!(r.status(), 206);
    let streaming = request_download(&mut client, &rika, &parent_release, "observations.csv", &mut tokens).await;
    let mut under_way = http.get(&streaming.url).send().await.expect("full GET");
    assert_eq!(under_way.status(), 200);
    let mut received = 0usize;
    while received < 1 << 20 {
        received += under_way.chunk().await.expect("chunk").expect("more bytes").len();
    }
    let change_token = request_download(&mut client, &rika, &change_release, "observations.csv", &mut tokens).await;

    let revoked = people::run_client(
        home.path(),
        db,
        &committee.chair,
        &[
            "committee",
            "revoke",
            &parent,
            "--reason",
            "data found on a public share",
        ],
    );
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let shown = people::run_client(home.path(), db, &rika, &["apply", "show", &change]);
    assert_eq!(
        shown["status"], "revoked",
        "the change request fell with its parent: {shown}"
    );

    // The transfer under way stops at its next re-check, long before the end of the file.
    let mut cut = false;
    loop {
        match under_way.chunk().await {
            Ok(Some(c)) => received += c.len(),
            Ok(None) => break,
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(
        cut && received < long,
        "the transfer ran on after the revocation: {received} bytes"
    );
    // Tokens issued before the revocation: refused with the reason, then forgotten.
    let r = http
        .get(&first.url)
        .header("Range", "bytes=100-")
        .send()
        .await
        .expect("GET");
    assert_eq!(http_refusal(r).await, (403, "APPROVAL_REVOKED".to_owned()));
    let r = http.get(&first.url).send().await.expect("GET again");
    assert_eq!(http_refusal(r).await, (404, "TOKEN_INVALID".to_owned()));
    let r = http.get(&change_token.url).send().await.expect("GET change");
    assert_eq!(http_refusal(r).await, (403, "APPROVAL_REVOKED".to_owned()));
    // Nothing new under the revoked approval or its change request.
    for release in [&parent_release, &change_release] {
        assert_refused(
            client
                .request_download(authed(
                    pb::RequestDownloadRequest {
                        release_id: release.clone(),
                        file: "observations.csv".into(),
                    },
                    &rika,
                ))
                .await,
            Code::FailedPrecondition,
            "APPROVAL_REVOKED",
        );
    }

    // The listing says so too: the revoked copies with their reason and nothing to fetch.
    let standing = |client: &mut ReleaseServiceClient<Channel>| {
        let mut client = client.clone();
        let rika = rika.clone();
        async move {
            let listing = client
                .list_releases(authed(pb::ListReleasesRequest::default(), &rika))
                .await
                .expect("list releases")
                .into_inner();
            listing
                .releases
                .into_iter()
                .map(|r| (r.id, (r.standing, r.files.len())))
                .collect::<BTreeMap<_, _>>()
        }
    };
    let listed = standing(&mut client).await;
    assert_eq!(listed[&parent_release], ("APPROVAL_REVOKED".to_owned(), 0));
    assert_eq!(listed[&change_release], ("APPROVAL_REVOKED".to_owned(), 0));
    assert_eq!(listed[&other_release], ("AVAILABLE".to_owned(), 1));

    // A ban on the recipient's organisation stops a token issued before it.
    let before_ban = request_download(&mut client, &rika, &other_release, "observations.csv", &mut tokens).await;
    people::run_client(
        home.path(),
        db,
        &committee.chair,
        &[
            "committee",
            "violation",
            "--organisation",
            "univ-a",
            "--kind",
            "use_beyond_approval",
            "--description",
            "Data shown to a company",
        ],
    );
    let r = http.get(&before_ban.url).send().await.expect("GET after the ban");
    assert_eq!(http_refusal(r).await, (403, "BANNED".to_owned()));
    assert_eq!(standing(&mut client).await[&other_release], ("BANNED".to_owned(), 0));
    let err = cli_download(
        &home,
        &rika,
        &server,
        &home.path().join("banned"),
        &["--release", &other_release],
    )
    .expect_err("a banned recipient downloads nothing");
    assert!(err.contains("[BANNED]"), "{err}");

    // The ledger: the revocation names the change request it took; every refusal is there with its reason.
    let entries = people::ledger(home.path()).await;
    let revocation = entries
        .iter()
        .find(|e| e.action == "approval.revoke" && e.outcome == "ok")
        .expect("revocation audited");
    assert_eq!(
        revocation.details_value().expect("details")["change_requests_revoked"],
        serde_json::json!([change])
    );
    let denied = |release: &str, reason: &str| {
        entries.iter().any(|e| {
            e.action == "download.transfer"
                && e.resource == format!("release {release}")
                && e.outcome == "denied"
                && e.reason.as_deref() == Some(reason)
        })
    };
    assert!(
        denied(&parent_release, "APPROVAL_REVOKED"),
        "the refused resumption is audited"
    );
    assert!(denied(&change_release, "APPROVAL_REVOKED"));
    assert!(denied(&other_release, "BANNED"));
    for e in &entries {
        let text = format!("{} {:?} {}", e.resource, e.reason, e.details);
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "a token in audit entry {}", e.seq);
        }
    }
    drop(server);
}

/// How a call ended, as the role table sees it: no session, refused for the role, or let through by the role
/// (whatever came next: success, or a refusal about this person and this approval, such as NOT_RECIPIENT).
fn classify_release<T>(result: &Result<tonic::Response<T>, Status>) -> &'static str {
    match result {
        Ok(_) => "admitted",
        Err(s) if matches!(s.code(), Code::Internal | Code::Unavailable | Code::Unknown) => {
            panic!("a server fault: {s:?}")
        }
        Err(s) => match reason(s).as_str() {
            "SESSION_INVALID" => "no session",
            "ROLE_NOT_PERMITTED" | "STRONG_AUTHENTICATION_REQUIRED" => "role refused",
            _ => "admitted",
        },
    }
}

fn maybe_authed<T>(message: T, person: Option<&Person>) -> Request<T> {
    match person {
        Some(p) => authed(message, p),
        None => Request::new(message),
    }
}

/// Every release RPC as every role: the outcome matches the documented table, and each call, refusals and calls
/// without a session included, leaves exactly one `rpc.<Method>` entry in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_release_rpc_as_every_role_matches_the_documented_table_and_is_in_the_ledger() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let w = world();
    let home = &w.home;
    let release = format!("R-{}-1", w.main);
    put_release(home, &release, &w.main, "rika", &[("observations.csv", b"a,b\n1,2\n")]).await;
    let (admin, _) = people::administrators(home.path());
    let auditor = people::invite(home.path(), &[], "audra", "audit-o", "auditor");
    let log = home.path().join("release-matrix.log");
    let server = Server::start(home, &log, &[]);
    let mut client = server.client(home).await;
    let table = common::policy_server::documented_table("release-rpc-matrix");
    assert_eq!(table.len(), 6, "every RPC of ReleaseService is in the table");
    let db = tokumei_policy::PolicyDb::open(&tokumei_policy::default_url(home.path()))
        .await
        .expect("the policy database");
    let rpc_entries = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_entries WHERE action LIKE 'rpc.%'")
            .fetch_one(db.pool())
            .await
            .expect("count")
    };
    // The recipient last: her declaration of deletion ends her use of the approval.
    let callers: [(&str, Option<&Person>); 8] = [
        ("anonymous", None),
        ("administrator", Some(&admin)),
        ("operator", Some(&w.committee.op)),
        ("auditor", Some(&auditor)),
        ("committee_member", Some(&w.committee.members[0])),
        ("committee_chair", Some(&w.committee.chair)),
        ("researcher", Some(&w.nao)),
        ("researcher", Some(&w.rika)),
    ];
    let mut wrong = Vec::new();
    for rpc in [
        "ListReleases",
        "RequestDownload",
        "TraceLeak",
        "AssessRisk",
        "DeclareDeletion",
        "CompleteBuild",
    ] {
        for (role, person) in &callers {
            let before = rpc_entries().await;
            let got = match rpc {
                "ListReleases" => classify_release(
                    &client
                        .list_releases(maybe_authed(pb::ListReleasesRequest::default(), *person))
                        .await,
                ),
                "RequestDownload" => classify_release(
                    &client
                        .request_download(maybe_authed(
                            pb::RequestDownloadRequest {
                                release_id: release.clone(),
                                file: "observations.csv".into(),
                            },
                            *person,
                        ))
                        .await,
                ),
                "AssessRisk" => classify_release(
                    &client
                        .assess_risk(maybe_authed(
                            pb::AssessRiskRequest {
                                release_id: release.clone(),
                                m: vec![],
                            },
                            *person,
                        ))
                        .await,
                ),
                "TraceLeak" => classify_release(
                    &client
                        .trace_leak(maybe_authed(
                            tokio_stream::iter(vec![pb::TraceLeakChunk {
                                release_id: release.clone(),
                                file_name: "found.csv".into(),
                                content: b"a,b\n1,2\n".to_vec(),
                                table: String::new(),
                                false_accusation_bound: 0.0,
                            }]),
                            *person,
                        ))
                        .await,
                ),
                "CompleteBuild" => classify_release(
                    &client
                        .complete_build(maybe_authed(pb::CompleteBuildRequest { order_id: 1 }, *person))
                        .await,
                ),
                _ => classify_release(
                    &client
                        .declare_deletion(maybe_authed(
                            pb::DeclareDeletionRequest {
                                application_id: w.main.clone(),
                                statement: "deleted from the analysis server, disks wiped".into(),
                            },
                            *person,
                        ))
                        .await,
                ),
            };
            let rule = table[rpc].as_str();
            let want = match (rule, person) {
                (_, None) => "no session",
                ("signed in", Some(_)) => "admitted",
                (roles, Some(_)) if roles.split(',').any(|r| r.trim() == *role) => "admitted",
                _ => "role refused",
            };
            if got != want {
                wrong.push(format!("{rpc} as {role}: {got}, the table says {want}"));
            }
            assert_eq!(
                rpc_entries().await,
                before + 1,
                "{rpc} as {role}: not exactly one ledger entry"
            );
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // A refused role learns nothing about what exists: the operator asking for a release or an application that
    // does not exist gets the same refusal as for one that does (before, NOT_FOUND told them apart).
    let missing = client
        .request_download(authed(
            pb::RequestDownloadRequest {
                release_id: "R-A-0000-1".into(),
                file: "observations.csv".into(),
            },
            &w.committee.op,
        ))
        .await;
    assert_refused(missing, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let missing = client
        .declare_deletion(authed(
            pb::DeclareDeletionRequest {
                application_id: "A-0000".into(),
                statement: "deleted".into(),
            },
            &w.committee.op,
        ))
        .await;
    assert_refused(missing, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    // Likewise a researcher tracing a release that does not exist.
    let missing = client
        .trace_leak(authed(
            tokio_stream::iter(vec![pb::TraceLeakChunk {
                release_id: "R-A-0000-1".into(),
                file_name: "found.csv".into(),
                content: b"a,b\n1,2\n".to_vec(),
                table: String::new(),
                false_accusation_bound: 0.0,
            }]),
            &w.rika,
        ))
        .await;
    assert_refused(missing, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    // A leaked file is streamed: nobody makes the zone buffer a large message. Without a session the stream is
    // refused before its first chunk is read; an operator's 2 MiB chunk is refused by the transport; an operator
    // admitted to trace is cut off past 64 MiB.
    let big = || {
        tokio_stream::iter(vec![pb::TraceLeakChunk {
            release_id: release.clone(),
            content: vec![b'x'; 2 << 20],
            ..Default::default()
        }])
    };
    assert_refused(
        client.trace_leak(Request::new(big())).await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    let status = client
        .trace_leak(authed(big(), &w.committee.op))
        .await
        .expect_err("a 2 MiB chunk was accepted");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    let mut chunks = vec![pb::TraceLeakChunk {
        release_id: release.clone(),
        file_name: "found.csv".into(),
        ..Default::default()
    }];
    chunks.extend((0..65).map(|_| pb::TraceLeakChunk {
        content: vec![b'x'; 1 << 20],
        ..Default::default()
    }));
    let flood = client
        .trace_leak(authed(tokio_stream::iter(chunks), &w.committee.op))
        .await;
    assert_refused(flood, Code::ResourceExhausted, "FILE_TOO_LARGE");
    drop(server);
}

/// A client of the policy service's `ReleaseZoneService`, presenting `identity` (certificate, key) if given.
async fn zone_client(
    home: &Home,
    addr: &str,
    identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> ReleaseZoneServiceClient<Channel> {
    let ca = std::fs::read(home.pki.ca_cert()).expect("CA certificate");
    let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            std::fs::read(cert).expect("certificate"),
            std::fs::read(key).expect("key"),
        ));
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("TLS connection to the policy service");
    ReleaseZoneServiceClient::new(channel)
}

/// Each of the thirteen calls of `ReleaseZoneService`, made with `session`; what the policy service answered.
async fn every_zone_call(
    client: &mut ReleaseZoneServiceClient<Channel>,
    session: &str,
    application: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let s = || ppb::ZoneSession {
        session: session.to_owned(),
        origin: "grpc:198.51.100.7:4000".into(),
    };
    vec![
        ("Authenticate", client.authenticate(s()).await.map(|_| ())),
        ("CheckDownloadRole", client.check_download_role(s()).await.map(|_| ())),
        ("CheckTraceRole", client.check_trace_role(s()).await.map(|_| ())),
        ("CheckRiskRole", client.check_risk_role(s()).await.map(|_| ())),
        (
            "VisibleApplications",
            client
                .visible_applications(ppb::ZoneVisibility {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    application_ids: vec![application.to_owned()],
                })
                .await
                .map(|_| ()),
        ),
        (
            "AdmitRiskReview",
            client
                .admit_risk_review(ppb::ZoneApplicationAct {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    application_id: application.to_owned(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "RecordRiskReview",
            client
                .record_risk_review(ppb::ZoneReviewRecord {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    application_id: application.to_owned(),
                    details_json: r#"{"holds":true}"#.into(),
                    failure_reason: String::new(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "AdmitTrace",
            client
                .admit_trace(ppb::ZoneApplicationAct {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    application_id: application.to_owned(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "RecordTrace",
            client
                .record_trace(ppb::ZoneTraceRecord {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    application_id: application.to_owned(),
                    details_json: r#"{"accused":["nao"]}"#.into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "AdmitDownload",
            client
                .admit_download(ppb::ZoneDownload {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    application_id: application.to_owned(),
                    tables: vec![],
                    description: "release R-x file observations.csv".into(),
                    rows: 1,
                })
                .await
                .map(|_| ()),
        ),
        (
            "DeclareDeletion",
            client
                .declare_deletion(ppb::ZoneDeletion {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    application_id: application.to_owned(),
                    statement: "deleted".into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "RecheckTransfer",
            client
                .recheck_transfer(ppb::ZoneTransfer {
                    recipient: "rika".into(),
                    application_id: application.to_owned(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "RecordEvent",
            client
                .record_event(ppb::ZoneEvent {
                    actor: "rika".into(),
                    action: "download.transfer".into(),
                    resource: "release R-x".into(),
                    outcome: "ok".into(),
                    reason: String::new(),
                    origin: "https:198.51.100.7:4001".into(),
                    details_json: "{}".into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "AdmitBuild",
            client
                .admit_build(ppb::ZoneBuildAdmission {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    order_id: 1,
                })
                .await
                .map(|_| ()),
        ),
        (
            "PublishIntakeKey",
            client
                .publish_intake_key(ppb::ZoneIntakeKey {
                    public_key: "ab".repeat(32),
                })
                .await
                .map(|_| ()),
        ),
        (
            "RecordBuild",
            client
                .record_build(ppb::ZoneBuildRecord {
                    session: session.to_owned(),
                    origin: "grpc:198.51.100.7:4000".into(),
                    order_id: 1,
                    application_id: application.to_owned(),
                    ok: true,
                    details_json: r#"{"release":"R-x-1"}"#.into(),
                    reason: String::new(),
                })
                .await
                .map(|_| ()),
        ),
    ]
}

/// The attack on the release zone, which faces researchers: an intruder there holds whatever the release service
/// holds. Before, that was the policy database and the one service key (sessions, ledger, manifests): enough to
/// approve an application in the database or mint the chair's session. Now the release service runs from a home
/// with no committee files, and what its certificate lets it do at the policy service is checked here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_intruder_in_the_release_zone_cannot_act_as_the_committee() {
    let w = world();
    let home = &w.home;
    let log = home.path().join("release-zone-intruder.log");
    let server = Server::start(home, &log, &[]);
    // Downloads work through the link (the service is up and serving from its own home)...
    let mut client = server.client(home).await;
    let listed = client
        .list_releases(authed(pb::ListReleasesRequest::default(), &w.rika))
        .await
        .expect("rika lists her releases through the release service");
    drop(listed);
    // ...and that home holds no policy database and no committee key, before or after serving.
    assert!(
        server.holds_no_committee_files(),
        "the release service's home has a policy directory"
    );
    let zone_files: Vec<String> = common::files_under(&server.zone_home);
    for forbidden in ["service.key", "core-order.key", "policy.db"] {
        assert!(
            !zone_files.iter().any(|f| f.ends_with(forbidden)),
            "the release zone can read {forbidden}"
        );
    }

    let db = tokumei_policy::PolicyDb::open(&tokumei_policy::default_url(home.path()))
        .await
        .expect("the policy database");
    let entries = |action: String| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_entries WHERE action = $1")
                .bind(action)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    let release_zone = (home.pki.release_cert(), home.pki.release_key());
    let mut zone = zone_client(home, server.policy_addr(), Some(release_zone)).await;

    // 1. With the release zone's certificate, a committee entry cannot be written: only what the zone observes.
    for forged in [
        "decision",
        "vote",
        "rpc.Decide",
        "provision",
        "login.success",
        "user.roles",
        "core.erase",
    ] {
        let before = entries(forged.to_owned()).await;
        let refused = zone
            .record_event(ppb::ZoneEvent {
                actor: w.committee.chair.username.clone(),
                action: forged.into(),
                resource: format!("application {}", w.main),
                outcome: "ok".into(),
                reason: String::new(),
                origin: "cli".into(),
                details_json: "{}".into(),
            })
            .await;
        assert_refused(refused, Code::PermissionDenied, "NOT_A_RELEASE_EVENT");
        assert_eq!(entries(forged.to_owned()).await, before, "{forged} was written");
    }
    assert!(
        entries("rpc.RecordEvent".to_owned()).await >= 7,
        "each forged event is on the ledger as a refused rpc.RecordEvent"
    );

    // 2. The chair's session, re-signed by a key the intruder could make, or by the general service key the
    //    committee host's in-process commands hold (claims intact, session id real): refused.
    let public = tokumei_policy::ServicePublicKey::read(&home.path().join("policy/session.pub")).expect("public key");
    let claims = tokumei_policy::identity::session_token::verify_signature(&public, &w.committee.chair.session)
        .expect("the chair's genuine claims");
    let general = tokumei_policy::ServiceKey::load_or_create(&home.path().join("policy/service.key")).expect("key");
    for key in [tokumei_policy::ServiceKey::generate(), general] {
        let minted = tokumei_policy::identity::session_token::issue(&key, &claims).expect("sign");
        for (method, result) in every_zone_call(&mut zone, minted.expose(), &w.main).await {
            if matches!(method, "RecheckTransfer" | "RecordEvent" | "PublishIntakeKey") {
                continue; // these carry no session
            }
            match result {
                Err(status) => assert_eq!(reason(&status), "SESSION_INVALID", "{method} with a minted session"),
                Ok(()) => panic!("{method} accepted a session minted with another key"),
            }
        }
    }

    // 3. A researcher's genuine session cannot be stretched into a trace verdict (accusing someone on the
    //    ledger) or an admission to trace: tracing is an operator's, and the policy service checks the session.
    let before = entries("trace.leak".to_owned()).await;
    let refused = zone
        .record_trace(ppb::ZoneTraceRecord {
            session: w.rika.session.clone(),
            origin: "grpc:198.51.100.7:4000".into(),
            application_id: w.main.clone(),
            details_json: r#"{"accused":["nao"]}"#.into(),
        })
        .await;
    assert_refused(refused, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let refused = zone
        .admit_trace(ppb::ZoneApplicationAct {
            session: w.rika.session.clone(),
            origin: "grpc:198.51.100.7:4000".into(),
            application_id: w.main.clone(),
        })
        .await;
    assert_refused(refused, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    assert_eq!(entries("trace.leak".to_owned()).await, before, "a verdict was written");
    // Nor into a release: claiming a build's package or recording a release is an operator's.
    let before = entries("release.build".to_owned()).await;
    let refused = zone
        .admit_build(ppb::ZoneBuildAdmission {
            session: w.rika.session.clone(),
            origin: "grpc:198.51.100.7:4000".into(),
            order_id: 1,
        })
        .await;
    assert_refused(refused, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let refused = zone
        .record_build(ppb::ZoneBuildRecord {
            session: w.rika.session.clone(),
            origin: "grpc:198.51.100.7:4000".into(),
            order_id: 1,
            application_id: w.main.clone(),
            ok: true,
            details_json: r#"{"release":"R-x-1"}"#.into(),
            reason: String::new(),
        })
        .await;
    assert_refused(refused, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    assert_eq!(
        entries("release.build".to_owned()).await,
        before,
        "a release was recorded"
    );
    // Nor into the figures of a measurement; and even with the operator's genuine session, a failure's reason must
    // be a reason code: free text (a value smuggled into the ledger) is refused.
    let before = entries("assess_release_risk".to_owned()).await;
    let refused = zone
        .record_risk_review(ppb::ZoneReviewRecord {
            session: w.rika.session.clone(),
            origin: "grpc:198.51.100.7:4000".into(),
            application_id: w.main.clone(),
            details_json: r#"{"holds":true}"#.into(),
            failure_reason: String::new(),
        })
        .await;
    assert_refused(refused, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let refused = zone
        .record_risk_review(ppb::ZoneReviewRecord {
            session: w.committee.op.session.clone(),
            origin: "grpc:198.51.100.7:4000".into(),
            application_id: w.main.clone(),
            details_json: String::new(),
            failure_reason: "patient 0042 has HbA1c 9.1".into(),
        })
        .await;
    assert_refused(refused, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        entries("assess_release_risk".to_owned()).await,
        before + 1,
        "only rika's refusal is on the ledger"
    );

    // A researcher's genuine session cannot be stretched past her approval: nao is not a recipient of main.
    let refused = zone
        .admit_download(ppb::ZoneDownload {
            session: w.nao.session.clone(),
            origin: "grpc:198.51.100.7:4000".into(),
            application_id: w.main.clone(),
            tables: vec![],
            description: format!("release R-{}-1 file observations.csv", w.main),
            rows: 10,
        })
        .await
        .expect_err("nao admitted to rika's approval");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = zone
        .recheck_transfer(ppb::ZoneTransfer {
            recipient: "nao".into(),
            application_id: w.main.clone(),
        })
        .await
        .expect_err("a transfer to nao under rika's approval");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // 4. Nobody else may use the zone's door: no certificate (with rika's real session), the core's, a hospital's.
    let others = [
        ("no certificate", None),
        (
            "the core's certificate",
            Some((home.pki.core_cert(), home.pki.core_key())),
        ),
        (
            "a hospital's certificate",
            Some((
                home.pki.hospital_cert(common::HOSPITAL_A),
                home.pki.hospital_key(common::HOSPITAL_A),
            )),
        ),
    ];
    for (who, identity) in others {
        let mut other = zone_client(home, server.policy_addr(), identity).await;
        for (method, result) in every_zone_call(&mut other, &w.rika.session, &w.main).await {
            let before = entries(format!("rpc.{method}")).await;
            match result {
                Err(status) => assert_eq!(reason(&status), "NOT_THE_RELEASE_ZONE", "{method} with {who}"),
                Ok(()) => panic!("{method} accepted {who}"),
            }
            assert!(entries(format!("rpc.{method}")).await >= before, "{method} with {who}");
        }
    }
    for method in [
        "Authenticate",
        "CheckDownloadRole",
        "CheckTraceRole",
        "AdmitTrace",
        "RecordTrace",
        "CheckRiskRole",
        "VisibleApplications",
        "AdmitRiskReview",
        "RecordRiskReview",
        "AdmitDownload",
        "DeclareDeletion",
        "RecheckTransfer",
        "RecordEvent",
        "AdmitBuild",
        "RecordBuild",
        "PublishIntakeKey",
    ] {
        assert!(
            entries(format!("rpc.{method}")).await >= 3,
            "the three refused callers of {method} are on the ledger"
        );
    }
    drop(server);
}

/// The release zone's host is compromised and its certificate replaced: the stolen certificate still chains to the
/// CA and still says `tokumei-release`, but it is no longer pinned (`pki/zone-pins.json`, rewritten by `pki init`),
/// so the policy service refuses it; the new certificate is the zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_zone_certificate_is_no_longer_the_zone() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let w = world();
    let home = &w.home;
    let stolen = home.path().join("stolen");
    std::fs::create_dir_all(&stolen).expect("dir");
    let (old_cert, old_key) = (stolen.join("release-zone.crt"), stolen.join("release-zone.key"));
    std::fs::copy(home.pki.release_cert(), &old_cert).expect("copy");
    std::fs::copy(home.pki.release_key(), &old_key).expect("copy");
    // The operators issue a new certificate: `pki init` re-issues a missing one and rewrites the pins.
    std::fs::remove_file(home.pki.release_cert()).expect("remove");
    tokumei_ingest::pki::init(&home.pki, &[], &[]).expect("pki init");
    let policy = common::policy_server::Server::start_tls(home.path());
    let session = || ppb::ZoneSession {
        session: w.rika.session.clone(),
        origin: "grpc:198.51.100.7:4000".into(),
    };
    let mut with_stolen = zone_client(home, &policy.addr, Some((old_cert, old_key))).await;
    assert_refused(
        with_stolen.authenticate(session()).await,
        Code::PermissionDenied,
        "NOT_THE_RELEASE_ZONE",
    );
    let mut current = zone_client(
        home,
        &policy.addr,
        Some((home.pki.release_cert(), home.pki.release_key())),
    )
    .await;
    let caller = current
        .authenticate(session())
        .await
        .expect("the new certificate is the release zone")
        .into_inner();
    assert_eq!(caller.username, "rika");
    drop(policy);
}
