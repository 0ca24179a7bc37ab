//! The built-in analyses researchers run without code: cross-tabulations, descriptive statistics, linear and
//! logistic regression with standard errors, and Kaplan–Meier survival curves. Each returns what the researcher
//! sees and, beside it, the evidence the output checks need (which patients stand behind each cell, how much each
//! contributed) — computed in the same pass, so the checks judge exactly what was computed.
//!
//! The numerics are the maintained crates': `statrs` for the summary statistics and the reference distributions,
//! `nalgebra` for the linear algebra (Cholesky factorisation and inverse of the normal equations).

pub mod crosstab;
pub mod describe;
pub mod frame;
pub mod regression;
pub mod survival;

pub use frame::{AnalysisError, Column, Frame};

use crate::output_check::Output;

/// An analysis's result and the evidence of what it would release.
#[derive(Debug, Clone)]
pub struct Analysed<T> {
    /// What the researcher sees in the workspace.
    pub result: T,
    /// The same output as the checks see it (never shown).
    pub output: Output,
}

#[cfg(test)]
mod tests;
