//! The policy service's ed25519 signature key: it signs audit-ledger entries, session tokens and exported
//! ban lists, so that anyone holding the public key can check them and nobody without the private key
//! can forge them — not even an operator with write access to the database.
//!
//! Every signature is over a domain-separated message (`tokumei/<purpose>/v1` ‖ 0 ‖ payload), so a
//! signature made for one purpose (say, an audit entry) can never be replayed as another (a session
//! token). The embedded default keeps the key in a 0600 file under `$TOKUMEI_HOME/policy/`; its public
//! half is written beside it for verifiers and inspectors.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{PolicyError, Result};

/// What a signature is for: part of every signed message, so signatures cannot cross purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignaturePurpose {
    /// An entry of the audit ledger.
    AuditEntry,
    /// A login session token.
    SessionToken,
    /// An exported ban list.
    BanList,
    /// A one-time download token or release manifest (release zone).
    Release,
    /// The list of hospitals allowed to push, for the gateway (`tokumei_ingest::directory`).
    HospitalDirectory,
    /// An order for the core (`tokumei_store::orders`): the core acts only on orders signed for this purpose.
    CoreOrder,
    /// An output of the analysis environment an output checker approved (`tokumei/analysis-output/v1`).
    AnalysisOutput,
}

impl SignaturePurpose {
    fn domain(self) -> &'static [u8] {
        match self {
            SignaturePurpose::AuditEntry => b"tokumei/audit-entry/v1",
            SignaturePurpose::SessionToken => b"tokumei/session-token/v1",
            SignaturePurpose::BanList => b"tokumei/ban-list/v1",
            SignaturePurpose::Release => b"tokumei/release/v1",
            SignaturePurpose::HospitalDirectory => b"tokumei/hospital-directory/v1",
            SignaturePurpose::CoreOrder => b"tokumei/core-order/v1",
            SignaturePurpose::AnalysisOutput => b"tokumei/analysis-output/v1",
        }
    }

    fn message(self, payload: &[u8]) -> Vec<u8> {
        let domain = self.domain();
        let mut m = Vec::with_capacity(domain.len() + 1 + payload.len());
        m.extend_from_slice(domain);
        m.push(0);
        m.extend_from_slice(payload);
        m
    }
}

/// The private signature key. `Debug` never shows it; the key bytes are zeroed on drop (ed25519-dalek's
/// `zeroize` feature).
#[derive(Clone)]
pub struct ServiceKey {
    key: SigningKey,
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

/// The public half: what verifiers (`tokumei audit verify`, the release service, another processor
/// importing a ban list) need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePublicKey {
    key: VerifyingKey,
}

/// Default file of the private key under a home directory.
pub fn default_key_path(home: &Path) -> PathBuf {
    home.join("policy").join("service.key")
}

/// The file of the key that signs core orders (its public key beside it, `.pub`, is what the core pins). Only the
/// policy service (`tokumei policy serve`) loads it: deployments make it readable by that service's account alone.
pub fn core_order_key_path(home: &Path) -> PathBuf {
    home.join("policy").join("core-order.key")
}

/// The file of the key that signs session tokens (its public key beside it, `.pub`). Only the policy service
/// (`tokumei policy serve`), where people log in, loads it; every other process that checks a session reads the
/// public half, so nothing that runs beside the policy database can mint a session.
pub fn session_key_path(home: &Path) -> PathBuf {
    home.join("policy").join("session.key")
}

/// The file of the key that seals second-factor (TOTP) seeds: loaded by the policy service only, never rotated by
/// `rotate-key` (the seeds would have to be re-sealed with it).
pub fn totp_seal_key_path(home: &Path) -> PathBuf {
    home.join("policy").join("totp-seal.key")
}

/// The file of the key that signs the ban lists this processor exports (`.pub` beside it: what other processors
/// trust). Only the policy service loads it.
pub fn bans_key_path(home: &Path) -> PathBuf {
    home.join("policy").join("bans.key")
}

