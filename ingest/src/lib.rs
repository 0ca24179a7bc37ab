//! The hospital-facing gateway: the only place where direct identifiers exist in clear.
//!
//! A record travels through this crate in one direction:
//! [`tls`] (who is calling, from the client certificate) → [`my_number`] (destroy any My Number) →
//! [`validate`] (codes, dates, units) → [`pseudonymise`] (keyed pseudonyms via [`keyservice`]) →
//! [`spool`] (fsync'd, group-committed) → receipt. [`gateway`] is the gRPC service that strings these together.
//! The core store pulls the spool through [`spool_feed`] (same host: the directory; across hosts: the
//! [`spool_service`] on the gateway) and acknowledges what it committed, after which the gateway deletes it.

pub mod directory;
pub mod fhir;
pub mod gateway;
pub mod identified;
pub mod limits;
pub mod metrics;
pub mod my_number;
pub mod normalise;
pub mod operator;
pub mod pseudonymise;
pub mod reason;
pub mod record_fields;
pub mod registry;
pub mod server;
pub mod spool_service;
pub mod validate;

// The shared kernel lives in crates of its own; re-exported so the gateway's modules keep their paths.
pub use tokumei_keys as keyservice;
/// The development PKI (moved to the keys crate; re-exported where callers found it).
pub use tokumei_keys::pki;
// The spool lives in its own crate (the core links it, never the gateway); re-exported for the gateway's code.
pub use tokumei_platform::{client, config, home, telemetry, tls};
pub use tokumei_spool::{spool, spool_feed, spool_seal};
/// Synthetic hospitals, for `tokumei synth`, the demo, the benchmarks and the tests (a crate of its own).
pub use tokumei_synth as synth;
#[cfg(test)]
mod synthetic_records;
