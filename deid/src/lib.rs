//! Pure anonymisation engine (issue 3): hierarchies, privacy models, optimal lattice search, risk
//! and utility.
//!
//! The pipeline is: read a [`table::Table`] (CSV, Arrow or Parquet) → build
//! [`hierarchy::Hierarchy`]s (ARX CSV or [`generators::Generator`], declared in a
//! [`spec::JobSpec`]) → encode a [`dataset::Dataset`] → [`search::search`] for the optimal
//! transformation under a [`model::PrivacyModel`] and [`metric::Metric`] → [`transform`] the rows,
//! measure [`risk`] and produce a [`report::Report`]. [`job::run`] strings these together;
//! [`verify`] re-checks an output file independently of all of it, and [`exhaustive`] is the
//! brute-force reference the search is tested against. With the `datafusion` feature,
//! the `datafusion` module builds the [`table::Table`] from a DataFusion query instead of a file.

#![allow(clippy::needless_range_loop)]

#[cfg(feature = "datafusion")]
pub mod datafusion;

pub mod dataset;
pub mod dp;
pub mod error;
pub mod exhaustive;
pub mod generators;
pub mod hierarchy;
pub mod job;
pub mod lattice;
pub mod linked_tables;
pub mod metric;
pub mod model;
pub mod published_table;
pub mod report;
pub mod risk;
pub mod search;
pub mod small_cell;
pub mod spec;
pub mod table;
pub mod transaction;
pub mod transform;
pub mod verify;
pub mod verify_km;

mod classes;
mod csv_input;
mod evaluate;
mod fasthash;

pub use error::{Error, NoSolution, Result};
