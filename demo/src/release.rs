//! Demo chapters 5 and 6 — an anonymised release and a leak traced.
//!
//! Chapter 5: a file-channel application for two researchers is reviewed and approved with k=5; a build for
//! someone the approval does not name is refused; the operator builds the release (cohort from the research
//! view, per-release pseudonyms, optimal generalisation, independent verification, one fingerprinted copy per
//! recipient, signed manifests, sealed at rest); a recipient's copy is checked against the platform key.
//! Chapter 6: one recipient's copy leaks as a 10 % shuffled subset without the pseudonym column; the trace
//! names that recipient with the probability an innocent would score as high; the chair records the
//! violation, which bans the leaker from further use; the other recipient declares deletion.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use rand::seq::SliceRandom;
use serde::Serialize;
use tokumei_keys::SharedKeyService;
use tokumei_keys::pki::PkiLayout;
use tokumei_policy::committee::{ApprovalConditions, BanSubject, Channel, PrivacyModel, TableRequest, japan_date};
use tokumei_policy::{Role, ServiceKey};
use tokumei_release::builder::plan::{self, PlanContext, PlanOutcome, PlanRequest};
use tokumei_release::builder::{self, BuildContext, BuildOutcome, BuildRequest};
use tokumei_release::delivery::{DeliveryConfig, DeliveryTls, serve};
use tokumei_release::manifest;
use tokumei_release::risk::ReleaseRisk;
use tokumei_release::trace::{DEFAULT_FALSE_ACCUSATION_BOUND, TraceReport};
use tokumei_release::zone::ReleaseZone;
use tokumei_store::Store;

use crate::committee::{Committee, DEMO, form, person_with_session};
use tokumei_client::download::{DownloadRequest, download};
use tokumei_client::release::{LeakToTrace, assess_risk, connect, trace_leak};

/// What chapters 5 and 6 show, for the JSON report.
#[derive(Serialize, Default)]
pub struct ReleaseChapter {
    /// The file-channel application.
    pub application: String,
    /// A build for someone the approval does not name.
    pub unnamed_recipient_refused: String,
    /// The build.
    pub build: Option<BuildOutcome>,
    /// The plan the chair looked at before approving.
    pub plan: Option<PlanOutcome>,
    /// The verification of sato's copy.
    pub verified_files: usize,
    /// Where each recipient's download went (`$TOKUMEI_HOME/demo/downloads/<recipient>/<release>/`).
    pub downloads: Vec<String>,
    /// The attack re-measured on the sealed copies by the auditor.
    pub risk: Option<ReleaseRisk>,
    /// The trace of yui's leaked subset.
    pub trace: Option<TraceReport>,
    /// The trace of sato's full copy.
    pub trace_other: Option<TraceReport>,
    /// The trace of yui's rounded hundredth, pseudonyms kept.
    pub trace_rounded: Option<TraceReport>,
    /// The leaker's later use, refused.
    pub leaker_refused: String,
    /// The deletion declaration's audit entry.
    pub deletion_declared_seq: i64,
}

fn ok<T>(r: std::result::Result<T, tokumei_policy::PolicyError>) -> Result<T> {
    r.map_err(tokumei_client::reason)
}

/// The key services of the two zones a build crosses.
pub struct ZoneKeys {
    /// The release zone's (wraps each release's data and fingerprint keys).
    pub release: SharedKeyService,
    /// The core's (wraps the project pseudonym keys the core's half reads with).
    pub core: SharedKeyService,
}

