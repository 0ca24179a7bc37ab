//! The clients of the zones' services: what the command line, the demo, the benchmarks (and the web console to
//! come) share to reach them. A client holds a session and the CA that issued the services' certificates — never a
//! key, a database or a store: every privileged act is a request a service authorises and audits. (The crate links
//! the policy and release libraries for the types their answers carry, and so the store's code through the release
//! crate; nothing here opens them. [`reason`] and [`release_reason`] serve the in-process workflows — the
//! installer's bootstrap, the demo's staffing — that call those libraries directly.)
//!
//! - [`session`]: the session a person got from `tokumei user login`, kept 0600 under the home;
//! - [`policy`]: the committee zone's `PolicyService` (committee, users, core orders, statistics);
//! - [`release`]: the release zone's `ReleaseService` (listing, trace, risk);
//! - [`release_build`]: a release built through the policy service, the core and the release service;
//! - [`download`]: a recipient's resumable, hash-verified download of their copy;
//! - [`core_orders`]: a core operation asked of the policy service, and the wait for the core's report;
//! - [`statistics`]: a researcher's statistical table, over their own file or over the store;
//! - [`output`]: how a command reports (a human summary or `--json`) and its runtime.

#![warn(missing_docs)]

pub mod analysis;
pub mod core_orders;
pub mod download;
pub mod output;
pub mod policy;
pub mod release;
pub mod release_build;
pub mod session;
pub mod statistics;

/// A refused gRPC call as `[REASON] message`: the machine-readable reason from the status's `ErrorInfo` (else
/// the status code), so scripts and tests match the reason and people read the message.
pub fn refused(status: tonic::Status) -> anyhow::Error {
    let reason = tokumei_platform::client::status_reason(&status)
        .unwrap_or_else(|| format!("{:?}", status.code()).to_uppercase());
    anyhow::anyhow!("[{reason}] {}", status.message())
}

/// A policy zone's error as `[REASON] message`, for the workflows that drive the façade in process (the installer's
/// bootstrap, the demo's staffing, the benchmarks).
pub fn reason(e: tokumei_policy::PolicyError) -> anyhow::Error {
    anyhow::anyhow!("[{}] {e}", e.reason())
}

/// A release zone's error as `[REASON] message`.
pub fn release_reason(e: tokumei_release::ReleaseError) -> anyhow::Error {
    anyhow::anyhow!("[{}] {e}", e.reason())
}
