//! Encryption at rest for everything the store writes.
//!
//! Layer choice: the store encrypts at the object-store layer, under Delta, rather than with Parquet modular
//! encryption. Delta's commit log holds per-file column statistics (minimum and maximum values of clinical
//! columns) in plain JSON, and checkpoints repeat them; Parquet modular encryption would protect only the data
//! files, and deltalake 1.1 has no hook for it yet. Sealing every object covers data files, the log,
//! checkpoints and anything Delta adds later, identically on a local disk and on S3.

pub mod data_keys;
pub mod encrypted_store;
pub mod sealed_object;

pub use data_keys::{DataKeyError, DataKeyring, Rotation};
pub use encrypted_store::EncryptedStore;
