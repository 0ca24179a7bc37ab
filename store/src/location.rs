//! Where the tables live: a local directory (the embedded default) or an S3-compatible bucket.
//!
//! Either way the tables are opened through [`crate::encryption::EncryptedStore`]; this module only builds the
//! plain object store underneath and the table URLs.

use crate::error::StoreError;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokumei_platform::config::{StoreConfig, resolve};
use url::Url;

/// A resolved store location.
#[derive(Debug, Clone)]
pub enum Location {
    /// A directory on this host.
    Local(PathBuf),
    /// A bucket and key prefix in an S3-compatible store.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix (no leading or trailing slash; may be empty).
        prefix: String,
    },
}

impl Location {
    /// Parses the configured location.
    pub fn from_config(config: &StoreConfig, home: &Path) -> Result<Location, StoreError> {
        if let Some(rest) = config.location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Config(format!(
                    "store.location {:?} has no bucket",
                    config.location
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if config.location.contains("://") {
            return Err(StoreError::Config(format!(
                "store.location {:?}: only a directory or s3://bucket/prefix is supported",
                config.location
            )));
        }
        Ok(Location::Local(resolve(home, Path::new(&config.location))))
    }

    /// The local directory, when the store is local.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3 { .. } => None,
        }
    }

    /// URL of a table directory.
    pub fn table_url(&self, name: &str) -> Result<Url, StoreError> {
        match self {
            Location::Local(dir) => Url::from_directory_path(dir.join(name))
                .map_err(|_| StoreError::Config(format!("store directory {} is not absolute", dir.display()))),
            Location::S3 { bucket, prefix } => {
                let path = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                };
                Url::parse(&format!("s3://{bucket}/{path}/")).map_err(|e| StoreError::Config(e.to_string()))
            }
        }
    }

    /// Human description.
    pub fn describe(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// The plain stores under a location: `root` addresses tables by their URL path (what Delta expects),
/// `raw` is rooted at the store itself (for the key file). Also the filesystem root to fsync, for local stores.
pub struct PlainStores {
    /// Store whose paths are the table URLs' paths.
    pub root: Arc<dyn ObjectStore>,
    /// Store rooted at the location.
    pub raw: Arc<dyn ObjectStore>,
    /// `Some("/")` for local stores.
    pub fsync_root: Option<PathBuf>,
}

/// Builds the plain object stores for a location.
pub fn plain_stores(location: &Location, config: &StoreConfig) -> Result<PlainStores, StoreError> {
    match location {
        Location::Local(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
            let raw = LocalFileSystem::new_with_prefix(dir).map_err(StoreError::Object)?;
            Ok(PlainStores {
                root: Arc::new(LocalFileSystem::new()),
                raw: Arc::new(raw),
                fsync_root: Some(PathBuf::from("/")),
            })
        }
        Location::S3 { bucket, prefix } => s3_stores(bucket, prefix, config),
    }
}

#[cfg(feature = "s3")]
fn s3_stores(bucket: &str, prefix: &str, config: &StoreConfig) -> Result<PlainStores, StoreError> {
    use object_store::aws::AmazonS3Builder;
    let s3 = &config.s3;
    let env = |name: &str| {
        std::env::var(name).map_err(|_| StoreError::Config(format!("S3 store selected but ${name} is not set")))
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&s3.region)
        .with_access_key_id(env(&s3.access_key_id_env)?)
        .with_secret_access_key(env(&s3.secret_access_key_env)?)
        .with_allow_http(s3.allow_http);
    if !s3.endpoint.is_empty() {
        builder = builder.with_endpoint(&s3.endpoint);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(StoreError::Object)?);
    let raw: Arc<dyn ObjectStore> = if prefix.is_empty() {
        store.clone()
    } else {
        Arc::new(PrefixStore::new(store.clone(), prefix))
    };
    Ok(PlainStores {
        root: store,
        raw,
        fsync_root: None,
    })
}

#[cfg(not(feature = "s3"))]
fn s3_stores(_bucket: &str, _prefix: &str, _config: &StoreConfig) -> Result<PlainStores, StoreError> {
    Err(StoreError::Config("this build has no S3 support (feature `s3`)".into()))
}
