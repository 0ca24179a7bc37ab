//! The release zone's holdings: one directory per release, a record of what it is and who has a copy, and
//! every recipient's copy sealed at rest.
//!
//! ```text
//! $TOKUMEI_HOME/release/releases/<release id>/record.json            ReleaseRecord (written last)
//! $TOKUMEI_HOME/release/releases/<release id>/<copy dir>/<file>.sealed  one recipient's copy
//! $TOKUMEI_HOME/release/projects/<application>.pseudonym-key.json    wrapped key, linkable projects only
//! ```
//!
//! The zone receives finished releases and never opens the core store: nothing here needs the core's keys or
//! tables. A release whose `record.json` is missing was interrupted while being written and is never served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokumei_keys::{SharedKeyService, WrappedKey};
use tokumei_policy::committee::TableRequest;
use zeroize::Zeroizing;

use crate::error::{ReleaseError, Result};
use crate::fingerprint::{FingerprintKey, FingerprintPlan};
use crate::sealed_file::{DataKey, SealedFile};

/// How far a release's pseudonyms can be joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PseudonymScope {
    /// A key for this release alone: its pseudonyms join with no other release (releases built before
    /// recipient pseudonyms; still read).
    Release,
    /// A key for this release alone, and every recipient's copy has its own pseudonyms (the fingerprint's
    /// pseudonym carrier, `fingerprint/pseudonyms.rs`): they join with no other release and no other copy.
    Recipient,
    /// The project's key: the approval allows linking the project's releases.
    Project,
}

/// One file of a recipient's copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyFile {
    /// File name inside the copy (e.g. `observations.parquet`).
    pub name: String,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    /// Plaintext length.
    pub bytes: u64,
}

/// What a release is, kept next to its copies. Holds wrapped keys only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// Release identifier (`R-<application>-<n>`).
    pub id: String,
    /// The approved application it was built under.
    pub application: String,
    /// The approval's revision (change requests bump it).
    pub approval_revision: i64,
    /// When it was built.
    pub built_at: DateTime<Utc>,
    /// Who built it (operator).
    pub built_by: String,
    /// Last day of use (the approval's expiry).
    pub expires_on: NaiveDate,
    /// Tables and columns released.
    pub tables: Vec<TableRequest>,
    /// Every recipient's copy, by username.
    pub copies: BTreeMap<String, Vec<CopyFile>>,
    /// The data key sealing the copies, wrapped by the key service.
    pub data_key: WrappedKey,
    /// The fingerprint key, wrapped by the key service (needed to trace a leak).
    pub fingerprint_key: WrappedKey,
    /// How each table was marked (column, precision, anchors, rate), by file stem.
    pub fingerprint: BTreeMap<String, FingerprintPlan>,
    /// Whose pseudonym key the release used.
    pub pseudonym_scope: PseudonymScope,
}

impl ReleaseRecord {
    /// The recipients holding a copy.
    pub fn recipients(&self) -> Vec<String> {
        self.copies.keys().cloned().collect()
    }

    /// One file of a recipient's copy.
    pub fn copy_file(&self, recipient: &str, name: &str) -> Result<&CopyFile> {
        self.copies
            .get(recipient)
            .ok_or_else(|| ReleaseError::NotFound(format!("release {} has no copy for {recipient}", self.id)))?
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| ReleaseError::NotFound(format!("release {} has no file {name}", self.id)))
    }
}

/// The release zone on disk, with the key service that unwraps its keys.
#[derive(Clone)]
pub struct ReleaseZone {
    root: PathBuf,
    keys: SharedKeyService,
}

impl std::fmt::Debug for ReleaseZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseZone")
            .field("root", &self.root)
            .field("keys", &self.keys.describe())
            .finish()
    }
}

impl ReleaseZone {
    /// The zone under `home` (`$TOKUMEI_HOME/release`).
    pub fn new(home: &Path, keys: SharedKeyService) -> ReleaseZone {
        ReleaseZone {
            root: home.join("release"),
            keys,
        }
    }

    /// The zone's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The zone's manifest keys a copy may be signed with: the current one (`manifest.pub`) and those it replaced
    /// (`retired/manifest-<key id>.pub`, kept by `tokumei release rotate-key`), so copies built before a rotation
    /// still verify. What a measurement on the copies trusts.
    pub fn manifest_public_keys(&self) -> Result<Vec<tokumei_policy::ServicePublicKey>> {
        manifest_public_keys(&self.root)
    }

    /// The key service (wraps the zone's keys).
    pub fn keys(&self) -> &SharedKeyService {
        &self.keys
    }

