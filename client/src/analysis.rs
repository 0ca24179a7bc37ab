//! A researcher's, an output checker's and an overseer's client of the analysis environment
//! (`tokumei.analysis.v1.AnalysisService`, served by the policy service). A workspace request travels as a core
//! order: this waits for the core's report and opens what the core sealed to the key made here for the one
//! request (a query's rows, an analysis's values) — the policy service that relays the report never reads them,
//! and the private key never leaves this process.

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use tokumei_keys::sealed_result::{RecipientKey, order_context};
use tokumei_proto::analysis::v1 as pb;

use crate::core_orders::{WaitOptions, wait_for};
use crate::policy::{PolicyClient, ServiceOptions};
use crate::refused;

/// A workspace's answer: the order's number (a query's or a result's number in the workspace), the report in clear
/// (counts, codes, the checks' findings) and what was sealed to the caller, opened.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The order's number.
    pub order: u64,
    /// The core's report.
    pub report: Value,
    /// A query's rows or an analysis's values, if the request read data.
    pub private: Option<Value>,
}

/// Sends `request` (a workspace request as JSON) to the workspace of `application` and waits for the answer.
pub async fn ask(
    service: &ServiceOptions,
    wait: &WaitOptions,
    application: &str,
    request: Value,
    progress: bool,
) -> Result<Answer> {
    let reads = matches!(
        request.get("request").and_then(Value::as_str),
        Some("query" | "analyse")
    );
    let key = reads.then(RecipientKey::generate);
    let mut policy = PolicyClient::connect(service).await?;
    let message = policy.request(pb::WorkspaceRequest {
        application_id: application.to_owned(),
        request_json: request.to_string(),
        recipient_key: key.as_ref().map(|k| k.public_hex().to_owned()).unwrap_or_default(),
    })?;
    let status = policy.analysis.submit(message).await.map_err(refused)?.into_inner();
    let status = wait_for(&mut policy, status, wait, progress).await?;
    let report: Value = serde_json::from_str(&status.result_json).context("the core's report")?;
    let private = match (&key, report.get("sealed").and_then(Value::as_str)) {
        (Some(key), Some(sealed)) => {
            let sealed = hex::decode(sealed).map_err(|_| anyhow!("[REPORT_INCOMPLETE] the sealed part is not hex"))?;
            let text = key
                .open(&sealed, &order_context(status.id))
                .map_err(|e| anyhow!("[RESULT_UNREADABLE] {e}"))?;
            Some(serde_json::from_slice(&text).context("the sealed result")?)
        }
        (Some(_), None) if status.state == "done" => {
            anyhow::bail!("[REPORT_INCOMPLETE] the core's report carries no sealed result")
        }
        _ => None,
    };
    Ok(Answer {
        order: status.id,
        report,
        private,
    })
}

fn document(json: &str) -> Result<Value> {
    serde_json::from_str(json).context("the service's answer")
}

/// The output requests the caller may see.
pub async fn outputs(service: &ServiceOptions, application: Option<&str>) -> Result<Value> {
    let mut policy = PolicyClient::connect(service).await?;
    let r = policy.request(pb::OutputFilter {
        application_id: application.unwrap_or_default().to_owned(),
    })?;
    document(
        &policy
            .analysis
            .list_outputs(r)
            .await
            .map_err(refused)?
            .into_inner()
            .json,
    )
}

/// One output request with its content and findings.
pub async fn output(service: &ServiceOptions, id: u64) -> Result<Value> {
    let mut policy = PolicyClient::connect(service).await?;
    let r = policy.request(pb::OutputRef { id })?;
    document(&policy.analysis.get_output(r).await.map_err(refused)?.into_inner().json)
}

/// An output checker's decision (`approve`, `changes`, `refuse`).
pub async fn decide(service: &ServiceOptions, id: u64, decision: &str, comment: &str) -> Result<Value> {
    let mut policy = PolicyClient::connect(service).await?;
    let r = policy.request(pb::OutputDecision {
        id,
        decision: decision.to_owned(),
        comment: comment.to_owned(),
    })?;
    document(
        &policy
            .analysis
            .decide_output(r)
            .await
            .map_err(refused)?
            .into_inner()
            .json,
    )
}

/// A released output, its signature checked against the key it names (and against `pinned`, hex, if given).
pub async fn fetch(
    service: &ServiceOptions,
    id: u64,
    pinned: Option<&str>,
) -> Result<tokumei_policy::analysis::SignedOutput> {
    let mut policy = PolicyClient::connect(service).await?;
    let r = policy.request(pb::OutputRef { id })?;
    let s = policy.analysis.fetch_output(r).await.map_err(refused)?.into_inner();
    let signed = tokumei_policy::analysis::SignedOutput {
        document: s.document,
        sha256: s.sha256,
        signature: s.signature,
        public_key: s.public_key,
    };
    let key_hex = pinned.unwrap_or(&signed.public_key);
    let key = tokumei_policy::service_key::ServicePublicKey::from_hex(key_hex).map_err(crate::reason)?;
    if !signed.verify(&key) {
        anyhow::bail!("[SIGNATURE_INVALID] the output's signature does not verify under the platform's key");
    }
    Ok(signed)
}

/// The chair registers a certified user.
pub async fn certify(service: &ServiceOptions, username: &str, reference: &str, expires_on: &str) -> Result<Value> {
    let mut policy = PolicyClient::connect(service).await?;
    let r = policy.request(pb::Certification {
        username: username.to_owned(),
        reference: reference.to_owned(),
        expires_on: expires_on.to_owned(),
    })?;
    document(
        &policy
            .analysis
            .certify_user(r)
            .await
            .map_err(refused)?
            .into_inner()
            .json,
    )
}

/// The usage report and the monitoring's alerts.
pub async fn usage(service: &ServiceOptions, application: Option<&str>) -> Result<Value> {
    let mut policy = PolicyClient::connect(service).await?;
    let r = policy.request(pb::OutputFilter {
        application_id: application.unwrap_or_default().to_owned(),
    })?;
    document(&policy.analysis.usage(r).await.map_err(refused)?.into_inner().json)
}
