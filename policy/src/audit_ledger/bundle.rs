//! The inspection bundle: a time window of the ledger that an inspector (the regulator, an auditor of
//! the data-access committee) takes away and checks offline, with the service's public key alone.
//!
//! A window of a chain is only checkable if it says where it starts and where it ends: the bundle carries
//! the **anchor** (the `(seq, hash)` of the entry just before the window, [`GENESIS_HASH`](super::GENESIS_HASH)
//! at the start of the ledger) and the **end** (the last entry's `(seq, hash)`), and the service signs
//! a summary of both, so removing the first or the last entry of the bundle is caught like removing any
//! other. The summary also fixes the window, the generation time and the ledger's head at export.
//!
//! Summary bytes (signed): the text tag `tokumei/audit-bundle/v1`, then `generated_at`, `from`, `to`,
//! `public_key`, `key_id` as text, then `anchor.seq` (int), `anchor.hash` (text), `last.seq` (int),
//! `last.hash` (text), `head.seq` (int), `head.hash` (text) — *text* and *int* encoded as for entries. The
//! signature is ed25519 over `tokumei/audit-entry/v1` ‖ `0x00` ‖ those bytes; entry signatures cover
//! exactly 32 bytes and summaries always more, so neither can be passed off as the other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::canonical::{BUNDLE_TAG, Encoder};
use super::{AuditEntry, AuditLedger, LedgerHead, entry_from_row, fetch_head, fetch_page, format_ms};
use crate::error::{PolicyError, Result};
use crate::service_key::SignaturePurpose;

/// A signed, self-contained extract of the ledger for inspection (`tokumei audit export --from --to`);
/// serialise it as JSON. Check it with [`verify_bundle`](super::verify_bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectionBundle {
    /// `tokumei/audit-bundle/v1`: lets a future format be told apart.
    pub format: String,
    /// When the bundle was made (RFC 3339 UTC, milliseconds).
    pub generated_at: String,
    /// Start of the window, inclusive (RFC 3339 UTC, milliseconds).
    pub from: String,
    /// End of the window, exclusive (RFC 3339 UTC, milliseconds).
    pub to: String,
    /// The service's public key (64 hex digits), for convenience: an inspector must verify with the key
    /// obtained from a trusted channel, not with this copy.
    pub public_key: String,
    /// Its identifier ([`crate::ServicePublicKey::key_id`]).
    pub key_id: String,
    /// The entry just before the first one in the bundle (the genesis when the bundle starts the ledger):
    /// where the chain is picked up.
    pub anchor: LedgerHead,
    /// The last entry in the bundle (equal to `anchor` when the window is empty): where the chain must end.
    pub last: LedgerHead,
    /// The ledger's head when the bundle was made: to compare with published heads.
    pub head: LedgerHead,
    /// The entries of the window, in sequence order.
    pub entries: Vec<AuditEntry>,
    /// ed25519 signature of the summary (see the module documentation), hex.
    pub signature: String,
}

/// The bundle's summary bytes, which its `signature` covers (layout in the module documentation).
pub fn bundle_summary_bytes(bundle: &InspectionBundle) -> Vec<u8> {
    let mut e = Encoder::new(BUNDLE_TAG);
    e.text(&bundle.generated_at);
    e.text(&bundle.from);
    e.text(&bundle.to);
    e.text(&bundle.public_key);
    e.text(&bundle.key_id);
    e.int(bundle.anchor.seq);
    e.text(&bundle.anchor.hash);
    e.int(bundle.last.seq);
    e.text(&bundle.last.hash);
    e.int(bundle.head.seq);
    e.text(&bundle.head.hash);
    e.finish()
}

impl AuditLedger {
    /// The entries appended in `[from, to)` (millisecond precision) as a signed [`InspectionBundle`], read
    /// from one snapshot. The bundle is the run of sequence numbers from the first entry at or after
    /// `from` to the last before `to` — every entry in between, since times never decrease along the
    /// chain. Export does not verify: a tampered ledger exports as it is, and [`super::verify_bundle`]
    /// names the problem.
    pub async fn export(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<InspectionBundle> {
        let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
        if to_ms < from_ms {
            return Err(PolicyError::Invalid(format!(
                "export window ends ({to}) before it starts ({from})"
            )));
        }
        let mut tx = self.db.begin_read().await?;
        let (head, _) = fetch_head(&mut tx).await?;
        let bounds = sqlx::query(
            "SELECT MIN(seq) AS first_seq, MAX(seq) AS last_seq FROM audit_entries WHERE at_ms >= $1 AND at_ms < $2",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_one(&mut *tx)
        .await?;
        let first: Option<i64> = sqlx::Row::try_get(&bounds, "first_seq")?;
        let last: Option<i64> = sqlx::Row::try_get(&bounds, "last_seq")?;

        let mut entries = Vec::new();
        let anchor = match (first, last) {
            (Some(first), Some(last)) => {
                let anchor_seq = first.saturating_sub(1);
                let mut after = anchor_seq;
                loop {
                    let rows = fetch_page(&mut tx, after, last, self.page_size).await?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        let entry = entry_from_row(row)?;
                        after = entry.seq;
                        entries.push(entry);
                    }
                }
                hash_at(&mut tx, anchor_seq).await?
            }
            _ => {
                // An empty window still pins where it would be: the last entry before it.
                let before = sqlx::query("SELECT MAX(seq) AS seq FROM audit_entries WHERE at_ms < $1")
                    .bind(from_ms)
                    .fetch_one(&mut *tx)
                    .await?;
                let before: Option<i64> = sqlx::Row::try_get(&before, "seq")?;
                hash_at(&mut tx, before.unwrap_or(0)).await?
            }
        };
        tx.commit().await?;
        let last = entries.last().map_or_else(
            || anchor.clone(),
            |e| LedgerHead {
                seq: e.seq,
                hash: e.hash.clone(),
            },
        );
        let public = self.key.public();
        let mut bundle = InspectionBundle {
            format: BUNDLE_TAG.to_owned(),
            generated_at: format_ms(Utc::now().timestamp_millis())?,
            from: format_ms(from_ms)?,
            to: format_ms(to_ms)?,
            public_key: public.to_hex(),
            key_id: public.key_id(),
            anchor,
            last,
            head,
            entries,
            signature: String::new(),
        };
        bundle.signature = hex::encode(
            self.key
                .sign(SignaturePurpose::AuditEntry, &bundle_summary_bytes(&bundle)),
        );
        Ok(bundle)
    }
}

/// `(seq, hash)` of entry `seq`; the genesis for 0. A missing entry (tampered ledger) gets an empty hash,
/// which the bundle's first link then fails on.
async fn hash_at(tx: &mut sqlx::Transaction<'static, sqlx::Any>, seq: i64) -> Result<LedgerHead> {
    if seq <= 0 {
        return Ok(LedgerHead::genesis());
    }
    let row = sqlx::query("SELECT hash FROM audit_entries WHERE seq = $1")
        .bind(seq)
        .fetch_optional(&mut **tx)
        .await?;
    let hash = match row {
        Some(row) => sqlx::Row::try_get(&row, "hash")?,
        None => String::new(),
    };
    Ok(LedgerHead { seq, hash })
}
