//! The embedded-default key service: a keyring file encrypted at rest.
//!
//! The file holds 256-bit keys, one per [`KeyPurpose`], sealed with AES-256-GCM under a key derived from a
//! passphrase by argon2id. It is written with mode 0600 in a 0700 directory, atomically (temp file, fsync,
//! rename, directory fsync). The passphrase comes from `TOKUMEI_KEYRING_PASSPHRASE` or from a passphrase file
//! that `tokumei pki init`/first start creates with mode 0600; production deployments should prefer OpenBao.

use super::{Digest, KeyError, KeyPurpose, KeyService};
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
use zeroize::Zeroizing;

const FORMAT: &str = "tokumei-keyring-v1";
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

/// Plaintext content of the keyring: key name → base64 key material.
#[derive(Serialize, Deserialize, Default)]
struct KeyMaterial {
    keys: BTreeMap<String, String>,
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
                        write_private(path, pass.as_bytes()).map_err(io)?;
                        Ok(pass)
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

/// The local keyring: keys held in memory in zeroizing buffers, sealed on disk.
pub struct LocalKeyring {
    path: PathBuf,
    keys: BTreeMap<KeyPurpose, Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("path", &self.path)
            .field("keys", &"<redacted>")
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
                };
                ring.seal(&pass)?;
                Ok(ring)
            }
            Err(source) => Err(KeyError::Io { path: display, source }),
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
        let kek = Self::derive_key(pass, &sealed.kdf, &display)?;
        let nonce = B64.decode(&sealed.nonce).map_err(|_| fmt_err("nonce is not base64"))?;
        if nonce.len() != 12 {
            return Err(fmt_err("nonce must be 12 bytes"));
        }
        let ct = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| fmt_err("ciphertext is not base64"))?;
        let cipher = Aes256Gcm::new_from_slice(kek.as_ref()).map_err(|_| fmt_err("key length"))?;
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
        let mut keys = BTreeMap::new();
        for p in KeyPurpose::ALL {
            let b64 = Zeroizing::new(
                material
                    .keys
                    .get(p.key_name())
                    .cloned()
                    .ok_or_else(|| fmt_err("a key is missing"))?,
            );
            let raw = Zeroizing::new(B64.decode(b64.as_bytes()).map_err(|_| fmt_err("key is not base64"))?);
            let mut k = Zeroizing::new([0u8; 32]);
            if raw.len() != 32 {
                return Err(fmt_err("keys must be 32 bytes"));
            }
            k.copy_from_slice(&raw);
            keys.insert(p, k);
        }
        drop(material.keys.into_values().map(Zeroizing::new).collect::<Vec<_>>());
        Ok(LocalKeyring {
            path: path.to_path_buf(),
            keys,
        })
    }

    fn seal(&self, pass: &str) -> Result<(), KeyError> {
        let display = self.path.display().to_string();
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let kdf = KdfParams {
            algorithm: KdfAlgorithm::Argon2id,
            m_cost_kib: 19_456,
            t_cost: 2,
            p_cost: 1,
            salt,
        };
        let kek = Self::derive_key(pass, &kdf, &display)?;
        let material = KeyMaterial {
            keys: self
                .keys
                .iter()
                .map(|(p, k)| (p.key_name().to_string(), B64.encode(k.as_ref())))
                .collect(),
        };
        let plain = Zeroizing::new(serde_json::to_vec(&material).map_err(|e| KeyError::Format {
            path: display.clone(),
            detail: e.to_string(),
        })?);
        drop(material.keys.into_values().map(Zeroizing::new).collect::<Vec<_>>());
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new_from_slice(kek.as_ref()).map_err(|_| KeyError::Format {
            path: display.clone(),
            detail: "key length".into(),
        })?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: FORMAT.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Format {
                path: display.clone(),
                detail: "encryption failed".into(),
            })?;
        let sealed = SealedFile {
            format: FORMAT.into(),
            kdf,
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        };
        let json = serde_json::to_vec_pretty(&sealed).map_err(|e| KeyError::Format {
            path: display.clone(),
            detail: e.to_string(),
        })?;
        write_private(&self.path, &json).map_err(|source| KeyError::Io { path: display, source })
    }
}

/// Writes `bytes` to `path` atomically with mode 0600, creating the parent directory with mode 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
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

    fn describe(&self) -> String {
        format!("local keyring {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let on_disk = std::fs::read(&path).unwrap();
        for k in a.keys.values() {
            assert!(!on_disk.windows(8).any(|w| w == &k[..8]), "raw key bytes on disk");
            let b64 = B64.encode(k.as_ref());
            assert!(
                !String::from_utf8_lossy(&on_disk).contains(&b64),
                "key in clear on disk"
            );
        }
    }
}
