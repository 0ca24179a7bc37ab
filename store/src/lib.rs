//! The isolated core store: Delta Lake tables, encryption at rest, opt-out and erasure (issue 4).
//!
//! This zone is not built yet; see `docs/architecture.md` for where it sits in the data flow.
