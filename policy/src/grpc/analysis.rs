//! `tokumei.analysis.v1.AnalysisService`: the remote analysis environment over the [`Policy`] facade. Every call
//! is authenticated by the caller's session, decided by the facade (which audits the act) and recorded as
//! `rpc.<Method>` with its outcome, refusals included.

use tokumei_proto::analysis::v1 as pb;
use tokumei_proto::analysis::v1::analysis_service_server::{AnalysisService, AnalysisServiceServer};
use tokumei_proto::policy::v1 as policy_pb;
use tonic::{Request, Response, Status};

use super::audited::{caller, record_call};
use super::{Reply, bearer_token, convert, origin_of, policy_status};
use crate::analysis::OutputDecision;
use crate::authorization::Actor;
use crate::error::PolicyError;
use crate::service::{Origin, Policy};

/// The service over the [`Policy`] facade.
#[derive(Debug, Clone)]
pub struct AnalysisGrpc {
    policy: Policy,
}

impl AnalysisGrpc {
    /// The service over `policy`.
    pub fn new(policy: Policy) -> AnalysisGrpc {
        AnalysisGrpc { policy }
    }

    /// As a tonic service.
    pub fn into_server(self) -> AnalysisServiceServer<AnalysisGrpc> {
        AnalysisServiceServer::new(self)
    }

    async fn authenticated<T>(&self, request: Request<T>) -> Result<(String, Actor, T), Status> {
        let origin = origin_of(&request);
        let token = bearer_token(request.metadata())?;
        let actor = self.policy.authenticate(token).await.map_err(|e| policy_status(&e))?;
        Ok((origin, actor, request.into_inner()))
    }

    async fn record<T>(&self, method: &str, origin: &str, who: &str, result: Reply<T>) -> Reply<T> {
        record_call(&self.policy, "analysis service", method, origin, who, result).await
    }
}

fn json(value: &impl serde::Serialize) -> Result<policy_pb::JsonDocument, Status> {
    serde_json::to_string(value)
        .map(|json| policy_pb::JsonDocument { json })
        .map_err(|_| Status::internal("the answer could not be written"))
}

fn refused(e: PolicyError) -> Status {
    policy_status(&e)
}

fn application_filter(id: &str) -> Option<&str> {
    (!id.trim().is_empty()).then_some(id.trim())
}

#[tonic::async_trait]
impl AnalysisService for AnalysisGrpc {
    async fn submit(&self, request: Request<pb::WorkspaceRequest>) -> Reply<policy_pb::CoreOrderStatus> {
        let (origin, who) = caller(&self.policy, &request).await;
        let result = async {
            let (origin, actor, r) = self.authenticated(request).await?;
            let body: serde_json::Value = serde_json::from_str(&r.request_json)
                .map_err(|_| refused(PolicyError::Invalid("the request is not JSON".into())))?;
            let key = (!r.recipient_key.is_empty()).then_some(r.recipient_key);
            let status = self
                .policy
                .request_workspace(&actor, &r.application_id, body, key, Origin(&origin))
                .await
                .map_err(refused)?;
            Ok(Response::new(convert::order_status_to_proto(&status)))
        }
        .await;
        self.record("Submit", &origin, &who, result).await
    }

    async fn list_outputs(&self, request: Request<pb::OutputFilter>) -> Reply<policy_pb::JsonDocument> {
        let (origin, who) = caller(&self.policy, &request).await;
        let result = async {
            let (_, actor, r) = self.authenticated(request).await?;
            let list = self
                .policy
                .list_outputs(&actor, application_filter(&r.application_id))
                .await
                .map_err(refused)?;
            Ok(Response::new(json(&list)?))
        }
        .await;
        self.record("ListOutputs", &origin, &who, result).await
    }

    async fn get_output(&self, request: Request<pb::OutputRef>) -> Reply<policy_pb::JsonDocument> {
        let (origin, who) = caller(&self.policy, &request).await;
        let result = async {
            let (origin, actor, r) = self.authenticated(request).await?;
            let output = self
                .policy
                .output(&actor, r.id, Origin(&origin))
                .await
                .map_err(refused)?;
            Ok(Response::new(json(&output)?))
        }
        .await;
        self.record("GetOutput", &origin, &who, result).await
    }

    async fn decide_output(&self, request: Request<pb::OutputDecision>) -> Reply<policy_pb::JsonDocument> {
        let (origin, who) = caller(&self.policy, &request).await;
        let result = async {
            let (origin, actor, r) = self.authenticated(request).await?;
            let decision = OutputDecision::parse(&r.decision).map_err(refused)?;
            let output = self
                .policy
                .decide_output(&actor, r.id, decision, &r.comment, Origin(&origin))
                .await
                .map_err(refused)?;
            Ok(Response::new(json(&output)?))
        }
        .await;
        self.record("DecideOutput", &origin, &who, result).await
    }

    async fn fetch_output(&self, request: Request<pb::OutputRef>) -> Reply<pb::SignedOutput> {
        let (origin, who) = caller(&self.policy, &request).await;
        let result = async {
            let (origin, actor, r) = self.authenticated(request).await?;
            let s = self
                .policy
                .fetch_output(&actor, r.id, Origin(&origin))
                .await
                .map_err(refused)?;
            Ok(Response::new(pb::SignedOutput {
                document: s.document,
                sha256: s.sha256,
                signature: s.signature,
                public_key: s.public_key,
            }))
        }
        .await;
        self.record("FetchOutput", &origin, &who, result).await
    }

    async fn certify_user(&self, request: Request<pb::Certification>) -> Reply<policy_pb::JsonDocument> {
        let (origin, who) = caller(&self.policy, &request).await;
        let result = async {
            let (origin, actor, r) = self.authenticated(request).await?;
            let expires_on = r
                .expires_on
                .parse()
                .map_err(|_| refused(PolicyError::Invalid("expires_on is YYYY-MM-DD".into())))?;
            let user = self
                .policy
                .certify_user(&actor, &r.username, &r.reference, expires_on, Origin(&origin))
                .await
                .map_err(refused)?;
            Ok(Response::new(json(&user)?))
        }
        .await;
        self.record("CertifyUser", &origin, &who, result).await
    }

    async fn usage(&self, request: Request<pb::OutputFilter>) -> Reply<policy_pb::JsonDocument> {
        let (origin, who) = caller(&self.policy, &request).await;
        let result = async {
            let (origin, actor, r) = self.authenticated(request).await?;
            let usage = self
                .policy
                .analysis_usage(&actor, application_filter(&r.application_id), Origin(&origin))
                .await
                .map_err(refused)?;
            Ok(Response::new(json(&usage)?))
        }
        .await;
        self.record("Usage", &origin, &who, result).await
    }
}
