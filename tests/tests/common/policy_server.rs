//! `tokumei policy serve` as the tests run it, and the client side of its conventions (bearer sessions,
//! `ErrorInfo` reasons).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokumei_proto::policy::v1 as pb;
use tonic::{Request, Status};
use tonic_types::StatusExt;

use super::tokumei_bin;

/// The server child process; killed when dropped.
pub struct Server {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Server {
    pub fn start(home: &Path) -> Server {
        Server::start_with(home, &["--listen", "127.0.0.1:0", "--insecure-dev"])
    }

    /// Starts the policy service of `home` over TLS with the development PKI's server certificate, admitting the
    /// zones' client certificates (the core's, the release zone's) from its CA.
    pub fn start_tls(home: &Path) -> Server {
        Server::start_tls_on(home, &[])
    }

    /// [`Server::start_tls`] with `env` (e.g. `TOKUMEI_POLICY_DB` for a PostgreSQL database).
    pub fn start_tls_on(home: &Path, env: &[(&str, &str)]) -> Server {
        let pki = home.join("pki");
        let path = |name: &str| pki.join(name).display().to_string();
        Server::start_env(
            home,
            env,
            &[
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                &path("gateway.crt"),
                "--tls-key",
                &path("gateway.key"),
                "--zone-client-ca",
                &path("ca.crt"),
            ],
        )
    }

    /// Starts `tokumei policy serve ARGS` and waits for its "listening" line.
    pub fn start_with(home: &Path, args: &[&str]) -> Server {
        Server::start_env(home, &[], args)
    }

    /// Starts `tokumei policy serve ARGS` with `env` and waits for its "listening" line.
    pub fn start_env(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut command = Command::new(tokumei_bin());
        command
            .args(["policy", "serve"])
            .args(args)
            .env("TOKUMEI_HOME", home)
            .env_remove("TOKUMEI_POLICY_DB")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn tokumei policy serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("policy service listening on ")
            .unwrap_or_else(|| panic!("policy service did not start: {line:?}"))
            .to_owned();
        Server { child, addr }
    }

    /// SIGTERM, then the exit status of a graceful shutdown.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("policy service did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata value"),
    );
    request
}

/// The `ErrorInfo` reason of a refusal, checking its domain.
pub fn reason(status: &Status) -> String {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "policy.tokumei");
    info.reason.clone()
}

pub fn form(title: &str) -> pb::ApplicationForm {
    pb::ApplicationForm {
        title: title.into(),
        purpose: "Compare HbA1c control by prefecture to inform regional care plans".into(),
        public_interest: "Evidence for the national diabetes strategy".into(),
        methods: "Multilevel regression of HbA1c on region, age band and sex".into(),
        tables: vec![pb::TableColumns {
            table: "lab_results".into(),
            columns: vec!["jlac10".into(), "value".into()],
        }],
        cohort_filter: String::new(),
        period_from: "2030-01-01".into(),
        period_to: "2030-12-31".into(),
        channel: "file".into(),
        security_measures: "Locked room, no network, encrypted disk".into(),
        funding: "JSPS KAKENHI".into(),
        recipients: vec!["rin".into()],
        requested_epsilon: None,
        studies: vec![],
        not_for_advertising: true,
    }
}

/// A role table of docs/committee.md, between `<!-- NAME:start -->` and `<!-- NAME:end -->`: RPC → its
/// "roles admitted" cell (`public`, `signed in` or roles).
pub fn documented_table(name: &str) -> std::collections::BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/committee.md")).expect("doc");
    let start = doc.find(&format!("<!-- {name}:start -->")).expect("start marker");
    let end = doc.find(&format!("<!-- {name}:end -->")).expect("end marker");
    doc[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[3].to_owned())
        })
        .collect()
}
