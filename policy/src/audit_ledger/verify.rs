//! Verification: walk a chain (from the database or from a bundle), recompute every hash, follow every
//! link, check every signature, and name the first entry that is wrong.
//!
//! Verification stops at the first bad entry: everything after it hangs off a broken chain, so only the
//! first one says where the tampering is. It never stops silently — the report says which entry and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::bundle::{InspectionBundle, bundle_summary_bytes};
use super::canonical::BUNDLE_TAG;
use super::{AuditEntry, AuditLedger, LedgerHead, entry_from_row, entry_hash, fetch_head, fetch_page};
use crate::database::PolicyDb;
use crate::error::Result;
use crate::service_key::{ServiceKey, ServicePublicKey, SignaturePurpose};

/// What is wrong with the first bad entry. Each problem says what tampering it usually means, so the
/// person reading the report knows where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The stored fields do not hash to the stored hash: the entry was edited (or swapped with another).
    HashMismatch,
    /// The entry's `prev_hash` is not the previous entry's hash: an entry before it was removed, inserted
    /// or moved.
    BrokenLink,
    /// A sequence number is missing before this entry: an entry was removed.
    SequenceGap,
    /// A sequence number at or below the previous one (or below 1): an entry was duplicated, reordered or
    /// forged.
    OutOfOrder,
    /// The signature does not verify under the key the entry names: the entry was re-hashed and signed by
    /// someone without the service key.
    BadSignature,
    /// The entry names a key the verifier does not trust.
    UnknownKey,
    /// The entry is signed by a trusted key that is not the one in force at its place in the chain: a key the
    /// ledger's rotation retired (a leaked key signing after its rotation), or one no rotation entry handed over
    /// to.
    KeyNotInForce,
    /// The entry's time is earlier than its predecessor's, which append never produces.
    TimeReversed,
    /// A field cannot even be read (wrong type, bundle in an unknown format).
    Malformed,
    /// The chain ends before the recorded head or the bundle's signed end: the newest entries were
    /// removed.
    Truncated,
    /// The head row disagrees with the chain: edited, or an entry was written past it outside the ledger.
    HeadMismatch,
    /// The bundle's summary (window, anchor, end, head) is not signed by the key: the bundle was edited.
    BundleSignature,
}

impl Problem {
    /// The short description printed by `tokumei audit verify`.
    pub fn description(self) -> &'static str {
        match self {
            Problem::HashMismatch => "hash mismatch (entry changed)",
            Problem::BrokenLink => "previous-hash link broken (entry removed or reordered)",
            Problem::SequenceGap => "sequence gap (entry removed)",
            Problem::OutOfOrder => "sequence out of order (entry duplicated or reordered)",
            Problem::BadSignature => "bad signature",
            Problem::UnknownKey => "unknown signing key",
            Problem::KeyNotInForce => "signed by a key not in force there (retired, or never handed over to)",
            Problem::TimeReversed => "time goes backwards (entry reordered)",
            Problem::Malformed => "malformed entry",
            Problem::Truncated => "entries missing at the end (ledger truncated)",
            Problem::HeadMismatch => "head mismatch (head edited, or entry written outside the ledger)",
            Problem::BundleSignature => "bad bundle signature (bundle summary edited)",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// The first bad entry: where verification stopped and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadEntry {
    /// Its sequence number; `None` only for problems of a bundle as a whole (its summary signature).
    pub seq: Option<i64>,
    /// What is wrong.
    pub problem: Problem,
    /// The human explanation, with the values that disagree (e.g. `sequence gap after 24 (entry removed)`).
    pub message: String,
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "entry {seq}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// How many entries were found valid (all of them when `first_bad` is `None`; those before it
    /// otherwise).
    pub entries_checked: u64,
    /// The first bad entry, if any.
    pub first_bad: Option<BadEntry>,
    /// The head the chain was measured against: the `audit_head` row for a database, the ledger's head at
    /// export time for a bundle. Publish it: it pins everything before it.
    pub head: LedgerHead,
    /// The last entry found valid (the anchor, or the genesis, when none was).
    pub verified_through: LedgerHead,
}

impl VerifyReport {
    /// Whether the whole chain verified.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_bad {
            None => write!(
                f,
                "ok: {} entries verified; head seq {} hash {}",
                self.entries_checked, self.head.seq, self.head.hash
            ),
            Some(bad) => write!(
                f,
                "TAMPERED: {bad}; {} entries verified before it (through seq {}); head seq {} hash {}",
                self.entries_checked, self.verified_through.seq, self.head.seq, self.head.hash
            ),
        }
    }
}

