//! The committee zone's half of the remote analysis environment: who may work in a workspace, who checks what
//! leaves it, and the record of both.
//!
//! A workspace is the analysis environment of an approval on the `on_platform` channel, open to its recipients
//! until the approval expires, is revoked or a recipient is banned — every request is admitted on the approval as
//! a download is (`UseKind::Analysis`). An approval may grant **pseudonymised** data (仮名加工医療情報): then only
//! recipients the chair registered as certified users (認定利活用者) may open it. An admitted request becomes a core
//! order carrying the workspace's scope, fixed here from the approval; the core answers it in the workspace
//! (`tokumei_release::workspace`) and seals a query's rows or an analysis's values to the researcher.
//!
//! Results leave only through an **output request**: the core runs the automatic checks (`tokumei_analysis::
//! output_check`) against every output the workspace released and reports the findings and the content, which
//! this zone keeps for an **output checker** — a role of its own, never a recipient of the approval nor of the
//! requester's or the applicant's organisation. The checker approves (never what the checks refused; with a
//! comment when they ask for review), asks for changes or refuses. An approval is released by a second core order
//! that checks the output again against outputs released since; then the document is signed with the service key
//! (`tokumei/analysis-output/v1`), recorded as a provision, and downloadable by the approval's recipients.
//!
//! Every query, analysis, upload and output request is on the audit ledger by its shape, hash, tables, rows
//! scanned and duration (`core.analysis`), with the monitoring's alerts; [`Policy::analysis_usage`] reads them back
//! as a usage report per workspace and user, for operators and auditors.

pub mod register;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sha2::Digest as _;

use crate::audit_ledger::{AuditEvent, Outcome, canonical_json};
use crate::authorization::{Action, Actor, ApplicationFacts, Resource, authorize};
use crate::committee::{UseKind, japan_date};
use crate::core_orders::{CoreOperation, OrderOutcome, OrderStatus, WorkspaceScope};
use crate::error::{PolicyError, Result};
use crate::service::{Origin, Policy};
use crate::service_key::{ServicePublicKey, SignaturePurpose};

pub use register::{AnalysisRegisters, CertifiedUser, OutputRequest, OutputState};

/// Largest workspace request (JSON bytes): an upload of 1 MiB with its escaping.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Longest comment of an output checker, and longest certification reference.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// What an output checker decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputDecision {
    /// Release it.
    Approve,
    /// Ask the researcher for a changed output.
    RequestChanges,
    /// Refuse it.
    Refuse,
}

impl OutputDecision {
    /// From its name (`approve`, `changes`, `refuse`).
    pub fn parse(s: &str) -> Result<OutputDecision> {
        match s {
            "approve" => Ok(OutputDecision::Approve),
            "changes" | "request_changes" => Ok(OutputDecision::RequestChanges),
            "refuse" => Ok(OutputDecision::Refuse),
            _ => Err(PolicyError::Invalid("a decision is approve, changes or refuse".into())),
        }
    }
}

/// A released output as its recipients receive it: the signed document, its hash, the signature and the key.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SignedOutput {
    /// The document (canonical JSON): application, output, result, analysis, requester, checker, decision time,
    /// verdict and content.
    pub document: String,
    /// SHA-256 of the document, hex.
    pub sha256: String,
    /// ed25519 signature of the document under `tokumei/analysis-output/v1`, hex.
    pub signature: String,
    /// The service's public key, hex.
    pub public_key: String,
}

impl SignedOutput {
    /// Whether the signature holds under `key` (the one the researcher pinned) and the hash matches.
    pub fn verify(&self, key: &ServicePublicKey) -> bool {
        let sha = hex::encode(sha2::Sha256::digest(self.document.as_bytes()));
        let Ok(signature) = hex::decode(&self.signature) else {
            return false;
        };
        sha == self.sha256 && key.verify(SignaturePurpose::AnalysisOutput, self.document.as_bytes(), &signature)
    }
}

