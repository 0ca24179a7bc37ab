//! `tokumei.policy.v1.ReleaseZoneService`: how the release zone asks the committee zone, without holding its keys.
//!
//! The release zone faces researchers over the network; if it held the policy database or the key that signs
//! sessions, whoever broke into it could approve an application or mint a chair's session. So it holds neither:
//! it proves who it is with its client certificate (CN [`RELEASE_COMMON_NAME`], issued by the CA given to
//! `tokumei policy serve --zone-client-ca`), forwards each researcher's own session, and this service
//! authenticates the person, decides (role, recipient, bans, expiry, revocation, limits) and records. What the
//! zone reports on its own (its refusals, each HTTPS transfer, each call it served) is accepted only as a
//! release-zone event ([`release_zone_event`]); it cannot write a committee entry. Every call from anyone else —
//! a person's session, a hospital's or the core's certificate — is `PERMISSION_DENIED` / [`NOT_THE_RELEASE_ZONE`]
//! and on the ledger as `rpc.<Method>`.

use std::collections::HashMap;

use tokumei_proto::policy::v1 as pb;
use tokumei_proto::policy::v1::release_zone_service_server::{ReleaseZoneService, ReleaseZoneServiceServer};
use tonic::{Code, Request, Response, Status};

use super::audited::record_call;
use super::core_orders::require_zone;
use super::zone_pins::ZonePins;
use super::{Reply, convert, origin_of, policy_status, status_with_reason};
use crate::audit_ledger::{AuditEvent, Outcome};
use crate::authorization::{Action, Actor};
use crate::committee::UseKind;
use crate::service::{Origin, Policy};

/// Subject CN of the release zone's client certificate (issued by `tokumei pki init`).
pub const RELEASE_COMMON_NAME: &str = "tokumei-release";

/// `ErrorInfo.reason` for a caller that did not present the release zone's certificate.
pub const NOT_THE_RELEASE_ZONE: &str = "NOT_THE_RELEASE_ZONE";

/// `ErrorInfo.reason` for an event the release zone may not record (a committee action, say).
pub const NOT_A_RELEASE_EVENT: &str = "NOT_A_RELEASE_EVENT";

/// Whether `action` is something the release zone observes itself, and so may report: the calls its
/// `ReleaseService` served, its own refusals of a download, and each HTTPS transfer. Everything else (votes,
/// decisions, provisions, logins...) is decided and recorded here, never reported.
pub fn release_zone_event(action: &str) -> bool {
    matches!(
        action,
        "rpc.ListReleases"
            | "rpc.RequestDownload"
            | "rpc.DeclareDeletion"
            | "rpc.TraceLeak"
            | "rpc.AssessRisk"
            | "rpc.CompleteBuild"
            | "release.key_rotated"
            | "download_release"
            | "download.transfer"
    )
}

