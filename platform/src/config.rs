//! `tokumei.toml`: the gateway's configuration. Every key has a default suitable for a single host on
//! loopback; relative paths are resolved against `$TOKUMEI_HOME`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners and limits.
    pub gateway: GatewayConfig,
    /// Certificates.
    pub tls: TlsConfig,
    /// The durable spool.
    pub spool: SpoolConfig,
    /// The key service.
    pub keys: KeysConfig,
    /// Logs, traces.
    pub telemetry: TelemetryConfig,
    /// How the core store reaches the spool.
    pub core: CoreConfig,
    /// The core store's tables (read by the core, `tokumei sql` and the release builder).
    pub store: StoreConfig,
}

/// Listeners and limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Hospital-facing mTLS listener.
    pub listen: SocketAddr,
    /// Operator listener (Prometheus `/metrics`, `/healthz`, `/readyz`); keep it off the hospital network.
    pub operator_listen: SocketAddr,
    /// Largest accepted gRPC message (one RecordBatch).
    pub max_message_bytes: usize,
    /// Sustained records per second per hospital (also the largest burst).
    pub records_per_second: u32,
    /// Opt-out and erase requests a hospital may send per minute (also the burst).
    pub patient_requests_per_minute: u32,
    /// Longest a single RPC may run.
    pub request_timeout_secs: u64,
    /// Longest a TLS handshake may take.
    pub handshake_timeout_secs: u64,
    /// Listener of the spool service the core store pulls from in multi-host mode (mutual TLS, only the
    /// `tokumei-core` certificate may call it). Absent: disabled (the core reads the spool directory on this host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_listen: Option<SocketAddr>,
    /// The hospital directory the policy service publishes (`tokumei user hospitals-publish`): when set, only
    /// hospitals listed there with their pinned certificate may push or send requests. Absent: any
    /// certificate the CA issued is accepted (the gateway logs a warning at start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryConfig>,
}

/// Where the signed hospital directory is and which key signs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The signed directory file (re-read when it changes).
    pub path: PathBuf,
    /// The policy service's public key (64 hex characters, `tokumei user hospitals-publish` prints it).
    pub public_key: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            operator_listen: SocketAddr::from(([127, 0, 0, 1], 7444)),
            max_message_bytes: 16 * 1024 * 1024,
            records_per_second: 500_000,
            patient_requests_per_minute: 120,
            request_timeout_secs: 120,
            handshake_timeout_secs: 10,
            spool_listen: None,
            directory: None,
        }
    }
}

/// Certificates (PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// CA that hospital client certificates must chain to.
    pub client_ca: PathBuf,
    /// The gateway's certificate chain.
    pub cert: PathBuf,
    /// The gateway's private key.
    pub key: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            client_ca: PathBuf::from("pki/ca.crt"),
            cert: PathBuf::from("pki/gateway.crt"),
            key: PathBuf::from("pki/gateway.key"),
        }
    }
}

/// The spool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of segment files.
    pub dir: PathBuf,
    /// Segment size at which a new file is started.
    pub segment_bytes: u64,
    /// How long a batch's outcome is remembered after the gateway committed it, so that a resent batch id is
    /// answered as a replay (the idempotency window); 0 keeps them for good. Only outcomes the core has
    /// acknowledged leave `index.log`; in memory they are forgotten by commit time. Opt-out and erasure requests are
    /// kept for good regardless: they stop a patient's records.
    pub batch_retention_days: u32,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("spool"),
            segment_bytes: 64 * 1024 * 1024,
            batch_retention_days: 90,
        }
    }
}

/// Which key service computes pseudonyms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyBackend {
    /// The local encrypted keyring (embedded default).
    #[default]
    Local,
    /// OpenBao / HashiCorp Vault transit.
    Openbao,
}

/// Key service settings.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// `local` or `openbao`.
    pub backend: KeyBackend,
    /// Local keyring settings.
    pub local: LocalKeysConfig,
    /// OpenBao settings.
    pub openbao: OpenBaoConfig,
}

