//! FHIR R4 Bundle import (JP Core) and export, so hospitals whose systems speak FHIR can push without a
//! custom mapping, and so demos and tests can produce the same data as FHIR (`tokumei synth --format fhir`).
//!
//! Works on `serde_json::Value` (no FHIR model crate): only the handful of elements the ingest contract
//! needs are read. Input is handled tolerantly (alternative element forms, unknown resources skipped); output
//! is precise and `records_from_bundle(bundle_from_records(r)) == r` for every record. Nothing is validated
//! here beyond JSON types — dates, codes and units are the gateway's job ([`crate::validate`]).
//!
//! # Mapping
//! | record field | FHIR element (output) | also accepted on input |
//! |---|---|---|
//! | `local_patient_id` | `Patient.identifier` with `use: "usual"`, system `urn:oid:1.2.392.100495.20.3.51.1` + 10-digit institution code (JP Core 患者ID) | the first identifier whose system starts with that OID prefix, else the first with `use: "usual"`, else the first identifier that is not an insurance identifier |
//! | `kana_name` | `Patient.name` carrying extension `iso21090-EN-representation` = `SYL`: `family` + U+3000 + `given` (joined); `text` when the name has no full-width space | `text` of the SYL name |
//! | `birth_date`, `death_date` | `birthDate`, `deceasedDateTime` | `deceasedDate`; date part of any dateTime |
//! | `sex` | `gender` male/female/other/unknown (unspecified ⇄ unknown or absent) | |
//! | `postal_code` | `address[0].postalCode` | |
//! | `municipality_code` | `address[0].extension` url `urn:tokumei:fhir:ext:municipality-code` (`valueString`) | any extension url ending `municipality-code`; else `address[0].district` when it is 6 ASCII digits |
//! | `long_term_storage` | `Patient.extension` url `urn:tokumei:fhir:ext:long-term-storage` (`valueBoolean`) | url ending `long-term-storage` |
//! | `insurance.insurer_number` | `Coverage.payor[0].identifier` (system `urn:oid:1.2.392.100495.20.3.61`, 保険者番号) | a payor reference to an `Organization` in the bundle (its identifier); the first element of a JP Core 被保険者個人識別子 |
//! | `insurance.symbol` / `number` / `branch` | `Coverage.extension` JP_Coverage_InsuredPersonSymbol / InsuredPersonNumber / InsuredPersonSubNumber; `branch` also in `dependent` | `dependent`; `subscriberId` as `symbol:number`; the JP Core 被保険者個人識別子 `insurer:symbol:number:branch` (system containing `JP_Insurance_SubscriberID`) on `Coverage.identifier` or `Patient.identifier` |
//! | `conditions` | `Condition`: `code.coding` ICD-10 (`http://hl7.org/fhir/sid/icd-10`) and 病名管理番号 (`http://medis.or.jp/CodeSystem/master-disease-keyNumber`); `onsetDateTime`; `verificationStatus` `unconfirmed` ⇄ suspected; extension `urn:tokumei:fhir:ext:not-told` | systems containing `icd-10`/`icd10` and `master-disease`/`medis` (case-insensitive); `provisional`; `onsetPeriod.start`; extension url ending `not-told`/`notTold` |
//! | `medications` | `MedicationRequest`: `medicationCodeableConcept.coding` YJ (`urn:oid:1.2.392.100495.20.2.74`); `authoredOn`; `dosageInstruction[0].timing.repeat.boundsDuration.value` (days); `dosageInstruction[0].doseAndRate[0].doseQuantity` value/unit | system containing `yj`; quantity `code` when `unit` is absent |
//! | `observations` | `Observation`: `code.coding` JLAC10 (`urn:oid:1.2.392.200119.4.504`) and JLAC11 (`urn:tokumei:fhir:CodeSystem:jlac11`, no official system is published); `effectiveDateTime`; `valueQuantity` value/unit; `valueString` for qualitative results (extension `urn:tokumei:fhir:ext:text-value` when a result has both) | systems containing `jlac10`/`jlac11`; `effectivePeriod.start`; `valueCodeableConcept.text` (or its first coding's display/code) |
//! | `allergies` | `AllergyIntolerance`: `code.coding` YJ, `code.text` substance, `recordedDate` | |
//! | `encounters` | `Encounter`: `period.start`/`end`; `class.code` AMB/IMP/EMER/HH/VR ⇄ outpatient/inpatient/emergency/home/virtual; `serviceType.text` | `type[0].text`; other class codes pass through unchanged |
//!
//! Clinical resources are attached to their patient by `subject` (`patient` for AllergyIntolerance,
//! `beneficiary` for Coverage): `Patient/<id>`, an absolute URL ending in `Patient/<id>`, or an entry's
//! `fullUrl` (`urn:uuid:…`). Errors name the entry index and the element, never a value, because values
//! may be identifiers.

use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tokumei_proto::ingest::v1::{
    Allergy, Condition, Encounter, Insurance, Medication, Observation, PatientRecord, Sex,
};

/// JP Core patient-id system prefix; the 10-digit medical-institution code follows it.
pub const SYSTEM_PATIENT_ID: &str = "urn:oid:1.2.392.100495.20.3.51.1";
/// 保険者番号 (insurer number).
pub const SYSTEM_INSURER: &str = "urn:oid:1.2.392.100495.20.3.61";
/// YJ code (個別医薬品コード).
pub const SYSTEM_YJ: &str = "urn:oid:1.2.392.100495.20.2.74";
/// JLAC10.
pub const SYSTEM_JLAC10: &str = "urn:oid:1.2.392.200119.4.504";
/// JLAC11 (tokumei's own system URI: none is officially published).
pub const SYSTEM_JLAC11: &str = "urn:tokumei:fhir:CodeSystem:jlac11";
/// ICD-10.
pub const SYSTEM_ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
/// 標準病名マスター 病名管理番号.
pub const SYSTEM_DISEASE_MASTER: &str = "http://medis.or.jp/CodeSystem/master-disease-keyNumber";

const EXT_REPRESENTATION: &str = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";
const EXT_JP_CORE: &str = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/";
const EXT_SYMBOL: &str = "JP_Coverage_InsuredPersonSymbol";
const EXT_NUMBER: &str = "JP_Coverage_InsuredPersonNumber";
const EXT_SUB_NUMBER: &str = "JP_Coverage_InsuredPersonSubNumber";
const EXT_MUNICIPALITY: &str = "urn:tokumei:fhir:ext:municipality-code";
const EXT_LONG_TERM: &str = "urn:tokumei:fhir:ext:long-term-storage";
const EXT_NOT_TOLD: &str = "urn:tokumei:fhir:ext:not-told";
const EXT_TEXT_VALUE: &str = "urn:tokumei:fhir:ext:text-value";
const SYSTEM_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const SYSTEM_VER_STATUS: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const KANA_SEPARATOR: char = '\u{3000}';

/// Why a bundle could not be turned into records. Messages name the entry and element, never a value.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// The text is not JSON at all.
    #[error("not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    /// Valid JSON, but not an object with `resourceType: "Bundle"`.
    #[error("not a FHIR Bundle (resourceType must be \"Bundle\")")]
    NotABundle,
    /// The bundle has no Patient resource, so there is nothing to attach data to.
    #[error("the bundle contains no Patient resource")]
    MissingPatient,
    /// A clinical resource has no patient reference.
    #[error("entry {index}: {resource_type} has no patient reference ({field})")]
    MissingPatientReference {
        index: usize,
        resource_type: &'static str,
        field: &'static str,
    },
    /// A clinical resource refers to a patient that is not in the bundle.
    #[error("entry {index}: {resource_type} refers to a patient that is not in the bundle")]
    UnknownPatientReference { index: usize, resource_type: &'static str },
    /// An element has the wrong JSON type (e.g. a number where a string is required).
    #[error("entry {index}: {field} must be {expected}")]
    BadFieldType {
        index: usize,
        field: &'static str,
        expected: &'static str,
    },
}

