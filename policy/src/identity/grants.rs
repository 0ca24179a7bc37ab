//! Grants of roles that decide, operate or grant — committee member, chair, operator, administrator — wait for a
//! second administrator (four eyes).
//!
//! An administrator's request (an invitation with such roles, or a change of roles that adds one) is stored as a
//! pending grant; another administrator, who is neither the requester nor the grantee
//! ([`crate::authorization::Resource::Grant`]), approves it, and only then does the account exist or the roles
//! change — in the same transaction that marks the grant applied, so a grant applies once. Invitations in a
//! grant carry the invitee's claim (the hash of a code only the invitee knows), never a code.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::check_username;
use super::directory::{
    Directory, INVITATION_TTL, check_claim, check_text, ensure_claim_unused, insert_person, person_roles, set_roles_in,
};
use crate::authorization::Role;
use crate::error::{PolicyError, Result};

/// What a grant does when approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// Creates an invited account with the roles.
    Invite,
    /// Replaces an existing person's roles.
    Roles,
    /// Disables an administrator's account.
    Disable,
}

/// Where a grant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Waiting for a second administrator.
    Pending,
    /// Approved and carried out.
    Applied,
}

/// A grant of roles, as stored (no secret: an invitation's claim is a hash and is not shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleGrant {
    /// Identifier (`G-` and 16 hex digits).
    pub id: String,
    /// Invitation or change of roles.
    pub kind: GrantKind,
    /// Who receives the roles.
    pub username: String,
    /// The invitee's name (invitations).
    pub display_name: Option<String>,
    /// The invitee's organisation (invitations).
    pub organisation: Option<String>,
    /// The roles the person holds once applied.
    pub roles: BTreeSet<Role>,
    /// The administrator who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// Pending or applied.
    pub state: GrantState,
    /// The administrator who approved.
    pub approved_by: Option<String>,
}

/// What the request would grant, before it is stored.
#[derive(Debug, Clone, Copy)]
pub enum GrantRequest<'a> {
    /// A new account.
    Invite {
        /// Username.
        username: &'a str,
        /// Full name.
        display_name: &'a str,
        /// Organisation id (must exist).
        organisation: &'a str,
        /// The invitee's claim (`tokumei user claim`).
        claim: &'a str,
    },
    /// New roles for an existing person.
    Roles {
        /// Username.
        username: &'a str,
    },
    /// Disabling an administrator.
    Disable {
        /// Username.
        username: &'a str,
    },
}

/// How long a grant waits for its second administrator before it lapses (as an invitation does).
pub const GRANT_TTL: chrono::TimeDelta = INVITATION_TTL;

const GRANT_COLUMNS: &str = "id, kind, username, display_name, organisation, roles, requested_by, requested_at_ms, \
                             state, approved_by";

impl Directory {
    /// Stores a pending grant of `roles` (validated now, applied on approval).
    pub async fn request_grant(
        &self,
        requested_by: &str,
        request: GrantRequest<'_>,
        roles: &[Role],
        now: DateTime<Utc>,
    ) -> Result<RoleGrant> {
        let roles = person_roles(roles)?;
        let (kind, username, display_name, organisation, claim) = match request {
            GrantRequest::Invite {
                username,
                display_name,
                organisation,
                claim,
            } => {
                check_username(username)?;
                check_text("display name", display_name)?;
                self.organisation(organisation).await?;
                if self.user(username).await.is_ok() {
                    return Err(PolicyError::AlreadyExists {
                        kind: "user",
                        id: username.to_owned(),
                    });
                }
                (
                    GrantKind::Invite,
                    username,
                    Some(display_name),
                    Some(organisation),
                    Some(check_claim(claim)?),
                )
            }
            GrantRequest::Roles { username } => {
                self.user(username).await?;
                (GrantKind::Roles, username, None, None, None)
            }
            GrantRequest::Disable { username } => {
                self.user(username).await?;
                (GrantKind::Disable, username, None, None, None)
            }
        };
        // A change of roles applies only to the roles it was asked against (a later change in between would be
        // silently undone otherwise).
        let prior = match kind {
            GrantKind::Roles | GrantKind::Disable => Some(role_list(&self.user(username).await?.roles)),
            GrantKind::Invite => None,
        };
        let id = format!("G-{:016x}", rand::random::<u64>());
        let mut tx = self.db().begin_write().await?;
        if let Some(claim) = &claim
            && let Err(e) = ensure_claim_unused(&mut tx, claim).await
        {
            tx.rollback().await?;
            return Err(e);
        }
        sqlx::query(
            "INSERT INTO role_grants (id, kind, username, display_name, organisation, roles, prior_roles, claim, \
             requested_by, requested_at_ms, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending')",
        )
        .bind(&id)
        .bind(kind_name(kind))
        .bind(username)
        .bind(display_name)
        .bind(organisation)
        .bind(role_list(&roles))
        .bind(prior)
        .bind(claim)
        .bind(requested_by)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.grant(&id).await
    }

    /// One grant, or `NotFound`.
    pub async fn grant(&self, id: &str) -> Result<RoleGrant> {
        let row = sqlx::query(&format!("SELECT {GRANT_COLUMNS} FROM role_grants WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db().pool())
            .await?
            .ok_or_else(|| PolicyError::NotFound {
                kind: "grant",
                id: id.to_owned(),
            })?;
        grant_from_row(&row)
    }

    /// Grants waiting for a second administrator, oldest first.
    pub async fn pending_grants(&self) -> Result<Vec<RoleGrant>> {
        sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM role_grants WHERE state = 'pending' ORDER BY requested_at_ms, id"
        ))
        .fetch_all(self.db().pool())
        .await?
        .iter()
        .map(grant_from_row)
        .collect()
    }

