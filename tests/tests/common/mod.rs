//! Shared harness: a temporary `$TOKUMEI_HOME` with a development PKI, and the real `tokumei` binary started
//! as a child process (so tests can kill -9 it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokumei_ingest::client::{HospitalCredentials, connect};
use tokumei_ingest::pki::{PkiLayout, init};
use tokumei_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use tonic::transport::Channel;

pub mod core_orders;
pub mod people;
pub mod policy_server;
pub mod release_server;

/// Hospital codes used by the tests.
pub const HOSPITAL_A: &str = "1310000017";
pub const HOSPITAL_B: &str = "2710000025";

/// The `tokumei` binary built next to this test executable (target/<profile>/tokumei), or `$TOKUMEI_BIN`.
pub fn tokumei_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TOKUMEI_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("tokumei");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p tokumei) or set TOKUMEI_BIN",
        bin.display()
    );
    bin
}

/// A temporary home with a PKI for hospitals A and B and a config on ephemeral ports.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub pki: PkiLayout,
}

impl Home {
    pub fn new() -> Home {
        Self::with_config("")
    }

    /// `extra` is appended to the generated tokumei.toml.
    pub fn with_config(extra: &str) -> Home {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = PkiLayout::new(dir.path().join("pki"));
        init(&pki, &[HOSPITAL_A.into(), HOSPITAL_B.into()], &["localhost".into()]).expect("pki");
        let mut cfg = String::from("[gateway]\nlisten = \"127.0.0.1:0\"\noperator_listen = \"127.0.0.1:0\"\n");
        cfg.push_str(extra);
        std::fs::write(dir.path().join("tokumei.toml"), cfg).expect("config");
        Home { dir, pki }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn spool(&self) -> PathBuf {
        self.path().join("spool")
    }

    pub fn creds(&self, code: &str) -> HospitalCredentials {
        HospitalCredentials {
            ca: self.pki.ca_cert(),
            cert: self.pki.hospital_cert(code),
            key: self.pki.hospital_key(code),
        }
    }

    /// Starts `tokumei ingest serve` and waits for its "listening" line.
    pub fn start(&self) -> Gateway {
        self.start_with(&[], &[])
    }

    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        self.start_logging(args, env, None)
    }

    /// As `start_with`, sending the gateway's stderr (its logs) to `log` when given.
    pub fn start_logging(&self, args: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Gateway {
        let mut cmd = Command::new(tokumei_bin());
        cmd.args(["ingest", "serve", "--config"])
            .arg(self.path().join("tokumei.toml"))
            .args(args)
            .env("TOKUMEI_HOME", self.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
                None => Stdio::inherit(),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tokumei");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read listening line");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("listening"), "gateway did not start: {line:?}");
        let addr = parts.next().expect("addr").to_string();
        let operator = parts.nth(1).expect("operator addr").to_string();
        Gateway { child, addr, operator }
    }
}

