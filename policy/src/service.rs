//! The policy service's core: every front-end (the CLI, the gRPC `PolicyService`, the release service)
//! goes through [`Policy`], which authenticates, asks [`authorize`], performs the action, and appends the
//! outcome — success, denial or failure — to the audit ledger.
//!
//! Keeping that sequence in one place is what makes the ledger complete: no front-end can forget to
//! audit a denial or skip the authorisation check, because none of them reaches the stores directly.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit_ledger::{self, AuditEntry, AuditEvent, AuditLedger};
use crate::authorization::{Action, Actor, Denied, Resource, Role, authorize, authorize_role};
use crate::budget_ledger::BudgetLedger;
use crate::committee::{
    ApplicationForm, ApplicationRecord, ApprovalConditions, BanList, BanSubject, Committee, FeeEstimate, Outcome,
    Provision, QuorumRule, TableRequest, Tariff, UseKind, UseRequest, Violation, Vote, japan_date,
};
use crate::core_orders::{CoreOperation, CoreOrders, OrderOutcome, OrderStatus, SignedCoreOrder};
use crate::database::PolicyDb;
use crate::error::{PolicyError, Result};
use crate::identity::directory::InvitedUser;
use crate::identity::grants::{GrantRequest, RoleGrant};
use crate::identity::{
    Directory, Enrolment, LockoutPolicy, Organisation, RecoveryCodes, SecondFactor, Session, UserKind, UserRecord,
    UserStatus,
};
use crate::service_key::{ServiceKey, ServicePublicKey, SignaturePurpose};

/// The hospital directory as published for the gateway: `payload` (JSON text) signed as
/// `tokumei/hospital-directory/v1`; the file the gateway reads holds `payload` and `signature`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedHospitalDirectory {
    /// The signed JSON text: `issued_at` and `hospitals` (institution code, certificate SHA-256).
    pub payload: String,
    /// Ed25519 signature, hex.
    pub signature: String,
    /// The public key to pin in `[gateway.directory] public_key` (not read from the file by the gateway).
    #[serde(skip)]
    pub public_key: String,
    /// Hospitals listed.
    #[serde(skip)]
    pub hospitals: usize,
}
use tokumei_deid::dp::accounting::Budget;

/// The core store's name in the ledger: the subject of its certificate, which is how it proves itself.
pub const CORE_IDENTITY: &str = "tokumei-core";

/// A source of the current time: the system clock in service, a fixed clock in tests (TOTP, lockout and
/// expiry are all time-dependent).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// The service's configuration: the committee's rules of procedure and the login policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The processor's name, shown in authenticator apps and on exported ban lists.
    pub processor: String,
    /// The quorum rule.
    pub quorum: QuorumRule,
    /// Fee tariffs.
    pub tariff: Tariff,
    /// When repeated login failures lock an account.
    pub lockout: LockoutPolicy,
    /// How long a session token lives, in seconds.
    pub session_ttl_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            processor: "tokumei".into(),
            quorum: QuorumRule::default(),
            tariff: Tariff::default(),
            lockout: LockoutPolicy::default(),
            session_ttl_secs: 15 * 60,
        }
    }
}

impl PolicyConfig {
    /// Reads `policy.toml`; absent keys keep their defaults, unknown keys are refused.
    pub fn from_toml(text: &str) -> Result<PolicyConfig> {
        toml::from_str(text).map_err(|e| PolicyError::Invalid(format!("policy configuration: {e}")))
    }

    /// Reads the file if it exists, else the defaults.
    pub fn load(path: &Path) -> Result<PolicyConfig> {
        match std::fs::read_to_string(path) {
            Ok(text) => PolicyConfig::from_toml(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PolicyConfig::default()),
            Err(e) => Err(PolicyError::Invalid(format!("{}: {e}", path.display()))),
        }
    }
}

/// A person to invite: the claim is the hash of the invitation code the invitee generated for themself.
#[derive(Debug, Clone, Copy)]
pub struct NewPerson<'a> {
    /// Username.
    pub username: &'a str,
    /// Full name.
    pub display_name: &'a str,
    /// Organisation id.
    pub organisation: &'a str,
    /// `tokumei user claim`'s claim.
    pub claim: &'a str,
}

/// What an administrator's change did: at once, or as a grant waiting for a second administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    /// The person is invited (they enrol with their own code).
    Invited(InvitedUser),
    /// The roles are set.
    RolesSet(UserRecord),
    /// A grant of committee, operator or administrator roles waits for a second administrator.
    Pending(RoleGrant),
    /// The account is disabled.
    Disabled(String),
}

impl UserChange {
    /// The pending grant's id, if any.
    pub fn grant_id(&self) -> Option<&str> {
        match self {
            UserChange::Pending(g) => Some(&g.id),
            _ => None,
        }
    }
}

/// The policy service; cheap to clone.
#[derive(Clone)]
pub struct Policy {
    db: PolicyDb,
    key: ServiceKey,
    /// The key that signs core orders: loaded only by the policy service (`policy serve`), never by an in-process
    /// front-end, which holds the general key and must not be able to make the core act.
    core_order_key: Option<ServiceKey>,
    bans_key: Option<ServiceKey>,
    directory_key: Option<ServiceKey>,
    /// Ledger keys retired by rotation: entries they signed still verify.
    retired_ledger_keys: Vec<ServicePublicKey>,
    config: PolicyConfig,
    directory: Directory,
    committee: Committee,
    audit: AuditLedger,
    budget: BudgetLedger,
    clock: Clock,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("processor", &self.config.processor)
            .finish_non_exhaustive()
    }
}

/// What a front-end passes along with every call: where the request came from (for the audit ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a>(pub &'a str);

impl Policy {
    /// The service over an open database, with its signature key and configuration.
    pub fn new(db: PolicyDb, key: ServiceKey, config: PolicyConfig, clock: Clock) -> Result<Policy> {
        let ttl = i64::try_from(config.session_ttl_secs)
            .ok()
            .and_then(chrono::TimeDelta::try_seconds)
            .ok_or_else(|| {
                PolicyError::Invalid(format!("session_ttl_secs {} is too large", config.session_ttl_secs))
            })?;
        let directory = Directory::new(db.clone(), key.clone())
            .with_lockout_policy(config.lockout)?
            .with_session_ttl(ttl)?
            .with_totp_issuer(&config.processor)?;
        let committee = Committee::new(db.clone(), config.quorum, config.tariff.clone())?;
        let audit = AuditLedger::new(db.clone(), key.clone());
        let budget = BudgetLedger::new(db.clone());
        Ok(Policy {
            db,
            key,
            core_order_key: None,
            bans_key: None,
            directory_key: None,
            retired_ledger_keys: Vec::new(),
            config,
            directory,
            committee,
            audit,
            budget,
            clock,
        })
    }

    /// Opens the database at `url`, the key at `key_path` (created on first use) and the configuration.
    pub async fn open(url: &str, key_path: &Path, config: PolicyConfig) -> Result<Policy> {
        let db = PolicyDb::open(url).await?;
        let key = ServiceKey::load_or_create(key_path)?;
        let retired = crate::service_key::retired_public_keys(key_path)?;
        Ok(Policy::new(db, key, config, system_clock())?.with_retired_ledger_keys(retired))
    }

    /// The ledger keys that rotation retired (their entries verify; nothing is signed with them any more).
    pub fn with_retired_ledger_keys(mut self, retired: Vec<ServicePublicKey>) -> Policy {
        self.retired_ledger_keys = retired;
        self
    }

    /// How many accounts' second factors are still sealed under a key derived from the ledger key (by an earlier
    /// version): the ledger key may not rotate while any are (they would be lost).
    pub async fn legacy_sealed_seeds(&self) -> Result<i64> {
        self.directory.legacy_sealed_seeds().await
    }

    /// Every key an entry of this ledger may be signed by: the one in force, then the retired ones.
    pub fn ledger_keys(&self) -> Vec<ServicePublicKey> {
        std::iter::once(self.key.public())
            .chain(self.retired_ledger_keys.iter().copied())
            .collect()
    }

    /// This front-end logs people in and checks their sessions with `key` (the policy service only; the key's
    /// file is readable by its account alone).
    pub fn with_session_key(mut self, key: ServiceKey) -> Policy {
        self.directory = self.directory.with_session_key(key);
        self
    }

    /// This front-end seals second-factor seeds under `key` (the policy service only; see
    /// [`crate::identity::Directory::with_seed_key`]).
    pub fn with_seed_key(mut self, key: &ServiceKey) -> Policy {
        self.directory = self.directory.with_seed_key(key);
        self
    }

    /// This front-end only checks sessions, against the session key's public half: every process but the policy
    /// service, so that nothing holding the policy database can mint a session.
    pub fn with_session_verifier(mut self, public: ServicePublicKey) -> Policy {
        self.directory = self.directory.with_session_verifier(public);
        self
    }