/// The document an output's signature covers.
fn document_of(o: &OutputRequest) -> Result<String> {
    canonical_json(&json!({
        "application": o.application,
        "output": o.id,
        "result": o.result,
        "analysis": o.analysis,
        "requested_by": o.requested_by,
        "checker": o.checker,
        "decided_at": o.decided_at.map(|t| t.to_rfc3339()),
        "verdict": o.verdict,
        "content": o.content,
    }))
}

fn bounded_text(what: &str, text: &str) -> Result<String> {
    let text = text.trim();
    if text.chars().count() > MAX_COMMENT_CHARS {
        return Err(PolicyError::Invalid(format!(
            "{what} is at most {MAX_COMMENT_CHARS} characters"
        )));
    }
    Ok(text.to_owned())
}

impl Policy {
    fn analysis_registers(&self) -> AnalysisRegisters {
        AnalysisRegisters::new(self.db().clone())
    }

    /// The chair registers `username` (a researcher) as a certified user until `expires_on`. Audited.
    pub async fn certify_user(
        &self,
        actor: &Actor,
        username: &str,
        reference: &str,
        expires_on: chrono::NaiveDate,
        origin: Origin<'_>,
    ) -> Result<CertifiedUser> {
        self.check(actor, Action::CertifyUser, &Resource::Platform, origin)
            .await?;
        let result = async {
            let reference = bounded_text("the reference", reference)?;
            if reference.is_empty() {
                return Err(PolicyError::Invalid("a certification names its reference".into()));
            }
            if expires_on < japan_date(self.now()) {
                return Err(PolicyError::Invalid("the certification has already expired".into()));
            }
            let person = self.actor_named(username).await?;
            if !person.has(crate::authorization::Role::Researcher) {
                return Err(PolicyError::Invalid("only a researcher is certified".into()));
            }
            let user = CertifiedUser {
                username: username.to_owned(),
                reference,
                certified_by: actor.username.clone(),
                certified_at: self.now(),
                expires_on,
            };
            self.analysis_registers().certify(&user).await?;
            Ok(user)
        }
        .await;
        self.finish(
            &actor.username,
            "analysis.certify_user",
            &format!("user {username}"),
            origin,
            result,
            |u| json!({"expires_on": u.expires_on.to_string()}),
        )
        .await
    }

    /// A researcher's request to the workspace of approval `application` (see the module documentation): admitted
    /// on the approval (and the certified-user register for pseudonymised data), then queued for the core.
    pub async fn request_workspace(
        &self,
        actor: &Actor,
        application: &str,
        mut request: serde_json::Value,
        recipient_key: Option<String>,
        origin: Origin<'_>,
    ) -> Result<OrderStatus> {
        self.check_role(actor, Action::UseWorkspace, origin).await?;
        if !self.queues_core_orders() {
            return Err(PolicyError::InvalidState(
                "workspaces are reached through the policy service (`tokumei policy serve`)".into(),
            ));
        }
        let kind = request
            .get("request")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        match kind.as_str() {
            "query" | "analyse" | "upload" | "prepare_output" => {}
            "release_output" => {
                return Err(PolicyError::Invalid(
                    "an output leaves only by an output checker's approval".into(),
                ));
            }
            _ => {
                return Err(PolicyError::Invalid(
                    "a workspace request is query, analyse, upload or prepare_output".into(),
                ));
            }
        }
        if request.to_string().len() > MAX_REQUEST_BYTES {
            return Err(PolicyError::Invalid(format!(
                "a workspace request is at most {MAX_REQUEST_BYTES} bytes"
            )));
        }
        // The monitoring compares queries by their shape, as the ledger keeps it.
        let sql = match kind.as_str() {
            "query" => request.get("sql"),
            "analyse" => request.get("spec").and_then(|s| s.get("sql")),
            _ => None,
        };
        if let Some(sql) = sql.and_then(|q| q.as_str()) {
            request["shape"] = crate::query_shape::redacted(sql).into();
        }
        let reads = matches!(kind.as_str(), "query" | "analyse");
        let key_ok = recipient_key.as_deref().is_some_and(crate::core_orders::is_key);
        if reads && !key_ok {
            return Err(PolicyError::Invalid(
                "the recipient key is 64 lowercase hex digits (an X25519 public key)".into(),
            ));
        }
        let app = self
            .admit_use(actor, application, UseKind::Analysis, &[], origin)
            .await?;
        let scope = WorkspaceScope::of(&app)?;
        if scope.pseudonymised {
            self.require_certified(actor, application, origin).await?;
        }
        if kind == "prepare_output" {
            // One request per result: a refused or changed output is not put to another checker until one agrees.
            let result = request.get("result").and_then(|r| r.as_u64()).unwrap_or_default();
            if self.analysis_registers().requested(application, result).await? {
                let message =
                    format!("result {result} was already asked to leave: compute a changed result and ask for that");
                return Err(self
                    .refuse_workspace(actor, application, "ALREADY_REQUESTED", origin, message)
                    .await);
            }
        }
        let operation = CoreOperation::Analysis {
            scope,
            request,
            recipient_key: if reads { recipient_key } else { None },
        };
        self.queue_core_order(actor, operation, origin).await
    }

