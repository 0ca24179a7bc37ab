//! Network isolation shown, not described (issue 17, item 6): the zones run in Linux network namespaces of their
//! own, joined by one bridge, each with the host firewall of `infra/network/<zone>.nft` loaded unchanged, and the
//! test tries every connection an attacker in one zone would try against the others.
//!
//! - a hospital reaches the gateway's hospital port and nothing else;
//! - the core listens on no socket while it works, yet receives what hospitals pushed: it pulls from the gateway's
//!   spool port, and reaches that port, the policy service's port (operators' signed orders; not its database) and
//!   the key service only;
//! - the release zone, which faces researchers, cannot reach the core (nor the gateway);
//! - nothing can open a connection to the core, even to a listener planted there;
//! - the key service answers the zones that use keys (gateway, core, release) and nobody else.
//!
//! Needs root, `ip` and `nft`: `scripts/test.sh` installs nftables and sets `TOKUMEI_TEST_NETNS=1` when it runs as
//! root, and the test then fails on anything missing; elsewhere it says why it did not run.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BoundedOutput, HOSPITAL_A, tokumei_bin};

/// The zones and the address each has on the shared bridge (the addresses the `.nft` files name).
const ZONES: &[(&str, &str)] = &[
    ("hospital", "10.10.0.5"),
    ("researcher", "10.20.0.5"),
    ("mgmt", "10.0.9.5"),
    ("gateway", "10.0.10.5"),
    ("openbao", "10.0.20.5"),
    ("core", "10.0.30.5"),
    ("policy", "10.0.40.5"),
    ("release", "10.0.50.5"),
];

/// Zones whose host firewall comes from `infra/network/`.
const FIREWALLED: &[&str] = &["gateway", "openbao", "core", "policy", "release"];

const PUSHED: u64 = 40;

fn ip_of(zone: &str) -> &'static str {
    ZONES
        .iter()
        .find(|(z, _)| *z == zone)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("no zone {zone}"))
}

/// The namespaces of one run, deleted (with every process started in them) when dropped.
struct Lab {
    prefix: String,
    children: Vec<Child>,
}

impl Lab {
    fn ns(&self, zone: &str) -> String {
        format!("{}-{zone}", self.prefix)
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new(args[0])
            .args(&args[1..])
            .bounded_output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command inside a zone's namespace.
    fn exec(&self, zone: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(zone)]);
        c
    }

    fn build() -> Lab {
        let lab = Lab {
            prefix: format!("tk{}", std::process::id()),
            children: Vec::new(),
        };
        let fabric = lab.ns("fabric");
        lab.run(&["ip", "netns", "add", &fabric]);
        lab.run(&["ip", "-n", &fabric, "link", "add", "br0", "type", "bridge"]);
        lab.run(&["ip", "-n", &fabric, "link", "set", "br0", "up"]);
        for (i, (zone, addr)) in ZONES.iter().enumerate() {
            let ns = lab.ns(zone);
            let port = format!("p{i}");
            lab.run(&["ip", "netns", "add", &ns]);
            lab.run(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &fabric,
            ]);
            lab.run(&["ip", "-n", &fabric, "link", "set", &port, "master", "br0"]);
            lab.run(&["ip", "-n", &fabric, "link", "set", &port, "up"]);
            lab.run(&["ip", "-n", &ns, "addr", "add", &format!("{addr}/8"), "dev", "eth0"]);
            lab.run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            lab.run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/network");
        for zone in FIREWALLED {
            let file = rules.join(format!("{zone}.nft"));
            lab.run(&[
                "ip",
                "netns",
                "exec",
                &lab.ns(zone),
                "nft",
                "-f",
                &file.display().to_string(),
            ]);
        }
        lab
    }

    /// A TCP listener that accepts nothing (the kernel completes handshakes into its backlog), to tell a
    /// firewall's drop from an absent service.
    fn plant_listener(&mut self, zone: &str, port: u16) {
        let child = self
            .exec(zone)
            .args([
                "python3",
                "-c",
                "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                 s.bind(('0.0.0.0',int(sys.argv[1])))\ns.listen(64)\ntime.sleep(600)",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn listener");
        self.children.push(child);
        self.wait_listening(zone, port);
    }

    fn listening(&self, zone: &str) -> Vec<String> {
        let out = self.exec(zone).args(["ss", "-Hltnu"]).bounded_output().expect("ss");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn wait_listening(&self, zone: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.listening(zone).iter().any(|l| l.contains(&format!(":{port} "))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nothing listens on {zone}:{port}");
    }

    /// Whether a TCP connection from `from` to `to:port` opens within two seconds.
    fn connects(&self, from: &str, to: &str, port: u16) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{port}", ip_of(to));
        self.exec(from)
            .args(["timeout", "2", "bash", "-c", &script])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for zone in ZONES.iter().map(|(z, _)| *z).chain(["fabric"]) {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(zone)]).status();
        }
    }
}

