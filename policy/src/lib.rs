//! Committee workflow, users and roles, 2FA and the tamper-evident audit ledger (issue 6).
//!
//! This zone is not built yet; see `docs/architecture.md` for where it sits in the data flow.
