//! The embedded-default key service: a keyring file encrypted at rest.
//!
//! The file holds 256-bit keys, one per [`KeyPurpose`], plus the versions of the store key-encryption key (KEK),
//! sealed with AES-256-GCM under a key derived from a passphrase by argon2id. It is written with mode 0600 in a 0700 directory, atomically (temp file, fsync,
//! rename, directory fsync). The passphrase comes from `TOKUMEI_KEYRING_PASSPHRASE` or from a passphrase file
//! that `tokumei pki init`/first start creates with mode 0600; production deployments should prefer OpenBao.
//!
//! The KEK is created on first use ([`KeyService::wrap_key`] or [`KeyService::rotate_kek`]), so keyring files
//! written before envelope encryption existed open unchanged and gain a KEK the first time a store needs one.
//! Data keys are wrapped with AES-256-GCM under the newest KEK version, with the KEK version and the caller's
//! context as associated data.

use super::{BACKEND_LOCAL, DataKey, Digest, KeyError, KeyPurpose, KeyService, WrappedKey};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use zeroize::Zeroizing;

const FORMAT: &str = "tokumei-keyring-v1";
/// Domain tag at the start of the associated data of a wrapped data key; the KEK version and the context follow.
const WRAP_AAD_TAG: &[u8] = b"tokumei-store-dek-v1\0";
/// Length of a wrapped data key: 96-bit nonce, 256-bit key, 128-bit tag.
const WRAPPED_LEN: usize = 12 + 32 + 16;
/// Environment variable that carries the keyring passphrase.
pub const PASSPHRASE_ENV: &str = "TOKUMEI_KEYRING_PASSPHRASE";

#[derive(Serialize, Deserialize)]
struct SealedFile {
    format: String,
    kdf: KdfParams,
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
struct KdfParams {
    algorithm: KdfAlgorithm,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    #[serde(with = "salt_b64")]
    salt: [u8; 16],
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum KdfAlgorithm {
    Argon2id,
}

mod salt_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let v = STANDARD.decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("salt must be 16 bytes"))
    }
}

/// Plaintext content of the keyring: key name → base64 key material, and the KEK versions.
#[derive(Serialize, Deserialize, Default)]
struct KeyMaterial {
    keys: BTreeMap<String, String>,
    /// Base64 KEK versions in order (version n at index n - 1). Absent from keyrings written before envelope
    /// encryption, and omitted while empty so such keyrings stay byte-compatible until a KEK is needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    kek: Vec<String>,
}

impl KeyMaterial {
    /// Overwrites the base64 key strings before they are freed.
    fn zeroize(self) {
        drop(
            self.keys
                .into_values()
                .chain(self.kek)
                .map(Zeroizing::new)
                .collect::<Vec<_>>(),
        );
    }
}

/// Where the passphrase for the keyring comes from.
#[derive(Clone)]
pub enum Passphrase {
    /// Given directly (from the environment or a secret manager).
    Value(Zeroizing<String>),
    /// Read from a file (created with a random passphrase, mode 0600, if missing and `create` is set).
    File {
        /// The passphrase file.
        path: PathBuf,
        /// Create the file with a random passphrase when it does not exist.
        create: bool,
    },
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Passphrase::Value(_) => f.write_str("Passphrase::Value(<redacted>)"),
            Passphrase::File { path, create } => f
                .debug_struct("Passphrase::File")
                .field("path", path)
                .field("create", create)
                .finish(),
        }
    }
}

impl Passphrase {
    /// The environment variable if set, else the given file.
    pub fn from_env_or_file(path: PathBuf, create: bool) -> Self {
        match std::env::var(PASSPHRASE_ENV) {
            Ok(v) if !v.is_empty() => Passphrase::Value(Zeroizing::new(v)),
            _ => Passphrase::File { path, create },
        }
    }