/// Parses a FHIR R4 Bundle (JSON text) into one PatientRecord per Patient resource, attaching the other resources by their subject/patient/beneficiary reference ("Patient/<id>" or "urn:uuid:<id>" via entry fullUrl).
///
/// Records come out in the order of the Patient entries; each record's lists keep bundle order. Resources
/// of other types (Organization, Practitioner, …) are skipped, except that an Organization may supply a
/// Coverage's insurer number.
pub fn records_from_bundle(json: &str) -> Result<Vec<PatientRecord>, FhirError> {
    let root: Value = serde_json::from_str(json).map_err(|e| FhirError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    if root.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::NotABundle);
    }
    let entries = entries(&root)?;
    let mut bundle = Parsed::default();
    for (index, entry) in entries.iter().enumerate() {
        let at = At { index };
        match entry.resource_type {
            "Patient" => bundle.add_patient(at, entry)?,
            "Organization" => bundle.add_organization(at, entry)?,
            _ => {}
        }
    }
    if bundle.records.is_empty() {
        return Err(FhirError::MissingPatient);
    }
    for (index, entry) in entries.iter().enumerate() {
        bundle.attach(At { index }, entry)?;
    }
    Ok(bundle.finish())
}

/// The inverse, used by `tokumei synth --format fhir` and tests: a Bundle (type "collection" or "transaction") with Patient, Coverage, Condition, MedicationRequest, Observation, AllergyIntolerance, Encounter resources using JP Core conventions.
///
/// Produces a `collection` bundle whose patient identifiers carry no institution code; use
/// [`bundle_for_institution`] when the sending hospital is known.
pub fn bundle_from_records(records: &[PatientRecord]) -> Value {
    bundle_for_institution(records, "")
}

/// Like [`bundle_from_records`], with patient identifiers in the JP Core system of the given 10-digit
/// medical-institution code (`urn:oid:1.2.392.100495.20.3.51.1` + code), as a hospital would send them.
pub fn bundle_for_institution(records: &[PatientRecord], institution_code: &str) -> Value {
    let mut out = Exporter {
        entries: Vec::new(),
        next_id: 0,
        patient_system: format!("{SYSTEM_PATIENT_ID}{institution_code}"),
    };
    for record in records {
        out.record(record);
    }
    json!({ "resourceType": "Bundle", "type": "collection", "entry": out.entries })
}

// ---------------------------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------------------------

/// Where in the bundle we are, for error messages.
#[derive(Clone, Copy)]
struct At {
    index: usize,
}

impl At {
    fn bad(self, field: &'static str, expected: &'static str) -> FhirError {
        FhirError::BadFieldType {
            index: self.index,
            field,
            expected,
        }
    }

    /// An optional string element: absent or null → `None`; any other non-string is an error.
    fn str<'a>(self, v: &'a Value, key: &str, field: &'static str) -> Result<Option<&'a str>, FhirError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(field, "a string")),
        }
    }

    fn string(self, v: &Value, key: &str, field: &'static str) -> Result<String, FhirError> {
        Ok(self.str(v, key, field)?.unwrap_or_default().to_owned())
    }

    fn array<'a>(self, v: &'a Value, key: &str, field: &'static str) -> Result<&'a [Value], FhirError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(self.bad(field, "an array")),
        }
    }

    fn object<'a>(self, v: &'a Value, key: &str, field: &'static str) -> Result<Option<&'a Value>, FhirError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(o @ Value::Object(_)) => Ok(Some(o)),
            Some(_) => Err(self.bad(field, "an object")),
        }
    }

    fn bool(self, v: &Value, key: &str, field: &'static str) -> Result<Option<bool>, FhirError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(field, "a boolean")),
        }
    }

    fn number(self, v: &Value, key: &str, field: &'static str) -> Result<Option<f64>, FhirError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| self.bad(field, "a number")),
            Some(_) => Err(self.bad(field, "a number")),
        }
    }

    /// A date or dateTime element reduced to its date part (no validation: that is the gateway's job).
    fn date(self, v: &Value, key: &str, field: &'static str) -> Result<Option<String>, FhirError> {
        Ok(self.str(v, key, field)?.map(date_part))
    }

    /// The `.reference` string of a Reference element.
    fn reference<'a>(self, v: &'a Value, key: &str, field: &'static str) -> Result<Option<&'a str>, FhirError> {
        match self.object(v, key, field)? {
            Some(r) => self.str(r, "reference", field),
            None => Ok(None),
        }
    }
}

fn date_part(s: &str) -> String {
    s.split('T').next().unwrap_or_default().to_owned()
}

/// One bundle entry with the bits every pass needs.
struct Entry<'a> {
    full_url: Option<&'a str>,
    resource_type: &'a str,
    resource: &'a Value,
}

fn entries(root: &Value) -> Result<Vec<Entry<'_>>, FhirError> {
    let list = match root.get("entry") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(FhirError::BadFieldType {
                index: 0,
                field: "Bundle.entry",
                expected: "an array",
            });
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (index, entry) in list.iter().enumerate() {
        let at = At { index };
        if !entry.is_object() {
            return Err(at.bad("Bundle.entry", "an object"));
        }
        let full_url = at.str(entry, "fullUrl", "Bundle.entry.fullUrl")?;
        // An entry without a resource (e.g. a transaction-response line) carries nothing to import.
        let Some(resource) = at.object(entry, "resource", "Bundle.entry.resource")? else {
            out.push(Entry {
                full_url,
                resource_type: "",
                resource: &Value::Null,
            });
            continue;
        };
        let resource_type = at
            .str(resource, "resourceType", "resource.resourceType")?
            .unwrap_or_default();
        out.push(Entry {
            full_url,
            resource_type,
            resource,
        });
    }
    Ok(out)
}

/// Accumulates records while walking the bundle.
#[derive(Default)]
struct Parsed {
    records: Vec<PatientRecord>,
    /// Patient keys ("Patient/<id>", fullUrl) → index into `records`.
    patients: HashMap<String, usize>,
    /// Organization keys → insurer number.
    insurers: HashMap<String, String>,
    /// Insurance found on Patient.identifier (JP Core 被保険者個人識別子), used if no Coverage is present.
    patient_insurance: Vec<Option<Insurance>>,
    has_coverage: Vec<bool>,
}

impl Parsed {
    fn keys(entry: &Entry<'_>, resource_type: &str, at: At) -> Result<Vec<String>, FhirError> {
        let mut keys = Vec::new();
        if let Some(url) = entry.full_url {
            keys.push(url.to_owned());
        }
        if let Some(id) = at.str(entry.resource, "id", "resource.id")? {
            keys.push(format!("{resource_type}/{id}"));
        }
        Ok(keys)
    }

    fn add_patient(&mut self, at: At, entry: &Entry<'_>) -> Result<(), FhirError> {
        let (record, insurance) = patient(at, entry.resource)?;
        let slot = self.records.len();
        for key in Self::keys(entry, "Patient", at)? {
            self.patients.insert(key, slot);
        }
        self.records.push(record);
        self.patient_insurance.push(insurance);
        self.has_coverage.push(false);
        Ok(())
    }

