//! Canonical forms of the identities that linkage keys are computed over.
//!
//! Two hospitals must derive the same linkage key for the same person even when one sends half-width kana or
//! full-width digits and the other does not, so every identity is NFKC-normalised, trimmed, stripped of spaces,
//! and (for names) folded to full-width katakana with small kana enlarged. Each canonical form starts with a
//! domain tag so that an insured identity can never collide with an ID4 identity or a local id.
//!
//! The canonical strings are identifiers: they live in [`Zeroizing`] buffers and are wiped when dropped.

use crate::reason::{Reason, Refusal};
use tokumei_proto::ingest::v1::{Insurance, Sex};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// Pushes the NFKC form of `s` into `out`, without whitespace.
fn push_compact_nfkc(s: &str, out: &mut String) {
    // Identity fields are usually ASCII digits and letters already in NFKC: skip the normaliser then.
    if s.is_ascii() {
        out.extend(s.chars().filter(|c| !c.is_whitespace()));
        return;
    }
    for c in s.nfkc() {
        if !c.is_whitespace() {
            out.push(c);
        }
    }
}

fn compact_nfkc(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len()));
    push_compact_nfkc(s, &mut out);
    out
}

/// True when the insurance message carries anything at all (an empty message counts as absent).
pub fn insurance_present(ins: Option<&Insurance>) -> bool {
    ins.is_some_and(|i| {
        !(i.insurer_number.trim().is_empty()
            && i.symbol.trim().is_empty()
            && i.number.trim().is_empty()
            && i.branch.trim().is_empty())
    })
}

/// The canonical insured identity: `INS|insurer|symbol|number|branch`.
///
/// The insurer number is 6 (国民健康保険) or 8 digits; the branch (枝番) is 2 digits; the number is required;
/// the symbol (記号) may be empty. Letters are upper-cased so `ab12` and `ＡＢ１２` agree.
pub fn insured_identity(ins: &Insurance) -> Result<Zeroizing<String>, Refusal> {
    let insurer = compact_nfkc(&ins.insurer_number);
    if !(insurer.len() == 6 || insurer.len() == 8) || !insurer.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::new(
            Reason::InvalidInsurance,
            "insurance.insurer_number must be 6 or 8 digits",
        ));
    }
    let symbol = compact_nfkc(&ins.symbol);
    let number = compact_nfkc(&ins.number);
    if number.is_empty() {
        return Err(Refusal::new(Reason::InvalidInsurance, "insurance.number is required"));
    }
    if symbol.chars().count() > 20 || number.chars().count() > 20 {
        return Err(Refusal::new(
            Reason::InvalidInsurance,
            "insurance.symbol and insurance.number are at most 20 characters",
        ));
    }
    let branch = compact_nfkc(&ins.branch);
    if branch.len() != 2 || !branch.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::new(
            Reason::InvalidInsurance,
            "insurance.branch must be 2 digits",
        ));
    }
    let mut out = Zeroizing::new(String::with_capacity(64));
    out.push_str("INS|");
    out.push_str(&insurer);
    out.push('|');
    out.extend(symbol.chars().map(|c| c.to_ascii_uppercase()));
    out.push('|');
    out.extend(number.chars().map(|c| c.to_ascii_uppercase()));
    out.push('|');
    out.push_str(&branch);
    Ok(out)
}

/// Small kana are enlarged: hospitals differ in whether they store ャ or ヤ in names.
fn enlarge_small_kana(c: char) -> char {
    match c {
        'ァ' => 'ア',
        'ィ' => 'イ',
        'ゥ' => 'ウ',
        'ェ' => 'エ',
        'ォ' => 'オ',
        'ッ' => 'ツ',
        'ャ' => 'ヤ',
        'ュ' => 'ユ',
        'ョ' => 'ヨ',
        'ヮ' => 'ワ',
        'ヵ' => 'カ',
        'ヶ' => 'ケ',
        other => other,
    }
}

