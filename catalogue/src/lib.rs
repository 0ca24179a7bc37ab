//! The platform's data dictionary, one crate so that every zone reads the same one: which tables the core store
//! holds and their columns ([`schema`]), and what each column is, which code system it follows, along which
//! hierarchy it may be coarsened and which keys of it are public ([`catalogue`]).
//!
//! The policy service checks a statistics request against it before any budget is spent; the core and the
//! release zone apply it to the data. It links no storage engine: deciding about data needs no way to read it.

pub mod catalogue;
pub mod schema;
pub mod statistics;

pub use schema::Table;
