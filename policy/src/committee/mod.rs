//! The data-access committee (審査委員会): applications, review, approval conditions, revocation,
//! violations and bans, and fees.
//!
//! The pure rules live in their own modules — the form's checks ([`application`]), the quorum rule
//! ([`review`]), the conditions every release is checked against ([`conditions`]), fees ([`fees`]), ban
//! lists ([`bans`]) — and [`store::Committee`] keeps the record in the policy database, enforcing the
//! state machine (submitted → under review → approved | refused; approved → revoked) in transactions.
//! Who may call what is not decided here: the policy service asks `authorize` first.

pub mod application;
pub mod bans;
pub mod conditions;
pub mod fees;
pub mod review;
pub mod store;

pub use application::{ApplicationForm, ApplicationKind, ApplicationStatus, Channel, Study, TableRequest};
pub use bans::{BanList, BanSubject, Violation};
pub use conditions::{
    ApprovalConditions, ApprovalState, DpBudget, PrivacyModel, SMALL_CELL_FLOOR, StatisticsRules, StatisticsUse,
    UseKind, UseRequest, check_use,
};
pub use fees::{FeeEstimate, FeeMode, Tariff};
pub use review::{Outcome, QuorumRule, Tally, Vote};
pub use store::{ApplicationRecord, Assignment, Committee, Provision, japan_date};