    fn add_organization(&mut self, at: At, entry: &Entry<'_>) -> Result<(), FhirError> {
        let mut insurer = None;
        for id in at.array(entry.resource, "identifier", "Organization.identifier")? {
            let system = at
                .str(id, "system", "Organization.identifier.system")?
                .unwrap_or_default();
            let value = at.str(id, "value", "Organization.identifier.value")?;
            if insurer.is_none() || system == SYSTEM_INSURER {
                insurer = value.or(insurer);
            }
        }
        if let Some(insurer) = insurer {
            for key in Self::keys(entry, "Organization", at)? {
                self.insurers.insert(key, insurer.to_owned());
            }
        }
        Ok(())
    }

    /// Resolves a patient reference to a record index.
    fn patient_for(
        &self,
        at: At,
        reference: Option<&str>,
        resource_type: &'static str,
        field: &'static str,
    ) -> Result<usize, FhirError> {
        let reference = reference.ok_or(FhirError::MissingPatientReference {
            index: at.index,
            resource_type,
            field,
        })?;
        let unknown = FhirError::UnknownPatientReference {
            index: at.index,
            resource_type,
        };
        if let Some(&i) = self.patients.get(reference) {
            return Ok(i);
        }
        // Absolute form "https://host/fhir/Patient/<id>" (possibly with a version suffix).
        let tail = reference.split("/_history/").next().unwrap_or_default();
        match tail.rfind("Patient/") {
            Some(pos) => self.patients.get(&tail[pos..]).copied().ok_or(unknown),
            None => Err(unknown),
        }
    }

    fn attach(&mut self, at: At, entry: &Entry<'_>) -> Result<(), FhirError> {
        let r = entry.resource;
        match entry.resource_type {
            "Coverage" => {
                let i = self.patient_for(
                    at,
                    at.reference(r, "beneficiary", "Coverage.beneficiary")?,
                    "Coverage",
                    "beneficiary",
                )?;
                // Several Coverage resources (e.g. 公費 besides 医療保険): the first one wins.
                if !self.has_coverage[i] {
                    self.has_coverage[i] = true;
                    self.records[i].insurance = Some(coverage(at, r, &self.insurers)?);
                }
            }
            "Condition" => {
                let i = self.subject(at, r, "Condition")?;
                self.records[i].conditions.push(condition(at, r)?);
            }
            "MedicationRequest" => {
                let i = self.subject(at, r, "MedicationRequest")?;
                self.records[i].medications.push(medication(at, r)?);
            }
            "Observation" => {
                let i = self.subject(at, r, "Observation")?;
                self.records[i].observations.push(observation(at, r)?);
            }
            "AllergyIntolerance" => {
                let reference = match at.reference(r, "patient", "AllergyIntolerance.patient")? {
                    Some(p) => Some(p),
                    None => at.reference(r, "subject", "AllergyIntolerance.subject")?,
                };
                let i = self.patient_for(at, reference, "AllergyIntolerance", "patient")?;
                self.records[i].allergies.push(allergy(at, r)?);
            }
            "Encounter" => {
                let i = self.subject(at, r, "Encounter")?;
                self.records[i].encounters.push(encounter(at, r)?);
            }
            _ => {}
        }
        Ok(())
    }

    fn subject(&self, at: At, r: &Value, resource_type: &'static str) -> Result<usize, FhirError> {
        let reference = match at.reference(r, "subject", "subject")? {
            Some(s) => Some(s),
            None => at.reference(r, "patient", "patient")?,
        };
        self.patient_for(at, reference, resource_type, "subject")
    }

    fn finish(self) -> Vec<PatientRecord> {
        self.records
            .into_iter()
            .zip(self.patient_insurance)
            .map(|(mut record, from_identifier)| {
                if record.insurance.is_none() {
                    record.insurance = from_identifier;
                }
                record
            })
            .collect()
    }
}

fn is_insurance_system(system: &str) -> bool {
    system.starts_with("urn:oid:1.2.392.100495.20.3.6")
        || system.contains("JP_Insurance")
        || system.contains("InsuredPerson")
        || system.contains("insurance")
}

/// `insurer:symbol:number:branch` (JP Core 被保険者個人識別子).
fn parse_insured_identifier(value: &str) -> Option<Insurance> {
    let mut parts = value.split(':');
    let insurance = Insurance {
        insurer_number: parts.next()?.to_owned(),
        symbol: parts.next()?.to_owned(),
        number: parts.next()?.to_owned(),
        branch: parts.next().unwrap_or_default().to_owned(),
    };
    parts.next().is_none().then_some(insurance)
}

fn patient(at: At, r: &Value) -> Result<(PatientRecord, Option<Insurance>), FhirError> {
    let mut record = PatientRecord::default();
    let mut best: Option<(u8, &str)> = None;
    let mut insurance = None;
    for id in at.array(r, "identifier", "Patient.identifier")? {
        let system = at.str(id, "system", "Patient.identifier.system")?.unwrap_or_default();
        let Some(value) = at.str(id, "value", "Patient.identifier.value")? else {
            continue;
        };
        if is_insurance_system(system) {
            if system.contains("SubscriberID") || system.contains("insurance-individual") {
                insurance = insurance.or_else(|| parse_insured_identifier(value));
            }
            continue;
        }
        let rank = if system.starts_with(SYSTEM_PATIENT_ID) {
            0
        } else if at.str(id, "use", "Patient.identifier.use")? == Some("usual") {
            1
        } else {
            2
        };
        if best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, value));
        }
    }
    record.local_patient_id = best.map(|(_, v)| v.to_owned()).unwrap_or_default();
    record.kana_name = kana_name(at, r)?;
    record.birth_date = at.date(r, "birthDate", "Patient.birthDate")?.unwrap_or_default();
    record.sex = match at.str(r, "gender", "Patient.gender")? {
        Some("male") => Sex::Male,
        Some("female") => Sex::Female,
        Some("other") => Sex::Other,
        _ => Sex::Unspecified,
    } as i32;
    let death = match at.date(r, "deceasedDateTime", "Patient.deceasedDateTime")? {
        Some(d) => Some(d),
        None => at.date(r, "deceasedDate", "Patient.deceasedDate")?,
    };
    record.death_date = death.unwrap_or_default();
    if let Some(address) = at.array(r, "address", "Patient.address")?.first() {
        record.postal_code = at.string(address, "postalCode", "Patient.address.postalCode")?;
        record.municipality_code = municipality(at, address)?;
    }
    for ext in at.array(r, "extension", "Patient.extension")? {
        let url = at.str(ext, "url", "Patient.extension.url")?.unwrap_or_default();
        if url.ends_with("long-term-storage") {
            record.long_term_storage = at
                .bool(ext, "valueBoolean", "Patient.extension.valueBoolean")?
                .unwrap_or(false);
        }
    }
    Ok((record, insurance))
}

fn kana_name(at: At, r: &Value) -> Result<String, FhirError> {
    for name in at.array(r, "name", "Patient.name")? {
        let mut syllabic = false;
        for ext in at.array(name, "extension", "Patient.name.extension")? {
            let url = at.str(ext, "url", "Patient.name.extension.url")?.unwrap_or_default();
            let code = at.str(ext, "valueCode", "Patient.name.extension.valueCode")?;
            syllabic |= url == EXT_REPRESENTATION && code == Some("SYL");
        }
        if !syllabic {
            continue;
        }
        let family = at.str(name, "family", "Patient.name.family")?.unwrap_or_default();
        let mut given = String::new();
        for g in at.array(name, "given", "Patient.name.given")? {
            given.push_str(
                g.as_str()
                    .ok_or_else(|| at.bad("Patient.name.given", "an array of strings"))?,
            );
        }
        return Ok(match (family.is_empty(), given.is_empty()) {
            (false, false) => format!("{family}{KANA_SEPARATOR}{given}"),
            (true, true) => at.string(name, "text", "Patient.name.text")?,
            _ => format!("{family}{given}"),
        });
    }
    Ok(String::new())
}