/// Walks a chain one entry at a time, from an anchor, remembering only the last good entry: memory does
/// not grow with the ledger.
///
/// Keys have periods: the first entry walked fixes the key in force, and only a `key.rotated` entry of the ledger
/// key (resource `key ledger`), signed by the key in force and naming its successor, hands over to another. So a
/// retired key — perhaps the leaked one the rotation was for — cannot sign after its rotation, and a trusted key
/// nothing handed over to (a public key planted among the retired ones) vouches for nothing after the first entry.
pub(crate) struct Chain<'k> {
    keys: Vec<(String, &'k ServicePublicKey)>,
    in_force: Option<String>,
    last: LedgerHead,
    last_at_ms: Option<i64>,
    checked: u64,
}

impl<'k> Chain<'k> {
    pub(crate) fn new(keys: &'k [ServicePublicKey], anchor: LedgerHead) -> Chain<'k> {
        Chain {
            keys: keys.iter().map(|k| (k.key_id(), k)).collect(),
            in_force: None,
            last: anchor,
            last_at_ms: None,
            checked: 0,
        }
    }

    /// Checks `entry` as the successor of the last good entry; on success it becomes the last good one.
    /// The order of the checks decides the message: sequence first (a gap says "removed" more precisely
    /// than the broken link that goes with it), then the entry's own hash, the link, the signature.
    pub(crate) fn check(&mut self, entry: &AuditEntry) -> Result<(), BadEntry> {
        let bad = |problem: Problem, message: String| BadEntry {
            seq: Some(entry.seq),
            problem,
            message,
        };
        let expected = self.last.seq.saturating_add(1);
        if entry.seq > expected {
            return Err(bad(
                Problem::SequenceGap,
                format!(
                    "sequence gap after {} (entry removed): found seq {}",
                    self.last.seq, entry.seq
                ),
            ));
        }
        if entry.seq < expected {
            return Err(bad(
                Problem::OutOfOrder,
                format!(
                    "{}: found seq {} where {expected} was expected",
                    Problem::OutOfOrder,
                    entry.seq
                ),
            ));
        }
        let recomputed = entry_hash(entry);
        if recomputed != entry.hash {
            return Err(bad(
                Problem::HashMismatch,
                format!(
                    "{}: stored {}, fields hash to {recomputed}",
                    Problem::HashMismatch,
                    entry.hash
                ),
            ));
        }
        if entry.prev_hash != self.last.hash {
            return Err(bad(
                Problem::BrokenLink,
                format!(
                    "{}: prev_hash {} but entry {} has hash {}",
                    Problem::BrokenLink,
                    entry.prev_hash,
                    self.last.seq,
                    self.last.hash
                ),
            ));
        }
        let Some((_, key)) = self.keys.iter().find(|(id, _)| *id == entry.key_id) else {
            return Err(bad(
                Problem::UnknownKey,
                format!("{}: signed by key {:?}", Problem::UnknownKey, entry.key_id),
            ));
        };
        if let Some(in_force) = &self.in_force
            && *in_force != entry.key_id
        {
            return Err(bad(
                Problem::KeyNotInForce,
                format!(
                    "{}: signed by key {:?} where key {in_force:?} is in force",
                    Problem::KeyNotInForce,
                    entry.key_id
                ),
            ));
        }
        let digest = hex::decode(&entry.hash).unwrap_or_default();
        let signature = hex::decode(&entry.signature).unwrap_or_default();
        if !key.verify(SignaturePurpose::AuditEntry, &digest, &signature) {
            return Err(bad(
                Problem::BadSignature,
                format!("{} (not made by key {})", Problem::BadSignature, entry.key_id),
            ));
        }
        if let Some(previous) = self.last_at_ms
            && entry.at_ms < previous
        {
            return Err(bad(
                Problem::TimeReversed,
                format!("{}: at_ms {} after {previous}", Problem::TimeReversed, entry.at_ms),
            ));
        }
        self.in_force = Some(handed_over_to(entry).unwrap_or_else(|| entry.key_id.clone()));
        self.last = LedgerHead {
            seq: entry.seq,
            hash: entry.hash.clone(),
        };
        self.last_at_ms = Some(entry.at_ms);
        self.checked += 1;
        Ok(())
    }

    pub(crate) fn report(self, head: LedgerHead, first_bad: Option<BadEntry>) -> VerifyReport {
        VerifyReport {
            entries_checked: self.checked,
            first_bad,
            head,
            verified_through: self.last,
        }
    }
}

/// The ledger key a verified entry hands over to: a successful `key.rotated` entry of the ledger key names its
/// successor's key id (`tokumei policy rotate-key --purpose ledger` writes it, signed by the key it retires).
fn handed_over_to(entry: &AuditEntry) -> Option<String> {
    if entry.action != "key.rotated" || entry.resource != "key ledger" || entry.outcome != "ok" {
        return None;
    }
    let details: serde_json::Value = serde_json::from_str(&entry.details).ok()?;
    let next = details.get("new_key_id")?.as_str()?;
    (next.len() == 16 && next.bytes().all(|b| b.is_ascii_hexdigit())).then(|| next.to_owned())
}

impl AuditLedger {
    /// Verifies the whole ledger against `key` (see [`AuditLedger::verify_with_keys`]).
    pub async fn verify(&self, key: &ServicePublicKey) -> Result<VerifyReport> {
        self.verify_with_keys(std::slice::from_ref(key)).await
    }

