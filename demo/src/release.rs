//! Demo chapters 5 and 6 — an anonymised release and a leak traced, every act asked of the zones' services.
//!
//! Chapter 5: a file-channel application for two researchers is reviewed and approved with k=5 after the chair had
//! the core plan it; a build for someone the approval does not name is refused; the operator, from a desk holding a
//! session and the CA, builds the release: the policy service admits it and orders the core's half (cohort from the
//! research view, per-release pseudonyms, optimal generalisation, independent verification, sealed to the release
//! zone), the release service finishes one fingerprinted, signed copy per recipient; each recipient downloads
//! theirs and checks it against the platform key; the auditor has the release service re-measure the attack.
//! Chapter 6: one recipient's copy leaks as a 10 % shuffled subset without the pseudonym column; the release
//! service's trace names that recipient with the probability an innocent would score as high; the chair records
//! the violation, which bans the leaker from further use; the other recipient declares deletion.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use rand::seq::SliceRandom;
use serde::Serialize;
use tokumei_client::core_orders::WaitOptions;
use tokumei_client::download::{DownloadRequest, download};
use tokumei_client::refused;
use tokumei_client::release::{LeakToTrace, assess_risk, authed, bearer, connect, trace_leak};
use tokumei_client::release_build::{self, BuildRequest};
use tokumei_policy::Role;
use tokumei_policy::committee::{ApprovalConditions, Channel, PrivacyModel, TableRequest, japan_date};
use tokumei_proto::policy::v1 as pb;
use tokumei_release::builder::BuildOutcome;
use tokumei_release::builder::plan::PlanOutcome;
use tokumei_release::manifest;
use tokumei_release::risk::ReleaseRisk;
use tokumei_release::trace::{DEFAULT_FALSE_ACCUSATION_BOUND, TraceReport};

use crate::committee::{Committee, assign, decide, file, form, record_violation, vote};
use crate::desk::{Person, expect_reason};

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

/// The file-channel form: patient-level records of four tables.
fn file_form() -> tokumei_policy::committee::ApplicationForm {
    let mut f = form(Channel::File);
    f.title = "HbA1c and eGFR trajectories by age band, diagnoses and care".into();
    f.methods =
        "Regression on patient-level laboratory results with diagnoses and visits; (k, k^m)-anonymous records".into();
    let table = |name: &str, columns: &[&str]| TableRequest {
        table: name.into(),
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
    };
    f.tables = vec![
        table("patients", &["linkage_key", "birth_date", "sex", "prefecture"]),
        table("conditions", &["linkage_key", "icd10", "onset_date"]),
        table(
            "encounters",
            &["linkage_key", "admission_date", "discharge_date", "kind", "department"],
        ),
        table("observations", &["linkage_key", "jlac10", "date", "value", "unit"]),
    ];
    f.requested_epsilon = None;
    f
}

/// Where the release service is and what vouches for it.
pub struct ReleaseService<'a> {
    /// Its gRPC URL.
    pub url: &'a str,
    /// The demo's home (downloads, leaked files, the manifest key's public half).
    pub home: &'a Path,
}

