//! Properties the rest of the platform relies on: determinism, identity sharing, valid dates and codes,
//! plausible epidemiology, and no My Number look-alikes.

use super::date::{self, TODAY};
use super::*;
use std::collections::{HashMap, HashSet};

const H: [&str; 3] = ["1310000017", "2710000019", "1410000015"];

fn parse_date(s: &str) -> Day {
    let b = s.as_bytes();
    assert_eq!(b.len(), 10, "date {s:?}");
    assert!(b[4] == b'-' && b[7] == b'-', "date {s:?}");
    let y: i32 = s[0..4].parse().unwrap();
    let m: u32 = s[5..7].parse().unwrap();
    let d: u32 = s[8..10].parse().unwrap();
    assert!((1..=12).contains(&m) && (1..=31).contains(&d), "date {s:?}");
    let day = date::days_from_civil(y, m, d);
    assert_eq!(date::format(day), s, "not a calendar date: {s:?}");
    day
}

fn my_number_check_ok(d: &[u8]) -> bool {
    let sum: u32 = (1..=11)
        .map(|n| {
            let p = u32::from(d[11 - n] - b'0');
            let q = if n <= 6 { n as u32 + 1 } else { n as u32 - 5 };
            p * q
        })
        .sum();
    let r = sum % 11;
    let check = if r <= 1 { 0 } else { 11 - r };
    u32::from(d[11] - b'0') == check
}

/// True if any 12 consecutive digits of `s` form a valid My Number.
fn has_my_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut run_start = 0;
    for i in 0..=b.len() {
        if i == b.len() || !b[i].is_ascii_digit() {
            if i - run_start >= 12 && b[run_start..i].windows(12).any(my_number_check_ok) {
                return true;
            }
            run_start = i + 1;
        }
    }
    false
}

#[test]
fn same_seed_same_bytes_different_seed_different_records() {
    use prost::Message;
    let a = Synth::new(7).records(H[0], 0, 300);
    let b = Synth::new(7).records(H[0], 0, 300);
    assert_eq!(a, b);
    let bytes = |v: &[PatientRecord]| v.iter().flat_map(|r| r.encode_to_vec()).collect::<Vec<u8>>();
    assert_eq!(bytes(&a), bytes(&b));
    let c = Synth::new(8).records(H[0], 0, 300);
    assert!(a.iter().zip(&c).filter(|(x, y)| x != y).count() > 290);
    // A record does not depend on which batch it was generated in.
    assert_eq!(Synth::new(7).record(H[0], 123), a[123]);
}

#[test]
fn shared_people_have_one_identity_and_overlap_is_realistic() {
    let s = Synth::new(42);
    let n = 3000;
    let mut seen: HashMap<PersonId, Vec<(usize, PatientRecord)>> = HashMap::new();
    for (h, code) in H.iter().enumerate() {
        let mut at_this = HashSet::new();
        for i in 0..n {
            let person = s.person_id(code, i);
            assert!(at_this.insert(person), "person repeated within one hospital");
            seen.entry(person).or_default().push((h, s.record(code, i)));
        }
    }
    let mut shared_records = 0;
    for records in seen.values().filter(|v| v.len() > 1) {
        shared_records += records.len();
        let (_, first) = &records[0];
        for (_, r) in &records[1..] {
            assert_eq!(r.kana_name, first.kana_name);
            assert_eq!(r.birth_date, first.birth_date);
            assert_eq!(r.sex, first.sex);
            assert_eq!(r.insurance, first.insurance);
            assert_eq!(r.postal_code, first.postal_code);
            assert_eq!(r.municipality_code, first.municipality_code);
            assert_eq!(r.death_date, first.death_date);
            assert_ne!(r.local_patient_id, first.local_patient_id);
        }
    }
    let share = shared_records as f64 / (3 * n) as f64;
    assert!((0.08..0.2).contains(&share), "overlap {share}");
    // Local ids are unique within a hospital.
    let ids: HashSet<String> = s.records(H[0], 0, n).into_iter().map(|r| r.local_patient_id).collect();
    assert_eq!(ids.len() as u64, n);
}

