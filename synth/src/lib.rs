//! Deterministic synthetic Japanese hospital data for demos, tests and benchmarks.
//!
//! Real patient data can never be used to develop or demonstrate the platform, yet linkage, validation
//! and de-identification only show their behaviour on data with a realistic shape. This module produces
//! such data as a *pure function* of `(seed, hospital_code, index)`, so any record can be regenerated
//! anywhere (a test, a benchmark, a demo hospital) without storing it.
//!
//! # Model
//! * **People** come from a shared pool. Index `i` at a hospital falls in a block of 256 slots; a
//!   hospital-specific permutation maps it to a pool slot. About 36 % of slots hold a "multi-hospital"
//!   person who is present at each hospital with probability ½ — so two hospitals share ~9 % of their
//!   records, three ~13 %, five ~17 % — and every other index is a person unique to that hospital. The
//!   identity (kana name, birth date, sex, address, insurance, death) is a function of `(seed, person)`
//!   only, so a shared person is identical everywhere; the `local_patient_id` and the clinical history
//!   are per hospital. [`Synth::person_id`] exposes the ground truth for linkage evaluation.
//! * **Demography**: the 2020 census pyramid weighted by age-specific hospital use (older skew), the 47
//!   prefectures by population (patients unique to a hospital mostly live in its prefecture), real
//!   municipality codes of capitals and major cities, and generational given names.
//! * **Clinical content** (see `clinical`): ICD-10 conditions with age/sex prevalence and comorbidity,
//!   YJ prescriptions for them, JLAC10 labs that reflect them, 1–6 encounters, allergies.
//! * All dates lie in 1900-01-01 ..= 2026-10-31 (a fixed "today", so output never depends on the clock)
//!   and clinical dates lie between birth and death.
//! * No string ever contains a 12-digit run that passes the My Number check digit: identifiers are at
//!   most 9 digits, and the JLAC10 codes used were chosen so that no 12-digit window passes it.

#![warn(missing_docs)]

mod clinical;
mod date;
mod tables;

use clinical::Patient;
use date::{Day, TODAY};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tables::{FEMALE_GIVEN, MALE_GIVEN, MUNICIPALITIES, PATIENT_PYRAMID, PREFECTURES, SURNAMES};
use tokumei_proto::ingest::v1::{Insurance, PatientRecord, Sex};

/// Indices are grouped into blocks of this many pool slots (a power of two, for the cheap permutation).
const BLOCK: u64 = 256;
/// Fraction of pool slots that hold a person seen at several hospitals.
const MULTI_HOSPITAL_SLOT_RATE: f64 = 0.36;
/// Probability that a multi-hospital person is a patient of any given hospital.
const PRESENCE_RATE: f64 = 0.5;
/// Share of patients unique to a hospital who live in the hospital's own prefecture.
const LOCAL_RESIDENCE_RATE: f64 = 0.8;

// Domain-separation constants so that the different derived hashes never coincide.
const TAG_HOSPITAL: u64 = 0x6f73_7069_7461_6c00;
const TAG_SLOT: u64 = 0x736c_6f74_0000_0001;
const TAG_PRESENCE: u64 = 0x7072_6573_656e_6365;
const TAG_LOCAL: u64 = 0x6c6f_6361_6c00_0002;
const TAG_PERSON: u64 = 0x7065_7273_6f6e_0003;
const TAG_RECORD: u64 = 0x7265_636f_7264_0004;

/// Generates patients for one hospital, deterministically from (seed, hospital_code, index).
///
/// Cheap to construct and `Copy`-sized: all tables are shared statics, so a `Synth` can be handed to
/// every worker thread of a benchmark.
#[derive(Clone, Copy, Debug)]
pub struct Synth {
    seed: u64,
}

/// Who a synthetic record is about: equal ids mean the same person, whichever hospital sent the record.
///
/// This is the linkage ground truth the pseudonymisation and ID4 matching can be scored against.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PersonId(u64);

impl PersonId {
    const LOCAL: u64 = 1 << 63;

    /// Whether this person may appear at more than one hospital.
    pub fn is_shared(self) -> bool {
        self.0 & Self::LOCAL == 0
    }

    /// Prefecture (1..=47) a hospital-local person most likely lives in, if any.
    fn home_prefecture(self) -> Option<u8> {
        let pref = ((self.0 >> 56) & 0x7f) as u8;
        (!self.is_shared() && (1..=47).contains(&pref)).then_some(pref)
    }
}

impl Synth {
    /// A generator for `seed`; different seeds give unrelated populations.
    pub fn new(seed: u64) -> Self {
        Synth { seed }
    }