    /// Refuses (audited, `NOT_CERTIFIED`) a researcher who is not a certified user today.
    async fn require_certified(&self, actor: &Actor, application: &str, origin: Origin<'_>) -> Result<()> {
        let today = japan_date(self.now());
        let certified = self.analysis_registers().certified(&actor.username).await?;
        if certified.is_some_and(|c| c.expires_on >= today) {
            return Ok(());
        }
        let message = "this workspace holds pseudonymised data: only certified users (認定利活用者) may open it";
        Err(self
            .refuse_workspace(actor, application, "NOT_CERTIFIED", origin, message.into())
            .await)
    }

    /// Audits a refusal of a workspace use with its `code` and returns it as the caller's error.
    async fn refuse_workspace(
        &self,
        actor: &Actor,
        application: &str,
        code: &'static str,
        origin: Origin<'_>,
        message: String,
    ) -> PolicyError {
        let event = AuditEvent::new(
            &actor.username,
            Action::UseWorkspace.as_str(),
            format!("application {application}"),
            Outcome::Denied,
        )
        .reason(code)
        .source(origin.0);
        match self.audit(event).await {
            Ok(_) => PolicyError::ConditionViolated { code, message },
            Err(e) => e,
        }
    }

    /// A recipient's use of the workspace still stands: the approval (revocation, expiry, bans) and, for
    /// pseudonymised data, their certification — checked again whenever they read from it.
    async fn workspace_standing(&self, actor: &Actor, application: &str, origin: Origin<'_>) -> Result<()> {
        let app = self
            .admit_use(actor, application, UseKind::Analysis, &[], origin)
            .await?;
        if WorkspaceScope::of(&app)?.pseudonymised {
            self.require_certified(actor, application, origin).await?;
        }
        Ok(())
    }

    /// Output requests the caller may see, newest first, without their content: an output checker sees those they
    /// may decide, a researcher those of the workspaces they work in, operators and auditors all.
    pub async fn list_outputs(&self, actor: &Actor, application: Option<&str>) -> Result<Vec<OutputRequest>> {
        let all = self.analysis_registers().list(application).await?;
        let oversight = authorize(actor, Action::ViewAnalysisUsage, &Resource::Platform).is_ok();
        let mut out = Vec::new();
        for mut o in all {
            let visible = oversight || {
                let facts = self.output_facts(&o).await?;
                facts
                    .iter()
                    .all(|f| authorize(actor, Action::CheckOutput, &Resource::Application(f.clone())).is_ok())
                    || facts.first().is_some_and(|f| {
                        authorize(actor, Action::UseWorkspace, &Resource::Application(f.clone())).is_ok()
                    })
            };
            if visible {
                o.content = serde_json::Value::Null;
                o.spec = serde_json::Value::Null;
                out.push(o);
            }
        }
        Ok(out)
    }

