//! How a command reports and runs: a short human summary by default, JSON with `--json`; a runtime that never
//! keeps a finished command waiting; outputs written whole or not at all.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use serde::Serialize;

/// Prints `value` as pretty JSON when `json` is set, otherwise calls `human`.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(())
}

/// How long a finished command waits for background work (a connection being returned to its pool, a
/// blocking file task) before the process exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A multi-threaded tokio runtime for commands that do network I/O.
///
/// Dropping a plain tokio runtime waits without limit for its blocking threads; a command that has
/// printed its result must never sit there (a CLI call that never returns stalls a hospital's script or
/// CI), so this one shuts down with a bounded grace period.
pub fn runtime() -> anyhow::Result<CliRuntime> {
    Ok(CliRuntime(Some(
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    )))
}

/// A tokio runtime that shuts down within [`SHUTDOWN_GRACE`] when dropped.
pub struct CliRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for CliRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        // Only `drop` takes the runtime out.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("runtime used after shutdown"))
    }
}

impl Drop for CliRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_timeout(SHUTDOWN_GRACE);
        }
    }
}

/// Writes to a temporary file beside `path`, fsyncs and renames: a reader never sees half a table.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
