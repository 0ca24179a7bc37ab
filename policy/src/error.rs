//! Error type of the policy zone.
//!
//! Every refusal a caller can act on (unknown project, budget exceeded, budget below what is spent,
//! malformed input) is its own variant with a stable [`PolicyError::reason`], so the CLI and the gRPC
//! services report the same machine-readable code and the same human message.

use tokumei_deid::dp::accounting::{Budget, Exceeded, Spent};

/// Result alias of the crate.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;

/// All errors of the policy zone.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The database failed (connection, constraint, I/O). Not the caller's fault; retrying may help.
    #[error("policy database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date (e.g. the database was migrated by a newer version,
    /// or an applied migration was edited). The service must not run against an unknown schema.
    #[error("policy database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No budget was ever set for this project: nothing may be spent on it until the committee sets one.
    #[error("unknown project {0:?}: no privacy budget has been set for it")]
    UnknownProject(String),
    /// The request does not fit in the project's remaining budget; nothing was spent. The message
    /// states the remaining budget so the researcher can shrink the request. Boxed: `Exceeded` is
    /// large and would bloat every `Result`.
    #[error("{0}")]
    BudgetExceeded(Box<Exceeded>),
    /// The request fits its project's budget but not the platform's ceiling for the period (all approvals
    /// together); nothing was spent.
    #[error("platform ceiling for {period}: {exceeded}")]
    PlatformCeilingExceeded {
        /// The period (`YYYY-Qn`).
        period: String,
        /// The ceiling, what all approvals spent in the period, and the total with the request.
        exceeded: Box<Exceeded>,
    },
    /// A budget change would put the project below what it has already spent; the old budget stays.
    #[error(
        "budget ε={} δ={:e} for project {project:?} is below what is already spent (ε={}, δ={:e}); \
         a budget can be lowered only down to the amount spent",
        budget.epsilon,
        budget.delta,
        spent.epsilon,
        spent.delta
    )]
    BudgetBelowSpent {
        /// The project.
        project: String,
        /// The refused budget.
        budget: Budget,
        /// What the project has spent, expressed against the refused budget.
        spent: Box<Spent>,
    },
    /// Malformed input (empty project name, negative reported ε, unsupported URL...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The authorisation function refused the action (the reason code says why).
    #[error("{0}")]
    Denied(#[from] crate::authorization::Denied),
    /// Login failed. Deliberately the same message whether the user, the password or the code was wrong,
    /// so that a guesser learns nothing.
    #[error("authentication failed: unknown user, wrong password or wrong code")]
    AuthenticationFailed,
    /// Too many consecutive failures: the account refuses logins until the back-off has passed.
    #[error("account locked after repeated failed logins; try again after {until}")]
    AccountLocked {
        /// When logins are accepted again (RFC 3339, UTC).
        until: String,
    },
    /// The session token is malformed, forged, expired, revoked, or its user was disabled.
    #[error("session rejected: {0}; log in again")]
    SessionInvalid(String),
    /// Something named does not exist (user, organisation, application...).
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What kind of thing.
        kind: &'static str,
        /// Its identifier.
        id: String,
    },
    /// Something with that identifier exists already.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists {
        /// What kind of thing.
        kind: &'static str,
        /// Its identifier.
        id: String,
    },
    /// The request does not fit the current state (voting on a decided application, enrolling twice...).
    #[error("{0}")]
    InvalidState(String),
    /// The person or organisation is banned after a violation: no new applications, no releases.
    #[error("{subject} is banned until {until} after violation {violation}: {reason}")]
    Banned {
        /// `user NAME` or `organisation ID`.
        subject: String,
        /// End of the ban (`indefinite` when open-ended).
        until: String,
        /// The violation's identifier.
        violation: String,
        /// What was done.
        reason: String,
    },
    /// The application declares advertising or promotion as its use, which the law excludes.
    #[error("applications for advertising or promotion are refused: {0}")]
    AdvertisingRefused(String),
    /// A release or statistics request outside what the approval allows; `code` names the condition.
    #[error("{message}")]
    ConditionViolated {
        /// Stable code of the violated condition (`APPROVAL_EXPIRED`, `COLUMN_NOT_APPROVED`, ...).
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// The review cannot be closed: too few voting members under the quorum rule.
    #[error("quorum not met: {0}")]
    QuorumNotMet(String),
    /// A key rotation whose ledger entry could not be written: the old key is in force again. Its reason is the
    /// cause's, so scripts see why (`DATABASE`, ...).
    #[error("the rotation could not be recorded; the old key is in force again: {0}")]
    RotationNotRecorded(Box<PolicyError>),
    /// The ledger key cannot rotate yet: this many accounts still have a second factor sealed by an earlier version
    /// under a key derived from it (re-sealed at their next sign-in).
    #[error(
        "{0} account(s) have a second factor sealed by an earlier version under a key derived from the ledger key; it \
         is re-sealed at their next sign-in (or reset their credentials) — rotating now would lose it"
    )]
    LegacySeeds(i64),
    /// A policy service holds this home's keys, and the act (a key rotation) needs it stopped.
    #[error("{0}")]
    ServiceRunning(String),
    /// The accounting refused the numbers (negative or NaN loss, δ ≥ 1, a budget that makes no sense) or
    /// OpenDP's zCDP conversion failed.
    #[error("privacy accounting: {0}")]
    Accounting(#[from] tokumei_deid::Error),
}

impl PolicyError {
    /// Stable machine-readable code (for the CLI's `--json` output and gRPC error details), so
    /// clients branch on it rather than on the wording of the message.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Database(_) => "DATABASE",
            PolicyError::Migrate(_) => "MIGRATION",
            PolicyError::UnknownProject(_) => "UNKNOWN_PROJECT",
            PolicyError::BudgetExceeded(_) => "BUDGET_EXCEEDED",
            PolicyError::PlatformCeilingExceeded { .. } => "PLATFORM_CEILING_EXCEEDED",
            PolicyError::BudgetBelowSpent { .. } => "BUDGET_BELOW_SPENT",
            PolicyError::Invalid(_) => "INVALID_ARGUMENT",
            PolicyError::Denied(d) => d.reason.code(),
            PolicyError::AuthenticationFailed => "AUTHENTICATION_FAILED",
            PolicyError::AccountLocked { .. } => "ACCOUNT_LOCKED",
            PolicyError::SessionInvalid(_) => "SESSION_INVALID",
            PolicyError::NotFound { .. } => "NOT_FOUND",
            PolicyError::AlreadyExists { .. } => "ALREADY_EXISTS",
            PolicyError::InvalidState(_) => "INVALID_STATE",
            PolicyError::Banned { .. } => "BANNED",
            PolicyError::AdvertisingRefused(_) => "ADVERTISING_REFUSED",
            PolicyError::ConditionViolated { code, .. } => code,
            PolicyError::QuorumNotMet(_) => "QUORUM_NOT_MET",
            PolicyError::ServiceRunning(_) => "SERVICE_RUNNING",
            PolicyError::LegacySeeds(_) => "LEGACY_SEEDS",
            PolicyError::RotationNotRecorded(cause) => cause.reason(),
            PolicyError::Accounting(tokumei_deid::Error::OpenDp(_)) => "ACCOUNTING",
            PolicyError::Accounting(_) => "INVALID_PRIVACY_PARAMETERS",
        }
    }
}

impl From<Exceeded> for PolicyError {
    fn from(e: Exceeded) -> Self {
        PolicyError::BudgetExceeded(Box::new(e))
    }
}