    /// The facts an output checker is judged against: the approval's, and the same with the requester as its
    /// applicant (the checker is of neither organisation and receives none of the data).
    async fn output_facts(&self, o: &OutputRequest) -> Result<Vec<ApplicationFacts>> {
        let app = self.committee().get(&o.application).await?;
        let facts = app.facts();
        let mut all = vec![facts.clone()];
        // The requester's and the result's author's organisations too (a co-recipient may ask for a result).
        for person in [&o.requested_by, &o.computed_by] {
            let who = self.actor_named(person).await?;
            all.push(ApplicationFacts {
                applicant: who.username,
                organisation: who.organisation,
                ..facts.clone()
            });
        }
        Ok(all)
    }

    /// One output request with its content and findings: for an output checker who may decide it, and for the
    /// approval's recipients. Audited.
    pub async fn output(&self, actor: &Actor, id: u64, origin: Origin<'_>) -> Result<OutputRequest> {
        // The role first: a caller no role admits learns nothing about which requests exist.
        if crate::authorization::authorize_role(actor, Action::CheckOutput).is_err() {
            self.check_role(actor, Action::UseWorkspace, origin).await?;
        }
        let o = self.analysis_registers().get(id).await?;
        let facts = self.output_facts(&o).await?;
        let checker = facts
            .iter()
            .all(|f| authorize(actor, Action::CheckOutput, &Resource::Application(f.clone())).is_ok());
        if !checker {
            let Some(approval) = facts.first() else {
                return Err(PolicyError::InvalidState(
                    "an output request without its approval".into(),
                ));
            };
            self.check(
                actor,
                Action::UseWorkspace,
                &Resource::Application(approval.clone()),
                origin,
            )
            .await?;
            self.workspace_standing(actor, &o.application, origin).await?;
        }
        self.audit_ok(
            actor,
            "analysis.output_read",
            &format!("application {}", o.application),
            origin,
            json!({"output": id}),
        )
        .await?;
        Ok(o)
    }

    /// An output checker's decision (see the module documentation). Audited, refusals included.
    pub async fn decide_output(
        &self,
        actor: &Actor,
        id: u64,
        decision: OutputDecision,
        comment: &str,
        origin: Origin<'_>,
    ) -> Result<OutputRequest> {
        self.check_role(actor, Action::CheckOutput, origin).await?;
        let registers = self.analysis_registers();
        let o = registers.get(id).await?;
        for facts in self.output_facts(&o).await? {
            self.check(actor, Action::CheckOutput, &Resource::Application(facts), origin)
                .await?;
        }
        let resource = format!("application {}", o.application);
        let result = self.decided(actor, &o, decision, comment, origin).await;
        self.finish(
            &actor.username,
            "analysis.output_decided",
            &resource,
            origin,
            result,
            |d| json!({"output": id, "decision": d.state.as_str(), "verdict": d.verdict}),
        )
        .await
    }

    async fn decided(
        &self,
        actor: &Actor,
        o: &OutputRequest,
        decision: OutputDecision,
        comment: &str,
        origin: Origin<'_>,
    ) -> Result<OutputRequest> {
        let comment = bounded_text("a comment", comment)?;
        if o.state != OutputState::AwaitingCheck {
            return Err(PolicyError::InvalidState(format!(
                "output request {} is {}, not awaiting a check",
                o.id,
                o.state.as_str()
            )));
        }
        let needs_comment = decision != OutputDecision::Approve || o.verdict == "review";
        if needs_comment && comment.is_empty() {
            return Err(PolicyError::Invalid(
                "a decision other than approving a safe output gives the researcher a comment".into(),
            ));
        }
        let state = match decision {
            // Only what the checks found safe, or sent to review, may be approved; anything else counts as refused.
            OutputDecision::Approve if !matches!(o.verdict.as_str(), "safe" | "review") => {
                return Err(PolicyError::ConditionViolated {
                    code: "CHECKS_REFUSED",
                    message: "the automatic checks refused this output: ask for changes or refuse it".into(),
                });
            }
            OutputDecision::Approve => OutputState::Releasing,
            OutputDecision::RequestChanges => OutputState::ChangesRequested,
            OutputDecision::Refuse => OutputState::Refused,
        };
        let registers = self.analysis_registers();
        if state == OutputState::Releasing {
            // The approval must still stand for the requester: revoked, expired or banned since, nothing leaves.
            let requester = self.actor_named(&o.requested_by).await?;
            self.admit_use(&requester, &o.application, UseKind::Analysis, &[], origin)
                .await?;
        }
        if !registers
            .decide(o.id, state, &actor.username, &comment, self.now())
            .await?
        {
            return Err(PolicyError::InvalidState(format!(
                "output request {} was decided meanwhile",
                o.id
            )));
        }
        if state == OutputState::Releasing {
            let app = self.committee().get(&o.application).await?;
            let operation = CoreOperation::Analysis {
                scope: WorkspaceScope::of(&app)?,
                request: json!({"request": "release_output", "result": o.result}),
                recipient_key: None,
            };
            match self.queue_core_order(actor, operation, origin).await {
                Ok(order) => registers.releasing(o.id, order.id).await?,
                Err(e) => {
                    registers.undo_releasing(o.id).await?;
                    return Err(e);
                }
            }
        }
        registers.get(o.id).await
    }

