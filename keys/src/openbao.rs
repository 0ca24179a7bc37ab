//! OpenBao / HashiCorp Vault transit backend: HMACs are computed by the server, keys never leave it.
//!
//! One HTTP call per purpose per incoming batch, using transit's `batch_input`. The key version is pinned
//! (`key_version`, default 1) so that rotating the transit key for new purposes never changes existing
//! linkage keys — pseudonyms must stay stable for the lifetime of the data.
//!
//! Envelope encryption of the store uses a separate transit key, `<key_prefix>store-kek` (aes256-gcm96,
//! non-exportable, created on first use), through transit `encrypt`, `decrypt`, `rewrap` and `rotate`; the
//! pinned HMAC `key_version` does not apply to it, so wrapping always uses its newest version. The caller's
//! context is bound by making the KEK a *derived* key (`derived: true`, HKDF-SHA-256 per context): transit's
//! `associated_data` would be the natural fit, but `rewrap` does not accept it (it decrypts with empty associated
//! data, so a rewrap of such a ciphertext always fails), whereas a derivation context is accepted and enforced
//! by `encrypt`, `decrypt` and `rewrap` alike — OpenBao itself refuses a wrong context, also on rewrap, and the
//! data key never leaves OpenBao for a mismatched context.

use super::{BACKEND_OPENBAO, DataKey, Digest, KeyError, KeyPurpose, KeyService, KeyZone, WrappedKey};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustify_derive::Endpoint;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use tokio::sync::OnceCell;
use vaultrs::api::transit::KeyType;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::Zeroizing;

/// Connection settings for OpenBao transit.
#[derive(Clone)]
pub struct OpenBaoSettings {
    /// e.g. `http://127.0.0.1:8200`.
    pub address: String,
    /// Token with `update` on `<mount>/hmac/<prefix>*` and `create`/`read` on `<mount>/keys/<prefix>*`; for
    /// store envelope encryption also `update` on `<mount>/{encrypt,decrypt,rewrap}/<prefix>store-kek` and on
    /// `<mount>/keys/<prefix>store-kek/rotate` (rotation only).
    pub token: Zeroizing<String>,
    /// Transit mount path, usually `transit`.
    pub mount: String,
    /// Prefix of the key names, so several deployments can share one OpenBao.
    pub key_prefix: String,
    /// Pinned key version used for every HMAC (not for the store KEK, which always wraps under its newest version).
    pub key_version: u64,
}

impl fmt::Debug for OpenBaoSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBaoSettings")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("mount", &self.mount)
            .field("key_prefix", &self.key_prefix)
            .field("key_version", &self.key_version)
            .finish()
    }
}

/// Name of the store key-encryption key in transit, after the configured prefix.
pub const STORE_KEK_NAME: &str = "store-kek";

/// Domain tag prepended to the caller's context to form the transit derivation context: never empty (transit
/// refuses an empty context for a derived key) and specific to store data keys.
const KEK_CONTEXT_TAG: &str = "tokumei-store-dek-v1:";

/// The transit-backed key service.
pub struct OpenBaoTransit {
    client: VaultClient,
    settings: OpenBaoSettings,
    /// Whose KEK new wraps go under.
    zone: KeyZone,
    /// Set once the store KEK is known to exist with the expected properties; checked lazily because the
    /// ingest gateway never wraps keys and its token need not reach the KEK.
    kek_ready: OnceCell<()>,
    /// Set once the HMAC keys are known to exist (the gateway's first HMAC); other zones never reach them.
    hmac_ready: OnceCell<()>,
}

/// One base64 input of a batch; redacted in Debug because it encodes an identity.
struct SecretInput(Zeroizing<String>);

impl Serialize for SecretInput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Serialize, Debug)]
struct HmacInput {
    input: SecretInput,
}

/// `POST <mount>/hmac/<name>/sha2-256` with `batch_input` (vaultrs only offers the single-input form).
#[derive(Debug, Endpoint)]
#[endpoint(
    path = "{self.mount}/hmac/{self.name}/sha2-256",
    method = "POST",
    response = "BatchHmacResponse"
)]
struct BatchHmacRequest {
    #[endpoint(skip)]
    mount: String,
    #[endpoint(skip)]
    name: String,
    key_version: u64,
    batch_input: Vec<HmacInput>,
}