    /// This front-end signs the ban lists it exports with `key` (the policy service only).
    pub fn with_bans_key(mut self, key: ServiceKey) -> Policy {
        self.bans_key = Some(key);
        self
    }

    /// This front-end signs the hospital directory with `key` (the policy service only).
    pub fn with_directory_key(mut self, key: ServiceKey) -> Policy {
        self.directory_key = Some(key);
        self
    }

    /// The public key other processors trust for this processor's ban lists, if this front-end signs them.
    pub fn bans_public_key(&self) -> Option<ServicePublicKey> {
        self.bans_key.as_ref().map(ServiceKey::public)
    }

    /// This front-end signs core orders with `key` (the policy service only: the core pins its public key, so
    /// nothing that holds only the general service key can make the core act).
    pub fn with_core_order_key(mut self, key: ServiceKey) -> Policy {
        self.core_order_key = Some(key);
        self
    }

    /// The committee's quorum rule, as configured.
    pub fn quorum_rule(&self) -> QuorumRule {
        self.committee.quorum_rule()
    }

    /// The current time from the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Closes the database's connections (a process that is done with the façade, before it exits).
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// The public half of the service key (audit verification, session tokens, ban lists).
    pub fn public_key(&self) -> ServicePublicKey {
        self.key.public()
    }

    /// The configuration in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The committee store: inside the crate only — every act on it outside goes through a method of this façade
    /// that authorises and audits.
    pub(crate) fn db(&self) -> &PolicyDb {
        &self.db
    }

    /// The service's general key (ledger entries, tokens; a released analysis output under its own purpose).
    pub(crate) fn service_key(&self) -> &ServiceKey {
        &self.key
    }

    pub(crate) fn committee(&self) -> &Committee {
        &self.committee
    }

    /// The budget ledger: inside the crate only (spent through [`Policy::spend_statistics`] after admission).
    pub(crate) fn budget(&self) -> &BudgetLedger {
        &self.budget
    }

    /// The audit ledger: inside the crate only (appended by [`Policy::audit`], read by [`Policy::audit_entries`],
    /// verified and exported through the checked methods).
    pub(crate) fn audit_ledger(&self) -> &AuditLedger {
        &self.audit
    }

