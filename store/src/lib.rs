//! The isolated core store: pseudonymised clinical data as encrypted Delta Lake tables.
//!
//! Data flow inside this crate: [`core`] pulls committed spool entries (it opens no listener) →
//! [`apply`] writes them into the tables of [`schema`] exactly once, via [`rows`] → every byte goes through
//! [`encryption`] on its way to disk or S3 ([`location`]). Readers get a DataFusion session from
//! [`Store::session`]: the research view filters opted-out patients in one place, [`exclusion`].
//! [`erasure`] deletes a patient physically; [`compaction`] keeps files large; [`status`] reports.

pub mod apply;
pub use tokumei_catalogue::catalogue;
pub mod compaction;
pub mod core;
pub mod encryption;
pub mod erasure;
pub mod error;
pub mod exclusion;
pub mod location;
pub mod orders;
pub mod persons;
pub mod regulator;
pub mod request_reach;
pub mod rows;
pub mod schema;
pub mod sql;
pub mod statistics;
pub mod status;
pub mod store;

pub use error::StoreError;
pub use schema::Table;
pub use store::{OperatorSession, ResearchSession, Store, View};
