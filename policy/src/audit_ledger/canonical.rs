//! The canonical encodings the ledger hashes and signs: one byte string per entry and per bundle summary,
//! defined independently of the database and of any JSON library, so an inspector can recompute them
//! from a bundle with a few lines of code in any language (the layout is specified in the module
//! documentation of [`crate::audit_ledger`]).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{PolicyError, Result};

/// Tag that starts every entry's canonical bytes: a hash computed for one structure can never be
/// mistaken for another's, and a future format gets a new tag instead of silently changing this one.
pub const ENTRY_TAG: &str = "tokumei/audit-entry/v1";

/// Tag that starts a bundle summary's canonical bytes (see [`crate::audit_ledger::InspectionBundle`]).
pub const BUNDLE_TAG: &str = "tokumei/audit-bundle/v1";

/// The largest integer JSON numbers may hold exactly as IEEE doubles (2^53): RFC 8785 treats every number
/// as a double, so larger integers would be silently rounded by any conforming verifier.
const MAX_SAFE_INTEGER: u64 = 1 << 53;

/// Accumulates length-prefixed fields: `u64` big-endian byte length, then the bytes. Lengths make the
/// encoding unambiguous (no separator can be forged inside a field).
#[derive(Default)]
pub(crate) struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new(tag: &str) -> Encoder {
        let mut e = Encoder::default();
        e.text(tag);
        e
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.bytes.extend_from_slice(&(s.len() as u64).to_be_bytes());
        self.bytes.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn int(&mut self, n: i64) {
        self.bytes.extend_from_slice(&n.to_be_bytes());
    }

    pub(crate) fn optional(&mut self, s: Option<&str>) {
        match s {
            None => self.bytes.push(0),
            Some(s) => {
                self.bytes.push(1);
                self.text(s);
            }
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Serialises a JSON value per RFC 8785 (JSON Canonicalization Scheme): no whitespace, object members
/// sorted by the UTF-16 code units of their names, strings escaped minimally, numbers written as
/// ECMAScript writes doubles.
///
/// Why JCS rather than `serde_json::to_string`: serde_json's output depends on its features
/// (`preserve_order` keeps insertion order) and, for floats, on its version; the ledger's hashes must
/// not change when a dependency does, and an inspector must be able to reproduce the text with an
/// off-the-shelf JCS library.
///
/// Integers beyond ±2^53 are refused rather than rounded: pass large identifiers as strings.
pub fn canonical_json(value: &Value) -> Result<String> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut String) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INTEGER {
                    return Err(unsafe_integer(n));
                }
                out.push_str(&u.to_string());
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(unsafe_integer(n));
                }
                out.push_str(&i.to_string());
            } else if let Some(f) = n.as_f64() {
                write_double(f, out)?;
            } else {
                return Err(PolicyError::Invalid(format!("audit details: unsupported number {n}")));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(name, out);
                out.push(':');
                write_value(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn unsafe_integer(n: &serde_json::Number) -> PolicyError {
    PolicyError::Invalid(format!(
        "audit details: integer {n} is beyond ±2^53 and cannot be represented exactly in canonical JSON; \
         record it as a string"
    ))
}

/// RFC 8785 §3.2.2.2: `"`, `\` and the C0 controls are escaped (`\b \t \n \f \r` by name, the others as
/// `\u00xx` in lower case); everything else, including non-ASCII, is written as is.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ECMAScript `Number.prototype.toString` for a finite double (RFC 8785 §3.2.2.3): the shortest digits
/// that round-trip, laid out without exponent for 1e-6 ≤ |x| < 1e21 and with one otherwise.
fn write_double(f: f64, out: &mut String) -> Result<()> {
    if !f.is_finite() {
        return Err(PolicyError::Invalid("audit details: numbers must be finite".to_owned()));
    }
    if f == 0.0 {
        out.push('0');
        return Ok(());
    }
    if f < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` prints the shortest round-tripping digits: `d[.ddd]e[-]x`.
    let formatted = format!("{:e}", f.abs());
    let (mantissa, exponent) = formatted
        .split_once('e')
        .ok_or_else(|| PolicyError::Invalid(format!("audit details: cannot format number {f}")))?;
    let exponent: i64 = exponent
        .parse()
        .map_err(|_| PolicyError::Invalid(format!("audit details: cannot format number {f}")))?;
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i64;
    // The value is 0.DIGITS × 10^n.
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jcs(v: Value) -> String {
        canonical_json(&v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn members_are_sorted_and_whitespace_dropped() {
        assert_eq!(
            jcs(json!({"b": [1, {"z": null, "a": true}], "a": "x", "": false})),
            r#"{"":false,"a":"x","b":[1,{"a":true,"z":null}]}"#
        );
        // UTF-16 order, not UTF-8: U+E000 (one unit 0xE000) sorts after U+1F600 (surrogates 0xD83D...).
        assert_eq!(
            jcs(json!({"\u{e000}": 1, "\u{1f600}": 2})),
            "{\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn strings_are_escaped_minimally() {
        assert_eq!(
            jcs(json!("q\"b\\\u{8}\t\n\u{c}\r\u{1}\u{1f}\u{7f}é日本")),
            "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\u{7f}é日本\""
        );
    }

    #[test]
    fn numbers_follow_ecmascript() {
        // The RFC 8785 appendix B samples that a double can express.
        let cases: [(f64, &str); 14] = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (100.0, "100"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (123.456e-10, "1.23456e-8"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (333_333_333.333_333_3, "333333333.3333333"),
        ];
        for (f, expected) in cases {
            assert_eq!(jcs(json!(f)), expected, "{f:e}");
        }
        assert_eq!(jcs(json!(9007199254740992u64)), "9007199254740992");
        assert_eq!(jcs(json!(-9007199254740992i64)), "-9007199254740992");
        assert!(canonical_json(&json!(9007199254740993u64)).is_err());
        assert!(canonical_json(&json!(i64::MIN)).is_err());
    }

    #[test]
    fn fields_are_length_prefixed() {
        let mut e = Encoder::new("t");
        e.int(-2);
        e.optional(None);
        e.optional(Some("ab"));
        assert_eq!(
            e.finish(),
            [
                &[0, 0, 0, 0, 0, 0, 0, 1, b't'][..],
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
                &[0],
                &[1, 0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b'],
            ]
            .concat()
        );
    }
}
