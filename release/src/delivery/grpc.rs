//! `tokumei.release.v1.ReleaseService` over [`Delivery`].
//!
//! Like the policy zone's gRPC service, this is a thin adapter, and a client: the session is checked, every rule
//! about who may download what decided and recorded, by the policy service over the zone's
//! [`PolicyLink`](super::PolicyLink). What this adapter adds is the zone's own fact — whether the caller holds a
//! copy in the release asked for — and the token.
//!
//! Errors are statuses with a `google.rpc.ErrorInfo` (domain `policy.tokumei`) whose reason is the policy
//! service's code (see `tokumei_policy::grpc` for the code ↔ status table), plus the zone's: `NOT_FOUND`
//! (no such release or file) and `NOT_RECIPIENT` (`PERMISSION_DENIED`: the caller holds no copy of that
//! release). Internal failures are reported without detail (the server's log has it).

use std::collections::HashMap;
use std::future::Future;

use serde_json::json;
use tokio::net::TcpListener;
use tokumei_policy::audit_ledger::{AuditEvent, Outcome};
use tokumei_policy::grpc::{bearer_token, policy_status, status_with_reason};
use tokumei_proto::release::v1 as pb;
use tokumei_proto::release::v1::release_service_server::{ReleaseService, ReleaseServiceServer};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

use super::policy_link::{Caller, reason_of, unavailable};
use super::tokens::DownloadGrant;
use super::{Delivery, DeliveryError, DeliveryTls};
use crate::error::ReleaseError;
use crate::zone::ReleaseRecord;
use crate::{risk, trace};

/// Longest a request may take before it is cancelled.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest leaked file `TraceLeak` reads (a 100,000-row copy's largest table is a few MiB as CSV); more is
/// `RESOURCE_EXHAUSTED`. It arrives in chunks of at most [`MAX_CHUNK_BYTES`], after the session and role were
/// checked, so nobody makes the zone buffer a large message before it knows who is asking.
pub const MAX_LEAKED_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Largest chunk of a leaked file.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// The status reporting a zone error: the policy service's mapping for its refusals, `NOT_FOUND` for
/// missing releases and files, a generic `INTERNAL` for the rest (details logged, never sent).
pub fn release_status(e: &ReleaseError) -> Status {
    match e {
        ReleaseError::Policy(p) => policy_status(p),
        ReleaseError::NotFound(what) => status_with_reason(
            Code::NotFound,
            "NOT_FOUND",
            format!("not found: {what}"),
            HashMap::new(),
        ),
        ReleaseError::BadInput(why) => status_with_reason(Code::InvalidArgument, "BAD_INPUT", why, HashMap::new()),
        other => {
            tracing::error!(reason = %other.reason(), error = %other, "release service failure");
            status_with_reason(
                Code::Internal,
                &other.reason(),
                "internal error in the release service (details are in the server's log)",
                HashMap::new(),
            )
        }
    }
}

/// The origin recorded in the audit ledger: `grpc:` and the peer address.
fn origin_of<T>(request: &Request<T>) -> String {
    match request.remote_addr() {
        Some(addr) => format!("grpc:{addr}"),
        None => "grpc:unknown".to_owned(),
    }
}

/// `tokumei.release.v1.ReleaseService`; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReleaseGrpc {
    delivery: Delivery,
}

impl ReleaseGrpc {
    /// The service over `delivery`.
    pub fn new(delivery: Delivery) -> ReleaseGrpc {
        ReleaseGrpc { delivery }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> ReleaseServiceServer<ReleaseGrpc> {
        ReleaseServiceServer::new(self)
    }

    /// The request's origin, its caller as the policy service authenticated them, and its message.
    async fn authenticated<T>(&self, request: Request<T>) -> Result<(String, Caller, T), Status> {
        let origin = origin_of(&request);
        let token = bearer_token(request.metadata())?;
        let caller = self.delivery.policy.authenticate(token, &origin).await?;
        Ok((origin, caller, request.into_inner()))
    }

    /// Every complete release (read off the disk on a blocking thread).
    async fn records(&self) -> Result<Vec<ReleaseRecord>, Status> {
        let zone = self.delivery.zone.clone();
        tokio::task::spawn_blocking(move || zone.records())
            .await
            .map_err(|e| Status::internal(format!("listing releases: {e}")))?
            .map_err(|e| release_status(&e))
    }

    /// One complete release (read off the disk on a blocking thread); `NOT_FOUND` if there is none.
    async fn record(&self, id: &str) -> Result<ReleaseRecord, Status> {
        let zone = self.delivery.zone.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || zone.record(&id))
            .await
            .map_err(|e| Status::internal(format!("reading the release: {e}")))?
            .map_err(|e| release_status(&e))
    }

