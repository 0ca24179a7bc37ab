//! The release zone: turns an approval into files, marks every recipient's copy, traces leaked copies and
//! delivers downloads.
//!
//! Data flow: [`builder`] runs next to the core store (it is the only part that reads it): it selects the
//! approved tables, columns and cohort through the store's research view, replaces linkage keys by
//! [`pseudonym`]s of this release, anonymises with the `deid` engine, verifies independently, embeds a
//! [`fingerprint`] per recipient, re-verifies, writes Parquet, CSV, a codebook and a signed [`manifest`], and
//! hands the finished copies to the [`zone`], which keeps them encrypted at rest. [`delivery`] serves them
//! (gRPC + HTTPS) to recipients with a two-factor session; [`trace`] finds whose copy a leaked file was.

pub mod builder;
pub mod catalogue;
pub mod delivery;
pub mod error;
pub mod fingerprint;
pub mod intake;
pub mod manifest;
pub mod pseudonym;
pub mod risk;
pub mod sealed_file;
pub mod trace;
pub mod workspace;
pub mod zone;

pub use error::ReleaseError;