/// Local keyring settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalKeysConfig {
    /// The sealed keyring file.
    pub path: PathBuf,
    /// Passphrase file used when `TOKUMEI_KEYRING_PASSPHRASE` is not set (created on first use).
    pub passphrase_file: PathBuf,
}

impl Default for LocalKeysConfig {
    fn default() -> Self {
        LocalKeysConfig {
            path: PathBuf::from("keyring/keyring.json"),
            passphrase_file: PathBuf::from("secrets/keyring.passphrase"),
        }
    }
}

/// OpenBao transit settings. The token comes from the environment variable named by `token_env`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenBaoConfig {
    /// Server address.
    pub address: String,
    /// Environment variable holding the token.
    pub token_env: String,
    /// Transit mount.
    pub mount: String,
    /// Key name prefix.
    pub key_prefix: String,
    /// Pinned key version.
    pub key_version: u64,
}

impl Default for OpenBaoConfig {
    fn default() -> Self {
        OpenBaoConfig {
            address: "http://127.0.0.1:8200".into(),
            token_env: "BAO_TOKEN".into(),
            mount: "transit".into(),
            key_prefix: "tokumei-".into(),
            key_version: 1,
        }
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint for traces (e.g. `http://127.0.0.1:4317`); empty = off.
    pub otlp_endpoint: String,
    /// `text` or `json` log lines on stderr.
    pub log_format: String,
}

/// The core store: where the Delta tables live and how the core writes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A directory (relative to `$TOKUMEI_HOME` unless absolute) or `s3://bucket/prefix` for an S3-compatible
    /// object store.
    pub location: String,
    /// S3 settings, used when `location` is an `s3://` URL.
    pub s3: S3Config,
    /// Most records the core commits in one table commit.
    pub commit_records: usize,
    /// Seconds between scheduled compactions (0 = never; `tokumei store compact` still works).
    pub compact_every_secs: u64,
    /// A table is compacted once it has at least this many files smaller than `target_file_bytes`.
    pub compact_min_files: usize,
    /// Target size of compacted files.
    pub target_file_bytes: u64,
    /// Where erasure certificates are appended (JSON lines), relative to `$TOKUMEI_HOME` unless absolute.
    pub erasure_log: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            location: "store".into(),
            s3: S3Config::default(),
            commit_records: 200_000,
            compact_every_secs: 300,
            compact_min_files: 16,
            target_file_bytes: 128 * 1024 * 1024,
            erasure_log: PathBuf::from("log/erasure-certificates.jsonl"),
        }
    }
}

/// An S3-compatible object store (AWS, MinIO, Ceph RGW...). Credentials come from environment variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL for non-AWS stores (empty = AWS).
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Environment variable holding the access key id.
    pub access_key_id_env: String,
    /// Environment variable holding the secret access key.
    pub secret_access_key_env: String,
    /// Allow plain HTTP to the endpoint (test setups on loopback only).
    pub allow_http: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: "ap-northeast-1".into(),
            access_key_id_env: "TOKUMEI_S3_ACCESS_KEY_ID".into(),
            secret_access_key_env: "TOKUMEI_S3_SECRET_ACCESS_KEY".into(),
            allow_http: false,
        }
    }
}

/// Where the core store takes the spool from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CoreSource {
    /// The spool directory on this host (`spool.dir`), read directly (single-host deployments).
    #[default]
    Local,
    /// The gateway's spool service over mutual TLS (`gateway.spool_listen` on the gateway host); the core
    /// connects out, nothing connects in.
    Remote,
}

