//! The web console: the people the platform serves — researchers, committee members and their chair, output
//! checkers, operators, auditors and the public — at work in a browser, in Japanese first.
//!
//! The console is a *client* of the zones' services, never a way around them: it holds the policy service's URL
//! and CA (and the release service's), and for each person signed in the two-factor session the policy service
//! issued them — never a key, a database or a store. Every act is a gRPC request the policy or release service
//! authorises and writes to the audit ledger, exactly as from the command line.
//!
//! Pages are rendered on the server (axum, maud's compiled, auto-escaping templates), work with JavaScript off
//! and carry no inline script; the console sends a strict Content-Security-Policy, `X-Frame-Options: DENY`,
//! `Secure; HttpOnly; SameSite=Strict` session cookies, and checks a CSRF token on every form
//! ([`security`], [`extract`]).
//!
//! - [`sessions`]: the signed-in people, by an opaque cookie; ends with the policy session or on sign-out;
//! - [`services`]: the channels to the policy and release services, and their refusals as pages;
//! - [`i18n`]: Japanese by default, English by a switch;
//! - [`pages`]: what each person sees.

#![warn(missing_docs)]

pub mod extract;
pub mod fields;
pub mod i18n;
pub mod layout;
pub mod pages;
pub mod security;
pub mod services;
pub mod sessions;
pub mod throttle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

pub use services::Services;
pub use sessions::SessionStore;

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A setting is wrong (named, with what is expected).
    #[error("{0}")]
    Config(String),
    /// A file or socket could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Where the console finds the services, and how it is reached.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The policy service (`https://host:port`).
    pub policy_url: String,
    /// The CA of the policy service's certificate.
    pub policy_ca: PathBuf,
    /// The release service's gRPC address (`https://host:port`); without it the console offers no downloads.
    pub release_url: Option<String>,
    /// The CA of the release service's certificate.
    pub release_ca: Option<PathBuf>,
    /// The console's own certificate and key; `None` only for `--insecure-dev` on loopback.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where the public registers an operator publishes are kept (and read from by anyone).
    pub published: Option<PathBuf>,
    /// The policy service's public key (the `.pub` file beside `policy/service.key`), against which a released
    /// analysis output's signature is checked; without it the console checks the key the output names.
    pub platform_key: Option<PathBuf>,
}

/// What every handler shares.
pub struct Console {
    /// The services' clients.
    pub services: Services,
    /// Who is signed in.
    pub sessions: SessionStore,
    /// Whether the console is served over TLS (cookies are `Secure` and `__Host-` then).
    pub secure: bool,
    /// The published registers' directory.
    pub published: Option<PathBuf>,
    /// Sign-in attempts per client address.
    pub throttle: throttle::SignInThrottle,
    /// Upload slots: a slot is taken once an upload's token is checked and kept until its handler is done with
    /// the bytes (the zone answered), so at most [`CONCURRENT_UPLOADS`] files are in memory at once.
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// The pinned platform key for released outputs (see [`ConsoleConfig::platform_key`]).
    pub platform_key: Option<tokumei_policy::service_key::ServicePublicKey>,
}

/// Uploads received at once, at most [`extract::UPLOAD_LIMIT`] each.
pub const CONCURRENT_UPLOADS: usize = 2;

impl Console {
    /// The console of `config`, served over TLS when `secure` (nothing is contacted until the first request).
    pub fn new(config: &ConsoleConfig, secure: bool) -> Result<Console, ConsoleError> {
        let platform_key = match &config.platform_key {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConsoleError::Io {
                    what: format!("reading {}", path.display()),
                    source,
                })?;
                Some(
                    tokumei_policy::service_key::ServicePublicKey::from_hex(text.trim())
                        .map_err(|e| ConsoleError::Config(format!("--platform-key {}: {e}", path.display())))?,
                )
            }
            None => None,
        };
        Ok(Console {
            services: Services::connect(config)?,
            sessions: SessionStore::default(),
            secure,
            published: config.published.clone(),
            throttle: Default::default(),
            uploads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_UPLOADS)),
            platform_key,
        })
    }
}

/// The shared state of the router.
pub type AppState = Arc<Console>;

/// The console's router: pages, the static stylesheet, the security headers on every response.
pub fn router(console: AppState) -> Router {
    pages::routes()
        .layer(axum::middleware::from_fn_with_state(console.clone(), security::headers))
        .with_state(console)
}

/// A console bound and serving.
pub struct RunningConsole {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The serving task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `listen` and serves the console until `shutdown` resolves. Plaintext (`config.tls` of `None`) is
/// refused unless `listen` is a loopback address: passwords and sessions must not cross a network in clear.
pub async fn serve(
    config: &ConsoleConfig,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningConsole, ConsoleError> {
    if config.tls.is_none() && !listen.ip().is_loopback() {
        return Err(ConsoleError::Config(format!(
            "[PLAINTEXT_REFUSED] a console without TLS listens on loopback only, not {listen}: give --tls-cert and --tls-key"
        )));
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(security::tls_config(cert, key)?),
        None => None,
    };
    let console = Arc::new(Console::new(config, tls.is_some())?);
    let listener = TcpListener::bind(listen).await.map_err(|source| ConsoleError::Io {
        what: format!("bind {listen}"),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ConsoleError::Io {
        what: "listen address".into(),
        source,
    })?;
    // Ended sessions are dropped within a minute, whether or not anyone comes back.
    let sweeper = Arc::downgrade(&console);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(sessions::SWEEP_EVERY);
        loop {
            every.tick().await;
            match sweeper.upgrade() {
                Some(console) => console.sessions.sweep(),
                None => break,
            }
        }
    });
    if console.platform_key.is_some() {
        tracing::info!("released outputs are checked against the pinned platform key");
    } else {
        tracing::warn!(
            "no platform key pinned (--platform-key): released outputs are checked against the key they name"
        );
    }
    let app = router(console);
    let task = tokio::spawn(tokumei_platform::https::serve(
        app,
        listener,
        tls,
        tokumei_platform::https::Protocols::Http1,
        shutdown,
        Duration::from_secs(5),
    ));
    tracing::info!(%addr, "console listening");
    Ok(RunningConsole { addr, task })
}