/// Files, reviews (with the core's plan) and approves the file-channel application; returns it.
async fn approve(
    cast: &Committee,
    wait: &WaitOptions,
    out: &mut ReleaseChapter,
    say: &impl Fn(&str),
) -> Result<String> {
    let desk = &cast.desk;
    let f = file_form();
    let app = file(desk, &cast.researcher, &f).await?;
    out.application = app.id.clone();
    let reviewers: Vec<&str> = cast
        .members
        .iter()
        .chain([&cast.chair])
        .map(|m| m.username.as_str())
        .collect();
    assign(desk, &cast.chair, &app.id, &reviewers).await?;
    // Before deciding, the chair has the core plan what a build at k=5, m=2 would do to the real cohort.
    let planned = tokumei_client::core_orders::order(
        &desk.options(Some(&cast.chair)),
        wait,
        pb::core_operation_request::Operation::PlanRelease(pb::PlanReleaseOperation {
            application_id: app.id.clone(),
            k: Some(5),
            m: Some(2),
            max_suppression: Some(0.05),
            demographic_weight: None,
        }),
        false,
    )
    .await?;
    let planned: PlanOutcome = serde_json::from_str(&planned.result_json).context("the core's plan")?;
    say_plan(&planned, say);
    out.plan = Some(planned);
    for m in cast.members.iter().chain([&cast.chair]) {
        vote(desk, m, &app.id, "Proportionate: k=5 and m=2 over the whole record").await?;
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
        pseudonymised: false,
        statistics: Default::default(),
    };
    decide(desk, &cast.chair, &app.id, &conditions).await?;
    say(&format!(
        "   sato files {} (file channel: patients' birth date, sex, prefecture; diagnoses, visits, lab results); approved with (k=5, k^m with m=2) over the whole record, ≤ 5 % suppression, recipients sato and yui, 30 file downloads, until {}",
        app.id,
        today + Duration::days(90)
    ));
    Ok(app.id)
}

fn say_build(built: &BuildOutcome, order: u64, say: &impl Fn(&str)) {
    say(&format!(
        "   op builds {} from a desk holding a session and the CA: the policy service admits it, the core anonymises {} patients of the research view (opted-out and erased excluded; order {order}), {} suppressed, pseudonyms specific to this release; the release service fingerprints, signs and seals each copy",
        built.release, built.patients, built.suppressed_patients
    ));
    for p in &built.protection {
        let generalised = p
            .generalisation
            .iter()
            .map(|(q, l)| format!("{q} level {l}"))
            .collect::<Vec<_>>()
            .join(", ");
        let classes = if p.classes > 0 {
            format!(
                ", {} classes, smallest {} patients (verifier recount), {generalised}",
                p.classes, p.min_class_size
            )
        } else {
            String::new()
        };
        let marks = if p.marked_columns.is_empty() {
            String::new()
        } else {
            format!(
                ", fingerprint marks in {}: {:.2} % of cells",
                p.marked_columns.join(","),
                p.marked_cell_fraction * 100.0
            )
        };
        say(&format!("     {:<12} {:>6} rows{classes}{marks}", p.table, p.rows));
    }
    if let Some(record) = &built.record {
        say_record(record, say);
    }
}

