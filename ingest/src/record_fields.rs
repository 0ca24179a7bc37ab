//! Walks every string field of an incoming record, so that guards (My Number) and scrubbing (zeroize) can never
//! miss a field that is added to the contract later: the walk is the single list of fields.

use tokumei_proto::ingest::v1::{Insurance, PatientRecord, PatientRequest};
use zeroize::Zeroize;

/// Calls `f(field_path, value)` for every string field of the record, nested messages included.
pub fn for_each_string_mut(record: &mut PatientRecord, mut f: impl FnMut(&'static str, &mut String)) {
    f("local_patient_id", &mut record.local_patient_id);
    if let Some(ins) = record.insurance.as_mut() {
        insurance_strings(ins, &mut f);
    }
    f("kana_name", &mut record.kana_name);
    f("birth_date", &mut record.birth_date);
    f("postal_code", &mut record.postal_code);
    f("municipality_code", &mut record.municipality_code);
    f("death_date", &mut record.death_date);
    for e in &mut record.encounters {
        f("encounters.admission_date", &mut e.admission_date);
        f("encounters.discharge_date", &mut e.discharge_date);
        f("encounters.kind", &mut e.kind);
        f("encounters.department", &mut e.department);
    }
    for c in &mut record.conditions {
        f("conditions.icd10", &mut c.icd10);
        f("conditions.disease_master_id", &mut c.disease_master_id);
        f("conditions.onset_date", &mut c.onset_date);
    }
    for m in &mut record.medications {
        f("medications.yj_code", &mut m.yj_code);
        f("medications.start_date", &mut m.start_date);
        f("medications.dose_unit", &mut m.dose_unit);
    }
    for o in &mut record.observations {
        f("observations.jlac10", &mut o.jlac10);
        f("observations.jlac11", &mut o.jlac11);
        f("observations.date", &mut o.date);
        f("observations.unit", &mut o.unit);
        f("observations.text_value", &mut o.text_value);
    }
    for a in &mut record.allergies {
        f("allergies.yj_code", &mut a.yj_code);
        f("allergies.substance", &mut a.substance);
        f("allergies.recorded_date", &mut a.recorded_date);
    }
}

/// Calls `f` for every string field of an opt-out/erase request.
pub fn for_each_request_string_mut(req: &mut PatientRequest, mut f: impl FnMut(&'static str, &mut String)) {
    f("request_id", &mut req.request_id);
    if let Some(ins) = req.insurance.as_mut() {
        insurance_strings(ins, &mut f);
    }
    f("kana_name", &mut req.kana_name);
    f("birth_date", &mut req.birth_date);
    f("local_patient_id", &mut req.local_patient_id);
}

fn insurance_strings(ins: &mut Insurance, f: &mut impl FnMut(&'static str, &mut String)) {
    f("insurance.insurer_number", &mut ins.insurer_number);
    f("insurance.symbol", &mut ins.symbol);
    f("insurance.number", &mut ins.number);
    f("insurance.branch", &mut ins.branch);
}

/// Overwrites every string of the record with zeros before its memory is released.
pub fn zeroize_record(record: &mut PatientRecord) {
    for_each_string_mut(record, |_, s| s.zeroize());
}

/// Overwrites every string of an opt-out/erase request.
pub fn zeroize_request(req: &mut PatientRequest) {
    for_each_request_string_mut(req, |_, s| s.zeroize());
}
