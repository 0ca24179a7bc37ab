//! Stable, machine-readable rejection reasons.
//!
//! Hospitals' systems branch on these codes, so they are part of the contract: a code is never renamed or
//! reused. The human `detail` that accompanies a reason never echoes a submitted value, because that value may
//! be an identifier.

use std::fmt;

/// Why a record (or a whole request) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A 12-digit run passing the My Number check digit was found in some string field.
    MyNumberPresent,
    /// Neither a complete insured identity nor kana name + birth date + sex was given.
    MissingIdentity,
    /// The hospital's local patient id is empty.
    MissingLocalId,
    /// The birth date is empty.
    MissingBirthDate,
    /// A date is not `YYYY-MM-DD` or is not a calendar date.
    InvalidDate,
    /// A date is in the future or before 1900-01-01.
    DateOutOfRange,
    /// A clinical date lies before the birth date or after the death date.
    DateOutsideLife,
    /// An encounter's discharge date is before its admission date.
    DischargeBeforeAdmission,
    /// The insured identity is incomplete or malformed.
    InvalidInsurance,
    /// The kana name is not katakana/hiragana.
    InvalidKanaName,
    /// The sex code is not one of the enum values.
    InvalidSex,
    /// The postal code is not 7 digits.
    InvalidPostalCode,
    /// The municipality code is not 6 digits with a valid check digit and prefecture.
    InvalidMunicipalityCode,
    /// An ICD-10 code is malformed.
    InvalidIcd10,
    /// A standard disease-master id is malformed.
    InvalidDiseaseMasterId,
    /// A YJ code is not 12 well-formed characters.
    InvalidYjCode,
    /// A JLAC10 code is not 17 well-formed characters.
    InvalidJlac10,
    /// A JLAC11 code is not 17 well-formed characters.
    InvalidJlac11,
    /// An observation carries neither a JLAC10 nor a JLAC11 code.
    MissingLabCode,
    /// A unit is not one the platform knows.
    InvalidUnit,
    /// A numeric value is not finite or outside the plausible range.
    ValueOutOfRange,
    /// An encounter kind is not one of the known kinds.
    InvalidEncounterKind,
    /// A free-text field exceeds its length limit.
    FieldTooLong,
    /// The patient has opted out (提供停止) or asked for erasure (破棄).
    OptedOut,
}

impl Reason {
    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 24] = [
        Reason::MyNumberPresent,
        Reason::MissingIdentity,
        Reason::MissingLocalId,
        Reason::MissingBirthDate,
        Reason::InvalidDate,
        Reason::DateOutOfRange,
        Reason::DateOutsideLife,
        Reason::DischargeBeforeAdmission,
        Reason::InvalidInsurance,
        Reason::InvalidKanaName,
        Reason::InvalidSex,
        Reason::InvalidPostalCode,
        Reason::InvalidMunicipalityCode,
        Reason::InvalidIcd10,
        Reason::InvalidDiseaseMasterId,
        Reason::InvalidYjCode,
        Reason::InvalidJlac10,
        Reason::InvalidJlac11,
        Reason::MissingLabCode,
        Reason::InvalidUnit,
        Reason::ValueOutOfRange,
        Reason::InvalidEncounterKind,
        Reason::FieldTooLong,
        Reason::OptedOut,
    ];

    /// The stable UPPER_SNAKE code sent to hospitals.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MyNumberPresent => "MY_NUMBER_PRESENT",
            Reason::MissingIdentity => "MISSING_IDENTITY",
            Reason::MissingLocalId => "MISSING_LOCAL_ID",
            Reason::MissingBirthDate => "MISSING_BIRTH_DATE",
            Reason::InvalidDate => "INVALID_DATE",
            Reason::DateOutOfRange => "DATE_OUT_OF_RANGE",
            Reason::DateOutsideLife => "DATE_OUTSIDE_LIFE",
            Reason::DischargeBeforeAdmission => "DISCHARGE_BEFORE_ADMISSION",
            Reason::InvalidInsurance => "INVALID_INSURANCE",
            Reason::InvalidKanaName => "INVALID_KANA_NAME",
            Reason::InvalidSex => "INVALID_SEX",
            Reason::InvalidPostalCode => "INVALID_POSTAL_CODE",
            Reason::InvalidMunicipalityCode => "INVALID_MUNICIPALITY_CODE",
            Reason::InvalidIcd10 => "INVALID_ICD10",
            Reason::InvalidDiseaseMasterId => "INVALID_DISEASE_MASTER_ID",
            Reason::InvalidYjCode => "INVALID_YJ_CODE",
            Reason::InvalidJlac10 => "INVALID_JLAC10",
            Reason::InvalidJlac11 => "INVALID_JLAC11",
            Reason::MissingLabCode => "MISSING_LAB_CODE",
            Reason::InvalidUnit => "INVALID_UNIT",
            Reason::ValueOutOfRange => "VALUE_OUT_OF_RANGE",
            Reason::InvalidEncounterKind => "INVALID_ENCOUNTER_KIND",
            Reason::FieldTooLong => "FIELD_TOO_LONG",
            Reason::OptedOut => "OPTED_OUT",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected record: the reason code plus human text naming the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The machine-readable reason.
    pub reason: Reason,
    /// Which field, and what was wrong with it, without the value.
    pub detail: String,
}

