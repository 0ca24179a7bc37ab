//! Files at rest in the release zone: AES-256-GCM in 64 KiB authenticated chunks (the core store's sealed
//! object format), so that a download can resume at any byte offset by opening only the chunks it needs.
//!
//! Each release has its own data key, wrapped by the key service (local keyring or OpenBao) and kept in the
//! release's record; a copy of the zone's disk without the key service reveals nothing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use tokumei_store::encryption::sealed_object::{self, CHUNK, HEADER, Header};
use zeroize::Zeroizing;

use crate::error::{ReleaseError, Result};

/// A release's data key (unwrapped): every file sealed with it gets a key of its own derived from it and the
/// file's random salt (the sealed-object format's second version). Zeroed on drop, never printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// Wraps unwrapped key bytes.
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> DataKey {
        DataKey(bytes)
    }

    fn cipher(&self, header: &Header) -> Aes256Gcm {
        sealed_object::object_cipher(&self.0, header)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Seals `plain` into `dest` atomically (temporary file, fsync, rename): a crash leaves either no file or the
/// whole file, never a truncated one that would fail authentication at download time.
pub fn write(key: &DataKey, plain: &[u8], dest: &Path) -> Result<()> {
    let header = Header::fresh(0);
    let sealed =
        sealed_object::seal(&key.cipher(&header), header, plain).map_err(|e| ReleaseError::Sealed(e.to_string()))?;
    let tmp = tmp_path(dest);
    let mut f = File::create(&tmp).map_err(|e| ReleaseError::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(&sealed)
        .and_then(|()| f.sync_all())
        .map_err(|e| ReleaseError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, dest).map_err(|e| ReleaseError::io(format!("renaming {}", dest.display()), e))?;
    Ok(())
}

fn tmp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

/// An open sealed file: its plaintext length is known without decrypting; any range decrypts on demand.
pub struct SealedFile {
    file: File,
    cipher: Aes256Gcm,
    header: Header,
    sealed_len: u64,
    plain_len: u64,
}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFile")
            .field("plain_len", &self.plain_len)
            .finish_non_exhaustive()
    }
}

impl SealedFile {
    /// Opens `path` with the release's data key (checks the header; chunks are authenticated as they are read).
    pub fn open(path: &Path, key: &DataKey) -> Result<SealedFile> {
        let mut file = File::open(path).map_err(|e| ReleaseError::io(format!("opening {}", path.display()), e))?;
        let sealed_len = file
            .metadata()
            .map_err(|e| ReleaseError::io(format!("reading {}", path.display()), e))?
            .len();
        let mut head = [0u8; HEADER as usize];
        file.read_exact(&mut head)
            .map_err(|_| ReleaseError::Sealed(format!("{}: truncated header", path.display())))?;
        let header = Header::parse(&head).map_err(|e| ReleaseError::Sealed(e.to_string()))?;
        let cipher = key.cipher(&header);
        let plain_len = sealed_object::plain_len(sealed_len).map_err(|e| ReleaseError::Sealed(e.to_string()))?;
        Ok(SealedFile {
            file,
            cipher,
            header,
            sealed_len,
            plain_len,
        })
    }

    /// Length of the plaintext.
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// Decrypts the plaintext bytes `range` (clamped to the file), authenticating every chunk it touches.
    pub fn read_range(&mut self, range: Range<u64>) -> Result<Vec<u8>> {
        let end = range.end.min(self.plain_len);
        if range.start >= end {
            return Ok(Vec::new());
        }
        let total_chunks =
            sealed_object::chunk_count(self.sealed_len).map_err(|e| ReleaseError::Sealed(e.to_string()))?;
        let chunks = range.start / CHUNK..end.div_ceil(CHUNK);
        let stored = sealed_object::sealed_range(chunks.clone(), self.sealed_len);
        let mut buf = vec![0u8; (stored.end - stored.start) as usize];
        self.file
            .seek(SeekFrom::Start(stored.start))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|e| ReleaseError::io("reading a sealed file", e))?;
        let plain = sealed_object::open_chunks(&self.cipher, &self.header, chunks.start, total_chunks, &buf)
            .map_err(|e| ReleaseError::Sealed(e.to_string()))?;
        let offset = (range.start - chunks.start * CHUNK) as usize;
        let len = (end - range.start) as usize;
        plain
            .get(offset..offset + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| ReleaseError::Sealed("chunk shorter than its length".into()))
    }

    /// Decrypts the whole file.
    pub fn read_all(&mut self) -> Result<Vec<u8>> {
        self.read_range(0..self.plain_len)
    }
}

/// Stored size of a sealed file of `plain` bytes (for progress and space checks).
pub fn sealed_size(plain: u64) -> u64 {
    sealed_object::sealed_len(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_round_trips_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sealed");
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let key = DataKey::new(Zeroizing::new([7u8; 32]));
        write(&key, &plain, &path).unwrap();
        let mut f = SealedFile::open(&path, &key).unwrap();
        assert_eq!(f.plain_len(), plain.len() as u64);
        for (a, b) in [
            (0, 10),
            (65_530, 65_550),
            (131_071, 200_000),
            (199_999, 250_000),
            (5, 5),
        ] {
            let got = f.read_range(a..b).unwrap();
            assert_eq!(
                got,
                plain[a as usize..(b as usize).min(plain.len())].to_vec(),
                "range {a}..{b}"
            );
        }
        assert_eq!(f.read_all().unwrap(), plain);
        let other = DataKey::new(Zeroizing::new([8u8; 32]));
        assert!(SealedFile::open(&path, &other).unwrap().read_range(0..10).is_err());
        assert!(!format!("{key:?}").contains('7'), "the key is not printed");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER as usize + 70_000] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let mut f = SealedFile::open(&path, &key).unwrap();
        assert!(f.read_range(0..10).is_ok(), "untouched chunk still opens");
        assert!(f.read_range(66_000..66_010).is_err(), "tampered chunk is refused");
    }
}
