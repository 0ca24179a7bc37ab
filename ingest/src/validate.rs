//! Validation of incoming records: codes, dates, units and numeric ranges.
//!
//! Pure functions of the record and "today" (Japan time, passed in so tests can fix the clock). A record is
//! either valid or refused with exactly one [`Refusal`]: the first problem found, named by field, never by value.

use crate::normalise;
use crate::reason::{Reason, Refusal};
use chrono::NaiveDate;
use tokumei_proto::ingest::v1::{Allergy, Condition, Encounter, Medication, Observation, PatientRecord, Sex};
use unicode_normalization::UnicodeNormalization;

/// The earliest date the platform accepts anywhere.
pub const EARLIEST: NaiveDate = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(d) => d,
    None => panic!("1900-01-01 is a date"),
};

/// Today's date in Japan (UTC+9), the reference for "not in the future".
pub fn today_in_japan() -> NaiveDate {
    (chrono::Utc::now() + chrono::Duration::hours(9)).date_naive()
}

/// Parses a strict `YYYY-MM-DD` date.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let y = num(0..4)?;
    let m = num(5..7)?;
    let d = num(8..10)?;
    NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)
}

/// The dates a record's clinical events must lie between.
struct Life {
    birth: NaiveDate,
    death: Option<NaiveDate>,
    today: NaiveDate,
}

impl Life {
    /// A required or optional clinical date: well-formed, in range, within the patient's life.
    fn date(&self, field: &'static str, s: &str, required: bool) -> Result<Option<NaiveDate>, Refusal> {
        if s.is_empty() {
            return if required {
                Err(Refusal::new(Reason::InvalidDate, format!("{field} is required")))
            } else {
                Ok(None)
            };
        }
        let d = date_in_range(field, s, self.today)?;
        if d < self.birth {
            return Err(Refusal::new(
                Reason::DateOutsideLife,
                format!("{field} is before the birth date"),
            ));
        }
        if let Some(death) = self.death
            && d > death
        {
            return Err(Refusal::new(
                Reason::DateOutsideLife,
                format!("{field} is after the death date"),
            ));
        }
        Ok(Some(d))
    }
}

fn date_in_range(field: &'static str, s: &str, today: NaiveDate) -> Result<NaiveDate, Refusal> {
    let d = parse_date(s).ok_or_else(|| {
        Refusal::new(
            Reason::InvalidDate,
            format!("{field} must be a calendar date YYYY-MM-DD"),
        )
    })?;
    if d < EARLIEST {
        return Err(Refusal::new(
            Reason::DateOutOfRange,
            format!("{field} is before 1900-01-01"),
        ));
    }
    if d > today {
        return Err(Refusal::new(
            Reason::DateOutOfRange,
            format!("{field} is in the future"),
        ));
    }
    Ok(d)
}

fn max_len(field: &'static str, s: &str, max: usize) -> Result<(), Refusal> {
    if s.chars().count() > max {
        Err(Refusal::new(
            Reason::FieldTooLong,
            format!("{field} is longer than {max} characters"),
        ))
    } else {
        Ok(())
    }
}

/// Validates a whole record. `Ok` means every field is acceptable and the identity can be pseudonymised.
pub fn validate_record(r: &PatientRecord, today: NaiveDate) -> Result<(), Refusal> {
    if r.local_patient_id.trim().is_empty() {
        return Err(Refusal::new(Reason::MissingLocalId, "local_patient_id is required"));
    }
    max_len("local_patient_id", &r.local_patient_id, 64)?;
    let sex = Sex::try_from(r.sex).map_err(|_| Refusal::new(Reason::InvalidSex, "sex is not a known code"))?;
    if r.birth_date.is_empty() {
        return Err(Refusal::new(Reason::MissingBirthDate, "birth_date is required"));
    }
    let birth = date_in_range("birth_date", &r.birth_date, today)?;
    let death = if r.death_date.is_empty() {
        None
    } else {
        let d = date_in_range("death_date", &r.death_date, today)?;
        if d < birth {
            return Err(Refusal::new(
                Reason::DateOutsideLife,
                "death_date is before the birth date",
            ));
        }
        Some(d)
    };
    // Identity: a complete insured identity, else kana + birth date + sex (ID4).
    if normalise::insurance_present(r.insurance.as_ref()) {
        if let Some(ins) = r.insurance.as_ref() {
            normalise::insured_identity(ins)?;
        }
    } else if r.kana_name.trim().is_empty() || sex == Sex::Unspecified {
        return Err(Refusal::new(
            Reason::MissingIdentity,
            "either insurance or kana_name + birth_date + sex is required",
        ));
    } else {
        normalise::kana_name(&r.kana_name)?;
    }
    if !r.postal_code.is_empty() {
        postal_prefix(&r.postal_code)?;
    }
    if !r.municipality_code.is_empty() {
        municipality_code(&r.municipality_code)?;
    }
    let life = Life { birth, death, today };
    for e in &r.encounters {
        encounter(e, &life)?;
    }
    for c in &r.conditions {
        condition(c, &life)?;
    }
    for m in &r.medications {
        medication(m, &life)?;
    }
    for o in &r.observations {
        observation(o, &life)?;
    }
    for a in &r.allergies {
        allergy(a, &life)?;
    }
    Ok(())
}