/// Drains the gateway's spool into the core (`tokumei core run --until-drained`), asserting success.
pub fn drain_core(home: &Home) {
    let out = Command::new(tokumei_bin())
        .env("TOKUMEI_HOME", home.path())
        .args(["--json", "core", "run", "--until-drained", "--config"])
        .arg(home.path().join("tokumei.toml"))
        .bounded_output()
        .expect("core");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A port on 127.0.0.1 that was free a moment ago, for listeners whose bound address the gateway does not print
/// (`gateway.spool_listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running gateway child process.
pub struct Gateway {
    pub child: Child,
    pub addr: String,
    pub operator: String,
}

impl Gateway {
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub async fn client(&self, home: &Home, code: &str) -> IngestServiceClient<Channel> {
        connect(&self.endpoint(), &home.creds(code), 64 << 20)
            .await
            .expect("connect")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        panic!("gateway did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every batch in the spool: (hospital, batch id, records).
pub fn spool_batches(dir: &Path) -> Vec<(String, String, Vec<tokumei_proto::spool::v1::PseudonymisedRecord>)> {
    use tokumei_proto::spool::v1::spool_entry::Entry;
    if tokumei_ingest::spool_seal::unlocked(dir).is_none() {
        unlock_spool(dir);
    }
    let mut out = Vec::new();
    tokumei_ingest::spool::read_all(dir, |_, e| {
        if let Some(Entry::Batch(b)) = e.entry {
            out.push((b.hospital_code, b.batch_id, b.records));
        }
    })
    .expect("read spool");
    out
}

/// All bytes of every file under `dir`.
pub fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A valid record built by hand (not from synth), so tests control every field.
/// A kana name that differs for every local id (two kana per byte), so that distinct test patients do not share
/// an ID4 key: the core treats records sharing one as the same person.
pub fn kana_for(local_id: &str) -> String {
    const KANA: [char; 16] = [
        'ア', 'イ', 'ウ', 'エ', 'オ', 'カ', 'キ', 'ク', 'ケ', 'コ', 'サ', 'シ', 'ス', 'セ', 'ソ', 'タ',
    ];
    let given: String = local_id
        .bytes()
        .take(30)
        .flat_map(|b| [KANA[usize::from(b >> 4)], KANA[usize::from(b & 15)]])
        .collect();
    format!("ヤマダ　{given}")
}

pub fn valid_record(local_id: &str) -> tokumei_proto::ingest::v1::PatientRecord {
    use tokumei_proto::ingest::v1::*;
    PatientRecord {
        local_patient_id: local_id.into(),
        insurance: Some(Insurance {
            insurer_number: "06135018".into(),
            symbol: "ア12".into(),
            number: format!("77{local_id}"),
            branch: "01".into(),
        }),
        kana_name: kana_for(local_id),
        birth_date: "1950-04-01".into(),
        sex: Sex::Female as i32,
        postal_code: "100-0001".into(),
        municipality_code: "131016".into(),
        death_date: String::new(),
        encounters: vec![Encounter {
            admission_date: "2024-05-01".into(),
            discharge_date: "2024-05-10".into(),
            kind: "inpatient".into(),
            department: "内科".into(),
        }],
        conditions: vec![Condition {
            icd10: "E11.9".into(),
            disease_master_id: "20061234".into(),
            onset_date: "2010-01-01".into(),
            suspected: false,
            not_told: false,
        }],
        medications: vec![Medication {
            yj_code: "3962002F1020".into(),
            start_date: "2024-05-01".into(),
            days: 30,
            daily_dose: 500.0,
            dose_unit: "mg".into(),
        }],
        observations: vec![Observation {
            jlac10: "3D046000001920402".into(),
            jlac11: String::new(),
            date: "2024-05-01".into(),
            value: 7.2,
            unit: "%".into(),
            text_value: String::new(),
        }],
        allergies: vec![Allergy {
            yj_code: String::new(),
            substance: "卵".into(),
            recorded_date: "2020-01-01".into(),
        }],
        long_term_storage: false,
    }
}

/// The shared reference data set (UCI Adult with ARX's hierarchies), beside the repository.
pub const ADULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/adult");

/// The 8 quasi-identifiers of the Adult benchmark (salary-class is insensitive or sensitive).
pub const ADULT_QIS: [&str; 8] = [
    "sex",
    "age",
    "race",
    "marital-status",
    "education",
    "native-country",
    "workclass",
    "occupation",
];

/// A file of the Adult data set, as a path string.
pub fn adult(file: &str) -> String {
    format!("{ADULT_DIR}/{file}")
}

/// The value of a server variable set by scripts/test.sh, or None (the test skips) when it is unset and
/// servers are not required (`TOKUMEI_REQUIRE_SERVERS`, set by scripts/test.sh, makes a missing server fail).
pub fn test_server(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) => Some(v),
        Err(_) => {
            assert!(
                std::env::var_os("TOKUMEI_REQUIRE_SERVERS").is_none(),
                "{var} is not set but servers are required (scripts/test.sh starts {what})"
            );
            eprintln!("skipping: {var} not set (run scripts/test.sh)");
            None
        }
    }
}

/// (address, root token) of the test OpenBao, or None (skip).
pub fn bao() -> Option<(String, String)> {
    let addr = test_server("TOKUMEI_TEST_BAO_ADDR", "OpenBao")?;
    let token = std::env::var("TOKUMEI_TEST_BAO_TOKEN").expect("TOKUMEI_TEST_BAO_TOKEN");
    Some((addr, token))
}

/// A new, empty PostgreSQL database on the server of `admin_url` (named after the process and a counter),
/// so a test that bootstraps users and applications never meets another test's.
pub fn fresh_postgres_database(admin_url: &str) -> String {
    use sqlx::{Connection, Executor};
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "tokumei_e2e_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        rand::random::<u32>()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut conn = sqlx::postgres::PgConnection::connect(admin_url)
            .await
            .expect("connect to PostgreSQL");
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        conn.close().await.expect("close");
    });
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// How long one `tokumei` command may run in a test before it is killed and the test fails
/// (`TOKUMEI_TEST_COMMAND_TIMEOUT` seconds, default 600): a command that hangs must fail the suite with
/// its name, not stall CI until its global limit.
pub fn command_limit() -> Duration {
    let secs = std::env::var("TOKUMEI_TEST_COMMAND_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// `Command::output` with [`command_limit`].
pub trait BoundedOutput {
    /// Runs to completion (stdin closed, stdout and stderr captured) or panics after the limit.
    fn bounded_output(&mut self) -> std::io::Result<std::process::Output>;
}

impl BoundedOutput for Command {
    fn bounded_output(&mut self) -> std::io::Result<std::process::Output> {
        self.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = format!("{:?}", self.get_args().collect::<Vec<_>>());
        wait_bounded(self.spawn()?, &what)
    }
}

/// Waits for a spawned child whose stdout and stderr are piped (its stdin already written and closed),
/// collecting both; kills it and panics with what it printed if it outlives [`command_limit`].
pub fn wait_bounded(mut child: Child, what: &str) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use wait_timeout::ChildExt;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let limit = command_limit();
    let status = match child.wait_timeout(limit)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "tokumei {what} did not finish within {} s and was killed:\n{}\n{}",
                limit.as_secs(),
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// A process's memory figure from `/proc/<pid>/status` in bytes: `VmRSS` (now) or `VmHWM` (peak).
pub fn process_memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("memory field");
    kb * 1024
}

/// Unwraps the key of a test home's sealed spool (`<home>/spool`) through the home's key service, as a
/// same-host reader would, so that this process can read it.
pub fn unlock_spool(dir: &Path) {
    let home = dir.parent().expect("the spool's home").to_path_buf();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let cfg = tokumei_ingest::config::Config::load(Some(&home.join("tokumei.toml"))).expect("config");
            tokumei_ingest::spool_feed::unlock_local_spool(&cfg, &home, &dir)
                .await
                .expect("unlock the spool");
        })
    })
    .join()
    .expect("unlock thread");
}

/// Every file under `dir` (following links), as paths relative to it, sorted: what a directory holds.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap_or(&path).display().to_string());
            }
        }
    }
    out.sort();
    out
}
