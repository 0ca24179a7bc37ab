//! The policy zone's stores tested directly, against SQLite and PostgreSQL. They live inside the crate because the
//! stores' constructors are crate-private: outside it the `Policy` façade is the library's only door, so no caller
//! of the library reaches a ledger or the committee's records without the façade's authorisation and audit.

#[macro_use]
mod support;

mod audit_ledger;
mod budget_ledger;
mod committee;
mod core_orders;
mod database_tls;
mod identity;