fn municipality(at: At, address: &Value) -> Result<String, FhirError> {
    for ext in at.array(address, "extension", "Patient.address.extension")? {
        let url = at.str(ext, "url", "Patient.address.extension.url")?.unwrap_or_default();
        if url.ends_with("municipality-code") {
            let value = match at.str(ext, "valueString", "Patient.address.extension.valueString")? {
                Some(v) => Some(v),
                None => at.str(ext, "valueCode", "Patient.address.extension.valueCode")?,
            };
            return Ok(value.unwrap_or_default().to_owned());
        }
    }
    let district = at
        .str(address, "district", "Patient.address.district")?
        .unwrap_or_default();
    let is_code = district.len() == 6 && district.bytes().all(|b| b.is_ascii_digit());
    Ok(if is_code { district.to_owned() } else { String::new() })
}

fn coverage(at: At, r: &Value, insurers: &HashMap<String, String>) -> Result<Insurance, FhirError> {
    let mut ins = Insurance::default();
    let mut from_identifier = None;
    for id in at.array(r, "identifier", "Coverage.identifier")? {
        let system = at.str(id, "system", "Coverage.identifier.system")?.unwrap_or_default();
        if system.contains("SubscriberID") && !system.contains("Csv") {
            from_identifier = at
                .str(id, "value", "Coverage.identifier.value")?
                .and_then(parse_insured_identifier);
        }
    }
    for payor in at.array(r, "payor", "Coverage.payor")? {
        if let Some(id) = at.object(payor, "identifier", "Coverage.payor.identifier")? {
            ins.insurer_number = at.string(id, "value", "Coverage.payor.identifier.value")?;
        } else if let Some(reference) = at.str(payor, "reference", "Coverage.payor.reference")? {
            ins.insurer_number = insurers.get(reference).cloned().unwrap_or_default();
        }
        if !ins.insurer_number.is_empty() {
            break;
        }
    }
    let (mut symbol, mut number, mut branch) = (None, None, None);
    for ext in at.array(r, "extension", "Coverage.extension")? {
        let url = at.str(ext, "url", "Coverage.extension.url")?.unwrap_or_default();
        let value = || at.string(ext, "valueString", "Coverage.extension.valueString");
        if url.ends_with(EXT_SYMBOL) {
            symbol = Some(value()?);
        } else if url.ends_with(EXT_NUMBER) {
            number = Some(value()?);
        } else if url.ends_with(EXT_SUB_NUMBER) {
            branch = Some(value()?);
        }
    }
    if symbol.is_none()
        && number.is_none()
        && let Some(subscriber) = at.str(r, "subscriberId", "Coverage.subscriberId")?
    {
        match subscriber.split_once(':') {
            Some((s, n)) => (symbol, number) = (Some(s.to_owned()), Some(n.to_owned())),
            None => number = Some(subscriber.to_owned()),
        }
    }
    let branch = match branch {
        Some(b) => Some(b),
        None => at.str(r, "dependent", "Coverage.dependent")?.map(str::to_owned),
    };
    let fallback = from_identifier.unwrap_or_default();
    if ins.insurer_number.is_empty() {
        ins.insurer_number = fallback.insurer_number;
    }
    ins.symbol = symbol.unwrap_or(fallback.symbol);
    ins.number = number.unwrap_or(fallback.number);
    ins.branch = branch.unwrap_or(fallback.branch);
    Ok(ins)
}

/// `(system, code)` pairs of a CodeableConcept element.
fn codings<'a>(at: At, concept: Option<&'a Value>, field: &'static str) -> Result<Vec<(&'a str, &'a str)>, FhirError> {
    let Some(concept) = concept else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for c in at.array(concept, "coding", field)? {
        let system = at.str(c, "system", field)?.unwrap_or_default();
        if let Some(code) = at.str(c, "code", field)? {
            out.push((system, code));
        }
    }
    Ok(out)
}

fn first_code(codes: &[(&str, &str)], matches: impl Fn(&str) -> bool) -> String {
    codes
        .iter()
        .find(|(s, _)| matches(s))
        .map(|(_, c)| (*c).to_owned())
        .unwrap_or_default()
}

fn is_yj_system(system: &str) -> bool {
    system == SYSTEM_YJ || system.to_ascii_lowercase().contains("yj")
}

fn condition(at: At, r: &Value) -> Result<Condition, FhirError> {
    let codes = codings(at, at.object(r, "code", "Condition.code")?, "Condition.code.coding")?;
    let lower = |s: &str| s.to_ascii_lowercase();
    let onset = match at.date(r, "onsetDateTime", "Condition.onsetDateTime")? {
        Some(d) => d,
        None => match at.object(r, "onsetPeriod", "Condition.onsetPeriod")? {
            Some(p) => at.date(p, "start", "Condition.onsetPeriod.start")?.unwrap_or_default(),
            None => String::new(),
        },
    };
    let status = codings(
        at,
        at.object(r, "verificationStatus", "Condition.verificationStatus")?,
        "Condition.verificationStatus.coding",
    )?;
    let mut not_told = false;
    for ext in at.array(r, "extension", "Condition.extension")? {
        let url = at.str(ext, "url", "Condition.extension.url")?.unwrap_or_default();
        if url.ends_with("not-told") || url.ends_with("notTold") {
            not_told = at
                .bool(ext, "valueBoolean", "Condition.extension.valueBoolean")?
                .unwrap_or(false);
        }
    }
    Ok(Condition {
        icd10: first_code(&codes, |s| {
            let s = lower(s);
            s.contains("icd-10") || s.contains("icd10")
        }),
        disease_master_id: first_code(&codes, |s| {
            let s = lower(s);
            s.contains("master-disease") || s.contains("medis")
        }),
        onset_date: onset,
        suspected: status.iter().any(|(_, c)| *c == "provisional" || *c == "unconfirmed"),
        not_told,
    })
}

fn medication(at: At, r: &Value) -> Result<Medication, FhirError> {
    let codes = codings(
        at,
        at.object(
            r,
            "medicationCodeableConcept",
            "MedicationRequest.medicationCodeableConcept",
        )?,
        "MedicationRequest.medicationCodeableConcept.coding",
    )?;
    let mut m = Medication {
        yj_code: first_code(&codes, is_yj_system),
        start_date: at
            .date(r, "authoredOn", "MedicationRequest.authoredOn")?
            .unwrap_or_default(),
        ..Medication::default()
    };
    let Some(dosage) = at
        .array(r, "dosageInstruction", "MedicationRequest.dosageInstruction")?
        .first()
    else {
        return Ok(m);
    };
    let bounds = at
        .object(dosage, "timing", "MedicationRequest.dosageInstruction.timing")?
        .map(|t| at.object(t, "repeat", "MedicationRequest.dosageInstruction.timing.repeat"))
        .transpose()?
        .flatten()
        .map(|rep| {
            at.object(
                rep,
                "boundsDuration",
                "MedicationRequest.dosageInstruction.timing.repeat.boundsDuration",
            )
        })
        .transpose()?
        .flatten();
    if let Some(bounds) = bounds {
        const FIELD: &str = "MedicationRequest.dosageInstruction.timing.repeat.boundsDuration.value";
        if let Some(days) = at.number(bounds, "value", FIELD)? {
            if !(0.0..=f64::from(u32::MAX)).contains(&days) || days.fract() != 0.0 {
                return Err(at.bad(FIELD, "a whole number of days"));
            }
            m.days = days as u32;
        }
    }
    if let Some(rate) = at
        .array(dosage, "doseAndRate", "MedicationRequest.dosageInstruction.doseAndRate")?
        .first()
        && let Some(q) = at.object(
            rate,
            "doseQuantity",
            "MedicationRequest.dosageInstruction.doseAndRate.doseQuantity",
        )?
    {
        let (value, unit) = quantity(at, q, "MedicationRequest.dosageInstruction.doseAndRate.doseQuantity")?;
        m.daily_dose = value;
        m.dose_unit = unit;
    }
    Ok(m)
}

