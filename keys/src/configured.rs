//! The key service a process's configuration names (`[keys]`), opened for one zone: every zone's process (the
//! gateway, the core, the release service, tools) opens its keys the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokumei_platform::config::{Config, KeyBackend, LocalKeysConfig, resolve};

use crate::local::{LocalKeyring, Passphrase};
use crate::openbao::{OpenBaoSettings, OpenBaoTransit};
use crate::{KeyError, KeyZone, SharedKeyService};

/// Opens the configured key service for `zone`: the local keyring under `home`, or OpenBao transit with the
/// token in the configured environment variable.
pub async fn open_configured(config: &Config, home: &Path, zone: KeyZone) -> Result<SharedKeyService, KeyError> {
    match config.keys.backend {
        KeyBackend::Local => {
            let (path, passphrase_file) = zone_keyring(home, &config.keys.local, zone)?;
            let shown = path.display().to_string();
            let pass = Passphrase::from_env_or_file(passphrase_file, true);
            let ring = tokio::task::spawn_blocking(move || LocalKeyring::open_or_create(&path, &pass))
                .await
                .map_err(|e| KeyError::Io {
                    path: shown,
                    source: std::io::Error::other(format!("keyring task: {e}")),
                })??;
            Ok(Arc::new(ring))
        }
        KeyBackend::Openbao => {
            let o = &config.keys.openbao;
            let token = std::env::var(&o.token_env)
                .map_err(|_| KeyError::Remote(format!("OpenBao backend selected but ${} is not set", o.token_env)))?;
            let settings = OpenBaoSettings {
                address: o.address.clone(),
                token: zeroize::Zeroizing::new(token),
                mount: o.mount.clone(),
                key_prefix: o.key_prefix.clone(),
                key_version: o.key_version,
            };
            Ok(Arc::new(OpenBaoTransit::connect(settings, zone).await?))
        }
    }
}

/// The zone's own keyring and passphrase file: the configured names in a directory of the zone's
/// (`keyring/keyring.json` → `keyring/core/keyring.json`, `secrets/keyring.passphrase` →
/// `secrets/core/keyring.passphrase`; each directory created 0700 by the zone that first uses it). Each zone's
/// keyring has key-encryption keys and named keys of its own, so on one host, as with OpenBao, the release zone's
/// keyring cannot unwrap a key the core wrapped and the gateway's holds nothing of the store's; with the zones'
/// accounts apart, each reads its own directory only.
///
/// A home made before keyrings were per zone has one shared keyring: each zone's keyring starts as a copy of it
/// (with its passphrase file, unless the passphrase comes from the environment), so what was wrapped still
/// unwraps. Such a home's zones keep sharing that old key material — a KEK rotation adds a key and keeps the old
/// ones, and the gateway's HMAC keys never change — so only a home made by this version has keys apart; a warning
/// says so once per copy.
pub fn zone_keyring(home: &Path, local: &LocalKeysConfig, zone: KeyZone) -> Result<(PathBuf, PathBuf), KeyError> {
    let shared = resolve(home, &local.path);
    let shared_passphrase = resolve(home, &local.passphrase_file);
    let path = with_zone(&shared, zone, "keyring.json");
    let passphrase = with_zone(&shared_passphrase, zone, "keyring.passphrase");
    if !path.exists() && shared.exists() {
        let io = |p: &Path| {
            let shown = p.display().to_string();
            move |source| KeyError::Io { path: shown, source }
        };
        // A passphrase from the environment opens the copy too: no need for another file holding it.
        let from_env = std::env::var(crate::local::PASSPHRASE_ENV).is_ok_and(|v| !v.is_empty());
        if !from_env && !passphrase.exists() && shared_passphrase.exists() {
            let text = zeroize::Zeroizing::new(std::fs::read(&shared_passphrase).map_err(io(&shared_passphrase))?);
            crate::local::write_private(&passphrase, &text).map_err(io(&passphrase))?;
        }
        let ring = std::fs::read(&shared).map_err(io(&shared))?;
        crate::local::write_private(&path, &ring).map_err(io(&path))?;
        tracing::warn!(
            zone = zone.name(),
            "the {} zone's keyring starts as a copy of the shared keyring of an earlier version: it holds the other \
             zones' keys too (only a home made by this version has keys apart)",
            zone.name()
        );
    }
    Ok((path, passphrase))
}

/// `dir/file` → `dir/zone/file`: a directory per zone, so that each zone's account owns its own (created 0700).
fn with_zone(path: &Path, zone: KeyZone, default_name: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| default_name.into(), |n| n.to_os_string());
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(zone.name()).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyService;

    fn config() -> Config {
        Config::default()
    }

    /// On one host each zone's keyring is its own: what the core wraps, the release zone's keyring cannot unwrap
    /// (nor the gateway's), and the gateway's HMAC keys are not the core's.
    #[tokio::test]
    async fn each_zone_has_a_keyring_of_its_own() {
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let core = open_configured(&config(), home.path(), KeyZone::Core)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let release = open_configured(&config(), home.path(), KeyZone::Release)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let gateway = open_configured(&config(), home.path(), KeyZone::Gateway)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let wrapped = core
            .wrap_key("store", &[9u8; 32])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            *core
                .unwrap_key("store", &wrapped)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            [9u8; 32]
        );
        assert!(
            release.unwrap_key("store", &wrapped).await.is_err(),
            "the release zone unwrapped a core key"
        );
        assert!(
            gateway.unwrap_key("store", &wrapped).await.is_err(),
            "the gateway unwrapped a core key"
        );
        let digest = |k: &SharedKeyService| {
            let k = k.clone();
            async move {
                k.hmac(crate::KeyPurpose::Linkage, &[b"patient"])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert_ne!(digest(&gateway).await, digest(&core).await);
        for zone in ["gateway", "core", "release"] {
            assert!(home.path().join(format!("keyring/{zone}/keyring.json")).exists());
            assert!(home.path().join(format!("secrets/{zone}/keyring.passphrase")).exists());
        }
        assert!(
            !home.path().join("keyring/keyring.json").exists(),
            "no shared keyring is made"
        );
    }

    /// A home with the shared keyring of an earlier version: each zone's keyring starts as a copy, so what the
    /// shared one wrapped still unwraps in every zone (until the zones rotate), and new keys are the zone's own.
    #[tokio::test]
    async fn a_shared_keyring_of_an_earlier_version_is_carried_over() {
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let local = LocalKeysConfig::default();
        let shared = LocalKeyring::open_or_create(
            &resolve(home.path(), &local.path),
            &Passphrase::File {
                path: resolve(home.path(), &local.passphrase_file),
                create: true,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let wrapped = shared
            .wrap_key("store", &[5u8; 32])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for zone in [KeyZone::Core, KeyZone::Release] {
            let keys = open_configured(&config(), home.path(), zone)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                *keys
                    .unwrap_key("store", &wrapped)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
                [5u8; 32]
            );
        }
    }
}