/// A reason code as the zones report them: 1–64 of `A-Z`, `0-9` and `_` (never free text, which could carry a
/// value into the ledger).
fn is_reason_code(reason: &str) -> bool {
    (1..=64).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn invalid(message: &str) -> Status {
    status_with_reason(Code::InvalidArgument, "INVALID_ARGUMENT", message, HashMap::new())
}

/// The service over the [`Policy`] facade; refusals of callers other than the release zone recorded.
#[derive(Debug, Clone)]
pub struct ReleaseZoneGrpc {
    policy: Policy,
    pins: Option<ZonePins>,
}

impl ReleaseZoneGrpc {
    /// The service over `policy`.
    pub fn new(policy: Policy) -> ReleaseZoneGrpc {
        ReleaseZoneGrpc { policy, pins: None }
    }

    /// Admits only the release zone's pinned certificates.
    pub fn with_pins(mut self, pins: Option<ZonePins>) -> ReleaseZoneGrpc {
        self.pins = pins;
        self
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> ReleaseZoneServiceServer<ReleaseZoneGrpc> {
        ReleaseZoneServiceServer::new(self)
    }

    /// Runs `act` for the release zone only. The zone's own calls are not recorded here (the zone records the
    /// researcher's call it is serving, as `rpc.<ReleaseService method>`, and every decision is recorded by the
    /// facade); a refused caller is, as `rpc.<method>`.
    async fn zone_only<T, R>(
        &self,
        method: &str,
        request: Request<T>,
        act: impl AsyncFnOnce(T) -> Result<R, Status>,
    ) -> Reply<R> {
        if let Err(refusal) = require_zone(
            &request,
            RELEASE_COMMON_NAME,
            NOT_THE_RELEASE_ZONE,
            "call the release zone's service",
            self.pins.as_ref(),
        ) {
            let origin = origin_of(&request);
            return record_call(
                &self.policy,
                "release zone service",
                method,
                &origin,
                "anonymous",
                Err(refusal),
            )
            .await;
        }
        act(request.into_inner()).await.map(Response::new)
    }

    async fn person(&self, session: &str) -> Result<Actor, Status> {
        self.policy.authenticate(session).await.map_err(|e| policy_status(&e))
    }
}

#[tonic::async_trait]
impl ReleaseZoneService for ReleaseZoneGrpc {
    async fn authenticate(&self, request: Request<pb::ZoneSession>) -> Reply<pb::ZoneCaller> {
        self.zone_only("Authenticate", request, async |r: pb::ZoneSession| {
            let actor = self.person(&r.session).await?;
            Ok(pb::ZoneCaller {
                username: actor.username,
                roles: actor.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            })
        })
        .await
    }

    async fn check_download_role(&self, request: Request<pb::ZoneSession>) -> Reply<pb::Empty> {
        self.zone_only("CheckDownloadRole", request, async |r: pb::ZoneSession| {
            let actor = self.person(&r.session).await?;
            self.policy
                .check_role(&actor, Action::DownloadRelease, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn admit_download(&self, request: Request<pb::ZoneDownload>) -> Reply<pb::Empty> {
        self.zone_only("AdmitDownload", request, async |r: pb::ZoneDownload| {
            let actor = self.person(&r.session).await?;
            if r.rows < 0 {
                return Err(invalid("rows must not be negative"));
            }
            let tables = convert::tables_from_proto(&r.tables);
            let origin = Origin(&r.origin);
            self.policy
                .admit_use(&actor, &r.application_id, UseKind::Download, &tables, origin)
                .await
                .map_err(|e| policy_status(&e))?;
            self.policy
                .record_provision(&actor, &r.application_id, &r.description, r.rows, origin)
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn declare_deletion(&self, request: Request<pb::ZoneDeletion>) -> Reply<pb::ZoneAuditAck> {
        self.zone_only("DeclareDeletion", request, async |r: pb::ZoneDeletion| {
            let actor = self.person(&r.session).await?;
            let entry = self
                .policy
                .declare_deletion(&actor, &r.application_id, &r.statement, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::ZoneAuditAck { audit_seq: entry.seq })
        })
        .await
    }

    async fn recheck_transfer(&self, request: Request<pb::ZoneTransfer>) -> Reply<pb::Empty> {
        self.zone_only("RecheckTransfer", request, async |r: pb::ZoneTransfer| {
            self.policy
                .recheck_transfer(&r.recipient, &r.application_id)
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn check_trace_role(&self, request: Request<pb::ZoneSession>) -> Reply<pb::Empty> {
        self.zone_only("CheckTraceRole", request, async |r: pb::ZoneSession| {
            let actor = self.person(&r.session).await?;
            self.policy
                .check_role(&actor, Action::TraceLeak, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn admit_build(&self, request: Request<pb::ZoneBuildAdmission>) -> Reply<pb::ZoneBuild> {
        self.zone_only("AdmitBuild", request, async |r: pb::ZoneBuildAdmission| {
            let actor = self.person(&r.session).await?;
            let (scope, report) = self
                .policy
                .admit_build_delivery(&actor, r.order_id, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            let scope_json = serde_json::to_string(&scope).map_err(|_| Status::internal("scope not serialisable"))?;
            Ok(pb::ZoneBuild {
                scope_json,
                report_json: report.to_string(),
            })
        })
        .await
    }

    async fn publish_intake_key(&self, request: Request<pb::ZoneIntakeKey>) -> Reply<pb::ZoneAuditAck> {
        let origin = origin_of(&request);
        self.zone_only("PublishIntakeKey", request, async |r: pb::ZoneIntakeKey| {
            let entry = self
                .policy
                .publish_intake_key(&r.public_key, Origin(&origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::ZoneAuditAck {
                audit_seq: entry.map_or(0, |e| e.seq),
            })
        })
        .await
    }

    async fn record_build(&self, request: Request<pb::ZoneBuildRecord>) -> Reply<pb::ZoneAuditAck> {
        self.zone_only("RecordBuild", request, async |r: pb::ZoneBuildRecord| {
            let actor = self.person(&r.session).await?;
            // The zone names the release it delivered; what the ledger says of it is the policy service's.
            let outcome = if r.ok {
                let details: serde_json::Value =
                    serde_json::from_str(&r.details_json).map_err(|_| invalid("details must be a JSON object"))?;
                let release = details["release"]
                    .as_str()
                    .ok_or_else(|| invalid("details name the release"))?;
                Ok(release.to_owned())
            } else {
                Err(r.reason)
            };
            let entry = self
                .policy
                .record_build_delivery(&actor, r.order_id, &r.application_id, outcome, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::ZoneAuditAck { audit_seq: entry.seq })
        })
        .await
    }

    async fn admit_trace(&self, request: Request<pb::ZoneApplicationAct>) -> Reply<pb::Empty> {
        self.zone_only("AdmitTrace", request, async |r: pb::ZoneApplicationAct| {
            let actor = self.person(&r.session).await?;
            self.policy
                .admit_trace(&actor, &r.application_id, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn record_trace(&self, request: Request<pb::ZoneTraceRecord>) -> Reply<pb::ZoneAuditAck> {
        self.zone_only("RecordTrace", request, async |r: pb::ZoneTraceRecord| {
            let actor = self.person(&r.session).await?;
            let details: serde_json::Value =
                serde_json::from_str(&r.details_json).map_err(|_| invalid("details must be a JSON object"))?;
            if !details.is_object() {
                return Err(invalid("details must be a JSON object"));
            }
            let entry = self
                .policy
                .record_trace(&actor, &r.application_id, details, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::ZoneAuditAck { audit_seq: entry.seq })
        })
        .await
    }

    async fn check_risk_role(&self, request: Request<pb::ZoneSession>) -> Reply<pb::Empty> {
        self.zone_only("CheckRiskRole", request, async |r: pb::ZoneSession| {
            let actor = self.person(&r.session).await?;
            self.policy
                .check_role(&actor, Action::AssessReleaseRisk, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn admit_risk_review(&self, request: Request<pb::ZoneApplicationAct>) -> Reply<pb::ZonePrivacyModel> {
        self.zone_only("AdmitRiskReview", request, async |r: pb::ZoneApplicationAct| {
            let actor = self.person(&r.session).await?;
            let app = self
                .policy
                .admit_release_review(&actor, &r.application_id, Action::AssessReleaseRisk, Origin(&r.origin))
                .await
                .map_err(|e| policy_status(&e))?;
            let model = app.conditions.as_ref().and_then(|c| c.privacy);
            Ok(pb::ZonePrivacyModel {
                present: model.is_some(),
                k: model.map_or(0, |m| m.k),
                m: model.map_or(0, |m| m.m),
            })
        })
        .await
    }

    async fn record_risk_review(&self, request: Request<pb::ZoneReviewRecord>) -> Reply<pb::ZoneAuditAck> {
        self.zone_only("RecordRiskReview", request, async |r: pb::ZoneReviewRecord| {
            let actor = self.person(&r.session).await?;
            let origin = Origin(&r.origin);
            let action = Action::AssessReleaseRisk;
            let entry = if r.failure_reason.is_empty() {
                let details: serde_json::Value =
                    serde_json::from_str(&r.details_json).map_err(|_| invalid("details must be a JSON object"))?;
                if !details.is_object() {
                    return Err(invalid("details must be a JSON object"));
                }
                self.policy
                    .record_release_review(&actor, &r.application_id, action, details, origin)
                    .await
            } else {
                if !is_reason_code(&r.failure_reason) {
                    return Err(invalid("the failure reason must be a reason code (A-Z and _)"));
                }
                self.policy
                    .record_release_review_failure(&actor, &r.application_id, action, &r.failure_reason, origin)
                    .await
            }
            .map_err(|e| policy_status(&e))?;
            Ok(pb::ZoneAuditAck { audit_seq: entry.seq })
        })
        .await
    }

    async fn visible_applications(&self, request: Request<pb::ZoneVisibility>) -> Reply<pb::ZoneVisibility> {
        self.zone_only("VisibleApplications", request, async |r: pb::ZoneVisibility| {
            let actor = self.person(&r.session).await?;
            let mut visible = Vec::new();
            for id in r.application_ids {
                if self
                    .policy
                    .may_view_application(&actor, &id)
                    .await
                    .map_err(|e| policy_status(&e))?
                {
                    visible.push(id);
                }
            }
            Ok(pb::ZoneVisibility {
                session: String::new(),
                origin: String::new(),
                application_ids: visible,
            })
        })
        .await
    }

    async fn record_event(&self, request: Request<pb::ZoneEvent>) -> Reply<pb::ZoneAuditAck> {
        let origin = origin_of(&request);
        self.zone_only("RecordEvent", request, async |r: pb::ZoneEvent| {
            if !release_zone_event(&r.action) {
                // The zone's certificate writing a committee entry is an intrusion: on the ledger, as the zone.
                let refusal = status_with_reason(
                    Code::PermissionDenied,
                    NOT_A_RELEASE_EVENT,
                    "the release zone may record only the calls it served, its own refusals and its transfers",
                    HashMap::new(),
                );
                return record_call(
                    &self.policy,
                    "release zone service",
                    "RecordEvent",
                    &origin,
                    RELEASE_COMMON_NAME,
                    Err(refusal),
                )
                .await;
            }
            let outcome = Outcome::parse(&r.outcome).ok_or_else(|| invalid("outcome must be ok, denied or failed"))?;
            let mut details: serde_json::Value = if r.details_json.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::from_str(&r.details_json).map_err(|_| invalid("details must be a JSON object"))?
            };
            let Some(map) = details.as_object_mut() else {
                return Err(invalid("details must be a JSON object"));
            };
            map.insert("reported_by".into(), serde_json::json!(RELEASE_COMMON_NAME));
            let mut event = AuditEvent::new(&r.actor, &r.action, &r.resource, outcome)
                .source(&r.origin)
                .details(details);
            if !r.reason.is_empty() {
                event = event.reason(&r.reason);
            }
            let entry = self.policy.audit(event).await.map_err(|e| policy_status(&e))?;
            Ok(pb::ZoneAuditAck { audit_seq: entry.seq })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_zone_reports_only_what_it_observes() {
        for ok in [
            "rpc.RequestDownload",
            "rpc.TraceLeak",
            "rpc.AssessRisk",
            "rpc.CompleteBuild",
            "download.transfer",
            "download_release",
        ] {
            assert!(release_zone_event(ok), "{ok}");
        }
        for forged in [
            "decision",
            "vote",
            "login.success",
            "rpc.Decide",
            "provision",
            "user.roles",
            "core.erase",
            "trace.leak",
            "rpc.listreleases",
            "",
        ] {
            assert!(!release_zone_event(forged), "{forged}");
        }
    }
}
