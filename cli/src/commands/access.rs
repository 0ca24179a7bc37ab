//! What every committee-zone command shares: opening the policy service, finding the caller's session,
//! reading passwords without echo, and turning refusals into `[REASON] message` errors.
//!
//! A person logs in once (`tokumei user login`); the session token is kept in a 0600 file under
//! `$TOKUMEI_HOME` (or passed in `TOKUMEI_SESSION`) and every later command presents it. The service
//! checks the token's signature, expiry and revocation and re-reads the user's roles on every command.

use std::io::BufRead;

use anyhow::Result;
use zeroize::Zeroizing;

use tokumei_ingest::home::tokumei_home;
use tokumei_policy::{Origin, Policy};

pub use tokumei_client::reason;
pub use tokumei_client::session::{given_or_saved_session, save_session, session_file};

/// The origin recorded in the audit ledger for commands run on the host.
pub const CLI: Origin<'static> = Origin("cli");

/// Options every committee-zone command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct PolicyOptions {
    /// Policy database (default $TOKUMEI_HOME/policy/policy.db; or postgres://...).
    #[arg(long, env = "TOKUMEI_POLICY_DB", global = true)]
    pub database: Option<String>,
    /// Session token from `tokumei user login` (default: the saved session).
    #[arg(long, env = "TOKUMEI_SESSION", hide_env_values = true, global = true)]
    pub session: Option<String>,
}

/// Opens the policy façade in this process ([`tokumei_policy::on_home::open`]): for the installer's bootstrap only.
pub async fn open_policy(options: &PolicyOptions) -> Result<Policy> {
    tokumei_policy::on_home::open(&tokumei_home(), options.database.as_deref())
        .await
        .map_err(reason)
}

/// The caller's session token: `--session`/`TOKUMEI_SESSION`, else the saved one.
pub fn session_token(options: &PolicyOptions) -> Result<Zeroizing<String>> {
    given_or_saved_session(options.session.as_deref())
}

/// A password: the first line of standard input with `--password-stdin`, else `TOKUMEI_PASSWORD`, else a
/// prompt without echo.
pub fn read_password(from_stdin: bool, prompt: &str) -> Result<Zeroizing<String>> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
        return Ok(trimmed);
    }
    if let Ok(p) = std::env::var("TOKUMEI_PASSWORD") {
        return Ok(Zeroizing::new(p));
    }
    Ok(Zeroizing::new(rpassword::prompt_password(prompt)?))
}
