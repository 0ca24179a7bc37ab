//! One module per subcommand.

pub mod anonymize;
pub mod bench;
pub mod bench_deid;
pub mod bench_stats;
pub mod budget;
pub mod core;
pub mod demo;
pub mod model_flags;
pub mod pki;
pub mod push;
pub mod serve;
pub mod spool;
pub mod sql;
pub mod stats;
pub mod store;
pub mod synth;
pub mod verify;