/// `(value, unit)` of a Quantity; `code` stands in for a missing `unit`.
fn quantity(at: At, q: &Value, field: &'static str) -> Result<(f64, String), FhirError> {
    let value = at.number(q, "value", field)?.unwrap_or(0.0);
    let unit = match at.str(q, "unit", field)? {
        Some(u) => u,
        None => at.str(q, "code", field)?.unwrap_or_default(),
    };
    Ok((value, unit.to_owned()))
}

fn observation(at: At, r: &Value) -> Result<Observation, FhirError> {
    let codes = codings(at, at.object(r, "code", "Observation.code")?, "Observation.code.coding")?;
    let date = match at.date(r, "effectiveDateTime", "Observation.effectiveDateTime")? {
        Some(d) => d,
        None => match at.object(r, "effectivePeriod", "Observation.effectivePeriod")? {
            Some(p) => at
                .date(p, "start", "Observation.effectivePeriod.start")?
                .unwrap_or_default(),
            None => String::new(),
        },
    };
    let mut o = Observation {
        jlac10: first_code(&codes, |s| {
            s == SYSTEM_JLAC10 || s.to_ascii_lowercase().contains("jlac10")
        }),
        jlac11: first_code(&codes, |s| s.to_ascii_lowercase().contains("jlac11")),
        date,
        ..Observation::default()
    };
    if let Some(q) = at.object(r, "valueQuantity", "Observation.valueQuantity")? {
        (o.value, o.unit) = quantity(at, q, "Observation.valueQuantity")?;
    }
    if let Some(text) = at.str(r, "valueString", "Observation.valueString")? {
        o.text_value = text.to_owned();
    } else if let Some(concept) = at.object(r, "valueCodeableConcept", "Observation.valueCodeableConcept")? {
        o.text_value = concept_text(at, concept)?;
    }
    for ext in at.array(r, "extension", "Observation.extension")? {
        if at.str(ext, "url", "Observation.extension.url")? == Some(EXT_TEXT_VALUE) {
            o.text_value = at.string(ext, "valueString", "Observation.extension.valueString")?;
        }
    }
    Ok(o)
}

/// Text of a coded qualitative result: `text`, else the first coding's `display`, else its `code`.
fn concept_text(at: At, concept: &Value) -> Result<String, FhirError> {
    const FIELD: &str = "Observation.valueCodeableConcept";
    if let Some(text) = at.str(concept, "text", FIELD)? {
        return Ok(text.to_owned());
    }
    let Some(coding) = at.array(concept, "coding", FIELD)?.first() else {
        return Ok(String::new());
    };
    Ok(match at.str(coding, "display", FIELD)? {
        Some(d) => d.to_owned(),
        None => at.string(coding, "code", FIELD)?,
    })
}

fn allergy(at: At, r: &Value) -> Result<Allergy, FhirError> {
    let code = at.object(r, "code", "AllergyIntolerance.code")?;
    let codes = codings(at, code, "AllergyIntolerance.code.coding")?;
    Ok(Allergy {
        yj_code: first_code(&codes, is_yj_system),
        substance: match code {
            Some(c) => at.string(c, "text", "AllergyIntolerance.code.text")?,
            None => String::new(),
        },
        recorded_date: at
            .date(r, "recordedDate", "AllergyIntolerance.recordedDate")?
            .unwrap_or_default(),
    })
}

fn encounter(at: At, r: &Value) -> Result<Encounter, FhirError> {
    let mut e = Encounter::default();
    if let Some(period) = at.object(r, "period", "Encounter.period")? {
        e.admission_date = at.date(period, "start", "Encounter.period.start")?.unwrap_or_default();
        e.discharge_date = at.date(period, "end", "Encounter.period.end")?.unwrap_or_default();
    }
    if let Some(class) = at.object(r, "class", "Encounter.class")? {
        let code = at.str(class, "code", "Encounter.class.code")?.unwrap_or_default();
        e.kind = match code {
            "AMB" => "outpatient",
            "IMP" | "ACUTE" | "NONAC" => "inpatient",
            "EMER" => "emergency",
            "HH" => "home",
            "VR" => "virtual",
            other => other,
        }
        .to_owned();
    }
    e.department = match at.object(r, "serviceType", "Encounter.serviceType")? {
        Some(st) => at.string(st, "text", "Encounter.serviceType.text")?,
        None => String::new(),
    };
    if e.department.is_empty()
        && let Some(t) = at.array(r, "type", "Encounter.type")?.first()
    {
        e.department = at.string(t, "text", "Encounter.type.text")?;
    }
    Ok(e)
}

// ---------------------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------------------

/// Builds bundle entries with deterministic `urn:uuid` full URLs (the same records give the same bundle).
struct Exporter {
    entries: Vec<Value>,
    next_id: u64,
    patient_system: String,
}

impl Exporter {
    /// A deterministic version-4-shaped UUID. The last group starts with a letter so that no 12-digit
    /// run appears (which the gateway would take for a My Number).
    fn next_uuid(&mut self) -> String {
        let n = self.next_id;
        self.next_id += 1;
        format!(
            "{:08x}-0000-4000-8000-f{:011x}",
            (n >> 32) as u32 ^ 0x746f_6b75,
            n & 0x7ff_ffff_ffff
        )
    }

    /// Adds `resource` with a fresh id and returns its full URL.
    fn push(&mut self, mut resource: Map<String, Value>) -> String {
        let id = self.next_uuid();
        let full_url = format!("urn:uuid:{id}");
        resource.insert("id".into(), Value::String(id));
        self.entries.push(json!({ "fullUrl": full_url, "resource": resource }));
        full_url
    }

    fn record(&mut self, r: &PatientRecord) {
        let patient = self.push(patient_resource(r, &self.patient_system));
        let subject = json!({ "reference": patient });
        if let Some(ins) = &r.insurance {
            self.push(coverage_resource(ins, &subject));
        }
        for e in &r.encounters {
            self.push(encounter_resource(e, &subject));
        }
        for c in &r.conditions {
            self.push(condition_resource(c, &subject));
        }
        for m in &r.medications {
            self.push(medication_resource(m, &subject));
        }
        for o in &r.observations {
            self.push(observation_resource(o, &subject));
        }
        for a in &r.allergies {
            self.push(allergy_resource(a, &subject));
        }
    }
}

/// A JSON object from `(key, value)` pairs, leaving out empty strings so absent data stays absent.
fn object(resource_type: &str, fields: Vec<(&str, Value)>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("resourceType".into(), Value::String(resource_type.into()));
    for (k, v) in fields {
        let empty = match &v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            m.insert(k.into(), v);
        }
    }
    m
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn coding(system: &str, code: &str) -> Option<Value> {
    non_empty(code).map(|c| json!({ "system": system, "code": c }))
}

