//! OpenBao / HashiCorp Vault transit backend: HMACs are computed by the server, keys never leave it.
//!
//! One HTTP call per purpose per incoming batch, using transit's `batch_input`. The key version is pinned
//! (`key_version`, default 1) so that rotating the transit key for new purposes never changes existing
//! linkage keys — pseudonyms must stay stable for the lifetime of the data.

use super::{Digest, KeyError, KeyPurpose, KeyService};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustify_derive::Endpoint;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

/// Connection settings for OpenBao transit.
#[derive(Clone)]
pub struct OpenBaoSettings {
    /// e.g. `http://127.0.0.1:8200`.
    pub address: String,
    /// Token with `update` on `<mount>/hmac/<prefix>*` and `create`/`read` on `<mount>/keys/<prefix>*`.
    pub token: Zeroizing<String>,
    /// Transit mount path, usually `transit`.
    pub mount: String,
    /// Prefix of the key names, so several deployments can share one OpenBao.
    pub key_prefix: String,
    /// Pinned key version used for every HMAC.
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

/// The transit-backed key service.
pub struct OpenBaoTransit {
    client: VaultClient,
    settings: OpenBaoSettings,
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

impl OpenBaoTransit {
    /// Connects and makes sure every purpose's key exists (creating missing ones).
    pub async fn connect(settings: OpenBaoSettings) -> Result<Self, KeyError> {
        let client = VaultClient::new(
            VaultClientSettingsBuilder::default()
                .address(settings.address.as_str())
                .token(settings.token.as_str())
                .build()
                .map_err(|e| KeyError::Remote(format!("settings: {e}")))?,
        )
        .map_err(|e| KeyError::Remote(format!("client: {e}")))?;
        let svc = OpenBaoTransit { client, settings };
        for p in KeyPurpose::ALL {
            svc.ensure_key(p).await?;
        }
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

    fn describe(&self) -> String {
        format!(
            "OpenBao transit {} mount {} (key version {})",
            self.settings.address, self.settings.mount, self.settings.key_version
        )
    }
}
