//! The zones' services as the demo (and the ingest benchmark) runs them: separate processes of the same binary on loopback, each with the
//! demo's home, stopped when the demo is done with them — as on a host, not as calls into their libraries.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokumei_platform::config::Config;

/// How long a service may take to say it listens, and to stop once asked.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A service running as a child process: asked to stop (SIGTERM, so requests in flight finish) and waited for when
/// dropped, killed only if it does not stop in time. Its log is `logs/<name>.log` under the demo's home.
pub struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Stops the service as an operator would (SIGTERM) and checks that it stopped cleanly.
    pub fn stop(mut self) -> Result<()> {
        let status = self.terminate()?;
        anyhow::ensure!(
            status.success(),
            "the service stopped with {status}: see {}",
            self.log.display()
        );
        Ok(())
    }

    fn terminate(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // The standard library only kills (SIGKILL); `kill -TERM` lets the service drain first.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// The log of a run of `tokumei ARGS`: named by its command (`core-run.log`), with a number when that command ran
/// before (`core-run-2.log`), so a later run never overwrites an earlier one's log.
fn log_file(logs: &Path, args: &[&str]) -> PathBuf {
    let name = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .take(2)
        .copied()
        .collect::<Vec<_>>()
        .join("-");
    let mut log = logs.join(format!("{name}.log"));
    let mut n = 2;
    while log.exists() {
        log = logs.join(format!("{name}-{n}.log"));
        n += 1;
    }
    log
}

/// Starts `tokumei ARGS` with `home`; returns it and its first line of output (its readiness line), or the end of
/// its log if it exits or stays silent first.
pub fn start(home: &Path, args: &[&str]) -> Result<(Service, String)> {
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = log_file(&logs, args);
    let child = Command::new(std::env::current_exe()?)
        .args(args)
        .env("TOKUMEI_HOME", home)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("start tokumei {}", args.join(" ")))?;
    let mut service = Service { child, log };
    let stdout = service.child.stdout.take().context("stdout")?;
    let (ready, first_line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = ready.send(reader.read_line(&mut line).map(|_| line));
        // Keep reading, so the process's last lines find a reader.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    match first_line.recv_timeout(START_TIMEOUT) {
        Ok(Ok(line)) if !line.trim().is_empty() => Ok((service, line.trim().to_owned())),
        _ => {
            let _ = service.terminate();
            let text = std::fs::read_to_string(&service.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            anyhow::bail!(
                "tokumei {} did not start: {}",
                args.join(" "),
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )
        }
    }
}

/// Runs `tokumei ARGS` with `home` to its end (a one-shot zone process, such as the core draining the spool);
/// returns its standard output, or the end of its log if it failed.
pub fn run_to_end(home: &Path, args: &[&str]) -> Result<String> {
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = log_file(&logs, args);
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .env("TOKUMEI_HOME", home)
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(&log)?)
        .output()
        .with_context(|| format!("run tokumei {}", args.join(" ")))?;
    if !out.status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        anyhow::bail!(
            "tokumei {} failed ({}): {}",
            args.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A gateway (`tokumei ingest serve`) running as a process of its own.
pub struct Gateway {
    /// The hospitals' address (mutual TLS).
    pub addr: SocketAddr,
    /// The operators' address (metrics, health).
    pub operator_addr: SocketAddr,
    process: Service,
}

impl Gateway {
    /// The gateway's process id (the ingest benchmark reads its peak memory).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Stops the gateway (batches in flight finish) and checks it stopped cleanly.
    pub fn stop(self) -> Result<()> {
        self.process.stop()
    }
}

/// Starts the gateway with `config`, written to `home/<file>`; returns once it listens.
pub fn gateway(home: &Path, config: &Config, file: &str) -> Result<Gateway> {
    let path = home.join(file);
    std::fs::write(&path, toml::to_string(config)?)?;
    let (process, line) = start(home, &["ingest", "serve", "--config", &path.display().to_string()])?;
    // The gateway's readiness line: `listening ADDR operator ADDR`.
    let mut words = line.split_whitespace();
    let (addr, operator_addr) = match (words.next(), words.next(), words.next(), words.next()) {
        (Some("listening"), Some(addr), Some("operator"), Some(operator)) => (addr.parse()?, operator.parse()?),
        _ => anyhow::bail!("the gateway did not start: {line:?}"),
    };
    Ok(Gateway {
        addr,
        operator_addr,
        process,
    })
}
