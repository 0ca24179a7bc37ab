//! The committee zone: what researchers are allowed to learn, and the record of what they learnt.
//!
//! This zone sits beside the core (see `docs/architecture.md`): it never holds clinical data, only
//! decisions about it. Today it keeps the differential-privacy budget ledger ([`budget_ledger`]): each
//! project's approved (ε, δ) and every release charged against it, enforced with the one admission rule
//! of `tokumei_deid::dp::accounting` so that no sequence of queries, processes or restarts can spend more
//! than the committee approved. Users and roles, the committee workflow, 2FA and the tamper-evident
//! audit ledger (issue 6) will live in the same database ([`database`]), which is an embedded SQLite file
//! by default and a PostgreSQL server when several front-ends share one ledger.

#![warn(missing_docs)]

pub mod budget_ledger;
pub mod database;
pub mod error;

pub use budget_ledger::{
    BudgetChange, BudgetLedger, BudgetStatus, LedgerEntry, ProjectBudget, SpendRequest, TotalsCheck,
};
pub use database::{Backend, PolicyDb, default_url};
pub use error::{PolicyError, Result};