/// The file of the key that signs the hospital directory the gateway reads (`.pub` beside it: what the gateway
/// pins). Only the policy service loads it.
pub fn directory_key_path(home: &Path) -> PathBuf {
    home.join("policy").join("directory.key")
}

impl ServiceKey {
    /// A fresh random key (from the operating system's CSPRNG through `rand`).
    pub fn generate() -> ServiceKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(seed.as_mut());
        ServiceKey {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A key from its 32-byte seed (tests, or a key fetched from a secret store).
    pub fn from_seed(seed: &[u8; 32]) -> ServiceKey {
        ServiceKey {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// Loads the key at `path` (hex seed), or creates it (0600, written atomically) with its public key
    /// beside it (`.pub`, hex) when the file does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<ServiceKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(text.trim(), path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ServiceKey::generate();
                key.write(path)?;
                Ok(key)
            }
            Err(e) => Err(io_error(path, e)),
        }
    }

    fn parse(text: &str, path: &Path) -> Result<ServiceKey> {
        let bytes = Zeroizing::new(hex::decode(text).map_err(|_| {
            PolicyError::Invalid(format!(
                "service key {} is not a hex-encoded ed25519 seed",
                path.display()
            ))
        })?);
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| PolicyError::Invalid(format!("service key {} must hold 32 bytes", path.display())))?;
        let seed = Zeroizing::new(seed);
        Ok(ServiceKey::from_seed(&seed))
    }

    fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
        let seed = Zeroizing::new(hex::encode(self.key.to_bytes()));
        let tmp = path.with_extension("key.tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp).map_err(|e| io_error(&tmp, e))?;
            f.write_all(seed.as_bytes()).map_err(|e| io_error(&tmp, e))?;
            f.sync_all().map_err(|e| io_error(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        let public = public_key_path(path);
        std::fs::write(&public, format!("{}\n", self.public().to_hex())).map_err(|e| io_error(&public, e))?;
        Ok(())
    }

    /// Signs `payload` for `purpose`.
    pub fn sign(&self, purpose: SignaturePurpose, payload: &[u8]) -> [u8; 64] {
        self.key.sign(&purpose.message(payload)).to_bytes()
    }

    /// A symmetric key for one purpose (`context`), derived from the service key with HKDF-SHA-256: secrets
    /// that must be read back (TOTP seeds) are sealed under it, so the database alone does not hold them.
    pub fn derive_key(&self, context: &[u8]) -> Zeroizing<[u8; 32]> {
        let seed = Zeroizing::new(self.key.to_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes are far below HKDF-SHA-256's output limit: expand cannot fail.
        let expanded = hkdf::Hkdf::<Sha256>::new(None, &seed[..]).expand(context, &mut out[..]);
        debug_assert!(expanded.is_ok());
        out
    }

    /// The public half.
    pub fn public(&self) -> ServicePublicKey {
        ServicePublicKey {
            key: self.key.verifying_key(),
        }
    }
}

/// Replaces the key at `path` with a fresh one: the old public half is kept under `retired/` beside it (named by
/// its key id, for verifiers of what it signed), the old private key is gone. Returns the old and new public keys.
/// Run by the policy service's account while the service is stopped: it loads its keys when it starts.
pub fn rotate(path: &Path) -> Result<(ServicePublicKey, ServicePublicKey)> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let old = ServiceKey::parse(text.trim(), path)?.public();
    let retired_dir = path
        .parent()
        .map(|d| d.join("retired"))
        .ok_or_else(|| PolicyError::Invalid(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(&retired_dir).map_err(|e| io_error(&retired_dir, e))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("key");
    let retired = retired_dir.join(format!("{stem}-{}.pub", old.key_id()));
    std::fs::write(&retired, format!("{}\n", old.to_hex())).map_err(|e| io_error(&retired, e))?;
    let new = ServiceKey::generate();
    new.write(path)?;
    Ok((old, new.public()))
}

/// Undoes a [`rotate`] whose ledger entry could not be written: `old` goes back in force and its retired public
/// half is removed, so no key is in force that the ledger does not name.
pub fn undo_rotation(path: &Path, old: &ServiceKey) -> Result<()> {
    old.write(path)?;
    if let Some(dir) = path.parent().map(|d| d.join("retired")) {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("key");
        let retired = dir.join(format!("{stem}-{}.pub", old.public().key_id()));
        match std::fs::remove_file(&retired) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&retired, e)),
        }
    }
    Ok(())
}

