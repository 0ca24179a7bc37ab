//! The release zone's line to the committee zone: `tokumei.policy.v1.ReleaseZoneService` over mutual TLS.
//!
//! The release zone faces researchers; it must not hold what would let an intruder there act as the committee.
//! So it opens no policy database and loads no committee key. It presents its own client certificate (CN
//! `tokumei-release`), forwards each researcher's session for the policy service to authenticate, and asks that
//! service every question about who may receive what. What it records itself — the calls it served, its own
//! refusals, each transfer — the policy service accepts only as release-zone events and signs into the ledger.
//!
//! Refusals keep the policy service's status (its `ErrorInfo` reason travels unchanged to the researcher).

use std::path::PathBuf;
use std::time::Duration;

use tokumei_policy::audit_ledger::AuditEvent;
use tokumei_policy::committee::TableRequest;
use tokumei_proto::policy::v1 as pb;
use tokumei_proto::policy::v1::release_zone_service_client::ReleaseZoneServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use zeroize::Zeroizing;

use super::DeliveryError;

/// The stable reason code of a status from the policy service (its `ErrorInfo`), or the gRPC code's name.
pub use tokumei_policy::grpc::audited::reason_of;

/// Where the policy service is and how the release zone proves who it is.
#[derive(Debug, Clone)]
pub struct PolicyLinkConfig {
    /// The policy service (`https://host:port`).
    pub url: String,
    /// The CA that issued the policy service's certificate.
    pub ca: PathBuf,
    /// The release zone's client certificate (CN `tokumei-release`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// A connected link; cheap to clone (one HTTP/2 channel, reconnected by tonic when it drops).
#[derive(Debug, Clone)]
pub struct PolicyLink {
    client: ReleaseZoneServiceClient<Channel>,
}

/// A researcher as the policy service authenticated them, with the session to forward on their behalf.
pub struct Caller {
    /// Username.
    pub username: String,
    session: Zeroizing<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Whether the policy service could not answer (down, unreachable, its database unavailable), as opposed to a
/// refusal: the caller then reports unavailability and sends nothing.
pub fn unavailable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Internal | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    )
}

