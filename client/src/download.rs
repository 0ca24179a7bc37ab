//! A recipient fetches their copy of a release (`tokumei release download`, the demo, the delivery benchmark).
//!
//! With the recipient's two-factor session it lists the releases over gRPC (`ReleaseService`), then for each
//! file asks for a download (admitted and counted by the committee's conditions) and fetches the one-time
//! URL over HTTPS, trusting only `--ca`. Bytes go to `DIR/NAME.partial`; a transfer cut short resumes with
//! an HTTP `Range` request — on the same token while it lives, or on a new one when the command is run
//! again — and the file is renamed into place only after its SHA-256 matches the listing. Files already in
//! place with the right hash are skipped without using a download.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokumei_proto::release::v1 as pb;
use tokumei_proto::release::v1::release_service_client::ReleaseServiceClient;
use tonic::transport::Channel;

use crate::refused;
use crate::release::{Bearer, authed, bearer, connect};

/// Attempts per file on the same token when the connection breaks.
const ATTEMPTS: u32 = 3;

/// One file's outcome.
#[derive(Debug, Serialize)]
pub struct FileOutcome {
    /// File name.
    pub name: String,
    /// Where it was written.
    pub path: String,
    /// Size.
    pub bytes: u64,
    /// SHA-256, verified.
    pub sha256: String,
    /// `downloaded`, or `already_present` (right hash in place: no download used).
    pub status: &'static str,
    /// Bytes already in `NAME.partial` when this run started (0: from the beginning).
    pub resumed_from: u64,
    /// Bytes received over the network in this run.
    pub transferred: u64,
}

/// What a download did (what `--json` prints).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The release.
    pub release: String,
    /// Its application.
    pub application: String,
    /// Last day of use.
    pub expires_on: String,
    /// The directory written.
    pub out: String,
    /// Every file.
    pub files: Vec<FileOutcome>,
}

/// Where and what to download, as the recipient's client sees it.
pub struct DownloadRequest<'a> {
    /// The release service's gRPC URL (`https://HOST:PORT`).
    pub server: &'a str,
    /// The only CA trusted (PEM).
    pub ca_pem: &'a [u8],
    /// The recipient's two-factor session token.
    pub session: &'a str,
    /// The release.
    pub release: &'a str,
    /// Only these files (default: all).
    pub files: &'a [String],
    /// Destination directory.
    pub out: &'a Path,
    /// Show a progress bar.
    pub progress: bool,
}

/// Lists the recipient's releases over gRPC and fetches every requested file over HTTPS (one-time URLs,
/// resumable, SHA-256 verified); the same client `tokumei release download` and the demo use.
pub async fn download(r: &DownloadRequest<'_>) -> Result<Summary> {
    std::fs::create_dir_all(r.out).with_context(|| format!("creating {}", r.out.display()))?;
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(r.ca_pem).context("the --ca certificate")?)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("HTTPS client")?;
    let mut client = connect(r.server, r.ca_pem).await?;
    let bearer = bearer(r.session)?;
    let listing = client
        .list_releases(authed(&bearer, pb::ListReleasesRequest::default()))
        .await
        .map_err(refused)?
        .into_inner();
    let release = listing
        .releases
        .into_iter()
        .find(|x| x.id == r.release)
        .ok_or_else(|| anyhow!("[NOT_FOUND] you hold no copy of release {}", r.release))?;
    if release.standing != "AVAILABLE" {
        bail!(
            "[{}] release {} can no longer be downloaded under its approval; delete the copies you hold \
             and declare it (tokumei release declare-deleted)",
            release.standing,
            release.id
        );
    }
    let files: Vec<pb::ReleaseFile> = if r.files.is_empty() {
        release.files.clone()
    } else {
        r.files
            .iter()
            .map(|name| {
                release
                    .files
                    .iter()
                    .find(|f| &f.name == name)
                    .cloned()
                    .ok_or_else(|| anyhow!("[NOT_FOUND] release {} has no file {name}", release.id))
            })
            .collect::<Result<_>>()?
    };
    for f in &files {
        check_name(&f.name)?;
    }
    let total: u64 = files.iter().map(|f| f.bytes).sum();
    let bar = if r.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    )?);
    let mut outcomes = Vec::new();
    for f in &files {
        bar.set_message(f.name.clone());
        let outcome = fetch_file(&mut client, &bearer, &http, &release.id, f, r.out, &bar).await?;
        outcomes.push(outcome);
    }
    bar.finish_and_clear();
    let summary = Summary {
        release: release.id.clone(),
        application: release.application.clone(),
        expires_on: release.expires_on.clone(),
        out: r.out.display().to_string(),
        files: outcomes,
    };
    Ok(summary)
}

/// File names come from the server: only plain names are written (no directories, no hidden files).
fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if plain {
        Ok(())
    } else {
        bail!("[INVALID_ARGUMENT] the server listed a file with an unsafe name: {name:?}")
    }
}

