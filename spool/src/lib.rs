//! The spool: what crosses from the gateway zone to the core zone, and the only thing that does.
//!
//! The gateway (`tokumei-ingest`) appends pseudonymised batches and patient requests to fsync'd segments, every
//! frame sealed with AES-256-GCM under a key the key service wraps for the gateway zone ([`spool_seal`]); the core
//! (`tokumei-store`) reads them through a feed ([`spool_feed`]): the directory on one host, or the gateway's
//! `SpoolService` over mutual TLS across hosts, and acknowledges what it committed. The core links this crate,
//! never the gateway's: it holds no pseudonymisation code and no HMAC key.

pub mod spool;
pub mod spool_feed;
pub mod spool_seal;
pub mod status;
