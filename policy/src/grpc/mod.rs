//! The gRPC front-end of the committee zone: `tokumei.policy.v1.PolicyService` over [`Policy`].
//!
//! [`PolicyGrpc`] is a thin adapter: it reads the bearer token, converts messages ([`convert`]) and calls
//! the [`Policy`] facade, which authorises, acts and audits. No rule lives here, so the gRPC service, the
//! CLI and the release service cannot disagree. [`server`] binds and runs it (TLS, or plaintext on
//! loopback for development).
//!
//! # Authentication
//!
//! `Login`, `Enrol` and `ConfirmTotp` need no session. Every other call carries the token from `Login` in
//! the `authorization` metadata as `Bearer tks1....`; a missing, malformed, expired or revoked token is
//! `UNAUTHENTICATED` with reason `SESSION_INVALID`. The peer address is recorded in the audit ledger as the
//! request's origin (`grpc:127.0.0.1:54321`).
//!
//! # Errors
//!
//! Every refusal is a gRPC status carrying a `google.rpc.ErrorInfo` whose `reason` is the stable code of
//! [`PolicyError::reason`] and whose `domain` is [`ERROR_DOMAIN`]; clients branch on the reason, never on
//! the message. The status code is chosen by reason:
//!
//! | reason | gRPC code |
//! |---|---|
//! | `AUTHENTICATION_FAILED`, `SESSION_INVALID` | `UNAUTHENTICATED` |
//! | `ACCOUNT_LOCKED` | `RESOURCE_EXHAUSTED` (metadata `until`) |
//! | `ROLE_NOT_PERMITTED`, `STRONG_AUTHENTICATION_REQUIRED`, `NOT_APPLICANT`, `NOT_ASSIGNED_REVIEWER`, `CONFLICT_OF_INTEREST`, `NOT_RECIPIENT`, `OTHER_INSTITUTION`, `WRONG_RESOURCE` | `PERMISSION_DENIED` |
//! | `BANNED`, `ADVERTISING_REFUSED` | `PERMISSION_DENIED` |
//! | `RECIPIENT_NOT_APPROVED`, `CHANNEL_NOT_APPROVED`, `TABLE_NOT_APPROVED`, `COLUMN_NOT_APPROVED` (a use outside the approval's scope) | `PERMISSION_DENIED` |
//! | `NOT_APPROVED`, `APPROVAL_EXPIRED`, `APPROVAL_REVOKED`, `DOWNLOAD_LIMIT_REACHED` (the approval's state forbids any use now) | `FAILED_PRECONDITION` |
//! | `INVALID_STATE`, `QUORUM_NOT_MET`, `BUDGET_BELOW_SPENT` | `FAILED_PRECONDITION` |
//! | `BUDGET_EXCEEDED` | `RESOURCE_EXHAUSTED` |
//! | `NOT_FOUND`, `UNKNOWN_PROJECT` | `NOT_FOUND` |
//! | `ALREADY_EXISTS` | `ALREADY_EXISTS` |
//! | `INVALID_ARGUMENT`, `INVALID_PRIVACY_PARAMETERS` | `INVALID_ARGUMENT` |
//! | `DATABASE` | `UNAVAILABLE` (retrying may help) |
//! | `MIGRATION`, `ACCOUNTING`, anything else | `INTERNAL` |
//!
//! Messages never carry a secret: the policy zone's errors contain no password, code or token, and the
//! messages of `UNAVAILABLE`/`INTERNAL` errors (which may quote database internals) are replaced by a
//! generic text, the details going to the server's log only. Bad input the adapter itself cannot parse
//! (an unparseable date, an unknown channel, role or use kind, a missing form) is `INVALID_ARGUMENT` with
//! reason `INVALID_ARGUMENT`.

pub mod analysis;
pub mod audited;
pub mod convert;
pub mod core_orders;
pub mod release_zone;
pub mod server;
pub mod zone_pins;

use std::collections::HashMap;

use tokumei_proto::policy::v1 as pb;
use tokumei_proto::policy::v1::policy_service_server::{PolicyService, PolicyServiceServer};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::authorization::{Action, Actor, Resource, Role};
use crate::committee::BanList;
use crate::error::PolicyError;
use crate::identity::SecondFactor;
use crate::service::{Origin, Policy};
use crate::service_key::ServicePublicKey;

pub use server::{BoundServer, ServeError, ServerTls, bind, serve};

