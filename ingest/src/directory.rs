//! The hospital directory as the gateway sees it: a list of the hospitals allowed to push, each pinned to the
//! SHA-256 of its client certificate, signed by the policy service.
//!
//! The CA says a certificate was issued; the directory says the hospital may still send. A hospital disabled
//! in the committee zone's directory, or one whose certificate was replaced, is refused at its next request
//! even while the old certificate is valid — without the gateway ever reaching the policy database (the list
//! is a file the policy service publishes, `tokumei user hospitals-publish`, carried to the gateway host).
//!
//! File format (JSON): `{"payload": "<JSON text>", "signature": "<hex ed25519>"}`, the signature over
//! `tokumei/hospital-directory/v1 ‖ 0 ‖ payload` by the policy service key, whose public key the gateway's
//! configuration pins (a key inside the file would prove nothing). The payload is
//! `{"issued_at": RFC 3339, "hospitals": [{"institution_code": …, "certificate_sha256": …}]}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::Deserialize;

/// Domain of the directory's signature (the policy service's `SignaturePurpose::HospitalDirectory`).
pub const DOMAIN: &[u8] = b"tokumei/hospital-directory/v1";

/// Why a directory file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The file could not be read.
    #[error("hospital directory {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not the expected JSON.
    #[error("hospital directory {0}: not a signed directory file")]
    Malformed(PathBuf),
    /// The signature does not verify under the configured key.
    #[error("hospital directory {0}: the signature does not verify under the configured policy service key")]
    BadSignature(PathBuf),
    /// The configured public key is not 32 bytes of hex.
    #[error("gateway.directory.public_key must be 64 hex characters (the policy service's public key)")]
    BadKey,
}

#[derive(Deserialize)]
struct SignedFile {
    payload: String,
    signature: String,
}

#[derive(Deserialize)]
struct Payload {
    issued_at: String,
    hospitals: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    institution_code: String,
    certificate_sha256: String,
}

/// A verified directory: institution code → pinned certificate fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// When the policy service issued it.
    pub issued_at: String,
    hospitals: BTreeMap<String, String>,
}

/// The verdict on one request's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Listed, and the certificate is the pinned one.
    Enabled,
    /// Not listed (unknown or disabled in the directory).
    NotListed,
    /// Listed under another certificate (replaced or revoked there).
    OtherCertificate,
}

impl Directory {
    /// Reads and verifies `path` under `key`.
    pub fn load(path: &Path, key: &VerifyingKey) -> Result<Directory, DirectoryError> {
        let text = std::fs::read(path).map_err(|source| DirectoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: SignedFile = serde_json::from_slice(&text).map_err(|_| DirectoryError::Malformed(path.to_owned()))?;
        let signature = hex::decode(&file.signature)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| DirectoryError::BadSignature(path.to_owned()))?;
        let mut message = DOMAIN.to_vec();
        message.push(0);
        message.extend_from_slice(file.payload.as_bytes());
        key.verify(&message, &signature)
            .map_err(|_| DirectoryError::BadSignature(path.to_owned()))?;
        let payload: Payload =
            serde_json::from_str(&file.payload).map_err(|_| DirectoryError::Malformed(path.to_owned()))?;
        Ok(Directory {
            issued_at: payload.issued_at,
            hospitals: payload
                .hospitals
                .into_iter()
                .map(|e| (e.institution_code, e.certificate_sha256.to_ascii_lowercase()))
                .collect(),
        })
    }

    /// Whether `code` may push with a certificate whose DER has SHA-256 `certificate_sha256` (hex); `None`
    /// for the loopback development listener, which has no certificate (the code must still be listed).
    pub fn admit(&self, code: &str, certificate_sha256: Option<&str>) -> Admission {
        match (self.hospitals.get(code), certificate_sha256) {
            (None, _) => Admission::NotListed,
            (Some(_), None) => Admission::Enabled,
            (Some(pinned), Some(seen)) if pinned.eq_ignore_ascii_case(seen) => Admission::Enabled,
            (Some(_), Some(_)) => Admission::OtherCertificate,
        }
    }

    /// Hospitals listed.
    pub fn len(&self) -> usize {
        self.hospitals.len()
    }

    /// True when no hospital is listed (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.hospitals.is_empty()
    }
}