/// SHA-256 of a file, hex, read in blocks.
fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Downloads one file into `out`, resuming from `NAME.partial`, verifying, renaming into place.
async fn fetch_file(
    client: &mut ReleaseServiceClient<Channel>,
    bearer: &Bearer,
    http: &reqwest::Client,
    release: &str,
    f: &pb::ReleaseFile,
    out: &Path,
    bar: &ProgressBar,
) -> Result<FileOutcome> {
    let dest = out.join(&f.name);
    let partial = out.join(format!("{}.partial", f.name));
    let outcome = |status, resumed_from, transferred| FileOutcome {
        name: f.name.clone(),
        path: dest.display().to_string(),
        bytes: f.bytes,
        sha256: f.sha256.clone(),
        status,
        resumed_from,
        transferred,
    };
    if dest.exists() && file_len(&dest) == f.bytes && sha256_file(&dest)? == f.sha256 {
        bar.inc(f.bytes);
        return Ok(outcome("already_present", 0, 0));
    }
    let mut have = file_len(&partial);
    if have > f.bytes {
        std::fs::remove_file(&partial)?;
        have = 0;
    }
    if have == f.bytes && f.bytes > 0 {
        // Complete but not yet moved into place (interrupted after the transfer).
        if sha256_file(&partial)? == f.sha256 {
            std::fs::rename(&partial, &dest)?;
            bar.inc(f.bytes);
            return Ok(outcome("downloaded", have, 0));
        }
        std::fs::remove_file(&partial)?;
        have = 0;
    }
    let resumed_from = have;
    bar.inc(have);
    let grant = client
        .request_download(authed(
            bearer,
            pb::RequestDownloadRequest {
                release_id: release.to_owned(),
                file: f.name.clone(),
            },
        ))
        .await
        .map_err(refused)?
        .into_inner();
    let mut transferred = 0u64;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match transfer(http, &grant.url, &partial, f.bytes, bar).await {
            Ok(n) => {
                transferred += n;
                break;
            }
            Err(Transfer::Refused(e)) => return Err(e),
            Err(Transfer::Broken(e, n)) => {
                transferred += n;
                if attempt >= ATTEMPTS {
                    return Err(e.context(format!(
                        "{}: transfer interrupted {ATTEMPTS} times; run the command again to resume",
                        f.name
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
    }
    let digest = sha256_file(&partial)?;
    if digest != f.sha256 || file_len(&partial) != f.bytes {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "[INTEGRITY] {}: SHA-256 {digest} does not match the release's {}; the partial file was removed",
            f.name,
            f.sha256
        );
    }
    std::fs::rename(&partial, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
    Ok(outcome("downloaded", resumed_from, transferred))
}

/// How a transfer attempt failed.
enum Transfer {
    /// The server refused (token used or expired, range, ...): retrying with this token will not help.
    Refused(anyhow::Error),
    /// The connection broke after this many bytes were written: resume.
    Broken(anyhow::Error, u64),
}

/// One GET of the rest of the file into `partial` (appending from its current length). Returns the bytes
/// written.
async fn transfer(
    http: &reqwest::Client,
    url: &str,
    partial: &Path,
    total: u64,
    bar: &ProgressBar,
) -> Result<u64, Transfer> {
    let have = file_len(partial);
    let mut request = http.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| Transfer::Broken(anyhow!("download: {e}"), 0))?;
    let status = response.status();
    let append = match status {
        reqwest::StatusCode::PARTIAL_CONTENT => {
            let start = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(have) {
                return Err(Transfer::Refused(anyhow!(
                    "[INTEGRITY] the server answered a different range than asked"
                )));
            }
            true
        }
        reqwest::StatusCode::OK => {
            if have > 0 {
                bar.set_position(bar.position().saturating_sub(have));
            }
            false
        }
        _ => {
            let body = response.text().await.unwrap_or_default();
            let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let reason = parsed["reason"].as_str().unwrap_or("HTTP_ERROR");
            let message = parsed["message"].as_str().unwrap_or(status.as_str());
            return Err(Transfer::Refused(anyhow!("[{reason}] {message} (HTTP {status})")));
        }
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(partial)
        .await
        .map_err(|e| Transfer::Refused(anyhow!("opening {}: {e}", partial.display())))?;
    let mut written = 0u64;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if have + written + chunk.len() as u64 > total {
                    return Err(Transfer::Refused(anyhow!(
                        "[INTEGRITY] the server sent more bytes than the file has"
                    )));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Transfer::Refused(anyhow!("writing {}: {e}", partial.display())))?;
                written += chunk.len() as u64;
                bar.inc(chunk.len() as u64);
            }
            Ok(None) => break,
            Err(e) => {
                let _ = file.flush().await;
                return Err(Transfer::Broken(anyhow!("download interrupted: {e}"), written));
            }
        }
    }
    let synced = match file.flush().await {
        Ok(()) => file.sync_all().await,
        Err(e) => Err(e),
    };
    synced.map_err(|e| Transfer::Refused(anyhow!("writing {}: {e}", partial.display())))?;
    Ok(written)
}
