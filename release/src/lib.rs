//! Release builder, recipient fingerprinting and leak tracing, signed manifests (issue 7).
//!
//! This zone is not built yet; see `docs/architecture.md` for where it sits in the data flow.
