//! `Debug` for identifier-bearing messages: shows structure and counts, never the identifiers themselves.

use crate::ingest::v1::{Insurance, PatientRecord, PatientRequest};
use std::fmt;

const REDACTED: &str = "<redacted>";

fn redact(s: &str) -> &'static str {
    if s.is_empty() { "" } else { REDACTED }
}

impl fmt::Debug for Insurance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Insurance")
            .field("insurer_number", &redact(&self.insurer_number))
            .field("symbol", &redact(&self.symbol))
            .field("number", &redact(&self.number))
            .field("branch", &redact(&self.branch))
            .finish()
    }
}

impl fmt::Debug for PatientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientRecord")
            .field("local_patient_id", &redact(&self.local_patient_id))
            .field("insurance", &self.insurance)
            .field("kana_name", &redact(&self.kana_name))
            .field("birth_date", &redact(&self.birth_date))
            .field("sex", &self.sex)
            .field("postal_code", &redact(&self.postal_code))
            .field("municipality_code", &self.municipality_code)
            .field("death_date", &redact(&self.death_date))
            .field("encounters", &self.encounters.len())
            .field("conditions", &self.conditions.len())
            .field("medications", &self.medications.len())
            .field("observations", &self.observations.len())
            .field("allergies", &self.allergies.len())
            .field("long_term_storage", &self.long_term_storage)
            .finish()
    }
}

impl fmt::Debug for PatientRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientRequest")
            .field("request_id", &self.request_id)
            .field("insurance", &self.insurance)
            .field("kana_name", &redact(&self.kana_name))
            .field("birth_date", &redact(&self.birth_date))
            .field("sex", &self.sex)
            .field("local_patient_id", &redact(&self.local_patient_id))
            .finish()
    }
}

mod release_secrets {
    //! One-time download tokens (and the URL that embeds one) never reach a log.

    use super::redact;
    use crate::release::v1::RequestDownloadResponse;
    use std::fmt;

    impl fmt::Debug for RequestDownloadResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RequestDownloadResponse")
                .field("url", &redact(&self.url))
                .field("token", &redact(&self.token))
                .field("expires_at", &self.expires_at)
                .field("bytes", &self.bytes)
                .field("sha256", &self.sha256)
                .finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_identifiers() {
        let r = PatientRecord {
            local_patient_id: "LOCAL-778899".into(),
            kana_name: "ヤマダ タロウ".into(),
            postal_code: "1000001".into(),
            insurance: Some(Insurance {
                insurer_number: "06135018".into(),
                symbol: "KIGO77".into(),
                number: "BANGO55".into(),
                branch: "01".into(),
            }),
            ..Default::default()
        };
        let s = format!("{r:?}");
        for planted in ["778899", "ヤマダ", "1000001", "06135018", "KIGO77", "BANGO55"] {
            assert!(!s.contains(planted), "{planted} leaked in {s}");
        }
        assert!(s.contains(REDACTED));
    }
}

mod policy_secrets {
    //! Passwords, TOTP and recovery codes, invitation codes and session tokens never reach a log.

    use super::{REDACTED, redact};
    use crate::policy::v1::{
        AddUserResponse, ConfirmTotpRequest, ConfirmTotpResponse, EnrolRequest, EnrolResponse, LoginRequest,
        LoginResponse,
    };
    use std::fmt;

    impl fmt::Debug for LoginRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LoginRequest")
                .field("username", &self.username)
                .field("password", &redact(&self.password))
                .field("second_factor", &self.second_factor.as_ref().map(|_| REDACTED))
                .finish()
        }
    }

    impl fmt::Debug for LoginResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LoginResponse")
                .field("session_token", &redact(&self.session_token))
                .field("expires_at", &self.expires_at)
                .field("actor", &self.actor)
                .finish()
        }
    }

    impl fmt::Debug for EnrolRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("EnrolRequest")
                .field("username", &self.username)
                .field("invitation_code", &redact(&self.invitation_code))
                .field("password", &redact(&self.password))
                .finish()
        }
    }

    impl fmt::Debug for EnrolResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("EnrolResponse")
                .field("otpauth_uri", &redact(&self.otpauth_uri))
                .field("secret_base32", &redact(&self.secret_base32))
                .finish()
        }
    }

    impl fmt::Debug for ConfirmTotpRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ConfirmTotpRequest")
                .field("username", &self.username)
                .field("password", &redact(&self.password))
                .field("totp_code", &redact(&self.totp_code))
                .finish()
        }
    }

    impl fmt::Debug for ConfirmTotpResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ConfirmTotpResponse")
                .field("recovery_codes", &self.recovery_codes.len())
                .finish()
        }
    }

    impl fmt::Debug for AddUserResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("AddUserResponse")
                .field("username", &self.username)
                .field("invitation_code", &redact(&self.invitation_code))
                .field("invitation_expires_at", &self.invitation_expires_at)
                .finish()
        }
    }
}

mod core_orders {
    //! The linkage keys of an operator's erasure never reach a log: counts only.

    use super::redact;
    use crate::policy::v1::{EraseOperation, SignedCoreOrder};
    use std::fmt;

    impl fmt::Debug for EraseOperation {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("EraseOperation")
                .field("linkage_keys", &self.linkage_keys.len())
                .field("hospital_pseudonym", &redact(&self.hospital_pseudonym))
                .field("request_id", &self.request_id)
                .finish()
        }
    }

    impl fmt::Debug for SignedCoreOrder {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SignedCoreOrder")
                .field("payload_bytes", &self.payload.len())
                .finish_non_exhaustive()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn erase_orders_show_no_key() {
            let key = "ab".repeat(32);
            let op = EraseOperation {
                linkage_keys: vec![key.clone()],
                hospital_pseudonym: key.clone(),
                request_id: "req-1".into(),
            };
            let signed = SignedCoreOrder {
                payload: format!("{{\"linkage_keys\":[\"{key}\"]}}"),
                signature: "00".into(),
                id: 1,
            };
            for text in [format!("{op:?}"), format!("{signed:?}")] {
                assert!(!text.contains(&key), "{text}");
            }
        }
    }
}
