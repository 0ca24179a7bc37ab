//! The session a person got from `tokumei user login`: kept in a 0600 file under `$TOKUMEI_HOME` (or passed in
//! `TOKUMEI_SESSION`) and presented by every later command. The services check its signature, expiry and
//! revocation and re-read the person's roles on every request; the client only carries it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tokumei_platform::home::tokumei_home;
use zeroize::Zeroizing;

/// The saved session file.
pub fn session_file() -> PathBuf {
    tokumei_home().join("session.token")
}

/// Saves a session token (0600).
pub fn save_session(token: &str) -> Result<PathBuf> {
    let path = session_file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(path)
}

/// `given` (from `--session`/`TOKUMEI_SESSION`), else the saved session.
pub fn given_or_saved_session(given: Option<&str>) -> Result<Zeroizing<String>> {
    if let Some(t) = given {
        return Ok(Zeroizing::new(t.trim().to_owned()));
    }
    let path = session_file();
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Zeroizing::new(t.trim().to_owned())),
        Err(_) => anyhow::bail!("[SESSION_INVALID] not logged in: run `tokumei user login --username NAME` first"),
    }
}