    /// Directory of release `id` (validated: no path tricks in identifiers from requests).
    pub fn release_dir(&self, id: &str) -> Result<PathBuf> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(ReleaseError::NotFound(format!("release {id:?}")));
        }
        Ok(self.root.join("releases").join(id))
    }

    /// The record of release `id`.
    pub fn record(&self, id: &str) -> Result<ReleaseRecord> {
        let path = self.release_dir(id)?.join("record.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ReleaseError::NotFound(format!("release {id}")));
            }
            Err(e) => return Err(ReleaseError::io(format!("reading {}", path.display()), e)),
        };
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Every complete release, oldest first.
    pub fn records(&self) -> Result<Vec<ReleaseRecord>> {
        let dir = self.root.join("releases");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ReleaseError::io(format!("listing {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ReleaseError::io("listing releases", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match self.record(&name) {
                Ok(r) => out.push(r),
                Err(ReleaseError::NotFound(_)) => {} // interrupted build: never served
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.built_at.cmp(&b.built_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Writes a release's record last, atomically: until then the release does not exist for anyone.
    pub fn commit(&self, record: &ReleaseRecord) -> Result<()> {
        let dir = self.release_dir(&record.id)?;
        let path = dir.join("record.json");
        let tmp = dir.join("record.json.partial");
        let bytes = serde_json::to_vec_pretty(record)?;
        std::fs::write(&tmp, bytes).map_err(|e| ReleaseError::io(format!("writing {}", tmp.display()), e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| ReleaseError::io("syncing the release record", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ReleaseError::io(format!("writing {}", path.display()), e))
    }

    /// Directory of one recipient's copy (a digest of the username: no username ever becomes a path).
    pub fn copy_dir(&self, release: &str, recipient: &str) -> Result<PathBuf> {
        let digest = Sha256::digest(recipient.as_bytes());
        Ok(self.release_dir(release)?.join(hex::encode(&digest[..12])))
    }

    /// Where one file of a recipient's copy is sealed.
    pub fn copy_path(&self, release: &str, recipient: &str, name: &str) -> Result<PathBuf> {
        if name.is_empty()
            || name.starts_with('.')
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(ReleaseError::NotFound(format!("file {name:?}")));
        }
        Ok(self.copy_dir(release, recipient)?.join(format!("{name}.sealed")))
    }

    /// A fresh data key, wrapped for release `id`.
    pub async fn new_data_key(&self, id: &str) -> Result<(DataKey, WrappedKey)> {
        let key = fresh_key();
        let wrapped = self
            .keys
            .wrap_key(&context(id, "data"), &key)
            .await
            .map_err(|e| ReleaseError::Keys(e.to_string()))?;
        Ok((DataKey::new(key), wrapped))
    }

    /// A fresh fingerprint key, wrapped for release `id`.
    pub async fn new_fingerprint_key(&self, id: &str) -> Result<(FingerprintKey, WrappedKey)> {
        let key = fresh_key();
        let wrapped = self
            .keys
            .wrap_key(&context(id, "fingerprint"), &key)
            .await
            .map_err(|e| ReleaseError::Keys(e.to_string()))?;
        Ok((FingerprintKey::from_bytes(*key), wrapped))
    }

    /// The data key sealing a release's copies.
    pub async fn data_key(&self, record: &ReleaseRecord) -> Result<DataKey> {
        let key = self
            .keys
            .unwrap_key(&context(&record.id, "data"), &record.data_key)
            .await
            .map_err(|e| ReleaseError::Keys(e.to_string()))?;
        Ok(DataKey::new(key))
    }

    /// The key a release's fingerprints were drawn with.
    pub async fn fingerprint_key(&self, record: &ReleaseRecord) -> Result<FingerprintKey> {
        let key = self
            .keys
            .unwrap_key(&context(&record.id, "fingerprint"), &record.fingerprint_key)
            .await
            .map_err(|e| ReleaseError::Keys(e.to_string()))?;
        Ok(FingerprintKey::from_bytes(*key))
    }

    /// Opens one file of a recipient's copy for reading (decrypts on demand, any range).
    pub async fn open_copy_file(&self, record: &ReleaseRecord, recipient: &str, name: &str) -> Result<SealedFile> {
        record.copy_file(recipient, name)?;
        let path = self.copy_path(&record.id, recipient, name)?;
        SealedFile::open(&path, &self.data_key(record).await?)
    }
}

/// Key-wrapping context: a wrapped key only unwraps for the release and purpose it was made for.
fn context(release: &str, purpose: &str) -> String {
    format!("tokumei-release:{release}:{purpose}")
}

fn fresh_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::Rng::fill(&mut rand::rng(), &mut key[..]);
    key
}

/// The manifest keys under a release zone directory `root` (see [`ReleaseZone::manifest_public_keys`]).
pub fn manifest_public_keys(root: &Path) -> Result<Vec<tokumei_policy::ServicePublicKey>> {
    let read = |path: &Path| -> Result<tokumei_policy::ServicePublicKey> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ReleaseError::io(format!("reading {}", path.display()), e))?;
        tokumei_policy::ServicePublicKey::from_hex(text.trim()).map_err(ReleaseError::Policy)
    };
    let current = tokumei_policy::service_key::public_key_path(&root.join("manifest.key"));
    if !current.exists() {
        return Err(ReleaseError::NotFound(
            "the release zone's manifest key (no release was built)".into(),
        ));
    }
    let mut keys = vec![read(&current)?];
    if let Ok(entries) = std::fs::read_dir(root.join("retired")) {
        let mut retired: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("manifest-") && n.ends_with(".pub"))
            })
            .collect();
        retired.sort();
        for path in retired {
            keys.push(read(&path)?);
        }
    }
    Ok(keys)
}
