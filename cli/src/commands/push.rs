//! `tokumei push`: the hospital side — send synthetic data or a FHIR R4 Bundle to a gateway over mTLS.

use crate::output::{emit, runtime};
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokumei_ingest::client::{HospitalCredentials, connect, push};
use tokumei_ingest::home::tokumei_home;
use tokumei_ingest::pki::PkiLayout;
use tokumei_ingest::synth::Synth;
use tokumei_proto::ingest::v1::{PatientRecord, RecordBatch};

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Gateway address.
    #[arg(long, default_value = "https://127.0.0.1:7443")]
    pub gateway: String,
    /// This hospital's 10-digit code; selects `$TOKUMEI_HOME/pki/hospitals/<code>.{crt,key}` by default.
    #[arg(long)]
    pub hospital: String,
    /// CA certificate that signed the gateway's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client key.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Send this many synthetic patients.
    #[arg(long, conflicts_with = "fhir")]
    pub synth: Option<u64>,
    /// Seed for --synth.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Send the patients of a FHIR R4 Bundle JSON file.
    #[arg(long)]
    pub fhir: Option<PathBuf>,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Batches per gRPC stream (one receipt per stream).
    #[arg(long, default_value_t = 10)]
    pub batches_per_stream: usize,
    /// Largest message to send.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
}

#[derive(Serialize, Default)]
struct PushSummary {
    hospital: String,
    records: u64,
    batches: u64,
    accepted: u64,
    rejected: u64,
    replayed_batches: u64,
    rejected_by_reason: BTreeMap<String, u64>,
}

fn batches(records: Vec<PatientRecord>, size: usize, prefix: &str) -> Vec<RecordBatch> {
    let size = size.max(1);
    let mut out = Vec::new();
    let mut it = records.into_iter().peekable();
    let mut i = 0usize;
    while it.peek().is_some() {
        let chunk: Vec<PatientRecord> = it.by_ref().take(size).collect();
        out.push(RecordBatch {
            batch_id: format!("{prefix}-{i:06}"),
            records: chunk,
        });
        i += 1;
    }
    out
}

pub fn run(a: PushArgs, json: bool) -> anyhow::Result<()> {
    let pki = PkiLayout::new(tokumei_home().join("pki"));
    let creds = HospitalCredentials {
        ca: a.ca.clone().unwrap_or_else(|| pki.ca_cert()),
        cert: a.cert.clone().unwrap_or_else(|| pki.hospital_cert(&a.hospital)),
        key: a.key.clone().unwrap_or_else(|| pki.hospital_key(&a.hospital)),
    };
    let (records, prefix) = match (&a.synth, &a.fhir) {
        (Some(n), None) => (
            Synth::new(a.seed).records(&a.hospital, 0, *n),
            format!("synth-s{}-n{}", a.seed, n),
        ),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let digest = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
            let records = tokumei_ingest::fhir::records_from_bundle(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            (records, format!("fhir-{digest}"))
        }
        _ => anyhow::bail!("give either --synth N or --fhir FILE"),
    };
    let total = records.len() as u64;
    let all = batches(records, a.batch_size, &prefix);
    let mut summary = PushSummary {
        hospital: a.hospital.clone(),
        records: total,
        batches: all.len() as u64,
        ..Default::default()
    };
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {bar:40} {pos}/{len} records {per_sec} eta {eta}",
    )?);
    runtime()?.block_on(async {
        let mut client = connect(&a.gateway, &creds, a.max_message_bytes).await?;
        let mut it = all.into_iter().peekable();
        while it.peek().is_some() {
            let stream: Vec<RecordBatch> = it.by_ref().take(a.batches_per_stream.max(1)).collect();
            let n: u64 = stream.iter().map(|b| b.records.len() as u64).sum();
            let receipt = push(&mut client, stream).await?;
            summary.accepted += receipt.accepted;
            // Counted from the per-reason totals: the receipt lists only the first rejections in full.
            summary.rejected += receipt.rejected_total;
            summary.replayed_batches += receipt.batches.iter().filter(|b| b.replayed).count() as u64;
            for r in receipt.rejected_by_reason {
                *summary.rejected_by_reason.entry(r.reason).or_default() += r.count;
            }
            bar.inc(n);
        }
        anyhow::Ok(())
    })?;
    bar.finish_and_clear();
    emit(json, &summary, |s| {
        println!(
            "hospital {}: {} records in {} batches → {} accepted, {} rejected{}",
            s.hospital,
            s.records,
            s.batches,
            s.accepted,
            s.rejected,
            if s.replayed_batches > 0 {
                format!(", {} batches already committed (replayed)", s.replayed_batches)
            } else {
                String::new()
            }
        );
        for (reason, n) in &s.rejected_by_reason {
            println!("  {reason:<28} {n}");
        }
    })
}