fn patient_resource(r: &PatientRecord, id_system: &str) -> Map<String, Value> {
    let identifier: Vec<Value> = non_empty(&r.local_patient_id)
        .map(|v| json!({ "use": "usual", "system": id_system, "value": v }))
        .into_iter()
        .collect();
    let name: Vec<Value> = non_empty(&r.kana_name).map(kana_name_element).into_iter().collect();
    let gender = match Sex::try_from(r.sex) {
        Ok(Sex::Male) => "male",
        Ok(Sex::Female) => "female",
        Ok(Sex::Other) => "other",
        _ => "unknown",
    };
    let mut address = Map::new();
    if let Some(code) = non_empty(&r.municipality_code) {
        address.insert(
            "extension".into(),
            json!([{ "url": EXT_MUNICIPALITY, "valueString": code }]),
        );
    }
    if let Some(postal) = non_empty(&r.postal_code) {
        address.insert("postalCode".into(), json!(postal));
    }
    let extension: Vec<Value> = r
        .long_term_storage
        .then(|| json!({ "url": EXT_LONG_TERM, "valueBoolean": true }))
        .into_iter()
        .collect();
    object(
        "Patient",
        vec![
            ("extension", Value::Array(extension)),
            ("identifier", Value::Array(identifier)),
            ("name", Value::Array(name)),
            ("gender", json!(gender)),
            ("birthDate", json!(r.birth_date)),
            ("deceasedDateTime", json!(r.death_date)),
            (
                "address",
                if address.is_empty() {
                    Value::Null
                } else {
                    json!([address])
                },
            ),
        ],
    )
}

/// The JP Core kana name: family and given split at the first full-width space; names that cannot be
/// split that way keep their exact text.
fn kana_name_element(kana: &str) -> Value {
    let representation = json!([{ "url": EXT_REPRESENTATION, "valueCode": "SYL" }]);
    match kana.split_once(KANA_SEPARATOR) {
        Some((family, given)) if !family.is_empty() && !given.is_empty() => {
            json!({ "extension": representation, "use": "official", "family": family, "given": [given] })
        }
        _ => json!({ "extension": representation, "use": "official", "text": kana }),
    }
}

fn coverage_resource(ins: &Insurance, subject: &Value) -> Map<String, Value> {
    let ext = |name: &str, value: &str| {
        non_empty(value).map(|v| json!({ "url": format!("{EXT_JP_CORE}{name}"), "valueString": v }))
    };
    let extension: Vec<Value> = [
        ext(EXT_SYMBOL, &ins.symbol),
        ext(EXT_NUMBER, &ins.number),
        ext(EXT_SUB_NUMBER, &ins.branch),
    ]
    .into_iter()
    .flatten()
    .collect();
    let payor: Vec<Value> = non_empty(&ins.insurer_number)
        .map(|n| json!({ "type": "Organization", "identifier": { "system": SYSTEM_INSURER, "value": n } }))
        .into_iter()
        .collect();
    object(
        "Coverage",
        vec![
            ("extension", Value::Array(extension)),
            ("status", json!("active")),
            ("beneficiary", subject.clone()),
            ("dependent", json!(ins.branch)),
            ("payor", Value::Array(payor)),
        ],
    )
}

fn encounter_resource(e: &Encounter, subject: &Value) -> Map<String, Value> {
    let class = match e.kind.as_str() {
        "outpatient" => "AMB",
        "inpatient" => "IMP",
        "emergency" => "EMER",
        "home" => "HH",
        "virtual" => "VR",
        other => other,
    };
    let in_progress = e.kind == "inpatient" && e.discharge_date.is_empty();
    let mut period = Map::new();
    if let Some(start) = non_empty(&e.admission_date) {
        period.insert("start".into(), json!(start));
    }
    if let Some(end) = non_empty(&e.discharge_date) {
        period.insert("end".into(), json!(end));
    }
    object(
        "Encounter",
        vec![
            ("status", json!(if in_progress { "in-progress" } else { "finished" })),
            (
                "class",
                non_empty(class).map_or(Value::Null, |c| json!({ "system": SYSTEM_ACT_CODE, "code": c })),
            ),
            (
                "serviceType",
                non_empty(&e.department).map_or(Value::Null, |d| json!({ "text": d })),
            ),
            ("subject", subject.clone()),
            ("period", Value::Object(period)),
        ],
    )
}

fn condition_resource(c: &Condition, subject: &Value) -> Map<String, Value> {
    let codings: Vec<Value> = [
        coding(SYSTEM_ICD10, &c.icd10),
        coding(SYSTEM_DISEASE_MASTER, &c.disease_master_id),
    ]
    .into_iter()
    .flatten()
    .collect();
    let extension: Vec<Value> = c
        .not_told
        .then(|| json!({ "url": EXT_NOT_TOLD, "valueBoolean": true }))
        .into_iter()
        .collect();
    let status = if c.suspected { "unconfirmed" } else { "confirmed" };
    object(
        "Condition",
        vec![
            ("extension", Value::Array(extension)),
            (
                "verificationStatus",
                json!({ "coding": [{ "system": SYSTEM_VER_STATUS, "code": status }] }),
            ),
            (
                "code",
                if codings.is_empty() {
                    Value::Null
                } else {
                    json!({ "coding": codings })
                },
            ),
            ("subject", subject.clone()),
            ("onsetDateTime", json!(c.onset_date)),
        ],
    )
}

fn medication_resource(m: &Medication, subject: &Value) -> Map<String, Value> {
    let mut dosage = Map::new();
    if m.days > 0 {
        dosage.insert(
            "timing".into(),
            json!({ "repeat": { "boundsDuration": {
                "value": m.days, "unit": "日", "system": "http://unitsofmeasure.org", "code": "d"
            } } }),
        );
    }
    if m.daily_dose != 0.0 || !m.dose_unit.is_empty() {
        dosage.insert(
            "doseAndRate".into(),
            json!([{ "doseQuantity": quantity_value(m.daily_dose, &m.dose_unit) }]),
        );
    }
    let concept = coding(SYSTEM_YJ, &m.yj_code).map_or(Value::Null, |c| json!({ "coding": [c] }));
    object(
        "MedicationRequest",
        vec![
            ("status", json!("active")),
            ("intent", json!("order")),
            ("medicationCodeableConcept", concept),
            ("subject", subject.clone()),
            ("authoredOn", json!(m.start_date)),
            (
                "dosageInstruction",
                if dosage.is_empty() {
                    Value::Null
                } else {
                    json!([dosage])
                },
            ),
        ],
    )
}

fn quantity_value(value: f64, unit: &str) -> Value {
    let mut q = Map::new();
    q.insert("value".into(), json!(value));
    if !unit.is_empty() {
        q.insert("unit".into(), json!(unit));
    }
    Value::Object(q)
}

fn observation_resource(o: &Observation, subject: &Value) -> Map<String, Value> {
    let codings: Vec<Value> = [coding(SYSTEM_JLAC10, &o.jlac10), coding(SYSTEM_JLAC11, &o.jlac11)]
        .into_iter()
        .flatten()
        .collect();
    let has_quantity = o.value != 0.0 || !o.unit.is_empty();
    let has_text = !o.text_value.is_empty();
    // value[x] holds one value: a text that accompanies a quantity travels in an extension.
    let extension: Vec<Value> = (has_quantity && has_text)
        .then(|| json!({ "url": EXT_TEXT_VALUE, "valueString": o.text_value }))
        .into_iter()
        .collect();
    let mut fields = vec![
        ("extension", Value::Array(extension)),
        ("status", json!("final")),
        (
            "category",
            json!([{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"
            }] }]),
        ),
        (
            "code",
            if codings.is_empty() {
                Value::Null
            } else {
                json!({ "coding": codings })
            },
        ),
        ("subject", subject.clone()),
        ("effectiveDateTime", json!(o.date)),
    ];
    if has_quantity {
        fields.push(("valueQuantity", quantity_value(o.value, &o.unit)));
    } else if has_text {
        fields.push(("valueString", json!(o.text_value)));
    }
    object("Observation", fields)
}

