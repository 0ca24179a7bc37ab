//! `tokumei release download` (being written).

/// Arguments of `tokumei release download`.
#[derive(clap::Args, Debug)]
pub struct DownloadArgs {}

/// Runs `tokumei release download`.
pub fn run(_a: DownloadArgs, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
