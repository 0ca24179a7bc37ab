//! What the gateway has made durable, indexed in memory and rebuilt from the spool at start:
//! batch outcomes (for idempotent replays), the opt-out registry, and opt-out/erase request ids.
//!
//! Two sources feed it, through the same code: full spool entries (segments still on disk, and each new
//! commit), and the summaries in `index.log` of segments deleted after the core acknowledged them. Replaying both
//! after a crash between the two is harmless: every update is keyed and the first one wins.

use crate::keyservice::Digest;
use crate::spool::{Position, Replayed};
use std::collections::{HashMap, HashSet};
use tokio::sync::watch;
use tokumei_proto::ingest::v1::{ReasonCount, Rejection};
use tokumei_proto::spool::v1::{IndexRecord, PatientRequestEntry, SpoolEntry, index_record, spool_entry::Entry};

/// (hospital code, batch id).
pub type BatchKey = (String, String);

/// The committed outcome of a batch, returned again on replay.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// Keyed digest of the batch as first sent.
    pub digest: Digest,
    /// Accepted records.
    pub accepted: u64,
    /// The first [`REJECTIONS_KEPT`] rejected records with reasons: what a receipt lists. Keeping them all
    /// let an all-rejected batch hold its size in memory and in `index.log` for good.
    pub rejections: Vec<Rejection>,
    /// Rejected records in all.
    pub rejected_total: u64,
    /// Rejected records per reason, sorted by reason.
    pub rejected_by_reason: Vec<(String, u64)>,
    /// Where the batch sits in the spool.
    pub position: Position,
    /// When the gateway made it durable (Unix ms): the outcome is forgotten a retention period later.
    pub committed_at_ms: i64,
}

/// How many of a batch's rejections its outcome keeps (the spool writes the same window).
pub use crate::spool::REJECTIONS_KEPT;

impl BatchOutcome {
    /// The outcome of a batch from all its rejections: counted, then cut to [`REJECTIONS_KEPT`].
    pub fn new(
        digest: Digest,
        accepted: u64,
        mut rejections: Vec<Rejection>,
        position: Position,
        committed_at_ms: i64,
    ) -> Self {
        let mut by_reason: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for r in &rejections {
            *by_reason.entry(r.reason.clone()).or_default() += 1;
        }
        let rejected_total = rejections.len() as u64;
        rejections.truncate(REJECTIONS_KEPT);
        rejections.shrink_to_fit();
        BatchOutcome {
            digest,
            accepted,
            rejections,
            rejected_total,
            rejected_by_reason: by_reason.into_iter().collect(),
            position,
            committed_at_ms,
        }
    }
}

/// A batch being committed: later arrivals with the same key wait for it instead of committing twice.
pub struct InFlight {
    /// Digest of the content being committed.
    pub digest: Digest,
    /// Resolves when the commit finished (`None` until then).
    pub done: watch::Receiver<Option<Result<BatchOutcome, String>>>,
}

/// The identity of a committed opt-out/erase request, to make request ids idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `OPT_OUT` or `ERASE` (the spool enum value).
    pub kind: i32,
    /// Linkage keys the request was bound to.
    pub linkage_keys: Vec<Vec<u8>>,
    /// ID4 keys the request was bound to (scoped to the requesting hospital).
    pub id4_keys: Vec<Vec<u8>>,
    /// Hospital pseudonym the request was bound to (may be empty).
    pub hospital_pseudonym: Vec<u8>,
    /// Which identities matched.
    pub matched_by: String,
}

/// The in-memory index.
#[derive(Default)]
pub struct Registry {
    batches: HashMap<BatchKey, BatchOutcome>,
    in_flight: HashMap<BatchKey, InFlight>,
    opted_out: HashSet<Digest>,
    opted_out_local: HashSet<Digest>,
    /// ID4 keys opted out by a hospital: they stop that hospital's records only (the core extends them to the
    /// person when the hospital had sent that person).
    opted_out_id4: HashSet<(String, Digest)>,
    requests: HashMap<(String, String), RequestRecord>,
}

/// What a new batch should do given what is already known.
pub enum Admission {
    /// Nothing known: go ahead.
    New,
    /// Already committed with the same content: return this outcome.
    Replay(BatchOutcome),
    /// Being committed right now with the same content: wait for it.
    Wait(watch::Receiver<Option<Result<BatchOutcome, String>>>),
    /// The id was used for different content.
    Conflict,
}

fn digest_of(bytes: &[u8]) -> Option<Digest> {
    bytes.try_into().ok()
}

/// What the registry needs of a committed batch: the same whether it comes from a full `BatchCommit` or from an
/// index summary.
struct BatchFacts<'a> {
    hospital_code: &'a str,
    batch_id: &'a str,
    content_digest: &'a [u8],
    accepted: u64,
    rejections: &'a [Rejection],
    /// From a summary that already counted (`None`: count `rejections`).
    counted: Option<(u64, &'a [ReasonCount])>,
    committed_at_ms: i64,
}

impl Registry {
    /// Applies what [`crate::spool::Spool::open`] replays: index summaries first, then full entries.
    pub fn replay(&mut self, replayed: Replayed) {
        match replayed {
            Replayed::Indexed(record) => self.apply_index(&record),
            Replayed::Entry(position, entry) => self.apply(position, &entry),
        }
    }

