//! The pseudonym carrier: every recipient's copy of a release carries its own pseudonyms, so any row of a
//! leaked file that keeps its pseudonym names the copy it came from — whatever was done to the values.
//!
//! Why: marks in measured values are erased by the cheapest edit (rounding to one decimal, ±1 unit of
//! noise), and a release's pseudonyms are random strings whose only use is to join a patient's rows across
//! the release's files. Giving each recipient a different, equally random set costs no utility (joins within
//! a copy are unchanged, the privacy model is re-verified on every copy) and survives every edit of values,
//! codes and dates, row sampling, shuffling and format conversion. A leaker removes it only by dropping the
//! pseudonyms (the files no longer join) or by replacing them consistently in every file — the value marks
//! ([`super::embed`]) remain for that case, and `docs/release.md` says which attacks each carrier survives.
//!
//! # Scheme
//!
//! A release pseudonym is 128 bits (32 hex). Recipient r's pseudonym of a patient whose release pseudonym
//! starts with the 80-bit `id` is AES-128 under K_r of `id ‖ tag(id)`, where `tag` is 48 bits of AES-128
//! under K_tag, and K_r, K_tag are HMAC-SHA-256 derivations of the release's [`FingerprintKey`]
//! (domain-separated, K_r per recipient). So:
//! - without the key the copies' pseudonyms are unrelated random strings (a PRP of distinct inputs);
//! - with it, the tracer decrypts a leaked pseudonym under every recipient's K_r and checks the tag, with no
//!   list of pseudonyms to keep;
//! - two release pseudonyms sharing their first 80 bits would merge two patients: the builder refuses such a
//!   copy (probability about n²/2⁸¹ for n patients, 4·10⁻¹³ at a million).
//!
//! # False accusation
//!
//! An innocent recipient's K_r is independent of the leaked copy's, so each distinct leaked pseudonym
//! decrypts under K_r to a uniformly random block (without replacement), which passes the tag check with
//! probability at most p = 2⁸⁰ / (2¹²⁸ − N) for N distinct values read: the number of matches M is dominated
//! by a Binomial(N, p) and P(M ≥ m) ≤ C(N, m)·pᵐ (union bound over m-subsets). A recipient is accused when
//! that bound times the number of candidates is at most the carrier's share of the false-accusation bound —
//! with N = 10⁵ and 10 candidates, one matching pseudonym is enough for 10⁻⁶.

use std::collections::{HashMap, HashSet};

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::cells::Cells;
use super::{FingerprintError, FingerprintKey};

/// The column every release file carries its pseudonyms in.
pub const PSEUDONYM_COLUMN: &str = crate::catalogue::PSEUDONYM;

const RECIPIENT: &[u8] = b"tokumei/fingerprint/v1/pseudonym/recipient";
const TAG: &[u8] = b"tokumei/fingerprint/v1/pseudonym/tag";

/// Bytes of a release pseudonym kept as the patient's id in a recipient's pseudonym (80 bits).
const ID_BYTES: usize = 10;

/// log2 of the number of blocks that pass the tag check (one tag per 80-bit id).
const PASSING_BITS: i32 = 80;

fn derive(key: &FingerprintKey, label: &[u8], recipient: Option<&str>) -> Aes128 {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(&(label.len() as u32).to_le_bytes());
    mac.update(label);
    if let Some(r) = recipient {
        mac.update(&(r.len() as u32).to_le_bytes());
        mac.update(r.as_bytes());
    }
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
    Aes128::new_from_slice(&out[..]).unwrap_or_else(|_| unreachable!("16 bytes are an AES-128 key"))
}

fn tag(cipher: &Aes128, id: &[u8]) -> [u8; 6] {
    let mut block = [0u8; 16];
    block[..ID_BYTES].copy_from_slice(id);
    let mut block = aes::Block::from(block);
    cipher.encrypt_block(&mut block);
    let mut out = [0u8; 6];
    out.copy_from_slice(&block[..6]);
    out
}

fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

/// One recipient's pseudonym map, used by the builder on that recipient's copy.
pub struct RecipientPseudonyms {
    recipient: Aes128,
    tag: Aes128,
}

impl std::fmt::Debug for RecipientPseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecipientPseudonyms(<redacted>)")
    }
}