    /// Carries out a pending grant approved by `approved_by` (the caller has checked that this is a second
    /// administrator): marks it applied and creates the account or sets the roles, in one transaction. An
    /// invitation applies only with the claim the approver received from the invitee themself (so the requester
    /// cannot slip in a claim of their own making), only while its requester is still an enabled administrator,
    /// within [`GRANT_TTL`], and a change of roles only if the person still holds the roles it was asked against.
    pub async fn apply_grant(
        &self,
        id: &str,
        approved_by: &str,
        claim: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<RoleGrant> {
        let grant = self.grant(id).await?;
        let mut tx = self.db().begin_write().await?;
        let marked = sqlx::query(
            "UPDATE role_grants SET state = 'applied', approved_by = $2, approved_at_ms = $3 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(approved_by)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let outcome = if marked != 1 {
            Err(PolicyError::InvalidState(format!("grant {id} is not pending")))
        } else {
            apply_in(&mut tx, &grant, claim, now).await
        };
        if let Err(e) = outcome {
            tx.rollback().await?;
            return Err(e);
        }
        tx.commit().await?;
        self.grant(id).await
    }
}

/// The checks and the change of [`Directory::apply_grant`], inside its transaction.
async fn apply_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    grant: &RoleGrant,
    claim: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    if grant.requested_at + GRANT_TTL <= now {
        return Err(PolicyError::InvalidState(format!(
            "grant {} has lapsed: ask again",
            grant.id
        )));
    }
    let requester_active: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM user_roles r JOIN users u ON u.username = r.username \
         WHERE r.username = $1 AND r.role = 'administrator' AND u.status <> 'disabled'",
    )
    .bind(&grant.requested_by)
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    if requester_active == 0 {
        return Err(PolicyError::InvalidState(format!(
            "grant {} was asked for by someone who is no longer an enabled administrator",
            grant.id
        )));
    }
    let row = sqlx::query("SELECT claim, prior_roles FROM role_grants WHERE id = $1")
        .bind(&grant.id)
        .fetch_one(&mut **tx)
        .await?;
    let stored_claim: Option<String> = row.try_get("claim")?;
    let prior: Option<String> = row.try_get("prior_roles")?;
    match grant.kind {
        GrantKind::Invite => {
            let given = claim.map(check_claim).transpose()?;
            if given.is_none() || given != stored_claim {
                return Err(PolicyError::Invalid(
                    "an invitation is approved with the claim the invitee gave the approver directly; this one \
                     does not match"
                        .to_owned(),
                ));
            }
            insert_person(
                tx,
                &grant.username,
                grant.display_name.as_deref().unwrap_or(&grant.username),
                grant.organisation.as_deref().unwrap_or_default(),
                &grant.roles,
                stored_claim.as_deref().unwrap_or_default(),
                now + INVITATION_TTL,
                now,
            )
            .await
        }
        GrantKind::Disable => super::directory::disable_in(tx, &grant.username, now).await,
        GrantKind::Roles => {
            let held: Vec<String> = sqlx::query("SELECT role FROM user_roles WHERE username = $1")
                .bind(&grant.username)
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("role"))
                .collect::<std::result::Result<_, _>>()?;
            let held: BTreeSet<Role> = held.iter().filter_map(|r| r.parse().ok()).collect();
            if prior.as_deref() != Some(role_list(&held).as_str()) {
                return Err(PolicyError::InvalidState(format!(
                    "{}'s roles changed since grant {} was asked for: ask again",
                    grant.username, grant.id
                )));
            }
            set_roles_in(tx, &grant.username, &grant.roles, now).await
        }
    }
}

/// Roles as stored: names in order, comma-separated.
fn role_list(roles: &BTreeSet<Role>) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

fn kind_name(kind: GrantKind) -> &'static str {
    match kind {
        GrantKind::Invite => "invite",
        GrantKind::Roles => "roles",
        GrantKind::Disable => "disable",
    }
}

fn grant_from_row(row: &AnyRow) -> Result<RoleGrant> {
    let bad = |what: &str| PolicyError::InvalidState(format!("stored grant has an unknown {what}"));
    let kind = match row.try_get::<String, _>("kind")?.as_str() {
        "invite" => GrantKind::Invite,
        "roles" => GrantKind::Roles,
        "disable" => GrantKind::Disable,
        _ => return Err(bad("kind")),
    };
    let state = match row.try_get::<String, _>("state")?.as_str() {
        "pending" => GrantState::Pending,
        "applied" => GrantState::Applied,
        _ => return Err(bad("state")),
    };
    let roles = row
        .try_get::<String, _>("roles")?
        .split(',')
        .map(|r| r.parse::<Role>().map_err(|_| bad("role")))
        .collect::<Result<BTreeSet<Role>>>()?;
    let at: i64 = row.try_get("requested_at_ms")?;
    Ok(RoleGrant {
        id: row.try_get("id")?,
        kind,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        organisation: row.try_get("organisation")?,
        roles,
        requested_by: row.try_get("requested_by")?,
        requested_at: DateTime::from_timestamp_millis(at).ok_or_else(|| bad("time"))?,
        state,
        approved_by: row.try_get("approved_by")?,
    })
}
