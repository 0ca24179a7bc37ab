//! `tokumei bench`: the measured runs whose figures docs/benchmarks.md records (machine and command beside each).
//! Each drives the zones' own libraries and services — the gateway as a child process, the engines in process,
//! the release zone through its services — so a figure is the product's, not a harness's.

#![warn(missing_docs)]

pub mod analysis;
pub mod console;
pub mod deid;
pub mod host;
pub mod ingest;
pub mod km;
mod local_policy;
pub mod release;
mod staff;
pub mod stats;

use clap::Subcommand;

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Ingest throughput, receipt latency and gateway peak RSS.
    Ingest(ingest::IngestBench),
    /// Anonymisation engine: Adult search times and a large synthetic patient table.
    Anonymize(crate::deid::AnonymizeBench),
    /// Differentially private statistics: 10 M rows, 1,000 groups, counts and bounded means.
    Stats(crate::stats::StatsBench),
    /// Release zone: fingerprint embedding and tracing, experiments, a release build, download throughput.
    Release(Box<crate::release::ReleaseBench>),
    /// Whole-record (k, k^m) engine: item search and independent verification on synthetic patients.
    Km(crate::km::KmBench),
    /// Remote analysis environment: logistic and linear regression on 1 M rows, automatic output checks.
    Analysis(crate::analysis::AnalysisBench),
    /// Web console: page latency with 50 people signed in and requesting pages at once.
    Console(crate::console::ConsoleBench),
}

/// Runs one benchmark and prints its report (`--json`: the report as JSON).
pub fn run(cmd: BenchCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(a) => ingest::run(a, json),
        BenchCommand::Anonymize(a) => deid::run(a, json),
        BenchCommand::Stats(a) => stats::run(a, json),
        BenchCommand::Release(a) => release::run(*a, json),
        BenchCommand::Km(a) => km::run(a, json),
        BenchCommand::Analysis(a) => analysis::run(a, json),
        BenchCommand::Console(a) => console::run(a, json),
    }
}
