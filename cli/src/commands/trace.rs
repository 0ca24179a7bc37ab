//! `tokumei trace` (being written).

/// Arguments of `tokumei trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {}

/// Runs `tokumei trace`.
pub fn run(_a: TraceArgs, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