impl RecipientPseudonyms {
    /// The map of `recipient` under the release's fingerprint key.
    pub fn new(key: &FingerprintKey, recipient: &str) -> RecipientPseudonyms {
        RecipientPseudonyms {
            recipient: derive(key, RECIPIENT, Some(recipient)),
            tag: derive(key, TAG, None),
        }
    }

    /// The recipient's pseudonym (32 hex) for a release pseudonym (32 hex). Errors never echo the value.
    pub fn pseudonym(&self, release_pseudonym: &str) -> Result<String, FingerprintError> {
        let base = parse_hex16(release_pseudonym)
            .ok_or_else(|| FingerprintError::Sheet(format!("a {PSEUDONYM_COLUMN} cell is not 32 hex digits")))?;
        let id = &base[..ID_BYTES];
        let mut block = [0u8; 16];
        block[..ID_BYTES].copy_from_slice(id);
        block[ID_BYTES..].copy_from_slice(&tag(&self.tag, id));
        let mut block = aes::Block::from(block);
        self.recipient.encrypt_block(&mut block);
        Ok(hex::encode(block))
    }

    /// Rewrites a copy's pseudonym cells in place, refusing a copy that would merge two patients.
    pub fn rewrite(&self, cells: &mut [String]) -> Result<(), FingerprintError> {
        // A patient's rows share one pseudonym: each is mapped once.
        let mut mapped: HashMap<String, String> = HashMap::new();
        for cell in cells.iter_mut() {
            let out = match mapped.get(cell.as_str()) {
                Some(out) => out.clone(),
                None => {
                    let out = self.pseudonym(cell)?;
                    mapped.insert(std::mem::take(cell), out.clone());
                    out
                }
            };
            *cell = out;
        }
        let images: HashSet<&String> = mapped.values().collect();
        if images.len() != mapped.len() {
            return Err(FingerprintError::Sheet(format!(
                "two of {} release pseudonyms share their first {} bits; the copy would merge patients",
                mapped.len(),
                ID_BYTES * 8
            )));
        }
        Ok(())
    }
}

/// One candidate's matches on the pseudonym carrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PseudonymMatch {
    /// The recipient.
    pub recipient: String,
    /// Distinct pseudonyms of the file that are this recipient's.
    pub matches: usize,
    /// log10 of the bound on the probability that an innocent recipient matches this many.
    pub log10_p_innocent: f64,
    /// Whether the candidate is accused on this carrier.
    pub accused: bool,
}

/// What the pseudonym carrier says about a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PseudonymVerdict {
    /// Whether the file has a pseudonym column at all.
    pub column_present: bool,
    /// Distinct non-empty cells of that column.
    pub distinct_read: usize,
    /// Of those, cells that are 32 hex digits (the others cannot be any recipient's).
    pub well_formed: usize,
    /// Distinct cells that are no candidate's (replaced, or from a copy of someone not listed).
    pub unmatched: usize,
    /// Every candidate, most matches first.
    pub candidates: Vec<PseudonymMatch>,
    /// The accused, most matches first.
    pub accused: Vec<String>,
    /// The carrier's share of the false-accusation bound.
    pub bound: f64,
}

/// ln of the bound on P(M ≥ m) for M ~ Binomial(n, p): ln C(n, m) + m·ln p (0 for m = 0).
pub(crate) fn ln_tail(n: usize, m: usize, ln_p: f64) -> f64 {
    if m == 0 {
        return 0.0;
    }
    if m > n {
        return f64::NEG_INFINITY;
    }
    let ln_choose: f64 = (0..m).map(|i| ((n - i) as f64 / (i + 1) as f64).ln()).sum();
    (ln_choose + m as f64 * ln_p).min(0.0)
}