/// The 3-digit postal prefix of a valid 7-digit postal code (`1234567` or `123-4567`, any width).
pub fn postal_prefix(s: &str) -> Result<String, Refusal> {
    let compact: String = if s.is_ascii() {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    } else {
        s.nfkc().filter(|c| !c.is_whitespace()).collect()
    };
    let b = compact.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    let valid = match b.len() {
        7 => digits(b),
        8 => b[3] == b'-' && digits(&b[..3]) && digits(&b[4..]),
        _ => false,
    };
    if !valid {
        return Err(Refusal::new(
            Reason::InvalidPostalCode,
            "postal_code must be 7 digits (NNN-NNNN)",
        ));
    }
    Ok(compact[..3].to_string())
}

/// Check digit of a 全国地方公共団体コード: weights 6,5,4,3,2 over the first five digits.
pub fn municipality_check_digit(first5: &[u8; 5]) -> u8 {
    let sum: u32 = first5
        .iter()
        .zip([6u32, 5, 4, 3, 2])
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    ((11 - sum % 11) % 10) as u8
}

/// Validates a 6-digit municipality code: prefecture 01–47 and the check digit.
pub fn municipality_code(s: &str) -> Result<(), Refusal> {
    let bad = || {
        Refusal::new(
            Reason::InvalidMunicipalityCode,
            "municipality_code must be 6 digits with a valid check digit",
        )
    };
    let b = s.as_bytes();
    if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let d: Vec<u8> = b.iter().map(|c| c - b'0').collect();
    let pref = d[0] * 10 + d[1];
    if !(1..=47).contains(&pref) {
        return Err(bad());
    }
    let first5 = [d[0], d[1], d[2], d[3], d[4]];
    if municipality_check_digit(&first5) != d[5] {
        return Err(bad());
    }
    Ok(())
}

