//! `tokumei ingest serve --config tokumei.toml`: the hospital-facing gateway.

use crate::output::runtime;
use clap::Subcommand;
use std::path::PathBuf;
use tokumei_ingest::config::Config;
use tokumei_ingest::home::tokumei_home;
use tokumei_ingest::server::{ServeOptions, start, termination_signal};

#[derive(Subcommand, Debug)]
pub enum IngestCommand {
    /// Run the gateway until SIGINT/SIGTERM; in-flight batches finish before it exits.
    Serve {
        /// Configuration file (defaults apply when omitted).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override `gateway.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override `gateway.operator_listen`.
        #[arg(long)]
        operator_listen: Option<std::net::SocketAddr>,
        /// Plaintext gRPC on loopback with the hospital code taken from a header. Development only.
        #[arg(long)]
        insecure_dev: bool,
    },
}

pub fn run(cmd: IngestCommand, _json: bool) -> anyhow::Result<()> {
    match cmd {
        IngestCommand::Serve {
            config,
            listen,
            operator_listen,
            insecure_dev,
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(l) = listen {
                cfg.gateway.listen = l;
            }
            if let Some(l) = operator_listen {
                cfg.gateway.operator_listen = l;
            }
            let home = tokumei_home();
            let rt = runtime()?;
            rt.block_on(async {
                let _telemetry = tokumei_ingest::telemetry::init(&cfg.telemetry, "info")?;
                let gw = start(&cfg, &home, ServeOptions { insecure_dev }, termination_signal()).await?;
                // Machine-readable readiness line for scripts and tests.
                println!("listening {} operator {}", gw.addr, gw.operator_addr);
                gw.wait().await?;
                tracing::info!("gateway stopped");
                anyhow::Ok(())
            })
        }
    }
}
