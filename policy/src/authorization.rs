//! Who may do what: the one authorisation decision of tokumei.
//!
//! Every service (the policy service, the CLI, the release service, the gateway) asks [`authorize`] before it
//! acts, with the authenticated [`Actor`], the [`Action`] and the [`Resource`] concerned. Keeping the rules
//! in one pure function means they can be read in one place, tested exhaustively (every role × every action,
//! see the tests) and cannot drift between front-ends.
//!
//! Beyond the role table, the function enforces the relations that make the committee process meaningful:
//! a researcher acts only on their own applications and downloads only as a named recipient; a committee
//! member votes only where the chair assigned them and never on an application of their own organisation
//! (conflict of interest); a hospital acts only for its own institution code; and every human role needs
//! a session that passed the second factor.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A role a user holds. A user may hold several (a chair is usually also a member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A hospital's service identity, bound to its client certificate: pushes records and opt-outs.
    Hospital,
    /// A researcher: files applications and receives approved data.
    Researcher,
    /// A member of the data-access committee (審査委員会): reviews and votes.
    CommitteeMember,
    /// The committee's chair: assigns reviewers, closes reviews, revokes approvals, records violations.
    CommitteeChair,
    /// Platform operator: builds releases, runs the core, publishes registers. Cannot vote or decide, and
    /// cannot manage accounts (an operator who could grant roles could make themselves chair).
    Operator,
    /// Inspector: reads everything, verifies and exports the audit ledger, changes nothing.
    Auditor,
    /// Account administrator: invites people, registers hospitals, changes roles — and nothing else. Never held
    /// with the operator's or the committee's roles; committee, operator and administrator roles are granted
    /// only when a second administrator approves (four eyes).
    Administrator,
    /// Output checker of the analysis environment: reads a workspace's output requests with the automatic checks'
    /// findings, and approves, asks for changes or refuses — never for their own organisation's researchers.
    OutputChecker,
}

impl Role {
    /// Every role, in a fixed order (for tables and tests).
    pub const ALL: [Role; 8] = [
        Role::Hospital,
        Role::Researcher,
        Role::CommitteeMember,
        Role::CommitteeChair,
        Role::Operator,
        Role::Auditor,
        Role::Administrator,
        Role::OutputChecker,
    ];

    /// Roles granted only with a second administrator's approval: they decide, operate, grant or inspect.
    pub const FOUR_EYES: [Role; 6] = [
        Role::CommitteeMember,
        Role::CommitteeChair,
        Role::Operator,
        Role::Administrator,
        Role::Auditor,
        Role::OutputChecker,
    ];

    /// Roles an administrator may not also hold (separation of duties).
    pub const NOT_WITH_ADMINISTRATOR: [Role; 5] = [
        Role::CommitteeMember,
        Role::CommitteeChair,
        Role::Operator,
        Role::Auditor,
        Role::OutputChecker,
    ];

    /// The role's stable name (database, CLI, tokens).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hospital => "hospital",
            Role::Researcher => "researcher",
            Role::CommitteeMember => "committee_member",
            Role::CommitteeChair => "committee_chair",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Administrator => "administrator",
            Role::OutputChecker => "output_checker",
        }
    }

    /// Whether a person holds this role (and so must log in with a password and a second factor), as
    /// opposed to a service identity authenticated by its certificate.
    pub fn is_human(self) -> bool {
        self != Role::Hospital
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
            format!("unknown role {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// How the actor proved who they are: human roles need a second factor, service roles a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Password and a TOTP code.
    PasswordTotp,
    /// Password and a single-use recovery code (second factor too, counted separately in the audit).
    PasswordRecoveryCode,
    /// A client certificate verified by mutual TLS (service identities).
    Certificate,
}

impl AuthMethod {
    fn is_two_factor(self) -> bool {
        matches!(self, AuthMethod::PasswordTotp | AuthMethod::PasswordRecoveryCode)
    }
}

/// The authenticated party of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Username (people) or service name (hospitals: their 10-digit institution code).
    pub username: String,
    /// The organisation the actor belongs to.
    pub organisation: String,
    /// The roles held.
    pub roles: BTreeSet<Role>,
    /// How the actor authenticated.
    pub auth: AuthMethod,
}