    /// A released output, signed, for a recipient of its approval (while the approval stands). Audited.
    pub async fn fetch_output(&self, actor: &Actor, id: u64, origin: Origin<'_>) -> Result<SignedOutput> {
        self.check_role(actor, Action::UseWorkspace, origin).await?;
        let o = self.analysis_registers().get(id).await?;
        self.workspace_standing(actor, &o.application, origin).await?;
        let (Some(sha256), Some(signature), OutputState::Released) = (&o.content_sha256, &o.signature, o.state) else {
            return Err(PolicyError::ConditionViolated {
                code: "OUTPUT_NOT_RELEASED",
                message: format!("output request {id} is {}, not released", o.state.as_str()),
            });
        };
        let signed = SignedOutput {
            document: document_of(&o)?,
            sha256: sha256.clone(),
            signature: signature.clone(),
            public_key: self.service_key().public().to_hex(),
        };
        self.audit_ok(
            actor,
            "analysis.output_fetched",
            &format!("application {}", o.application),
            origin,
            json!({"output": id, "sha256": sha256}),
        )
        .await?;
        Ok(signed)
    }

    /// What the service does with the core's report of a workspace order before anyone reads it: an output
    /// request is filed for the checkers; a release is signed and recorded as a provision, or marked refused.
    pub(crate) async fn settle_analysis(
        &self,
        order: u64,
        operation: &CoreOperation,
        requested_by: &str,
        outcome: &OrderOutcome,
        origin: Origin<'_>,
    ) -> Result<()> {
        let CoreOperation::Analysis { scope, request, .. } = operation else {
            return Ok(());
        };
        let kind = request.get("request").and_then(|k| k.as_str()).unwrap_or_default();
        let result = request.get("result").and_then(|r| r.as_u64()).unwrap_or_default();
        let registers = self.analysis_registers();
        let resource = format!("application {}", scope.application);
        match (kind, outcome) {
            ("prepare_output", OrderOutcome::Done(report)) => {
                let number = |f: &str| report.get(f).and_then(|v| v.as_u64()).unwrap_or(0);
                let text = |f: &str| report.get(f).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                let verdict = text("verdict");
                // What the checks refused cannot leave: its values stay in the workspace, the checker reads the
                // findings.
                let content = match verdict.as_str() {
                    "safe" | "review" => report.get("content").cloned().unwrap_or_default(),
                    _ => serde_json::Value::Null,
                };
                let filed = OutputRequest {
                    id: order,
                    application: scope.application.clone(),
                    result: number("result"),
                    analysis: text("analysis"),
                    computed_by: text("computed_by"),
                    spec: report.get("spec").cloned().unwrap_or_default(),
                    requested_by: requested_by.to_owned(),
                    requested_at: self.now(),
                    verdict,
                    checks: report.get("checks").cloned().unwrap_or_default(),
                    content,
                    state: OutputState::AwaitingCheck,
                    checker: None,
                    decided_at: None,
                    comment: None,
                    release_order: None,
                    content_sha256: None,
                    signature: None,
                    released_at: None,
                };
                registers.file(&filed).await?;
                let event = AuditEvent::new(requested_by, "analysis.output_requested", &resource, Outcome::Ok)
                    .details(json!({"output": order, "result": filed.result, "verdict": filed.verdict}))
                    .source(origin.0);
                self.audit(event).await?;
            }
            ("release_output", OrderOutcome::Done(_)) => {
                let o = registers.releasing_result(&scope.application, result).await?;
                let document = document_of(&o)?;
                let sha256 = hex::encode(sha2::Sha256::digest(document.as_bytes()));
                let signature = hex::encode(
                    self.service_key()
                        .sign(SignaturePurpose::AnalysisOutput, document.as_bytes()),
                );
                let requester = self.actor_named(&o.requested_by).await?;
                let cells = o.content.as_array().map_or(1, Vec::len);
                self.record_provision(
                    &requester,
                    &o.application,
                    &format!("analysis output {} ({})", o.id, o.analysis),
                    i64::try_from(cells).unwrap_or(i64::MAX),
                    origin,
                )
                .await?;
                registers.released(o.id, &sha256, &signature, self.now()).await?;
                let event = AuditEvent::new(requested_by, "analysis.output_released", &resource, Outcome::Ok)
                    .details(json!({"output": o.id, "sha256": sha256}))
                    .source(origin.0);
                self.audit(event).await?;
            }
            ("release_output", OrderOutcome::Failed(code)) => {
                let o = registers.releasing_result(&scope.application, result).await?;
                registers.release_refused(o.id, code).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The usage report of the analysis environment, per workspace and user, and the monitoring's alerts: read
    /// from the audit ledger (operators and auditors).
    pub async fn analysis_usage(
        &self,
        actor: &Actor,
        application: Option<&str>,
        origin: Origin<'_>,
    ) -> Result<serde_json::Value> {
        self.check(actor, Action::ViewAnalysisUsage, &Resource::Platform, origin)
            .await?;
        let entries = self
            .audit_ledger()
            .entries(DateTime::<Utc>::UNIX_EPOCH, self.now() + chrono::Duration::seconds(1))
            .await?;
        let mut usage: std::collections::BTreeMap<(String, String), Usage> = Default::default();
        let mut alerts = Vec::new();
        for e in entries.iter().filter(|e| e.action == "core.analysis") {
            let details = e.details_value().unwrap_or_default();
            let app = details
                .get("application")
                .and_then(|a| a.as_str())
                .unwrap_or_default()
                .to_owned();
            if application.is_some_and(|a| a != app) {
                continue;
            }
            let u = usage.entry((app.clone(), e.actor.clone())).or_default();
            let kind = details.get("request").and_then(|k| k.as_str()).unwrap_or_default();
            match kind {
                "query" => u.queries += 1,
                "analyse" => u.analyses += 1,
                "upload" => u.uploads += 1,
                "prepare_output" => u.output_requests += 1,
                _ => {}
            }
            if e.outcome_kind() != Some(Outcome::Ok) {
                u.failed += 1;
            }
            let n = |f: &str| details.get(f).and_then(|v| v.as_u64()).unwrap_or(0);
            u.rows_scanned += n("rows_scanned");
            u.duration_ms += n("duration_ms");
            if let Some(rules) = details
                .get("alerts")
                .and_then(|a| a.as_array())
                .filter(|a| !a.is_empty())
            {
                u.alerts += rules.len() as u64;
                alerts.push(json!({"seq": e.seq, "at": e.at, "user": e.actor, "application": app, "rules": rules}));
            }
        }
        let rows: Vec<serde_json::Value> = usage
            .into_iter()
            .map(|((application, user), u)| json!({"application": application, "user": user, "usage": u}))
            .collect();
        Ok(json!({"workspaces": rows, "alerts": alerts}))
    }
}

/// One user's use of one workspace.
#[derive(Debug, Default, Serialize)]
struct Usage {
    queries: u64,
    analyses: u64,
    uploads: u64,
    output_requests: u64,
    failed: u64,
    rows_scanned: u64,
    duration_ms: u64,
    alerts: u64,
}
