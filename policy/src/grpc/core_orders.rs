//! `tokumei.policy.v1.CoreOrderService`: where the core takes its orders and reports on them.
//!
//! Only the core store may call it, and it proves who it is with its certificate: the policy service is started
//! with the CA that issues the core's certificate (`--zone-client-ca`), the TLS layer checks the chain, and
//! this service checks the subject's CN ([`CORE_COMMON_NAME`]). A person's session is not enough, a hospital's
//! certificate from the same CA neither (`PERMISSION_DENIED` / [`NOT_THE_CORE`]). Every call is on the ledger
//! as `rpc.<Method>` with the caller (`tokumei-core` or `anonymous`).

use std::collections::HashMap;

use tokumei_proto::policy::v1 as pb;
use tokumei_proto::policy::v1::core_order_service_server::{CoreOrderService, CoreOrderServiceServer};
use tonic::{Code, Request, Response, Status};

use super::audited::record_call;
use super::zone_pins::ZonePins;
use super::{Reply, origin_of, policy_status, status_with_reason};
use crate::core_orders::OrderOutcome;
use crate::service::{CORE_IDENTITY, Origin, Policy};

/// Subject CN of the core's client certificate (issued by `tokumei pki init`).
pub const CORE_COMMON_NAME: &str = CORE_IDENTITY;

/// `ErrorInfo.reason` for a caller that did not present the core's certificate.
pub const NOT_THE_CORE: &str = "NOT_THE_CORE";

/// The CN of the request's verified client certificate, if any.
pub(super) fn peer_cn<T>(request: &Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}

/// Refuses every caller but the one presenting a verified certificate with CN `zone` — and, with `pins`, one of
/// the zone's pinned certificates (`PERMISSION_DENIED` with `reason`): the zones' own services admit no person,
/// whatever their session, and no certificate the zone no longer holds.
pub(super) fn require_zone<T>(
    request: &Request<T>,
    zone: &str,
    reason: &str,
    what: &str,
    pins: Option<&ZonePins>,
) -> Result<(), Status> {
    if peer_cn(request).as_deref() == Some(zone) {
        let leaf = request.peer_certs().and_then(|certs| certs.first().cloned());
        match (pins, leaf) {
            (None, _) => return Ok(()),
            (Some(pins), Some(leaf)) if pins.admits(zone, leaf.as_ref()) => return Ok(()),
            _ => tracing::warn!(zone, "a certificate with a zone's name but not pinned was refused"),
        }
    }
    tracing::warn!(zone, "a zone's service refused a caller without the zone's certificate");
    Err(status_with_reason(
        Code::PermissionDenied,
        reason,
        format!("only the certificate with CN {zone} may {what}"),
        HashMap::new(),
    ))
}

/// The service over the [`Policy`] facade; every call recorded.
#[derive(Debug, Clone)]
pub struct CoreOrderGrpc {
    policy: Policy,
    pins: Option<ZonePins>,
}

impl CoreOrderGrpc {
    /// The service over `policy`.
    pub fn new(policy: Policy) -> CoreOrderGrpc {
        CoreOrderGrpc { policy, pins: None }
    }

    /// Admits only the core's pinned certificates.
    pub fn with_pins(mut self, pins: Option<ZonePins>) -> CoreOrderGrpc {
        self.pins = pins;
        self
    }

    /// Refuses every caller but the core.
    fn require_core<T>(&self, request: &Request<T>) -> Result<(), Status> {
        require_zone(
            request,
            CORE_COMMON_NAME,
            NOT_THE_CORE,
            "take or report core orders",
            self.pins.as_ref(),
        )
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> CoreOrderServiceServer<CoreOrderGrpc> {
        CoreOrderServiceServer::new(self)
    }

    async fn record<T>(&self, method: &str, request_origin: &str, caller: &str, result: Reply<T>) -> Reply<T> {
        record_call(
            &self.policy,
            "core order service",
            method,
            request_origin,
            caller,
            result,
        )
        .await
    }
}

fn caller_name<T>(request: &Request<T>) -> &'static str {
    if peer_cn(request).as_deref() == Some(CORE_COMMON_NAME) {
        CORE_IDENTITY
    } else {
        "anonymous"
    }
}

#[tonic::async_trait]
impl CoreOrderService for CoreOrderGrpc {
    async fn take_core_orders(&self, request: Request<pb::CoreState>) -> Reply<pb::SignedCoreOrders> {
        let origin = origin_of(&request);
        let caller = caller_name(&request);
        let result = async {
            self.require_core(&request)?;
            let state = request.get_ref();
            let orders = self
                .policy
                .take_core_orders(state.exclusions_changed_at_ms, Origin(&origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(Response::new(pb::SignedCoreOrders {
                orders: orders
                    .into_iter()
                    .map(|(id, o)| pb::SignedCoreOrder {
                        payload: o.payload,
                        signature: o.signature,
                        id,
                    })
                    .collect(),
            }))
        }
        .await;
        // A poll that hands nothing out is no access to anything: recording it would add two entries a second to
        // the ledger of an idle platform. Refusals and every order handed out are recorded (the latter also as
        // `core.order_taken`).
        if matches!(&result, Ok(r) if r.get_ref().orders.is_empty()) {
            return result;
        }
        self.record("TakeCoreOrders", &origin, caller, result).await
    }

    async fn report_core_order(&self, request: Request<pb::CoreOrderReport>) -> Reply<pb::Empty> {
        let origin = origin_of(&request);
        let caller = caller_name(&request);
        let result = async {
            self.require_core(&request)?;
            let r = request.into_inner();
            let outcome = if r.ok {
                let value = serde_json::from_str(&r.result_json).map_err(|_| {
                    status_with_reason(
                        Code::InvalidArgument,
                        "INVALID_ARGUMENT",
                        "the report is not JSON",
                        HashMap::new(),
                    )
                })?;
                OrderOutcome::Done(value)
            } else {
                OrderOutcome::Failed(r.reason)
            };
            self.policy
                .note_core_exclusions(r.exclusions_changed_at_ms)
                .await
                .map_err(|e| policy_status(&e))?;
            self.policy
                .report_core_order(r.id, outcome, Origin(&origin))
                .await
                .map_err(|e| policy_status(&e))?;
            Ok(Response::new(pb::Empty {}))
        }
        .await;
        self.record("ReportCoreOrder", &origin, caller, result).await
    }
}