impl Actor {
    /// Whether the actor holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Everything that can be asked of tokumei. Adding a variant forces a decision in [`allowed_for_role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Push records for an institution (gateway).
    SubmitRecords,
    /// Send opt-out and erasure requests for an institution (gateway).
    SubmitOptOut,
    /// Create organisations and users, change roles, disable accounts.
    ManageUsers,
    /// List users and organisations.
    ViewUsers,
    /// File a new application (提供申出).
    FileApplication,
    /// Read an application, its review and decision.
    ViewApplication,
    /// File a change request (変更申出) or withdraw one's own application.
    AmendApplication,
    /// Assign committee members to an application's review.
    AssignReviewers,
    /// Vote (with a comment) on an application one reviews.
    CastVote,
    /// Declare a conflict of interest and step out of a review.
    Recuse,
    /// Close a review: the quorum rule decides approval or refusal.
    DecideApplication,
    /// Withdraw an approval (pending downloads become invalid).
    RevokeApproval,
    /// Record a violation, which bans the person or organisation.
    RecordViolation,
    /// Read the violations register and its bans: the chair who records them, operators who enforce them,
    /// auditors who inspect them.
    ViewViolations,
    /// Export the ban list for other processors.
    ExportBans,
    /// Import another processor's ban list.
    ImportBans,
    /// See the fee estimate of an application.
    EstimateFees,
    /// Create or change a project's differential-privacy budget outside an approval.
    SetBudget,
    /// Set the platform's ceiling on all approvals' privacy loss in a period.
    SetPlatformCeiling,
    /// Run differentially private or small-cell statistics against a project's budget.
    RunStatistics,
    /// Build a release from an approval (release zone).
    BuildRelease,
    /// Download a release one is a recipient of.
    DownloadRelease,
    /// Trace a leaked file back to a recipient.
    TraceLeak,
    /// Measure the re-identification attack on a built release (aggregate figures only).
    AssessReleaseRisk,
    /// Preview, before a build, what an approval's (k, m) would generalise and suppress.
    PlanRelease,
    /// Declare that released data was deleted at the end of the period of use.
    DeclareDeletion,
    /// Run SQL on the core store (operators; audited).
    RunOperatorSql,
    /// Rotate or use keys, apply erasures, compact the store.
    OperateCore,
    /// Write the public registers (decisions, provisions).
    PublishRegister,
    /// Write the periodic report to the regulator.
    ReportRegulator,
    /// Read the audit ledger.
    ViewAudit,
    /// Verify the audit ledger's chain and signatures.
    VerifyAudit,
    /// Export an inspection bundle of the audit ledger.
    ExportAudit,
    /// Query, analyse and upload in the analysis workspace of an `on_platform` approval one is a recipient of, and
    /// ask for an output's release.
    UseWorkspace,
    /// Decide a workspace's output request (approve, ask for changes, refuse).
    CheckOutput,
    /// Register a researcher as a certified user (認定利活用者), who alone may work on pseudonymised data.
    CertifyUser,
    /// Read the analysis environment's usage reports and monitoring alerts.
    ViewAnalysisUsage,
}

