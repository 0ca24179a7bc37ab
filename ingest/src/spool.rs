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

use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokumei_proto::spool::v1::SpoolEntry;

const MAGIC: &[u8; 8] = b"TKSPOOL1";
const FRAME_HEADER: usize = 8;
/// Upper bound on one frame's payload; larger lengths mean corruption.
const MAX_FRAME: u32 = 256 * 1024 * 1024;
/// How many bytes of queued commits one group may gather before it is written.
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// Where a frame sits: segment number and byte offset of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment number (the file `seg-<segment>.spool`).
    pub segment: u64,
    /// Offset of the frame header within the segment.
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
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

/// Handle to the writer thread. Cloning is cheap; the writer stops when every handle is dropped.
#[derive(Clone)]
pub struct Spool {
    tx: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
}

/// Segment file name for a segment number.
pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("seg-{segment:020}.spool"))
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

/// Reads every entry of a segment. Returns the entries and the offset where valid data ends.
/// `tail` says whether this is the last segment (a torn frame there is a crash artefact, not corruption).
fn read_segment(
    path: &Path,
    segment: u64,
    tail: bool,
    mut visit: impl FnMut(Position, SpoolEntry),
) -> Result<u64, SpoolError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let corrupt = |offset: u64, detail: &str| SpoolError::Corrupt {
        path: path.display().to_string(),
        offset,
        detail: detail.into(),
    };
    let mut magic = [0u8; 8];
    if len < MAGIC.len() as u64 {
        return if tail {
            Ok(0)
        } else {
            Err(corrupt(0, "shorter than the segment header"))
        };
    }
    r.read_exact(&mut magic).map_err(io_err(path))?;
    if &magic != MAGIC {
        return Err(corrupt(0, "not a spool segment"));
    }
    let mut offset = MAGIC.len() as u64;
    let mut payload = Vec::new();
    loop {
        if offset == len {
            return Ok(offset);
        }
        let torn = |detail: &str| if tail { Ok(offset) } else { Err(corrupt(offset, detail)) };
        if len - offset < FRAME_HEADER as u64 {
            return torn("truncated frame header");
        }
        let mut header = [0u8; FRAME_HEADER];
        r.read_exact(&mut header).map_err(io_err(path))?;
        let n = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if n > MAX_FRAME || u64::from(n) > len - offset - FRAME_HEADER as u64 {
            return torn("frame longer than the file");
        }
        payload.resize(n as usize, 0);
        r.read_exact(&mut payload).map_err(io_err(path))?;
        if crc32c::crc32c(&payload) != crc {
            return torn("checksum mismatch");
        }
        let entry = SpoolEntry::decode(payload.as_slice()).map_err(|e| corrupt(offset, &e.to_string()))?;
        visit(Position { segment, offset }, entry);
        offset += FRAME_HEADER as u64 + u64::from(n);
    }
}

/// Reads every entry in the spool directory in order (used by the core store and by tests).
pub fn read_all(dir: &Path, mut visit: impl FnMut(Position, SpoolEntry)) -> Result<(), SpoolError> {
    let segments = list_segments(dir)?;
    let last = segments.last().copied();
    for s in segments {
        read_segment(&segment_path(dir, s), s, Some(s) == last, &mut visit)?;
    }
    Ok(())
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
    f.write_all(MAGIC).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(f)
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, replays every durable entry through `visit` so the caller can
    /// rebuild its indexes, truncates a torn tail, and starts the group-commit writer thread.
    ///
    /// `on_group` is called after each group commit (for metrics).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        mut visit: impl FnMut(Position, SpoolEntry),
        on_group: impl Fn(GroupStats) + Send + 'static,
    ) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let segments = list_segments(dir)?;
        let (file, segment, offset) = match segments.last().copied() {
            None => (create_segment(dir, 1)?, 1, MAGIC.len() as u64),
            Some(last) => {
                let mut end = 0;
                for &s in &segments {
                    let e = read_segment(&segment_path(dir, s), s, s == last, &mut visit)?;
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
                if end < MAGIC.len() as u64 {
                    // Torn before the header completed: rewrite the header.
                    f.set_len(0).map_err(io_err(&path))?;
                    let mut f2 = &f;
                    f2.write_all(MAGIC).map_err(io_err(&path))?;
                    end = MAGIC.len() as u64;
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
        let (tx, rx) = mpsc::channel::<Job>(4096);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            dir: dir.to_path_buf(),
            file,
            segment,
            offset,
            segment_bytes,
            on_group: Box::new(on_group),
            healthy: healthy.clone(),
        };
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok(Spool { tx, healthy })
    }

    /// Appends an entry; resolves once it is durable, with its position.
    pub async fn commit(&self, entry: &SpoolEntry) -> Result<Position, SpoolError> {
        let payload = entry.encode_to_vec();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { payload, reply })
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// False once the writer has stopped after an I/O error: nothing more can be made durable, so the
    /// gateway must report itself not ready and refuse work until restarted.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    offset: u64,
    segment_bytes: u64,
    on_group: Box<dyn Fn(GroupStats) + Send>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            let mut bytes = jobs[0].payload.len();
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(j) => {
                        bytes += j.payload.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
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
        let _ = self.file.sync_data();
    }

    fn write_group(&mut self, jobs: &[Job], buf: &mut Vec<u8>) -> Result<Vec<Position>, SpoolError> {
        if self.offset >= self.segment_bytes {
            self.file.sync_all().map_err(io_err(&self.dir))?;
            self.segment += 1;
            self.file = create_segment(&self.dir, self.segment)?;
            self.offset = MAGIC.len() as u64;
        }
        buf.clear();
        let mut positions = Vec::with_capacity(jobs.len());
        let mut offset = self.offset;
        for job in jobs {
            positions.push(Position {
                segment: self.segment,
                offset,
            });
            let n = u32::try_from(job.payload.len()).unwrap_or(u32::MAX);
            buf.extend_from_slice(&n.to_le_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&job.payload).to_le_bytes());
            buf.extend_from_slice(&job.payload);
            offset += FRAME_HEADER as u64 + job.payload.len() as u64;
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
        Ok(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokumei_proto::spool::v1::{BatchCommit, spool_entry::Entry};

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

    fn ids(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        read_all(dir, |_, e| {
            if let Some(Entry::Batch(b)) = e.entry {
                out.push(b.batch_id)
            }
        })
        .unwrap();
        out
    }

    #[tokio::test]
    async fn commits_survive_reopen_and_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path(), 1 << 20, |_, _| {}, |_| {}).unwrap();
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
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ids(dir.path()).len(), 50);
        // Simulate a crash mid-write: append half a frame.
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
        drop(f);
        let mut seen = 0;
        let spool = Spool::open(dir.path(), 1 << 20, |_, _| seen += 1, |_| {}).unwrap();
        assert_eq!(seen, 50);
        spool.commit(&entry("after")).await.unwrap();
        drop(spool);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let all = ids(dir.path());
        assert_eq!(all.len(), 51);
        assert_eq!(all.last().unwrap(), "after");
    }

    #[tokio::test]
    async fn segments_roll_over() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 200, |_, _| {}, |_| {}).unwrap();
        for i in 0..20 {
            spool.commit(&entry(&format!("b{i}"))).await.unwrap();
        }
        drop(spool);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(list_segments(dir.path()).unwrap().len() > 1);
        assert_eq!(ids(dir.path()).len(), 20);
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let spool = Spool::open(dir.path(), 150, |_, _| {}, |_| {}).unwrap();
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
    }
}
