//! The demo's step on the hospital directory: the operator registers two of the three hospitals with their
//! certificates, publishes the signed directory, and a gateway started with `[gateway.directory]` admits only
//! those two; the third, whose certificate the CA still vouches for, is refused, and so is a registered
//! hospital once the operator disables it and publishes again.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokumei_client::refused;
use tokumei_keys::pki::PkiLayout;
use tokumei_platform::client::status_reason;
use tokumei_platform::client::{ClientError, HospitalCredentials, connect, push};
use tokumei_platform::config::{Config, DirectoryConfig};
use tokumei_proto::ingest::v1::RecordBatch;
use tokumei_proto::policy::v1 as pb;
use tokumei_synth::Synth;

use crate::committee::Committee;

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

/// Publishes the signed directory through the policy service and writes it where the gateway reads it.
async fn publish(
    admin: &mut tokumei_client::policy::PolicyClient,
    list: &Path,
) -> anyhow::Result<pb::HospitalDirectory> {
    let request = admin.request(pb::Empty {})?;
    let d = admin
        .client
        .publish_hospital_directory(request)
        .await
        .map_err(refused)?
        .into_inner();
    let document: serde_json::Value = serde_json::from_str(&d.json)?;
    tokumei_client::output::write_atomically(list, &serde_json::to_vec_pretty(&document)?)?;
    Ok(d)
}

/// Runs the step against a fresh gateway on `home`, with a spool of its own that no core pulls.
pub async fn step(
    home: &Path,
    cfg: &Config,
    pki: &PkiLayout,
    codes: &[String],
    cast: &Committee,
    say: &impl Fn(&str),
) -> anyhow::Result<DirectoryStep> {
    // Hospitals are accounts: an administrator registers, publishes and disables them through the policy service.
    let mut admin = cast.desk.as_(&cast.administrators.first).await?;
    for code in &codes[..2] {
        let org = format!("hospital-{code}");
        let request = admin.request(pb::AddOrganisationRequest {
            id: org.clone(),
            name: org.clone(),
        })?;
        match admin.client.add_organisation(request).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(refused(s)),
        }
        let request = admin.request(pb::AddHospitalRequest {
            code: code.clone(),
            organisation: org,
            certificate_sha256: tokumei_platform::tls::certificate_sha256(&pki.hospital_cert(code))?,
        })?;
        admin.client.add_hospital(request).await.map_err(refused)?;
    }
    let list = home.join("hospitals.json");
    let published = publish(&mut admin, &list).await?;
    let mut cfg = cfg.clone();
    // A spool of its own: the core, running since chapter 3, pulls the demo's spool, and these test pushes are not
    // the story's data.
    cfg.spool.dir = home.join("directory-spool");
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
        enabled: usize::try_from(published.hospitals)?,
        listed_push: outcome(push(&mut a, vec![batch("directory-1", listed)]).await),
        unlisted_refused: outcome(push(&mut c, vec![batch("directory-2", unlisted)]).await),
        ..Default::default()
    };
    let request = admin.request(pb::UserRef {
        username: listed.clone(),
    })?;
    admin.client.disable_user(request).await.map_err(refused)?;
    publish(&mut admin, &list).await?;
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
