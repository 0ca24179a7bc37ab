//! The people of the demo at their desks: each holds the address of the policy service, the CA of its certificate
//! and, once signed in, their own two-factor session — never a key, a database or a store. Every act of the
//! committee chapters is a gRPC call the policy service (a process of its own) authenticates, authorises and
//! audits, exactly as from the command line or the console.
//!
//! Staffing goes the way the platform requires: invitation codes are made on the invitee's side (only the claim
//! reaches an administrator), committee, operator and administrator roles are asked for by one administrator and
//! approved by the other, and each person enrols a TOTP authenticator before their first sign-in. The demo plays
//! every person, so it computes their codes from the secret the service hands out at enrolment.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use tokumei_client::policy::{PolicyClient, ServiceOptions};
use tokumei_client::refused;
use tokumei_policy::Role;
use tokumei_policy::identity::directory::invitation_claim;
use tokumei_policy::identity::totp::{Totp, TotpSecret};
use tokumei_proto::policy::v1 as pb;
use zeroize::Zeroizing;

/// The demo's password for everyone (the story's accounts are thrown away with its home).
pub const PASSWORD: &str = "demo password, not for production";

/// Where the policy service is and what vouches for it: all a desk holds besides a session.
#[derive(Clone, Debug)]
pub struct Desk {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA that issued the service's certificate.
    pub ca: PathBuf,
}

/// A person signed in: their username and the session token their tools present.
pub struct Person {
    /// The account.
    pub username: String,
    /// The two-factor session (a bearer token; zeroed on drop).
    pub session: Zeroizing<String>,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Person")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Desk {
    /// The desk of a service at `url` whose certificate `ca` issued.
    pub fn new(url: &str, ca: &Path) -> Desk {
        Desk {
            url: url.to_owned(),
            ca: ca.to_path_buf(),
        }
    }

    /// The service options of `who` (or of nobody, before sign-in), as a command line's flags would give them.
    pub fn options(&self, who: Option<&Person>) -> ServiceOptions {
        ServiceOptions {
            policy_url: self.url.clone(),
            policy_ca: Some(self.ca.clone()),
            session: who.map(|p| p.session.to_string()),
        }
    }

    /// A client of the service carrying `who`'s session.
    pub async fn as_(&self, who: &Person) -> Result<PolicyClient> {
        PolicyClient::connect(&self.options(Some(who))).await
    }

    /// A client without a session (enrolment, confirmation, sign-in).
    pub async fn anonymous(&self) -> Result<PolicyClient> {
        PolicyClient::connect_anonymous(&self.options(None)).await
    }
}

/// The installation's two administrators, signed in.
pub struct Administrators {
    /// Invites and asks for grants.
    pub first: Person,
    /// Approves what the first asked for.
    pub second: Person,
}

/// A refusal as `[REASON] message`, or an error saying the call that should have been refused went through.
pub fn expect_refusal<T>(result: std::result::Result<T, tonic::Status>, what: &str) -> Result<String> {
    match result {
        Ok(_) => anyhow::bail!("{what} was not refused"),
        Err(status) => Ok(format!("{:#}", refused(status))),
    }
}

