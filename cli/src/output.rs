//! Printing and running a command: shared with the demo and the benchmarks ([`tokumei_client::output`]).

pub use tokumei_client::output::{emit, runtime, write_atomically};
