//! The My Number guard (個人番号): a My Number must never be used or stored.
//!
//! Twelve decimal digits whose last is the My Number check digit of the first eleven are a My Number, in
//! whatever form a hospital system writes them: digits of any script (Unicode general category Nd: ASCII,
//! full-width, mathematical, Arabic-Indic and every other decimal script), grouped by any run of
//! separators (Unicode whitespace, dash punctuation, the minus sign, dots, slashes, middle dots and the
//! prolonged sound mark, full- or half-width). Groups are never split: a 13-digit local id is not a
//! candidate, but twelve digits in whole groups inside a longer grouped run are ("1234 5678 9018 03").
//! The record carrying one is rejected with `MY_NUMBER_PRESENT` and its strings are overwritten in memory by
//! the caller; the value itself is never copied, logged or stored.
//!
//! The price of catching every form is false positives: any twelve grouped digits pass the check digit with
//! probability 1/11 (a date and a time written "2026/12/04 1030" among them). A record refused that way is
//! rejected, not stored — the safe side for a number the law forbids us to hold.

use crate::record_fields::{for_each_request_string_mut, for_each_string_mut};
use tokumei_proto::ingest::v1::{PatientRecord, PatientRequest};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The check digit that the My Number scheme assigns to eleven digits (most significant first).
pub fn check_digit(first11: &[u8; 11]) -> u8 {
    // P_n is the n-th digit counting from the right of the eleven; Q_n = n + 1 (n ≤ 6), n − 5 (n ≥ 7).
    let sum: u32 = (1..=11u32)
        .map(|n| {
            let p = u32::from(first11[11 - n as usize]);
            let q = if n <= 6 { n + 1 } else { n - 5 };
            p * q
        })
        .sum();
    let r = sum % 11;
    if r <= 1 { 0 } else { (11 - r) as u8 }
}

/// True when twelve digits form a valid My Number.
pub fn is_my_number(digits: &[u8; 12]) -> bool {
    let mut first = [0u8; 11];
    first.copy_from_slice(&digits[..11]);
    check_digit(&first) == digits[11]
}

/// What one character is to the guard.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Digit(u8),
    Separator,
    Other,
}

/// Classifies a character: a decimal digit of any script (general category Nd, whose digits come in runs
/// of ten from zero), a group separator, or anything else. Hot on every string of every record, so ASCII
/// and the kana and kanji blocks are decided without a table lookup.
fn classify(c: char) -> Class {
    if c.is_ascii() {
        return match c {
            '0'..='9' => Class::Digit(c as u8 - b'0'),
            '-' | '.' | '/' => Class::Separator,
            c if c.is_ascii_whitespace() => Class::Separator,
            _ => Class::Other,
        };
    }
    match c {
        // Separators: the minus sign, full-width dot and slash, prolonged sound marks, middle dots.
        '\u{2212}' | '\u{FF0E}' | '\u{FF0F}' | '\u{30FC}' | '\u{FF70}' | '\u{30FB}' | '\u{FF65}' | '\u{00B7}' => {
            return Class::Separator;
        }
        // Hiragana, katakana and CJK ideographs hold no digit and no separator.
        '\u{3041}'..='\u{30FF}' | '\u{4E00}'..='\u{9FFF}' => return Class::Other,
        _ => {}
    }
    if c.is_whitespace() {
        return Class::Separator;
    }
    match c.general_category() {
        GeneralCategory::DashPunctuation => Class::Separator,
        // Full-width and mathematical digits are Nd too: no normalisation is needed to read them.
        GeneralCategory::DecimalNumber => {
            let mut start = c as u32;
            while let Some(prev) = start.checked_sub(1).and_then(char::from_u32) {
                if prev.general_category() != GeneralCategory::DecimalNumber {
                    break;
                }
                start -= 1;
            }
            Class::Digit(((c as u32 - start) % 10) as u8)
        }
        _ => Class::Other,
    }
}

/// The longest grouped digit run examined, and the most groups; a longer run is examined in its first
/// part only (a run that long is a table of numbers, not an identifier field).
const MAX_RUN_DIGITS: usize = 256;
const MAX_GROUPS: usize = 64;