impl Refusal {
    /// Builds a refusal; `detail` must not contain submitted values.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

/// Machine-readable reasons for whole-request failures, sent as `google.rpc.ErrorInfo.reason` next to the
/// gRPC status code (domain [`ERROR_DOMAIN`]).
pub mod request {
    /// The batch id is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    pub const INVALID_BATCH_ID: &str = "INVALID_BATCH_ID";
    /// The batch id was already used for different content.
    pub const BATCH_ID_REUSED: &str = "BATCH_ID_REUSED";
    /// A message exceeded the configured maximum size.
    pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
    /// The hospital exceeded its record rate.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The client certificate does not name a 10-digit medical-institution code.
    pub const NOT_A_HOSPITAL: &str = "NOT_A_HOSPITAL";
    /// The hospital is not (or no longer) enabled in the platform's directory.
    pub const HOSPITAL_NOT_ENABLED: &str = "HOSPITAL_NOT_ENABLED";
    /// The directory pins another certificate for this hospital (replaced or revoked there).
    pub const CERTIFICATE_NOT_PINNED: &str = "CERTIFICATE_NOT_PINNED";
    /// The request id is empty or malformed.
    pub const INVALID_REQUEST_ID: &str = "INVALID_REQUEST_ID";
    /// The request id was already used for a different patient or kind.
    pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
    /// An opt-out/erase request identifies nobody.
    pub const MISSING_IDENTITY: &str = "MISSING_IDENTITY";
    /// An opt-out/erase request, or a batch id, carries a My Number.
    pub const MY_NUMBER_PRESENT: &str = "MY_NUMBER_PRESENT";
    /// An opt-out/erase request has a malformed field.
    pub const INVALID_IDENTITY: &str = "INVALID_IDENTITY";
    /// The key service could not be reached; nothing was stored, retry later.
    pub const KEY_SERVICE_UNAVAILABLE: &str = "KEY_SERVICE_UNAVAILABLE";
    /// The spool could not make the batch durable; nothing was acknowledged, retry later.
    pub const SPOOL_UNAVAILABLE: &str = "SPOOL_UNAVAILABLE";
    /// A message could not be decoded as the RPC's message type (garbage bytes, a string that is not UTF-8,
    /// nesting beyond the decoder's limit); nothing of the stream after it was read.
    pub const MALFORMED_MESSAGE: &str = "MALFORMED_MESSAGE";
    /// The RPC ran longer than the gateway's `request_timeout_secs`; batches already acknowledged in the
    /// spool stay committed, and resending them is a replay.
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    /// The gateway is shutting down; retry against another instance or later.
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
}

/// The `ErrorInfo.domain` of every tokumei gateway error.
pub const ERROR_DOMAIN: &str = tokumei_proto::bounded::INGEST_ERROR_DOMAIN;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_upper_snake() {
        let mut seen = HashSet::new();
        for r in Reason::ALL {
            let c = r.code();
            assert!(seen.insert(c), "duplicate {c}");
            assert!(
                c.chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch == '_' || ch.is_ascii_digit())
            );
        }
    }
}