fn allergy_resource(a: &Allergy, subject: &Value) -> Map<String, Value> {
    let mut code = Map::new();
    if let Some(c) = coding(SYSTEM_YJ, &a.yj_code) {
        code.insert("coding".into(), json!([c]));
    }
    if let Some(text) = non_empty(&a.substance) {
        code.insert("text".into(), json!(text));
    }
    object(
        "AllergyIntolerance",
        vec![
            ("code", Value::Object(code)),
            ("patient", subject.clone()),
            ("recordedDate", json!(a.recorded_date)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Synth, hospital_codes};

    fn round_trip(records: &[PatientRecord]) -> Vec<PatientRecord> {
        let text = serde_json::to_string(&bundle_from_records(records)).unwrap();
        records_from_bundle(&text).unwrap()
    }

    #[test]
    fn synthetic_records_round_trip_exactly() {
        let code = &hospital_codes(1)[0];
        let records = Synth::new(3).records(code, 0, 400);
        assert_eq!(round_trip(&records), records);
        let text = serde_json::to_string(&bundle_for_institution(&records, code)).unwrap();
        assert_eq!(records_from_bundle(&text).unwrap(), records);
        assert!(text.contains(&format!("{SYSTEM_PATIENT_ID}{code}")));
    }

    #[test]
    fn unusual_records_round_trip_exactly() {
        let records = vec![
            PatientRecord {
                local_patient_id: "X1".into(),
                insurance: Some(Insurance::default()),
                kana_name: "ヤマダ".into(),
                birth_date: "1950-01-02".into(),
                sex: Sex::Other as i32,
                observations: vec![
                    Observation {
                        jlac10: "1A010000000119111".into(),
                        date: "2020-01-01".into(),
                        text_value: "+".into(),
                        ..Default::default()
                    },
                    Observation {
                        jlac11: "3D046000002322000".into(),
                        value: 6.1,
                        unit: "%".into(),
                        text_value: "高値".into(),
                        ..Default::default()
                    },
                    Observation {
                        jlac10: "3D046000001920402".into(),
                        value: 0.0,
                        unit: "%".into(),
                        ..Default::default()
                    },
                ],
                medications: vec![Medication {
                    yj_code: "2171022F1022".into(),
                    daily_dose: 0.5,
                    ..Default::default()
                }],
                encounters: vec![
                    Encounter {
                        kind: "home".into(),
                        ..Default::default()
                    },
                    Encounter::default(),
                ],
                conditions: vec![Condition {
                    icd10: "C16.9".into(),
                    suspected: true,
                    not_told: true,
                    ..Default::default()
                }],
                allergies: vec![Allergy {
                    substance: "卵".into(),
                    ..Default::default()
                }],
                long_term_storage: true,
                ..Default::default()
            },
            PatientRecord {
                kana_name: "サトウ　".into(),
                ..Default::default()
            },
            PatientRecord::default(),
        ];
        assert_eq!(round_trip(&records), records);
    }

    const JP_CORE_BUNDLE: &str = r#"{
      "resourceType": "Bundle",
      "type": "transaction",
      "entry": [
        { "fullUrl": "https://ehr.example.jp/fhir/Organization/ins1",
          "resource": { "resourceType": "Organization", "id": "ins1",
            "identifier": [ { "system": "urn:oid:1.2.392.100495.20.3.61", "value": "06139999" } ],
            "name": "あじさい健康保険組合" } },
        { "fullUrl": "urn:uuid:8f7e3a52-1d0c-4b8e-9a31-3c1b2f6d0a11",
          "resource": {
            "resourceType": "Patient",
            "identifier": [
              { "system": "http://jpfhir.jp/fhir/core/IdSystem/JP_Insurance_SubscriberID", "value": "06139999:12:345:01" },
              { "system": "urn:oid:1.2.392.100495.20.3.51.11319999999", "value": "00012345" },
              { "use": "usual", "system": "http://hospital.example.jp/mrn", "value": "MRN-7" }
            ],
            "name": [
              { "use": "official", "extension": [ { "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "IDE" } ],
                "family": "山田", "given": ["太郎"] },
              { "use": "official", "extension": [ { "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "SYL" } ],
                "family": "ヤマダ", "given": ["タロウ"] }
            ],
            "gender": "male",
            "birthDate": "1948-02-29",
            "deceasedDateTime": "2026-03-01T10:15:00+09:00",
            "address": [ { "postalCode": "100-0001", "district": "131016", "city": "千代田区" } ]
          } },
        { "resource": { "resourceType": "Coverage", "status": "active",
            "extension": [
              { "url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSymbol", "valueString": "あいう" },
              { "url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonNumber", "valueString": "１８７" }
            ],
            "dependent": "02",
            "beneficiary": { "reference": "urn:uuid:8f7e3a52-1d0c-4b8e-9a31-3c1b2f6d0a11" },
            "payor": [ { "reference": "https://ehr.example.jp/fhir/Organization/ins1" } ] } },
        { "resource": { "resourceType": "Condition",
            "extension": [ { "url": "http://hospital.example.jp/fhir/StructureDefinition/notTold", "valueBoolean": true } ],
            "verificationStatus": { "coding": [ { "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "provisional" } ] },
            "code": { "coding": [
              { "system": "http://jpfhir.jp/fhir/core/CodeSystem/JP_ConditionDiseaseCodeICD10_CS", "code": "C16.9" },
              { "system": "http://medis.or.jp/CodeSystem/master-disease-keyNumber", "code": "20047720" } ] },
            "subject": { "reference": "urn:uuid:8f7e3a52-1d0c-4b8e-9a31-3c1b2f6d0a11" },
            "onsetDateTime": "2025-05-01T09:00:00+09:00" } },
        { "resource": { "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": { "coding": [
              { "system": "urn:oid:1.2.392.100495.20.2.74", "code": "2171022F1022", "display": "アムロジピン錠5mg" } ] },
            "subject": { "reference": "urn:uuid:8f7e3a52-1d0c-4b8e-9a31-3c1b2f6d0a11" },
            "authoredOn": "2025-05-02T11:00:00+09:00",
            "dosageInstruction": [ {
              "timing": { "repeat": { "boundsDuration": { "value": 28, "unit": "日", "system": "http://unitsofmeasure.org", "code": "d" } } },
              "doseAndRate": [ { "doseQuantity": { "value": 1, "unit": "錠" } } ] } ] } },
        { "resource": { "resourceType": "Observation", "status": "final",
            "code": { "coding": [ { "system": "urn:oid:1.2.392.200119.4.504", "code": "3D046000001920402" } ] },
            "subject": { "reference": "urn:uuid:8f7e3a52-1d0c-4b8e-9a31-3c1b2f6d0a11" },
            "effectiveDateTime": "2025-05-02T10:30:00+09:00",
            "valueQuantity": { "value": 7.4, "code": "%" } } },
        { "resource": { "resourceType": "Observation", "status": "final",
            "code": { "coding": [ { "system": "http://example.jp/CodeSystem/JLAC11", "code": "1A010000000191111" } ] },
            "subject": { "reference": "urn:uuid:8f7e3a52-1d0c-4b8e-9a31-3c1b2f6d0a11" },
            "effectiveDateTime": "2025-05-02",
            "valueCodeableConcept": { "coding": [ { "code": "1+", "display": "（＋）" } ] } } },
        { "resource": { "resourceType": "AllergyIntolerance",
            "code": { "coding": [ { "system": "urn:oid:1.2.392.100495.20.2.74", "code": "6131001C1023" } ], "text": "アモキシシリン" },
            "patient": { "reference": "urn:uuid:8f7e3a52-1d0c-4b8e-9a31-3c1b2f6d0a11" },
            "recordedDate": "2019-07-01" } },
        { "resource": { "resourceType": "Encounter", "status": "finished",
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP" },
            "type": [ { "text": "消化器内科" } ],
            "subject": { "reference": "urn:uuid:8f7e3a52-1d0c-4b8e-9a31-3c1b2f6d0a11" },
            "period": { "start": "2025-05-10T14:00:00+09:00", "end": "2025-05-20" } } },
        { "request": { "method": "POST", "url": "Practitioner" },
          "resource": { "resourceType": "Practitioner", "id": "dr1" } },
        { "resource": { "resourceType": "Patient", "id": "p2", "gender": "female", "birthDate": "2019-04-01",
            "identifier": [ { "system": "http://hospital.example.jp/mrn", "value": "B-2" } ] } },
        { "resource": { "resourceType": "Encounter",
            "class": { "code": "EMER" }, "serviceType": { "text": "小児科" },
            "subject": { "reference": "https://ehr.example.jp/fhir/Patient/p2/_history/3" },
            "period": { "start": "2026-01-05" } } }
      ]
    }"#;

    #[test]
    fn parses_a_jp_core_style_bundle() {
        let records = records_from_bundle(JP_CORE_BUNDLE).unwrap();
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!(r.local_patient_id, "00012345");
        assert_eq!(r.kana_name, "ヤマダ　タロウ");
        assert_eq!(r.birth_date, "1948-02-29");
        assert_eq!(r.death_date, "2026-03-01");
        assert_eq!(r.sex, Sex::Male as i32);
        assert_eq!(r.postal_code, "100-0001");
        assert_eq!(r.municipality_code, "131016");
        assert_eq!(
            r.insurance,
            Some(Insurance {
                insurer_number: "06139999".into(),
                symbol: "あいう".into(),
                number: "１８７".into(),
                branch: "02".into()
            })
        );
        assert_eq!(
            r.conditions,
            vec![Condition {
                icd10: "C16.9".into(),
                disease_master_id: "20047720".into(),
                onset_date: "2025-05-01".into(),
                suspected: true,
                not_told: true
            }]
        );
        assert_eq!(
            r.medications,
            vec![Medication {
                yj_code: "2171022F1022".into(),
                start_date: "2025-05-02".into(),
                days: 28,
                daily_dose: 1.0,
                dose_unit: "錠".into()
            }]
        );
        assert_eq!(r.observations.len(), 2);
        assert_eq!(
            (
                r.observations[0].jlac10.as_str(),
                r.observations[0].value,
                r.observations[0].unit.as_str()
            ),
            ("3D046000001920402", 7.4, "%")
        );
        assert_eq!(
            (r.observations[1].jlac11.as_str(), r.observations[1].text_value.as_str()),
            ("1A010000000191111", "（＋）")
        );
        assert_eq!(
            r.allergies,
            vec![Allergy {
                yj_code: "6131001C1023".into(),
                substance: "アモキシシリン".into(),
                recorded_date: "2019-07-01".into()
            }]
        );
        assert_eq!(
            r.encounters,
            vec![Encounter {
                admission_date: "2025-05-10".into(),
                discharge_date: "2025-05-20".into(),
                kind: "inpatient".into(),
                department: "消化器内科".into()
            }]
        );
        let child = &records[1];
        assert_eq!(
            (child.local_patient_id.as_str(), child.sex),
            ("B-2", Sex::Female as i32)
        );
        assert_eq!(child.insurance, None);
        assert_eq!(child.encounters[0].kind, "emergency");
        assert_eq!(child.encounters[0].department, "小児科");
    }

    #[test]
    fn insured_identifier_on_patient_is_used_without_coverage() {
        let bundle = r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"a",
            "identifier":[{"system":"http://jpfhir.jp/fhir/core/IdSystem/JP_Insurance_SubscriberID","value":"138057:記号:987:00"}]}}]}"#;
        let r = &records_from_bundle(bundle).unwrap()[0];
        assert_eq!(r.local_patient_id, "");
        let ins = r.insurance.as_ref().unwrap();
        assert_eq!(
            (
                ins.insurer_number.as_str(),
                ins.symbol.as_str(),
                ins.number.as_str(),
                ins.branch.as_str()
            ),
            ("138057", "記号", "987", "00")
        );
    }

    #[test]
    fn errors_are_specific_and_never_echo_values() {
        assert!(matches!(
            records_from_bundle("{not json"),
            Err(FhirError::NotJson { line: 1, .. })
        ));
        assert!(matches!(
            records_from_bundle(r#"{"resourceType":"Patient"}"#),
            Err(FhirError::NotABundle)
        ));
        assert!(matches!(records_from_bundle("[1,2]"), Err(FhirError::NotABundle)));
        assert!(matches!(
            records_from_bundle(r#"{"resourceType":"Bundle","entry":[]}"#),
            Err(FhirError::MissingPatient)
        ));
        assert!(matches!(
            records_from_bundle(r#"{"resourceType":"Bundle"}"#),
            Err(FhirError::MissingPatient)
        ));

        let unknown = r#"{"resourceType":"Bundle","entry":[
            {"resource":{"resourceType":"Patient","id":"a"}},
            {"resource":{"resourceType":"Condition","subject":{"reference":"Patient/123456789018"}}}]}"#;
        let err = records_from_bundle(unknown).unwrap_err();
        assert!(matches!(
            err,
            FhirError::UnknownPatientReference {
                index: 1,
                resource_type: "Condition"
            }
        ));
        assert!(!err.to_string().contains("123456789018"));

        let missing = r#"{"resourceType":"Bundle","entry":[
            {"resource":{"resourceType":"Patient","id":"a"}},
            {"resource":{"resourceType":"Observation"}}]}"#;
        assert!(matches!(
            records_from_bundle(missing),
            Err(FhirError::MissingPatientReference {
                index: 1,
                resource_type: "Observation",
                ..
            })
        ));

        let bad = r#"{"resourceType":"Bundle","entry":[
            {"resource":{"resourceType":"Organization"}},
            {"resource":{"resourceType":"Patient","birthDate":19480229}}]}"#;
        let err = records_from_bundle(bad).unwrap_err();
        assert!(
            matches!(
                err,
                FhirError::BadFieldType {
                    index: 1,
                    field: "Patient.birthDate",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.to_string(), "entry 1: Patient.birthDate must be a string");

        let bad_id = r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient",
            "identifier":[{"system":"x","value":1234567890}]}}]}"#;
        let err = records_from_bundle(bad_id).unwrap_err();
        assert!(!err.to_string().contains("1234567890"));
        assert!(matches!(err, FhirError::BadFieldType { index: 0, .. }));

        let bad_days = r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"a"}},
            {"resource":{"resourceType":"MedicationRequest","subject":{"reference":"Patient/a"},
             "dosageInstruction":[{"timing":{"repeat":{"boundsDuration":{"value":2.5}}}}]}}]}"#;
        assert!(matches!(
            records_from_bundle(bad_days),
            Err(FhirError::BadFieldType { index: 1, .. })
        ));
        assert!(matches!(
            records_from_bundle(r#"{"resourceType":"Bundle","entry":{}}"#),
            Err(FhirError::BadFieldType {
                field: "Bundle.entry",
                ..
            })
        ));
    }

    #[test]
    fn exported_bundle_has_no_twelve_digit_runs() {
        let records = Synth::new(5).records("1310000017", 0, 50);
        let text = serde_json::to_string(&bundle_from_records(&records)).unwrap();
        let longest = text
            .as_bytes()
            .split(|b| !b.is_ascii_digit())
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        // JLAC10 codes contain up to 15 digits; everything else (ids, uuids, dates) stays well below 12.
        let without_jlac: String = text.split("\"code\":\"").map(|s| s.get(17..).unwrap_or(s)).collect();
        let longest_other = without_jlac
            .as_bytes()
            .split(|b| !b.is_ascii_digit())
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        assert!(longest <= 15 && longest_other < 12, "{longest} {longest_other}");
    }
}