/// Reads the pseudonym column of `cells` and scores every candidate (see the module documentation).
pub fn trace_pseudonyms<C: Cells + ?Sized>(
    key: &FingerprintKey,
    cells: &C,
    candidates: &[String],
    bound: f64,
) -> PseudonymVerdict {
    let mut distinct: HashSet<[u8; 16]> = HashSet::new();
    let mut distinct_read = 0usize;
    let column = cells.column_index(PSEUDONYM_COLUMN);
    if let Some(c) = column {
        let mut seen: HashSet<&str> = HashSet::new();
        for row in 0..cells.rows() {
            let text = cells.cell(row, c).trim();
            if !text.is_empty() && seen.insert(text) {
                distinct_read += 1;
                if let Some(block) = parse_hex16(text) {
                    distinct.insert(block);
                }
            }
        }
    }
    let n = distinct.len();
    // p = 2^80 / (2^128 − N), in logs.
    let ln_p = f64::from(PASSING_BITS - 128) * std::f64::consts::LN_2 - (1.0 - n as f64 * 2f64.powi(-128)).ln();
    let ln_budget = if bound.is_finite() && bound > 0.0 && bound <= 1.0 {
        bound.ln() - (candidates.len().max(1) as f64).ln()
    } else {
        f64::NEG_INFINITY
    };
    let tagger = derive(key, TAG, None);
    let mut matched_any: HashSet<[u8; 16]> = HashSet::new();
    let mut scored: Vec<PseudonymMatch> = candidates
        .iter()
        .map(|recipient| {
            let cipher = derive(key, RECIPIENT, Some(recipient));
            let mut matches = 0usize;
            for block in &distinct {
                let mut b = aes::Block::from(*block);
                cipher.decrypt_block(&mut b);
                if b[ID_BYTES..] == tag(&tagger, &b[..ID_BYTES]) {
                    matches += 1;
                    matched_any.insert(*block);
                }
            }
            let ln = ln_tail(n, matches, ln_p);
            PseudonymMatch {
                recipient: recipient.clone(),
                matches,
                log10_p_innocent: ln / std::f64::consts::LN_10,
                accused: matches > 0 && ln <= ln_budget,
            }
        })
        .collect();
    scored.sort_by(|a, b| b.matches.cmp(&a.matches).then_with(|| a.recipient.cmp(&b.recipient)));
    PseudonymVerdict {
        column_present: column.is_some(),
        distinct_read,
        well_formed: n,
        unmatched: n - matched_any.len(),
        accused: scored
            .iter()
            .filter(|c| c.accused)
            .map(|c| c.recipient.clone())
            .collect(),
        candidates: scored,
        bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Sheet;
    use rand::{Rng, SeedableRng};

    fn key(seed: u8) -> FingerprintKey {
        FingerprintKey::from_bytes([seed; 32])
    }

    fn release_pseudonyms(n: usize, seed: u64) -> Vec<String> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| hex::encode(rng.random::<[u8; 16]>())).collect()
    }

    fn copy(key: &FingerprintKey, recipient: &str, base: &[String]) -> Vec<String> {
        let mut cells = base.to_vec();
        RecipientPseudonyms::new(key, recipient).rewrite(&mut cells).unwrap();
        cells
    }

    fn sheet(cells: &[String]) -> Sheet {
        Sheet::new(vec![PSEUDONYM_COLUMN.into()], vec![cells.to_vec()]).unwrap()
    }

    fn candidates(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn copies_share_no_pseudonym_and_keep_every_join() {
        let k = key(1);
        let mut base = release_pseudonyms(5_000, 1);
        base.extend(base[..1_000].to_vec()); // patients with several rows
        let (a, b) = (copy(&k, "r0", &base), copy(&k, "r1", &base));
        let set = |c: &[String]| c.iter().cloned().collect::<HashSet<_>>();
        assert_eq!(set(&a).len(), 5_000);
        assert_eq!(set(&a).intersection(&set(&b)).count(), 0);
        assert_eq!(set(&a).intersection(&set(&base)).count(), 0);
        // Rows of one patient still join: equal release pseudonyms map to equal recipient pseudonyms.
        for i in 0..1_000 {
            assert_eq!(a[i], a[5_000 + i]);
        }
        assert!(
            a.iter()
                .all(|p| p.len() == 32 && p.bytes().all(|c| c.is_ascii_hexdigit()))
        );
        assert_eq!(copy(&k, "r0", &base), a, "deterministic under the release key");
        assert_ne!(
            copy(&key(2), "r0", &base),
            a,
            "another release's key gives other pseudonyms"
        );
    }

    #[test]
    fn one_leaked_row_names_its_copy_and_no_one_else() {
        let k = key(3);
        let base = release_pseudonyms(2_000, 3);
        let who = candidates(10);
        let leaked = copy(&k, "r4", &base);
        let v = trace_pseudonyms(&k, &sheet(&leaked[..1]), &who, 1e-6);
        assert_eq!(v.accused, ["r4"], "{v:?}");
        assert_eq!(v.candidates[0].matches, 1);
        assert!(v.candidates[1..].iter().all(|c| c.matches == 0));
        let v = trace_pseudonyms(&k, &sheet(&leaked), &who, 1e-6);
        assert_eq!(
            (v.accused.as_slice(), v.unmatched, v.well_formed),
            (&["r4".to_owned()][..], 0, 2_000)
        );
        // Upper case, spaces (a spreadsheet's re-encoding) read the same.
        let shouted: Vec<String> = leaked[..5].iter().map(|p| format!(" {} ", p.to_uppercase())).collect();
        assert_eq!(trace_pseudonyms(&k, &sheet(&shouted), &who, 1e-6).accused, ["r4"]);
    }

    #[test]
    fn colluders_mixing_rows_are_all_named() {
        let k = key(4);
        let base = release_pseudonyms(3_000, 4);
        let who = candidates(10);
        let (a, b, c) = (copy(&k, "r1", &base), copy(&k, "r2", &base), copy(&k, "r7", &base));
        let mixed: Vec<String> = (0..300).map(|i| [&a, &b, &c][i % 3][i].clone()).collect();
        let mut accused = trace_pseudonyms(&k, &sheet(&mixed), &who, 1e-6).accused;
        accused.sort();
        assert_eq!(accused, ["r1", "r2", "r7"]);
    }

    #[test]
    fn innocents_are_not_accused_by_other_copies_replacements_or_other_releases() {
        let k = key(5);
        let base = release_pseudonyms(20_000, 5);
        let who = candidates(10);
        // A copy of someone who is not a candidate, release pseudonyms themselves, fresh random ids, another
        // release's copy: 80,000 distinct values, none anyone's.
        let mut leaked = copy(&k, "outsider", &base);
        leaked.extend(base.iter().cloned());
        leaked.extend(release_pseudonyms(20_000, 99));
        leaked.extend(copy(&key(6), "r0", &base));
        let v = trace_pseudonyms(&k, &sheet(&leaked), &who, 1e-6);
        assert!(v.accused.is_empty(), "{v:?}");
        assert_eq!(v.unmatched, 80_000);
        assert!(v.candidates.iter().all(|c| c.matches == 0));
        // Not hex at all: read, never anyone's.
        let words: Vec<String> = (0..100).map(|i| format!("patient-{i}")).collect();
        let v = trace_pseudonyms(&k, &sheet(&words), &who, 1e-6);
        assert_eq!((v.distinct_read, v.well_formed, v.accused.len()), (100, 0, 0));
    }

    #[test]
    fn the_tail_bound_is_above_the_exact_binomial_tail() {
        // Exact P(M ≥ m) for small n and a large p, against the bound.
        for &(n, p) in &[(10usize, 0.1f64), (30, 0.02), (50, 0.3)] {
            let pmf = |k: usize| -> f64 {
                let choose: f64 = (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product();
                choose * p.powi(k as i32) * (1.0 - p).powi((n - k) as i32)
            };
            for m in 0..=n {
                let exact: f64 = (m..=n).map(pmf).sum();
                let bound = ln_tail(n, m, p.ln()).exp();
                assert!(bound >= exact * (1.0 - 1e-12), "n {n} p {p} m {m}: {bound} < {exact}");
            }
        }
        assert_eq!(ln_tail(5, 6, -1.0), f64::NEG_INFINITY);
        assert_eq!(ln_tail(5, 0, -1.0), 0.0);
    }

    #[test]
    fn errors_name_the_column_never_a_cell() {
        let k = key(7);
        let mut cells = vec!["not-a-pseudonym-secret-value".to_owned()];
        let err = RecipientPseudonyms::new(&k, "r0")
            .rewrite(&mut cells)
            .unwrap_err()
            .to_string();
        assert!(err.contains(PSEUDONYM_COLUMN) && !err.contains("secret"), "{err}");
        // Two release pseudonyms equal in their first 80 bits would merge two patients: refused.
        let mut cells = vec![
            format!("{}{}", "ab".repeat(10), "0".repeat(12)),
            format!("{}{}", "ab".repeat(10), "1".repeat(12)),
        ];
        let err = RecipientPseudonyms::new(&k, "r0")
            .rewrite(&mut cells)
            .unwrap_err()
            .to_string();
        assert!(err.contains("merge"), "{err}");
        assert_eq!(
            format!("{:?}", RecipientPseudonyms::new(&k, "r0")),
            "RecipientPseudonyms(<redacted>)"
        );
    }
}