impl Action {
    /// Every action, in a fixed order (for the authorisation matrix).
    pub const ALL: [Action; 37] = [
        Action::SubmitRecords,
        Action::SubmitOptOut,
        Action::ManageUsers,
        Action::ViewUsers,
        Action::FileApplication,
        Action::ViewApplication,
        Action::AmendApplication,
        Action::AssignReviewers,
        Action::CastVote,
        Action::Recuse,
        Action::DecideApplication,
        Action::RevokeApproval,
        Action::RecordViolation,
        Action::ViewViolations,
        Action::ExportBans,
        Action::ImportBans,
        Action::EstimateFees,
        Action::SetBudget,
        Action::SetPlatformCeiling,
        Action::RunStatistics,
        Action::BuildRelease,
        Action::DownloadRelease,
        Action::TraceLeak,
        Action::AssessReleaseRisk,
        Action::PlanRelease,
        Action::DeclareDeletion,
        Action::RunOperatorSql,
        Action::OperateCore,
        Action::PublishRegister,
        Action::ReportRegulator,
        Action::ViewAudit,
        Action::VerifyAudit,
        Action::ExportAudit,
        Action::UseWorkspace,
        Action::CheckOutput,
        Action::CertifyUser,
        Action::ViewAnalysisUsage,
    ];

    /// Stable name, as written in the audit ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SubmitRecords => "submit_records",
            Action::SubmitOptOut => "submit_opt_out",
            Action::ManageUsers => "manage_users",
            Action::ViewUsers => "view_users",
            Action::FileApplication => "file_application",
            Action::ViewApplication => "view_application",
            Action::AmendApplication => "amend_application",
            Action::AssignReviewers => "assign_reviewers",
            Action::CastVote => "cast_vote",
            Action::Recuse => "recuse",
            Action::DecideApplication => "decide_application",
            Action::RevokeApproval => "revoke_approval",
            Action::RecordViolation => "record_violation",
            Action::ViewViolations => "view_violations",
            Action::ExportBans => "export_bans",
            Action::ImportBans => "import_bans",
            Action::EstimateFees => "estimate_fees",
            Action::SetBudget => "set_budget",
            Action::SetPlatformCeiling => "set_platform_ceiling",
            Action::RunStatistics => "run_statistics",
            Action::BuildRelease => "build_release",
            Action::DownloadRelease => "download_release",
            Action::TraceLeak => "trace_leak",
            Action::AssessReleaseRisk => "assess_release_risk",
            Action::PlanRelease => "plan_release",
            Action::DeclareDeletion => "declare_deletion",
            Action::RunOperatorSql => "run_operator_sql",
            Action::OperateCore => "operate_core",
            Action::PublishRegister => "publish_register",
            Action::ReportRegulator => "report_regulator",
            Action::ViewAudit => "view_audit",
            Action::VerifyAudit => "verify_audit",
            Action::ExportAudit => "export_audit",
            Action::UseWorkspace => "use_workspace",
            Action::CheckOutput => "check_output",
            Action::CertifyUser => "certify_user",
            Action::ViewAnalysisUsage => "view_analysis_usage",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts about an application that authorisation depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplicationFacts {
    /// The application's identifier (for messages).
    pub id: String,
    /// Username of the researcher who filed it.
    pub applicant: String,
    /// The applicant's organisation.
    pub organisation: String,
    /// Committee members the chair assigned.
    pub reviewers: BTreeSet<String>,
    /// Members who declared a conflict of interest.
    pub recused: BTreeSet<String>,
    /// Persons the approval names as recipients (empty until approved).
    pub recipients: BTreeSet<String>,
}

/// What an action is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The platform as a whole (user management, registers, the audit ledger, the core).
    Platform,
    /// An institution, by its 10-digit code (records and opt-outs).
    Institution(String),
    /// An application, with the facts that decide ownership, assignment and recipients.
    Application(ApplicationFacts),
    /// A person's account, by username: whose roles or status user management changes (nobody changes
    /// their own: an operator who could grant themselves the chair's role would decide applications).
    Person(String),
    /// A pending grant of a four-eyes role: approved only by an administrator who neither asked for it nor
    /// receives it.
    Grant {
        /// Who would receive the roles.
        username: String,
        /// The administrator who asked for the grant.
        requested_by: String,
    },
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Platform => f.write_str("platform"),
            Resource::Institution(code) => write!(f, "institution {code}"),
            Resource::Application(a) => write!(f, "application {}", a.id),
            Resource::Person(username) => write!(f, "user {username}"),
            Resource::Grant { username, .. } => write!(f, "grant for user {username}"),
        }
    }
}

