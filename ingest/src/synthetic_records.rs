//! The synthetic hospitals' records (`tokumei-synth`) are what a well-behaved vendor sends: every one passes the
//! gateway's validation and none carries a My Number look-alike (the demo and the benchmarks rely on both).

use tokumei_proto::ingest::v1::PatientRecord;
use tokumei_synth::Synth;

const H: [&str; 3] = ["1310000017", "2710000019", "1410000015"];

fn strings(r: &PatientRecord) -> Vec<&str> {
    let mut v = vec![
        r.local_patient_id.as_str(),
        &r.kana_name,
        &r.birth_date,
        &r.postal_code,
        &r.municipality_code,
        &r.death_date,
    ];
    if let Some(i) = &r.insurance {
        v.extend([i.insurer_number.as_str(), &i.symbol, &i.number, &i.branch]);
    }
    for e in &r.encounters {
        v.extend([e.admission_date.as_str(), &e.discharge_date, &e.kind, &e.department]);
    }
    for c in &r.conditions {
        v.extend([c.icd10.as_str(), &c.disease_master_id, &c.onset_date]);
    }
    for m in &r.medications {
        v.extend([m.yj_code.as_str(), &m.start_date, &m.dose_unit]);
    }
    for o in &r.observations {
        v.extend([o.jlac10.as_str(), &o.jlac11, &o.date, &o.unit, &o.text_value]);
    }
    for a in &r.allergies {
        v.extend([a.yj_code.as_str(), &a.substance, &a.recorded_date]);
    }
    v
}

#[test]
fn records_pass_the_gateway_validation() {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 10, 31).expect("a date");
    for code in H {
        for r in Synth::new(17).records(code, 0, 3000) {
            if let Err(refusal) = crate::validate::validate_record(&r, today) {
                panic!("synthetic record refused: {refusal:?}");
            }
            assert!(strings(&r).iter().all(|s| !crate::my_number::contains_my_number(s)));
        }
    }
}