/// Digit groups of one run (digits joined by separator runs), examined when the run ends. Fixed-size, so
/// the guard allocates nothing.
struct Run {
    digits: [u8; MAX_RUN_DIGITS],
    len: usize,
    /// Start index (in `digits`) of each group.
    groups: [usize; MAX_GROUPS],
    group_count: usize,
}

impl Run {
    fn push(&mut self, d: u8, new_group: bool) {
        if self.len == MAX_RUN_DIGITS || (new_group && self.group_count == MAX_GROUPS) {
            return;
        }
        if new_group {
            self.groups[self.group_count] = self.len;
            self.group_count += 1;
        }
        self.digits[self.len] = d;
        self.len += 1;
    }

    /// Whether whole consecutive groups of the run hold exactly twelve digits forming a My Number; clears
    /// the run (and overwrites its digits).
    fn take(&mut self) -> bool {
        let mut found = false;
        if self.len >= 12 {
            let end = |g: usize| if g < self.group_count { self.groups[g] } else { self.len };
            for first in 0..self.group_count {
                for last in first + 1..=self.group_count {
                    let (from, to) = (self.groups[first], end(last));
                    if to - from > 12 {
                        break;
                    }
                    if to - from == 12 {
                        let mut twelve = [0u8; 12];
                        twelve.copy_from_slice(&self.digits[from..to]);
                        found |= is_my_number(&twelve);
                        twelve.fill(0);
                    }
                }
            }
        }
        self.digits[..self.len].fill(0);
        self.len = 0;
        self.group_count = 0;
        found
    }
}

/// True when `s` contains a My Number anywhere (see the module documentation for the forms).
pub fn contains_my_number(s: &str) -> bool {
    let mut run = Run {
        digits: [0; MAX_RUN_DIGITS],
        len: 0,
        groups: [0; MAX_GROUPS],
        group_count: 0,
    };
    let mut found = false;
    let mut after_digit = false;
    for c in s.chars() {
        match classify(c) {
            Class::Digit(d) => {
                run.push(d, !after_digit);
                after_digit = true;
            }
            Class::Separator if run.len > 0 => after_digit = false,
            _ => {
                if run.len > 0 {
                    found |= run.take();
                }
                after_digit = false;
            }
        }
    }
    if run.len > 0 {
        found |= run.take();
    }
    found
}

/// The fields of a record that hold a My Number (field paths only, never values).
pub fn fields_with_my_number(record: &mut PatientRecord) -> Vec<&'static str> {
    let mut hits = Vec::new();
    for_each_string_mut(record, |path, value| {
        if contains_my_number(value) {
            hits.push(path);
        }
    });
    hits
}

