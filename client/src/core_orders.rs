//! A core operation as its clients ask for it: the policy service authorises it, records it and queues a signed
//! order; the core, which listens on nothing, takes it, carries it out and reports; the client waits for that
//! report. Shared by `tokumei store ...`, `tokumei sql` and `tokumei stats --table`.

use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use tokumei_proto::policy::v1 as pb;

use crate::policy::{PolicyClient, ServiceOptions};
use crate::refused;

/// How long to wait for the core's report.
#[derive(clap::Args, Debug, Clone)]
pub struct WaitOptions {
    /// Seconds to wait for the core to carry the order out (0: queue it and return its number).
    #[arg(long, default_value_t = 120)]
    pub wait_secs: u64,
}

/// Asks for `operation`, then waits for the core's report (a spinner when `progress`).
pub async fn order(
    service: &ServiceOptions,
    wait: &WaitOptions,
    operation: pb::core_operation_request::Operation,
    progress: bool,
) -> Result<pb::CoreOrderStatus> {
    let mut policy = PolicyClient::connect(service).await?;
    let request = policy.request(pb::CoreOperationRequest {
        operation: Some(operation),
    })?;
    let status = policy
        .client
        .request_core_operation(request)
        .await
        .map_err(refused)?
        .into_inner();
    wait_for(&mut policy, status, wait, progress).await
}

/// Waits for the core's report on the order `status` describes (a spinner when `progress`); returns at once when
/// `wait` says not to wait.
pub async fn wait_for(
    policy: &mut PolicyClient,
    mut status: pb::CoreOrderStatus,
    wait: &WaitOptions,
    progress: bool,
) -> Result<pb::CoreOrderStatus> {
    if wait.wait_secs == 0 {
        return Ok(status);
    }
    let bar = if !progress {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new_spinner();
        b.set_style(ProgressStyle::with_template("{spinner} {msg}")?);
        b.enable_steady_tick(Duration::from_millis(200));
        b
    };
    let deadline = Instant::now() + Duration::from_secs(wait.wait_secs);
    let mut pause = Duration::from_millis(200);
    while !matches!(status.state.as_str(), "done" | "failed" | "expired") {
        bar.set_message(format!("order {} {}: {}", status.id, status.operation, status.state));
        if Instant::now() >= deadline {
            bar.finish_and_clear();
            anyhow::bail!(
                "[CORE_NOT_RESPONDING] order {} is still {} after {} s: is the core running with [core.orders]? \
                 The order stays valid for 10 minutes and may still be carried out: do not ask again, follow it \
                 with `tokumei store order --id {}`",
                status.id,
                status.state,
                wait.wait_secs,
                status.id
            );
        }
        // 200 ms at first, then less often (each look is an access on the ledger).
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        let request = policy.request(pb::CoreOrderRef { id: status.id })?;
        status = policy
            .client
            .get_core_order(request)
            .await
            .map_err(refused)?
            .into_inner();
    }
    bar.finish_and_clear();
    match status.state.as_str() {
        "done" => Ok(status),
        "expired" => anyhow::bail!("[ORDER_EXPIRED] order {} expired before the core took it", status.id),
        _ => anyhow::bail!("[{}] the core did not carry out order {}", status.reason, status.id),
    }
}
