//! The zones' services as the demo runs them: separate processes of the same binary on loopback, each with the
//! demo's home, stopped when the demo is done with them — as on a host, not as calls into their libraries.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use tokumei_platform::config::Config;

/// A child process stopped (and waited for) when dropped.
pub struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tokumei ARGS` with `home`, returns it and its first line of output.
pub fn start(home: &Path, args: &[&str]) -> Result<(Service, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .env("TOKUMEI_HOME", home)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start tokumei {}", args.join(" ")))?;
    let mut reader = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Keep reading, so the process's last lines find a reader.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    Ok((Service(child), line.trim().to_owned()))
}

/// A gateway (`tokumei ingest serve`) running as a process of its own.
pub struct Gateway {
    /// The hospitals' address (mutual TLS).
    pub addr: SocketAddr,
    /// The operators' address (metrics, health).
    pub operator_addr: SocketAddr,
    _process: Service,
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
        _process: process,
    })
}
