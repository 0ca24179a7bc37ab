//! The demo's step on operators who hold no key: with the policy service and the core running as processes of their
//! own (the core listening on nothing), the operator's commands are run as the `tokumei` command from a home that
//! holds nothing but the service's CA: `tokumei store status` and `tokumei store compact` become orders the core
//! takes, carries out and reports on. A forged session and the researcher's session are refused before anything
//! is queued. The researcher asks for a table over the store and the operator builds a second release the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use serde::Serialize;
use tokumei_keys::pki::PkiLayout;

use crate::committee::Committee;
use crate::platform::Platform;

/// What the step showed.
#[derive(Serialize, Default)]
pub struct ServicesStep {
    /// The policy service's address (TLS; the core's certificate accepted for orders).
    pub policy_service: String,
    /// Files in the operator's home after the commands ran (the CA only).
    pub operator_home_files: Vec<String>,
    /// Tables the core reported for `store status`.
    pub status_tables: usize,
    /// Rows of the patients table the core reported (every patient the store holds, opted-out ones included).
    pub patient_rows: u64,
    /// Tables compacted by `store compact`.
    pub tables_compacted: u64,
    /// `store compact` with a forged session.
    pub forged_session_refused: String,
    /// `store status` with the researcher's session.
    pub researcher_refused: String,
    /// The ledger's entries for the operator's orders (action and outcome).
    pub ledger: Vec<String>,
    /// The researcher's DP table over the store, computed by the core for an order of the policy service.
    pub researcher_table: Option<ResearcherTable>,
    /// A release built through the zones' services by the operator's client.
    pub operator_build: Option<OperatorBuild>,
}

/// A release the operator built from a desk holding only the CA: the core's half as an order, the release zone's
/// half by the release service.
#[derive(Serialize, Default)]
pub struct OperatorBuild {
    /// The core order that anonymised and sealed the package.
    pub order: u64,
    /// The release the release service recorded.
    pub release: String,
    /// Its recipients.
    pub recipients: Vec<String>,
    /// Patients released (before suppression).
    pub patients: u64,
    /// Files in the operator's desk afterwards (the CA only).
    pub desk_files: Vec<String>,
    /// Packages left in the outbox (none once delivered).
    pub outbox_files: Vec<String>,
}

/// A statistics table the researcher asked of the policy service from a desk holding only the CA.
#[derive(Serialize, Default)]
pub struct ResearcherTable {
    /// The core order that computed it.
    pub order: u64,
    /// Cells released.
    pub cells: u64,
    /// ε spent from the approval's budget, before the order was queued.
    pub epsilon: f64,
    /// Files in the researcher's desk afterwards (the CA and the table she asked for).
    pub desk_files: Vec<String>,
}

/// `tokumei --json ARGS` as the operator's client: an empty home, a session, the service's address and CA.
fn client(desk: &Path, service: (&str, &Path), session: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(std::env::current_exe()?)
        .arg("--json")
        .args(args)
        .env("TOKUMEI_HOME", desk)
        .env("TOKUMEI_SESSION", session)
        .env("TOKUMEI_POLICY_URL", service.0)
        .env("TOKUMEI_POLICY_CA", service.1)
        .env("RUST_LOG", "warn")
        .output()?)
}