#[test]
fn dates_are_valid_and_ordered() {
    let s = Synth::new(1);
    let mut deceased = 0;
    let n = 20_000;
    for r in s.records(H[1], 0, n) {
        let birth = parse_date(&r.birth_date);
        assert!((date::EPOCH_1900..=TODAY).contains(&birth));
        let end = if r.death_date.is_empty() {
            TODAY
        } else {
            deceased += 1;
            let death = parse_date(&r.death_date);
            assert!(death > birth && death < TODAY);
            death
        };
        let within = |s: &str| {
            let d = parse_date(s);
            assert!(birth <= d && d <= end, "{s} outside life");
            d
        };
        assert!((1..=6).contains(&r.encounters.len()));
        for e in &r.encounters {
            let adm = within(&e.admission_date);
            if !e.discharge_date.is_empty() {
                assert!(within(&e.discharge_date) >= adm);
            }
            assert!(["outpatient", "inpatient", "emergency"].contains(&e.kind.as_str()));
            assert!(e.kind == "inpatient" || e.discharge_date.is_empty());
            assert!(!e.department.is_empty());
        }
        for c in &r.conditions {
            within(&c.onset_date);
        }
        for m in &r.medications {
            within(&m.start_date);
        }
        for o in &r.observations {
            within(&o.date);
        }
        for a in &r.allergies {
            within(&a.recorded_date);
        }
    }
    let rate = f64::from(deceased) / n as f64;
    assert!((0.01..0.035).contains(&rate), "deceased {rate}");
}

#[test]
fn identity_fields_have_valid_formats() {
    let mut insured = 0;
    let mut prefixes_ok = 0;
    let n = 10_000;
    for r in Synth::new(3).records(H[2], 0, n) {
        let m = r.municipality_code.as_bytes();
        assert_eq!(m.len(), 6);
        let first5: [u8; 5] = m[..5].try_into().unwrap();
        assert_eq!(m[5] - b'0', tables::municipality_check_digit(&first5));
        let p = r.postal_code.as_bytes();
        assert!(p.len() == 8 && p[3] == b'-' && p.iter().enumerate().all(|(i, c)| i == 3 || c.is_ascii_digit()));
        let pref: usize = r.municipality_code[..2].parse().unwrap();
        let prefix: u16 = r.postal_code[..3].parse().unwrap();
        let (lo, hi) = PREFECTURES[pref - 1].postal;
        prefixes_ok += usize::from((lo..=hi).contains(&prefix));
        let (family, given) = r.kana_name.split_once('\u{3000}').expect("full-width space");
        for part in [family, given] {
            assert!(
                !part.is_empty() && part.chars().all(|c| ('\u{30a1}'..='\u{30fc}').contains(&c)),
                "{part}"
            );
        }
        assert!(r.sex == Sex::Male as i32 || r.sex == Sex::Female as i32);
        if let Some(i) = &r.insurance {
            insured += 1;
            assert!(matches!(i.insurer_number.len(), 6 | 8) && i.insurer_number.bytes().all(|b| b.is_ascii_digit()));
            assert!(!i.number.is_empty());
            assert!(["00", "01", "02", "03"].contains(&i.branch.as_str()));
            let age = date::age_on(parse_date(&r.birth_date), TODAY);
            if age >= 75 {
                assert!(i.insurer_number.starts_with("39"));
            }
        }
    }
    assert_eq!(prefixes_ok, n as usize);
    let rate = f64::from(insured) / n as f64;
    assert!((0.91..0.95).contains(&rate), "insured {rate}");
}

