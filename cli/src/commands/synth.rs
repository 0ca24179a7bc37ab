//! `tokumei synth`: deterministic synthetic hospital data as a FHIR R4 Bundle (what a hospital would send).

use crate::output::emit;
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use tokumei_ingest::fhir::bundle_from_records;
use tokumei_ingest::synth::{Synth, hospital_codes};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Number of patients.
    #[arg(long, default_value_t = 100)]
    pub patients: u64,
    /// Seed: the same seed gives byte-identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// 10-digit medical-institution code of the generating hospital (default: the first demo hospital).
    #[arg(long)]
    pub hospital: Option<String>,
    /// Index of the first patient (to generate disjoint slices).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Output file (FHIR R4 Bundle JSON).
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(Serialize)]
struct Summary {
    output: String,
    hospital: String,
    patients: u64,
    seed: u64,
    bytes: u64,
}

pub fn run(a: SynthArgs, json: bool) -> anyhow::Result<()> {
    let hospital = match a.hospital {
        Some(h) => h,
        None => hospital_codes(1).into_iter().next().context("no demo hospital code")?,
    };
    let records = Synth::new(a.seed).records(&hospital, a.start, a.patients);
    let bundle = bundle_from_records(&records);
    let text = serde_json::to_vec_pretty(&bundle)?;
    std::fs::write(&a.output, &text).with_context(|| format!("writing {}", a.output.display()))?;
    let s = Summary {
        output: a.output.display().to_string(),
        hospital,
        patients: a.patients,
        seed: a.seed,
        bytes: text.len() as u64,
    };
    emit(json, &s, |s| {
        println!(
            "wrote {} synthetic patients of hospital {} (seed {}) to {} ({} bytes)",
            s.patients, s.hospital, s.seed, s.output, s.bytes
        )
    })
}
