//! Per-release pseudonyms: where a patient's core linkage key is replaced before anything leaves the core.
//!
//! A release's pseudonym is HMAC-SHA-256(key, linkage_key), truncated to 128 bits. By default the key is drawn
//! fresh for the release and never stored, so no one — the platform included — can join two releases'
//! pseudonyms or map them back. Only when the approval allows linking a project's releases is one key kept
//! per project, wrapped by the key service, on the core side (never in the release zone).

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokumei_keys::{KeyService, WrappedKey};
use zeroize::Zeroizing;

use crate::error::{ReleaseError, Result};

/// The key a release's pseudonyms are computed under.
pub struct PseudonymKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(<redacted>)")
    }
}

impl PseudonymKey {
    /// A fresh key for one release (never stored).
    pub fn fresh() -> PseudonymKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::Rng::fill(&mut rand::rng(), &mut key[..]);
        PseudonymKey::from_bytes(&key)
    }

    fn from_bytes(key: &[u8; 32]) -> PseudonymKey {
        PseudonymKey {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
        }
    }

    /// A keyed sort key for row `row` of the file `scope`: rows sorted by it are in an order only the key
    /// determines (the key is never stored for release-scoped pseudonyms).
    pub fn order_key(&self, scope: &str, row: u64) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(b"tokumei-release-row-order\0");
        mac.update(scope.as_bytes());
        mac.update(b"\0");
        mac.update(&row.to_le_bytes());
        let bytes = mac.finalize().into_bytes();
        u64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ])
    }

    /// The pseudonym of a linkage key (32 hex characters).
    pub fn pseudonym(&self, linkage_key: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"tokumei-release-pseudonym\0");
        mac.update(linkage_key.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The project's key for linkable releases: created on first use, kept wrapped under `core_home`.
    pub async fn for_project(core_home: &Path, keys: &dyn KeyService, application: &str) -> Result<PseudonymKey> {
        let path = project_key_path(core_home, application)?;
        let context = format!("tokumei-release-pseudonym:{application}");
        if let Ok(bytes) = std::fs::read(&path) {
            let wrapped: WrappedKey = serde_json::from_slice(&bytes)?;
            let key = keys
                .unwrap_key(&context, &wrapped)
                .await
                .map_err(|e| ReleaseError::Keys(e.to_string()))?;
            return Ok(PseudonymKey::from_bytes(&key));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        rand::Rng::fill(&mut rand::rng(), &mut key[..]);
        let wrapped = keys
            .wrap_key(&context, &key)
            .await
            .map_err(|e| ReleaseError::Keys(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ReleaseError::io(format!("creating {}", dir.display()), e))?;
        }
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&wrapped)?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| ReleaseError::io(format!("writing {}", path.display()), e))?;
        Ok(PseudonymKey::from_bytes(&key))
    }
}

fn project_key_path(core_home: &Path, application: &str) -> Result<PathBuf> {
    if application.is_empty()
        || !application
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ReleaseError::NotReleasable(format!("application id {application:?}")));
    }
    Ok(core_home
        .join("core")
        .join("pseudonym-keys")
        .join(format!("{application}.json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_keys_do_not_join_and_one_key_is_stable() {
        let (a, b) = (PseudonymKey::fresh(), PseudonymKey::fresh());
        assert_eq!(a.pseudonym("lk-1"), a.pseudonym("lk-1"));
        assert_ne!(a.pseudonym("lk-1"), b.pseudonym("lk-1"));
        assert_ne!(a.pseudonym("lk-1"), a.pseudonym("lk-2"));
        assert_eq!(a.pseudonym("lk-1").len(), 32);
        assert_eq!(format!("{a:?}"), "PseudonymKey(<redacted>)");
    }
}
