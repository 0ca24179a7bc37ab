//! Staffing a fresh installation the way the platform requires, through the policy façade in process (the benchmarks
//! measure the zones' libraries; the demo staffs through the policy service, `tokumei_demo::desk`): two
//! administrators from the bootstrap; every invitee's code made on the invitee's side (only its claim reaches an
//! administrator); committee, operator and administrator roles granted by the first administrator and approved
//! by the second.

use anyhow::Result;
use chrono::{Duration, Utc};
use tokumei_policy::identity::SecondFactor;
use tokumei_policy::identity::SecretString;
use tokumei_policy::identity::directory::invitation_claim;
use tokumei_policy::identity::totp::{Totp, TotpSecret};
use tokumei_policy::{Actor, NewPerson, Origin, Policy, PolicyError, Role, UserChange};
use zeroize::Zeroizing;

use tokumei_client::reason;

/// The installation's two administrators, logged in.
pub struct Administrators {
    /// Invites and asks for grants.
    pub first: Actor,
    /// Approves what the first asked for.
    pub second: Actor,
}

/// Invites `username` with `roles` into `org` (created if missing); returns the invitee's own code, with which
/// the invitee enrols. A grant of four-eyes roles is asked for by the first administrator and approved by the
/// second.
pub async fn invite(
    policy: &Policy,
    admins: &Administrators,
    (username, name, org): (&str, &str, &str),
    roles: &[Role],
    origin: Origin<'_>,
) -> Result<SecretString> {
    match policy.add_organisation(&admins.first, org, org, origin).await {
        Ok(_) | Err(PolicyError::AlreadyExists { .. }) => {}
        Err(e) => return Err(reason(e)),
    }
    // On the invitee's side: the code stays with them, the claim goes to the administrator.
    let (code, claim) = invitation_claim().map_err(reason)?;
    let invitee = NewPerson {
        username,
        display_name: name,
        organisation: org,
        claim: &claim,
    };
    let change = policy
        .add_user(&admins.first, invitee, roles, origin)
        .await
        .map_err(reason)?;
    if let UserChange::Pending(grant) = change {
        // The invitee gives the claim to the second administrator too, who approves with it.
        policy
            .approve_grant(&admins.second, &grant.id, Some(&claim), origin)
            .await
            .map_err(reason)?;
    }
    Ok(code)
}

/// Bootstraps a fresh installation's two administrators (`aoi`, `ren`), each with a code of their own; returns
/// their codes for enrolment.
pub async fn bootstrap(policy: &Policy, origin: Origin<'_>) -> Result<[SecretString; 2]> {
    let (first_code, first_claim) = invitation_claim().map_err(reason)?;
    let (second_code, second_claim) = invitation_claim().map_err(reason)?;
    policy
        .bootstrap(
            [
                ("aoi", "Aoi Sasaki (administrator)", &first_claim),
                ("ren", "Ren Fujita (administrator)", &second_claim),
            ],
            "platform",
            origin,
        )
        .await
        .map_err(reason)?;
    Ok([first_code, second_code])
}

/// Enrols `username` (invitation code, password, a TOTP authenticator confirmed) and logs them in with a second
/// factor, as a person does at their first sign-in; returns the actor and the session token their tools present.
pub async fn activate(
    policy: &Policy,
    (username, password): (&str, &str),
    invitation: &str,
    origin: Origin<'_>,
) -> Result<(Actor, Zeroizing<String>)> {
    let enrolment = policy
        .enrol(username, invitation, password, origin)
        .await
        .map_err(reason)?;
    let secret = TotpSecret::from_base32(enrolment.secret_base32.expose()).map_err(reason)?;
    let totp = Totp::new(&secret, &policy.config().processor, username).map_err(reason)?;
    // Confirm with the current step's code and log in with the next one, both from one instant: each code
    // works once, and the ±1 step window accepts both even when a step boundary passes between the calls (a
    // code of the previous step would be refused if the boundary passed before the server checked it).
    let now = Utc::now();
    let first = totp.code_at(now);
    policy
        .confirm_totp(username, password, &first, origin)
        .await
        .map_err(reason)?;
    let code = totp.code_at(now + Duration::seconds(30));
    let session = policy
        .login(username, password, SecondFactor::Totp(&code), origin)
        .await
        .map_err(reason)?;
    let actor = policy.authenticate(session.token.expose()).await.map_err(reason)?;
    let token = Zeroizing::new(session.token.expose().to_owned());
    Ok((actor, token))
}