    /// The record of the `index`-th patient seen at `hospital_code`. Pure function of (seed, hospital_code, index).
    pub fn record(&self, hospital_code: &str, index: u64) -> PatientRecord {
        let hospital = self.hospital_key(hospital_code);
        let person = self.person_for(hospital, prefecture_of(hospital_code), index);
        let id = identity(self.seed, person);
        let mut rng = ChaCha8Rng::seed_from_u64(mix(hospital ^ mix(index ^ TAG_RECORD)));
        let patient = Patient {
            female: id.female,
            birth: id.birth,
            end: id.death.unwrap_or(TODAY),
        };
        let clinical = clinical::generate(&mut rng, &patient);
        let long_term_storage = rng.random_bool(if clinical.has_cancer { 0.3 } else { 0.03 });
        PatientRecord {
            local_patient_id: local_patient_id(hospital, index),
            insurance: id.insurance,
            kana_name: kana_name(id.family, id.given),
            birth_date: date::format(id.birth),
            sex: if id.female { Sex::Female } else { Sex::Male } as i32,
            postal_code: id.postal_code,
            municipality_code: id.municipality.to_owned(),
            death_date: id.death.map(date::format).unwrap_or_default(),
            encounters: clinical.encounters,
            conditions: clinical.conditions,
            medications: clinical.medications,
            observations: clinical.observations,
            allergies: clinical.allergies,
            long_term_storage,
        }
    }

    /// Convenience: records index start..start+count.
    pub fn records(&self, hospital_code: &str, start: u64, count: u64) -> Vec<PatientRecord> {
        (start..start.saturating_add(count))
            .map(|i| self.record(hospital_code, i))
            .collect()
    }

    /// The person behind record `index` of `hospital_code` (linkage ground truth).
    pub fn person_id(&self, hospital_code: &str, index: u64) -> PersonId {
        self.person_for(self.hospital_key(hospital_code), prefecture_of(hospital_code), index)
    }

    fn hospital_key(&self, hospital_code: &str) -> u64 {
        // FNV-1a over the bytes, then a strong mix with the seed: stable across Rust versions and
        // platforms, unlike std's hashers.
        let fnv = hospital_code.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        mix(self.seed ^ mix(fnv ^ TAG_HOSPITAL))
    }

    fn person_for(&self, hospital: u64, home_pref: Option<u8>, index: u64) -> PersonId {
        let block = index / BLOCK;
        let slot = block * BLOCK + permute_in_block(index % BLOCK, mix(hospital ^ block));
        let multi = unit(mix(self.seed ^ mix(slot ^ TAG_SLOT))) < MULTI_HOSPITAL_SLOT_RATE;
        if multi && unit(mix(hospital ^ mix(slot ^ TAG_PRESENCE))) < PRESENCE_RATE {
            return PersonId(slot & !PersonId::LOCAL);
        }
        let local = mix(hospital ^ mix(index ^ TAG_LOCAL)) & ((1 << 56) - 1);
        PersonId(PersonId::LOCAL | (u64::from(home_pref.unwrap_or(0)) << 56) | local)
    }
}

/// Valid-format 10-digit medical-institution codes for N demo hospitals (prefecture 2 digits + '1' (医科) + 7 digits), deterministic.
///
/// Hospitals are spread over the prefectures in order of population (Tokyo, Kanagawa, Osaka, …) so that
/// small demos look metropolitan; the 7 digits are 郡市区 (2) + institution number (4) + a modulus-10
/// check digit. Codes are distinct for `n` up to 10,000.
pub fn hospital_codes(n: usize) -> Vec<String> {
    let mut by_population: Vec<&tables::Prefecture> = PREFECTURES.iter().collect();
    by_population.sort_by_key(|p| (std::cmp::Reverse(p.population_k), p.code));
    (0..n)
        .map(|i| {
            let pref = by_population[i % by_population.len()].code;
            let district = 1 + (i as u32 * 7) % 40;
            let number = (1000 + i as u32 * 379) % 10_000;
            let mut s = String::with_capacity(10);
            date::push_digits(&mut s, u32::from(pref), 2);
            s.push('1');
            date::push_digits(&mut s, district, 2);
            date::push_digits(&mut s, number, 4);
            let check = luhn_check(&s.as_bytes()[3..]);
            s.push(char::from(b'0' + check));
            s
        })
        .collect()
}

/// splitmix64 finaliser: a fast bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) from the top 53 bits of a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A keyed bijection of 0..256 (odd multiply, add, xorshift — each invertible mod 2^8), so every index of
/// a block maps to a distinct slot and no person appears twice at the same hospital.
fn permute_in_block(p: u64, key: u64) -> u64 {
    let mut x = p;
    x = (x.wrapping_mul(key | 1).wrapping_add(key >> 8)) & (BLOCK - 1);
    x ^= x >> 3;
    x = (x.wrapping_mul((key >> 16) | 1).wrapping_add(key >> 24)) & (BLOCK - 1);
    x ^= x >> 5;
    x
}

