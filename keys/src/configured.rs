//! The key service a process's configuration names (`[keys]`), opened for one zone: every zone's process (the
//! gateway, the core, the release service, tools) opens its keys the same way.

use std::path::Path;
use std::sync::Arc;

use tokumei_platform::config::{Config, KeyBackend, resolve};

use crate::local::{LocalKeyring, Passphrase};
use crate::openbao::{OpenBaoSettings, OpenBaoTransit};
use crate::{KeyError, KeyZone, SharedKeyService};

/// Opens the configured key service for `zone`: the local keyring under `home`, or OpenBao transit with the
/// token in the configured environment variable.
pub async fn open_configured(config: &Config, home: &Path, zone: KeyZone) -> Result<SharedKeyService, KeyError> {
    match config.keys.backend {
        KeyBackend::Local => {
            let path = resolve(home, &config.keys.local.path);
            let shown = path.display().to_string();
            let pass = Passphrase::from_env_or_file(resolve(home, &config.keys.local.passphrase_file), true);
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
