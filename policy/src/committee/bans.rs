//! Violations and the bans they carry, and the signed ban list processors exchange.
//!
//! A recorded violation (for example an attempted re-identification found by leak tracing) bans the
//! person or organisation from new applications and from receiving data, until a date or indefinitely.
//! Processors honour each other's bans: [`BanList`] is exported signed with the issuing processor's
//! ed25519 key, and an import is accepted only when the signature verifies under the key the importing
//! operator names as trusted — an unsigned or re-signed list cannot ban or un-ban anyone.
//!
//! Subjects are identified by identifiers processors share: an organisation by its corporate number
//! (法人番号) or the identifier the processors agreed on, a person by their researcher number (e-Rad) or
//! username where the processors use the same directory.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::service_key::{ServiceKey, ServicePublicKey, SignaturePurpose};

/// Who is banned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum BanSubject {
    /// A person (username / researcher number).
    Person(String),
    /// An organisation.
    Organisation(String),
}

impl BanSubject {
    /// `person` or `organisation`.
    pub fn kind(&self) -> &'static str {
        match self {
            BanSubject::Person(_) => "person",
            BanSubject::Organisation(_) => "organisation",
        }
    }

    /// The identifier.
    pub fn id(&self) -> &str {
        match self {
            BanSubject::Person(id) | BanSubject::Organisation(id) => id,
        }
    }

    /// From stored parts.
    pub fn from_parts(kind: &str, id: &str) -> Result<BanSubject> {
        match kind {
            "person" => Ok(BanSubject::Person(id.to_owned())),
            "organisation" => Ok(BanSubject::Organisation(id.to_owned())),
            other => Err(PolicyError::Invalid(format!("unknown ban subject kind {other:?}"))),
        }
    }
}

impl fmt::Display for BanSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// A recorded violation and its ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Identifier (`V-2026-0001`; imported ones keep the issuer's identifier).
    pub id: String,
    /// Who is banned.
    pub subject: BanSubject,
    /// What kind of violation (`re_identification_attempt`, `leak`, `use_beyond_approval`, ...).
    pub kind: String,
    /// What happened.
    pub description: String,
    /// The application concerned, if any.
    #[serde(default)]
    pub application: Option<String>,
    /// Last day of the ban; `None` is indefinite.
    #[serde(default)]
    pub banned_until: Option<NaiveDate>,
    /// When it was recorded (RFC 3339 UTC).
    pub recorded_at: String,
    /// Who recorded it (local) or which processor issued it (imported).
    pub recorded_by: String,
    /// `local`, or the key id of the processor whose list it was imported from.
    pub source: String,
}

impl Violation {
    /// Whether the ban is in force on `today`.
    pub fn in_force(&self, today: NaiveDate) -> bool {
        self.banned_until.is_none_or(|until| today <= until)
    }
}

/// A signed list of bans in force, for other processors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanList {
    /// The issuing processor's name.
    pub issuer: String,
    /// Its public key (hex).
    pub issuer_key: String,
    /// When the list was made (RFC 3339 UTC).
    pub generated_at: String,
    /// The bans.
    pub bans: Vec<Violation>,
    /// ed25519 signature (hex) over the list without this field (see [`BanList::signed_bytes`]).
    pub signature: String,
}

impl BanList {
    /// The bytes the signature covers: the JSON of the list with an empty signature.
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        let unsigned = BanList {
            signature: String::new(),
            ..self.clone()
        };
        serde_json::to_vec(&unsigned).map_err(|e| PolicyError::Invalid(format!("ban list: {e}")))
    }

    /// Builds and signs a list.
    pub fn sign(issuer: &str, key: &ServiceKey, generated_at: String, bans: Vec<Violation>) -> Result<BanList> {
        let mut list = BanList {
            issuer: issuer.to_owned(),
            issuer_key: key.public().to_hex(),
            generated_at,
            bans,
            signature: String::new(),
        };
        list.signature = hex::encode(key.sign(SignaturePurpose::BanList, &list.signed_bytes()?));
        Ok(list)
    }

    /// Checks the signature under `trusted` (the key the importing operator trusts for this issuer) and
    /// returns the bans. A list signed by any other key is refused even if its own signature is valid.
    pub fn verify(&self, trusted: &ServicePublicKey) -> Result<&[Violation]> {
        if self.issuer_key != trusted.to_hex() {
            return Err(PolicyError::Invalid(format!(
                "ban list from {:?} is signed by key {}, not the trusted key {}",
                self.issuer,
                ServicePublicKey::from_hex(&self.issuer_key)
                    .map(|k| k.key_id())
                    .unwrap_or_else(|_| "(invalid)".into()),
                trusted.key_id()
            )));
        }
        let signature = hex::decode(&self.signature).unwrap_or_default();
        if !trusted.verify(SignaturePurpose::BanList, &self.signed_bytes()?, &signature) {
            return Err(PolicyError::Invalid(format!(
                "ban list from {:?}: the signature does not match its contents (altered in transit?)",
                self.issuer
            )));
        }
        Ok(&self.bans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation() -> Violation {
        Violation {
            id: "V-2026-0001".into(),
            subject: BanSubject::Organisation("1234567890123".into()),
            kind: "re_identification_attempt".into(),
            description: "linked a release to a voter list".into(),
            application: Some("A-2026-0001".into()),
            banned_until: NaiveDate::from_ymd_opt(2031, 12, 31),
            recorded_at: "2026-11-29T00:00:00Z".into(),
            recorded_by: "chika".into(),
            source: "local".into(),
        }
    }

    #[test]
    fn ban_lists_verify_only_under_the_trusted_key() {
        let key = ServiceKey::from_seed(&[1; 32]);
        let list = BanList::sign("processor-a", &key, "2026-11-29T00:00:00Z".into(), vec![violation()]);
        let list = list.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list.verify(&key.public()).map(|b| b.len()).ok(), Some(1));
        let mut altered = list.clone();
        altered.bans[0].banned_until = NaiveDate::from_ymd_opt(2026, 12, 1);
        assert!(altered.verify(&key.public()).is_err());
        let other = ServiceKey::from_seed(&[2; 32]);
        let forged = BanList::sign("processor-a", &other, "2026-11-29T00:00:00Z".into(), vec![]);
        let forged = forged.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            forged.verify(&key.public()).is_err(),
            "a list signed by another key is refused"
        );
    }

    #[test]
    fn bans_end_after_their_last_day() {
        let v = violation();
        assert!(v.in_force(NaiveDate::from_ymd_opt(2031, 12, 31).unwrap_or_default()));
        assert!(!v.in_force(NaiveDate::from_ymd_opt(2032, 1, 1).unwrap_or_default()));
        assert!(
            Violation {
                banned_until: None,
                ..v
            }
            .in_force(NaiveDate::MAX)
        );
    }
}
