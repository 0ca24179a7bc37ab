//! The core taking operators' orders, as the tests run it: a policy service over TLS that accepts the core's
//! certificate, and `tokumei core run` (continuous) with `[core.orders]` pointing at it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::BoundedOutput;
use super::policy_server::Server;
use super::tokumei_bin;

/// The two processes; both stopped when dropped.
pub struct CoreWithOrders {
    /// The policy service.
    pub policy: Server,
    core: Child,
}

impl CoreWithOrders {
    /// Starts the policy service of `home` (TLS with the development PKI's server certificate, the core's CA
    /// for client certificates), pins its key in `home/tokumei.toml` and starts the core with `env`.
    pub fn start(home: &Path, env: &[(&str, &str)]) -> CoreWithOrders {
        let policy = Server::start_tls(home);
        // The core pins the core-order key's public half (the policy service created it at start), not the
        // general service key, which in-process commands also load.
        let public_key = std::fs::read_to_string(home.join("policy/core-order.pub")).expect("core-order public key");
        let config = home.join("tokumei.toml");
        let mut text = std::fs::read_to_string(&config).expect("config");
        // The section is the file's last (this helper appends it): replace it for this policy service.
        if let Some(at) = text.find("\n[core.orders]\n") {
            text.truncate(at);
        }
        text.push_str(&format!(
            "\n[core.orders]\npolicy_url = \"https://{}\"\npublic_key = \"{}\"\npoll_ms = 100\n",
            policy.addr,
            public_key.trim()
        ));
        std::fs::write(&config, text).expect("config");
        let mut cmd = Command::new(tokumei_bin());
        cmd.args(["core", "run", "--config"])
            .arg(&config)
            .env("TOKUMEI_HOME", home)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut core = cmd.spawn().expect("spawn tokumei core run");
        let mut line = String::new();
        let mut reader = BufReader::new(core.stdout.take().expect("stdout"));
        reader.read_line(&mut line).expect("core's first line");
        // Keep reading, so the core's last lines (its totals, on SIGTERM) find a reader.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        assert!(
            line.starts_with("core started") && line.contains("orders from"),
            "core did not start: {line:?}"
        );
        CoreWithOrders { policy, core }
    }

    /// The environment a client command needs to reach the policy service.
    pub fn client_env(&self, home: &Path) -> Vec<(String, String)> {
        vec![
            ("TOKUMEI_POLICY_URL".into(), format!("https://{}", self.policy.addr)),
            (
                "TOKUMEI_POLICY_CA".into(),
                home.join("pki/ca.crt").display().to_string(),
            ),
        ]
    }

    /// Stops the core (SIGTERM, then waits), releasing the store's writer lock.
    pub fn stop_core(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.core.id().to_string())
            .status();
        let _ = self.core.wait();
    }
}

impl Drop for CoreWithOrders {
    fn drop(&mut self) {
        let _ = self.core.kill();
        let _ = self.core.wait();
    }
}

/// `tokumei --json sql QUERY` as the operator asks it: a client of the policy service, whose order the core carries
/// out (both started for the one query, with `env` for the core: its key service or object store) and whose rows
/// come back sealed to the client. `home`'s configuration is left as it was.
pub fn operator_sql(home: &Path, env: &[(&str, &str)], query: &str, all_rows: bool) -> Vec<serde_json::Value> {
    super::people::ensure_operator_session(home);
    let config = home.join("tokumei.toml");
    let before = std::fs::read_to_string(&config).expect("config");
    let rows = {
        let core = CoreWithOrders::start(home, env);
        let mut cmd = Command::new(tokumei_bin());
        cmd.env("TOKUMEI_HOME", home)
            .env("RUST_LOG", "warn")
            .envs(core.client_env(home))
            .args(["--json", "sql", query]);
        if all_rows {
            cmd.arg("--all-rows");
        }
        let out = cmd.bounded_output().expect("tokumei sql");
        assert!(
            out.status.success(),
            "sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap_or_else(|e| panic!("sql output {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
    };
    std::fs::write(&config, before).expect("config restored");
    rows
}

/// The zones a release build goes through, as separate processes: the policy service (which admits the build and
/// queues the core's half), the core taking its orders (which seals the anonymised package to the release zone)
/// and the release service asking the same policy service (which finishes the copies). All stopped when dropped.
pub struct BuildZones {
    /// The release service (declared first: stopped before the policy service the core helper owns).
    pub release: super::release_server::ReleaseServer,
    /// The policy service and the core.
    pub core: CoreWithOrders,
}

impl BuildZones {
    /// Starts the three, the release service logging to `log`.
    pub fn start(home: &super::Home, log: &Path) -> BuildZones {
        let core = CoreWithOrders::start(home.path(), &[]);
        let release = super::release_server::ReleaseServer::start_linked(home, log, &[], &core.policy.addr, None);
        BuildZones { release, core }
    }

    /// `release build` through the services, with `extra` arguments (`--application ID`, `--recipient`...).
    pub fn build_args(&self, home: &super::Home, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "release".into(),
            "build".into(),
            "--release-server".into(),
            self.release.url(),
            "--release-ca".into(),
            home.pki.ca_cert().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// The environment of `person`'s client: the policy service and their session, nothing else.
    pub fn env(&self, home: &Path, session: &str) -> Vec<(String, String)> {
        let mut env = self.core.client_env(home);
        env.push(("TOKUMEI_SESSION".into(), session.to_owned()));
        env
    }
}
