//! What every zone's process shares and none owns: the home layout, the configuration file and its per-zone
//! sections, TLS set-up and the mutual-TLS client, telemetry. Split out of the gateway crate so that a zone depends
//! on the platform, not on the hospitals' gateway.

pub mod client;
pub mod config;
pub mod home;
pub mod https;
pub mod telemetry;
pub mod tls;
