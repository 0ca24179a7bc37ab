//! The My Number guard (個人番号): a My Number must never be used or stored.
//!
//! Any run of 12 digits (ASCII or full-width, optionally grouped 4-4-4 by single spaces or hyphens) whose last
//! digit is the My Number check digit of the first eleven is treated as a My Number. The record carrying it is
//! rejected with `MY_NUMBER_PRESENT` and its strings are overwritten in memory by the caller; the value itself is
//! never copied, logged or stored.

use crate::record_fields::{for_each_request_string_mut, for_each_string_mut};
use tokumei_proto::ingest::v1::{PatientRecord, PatientRequest};

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

fn digit_value(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '０'..='９' => Some((c as u32 - '０' as u32) as u8),
        _ => None,
    }
}

fn is_group_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '\u{3000}' | '－' | 'ー' | '‐')
}

/// True when `s` contains a My Number anywhere.
///
/// Digits are collected into runs; a single separator between digits keeps the run going (so "1234 5678 9018"
/// is one run of twelve), anything else ends it. Only runs of exactly twelve digits are candidates, so long
/// numeric ids (e.g. 13-digit local ids) are not mistaken for one.
pub fn contains_my_number(s: &str) -> bool {
    let mut run = [0u8; 12];
    let mut len = 0usize; // digits in the current run (saturating past 12)
    let mut pending_sep = false;
    let check = |run: &[u8; 12], len: usize| len == 12 && is_my_number(run);
    for c in s.chars() {
        if let Some(d) = digit_value(c) {
            if len < 12 {
                run[len] = d;
            }
            len = len.saturating_add(1);
            pending_sep = false;
        } else if is_group_separator(c) && len > 0 && !pending_sep {
            pending_sep = true;
        } else {
            if check(&run, len) {
                run.fill(0);
                return true;
            }
            len = 0;
            pending_sep = false;
        }
    }
    let found = check(&run, len);
    run.fill(0);
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
        assert!(!contains_my_number("1234  5678 9018")); // double separator breaks the run
        assert!(!contains_my_number(""));
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
