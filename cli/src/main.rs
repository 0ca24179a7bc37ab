//! The `tokumei` command: the gateway, hospital-side tools, the demo and operator commands.
//!
//! Library crates return typed errors; this binary is the edge where they become `anyhow` messages and exit
//! codes (0 success, 1 failure, 2 usage error from clap).

mod commands;
mod output;

use clap::{Parser, Subcommand};

/// Decoding a batch allocates tens of small strings per record; mimalloc handles that churn far better than
/// the system allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Accredited anonymisation processing for Japanese medical data.
#[derive(Parser, Debug)]
#[command(name = "tokumei", version, about, propagate_version = true)]
struct Cli {
    /// Print machine-readable JSON instead of the human summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole story on loopback: hospitals push → gateway pseudonymises → spool.
    Demo(tokumei_demo::DemoArgs),
    /// Development certificates (CA, gateway, core, hospitals).
    Pki {
        #[command(subcommand)]
        command: commands::pki::PkiCommand,
    },
    /// The hospital-facing gateway.
    Ingest {
        #[command(subcommand)]
        command: commands::serve::IngestCommand,
    },
    /// Generate deterministic synthetic hospital data.
    Synth(commands::synth::SynthArgs),
    /// Push synthetic data or a FHIR R4 Bundle to a gateway (hospital side).
    Push(commands::push::PushArgs),
    /// Inspect the gateway's durable spool.
    Spool {
        #[command(subcommand)]
        command: commands::spool::SpoolCommand,
    },
    /// The isolated core: pulls from the gateway's spool into the encrypted store.
    Core {
        #[command(subcommand)]
        command: commands::core::CoreCommand,
    },
    /// Operator commands on the core store.
    Store {
        #[command(subcommand)]
        command: commands::store::StoreCommand,
    },
    /// Query the core store with SQL (operators).
    Sql(commands::sql::SqlArgs),
    /// The remote analysis environment: workspaces, output requests and their checking.
    Analysis {
        #[command(subcommand)]
        command: commands::analysis::AnalysisCommand,
    },
    /// Optimal k-anonymity / l-diversity / t-closeness over a CSV or Parquet table.
    Anonymize(commands::anonymize::AnonymizeArgs),
    /// Independently recount an anonymised output and fail on any violation.
    Verify(commands::verify::VerifyArgs),
    /// A statistical table: differentially private (OpenDP) or under the small-cell rule.
    Stats(tokumei_client::statistics::StatsArgs),
    /// Differential-privacy budgets of projects and the ledger of what was spent.
    Budget {
        #[command(subcommand)]
        command: commands::budget::BudgetCommand,
    },
    /// Accounts, two-factor enrolment, login and sessions.
    User(commands::user::UserArgs),
    /// A researcher's applications (提供申出), change requests and fee estimates.
    Apply(commands::apply::ApplyArgs),
    /// The data-access committee: review, decisions, revocation, violations and bans.
    Committee(commands::committee::CommitteeArgs),
    /// The tamper-evident audit ledger: verify, export, verify a bundle.
    Audit(commands::audit::AuditArgs),
    /// The committee zone's gRPC service (tokumei.policy.v1.PolicyService).
    Policy {
        #[command(subcommand)]
        command: commands::policy_serve::PolicyCommand,
    },
    /// The web console (committee, researchers, output checkers, operators, auditors, the public).
    Console {
        #[command(subcommand)]
        command: commands::console::ConsoleCommand,
    },
    /// Write the public registers (decisions, provisions) as JSON and CSV.
    Publish(commands::publish::PublishArgs),
    /// Reports (the periodic report to the regulator).
    Report(commands::publish::ReportArgs),
    /// Releases: build an approval into fingerprinted files, verify, serve and download, declare deletion.
    Release {
        #[command(subcommand)]
        command: commands::release::ReleaseCommand,
    },
    /// Whose copy of a release a leaked file is (operators).
    Trace(commands::trace::TraceArgs),
    /// Re-identification risk of a built release, measured on its copies.
    Risk {
        #[command(subcommand)]
        command: commands::risk::RiskCommand,
    },
    /// Benchmarks (figures go to docs/benchmarks.md).
    Bench {
        #[command(subcommand)]
        command: tokumei_bench::BenchCommand,
    },
}

fn main() {
    // mimalloc advises transparent huge pages on its arenas, so the first touch of any 2 MiB of heap zeroes all
    // of it: a short `tokumei anonymize` of Adult spent a quarter of its time in the kernel clearing pages and
    // peaked at 60 MB instead of 46 (docs/benchmarks.md). Without THP, pages are faulted in 4 KiB at a time, as
    // they are used. The setting is process-wide, holds for every subcommand (the long-running services' heaps
    // are small and churn, which gains nothing from huge pages either) and is inherited by child processes.
    // Best effort: a kernel without the prctl simply keeps its default.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    let result = run(cli);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Demo(a) => tokumei_demo::run(a, json),
        Command::Pki { command } => commands::pki::run(command, json),
        Command::Ingest { command } => commands::serve::run(command, json),
        Command::Synth(a) => commands::synth::run(a, json),
        Command::Push(a) => commands::push::run(a, json),
        Command::Spool { command } => commands::spool::run(command, json),
        Command::Core { command } => commands::core::run(command, json),
        Command::Store { command } => commands::store::run(command, json),
        Command::Sql(a) => commands::sql::run(a, json),
        Command::Analysis { command } => commands::analysis::run(command, json),
        Command::Console { command } => commands::console::run(command, json),
        Command::Anonymize(a) => commands::anonymize::run(a, json),
        Command::Verify(a) => commands::verify::run(a, json),
        Command::Stats(a) => commands::stats::run(a, json),
        Command::Release { command } => commands::release::run(command, json),
        Command::Risk { command } => commands::risk::run(command, json),
        Command::Trace(a) => commands::trace::run(a, json),
        Command::Budget { command } => commands::budget::run(command, json),
        Command::User(a) => commands::user::run(a, json),
        Command::Apply(a) => commands::apply::run(a, json),
        Command::Committee(a) => commands::committee::run(a, json),
        Command::Audit(a) => commands::audit::run(a, json),
        Command::Policy { command } => commands::policy_serve::run(command, json),
        Command::Publish(a) => commands::publish::run_publish(a, json),
        Command::Report(a) => commands::publish::run_report(a, json),
        Command::Bench { command } => tokumei_bench::run(command, json),
    }
}
