//! `tokumei release serve`: the release zone's researcher-facing services (being written).

/// Arguments of `tokumei release serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {}

/// Runs `tokumei release serve`.
pub fn run(_a: ServeArgs, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