    /// Rows of a data file, from the signed manifest of the recipient's copy (0 when it says none).
    async fn rows_of(&self, record: &ReleaseRecord, recipient: &str, file: &str) -> i64 {
        let Ok(mut manifest) = self
            .delivery
            .zone
            .open_copy_file(record, recipient, crate::manifest::MANIFEST)
            .await
        else {
            return 0;
        };
        let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || manifest.read_all()).await else {
            return 0;
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return 0;
        };
        value["files"]
            .as_array()
            .and_then(|files| files.iter().find(|f| f["name"] == file))
            .and_then(|f| f["rows"].as_i64())
            .unwrap_or(0)
    }

    /// Audits a refusal made by the zone itself (the policy service audits its own).
    async fn audit_refusal(&self, actor: &Caller, release: &str, file: &str, reason: &str, origin: &str) {
        let event = AuditEvent::new(
            &actor.username,
            "download_release",
            format!("release {release}"),
            Outcome::Denied,
        )
        .reason(reason)
        .source(origin)
        .details(json!({"file": file}));
        if let Err(e) = self.delivery.policy.record(&event).await {
            tracing::error!(reason = %reason_of(&e), "could not audit a refused download");
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// [`ReleaseGrpc`] with every call recorded in the audit ledger as `rpc.<Method>` (caller or `anonymous`, origin,
/// outcome, reason), listings included; the answer is withheld if the entry cannot be written.
#[derive(Debug, Clone)]
pub struct AuditedReleaseGrpc {
    inner: ReleaseGrpc,
}

impl AuditedReleaseGrpc {
    /// The tonic service to add to a server.
    pub fn into_server(self) -> ReleaseServiceServer<AuditedReleaseGrpc> {
        ReleaseServiceServer::new(self)
    }

    /// Appends `rpc.<method>` with the caller and the outcome through the policy service; withholds the answer if
    /// that fails.
    async fn record<T>(&self, method: &str, (origin, caller): (String, String), result: Reply<T>) -> Reply<T> {
        let (outcome, reason) = match &result {
            Ok(_) => (Outcome::Ok, None),
            Err(status) if unavailable(status) => (Outcome::Failed, Some(reason_of(status))),
            Err(status) => (Outcome::Denied, Some(reason_of(status))),
        };
        let mut event = AuditEvent::new(&caller, format!("rpc.{method}"), "release service", outcome).source(&origin);
        if let Some(reason) = reason {
            event = event.reason(&reason);
        }
        match self.inner.delivery.policy.record(&event).await {
            Ok(_) => result,
            Err(e) => {
                tracing::error!(method, reason = %reason_of(&e), "an access could not be recorded; answer withheld");
                Err(Status::unavailable("the audit ledger is unavailable; try again later"))
            }
        }
    }

    /// The request's origin and its caller's name (`anonymous` without a valid session), for the ledger.
    async fn caller<T>(&self, request: &Request<T>) -> (String, String) {
        let origin = origin_of(request);
        let who = match bearer_token(request.metadata()) {
            Ok(token) => match self.inner.delivery.policy.authenticate(token, &origin).await {
                Ok(caller) => caller.username,
                Err(_) => "anonymous".to_owned(),
            },
            Err(_) => "anonymous".to_owned(),
        };
        (origin, who)
    }
}

#[tonic::async_trait]
impl ReleaseService for AuditedReleaseGrpc {
    async fn list_releases(&self, request: Request<pb::ListReleasesRequest>) -> Reply<pb::ListReleasesResponse> {
        let who = self.caller(&request).await;
        let result = self.inner.list_releases(request).await;
        self.record("ListReleases", who, result).await
    }

    async fn request_download(
        &self,
        request: Request<pb::RequestDownloadRequest>,
    ) -> Reply<pb::RequestDownloadResponse> {
        let who = self.caller(&request).await;
        let result = self.inner.request_download(request).await;
        self.record("RequestDownload", who, result).await
    }

    async fn declare_deletion(
        &self,
        request: Request<pb::DeclareDeletionRequest>,
    ) -> Reply<pb::DeclareDeletionResponse> {
        let who = self.caller(&request).await;
        let result = self.inner.declare_deletion(request).await;
        self.record("DeclareDeletion", who, result).await
    }

    async fn trace_leak(&self, request: Request<tonic::Streaming<pb::TraceLeakChunk>>) -> Reply<pb::TraceLeakResponse> {
        let who = self.caller(&request).await;
        let result = self.inner.trace_leak(request).await;
        self.record("TraceLeak", who, result).await
    }

    async fn assess_risk(&self, request: Request<pb::AssessRiskRequest>) -> Reply<pb::AssessRiskResponse> {
        let who = self.caller(&request).await;
        let result = self.inner.assess_risk(request).await;
        self.record("AssessRisk", who, result).await
    }

    async fn complete_build(&self, request: Request<pb::CompleteBuildRequest>) -> Reply<pb::CompleteBuildResponse> {
        let who = self.caller(&request).await;
        let result = self.inner.complete_build(request).await;
        self.record("CompleteBuild", who, result).await
    }
}

impl ReleaseGrpc {
    /// The zone's half of a build: claimed through the policy service (which admits the approval again), the
    /// package opened and checked against the order, the copies made, the release recorded.
    async fn finish_build(
        &self,
        caller: &Caller,
        origin: &str,
        order: u64,
    ) -> Result<crate::builder::BuildOutcome, Status> {
        let desk = self.delivery.builds.clone().ok_or_else(|| {
            status_with_reason(
                Code::FailedPrecondition,
                "BUILDS_NOT_SERVED",
                "this release service does not finish builds (it was started without its intake key)",
                HashMap::new(),
            )
        })?;
        let (scope_json, report_json) = self.delivery.policy.admit_build(caller, origin, order).await?;
        let scope: tokumei_policy::core_orders::BuildScope =
            serde_json::from_str(&scope_json).map_err(|_| Status::internal("the admitted scope is unreadable"))?;
        let report: serde_json::Value =
            serde_json::from_str(&report_json).map_err(|_| Status::internal("the core's report is unreadable"))?;
        let result = async {
            let sha256 = report["package_sha256"]
                .as_str()
                .ok_or_else(|| ReleaseError::Integrity(format!("core order {order}'s report pins no package")))?
                .to_owned();
            let (outbox, intake, opened_scope) = (desk.outbox.clone(), desk.intake.clone(), scope.clone());
            let package = tokio::task::spawn_blocking(move || {
                crate::builder::package::open_from_outbox(&outbox, order, &sha256, &opened_scope, &intake)
            })
            .await
            .map_err(|e| ReleaseError::BadInput(format!("opening the package: {e}")))??;
            let cx = crate::builder::DeliverContext {
                zone: &self.delivery.zone,
                service_key: &desk.manifest_key,
                built_by: &caller.username,
            };
            crate::builder::deliver(&cx, package, &|_| {}).await
        }
        .await;
        match result {
            Ok(outcome) => {
                let recorded = self
                    .delivery
                    .policy
                    .record_build(caller, origin, order, &scope.application, Ok(&outcome.ledger_details()))
                    .await;
                if let Err(status) = recorded {
                    // Not on the ledger, so not a release: its copies go before anyone could ask for them.
                    if let Ok(dir) = self.delivery.zone.release_dir(&outcome.release)
                        && let Err(e) = std::fs::remove_dir_all(&dir)
                    {
                        tracing::error!(order, error = %e, "an unrecorded release could not be removed");
                    }
                    return Err(status);
                }
                crate::builder::package::remove_from_outbox(&desk.outbox, order);
                Ok(outcome)
            }
            Err(e) => {
                let reason = e.reason();
                if let Err(s) = self
                    .delivery
                    .policy
                    .record_build(caller, origin, order, &scope.application, Err(&reason))
                    .await
                {
                    tracing::error!(order, reason = %reason_of(&s), "a failed build could not be recorded");
                }
                Err(release_status(&e))
            }
        }
    }
}

#[tonic::async_trait]
impl ReleaseService for ReleaseGrpc {
    async fn complete_build(&self, request: Request<pb::CompleteBuildRequest>) -> Reply<pb::CompleteBuildResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        // Finished on a task of its own: a client that goes away mid-build does not leave a half-made release or a
        // claim nobody settles.
        let this = self.clone();
        let outcome = tokio::spawn(async move { this.finish_build(&actor, &origin, r.order_id).await })
            .await
            .map_err(|_| Status::internal("the build's task stopped"))??;
        let outcome_json =
            serde_json::to_string(&outcome).map_err(|_| Status::internal("the build's outcome is not serialisable"))?;
        Ok(Response::new(pb::CompleteBuildResponse { outcome_json }))
    }

    async fn list_releases(&self, request: Request<pb::ListReleasesRequest>) -> Reply<pb::ListReleasesResponse> {
        let (origin, actor, asked) = self.authenticated(request).await?;
        let records: Vec<ReleaseRecord> = self
            .records()
            .await?
            .into_iter()
            .filter(|r| asked.application.is_empty() || r.application == asked.application)
            .collect();
        let applications: std::collections::BTreeSet<String> = records.iter().map(|r| r.application.clone()).collect();
        let visible = self
            .delivery
            .policy
            .visible_applications(&actor, &origin, applications.into_iter().collect())
            .await?;
        let mut releases = Vec::new();
        for r in records {
            let may_see = visible.contains(&r.application);
            let Some(files) = r.copies.get(&actor.username) else {
                if may_see {
                    releases.push(pb::Release {
                        id: r.id.clone(),
                        application: r.application.clone(),
                        expires_on: r.expires_on.to_string(),
                        built_at: r.built_at.to_rfc3339(),
                        files: Vec::new(),
                        standing: "NOT_RECIPIENT".to_owned(),
                        recipients: r.recipients(),
                    });
                }
                continue;
            };
            // The same standing as a download's (revocation, expiry, bans), so the list never offers what a
            // request would refuse.
            let standing = match self
                .delivery
                .policy
                .recheck_transfer(&actor.username, &r.application)
                .await
            {
                Ok(()) => "AVAILABLE".to_owned(),
                Err(e) if unavailable(&e) => return Err(e),
                Err(e) => reason_of(&e),
            };
            let files = if standing == "AVAILABLE" {
                files
                    .iter()
                    .map(|f| pb::ReleaseFile {
                        name: f.name.clone(),
                        bytes: f.bytes,
                        sha256: f.sha256.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            releases.push(pb::Release {
                id: r.id.clone(),
                application: r.application.clone(),
                expires_on: r.expires_on.to_string(),
                built_at: r.built_at.to_rfc3339(),
                files,
                standing,
                recipients: if may_see { r.recipients() } else { Vec::new() },
            });
        }
        Ok(Response::new(pb::ListReleasesResponse { releases }))
    }

    async fn request_download(
        &self,
        request: Request<pb::RequestDownloadRequest>,
    ) -> Reply<pb::RequestDownloadResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        // The role first: someone who may never download learns nothing about which releases exist.
        self.delivery.policy.check_download_role(&actor, &origin).await?;
        let record = self.record(&r.release_id).await?;
        if !record.copies.contains_key(&actor.username) {
            self.audit_refusal(&actor, &record.id, &r.file, "NOT_RECIPIENT", &origin)
                .await;
            return Err(status_with_reason(
                Code::PermissionDenied,
                "NOT_RECIPIENT",
                format!("{} holds no copy of release {}", actor.username, record.id),
                HashMap::new(),
            ));
        }
        let file = record
            .copy_file(&actor.username, &r.file)
            .map_err(|e| release_status(&e))?
            .clone();
        // The policy service decides (recipient, bans, expiry, revocation, download limit), counts the
        // download, audits the decision with the origin and records the provision.
        let rows = self.rows_of(&record, &actor.username, &file.name).await;
        self.delivery
            .policy
            .admit_download(
                &actor,
                &origin,
                &record.application,
                &record.tables,
                &format!("release {} file {}", record.id, file.name),
                rows,
            )
            .await?;
        let issued = self.delivery.tokens.issue(DownloadGrant {
            release: record.id.clone(),
            application: record.application.clone(),
            recipient: actor.username.clone(),
            file: file.name.clone(),
            bytes: file.bytes,
            sha256: file.sha256.clone(),
        });
        Ok(Response::new(pb::RequestDownloadResponse {
            url: self.delivery.download_url(&issued.token),
            token: issued.token.to_string(),
            expires_at: issued.expires_at.timestamp(),
            bytes: file.bytes,
            sha256: file.sha256,
        }))
    }

    async fn declare_deletion(
        &self,
        request: Request<pb::DeclareDeletionRequest>,
    ) -> Reply<pb::DeclareDeletionResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let audit_seq = self
            .delivery
            .policy
            .declare_deletion(&actor, &origin, &r.application_id, &r.statement)
            .await?;
        Ok(Response::new(pb::DeclareDeletionResponse { audit_seq }))
    }

    async fn trace_leak(&self, request: Request<tonic::Streaming<pb::TraceLeakChunk>>) -> Reply<pb::TraceLeakResponse> {
        let (origin, actor, mut chunks) = self.authenticated(request).await?;
        // The role first: someone who may not trace learns nothing about which releases exist, and nothing of
        // the file is read.
        self.delivery.policy.check_trace_role(&actor, &origin).await?;
        let first = chunks.message().await?.ok_or_else(|| {
            status_with_reason(Code::InvalidArgument, "BAD_INPUT", "no file was sent", HashMap::new())
        })?;
        let mut r = first;
        let record = self.record(&r.release_id).await?;
        // Then the approval: the policy service records a refusal; the fingerprint key stays wrapped.
        self.delivery
            .policy
            .admit_trace(&actor, &origin, &record.application)
            .await?;
        // Only now, for an operator admitted on this approval, the rest of the file.
        let mut content = std::mem::take(&mut r.content);
        while let Some(chunk) = chunks.message().await? {
            if chunk.content.len() > MAX_CHUNK_BYTES || content.len() + chunk.content.len() > MAX_LEAKED_FILE_BYTES {
                return Err(status_with_reason(
                    Code::ResourceExhausted,
                    "FILE_TOO_LARGE",
                    format!(
                        "a leaked file is read up to {} MiB, in chunks of at most 1 MiB",
                        MAX_LEAKED_FILE_BYTES >> 20
                    ),
                    HashMap::new(),
                ));
            }
            content.extend_from_slice(&chunk.content);
        }
        let name = r.file_name.clone();
        let leaked = tokio::task::spawn_blocking(move || trace::read_leaked_bytes(&name, content))
            .await
            .map_err(|e| Status::internal(format!("reading the leaked file: {e}")))?
            .map_err(|e| release_status(&e))?;
        let bound = if r.false_accusation_bound == 0.0 {
            trace::DEFAULT_FALSE_ACCUSATION_BOUND
        } else {
            r.false_accusation_bound
        };
        let table = (!r.table.is_empty()).then_some(r.table.as_str());
        let report = trace::trace(&self.delivery.zone, &record, &leaked, table, bound)
            .await
            .map_err(|e| release_status(&e))?;
        let audit_seq = self
            .delivery
            .policy
            .record_trace(
                &actor,
                &origin,
                &record.application,
                &trace::ledger_details(&report, &r.file_name),
            )
            .await?;
        let report_json =
            serde_json::to_string(&report).map_err(|e| Status::internal(format!("the trace report: {e}")))?;
        Ok(Response::new(pb::TraceLeakResponse { report_json, audit_seq }))
    }

    async fn assess_risk(&self, request: Request<pb::AssessRiskRequest>) -> Reply<pb::AssessRiskResponse> {
        let (origin, actor, r) = self.authenticated(request).await?;
        let extra: Vec<usize> = r.m.iter().map(|&m| m as usize).collect();
        risk::check_extra(&extra).map_err(|e| release_status(&e))?;
        // The role first: whether a release exists is not for someone who may never measure one to learn.
        self.delivery.policy.check_risk_role(&actor, &origin).await?;
        let record = self.record(&r.release_id).await?;
        let promise = self
            .delivery
            .policy
            .admit_risk_review(&actor, &origin, &record.application)
            .await?;
        let measured = match self.delivery.zone.manifest_public_keys() {
            Ok(trusted) => risk::measure(&self.delivery.zone, &record, promise, &extra, &trusted).await,
            Err(e) => Err(e),
        };
        let (outcome, details) = match &measured {
            Ok(report) => (Ok(()), risk::ledger_details(report)),
            Err(e) => (Err(e.reason()), serde_json::Value::Null),
        };
        let audit_seq = self
            .delivery
            .policy
            .record_risk_review(
                &actor,
                &origin,
                &record.application,
                outcome.as_ref().map(|()| &details).map_err(String::as_str),
            )
            .await?;
        let report = measured.map_err(|e| release_status(&e))?;
        let report_json =
            serde_json::to_string(&report).map_err(|e| Status::internal(format!("the risk report: {e}")))?;
        Ok(Response::new(pb::AssessRiskResponse { report_json, audit_seq }))
    }
}

/// The gRPC server on `listener` (TLS), as a future that runs until `shutdown` resolves.
pub(super) fn serve(
    delivery: Delivery,
    listener: TcpListener,
    tls: &DeliveryTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), DeliveryError>> + Send + 'static, DeliveryError> {
    let mut server = Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .tls_config(tls.tonic_config())
        .map_err(|e| DeliveryError::Tls(e.to_string()))?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = server.add_service(
        AuditedReleaseGrpc {
            inner: ReleaseGrpc::new(delivery),
        }
        .into_server()
        .max_decoding_message_size(MAX_CHUNK_BYTES + 64 * 1024),
    );
    Ok(async move {
        router.serve_with_incoming_shutdown(incoming, shutdown).await?;
        Ok(())
    })
}
