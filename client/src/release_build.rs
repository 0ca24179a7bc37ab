//! A release built through both zones' services, by a client holding a session and the CA only: the policy service
//! admits the build and queues the core's half (`build_release`); the core anonymises, verifies and seals the
//! result to the release zone; the release service (`CompleteBuild`) admits it again, fingerprints, signs and seals
//! each copy and records the release. A build whose core half is done but whose release half was interrupted is
//! finished later by its order number (the approval is checked again then).

use std::path::Path;

use anyhow::{Context, Result};
use tokumei_policy::committee::TableRequest;
use tokumei_proto::policy::v1 as pb;
use tokumei_release::builder::BuildOutcome;

use crate::core_orders::WaitOptions;
use crate::policy::ServiceOptions;

/// What to build, and where the services are.
pub struct BuildRequest<'a> {
    /// The approved application (file channel); `None` with `order`.
    pub application: Option<&'a str>,
    /// Finish this order's release half instead of asking for a new build.
    pub order: Option<u64>,
    /// Only these recipients (default: every recipient of the approval).
    pub recipients: &'a [String],
    /// Only this part of the approved scope (default: everything approved).
    pub tables: Vec<TableRequest>,
    /// The release service's gRPC URL.
    pub release_server: &'a str,
    /// CA of the release service's certificate (default: the policy service's CA).
    pub release_ca: Option<&'a Path>,
    /// The policy service and the session.
    pub service: &'a ServiceOptions,
    /// How long to wait for the core.
    pub wait: &'a WaitOptions,
}

/// Builds (or finishes) a release; returns the core order and the release service's outcome.
pub async fn build(r: &BuildRequest<'_>, progress: bool) -> Result<(u64, BuildOutcome)> {
    tokumei_platform::tls::install_crypto_provider();
    let order = match (r.order, r.application) {
        (Some(order), _) => order,
        (None, Some(application)) => {
            anyhow::ensure!(
                r.wait.wait_secs > 0,
                "[BAD_INPUT] a build waits for the core: --wait-secs must be > 0"
            );
            let status = crate::core_orders::order(
                r.service,
                r.wait,
                pb::core_operation_request::Operation::BuildRelease(pb::BuildReleaseOperation {
                    application_id: application.to_owned(),
                    recipients: r.recipients.to_vec(),
                    tables: tokumei_policy::grpc::convert::tables_to_proto(&r.tables),
                }),
                progress,
            )
            .await?;
            status.id
        }
        (None, None) => anyhow::bail!("[BAD_INPUT] --application or --order"),
    };
    let session = crate::session::given_or_saved_session(r.service.session.as_deref())?;
    let ca_path = r
        .release_ca
        .map(Path::to_path_buf)
        .or_else(|| r.service.policy_ca.clone())
        .unwrap_or_else(|| tokumei_platform::home::tokumei_home().join("pki").join("ca.crt"));
    let ca = std::fs::read(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    let resume = |e: anyhow::Error| {
        anyhow::anyhow!(
            "{e:#}\n[RELEASE_ZONE_UNAVAILABLE] core order {order} is done and waits for the release zone: finish it \
             with `tokumei release build --order {order}` (the approval is checked again then)"
        )
    };
    let mut client = crate::release::connect(r.release_server, &ca).await.map_err(resume)?;
    let spinner = indicatif::ProgressBar::new_spinner();
    if progress {
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner.set_message(format!(
            "core order {order} done: the release zone fingerprints, signs and seals each copy"
        ));
    }
    // The release service finishes a build on a task of its own: a request cut off by its deadline leaves the build
    // going, not undone. (Its deadline answers `Cancelled` "Timeout expired"; a connection lost is `Unavailable`.)
    let still_running = |s: tonic::Status| {
        anyhow::anyhow!(
            "{:#}\n[BUILD_STILL_RUNNING] the release zone is still finishing core order {order} (a large build \
             outlasts one request): `tokumei release list` shows the release once it is recorded",
            crate::refused(s)
        )
    };
    let answer = client
        .complete_build(crate::release::authed(
            &crate::release::bearer(&session)?,
            tokumei_proto::release::v1::CompleteBuildRequest { order_id: order },
        ))
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable => resume(crate::refused(s)),
            tonic::Code::DeadlineExceeded => still_running(s),
            tonic::Code::Cancelled if s.message().contains("Timeout") => still_running(s),
            _ => crate::refused(s),
        });
    spinner.finish_and_clear();
    let outcome: BuildOutcome =
        serde_json::from_str(&answer?.into_inner().outcome_json).context("the release service's outcome")?;
    Ok((order, outcome))
}