impl PolicyLink {
    /// Connects to the policy service named by `config` with the release zone's certificate.
    pub async fn connect(config: &PolicyLinkConfig) -> Result<PolicyLink, DeliveryError> {
        if !config.url.starts_with("https://") {
            return Err(DeliveryError::Config(format!(
                "the policy service URL {:?} must start with https:// (the release zone proves itself with its \
                 certificate)",
                config.url
            )));
        }
        let tls =
            tokumei_platform::client::mutual_tls(&config.ca, &config.cert, &config.key).map_err(|(p, source)| {
                DeliveryError::Io {
                    what: format!("read {}", p.display()),
                    source,
                }
            })?;
        let channel = Endpoint::from_shared(config.url.clone())
            .map_err(|e| DeliveryError::Config(format!("policy service URL: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .tls_config(tls)
            .map_err(|e| DeliveryError::Tls(e.to_string()))?
            .connect()
            .await
            .map_err(|e| DeliveryError::Config(format!("cannot reach the policy service at {}: {e}", config.url)))?;
        Ok(PolicyLink {
            client: ReleaseZoneServiceClient::new(channel),
        })
    }

    /// Who holds `session` (the policy service checks its signature, expiry and revocation).
    pub async fn authenticate(&self, session: &str, origin: &str) -> Result<Caller, Status> {
        let caller = self
            .client
            .clone()
            .authenticate(pb::ZoneSession {
                session: session.to_owned(),
                origin: origin.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Caller {
            username: caller.username,
            session: Zeroizing::new(session.to_owned()),
        })
    }

    /// Whether `caller`'s roles may download at all (asked before any release record is read).
    pub async fn check_download_role(&self, caller: &Caller, origin: &str) -> Result<(), Status> {
        self.client
            .clone()
            .check_download_role(pb::ZoneSession {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Admits one download of `description` (`rows` rows of `tables`) under `application`, counting it and
    /// recording the provision.
    pub async fn admit_download(
        &self,
        caller: &Caller,
        origin: &str,
        application: &str,
        tables: &[TableRequest],
        description: &str,
        rows: i64,
    ) -> Result<(), Status> {
        self.client
            .clone()
            .admit_download(pb::ZoneDownload {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                application_id: application.to_owned(),
                tables: tokumei_policy::grpc::convert::tables_to_proto(tables),
                description: description.to_owned(),
                rows,
            })
            .await?;
        Ok(())
    }

    /// Records `caller`'s declaration that every copy under `application` was deleted; the ledger entry's number.
    pub async fn declare_deletion(
        &self,
        caller: &Caller,
        origin: &str,
        application: &str,
        statement: &str,
    ) -> Result<i64, Status> {
        let ack = self
            .client
            .clone()
            .declare_deletion(pb::ZoneDeletion {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                application_id: application.to_owned(),
                statement: statement.to_owned(),
            })
            .await?
            .into_inner();
        Ok(ack.audit_seq)
    }

    /// Whether `recipient` may still receive data under `application` (revocation, bans, expiry): asked at every
    /// transfer, where there is a token and no session.
    pub async fn recheck_transfer(&self, recipient: &str, application: &str) -> Result<(), Status> {
        self.client
            .clone()
            .recheck_transfer(pb::ZoneTransfer {
                recipient: recipient.to_owned(),
                application_id: application.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Whether `caller`'s roles may trace leaks at all (asked before any release record or leaked file is read).
    pub async fn check_trace_role(&self, caller: &Caller, origin: &str) -> Result<(), Status> {
        self.client
            .clone()
            .check_trace_role(pb::ZoneSession {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Whether `caller` may trace a leak of a release of `application` (asked before the fingerprint key is
    /// unwrapped; a refusal is recorded by the policy service).
    pub async fn admit_trace(&self, caller: &Caller, origin: &str, application: &str) -> Result<(), Status> {
        self.client
            .clone()
            .admit_trace(pb::ZoneApplicationAct {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                application_id: application.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Records a trace's verdict (`details`: counts, recipients' names and scores); the ledger entry's number.
    pub async fn record_trace(
        &self,
        caller: &Caller,
        origin: &str,
        application: &str,
        details: &serde_json::Value,
    ) -> Result<i64, Status> {
        let ack = self
            .client
            .clone()
            .record_trace(pb::ZoneTraceRecord {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                application_id: application.to_owned(),
                details_json: details.to_string(),
            })
            .await?
            .into_inner();
        Ok(ack.audit_seq)
    }

    /// Whether `caller`'s roles may measure the attack on a release at all (asked before any record is read).
    pub async fn check_risk_role(&self, caller: &Caller, origin: &str) -> Result<(), Status> {
        self.client
            .clone()
            .check_risk_role(pb::ZoneSession {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Admits a measurement on a release of `application`; the approval's (k, m), `None` when it sets no privacy
    /// model.
    pub async fn admit_risk_review(
        &self,
        caller: &Caller,
        origin: &str,
        application: &str,
    ) -> Result<Option<(u32, u32)>, Status> {
        let model = self
            .client
            .clone()
            .admit_risk_review(pb::ZoneApplicationAct {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                application_id: application.to_owned(),
            })
            .await?
            .into_inner();
        Ok(model.present.then_some((model.k, model.m)))
    }

    /// Records a measurement: its figures, or the reason code it failed with; the ledger entry's number.
    pub async fn record_risk_review(
        &self,
        caller: &Caller,
        origin: &str,
        application: &str,
        outcome: Result<&serde_json::Value, &str>,
    ) -> Result<i64, Status> {
        let (details_json, failure_reason) = match outcome {
            Ok(details) => (details.to_string(), String::new()),
            Err(reason) => (String::new(), reason.to_owned()),
        };
        let ack = self
            .client
            .clone()
            .record_risk_review(pb::ZoneReviewRecord {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                application_id: application.to_owned(),
                details_json,
                failure_reason,
            })
            .await?
            .into_inner();
        Ok(ack.audit_seq)
    }

    /// Claims build order `order` for `caller` (an operator): the scope the order fixed (JSON) and the core's report
    /// on it (JSON). The policy service admits the approval again and records a refusal.
    pub async fn admit_build(&self, caller: &Caller, origin: &str, order: u64) -> Result<(String, String), Status> {
        let build = self
            .client
            .clone()
            .admit_build(pb::ZoneBuildAdmission {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                order_id: order,
            })
            .await?
            .into_inner();
        Ok((build.scope_json, build.report_json))
    }

    /// Records the zone's half of build order `order`: the release delivered, or the reason code it failed with.
    pub async fn record_build(
        &self,
        caller: &Caller,
        origin: &str,
        order: u64,
        application: &str,
        outcome: Result<&serde_json::Value, &str>,
    ) -> Result<i64, Status> {
        let (ok, details_json, reason) = match outcome {
            Ok(details) => (true, details.to_string(), String::new()),
            Err(reason) => (false, String::new(), reason.to_owned()),
        };
        let ack = self
            .client
            .clone()
            .record_build(pb::ZoneBuildRecord {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                order_id: order,
                application_id: application.to_owned(),
                ok,
                details_json,
                reason,
            })
            .await?
            .into_inner();
        Ok(ack.audit_seq)
    }

    /// Publishes the zone's intake key to the policy service (which signs it into build orders).
    pub async fn publish_intake_key(&self, public_key: &str) -> Result<i64, Status> {
        let ack = self
            .client
            .clone()
            .publish_intake_key(pb::ZoneIntakeKey {
                public_key: public_key.to_owned(),
            })
            .await?
            .into_inner();
        Ok(ack.audit_seq)
    }

    /// Which of `applications` `caller` may see.
    pub async fn visible_applications(
        &self,
        caller: &Caller,
        origin: &str,
        applications: Vec<String>,
    ) -> Result<std::collections::BTreeSet<String>, Status> {
        let visible = self
            .client
            .clone()
            .visible_applications(pb::ZoneVisibility {
                session: caller.session.to_string(),
                origin: origin.to_owned(),
                application_ids: applications,
            })
            .await?
            .into_inner();
        Ok(visible.application_ids.into_iter().collect())
    }

    /// Appends an event the release zone observed itself; the ledger entry's number.
    pub async fn record(&self, event: &AuditEvent) -> Result<i64, Status> {
        let ack = self
            .client
            .clone()
            .record_event(pb::ZoneEvent {
                actor: event.actor.clone(),
                action: event.action.clone(),
                resource: event.resource.clone(),
                outcome: event.outcome.as_str().to_owned(),
                reason: event.reason.clone().unwrap_or_default(),
                origin: event.source.clone().unwrap_or_default(),
                details_json: event.details.to_string(),
            })
            .await?
            .into_inner();
        Ok(ack.audit_seq)
    }
}
