//! (k, k^m)-anonymity over whole patient records: relational demographics plus the set of a patient's event
//! items (diagnoses, prescriptions, lab tests, visits).
//!
//! The model (Terrovitis et al. 2008 for set-valued data; Poulis et al. 2013 for relational + transaction
//! records): for every patient, the patient's released demographic class together with **any m of the
//! patient's released event items** matches at least k distinct patients. An adversary who knows someone's
//! demographics and up to m of their events — a diagnosis and the month, a prescription, a visit — is left with
//! at least k candidates.
//!
//! The demographic part is anonymised first by the relational engine ([`crate::search`]); its classes are this
//! module's input. Event items are then recoded globally: every item kind (a table) has components (a code, a
//! period, a department), each generalised along its hierarchy to one level chosen for the whole release (a
//! full-domain cut per component). What still violates the model after the recoding is resolved by suppressing
//! the offending items inside the demographic class where they are rare ([`evaluate`]); the share of suppressed
//! event occurrences is bounded. [`search`] picks the recoding that minimises the information loss defined in
//! [`loss`]; [`exhaustive`] evaluates every recoding and is the reference the tests compare the search against.
//! `crate::verify_km` re-checks the written files without sharing any code with this module.

pub mod data;
pub mod evaluate;
pub mod exhaustive;
pub mod loss;
pub mod search;

#[cfg(test)]
mod tests;

pub use data::{Component, Event, ItemKind, MAX_FIELDS, RtData};
pub use evaluate::{Evaluation, KmParams, evaluate};
pub use loss::ItemNode;
pub use search::{SearchOutcome, search};
