//! One module per subcommand.

pub mod access;
pub mod anonymize;
pub mod apply;
pub mod audit;
pub mod budget;
pub mod committee;
pub mod core;
pub mod model_flags;
pub mod pki;
pub mod policy_serve;
pub mod publish;
pub mod push;
pub mod release;
pub mod release_download;
pub mod release_plan;
pub mod release_serve;
pub mod risk;
pub mod serve;
pub mod spool;
pub mod sql;
pub mod stats;
pub mod store;
pub mod synth;
pub mod trace;
pub mod user;
pub mod verify;