#[test]
fn clinical_codes_have_valid_formats() {
    const UNITS: [&str; 8] = ["mg", "錠", "カプセル", "g", "mL", "μg", "吸入", "包"];
    for r in Synth::new(5).records(H[0], 0, 5000) {
        for c in &r.conditions {
            let b = c.icd10.as_bytes();
            assert!(b[0].is_ascii_uppercase() && b[1].is_ascii_digit() && b[2].is_ascii_digit());
            assert!(c.disease_master_id.len() == 8 && c.disease_master_id.bytes().all(|b| b.is_ascii_digit()));
        }
        for m in &r.medications {
            assert_yj(&m.yj_code);
            assert!((7..=90).contains(&m.days));
            assert!(m.daily_dose > 0.0);
            assert!(UNITS.contains(&m.dose_unit.as_str()), "{}", m.dose_unit);
        }
        for o in &r.observations {
            let b = o.jlac10.as_bytes();
            assert_eq!(b.len(), 17);
            assert!(b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
            assert!(o.jlac11.is_empty());
            if o.text_value.is_empty() {
                assert!(!o.unit.is_empty() && o.value > 0.0);
            } else {
                assert!(o.unit.is_empty() && o.value == 0.0);
            }
            if o.jlac10.starts_with("3D046") {
                assert!((4.5..=13.0).contains(&o.value) && o.unit == "%");
            }
        }
        for a in &r.allergies {
            assert!(!a.substance.is_empty());
            if !a.yj_code.is_empty() {
                assert_yj(&a.yj_code);
            }
        }
    }
}

fn assert_yj(code: &str) {
    let b = code.as_bytes();
    assert_eq!(b.len(), 12, "{code}");
    assert!(
        b[..7].iter().all(u8::is_ascii_digit) && b[7].is_ascii_uppercase() && b[8..].iter().all(u8::is_ascii_digit)
    );
}

#[test]
fn prescriptions_match_conditions() {
    // Therapeutic class (first 4 YJ digits) expected for a condition.
    let classes: [(&str, &[&str]); 4] = [
        ("I10", &["2171", "2149"]),
        ("E11.9", &["3962", "3969"]),
        ("E78.5", &["2189"]),
        ("K21.9", &["2329"]),
    ];
    let mut treated = HashMap::new();
    for r in Synth::new(9).records(H[0], 0, 5000) {
        for (icd, cls) in classes {
            let has = r.conditions.iter().any(|c| c.icd10 == icd);
            let rx = r.medications.iter().any(|m| cls.contains(&&m.yj_code[..4]));
            if has && rx {
                *treated.entry(icd).or_insert(0) += 1;
            }
            // Antidiabetics are only ever prescribed for diabetes.
            if icd == "E11.9" && rx {
                assert!(has, "antidiabetic without E11.9");
            }
        }
    }
    for (icd, _) in classes {
        assert!(treated.get(icd).copied().unwrap_or(0) > 20, "{icd} rarely treated");
    }
}

#[test]
fn prevalence_follows_age_and_sex() {
    let s = Synth::new(11);
    let (mut old, mut old_htn, mut young, mut young_htn) = (0, 0, 0, 0);
    let (mut old_f, mut old_f_osteo, mut old_m, mut old_m_osteo) = (0, 0, 0, 0);
    let mut ages = Vec::new();
    for r in s.records(H[0], 0, 30_000) {
        let age = date::age_on(parse_date(&r.birth_date), TODAY);
        ages.push(age);
        let has = |icd: &str| r.conditions.iter().any(|c| c.icd10 == icd);
        match age {
            30..40 => {
                young += 1;
                young_htn += usize::from(has("I10"));
            }
            70.. => {
                old += 1;
                old_htn += usize::from(has("I10"));
                if r.sex == Sex::Female as i32 {
                    old_f += 1;
                    old_f_osteo += usize::from(has("M81.0"));
                } else {
                    old_m += 1;
                    old_m_osteo += usize::from(has("M81.0"));
                }
            }
            _ => {}
        }
    }
    let rate = |k: usize, n: usize| k as f64 / n as f64;
    assert!(rate(old_htn, old) > 4.0 * rate(young_htn, young));
    assert!(rate(old_f_osteo, old_f) > 2.0 * rate(old_m_osteo, old_m));
    // Hospital patients skew old: the median patient is older than the median Japanese (~48).
    ages.sort_unstable();
    assert!(ages[ages.len() / 2] > 50, "median age {}", ages[ages.len() / 2]);
    assert!(ages.iter().any(|&a| a < 5) && ages.iter().any(|&a| a >= 95));
}

#[test]
fn no_string_contains_a_my_number() {
    for lab in clinical::ALL_LABS {
        assert!(!has_my_number(lab.jlac10), "{}", lab.jlac10);
    }
    assert!(has_my_number("123456789018"));
    for code in H {
        for r in Synth::new(13).records(code, 0, 5000) {
            for s in text_fields(&r) {
                assert!(!has_my_number(s), "My Number look-alike generated");
                let longest = s
                    .as_bytes()
                    .split(|b| !b.is_ascii_digit())
                    .map(<[u8]>::len)
                    .max()
                    .unwrap_or(0);
                assert!(longest < 12 || s.len() == 17, "long digit run outside a JLAC10 code");
            }
        }
    }
}

#[test]
fn hospital_codes_are_distinct_and_well_formed() {
    let codes = hospital_codes(500);
    assert_eq!(codes.iter().collect::<HashSet<_>>().len(), 500);
    assert!(codes[0].starts_with("13"));
    for c in &codes {
        assert_eq!(c.len(), 10);
        assert!(c.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(&c[2..3], "1");
        let pref: u8 = c[..2].parse().unwrap();
        assert!((1..=47).contains(&pref));
        assert_eq!(c.as_bytes()[9] - b'0', luhn_check(&c.as_bytes()[3..9]));
    }
    assert_eq!(hospital_codes(3), hospital_codes(5)[..3]);
}

#[test]
fn insurer_check_digits_follow_the_modulus_10_rule() {
    // 協会けんぽ 東京支部: 01 13 001 + 2.
    assert_eq!(insurer_number("01", 13, 1), "01130012");
}

/// `cargo test --release -p tokumei-synth --lib tests::throughput -- --ignored --nocapture`
#[test]
#[ignore = "benchmark; run in release mode"]
fn throughput() {
    let s = Synth::new(1);
    let n = 1_000_000u64;
    let t = std::time::Instant::now();
    let mut total = 0usize;
    for i in 0..n {
        total += s.record(H[(i % 3) as usize], i / 3).observations.len();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} records in {secs:.2} s ({:.0} records/s), {total} observations",
        n as f64 / secs
    );
}

/// The decoded-size walk of the ingest codec on realistic batches: how much memory a decoded batch takes per
/// wire byte decides how large a message the decoded budget (three times the message limit) admits. Measured:
/// 7.4 decoded bytes per wire byte (771 wire bytes per record), so the default 48 MiB budget admits batches of
/// about 8,800 such records (6.8 MB on the wire); docs/ingest.md says so.
#[test]
fn a_realistic_batch_of_a_thousand_records_fits_the_default_decoded_budget() {
    use prost::Message;
    use tokumei_proto::bounded::{Bounded, decoded_cost};
    use tokumei_proto::ingest::v1::RecordBatch;
    let synth = Synth::new(7);
    let code = &hospital_codes(1)[0];
    let batch = RecordBatch {
        batch_id: "b".into(),
        records: synth.records(code, 0, 1_000),
    };
    let wire = batch.encode_to_vec();
    let shape = RecordBatch::shape().expect("bounded");
    let cost = decoded_cost(&wire, shape, usize::MAX).expect("well formed") + shape.size;
    let ratio = cost as f64 / wire.len() as f64;
    assert!(
        (4.0..8.0).contains(&ratio),
        "decoded {cost} bytes for {} wire bytes ({ratio:.2}×): update docs/ingest.md",
        wire.len()
    );
    assert!(
        3 * cost < tokumei_proto::bounded::DEFAULT_DECODED_BUDGET,
        "{cost} bytes ({ratio:.2}×)"
    );
}
