//! The committee zone: who may do what, what the committee approved, and the record of everything done.
//!
//! This zone sits beside the core (see `docs/architecture.md`): it never holds clinical data, only
//! decisions about it.
//! - [`authorization`]: the one decision `authorize(actor, action, resource)` every service asks.
//! - [`identity`]: organisations, users and roles; argon2id passwords, TOTP second factor, recovery codes,
//!   lockout with back-off, short-lived signed session tokens.
//! - [`committee`]: applications (提供申出), change requests, umbrella applications, review with recusal
//!   and a quorum rule, approval conditions the release service enforces, revocation, violations and bans,
//!   fee estimates.
//! - [`budget_ledger`]: each project's approved (ε, δ) and every release charged against it.
//! - [`audit_ledger`]: the hash-chained, ed25519-signed record of every action.
//! - [`transparency`]: the public registers and the regulator's periodic report.
//!
//! Everything lives in one database ([`database`]): an embedded SQLite file by default, a PostgreSQL
//! server when several front-ends share one ledger.

#![warn(missing_docs)]

// The crate's own tests name it as its callers do (`tokumei_policy::...`).
#[cfg(test)]
extern crate self as tokumei_policy;
#[cfg(test)]
mod store_tests;

pub mod analysis;
pub mod audit_ledger;
pub mod authorization;
pub mod budget_ledger;
pub mod committee;
pub mod core_orders;
pub mod database;
pub mod error;
pub mod file_statistics;
pub mod grpc;
pub mod identity;
pub mod on_home;
pub mod query_shape;
pub mod service;
pub mod service_key;
pub mod small_cell_tables;
pub mod statistics;
pub mod transparency;

pub use authorization::{Action, Actor, AuthMethod, DenialReason, Denied, Resource, Role, authorize, authorize_role};
pub use budget_ledger::{
    BudgetChange, BudgetLedger, BudgetStatus, LedgerEntry, ProjectBudget, SpendRequest, TotalsCheck,
};
pub use database::{Backend, PolicyDb, default_url};
pub use error::{PolicyError, Result};
pub use service::{Clock, NewPerson, Origin, Policy, PolicyConfig, SignedHospitalDirectory, UserChange, system_clock};
pub use service_key::{ServiceKey, ServicePublicKey, SignaturePurpose};