    /// Every entry of the audit ledger in sequence order, for the process that opened this database — the demo's
    /// narration and tests; people read the ledger through `VerifyAudit` and `ExportAudit`, which check who asks.
    pub async fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        self.audit.entries_by_seq(1, i64::MAX).await
    }

    /// Appends one event. Front-ends in other zones (the core's SQL console, erasure, key use, release
    /// builds) record their actions through this.
    pub async fn audit(&self, event: AuditEvent) -> Result<AuditEntry> {
        // SQLite answers "database is locked" at once, whatever the busy timeout, to a writer whose snapshot went
        // stale; nothing was written then, so the append is tried again (twice, briefly) before the caller is told
        // the ledger is unavailable — under a full test suite on two cores this was seen once.
        let mut pause = std::time::Duration::from_millis(50);
        for _ in 0..2 {
            match self.audit.append(&event, self.now()).await {
                Err(PolicyError::Database(sqlx::Error::Database(e))) if e.message().contains("locked") => {
                    tracing::warn!("the audit ledger was locked; appending again");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
                other => return other,
            }
        }
        self.audit.append(&event, self.now()).await
    }

    /// Records an action that succeeded (reads of registers and reports, builds, traces, declarations).
    pub(crate) async fn audit_ok(
        &self,
        actor: &Actor,
        action: &str,
        resource: &str,
        origin: Origin<'_>,
        details: serde_json::Value,
    ) -> Result<AuditEntry> {
        let event = AuditEvent::new(&actor.username, action, resource, audit_ledger::Outcome::Ok)
            .source(origin.0)
            .details(details);
        self.audit(event).await
    }

    /// Checks `authorize` and audits a refusal; returns the refusal as an error.
    pub async fn check(&self, actor: &Actor, action: Action, resource: &Resource, origin: Origin<'_>) -> Result<()> {
        match authorize(actor, action, resource) {
            Ok(()) => Ok(()),
            Err(denied) => Err(self.denial(actor, action, &resource.to_string(), denied, origin).await),
        }
    }

    /// Audits a refusal of `action` on `resource` and returns it as the error to give (or the ledger's error, if
    /// the refusal could not be recorded).
    async fn denial(
        &self,
        actor: &Actor,
        action: Action,
        resource: &str,
        denied: Denied,
        origin: Origin<'_>,
    ) -> PolicyError {
        let event = AuditEvent::new(
            &actor.username,
            action.as_str(),
            resource,
            audit_ledger::Outcome::Denied,
        )
        .reason(denied.reason.code())
        .source(origin.0);
        match self.audit(event).await {
            Ok(_) => denied.into(),
            Err(e) => e,
        }
    }

    /// The role part of [`Policy::check`] ([`authorize_role`]), a refusal audited: for front-ends that must refuse
    /// a caller before they look anything up (a release, an application), so a refused role learns nothing
    /// about what exists. The full check on the resource still follows.
    pub async fn check_role(&self, actor: &Actor, action: Action, origin: Origin<'_>) -> Result<()> {
        match authorize_role(actor, action) {
            Ok(()) => Ok(()),
            Err(denied) => Err(self.denial(actor, action, "any resource", denied, origin).await),
        }
    }

    /// The application `id`, once `actor` may do `action` on it: the role first ([`Policy::check_role`], so a refused
    /// role learns nothing about which applications exist), then the application is read and the full check made
    /// on it. Every refusal is audited.
    pub(crate) async fn checked_application(
        &self,
        actor: &Actor,
        action: Action,
        id: &str,
        origin: Origin<'_>,
    ) -> Result<ApplicationRecord> {
        self.check_role(actor, action, origin).await?;
        let app = self.committee.get(id).await?;
        self.check(actor, action, &Resource::Application(app.facts()), origin)
            .await?;
        Ok(app)
    }

    /// [`Policy::check`] on an application by id: for front-ends that must refuse a caller before they look at the
    /// rest of the request (a refused caller learns nothing about whether their input would have been valid).
    pub async fn check_application(&self, actor: &Actor, action: Action, id: &str, origin: Origin<'_>) -> Result<()> {
        self.checked_application(actor, action, id, origin).await.map(|_| ())
    }

    /// Audits the result of an authorised action: `ok` with `details`, or `denied`/`failed` with the
    /// error's reason code. Returns the result unchanged.
    pub(crate) async fn finish<T>(
        &self,
        actor: &str,
        action: &str,
        resource: &str,
        origin: Origin<'_>,
        result: Result<T>,
        details: impl FnOnce(&T) -> serde_json::Value,
    ) -> Result<T> {
        let event = match &result {
            Ok(value) => AuditEvent::new(actor, action, resource, audit_ledger::Outcome::Ok).details(details(value)),
            Err(e) => AuditEvent::new(actor, action, resource, outcome_of(e)).reason(e.reason()),
        };
        self.audit(event.source(origin.0)).await?;
        result
    }

    // ---------------------------------------------------------------- identity

    /// Creates the first two administrators of a new installation (allowed only while there are no users); the
    /// person at the host's console is trusted once, then everything goes through two-factor logins and grants
    /// approved by a second administrator.
    pub async fn bootstrap(
        &self,
        administrators: [(&str, &str, &str); 2],
        organisation: &str,
        origin: Origin<'_>,
    ) -> Result<[InvitedUser; 2]> {
        let now = self.now();
        let result = self
            .directory
            .bootstrap_administrators(administrators, organisation, now)
            .await;
        self.finish(
            "system",
            "user.bootstrap",
            &format!("users {} {}", administrators[0].0, administrators[1].0),
            origin,
            result,
            |_| json!({"role": "administrator"}),
        )
        .await
    }

    /// Logs in with password and second factor; success and failure are both audited (never the secrets).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        factor: SecondFactor<'_>,
        origin: Origin<'_>,
    ) -> Result<Session> {
        let now = self.now();
        let method = match &factor {
            SecondFactor::Totp(_) => "totp",
            SecondFactor::RecoveryCode(_) => "recovery_code",
        };
        let result = self.directory.login(username, password, factor, origin.0, now).await;
        let action = if result.is_ok() {
            "login.success"
        } else {
            "login.failure"
        };
        self.finish(
            username,
            action,
            &format!("user {username}"),
            origin,
            result,
            |s| json!({"second_factor": method, "expires_at": s.expires_at.to_rfc3339()}),
        )
        .await
    }

    /// The actor behind a session token (checked signature, expiry, revocation, current roles).
    pub async fn authenticate(&self, token: &str) -> Result<Actor> {
        self.directory.authenticate(token, self.now()).await
    }

    /// Ends a session.
    pub async fn logout(&self, token: &str, origin: Origin<'_>) -> Result<()> {
        let actor = self.authenticate(token).await?;
        let result = self.directory.logout(token, self.now()).await;
        self.finish(
            &actor.username,
            "logout",
            &format!("user {}", actor.username),
            origin,
            result,
            |_| json!({}),
        )
        .await
    }

    /// Completes an invitation: sets the password and starts TOTP enrolment.
    pub async fn enrol(
        &self,
        username: &str,
        invitation: &str,
        password: &str,
        origin: Origin<'_>,
    ) -> Result<Enrolment> {
        let now = self.now();
        let result = self.directory.enrol(username, invitation, password, now).await;
        self.finish(
            username,
            "user.enrol",
            &format!("user {username}"),
            origin,
            result,
            |_| json!({}),
        )
        .await
    }

    /// Confirms the authenticator with a first code; returns the recovery codes (shown once).
    pub async fn confirm_totp(
        &self,
        username: &str,
        password: &str,
        code: &str,
        origin: Origin<'_>,
    ) -> Result<RecoveryCodes> {
        let now = self.now();
        let result = self.directory.confirm_totp(username, password, code, now).await;
        self.finish(
            username,
            "user.confirm_totp",
            &format!("user {username}"),
            origin,
            result,
            |_| json!({}),
        )
        .await
    }

    /// An operator creates an organisation.
    pub async fn add_organisation(
        &self,
        actor: &Actor,
        id: &str,
        name: &str,
        origin: Origin<'_>,
    ) -> Result<Organisation> {
        self.check(actor, Action::ManageUsers, &Resource::Platform, origin)
            .await?;
        let result = self.directory.add_organisation(id, name, self.now()).await;
        self.finish(
            &actor.username,
            "organisation.add",
            &format!("organisation {id}"),
            origin,
            result,
            |_| json!({"name": name}),
        )
        .await
    }

    /// An administrator invites a person with roles, by the invitee's claim (the hash of a code only the invitee
    /// knows: the administrator never sees a code). Researcher and auditor roles take effect at once; committee,
    /// operator and administrator roles become a grant that a second administrator approves
    /// ([`Policy::approve_grant`]).
    pub async fn add_user(
        &self,
        actor: &Actor,
        invitee: NewPerson<'_>,
        roles: &[Role],
        origin: Origin<'_>,
    ) -> Result<UserChange> {
        let username = invitee.username;
        self.check(
            actor,
            Action::ManageUsers,
            &Resource::Person(username.to_owned()),
            origin,
        )
        .await?;
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        if roles.iter().any(|r| Role::FOUR_EYES.contains(r)) {
            let request = GrantRequest::Invite {
                username,
                display_name: invitee.display_name,
                organisation: invitee.organisation,
                claim: invitee.claim,
            };
            let details = json!({"kind": "invite", "organisation": invitee.organisation, "roles": names});
            return self.ask_grant(actor, username, request, roles, details, origin).await;
        }
        let result = self
            .directory
            .add_user(
                username,
                invitee.display_name,
                invitee.organisation,
                roles,
                invitee.claim,
                self.now(),
            )
            .await
            .map(UserChange::Invited);
        self.finish(
            &actor.username,
            "user.add",
            &format!("user {username}"),
            origin,
            result,
            |_| json!({"organisation": invitee.organisation, "roles": names}),
        )
        .await
    }

    /// A second administrator approves a pending grant: never the one who asked, never the grantee. The account
    /// is created (or the roles set) in the same transaction that marks the grant applied.
    pub async fn approve_grant(
        &self,
        actor: &Actor,
        id: &str,
        claim: Option<&str>,
        origin: Origin<'_>,
    ) -> Result<RoleGrant> {
        let grant = match self.directory.grant(id).await {
            Ok(g) => g,
            Err(e) => {
                let event = AuditEvent::new(
                    &actor.username,
                    "user.grant_approved",
                    format!("grant {id}"),
                    outcome_of(&e),
                )
                .reason(e.reason());
                self.audit(event.source(origin.0)).await?;
                return Err(e);
            }
        };
        self.check(
            actor,
            Action::ManageUsers,
            &Resource::Grant {
                username: grant.username.clone(),
                requested_by: grant.requested_by.clone(),
            },
            origin,
        )
        .await?;
        let result = self.directory.apply_grant(id, &actor.username, claim, self.now()).await;
        let names: Vec<&str> = grant.roles.iter().map(|r| r.as_str()).collect();
        self.finish(
            &actor.username,
            "user.grant_approved",
            &format!("user {}", grant.username),
            origin,
            result,
            |g| json!({"grant": g.id, "requested_by": g.requested_by, "roles": names}),
        )
        .await
    }

    /// Stores a grant for a second administrator and audits the request (`details` plus the grant's id).
    async fn ask_grant(
        &self,
        actor: &Actor,
        username: &str,
        request: GrantRequest<'_>,
        roles: &[Role],
        mut details: serde_json::Value,
        origin: Origin<'_>,
    ) -> Result<UserChange> {
        let result = self
            .directory
            .request_grant(&actor.username, request, roles, self.now())
            .await
            .map(UserChange::Pending);
        self.finish(
            &actor.username,
            "user.grant_requested",
            &format!("user {username}"),
            origin,
            result,
            |c| {
                details["grant"] = json!(c.grant_id());
                details
            },
        )
        .await
    }

    /// Grants waiting for a second administrator (administrators, operators, auditors).
    pub async fn pending_grants(&self, actor: &Actor, origin: Origin<'_>) -> Result<Vec<RoleGrant>> {
        self.check(actor, Action::ViewUsers, &Resource::Platform, origin)
            .await?;
        self.directory.pending_grants().await
    }

    /// An administrator registers a hospital's certificate-bound service identity.
    pub async fn add_hospital(
        &self,
        actor: &Actor,
        institution_code: &str,
        organisation: &str,
        certificate_sha256: &str,
        origin: Origin<'_>,
    ) -> Result<UserRecord> {
        self.check(actor, Action::ManageUsers, &Resource::Platform, origin)
            .await?;
        let result = self
            .directory
            .add_service_identity(institution_code, organisation, certificate_sha256, self.now())
            .await;
        self.finish(
            &actor.username,
            "user.add_hospital",
            &format!("institution {institution_code}"),
            origin,
            result,
            |_| json!({"organisation": organisation, "certificate_sha256": certificate_sha256}),
        )
        .await
    }

    /// An administrator changes a user's roles (effective at the user's next request: the service re-reads roles
    /// on every request; a token verified offline carries the roles of its login, for at most its lifetime). A
    /// change that adds a committee, operator or administrator role becomes a grant for a second administrator.
    pub async fn set_roles(
        &self,
        actor: &Actor,
        username: &str,
        roles: &[Role],
        origin: Origin<'_>,
    ) -> Result<UserChange> {
        self.check(
            actor,
            Action::ManageUsers,
            &Resource::Person(username.to_owned()),
            origin,
        )
        .await?;
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let held = self.directory.user(username).await.map(|u| u.roles).unwrap_or_default();
        let adds_four_eyes = roles.iter().any(|r| Role::FOUR_EYES.contains(r) && !held.contains(r));
        // Taking an administrator out needs four eyes too: otherwise one of four could remove two others.
        let removes_administrator = held.contains(&Role::Administrator) && !roles.contains(&Role::Administrator);
        if adds_four_eyes || removes_administrator {
            let details = json!({"kind": "roles", "roles": names});
            return self
                .ask_grant(
                    actor,
                    username,
                    GrantRequest::Roles { username },
                    roles,
                    details,
                    origin,
                )
                .await;
        }
        let result = self
            .directory
            .set_roles(username, roles, self.now())
            .await
            .map(UserChange::RolesSet);
        self.finish(
            &actor.username,
            "user.set_roles",
            &format!("user {username}"),
            origin,
            result,
            |_| json!({"roles": names}),
        )
        .await
    }

    /// An administrator disables an account (its sessions end at once); disabling an administrator is a grant a
    /// second administrator approves.
    pub async fn disable_user(&self, actor: &Actor, username: &str, origin: Origin<'_>) -> Result<UserChange> {
        self.check(
            actor,
            Action::ManageUsers,
            &Resource::Person(username.to_owned()),
            origin,
        )
        .await?;
        let held = self.directory.user(username).await.map(|u| u.roles).unwrap_or_default();
        if held.contains(&Role::Administrator) {
            let held: Vec<Role> = held.into_iter().collect();
            let request = GrantRequest::Disable { username };
            return self
                .ask_grant(actor, username, request, &held, json!({"kind": "disable"}), origin)
                .await;
        }
        let result = self
            .directory
            .disable_user(username, self.now())
            .await
            .map(|()| UserChange::Disabled(username.to_owned()));
        self.finish(
            &actor.username,
            "user.disable",
            &format!("user {username}"),
            origin,
            result,
            |_| json!({}),
        )
        .await
    }

    /// Users and organisations (operators, auditors).
    pub async fn users(&self, actor: &Actor, origin: Origin<'_>) -> Result<Vec<UserRecord>> {
        self.check(actor, Action::ViewUsers, &Resource::Platform, origin)
            .await?;
        self.directory.users().await
    }

    /// One user, for the user themself or those who may view users.
    pub async fn user(&self, actor: &Actor, username: &str, origin: Origin<'_>) -> Result<UserRecord> {
        if actor.username != username {
            self.check(actor, Action::ViewUsers, &Resource::Platform, origin)
                .await?;
        }
        self.directory.user(username).await
    }

    // ---------------------------------------------------------------- applications and review

    /// A researcher files an application, or with `amends` a change request to their approved one.
    pub async fn file_application(
        &self,
        actor: &Actor,
        form: ApplicationForm,
        amends: Option<&str>,
        origin: Origin<'_>,
    ) -> Result<ApplicationRecord> {
        self.check(actor, Action::FileApplication, &Resource::Platform, origin)
            .await?;
        if let Some(parent) = amends {
            let p = self.committee.get(parent).await?;
            self.check(
                actor,
                Action::AmendApplication,
                &Resource::Application(p.facts()),
                origin,
            )
            .await?;
        }
        let result = self
            .committee
            .file(&actor.username, &actor.organisation, form, amends, self.now())
            .await;
        let resource = result
            .as_ref()
            .map(|r| format!("application {}", r.id))
            .unwrap_or_else(|_| "application (new)".into());
        self.finish(&actor.username, "application.file", &resource, origin, result, |r| {
            json!({"kind": r.kind.as_str(), "amends": r.amends, "channel": r.form.channel.as_str(), "fee_yen": r.fee.total_yen})
        })
        .await
    }

    /// One application, for whoever may view it.
    pub async fn application(&self, actor: &Actor, id: &str, origin: Origin<'_>) -> Result<ApplicationRecord> {
        let app = self
            .checked_application(actor, Action::ViewApplication, id, origin)
            .await?;
        Ok(app)
    }

    /// The applications the actor may view (a researcher sees their own and those naming them).
    pub async fn applications(&self, actor: &Actor) -> Result<Vec<ApplicationRecord>> {
        Ok(self
            .committee
            .list()
            .await?
            .into_iter()
            .filter(|a| authorize(actor, Action::ViewApplication, &Resource::Application(a.facts())).is_ok())
            .collect())
    }

    /// The chair assigns members; each must hold a committee role and not belong to the applicant's
    /// organisation.
    pub async fn assign(
        &self,
        actor: &Actor,
        id: &str,
        members: &[String],
        origin: Origin<'_>,
    ) -> Result<ApplicationRecord> {
        let app = self
            .checked_application(actor, Action::AssignReviewers, id, origin)
            .await?;
        let mut result = Ok(());
        for m in members {
            match self.directory.user(m).await {
                Ok(u)
                    if !u
                        .roles
                        .iter()
                        .any(|r| matches!(r, Role::CommitteeMember | Role::CommitteeChair)) =>
                {
                    result = Err(PolicyError::InvalidState(format!("{m} is not a committee member")));
                }
                Ok(u) if u.organisation == app.organisation => {
                    result = Err(PolicyError::InvalidState(format!(
                        "{m} belongs to the applicant's organisation {} (conflict of interest)",
                        u.organisation
                    )));
                }
                Ok(_) => {}
                Err(e) => result = Err(e),
            }
            if result.is_err() {
                break;
            }
        }
        let result = match result {
            Ok(()) => self.committee.assign(id, members, &actor.username, self.now()).await,
            Err(e) => Err(e),
        };
        self.finish(
            &actor.username,
            "review.assign",
            &format!("application {id}"),
            origin,
            result,
            |_| json!({"members": members}),
        )
        .await
    }

    /// A member recuses from a review (conflict of interest), withdrawing any vote.
    pub async fn recuse(&self, actor: &Actor, id: &str, reason: &str, origin: Origin<'_>) -> Result<ApplicationRecord> {
        self.checked_application(actor, Action::Recuse, id, origin).await?;
        let result = self.committee.recuse(id, &actor.username, reason, self.now()).await;
        self.finish(
            &actor.username,
            "review.recuse",
            &format!("application {id}"),
            origin,
            result,
            |_| json!({"reason": reason}),
        )
        .await
    }

    /// A member votes with a comment.
    pub async fn vote(
        &self,
        actor: &Actor,
        id: &str,
        in_favour: bool,
        comment: &str,
        origin: Origin<'_>,
    ) -> Result<ApplicationRecord> {
        self.checked_application(actor, Action::CastVote, id, origin).await?;
        let vote = Vote {
            member: actor.username.clone(),
            in_favour,
            comment: comment.to_owned(),
        };
        let result = self.committee.vote(id, vote, self.now()).await;
        self.finish(
            &actor.username,
            "review.vote",
            &format!("application {id}"),
            origin,
            result,
            |_| json!({"in_favour": in_favour, "comment": comment}),
        )
        .await
    }

    /// The chair closes the review. An approval with a DP budget creates the project's budget in the
    /// budget ledger (project = application id), so statistics are charged against what was approved.
    pub async fn decide(
        &self,
        actor: &Actor,
        id: &str,
        conditions: Option<ApprovalConditions>,
        origin: Origin<'_>,
    ) -> Result<ApplicationRecord> {
        self.checked_application(actor, Action::DecideApplication, id, origin)
            .await?;
        let result = self.committee.decide(id, &actor.username, conditions, self.now()).await;
        let result = match result {
            Ok((Outcome::Approved, record)) => {
                let project = record.amends.clone().unwrap_or_else(|| record.id.clone());
                match record.conditions.as_ref().and_then(|c| c.dp_budget) {
                    Some(b) => self
                        .budget
                        .set_budget(
                            &project,
                            Budget {
                                epsilon: b.epsilon,
                                delta: b.delta,
                            },
                            &actor.username,
                        )
                        .await
                        .map(|_| record),
                    None => Ok(record),
                }
            }
            Ok((Outcome::Refused, record)) => Ok(record),
            Err(e) => Err(e),
        };
        self.finish(
            &actor.username,
            "review.decide",
            &format!("application {id}"),
            origin,
            result,
            |r| json!({"status": r.status.as_str(), "tally": r.tally, "conditions": r.conditions}),
        )
        .await
    }

    /// The chair revokes an approval.
    pub async fn revoke(&self, actor: &Actor, id: &str, reason: &str, origin: Origin<'_>) -> Result<ApplicationRecord> {
        self.checked_application(actor, Action::RevokeApproval, id, origin)
            .await?;
        let result = self.committee.revoke(id, reason, self.now()).await;
        self.finish(
            &actor.username,
            "approval.revoke",
            &format!("application {id}"),
            origin,
            result,
            |(_, cascaded)| json!({"reason": reason, "change_requests_revoked": cascaded}),
        )
        .await
        .map(|(record, _)| record)
    }

    /// The applicant withdraws an undecided application.
    pub async fn withdraw(&self, actor: &Actor, id: &str, origin: Origin<'_>) -> Result<ApplicationRecord> {
        self.checked_application(actor, Action::AmendApplication, id, origin)
            .await?;
        let result = self.committee.withdraw(id).await;
        self.finish(
            &actor.username,
            "application.withdraw",
            &format!("application {id}"),
            origin,
            result,
            |_| json!({}),
        )
        .await
    }

    /// The fee estimate of an application under the current tariffs.
    pub async fn estimate_fees(&self, actor: &Actor, id: &str, origin: Origin<'_>) -> Result<FeeEstimate> {
        let app = self
            .checked_application(actor, Action::EstimateFees, id, origin)
            .await?;
        Ok(self.committee.tariff().estimate(&app.form))
    }

    /// Checks a use (build, download, statistics) against the approval's conditions — recipient, channel,
    /// tables and columns, expiry, revocation, bans, download limit — counts downloads, and audits the
    /// outcome. The release service and `tokumei stats` call this before anything leaves the platform.
    pub async fn admit_use(
        &self,
        actor: &Actor,
        id: &str,
        kind: UseKind,
        tables: &[TableRequest],
        origin: Origin<'_>,
    ) -> Result<ApplicationRecord> {
        let action = match kind {
            UseKind::Build => Action::BuildRelease,
            UseKind::Download | UseKind::Transfer => Action::DownloadRelease,
            UseKind::Statistics => Action::RunStatistics,
            UseKind::Analysis => Action::UseWorkspace,
        };
        self.checked_application(actor, action, id, origin).await?;
        let now = self.now();
        let request = UseRequest {
            kind,
            recipient: &actor.username,
            tables,
            today: japan_date(now),
        };
        let result = self.committee.admit_use(&request, id).await;
        self.finish(
            &actor.username,
            action.as_str(),
            &format!("application {id}"),
            origin,
            result,
            |r| json!({"tables": tables, "downloads_used": r.downloads_used}),
        )
        .await
    }

    /// Re-checks, at every HTTPS request of a download already admitted, that approval `id` still stands for
    /// `recipient`: not revoked (nor anything it amends), not expired, the recipient still named, neither
    /// person nor organisation banned. Nothing is counted and nothing is audited here: the release service
    /// writes one ledger entry per request with this outcome's reason.
    pub async fn recheck_transfer(&self, recipient: &str, id: &str) -> Result<()> {
        let request = UseRequest {
            kind: UseKind::Transfer,
            recipient,
            tables: &[],
            today: japan_date(self.now()),
        };
        self.committee.check_standing(&request, id).await
    }

    /// Re-checks, before a result is read back (a statistics table, a workspace's answer), that a use of approval
    /// `id` still stands for `actor` (as at every transfer of a file); audited as a read under `action`.
    async fn recheck_use(
        &self,
        actor: &Actor,
        id: &str,
        kind: UseKind,
        action: Action,
        origin: Origin<'_>,
    ) -> Result<()> {
        let request = UseRequest {
            kind,
            recipient: &actor.username,
            tables: &[],
            today: japan_date(self.now()),
        };
        let result = self.committee.check_standing(&request, id).await;
        self.finish(
            &actor.username,
            action.as_str(),
            &format!("application {id}"),
            origin,
            result,
            |_| json!({"read": "result"}),
        )
        .await
    }

    /// An operator builds a release under approval `id` for `recipients`: every recipient is checked as if
    /// receiving it (named in the approval, not banned) and the tables and columns against the conditions,
    /// before any data is read. Refusals are audited with the condition broken.
    pub async fn admit_build(
        &self,
        actor: &Actor,
        id: &str,
        recipients: &[String],
        tables: &[TableRequest],
        origin: Origin<'_>,
    ) -> Result<ApplicationRecord> {
        self.checked_application(actor, Action::BuildRelease, id, origin)
            .await?;
        let today = japan_date(self.now());
        let mut result = Err(PolicyError::Invalid("a release needs at least one recipient".into()));
        for recipient in recipients {
            let request = UseRequest {
                kind: UseKind::Build,
                recipient,
                tables,
                today,
            };
            result = self.committee.admit_use(&request, id).await;
            if result.is_err() {
                break;
            }
        }
        self.finish(
            &actor.username,
            Action::BuildRelease.as_str(),
            &format!("application {id}"),
            origin,
            result,
            |_| json!({"tables": tables, "recipients": recipients}),
        )
        .await
    }

    /// Records that a release was built and handed to the release zone (counted in the regulator report).
    pub async fn record_release(
        &self,
        actor: &Actor,
        id: &str,
        details: serde_json::Value,
        origin: Origin<'_>,
    ) -> Result<AuditEntry> {
        self.audit_ok(actor, "release.build", &format!("application {id}"), origin, details)
            .await
    }

    /// A recipient declares that the data received under approval `id` has been deleted (the deletion duty
    /// after expiry). Recorded in the ledger as `deletion.declare`; the regulator report counts approvals
    /// past expiry without one.
    pub async fn declare_deletion(
        &self,
        actor: &Actor,
        id: &str,
        statement: &str,
        origin: Origin<'_>,
    ) -> Result<AuditEntry> {
        let app = self
            .checked_application(actor, Action::DeclareDeletion, id, origin)
            .await?;
        if statement.trim().is_empty() {
            return Err(PolicyError::Invalid(
                "a deletion declaration needs a statement (what was deleted, where, how)".into(),
            ));
        }
        self.audit_ok(
            actor,
            "deletion.declare",
            &format!("application {id}"),
            origin,
            json!({"statement": statement, "expires_on": app.conditions.as_ref().map(|c| c.expires_on)}),
        )
        .await
    }

    /// Whether `actor`'s roles may ask the core for anything at all — operate it (`operate_core`), count for the
    /// regulator (`report_regulator`) or plan a release (`plan_release`) — asked before an order is looked up, so a refused caller learns nothing
    /// about whether it would have been valid. A refusal is audited as `operate_core`.
    pub async fn admit_core_request(&self, actor: &Actor, origin: Origin<'_>) -> Result<()> {
        let asks_for_itself = [Action::ReportRegulator, Action::PlanRelease, Action::RunStatistics];
        if asks_for_itself.iter().any(|a| authorize_role(actor, *a).is_ok()) {
            return Ok(());
        }
        self.check_role(actor, Action::OperateCore, origin).await
    }

    /// Asks the core for `operation`: authorised (`operate_core`; a refusal is audited), queued as an order
    /// signed for the core (`tokumei/core-order/v1`) and recorded as `core.requested` (never a key: a count).
    pub async fn request_core_operation(
        &self,
        actor: &Actor,
        operation: CoreOperation,
        origin: Origin<'_>,
    ) -> Result<OrderStatus> {
        if matches!(operation, CoreOperation::PlanRelease { .. }) {
            // A plan's scope is the policy service's to fix: ask for it with `request_release_plan`.
            return Err(PolicyError::Invalid(
                "a release plan is asked by application, not by scope".into(),
            ));
        }
        if matches!(operation, CoreOperation::Statistics(_)) {
            // Its loss is spent and its rules checked by `request_statistics`.
            return Err(PolicyError::Invalid(
                "statistics are asked with `request_statistics`".into(),
            ));
        }
        self.check(actor, operation.action(), &Resource::Platform, origin)
            .await?;
        self.queue_core_order(actor, operation, origin).await
    }

    /// Asks the core what a build of application `id` would do under `params`: admitted as `plan_release` on the
    /// application (a refusal is audited), its scope fixed here from the application, queued as an order.
    pub async fn request_release_plan(
        &self,
        actor: &Actor,
        id: &str,
        params: crate::core_orders::PlanParams,
        origin: Origin<'_>,
    ) -> Result<OrderStatus> {
        let app = self
            .admit_release_review(actor, id, Action::PlanRelease, origin)
            .await?;
        let scope = crate::core_orders::PlanScope::of(&app);
        params.model_over(scope.privacy).map_err(PolicyError::Invalid)?;
        let operation = CoreOperation::PlanRelease { scope, params };
        self.queue_core_order(actor, operation, origin).await
    }

    /// Queues the core's half of a release build of approved application `id`: the approval admits every
    /// recipient and table (refusals audited by [`Policy::admit_build`]), the scope is fixed from its conditions
    /// here and signed into the order. Default recipients and tables: everything approved.
    pub async fn request_release_build(
        &self,
        actor: &Actor,
        id: &str,
        recipients: Option<Vec<String>>,
        tables: Option<Vec<TableRequest>>,
        origin: Origin<'_>,
    ) -> Result<OrderStatus> {
        self.check_role(actor, Action::BuildRelease, origin).await?;
        let app = self.committee.get(id).await?;
        let conditions = app.conditions.as_ref();
        let tables = tables.unwrap_or_else(|| conditions.map(|c| c.tables.clone()).unwrap_or_default());
        let recipients = recipients.unwrap_or_else(|| {
            conditions
                .map(|c| c.recipients.iter().cloned().collect())
                .unwrap_or_default()
        });
        let app = self.admit_build(actor, id, &recipients, &tables, origin).await?;
        let scope = crate::core_orders::BuildScope::of(&app, &tables, &recipients)?;
        let intake = crate::core_orders::IntakeKeys::new(self.db.clone()).current().await?;
        let Some(intake_key) = intake else {
            let e = PolicyError::ConditionViolated {
                code: "RELEASE_ZONE_NOT_REGISTERED",
                message: "the release zone has not published its intake key (start `tokumei release serve`)".into(),
            };
            self.audit(
                AuditEvent::new(&actor.username, "core.requested", "core store", outcome_of(&e))
                    .reason(e.reason())
                    .source(origin.0),
            )
            .await?;
            return Err(e);
        };
        self.queue_core_order(actor, CoreOperation::BuildRelease { scope, intake_key }, origin)
            .await
    }

    /// The release zone's half of build order `order`, claimed for `actor` (an operator): the approval is admitted
    /// again as it stands now (revoked, expired, banned, narrowed — refused and audited) and must still be at the
    /// revision the core built under. Returns the scope this service fixed when it queued the order (never the
    /// core's word for it) and the core's report (the package's name, size and SHA-256). A refusal leaves the order
    /// deliverable again, but for a changed approval, which closes it.
    pub async fn admit_build_delivery(
        &self,
        actor: &Actor,
        order: u64,
        origin: Origin<'_>,
    ) -> Result<(crate::core_orders::BuildScope, serde_json::Value)> {
        self.check_role(actor, Action::BuildRelease, origin).await?;
        let orders = CoreOrders::new(self.db.clone());
        let claimed = orders.claim_delivery(order, self.now()).await;
        let claimed = self
            .finish(
                &actor.username,
                "release.deliver",
                &format!("core order {order}"),
                origin,
                claimed,
                |c| json!({"order": order, "requested_by": c.requested_by}),
            )
            .await?;
        let scope = claimed.scope;
        // The research view the package was read from (the core's clock, as is the time it reports exclusions by).
        let read_at_ms = claimed
            .report
            .get("read_at_ms")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(i64::MIN);
        let excluded_since = orders.exclusions_changed_at_ms().await? > read_at_ms;
        let admitted = self
            .admit_build(actor, &scope.application, &scope.recipients, &scope.tables, origin)
            .await;
        let refusal = match admitted {
            Ok(app) if app.conditions_revision == scope.approval_revision && !excluded_since => None,
            Ok(app) => {
                let e = if excluded_since {
                    PolicyError::ConditionViolated {
                        code: "DATA_CHANGED_SINCE_BUILD",
                        message: "an opt-out or an erasure changed the research view after the core read this \
                                  package: build again, so that no copy carries the patient"
                            .into(),
                    }
                } else {
                    PolicyError::ConditionViolated {
                        code: "APPROVAL_CHANGED",
                        message: format!(
                            "the approval of {} changed after the core built (revision {} then, {} now): build again",
                            scope.application, scope.approval_revision, app.conditions_revision
                        ),
                    }
                };
                self.audit(
                    AuditEvent::new(
                        &actor.username,
                        "release.build",
                        format!("application {}", scope.application),
                        outcome_of(&e),
                    )
                    .reason(e.reason())
                    .source(origin.0)
                    .details(json!({"order": order})),
                )
                .await?;
                Some((e, crate::core_orders::Delivery::Stale))
            }
            Err(e) => Some((e, crate::core_orders::Delivery::Again)),
        };
        match refusal {
            None => Ok((scope, claimed.report)),
            Some((e, settle)) => {
                if let Err(s) = orders.settle_delivery(order, settle).await {
                    tracing::error!(order, reason = %s.reason(), "a refused delivery's claim could not be released");
                }
                Err(e)
            }
        }
    }

    /// Ends the release zone's half of build order `order`: `Ok(release)` records the release (`release.build`,
    /// its details built here from the order's scope and the core's report, never taken from the zone) and closes
    /// the order for good; `Err(code)` records the failure and leaves the order deliverable again.
    pub async fn record_build_delivery(
        &self,
        actor: &Actor,
        order: u64,
        application: &str,
        outcome: std::result::Result<String, String>,
        origin: Origin<'_>,
    ) -> Result<AuditEntry> {
        self.check_role(actor, Action::BuildRelease, origin).await?;
        let orders = CoreOrders::new(self.db.clone());
        let status = orders.get(order, self.now()).await?;
        if status.application.as_deref() != Some(application) || status.operation != "build_release" {
            return Err(PolicyError::Invalid(format!(
                "core order {order} is not a build of application {application}"
            )));
        }
        match outcome {
            Ok(release) => {
                let numbered = release
                    .strip_prefix(&format!("R-{application}-"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !numbered {
                    return Err(PolicyError::Invalid(format!(
                        "a delivered build of {application} names its release R-{application}-<n>"
                    )));
                }
                let report = status.result.clone().unwrap_or_default();
                let scope = orders.build_scope(order).await?;
                let details = json!({
                    "release": release,
                    "order": order,
                    "requested_by": status.requested_by,
                    "recipients": scope.recipients,
                    "tables": scope.tables.iter().map(|t| t.table.clone()).collect::<Vec<_>>(),
                    "patients": report.get("patients"),
                    "suppressed_patients": report.get("suppressed_patients"),
                    "package_sha256": report.get("package_sha256"),
                });
                // The ledger first: a release is closed only once it is on the ledger.
                let entry = self.record_release(actor, application, details, origin).await?;
                orders
                    .settle_delivery(order, crate::core_orders::Delivery::Delivered(&release))
                    .await?;
                Ok(entry)
            }
            Err(code) => {
                let valid = (1..=64).contains(&code.len())
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                let code = if valid { code } else { "RELEASE_ZONE_FAILED".to_owned() };
                let entry = self
                    .audit(
                        AuditEvent::new(
                            &actor.username,
                            "release.build",
                            format!("application {application}"),
                            audit_ledger::Outcome::Failed,
                        )
                        .reason(&code)
                        .source(origin.0)
                        .details(json!({"order": order})),
                    )
                    .await?;
                orders
                    .settle_delivery(order, crate::core_orders::Delivery::Again)
                    .await?;
                Ok(entry)
            }
        }
    }

    /// The release zone publishes its intake key (called over the zone's pinned certificate): recorded as
    /// `release.intake_key` with the key's fingerprint when it changes.
    pub async fn publish_intake_key(&self, public_key: &str, origin: Origin<'_>) -> Result<Option<AuditEntry>> {
        let changed = crate::core_orders::IntakeKeys::new(self.db.clone())
            .publish(public_key, self.now())
            .await?;
        if !changed {
            return Ok(None);
        }
        let fingerprint = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(public_key.as_bytes())[..8]);
        let entry = self
            .audit(
                AuditEvent::new(
                    "release-zone",
                    "release.intake_key",
                    "release zone",
                    audit_ledger::Outcome::Ok,
                )
                .source(origin.0)
                .details(json!({"key_fingerprint": fingerprint})),
            )
            .await?;
        Ok(Some(entry))
    }

    /// Whether this façade can queue orders for the core (only the policy service holds their key).
    pub(crate) fn queues_core_orders(&self) -> bool {
        self.core_order_key.is_some()
    }

    /// The person `username` as an actor (their organisation and roles; no session): for acts recorded after the
    /// fact under the person who asked, such as the provision of a statistics table the core reported.
    pub(crate) async fn actor_named(&self, username: &str) -> Result<Actor> {
        let user = self.directory.user(username).await?;
        Ok(Actor {
            username: user.username,
            organisation: user.organisation,
            roles: user.roles,
            auth: crate::authorization::AuthMethod::PasswordTotp,
        })
    }

    /// Queues an admitted operation as an order signed for the core and records `core.requested`.
    pub(crate) async fn queue_core_order(
        &self,
        actor: &Actor,
        operation: CoreOperation,
        origin: Origin<'_>,
    ) -> Result<OrderStatus> {
        let keys = operation.key_count();
        let result = match &self.core_order_key {
            Some(signer) => {
                CoreOrders::new(self.db.clone())
                    .queue(operation, &actor.username, self.now(), |payload| {
                        hex::encode(signer.sign(SignaturePurpose::CoreOrder, payload))
                    })
                    .await
            }
            None => Err(PolicyError::InvalidState(
                "core orders are queued by the policy service (`tokumei policy serve`), which alone holds their key"
                    .into(),
            )),
        };
        self.finish(
            &actor.username,
            "core.requested",
            "core store",
            origin,
            result,
            |s| json!({"order": s.id, "operation": s.operation, "keys": keys}),
        )
        .await
    }

    /// Where an order stands and, once done, the core's report: for whoever may ask for that operation
    /// (operators; auditors for the regulator's figures). The role is asked before the order is looked up.
    pub async fn core_order(&self, actor: &Actor, id: u64, origin: Origin<'_>) -> Result<OrderStatus> {
        self.admit_core_request(actor, origin).await?;
        let found = CoreOrders::new(self.db.clone()).get(id, self.now()).await;
        let action = match &found {
            Ok(status) if status.operation == "regulator_figures" => Action::ReportRegulator,
            // A plan's figures go back to whoever asked for it (an operator sees every order).
            Ok(status) if status.operation == "plan_release" && status.requested_by == actor.username => {
                self.check_role(actor, Action::PlanRelease, origin).await?;
                return found;
            }
            // A statistics table or a query's (sealed) rows are the requester's alone: others who may see the queue
            // see where it stands.
            Ok(status) if matches!(status.operation.as_str(), "statistics" | "sql" | "analysis") => {
                if status.requested_by == actor.username {
                    let (action, kind) = match status.operation.as_str() {
                        "sql" => (Action::RunOperatorSql, UseKind::Statistics),
                        // A checker's release order (by the order, not by the caller's roles: a researcher who also
                        // checks outputs reads their own workspace's answers only while the approval stands): its
                        // report is the output they approved.
                        "analysis"
                            if crate::analysis::AnalysisRegisters::new(self.db.clone())
                                .by_release_order(id)
                                .await
                                .is_ok() =>
                        {
                            self.check_role(actor, Action::CheckOutput, origin).await?;
                            return found;
                        }
                        "analysis" => (Action::UseWorkspace, UseKind::Analysis),
                        _ => (Action::RunStatistics, UseKind::Statistics),
                    };
                    self.check_role(actor, action, origin).await?;
                    // A table is given out only while its approval stands: revoked, expired, or its
                    // requester or their organisation banned since, and the result stays in the zone.
                    if let (Some(application), Some(_)) = (&status.application, &status.result) {
                        self.recheck_use(actor, application, kind, action, origin).await?;
                    }
                    return found;
                }
                self.check(actor, Action::OperateCore, &Resource::Platform, origin)
                    .await?;
                return found.map(|s| OrderStatus { result: None, ..s });
            }
            // Someone who may see regulator orders only learns nothing from a number that does not exist: the
            // same refusal as for an order they may not see.
            Err(PolicyError::NotFound { .. }) if authorize_role(actor, Action::OperateCore).is_err() => {
                Action::OperateCore
            }
            Err(_) => return found,
            Ok(_) => Action::OperateCore,
        };
        self.check(actor, action, &Resource::Platform, origin).await?;
        found
    }

    /// Keeps the time the core reports its research view last changed by an opt-out or erasure (see
    /// [`Policy::admit_build_delivery`]).
    pub async fn note_core_exclusions(&self, exclusions_changed_at_ms: i64) -> Result<()> {
        CoreOrders::new(self.db.clone())
            .note_exclusions(exclusions_changed_at_ms)
            .await
    }

    /// Hands the core its queued orders, after keeping the time it reports its research view last changed by an
    /// opt-out or erasure. The caller has proven to be the core (its certificate, checked by the front-end); each
    /// order handed out is recorded as `core.order_taken`.
    pub async fn take_core_orders(
        &self,
        exclusions_changed_at_ms: i64,
        origin: Origin<'_>,
    ) -> Result<Vec<(u64, SignedCoreOrder)>> {
        let orders = CoreOrders::new(self.db.clone());
        orders.note_exclusions(exclusions_changed_at_ms).await?;
        let taken = orders.take(self.now()).await?;
        let mut orders = Vec::with_capacity(taken.len());
        for (id, operation, order) in taken {
            self.audit(
                AuditEvent::new(
                    CORE_IDENTITY,
                    "core.order_taken",
                    "core store",
                    audit_ledger::Outcome::Ok,
                )
                .details(json!({"order": id, "operation": operation}))
                .source(origin.0),
            )
            .await?;
            orders.push((id, order));
        }
        Ok(orders)
    }

    /// The core's report on order `id`, recorded as `core.<operation>` under the operator who asked: the
    /// figures the ledger keeps are chosen here ([`CoreOperation::audit_details`]), a failure by its code.
    pub async fn report_core_order(&self, id: u64, outcome: OrderOutcome, origin: Origin<'_>) -> Result<AuditEntry> {
        let orders = CoreOrders::new(self.db.clone());
        // Checked before the order is claimed, so a malformed report leaves it waiting for a good one.
        outcome.stored()?;
        let (operation, requested_by) = orders.claim_report(id).await?;
        let mut outcome = outcome;
        if let (CoreOperation::Statistics(order), OrderOutcome::Done(report)) = (&operation, &outcome) {
            // Settled before the result is stored: nobody reads a table the differencing audit refuses.
            match self.settle_statistics(order, &requested_by, report, origin).await {
                Ok(None) => {}
                Ok(Some(code)) => outcome = OrderOutcome::Failed(code.to_owned()),
                Err(e) => {
                    tracing::warn!(
                        order = id,
                        reason = e.reason(),
                        "a statistics report could not be settled"
                    );
                    outcome = OrderOutcome::Failed("SETTLEMENT_FAILED".to_owned());
                }
            }
        }
        if let CoreOperation::Analysis { .. } = &operation {
            // Settled before the report is stored: an output request is filed, a release signed.
            if let Err(e) = self
                .settle_analysis(id, &operation, &requested_by, &outcome, origin)
                .await
            {
                tracing::warn!(
                    order = id,
                    reason = e.reason(),
                    "a workspace report could not be settled"
                );
                outcome = OrderOutcome::Failed("SETTLEMENT_FAILED".to_owned());
            }
        }
        let (operation, requested_by) = orders.report(id, &outcome, self.now()).await?;
        let action = format!("core.{}", operation.name());
        let event = match &outcome {
            OrderOutcome::Done(report) => {
                AuditEvent::new(&requested_by, &action, "core store", audit_ledger::Outcome::Ok)
                    .details(operation.audit_details(report))
            }
            OrderOutcome::Failed(code) => {
                let event =
                    AuditEvent::new(&requested_by, &action, "core store", audit_ledger::Outcome::Failed).reason(code);
                // A refused query is on the ledger by its shape, as a run one is.
                match &operation {
                    CoreOperation::Sql { .. } | CoreOperation::Analysis { .. } => {
                        event.details(operation.audit_details(&json!({})))
                    }
                    _ => event,
                }
            }
        };
        self.audit(event.source(origin.0)).await
    }

    /// Whether `actor` may trace a leak of a release of approval `id`, asked before the fingerprint key is
    /// unwrapped or the leaked file read (a refusal is audited); [`Policy::record_trace`] records the verdict.
    pub async fn admit_trace(&self, actor: &Actor, id: &str, origin: Origin<'_>) -> Result<()> {
        let app = self.committee.get(id).await?;
        self.check(actor, Action::TraceLeak, &Resource::Application(app.facts()), origin)
            .await
    }

    /// An operator's leak trace on a release of approval `id`, audited with its verdict.
    pub async fn record_trace(
        &self,
        actor: &Actor,
        id: &str,
        details: serde_json::Value,
        origin: Origin<'_>,
    ) -> Result<AuditEntry> {
        self.checked_application(actor, Action::TraceLeak, id, origin).await?;
        self.audit_ok(actor, "trace.leak", &format!("application {id}"), origin, details)
            .await
    }

    /// Admits a look at an application's data that yields aggregate figures only — the attack measured on a
    /// built release ([`Action::AssessReleaseRisk`]) or the preview of a build ([`Action::PlanRelease`]) —
    /// before anything is read. Refusals are audited; the figures are recorded with
    /// [`Policy::record_release_review`].
    pub async fn admit_release_review(
        &self,
        actor: &Actor,
        id: &str,
        action: Action,
        origin: Origin<'_>,
    ) -> Result<ApplicationRecord> {
        if !matches!(action, Action::AssessReleaseRisk | Action::PlanRelease) {
            return Err(PolicyError::Invalid(format!("{action} is not a release review")));
        }
        let app = self.checked_application(actor, action, id, origin).await?;
        Ok(app)
    }

    /// Records the figures of a release review admitted by [`Policy::admit_release_review`] (checked again:
    /// the ledger never holds a review its actor could not make).
    pub async fn record_release_review(
        &self,
        actor: &Actor,
        id: &str,
        action: Action,
        details: serde_json::Value,
        origin: Origin<'_>,
    ) -> Result<AuditEntry> {
        self.admit_release_review(actor, id, action, origin).await?;
        self.audit_ok(actor, action.as_str(), &format!("application {id}"), origin, details)
            .await
    }

    /// Records that a release review admitted by [`Policy::admit_release_review`] failed, with its reason code
    /// (a tampered copy, a manifest that disagrees): checked again like its success.
    pub async fn record_release_review_failure(
        &self,
        actor: &Actor,
        id: &str,
        action: Action,
        reason: &str,
        origin: Origin<'_>,
    ) -> Result<AuditEntry> {
        self.admit_release_review(actor, id, action, origin).await?;
        self.audit(
            AuditEvent::new(
                &actor.username,
                action.as_str(),
                format!("application {id}"),
                audit_ledger::Outcome::Failed,
            )
            .reason(reason)
            .source(origin.0),
        )
        .await
    }

    /// Records a provision (what was given to whom) for the public register.
    pub async fn record_provision(
        &self,
        actor: &Actor,
        id: &str,
        description: &str,
        rows: i64,
        origin: Origin<'_>,
    ) -> Result<Provision> {
        let result = self
            .committee
            .record_provision(id, &actor.username, &actor.organisation, description, rows, self.now())
            .await;
        self.finish(
            &actor.username,
            "provision",
            &format!("application {id}"),
            origin,
            result,
            |p| json!({"seq": p.seq, "description": p.description, "rows": p.rows}),
        )
        .await
    }

    /// The chair sets a project's DP budget outside an approval (or raises an approved one). Audited.
    pub async fn set_budget(
        &self,
        actor: &Actor,
        project: &str,
        budget: Budget,
        origin: Origin<'_>,
    ) -> Result<crate::budget_ledger::ProjectBudget> {
        let resource = match self.committee.get(project).await {
            Ok(app) => Resource::Application(app.facts()),
            Err(PolicyError::NotFound { .. }) => Resource::Platform,
            Err(e) => return Err(e),
        };
        self.check(actor, Action::SetBudget, &resource, origin).await?;
        let result = self.budget.set_budget(project, budget, &actor.username).await;
        self.finish(
            &actor.username,
            "budget.set",
            &format!("project {project}"),
            origin,
            result,
            |b| json!({"epsilon": b.budget.epsilon, "delta": b.budget.delta, "revision": b.revision}),
        )
        .await
    }

    /// The operator sets the platform's ceiling for a period (`YYYY-Qn`): the privacy loss all approvals'
    /// differentially private releases may reach together in it. Audited.
    pub async fn set_platform_ceiling(
        &self,
        actor: &Actor,
        period: &str,
        ceiling: Budget,
        origin: Origin<'_>,
    ) -> Result<crate::budget_ledger::PlatformCeiling> {
        self.check(actor, Action::SetPlatformCeiling, &Resource::Platform, origin)
            .await?;
        let window =
            crate::transparency::quarter(period).map(|(from, to)| (from.timestamp_millis(), to.timestamp_millis()));
        let result = match window {
            Ok(w) => {
                self.budget
                    .set_platform_ceiling(period, w, ceiling, &actor.username)
                    .await
            }
            Err(e) => Err(e),
        };
        self.finish(
            &actor.username,
            "budget.platform_ceiling",
            &format!("period {period}"),
            origin,
            result,
            |c| json!({"ceiling": c.ceiling, "spent": c.spent}),
        )
        .await
    }

    /// The platform's ceiling for a period and what all approvals spent in it (operators, chairs, auditors).
    pub async fn platform_status(
        &self,
        actor: &Actor,
        period: &str,
        origin: Origin<'_>,
    ) -> Result<crate::budget_ledger::PlatformCeiling> {
        self.check(actor, Action::ReportRegulator, &Resource::Platform, origin)
            .await?;
        let (from, to) = crate::transparency::quarter(period)?;
        self.budget
            .platform_status(period, (from.timestamp_millis(), to.timestamp_millis()))
            .await
    }

    /// A project's budget and ledger, for those who may view its application (or set budgets).
    pub async fn budget_status(
        &self,
        actor: &Actor,
        project: &str,
        origin: Origin<'_>,
    ) -> Result<crate::budget_ledger::BudgetStatus> {
        match self.committee.get(project).await {
            Ok(app) => {
                self.check(
                    actor,
                    Action::ViewApplication,
                    &Resource::Application(app.facts()),
                    origin,
                )
                .await?
            }
            Err(PolicyError::NotFound { .. }) => {
                self.check(actor, Action::SetBudget, &Resource::Platform, origin)
                    .await?
            }
            Err(e) => return Err(e),
        }
        self.budget.status(project).await
    }

    /// Whether `actor` may see application `id` and what was built under it (for listings: no ledger
    /// entry, as a listing is not an attempt on each item it leaves out). Unknown applications are not seen.
    pub async fn may_view_application(&self, actor: &Actor, id: &str) -> Result<bool> {
        match self.committee.get(id).await {
            Ok(app) => Ok(authorize(actor, Action::ViewApplication, &Resource::Application(app.facts())).is_ok()),
            Err(PolicyError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The budgets of every project `actor` may see, decided by the same rule as [`Policy::budget_status`]
    /// but without a ledger entry per project the actor may not see: listing is not an attempt on each of
    /// them (one refusal per project would bury real refusals in the ledger).
    pub async fn visible_budgets(&self, actor: &Actor) -> Result<Vec<crate::budget_ledger::BudgetStatus>> {
        let mut out = Vec::new();
        for p in self.budget.projects().await? {
            let visible = match self.committee.get(&p.project).await {
                Ok(app) => authorize(actor, Action::ViewApplication, &Resource::Application(app.facts())).is_ok(),
                Err(PolicyError::NotFound { .. }) => authorize(actor, Action::SetBudget, &Resource::Platform).is_ok(),
                Err(e) => return Err(e),
            };
            if visible {
                out.push(self.budget.status(&p.project).await?);
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- violations and bans

    /// The chair records a violation; the subject is banned from new applications and from receiving data.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_violation(
        &self,
        actor: &Actor,
        subject: BanSubject,
        kind: &str,
        description: &str,
        application: Option<&str>,
        banned_until: Option<NaiveDate>,
        origin: Origin<'_>,
    ) -> Result<Violation> {
        self.check(actor, Action::RecordViolation, &Resource::Platform, origin)
            .await?;
        let resource = subject.to_string();
        let result = self
            .committee
            .record_violation(
                subject,
                kind,
                description,
                application,
                banned_until,
                &actor.username,
                self.now(),
            )
            .await;
        self.finish(
            &actor.username,
            "violation.record",
            &resource,
            origin,
            result,
            |v| json!({"id": v.id, "kind": v.kind, "application": v.application, "banned_until": v.banned_until}),
        )
        .await
    }

    /// Every violation, local and imported.
    pub async fn violations(&self, actor: &Actor, origin: Origin<'_>) -> Result<Vec<Violation>> {
        self.check(actor, Action::ViewViolations, &Resource::Platform, origin)
            .await?;
        self.committee.violations().await
    }

    /// The signed list of this processor's bans in force, for other processors.
    pub async fn export_bans(&self, actor: &Actor, origin: Origin<'_>) -> Result<BanList> {
        self.check(actor, Action::ExportBans, &Resource::Platform, origin)
            .await?;
        let Some(key) = &self.bans_key else {
            return Err(PolicyError::InvalidState(
                "ban lists are signed by the policy service only (tokumei committee export-bans)".to_owned(),
            ));
        };
        let now = self.now();
        let bans = self.committee.local_bans_in_force(japan_date(now)).await;
        let result = bans.and_then(|b| BanList::sign(&self.config.processor, key, now.to_rfc3339(), b));
        self.finish(
            &actor.username,
            "bans.export",
            "ban list",
            origin,
            result,
            |l| json!({"bans": l.bans.len()}),
        )
        .await
    }

    /// The signed list of enabled hospitals and their pinned certificates that the gateway consults at every
    /// request (`[gateway.directory]`): disabling a hospital here, and publishing, shuts it out without
    /// touching the CA. Operators; audited with the number of hospitals listed.
    pub async fn publish_hospital_directory(
        &self,
        actor: &Actor,
        origin: Origin<'_>,
    ) -> Result<SignedHospitalDirectory> {
        self.check(actor, Action::ManageUsers, &Resource::Platform, origin)
            .await?;
        let Some(key) = &self.directory_key else {
            return Err(PolicyError::InvalidState(
                "the hospital directory is signed by the policy service only (tokumei user hospitals-publish)"
                    .to_owned(),
            ));
        };
        let result = self.directory.users().await.map(|users| {
            let hospitals: Vec<serde_json::Value> = users
                .iter()
                .filter(|u| u.kind == UserKind::Service && u.status != UserStatus::Disabled)
                .filter_map(|u| {
                    u.certificate_sha256
                        .as_ref()
                        .map(|c| json!({"institution_code": u.username, "certificate_sha256": c.to_ascii_lowercase()}))
                })
                .collect();
            let payload = json!({"issued_at": self.now().to_rfc3339(), "hospitals": hospitals}).to_string();
            let signature = hex::encode(key.sign(SignaturePurpose::HospitalDirectory, payload.as_bytes()));
            SignedHospitalDirectory {
                hospitals: hospitals.len(),
                payload,
                signature,
                public_key: key.public().to_hex(),
            }
        });
        self.finish(
            &actor.username,
            "hospitals.publish",
            "hospital directory",
            origin,
            result,
            |d| json!({"hospitals": d.hospitals}),
        )
        .await
    }

    /// Imports another processor's ban list, verified under the key the operator trusts for it.
    pub async fn import_bans(
        &self,
        actor: &Actor,
        list: &BanList,
        trusted: &ServicePublicKey,
        origin: Origin<'_>,
    ) -> Result<usize> {
        self.check(actor, Action::ImportBans, &Resource::Platform, origin)
            .await?;
        let result = self.committee.import_bans(list, trusted, self.now()).await;
        self.finish(
            &actor.username,
            "bans.import",
            &format!("ban list from {}", list.issuer),
            origin,
            result,
            |n| json!({"issuer_key": trusted.key_id(), "bans": list.bans.len(), "new": n}),
        )
        .await
    }

    /// Recipients of an approval, for the release zone.
    pub fn recipients(app: &ApplicationRecord) -> BTreeSet<String> {
        app.conditions
            .as_ref()
            .map(|c| c.recipients.clone())
            .unwrap_or_default()
    }
}

/// Denials (the caller's fault or a rule) versus failures (something broke), for the audit entry.
fn outcome_of(e: &PolicyError) -> audit_ledger::Outcome {
    match e {
        PolicyError::Database(_) | PolicyError::Migrate(_) => audit_ledger::Outcome::Failed,
        _ => audit_ledger::Outcome::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_the_default() {
        let example = PolicyConfig::from_toml(include_str!("../../infra/policy.example.toml"));
        assert_eq!(example.ok(), Some(PolicyConfig::default()));
        assert!(PolicyConfig::from_toml("quorom = 3").is_err(), "typos are refused");
    }
}
