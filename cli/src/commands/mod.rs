//! One module per subcommand.

pub mod access;
pub mod anonymize;
pub mod apply;
pub mod audit;
pub mod bench;
pub mod bench_deid;
pub mod bench_stats;
pub mod budget;
pub mod committee;
pub mod core;
pub mod demo;
pub mod demo_committee;
pub mod model_flags;
pub mod pki;
pub mod policy_serve;
pub mod publish;
pub mod push;
pub mod serve;
pub mod spool;
pub mod sql;
pub mod stats;
pub mod store;
pub mod synth;
pub mod user;
pub mod verify;
