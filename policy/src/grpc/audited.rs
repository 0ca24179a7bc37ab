//! Every call of the policy service leaves an entry in the audit ledger — successes, refusals, failures, and calls
//! without a valid session — as `rpc.<Method>` with the caller (or `anonymous`), the origin, the outcome and the
//! refusal's reason code. Domain entries (`user.add`, `application.file`, denials of `authorize`) stay as they are;
//! this is the access record an inspector reads to see who asked for what, reads included. If the entry cannot be
//! written, the answer is withheld (`UNAVAILABLE`): no access goes unrecorded.

use tonic::{Code, Request, Status};

use tokumei_proto::policy::v1::policy_service_server::{PolicyService, PolicyServiceServer};

use super::{PolicyGrpc, Reply, bearer_token, origin_of, pb};
use crate::audit_ledger::{AuditEvent, Outcome};
use crate::error::PolicyError;
use crate::service::Policy;

/// [`PolicyGrpc`] with every call recorded.
#[derive(Debug, Clone)]
pub struct AuditedPolicyGrpc {
    inner: PolicyGrpc,
}

impl AuditedPolicyGrpc {
    /// Wraps the service.
    pub fn new(inner: PolicyGrpc) -> AuditedPolicyGrpc {
        AuditedPolicyGrpc { inner }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> PolicyServiceServer<AuditedPolicyGrpc> {
        PolicyServiceServer::new(self)
    }

    async fn caller<T>(&self, request: &Request<T>) -> (String, String) {
        caller(&self.inner.policy, request).await
    }

    async fn record<T>(&self, method: &str, origin: &str, caller: &str, result: Reply<T>) -> Reply<T> {
        record_call(&self.inner.policy, "policy service", method, origin, caller, result).await
    }
}

/// Who is calling, as far as the session says (`anonymous` without a valid one), and from where. Reading the
/// session changes nothing (no entry, no counter), so asking twice per call is harmless.
pub async fn caller<T>(policy: &Policy, request: &Request<T>) -> (String, String) {
    let origin = origin_of(request);
    let who = match bearer_token(request.metadata()) {
        Ok(token) => match policy.authenticate(token).await {
            Ok(actor) => actor.username,
            Err(_) => "anonymous".to_owned(),
        },
        Err(_) => "anonymous".to_owned(),
    };
    (origin, who)
}

/// Appends `rpc.<method>` for a call of `service` with its outcome; withholds the answer if that fails. Shared by
/// the zones' gRPC services (policy, release).
pub async fn record_call<T>(
    policy: &Policy,
    service: &str,
    method: &str,
    origin: &str,
    caller: &str,
    result: Result<T, Status>,
) -> Result<T, Status> {
    let (outcome, reason) = match &result {
        Ok(_) => (Outcome::Ok, None),
        Err(status) => (outcome_of(status.code()), Some(reason_of(status))),
    };
    let mut event = AuditEvent::new(caller, format!("rpc.{method}"), service, outcome).source(origin);
    if let Some(reason) = reason {
        event = event.reason(&reason);
    }
    match policy.audit(event).await {
        Ok(_) => result,
        Err(e) => {
            // The database's own message (a lock, a full disk) names no value of a request: it says why.
            let cause = match &e {
                PolicyError::Database(db) => db.to_string(),
                _ => String::new(),
            };
            tracing::error!(
                method,
                reason = e.reason(),
                cause,
                "an access could not be recorded; answer withheld"
            );
            Err(Status::unavailable("the audit ledger is unavailable; try again later"))
        }
    }
}

/// A refusal is `denied`; a server fault `failed`.
fn outcome_of(code: Code) -> Outcome {
    match code {
        Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss => Outcome::Failed,
        _ => Outcome::Denied,
    }
}

/// The status's stable reason code (its `ErrorInfo`), or the gRPC code's name.
pub fn reason_of(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_else(|| format!("{:?}", status.code()).to_uppercase())
}

#[tonic::async_trait]
impl PolicyService for AuditedPolicyGrpc {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.login(request).await;
        self.record("Login", &origin, &caller, result).await
    }
    async fn logout(&self, request: Request<pb::Empty>) -> Reply<pb::Empty> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.logout(request).await;
        self.record("Logout", &origin, &caller, result).await
    }
    async fn who_am_i(&self, request: Request<pb::Empty>) -> Reply<pb::Actor> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.who_am_i(request).await;
        self.record("WhoAmI", &origin, &caller, result).await
    }
    async fn enrol(&self, request: Request<pb::EnrolRequest>) -> Reply<pb::EnrolResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.enrol(request).await;
        self.record("Enrol", &origin, &caller, result).await
    }
    async fn confirm_totp(&self, request: Request<pb::ConfirmTotpRequest>) -> Reply<pb::ConfirmTotpResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.confirm_totp(request).await;
        self.record("ConfirmTotp", &origin, &caller, result).await
    }
    async fn add_organisation(&self, request: Request<pb::AddOrganisationRequest>) -> Reply<pb::Organisation> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.add_organisation(request).await;
        self.record("AddOrganisation", &origin, &caller, result).await
    }
    async fn add_user(&self, request: Request<pb::AddUserRequest>) -> Reply<pb::AddUserResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.add_user(request).await;
        self.record("AddUser", &origin, &caller, result).await
    }
    async fn approve_grant(&self, request: Request<pb::ApproveGrantRequest>) -> Reply<pb::AddUserResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.approve_grant(request).await;
        self.record("ApproveGrant", &origin, &caller, result).await
    }
    async fn list_users(&self, request: Request<pb::Empty>) -> Reply<pb::ListUsersResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.list_users(request).await;
        self.record("ListUsers", &origin, &caller, result).await
    }
    async fn file_application(&self, request: Request<pb::FileApplicationRequest>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.file_application(request).await;
        self.record("FileApplication", &origin, &caller, result).await
    }
    async fn get_application(&self, request: Request<pb::ApplicationRef>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.get_application(request).await;
        self.record("GetApplication", &origin, &caller, result).await
    }
    async fn list_applications(&self, request: Request<pb::Empty>) -> Reply<pb::ListApplicationsResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.list_applications(request).await;
        self.record("ListApplications", &origin, &caller, result).await
    }
    async fn withdraw_application(&self, request: Request<pb::ApplicationRef>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.withdraw_application(request).await;
        self.record("WithdrawApplication", &origin, &caller, result).await
    }
    async fn estimate_fees(&self, request: Request<pb::ApplicationRef>) -> Reply<pb::FeeEstimate> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.estimate_fees(request).await;
        self.record("EstimateFees", &origin, &caller, result).await
    }
    async fn assign_reviewers(&self, request: Request<pb::AssignReviewersRequest>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.assign_reviewers(request).await;
        self.record("AssignReviewers", &origin, &caller, result).await
    }
    async fn recuse(&self, request: Request<pb::RecuseRequest>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.recuse(request).await;
        self.record("Recuse", &origin, &caller, result).await
    }
    async fn cast_vote(&self, request: Request<pb::CastVoteRequest>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.cast_vote(request).await;
        self.record("CastVote", &origin, &caller, result).await
    }
    async fn decide(&self, request: Request<pb::DecideRequest>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.decide(request).await;
        self.record("Decide", &origin, &caller, result).await
    }
    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.revoke(request).await;
        self.record("Revoke", &origin, &caller, result).await
    }
    async fn admit_use(&self, request: Request<pb::AdmitUseRequest>) -> Reply<pb::Application> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.admit_use(request).await;
        self.record("AdmitUse", &origin, &caller, result).await
    }
    async fn record_violation(&self, request: Request<pb::RecordViolationRequest>) -> Reply<pb::Violation> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.record_violation(request).await;
        self.record("RecordViolation", &origin, &caller, result).await
    }
    async fn list_violations(&self, request: Request<pb::Empty>) -> Reply<pb::ListViolationsResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.list_violations(request).await;
        self.record("ListViolations", &origin, &caller, result).await
    }
    async fn list_grants(&self, request: Request<pb::Empty>) -> Reply<pb::ListGrantsResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.list_grants(request).await;
        self.record("ListGrants", &origin, &caller, result).await
    }
    async fn set_roles(&self, request: Request<pb::SetRolesRequest>) -> Reply<pb::AddUserResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.set_roles(request).await;
        self.record("SetRoles", &origin, &caller, result).await
    }
    async fn disable_user(&self, request: Request<pb::UserRef>) -> Reply<pb::AddUserResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.disable_user(request).await;
        self.record("DisableUser", &origin, &caller, result).await
    }
    async fn add_hospital(&self, request: Request<pb::AddHospitalRequest>) -> Reply<pb::User> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.add_hospital(request).await;
        self.record("AddHospital", &origin, &caller, result).await
    }
    async fn publish_hospital_directory(&self, request: Request<pb::Empty>) -> Reply<pb::HospitalDirectory> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.publish_hospital_directory(request).await;
        self.record("PublishHospitalDirectory", &origin, &caller, result).await
    }
    async fn export_audit(&self, request: Request<pb::AuditWindow>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.export_audit(request).await;
        self.record("ExportAudit", &origin, &caller, result).await
    }
    async fn publish_register(&self, request: Request<pb::RegisterRef>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.publish_register(request).await;
        self.record("PublishRegister", &origin, &caller, result).await
    }
    async fn show_budget(&self, request: Request<pb::BudgetQuery>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.show_budget(request).await;
        self.record("ShowBudget", &origin, &caller, result).await
    }
    async fn set_budget(&self, request: Request<pb::SetBudgetRequest>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.set_budget(request).await;
        self.record("SetBudget", &origin, &caller, result).await
    }
    async fn set_platform_ceiling(&self, request: Request<pb::CeilingRequest>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.set_platform_ceiling(request).await;
        self.record("SetPlatformCeiling", &origin, &caller, result).await
    }
    async fn platform_budget(&self, request: Request<pb::PeriodRef>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.platform_budget(request).await;
        self.record("PlatformBudget", &origin, &caller, result).await
    }
    async fn regulator_report(&self, request: Request<pb::PeriodRef>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.regulator_report(request).await;
        self.record("RegulatorReport", &origin, &caller, result).await
    }
    async fn admit_file_statistics(&self, request: Request<pb::StatisticsOperation>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.admit_file_statistics(request).await;
        self.record("AdmitFileStatistics", &origin, &caller, result).await
    }
    async fn record_file_statistics(&self, request: Request<pb::FileStatisticsRecord>) -> Reply<pb::JsonDocument> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.record_file_statistics(request).await;
        self.record("RecordFileStatistics", &origin, &caller, result).await
    }
    async fn export_bans(&self, request: Request<pb::Empty>) -> Reply<pb::BanListJson> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.export_bans(request).await;
        self.record("ExportBans", &origin, &caller, result).await
    }
    async fn import_bans(&self, request: Request<pb::ImportBansRequest>) -> Reply<pb::ImportBansResponse> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.import_bans(request).await;
        self.record("ImportBans", &origin, &caller, result).await
    }
    async fn verify_audit(&self, request: Request<pb::Empty>) -> Reply<pb::AuditVerification> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.verify_audit(request).await;
        self.record("VerifyAudit", &origin, &caller, result).await
    }
    async fn request_core_operation(&self, request: Request<pb::CoreOperationRequest>) -> Reply<pb::CoreOrderStatus> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.request_core_operation(request).await;
        self.record("RequestCoreOperation", &origin, &caller, result).await
    }
    async fn get_core_order(&self, request: Request<pb::CoreOrderRef>) -> Reply<pb::CoreOrderStatus> {
        let (origin, caller) = self.caller(&request).await;
        let result = self.inner.get_core_order(request).await;
        self.record("GetCoreOrder", &origin, &caller, result).await
    }
}