/// The prefecture encoded in the first two digits of a medical-institution code, if valid.
fn prefecture_of(hospital_code: &str) -> Option<u8> {
    let b = hospital_code.as_bytes();
    if b.len() < 2 || !b[..2].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pref = (b[0] - b'0') * 10 + (b[1] - b'0');
    (1..=47).contains(&pref).then_some(pref)
}

/// Modulus-10 check digit with weights 2,1,2,… from the rightmost digit (the scheme of 保険者番号).
fn luhn_check(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(d - b'0') * if i % 2 == 0 { 2 } else { 1 };
            v / 10 + v % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// A hospital-specific patient-number format with a bijective numbering, so ids are unique per hospital
/// (for indices below 10^8) and look different from hospital to hospital.
fn local_patient_id(hospital: u64, index: u64) -> String {
    const STYLES: [(&str, u32); 4] = [("P", 8), ("", 9), ("K", 8), ("MRN", 9)];
    let (prefix, width) = STYLES[(hospital % 4) as usize];
    let modulus = 10u64.pow(width);
    let mut mult = ((hospital >> 8) % modulus) | 1;
    if mult.is_multiple_of(5) {
        mult += 2; // coprime to 10, hence invertible mod 10^width
    }
    let value = ((hospital >> 40) % modulus + (index % modulus) * mult) % modulus;
    let mut s = String::with_capacity(prefix.len() + width as usize);
    s.push_str(prefix);
    date::push_digits_u64(&mut s, value, width);
    s
}

fn kana_name(family: &str, given: &str) -> String {
    let mut s = String::with_capacity(family.len() + 3 + given.len());
    s.push_str(family);
    s.push('\u{3000}');
    s.push_str(given);
    s
}

/// Everything about a person that is the same at every hospital.
struct Identity {
    female: bool,
    birth: Day,
    death: Option<Day>,
    family: &'static str,
    given: &'static str,
    postal_code: String,
    municipality: &'static str,
    insurance: Option<Insurance>,
}

fn identity(seed: u64, person: PersonId) -> Identity {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(person.0 ^ TAG_PERSON)));
    let (age, female) = draw_age_sex(&mut rng);
    let latest = date::years_before(TODAY, age as i32);
    let birth = rng
        .random_range(date::years_before(TODAY, age as i32 + 1) + 1..=latest)
        .max(date::EPOCH_1900);
    let death = draw_death(&mut rng, age, birth);
    let pref = draw_prefecture(&mut rng, person.home_prefecture());
    let cities = &MUNICIPALITIES[pref];
    let municipality = if rng.random_bool(0.5) {
        &cities[0]
    } else {
        &cities[rng.random_range(0..cities.len())]
    };
    let family = SURNAMES[tables::pick_cumulative(&tables::SURNAME_CUMULATIVE, rng.random_range(0..surname_total()))];
    let (birth_year, _, _) = date::civil_from_days(birth);
    let era = match birth_year {
        ..1960 => 0,
        1960..1990 => 1,
        _ => 2,
    };
    let names = if female { &FEMALE_GIVEN[era] } else { &MALE_GIVEN[era] };
    let given = names[rng.random_range(0..names.len())];
    let postal_code = postal_code(&mut rng, pref);
    let insurance = rng.random_bool(0.93).then(|| insurance(&mut rng, age, pref));
    Identity {
        female,
        birth,
        death,
        family,
        given,
        postal_code,
        municipality,
        insurance,
    }
}

fn surname_total() -> u32 {
    tables::SURNAME_CUMULATIVE.last().copied().unwrap_or(1)
}

/// Age in completed years at [`TODAY`] and sex, from the patient pyramid.
fn draw_age_sex(rng: &mut ChaCha8Rng) -> (u32, bool) {
    let total = PATIENT_PYRAMID.last().map_or(1, |e| e.0);
    let draw = rng.random_range(0..total);
    let i = PATIENT_PYRAMID
        .partition_point(|e| e.0 <= draw)
        .min(PATIENT_PYRAMID.len() - 1);
    let (_, band, female) = PATIENT_PYRAMID[i];
    (u32::from(band) * 5 + rng.random_range(0..5), female)
}

/// ~2 % of patients died in the last two years (mostly the oldest).
fn draw_death(rng: &mut ChaCha8Rng, age: u32, birth: Day) -> Option<Day> {
    let p = match age {
        ..65 => 0.005,
        65..80 => 0.02,
        _ => 0.065,
    };
    let lo = (birth + 1).max(TODAY - 730);
    let hi = TODAY - 1;
    (rng.random_bool(p) && lo <= hi).then(|| rng.random_range(lo..=hi))
}