    /// Verifies the whole ledger, trusting entries signed by any of `keys` (several after a key rotation):
    /// sequence contiguity from 1, every hash, every link, every signature, times never decreasing, and
    /// the `audit_head` row against the last entry. Reads one snapshot, a page of entries ([`super::PAGE_SIZE`]) at a
    /// time. `Err` only when the database cannot be read; tampering is reported in the [`VerifyReport`].
    pub async fn verify_with_keys(&self, keys: &[ServicePublicKey]) -> Result<VerifyReport> {
        let mut tx = self.db.begin_read().await?;
        let (head, _) = fetch_head(&mut tx).await?;
        let mut chain = Chain::new(keys, LedgerHead::genesis());
        // Start below any sequence number, so that forged rows numbered 0 or less are seen too.
        let mut after = i64::MIN;
        let first_bad = 'walk: loop {
            let rows = fetch_page(&mut tx, after, i64::MAX, self.page_size).await?;
            let Some(last_row) = rows.last() else {
                break 'walk None;
            };
            after = sqlx::Row::try_get(last_row, "seq")?;
            for row in &rows {
                let entry = match entry_from_row(row) {
                    Ok(entry) => entry,
                    Err(e) => {
                        break 'walk Some(BadEntry {
                            seq: sqlx::Row::try_get(row, "seq").ok(),
                            problem: Problem::Malformed,
                            message: format!("{}: {e}", Problem::Malformed),
                        });
                    }
                };
                if let Err(bad) = chain.check(&entry) {
                    break 'walk Some(bad);
                }
                if entry.seq > head.seq {
                    break 'walk Some(BadEntry {
                        seq: Some(entry.seq),
                        problem: Problem::HeadMismatch,
                        message: format!(
                            "{}: the entry is past the head row's seq {} (written outside the ledger, or the head \
                             was moved back)",
                            Problem::HeadMismatch,
                            head.seq
                        ),
                    });
                }
            }
        };
        tx.commit().await?;
        let first_bad = first_bad.or_else(|| check_end(&chain.last, &head, "the head row records"));
        Ok(chain.report(head, first_bad))
    }
}

/// After a clean walk: the chain must end exactly at `end` (the head row, or a bundle's signed end).
fn check_end(last: &LedgerHead, end: &LedgerHead, what: &str) -> Option<BadEntry> {
    if last.seq < end.seq {
        Some(BadEntry {
            seq: Some(last.seq + 1),
            problem: Problem::Truncated,
            message: format!(
                "{}: the chain ends at seq {} but {what} seq {}",
                Problem::Truncated,
                last.seq,
                end.seq
            ),
        })
    } else if last.seq > end.seq || last.hash != end.hash {
        Some(BadEntry {
            seq: Some(last.seq),
            problem: Problem::HeadMismatch,
            message: format!(
                "{}: the chain ends at seq {} hash {} but {what} seq {} hash {}",
                Problem::HeadMismatch,
                last.seq,
                last.hash,
                end.seq,
                end.hash
            ),
        })
    } else {
        None
    }
}

