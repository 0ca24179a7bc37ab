//! Where a record is pseudonymised: direct identifiers in, keyed pseudonyms and quasi-identifiers out.
//!
//! - `linkage_key` = HMAC(linkage key, canonical insured identity) with quality `INSURED`, or, when no insurance
//!   is given, HMAC over kana name + birth date + sex with quality `ID4`.
//! - `hospital_pseudonym` = HMAC(hospital-pseudonym key, hospital code + local patient id).
//! - Kept as quasi-identifiers only: birth date, sex, 3-digit postal prefix, municipality code, death date.
//! - Kana name, insured number, local id and full postal code are zeroized here and never leave this module.

use crate::identified::Identified;
use crate::keyservice::{Digest, KeyError, KeyPurpose, KeyService};
use crate::normalise;
use crate::reason::Refusal;
use crate::validate;
use tokumei_proto::ingest::v1::{PatientRecord, Sex};
use tokumei_proto::spool::v1::{LinkageQuality, PseudonymisedRecord};
use zeroize::Zeroizing;

/// The canonical identities of one record, ready to be keyed. Wiped on drop.
pub struct IdentityInputs {
    /// The identity the linkage key is computed over.
    pub linkage: Zeroizing<String>,
    /// Which identity that is.
    pub quality: LinkageQuality,
    /// The ID4 identity as a secondary key for the opt-out check, when the record also carries kana + sex.
    pub id4: Option<Zeroizing<String>>,
    /// Hospital code + local patient id.
    pub local: Zeroizing<String>,
}

/// The keyed pseudonyms of one record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pseudonyms {
    /// Joins the patient across hospitals.
    pub linkage_key: Digest,
    /// The hospital-local pseudonym.
    pub hospital_pseudonym: Digest,
    /// ID4 key of a record that also had insurance: stored beside the linkage key so the core sees one person.
    pub id4_key: Option<Digest>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(<redacted>)")
    }
}

/// Derives the canonical identities of a validated record.
pub fn identity_inputs(record: &PatientRecord, hospital_code: &str) -> Result<IdentityInputs, Refusal> {
    let local = normalise::local_identity(hospital_code, &record.local_patient_id)?;
    let sex = Sex::try_from(record.sex).unwrap_or(Sex::Unspecified);
    let has_id4 = !record.kana_name.trim().is_empty() && sex != Sex::Unspecified;
    if normalise::insurance_present(record.insurance.as_ref())
        && let Some(ins) = record.insurance.as_ref()
    {
        let linkage = normalise::insured_identity(ins)?;
        // A malformed kana name does not block an insured record; it only forgoes the secondary check.
        let id4 = if has_id4 {
            normalise::id4_identity(&record.kana_name, &record.birth_date, sex).ok()
        } else {
            None
        };
        return Ok(IdentityInputs {
            linkage,
            quality: LinkageQuality::Insured,
            id4,
            local,
        });
    }
    let linkage = normalise::id4_identity(&record.kana_name, &record.birth_date, sex)?;
    Ok(IdentityInputs {
        linkage,
        quality: LinkageQuality::Id4,
        id4: None,
        local,
    })
}

/// Keys every identity of a batch with three calls to the key service (one per purpose).
pub async fn key_identities(keys: &dyn KeyService, inputs: &[IdentityInputs]) -> Result<Vec<Pseudonyms>, KeyError> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let linkage: Vec<&[u8]> = inputs.iter().map(|i| i.linkage.as_bytes()).collect();
    let local: Vec<&[u8]> = inputs.iter().map(|i| i.local.as_bytes()).collect();
    let id4: Vec<&[u8]> = inputs
        .iter()
        .filter_map(|i| i.id4.as_ref().map(|s| s.as_bytes()))
        .collect();
    let linkage_keys = keys.hmac(KeyPurpose::Linkage, &linkage).await?;
    let hospital = keys.hmac(KeyPurpose::HospitalPseudonym, &local).await?;
    let id4_keys = keys.hmac(KeyPurpose::Linkage, &id4).await?;
    let mut id4_iter = id4_keys.into_iter();
    Ok(inputs
        .iter()
        .zip(linkage_keys.into_iter().zip(hospital))
        .map(|(input, (linkage_key, hospital_pseudonym))| Pseudonyms {
            linkage_key,
            hospital_pseudonym,
            id4_key: input.id4.as_ref().and_then(|_| id4_iter.next()),
        })
        .collect())
}

/// Moves the clinical content of `record` into a pseudonymised record; its identifiers are wiped as the identified
/// record is consumed.
pub fn into_pseudonymised(record: Identified, p: &Pseudonyms, quality: LinkageQuality) -> PseudonymisedRecord {
    record.into_clinical(|record| {
        let postal_prefix = if record.postal_code.is_empty() {
            String::new()
        } else {
            validate::postal_prefix(&record.postal_code).unwrap_or_default()
        };
        PseudonymisedRecord {
            linkage_key: p.linkage_key.to_vec(),
            linkage_quality: quality as i32,
            hospital_pseudonym: p.hospital_pseudonym.to_vec(),
            birth_date: std::mem::take(&mut record.birth_date),
            sex: record.sex,
            postal_prefix,
            municipality_code: std::mem::take(&mut record.municipality_code),
            death_date: std::mem::take(&mut record.death_date),
            encounters: std::mem::take(&mut record.encounters),
            conditions: std::mem::take(&mut record.conditions),
            medications: std::mem::take(&mut record.medications),
            observations: std::mem::take(&mut record.observations),
            allergies: std::mem::take(&mut record.allergies),
            long_term_storage: record.long_term_storage,
            id4_key: p.id4_key.map(|k| k.to_vec()).unwrap_or_default(),
        }
    })
}