/// The public halves of the keys that [`rotate`] retired from `key_path` (in file-name order, which is not their
/// age): what a verifier of the ledger needs for the entries they signed. A file whose key is not the one its name
/// says is refused. A public key planted here is still only trusted where the ledger's own rotation entries hand
/// over to it (the chain's key periods, `audit_ledger::verify`).
pub fn retired_public_keys(key_path: &Path) -> Result<Vec<ServicePublicKey>> {
    let Some(dir) = key_path.parent().map(|d| d.join("retired")) else {
        return Ok(Vec::new());
    };
    let stem = key_path.file_stem().and_then(|s| s.to_str()).unwrap_or("key");
    let prefix = format!("{stem}-");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&dir, e)),
    };
    let mut named = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| io_error(&dir, e))?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".pub"))
        else {
            continue;
        };
        // `service-` is also the start of no other purpose's stem, but a stem with a dash in it could be: only
        // key ids (16 hex digits) count.
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            continue;
        }
        let public = ServicePublicKey::read(&path)?;
        if public.key_id() != id {
            return Err(PolicyError::Invalid(format!(
                "{}: the key in the file is not the key its name says",
                path.display()
            )));
        }
        named.push((path, public));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named.into_iter().map(|(_, k)| k).collect())
}

/// The hold running policy services keep on their home's keys (`run/policy-keys.lock`, an advisory lock the
/// operating system drops when the process ends, however it ends). A key rotated under a running service would
/// leave it signing with the key the ledger has just retired — its entries would then fail verification as
/// `KEY_NOT_IN_FORCE` — and issuing sessions nobody can check. So every service holds the lock shared (several may
/// serve one home), and `tokumei policy rotate-key` needs it exclusively: refused while any service runs.
#[derive(Debug)]
pub struct KeysInUse {
    _file: std::fs::File,
}

impl KeysInUse {
    /// A running service's hold (shared with other services of the home); fails with `SERVICE_RUNNING` only while
    /// a rotation holds the keys.
    pub fn serving(home: &Path) -> Result<KeysInUse> {
        Self::take(home, false)
    }

    /// A rotation's hold (exclusive); fails at once with `SERVICE_RUNNING` while any service holds the keys.
    pub fn rotating(home: &Path) -> Result<KeysInUse> {
        Self::take(home, true)
    }