/// The `ErrorInfo.domain` of every policy-service error.
pub const ERROR_DOMAIN: &str = "policy.tokumei";

/// The `ErrorInfo.reason` of a request without a usable session token.
pub const SESSION_INVALID: &str = "SESSION_INVALID";

/// `value` as the JSON document of a reply.
fn document<T: serde::Serialize>(value: &T) -> Reply<pb::JsonDocument> {
    let json = serde_json::to_string(value)
        .map_err(|e| policy_status(&PolicyError::Invalid(format!("cannot serialise the document: {e}"))))?;
    Ok(Response::new(pb::JsonDocument { json }))
}

/// The gRPC status code for a stable reason code (see the table in the module documentation).
pub fn code_for_reason(reason: &str) -> Code {
    match reason {
        "AUTHENTICATION_FAILED" | "SESSION_INVALID" => Code::Unauthenticated,
        "ACCOUNT_LOCKED" | "BUDGET_EXCEEDED" | "PLATFORM_CEILING_EXCEEDED" => Code::ResourceExhausted,
        // A statistics request the platform's rules, the catalogue or the committee's rules never allow.
        "TABLE_NOT_IN_STORE"
        | "SUBJECT_FIXED"
        | "COLUMN_NOT_GROUPABLE"
        | "SMALL_CELL_BELOW_FLOOR"
        | "HIERARCHY_NOT_IN_CATALOGUE"
        | "KEYS_NOT_DECLARABLE"
        | "KEY_NOT_IN_CATALOGUE"
        | "PUBLIC_KEYS_TOO_MANY"
        | "SMALL_CELL_NOT_APPROVED"
        | "SMALL_CELL_BELOW_APPROVAL"
        | "GROUPING_NOT_APPROVED" => Code::PermissionDenied,
        "ROLE_NOT_PERMITTED"
        | "STRONG_AUTHENTICATION_REQUIRED"
        | "NOT_APPLICANT"
        | "NOT_ASSIGNED_REVIEWER"
        | "CONFLICT_OF_INTEREST"
        | "NOT_RECIPIENT"
        | "OTHER_INSTITUTION"
        | "OWN_ACCOUNT"
        | "FOUR_EYES"
        | "WRONG_RESOURCE"
        | "BANNED"
        | "ADVERTISING_REFUSED"
        | "RECIPIENT_NOT_APPROVED"
        | "CHANNEL_NOT_APPROVED"
        | "TABLE_NOT_APPROVED"
        | "COLUMN_NOT_APPROVED"
        | "NOT_CERTIFIED" => Code::PermissionDenied,
        "NOT_APPROVED"
        | "APPROVAL_EXPIRED"
        | "APPROVAL_REVOKED"
        | "DOWNLOAD_LIMIT_REACHED"
        | "BUILD_NOT_DELIVERABLE"
        | "APPROVAL_CHANGED"
        | "DATA_CHANGED_SINCE_BUILD"
        | "RELEASE_ZONE_NOT_REGISTERED"
        | "INVALID_STATE"
        | "QUORUM_NOT_MET"
        | "SERVICE_RUNNING"
        | "LEGACY_SEEDS"
        | "BUDGET_BELOW_SPENT"
        | "CHECKS_REFUSED"
        | "OUTPUT_NOT_RELEASED" => Code::FailedPrecondition,
        "NOT_FOUND" | "UNKNOWN_PROJECT" => Code::NotFound,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "INVALID_ARGUMENT" | "INVALID_PRIVACY_PARAMETERS" => Code::InvalidArgument,
        "DATABASE" => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// A status with `ErrorInfo { reason, domain: "policy.tokumei", metadata }`.
pub fn status_with_reason(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// The status reporting a policy error (code by reason, ErrorInfo attached, no secret in the message).
pub fn policy_status(e: &PolicyError) -> Status {
    let reason = e.reason();
    let code = code_for_reason(reason);
    let mut metadata = HashMap::new();
    match e {
        PolicyError::AccountLocked { until } => {
            metadata.insert("until".to_owned(), until.clone());
        }
        PolicyError::Banned { until, violation, .. } => {
            metadata.insert("until".to_owned(), until.clone());
            metadata.insert("violation".to_owned(), violation.clone());
        }
        PolicyError::NotFound { kind, .. } | PolicyError::AlreadyExists { kind, .. } => {
            metadata.insert("kind".to_owned(), (*kind).to_owned());
        }
        _ => {}
    }
    let message = match code {
        Code::Unavailable | Code::Internal => {
            tracing::error!(reason, error = %e, "policy service failure");
            match code {
                Code::Unavailable => "the policy database is unavailable; try again later".to_owned(),
                _ => "internal error in the policy service (details are in the server's log)".to_owned(),
            }
        }
        _ => e.to_string(),
    };
    status_with_reason(code, reason, message, metadata)
}

fn refused(e: PolicyError) -> Status {
    policy_status(&e)
}

/// The bearer token of a request: `authorization: Bearer <token>` (the scheme is case-insensitive).
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, Status> {
    let missing = || {
        status_with_reason(
            Code::Unauthenticated,
            SESSION_INVALID,
            "no session: log in and send `authorization: Bearer <token>`",
            HashMap::new(),
        )
    };
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// The origin recorded in the audit ledger: `grpc:` and the peer address.
fn origin_of<T>(request: &Request<T>) -> String {
    match request.remote_addr() {
        Some(addr) => format!("grpc:{addr}"),
        None => "grpc:unknown".to_owned(),
    }
}

/// `tokumei.policy.v1.PolicyService` over the [`Policy`] facade; cheap to clone.
#[derive(Debug, Clone)]
pub struct PolicyGrpc {
    policy: Policy,
}

impl PolicyGrpc {
    /// The service over `policy`.
    pub fn new(policy: Policy) -> PolicyGrpc {
        PolicyGrpc { policy }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> PolicyServiceServer<PolicyGrpc> {
        PolicyServiceServer::new(self)
    }

    /// An application as the contract carries it, with the quorum rule its review is decided by.
    fn application(&self, app: &crate::committee::ApplicationRecord) -> pb::Application {
        let rule = self.policy.quorum_rule();
        let mut a = convert::application_to_proto(app);
        a.quorum = Some(pb::QuorumRule {
            min_voting: rule.min_voting,
            approve_numerator: rule.approve_numerator,
            approve_denominator: rule.approve_denominator,
        });
        a
    }

    /// `names` as roles for `username`, once `actor` may manage that person (the role first: a refused caller
    /// learns nothing from the validation of the names).
    async fn roles_for(
        &self,
        actor: &Actor,
        username: &str,
        names: &[String],
        origin: &str,
    ) -> Result<Vec<Role>, Status> {
        self.policy
            .check(
                actor,
                Action::ManageUsers,
                &Resource::Person(username.to_owned()),
                Origin(origin),
            )
            .await
            .map_err(refused)?;
        convert::roles(names).map_err(refused)
    }

    /// The request's origin, its authenticated actor and its message.
    async fn authenticated<T>(&self, request: Request<T>) -> Result<(String, Actor, T), Status> {
        let origin = origin_of(&request);
        let actor = {
            let token = bearer_token(request.metadata())?;
            self.policy.authenticate(token).await.map_err(refused)?
        };
        Ok((origin, actor, request.into_inner()))
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl PolicyService for PolicyGrpc {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let origin = origin_of(&request);
        let r = request.into_inner();
        let factor = match &r.second_factor {
            Some(pb::login_request::SecondFactor::TotpCode(c)) => SecondFactor::Totp(c),
            Some(pb::login_request::SecondFactor::RecoveryCode(c)) => SecondFactor::RecoveryCode(c),
            None => {
                return Err(refused(PolicyError::Invalid(
                    "give a TOTP code or a recovery code".into(),
                )));
            }
        };
        let session = self
            .policy
            .login(&r.username, &r.password, factor, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::LoginResponse {
            session_token: session.token.expose().to_owned(),
            expires_at: session.expires_at.timestamp(),
            actor: Some(convert::actor_to_proto(&session.actor)),
        }))
    }

    async fn logout(&self, request: Request<pb::Empty>) -> Reply<pb::Empty> {
        let origin = origin_of(&request);
        let token = bearer_token(request.metadata())?;
        self.policy.logout(token, Origin(&origin)).await.map_err(refused)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn who_am_i(&self, request: Request<pb::Empty>) -> Reply<pb::Actor> {
        let (_, actor, _) = self.authenticated(request).await?;
        Ok(Response::new(convert::actor_to_proto(&actor)))
    }

    async fn enrol(&self, request: Request<pb::EnrolRequest>) -> Reply<pb::EnrolResponse> {
        let origin = origin_of(&request);
        let r = request.into_inner();
        let e = self
            .policy
            .enrol(&r.username, &r.invitation_code, &r.password, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::EnrolResponse {
            otpauth_uri: e.otpauth_uri.expose().to_owned(),
            secret_base32: e.secret_base32.expose().to_owned(),
        }))
    }

    async fn confirm_totp(&self, request: Request<pb::ConfirmTotpRequest>) -> Reply<pb::ConfirmTotpResponse> {
        let origin = origin_of(&request);
        let r = request.into_inner();
        let codes = self
            .policy
            .confirm_totp(&r.username, &r.password, &r.totp_code, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::ConfirmTotpResponse {
            recovery_codes: codes.codes().iter().map(|c| c.expose().to_owned()).collect(),
        }))
    }

    async fn add_organisation(&self, request: Request<pb::AddOrganisationRequest>) -> Reply<pb::Organisation> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let org = self
            .policy
            .add_organisation(&actor, &r.id, &r.name, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::Organisation {
            id: org.id,
            name: org.name,
            created_at: org.created_at,
        }))
    }

    async fn add_user(&self, request: Request<pb::AddUserRequest>) -> Reply<pb::AddUserResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let roles = self.roles_for(&actor, &r.username, &r.roles, &origin).await?;
        let invitee = crate::service::NewPerson {
            username: &r.username,
            display_name: &r.display_name,
            organisation: &r.organisation,
            claim: &r.claim,
        };
        let change = self
            .policy
            .add_user(&actor, invitee, &roles, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(convert::change_to_proto(change)))
    }

    async fn approve_grant(&self, request: Request<pb::ApproveGrantRequest>) -> Reply<pb::AddUserResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let grant = self
            .policy
            .approve_grant(&actor, &r.grant_id, convert::optional_text(&r.claim), Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::AddUserResponse {
            username: grant.username,
            state: "applied".into(),
            grant_id: grant.id,
            ..Default::default()
        }))
    }

    async fn list_grants(&self, request: Request<pb::Empty>) -> Reply<pb::ListGrantsResponse> {
        let (origin, actor, _) = self.authenticated(request).await?;
        let grants = self
            .policy
            .pending_grants(&actor, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: grants.iter().map(convert::grant_to_proto).collect(),
        }))
    }

    async fn set_roles(&self, request: Request<pb::SetRolesRequest>) -> Reply<pb::AddUserResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let roles = self.roles_for(&actor, &r.username, &r.roles, &origin).await?;
        let change = self
            .policy
            .set_roles(&actor, &r.username, &roles, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(convert::change_to_proto(change)))
    }

    async fn disable_user(&self, request: Request<pb::UserRef>) -> Reply<pb::AddUserResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let change = self
            .policy
            .disable_user(&actor, &r.username, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(convert::change_to_proto(change)))
    }

    async fn add_hospital(&self, request: Request<pb::AddHospitalRequest>) -> Reply<pb::User> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let user = self
            .policy
            .add_hospital(&actor, &r.code, &r.organisation, &r.certificate_sha256, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(convert::user_to_proto(&user)))
    }

    async fn publish_hospital_directory(&self, request: Request<pb::Empty>) -> Reply<pb::HospitalDirectory> {
        let (origin, actor, _) = self.authenticated(request).await?;
        let directory = self
            .policy
            .publish_hospital_directory(&actor, Origin(&origin))
            .await
            .map_err(refused)?;
        let json = serde_json::to_string(&directory)
            .map_err(|e| refused(PolicyError::Invalid(format!("cannot serialise the directory: {e}"))))?;
        Ok(Response::new(pb::HospitalDirectory {
            json,
            hospitals: directory.hospitals as u64,
            public_key: directory.public_key,
        }))
    }

    async fn export_audit(&self, request: Request<pb::AuditWindow>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        self.policy
            .check(&actor, Action::ExportAudit, &Resource::Platform, Origin(&origin))
            .await
            .map_err(refused)?;
        let instant = |field: &str, text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| refused(PolicyError::Invalid(format!("{field} must be an RFC 3339 instant"))))
        };
        let (from, to) = (instant("from", &r.from)?, instant("to", &r.to)?);
        let bundle = self
            .policy
            .export_audit(&actor, from, to, Origin(&origin))
            .await
            .map_err(refused)?;
        document(&bundle)
    }

    async fn publish_register(&self, request: Request<pb::RegisterRef>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        match r.register.as_str() {
            "decisions" => document(
                &self
                    .policy
                    .decisions_register(&actor, Origin(&origin))
                    .await
                    .map_err(refused)?,
            ),
            "provisions" => document(
                &self
                    .policy
                    .provisions_register(&actor, Origin(&origin))
                    .await
                    .map_err(refused)?,
            ),
            _ => {
                // The role first, so a refused caller learns nothing from the validation.
                self.policy
                    .check(&actor, Action::PublishRegister, &Resource::Platform, Origin(&origin))
                    .await
                    .map_err(refused)?;
                Err(refused(PolicyError::Invalid(
                    "register must be decisions or provisions".to_owned(),
                )))
            }
        }
    }

    async fn show_budget(&self, request: Request<pb::BudgetQuery>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        if r.project.is_empty() {
            // Only the projects this person may see; no refusal recorded for the others.
            document(&self.policy.visible_budgets(&actor).await.map_err(refused)?)
        } else {
            document(
                &self
                    .policy
                    .budget_status(&actor, &r.project, Origin(&origin))
                    .await
                    .map_err(refused)?,
            )
        }
    }

    async fn set_budget(&self, request: Request<pb::SetBudgetRequest>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let budget = tokumei_deid::dp::accounting::Budget {
            epsilon: r.epsilon,
            delta: r.delta,
        };
        self.policy
            .set_budget(&actor, &r.project, budget, Origin(&origin))
            .await
            .map_err(refused)?;
        document(&self.policy.budget().status(&r.project).await.map_err(refused)?)
    }

    async fn set_platform_ceiling(&self, request: Request<pb::CeilingRequest>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let budget = tokumei_deid::dp::accounting::Budget {
            epsilon: r.epsilon,
            delta: r.delta,
        };
        document(
            &self
                .policy
                .set_platform_ceiling(&actor, &r.period, budget, Origin(&origin))
                .await
                .map_err(refused)?,
        )
    }

    async fn platform_budget(&self, request: Request<pb::PeriodRef>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        document(
            &self
                .policy
                .platform_status(&actor, &r.period, Origin(&origin))
                .await
                .map_err(refused)?,
        )
    }

    async fn regulator_report(&self, request: Request<pb::PeriodRef>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        document(
            &self
                .policy
                .regulator_report(&actor, &r.period, Origin(&origin))
                .await
                .map_err(refused)?,
        )
    }

    async fn admit_file_statistics(&self, request: Request<pb::StatisticsOperation>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let spec = convert::statistics_from_proto(r);
        document(
            &self
                .policy
                .admit_file_statistics(&actor, &spec, Origin(&origin))
                .await
                .map_err(refused)?,
        )
    }

    async fn record_file_statistics(&self, request: Request<pb::FileStatisticsRecord>) -> Reply<pb::JsonDocument> {
        let (origin, actor, r) = self.authenticated(request).await?;
        // The role first: a refused caller's record is not read.
        self.policy
            .check_role(&actor, Action::RunStatistics, Origin(&origin))
            .await
            .map_err(refused)?;
        let spec = convert::statistics_from_proto(r.statistics.unwrap_or_default());
        let invalid = |what: &str| {
            refused(crate::error::PolicyError::Invalid(format!(
                "{what} of the small-cell table could not be read"
            )))
        };
        let made = crate::file_statistics::SmallCellMade {
            linked: serde_json::from_str(&r.linked_json).map_err(|_| invalid("the cells"))?,
            population: serde_json::from_str(&r.population_json).map_err(|_| invalid("the population"))?,
        };
        let entry = self
            .policy
            .record_file_statistics(&actor, &spec, r.cells, made, Origin(&origin))
            .await
            .map_err(refused)?;
        document(&serde_json::json!({ "ledger_entry": entry }))
    }

    async fn list_users(&self, request: Request<pb::Empty>) -> Reply<pb::ListUsersResponse> {
        let (origin, actor, _) = self.authenticated(request).await?;
        let users = self.policy.users(&actor, Origin(&origin)).await.map_err(refused)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(convert::user_to_proto).collect(),
        }))
    }

    async fn file_application(&self, request: Request<pb::FileApplicationRequest>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        // The caller is refused before their input is read: a refusal says nothing about the form.
        self.policy
            .check(&actor, Action::FileApplication, &Resource::Platform, Origin(&origin))
            .await
            .map_err(refused)?;
        let form = convert::form_from_proto(r.form).map_err(refused)?;
        let amends = convert::optional_text(&r.amends);
        let app = self
            .policy
            .file_application(&actor, form, amends, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn get_application(&self, request: Request<pb::ApplicationRef>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let app = self
            .policy
            .application(&actor, &r.id, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn list_applications(&self, request: Request<pb::Empty>) -> Reply<pb::ListApplicationsResponse> {
        let (_, actor, _) = self.authenticated(request).await?;
        let apps = self.policy.applications(&actor).await.map_err(refused)?;
        Ok(Response::new(pb::ListApplicationsResponse {
            applications: apps.iter().map(|a| self.application(a)).collect(),
        }))
    }

    async fn withdraw_application(&self, request: Request<pb::ApplicationRef>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let app = self
            .policy
            .withdraw(&actor, &r.id, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn estimate_fees(&self, request: Request<pb::ApplicationRef>) -> Reply<pb::FeeEstimate> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let fee = self
            .policy
            .estimate_fees(&actor, &r.id, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(convert::fee_to_proto(&fee)))
    }

    async fn assign_reviewers(&self, request: Request<pb::AssignReviewersRequest>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let app = self
            .policy
            .assign(&actor, &r.id, &r.members, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn recuse(&self, request: Request<pb::RecuseRequest>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let app = self
            .policy
            .recuse(&actor, &r.id, &r.reason, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn cast_vote(&self, request: Request<pb::CastVoteRequest>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let app = self
            .policy
            .vote(&actor, &r.id, r.in_favour, &r.comment, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn decide(&self, request: Request<pb::DecideRequest>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        self.policy
            .check_application(&actor, Action::DecideApplication, &r.id, Origin(&origin))
            .await
            .map_err(refused)?;
        let conditions = r
            .conditions
            .map(convert::conditions_from_proto)
            .transpose()
            .map_err(refused)?;
        let app = self
            .policy
            .decide(&actor, &r.id, conditions, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let app = self
            .policy
            .revoke(&actor, &r.id, &r.reason, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn admit_use(&self, request: Request<pb::AdmitUseRequest>) -> Reply<pb::Application> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let kind = convert::use_kind(&r.kind).map_err(refused)?;
        let tables = convert::tables_from_proto(&r.tables);
        let app = self
            .policy
            .admit_use(&actor, &r.id, kind, &tables, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(self.application(&app)))
    }

    async fn record_violation(&self, request: Request<pb::RecordViolationRequest>) -> Reply<pb::Violation> {
        let (origin, actor, r) = self.authenticated(request).await?;
        self.policy
            .check(&actor, Action::RecordViolation, &Resource::Platform, Origin(&origin))
            .await
            .map_err(refused)?;
        let subject = convert::ban_subject(&r.subject_kind, &r.subject).map_err(refused)?;
        let until = convert::optional_date("banned_until", &r.banned_until).map_err(refused)?;
        let application = convert::optional_text(&r.application);
        let v = self
            .policy
            .record_violation(
                &actor,
                subject,
                &r.kind,
                &r.description,
                application,
                until,
                Origin(&origin),
            )
            .await
            .map_err(refused)?;
        Ok(Response::new(convert::violation_to_proto(&v)))
    }

    async fn list_violations(&self, request: Request<pb::Empty>) -> Reply<pb::ListViolationsResponse> {
        let (origin, actor, _) = self.authenticated(request).await?;
        let list = self.policy.violations(&actor, Origin(&origin)).await.map_err(refused)?;
        Ok(Response::new(pb::ListViolationsResponse {
            violations: list.iter().map(convert::violation_to_proto).collect(),
        }))
    }

    async fn export_bans(&self, request: Request<pb::Empty>) -> Reply<pb::BanListJson> {
        let (origin, actor, _) = self.authenticated(request).await?;
        let list = self
            .policy
            .export_bans(&actor, Origin(&origin))
            .await
            .map_err(refused)?;
        let json = serde_json::to_string(&list)
            .map_err(|e| refused(PolicyError::Invalid(format!("cannot serialise the ban list: {e}"))))?;
        Ok(Response::new(pb::BanListJson { json }))
    }

    async fn import_bans(&self, request: Request<pb::ImportBansRequest>) -> Reply<pb::ImportBansResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        self.policy
            .check(&actor, Action::ImportBans, &Resource::Platform, Origin(&origin))
            .await
            .map_err(refused)?;
        let list: BanList = serde_json::from_str(&r.json).map_err(|e| {
            refused(PolicyError::Invalid(format!(
                "the ban list is not valid JSON of a ban list: {e}"
            )))
        })?;
        let trusted = ServicePublicKey::from_hex(&r.trusted_key).map_err(refused)?;
        let imported = self
            .policy
            .import_bans(&actor, &list, &trusted, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::ImportBansResponse {
            imported: imported as u64,
        }))
    }

    async fn verify_audit(&self, request: Request<pb::Empty>) -> Reply<pb::AuditVerification> {
        let (origin, actor, _) = self.authenticated(request).await?;
        let report = self
            .policy
            .verify_audit(&actor, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(convert::verification_to_proto(&report)))
    }

    async fn request_core_operation(&self, request: Request<pb::CoreOperationRequest>) -> Reply<pb::CoreOrderStatus> {
        let (origin, actor, r) = self.authenticated(request).await?;
        use pb::core_operation_request::Operation;
        // The role the kind of operation needs, before anything else of the request is read: a refused caller
        // learns nothing about whether the order would have been valid.
        let action = match &r.operation {
            Some(Operation::RegulatorFigures(_)) => Action::ReportRegulator,
            Some(Operation::PlanRelease(_)) => Action::PlanRelease,
            Some(Operation::Statistics(_)) => Action::RunStatistics,
            Some(Operation::Sql(_)) => Action::RunOperatorSql,
            Some(Operation::BuildRelease(_)) => Action::BuildRelease,
            _ => Action::OperateCore,
        };
        self.policy
            .check_role(&actor, action, Origin(&origin))
            .await
            .map_err(refused)?;
        let status = match r.operation {
            Some(Operation::PlanRelease(p)) => {
                let params = convert::plan_params_from_proto(&p);
                self.policy
                    .request_release_plan(&actor, &p.application_id, params, Origin(&origin))
                    .await
            }
            Some(Operation::Statistics(st)) => {
                let spec = convert::statistics_from_proto(st);
                self.policy.request_statistics(&actor, spec, Origin(&origin)).await
            }
            Some(Operation::BuildRelease(b)) => {
                let recipients = (!b.recipients.is_empty()).then_some(b.recipients);
                let tables = (!b.tables.is_empty()).then(|| convert::tables_from_proto(&b.tables));
                self.policy
                    .request_release_build(&actor, &b.application_id, recipients, tables, Origin(&origin))
                    .await
            }
            other => {
                let operation = convert::core_operation_from_proto(pb::CoreOperationRequest { operation: other })
                    .map_err(refused)?;
                self.policy
                    .request_core_operation(&actor, operation, Origin(&origin))
                    .await
            }
        }
        .map_err(refused)?;
        Ok(Response::new(convert::order_status_to_proto(&status)))
    }

    async fn get_core_order(&self, request: Request<pb::CoreOrderRef>) -> Reply<pb::CoreOrderStatus> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let status = self
            .policy
            .core_order(&actor, r.id, Origin(&origin))
            .await
            .map_err(refused)?;
        Ok(Response::new(convert::order_status_to_proto(&status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorization::{Action, DenialReason, Denied};

    fn reason_of(s: &Status) -> Option<String> {
        s.get_error_details().error_info().map(|i| {
            assert_eq!(i.domain, ERROR_DOMAIN);
            i.reason.clone()
        })
    }

    #[test]
    fn every_denial_is_permission_denied_never_internal() {
        // OWN_ACCOUNT once reached clients as INTERNAL: a refusal is never a server fault.
        for reason in DenialReason::ALL {
            assert_eq!(
                code_for_reason(reason.code()),
                Code::PermissionDenied,
                "{}",
                reason.code()
            );
        }
    }

    #[test]
    fn errors_map_to_codes_with_their_reason() {
        let denied = |reason| {
            PolicyError::Denied(Denied {
                actor: "a".into(),
                action: Action::CastVote,
                resource: "x".into(),
                reason,
            })
        };
        let cases = [
            (PolicyError::AuthenticationFailed, Code::Unauthenticated),
            (PolicyError::SessionInvalid("expired".into()), Code::Unauthenticated),
            (
                PolicyError::AccountLocked {
                    until: "2026-01-01T00:00:00Z".into(),
                },
                Code::ResourceExhausted,
            ),
            (denied(DenialReason::RoleNotPermitted), Code::PermissionDenied),
            (denied(DenialReason::NotAssignedReviewer), Code::PermissionDenied),
            (denied(DenialReason::ConflictOfInterest), Code::PermissionDenied),
            (
                denied(DenialReason::StrongAuthenticationRequired),
                Code::PermissionDenied,
            ),
            (PolicyError::AdvertisingRefused("x".into()), Code::PermissionDenied),
            (
                PolicyError::Banned {
                    subject: "s".into(),
                    until: "u".into(),
                    violation: "v".into(),
                    reason: "r".into(),
                },
                Code::PermissionDenied,
            ),
            (
                PolicyError::ConditionViolated {
                    code: "COLUMN_NOT_APPROVED",
                    message: "m".into(),
                },
                Code::PermissionDenied,
            ),
            (
                PolicyError::ConditionViolated {
                    code: "APPROVAL_EXPIRED",
                    message: "m".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                PolicyError::ConditionViolated {
                    code: "DOWNLOAD_LIMIT_REACHED",
                    message: "m".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                PolicyError::NotFound {
                    kind: "application",
                    id: "A-1".into(),
                },
                Code::NotFound,
            ),
            (
                PolicyError::AlreadyExists {
                    kind: "user",
                    id: "u".into(),
                },
                Code::AlreadyExists,
            ),
            (PolicyError::Invalid("bad".into()), Code::InvalidArgument),
            (PolicyError::InvalidState("decided".into()), Code::FailedPrecondition),
            (PolicyError::QuorumNotMet("2 of 3".into()), Code::FailedPrecondition),
            (PolicyError::Database(sqlx::Error::PoolTimedOut), Code::Unavailable),
        ];
        for (e, code) in cases {
            let s = policy_status(&e);
            assert_eq!(s.code(), code, "{}", e.reason());
            assert_eq!(reason_of(&s).as_deref(), Some(e.reason()));
        }
        let db = policy_status(&PolicyError::Database(sqlx::Error::PoolTimedOut));
        assert!(
            !db.message().contains("pool"),
            "database internals stay in the log: {}",
            db.message()
        );
        let locked = policy_status(&PolicyError::AccountLocked { until: "T".into() });
        assert_eq!(
            locked
                .get_error_details()
                .error_info()
                .and_then(|i| i.metadata.get("until").cloned()),
            Some("T".into())
        );
        assert_eq!(code_for_reason("SOMETHING_NEW"), Code::Internal);
    }

    #[test]
    fn a_refused_statistics_request_is_a_refusal_never_a_server_fault() {
        // Every code the platform's rules, the catalogue and the committee's rules give (a new one must be added
        // to `code_for_reason`, or clients would read a refusal as the service failing).
        for code in [
            "TABLE_NOT_IN_STORE",
            "SUBJECT_FIXED",
            "COLUMN_NOT_GROUPABLE",
            "SMALL_CELL_BELOW_FLOOR",
            "HIERARCHY_NOT_IN_CATALOGUE",
            "KEYS_NOT_DECLARABLE",
            "KEY_NOT_IN_CATALOGUE",
            "PUBLIC_KEYS_TOO_MANY",
            "SMALL_CELL_NOT_APPROVED",
            "SMALL_CELL_BELOW_APPROVAL",
            "GROUPING_NOT_APPROVED",
        ] {
            assert_eq!(code_for_reason(code), Code::PermissionDenied, "{code}");
        }
        for code in ["BUDGET_EXCEEDED", "PLATFORM_CEILING_EXCEEDED"] {
            assert_eq!(code_for_reason(code), Code::ResourceExhausted, "{code}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let mut m = MetadataMap::new();
        let err = bearer_token(&m).err().map(|s| (s.code(), reason_of(&s)));
        assert_eq!(err, Some((Code::Unauthenticated, Some(SESSION_INVALID.to_owned()))));
        for (value, expected) in [
            ("Bearer tks1.abc", Some("tks1.abc")),
            ("bearer  tks1.abc ", Some("tks1.abc")),
            ("Basic dXNlcjpwdw==", None),
            ("Bearer ", None),
            ("tks1.abc", None),
        ] {
            m.insert("authorization", value.parse().unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(bearer_token(&m).ok(), expected, "{value:?}");
        }
    }
}