#[derive(Deserialize, Debug)]
struct BatchHmacResponse {
    batch_results: Vec<BatchHmacResult>,
}

#[derive(Deserialize, Debug)]
struct BatchHmacResult {
    #[serde(default)]
    hmac: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A base64 data key returned by transit `decrypt`; zeroized on drop and redacted in Debug.
struct SecretOutput(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretOutput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretOutput(Zeroizing::new(s)))
    }
}

impl fmt::Debug for SecretOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `POST <mount>/encrypt/<name>`, with the data key in a zeroizing buffer (vaultrs' request takes a `String`).
#[derive(Debug, Endpoint)]
#[endpoint(
    path = "{self.mount}/encrypt/{self.name}",
    method = "POST",
    response = "CiphertextResponse"
)]
struct EncryptKeyRequest {
    #[endpoint(skip)]
    mount: String,
    #[endpoint(skip)]
    name: String,
    plaintext: SecretInput,
    context: String,
}

#[derive(Deserialize, Debug)]
struct CiphertextResponse {
    ciphertext: String,
}

/// `POST <mount>/decrypt/<name>`, with the data key received into a zeroizing buffer.
#[derive(Debug, Endpoint)]
#[endpoint(
    path = "{self.mount}/decrypt/{self.name}",
    method = "POST",
    response = "DecryptKeyResponse"
)]
struct DecryptKeyRequest {
    #[endpoint(skip)]
    mount: String,
    #[endpoint(skip)]
    name: String,
    ciphertext: String,
    context: String,
}

#[derive(Deserialize, Debug)]
struct DecryptKeyResponse {
    plaintext: SecretOutput,
}

/// `GET <mount>/keys/<name>`, reading only what the KEK checks need (vaultrs' response lacks `latest_version`).
#[derive(Debug, Endpoint)]
#[endpoint(path = "{self.mount}/keys/{self.name}", method = "GET", response = "KekInfo")]
struct ReadKekRequest {
    #[endpoint(skip)]
    mount: String,
    #[endpoint(skip)]
    name: String,
}

#[derive(Deserialize, Debug)]
struct KekInfo {
    #[serde(rename = "type")]
    key_type: String,
    exportable: bool,
    derived: bool,
    #[serde(default)]
    convergent_encryption: bool,
    latest_version: u64,
}

impl OpenBaoTransit {
    /// Connects for `zone`. The gateway's service makes sure every HMAC purpose's key exists (creating missing
    /// ones) at its first HMAC; other zones compute no HMAC and their tokens may not reach those keys. A gateway
    /// service opened only to unwrap the spool's key (a same-host core) therefore never touches them.
    pub async fn connect(settings: OpenBaoSettings, zone: KeyZone) -> Result<Self, KeyError> {
        // vaultrs' HTTP client panics without a process-wide rustls provider; callers other than the gateway (the
        // store, tools, tests) must not have to know that.
        tokumei_platform::tls::install_crypto_provider();
        let client = VaultClient::new(
            VaultClientSettingsBuilder::default()
                .address(settings.address.as_str())
                .token(settings.token.as_str())
                .build()
                .map_err(|e| KeyError::Remote(format!("settings: {e}")))?,
        )
        .map_err(|e| KeyError::Remote(format!("client: {e}")))?;
        let svc = OpenBaoTransit {
            client,
            settings,
            zone,
            kek_ready: OnceCell::new(),
            hmac_ready: OnceCell::new(),
        };
        Ok(svc)
    }

    fn full_name(&self, p: KeyPurpose) -> String {
        format!("{}{}", self.settings.key_prefix, p.key_name())
    }

    async fn ensure_key(&self, p: KeyPurpose) -> Result<(), KeyError> {
        let name = self.full_name(p);
        match vaultrs::transit::key::read(&self.client, &self.settings.mount, &name).await {
            Ok(_) => Ok(()),
            Err(vaultrs::error::ClientError::APIError { code: 404, .. }) => {
                vaultrs::transit::key::create(&self.client, &self.settings.mount, &name, None)
                    .await
                    .map_err(|e| KeyError::Remote(format!("create key {name}: {e}")))
            }
            Err(e) => Err(KeyError::Remote(format!("read key {name}: {e}"))),
        }
    }

