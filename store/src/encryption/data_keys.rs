//! Data keys: the AES-256 keys that seal the store's objects, kept on disk only wrapped by the key service.
//!
//! Envelope encryption: each store has a small list of data keys in `_tokumei/data-keys.json` (beside the
//! tables, in the same object store, never encrypted by itself). Every entry holds a data key wrapped by the
//! key service's key-encryption key — OpenBao transit or the local keyring — and bound to this store's id and
//! the key's number, so a wrapped key cannot be moved to another store. Rotating the key-encryption key
//! re-wraps these few entries; no data object is rewritten. Adding a data key makes new objects use it while
//! old objects keep opening under the key id recorded in their header.

use super::sealed_object::{self, Header, SealError};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use tokumei_keys::{KeyService, WrappedKey};
use zeroize::Zeroizing;

/// Where the wrapped data keys live, relative to the store root.
pub const KEY_FILE: &str = "_tokumei/data-keys.json";

/// Why the data keys could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    /// The key file could not be read or written.
    #[error("data key file {KEY_FILE}: {0}")]
    Storage(#[from] object_store::Error),
    /// The key file is not valid.
    #[error("data key file {KEY_FILE} is malformed: {0}")]
    Format(String),
    /// The key service refused to wrap or unwrap (wrong backend, wrong key, tampered entry).
    #[error("key service: {0}")]
    KeyService(#[from] tokumei_keys::KeyError),
    /// Another process created the key file at the same time.
    #[error("data key file {KEY_FILE} changed concurrently; retry")]
    Concurrent,
}

/// One wrapped data key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrappedDataKey {
    /// The number objects record in their header.
    pub id: u32,
    /// When the key was created (RFC 3339).
    pub created_at: String,
    /// The key, wrapped by the key service.
    pub wrapped: WrappedKey,
}

/// The key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Random id of this store; part of every wrapping context.
    pub store_id: String,
    /// Key used for new objects.
    pub current: u32,
    /// Every key ever created (old objects still need theirs).
    pub keys: Vec<WrappedDataKey>,
}

fn context(store_id: &str, id: u32) -> String {
    format!("tokumei-store/{store_id}/data-key/{id}")
}

/// The unwrapped data keys of an open store. Keys are zeroized on drop and never printed.
pub struct DataKeyring {
    current: u32,
    keys: BTreeMap<u32, Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for DataKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DataKeyring {{ current: {}, keys: {} (redacted) }}",
            self.current,
            self.keys.len()
        )
    }
}

impl DataKeyring {
    /// A fresh header for a new object under the current data key, and the object's own cipher.
    pub fn new_object(&self) -> Result<(Header, aes_gcm::Aes256Gcm), SealError> {
        let header = Header::fresh(self.current);
        Ok((header, self.object_cipher(&header)?))
    }

    /// The cipher of the object with `header`, from the data key it names.
    pub fn object_cipher(&self, header: &Header) -> Result<aes_gcm::Aes256Gcm, SealError> {
        self.keys
            .get(&header.key_id)
            .map(|k| sealed_object::object_cipher(k, header))
            .ok_or(SealError::UnknownKey(header.key_id))
    }

    /// Number of data keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for an opened store (it always has a current key).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A one-key ring for unit tests.
    #[doc(hidden)]
    pub fn for_tests(id: u32, key: [u8; 32]) -> DataKeyring {
        let mut keys = BTreeMap::new();
        keys.insert(id, Zeroizing::new(key));
        DataKeyring { current: id, keys }
    }
}

async fn read_key_file(raw: &dyn ObjectStore) -> Result<Option<KeyFile>, DataKeyError> {
    match raw.get(&Path::from(KEY_FILE)).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| DataKeyError::Format(e.to_string()))?;
            Ok(Some(file))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn write_key_file(raw: &dyn ObjectStore, file: &KeyFile, create: bool) -> Result<(), DataKeyError> {
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| DataKeyError::Format(e.to_string()))?;
    let mode = if create { PutMode::Create } else { PutMode::Overwrite };
    match raw
        .put_opts(
            &Path::from(KEY_FILE),
            PutPayload::from(bytes),
            PutOptions {
                mode,
                ..Default::default()
            },
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => Err(DataKeyError::Concurrent),
        Err(e) => Err(e.into()),
    }
}

async fn new_entry(keys: &dyn KeyService, store_id: &str, id: u32) -> Result<WrappedDataKey, DataKeyError> {
    let key = Zeroizing::new(rand::random::<[u8; 32]>());
    let wrapped = keys.wrap_key(&context(store_id, id), &key).await?;
    Ok(WrappedDataKey {
        id,
        created_at: chrono::Utc::now().to_rfc3339(),
        wrapped,
    })
}

/// Loads the data keys (creating the first one for a new store) and unwraps them through the key service.
pub async fn open(raw: &dyn ObjectStore, keys: &dyn KeyService) -> Result<(DataKeyring, KeyFile), DataKeyError> {
    let file = match read_key_file(raw).await? {
        Some(f) => f,
        None => {
            let store_id = uuid::Uuid::new_v4().to_string();
            let entry = new_entry(keys, &store_id, 1).await?;
            let file = KeyFile {
                store_id,
                current: 1,
                keys: vec![entry],
            };
            match write_key_file(raw, &file, true).await {
                Ok(()) => file,
                // Someone else created it first: use theirs.
                Err(DataKeyError::Concurrent) => read_key_file(raw)
                    .await?
                    .ok_or_else(|| DataKeyError::Format("vanished after a concurrent create".into()))?,
                Err(e) => return Err(e),
            }
        }
    };
    let mut ring = BTreeMap::new();
    for k in &file.keys {
        let key = keys.unwrap_key(&context(&file.store_id, k.id), &k.wrapped).await?;
        ring.insert(k.id, key);
    }
    if !ring.contains_key(&file.current) {
        return Err(DataKeyError::Format(format!(
            "current key {} is not in the file",
            file.current
        )));
    }
    Ok((
        DataKeyring {
            current: file.current,
            keys: ring,
        },
        file,
    ))
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// Key-encryption-key version now wrapping every data key.
    pub kek_version: u32,
    /// Data keys re-wrapped.
    pub rewrapped: usize,
    /// The new data key for new objects, when one was added.
    pub new_data_key: Option<u32>,
}

/// Rotates the key-encryption key and re-wraps every data key under the new version (no data is rewritten);
/// with `new_data_key`, also starts a new data key for objects written from now on.
pub async fn rotate(
    raw: &dyn ObjectStore,
    keys: &dyn KeyService,
    new_data_key: bool,
) -> Result<Rotation, DataKeyError> {
    let mut file = read_key_file(raw)
        .await?
        .ok_or_else(|| DataKeyError::Format("no key file: the store has never been opened".into()))?;
    let kek_version = keys.rotate_kek().await?;
    for k in &mut file.keys {
        k.wrapped = keys.rewrap_key(&context(&file.store_id, k.id), &k.wrapped).await?;
    }
    let mut added = None;
    if new_data_key {
        let id = file.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        file.keys.push(new_entry(keys, &file.store_id, id).await?);
        file.current = id;
        added = Some(id);
    }
    write_key_file(raw, &file, false).await?;
    Ok(Rotation {
        kek_version,
        rewrapped: file.keys.len() - usize::from(added.is_some()),
        new_data_key: added,
    })
}