/// How the core store reaches the spool. Certificates are the ones `tokumei pki init` creates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// `local` or `remote`.
    pub source: CoreSource,
    /// The gateway's spool service, `https://host:port` (remote only).
    pub gateway_spool_url: String,
    /// CA that signed the gateway's certificate.
    pub ca: PathBuf,
    /// The core's client certificate (CN `tokumei-core`).
    pub cert: PathBuf,
    /// The core's private key.
    pub key: PathBuf,
    /// Where the core takes operators' orders (status, compaction, erasure, key rotation). Absent: the core
    /// takes none, and those operations cannot be carried out.
    pub orders: Option<CoreOrdersConfig>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            source: CoreSource::Local,
            gateway_spool_url: "https://127.0.0.1:7445".into(),
            ca: PathBuf::from("pki/ca.crt"),
            cert: PathBuf::from("pki/core.crt"),
            key: PathBuf::from("pki/core.key"),
            orders: None,
        }
    }
}

/// The policy service the core takes orders from: the core connects out (mutual TLS with its certificate,
/// `core.cert`/`core.key`) and acts only on orders signed by the pinned key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreOrdersConfig {
    /// The policy service, `https://host:port`.
    pub policy_url: String,
    /// The public half of the policy service's core-order key (64 hex digits, `policy/core-order.pub` of the
    /// committee zone): pinned here, never fetched.
    pub public_key: String,
    /// CA of the policy service's certificate (default: `core.ca`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How often the core asks for orders (milliseconds).
    #[serde(default = "default_order_poll_ms")]
    pub poll_ms: u64,
    /// The release zone's intake key (64 hex digits, `release/intake.pub` of the release zone), pinned: a build
    /// order naming another key is refused. Without it the core seals to the key the policy service signed into
    /// the order (the one the release zone published to it over its pinned certificate).
    #[serde(default)]
    pub release_key: Option<String>,
    /// Where the core writes build packages for the release zone (default `$TOKUMEI_HOME/outbox`).
    #[serde(default)]
    pub outbox: Option<PathBuf>,
}

fn default_order_poll_ms() -> u64 {
    1_000
}

impl Config {
    /// Reads a file, or returns the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let cfg = match path {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: p.display().to_string(),
                    source,
                })?
            }
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.gateway.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "gateway.max_message_bytes must be at least 1024".into(),
            ));
        }
        // A batch's spool frame (records, rejections and the seal) must stay under the spool's 256 MiB frame limit.
        if self.gateway.max_message_bytes > 128 * 1024 * 1024 {
            return Err(ConfigError::Invalid(
                "gateway.max_message_bytes must be at most 134217728 (128 MiB)".into(),
            ));
        }
        if self.gateway.records_per_second == 0 {
            return Err(ConfigError::Invalid(
                "gateway.records_per_second must be positive".into(),
            ));
        }
        if self.gateway.patient_requests_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "gateway.patient_requests_per_minute must be positive".into(),
            ));
        }
        if self.keys.openbao.key_version == 0 {
            return Err(ConfigError::Invalid("keys.openbao.key_version starts at 1".into()));
        }
        Ok(())
    }
}

/// Resolves a configured path against `$TOKUMEI_HOME` unless it is absolute.
pub fn resolve(home: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { home.join(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: Config = toml::from_str("[gateway]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(c.gateway.listen.port(), 9000);
        assert_eq!(c.gateway.max_message_bytes, 16 * 1024 * 1024);
        assert!(toml::from_str::<Config>("[gateway]\nlisten_typo = 1\n").is_err());
        let c: Config = toml::from_str("[keys]\nbackend = \"openbao\"\n").unwrap();
        assert_eq!(c.keys.backend, KeyBackend::Openbao);
        assert_eq!(c.gateway.spool_listen, None);
        assert_eq!(c.core.source, CoreSource::Local);
        let c: Config = toml::from_str(
            "[gateway]\nspool_listen = \"127.0.0.1:7445\"\n[core]\nsource = \"remote\"\ngateway_spool_url = \"https://gw:7445\"\n",
        )
        .unwrap();
        assert_eq!(c.gateway.spool_listen.map(|a| a.port()), Some(7445));
        assert_eq!(c.core.source, CoreSource::Remote);
        assert_eq!(c.core.cert, PathBuf::from("pki/core.crt"));
        assert!(toml::from_str::<Config>("[core]\nsource = \"carrier-pigeon\"\n").is_err());
    }
}