    fn resolve(&self) -> Result<Zeroizing<String>, KeyError> {
        match self {
            Passphrase::Value(v) => Ok(v.clone()),
            Passphrase::File { path, create } => {
                let io = |source| KeyError::Io {
                    path: path.display().to_string(),
                    source,
                };
                match std::fs::read_to_string(path) {
                    Ok(s) => Ok(Zeroizing::new(s.trim().to_string())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && *create => {
                        let mut raw = Zeroizing::new([0u8; 32]);
                        rand::rng().fill_bytes(raw.as_mut());
                        let pass = Zeroizing::new(B64.encode(raw.as_ref()));
                        if create_private(path, pass.as_bytes()).map_err(io)? {
                            return Ok(pass);
                        }
                        // Another process made it first: that one seals the keyring.
                        let made = std::fs::read_to_string(path).map_err(io)?;
                        Ok(Zeroizing::new(made.trim().to_string()))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err(KeyError::NoPassphrase(path.display().to_string()))
                    }
                    Err(e) => Err(io(e)),
                }
            }
        }
    }
}

/// The file key derived from the passphrase, with the argon2id parameters (and salt) it was derived with: kept so
/// that the keyring can be re-sealed after a KEK rotation without holding the passphrase or re-running argon2id.
struct Sealer {
    kdf: KdfParams,
    key: Zeroizing<[u8; 32]>,
}

impl Sealer {
    /// A fresh salt and the key derived from it, for a new keyring file.
    fn new(pass: &str, path: &str) -> Result<Self, KeyError> {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let kdf = KdfParams {
            algorithm: KdfAlgorithm::Argon2id,
            m_cost_kib: 19_456,
            t_cost: 2,
            p_cost: 1,
            salt,
        };
        let key = derive_key(pass, &kdf, path)?;
        Ok(Sealer { kdf, key })
    }

    /// Encrypts the keyring plaintext with a fresh nonce into the on-disk JSON.
    fn seal(&self, plain: &[u8], path: &str) -> Result<Vec<u8>, KeyError> {
        let fmt_err = |detail: String| KeyError::Format {
            path: path.into(),
            detail,
        };
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new_from_slice(self.key.as_ref()).map_err(|_| fmt_err("key length".into()))?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: FORMAT.as_bytes(),
                },
            )
            .map_err(|_| fmt_err("encryption failed".into()))?;
        let sealed = SealedFile {
            format: FORMAT.into(),
            kdf: self.kdf,
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        };
        serde_json::to_vec_pretty(&sealed).map_err(|e| fmt_err(e.to_string()))
    }
}

fn derive_key(pass: &str, kdf: &KdfParams, path: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let params = Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32)).map_err(|e| KeyError::Format {
        path: path.into(),
        detail: format!("kdf parameters: {e}"),
    })?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass.as_bytes(), &kdf.salt, out.as_mut())
        .map_err(|e| KeyError::Format {
            path: path.into(),
            detail: format!("kdf: {e}"),
        })?;
    Ok(out)
}

/// Decodes one base64 256-bit key of the keyring plaintext.
fn decode_key(b64: &str, what: &str, path: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let fmt_err = |detail: String| KeyError::Format {
        path: path.into(),
        detail,
    };
    let raw = Zeroizing::new(
        B64.decode(b64.as_bytes())
            .map_err(|_| fmt_err(format!("{what} is not base64")))?,
    );
    if raw.len() != 32 {
        return Err(fmt_err(format!("{what} must be 32 bytes")));
    }
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&raw);
    Ok(k)
}

/// Associated data of a wrapped data key: binds it to its KEK version and to the caller's context.
fn wrap_aad(version: u32, context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_AAD_TAG.len() + 4 + context.len());
    aad.extend_from_slice(WRAP_AAD_TAG);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// The local keyring: keys held in memory in zeroizing buffers, sealed on disk.
pub struct LocalKeyring {
    path: PathBuf,
    keys: BTreeMap<KeyPurpose, Zeroizing<[u8; 32]>>,
    /// KEK versions (version n at index n - 1). Behind a mutex because the keyring is shared (`Arc`) and
    /// rotation or first use appends through `&self`; the lock is held across the file write so that two
    /// concurrent rotations cannot lose a version.
    keks: Mutex<Vec<Zeroizing<[u8; 32]>>>,
    sealer: Sealer,
}

impl fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("path", &self.path)
            .field("keys", &"<redacted>")
            .field("keks", &"<redacted>")
            .finish()
    }
}

