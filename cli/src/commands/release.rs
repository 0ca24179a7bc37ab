//! `tokumei release ...`: build, verify, list, serve, download, declare deletion.

use anyhow::Result;

/// Subcommands of `tokumei release`.
#[derive(clap::Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Serve the release zone to researchers: gRPC ReleaseService and the HTTPS download endpoint.
    Serve(super::release_serve::ServeArgs),
    /// Download a release copy (a recipient, with a two-factor session).
    Download(super::release_download::DownloadArgs),
}

/// Runs a `tokumei release` subcommand.
pub fn run(command: ReleaseCommand, json: bool) -> Result<()> {
    match command {
        ReleaseCommand::Serve(a) => super::release_serve::run(a, json),
        ReleaseCommand::Download(a) => super::release_download::run(a, json),
    }
}
