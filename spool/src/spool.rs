//! The gateway's durable spool: append-only segment files of CRC-checked frames, fsync'd in groups.
//!
//! A receipt is only sent after the frame holding a batch's accepted records is on stable storage. To make
//! that cheap, one writer thread takes every commit that arrived while the previous `fdatasync` ran and makes
//! them durable together (group commit): throughput is bounded by bandwidth, not by the fsync rate.
//!
//! Layout: `<dir>/seg-<20-digit number>.spool`, each starting with an 8-byte magic, followed by frames of
//! `u32 length (LE) | u32 CRC32C of payload (LE) | payload` where the payload is a protobuf `SpoolEntry`.
//! A crash can leave a torn frame only at the tail of the last segment; opening truncates it away. Anything
//! damaged before the tail is an error: acknowledged data must never be silently dropped.
//!
//! The core store pulls entries ([`read_after`] on the same host, the `SpoolService` of
//! the gateway's `SpoolService` across hosts), commits them, and acknowledges a position: `<dir>/core.ack`
//! ([`write_ack`]). The gateway then deletes every segment whose every frame is acknowledged ([`Spool::trim_to`]).
//! Because the gateway rebuilds its idempotency index and opt-out registry from the spool at start, what those
//! need of a segment (batch outcomes without records, patient requests) is first appended to `<dir>/index.log`
//! (same frame format, magic `TKINDEX1`, payload `IndexRecord`) and fsync'd; only then is the segment deleted.

use crate::spool_seal::{self, FileKind, SealError, SpoolSeal};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokumei_proto::ingest::v1::ReasonCount;
use tokumei_proto::spool::v1::{BatchSummary, IndexRecord, SpoolEntry, index_record, spool_entry::Entry};

const MAGIC: &[u8; 8] = b"TKSPOOL1";
const INDEX_MAGIC: &[u8; 8] = b"TKINDEX1";
/// How many of a batch's rejected records its outcome lists (the receipt's and the registry's window); the rest
/// are counted by reason.
pub const REJECTIONS_KEPT: usize = 1_000;

/// Largest message of the spool service (one frame of the largest batch the gateway accepts, with its envelope):
/// the gateway encodes and the core decodes up to it.
pub const MAX_FRAME_MESSAGE: usize = 257 << 20;

/// Magic of a segment whose frames are sealed ([`crate::spool_seal`]): every segment written now.
const SEALED_MAGIC: &[u8; 8] = b"TKSPOOL2";
/// Magic of a sealed `index.log`.
const SEALED_INDEX_MAGIC: &[u8; 8] = b"TKINDEX2";

/// (plain, sealed) magic of a file kind.
fn magics(kind: FileKind) -> (&'static [u8; 8], &'static [u8; 8]) {
    match kind {
        FileKind::Segment => (MAGIC, SEALED_MAGIC),
        FileKind::Index => (INDEX_MAGIC, SEALED_INDEX_MAGIC),
    }
}
const HEADER_LEN: u64 = MAGIC.len() as u64;
const FRAME_HEADER: usize = 8;
/// Upper bound on one frame's payload; larger lengths mean corruption.
const MAX_FRAME: u32 = 256 * 1024 * 1024;
/// How many bytes of queued commits one group may gather before it is written.
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;
/// Bits of a sequence number ([`Position::to_seq`]) that hold the offset.
pub const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Largest segment size honoured: a group may overrun the size by one group and one frame, and every offset
/// must stay below 2^40 for [`Position::to_seq`].
const MAX_SEGMENT_BYTES: u64 = 1 << 38;
/// The core's acknowledgement, in the spool directory.
pub const ACK_FILE: &str = "core.ack";
/// What the gateway keeps of trimmed segments, in the spool directory.
pub const INDEX_FILE: &str = "index.log";
/// Shortest time between two rotations of the active segment caused by acknowledgements (see
/// [`Spool::with_ack_rotation_interval`]).
pub const DEFAULT_ACK_ROTATION_INTERVAL: Duration = Duration::from_secs(60);

/// Where a frame sits: segment number and byte offset of its header.
///
/// Ordering is spool order (segment, then offset). It is also what the core records and acknowledges, usually
/// packed into one `u64` by [`Position::to_seq`]. Serialised as `{"segment":…,"offset":…}` (the ack file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Segment number (the file `seg-<segment>.spool`).
    pub segment: u64,
    /// Offset of the frame header within the segment.
    pub offset: u64,
}

impl Position {
    /// Packs the position into one number, `(segment << 40) | offset`, so that the core can store it in a single
    /// integer column and compare positions numerically.
    ///
    /// Monotonic in spool order as long as `offset < 2^40` (guaranteed: segments are capped far below 1 TiB)
    /// and `segment < 2^24` (16.7 million segments: with size rotation at 64 MiB and at most one
    /// acknowledgement rotation a minute, decades of operation).
    pub const fn to_seq(self) -> u64 {
        (self.segment << OFFSET_BITS) | (self.offset & OFFSET_MASK)
    }

    /// Inverse of [`Position::to_seq`].
    pub const fn from_seq(seq: u64) -> Position {
        Position {
            segment: seq >> OFFSET_BITS,
            offset: seq & OFFSET_MASK,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

fn show(p: &Option<Position>) -> String {
    p.map_or_else(|| "nothing".to_string(), |p| p.to_string())
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Reading or writing a segment failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A segment is damaged before its tail.
    #[error("spool segment {path} is damaged at offset {offset}: {detail}")]
    Corrupt {
        /// The segment.
        path: String,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The writer stopped (after an unrecoverable I/O error, or at shutdown).
    #[error("spool writer is not running")]
    Closed,
    /// An entry too large for one frame (it would read back as damage): refused before anything is written.
    #[error("a spool entry of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
    /// The spool's key could not be had, or a sealed file was read without it.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A reader asked for entries after a position whose segment is gone although the core never acknowledged
    /// it: the entries were removed (or the position never existed). Continuing would silently skip data.
    #[error(
        "spool position {after} is no longer in the spool (acknowledged up to {}): its entries were removed",
        show(.acked)
    )]
    Missing {
        /// The position asked for.
        after: Position,
        /// The acknowledgement in force.
        acked: Option<Position>,
    },
    /// A position lies at or beyond the durable end of the spool.
    #[error("spool position {after} is beyond the durable end of the spool ({end})")]
    BeyondEnd {
        /// The position asked for.
        after: Position,
        /// The durable end.
        end: Position,
    },
    /// The acknowledgement file cannot be understood.
    #[error("{path}: {detail}")]
    BadAck {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, offset: u64, detail: &str) -> SpoolError {
    SpoolError::Corrupt {
        path: path.display().to_string(),
        offset,
        detail: detail.into(),
    }
}

/// Timing of one group commit, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct GroupStats {
    /// Commits in the group.
    pub commits: usize,
    /// Bytes written.
    pub bytes: usize,
    /// Time spent in `fdatasync`.
    pub fsync: Duration,
}

struct Job {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Position, SpoolError>>,
}

/// What the writer thread is asked to do.
enum Msg {
    Commit(Job),
    /// Start a new segment if every frame of the active one is acknowledged (and the last such rotation is at
    /// least `min_interval` ago); replies with the active segment number.
    Rotate {
        acked: Position,
        min_interval: Duration,
        reply: oneshot::Sender<Result<u64, SpoolError>>,
    },
}

/// What the trimmer knows about `index.log`.
#[derive(Debug, Clone, Copy, Default)]
struct IndexState {
    /// Valid length of the file (0 when absent).
    len: u64,
    /// Highest spool position already summarised in it.
    upto: Option<Position>,
    /// Last acknowledgement refused as lying beyond the durable end (warned about once).
    warned: Option<Position>,
}

/// Handle to the writer thread. Cloning is cheap; the writer stops when every handle is dropped.
#[derive(Clone)]
pub struct Spool {
    tx: mpsc::Sender<Msg>,
    healthy: Arc<AtomicBool>,
    durable: watch::Receiver<Position>,
    dir: Arc<PathBuf>,
    index: Arc<tokio::sync::Mutex<IndexState>>,
    ack_rotation_interval: Duration,
}

/// What [`Spool::open`] replays so that the caller can rebuild its indexes: first the summaries of trimmed
/// segments from `index.log`, then every entry still in a segment, in spool order.
#[derive(Debug)]
pub enum Replayed {
    /// A summary of an entry whose segment was deleted after the core acknowledged it.
    Indexed(IndexRecord),
    /// An entry still in a segment.
    Entry(Position, SpoolEntry),
}

/// Segment file name for a segment number.
pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("seg-{segment:020}.spool"))
}

/// The acknowledgement file of a spool directory.
pub fn ack_path(dir: &Path) -> PathBuf {
    dir.join(ACK_FILE)
}

