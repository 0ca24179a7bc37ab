//! `tokumei release download`: parses the arguments, runs the recipient's download client
//! ([`tokumei_client::download`]) and prints what it did.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokumei_client::download::{DownloadRequest, download};

use crate::commands::access::{PolicyOptions, session_token};
use crate::output::{emit, runtime};

/// Arguments of `tokumei release download`.
#[derive(clap::Args, Debug)]
pub struct DownloadArgs {
    /// The release service's gRPC address (https://HOST:PORT).
    #[arg(long)]
    server: String,
    /// CA certificate (PEM) the release service's certificates must chain to (the only one trusted).
    #[arg(long)]
    ca: PathBuf,
    /// Release identifier.
    #[arg(long)]
    release: String,
    /// Only this file of the copy (repeatable; default: every file).
    #[arg(long = "file", value_name = "NAME")]
    files: Vec<String>,
    /// Directory to write the files to (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    policy: PolicyOptions,
}

/// Runs `tokumei release download`.
pub fn run(args: DownloadArgs, json: bool) -> Result<()> {
    tokumei_ingest::tls::install_crypto_provider();
    let session = session_token(&args.policy)?;
    let ca = std::fs::read(&args.ca).with_context(|| format!("reading {}", args.ca.display()))?;
    let request = DownloadRequest {
        server: &args.server,
        ca_pem: &ca,
        session: session.as_str(),
        release: &args.release,
        files: &args.files,
        out: &args.out,
        progress: !json,
    };
    runtime()?.block_on(async {
        let summary = download(&request).await?;
        emit(json, &summary, |s| {
            let fetched = s.files.iter().filter(|f| f.status == "downloaded").count();
            println!(
                "release {} ({}): {} file(s) in {}, {} downloaded, {} already present; SHA-256 verified. \
                 Use until {}, then delete and declare the deletion.",
                s.release,
                s.application,
                s.files.len(),
                s.out,
                fetched,
                s.files.len() - fetched,
                s.expires_on
            );
            for f in &s.files {
                let resumed = if f.resumed_from > 0 {
                    format!(", resumed at byte {}", f.resumed_from)
                } else {
                    String::new()
                };
                println!("  {:<28} {:>12} bytes  {}{resumed}", f.name, f.bytes, f.status);
            }
        })
    })
}