/// ICD-10: a letter, two digits, then optionally a dot and 1–4 further characters (Japan uses the 4th and
/// 5th characters), or the same without the dot.
pub fn is_icd10(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_uppercase() || !b[1].is_ascii_digit() || !b[2].is_ascii_digit() {
        return false;
    }
    let rest = &b[3..];
    let tail = match rest.first() {
        None => return true,
        Some(b'.') => &rest[1..],
        Some(_) => rest,
    };
    (1..=4).contains(&tail.len()) && tail.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// YJ code: 12 characters — 7 digits (薬効分類 4 + 成分 3), a dosage-form letter, then 4 digits or capitals.
pub fn is_yj_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[..7].iter().all(u8::is_ascii_digit)
        && b[7].is_ascii_uppercase()
        && b[8..].iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// JLAC10: 17 characters — analyte (5) + identification (4) + material (3) + method (3) + result (2);
/// the analyte starts with a digit.
pub fn is_jlac10(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 17 && b[0].is_ascii_digit() && b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// JLAC11: 17 upper-case alphanumerics.
pub fn is_jlac11(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 17 && b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// Standard disease master: 病名管理番号 (8 digits) or 病名交換用コード (4 upper-case alphanumerics).
pub fn is_disease_master_id(s: &str) -> bool {
    let b = s.as_bytes();
    (b.len() == 8 && b.iter().all(u8::is_ascii_digit))
        || (b.len() == 4 && b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()))
}

/// Encounter kinds the platform distinguishes.
pub const ENCOUNTER_KINDS: [&str; 5] = ["outpatient", "inpatient", "emergency", "home", "virtual"];

/// Units accepted for laboratory observations (after NFKC, so `µ`/`μ` and full-width forms agree).
pub const LAB_UNITS: &[&str] = &[
    "%",
    "mg/dL",
    "g/dL",
    "g/L",
    "mg/L",
    "mmol/L",
    "mmol/mol",
    "μmol/L",
    "mEq/L",
    "U/L",
    "IU/L",
    "U/mL",
    "mL/min/1.73m2",
    "mL/min/1.73m^2",
    "mL/min",
    "10^3/μL",
    "10^4/μL",
    "10^6/μL",
    "10^2/μL",
    "/μL",
    "fL",
    "pg",
    "ng/mL",
    "ng/dL",
    "pg/mL",
    "μg/dL",
    "μg/mL",
    "μg/L",
    "μIU/mL",
    "mIU/mL",
    "IU/mL",
    "mmHg",
    "kg",
    "g",
    "cm",
    "kg/m2",
    "bpm",
    "/min",
    "℃",
    "sec",
    "秒",
    "倍",
    "COI",
    "S/CO",
    "g/day",
    "mg/day",
    "mg/gCr",
    "g/gCr",
    "ratio",
    "mOsm/kg",
    "AU/mL",
    "INR",
    "/HPF",
    "個/HPF",
    "mm/h",
];

/// Units accepted for medication doses.
pub const DOSE_UNITS: &[&str] = &[
    "mg",
    "g",
    "μg",
    "mL",
    "L",
    "錠",
    "カプセル",
    "包",
    "枚",
    "本",
    "単位",
    "U",
    "IU",
    "滴",
    "吸入",
    "噴霧",
    "瓶",
    "個",
    "袋",
    "筒",
    "キット",
    "mEq",
    "cm",
    "回",
    "管",
    "シート",
    "パック",
];

fn unit_in(s: &str, allowed: &[&str]) -> bool {
    let s = s.trim();
    // Most units are already in NFKC (ASCII always is): compare without normalising or allocating.
    if unicode_normalization::is_nfkc_quick(s.chars()) == unicode_normalization::IsNormalized::Yes {
        return allowed.contains(&s);
    }
    // NFKC maps the micro sign to Greek mu and full-width forms to ASCII; compare case-sensitively
    // because mL and ML are different things.
    let u: String = s.nfkc().collect();
    allowed.contains(&u.trim())
}

fn encounter(e: &Encounter, life: &Life) -> Result<(), Refusal> {
    let admission = life.date("encounters.admission_date", &e.admission_date, true)?;
    let discharge = life.date("encounters.discharge_date", &e.discharge_date, false)?;
    if let (Some(a), Some(d)) = (admission, discharge)
        && d < a
    {
        return Err(Refusal::new(
            Reason::DischargeBeforeAdmission,
            "encounters.discharge_date is before admission_date",
        ));
    }
    if !ENCOUNTER_KINDS.contains(&e.kind.as_str()) {
        return Err(Refusal::new(
            Reason::InvalidEncounterKind,
            "encounters.kind must be one of outpatient, inpatient, emergency, home, virtual",
        ));
    }
    max_len("encounters.department", &e.department, 64)
}

fn condition(c: &Condition, life: &Life) -> Result<(), Refusal> {
    if !is_icd10(&c.icd10) {
        return Err(Refusal::new(
            Reason::InvalidIcd10,
            "conditions.icd10 must be an ICD-10 code such as E11.9",
        ));
    }
    if !c.disease_master_id.is_empty() && !is_disease_master_id(&c.disease_master_id) {
        return Err(Refusal::new(
            Reason::InvalidDiseaseMasterId,
            "conditions.disease_master_id must be an 8-digit 病名管理番号 or a 4-character 交換用コード",
        ));
    }
    life.date("conditions.onset_date", &c.onset_date, false)?;
    Ok(())
}

fn medication(m: &Medication, life: &Life) -> Result<(), Refusal> {
    if !is_yj_code(&m.yj_code) {
        return Err(Refusal::new(
            Reason::InvalidYjCode,
            "medications.yj_code must be a 12-character YJ code",
        ));
    }
    life.date("medications.start_date", &m.start_date, true)?;
    if m.days > 365 {
        return Err(Refusal::new(
            Reason::ValueOutOfRange,
            "medications.days must be at most 365",
        ));
    }
    if !m.daily_dose.is_finite() || m.daily_dose < 0.0 || m.daily_dose > 100_000.0 {
        return Err(Refusal::new(
            Reason::ValueOutOfRange,
            "medications.daily_dose must be between 0 and 100000",
        ));
    }
    if (m.daily_dose > 0.0 || !m.dose_unit.is_empty()) && !unit_in(&m.dose_unit, DOSE_UNITS) {
        return Err(Refusal::new(
            Reason::InvalidUnit,
            "medications.dose_unit is not a known dose unit",
        ));
    }
    Ok(())
}

/// Plausible ranges for common analytes (JLAC10 analyte code → inclusive bounds); values outside are
/// almost certainly unit or keying errors.
const ANALYTE_RANGES: &[(&str, f64, f64)] = &[
    ("3D046", 2.0, 25.0),    // HbA1c (%)
    ("3D010", 10.0, 2000.0), // glucose (mg/dL)
    ("3F077", 1.0, 1000.0),  // LDL cholesterol (mg/dL)
    ("3F070", 1.0, 300.0),   // HDL cholesterol (mg/dL)
    ("3F015", 1.0, 10000.0), // triglycerides (mg/dL)
    ("3C015", 0.05, 40.0),   // creatinine (mg/dL)
    ("8A065", 0.0, 250.0),   // eGFR (mL/min/1.73m2)
    ("3B035", 0.0, 50000.0), // AST (U/L)
    ("3B045", 0.0, 50000.0), // ALT (U/L)
];

fn observation(o: &Observation, life: &Life) -> Result<(), Refusal> {
    if o.jlac10.is_empty() && o.jlac11.is_empty() {
        return Err(Refusal::new(
            Reason::MissingLabCode,
            "observations need a jlac10 or jlac11 code",
        ));
    }
    if !o.jlac10.is_empty() && !is_jlac10(&o.jlac10) {
        return Err(Refusal::new(
            Reason::InvalidJlac10,
            "observations.jlac10 must be 17 characters (analyte 5 + 4 + 3 + 3 + 2)",
        ));
    }
    if !o.jlac11.is_empty() && !is_jlac11(&o.jlac11) {
        return Err(Refusal::new(
            Reason::InvalidJlac11,
            "observations.jlac11 must be 17 upper-case alphanumerics",
        ));
    }
    life.date("observations.date", &o.date, true)?;
    max_len("observations.text_value", &o.text_value, 200)?;
    if !o.value.is_finite() || o.value.abs() > 1e9 {
        return Err(Refusal::new(
            Reason::ValueOutOfRange,
            "observations.value must be a finite number",
        ));
    }
    if !o.text_value.is_empty() && o.unit.is_empty() {
        return Ok(()); // qualitative result
    }
    if !unit_in(&o.unit, LAB_UNITS) {
        return Err(Refusal::new(
            Reason::InvalidUnit,
            "observations.unit is not a known laboratory unit",
        ));
    }
    if let Some(analyte) = o.jlac10.get(..5)
        && let Some((_, lo, hi)) = ANALYTE_RANGES.iter().find(|(a, _, _)| *a == analyte)
        && !(*lo..=*hi).contains(&o.value)
    {
        return Err(Refusal::new(
            Reason::ValueOutOfRange,
            "observations.value is outside the plausible range for its analyte",
        ));
    }
    Ok(())
}

fn allergy(a: &Allergy, life: &Life) -> Result<(), Refusal> {
    if !a.yj_code.is_empty() && !is_yj_code(&a.yj_code) {
        return Err(Refusal::new(
            Reason::InvalidYjCode,
            "allergies.yj_code must be a 12-character YJ code",
        ));
    }
    if a.yj_code.is_empty() && a.substance.trim().is_empty() {
        return Err(Refusal::new(
            Reason::InvalidYjCode,
            "allergies need a yj_code or a substance",
        ));
    }
    max_len("allergies.substance", &a.substance, 200)?;
    life.date("allergies.recorded_date", &a.recorded_date, false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert!(parse_date("2024-02-29").is_some());
        assert!(parse_date("2023-02-29").is_none());
        assert!(parse_date("2024-2-29").is_none());
        assert!(parse_date("2024/02/29").is_none());
        assert!(parse_date("２０２４-02-29").is_none());
    }

    #[test]
    fn municipality_check_digits() {
        assert!(municipality_code("131016").is_ok()); // 千代田区
        assert!(municipality_code("011002").is_ok()); // 札幌市
        assert!(municipality_code("271004").is_ok()); // 大阪市
        assert!(municipality_code("131017").is_err());
        assert!(municipality_code("481009").is_err()); // no prefecture 48
        assert!(municipality_code("13101").is_err());
    }

    #[test]
    fn codes() {
        for ok in ["E11.9", "I10", "E119", "U07.1", "C16.9", "S72.00"] {
            assert!(is_icd10(ok), "{ok}");
        }
        for bad in ["E1", "e11.9", "11.9", "E11.", "E11.12345", "E11-9"] {
            assert!(!is_icd10(bad), "{bad}");
        }
        assert!(is_yj_code("2171022F1022"));
        assert!(!is_yj_code("2171022F102"));
        assert!(!is_yj_code("217102AF1022"));
        assert!(is_jlac10("3D046000001920402"));
        assert!(!is_jlac10("3D04600000192040"));
        assert!(!is_jlac10("3d046000001920402"));
    }

    #[test]
    fn postal() {
        assert_eq!(postal_prefix("100-0001").unwrap(), "100");
        assert_eq!(postal_prefix("１００－０００１").unwrap(), "100");
        assert!(postal_prefix("1000-001").is_err());
        assert!(postal_prefix("100001").is_err());
    }

    #[test]
    fn units_are_normalised() {
        assert!(unit_in("µmol/L", LAB_UNITS)); // micro sign
        assert!(unit_in("ｍｇ/ｄＬ", LAB_UNITS));
        assert!(!unit_in("furlongs", LAB_UNITS));
    }
}
