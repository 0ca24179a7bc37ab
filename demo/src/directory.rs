//! The demo's step on the hospital directory: the operator registers two of the three hospitals with their
//! certificates, publishes the signed directory, and a gateway started with `[gateway.directory]` admits only
//! those two; the third, whose certificate the CA still vouches for, is refused, and so is a registered
//! hospital once the operator disables it and publishes again.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokumei_keys::pki::PkiLayout;
use tokumei_platform::client::status_reason;
use tokumei_platform::client::{ClientError, HospitalCredentials, connect, push};
use tokumei_platform::config::{Config, DirectoryConfig};
use tokumei_policy::Origin;
use tokumei_proto::ingest::v1::RecordBatch;
use tokumei_synth::Synth;

use crate::committee::Committee;

const DEMO: Origin<'static> = Origin("demo");

/// What the directory step showed.
#[derive(Serialize, Default)]
pub struct DirectoryStep {
    /// Hospitals the published directory enables.
    pub enabled: usize,
    /// A listed hospital's push.
    pub listed_push: String,
    /// The unlisted hospital's push (valid certificate from the same CA).
    pub unlisted_refused: String,
    /// The listed hospital's push after the operator disabled it and published again.
    pub disabled_refused: String,
}

fn outcome(result: Result<tokumei_proto::ingest::v1::PushReceipt, ClientError>) -> String {
    match result {
        Ok(r) => format!("accepted {}", r.accepted),
        Err(ClientError::Status(s)) => format!("refused: {:?} {}", s.code(), status_reason(&s).unwrap_or_default()),
        Err(e) => format!("failed: {e}"),
    }
}

/// Runs the step against a fresh gateway on `home` (the spool of chapter 1; the records it takes are not pulled).
pub async fn step(
    home: &Path,
    cfg: &Config,
    pki: &PkiLayout,
    codes: &[String],
    cast: &Committee,
    say: &impl Fn(&str),
) -> anyhow::Result<DirectoryStep> {
    // Hospitals are accounts: the administrators register, publish and disable them.
    let (policy, op) = (&cast.policy, &cast.administrators.first);
    for code in &codes[..2] {
        let org = format!("hospital-{code}");
        let _ = policy.add_organisation(op, &org, &org, DEMO).await;
        let fingerprint = tokumei_platform::tls::certificate_sha256(&pki.hospital_cert(code))?;
        policy
            .add_hospital(op, code, &org, &fingerprint, DEMO)
            .await
            .map_err(tokumei_client::reason)?;
    }
    let list = home.join("hospitals.json");
    let publish = || async {
        let d = policy
            .publish_hospital_directory(op, DEMO)
            .await
            .map_err(tokumei_client::reason)?;
        std::fs::write(&list, serde_json::to_vec_pretty(&d)?)?;
        anyhow::Ok(d)
    };
    let published = publish().await?;
    let mut cfg = cfg.clone();
    cfg.gateway.directory = Some(DirectoryConfig {
        path: list.clone(),
        public_key: published.public_key.clone(),
    });
    let gw = crate::process::gateway(home, &cfg, "gateway-directory.toml")?;
    let endpoint = format!("https://{}", gw.addr);
    let creds = |code: &str| HospitalCredentials {
        ca: pki.ca_cert(),
        cert: pki.hospital_cert(code),
        key: pki.hospital_key(code),
    };
    let synth = Synth::new(99);
    let batch = |id: &str, code: &str| RecordBatch {
        batch_id: id.into(),
        records: synth.records(code, 90_000, 1),
    };
    let (listed, unlisted) = (&codes[0], &codes[2]);
    let mut a = connect(&endpoint, &creds(listed), 16 << 20).await?;
    let mut c = connect(&endpoint, &creds(unlisted), 16 << 20).await?;
    let mut report = DirectoryStep {
        enabled: published.hospitals,
        listed_push: outcome(push(&mut a, vec![batch("directory-1", listed)]).await),
        unlisted_refused: outcome(push(&mut c, vec![batch("directory-2", unlisted)]).await),
        ..Default::default()
    };
    let disabled = policy.disable_user(op, listed, DEMO).await;
    disabled.map_err(tokumei_client::reason)?;
    publish().await?;
    // The gateway re-reads the file within a few seconds.
    for n in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = push(&mut a, vec![batch(&format!("directory-3-{n}"), listed)]).await;
        report.disabled_refused = outcome(r);
        if report.disabled_refused.starts_with("refused") {
            break;
        }
    }
    gw.stop()?;
    say(&format!(
        "   hospital directory: {} hospitals enabled and pinned by certificate, signed by the policy service",
        report.enabled
    ));
    say(&format!("   {listed} (listed): {}", report.listed_push));
    say(&format!(
        "   {unlisted} (valid certificate, not listed): {}",
        report.unlisted_refused
    ));
    say(&format!(
        "   {listed} after the operator disabled it: {}",
        report.disabled_refused
    ));
    Ok(report)
}
