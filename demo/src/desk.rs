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

use anyhow::Result;
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
    /// The recovery codes given at enrolment (each works once in place of a TOTP code; zeroed on drop): the web
    /// console's chapter signs in with one and shows another.
    pub recovery_codes: Vec<Zeroizing<String>>,
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

/// The refusal `reason` as `[REASON] message`; an error if the call went through or failed for another reason (a
/// connection lost is not the refusal the story shows).
pub fn expect_refusal<T>(result: std::result::Result<T, tonic::Status>, reason: &str) -> Result<String> {
    expect_reason(result.map_err(refused), reason)
}

/// [`expect_refusal`] for a client's error, which carries the service's `[REASON]`.
pub fn expect_reason<T>(result: Result<T>, reason: &str) -> Result<String> {
    match result {
        Ok(_) => anyhow::bail!("a refusal [{reason}] was expected, but the request went through"),
        Err(e) => {
            let text = format!("{e:#}");
            anyhow::ensure!(
                text.contains(&format!("[{reason}]")),
                "a refusal [{reason}] was expected, not: {text}"
            );
            Ok(text)
        }
    }
}

/// An administrator adds organisation `id`, if it is not there yet.
pub async fn add_organisation(admin: &mut PolicyClient, id: &str) -> Result<()> {
    let request = admin.request(pb::AddOrganisationRequest {
        id: id.to_owned(),
        name: id.to_owned(),
    })?;
    match admin.client.add_organisation(request).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(refused(s)),
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
    add_organisation(&mut first, org).await?;
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
    // The codes depend on the secret and the time only; the label is what an authenticator app shows.
    let totp = Totp::new(&secret, "tokumei", username).map_err(tokumei_client::reason)?;
    // Confirm with the current step's code and sign in with the next one, both from one instant: each code works
    // once, and the ±1 step window accepts both even when a step boundary passes between the calls.
    let now = Utc::now();
    let confirmed = service
        .client
        .confirm_totp(pb::ConfirmTotpRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            totp_code: totp.code_at(now).to_string(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    // The recovery codes a person would write down (the console's chapter uses the chair's).
    let recovery_codes: Vec<Zeroizing<String>> = confirmed.recovery_codes.into_iter().map(Zeroizing::new).collect();
    let mut person = sign_in(desk, username, &totp.code_at(now + Duration::seconds(30))).await?;
    person.recovery_codes = recovery_codes;
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
        recovery_codes: Vec::new(),
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
    use super::elide_secret;

    #[test]
    fn the_secret_is_elided() {
        let shown = elide_secret("otpauth://totp/tokumei:sato?secret=ABCDEF&issuer=tokumei");
        assert_eq!(shown, "otpauth://totp/tokumei:sato?secret=…&issuer=tokumei");
    }
}