/// Index into [`PREFECTURES`].
fn draw_prefecture(rng: &mut ChaCha8Rng, home: Option<u8>) -> usize {
    match home {
        Some(p) if rng.random_bool(LOCAL_RESIDENCE_RATE) => usize::from(p - 1),
        _ => {
            let cum = &*tables::PREFECTURE_CUMULATIVE;
            let total = cum.last().copied().unwrap_or(1);
            let cum_u32: &[u32] = cum;
            tables::pick_cumulative(cum_u32, rng.random_range(0..total))
        }
    }
}

/// "NNN-NNNN" with a prefix inside the prefecture's range.
fn postal_code(rng: &mut ChaCha8Rng, pref: usize) -> String {
    let (lo, hi) = PREFECTURES[pref].postal;
    let mut s = String::with_capacity(8);
    date::push_digits(&mut s, u32::from(rng.random_range(lo..=hi)), 3);
    s.push('-');
    date::push_digits(&mut s, rng.random_range(0..10_000), 4);
    s
}

/// 被保険者番号 by age: 後期高齢者 (75+), employee insurance (協会けんぽ, 健保組合, 共済) or 国民健康保険.
fn insurance(rng: &mut ChaCha8Rng, age: u32, pref: usize) -> Insurance {
    let pref_code = u32::from(PREFECTURES[pref].code);
    let dependent_branch = |rng: &mut ChaCha8Rng| format!("{:02}", rng.random_range(1..=3));
    if age >= 75 {
        return Insurance {
            insurer_number: insurer_number("39", pref_code, rng.random_range(100..1000)),
            symbol: String::new(),
            number: digits(rng, 8),
            branch: "00".to_owned(),
        };
    }
    let employee_rate = match age {
        ..20 => 0.7,
        20..65 => 0.72,
        _ => 0.35,
    };
    let insured_self = age >= 20 && rng.random_bool(0.7);
    let branch = if insured_self {
        "00".to_owned()
    } else {
        dependent_branch(rng)
    };
    if rng.random_bool(employee_rate) {
        let (insurer_number, symbol) = match rng.random_range(0..100) {
            0..50 => (insurer_number("01", pref_code, 1), digits(rng, 8)),
            50..88 => (
                insurer_number("06", pref_code, rng.random_range(100..1000)),
                digits(rng, 3),
            ),
            _ => {
                let law = ["31", "32", "33", "34"][rng.random_range(0..4)];
                let mut sym = ["本部", "東", "西", "北", "南"][rng.random_range(0..5)].to_owned();
                sym.push_str(&digits(rng, 2));
                (insurer_number(law, pref_code, rng.random_range(100..1000)), sym)
            }
        };
        let width = rng.random_range(3..=6);
        Insurance {
            insurer_number,
            symbol,
            number: digits(rng, width),
            branch,
        }
    } else {
        let mut base = String::with_capacity(6);
        date::push_digits(&mut base, pref_code, 2);
        date::push_digits(&mut base, rng.random_range(1..1000), 3);
        base.push(char::from(b'0' + luhn_check(base.as_bytes())));
        let symbol = match rng.random_range(0..3) {
            0 => String::new(),
            1 => digits(rng, 2),
            _ => ["国", "保", "市", "町"][rng.random_range(0..4)].to_owned(),
        };
        let width = rng.random_range(5..=7);
        Insurance {
            insurer_number: base,
            symbol,
            number: digits(rng, width),
            branch,
        }
    }
}

/// 8-digit employee/後期 insurer number: 法別番号 + prefecture + 3 digits + check digit.
fn insurer_number(law: &str, pref: u32, serial: u32) -> String {
    let mut s = String::with_capacity(8);
    s.push_str(law);
    date::push_digits(&mut s, pref, 2);
    date::push_digits(&mut s, serial, 3);
    s.push(char::from(b'0' + luhn_check(s.as_bytes())));
    s
}

/// `width` random decimal digits, not starting with 0 (they are printed on cards as numbers).
fn digits(rng: &mut ChaCha8Rng, width: u32) -> String {
    let lo = 10u32.pow(width - 1);
    let mut s = String::with_capacity(width as usize);
    date::push_digits(&mut s, rng.random_range(lo..lo * 10), width);
    s
}

/// Every text field of a record, where a direct identifier could hide: what the tests (here and the gateway's) scan
/// for My Number look-alikes and planted identifiers.
pub fn text_fields(r: &PatientRecord) -> Vec<&str> {
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

#[cfg(test)]
mod tests;
