//! Printing and running a command: shared with the demo and the benchmarks ([`tokumei_client::output`]).

pub use tokumei_client::output::{emit, runtime, write_atomically};

/// Logging of a long-running service process (`policy serve`, `release serve`, `console serve`): `RUST_LOG` or
/// `info`, to standard error (standard output carries the readiness line scripts and tests read).
pub fn init_service_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
