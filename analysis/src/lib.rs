//! The remote analysis environment (Visiting 解析) of the core zone: researchers analyse an approval's cohort where it
//! lies, and every result is checked before it leaves.
//!
//! This crate holds the environment's rules, free of any storage or transport so that they can be tested on
//! hand-computed cases and read by an output checker:
//!
//! - [`output_check`]: the automatic checks every output request runs before a human output checker sees it —
//!   minimum threshold, (n, k) and p % dominance, minima and maxima, zeros, degrees of freedom of a model, risk sets
//!   of a survival curve, and differencing against every earlier output of the same workspace, computed on the
//!   patients behind each cell (which never leave the environment);
//! - [`analyses`]: the built-in analyses — cross-tabulations, descriptive statistics, linear and logistic
//!   regression with standard errors, Kaplan–Meier curves — each returning its result and the evidence the checks
//!   need, computed in the same pass;
//! - [`monitoring`]: the patterns of a re-identification attempt in a workspace's queries (results about very few
//!   patients, narrowing chains, one shape asked over and over), raised as alerts for the operators;
//! - [`sql`]: a workspace's SQL, DataFusion over the workspace's own tables only, read-only, under memory and time
//!   limits, with nothing spilled to disk;
//! - [`lineage`]: the rules an analysis's query must follow so that each row's `patient` label is its own patient's;
//! - [`workspace`]: a workspace as the core runs it — the requests it answers (queries, analyses, uploads, output
//!   requests and releases), its state on disk and the conversions between its SQL and the analyses.

#![warn(missing_docs)]

pub mod analyses;
pub mod lineage;
pub mod monitoring;
pub mod output_check;
pub mod sql;
pub mod workspace;