/// Runs chapters 5 and 6.
pub async fn chapter(
    home: &Path,
    ZoneKeys {
        release: keys,
        core: core_keys,
    }: ZoneKeys,
    cast: &Committee,
    store: &Store,
    say: &impl Fn(&str),
) -> Result<ReleaseChapter> {
    let policy = &cast.policy;
    let mut out = ReleaseChapter::default();
    let (yui, yui_session) = person_with_session(
        policy,
        &cast.administrators,
        "yui",
        "Yui Nakamura",
        "univ-a",
        &[Role::Researcher],
    )
    .await?;

    // The application and its approval with a privacy model.
    let mut f = form(Channel::File);
    f.title = "HbA1c and eGFR trajectories by age band, diagnoses and care".into();
    f.methods =
        "Regression on patient-level laboratory results with diagnoses and visits; (k, k^m)-anonymous records".into();
    f.tables = vec![
        TableRequest {
            table: "patients".into(),
            columns: ["linkage_key", "birth_date", "sex", "prefecture"]
                .map(String::from)
                .to_vec(),
        },
        TableRequest {
            table: "conditions".into(),
            columns: ["linkage_key", "icd10", "onset_date"].map(String::from).to_vec(),
        },
        TableRequest {
            table: "encounters".into(),
            columns: ["linkage_key", "admission_date", "discharge_date", "kind", "department"]
                .map(String::from)
                .to_vec(),
        },
        TableRequest {
            table: "observations".into(),
            columns: ["linkage_key", "jlac10", "date", "value", "unit"]
                .map(String::from)
                .to_vec(),
        },
    ];
    f.requested_epsilon = None;
    let app = ok(policy.file_application(&cast.researcher, f.clone(), None, DEMO).await)?;
    out.application = app.id.clone();
    let reviewers: Vec<String> = cast
        .members
        .iter()
        .map(|m| m.username.clone())
        .chain([cast.chair.username.clone()])
        .collect();
    ok(policy.assign(&cast.chair, &app.id, &reviewers, DEMO).await)?;
    // Before deciding, the chair looks at what a build at k=5, m=2 would do to the real cohort.
    let planned = plan::plan(
        &PlanContext {
            policy,
            actor: &cast.chair,
            origin: DEMO,
            store,
        },
        &app.id,
        &PlanRequest {
            k: Some(5),
            m: Some(2),
            max_suppression: Some(0.05),
            demographic_weight: None,
        },
        &|_| {},
    )
    .await
    .map_err(tokumei_client::release_reason)?;
    say_plan(&planned, say);
    out.plan = Some(planned);
    for m in cast.members.iter().chain([&cast.chair]) {
        ok(policy
            .vote(
                m,
                &app.id,
                true,
                "Proportionate: k=5 and m=2 over the whole record",
                DEMO,
            )
            .await)?;
    }
    let today = japan_date(Utc::now());
    let conditions = ApprovalConditions {
        tables: f.tables.clone(),
        cohort_filter: String::new(),
        privacy: Some(PrivacyModel {
            k: 5,
            l: None,
            t: None,
            max_suppression: 0.05,
            m: 2,
            demographic_weight: None,
        }),
        dp_budget: None,
        channel: Channel::File,
        expires_on: today + Duration::days(90),
        max_downloads: 30,
        recipients: BTreeSet::from(["sato".to_owned(), "yui".to_owned()]),
        link_releases: false,
        statistics: Default::default(),
    };
    ok(policy.decide(&cast.chair, &app.id, Some(conditions), DEMO).await)?;
    say(&format!(
        "   sato files {} (file channel: patients' birth date, sex, prefecture; diagnoses, visits, lab results); approved with (k=5, k^m with m=2) over the whole record, ≤ 5 % suppression, recipients sato and yui, 30 file downloads, until {}",
        app.id,
        today + Duration::days(90)
    ));

    let zone = ReleaseZone::new(home, keys);
    let service_key = ServiceKey::load_or_create(&tokumei_release::manifest::manifest_key_path(home))
        .map_err(tokumei_client::reason)?;
    let cx = BuildContext {
        policy,
        actor: &cast.operator,
        origin: DEMO,
        store,
        zone: &zone,
        service_key: &service_key,
        home,
        core_keys: core_keys.as_ref(),
    };
    out.unnamed_recipient_refused = match builder::build(
        &cx,
        &app.id,
        &BuildRequest {
            recipients: Some(vec![cast.auditor.username.clone()]),
            tables: None,
        },
        &|_| {},
    )
    .await
    {
        Ok(_) => anyhow::bail!("a release was built for someone the approval does not name"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
    say(&format!(
        "   a build for {} (not named by the approval): {}",
        cast.auditor.username, out.unnamed_recipient_refused
    ));

    let built = builder::build(&cx, &app.id, &BuildRequest::default(), &|_| {})
        .await
        .map_err(tokumei_client::release_reason)?;
    say(&format!(
        "   op builds {}: {} patients in the research view (opted-out and erased excluded), {} suppressed; pseudonyms specific to this release",
        built.release, built.patients, built.suppressed_patients
    ));
    for p in &built.protection {
        let generalised = p
            .generalisation
            .iter()
            .map(|(q, l)| format!("{q} level {l}"))
            .collect::<Vec<_>>()
            .join(", ");
        say(&format!(
            "     {:<12} {:>6} rows{}{}",
            p.table,
            p.rows,
            if p.classes > 0 {
                format!(
                    ", {} classes, smallest {} patients (verifier recount), {generalised}",
                    p.classes, p.min_class_size
                )
            } else {
                String::new()
            },
            if p.marked_columns.is_empty() {
                String::new()
            } else {
                format!(
                    ", fingerprint marks in {}: {:.2} % of cells",
                    p.marked_columns.join(","),
                    p.marked_cell_fraction * 100.0
                )
            }
        ));
    }
    if let Some(record) = &built.record {
        say_record(record, say);
    }
    out.build = Some(built.clone());

    // The recipients download their copies through the release service, as they would from their site:
    // gRPC listing and one-time HTTPS URLs over TLS, with their two-factor sessions.
    let record = zone.record(&built.release).map_err(tokumei_client::release_reason)?;
    // The demo runs in $TOKUMEI_HOME/demo: the copies land in $TOKUMEI_HOME/demo/downloads/<recipient>/<release>/.
    let downloads = home.join("downloads");
    let sato_dir = downloads.join("sato").join(&built.release);
    let yui_dir = downloads.join("yui").join(&built.release);
    // The release service stays up through chapter 6: the operator traces the leak through it.
    let desk = ReleaseDesk::start(home, policy, &zone).await?;
    for (who, session, dir) in [
        ("sato", cast.researcher_session.as_str(), &sato_dir),
        ("yui", yui_session.as_str(), &yui_dir),
    ] {
        desk.download(who, session, &built.release, dir, say).await?;
    }
    out.downloads = vec![sato_dir.display().to_string(), yui_dir.display().to_string()];
    let v = manifest::verify_dir(&sato_dir, Some(std::slice::from_ref(&service_key.public())))
        .map_err(tokumei_client::release_reason)?;
    out.verified_files = v.files_checked;
    say(&format!(
        "   sato's copy: {} files, SHA-256 and ed25519 signature verified against the platform key {}",
        v.files_checked, v.key_id
    ));

    // The auditor has the release service re-measure the attack on the sealed copies, trusting nothing the
    // build wrote; the policy service admits the measurement and records its figures.
    let (measured, _) = desk.assess_risk(cast.auditor_session.as_str(), &built.release).await?;
    for c in &measured.copies {
        let figures: Vec<String> = c
            .attack
            .iter()
            .map(|f| format!("m={} {:.1} % below k", f.m, f.share_below_k * 100.0))
            .collect();
        say(&format!(
            "   {} runs `tokumei risk attack` on {}'s copy: {} ({}; audited)",
            cast.auditor.username,
            c.recipient,
            figures.join(", "),
            if c.agrees_with_manifest {
                "equal to the signed manifest"
            } else {
                "DIFFERENT from the manifest"
            }
        ));
    }
    if !measured.holds || measured.copies.iter().any(|c| !c.agrees_with_manifest) {
        anyhow::bail!("the attack re-measured on the copies does not confirm the manifests");
    }
    out.risk = Some(measured);

    say("\ntokumei demo — chapter 6: a leaked copy traced to its recipient");
    let leaked = downloads.join("found-online.csv");
    // A tenth of the copy, or enough rows to carry marks when the demo runs with few patients.
    let share = leak_subset(
        &yui_dir.join("observations.csv"),
        &leaked,
        0.10,
        8_000,
        LeakEdit::DropPseudonyms,
    )?;
    // The operator hands the file to the release service, which holds the fingerprint key; the policy service
    // admits the trace first and records the verdict.
    let operator = cast.operator_session.as_str();
    let (report, trace_seq) = desk
        .trace(
            operator,
            &LeakToTrace {
                release: &record.id,
                file: &leaked,
                table: None,
                bound: DEFAULT_FALSE_ACCUSATION_BOUND,
            },
        )
        .await?;
    say(&format!(
        "   a file found online: {} rows of observations, shuffled, pseudonym column removed ({:.0} % of yui's copy)",
        report.rows,
        share * 100.0
    ));
    for c in &report.traced.verdict.candidates {
        say(&format!(
            "     {:<5} score {:>7.2}   P(an innocent scores this high) ≤ {:.1e}{}",
            c.recipient,
            c.score,
            c.p_innocent,
            if report.traced.accused.contains(&c.recipient) {
                "   ← accused"
            } else {
                ""
            }
        ));
    }
    say(&format!("   {} (audit entry {})", report.traced.explanation, trace_seq));
    // A second find: a hundredth of yui's copy, every value rounded to one decimal (marks of tests reported to
    // 0.01 are gone; whole-number tests keep theirs, too few in a hundredth to accuse), the pseudonyms kept so
    // the file still joins — every copy has its own pseudonyms.
    let rounded = downloads.join("found-rounded.csv");
    leak_subset(
        &yui_dir.join("observations.csv"),
        &rounded,
        0.01,
        50,
        LeakEdit::RoundValues,
    )?;
    let (rounded_report, _) = desk
        .trace(
            operator,
            &LeakToTrace {
                release: &record.id,
                file: &rounded,
                table: None,
                bound: DEFAULT_FALSE_ACCUSATION_BOUND,
            },
        )
        .await?;
    say(&format!(
        "   another: {} rows, values rounded to one decimal, pseudonyms kept: accused {:?} ({})",
        rounded_report.rows, rounded_report.traced.accused, rounded_report.traced.explanation
    ));
    let (other, _) = desk
        .trace(
            operator,
            &LeakToTrace {
                release: &record.id,
                file: &sato_dir.join("observations.parquet"),
                table: None,
                bound: DEFAULT_FALSE_ACCUSATION_BOUND,
            },
        )
        .await?;
    desk.stop().await?;
    say(&format!(
        "   sato's own Parquet copy, traced the same way: accused {:?}",
        other.traced.accused
    ));
    out.trace = Some(report.clone());
    out.trace_other = Some(other);
    if rounded_report.traced.accused != ["yui".to_owned()] {
        anyhow::bail!(
            "the rounded leak did not name yui alone: {:?}",
            rounded_report.traced.accused
        );
    }
    out.trace_rounded = Some(rounded_report);
    if report.traced.accused != ["yui".to_owned()] {
        anyhow::bail!("the trace did not name yui alone: {:?}", report.traced.accused);
    }

    ok(policy
        .record_violation(
            &cast.chair,
            BanSubject::Person("yui".into()),
            "data_leak",
            &format!("release {} traced to yui's copy (audit entry {trace_seq})", record.id),
            Some(&app.id),
            None,
            DEMO,
        )
        .await)?;
    out.leaker_refused = match policy
        .admit_use(
            &yui,
            &app.id,
            tokumei_policy::committee::UseKind::Download,
            &record.tables,
            DEMO,
        )
        .await
    {
        Ok(_) => anyhow::bail!("a banned leaker could still download"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
    say(&format!(
        "   chika records the violation; yui asks to download again: {}",
        out.leaker_refused
    ));
    let declared = ok(policy
        .declare_deletion(
            &cast.researcher,
            &app.id,
            "analysis finished; all copies shredded on the analysis server",
            DEMO,
        )
        .await)?;
    out.deletion_declared_seq = declared.seq;
    say(&format!(
        "   sato declares deletion of the data (audit entry {})",
        declared.seq
    ));
    Ok(out)
}

/// The release service on loopback ports, beside the policy service it asks over mutual TLS (the zone holds no
/// committee key or database), and the demo's client of it.
struct ReleaseDesk {
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokumei_release::delivery::RunningDelivery,
    policy_service: crate::local_policy::LocalPolicyService,
    server: String,
    ca: Vec<u8>,
}

impl ReleaseDesk {
    async fn start(home: &Path, policy: &tokumei_policy::Policy, zone: &ReleaseZone) -> Result<ReleaseDesk> {
        tokumei_platform::tls::install_crypto_provider();
        let pki = PkiLayout::new(home.join("pki"));
        let tls = DeliveryTls::from_files(&pki.gateway_cert(), &pki.gateway_key()).context("release service TLS")?;
        let policy_service = crate::local_policy::start(policy.clone(), &pki).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = serve(
            DeliveryConfig {
                grpc_listen: "127.0.0.1:0".parse()?,
                https_listen: "127.0.0.1:0".parse()?,
                tls,
                public_url: None,
                token_ttl: std::time::Duration::from_secs(300),
                builds: None,
            },
            policy_service.link.clone(),
            zone.clone(),
            async {
                let _ = stopped.await;
            },
        )
        .await
        .context("release service")?;
        let ca = std::fs::read(pki.ca_cert()).context("the demo CA")?;
        Ok(ReleaseDesk {
            stop,
            server: format!("https://{}", running.grpc),
            running,
            policy_service,
            ca,
        })
    }

    /// `who` downloads their copy of `release` with their session into `dir`.
    async fn download(&self, who: &str, session: &str, release: &str, dir: &Path, say: &impl Fn(&str)) -> Result<()> {
        let request = DownloadRequest {
            server: &self.server,
            ca_pem: &self.ca,
            session,
            release,
            files: &[],
            out: dir,
            progress: false,
        };
        let summary = download(&request).await.with_context(|| format!("{who}'s download"))?;
        say(&format!(
            "   {who} downloads {} over HTTPS from the release service (two-factor session, one-time URLs; the service asks the policy service over mutual TLS and holds no committee key): {} files, SHA-256 verified, in {}",
            summary.release,
            summary.files.len(),
            summary.out
        ));
        Ok(())
    }

    /// Has the release service measure the attack on `release`'s copies with `session`.
    async fn assess_risk(&self, session: &str, release: &str) -> Result<(ReleaseRisk, i64)> {
        let mut client = connect(&self.server, &self.ca).await?;
        assess_risk(&mut client, session, release, &[]).await
    }

    /// Traces `leak` through the release service with `session`: the report and its audit entry.
    async fn trace(&self, session: &str, leak: &LeakToTrace<'_>) -> Result<(TraceReport, i64)> {
        let mut client = connect(&self.server, &self.ca).await?;
        trace_leak(&mut client, session, leak).await
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        let stopped = self.running.wait().await.context("release service");
        stopped.and(self.policy_service.stop().await)
    }
}

fn say_plan(p: &PlanOutcome, say: &impl Fn(&str)) {
    let levels: Vec<String> = p
        .demographics
        .iter()
        .map(|l| format!("{} {}/{}", l.column, l.level, l.max_level))
        .collect();
    say(&format!(
        "   chika runs `tokumei release plan` at k={}, m={} before deciding: {} patients, {} would be withheld; demographics {}; release loss {:.3}",
        p.privacy_model.k,
        p.privacy_model.m,
        p.patients,
        p.suppressed_patients,
        levels.join(", "),
        p.release_loss
    ));
    if let Some(items) = &p.items {
        for t in &items.tables {
            let levels: Vec<String> = t.levels.iter().map(|(c, l)| format!("{c}@{l}")).collect();
            say(&format!(
                "     {:<12} items {} ; {} of {} rows suppressed as rare",
                t.table,
                levels.join(" "),
                t.suppressed_rows,
                t.rows_before
            ));
        }
    }
}

/// What a careless or malicious recipient might post: a random share of the rows (at least `min_rows`),
/// shuffled, without the pseudonym column. Returns the share kept.
/// What the demo's leaker does to the rows kept.
#[derive(Clone, Copy)]
enum LeakEdit {
    /// Drops the pseudonym column.
    DropPseudonyms,
    /// Keeps the pseudonyms (the file still joins) and rounds every value to one decimal.
    RoundValues,
}

fn leak_subset(src: &Path, dest: &Path, share: f64, min_rows: usize, edit: LeakEdit) -> Result<f64> {
    let mut r = csv::Reader::from_path(src).with_context(|| format!("reading {}", src.display()))?;
    let header: Vec<String> = r.headers()?.iter().map(String::from).collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| matches!(edit, LeakEdit::RoundValues) || header[i] != tokumei_release::catalogue::PSEUDONYM)
        .collect();
    let value = keep.iter().position(|&i| header[i] == "value");
    let mut rows: Vec<Vec<String>> = r
        .records()
        .map(|rec| rec.map(|rec| keep.iter().map(|&i| rec[i].to_owned()).collect::<Vec<String>>()))
        .collect::<std::result::Result<_, _>>()?;
    if let (LeakEdit::RoundValues, Some(v)) = (edit, value) {
        for row in &mut rows {
            if let Ok(x) = row[v].parse::<f64>() {
                row[v] = format!("{x:.1}");
            }
        }
    }
    let mut rng = rand::rng();
    rows.shuffle(&mut rng);
    let total = rows.len().max(1);
    rows.truncate((((total as f64) * share).ceil() as usize).max(min_rows));
    let kept = rows.len() as f64 / total as f64;
    let mut w = csv::Writer::from_path(dest)?;
    w.write_record(keep.iter().map(|&i| &header[i]))?;
    for row in rows {
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(kept)
}

/// The whole-record protection of a build, and the linkage attack measured on the copy.
fn say_record(record: &tokumei_release::manifest::RecordProtection, say: &impl Fn(&str)) {
    let c = &record.check;
    say(&format!(
        "   whole record verified independently on each copy: (k={}, k^m with m={}), {} patients in {} demographic classes, fewest candidates {}",
        c.k, c.m, c.patients, c.classes, c.smallest_support
    ));
    if let Some(items) = &record.items {
        for t in &items.tables {
            let levels = t
                .levels
                .iter()
                .map(|(c, l)| format!("{c} level {l}"))
                .collect::<Vec<_>>()
                .join(", ");
            say(&format!(
                "     {:<12} items: {levels}; {} of {} rows suppressed as rare items",
                t.table, t.suppressed_rows, t.rows_before
            ));
        }
        say(&format!(
            "     item information loss {:.3} ({:?} search, {} recodings evaluated); release loss {:.3} over {} demographic node(s) tried",
            items.loss, items.strategy, items.evaluated, record.release_loss, record.demographic_candidates
        ));
    }
    for e in &record.extremes {
        say(&format!(
            "     {}.{}: {} values top-coded, {} bottom-coded, {} withheld (code measured in fewer than k patients)",
            e.table, e.column, e.top_coded, e.bottom_coded, e.withheld
        ));
    }
    for c in record.count_caps.iter().filter(|c| c.patients_capped > 0 || c.withheld) {
        say(&format!(
            "     {}: rows per patient capped so every count is shared by k patients: {} of {} patients capped at most {} rows, {} rows not released{}",
            c.table,
            c.patients_capped,
            c.patients,
            c.largest_count,
            c.rows_dropped,
            if c.rare_after > 0 {
                format!(
                    " ({} patients' counts still rare: their distinct items exceed the cap)",
                    c.rare_after
                )
            } else {
                String::new()
            }
        ));
    }
    say(&format!(
        "     birth dates top-coded (aged 90 or more): {}",
        record.top_coded_birth_dates
    ));
    say("   re-identification attack on the copy (adversary knows the demographic row and m of the patient's events):");
    for a in &c.attack {
        say(&format!(
            "     m={}  fewer than k={} candidates: {:>5} ({:.1} %)   unique: {:>5} ({:.1} %){}",
            a.m,
            c.k,
            a.below_k,
            a.share_below_k * 100.0,
            a.unique,
            a.share_unique * 100.0,
            if a.m > c.m {
                "   (beyond the approved m: information)"
            } else {
                ""
            }
        ));
    }
    if let Some(a) = &c.one_value {
        say(&format!(
            "     one event with its measured value as released: fewer than k: {} ({:.1} %), unique: {} ({:.1} %)   (information: values are not items)",
            a.below_k,
            a.share_below_k * 100.0,
            a.unique,
            a.share_unique * 100.0
        ));
    }
}