    fn take(home: &Path, exclusive: bool) -> Result<KeysInUse> {
        let dir = home.join("run");
        let io = |path: &Path, e: std::io::Error| PolicyError::Invalid(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let path = dir.join("policy-keys.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let taken = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match taken {
            Ok(()) => Ok(KeysInUse { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if exclusive => Err(PolicyError::ServiceRunning(format!(
                "a policy service is running on this home ({} is held): stop it first",
                path.display()
            ))),
            Err(std::fs::TryLockError::WouldBlock) => Err(PolicyError::ServiceRunning(format!(
                "a key rotation holds this home's keys ({}): start the service when it has finished",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&path, e)),
        }
    }
}

/// Where the public key of the private key at `key_path` is written (`service.key` → `service.pub`).
pub fn public_key_path(key_path: &Path) -> PathBuf {
    key_path.with_extension("pub")
}

impl ServicePublicKey {
    /// Checks `signature` over `payload` for `purpose`.
    pub fn verify(&self, purpose: SignaturePurpose, payload: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify(&purpose.message(payload), &sig).is_ok()
    }

    /// Short identifier (first 16 hex digits of the SHA-256 of the key), recorded with each signature so a
    /// verifier can tell which key signed after a rotation.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.key.as_bytes())[..8])
    }

    /// The key as 64 hex digits (the `.pub` file format).
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<ServicePublicKey> {
        let bytes = hex::decode(text.trim()).map_err(|_| PolicyError::Invalid("public key is not hex".to_owned()))?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| PolicyError::Invalid("public key must hold 32 bytes".to_owned()))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| PolicyError::Invalid("not a valid ed25519 public key".to_owned()))?;
        Ok(ServicePublicKey { key })
    }

    /// Reads a `.pub` file.
    pub fn read(path: &Path) -> Result<ServicePublicKey> {
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        ServicePublicKey::from_hex(&text)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> PolicyError {
    PolicyError::Invalid(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The retired keys a verifier trusts are exactly the ones rotation retired: other purposes' files are not
    /// taken, and a file planted under a retired key's name with another key in it is refused.
    #[test]
    fn retired_keys_are_the_rotated_ones_and_a_planted_file_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = default_key_path(dir.path());
        assert!(retired_public_keys(&path).unwrap_or_else(|e| panic!("{e}")).is_empty());
        let first = ServiceKey::load_or_create(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .public();
        let (old, _) = rotate(&path).unwrap_or_else(|e| panic!("{e}"));
        let (second, _) = rotate(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old, first);
        let session = session_key_path(dir.path());
        ServiceKey::load_or_create(&session).unwrap_or_else(|e| panic!("{e}"));
        rotate(&session).unwrap_or_else(|e| panic!("{e}"));
        let mut retired = retired_public_keys(&path).unwrap_or_else(|e| panic!("{e}"));
        retired.sort_by_key(ServicePublicKey::key_id);
        let mut want = vec![first, second];
        want.sort_by_key(ServicePublicKey::key_id);
        assert_eq!(retired, want, "the ledger's two retired keys, not the session key's");
        let stranger = ServiceKey::generate().public();
        let planted = dir
            .path()
            .join("policy/retired")
            .join(format!("service-{}.pub", "0".repeat(16)));
        std::fs::write(&planted, stranger.to_hex()).unwrap_or_else(|e| panic!("{e}"));
        assert!(retired_public_keys(&path).is_err(), "a key under another key's name");
    }

    #[test]
    fn signatures_do_not_cross_purposes() {
        let key = ServiceKey::from_seed(&[7; 32]);
        let sig = key.sign(SignaturePurpose::AuditEntry, b"entry");
        assert!(key.public().verify(SignaturePurpose::AuditEntry, b"entry", &sig));
        assert!(!key.public().verify(SignaturePurpose::SessionToken, b"entry", &sig));
        assert!(!key.public().verify(SignaturePurpose::AuditEntry, b"entry!", &sig));
        assert!(!key.public().verify(SignaturePurpose::AuditEntry, b"entry", &sig[..63]));
    }

    #[test]
    fn rotation_replaces_the_key_and_keeps_only_the_old_public_half() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = session_key_path(dir.path());
        let before = ServiceKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        let (old, new) = rotate(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old, before.public());
        assert_ne!(old, new);
        let after = ServiceKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(after.public(), new);
        assert_eq!(
            ServicePublicKey::read(&public_key_path(&path)).unwrap_or_else(|e| panic!("{e}")),
            new
        );
        let retired = dir
            .path()
            .join("policy/retired")
            .join(format!("session-{}.pub", old.key_id()));
        assert_eq!(ServicePublicKey::read(&retired).unwrap_or_else(|e| panic!("{e}")), old);
        // A signature of the retired key no longer verifies under the key in force.
        let signature = before.sign(SignaturePurpose::SessionToken, b"claims");
        assert!(!new.verify(SignaturePurpose::SessionToken, b"claims", &signature));
        assert!(rotate(&dir.path().join("policy/missing.key")).is_err());
    }

    #[test]
    fn key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = default_key_path(dir.path());
        let a = ServiceKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        let b = ServiceKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.public(), b.public());
        let public = ServicePublicKey::read(&public_key_path(&path)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(public, a.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
        assert!(!format!("{a:?}").contains(&hex::encode(a.key.to_bytes())));
    }
}
