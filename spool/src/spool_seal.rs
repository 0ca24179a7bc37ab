//! The spool sealed at rest: every frame of a segment and of `index.log` is AES-256-GCM under a gateway data
//! key that exists on disk only wrapped by the key service (OpenBao transit or the local keyring).
//!
//! Why frames and not the store's sealed-object format: a segment is appended to by group commit and read from
//! any frame boundary while it grows; sealed objects are written whole. Each frame is sealed on its own — a
//! random 96-bit nonce, the tag, and as associated data the file kind, segment number and frame offset, so a
//! frame cannot be moved to another place or file without failing authentication. The CRC stays outside, over
//! the sealed bytes, so a torn tail is recognised without the key.
//!
//! The wrapped key lives in `<spool>/spool-key.json` (context `tokumei-spool:<spool id>`). Whoever reads the
//! spool (the gateway, a same-host core, `tokumei spool status`) unwraps it through the key service once and
//! [`unlock`]s the directory: the frame readers, which take only a directory, find the key there. Files written
//! before sealing (magic `…1`) stay readable until the core acknowledges them and they are deleted; `index.log`
//! is rewritten sealed when the gateway opens.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, RwLock};
use tokumei_keys::{DataKey, KeyService, WrappedKey};
use zeroize::Zeroizing;

/// The wrapped key's file in the spool directory.
pub const KEY_FILE: &str = "spool-key.json";

/// Bytes a sealed frame adds to its payload (nonce + tag).
pub const OVERHEAD: usize = 12 + 16;

/// Which file a frame belongs to (part of the associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A segment: `SpoolEntry` frames.
    Segment,
    /// `index.log`: `IndexRecord` frames.
    Index,
}

/// Why a spool key could not be had or a frame not be unsealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or writing the key file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not what this version writes.
    #[error("{0}: not a tokumei spool key file")]
    BadKeyFile(String),
    /// The key service refused to wrap or unwrap.
    #[error("spool key: {0}")]
    Key(#[from] tokumei_keys::KeyError),
    /// The spool's key file is missing: a reader must not create one, and nobody may when sealed files exist.
    #[error(
        "{0} is missing: the spool's sealed files cannot be read without it (restore it from backup); a new key is made only for a spool with no sealed file"
    )]
    NoKey(String),
    /// Authentication failed: wrong key, a frame moved, or tampered bytes.
    #[error("a sealed frame does not authenticate (wrong key, moved or tampered)")]
    Unseal,
    /// A sealed file is read but no key was unlocked for its directory.
    #[error("{0}: the spool is sealed and its key was not unlocked in this process")]
    Locked(String),
}

#[derive(Serialize, Deserialize)]
struct KeyFileContents {
    /// Random id of this spool; part of the wrapping context, so a key file cannot be moved to another spool.
    spool_id: String,
    created_at: String,
    wrapped: WrappedKey,
}

/// The unwrapped spool key. Never printed; the cipher's key schedule is dropped with it.
pub struct SpoolSeal {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SpoolSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpoolSeal(<redacted>)")
    }
}

fn context(spool_id: &str) -> String {
    format!("tokumei-spool:{spool_id}")
}

fn aad(kind: FileKind, segment: u64, offset: u64) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[0] = match kind {
        FileKind::Segment => b'S',
        FileKind::Index => b'I',
    };
    out[1..9].copy_from_slice(&segment.to_le_bytes());
    out[9..].copy_from_slice(&offset.to_le_bytes());
    out
}

impl SpoolSeal {
    /// From a raw key (tests, and after unwrapping).
    pub fn from_key(key: &DataKey) -> SpoolSeal {
        SpoolSeal {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// The gateway's key: unwrapped from `<dir>/spool-key.json`, or created and wrapped there on first start.
    pub async fn open_or_create(dir: &Path, keys: &dyn KeyService) -> Result<SpoolSeal, SealError> {
        let path = dir.join(KEY_FILE);
        if path.exists() {
            return Self::open(dir, keys).await;
        }
        // A new key for a spool that already holds sealed files would make all of them unreadable.
        if holds_sealed_files(dir) {
            return Err(SealError::NoKey(path.display().to_string()));
        }
        let spool_id = format!("{:032x}", rand::random::<u128>());
        let key = Zeroizing::new(rand::random::<DataKey>());
        let wrapped = keys.wrap_key(&context(&spool_id), &key).await?;
        let contents = KeyFileContents {
            spool_id,
            created_at: chrono::Utc::now().to_rfc3339(),
            wrapped,
        };
        let json =
            serde_json::to_vec_pretty(&contents).map_err(|_| SealError::BadKeyFile(path.display().to_string()))?;
        let io = |source| SealError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!("{KEY_FILE}.tmp"));
        tokumei_keys::local::write_private(&tmp, &json).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(SpoolSeal::from_key(&key))
    }

    /// A reader's key: unwrapped from an existing `<dir>/spool-key.json`.
    pub async fn open(dir: &Path, keys: &dyn KeyService) -> Result<SpoolSeal, SealError> {
        let path = dir.join(KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SealError::NoKey(path.display().to_string()));
            }
            Err(source) => {
                return Err(SealError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let contents: KeyFileContents =
            serde_json::from_slice(&bytes).map_err(|_| SealError::BadKeyFile(path.display().to_string()))?;
        let key = keys.unwrap_key(&context(&contents.spool_id), &contents.wrapped).await?;
        Ok(SpoolSeal::from_key(&key))
    }

    /// Seals a frame payload for its place.
    pub fn seal(&self, kind: FileKind, segment: u64, offset: u64, plain: &[u8]) -> Vec<u8> {
        let nonce = rand::random::<[u8; 12]>();
        let aad = aad(kind, segment, offset);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
            // AES-GCM fails only for messages over 64 GiB; a frame is at most 256 MiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a sealed frame payload read at its place.
    pub fn unseal(&self, kind: FileKind, segment: u64, offset: u64, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Unseal);
        }
        let (nonce, body) = sealed.split_at(12);
        let aad = aad(kind, segment, offset);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: &aad })
            .map_err(|_| SealError::Unseal)
    }
}

