//! What a spool holds, counted: segments, bytes, batches, records and patients' requests per hospital. Counts
//! only — the spool holds no direct identifier and this report names none but the hospitals' institution codes.
//! Shared by `tokumei spool status` and the demo, which shows what crossed into the spool.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use tokumei_proto::spool::v1::{RequestKind, spool_entry::Entry};

use crate::spool::{SpoolError, list_segments, read_all, segment_path};

/// A spool's contents, counted.
#[derive(Serialize, Default, Debug)]
pub struct SpoolStatus {
    /// The directory read.
    pub dir: String,
    /// Segment files.
    pub segments: usize,
    /// Their total size.
    pub bytes: u64,
    /// Entries of every kind.
    pub entries: u64,
    /// Batches of records.
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// Records the gateway rejected, with their reasons kept in the batch.
    pub rejections: u64,
    /// Opt-out requests.
    pub opt_outs: u64,
    /// Erasure requests.
    pub erasures: u64,
    /// The same counts per hospital (institution code).
    pub by_hospital: BTreeMap<String, HospitalCounts>,
}

/// One hospital's share of a spool.
#[derive(Serialize, Default, Debug)]
pub struct HospitalCounts {
    /// Batches sent.
    pub batches: u64,
    /// Records accepted.
    pub records: u64,
    /// Records rejected.
    pub rejections: u64,
}

/// Reads a spool directory (unlocked: its key unwrapped) and counts what it holds; a missing directory holds
/// nothing.
pub fn status(dir: &Path) -> Result<SpoolStatus, SpoolError> {
    let mut s = SpoolStatus {
        dir: dir.display().to_string(),
        ..Default::default()
    };
    if !dir.exists() {
        return Ok(s);
    }
    let segs = list_segments(dir)?;
    s.segments = segs.len();
    for seg in &segs {
        let path = segment_path(dir, *seg);
        s.bytes += std::fs::metadata(&path)
            .map_err(|source| SpoolError::Io {
                path: path.display().to_string(),
                source,
            })?
            .len();
    }
    read_all(dir, |_, e| {
        s.entries += 1;
        match e.entry {
            Some(Entry::Batch(b)) => {
                s.batches += 1;
                s.records += b.records.len() as u64;
                s.rejections += b.rejections.len() as u64;
                let h = s.by_hospital.entry(b.hospital_code).or_default();
                h.batches += 1;
                h.records += b.records.len() as u64;
                h.rejections += b.rejections.len() as u64;
            }
            Some(Entry::Request(r)) => {
                if r.kind == RequestKind::Erase as i32 {
                    s.erasures += 1;
                } else {
                    s.opt_outs += 1;
                }
            }
            None => {}
        }
    })?;
    Ok(s)
}