/// The index of trimmed segments of a spool directory.
pub fn index_path(dir: &Path) -> PathBuf {
    dir.join(INDEX_FILE)
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix("seg-").and_then(|s| s.strip_suffix(".spool"))
            && let Ok(n) = n.parse::<u64>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// One step of a [`FrameReader`].
enum Step {
    /// A complete, CRC-valid frame starting at this offset; its payload is in `FrameReader::payload`.
    Frame(u64),
    /// No more data (or the read limit was reached).
    End,
    /// An incomplete or damaged frame starts at the reader's offset.
    Torn(&'static str),
}

/// Sequential reader of a frame file (segment or index), from any frame boundary, up to an optional limit.
struct FrameReader<'a> {
    path: &'a Path,
    kind: FileKind,
    segment: u64,
    /// The file's frames are sealed; `seal` is the key unlocked for its directory, if any.
    sealed: bool,
    seal: Option<Arc<SpoolSeal>>,
    r: BufReader<File>,
    /// Where reading stops: the file length when opened, or a smaller limit.
    len: u64,
    /// Offset of the next frame header.
    offset: u64,
    payload: Vec<u8>,
}

impl<'a> FrameReader<'a> {
    /// Opens a frame file and checks its magic. `Ok(None)` when the file is shorter than the magic (torn while
    /// being created); `NotFound` is returned as an `Io` error the caller may inspect.
    fn open(path: &'a Path, kind: FileKind, segment: u64) -> Result<Option<Self>, SpoolError> {
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        if len < HEADER_LEN {
            return Ok(None);
        }
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut m = [0u8; 8];
        r.read_exact(&mut m).map_err(io_err(path))?;
        let (plain, sealed_magic) = magics(kind);
        let sealed = if &m == sealed_magic {
            true
        } else if &m == plain {
            false
        } else {
            return Err(corrupt(path, 0, "not a tokumei spool file"));
        };
        let seal = if sealed {
            path.parent().and_then(spool_seal::unlocked)
        } else {
            None
        };
        Ok(Some(FrameReader {
            path,
            kind,
            segment,
            sealed,
            seal,
            r,
            len,
            offset: HEADER_LEN,
            payload: Vec::new(),
        }))
    }

    /// Reads no further than `end` (a frame boundary).
    fn limit(&mut self, end: u64) {
        self.len = self.len.min(end);
    }

    fn seek(&mut self, offset: u64) -> Result<(), SpoolError> {
        self.r.seek(SeekFrom::Start(offset)).map_err(io_err(self.path))?;
        self.offset = offset;
        Ok(())
    }

    /// The length of the frame at the current offset, or why there is no complete header.
    fn header(&mut self) -> Result<Result<(u32, u32), &'static str>, SpoolError> {
        if self.offset >= self.len {
            return Ok(Err("no frame at this offset"));
        }
        if self.len - self.offset < FRAME_HEADER as u64 {
            return Ok(Err("truncated frame header"));
        }
        let mut header = [0u8; FRAME_HEADER];
        self.r.read_exact(&mut header).map_err(io_err(self.path))?;
        let n = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if n > MAX_FRAME || u64::from(n) > self.len - self.offset - FRAME_HEADER as u64 {
            return Ok(Err("frame longer than the file"));
        }
        Ok(Ok((n, crc)))
    }

    fn next(&mut self) -> Result<Step, SpoolError> {
        if self.offset >= self.len {
            return Ok(Step::End);
        }
        let (n, crc) = match self.header()? {
            Ok(h) => h,
            Err(detail) => return Ok(Step::Torn(detail)),
        };
        self.payload.resize(n as usize, 0);
        self.r.read_exact(&mut self.payload).map_err(io_err(self.path))?;
        if crc32c::crc32c(&self.payload) != crc {
            return Ok(Step::Torn("checksum mismatch"));
        }
        let at = self.offset;
        if self.sealed {
            let Some(seal) = &self.seal else {
                return Err(SealError::Locked(self.path.display().to_string()).into());
            };
            self.payload = seal
                .unseal(self.kind, self.segment, at, &self.payload)
                .map_err(|e| corrupt(self.path, at, &e.to_string()))?;
        }
        self.offset += FRAME_HEADER as u64 + u64::from(n);
        Ok(Step::Frame(at))
    }

    /// Steps over the frame at the current offset without reading its payload.
    fn skip(&mut self) -> Result<Result<(), &'static str>, SpoolError> {
        let (n, _) = match self.header()? {
            Ok(h) => h,
            Err(detail) => return Ok(Err(detail)),
        };
        self.r.seek_relative(i64::from(n)).map_err(io_err(self.path))?;
        self.offset += FRAME_HEADER as u64 + u64::from(n);
        Ok(Ok(()))
    }
}

/// Reads every entry of a segment. Returns the offset where valid data ends.
/// `tail` says whether this is the last segment (a torn frame there is a crash artefact, not corruption).
fn read_segment(
    path: &Path,
    segment: u64,
    tail: bool,
    mut visit: impl FnMut(Position, SpoolEntry),
) -> Result<u64, SpoolError> {
    let Some(mut r) = FrameReader::open(path, FileKind::Segment, segment)? else {
        return if tail {
            Ok(0)
        } else {
            Err(corrupt(path, 0, "shorter than the segment header"))
        };
    };
    loop {
        match r.next()? {
            Step::End => return Ok(r.offset),
            Step::Torn(_) if tail => return Ok(r.offset),
            Step::Torn(detail) => return Err(corrupt(path, r.offset, detail)),
            Step::Frame(offset) => {
                let entry =
                    SpoolEntry::decode(r.payload.as_slice()).map_err(|e| corrupt(path, offset, &e.to_string()))?;
                visit(Position { segment, offset }, entry);
            }
        }
    }
}

/// Offset of the last frame of a complete (non-active) segment, reading headers only.
fn last_frame_offset(path: &Path) -> Result<Option<u64>, SpoolError> {
    // Headers only: no frame is unsealed, so the segment number does not matter.
    let Some(mut r) = FrameReader::open(path, FileKind::Segment, 0)? else {
        return Err(corrupt(path, 0, "shorter than the segment header"));
    };
    let mut last = None;
    while r.offset < r.len {
        let at = r.offset;
        if let Err(detail) = r.skip()? {
            return Err(corrupt(path, at, detail));
        }
        last = Some(at);
    }
    Ok(last)
}

/// Reads every entry in the spool directory in order (used by tests and `tokumei spool status`).
pub fn read_all(dir: &Path, mut visit: impl FnMut(Position, SpoolEntry)) -> Result<(), SpoolError> {
    let segments = list_segments(dir)?;
    let last = segments.last().copied();
    for s in segments {
        read_segment(&segment_path(dir, s), s, Some(s) == last, &mut visit)?;
    }
    Ok(())
}

/// How far a reader may go.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// Up to the last complete, CRC-valid frame of the last segment.
    Tail,
    /// Up to (excluding) this durable end reported by the writer.
    Durable(Position),
}

/// The entries after `after` (from the oldest entry still in the spool when `None`), in order, up to about
/// `max_bytes` of payload (at least one entry when there is any). For the core on the same host as the gateway.
///
/// Seeks directly to `after`: earlier segments are not read. An incomplete or damaged frame at the tail of the
/// last segment is "not there yet" (the writer may be in the middle of writing it), not an error.
///
/// Caveat: another process cannot see the writer's fsync, so this may return a frame that was written but not
/// yet fsync'd. Such a frame survives a crash of the gateway process (it is in the page cache) and is lost only
/// if the machine itself crashes within the fsync window; the gateway then starts a new segment beyond the
/// acknowledged position so that new entries are not mistaken for acknowledged ones. The remote feed
/// ([`read_durable_after`], `SpoolService`) serves only fsync'd frames.
pub fn read_after(
    dir: &Path,
    after: Option<Position>,
    max_bytes: usize,
) -> Result<Vec<(Position, SpoolEntry)>, SpoolError> {
    read_range(dir, after, max_bytes, Until::Tail)
}

/// As [`read_after`], but only frames before `end`, the durable end reported by the writer
/// ([`Spool::durable_end`]): what the gateway's `SpoolService` serves. A position at or beyond `end` is an error.
pub fn read_durable_after(
    dir: &Path,
    after: Option<Position>,
    max_bytes: usize,
    end: Position,
) -> Result<Vec<(Position, SpoolEntry)>, SpoolError> {
    read_range(dir, after, max_bytes, Until::Durable(end))
}

