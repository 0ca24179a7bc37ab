//! `tokumei pki init --hospitals N`: development certificates under `$TOKUMEI_HOME/pki`.

use crate::output::emit;
use clap::Subcommand;
use std::path::PathBuf;
use tokumei_ingest::home::tokumei_home;
use tokumei_ingest::pki::{PkiLayout, init};
use tokumei_ingest::synth::hospital_codes;

#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Create a development CA, gateway, core and hospital certificates (keeps existing ones).
    Init {
        /// Number of demo hospitals to issue certificates for (codes are generated).
        #[arg(long, default_value_t = 3)]
        hospitals: usize,
        /// Explicit 10-digit medical-institution codes (in addition to --hospitals).
        #[arg(long = "code", value_name = "CODE")]
        codes: Vec<String>,
        /// Extra DNS names or IPs for the gateway certificate (127.0.0.1 and localhost are always included).
        #[arg(long = "gateway-name")]
        gateway_names: Vec<String>,
        /// PKI directory (default `$TOKUMEI_HOME/pki`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: PkiCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init {
            hospitals,
            codes,
            gateway_names,
            dir,
        } => {
            let dir = dir.unwrap_or_else(|| tokumei_home().join("pki"));
            let mut all = hospital_codes(hospitals);
            all.extend(codes);
            let mut names = vec!["localhost".to_string()];
            names.extend(gateway_names);
            let summary = init(&PkiLayout::new(&dir), &all, &names)?;
            emit(json, &summary, |s| {
                println!(
                    "PKI in {}: CA {}, {} hospital certificate(s), newly issued: {}",
                    s.dir,
                    if s.created_ca { "created" } else { "kept" },
                    s.hospitals.len(),
                    if s.issued.is_empty() {
                        "none".to_string()
                    } else {
                        s.issued.join(", ")
                    }
                );
            })
        }
    }
}