/// Why an action was refused; each has a stable code for clients and the audit ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DenialReason {
    /// None of the actor's roles permits the action.
    RoleNotPermitted,
    /// A human role acted without a two-factor session (or a service identity without its certificate).
    StrongAuthenticationRequired,
    /// The application belongs to someone else.
    NotApplicant,
    /// The member was not assigned to this review, or recused from it.
    NotAssignedReviewer,
    /// The member (or their organisation) filed the application: a conflict of interest.
    ConflictOfInterest,
    /// The actor is not a recipient named by the approval.
    NotRecipient,
    /// A hospital acted for another institution.
    OtherInstitution,
    /// Someone tried to change their own account's roles or status.
    OwnAccount,
    /// An administrator tried to approve a grant they asked for themselves: a second one must.
    FourEyes,
    /// The action needs a different kind of resource (a programming error in the caller).
    WrongResource,
}

impl DenialReason {
    /// Every reason (for the mapping to transport status codes and its test).
    pub const ALL: [DenialReason; 10] = [
        DenialReason::RoleNotPermitted,
        DenialReason::StrongAuthenticationRequired,
        DenialReason::NotApplicant,
        DenialReason::NotAssignedReviewer,
        DenialReason::ConflictOfInterest,
        DenialReason::NotRecipient,
        DenialReason::OtherInstitution,
        DenialReason::OwnAccount,
        DenialReason::FourEyes,
        DenialReason::WrongResource,
    ];

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            DenialReason::RoleNotPermitted => "ROLE_NOT_PERMITTED",
            DenialReason::StrongAuthenticationRequired => "STRONG_AUTHENTICATION_REQUIRED",
            DenialReason::NotApplicant => "NOT_APPLICANT",
            DenialReason::NotAssignedReviewer => "NOT_ASSIGNED_REVIEWER",
            DenialReason::ConflictOfInterest => "CONFLICT_OF_INTEREST",
            DenialReason::NotRecipient => "NOT_RECIPIENT",
            DenialReason::OtherInstitution => "OTHER_INSTITUTION",
            DenialReason::OwnAccount => "OWN_ACCOUNT",
            DenialReason::FourEyes => "FOUR_EYES",
            DenialReason::WrongResource => "WRONG_RESOURCE",
        }
    }
}

/// A refusal: who, what, on what, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{actor} may not {action} on {resource}: {}", reason.code())]
pub struct Denied {
    /// The actor's username.
    pub actor: String,
    /// The refused action.
    pub action: Action,
    /// The resource, as text.
    pub resource: String,
    /// Why.
    pub reason: DenialReason,
}

/// The role table: whether holding `role` can ever permit `action` (relations with the resource are
/// checked afterwards). Exhaustive matches: a new role or action cannot compile without a decision here.
pub fn allowed_for_role(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::Hospital => matches!(action, SubmitRecords | SubmitOptOut),
        Role::Researcher => matches!(
            action,
            FileApplication
                | ViewApplication
                | AmendApplication
                | EstimateFees
                | RunStatistics
                | DownloadRelease
                | DeclareDeletion
                | UseWorkspace
        ),
        Role::CommitteeMember => matches!(action, ViewApplication | CastVote | Recuse | EstimateFees | PlanRelease),
        Role::CommitteeChair => matches!(
            action,
            ViewApplication
                | AssignReviewers
                | CastVote
                | Recuse
                | DecideApplication
                | RevokeApproval
                | RecordViolation
                | ViewViolations
                | EstimateFees
                | SetBudget
                | AssessReleaseRisk
                | PlanRelease
                | CertifyUser
        ),
        Role::Administrator => matches!(action, ManageUsers | ViewUsers),
        Role::Operator => matches!(
            action,
            ViewUsers
                | ViewApplication
                | ViewViolations
                | ExportBans
                | ImportBans
                | EstimateFees
                | BuildRelease
                | TraceLeak
                | AssessReleaseRisk
                | PlanRelease
                | RunOperatorSql
                | OperateCore
                | PublishRegister
                | ReportRegulator
                | VerifyAudit
                | SetPlatformCeiling
                | ViewAnalysisUsage
        ),
        Role::Auditor => matches!(
            action,
            ViewUsers
                | ViewApplication
                | ViewViolations
                | ExportBans
                | EstimateFees
                | ReportRegulator
                | ViewAudit
                | VerifyAudit
                | ExportAudit
                | AssessReleaseRisk
                | ViewAnalysisUsage
        ),
        Role::OutputChecker => matches!(action, CheckOutput),
    }
}