/// The canonical kana name: NFKC (half-width → full-width), hiragana → katakana, small kana enlarged,
/// spaces and middle dots removed. Anything that is not katakana afterwards is refused.
pub fn kana_name(s: &str) -> Result<Zeroizing<String>, Refusal> {
    let mut out = Zeroizing::new(String::with_capacity(s.len()));
    for c in s.nfkc() {
        if c.is_whitespace() || c == '・' || c == '･' {
            continue;
        }
        let c = match c {
            // Hiragana ぁ..ゖ map to katakana ァ..ヶ by a fixed offset.
            '\u{3041}'..='\u{3096}' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
            _ => c,
        };
        let c = enlarge_small_kana(c);
        if !matches!(c, '\u{30A1}'..='\u{30FA}' | 'ー') {
            out.clear();
            return Err(Refusal::new(
                Reason::InvalidKanaName,
                "kana_name must be written in kana",
            ));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(Refusal::new(Reason::MissingIdentity, "kana_name is empty"));
    }
    if out.chars().count() > 64 {
        return Err(Refusal::new(
            Reason::FieldTooLong,
            "kana_name is longer than 64 characters",
        ));
    }
    Ok(out)
}

/// The canonical ID4 identity: `ID4|kana|birth_date|sex` (birth date already validated as `YYYY-MM-DD`).
pub fn id4_identity(kana: &str, birth_date: &str, sex: Sex) -> Result<Zeroizing<String>, Refusal> {
    let sex_code = match sex {
        Sex::Male => "1",
        Sex::Female => "2",
        Sex::Other => "3",
        Sex::Unspecified => {
            return Err(Refusal::new(
                Reason::MissingIdentity,
                "without insurance, kana_name + birth_date + sex are required (sex is unspecified)",
            ));
        }
    };
    let kana = kana_name(kana)?;
    let mut out = Zeroizing::new(String::with_capacity(kana.len() + 20));
    out.push_str("ID4|");
    out.push_str(&kana);
    out.push('|');
    out.push_str(birth_date.trim());
    out.push('|');
    out.push_str(sex_code);
    Ok(out)
}

/// The canonical local identity: `HOSP|hospital_code|local_patient_id`.
pub fn local_identity(hospital_code: &str, local_patient_id: &str) -> Result<Zeroizing<String>, Refusal> {
    let local = compact_nfkc(local_patient_id);
    if local.is_empty() {
        return Err(Refusal::new(Reason::MissingLocalId, "local_patient_id is required"));
    }
    if local.chars().count() > 64 {
        return Err(Refusal::new(
            Reason::FieldTooLong,
            "local_patient_id is longer than 64 characters",
        ));
    }
    let mut out = Zeroizing::new(String::with_capacity(local.len() + 20));
    out.push_str("HOSP|");
    out.push_str(hospital_code);
    out.push('|');
    out.push_str(&local);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(a: &str, b: &str, c: &str, d: &str) -> Insurance {
        Insurance {
            insurer_number: a.into(),
            symbol: b.into(),
            number: c.into(),
            branch: d.into(),
        }
    }

    #[test]
    fn insured_identity_is_width_and_space_insensitive() {
        let a = insured_identity(&ins("06135018", "ab12", "345", "01")).unwrap();
        let b = insured_identity(&ins(" ０６１３５０１８ ", "ＡＢ１２", "３４５ ", "０１")).unwrap();
        assert_eq!(*a, *b);
        assert_eq!(a.as_str(), "INS|06135018|AB12|345|01");
    }

    #[test]
    fn insured_identity_rejects_malformed() {
        assert_eq!(
            insured_identity(&ins("0613501", "", "1", "01")).unwrap_err().reason,
            Reason::InvalidInsurance
        );
        assert_eq!(
            insured_identity(&ins("06135018", "", "", "01")).unwrap_err().reason,
            Reason::InvalidInsurance
        );
        assert_eq!(
            insured_identity(&ins("06135018", "", "1", "1")).unwrap_err().reason,
            Reason::InvalidInsurance
        );
        assert!(insured_identity(&ins("138057", "", "1", "00")).is_ok());
    }

    #[test]
    fn kana_forms_agree() {
        let full = kana_name("ヤマダ　タロウ").unwrap();
        let half = kana_name("ﾔﾏﾀﾞ ﾀﾛｳ").unwrap();
        let hira = kana_name("やまだ たろう").unwrap();
        assert_eq!(*full, *half);
        assert_eq!(*full, *hira);
        assert_eq!(*kana_name("キョウコ").unwrap(), *kana_name("キヨウコ").unwrap());
        assert_eq!(kana_name("山田").unwrap_err().reason, Reason::InvalidKanaName);
        assert_eq!(kana_name("Yamada").unwrap_err().reason, Reason::InvalidKanaName);
        assert_eq!(kana_name("  ").unwrap_err().reason, Reason::MissingIdentity);
    }

    #[test]
    fn id4_needs_sex() {
        assert!(id4_identity("ヤマダ", "1950-01-01", Sex::Unspecified).is_err());
        assert_eq!(
            id4_identity("ヤマダ", "1950-01-01", Sex::Female).unwrap().as_str(),
            "ID4|ヤマダ|1950-01-01|2"
        );
    }
}