    fn kek_name(&self) -> String {
        format!("{}{}", self.settings.key_prefix, self.zone.kek_name())
    }

    /// The KEK (short name) a wrapped key was made with: its recorded KEK, or the store KEK for keys wrapped
    /// before zones had KEKs of their own.
    fn kek_short(wrapped: &WrappedKey) -> Result<&'static str, KeyError> {
        if wrapped.kek.is_empty() {
            return Ok(STORE_KEK_NAME);
        }
        [KeyZone::Gateway, KeyZone::Core, KeyZone::Release]
            .into_iter()
            .map(KeyZone::kek_name)
            .find(|n| *n == wrapped.kek)
            .ok_or_else(|| KeyError::Unwrap("wrapped under an unknown KEK".into()))
    }

    /// The transit key a wrapped key was made with — which must be this service's zone's: a key is opened only by
    /// the zone that made it (the gateway's spool key by a gateway service, also in a same-host core), so a key
    /// minted under one zone's KEK can never be slipped in as another's, even to a token that may decrypt both.
    fn kek_of(&self, wrapped: &WrappedKey) -> Result<String, KeyError> {
        let short = Self::kek_short(wrapped)?;
        if short != self.zone.kek_name() {
            return Err(KeyError::Unwrap(format!(
                "wrapped under another zone's KEK, not the {:?} zone's",
                self.zone
            )));
        }
        Ok(format!("{}{short}", self.settings.key_prefix))
    }

    async fn read_kek(&self) -> Result<KekInfo, ClientError> {
        let req = ReadKekRequest {
            mount: self.settings.mount.clone(),
            name: self.kek_name(),
        };
        vaultrs::api::exec_with_result(&self.client, req).await
    }

    /// Creates the store KEK if missing, and refuses one that is exportable or not a derived aes256-gcm96 key
    /// (such a key would either leak the KEK or not bind the context).
    async fn ensure_kek(&self) -> Result<(), KeyError> {
        self.kek_ready
            .get_or_try_init(|| async {
                let name = self.kek_name();
                let info = match self.read_kek().await {
                    Ok(info) => info,
                    Err(ClientError::APIError { code: 404, .. }) => {
                        vaultrs::transit::key::create(
                            &self.client,
                            &self.settings.mount,
                            &name,
                            Some(
                                vaultrs::api::transit::requests::CreateKeyRequest::builder()
                                    .key_type(KeyType::Aes256Gcm96)
                                    .derived(true)
                                    .exportable(false)
                                    .allow_plaintext_backup(false),
                            ),
                        )
                        .await
                        .map_err(|e| KeyError::Remote(format!("create key {name}: {e}")))?;
                        self.read_kek()
                            .await
                            .map_err(|e| KeyError::Remote(format!("read key {name}: {e}")))?
                    }
                    Err(e) => return Err(KeyError::Remote(format!("read key {name}: {e}"))),
                };
                if info.key_type != "aes256-gcm96" || info.exportable || !info.derived || info.convergent_encryption {
                    return Err(KeyError::Remote(format!(
                        "transit key {name} exists but is not a non-exportable, derived, non-convergent aes256-gcm96 \
                         key; refusing to use it as the store KEK"
                    )));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The derivation context: the KEK's own tag (the store's is the original one, so store keys wrapped before
    /// zones existed still open) and the caller's context. A key minted under one zone's KEK can then never pass
    /// for another zone's, even for a token allowed to decrypt with both.
    fn kek_context(kek: &str, context: &str) -> String {
        if kek == STORE_KEK_NAME {
            B64.encode(format!("{KEK_CONTEXT_TAG}{context}"))
        } else {
            B64.encode(format!("tokumei-{kek}-dek-v1:{context}"))
        }
    }

    fn wrapped(&self, ciphertext: String) -> Result<WrappedKey, KeyError> {
        let kek_version = ciphertext_version(&ciphertext)
            .ok_or_else(|| KeyError::Remote("transit returned a ciphertext without a key version".into()))?;
        Ok(WrappedKey {
            backend: BACKEND_OPENBAO.into(),
            kek_version,
            ciphertext,
            kek: self.zone.kek_name().into(),
        })
    }

    /// Checks that a wrapped key is ours and that its recorded version matches the ciphertext's.
    fn check_wrapped(wrapped: &WrappedKey) -> Result<(), KeyError> {
        wrapped.check_backend(BACKEND_OPENBAO)?;
        match ciphertext_version(&wrapped.ciphertext) {
            Some(v) if v == wrapped.kek_version => Ok(()),
            Some(_) => Err(KeyError::Unwrap("kek_version does not match the ciphertext".into())),
            None => Err(KeyError::Unwrap("not a transit ciphertext".into())),
        }
    }
}

/// The key version of a transit ciphertext `vault:v<N>:<base64>`.
fn ciphertext_version(ciphertext: &str) -> Option<u32> {
    let mut parts = ciphertext.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("vault"), Some(v), Some(body)) if !body.is_empty() => v.strip_prefix('v')?.parse().ok(),
        _ => None,
    }
}

/// Transit answers 400 for what the caller got wrong (authentication failure, unknown version, malformed
/// ciphertext, missing key): that is a refused wrapped key; anything else means the service is unavailable.
fn refused_or_remote(op: &str, e: ClientError) -> KeyError {
    match e {
        ClientError::APIError { code: 400, errors } => KeyError::Unwrap(format!("transit {op}: {}", errors.join("; "))),
        e => KeyError::Remote(format!("{op}: {e}")),
    }
}

fn parse_hmac(s: &str) -> Result<Digest, KeyError> {
    // Format: "vault:v<version>:<base64>"
    let b64 = s.rsplit(':').next().ok_or(KeyError::Malformed)?;
    let raw = B64.decode(b64).map_err(|_| KeyError::Malformed)?;
    raw.try_into().map_err(|_| KeyError::Malformed)
}

#[async_trait]
impl KeyService for OpenBaoTransit {
    async fn hmac(&self, purpose: KeyPurpose, inputs: &[&[u8]]) -> Result<Vec<Digest>, KeyError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        if self.zone != KeyZone::Gateway {
            return Err(KeyError::Remote(format!(
                "the {:?} zone computes no HMAC (only the gateway pseudonymises)",
                self.zone
            )));
        }
        self.hmac_ready
            .get_or_try_init(|| async {
                for p in KeyPurpose::ALL {
                    self.ensure_key(p).await?;
                }
                Ok::<(), KeyError>(())
            })
            .await?;
        let req = BatchHmacRequest {
            mount: self.settings.mount.clone(),
            name: self.full_name(purpose),
            key_version: self.settings.key_version,
            batch_input: inputs
                .iter()
                .map(|i| HmacInput {
                    input: SecretInput(Zeroizing::new(B64.encode(i))),
                })
                .collect(),
        };
        let resp = vaultrs::api::exec_with_result(&self.client, req)
            .await
            .map_err(|e| KeyError::Remote(e.to_string()))?;
        if resp.batch_results.len() != inputs.len() {
            return Err(KeyError::Malformed);
        }
        resp.batch_results
            .iter()
            .map(|r| match (&r.hmac, &r.error) {
                (Some(h), _) => parse_hmac(h),
                (None, Some(e)) => Err(KeyError::Remote(e.clone())),
                (None, None) => Err(KeyError::Malformed),
            })
            .collect()
    }

    async fn wrap_key(&self, context: &str, key: &DataKey) -> Result<WrappedKey, KeyError> {
        self.ensure_kek().await?;
        let req = EncryptKeyRequest {
            mount: self.settings.mount.clone(),
            name: self.kek_name(),
            plaintext: SecretInput(Zeroizing::new(B64.encode(key))),
            context: Self::kek_context(self.zone.kek_name(), context),
        };
        let resp = vaultrs::api::exec_with_result(&self.client, req)
            .await
            .map_err(|e| KeyError::Remote(format!("encrypt: {e}")))?;
        self.wrapped(resp.ciphertext)
    }

    async fn unwrap_key(&self, context: &str, wrapped: &WrappedKey) -> Result<Zeroizing<DataKey>, KeyError> {
        Self::check_wrapped(wrapped)?;
        let req = DecryptKeyRequest {
            mount: self.settings.mount.clone(),
            name: self.kek_of(wrapped)?,
            ciphertext: wrapped.ciphertext.clone(),
            context: Self::kek_context(Self::kek_short(wrapped)?, context),
        };
        let resp = vaultrs::api::exec_with_result(&self.client, req)
            .await
            .map_err(|e| refused_or_remote("decrypt", e))?;
        let raw = Zeroizing::new(
            B64.decode(resp.plaintext.0.as_bytes())
                .map_err(|_| KeyError::Unwrap("transit returned a plaintext that is not base64".into()))?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if raw.len() != key.len() {
            return Err(KeyError::Unwrap("not a 256-bit key".into()));
        }
        key.copy_from_slice(&raw);
        Ok(key)
    }

    async fn rewrap_key(&self, context: &str, wrapped: &WrappedKey) -> Result<WrappedKey, KeyError> {
        Self::check_wrapped(wrapped)?;
        self.ensure_kek().await?;
        // Rewrap stays within one KEK (transit rewraps under the same key's newest version).
        if self.kek_of(wrapped)? != self.kek_name() {
            return Err(KeyError::Unwrap("wrapped under another zone's KEK".into()));
        }
        let ctx = Self::kek_context(self.zone.kek_name(), context);
        let resp = vaultrs::transit::data::rewrap(
            &self.client,
            &self.settings.mount,
            &self.kek_name(),
            &wrapped.ciphertext,
            Some(vaultrs::api::transit::requests::RewrapDataRequest::builder().context(ctx.as_str())),
        )
        .await
        .map_err(|e| refused_or_remote("rewrap", e))?;
        self.wrapped(resp.ciphertext)
    }

    async fn rotate_kek(&self) -> Result<u32, KeyError> {
        self.ensure_kek().await?;
        let name = self.kek_name();
        vaultrs::transit::key::rotate(&self.client, &self.settings.mount, &name)
            .await
            .map_err(|e| KeyError::Remote(format!("rotate key {name}: {e}")))?;
        let info = self
            .read_kek()
            .await
            .map_err(|e| KeyError::Remote(format!("read key {name}: {e}")))?;
        u32::try_from(info.latest_version).map_err(|_| KeyError::Remote(format!("key {name}: version out of range")))
    }

    fn describe(&self) -> String {
        format!(
            "OpenBao transit {} mount {} ({:?} zone, KEK {}; HMAC key version {})",
            self.settings.address,
            self.settings.mount,
            self.zone,
            self.kek_name(),
            self.settings.key_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_versions_are_parsed_strictly() {
        assert_eq!(ciphertext_version("vault:v1:abcd"), Some(1));
        assert_eq!(ciphertext_version("vault:v42:ab:cd"), Some(42));
        for bad in [
            "",
            "vault:v1:",
            "vault:1:abcd",
            "bao:v1:abcd",
            "vault:v:abcd",
            "vault:v-1:x",
            "abcd",
        ] {
            assert_eq!(ciphertext_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn wrapped_keys_of_another_backend_or_relabelled_are_refused_before_any_request() {
        let ours = WrappedKey {
            backend: BACKEND_OPENBAO.into(),
            kek_version: 2,
            ciphertext: "vault:v2:abcd".into(),
            kek: String::new(),
        };
        assert!(OpenBaoTransit::check_wrapped(&ours).is_ok());
        let local = WrappedKey {
            backend: super::super::BACKEND_LOCAL.into(),
            ..ours.clone()
        };
        assert!(matches!(
            OpenBaoTransit::check_wrapped(&local),
            Err(KeyError::WrongBackend {
                expected: BACKEND_OPENBAO,
                ..
            })
        ));
        let relabelled = WrappedKey {
            kek_version: 1,
            ..ours.clone()
        };
        assert!(matches!(
            OpenBaoTransit::check_wrapped(&relabelled),
            Err(KeyError::Unwrap(_))
        ));
        let garbage = WrappedKey {
            ciphertext: "abcd".into(),
            ..ours
        };
        assert!(matches!(
            OpenBaoTransit::check_wrapped(&garbage),
            Err(KeyError::Unwrap(_))
        ));
    }
}
