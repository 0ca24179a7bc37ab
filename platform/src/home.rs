//! `$TOKUMEI_HOME`: where all local state lives (keyring, spool, tables, databases, certificates), so that
//! tests and scripts can isolate it by pointing the variable elsewhere.

use std::path::PathBuf;

/// Environment variable naming the state directory.
pub const HOME_ENV: &str = "TOKUMEI_HOME";

/// `$TOKUMEI_HOME`, or `~/.tokumei` when unset.
pub fn tokumei_home() -> PathBuf {
    match std::env::var_os(HOME_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".tokumei"),
    }
}
