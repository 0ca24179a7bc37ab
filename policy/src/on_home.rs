//! The policy zone's processes on a home: the façade as the service opens it (with every purpose key, which the
//! service alone holds), as the installer and the service account open it (the ledger key only, sessions checked
//! against the service's public session key), and a purpose key's rotation, recorded in the ledger. The command
//! line only names the home and the database.

use std::path::{Path, PathBuf};

use crate::audit_ledger::{AuditEvent, Outcome};
use crate::error::{PolicyError, Result};
use crate::service::{Policy, PolicyConfig};
use crate::service_key::{self as keys, KeysInUse, ServiceKey, ServicePublicKey};

/// Where the policy zone keeps its files under a home.
pub fn policy_dir(home: &Path) -> PathBuf {
    home.join("policy")
}

/// Opens the façade in this process: the database (`database`, default the home's SQLite file), the ledger key
/// (created on first use) and `policy.toml`. It checks sessions against the public half of the service's session
/// key and can log nobody in (before a service ever ran there is no such key, and no session is valid).
pub async fn open(home: &Path, database: Option<&str>) -> Result<Policy> {
    let url = database.map_or_else(|| crate::database::default_url(home), str::to_owned);
    let config = PolicyConfig::load(&policy_dir(home).join("policy.toml"))?;
    let verifier = match ServicePublicKey::read(&keys::public_key_path(&keys::session_key_path(home))) {
        Ok(public) => public,
        // No policy service has issued a session here: a key nobody holds accepts none.
        Err(_) => ServiceKey::generate().public(),
    };
    Ok(Policy::open(&url, &keys::default_key_path(home), config)
        .await?
        .with_session_verifier(verifier))
}

/// Opens the façade as the policy service: [`open`], plus the keys only the service loads — core orders, sessions
/// (people log in there and nowhere else), what it publishes (ban lists, the hospital directory) and the seal of
/// second-factor seeds (only the service checks codes) — and the service's hold on those keys ([`KeysInUse`]),
/// which the caller keeps for as long as it serves: no key of this home rotates under it.
pub async fn open_service(home: &Path, database: Option<&str>) -> Result<(Policy, KeysInUse)> {
    let keys_in_use = KeysInUse::serving(home)?;
    let load = |path: PathBuf| ServiceKey::load_or_create(&path);
    let core_order_key = load(keys::core_order_key_path(home))?;
    let session_key = load(keys::session_key_path(home))?;
    let bans_key = load(keys::bans_key_path(home))?;
    let directory_key = load(keys::directory_key_path(home))?;
    let seed_key = load(keys::totp_seal_key_path(home))?;
    let policy = open(home, database)
        .await?
        .with_seed_key(&seed_key)
        .with_core_order_key(core_order_key)
        .with_session_key(session_key)
        .with_bans_key(bans_key)
        .with_directory_key(directory_key);
    Ok((policy, keys_in_use))
}

/// A purpose key of the policy service, each rotated on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurposeKey {
    /// Session tokens.
    Session,
    /// Exported ban lists.
    Bans,
    /// The hospital directory.
    Directory,
    /// Core orders.
    CoreOrder,
    /// The audit ledger (`service.key`).
    Ledger,
}

impl PurposeKey {
    /// The name the ledger and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            PurposeKey::Session => "session",
            PurposeKey::Bans => "bans",
            PurposeKey::Directory => "directory",
            PurposeKey::CoreOrder => "core-order",
            PurposeKey::Ledger => "ledger",
        }
    }

    /// The key's file under `home`.
    pub fn path(self, home: &Path) -> PathBuf {
        match self {
            PurposeKey::Session => keys::session_key_path(home),
            PurposeKey::Bans => keys::bans_key_path(home),
            PurposeKey::Directory => keys::directory_key_path(home),
            PurposeKey::CoreOrder => keys::core_order_key_path(home),
            PurposeKey::Ledger => keys::default_key_path(home),
        }
    }
}

/// A rotation done: the public halves of the key retired and of the key now in force.
#[derive(Debug)]
pub struct Rotation {
    /// The retired key (its public half kept under `policy/retired/`).
    pub old: ServicePublicKey,
    /// The key in force.
    pub new: ServicePublicKey,
}

/// Rotates `purpose`'s key, with no service running (refused with `SERVICE_RUNNING` otherwise): the ledger is
/// opened first, so a database that cannot be reached stops the rotation before a key changes; it holds the ledger
/// key as it was, so the rotation's entry (which names the new key) is signed by the old. If that entry cannot be
/// written the old key is put back: no key is in force that the ledger does not name.
pub async fn rotate(home: &Path, database: Option<&str>, purpose: PurposeKey) -> Result<Rotation> {
    let _keys = KeysInUse::rotating(home)?;
    let policy = open(home, database).await?;
    if purpose == PurposeKey::Ledger {
        let legacy = policy.legacy_sealed_seeds().await?;
        if legacy > 0 {
            return Err(PolicyError::LegacySeeds(legacy));
        }
    }
    let path = purpose.path(home);
    let previous = ServiceKey::load_or_create(&path)?;
    let (old, new) = keys::rotate(&path)?;
    let event = AuditEvent::new(
        "policy-service",
        "key.rotated",
        format!("key {}", purpose.name()),
        Outcome::Ok,
    )
    .source("cli")
    .details(serde_json::json!({
        "old_key_id": old.key_id(),
        "new_key_id": new.key_id(),
        "new_public_key": new.to_hex(),
    }));
    if let Err(e) = policy.audit(event).await {
        keys::undo_rotation(&path, &previous)?;
        return Err(PolicyError::RotationNotRecorded(Box::new(e)));
    }
    Ok(Rotation { old, new })
}