/// True when `dir` holds a file written sealed (segment or index magic `…2`).
fn holds_sealed_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let mut magic = [0u8; 8];
        std::fs::File::open(e.path())
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && (&magic == b"TKSPOOL2" || &magic == b"TKINDEX2")
    })
}

static UNLOCKED: LazyLock<RwLock<HashMap<PathBuf, Arc<SpoolSeal>>>> = LazyLock::new(Default::default);

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Makes `seal` the key of the spool in `dir` for this process's readers.
pub fn unlock(dir: &Path, seal: Arc<SpoolSeal>) {
    let mut map = UNLOCKED.write().unwrap_or_else(|p| p.into_inner());
    map.insert(canonical(dir), seal);
}

/// Unwraps `<dir>/spool-key.json` through `keys` and unlocks the directory (for a reader such as a same-host
/// core or `tokumei spool status`).
pub async fn unlock_with(dir: &Path, keys: &dyn KeyService) -> Result<Arc<SpoolSeal>, SealError> {
    let seal = Arc::new(SpoolSeal::open(dir, keys).await?);
    unlock(dir, seal.clone());
    Ok(seal)
}

/// Forgets the unlocked key of the spool in `dir`: a reader done with the spool (the demo's search of it) keeps no
/// key of the gateway's zone; the key is dropped with its last holder.
pub fn forget(dir: &Path) {
    let mut map = UNLOCKED.write().unwrap_or_else(|p| p.into_inner());
    map.remove(&canonical(dir));
}

/// The unlocked key of the spool in `dir`, if any.
pub fn unlocked(dir: &Path) -> Option<Arc<SpoolSeal>> {
    let map = UNLOCKED.read().unwrap_or_else(|p| p.into_inner());
    map.get(&canonical(dir)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_opens_only_at_its_place_and_under_its_key() {
        let seal = SpoolSeal::from_key(&[7; 32]);
        let sealed = seal.seal(FileKind::Segment, 3, 8, b"payload");
        assert_eq!(sealed.len(), 7 + OVERHEAD);
        assert!(!sealed.windows(7).any(|w| w == b"payload"));
        assert_eq!(seal.unseal(FileKind::Segment, 3, 8, &sealed).unwrap(), b"payload");
        for (kind, segment, offset) in [
            (FileKind::Index, 3, 8),
            (FileKind::Segment, 4, 8),
            (FileKind::Segment, 3, 9),
        ] {
            assert!(seal.unseal(kind, segment, offset, &sealed).is_err());
        }
        assert!(
            SpoolSeal::from_key(&[8; 32])
                .unseal(FileKind::Segment, 3, 8, &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(seal.unseal(FileKind::Segment, 3, 8, &tampered).is_err());
    }
}

#[cfg(test)]
mod key_file_tests {
    use super::*;
    use tokumei_keys::local::{LocalKeyring, Passphrase};

    #[tokio::test]
    async fn a_lost_key_file_is_not_replaced_while_sealed_files_exist() {
        let home = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::open_or_create(
            &home.path().join("keyring.json"),
            &Passphrase::Value(Zeroizing::new("test passphrase".into())),
        )
        .unwrap();
        let dir = home.path().join("spool");
        let first = SpoolSeal::open_or_create(&dir, &ring).await.unwrap();
        let sealed = first.seal(FileKind::Segment, 1, 8, b"x");
        // The same key again after a restart.
        let again = SpoolSeal::open_or_create(&dir, &ring).await.unwrap();
        assert_eq!(again.unseal(FileKind::Segment, 1, 8, &sealed).unwrap(), b"x");
        std::fs::write(dir.join("seg-00000000000000000001.spool"), b"TKSPOOL2").unwrap();
        std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
        assert!(matches!(
            SpoolSeal::open_or_create(&dir, &ring).await,
            Err(SealError::NoKey(_))
        ));
    }
}
