//! The release zone's intake: how the core's half of a build reaches the zone without either zone reaching the
//! other.
//!
//! The core listens on nothing and the release zone may not connect to it, so a build crosses an **outbox**: a
//! directory (or bucket) the core writes and the release zone reads. What crosses is a *package* — the anonymised,
//! verified tables and what protecting them did — sealed with HPKE (RFC 9180: X25519, HKDF-SHA-256, AES-256-GCM) to
//! the zone's **intake key** and bound to the order's number. The outbox is therefore untrusted storage: the
//! policy service pins the package's SHA-256 (the core's report on the order), only the release zone's key opens
//! it, and a package cannot be passed off as another order's.
//!
//! The intake key's private half is a 32-byte seed wrapped by the release zone's key service (the core's
//! credentials cannot unwrap it); its public half is written next to it for the core's configuration to pin.
//!
//! ```text
//! $TOKUMEI_HOME/release/intake-key.json   the seed, wrapped by the release zone's key service
//! $TOKUMEI_HOME/release/intake.pub        the public half, 64 hex digits (pinned by the core)
//! $TOKUMEI_HOME/outbox/build-<order>.sealed
//! ```

use std::path::{Path, PathBuf};

use tokumei_keys::KeyService;
use tokumei_keys::WrappedKey;
use tokumei_keys::sealed_result::RecipientKey;
use zeroize::Zeroizing;

use crate::error::{ReleaseError, Result};

/// The key service context the intake seed is wrapped under.
const CONTEXT: &str = "tokumei-release-intake";

/// Where the public half is published, under `home`.
pub fn public_key_path(home: &Path) -> PathBuf {
    home.join("release").join("intake.pub")
}

fn wrapped_seed_path(home: &Path) -> PathBuf {
    home.join("release").join("intake-key.json")
}

/// The outbox of a single-host installation (`$TOKUMEI_HOME/outbox`).
pub fn default_outbox(home: &Path) -> PathBuf {
    home.join("outbox")
}

/// The file name of order `order`'s package in the outbox.
pub fn package_name(order: u64) -> String {
    format!("build-{order}.sealed")
}

/// What a package is bound to: the order it answers (HPKE associated data).
pub fn package_context(order: u64) -> Vec<u8> {
    format!("tokumei/build-package/v1 order {order}").into_bytes()
}

/// The zone's intake key: unwrapped from its file, or created (and its public half published) on first use.
pub async fn load_or_create(home: &Path, keys: &dyn KeyService) -> Result<RecipientKey> {
    let path = wrapped_seed_path(home);
    let seed: Zeroizing<[u8; 32]> = match std::fs::read(&path) {
        Ok(bytes) => {
            let wrapped: WrappedKey = serde_json::from_slice(&bytes)?;
            let key = keys
                .unwrap_key(CONTEXT, &wrapped)
                .await
                .map_err(|e| ReleaseError::Keys(e.to_string()))?;
            Zeroizing::new(*key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && public_key_path(home).exists() => {
            // The public half is published (and pinned by the core) but its seed is gone: making a new pair would
            // silently re-key what the core seals to. Refused; an operator removes intake.pub to start afresh.
            return Err(ReleaseError::Keys(format!(
                "the intake key's seed {} is missing while its public half is published; remove {} to make a new \
                 key (and pin the new one in the core's configuration)",
                path.display(),
                public_key_path(home).display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = Zeroizing::new([0u8; 32]);
            rand::Rng::fill(&mut rand::rng(), &mut seed[..]);
            let wrapped = keys
                .wrap_key(CONTEXT, &seed)
                .await
                .map_err(|e| ReleaseError::Keys(e.to_string()))?;
            write_atomically(&path, &serde_json::to_vec_pretty(&wrapped)?)?;
            seed
        }
        Err(e) => return Err(ReleaseError::io(format!("reading {}", path.display()), e)),
    };
    let key = RecipientKey::from_seed(&seed);
    let public = public_key_path(home);
    if std::fs::read_to_string(&public).ok().as_deref().map(str::trim) != Some(key.public_hex()) {
        write_atomically(&public, format!("{}\n", key.public_hex()).as_bytes())?;
    }
    Ok(key)
}

/// Writes `bytes` to `path` through a temporary file and a rename (a reader never sees half a file).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ReleaseError::io(format!("creating {}", dir.display()), e))?;
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ReleaseError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokumei_keys::local::{LocalKeyring, Passphrase};

    fn keyring(dir: &Path, name: &str) -> LocalKeyring {
        LocalKeyring::open_or_create(
            &dir.join(name),
            &Passphrase::Value(Zeroizing::new("test passphrase".into())),
        )
        .expect("keyring")
    }

    #[tokio::test]
    async fn the_intake_key_survives_a_restart_and_only_its_key_service_opens_it() {
        let home = tempfile::tempdir().expect("home");
        let keys = keyring(home.path(), "release-keyring.json");
        let first = load_or_create(home.path(), &keys).await.expect("created");
        let published = std::fs::read_to_string(public_key_path(home.path())).expect("published");
        assert_eq!(published.trim(), first.public_hex());
        let again = load_or_create(home.path(), &keys).await.expect("reloaded");
        assert_eq!(again.public_hex(), first.public_hex());
        // A package sealed to the published key opens under the reloaded key, for its order only.
        let sealed =
            tokumei_keys::sealed_result::seal(published.trim(), b"package", &package_context(7)).expect("sealed");
        assert_eq!(
            &again.open(&sealed, &package_context(7)).expect("opens")[..],
            b"package"
        );
        assert!(again.open(&sealed, &package_context(8)).is_err());
        // Another zone's key service cannot unwrap the seed.
        let other = keyring(home.path(), "core-keyring.json");
        assert!(load_or_create(home.path(), &other).await.is_err());
        // A lost seed with its public half still published: refused, never silently re-keyed.
        std::fs::remove_file(home.path().join("release/intake-key.json")).expect("remove the seed");
        assert!(load_or_create(home.path(), &keys).await.is_err());
        assert_eq!(
            std::fs::read_to_string(public_key_path(home.path()))
                .expect("still published")
                .trim(),
            first.public_hex()
        );
    }
}