/// Runs chapters 5 and 6 through the policy service, the core and the release service.
pub async fn chapter(service: &ReleaseService<'_>, cast: &Committee, say: &impl Fn(&str)) -> Result<ReleaseChapter> {
    let desk = &cast.desk;
    let home = service.home;
    let mut out = ReleaseChapter::default();
    let yui = crate::desk::person(
        desk,
        &cast.administrators,
        ("yui", "Yui Nakamura", "univ-a"),
        &[Role::Researcher],
    )
    .await?;
    let wait = WaitOptions { wait_secs: 300 };
    let application = approve(cast, &wait, &mut out, say).await?;
    let operator = desk.options(Some(&cast.operator));
    let auditor = [cast.auditor.username.clone()];
    let mut request = BuildRequest {
        application: Some(&application),
        order: None,
        recipients: &auditor,
        tables: Vec::new(),
        release_server: service.url,
        release_ca: Some(&desk.ca),
        service: &operator,
        wait: &wait,
    };
    out.unnamed_recipient_refused =
        expect_reason(release_build::build(&request, false).await, "RECIPIENT_NOT_APPROVED")?;
    say(&format!(
        "   a build for {} (not named by the approval): {}",
        cast.auditor.username, out.unnamed_recipient_refused
    ));
    request.recipients = &[];
    let (order, built) = release_build::build(&request, false).await?;
    say_build(&built, order, say);
    out.build = Some(built.clone());

    // The recipients download their copies through the release service, as they would from their site: gRPC
    // listing and one-time HTTPS URLs over TLS, with their two-factor sessions.
    let ca = std::fs::read(&desk.ca).context("the demo CA")?;
    let downloads = home.join("downloads");
    let sato_dir = downloads.join("sato").join(&built.release);
    let yui_dir = downloads.join("yui").join(&built.release);
    for (who, dir) in [(&cast.researcher, &sato_dir), (&yui, &yui_dir)] {
        fetch(service, &ca, who, &built.release, dir, say).await?;
    }
    out.downloads = vec![sato_dir.display().to_string(), yui_dir.display().to_string()];
    // The platform's manifest key is public (its `.pub` beside the release service's key): what a recipient checks.
    let platform_key = tokumei_policy::ServicePublicKey::read(&tokumei_policy::service_key::public_key_path(
        &manifest::manifest_key_path(home),
    ))
    .map_err(tokumei_client::reason)?;
    let v = manifest::verify_dir(&sato_dir, Some(std::slice::from_ref(&platform_key)))
        .map_err(tokumei_client::release_reason)?;
    out.verified_files = v.files_checked;
    say(&format!(
        "   sato's copy: {} files, SHA-256 and ed25519 signature verified against the platform key {}",
        v.files_checked, v.key_id
    ));
    out.risk = Some(measure(service, &ca, cast, &built.release, say).await?);

    say("\ntokumei demo — chapter 6: a leaked copy traced to its recipient");
    let traced = trace(service, &ca, cast, &built.release, (&sato_dir, &yui_dir), say).await?;
    let trace_seq = traced.seq;
    out.trace = Some(traced.subset);
    out.trace_rounded = Some(traced.rounded);
    out.trace_other = Some(traced.other);
    record_violation(
        desk,
        &cast.chair,
        ("person", "yui"),
        (
            "data_leak",
            &format!(
                "release {} traced to yui's copy (audit entry {trace_seq})",
                built.release
            ),
        ),
        &application,
        "",
    )
    .await?;
    // yui tries her download again, through the release service as before: the ban is checked at the request.
    let again = home.join("downloads").join("yui-again");
    out.leaker_refused = expect_reason(
        fetch(service, &ca, &yui, &built.release, &again, &|_| {}).await,
        "BANNED",
    )?;
    say(&format!(
        "   chika records the violation; yui asks to download again: {}",
        out.leaker_refused
    ));
    let mut client = connect(service.url, &ca).await?;
    out.deletion_declared_seq = client
        .declare_deletion(authed(
            &bearer(&cast.researcher.session)?,
            tokumei_proto::release::v1::DeclareDeletionRequest {
                application_id: application.clone(),
                statement: "analysis finished; all copies shredded on the analysis server".into(),
            },
        ))
        .await
        .map_err(refused)?
        .into_inner()
        .audit_seq;
    say(&format!(
        "   sato declares deletion of the data to the release service (audit entry {})",
        out.deletion_declared_seq
    ));
    Ok(out)
}

/// `who` downloads their copy of `release` with their session into `dir`.
async fn fetch(
    service: &ReleaseService<'_>,
    ca: &[u8],
    who: &Person,
    release: &str,
    dir: &Path,
    say: &impl Fn(&str),
) -> Result<()> {
    let request = DownloadRequest {
        server: service.url,
        ca_pem: ca,
        session: &who.session,
        release,
        files: &[],
        out: dir,
        progress: false,
    };
    let summary = download(&request)
        .await
        .with_context(|| format!("{}'s download", who.username))?;
    say(&format!(
        "   {} downloads {} over HTTPS from the release service (two-factor session, one-time URLs; the service asks the policy service over mutual TLS and holds no committee key): {} files, SHA-256 verified, in {}",
        who.username,
        summary.release,
        summary.files.len(),
        summary.out
    ));
    Ok(())
}