/// Verifies the ledger held in a database that is not the service's own — a restored backup, a copy an inspector
/// was handed — with the ledger's public keys, holding no signing key (no store of the façade is handed out for
/// it). `PolicyDb::open` brings the schema up to date, so verify a copy of the evidence, not the evidence itself.
pub async fn verify_database(db: PolicyDb, keys: &[ServicePublicKey]) -> Result<VerifyReport> {
    // A key nobody holds: this ledger only reads and verifies.
    AuditLedger::new(db, ServiceKey::generate())
        .verify_with_keys(keys)
        .await
}

/// Checks an [`InspectionBundle`] offline, with nothing but the public key the inspector trusts (from the
/// regulator report or the service's `.pub` file — never the key printed inside the bundle, which whoever
/// edited the bundle could have replaced).
pub fn verify_bundle(bundle: &InspectionBundle, key: &ServicePublicKey) -> VerifyReport {
    verify_bundle_with_keys(bundle, std::slice::from_ref(key))
}

/// [`verify_bundle`] trusting any of `keys`. Checks the summary signature (window, anchor, end, head),
/// then the chain from the anchor — sequence, hashes, links, entry signatures — and that it ends exactly
/// at the signed end, so an entry removed anywhere, the last one included, is named.
pub fn verify_bundle_with_keys(bundle: &InspectionBundle, keys: &[ServicePublicKey]) -> VerifyReport {
    let mut chain = Chain::new(keys, bundle.anchor.clone());
    let whole = |problem: Problem, message: String| {
        Some(BadEntry {
            seq: None,
            problem,
            message,
        })
    };
    let first_bad = if bundle.format != BUNDLE_TAG {
        whole(
            Problem::Malformed,
            format!("unknown bundle format {:?} (expected {BUNDLE_TAG:?})", bundle.format),
        )
    } else if let Some(key) = keys.iter().find(|k| k.key_id() == bundle.key_id) {
        let signature = hex::decode(&bundle.signature).unwrap_or_default();
        if key.verify(SignaturePurpose::AuditEntry, &bundle_summary_bytes(bundle), &signature) {
            walk_bundle(bundle, &mut chain)
        } else {
            whole(
                Problem::BundleSignature,
                Problem::BundleSignature.description().to_owned(),
            )
        }
    } else {
        whole(
            Problem::UnknownKey,
            format!(
                "{}: the bundle is signed by key {:?}",
                Problem::UnknownKey,
                bundle.key_id
            ),
        )
    };
    chain.report(bundle.head.clone(), first_bad)
}

fn walk_bundle(bundle: &InspectionBundle, chain: &mut Chain<'_>) -> Option<BadEntry> {
    for entry in &bundle.entries {
        if let Err(bad) = chain.check(entry) {
            return Some(bad);
        }
        if entry.seq > bundle.last.seq {
            return Some(BadEntry {
                seq: Some(entry.seq),
                problem: Problem::HeadMismatch,
                message: format!(
                    "{}: the entry is past the bundle's signed end (seq {})",
                    Problem::HeadMismatch,
                    bundle.last.seq
                ),
            });
        }
    }
    if let Some(bad) = check_end(&chain.last, &bundle.last, "the bundle's signed summary says it ends at") {
        return Some(bad);
    }
    // The head at export time is at or past the bundle's end; when it is the end, it is the same entry.
    if bundle.head.seq < bundle.last.seq || (bundle.head.seq == bundle.last.seq && bundle.head.hash != bundle.last.hash)
    {
        return Some(BadEntry {
            seq: Some(bundle.last.seq),
            problem: Problem::HeadMismatch,
            message: format!(
                "{}: the bundle ends at seq {} but the ledger head at export was seq {} hash {}",
                Problem::HeadMismatch,
                bundle.last.seq,
                bundle.head.seq,
                bundle.head.hash
            ),
        });
    }
    None
}