/// Whether this run must (and can) build namespaces; `None` with the reason when it is not asked to.
fn wanted() -> Option<()> {
    if std::env::var("TOKUMEI_TEST_NETNS").as_deref() != Ok("1") {
        eprintln!("network isolation test not run: set TOKUMEI_TEST_NETNS=1 as root (scripts/test.sh does)");
        return None;
    }
    for tool in ["ip", "nft", "ss", "python3", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "TOKUMEI_TEST_NETNS=1 but {tool} is missing");
    }
    Some(())
}

fn write_config(home: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(home).expect("home");
    let path = home.join("tokumei.toml");
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn zones_reach_only_what_their_firewalls_allow_and_the_core_listens_for_nothing() {
    if wanted().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The gateway's home holds the PKI (its certificate names the gateway's address); the other zones are given
    // their certificates by path.
    let gw_home = dir.path().join("gateway");
    let pki = tokumei_ingest::pki::PkiLayout::new(gw_home.join("pki"));
    tokumei_ingest::pki::init(&pki, &[HOSPITAL_A.into()], &[ip_of("gateway").into()]).expect("pki");
    let mut lab = Lab::build();

    // The gateway, on the addresses the firewalls name.
    let gw_config = write_config(
        &gw_home,
        &format!(
            "[gateway]\nlisten = \"{gw}:7443\"\noperator_listen = \"{gw}:7444\"\nspool_listen = \"{gw}:7445\"\n",
            gw = ip_of("gateway"),
        ),
    );
    let mut gateway = lab
        .exec("gateway")
        .arg(tokumei_bin())
        .args(["ingest", "serve", "--config"])
        .arg(&gw_config)
        .env("TOKUMEI_HOME", &gw_home)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn gateway");
    let mut line = String::new();
    BufReader::new(gateway.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    assert!(line.starts_with("listening"), "gateway did not start: {line:?}");
    lab.children.push(gateway);
    lab.wait_listening("gateway", 7445);

    // Listeners standing in for the services whose reachability is at stake (their own tests run them for real).
    for (zone, port) in [
        ("openbao", 8200),
        ("policy", 7450),
        ("policy", 5432),
        ("release", 7460),
        ("release", 7461),
        ("hospital", 9999),
    ] {
        lab.plant_listener(zone, port);
    }

    // A hospital pushes through the firewall.
    let push = lab
        .exec("hospital")
        .arg(tokumei_bin())
        .args([
            "--json",
            "push",
            "--gateway",
            &format!("https://{}:7443", ip_of("gateway")),
        ])
        .args(["--hospital", HOSPITAL_A, "--synth", &PUSHED.to_string()])
        .arg("--ca")
        .arg(pki.ca_cert())
        .arg("--cert")
        .arg(pki.hospital_cert(HOSPITAL_A))
        .arg("--key")
        .arg(pki.hospital_key(HOSPITAL_A))
        .env("TOKUMEI_HOME", dir.path().join("hospital"))
        .bounded_output()
        .expect("push");
    assert!(
        push.status.success(),
        "push through the firewall: {}",
        String::from_utf8_lossy(&push.stderr)
    );

    // The core pulls what was pushed, from its own namespace, through both firewalls.
    let core_home = dir.path().join("core");
    let core_config = write_config(
        &core_home,
        &format!(
            "[core]\nsource = \"remote\"\ngateway_spool_url = \"https://{}:7445\"\nca = \"{}\"\ncert = \"{}\"\n\
             key = \"{}\"\n",
            ip_of("gateway"),
            pki.ca_cert().display(),
            pki.core_cert().display(),
            pki.core_key().display(),
        ),
    );
    let drained = lab
        .exec("core")
        .arg(tokumei_bin())
        .args(["--json", "core", "run", "--until-drained", "--config"])
        .arg(&core_config)
        .env("TOKUMEI_HOME", &core_home)
        .bounded_output()
        .expect("core run");
    assert!(
        drained.status.success(),
        "core run: {}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let stdout = String::from_utf8_lossy(&drained.stdout);
    // A readiness line, then the totals as JSON.
    let totals: serde_json::Value = stdout
        .find('{')
        .and_then(|at| serde_json::from_str(&stdout[at..]).ok())
        .unwrap_or_else(|| panic!("no totals in {stdout}"));
    assert_eq!(totals["records"].as_u64(), Some(PUSHED), "{totals}");

    // While the core runs (pulling, connected to the spool port), its namespace has no listening socket at all.
    let mut core = lab
        .exec("core")
        .arg(tokumei_bin())
        .args(["core", "run", "--config"])
        .arg(&core_config)
        .env("TOKUMEI_HOME", &core_home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn core");
    let mut line = String::new();
    BufReader::new(core.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("core started line");
    lab.children.push(core);
    let spool = format!("{}:7445", ip_of("gateway"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = lab.exec("core").args(["ss", "-Htn"]).bounded_output().expect("ss");
        if String::from_utf8_lossy(&out.stdout).contains(&spool) {
            break;
        }
        assert!(Instant::now() < deadline, "the core never connected to the spool port");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.listening("core"), Vec::<String>::new(), "the core listens");
    // Even a listener planted in the core is out of everyone's reach.
    lab.plant_listener("core", 9999);

    // Every connection an attacker in one zone would try: (from, to, port, allowed).
    let matrix: &[(&str, &str, u16, bool)] = &[
        ("hospital", "gateway", 7443, true),
        ("hospital", "gateway", 7444, false),
        ("hospital", "gateway", 7445, false),
        ("hospital", "core", 9999, false),
        ("hospital", "policy", 7450, false),
        ("hospital", "release", 7460, false),
        ("hospital", "openbao", 8200, false),
        ("researcher", "release", 7460, true),
        ("researcher", "release", 7461, true),
        ("researcher", "policy", 7450, true),
        ("researcher", "policy", 5432, false),
        ("researcher", "gateway", 7443, false),
        ("researcher", "core", 9999, false),
        ("researcher", "openbao", 8200, false),
        ("mgmt", "gateway", 7444, true),
        ("mgmt", "core", 9999, false),
        ("gateway", "openbao", 8200, true),
        ("gateway", "core", 9999, false),
        ("gateway", "policy", 7450, false),
        ("gateway", "release", 7460, false),
        ("core", "gateway", 7445, true),
        ("core", "openbao", 8200, true),
        ("core", "gateway", 7443, false),
        ("core", "gateway", 7444, false),
        // Operators' orders: the core takes them from the policy service; the policy database stays out of reach.
        ("core", "policy", 7450, true),
        ("core", "policy", 5432, false),
        ("core", "release", 7460, false),
        ("core", "hospital", 9999, false),
        ("release", "policy", 5432, false),
        ("release", "policy", 7450, true),
        ("release", "openbao", 8200, true),
        ("release", "core", 9999, false),
        ("release", "gateway", 7445, false),
        ("release", "gateway", 7443, false),
        ("policy", "core", 9999, false),
        ("policy", "release", 7460, false),
        ("policy", "openbao", 8200, false),
    ];
    let lab = &lab;
    let results: Vec<(String, bool, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = matrix
            .iter()
            .map(|&(from, to, port, allowed)| {
                s.spawn(move || (format!("{from} → {to}:{port}"), allowed, lab.connects(from, to, port)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("probe")).collect()
    });
    let wrong: Vec<String> = results
        .iter()
        .filter(|(_, allowed, got)| allowed != got)
        .map(|(what, allowed, _)| format!("{what} should {}", if *allowed { "connect" } else { "be refused" }))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Every listener the refusals were tried against answers inside its own zone: the firewall refused, not an
    // absent service.
    for (zone, port) in [
        ("core", 9999),
        ("policy", 5432),
        ("gateway", 7445),
        ("release", 7460),
        ("openbao", 8200),
    ] {
        assert!(lab.connects(zone, zone, port), "{zone}:{port} does not answer locally");
    }
}