/// The fields of an opt-out/erase request that hold a My Number.
pub fn request_fields_with_my_number(req: &mut PatientRequest) -> Vec<&'static str> {
    let mut hits = Vec::new();
    for_each_request_string_mut(req, |path, value| {
        if contains_my_number(value) {
            hits.push(path);
        }
    });
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(s: &str) -> [u8; 12] {
        let mut d = [0u8; 12];
        for (i, c) in s.bytes().enumerate() {
            d[i] = c - b'0';
        }
        d
    }

    #[test]
    fn known_valid_number() {
        assert!(is_my_number(&digits("123456789018")));
        for wrong in 0..10u8 {
            if wrong != 8 {
                let mut d = digits("123456789018");
                d[11] = wrong;
                assert!(!is_my_number(&d));
            }
        }
    }

    #[test]
    fn detected_in_context_and_forms() {
        assert!(contains_my_number("123456789018"));
        assert!(contains_my_number("ID:123456789018 note"));
        assert!(contains_my_number("1234 5678 9018"));
        assert!(contains_my_number("1234-5678-9018"));
        assert!(contains_my_number("１２３４５６７８９０１８"));
        assert!(contains_my_number("メモ１２３４　５６７８　９０１８です"));
    }

    #[test]
    fn not_detected() {
        assert!(!contains_my_number("123456789017")); // wrong check digit
        assert!(!contains_my_number("1234567890180")); // 13 digits: not a 12-digit run
        assert!(!contains_my_number("12345678901")); // 11 digits
        assert!(!contains_my_number("3D046000001920402")); // JLAC10
        assert!(!contains_my_number(""));
    }

    /// The forms a hospital vendor's client sent that the first guard missed.
    #[test]
    fn detected_in_every_form_the_vendor_found() {
        for form in [
            "1234\t5678\t9018",
            "1234\u{00A0}5678\u{00A0}9018",
            "1234.5678.9018",
            "1234/5678/9018",
            "1234\u{2013}5678\u{2013}9018",
            "1234\u{2212}5678\u{2212}9018",
            "1234\u{FF70}5678\u{FF70}9018",
            "1234  5678  9018",
            "\u{0661}\u{0662}\u{0663}\u{0664}\u{0665}\u{0666}\u{0667}\u{0668}\u{0669}\u{0660}\u{0661}\u{0668}",
            "\u{1D7CF}\u{1D7D0}\u{1D7D1}\u{1D7D2}\u{1D7D3}\u{1D7D4}\u{1D7D5}\u{1D7D6}\u{1D7D7}\u{1D7CE}\u{1D7CF}\u{1D7D6}",
            "tel 1234 5678 9018 03",
        ] {
            assert!(contains_my_number(form), "{:?}", form.escape_unicode().to_string());
        }
    }

    #[test]
    fn groups_are_never_split() {
        assert!(!contains_my_number("1234567890180 1")); // a 13-digit id next to a digit
        assert!(contains_my_number("12 3456789018")); // twelve digits in whole groups of 2 and 10
        assert!(!contains_my_number("123 456789017 7")); // 3 + 9 = 12 digits, but a wrong check digit
    }

    /// Zero of digit scripts a client may send: ASCII, full-width, Arabic-Indic, extended Arabic-Indic,
    /// Devanagari, Bengali, Thai, mathematical bold and double-struck.
    const ZEROS: [u32; 9] = [0x30, 0xFF10, 0x660, 0x6F0, 0x966, 0x9E6, 0xE50, 0x1D7CE, 0x1D7D8];
    const SEPARATORS: [char; 17] = [
        ' ', '\t', '\u{A0}', '\u{3000}', '-', '－', '‐', '–', '—', '−', '.', '．', '/', '／', 'ー', 'ｰ', '・',
    ];

    /// Twelve digits in random scripts, cut into random groups joined by random separator runs, in text.
    fn written(digits: &[u8; 12], scripts: &[usize], cuts: &[bool], seps: &[Vec<usize>], text: (&str, &str)) -> String {
        let mut out = String::from(text.0);
        for (i, &d) in digits.iter().enumerate() {
            out.push(char::from_u32(ZEROS[scripts[i] % ZEROS.len()] + u32::from(d)).expect("digit"));
            if i < 11 && cuts[i] {
                for &k in &seps[i] {
                    out.push(SEPARATORS[k % SEPARATORS.len()]);
                }
            }
        }
        out.push_str(text.1);
        out
    }

    proptest::proptest! {
        #[test]
        fn every_form_is_caught_and_a_wrong_check_digit_is_not(
            first in proptest::array::uniform11(0u8..10),
            wrong in 1u8..10,
            scripts in proptest::collection::vec(0usize..9, 12),
            cuts in proptest::collection::vec(proptest::bool::weighted(0.3), 11),
            seps in proptest::collection::vec(proptest::collection::vec(0usize..17, 1..4), 11),
            text in proptest::sample::select(vec![("", ""), ("患者メモ：", "です"), ("ID ", " / tel"), ("(", ")")]),
        ) {
            let mut digits = [0u8; 12];
            digits[..11].copy_from_slice(&first);
            digits[11] = check_digit(&first);
            proptest::prop_assert!(contains_my_number(&written(&digits, &scripts, &cuts, &seps, text)));
            digits[11] = (digits[11] + wrong) % 10;
            proptest::prop_assert!(!contains_my_number(&written(&digits, &scripts, &cuts, &seps, text)));
        }
    }

    #[test]
    fn every_remainder_maps_to_a_digit() {
        // Exhaustive over a spread of prefixes: the check digit is always 0..=9.
        for x in 0..100_000u64 {
            let n = x * 1_000_003 % 100_000_000_000;
            let s = format!("{n:011}");
            let mut d = [0u8; 11];
            for (i, c) in s.bytes().enumerate() {
                d[i] = c - b'0';
            }
            assert!(check_digit(&d) <= 9);
        }
    }
}