/// The role part of [`authorize`]: some role the actor holds may ever ask `action`, with the authentication that
/// role needs. For front-ends that must refuse a caller before they look anything up, so that a refused role
/// learns nothing about what exists (a release, an application); [`authorize`] still decides the relation with
/// the resource afterwards. Necessary for [`authorize`], never sufficient (tested over every role set).
pub fn authorize_role(actor: &Actor, action: Action) -> Result<(), Denied> {
    let mut reason = DenialReason::RoleNotPermitted;
    for &role in &actor.roles {
        if !allowed_for_role(role, action) {
            continue;
        }
        let strong = strong_enough(actor, role);
        if strong {
            return Ok(());
        }
        reason = DenialReason::StrongAuthenticationRequired;
    }
    Err(Denied {
        actor: actor.username.clone(),
        action,
        resource: "any resource".to_owned(),
        reason,
    })
}

/// Whether the actor authenticated as `role` requires: people with a second factor, services with a certificate.
fn strong_enough(actor: &Actor, role: Role) -> bool {
    if role.is_human() {
        actor.auth.is_two_factor()
    } else {
        actor.auth == AuthMethod::Certificate
    }
}

/// Decides whether `actor` may perform `action` on `resource`.
///
/// Permitted when at least one of the actor's roles permits the action in the role table, that role's
/// authentication requirement is met, and the relation the role needs with the resource holds. The most
/// specific refusal is reported (e.g. `NOT_ASSIGNED_REVIEWER` rather than `ROLE_NOT_PERMITTED` for a
/// member voting on another review).
pub fn authorize(actor: &Actor, action: Action, resource: &Resource) -> Result<(), Denied> {
    let mut reason = DenialReason::RoleNotPermitted;
    for &role in &actor.roles {
        if !allowed_for_role(role, action) {
            continue;
        }
        let strong = strong_enough(actor, role);
        if !strong {
            reason = DenialReason::StrongAuthenticationRequired;
            continue;
        }
        match relation(actor, role, action, resource) {
            Ok(()) => return Ok(()),
            Err(r) => reason = r,
        }
    }
    Err(Denied {
        actor: actor.username.clone(),
        action,
        resource: resource.to_string(),
        reason,
    })
}