/// Invites `username` with `roles` into `org` (created if missing); returns the invitee's own code, with which they
/// enrol. The invitee gives the claim to both administrators: the first asks, the second approves a four-eyes grant.
pub async fn invite(
    desk: &Desk,
    admins: &Administrators,
    (username, name, org): (&str, &str, &str),
    roles: &[Role],
) -> Result<Zeroizing<String>> {
    let mut first = desk.as_(&admins.first).await?;
    let request = first.request(pb::AddOrganisationRequest {
        id: org.to_owned(),
        name: org.to_owned(),
    })?;
    match first.client.add_organisation(request).await {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => return Err(refused(s)),
    }
    let (code, claim) = invitation_claim().map_err(tokumei_client::reason)?;
    let request = first.request(pb::AddUserRequest {
        username: username.to_owned(),
        display_name: name.to_owned(),
        organisation: org.to_owned(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        claim: claim.clone(),
    })?;
    let asked = first.client.add_user(request).await.map_err(refused)?.into_inner();
    if asked.state == "pending" {
        let mut second = desk.as_(&admins.second).await?;
        let request = second.request(pb::ApproveGrantRequest {
            grant_id: asked.grant_id,
            claim,
        })?;
        second.client.approve_grant(request).await.map_err(refused)?;
    }
    Ok(Zeroizing::new(code.expose().to_owned()))
}

/// Enrols `username` with their invitation code and the demo's password, confirms a TOTP authenticator and signs
/// in with a second factor, as at a first sign-in; returns the person and the authenticator's `otpauth` URI with
/// its secret elided (for showing).
pub async fn activate(desk: &Desk, username: &str, invitation: &str) -> Result<(Person, String)> {
    let mut service = desk.anonymous().await?;
    let enrolment = service
        .client
        .enrol(pb::EnrolRequest {
            username: username.to_owned(),
            invitation_code: invitation.to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let uri = Zeroizing::new(enrolment.otpauth_uri);
    let secret = TotpSecret::from_base32(&Zeroizing::new(enrolment.secret_base32)).map_err(tokumei_client::reason)?;
    let totp = Totp::new(&secret, &issuer(&uri)?, username).map_err(tokumei_client::reason)?;
    // Confirm with the current step's code and sign in with the next one, both from one instant: each code works
    // once, and the ±1 step window accepts both even when a step boundary passes between the calls.
    let now = Utc::now();
    service
        .client
        .confirm_totp(pb::ConfirmTotpRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            totp_code: totp.code_at(now).to_string(),
        })
        .await
        .map_err(refused)?;
    let person = sign_in(desk, username, &totp.code_at(now + Duration::seconds(30))).await?;
    Ok((person, elide_secret(&uri)))
}

/// Signs `username` in with the demo's password and `code`.
pub async fn sign_in(desk: &Desk, username: &str, code: &str) -> Result<Person> {
    let mut service = desk.anonymous().await?;
    let session = service
        .client
        .login(pb::LoginRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            second_factor: Some(pb::login_request::SecondFactor::TotpCode(code.to_owned())),
        })
        .await
        .map_err(refused)?
        .into_inner();
    Ok(Person {
        username: username.to_owned(),
        session: Zeroizing::new(session.session_token),
    })
}

/// A person invited with `roles` (four eyes where the roles need them), enrolled and signed in.
pub async fn person(
    desk: &Desk,
    admins: &Administrators,
    (username, name, org): (&str, &str, &str),
    roles: &[Role],
) -> Result<Person> {
    let code = invite(desk, admins, (username, name, org), roles).await?;
    Ok(activate(desk, username, &code).await?.0)
}

/// The issuer an `otpauth://totp/ISSUER:ACCOUNT?...` URI names (percent-decoded): the label the codes are made for.
fn issuer(uri: &str) -> Result<String> {
    let label = uri
        .strip_prefix("otpauth://totp/")
        .and_then(|rest| rest.split('?').next())
        .and_then(|label| label.split_once("%3A").or_else(|| label.split_once(':')))
        .map(|(issuer, _)| issuer)
        .context("the enrolment's otpauth URI names no issuer")?;
    percent_decode(label)
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).context("a truncated percent escape")?;
            out.push(u8::from_str_radix(hex, 16).context("a bad percent escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the issuer is not UTF-8")
}

/// The URI with its secret replaced by `…`, for showing.
pub(crate) fn elide_secret(uri: &str) -> String {
    match uri.split_once("secret=") {
        Some((head, tail)) => format!(
            "{head}secret=…{}",
            tail.split_once('&').map(|(_, r)| format!("&{r}")).unwrap_or_default()
        ),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{elide_secret, issuer};

    #[test]
    fn the_issuer_is_read_from_the_label() {
        assert_eq!(
            issuer("otpauth://totp/tokumei%20dev:sato?secret=ABC&issuer=tokumei%20dev").unwrap(),
            "tokumei dev"
        );
        assert_eq!(issuer("otpauth://totp/tokumei:sato?secret=ABC").unwrap(), "tokumei");
        assert!(issuer("otpauth://totp/sato?secret=ABC").is_err());
    }

    #[test]
    fn the_secret_is_elided() {
        let shown = elide_secret("otpauth://totp/tokumei:sato?secret=ABCDEF&issuer=tokumei");
        assert_eq!(shown, "otpauth://totp/tokumei:sato?secret=…&issuer=tokumei");
    }
}