/// The auditor has the release service re-measure the attack on the sealed copies, trusting nothing the build
/// wrote; the policy service admits the measurement and records its figures.
async fn measure(
    service: &ReleaseService<'_>,
    ca: &[u8],
    cast: &Committee,
    release: &str,
    say: &impl Fn(&str),
) -> Result<ReleaseRisk> {
    let mut client = connect(service.url, ca).await?;
    let (measured, _) = assess_risk(&mut client, &cast.auditor.session, release, &[]).await?;
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
    Ok(measured)
}

/// The three traces of chapter 6 and the audit entry of the first.
struct Traces {
    subset: TraceReport,
    rounded: TraceReport,
    other: TraceReport,
    seq: i64,
}

/// The operator hands each found file to the release service, which holds the fingerprint key; the policy service
/// admits the trace first and records the verdict.
async fn trace(
    service: &ReleaseService<'_>,
    ca: &[u8],
    cast: &Committee,
    release: &str,
    (sato_dir, yui_dir): (&Path, &Path),
    say: &impl Fn(&str),
) -> Result<Traces> {
    let downloads = service.home.join("downloads");
    let mut client = connect(service.url, ca).await?;
    let session = cast.operator.session.as_str();
    let leak = |file| LeakToTrace {
        release,
        file,
        table: None,
        bound: DEFAULT_FALSE_ACCUSATION_BOUND,
    };
    let leaked = downloads.join("found-online.csv");
    // A tenth of the copy, or enough rows to carry marks when the demo runs with few patients.
    let share = leak_subset(
        &yui_dir.join("observations.csv"),
        &leaked,
        0.10,
        8_000,
        LeakEdit::DropPseudonyms,
    )?;
    let (subset, seq) = trace_leak(&mut client, session, &leak(leaked.as_path())).await?;
    say(&format!(
        "   a file found online: {} rows of observations, shuffled, pseudonym column removed ({:.0} % of yui's copy)",
        subset.rows,
        share * 100.0
    ));
    for c in &subset.traced.verdict.candidates {
        say(&format!(
            "     {:<5} score {:>7.2}   P(an innocent scores this high) ≤ {:.1e}{}",
            c.recipient,
            c.score,
            c.p_innocent,
            if subset.traced.accused.contains(&c.recipient) {
                "   ← accused"
            } else {
                ""
            }
        ));
    }
    say(&format!("   {} (audit entry {seq})", subset.traced.explanation));
    // A second find: a hundredth of yui's copy, every value rounded to one decimal (marks of tests reported to
    // 0.01 are gone; whole-number tests keep theirs, too few in a hundredth to accuse), the pseudonyms kept so
    // the file still joins — every copy has its own pseudonyms.
    let found = downloads.join("found-rounded.csv");
    leak_subset(
        &yui_dir.join("observations.csv"),
        &found,
        0.01,
        50,
        LeakEdit::RoundValues,
    )?;
    let (rounded, _) = trace_leak(&mut client, session, &leak(found.as_path())).await?;
    say(&format!(
        "   another: {} rows, values rounded to one decimal, pseudonyms kept: accused {:?} ({})",
        rounded.rows, rounded.traced.accused, rounded.traced.explanation
    ));
    let copy = sato_dir.join("observations.parquet");
    let (other, _) = trace_leak(&mut client, session, &leak(copy.as_path())).await?;
    say(&format!(
        "   sato's own Parquet copy, traced the same way: accused {:?}",
        other.traced.accused
    ));
    if rounded.traced.accused != ["yui".to_owned()] {
        anyhow::bail!("the rounded leak did not name yui alone: {:?}", rounded.traced.accused);
    }
    if subset.traced.accused != ["yui".to_owned()] {
        anyhow::bail!("the trace did not name yui alone: {:?}", subset.traced.accused);
    }
    Ok(Traces {
        subset,
        rounded,
        other,
        seq,
    })
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