/// The configured public key.
pub fn verifying_key(hex_key: &str) -> Result<VerifyingKey, DirectoryError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(DirectoryError::BadKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| DirectoryError::BadKey)
}

/// The directory in force, reloaded when its file changes; a file that fails verification is refused and
/// the previous directory stays in force (an attacker who can write the file cannot open the gate).
#[derive(Debug)]
pub struct DirectoryWatch {
    path: PathBuf,
    key: VerifyingKey,
    current: RwLock<(Arc<Directory>, Option<SystemTime>)>,
}

impl DirectoryWatch {
    /// Loads the directory once; the gateway does not start on a file that does not verify.
    pub fn open(path: &Path, key: VerifyingKey) -> Result<DirectoryWatch, DirectoryError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let directory = Directory::load(path, &key)?;
        Ok(DirectoryWatch {
            path: path.to_owned(),
            key,
            current: RwLock::new((Arc::new(directory), modified)),
        })
    }

    /// The directory in force.
    pub fn current(&self) -> Arc<Directory> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()).0)
    }

    /// Re-reads the file if it changed; returns whether a new directory took effect.
    pub fn reload_if_changed(&self) -> Result<bool, DirectoryError> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified == self.current.read().unwrap_or_else(|p| p.into_inner()).1 {
            return Ok(false);
        }
        let directory = Directory::load(&self.path, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(directory), modified);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn write(dir: &Path, key: &SigningKey, payload: &str) -> PathBuf {
        let mut message = DOMAIN.to_vec();
        message.push(0);
        message.extend_from_slice(payload.as_bytes());
        let signature = hex::encode(key.sign(&message).to_bytes());
        let path = dir.join("hospitals.json");
        let file = serde_json::json!({"payload": payload, "signature": signature});
        std::fs::write(&path, file.to_string()).unwrap();
        path
    }

    #[test]
    fn only_a_listed_hospital_with_its_pinned_certificate_is_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let payload = r#"{"issued_at":"2026-12-04T00:00:00Z","hospitals":[{"institution_code":"1310000001","certificate_sha256":"AB01"}]}"#;
        let path = write(dir.path(), &key, payload);
        let d = Directory::load(&path, &key.verifying_key()).unwrap();
        assert_eq!(d.admit("1310000001", Some("ab01")), Admission::Enabled);
        assert_eq!(d.admit("1310000001", Some("ffff")), Admission::OtherCertificate);
        assert_eq!(d.admit("1310000002", Some("ab01")), Admission::NotListed);
        assert_eq!(d.admit("1310000001", None), Admission::Enabled);
        // Another key's signature, or a payload changed after signing, is refused.
        let other = SigningKey::from_bytes(&[4u8; 32]);
        assert!(matches!(
            Directory::load(&path, &other.verifying_key()),
            Err(DirectoryError::BadSignature(_))
        ));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("1310000001", "1310000002");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            Directory::load(&path, &key.verifying_key()),
            Err(DirectoryError::BadSignature(_))
        ));
        // A signature made for another purpose (same key, other domain) does not pass either.
        let forged = serde_json::json!({
            "payload": payload,
            "signature": hex::encode(key.sign(payload.as_bytes()).to_bytes()),
        });
        std::fs::write(&path, forged.to_string()).unwrap();
        assert!(Directory::load(&path, &key.verifying_key()).is_err());
    }

    #[test]
    fn a_bad_update_leaves_the_previous_directory_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let listed = r#"{"issued_at":"1","hospitals":[{"institution_code":"1310000001","certificate_sha256":"ab"}]}"#;
        let path = write(dir.path(), &key, listed);
        let watch = DirectoryWatch::open(&path, key.verifying_key()).unwrap();
        assert_eq!(watch.current().len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "{\"payload\": \"{}\", \"signature\": \"00\"}").unwrap();
        assert!(watch.reload_if_changed().is_err());
        assert_eq!(watch.current().admit("1310000001", Some("ab")), Admission::Enabled);
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(dir.path(), &key, r#"{"issued_at":"2","hospitals":[]}"#);
        assert!(watch.reload_if_changed().unwrap());
        assert_eq!(watch.current().admit("1310000001", Some("ab")), Admission::NotListed);
        assert!(!watch.reload_if_changed().unwrap(), "unchanged file");
    }
}