/// The relation `role` needs with `resource` for `action`.
fn relation(actor: &Actor, role: Role, action: Action, resource: &Resource) -> Result<(), DenialReason> {
    use Action::*;
    match (role, action, resource) {
        (Role::Hospital, SubmitRecords | SubmitOptOut, Resource::Institution(code)) => {
            if *code == actor.username {
                Ok(())
            } else {
                Err(DenialReason::OtherInstitution)
            }
        }
        (Role::Hospital, _, _) => Err(DenialReason::WrongResource),

        (Role::Researcher, FileApplication, Resource::Platform) => Ok(()),
        (Role::Researcher, ViewApplication | AmendApplication | EstimateFees, Resource::Application(a)) => {
            if a.applicant == actor.username || a.recipients.contains(&actor.username) && action == ViewApplication {
                Ok(())
            } else {
                Err(DenialReason::NotApplicant)
            }
        }
        (
            Role::Researcher,
            RunStatistics | DownloadRelease | DeclareDeletion | UseWorkspace,
            Resource::Application(a),
        ) => {
            if a.recipients.contains(&actor.username) {
                Ok(())
            } else {
                Err(DenialReason::NotRecipient)
            }
        }
        (Role::Researcher, _, _) => Err(DenialReason::WrongResource),

        // A member votes on, and previews the data of, only a review they sit on, and not their own
        // organisation's.
        (Role::CommitteeMember | Role::CommitteeChair, CastVote, Resource::Application(a))
        | (Role::CommitteeMember, PlanRelease, Resource::Application(a)) => {
            free_of_conflict(actor, a)?;
            if !a.reviewers.contains(&actor.username) || a.recused.contains(&actor.username) {
                Err(DenialReason::NotAssignedReviewer)
            } else {
                Ok(())
            }
        }
        (Role::CommitteeMember | Role::CommitteeChair, Recuse, Resource::Application(a)) => {
            if a.reviewers.contains(&actor.username) {
                Ok(())
            } else {
                Err(DenialReason::NotAssignedReviewer)
            }
        }
        // A chair does not rule on, or review the data of, their own organisation's application: a deputy
        // chair must.
        (
            Role::CommitteeChair,
            DecideApplication | AssignReviewers | RevokeApproval | PlanRelease | AssessReleaseRisk,
            Resource::Application(a),
        ) => free_of_conflict(actor, a),
        (_, ViewApplication | EstimateFees, Resource::Application(_)) => Ok(()),
        (Role::CommitteeChair, RecordViolation | SetBudget, Resource::Platform | Resource::Application(_)) => Ok(()),
        (Role::CommitteeChair | Role::Operator | Role::Auditor, ViewViolations, Resource::Platform) => Ok(()),
        (Role::Operator, BuildRelease | TraceLeak | PlanRelease, Resource::Application(_)) => Ok(()),
        (Role::Operator | Role::Auditor, AssessReleaseRisk, Resource::Application(_)) => Ok(()),
        // An output checker never judges their own organisation's project, nor one whose data they receive.
        (Role::OutputChecker, CheckOutput, Resource::Application(a)) => {
            free_of_conflict(actor, a)?;
            if a.recipients.contains(&actor.username) {
                Err(DenialReason::ConflictOfInterest)
            } else {
                Ok(())
            }
        }
        (Role::CommitteeChair, CertifyUser, Resource::Platform) => Ok(()),
        (Role::Operator | Role::Auditor, ViewAnalysisUsage, Resource::Platform) => Ok(()),
        (Role::Administrator, ManageUsers, Resource::Person(p)) => {
            if *p == actor.username {
                Err(DenialReason::OwnAccount)
            } else {
                Ok(())
            }
        }
        (Role::Administrator, ManageUsers, Resource::Grant { username, requested_by }) => {
            if *username == actor.username {
                Err(DenialReason::OwnAccount)
            } else if *requested_by == actor.username {
                Err(DenialReason::FourEyes)
            } else {
                Ok(())
            }
        }
        (Role::Administrator, ManageUsers | ViewUsers, Resource::Platform) => Ok(()),
        (
            Role::Operator | Role::Auditor,
            ViewUsers | ExportBans | ImportBans | RunOperatorSql | OperateCore | PublishRegister | ReportRegulator
            | ViewAudit | VerifyAudit | ExportAudit | SetPlatformCeiling,
            Resource::Platform,
        ) => Ok(()),
        _ => Err(DenialReason::WrongResource),
    }
}

/// A conflict of interest: the actor filed the application, or belongs to the organisation that did.
fn free_of_conflict(actor: &Actor, a: &ApplicationFacts) -> Result<(), DenialReason> {
    if a.applicant == actor.username || a.organisation == actor.organisation {
        Err(DenialReason::ConflictOfInterest)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