fn refusal(out: &std::process::Output) -> Result<String> {
    anyhow::ensure!(
        !out.status.success(),
        "a command that should have been refused succeeded"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    Ok(text.lines().last().unwrap_or_default().trim().to_owned())
}

fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The ledger's entries for core orders (action and outcome), as the auditor's inspection bundle of the last hour
/// shows them.
async fn core_order_entries(cast: &Committee) -> Result<Vec<String>> {
    let (_, bundle) = crate::committee::auditor_bundle(cast).await?;
    Ok(bundle
        .entries
        .iter()
        .filter(|e| e.action.starts_with("core.") || e.action == "operate_core")
        .map(|e| format!("{} {} {}", e.actor, e.action, e.outcome))
        .collect())
}

/// Runs the step against the demo's running services.
pub async fn step(
    platform: &Platform,
    home: &Path,
    pki: &PkiLayout,
    cast: &Committee,
    file_application: Option<&str>,
    say: &impl Fn(&str),
) -> Result<ServicesStep> {
    let mut out = ServicesStep {
        policy_service: platform.desk.url.clone(),
        ..Default::default()
    };
    say(&format!(
        "   the policy service ({}), the core and the release service have run as processes of their own since chapter 3; the core listens on nothing and takes orders",
        out.policy_service
    ));

    // The operator's desk: nothing but the CA of the service's certificate.
    let desk = home.join("operator-desk");
    std::fs::create_dir_all(&desk)?;
    let ca = desk.join("ca.crt");
    std::fs::copy(pki.ca_cert(), &ca)?;
    let service = (out.policy_service.as_str(), ca.as_path());
    let session = cast.operator.session.as_str();
    let status = client(&desk, service, session, &["store", "status"])?;
    anyhow::ensure!(
        status.status.success(),
        "store status: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    out.status_tables = report["tables"].as_array().map_or(0, Vec::len);
    out.patient_rows = report["tables"]
        .as_array()
        .and_then(|tables| tables.iter().find(|t| t["table"] == "patients"))
        .and_then(|t| t["rows"].as_u64())
        .unwrap_or_default();
    let compact = client(&desk, service, session, &["store", "compact"])?;
    anyhow::ensure!(
        compact.status.success(),
        "store compact: {}",
        String::from_utf8_lossy(&compact.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&compact.stdout)?;
    out.tables_compacted = report["tables_compacted"].as_u64().unwrap_or_default();
    out.operator_home_files = files(&desk);
    say(&format!(
        "   op, from a home holding only the CA ({:?}): store status → {} tables reported by the core; store compact → {} table(s) compacted",
        out.operator_home_files, out.status_tables, out.tables_compacted
    ));
    out.forged_session_refused = refusal(&client(&desk, service, "tks1.forged.forged", &["store", "compact"])?)?;
    out.researcher_refused = refusal(&client(
        &desk,
        service,
        cast.researcher.session.as_str(),
        &["store", "status"],
    )?)?;
    say(&format!(
        "   a forged session: {}\n   the researcher's session: {}",
        out.forged_session_refused, out.researcher_refused
    ));
    out.ledger = core_order_entries(cast).await?;
    let shown = &out.ledger[out.ledger.len().saturating_sub(6)..];
    say(&format!(
        "   the ledger ({} entries on core orders so far), its last: {}",
        out.ledger.len(),
        shown.join("; ")
    ));
    out.researcher_table = researcher_table(home, pki, &out.policy_service, cast, say).await?;
    if let Some(application) = file_application {
        out.operator_build = Some(operator_build(platform, home, &desk, cast, application, say)?);
    }
    Ok(out)
}

/// The operator builds a second release, for one recipient, from the desk: the core's half is an order, the release
/// service finishes the copy.
fn operator_build(
    platform: &Platform,
    home: &Path,
    desk: &Path,
    cast: &Committee,
    application: &str,
    say: &impl Fn(&str),
) -> Result<OperatorBuild> {
    let path = |p: PathBuf| p.display().to_string();
    let ca = desk.join("ca.crt");
    let ran = client(
        desk,
        (platform.desk.url.as_str(), ca.as_path()),
        cast.operator.session.as_str(),
        &[
            "release",
            "build",
            "--application",
            application,
            "--recipient",
            "sato",
            "--release-server",
            &platform.release_url,
            "--release-ca",
            &path(ca.clone()),
        ],
    )?;
    anyhow::ensure!(
        ran.status.success(),
        "release build: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let built: serde_json::Value = serde_json::from_slice(&ran.stdout)?;
    let out = OperatorBuild {
        order: built["order"].as_u64().unwrap_or_default(),
        release: built["release"].as_str().unwrap_or_default().to_owned(),
        recipients: built["recipients"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        patients: built["patients"].as_u64().unwrap_or_default(),
        desk_files: files(desk),
        outbox_files: files(&tokumei_release::intake::default_outbox(home)),
    };
    say(&format!(
        "   op builds {} for {:?} with the `tokumei` command from the same desk: the policy service admits it, the core anonymises {} patients and seals the package to the release service's intake key (order {}); the release service admits it again, fingerprints, signs and seals the copy; the desk holds {:?}, the outbox {:?}",
        out.release, out.recipients, out.patients, out.order, out.desk_files, out.outbox_files
    ));
    Ok(out)
}

/// The researcher asks for a DP table over the store from a desk of her own: the service checks the approval and
/// spends the loss, the core computes over the research view, the table comes back to her alone.
async fn researcher_table(
    home: &Path,
    pki: &PkiLayout,
    policy_service: &str,
    cast: &Committee,
    say: &impl Fn(&str),
) -> Result<Option<ResearcherTable>> {
    let status = crate::statistics::budget(cast).await?;
    let remaining = status.spent.remaining_epsilon(&status.project.budget);
    // Chapter 4 left about ε = 0.015 of the approval's 1 (ε 0.5, then ρ 0.005 converted at δ = 1e-5): enough for a
    // coarse table (noise scale 100 on ~1,800 patients).
    let epsilon = 0.01;
    if remaining < epsilon {
        say("   (the approval's budget is spent: the researcher's table over the store is skipped)");
        return Ok(None);
    }
    let desk = home.join("researcher-desk");
    std::fs::create_dir_all(&desk)?;
    let ca = desk.join("ca.crt");
    std::fs::copy(pki.ca_cert(), &ca)?;
    let table = desk.join("patients_by_sex.csv");
    let args = [
        "stats",
        "--table",
        "patients",
        "--project",
        &cast.application,
        "--group-by",
        "sex",
        "--hierarchy",
        "sex=value",
        "--epsilon",
        "0.01",
        "--output",
        &table.display().to_string(),
    ];
    let ran = client(
        &desk,
        (policy_service, ca.as_path()),
        cast.researcher.session.as_str(),
        &args,
    )?;
    anyhow::ensure!(
        ran.status.success(),
        "stats --table: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout)?;
    let out = ResearcherTable {
        order: report["order"].as_u64().unwrap_or_default(),
        cells: report["cells"].as_u64().unwrap_or_default(),
        epsilon,
        desk_files: files(&desk),
    };
    say(&format!(
        "   the researcher, from a desk holding only the CA, asks for patients by sex at ε={epsilon}: the policy service spends it, the core computes it (order {}), {} cells come back to her alone; her desk holds {:?}",
        out.order, out.cells, out.desk_files
    ));
    Ok(Some(out))
}
