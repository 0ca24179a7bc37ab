//! Differential privacy: private statistical tables with OpenDP, and the accounting that makes a
//! project's budget hold across many requests.

pub mod accounting;
pub mod grouping;
pub mod mechanisms;
pub mod plan;
pub mod release;
pub mod request;
pub mod utility;

#[cfg(test)]
mod tests;