    /// Applies a durable spool entry (at replay, and after each commit).
    pub fn apply(&mut self, position: Position, entry: &SpoolEntry) {
        match &entry.entry {
            Some(Entry::Batch(b)) => self.apply_batch(
                position,
                BatchFacts {
                    hospital_code: &b.hospital_code,
                    batch_id: &b.batch_id,
                    content_digest: &b.content_digest,
                    accepted: b.records.len() as u64,
                    rejections: &b.rejections,
                    counted: None,
                    committed_at_ms: entry.committed_at_ms,
                },
            ),
            Some(Entry::Request(r)) => self.apply_request(r),
            None => {}
        }
    }

    /// Applies the summary of an entry whose segment was deleted (from `index.log`).
    pub fn apply_index(&mut self, record: &IndexRecord) {
        let position = Position::from_seq(record.position_seq);
        match &record.record {
            Some(index_record::Record::Batch(b)) => self.apply_batch(
                position,
                BatchFacts {
                    hospital_code: &b.hospital_code,
                    batch_id: &b.batch_id,
                    content_digest: &b.content_digest,
                    accepted: b.accepted,
                    rejections: &b.rejections,
                    counted: (b.rejected_total > 0).then_some((b.rejected_total, b.rejected_by_reason.as_slice())),
                    committed_at_ms: record.committed_at_ms,
                },
            ),
            Some(index_record::Record::Request(r)) => self.apply_request(r),
            None => {}
        }
    }

    fn apply_batch(&mut self, position: Position, b: BatchFacts<'_>) {
        let Some(digest) = digest_of(b.content_digest) else {
            return;
        };
        let key = (b.hospital_code.to_string(), b.batch_id.to_string());
        self.in_flight.remove(&key);
        self.batches.entry(key).or_insert_with(|| {
            let listed = b.rejections.iter().take(REJECTIONS_KEPT).cloned().collect();
            let mut outcome = BatchOutcome::new(digest, b.accepted, listed, position, b.committed_at_ms);
            match b.counted {
                Some((total, by_reason)) => {
                    outcome.rejected_total = total;
                    outcome.rejected_by_reason = by_reason.iter().map(|c| (c.reason.clone(), c.count)).collect();
                }
                None => {
                    let all = BatchOutcome::new(digest, 0, b.rejections.to_vec(), position, 0);
                    outcome.rejected_total = all.rejected_total;
                    outcome.rejected_by_reason = all.rejected_by_reason;
                }
            }
            outcome
        });
    }

    /// Records an opt-out or erase: both stop new records (an erased patient is not re-ingested).
    pub fn apply_request(&mut self, r: &PatientRequestEntry) {
        for k in &r.linkage_keys {
            if let Some(d) = digest_of(k) {
                self.opted_out.insert(d);
            }
        }
        for k in &r.id4_keys {
            if let Some(d) = digest_of(k) {
                self.opted_out_id4.insert((r.hospital_code.clone(), d));
            }
        }
        if let Some(d) = digest_of(&r.hospital_pseudonym) {
            self.opted_out_local.insert(d);
        }
        self.requests
            .entry((r.hospital_code.clone(), r.request_id.clone()))
            .or_insert_with(|| RequestRecord {
                kind: r.kind,
                linkage_keys: r.linkage_keys.clone(),
                id4_keys: r.id4_keys.clone(),
                hospital_pseudonym: r.hospital_pseudonym.clone(),
                matched_by: r.matched_by.clone(),
            });
    }

    /// Decides what a batch with this key and digest should do.
    pub fn admit(&self, key: &BatchKey, digest: &Digest) -> Admission {
        if let Some(done) = self.batches.get(key) {
            return if &done.digest == digest {
                Admission::Replay(done.clone())
            } else {
                Admission::Conflict
            };
        }
        if let Some(f) = self.in_flight.get(key) {
            return if &f.digest == digest {
                Admission::Wait(f.done.clone())
            } else {
                Admission::Conflict
            };
        }
        Admission::New
    }

    /// Marks a batch as being committed.
    pub fn begin(&mut self, key: BatchKey, flight: InFlight) {
        self.in_flight.insert(key, flight);
    }

    /// Forgets a batch whose commit failed, so the hospital can retry it.
    pub fn abandon(&mut self, key: &BatchKey) {
        self.in_flight.remove(key);
    }

    /// True when a record `hospital` sent with these pseudonyms belongs to a patient who opted out or asked for
    /// erasure: by an insured key anywhere, by an ID4 key at the hospital that asked, by its local id.
    pub fn is_opted_out(
        &self,
        hospital: &str,
        linkage_key: &Digest,
        id4_key: Option<&Digest>,
        hospital_pseudonym: &Digest,
    ) -> bool {
        let scoped = |k: &Digest| self.opted_out_id4.contains(&(hospital.to_string(), *k));
        self.opted_out.contains(linkage_key)
            || id4_key.is_some_and(|k| self.opted_out.contains(k) || scoped(k))
            || scoped(linkage_key)
            || self.opted_out_local.contains(hospital_pseudonym)
    }

    /// A previously committed request with this id from this hospital.
    pub fn request(&self, hospital: &str, request_id: &str) -> Option<&RequestRecord> {
        self.requests.get(&(hospital.to_string(), request_id.to_string()))
    }

    /// Forgets the outcomes of batches committed before `cutoff_ms` (a resent id is then a new batch); requests
    /// and batches still being committed stay. Returns how many went.
    pub fn expire_batches(&mut self, cutoff_ms: i64) -> usize {
        let before = self.batches.len();
        self.batches.retain(|_, o| o.committed_at_ms >= cutoff_ms);
        self.batches.shrink_to_fit();
        before - self.batches.len()
    }

    /// Number of committed batches (for status output).
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// Number of opted-out identities (for status output).
    pub fn opted_out_count(&self) -> usize {
        self.opted_out.len() + self.opted_out_local.len() + self.opted_out_id4.len()
    }
}