impl LocalKeyring {
    /// Opens the keyring at `path`, creating it with fresh random keys if it does not exist.
    pub fn open_or_create(path: &Path, passphrase: &Passphrase) -> Result<Self, KeyError> {
        let pass = passphrase.resolve()?;
        let display = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => Self::unseal(path, &bytes, &pass),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut keys = BTreeMap::new();
                for p in KeyPurpose::ALL {
                    let mut k = Zeroizing::new([0u8; 32]);
                    rand::rng().fill_bytes(k.as_mut());
                    keys.insert(p, k);
                }
                let ring = LocalKeyring {
                    path: path.to_path_buf(),
                    keys,
                    keks: Mutex::new(Vec::new()),
                    sealer: Sealer::new(&pass, &display)?,
                };
                if ring.persist_new()? {
                    return Ok(ring);
                }
                // Another process made it first: its keys are the keyring's.
                drop(ring);
                let bytes = std::fs::read(path).map_err(|source| KeyError::Io { path: display, source })?;
                Self::unseal(path, &bytes, &pass)
            }
            Err(source) => Err(KeyError::Io { path: display, source }),
        }
    }

    fn unseal(path: &Path, bytes: &[u8], pass: &str) -> Result<Self, KeyError> {
        let display = path.display().to_string();
        let fmt_err = |detail: &str| KeyError::Format {
            path: display.clone(),
            detail: detail.into(),
        };
        let sealed: SealedFile = serde_json::from_slice(bytes).map_err(|e| fmt_err(&e.to_string()))?;
        if sealed.format != FORMAT {
            return Err(fmt_err("unknown format"));
        }
        let file_key = derive_key(pass, &sealed.kdf, &display)?;
        let nonce = B64.decode(&sealed.nonce).map_err(|_| fmt_err("nonce is not base64"))?;
        if nonce.len() != 12 {
            return Err(fmt_err("nonce must be 12 bytes"));
        }
        let ct = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| fmt_err("ciphertext is not base64"))?;
        let cipher = Aes256Gcm::new_from_slice(file_key.as_ref()).map_err(|_| fmt_err("key length"))?;
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &ct,
                        aad: FORMAT.as_bytes(),
                    },
                )
                .map_err(|_| KeyError::Decrypt { path: display.clone() })?,
        );
        let material: KeyMaterial = serde_json::from_slice(&plain).map_err(|_| fmt_err("key material"))?;
        let parsed = Self::parse_material(&material, &display);
        material.zeroize();
        let (keys, keks) = parsed?;
        Ok(LocalKeyring {
            path: path.to_path_buf(),
            keys,
            keks: Mutex::new(keks),
            sealer: Sealer {
                kdf: sealed.kdf,
                key: file_key,
            },
        })
    }

    #[allow(clippy::type_complexity)]
    fn parse_material(
        material: &KeyMaterial,
        path: &str,
    ) -> Result<(BTreeMap<KeyPurpose, Zeroizing<[u8; 32]>>, Vec<Zeroizing<[u8; 32]>>), KeyError> {
        let mut keys = BTreeMap::new();
        for p in KeyPurpose::ALL {
            let b64 = material.keys.get(p.key_name()).ok_or_else(|| KeyError::Format {
                path: path.into(),
                detail: "a key is missing".into(),
            })?;
            keys.insert(p, decode_key(b64, "key", path)?);
        }
        let keks = material
            .kek
            .iter()
            .map(|b64| decode_key(b64, "KEK", path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, keks))
    }

    /// Writes a new keyring's file unless another process wrote one first (false then; see [`create_private`]).
    fn persist_new(&self) -> Result<bool, KeyError> {
        let display = self.path.display().to_string();
        let json = self.sealed(&[])?;
        create_private(&self.path, &json).map_err(|source| KeyError::Io { path: display, source })
    }

    /// Seals the purpose keys and `keks` into the keyring file, atomically (see [`write_private`]).
    fn persist(&self, keks: &[Zeroizing<[u8; 32]>]) -> Result<(), KeyError> {
        let display = self.path.display().to_string();
        let json = self.sealed(keks)?;
        write_private(&self.path, &json).map_err(|source| KeyError::Io { path: display, source })
    }

    /// The keyring file's sealed content with the purpose keys and `keks`.
    fn sealed(&self, keks: &[Zeroizing<[u8; 32]>]) -> Result<Vec<u8>, KeyError> {
        let display = self.path.display().to_string();
        let material = KeyMaterial {
            keys: self
                .keys
                .iter()
                .map(|(p, k)| (p.key_name().to_string(), B64.encode(k.as_ref())))
                .collect(),
            kek: keks.iter().map(|k| B64.encode(k.as_ref())).collect(),
        };
        let plain = serde_json::to_vec(&material).map(Zeroizing::new);
        material.zeroize();
        let plain = plain.map_err(|e| KeyError::Format {
            path: display.clone(),
            detail: e.to_string(),
        })?;
        self.sealer.seal(&plain, &display)
    }

    /// The KEK versions. A poisoned lock is recovered: the vector is only ever replaced whole, after the file
    /// write succeeded, so a panic elsewhere cannot leave it half-updated.
    fn lock_keks(&self) -> MutexGuard<'_, Vec<Zeroizing<[u8; 32]>>> {
        self.keks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a fresh random KEK version and persists it before making it visible, so a version is never used
    /// to wrap a data key unless it is on disk. Blocks on the file write (rare: first use and rotation).
    fn append_kek(&self, keks: &mut Vec<Zeroizing<[u8; 32]>>) -> Result<u32, KeyError> {
        let mut next = keks.clone();
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(k.as_mut());
        next.push(k);
        let version = u32::try_from(next.len()).map_err(|_| KeyError::Format {
            path: self.path.display().to_string(),
            detail: "too many KEK versions".into(),
        })?;
        self.persist(&next)?;
        *keks = next;
        Ok(version)
    }

    /// The newest KEK and its version, creating version 1 on first use.
    fn newest_kek(&self) -> Result<(u32, Zeroizing<[u8; 32]>), KeyError> {
        let mut keks = self.lock_keks();
        if keks.is_empty() {
            self.append_kek(&mut keks)?;
        }
        let version = u32::try_from(keks.len()).map_err(|_| KeyError::Format {
            path: self.path.display().to_string(),
            detail: "too many KEK versions".into(),
        })?;
        let kek = keks.last().cloned().ok_or_else(|| KeyError::Format {
            path: self.path.display().to_string(),
            detail: "no KEK".into(),
        })?;
        Ok((version, kek))
    }

    fn wrap_with(&self, version: u32, kek: &[u8; 32], context: &str, key: &DataKey) -> Result<WrappedKey, KeyError> {
        let fail = || KeyError::Format {
            path: self.path.display().to_string(),
            detail: "wrapping a data key failed".into(),
        };
        let cipher = Aes256Gcm::new_from_slice(kek).map_err(|_| fail())?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // aes-gcm encrypts its copy of the key in place before growing it for the tag: no clear copy is left.
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key,
                    aad: &wrap_aad(version, context),
                },
            )
            .map_err(|_| fail())?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(WrappedKey {
            backend: BACKEND_LOCAL.into(),
            kek_version: version,
            ciphertext: B64.encode(out),
            // One keyring holds every zone's keys on a single host: no per-zone KEK to name.
            kek: String::new(),
        })
    }

    fn unwrap_with(&self, context: &str, wrapped: &WrappedKey) -> Result<Zeroizing<DataKey>, KeyError> {
        wrapped.check_backend(BACKEND_LOCAL)?;
        let kek = {
            let keks = self.lock_keks();
            (wrapped.kek_version as usize)
                .checked_sub(1)
                .and_then(|i| keks.get(i))
                .cloned()
                .ok_or_else(|| KeyError::Unwrap(format!("this keyring has no KEK version {}", wrapped.kek_version)))?
        };
        let raw = B64
            .decode(wrapped.ciphertext.as_bytes())
            .map_err(|_| KeyError::Unwrap("ciphertext is not base64".into()))?;
        if raw.len() != WRAPPED_LEN {
            return Err(KeyError::Unwrap("ciphertext has the wrong length".into()));
        }
        let (nonce, ct) = raw.split_at(12);
        let cipher = Aes256Gcm::new_from_slice(kek.as_ref()).map_err(|_| KeyError::Unwrap("KEK length".into()))?;
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: &wrap_aad(wrapped.kek_version, context),
                    },
                )
                .map_err(|_| {
                    KeyError::Unwrap(
                        "authentication failed (another context, another keyring, or a tampered ciphertext)".into(),
                    )
                })?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(KeyError::Unwrap("not a 256-bit key".into()));
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }
}