fn is_not_found(e: &SpoolError) -> bool {
    matches!(e, SpoolError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

fn read_range(
    dir: &Path,
    after: Option<Position>,
    max_bytes: usize,
    until: Until,
) -> Result<Vec<(Position, SpoolEntry)>, SpoolError> {
    if let (Until::Durable(end), Some(a)) = (until, after)
        && a >= end
    {
        return Err(SpoolError::BeyondEnd { after: a, end });
    }
    let segments = list_segments(dir)?;
    let last_listed = segments.last().copied();
    let first = after.map_or(0, |a| segments.partition_point(|&s| s < a.segment));
    if let Some(a) = after
        && segments.last().is_some_and(|&l| l < a.segment)
    {
        // The active segment is never deleted, so a position beyond it was never handed out by this spool.
        return Err(SpoolError::Missing {
            after: a,
            acked: read_ack(dir)?,
        });
    }
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for &s in &segments[first..] {
        if let Until::Durable(end) = until
            && s > end.segment
        {
            break;
        }
        let path = segment_path(dir, s);
        let tail = Some(s) == last_listed && matches!(until, Until::Tail);
        let starts_at_after = after.is_some_and(|a| a.segment == s);
        let reader = match FrameReader::open(&path, FileKind::Segment, s) {
            Err(e) if is_not_found(&e) => {
                // Deleted since the listing: harmless only if the core acknowledged everything it held.
                check_gone(dir, after)?;
                continue;
            }
            other => other?,
        };
        if s == segments[first] && after.is_some_and(|a| a.segment < s) {
            // The segment of `after` is gone: trimmed after the core acknowledged it, or never existed.
            check_gone(dir, after)?;
        }
        let Some(mut r) = reader else {
            if tail {
                break;
            }
            return Err(corrupt(&path, 0, "shorter than the segment header"));
        };
        if let Until::Durable(end) = until
            && s == end.segment
        {
            r.limit(end.offset);
        }
        if starts_at_after && let Some(a) = after {
            r.seek(a.offset)?;
            if let Err(detail) = r.skip()? {
                if tail {
                    // Not written yet as far as this process can see.
                    return Ok(out);
                }
                if matches!(until, Until::Tail) {
                    // The frame the core holds is not in this complete segment: lost in a machine crash before
                    // its fsync, after which the gateway fenced to a new segment. Continue there.
                    tracing::warn!(
                        position = %a,
                        detail,
                        "the core's position is missing from its segment; continuing with the next segment"
                    );
                    continue;
                }
                return Err(corrupt(&path, a.offset, detail));
            }
        }
        loop {
            match r.next()? {
                Step::End => break,
                Step::Torn(_) if tail => return Ok(out),
                Step::Torn(detail) => return Err(corrupt(&path, r.offset, detail)),
                Step::Frame(offset) => {
                    let n = r.payload.len();
                    if !out.is_empty() && bytes.saturating_add(n) > max_bytes {
                        return Ok(out);
                    }
                    let entry =
                        SpoolEntry::decode(r.payload.as_slice()).map_err(|e| corrupt(&path, offset, &e.to_string()))?;
                    out.push((Position { segment: s, offset }, entry));
                    bytes = bytes.saturating_add(n);
                    if bytes >= max_bytes {
                        return Ok(out);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A segment the reader needs is gone. A segment is deleted only when all its frames are acknowledged, and a
/// core resumes from a position at or after its acknowledgement, so this is expected exactly when `after` is the
/// acknowledged position (the last frame of the deleted segment): nothing after it was in the segment. A reader
/// behind the acknowledgement (a core restored from an old backup) would silently miss entries: an error.
/// Without a position, the reader simply starts at the oldest entry still in the spool.
fn check_gone(dir: &Path, after: Option<Position>) -> Result<(), SpoolError> {
    let Some(a) = after else {
        return Ok(());
    };
    let acked = read_ack(dir)?;
    if acked == Some(a) {
        Ok(())
    } else {
        Err(SpoolError::Missing { after: a, acked })
    }
}

/// The core's acknowledgement in force (`None` before the first one).
pub fn read_ack(dir: &Path) -> Result<Option<Position>, SpoolError> {
    let path = ack_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| SpoolError::BadAck {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
}

/// Records durably that everything up to and including `upto` is committed in the core, and returns the
/// acknowledgement now in force. Acknowledgements never move backwards: a lower one is ignored.
///
/// Atomic (temporary file, fsync, rename, directory fsync), so a crash leaves the old or the new value. One
/// writer at a time: the core (same host) or the gateway's `Ack` RPC (which serialises its calls).
pub fn write_ack(dir: &Path, upto: Position) -> Result<Position, SpoolError> {
    if let Some(current) = read_ack(dir)?
        && current >= upto
    {
        return Ok(current);
    }
    let path = ack_path(dir);
    let tmp = dir.join(format!("{ACK_FILE}.tmp-{}", std::process::id()));
    let text = serde_json::to_vec(&upto).map_err(|e| SpoolError::BadAck {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&text).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(upto)
}

/// What a spool directory holds on disk (for `tokumei spool status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpoolUsage {
    /// Segment files.
    pub segments: usize,
    /// Bytes in segment files.
    pub bytes: u64,
    /// Bytes of `index.log` (summaries of trimmed segments).
    pub index_bytes: u64,
    /// The core's acknowledgement in force.
    pub acked: Option<Position>,
}

/// Segments, bytes and acknowledgement of a spool directory, without reading the segments.
pub fn usage(dir: &Path) -> Result<SpoolUsage, SpoolError> {
    let segments = list_segments(dir)?;
    let mut bytes = 0;
    for &s in &segments {
        let p = segment_path(dir, s);
        bytes += std::fs::metadata(&p).map_err(io_err(&p))?.len();
    }
    let index_bytes = match std::fs::metadata(index_path(dir)) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(&index_path(dir))(e)),
    };
    Ok(SpoolUsage {
        segments: segments.len(),
        bytes,
        index_bytes,
        acked: read_ack(dir)?,
    })
}

/// What the gateway keeps of an entry once its segment is deleted: batch outcomes without their records, and
/// patient requests (small, pseudonymous). `None` for an empty entry.
pub fn summarise(position: Position, entry: &SpoolEntry) -> Option<IndexRecord> {
    let record = match entry.entry.as_ref()? {
        Entry::Batch(b) => {
            let mut by_reason: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
            for r in &b.rejections {
                *by_reason.entry(r.reason.as_str()).or_default() += 1;
            }
            index_record::Record::Batch(BatchSummary {
                hospital_code: b.hospital_code.clone(),
                batch_id: b.batch_id.clone(),
                content_digest: b.content_digest.clone(),
                accepted: b.records.len() as u64,
                rejections: b.rejections.iter().take(REJECTIONS_KEPT).cloned().collect(),
                rejected_total: b.rejections.len() as u64,
                rejected_by_reason: by_reason
                    .into_iter()
                    .map(|(reason, count)| ReasonCount {
                        reason: reason.to_string(),
                        count,
                    })
                    .collect(),
            })
        }
        Entry::Request(r) => index_record::Record::Request(r.clone()),
    };
    Some(IndexRecord {
        record: Some(record),
        position_seq: position.to_seq(),
        committed_at_ms: entry.committed_at_ms,
    })
}

/// Replays `index.log`; returns its valid length (a torn tail is ignored and overwritten by the next append).
fn read_index(dir: &Path, mut visit: impl FnMut(IndexRecord)) -> Result<IndexState, SpoolError> {
    let path = index_path(dir);
    let mut state = IndexState::default();
    let mut r = match FrameReader::open(&path, FileKind::Index, 0) {
        Err(e) if is_not_found(&e) => return Ok(state),
        other => match other? {
            Some(r) => r,
            None => return Ok(state),
        },
    };
    loop {
        match r.next()? {
            Step::End => break,
            Step::Torn(detail) => {
                tracing::warn!(detail, offset = r.offset, "ignoring the torn tail of the spool index");
                break;
            }
            Step::Frame(offset) => {
                let rec =
                    IndexRecord::decode(r.payload.as_slice()).map_err(|e| corrupt(&path, offset, &e.to_string()))?;
                let p = Position::from_seq(rec.position_seq);
                state.upto = state.upto.max(Some(p));
                visit(rec);
            }
        }
    }
    state.len = r.offset;
    Ok(state)
}

/// Drops from `index.log` the batch summaries committed before `cutoff_ms` (requests stay): the file is
/// rewritten beside itself, fsync'd and renamed over, so a crash leaves the old or the new file, never a mix.
/// Returns how many summaries went. Call before [`Spool::open`], or through [`Spool::expire_batches`].
pub fn expire_index(dir: &Path, cutoff_ms: i64) -> Result<u64, SpoolError> {
    rewrite_index(dir, false, |r| {
        !(matches!(r.record, Some(index_record::Record::Batch(_))) && r.committed_at_ms < cutoff_ms)
    })
}

/// Rewrites `index.log` with the records `keep` accepts (sealed when the directory's key is unlocked); only
/// when one is dropped, unless `force`. Returns how many were dropped.
fn rewrite_index(dir: &Path, force: bool, keep: impl Fn(&IndexRecord) -> bool) -> Result<u64, SpoolError> {
    let mut kept = Vec::new();
    let mut removed = 0u64;
    read_index(dir, |r| {
        if keep(&r) {
            kept.push(r.encode_to_vec());
        } else {
            removed += 1;
        }
    })?;
    if removed == 0 && !force {
        return Ok(0);
    }
    let tmp = dir.join(format!("{INDEX_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    append_index_to(&tmp, dir, 0, &kept)?;
    let path = index_path(dir);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(removed)
}

/// True when `index.log` exists and was written before sealing.
fn index_is_plain(dir: &Path) -> Result<bool, SpoolError> {
    let path = index_path(dir);
    let mut m = [0u8; 8];
    match File::open(&path).and_then(|mut f| f.read_exact(&mut m)) {
        Ok(()) => Ok(&m == INDEX_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Appends encoded `IndexRecord`s to `index.log` after its valid length and fsyncs; returns the new length.
fn append_index(dir: &Path, len: u64, records: &[Vec<u8>]) -> Result<u64, SpoolError> {
    append_index_to(&index_path(dir), dir, len, records)
}

fn append_index_to(path: &Path, dir: &Path, len: u64, records: &[Vec<u8>]) -> Result<u64, SpoolError> {
    let path = path.to_path_buf();
    let seal = spool_seal::unlocked(dir);
    if len >= HEADER_LEN && seal.is_some() && index_is_plain(dir)? && path == index_path(dir) {
        // Spool::open rewrites a plain index sealed before anything is appended; mixing would be unreadable.
        return Err(corrupt(&path, 0, "plain index.log met a sealed append"));
    }
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut buf = Vec::new();
    let start = if len < HEADER_LEN {
        buf.extend_from_slice(if seal.is_some() {
            SEALED_INDEX_MAGIC
        } else {
            INDEX_MAGIC
        });
        0
    } else {
        len
    };
    for payload in records {
        // The frame's offset in the file (a new file's buffer starts with the magic at offset 0).
        let at = start + buf.len() as u64;
        let sealed;
        let payload = match &seal {
            Some(seal) => {
                sealed = seal.seal(FileKind::Index, 0, at, payload);
                &sealed
            }
            None => payload,
        };
        let n = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&n.to_le_bytes());
        buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        buf.extend_from_slice(payload);
    }
    // Drop whatever a failed earlier append left behind the valid data.
    f.set_len(start).map_err(io_err(&path))?;
    f.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
    f.write_all(&buf).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    if start == 0 {
        sync_dir(dir)?;
    }
    Ok(start + buf.len() as u64)
}

/// True when the segment file starts with the sealed magic (or is too short to say: it is rewritten sealed).
fn segment_is_sealed(path: &Path) -> Result<bool, SpoolError> {
    let mut m = [0u8; 8];
    match File::open(path).and_then(|mut f| f.read_exact(&mut m)) {
        Ok(()) => Ok(&m != MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

fn create_segment(dir: &Path, segment: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, segment);
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // Every segment written now is sealed (the writer always holds the spool's key).
    f.write_all(SEALED_MAGIC).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(f)
}

/// What one trim pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimReport {
    /// The acknowledgement the pass worked from.
    pub acked: Position,
    /// False when the acknowledgement lies beyond the durable end (nothing was done; see [`Spool::trim_to`]).
    pub applied: bool,
    /// Whether the active segment was closed so that it could be deleted.
    pub rotated: bool,
    /// Segment files deleted.
    pub segments_removed: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, replays `index.log` and then every durable entry through `visit`
    /// so the caller can rebuild its indexes, truncates a torn tail, and starts the group-commit writer thread.
    ///
    /// `on_group` is called after each group commit (for metrics).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        seal: Arc<SpoolSeal>,
        mut visit: impl FnMut(Replayed),
        on_group: impl Fn(GroupStats) + Send + 'static,
    ) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        spool_seal::unlock(dir, seal.clone());
        if index_is_plain(dir)? {
            // Written before sealing: rewritten sealed before anything is appended.
            rewrite_index(dir, true, |_| true)?;
            tracing::info!("spool index rewritten sealed");
        }
        let index = read_index(dir, |r| visit(Replayed::Indexed(r)))?;
        let segments = list_segments(dir)?;
        let mut last_frame = None;
        let (mut file, mut segment, mut offset) = match segments.last().copied() {
            None => (create_segment(dir, 1)?, 1, HEADER_LEN),
            Some(last) => {
                let mut end = 0;
                for &s in &segments {
                    let e = read_segment(&segment_path(dir, s), s, s == last, |p, e| {
                        if p.segment == last {
                            last_frame = Some(p.offset);
                        }
                        visit(Replayed::Entry(p, e));
                    })?;
                    if s == last {
                        end = e;
                    }
                }
                let path = segment_path(dir, last);
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                if end < HEADER_LEN {
                    // Torn before the header completed: rewrite the header.
                    f.set_len(0).map_err(io_err(&path))?;
                    let mut f2 = &f;
                    f2.write_all(SEALED_MAGIC).map_err(io_err(&path))?;
                    end = HEADER_LEN;
                }
                let file_len = f.metadata().map_err(io_err(&path))?.len();
                if file_len != end {
                    tracing::warn!(
                        segment = last,
                        torn_bytes = file_len - end,
                        "truncating torn spool tail"
                    );
                    f.set_len(end).map_err(io_err(&path))?;
                }
                f.sync_all().map_err(io_err(&path))?;
                let mut f = f;
                f.seek(SeekFrom::Start(end)).map_err(io_err(&path))?;
                (f, last, end)
            }
        };
        if !segment_is_sealed(&segment_path(dir, segment))? {
            // A segment written before sealing is closed as it is (read until acknowledged, then deleted); new
            // frames go to a sealed one.
            file.sync_all().map_err(io_err(dir))?;
            segment += 1;
            file = create_segment(dir, segment)?;
            offset = HEADER_LEN;
            last_frame = None;
        }
        // A same-host core may have read (and acknowledged) frames that were lost in a machine crash before their
        // fsync. New frames must never land at or below that acknowledgement, or they would be deleted unread.
        if let Some(acked) = read_ack(dir)?
            && acked >= (Position { segment, offset })
        {
            let fence = segment.max(acked.segment) + 1;
            let end = Position { segment, offset };
            tracing::warn!(
                %acked,
                %end,
                fence,
                "the core acknowledged beyond the spool's end; starting a new segment"
            );
            file.sync_all().map_err(io_err(dir))?;
            file = create_segment(dir, fence)?;
            segment = fence;
            offset = HEADER_LEN;
            last_frame = None;
        }
        let (durable_tx, durable) = watch::channel(Position { segment, offset });
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            seal,
            dir: dir.to_path_buf(),
            file,
            segment,
            offset,
            last_frame,
            last_ack_rotation: None,
            segment_bytes: segment_bytes.min(MAX_SEGMENT_BYTES),
            on_group: Box::new(on_group),
            healthy: healthy.clone(),
            durable: durable_tx,
        };
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok(Spool {
            tx,
            healthy,
            durable,
            dir: Arc::new(dir.to_path_buf()),
            index: Arc::new(tokio::sync::Mutex::new(index)),
            ack_rotation_interval: DEFAULT_ACK_ROTATION_INTERVAL,
        })
    }

    /// Sets the shortest time between two rotations of the active segment caused by acknowledgements.
    ///
    /// Closing the active segment early lets acknowledged data (an erased patient's, say) be deleted without
    /// waiting for the segment to fill; rate-limiting it keeps segment numbers (< 2^24, see
    /// [`Position::to_seq`]) from being used up by a core that acknowledges every few milliseconds. The first
    /// rotation after start is never delayed.
    pub fn with_ack_rotation_interval(mut self, interval: Duration) -> Spool {
        self.ack_rotation_interval = interval;
        self
    }

    /// Appends an entry; resolves once it is durable, with its position.
    pub async fn commit(&self, entry: &SpoolEntry) -> Result<Position, SpoolError> {
        let payload = entry.encode_to_vec();
        if payload.len() + spool_seal::OVERHEAD > MAX_FRAME as usize {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Commit(Job { payload, reply }))
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// False once the writer has stopped after an I/O error: nothing more can be made durable, so the
    /// gateway must report itself not ready and refuse work until restarted.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The position just after the last fsync'd frame: every frame before it is durable. What the remote feed
    /// may serve.
    pub fn durable_end(&self) -> Position {
        *self.durable.borrow()
    }

    /// A receiver that changes whenever the durable end moves, so that a feed can wait for new entries instead of
    /// polling.
    pub fn watch_durable(&self) -> watch::Receiver<Position> {
        self.durable.clone()
    }

    /// Applies the acknowledgement in `core.ack`, if any (see [`Spool::trim_to`]). The gateway calls this at
    /// start and every few seconds, for a core that acknowledges by writing the file (same host).
    pub async fn apply_ack_file(&self) -> Result<Option<TrimReport>, SpoolError> {
        let dir = self.dir.clone();
        let acked = tokio::task::spawn_blocking(move || read_ack(&dir))
            .await
            .map_err(|_| SpoolError::Closed)??;
        match acked {
            Some(a) => Ok(Some(self.trim_to(a).await?)),
            None => Ok(None),
        }
    }

    /// Forgets the outcomes of batches committed before `cutoff_ms` from `index.log` ([`expire_index`]), under
    /// the lock trimming takes, so the two never interleave.
    pub async fn expire_batches(&self, cutoff_ms: i64) -> Result<u64, SpoolError> {
        let mut index = self.index.lock().await;
        let dir = self.dir.clone();
        let (removed, state) = tokio::task::spawn_blocking(move || {
            let removed = expire_index(&dir, cutoff_ms)?;
            // The file changed only when something went.
            let state = if removed > 0 {
                Some(read_index(&dir, |_| {})?)
            } else {
                None
            };
            Ok::<_, SpoolError>((removed, state))
        })
        .await
        .map_err(|_| SpoolError::Closed)??;
        if let Some(state) = state {
            index.len = state.len;
            // Entries up to the old mark were summarised (or expired) already: never summarise them again.
            index.upto = index.upto.max(state.upto);
        }
        Ok(removed)
    }

    /// Records the core's acknowledgement of everything up to and including `upto` (the `Ack` RPC), then trims.
    /// An acknowledgement of a position that is not durable yet is refused: the core cannot have it.
    pub async fn ack(&self, upto: Position) -> Result<TrimReport, SpoolError> {
        let index = self.index.lock().await;
        let end = self.durable_end();
        if upto >= end {
            return Err(SpoolError::BeyondEnd { after: upto, end });
        }
        let dir = self.dir.clone();
        let acked = tokio::task::spawn_blocking(move || write_ack(&dir, upto))
            .await
            .map_err(|_| SpoolError::Closed)??;
        self.trim_locked(index, acked).await
    }

    /// Deletes every segment whose every frame is at or before `acked`, after appending their summaries to
    /// `index.log` (fsync'd first). When every frame of the active segment is acknowledged, the writer first
    /// starts a new segment so that the old one can go too (at most once per
    /// [`Spool::with_ack_rotation_interval`]).
    ///
    /// An acknowledgement at or beyond the durable end is not applied (`applied: false`): a same-host core may
    /// have read a frame whose fsync is still running, and the next pass applies it.
    pub async fn trim_to(&self, acked: Position) -> Result<TrimReport, SpoolError> {
        let index = self.index.lock().await;
        self.trim_locked(index, acked).await
    }

    async fn trim_locked(
        &self,
        mut index: tokio::sync::MutexGuard<'_, IndexState>,
        acked: Position,
    ) -> Result<TrimReport, SpoolError> {
        let mut report = TrimReport {
            acked,
            applied: false,
            rotated: false,
            segments_removed: 0,
        };
        let end = self.durable_end();
        if acked >= end {
            if acked.segment > end.segment && index.warned != Some(acked) {
                tracing::warn!(
                    %acked,
                    %end,
                    "the core's acknowledgement lies beyond the spool's durable end; not trimming"
                );
                index.warned = Some(acked);
            }
            return Ok(report);
        }
        report.applied = true;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Rotate {
                acked,
                min_interval: self.ack_rotation_interval,
                reply,
            })
            .await
            .map_err(|_| SpoolError::Closed)?;
        let active = rx.await.map_err(|_| SpoolError::Closed)??;
        report.rotated = active > end.segment;
        let dir = self.dir.clone();
        let state = *index;
        let (state, removed) = tokio::task::spawn_blocking(move || trim_segments(&dir, acked, active, state))
            .await
            .map_err(|_| SpoolError::Closed)??;
        *index = state;
        report.segments_removed = removed;
        if removed > 0 {
            tracing::info!(%acked, segments = removed, "trimmed acknowledged spool segments");
        }
        Ok(report)
    }
}

/// Deletes the fully acknowledged segments before `active`, summarising them into `index.log` first.
fn trim_segments(
    dir: &Path,
    acked: Position,
    active: u64,
    mut state: IndexState,
) -> Result<(IndexState, u64), SpoolError> {
    let mut doomed = Vec::new();
    for s in list_segments(dir)? {
        if s >= active || s > acked.segment {
            break;
        }
        if s == acked.segment && last_frame_offset(&segment_path(dir, s))?.is_some_and(|o| o > acked.offset) {
            break;
        }
        doomed.push(s);
    }
    if doomed.is_empty() {
        return Ok((state, 0));
    }
    let mut records = Vec::new();
    let mut upto = state.upto;
    for &s in &doomed {
        read_segment(&segment_path(dir, s), s, false, |p, e| {
            if upto.is_none_or(|u| p > u) {
                if let Some(r) = summarise(p, &e) {
                    records.push(r.encode_to_vec());
                }
                upto = Some(p);
            }
        })?;
    }
    if !records.is_empty() {
        state.len = append_index(dir, state.len, &records)?;
    }
    state.upto = upto;
    for &s in &doomed {
        let p = segment_path(dir, s);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    sync_dir(dir)?;
    Ok((state, doomed.len() as u64))
}

struct Writer {
    seal: Arc<SpoolSeal>,
    dir: PathBuf,
    file: File,
    segment: u64,
    offset: u64,
    /// Offset of the last frame in the active segment.
    last_frame: Option<u64>,
    last_ack_rotation: Option<Instant>,
    segment_bytes: u64,
    on_group: Box<dyn Fn(GroupStats) + Send>,
    healthy: Arc<AtomicBool>,
    durable: watch::Sender<Position>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = Vec::new();
            let mut control = None;
            match first {
                Msg::Commit(j) => jobs.push(j),
                c @ Msg::Rotate { .. } => control = Some(c),
            }
            let mut bytes = jobs.first().map_or(0, |j| j.payload.len());
            while control.is_none() && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(Msg::Commit(j)) => {
                        bytes += j.payload.len();
                        jobs.push(j);
                    }
                    Ok(c) => control = Some(c),
                    Err(_) => break,
                }
            }
            if !jobs.is_empty() {
                match self.write_group(&jobs, &mut buf) {
                    Ok(positions) => {
                        for (job, pos) in jobs.into_iter().zip(positions) {
                            let _ = job.reply.send(Ok(pos));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "spool group commit failed; refusing further commits");
                        self.healthy.store(false, Ordering::SeqCst);
                        for job in jobs {
                            let _ = job.reply.send(Err(SpoolError::Closed));
                        }
                        // Whatever reached the file without a completed fsync may or may not survive; no receipt
                        // was sent for it, and the hospital will retry. Stop accepting work: readiness goes red.
                        return;
                    }
                }
            }
            if let Some(Msg::Rotate {
                acked,
                min_interval,
                reply,
            }) = control
            {
                match self.rotate_if_acked(acked, min_interval) {
                    Ok(active) => {
                        let _ = reply.send(Ok(active));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "spool segment rotation failed; refusing further commits");
                        self.healthy.store(false, Ordering::SeqCst);
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
            }
        }
        let _ = self.file.sync_data();
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.file.sync_all().map_err(io_err(&self.dir))?;
        let next = self.segment + 1;
        self.file = create_segment(&self.dir, next)?;
        self.segment = next;
        self.offset = HEADER_LEN;
        self.last_frame = None;
        self.durable.send_replace(Position {
            segment: next,
            offset: HEADER_LEN,
        });
        Ok(())
    }

    fn rotate_if_acked(&mut self, acked: Position, min_interval: Duration) -> Result<u64, SpoolError> {
        let covered = self.last_frame.is_some_and(|offset| {
            Position {
                segment: self.segment,
                offset,
            } <= acked
        });
        let due = self.last_ack_rotation.is_none_or(|t| t.elapsed() >= min_interval);
        if covered && due {
            self.rotate()?;
            self.last_ack_rotation = Some(Instant::now());
        }
        Ok(self.segment)
    }

    fn write_group(&mut self, jobs: &[Job], buf: &mut Vec<u8>) -> Result<Vec<Position>, SpoolError> {
        if self.offset >= self.segment_bytes {
            self.rotate()?;
        }
        buf.clear();
        let mut positions = Vec::with_capacity(jobs.len());
        let mut offset = self.offset;
        for job in jobs {
            positions.push(Position {
                segment: self.segment,
                offset,
            });
            let sealed = self.seal.seal(FileKind::Segment, self.segment, offset, &job.payload);
            let n = u32::try_from(sealed.len()).unwrap_or(u32::MAX);
            buf.extend_from_slice(&n.to_le_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&sealed).to_le_bytes());
            buf.extend_from_slice(&sealed);
            offset += FRAME_HEADER as u64 + sealed.len() as u64;
        }
        let path = segment_path(&self.dir, self.segment);
        self.file.write_all(buf).map_err(io_err(&path))?;
        let started = Instant::now();
        self.file.sync_data().map_err(io_err(&path))?;
        (self.on_group)(GroupStats {
            commits: jobs.len(),
            bytes: buf.len(),
            fsync: started.elapsed(),
        });
        self.offset = offset;
        self.last_frame = positions.last().map(|p| p.offset).or(self.last_frame);
        self.durable.send_replace(Position {
            segment: self.segment,
            offset,
        });
        Ok(positions)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokumei_ingest::registry::{Admission, Registry};
    use tokumei_proto::ingest::v1::Rejection;
    use tokumei_proto::spool::v1::{BatchCommit, PatientRequestEntry, PseudonymisedRecord};

    fn entry(id: &str) -> SpoolEntry {
        SpoolEntry {
            entry: Some(Entry::Batch(BatchCommit {
                hospital_code: "1310000001".into(),
                batch_id: id.into(),
                ..Default::default()
            })),
            committed_at_ms: 1,
        }
    }

    /// A batch the registry indexes: 32-byte digest, one record, one rejection.
    fn batch(i: u8) -> SpoolEntry {
        SpoolEntry {
            entry: Some(Entry::Batch(BatchCommit {
                hospital_code: "1310000001".into(),
                batch_id: format!("b{i}"),
                content_digest: vec![i; 32],
                records: vec![PseudonymisedRecord {
                    linkage_key: vec![i; 32],
                    birth_date: "1950-01-01".into(),
                    ..Default::default()
                }],
                rejections: vec![Rejection {
                    batch_id: format!("b{i}"),
                    index: 1,
                    reason: "INVALID_DATE".into(),
                    detail: "birth_date".into(),
                }],
            })),
            committed_at_ms: i64::from(i),
        }
    }

    fn request(i: u8) -> SpoolEntry {
        SpoolEntry {
            entry: Some(Entry::Request(PatientRequestEntry {
                hospital_code: "1310000001".into(),
                request_id: format!("r{i}"),
                kind: 1,
                linkage_keys: vec![vec![100 + i; 32]],
                hospital_pseudonym: vec![200 + i; 32],
                matched_by: "INSURED".into(),
                id4_keys: Vec::new(),
            })),
            committed_at_ms: 7,
        }
    }

    fn id_of(e: &SpoolEntry) -> String {
        match &e.entry {
            Some(Entry::Batch(b)) => b.batch_id.clone(),
            Some(Entry::Request(r)) => r.request_id.clone(),
            None => String::new(),
        }
    }

    fn ids(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        read_all(dir, |_, e| out.push(id_of(&e))).unwrap();
        out
    }

    fn all(dir: &Path) -> Vec<(Position, String)> {
        let mut out = Vec::new();
        read_all(dir, |p, e| out.push((p, id_of(&e)))).unwrap();
        out
    }

    fn open(dir: &Path, segment_bytes: u64) -> Spool {
        Spool::open(dir, segment_bytes, test_seal(), |_| {}, |_| {}).unwrap()
    }

    /// Lets the writer thread of dropped handles finish.
    /// The key every test spool is sealed under.
    pub(crate) fn test_seal() -> Arc<SpoolSeal> {
        Arc::new(SpoolSeal::from_key(&[42; 32]))
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn commits_survive_reopen_and_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = open(dir.path(), 1 << 20);
            let futs: Vec<_> = (0..50)
                .map(|i| {
                    let s = spool.clone();
                    tokio::spawn(async move { s.commit(&entry(&format!("b{i}"))).await.unwrap() })
                })
                .collect();
            for f in futs {
                f.await.unwrap();
            }
        }
        settle().await;
        assert_eq!(ids(dir.path()).len(), 50);
        // Simulate a crash mid-write: append half a frame.
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
        drop(f);
        let mut seen = 0;
        let spool = Spool::open(dir.path(), 1 << 20, test_seal(), |_| seen += 1, |_| {}).unwrap();
        assert_eq!(seen, 50);
        spool.commit(&entry("after")).await.unwrap();
        drop(spool);
        settle().await;
        let all = ids(dir.path());
        assert_eq!(all.len(), 51);
        assert_eq!(all.last().unwrap(), "after");
    }

    #[tokio::test]
    async fn segments_roll_over() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), 200);
        for i in 0..20 {
            spool.commit(&entry(&format!("b{i}"))).await.unwrap();
        }
        drop(spool);
        settle().await;
        assert!(list_segments(dir.path()).unwrap().len() > 1);
        assert_eq!(ids(dir.path()).len(), 20);
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let spool = open(dir.path(), 150);
            for i in 0..10 {
                spool.commit(&entry(&format!("b{i}"))).await.unwrap();
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        assert!(matches!(
            read_all(dir.path(), |_, _| {}),
            Err(SpoolError::Corrupt { .. })
        ));
        assert!(matches!(
            read_after(dir.path(), None, usize::MAX),
            Err(SpoolError::Corrupt { .. })
        ));
    }

    #[test]
    fn seq_round_trips_and_keeps_spool_order() {
        let mut positions = vec![
            Position { segment: 0, offset: 0 },
            Position { segment: 1, offset: 8 },
            Position { segment: 1, offset: 9 },
            Position {
                segment: 1,
                offset: (1 << 40) - 1,
            },
            Position { segment: 2, offset: 8 },
            Position {
                segment: 77,
                offset: 64 << 20,
            },
            Position {
                segment: (1 << 24) - 1,
                offset: (1 << 40) - 1,
            },
        ];
        for p in &positions {
            assert_eq!(Position::from_seq(p.to_seq()), *p);
        }
        for w in positions.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_seq() < w[1].to_seq(), "{} !< {}", w[0], w[1]);
        }
        positions.reverse();
        let mut by_seq = positions.clone();
        by_seq.sort_by_key(|p| p.to_seq());
        positions.sort();
        assert_eq!(by_seq, positions);
        let json = serde_json::to_string(&positions[1]).unwrap();
        assert_eq!(json, r#"{"segment":1,"offset":8}"#);
    }

    /// Writes `n` entries into small segments and returns every (position, id).
    async fn multi_segment(dir: &Path, n: u8) -> Vec<(Position, String)> {
        let spool = open(dir, 300);
        for i in 0..n {
            let e = if i % 5 == 4 { request(i) } else { batch(i) };
            spool.commit(&e).await.unwrap();
        }
        drop(spool);
        settle().await;
        let all = all(dir);
        assert_eq!(all.len(), usize::from(n));
        assert!(list_segments(dir).unwrap().len() >= 3);
        all
    }

    #[tokio::test]
    async fn read_after_returns_exactly_the_suffix_from_every_position() {
        let dir = tempfile::tempdir().unwrap();
        let all = multi_segment(dir.path(), 30).await;
        let got = |after| -> Vec<(Position, String)> {
            read_after(dir.path(), after, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(p, e)| (p, id_of(&e)))
                .collect()
        };
        assert_eq!(got(None), all);
        for i in 0..all.len() {
            assert_eq!(got(Some(all[i].0)), all[i + 1..], "after {}", all[i].0);
        }
        // Chunked by a tiny byte budget: one entry per call, same sequence.
        let mut chunks = Vec::new();
        let mut after = None;
        loop {
            let c = read_after(dir.path(), after, 1).unwrap();
            if c.is_empty() {
                break;
            }
            assert_eq!(c.len(), 1);
            after = Some(c[0].0);
            chunks.push((c[0].0, id_of(&c[0].1)));
        }
        assert_eq!(chunks, all);
        // The durable reader stops at the given end and refuses positions beyond it.
        let end = all[10].0;
        let d = read_durable_after(dir.path(), Some(all[3].0), usize::MAX, end).unwrap();
        let d: Vec<Position> = d.into_iter().map(|(p, _)| p).collect();
        assert_eq!(d, all[4..10].iter().map(|(p, _)| *p).collect::<Vec<_>>());
        assert!(matches!(
            read_durable_after(dir.path(), Some(end), usize::MAX, end),
            Err(SpoolError::BeyondEnd { .. })
        ));
        // A position in a segment that never existed is an error, not an endless wait.
        assert!(matches!(
            read_after(
                dir.path(),
                Some(Position {
                    segment: 999,
                    offset: 8
                }),
                1
            ),
            Err(SpoolError::Missing { .. })
        ));
    }

    #[tokio::test]
    async fn a_torn_or_unfinished_tail_is_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let all = multi_segment(dir.path(), 12).await;
        let last_seg = *list_segments(dir.path()).unwrap().last().unwrap();
        let path = segment_path(dir.path(), last_seg);
        // A header promising more bytes than were written (the writer is mid-write).
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[100, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let got = read_after(dir.path(), None, usize::MAX).unwrap();
        assert_eq!(got.len(), all.len());
        let tail = read_after(dir.path(), Some(all[all.len() - 1].0), usize::MAX).unwrap();
        assert!(tail.is_empty());
        // A complete frame with a wrong checksum at the tail is not returned either.
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 9)
            .unwrap();
        let payload = batch(99).encode_to_vec();
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&(crc32c::crc32c(&payload) ^ 1).to_le_bytes());
        frame.extend_from_slice(&payload);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&frame)
            .unwrap();
        assert_eq!(read_after(dir.path(), None, usize::MAX).unwrap().len(), all.len());
    }

    #[test]
    fn acknowledgements_never_move_backwards() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_ack(dir.path()).unwrap(), None);
        let p1 = Position { segment: 2, offset: 80 };
        let p2 = Position { segment: 3, offset: 8 };
        assert_eq!(write_ack(dir.path(), p2).unwrap(), p2);
        assert_eq!(write_ack(dir.path(), p1).unwrap(), p2);
        assert_eq!(read_ack(dir.path()).unwrap(), Some(p2));
        let p3 = Position { segment: 3, offset: 90 };
        assert_eq!(write_ack(dir.path(), p3).unwrap(), p3);
        assert_eq!(read_ack(dir.path()).unwrap(), Some(p3));
        let text = std::fs::read_to_string(ack_path(dir.path())).unwrap();
        assert_eq!(text, r#"{"segment":3,"offset":90}"#);
        std::fs::write(ack_path(dir.path()), "garbage").unwrap();
        assert!(matches!(read_ack(dir.path()), Err(SpoolError::BadAck { .. })));
    }

    /// The replayed item as the gateway's registry takes it (its own copy of this crate's type: the registry is
    /// reached through the dev-dependency on the gateway).
    fn as_gateways(r: Replayed) -> tokumei_ingest::spool::Replayed {
        match r {
            Replayed::Indexed(i) => tokumei_ingest::spool::Replayed::Indexed(i),
            Replayed::Entry(p, e) => tokumei_ingest::spool::Replayed::Entry(
                tokumei_ingest::spool::Position {
                    segment: p.segment,
                    offset: p.offset,
                },
                e,
            ),
        }
    }

    fn rebuilt(dir: &Path) -> (Registry, Spool) {
        let mut reg = Registry::default();
        let spool = Spool::open(dir, 300, test_seal(), |r| reg.replay(as_gateways(r)), |_| {}).unwrap();
        (reg, spool)
    }

    fn replayed(reg: &Registry, i: u8) -> Option<tokumei_ingest::registry::BatchOutcome> {
        let key = ("1310000001".to_string(), format!("b{i}"));
        let digest = [i; 32];
        match reg.admit(&key, &digest) {
            Admission::Replay(o) => Some(o),
            _ => None,
        }
    }

    #[tokio::test]
    async fn segments_and_index_are_sealed_and_open_only_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let all = multi_segment(dir.path(), 12).await;
        let last = all.last().unwrap().0;
        let spool = open(dir.path(), 300);
        write_ack(dir.path(), all[5].0).unwrap();
        spool.trim_to(all[5].0).await.unwrap();
        drop(spool);
        settle().await;
        // No file holds a clinical value, a batch id or a digest in the clear.
        for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            for needle in [&b"1950-01-01"[..], b"1310000001", b"INVALID_DATE"] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{:?}", e.path());
            }
        }
        assert_eq!(&std::fs::read(index_path(dir.path())).unwrap()[..8], SEALED_INDEX_MAGIC);
        assert_eq!(
            read_after(dir.path(), None, usize::MAX).unwrap().last().unwrap().0,
            last
        );
        // Under another key nothing opens: neither the segments nor the index.
        spool_seal::unlock(dir.path(), Arc::new(SpoolSeal::from_key(&[7; 32])));
        assert!(matches!(
            read_all(dir.path(), |_, _| {}),
            Err(SpoolError::Corrupt { .. })
        ));
        assert!(read_index(dir.path(), |_| {}).is_err());
        spool_seal::unlock(dir.path(), test_seal());
        assert!(read_all(dir.path(), |_, _| {}).is_ok());
    }

    #[tokio::test]
    async fn a_spool_written_before_sealing_is_read_then_continued_sealed() {
        let dir = tempfile::tempdir().unwrap();
        // A plain segment and a plain index, as written before this version.
        let frame = |payload: &[u8]| {
            let mut f = Vec::new();
            f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            f.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
            f.extend_from_slice(payload);
            f
        };
        let mut seg = MAGIC.to_vec();
        seg.extend(frame(&batch(1).encode_to_vec()));
        std::fs::write(segment_path(dir.path(), 1), &seg).unwrap();
        let old = summarise(Position { segment: 0, offset: 8 }, &batch(0)).unwrap();
        let mut index = INDEX_MAGIC.to_vec();
        index.extend(frame(&old.encode_to_vec()));
        std::fs::write(index_path(dir.path()), &index).unwrap();

        let (reg, spool) = rebuilt(dir.path());
        assert!(replayed(&reg, 0).is_some(), "the plain index was read");
        assert!(replayed(&reg, 1).is_some(), "the plain segment was read");
        assert_eq!(&std::fs::read(index_path(dir.path())).unwrap()[..8], SEALED_INDEX_MAGIC);
        let p = spool.commit(&batch(2)).await.unwrap();
        assert_eq!(p.segment, 2, "new frames go to a new, sealed segment");
        drop(spool);
        settle().await;
        assert_eq!(&std::fs::read(segment_path(dir.path(), 2)).unwrap()[..8], SEALED_MAGIC);
        let ids: Vec<u64> = read_after(dir.path(), None, usize::MAX)
            .unwrap()
            .iter()
            .map(|(p, _)| p.segment)
            .collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[tokio::test]
    async fn batch_outcomes_past_the_window_are_forgotten_and_requests_kept() {
        let dir = tempfile::tempdir().unwrap();
        let all = multi_segment(dir.path(), 30).await;
        let last = all.last().unwrap().0;
        let spool = open(dir.path(), 300);
        write_ack(dir.path(), last).unwrap();
        spool.trim_to(last).await.unwrap();
        drop(spool);
        settle().await;
        let (mut before, spool) = rebuilt(dir.path());
        // batch(i) was committed at i ms; requests are every fifth entry.
        let old_batches = (0..15u8).filter(|i| i % 5 != 4).count();
        assert_eq!(before.expire_batches(15), old_batches);
        assert_eq!(spool.expire_batches(15).await.unwrap(), old_batches as u64);
        assert_eq!(
            spool.expire_batches(15).await.unwrap(),
            0,
            "expiring again removes nothing"
        );
        // The index still takes appends after the rewrite.
        let p = spool.commit(&batch(100)).await.unwrap();
        write_ack(dir.path(), p).unwrap();
        spool.trim_to(p).await.unwrap();
        drop(spool);
        settle().await;
        let (after, _spool) = rebuilt(dir.path());
        for i in (0..30u8).filter(|i| i % 5 != 4) {
            assert_eq!(replayed(&after, i).is_some(), i >= 15, "batch b{i}");
            assert_eq!(replayed(&after, i), replayed(&before, i), "batch b{i}");
        }
        assert!(replayed(&after, 100).is_some());
        for i in (0..30u8).filter(|i| i % 5 == 4) {
            assert!(
                after.request("1310000001", &format!("r{i}")).is_some(),
                "request r{i} kept"
            );
        }
    }

    #[tokio::test]
    async fn an_all_rejected_batch_is_kept_as_counts_and_its_first_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), 1 << 20);
        let rejections: Vec<Rejection> = (0..5_000u32)
            .map(|i| Rejection {
                batch_id: "big".into(),
                index: i,
                reason: if i % 2 == 0 { "INVALID_DATE" } else { "MISSING_IDENTITY" }.into(),
                detail: "birth_date must be YYYY-MM-DD".into(),
            })
            .collect();
        let entry = SpoolEntry {
            entry: Some(Entry::Batch(BatchCommit {
                hospital_code: "1310000001".into(),
                batch_id: "big".into(),
                content_digest: vec![9; 32],
                records: Vec::new(),
                rejections,
            })),
            committed_at_ms: 1,
        };
        let p = spool.commit(&entry).await.unwrap();
        let key = ("1310000001".to_string(), "big".to_string());
        let check = |reg: &Registry| match reg.admit(&key, &[9; 32]) {
            Admission::Replay(o) => {
                assert_eq!(o.rejections.len(), REJECTIONS_KEPT);
                assert_eq!(o.rejected_total, 5_000);
                assert_eq!(
                    o.rejected_by_reason,
                    vec![
                        ("INVALID_DATE".to_string(), 2_500),
                        ("MISSING_IDENTITY".to_string(), 2_500)
                    ]
                );
            }
            _ => panic!("not a replay"),
        };
        // From the segment, and once the segment is gone, from index.log.
        drop(spool);
        settle().await;
        let (reg, spool) = rebuilt(dir.path());
        check(&reg);
        write_ack(dir.path(), p).unwrap();
        spool.trim_to(p).await.unwrap();
        drop(spool);
        settle().await;
        let index_bytes = std::fs::metadata(index_path(dir.path())).unwrap().len();
        assert!(
            index_bytes < 100_000,
            "index.log holds {index_bytes} bytes for one batch"
        );
        let (reg, _spool) = rebuilt(dir.path());
        check(&reg);
    }

    #[tokio::test]
    async fn trim_deletes_only_fully_acknowledged_segments_and_keeps_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let all = multi_segment(dir.path(), 30).await;
        let (before, _) = rebuilt(dir.path());
        settle().await;
        let segs = list_segments(dir.path()).unwrap();
        // Acknowledge a frame in the middle of the third segment: the first two go, the third stays.
        let third: Vec<&(Position, String)> = all.iter().filter(|(p, _)| p.segment == segs[2]).collect();
        assert!(third.len() >= 2);
        let mid = third[0].0;
        let spool = open(dir.path(), 300);
        write_ack(dir.path(), mid).unwrap();
        let report = spool.trim_to(mid).await.unwrap();
        assert!(report.applied);
        assert!(!report.rotated);
        assert_eq!(report.segments_removed, 2);
        assert_eq!(list_segments(dir.path()).unwrap(), segs[2..].to_vec());
        assert!(index_path(dir.path()).exists());
        // The same acknowledgement again does nothing more.
        assert_eq!(spool.trim_to(mid).await.unwrap().segments_removed, 0);
        // Reading after the acknowledged position still works (the core resumes there).
        let rest = read_after(dir.path(), Some(mid), usize::MAX).unwrap();
        assert_eq!(rest.len(), all.iter().filter(|(p, _)| *p > mid).count());
        // A fresh reader starts at the oldest remaining entry; a reader behind the acknowledgement whose entries
        // were deleted is told so instead of silently skipping them.
        assert_eq!(read_after(dir.path(), None, usize::MAX).unwrap()[0].0, third[0].0);
        assert!(matches!(
            read_after(dir.path(), Some(all[0].0), usize::MAX),
            Err(SpoolError::Missing { .. })
        ));

        // Acknowledge everything: the active segment is rotated and every old segment is deleted.
        let last = all.last().unwrap().0;
        write_ack(dir.path(), last).unwrap();
        let report = spool.trim_to(last).await.unwrap();
        assert!(report.rotated);
        let left = list_segments(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0] > last.segment);
        assert!(read_after(dir.path(), Some(last), usize::MAX).unwrap().is_empty());
        let p = spool.commit(&batch(200)).await.unwrap();
        assert_eq!(p.segment, left[0]);
        let next = read_after(dir.path(), Some(last), usize::MAX).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, p);
        // Clinical records are not in what was kept.
        let index = std::fs::read(index_path(dir.path())).unwrap();
        assert!(!index.windows(10).any(|w| w == b"1950-01-01"));
        drop(spool);
        settle().await;

        // The registry rebuilt from index.log + the remaining segment answers exactly as before.
        let (after, _) = rebuilt(dir.path());
        for i in 0..30u8 {
            assert_eq!(replayed(&after, i), replayed(&before, i), "batch b{i}");
            if i % 5 != 4 {
                let o = replayed(&after, i).unwrap();
                assert_eq!(o.accepted, 1);
                assert_eq!(o.rejections.len(), 1);
            }
        }
        assert!(replayed(&after, 200).is_some());
        assert_eq!(after.batch_count(), before.batch_count() + 1);
        assert_eq!(after.opted_out_count(), before.opted_out_count());
        assert!(after.request("1310000001", "r4").is_some());
        // Different content under a trimmed batch id is still a conflict.
        assert!(matches!(
            after.admit(&("1310000001".to_string(), "b1".to_string()), &[9; 32]),
            Admission::Conflict
        ));
    }

    #[tokio::test]
    async fn a_crash_between_index_append_and_delete_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let all = multi_segment(dir.path(), 20).await;
        let segs = list_segments(dir.path()).unwrap();
        let saved: Vec<(PathBuf, Vec<u8>)> = segs[..2]
            .iter()
            .map(|&s| {
                (
                    segment_path(dir.path(), s),
                    std::fs::read(segment_path(dir.path(), s)).unwrap(),
                )
            })
            .collect();
        let last_of_second = all.iter().rfind(|(p, _)| p.segment == segs[1]).unwrap().0;
        {
            let spool = open(dir.path(), 300);
            assert_eq!(spool.trim_to(last_of_second).await.unwrap().segments_removed, 2);
        }
        settle().await;
        // Put the segments back as if the deletion had not happened.
        for (p, bytes) in &saved {
            std::fs::write(p, bytes).unwrap();
        }
        let index_len = std::fs::metadata(index_path(dir.path())).unwrap().len();
        let (reg, spool) = rebuilt(dir.path());
        assert_eq!(
            reg.batch_count(),
            all.iter().filter(|(_, id)| id.starts_with('b')).count()
        );
        // Trimming again does not summarise the same entries twice.
        assert_eq!(spool.trim_to(last_of_second).await.unwrap().segments_removed, 2);
        assert_eq!(std::fs::metadata(index_path(dir.path())).unwrap().len(), index_len);
    }

    #[tokio::test]
    async fn durable_end_ack_and_rotation_limits() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), 1 << 20).with_ack_rotation_interval(Duration::from_secs(3600));
        let start = spool.durable_end();
        let p1 = spool.commit(&batch(1)).await.unwrap();
        let end = spool.durable_end();
        assert!(p1 >= start && p1 < end);
        let got = read_durable_after(dir.path(), None, usize::MAX, end).unwrap();
        assert_eq!(got.len(), 1);
        // An acknowledgement of something not durable yet is refused and changes nothing.
        assert!(matches!(spool.ack(end).await, Err(SpoolError::BeyondEnd { .. })));
        assert_eq!(read_ack(dir.path()).unwrap(), None);
        // First acknowledgement rotation happens at once.
        let r = spool.ack(p1).await.unwrap();
        assert!(r.rotated);
        assert_eq!(r.segments_removed, 1);
        assert_eq!(read_ack(dir.path()).unwrap(), Some(p1));
        // The next one waits for the interval: the segment stays until then (or until it fills up).
        let p2 = spool.commit(&batch(2)).await.unwrap();
        let r = spool.ack(p2).await.unwrap();
        assert!(!r.rotated);
        assert_eq!(r.segments_removed, 0);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![p2.segment]);
        // A lower acknowledgement does not move it back.
        assert_eq!(spool.ack(p1).await.unwrap().acked, p2);
        // apply_ack_file picks up what a same-host core wrote.
        let spool = spool.with_ack_rotation_interval(Duration::ZERO);
        let p3 = spool.commit(&batch(3)).await.unwrap();
        write_ack(dir.path(), p3).unwrap();
        let r = spool.apply_ack_file().await.unwrap().unwrap();
        assert!(r.rotated);
        assert_eq!(r.segments_removed, 1);
        assert!(read_after(dir.path(), Some(p3), usize::MAX).unwrap().is_empty());
        let u = usage(dir.path()).unwrap();
        assert_eq!(u.segments, 1);
        assert_eq!(u.acked, Some(p3));
        assert!(u.index_bytes > 0);
    }

    #[tokio::test]
    async fn an_acknowledgement_beyond_the_end_fences_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = {
            let spool = open(dir.path(), 1 << 20);
            spool.commit(&batch(1)).await.unwrap()
        };
        settle().await;
        // The core acknowledged a frame the machine lost before its fsync.
        let ghost = Position {
            segment: p.segment,
            offset: p.offset + 500,
        };
        write_ack(dir.path(), ghost).unwrap();
        let spool = open(dir.path(), 1 << 20);
        let q = spool.commit(&batch(2)).await.unwrap();
        assert!(q > ghost, "{q} must lie beyond the acknowledged {ghost}");
        let r = spool.trim_to(ghost).await.unwrap();
        assert!(r.applied);
        assert_eq!(read_after(dir.path(), Some(ghost), usize::MAX).unwrap().len(), 1);
    }
}