/// Writes `bytes` to `path` atomically with mode 0600, creating the parent directory with mode 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, tmp) = private_temporary(path, bytes)?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` only if nothing is there yet, atomically (a hard link of a finished temporary file:
/// never half a file, never over another's). False when `path` already existed: two processes making the same
/// keyring or passphrase at once keep the first one made, instead of each holding keys the other overwrote.
pub fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let (dir, tmp) = private_temporary(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => {
            std::fs::File::open(dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// `bytes` in a new 0600 file beside `path` (its directory made 0700), synced; a name of its own per call, so
/// that concurrent writers never share one.
fn private_temporary<'p>(path: &'p Path, bytes: &[u8]) -> std::io::Result<(&'p Path, std::path::PathBuf)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::rng().next_u64()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok((dir, tmp))
}

#[async_trait]
impl KeyService for LocalKeyring {
    async fn hmac(&self, purpose: KeyPurpose, inputs: &[&[u8]]) -> Result<Vec<Digest>, KeyError> {
        let key = self.keys.get(&purpose).ok_or(KeyError::Malformed)?;
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).map_err(|_| KeyError::Malformed)?;
        Ok(inputs
            .iter()
            .map(|input| {
                let mut mac = keyed.clone();
                mac.update(input);
                mac.finalize().into_bytes().into()
            })
            .collect())
    }

    async fn wrap_key(&self, context: &str, key: &DataKey) -> Result<WrappedKey, KeyError> {
        let (version, kek) = self.newest_kek()?;
        self.wrap_with(version, &kek, context, key)
    }

    async fn unwrap_key(&self, context: &str, wrapped: &WrappedKey) -> Result<Zeroizing<DataKey>, KeyError> {
        self.unwrap_with(context, wrapped)
    }

    async fn rewrap_key(&self, context: &str, wrapped: &WrappedKey) -> Result<WrappedKey, KeyError> {
        let key = self.unwrap_with(context, wrapped)?;
        let (version, kek) = self.newest_kek()?;
        self.wrap_with(version, &kek, context, &key)
    }

    async fn rotate_kek(&self) -> Result<u32, KeyError> {
        let mut keks = self.lock_keks();
        if keks.is_empty() {
            self.append_kek(&mut keks)?;
        }
        self.append_kek(&mut keks)
    }

    fn describe(&self) -> String {
        format!("local keyring {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BACKEND_OPENBAO;

    /// Processes of one zone starting together on a new home: each makes a passphrase and a keyring, and the
    /// first made of each is the one every process holds — none keeps keys another overwrote.
    #[tokio::test]
    async fn processes_making_one_keyring_at_once_hold_the_same_keys() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keyring/core/keyring.json");
            let pass = Passphrase::File {
                path: dir.path().join("secrets/core/keyring.passphrase"),
                create: true,
            };
            let rings: Vec<LocalKeyring> = std::thread::scope(|scope| {
                let made: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| LocalKeyring::open_or_create(&path, &pass)))
                    .collect();
                made.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
            });
            let digest = rings[0].hmac(KeyPurpose::Linkage, &[b"patient"]).await.unwrap();
            for ring in &rings[1..] {
                assert_eq!(ring.hmac(KeyPurpose::Linkage, &[b"patient"]).await.unwrap(), digest);
            }
            let reopened = LocalKeyring::open_or_create(&path, &pass).unwrap();
            assert_eq!(reopened.hmac(KeyPurpose::Linkage, &[b"patient"]).await.unwrap(), digest);
            let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
                .collect();
            assert!(leftovers.is_empty(), "temporary files left behind");
        }
    }

    #[tokio::test]
    async fn stable_across_reopen_and_wrong_passphrase_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring/keyring.json");
        let pass = Passphrase::Value(Zeroizing::new("correct horse".into()));
        let a = LocalKeyring::open_or_create(&path, &pass).unwrap();
        let d1 = a.hmac(KeyPurpose::Linkage, &[b"INS|06135018||1|01"]).await.unwrap();
        let b = LocalKeyring::open_or_create(&path, &pass).unwrap();
        let d2 = b.hmac(KeyPurpose::Linkage, &[b"INS|06135018||1|01"]).await.unwrap();
        assert_eq!(d1, d2);
        let other = b
            .hmac(KeyPurpose::HospitalPseudonym, &[b"INS|06135018||1|01"])
            .await
            .unwrap();
        assert_ne!(d1, other, "purposes use different keys");
        let wrong = Passphrase::Value(Zeroizing::new("wrong".into()));
        assert!(matches!(
            LocalKeyring::open_or_create(&path, &wrong),
            Err(KeyError::Decrypt { .. })
        ));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        a.wrap_key("store", &[7u8; 32]).await.unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        for k in a.keys.values().chain(a.lock_keks().iter()) {
            assert!(!on_disk.windows(8).any(|w| w == &k[..8]), "raw key bytes on disk");
            let b64 = B64.encode(k.as_ref());
            assert!(
                !String::from_utf8_lossy(&on_disk).contains(&b64),
                "key in clear on disk"
            );
        }
    }

    fn pass(p: &str) -> Passphrase {
        Passphrase::Value(Zeroizing::new(p.into()))
    }

    fn random_key() -> Zeroizing<DataKey> {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(k.as_mut());
        k
    }

    /// The same wrapped key with one byte of its decoded ciphertext flipped.
    fn tampered(w: &WrappedKey, at: usize) -> WrappedKey {
        let mut raw = B64.decode(&w.ciphertext).unwrap();
        raw[at] ^= 1;
        WrappedKey {
            ciphertext: B64.encode(raw),
            ..w.clone()
        }
    }

    /// The decrypted JSON of a keyring file.
    fn plaintext_of(path: &Path, p: &str) -> serde_json::Value {
        let sealed: SealedFile = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let key = derive_key(p, &sealed.kdf, "test").unwrap();
        let cipher = Aes256Gcm::new_from_slice(key.as_ref()).unwrap();
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&B64.decode(&sealed.nonce).unwrap()),
                Payload {
                    msg: &B64.decode(&sealed.ciphertext).unwrap(),
                    aad: FORMAT.as_bytes(),
                },
            )
            .unwrap();
        serde_json::from_slice(&plain).unwrap()
    }

    #[tokio::test]
    async fn wrap_unwrap_round_trip_bound_to_context_and_tamper_evident() {
        let dir = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::open_or_create(&dir.path().join("keyring.json"), &pass("p")).unwrap();
        let key = random_key();
        let w = ring.wrap_key("store-a", &key).await.unwrap();
        assert_eq!((w.backend.as_str(), w.kek_version), (BACKEND_LOCAL, 1));
        assert_eq!(*ring.unwrap_key("store-a", &w).await.unwrap(), *key);
        let again = ring.wrap_key("store-a", &key).await.unwrap();
        assert_ne!(w.ciphertext, again.ciphertext, "random nonce");
        assert_eq!(*ring.unwrap_key("store-a", &again).await.unwrap(), *key);

        assert!(matches!(ring.unwrap_key("store-b", &w).await, Err(KeyError::Unwrap(_))));
        assert!(matches!(ring.unwrap_key("", &w).await, Err(KeyError::Unwrap(_))));
        for at in [0, 11, 12, 43, 44, WRAPPED_LEN - 1] {
            assert!(
                matches!(
                    ring.unwrap_key("store-a", &tampered(&w, at)).await,
                    Err(KeyError::Unwrap(_))
                ),
                "byte {at}"
            );
        }
        let bad = |f: &dyn Fn(&mut WrappedKey)| {
            let mut x = w.clone();
            f(&mut x);
            x
        };
        for (what, x) in [
            ("version 0", bad(&|x| x.kek_version = 0)),
            ("unknown version", bad(&|x| x.kek_version = 2)),
            ("huge version", bad(&|x| x.kek_version = u32::MAX)),
            ("not base64", bad(&|x| x.ciphertext = "not base64!".into())),
            ("empty", bad(&|x| x.ciphertext.clear())),
            (
                "truncated",
                bad(&|x| x.ciphertext = B64.encode(&B64.decode(&w.ciphertext).unwrap()[..40])),
            ),
        ] {
            assert!(
                matches!(ring.unwrap_key("store-a", &x).await, Err(KeyError::Unwrap(_))),
                "{what}"
            );
        }
        let foreign = bad(&|x| x.backend = BACKEND_OPENBAO.into());
        let err = ring.unwrap_key("store-a", &foreign).await.unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::WrongBackend {
                    expected: BACKEND_LOCAL,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("openbao"), "{err}");

        // Another keyring (other KEK) refuses it.
        let other = LocalKeyring::open_or_create(&dir.path().join("other.json"), &pass("p")).unwrap();
        other.wrap_key("x", &key).await.unwrap();
        assert!(matches!(
            other.unwrap_key("store-a", &w).await,
            Err(KeyError::Unwrap(_))
        ));
        // The wrapped form serialises for storage next to the data, and says nothing about the key.
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<WrappedKey>(&json).unwrap(), w);
        assert!(!format!("{ring:?}{w:?}").contains(&B64.encode(key.as_ref())));
    }

    #[tokio::test]
    async fn rotation_keeps_old_versions_and_rewrap_moves_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring = LocalKeyring::open_or_create(&path, &pass("p")).unwrap();
        let key = random_key();
        let w1 = ring.wrap_key("store-a", &key).await.unwrap();
        assert_eq!(ring.rotate_kek().await.unwrap(), 2);
        assert_eq!(
            *ring.unwrap_key("store-a", &w1).await.unwrap(),
            *key,
            "old version still unwraps"
        );
        let w2 = ring.rewrap_key("store-a", &w1).await.unwrap();
        assert_eq!(w2.kek_version, 2);
        assert_ne!(w2.ciphertext, w1.ciphertext);
        assert_eq!(*ring.unwrap_key("store-a", &w2).await.unwrap(), *key, "same data key");
        assert!(matches!(
            ring.rewrap_key("store-b", &w1).await,
            Err(KeyError::Unwrap(_))
        ));
        assert!(matches!(
            ring.rewrap_key("store-a", &tampered(&w1, 20)).await,
            Err(KeyError::Unwrap(_))
        ));
        // A wrapped key claiming another version does not authenticate (the version is in the AAD).
        let relabelled = WrappedKey {
            kek_version: 2,
            ..w1.clone()
        };
        assert!(matches!(
            ring.unwrap_key("store-a", &relabelled).await,
            Err(KeyError::Unwrap(_))
        ));
        assert_eq!(ring.wrap_key("store-b", &key).await.unwrap().kek_version, 2);
        let linkage = ring.hmac(KeyPurpose::Linkage, &[b"x"]).await.unwrap();

        // Persisted: a reopen with the same passphrase has both versions, and the HMAC keys are untouched.
        let reopened = LocalKeyring::open_or_create(&path, &pass("p")).unwrap();
        assert_eq!(*reopened.unwrap_key("store-a", &w1).await.unwrap(), *key);
        assert_eq!(*reopened.unwrap_key("store-a", &w2).await.unwrap(), *key);
        assert_eq!(reopened.wrap_key("store-a", &key).await.unwrap().kek_version, 2);
        assert_eq!(reopened.hmac(KeyPurpose::Linkage, &[b"x"]).await.unwrap(), linkage);
        assert_eq!(reopened.rotate_kek().await.unwrap(), 3);
        let w3 = reopened.rewrap_key("store-a", &w1).await.unwrap();
        assert_eq!(w3.kek_version, 3);
        let third = LocalKeyring::open_or_create(&path, &pass("p")).unwrap();
        assert_eq!(*third.unwrap_key("store-a", &w3).await.unwrap(), *key);
        assert!(matches!(
            LocalKeyring::open_or_create(&path, &pass("wrong")),
            Err(KeyError::Decrypt { .. })
        ));
    }

    #[tokio::test]
    async fn rotate_before_first_use_creates_the_kek_then_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring = LocalKeyring::open_or_create(&path, &pass("p")).unwrap();
        assert_eq!(ring.rotate_kek().await.unwrap(), 2);
        assert_eq!(plaintext_of(&path, "p")["kek"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn keyring_written_before_envelope_encryption_gains_a_kek_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        // A keyring file exactly as the previous version wrote it: only the purpose keys.
        let linkage = [5u8; 32];
        let old = serde_json::json!({ "keys": {
            "linkage": B64.encode(linkage),
            "hospital-pseudonym": B64.encode([6u8; 32]),
            "batch-digest": B64.encode([7u8; 32]),
        }});
        let sealer = Sealer::new("old pass", "test").unwrap();
        write_private(&path, &sealer.seal(old.to_string().as_bytes(), "test").unwrap()).unwrap();
        let expected: Digest = {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&linkage).unwrap();
            mac.update(b"id");
            mac.finalize().into_bytes().into()
        };

        let ring = LocalKeyring::open_or_create(&path, &pass("old pass")).unwrap();
        assert_eq!(ring.hmac(KeyPurpose::Linkage, &[b"id"]).await.unwrap(), vec![expected]);
        assert!(
            plaintext_of(&path, "old pass").get("kek").is_none(),
            "opening does not rewrite"
        );
        let key = random_key();
        let w = ring.wrap_key("store-a", &key).await.unwrap();
        assert_eq!(w.kek_version, 1);
        let after = plaintext_of(&path, "old pass");
        assert_eq!(after["kek"].as_array().unwrap().len(), 1);
        assert_eq!(after["keys"], old["keys"], "purpose keys preserved");

        let reopened = LocalKeyring::open_or_create(&path, &pass("old pass")).unwrap();
        assert_eq!(*reopened.unwrap_key("store-a", &w).await.unwrap(), *key);
        assert_eq!(
            reopened.hmac(KeyPurpose::Linkage, &[b"id"]).await.unwrap(),
            vec![expected]
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_new_keyring_has_no_kek_until_needed_and_unwrap_does_not_create_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring = LocalKeyring::open_or_create(&path, &pass("p")).unwrap();
        assert!(plaintext_of(&path, "p").get("kek").is_none());
        let w = WrappedKey {
            backend: BACKEND_LOCAL.into(),
            kek_version: 1,
            ciphertext: B64.encode([0u8; WRAPPED_LEN]),
            kek: String::new(),
        };
        assert!(matches!(ring.unwrap_key("s", &w).await, Err(KeyError::Unwrap(_))));
        assert!(plaintext_of(&path, "p").get("kek").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_wraps_and_rotations_through_a_shared_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring: std::sync::Arc<LocalKeyring> =
            std::sync::Arc::new(LocalKeyring::open_or_create(&path, &pass("p")).unwrap());
        let mut tasks = Vec::new();
        for i in 0..16 {
            let ring = ring.clone();
            tasks.push(tokio::spawn(async move {
                let ctx = format!("store-{i}");
                let key = random_key();
                let w = ring.wrap_key(&ctx, &key).await.unwrap();
                if i % 4 == 0 {
                    ring.rotate_kek().await.unwrap();
                }
                (ctx, key, w)
            }));
        }
        let mut wrapped = Vec::new();
        for t in tasks {
            wrapped.push(t.await.unwrap());
        }
        // 1 created on first use + 4 rotations, none lost to a race.
        assert_eq!(ring.lock_keks().len(), 5);
        let reopened = LocalKeyring::open_or_create(&path, &pass("p")).unwrap();
        assert_eq!(reopened.lock_keks().len(), 5);
        for (ctx, key, w) in &wrapped {
            assert_eq!(*reopened.unwrap_key(ctx, w).await.unwrap(), **key);
            let r = reopened.rewrap_key(ctx, w).await.unwrap();
            assert_eq!(r.kek_version, 5);
            assert_eq!(*reopened.unwrap_key(ctx, &r).await.unwrap(), **key);
        }
    }
}
