//! Demo chapter 3 — the data-access committee: people enrol with TOTP, a researcher files an application,
//! the committee reviews it (with a recusal and the quorum rule), approves it with conditions and a DP
//! budget; an advertising application and a banned organisation are refused; a locked account; and at the
//! end (after the statistics chapter) the public registers, the regulator's report and the audit ledger,
//! verified — and a tampered copy caught.
//!
//! The demo plays every person, so it holds their TOTP secrets and computes their codes; a real person
//! scans the QR code `tokumei user enrol` draws.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use serde::Serialize;
use tokumei_client::refused;
use tokumei_policy::Role;
use tokumei_policy::committee::{ApplicationForm, ApprovalConditions, Channel, DpBudget, TableRequest, japan_date};
use tokumei_policy::grpc::convert::{conditions_to_proto, form_to_proto};
use tokumei_proto::policy::v1 as pb;

use crate::desk::{Administrators, Desk, Person, activate, expect_reason, expect_refusal, invite};

/// What the chapter shows, for the JSON report.
#[derive(Serialize, Default)]
pub struct CommitteeChapter {
    /// Accounts created and enrolled with TOTP.
    pub users: Vec<String>,
    /// The otpauth URI shape shown for the researcher (secret elided).
    pub otpauth_example: String,
    /// The lockout after repeated failures.
    pub lockout: String,
    /// The advertising application's refusal.
    pub advertising_refused: String,
    /// The approved application.
    pub application: String,
    /// Its fee estimate in yen.
    pub fee_yen: u64,
    /// The refusal while too few members had voted.
    pub quorum_not_met: String,
    /// Final tally (in favour, against).
    pub tally: (u32, u32),
    /// The conditions approved.
    pub conditions: Option<ApprovalConditions>,
    /// A use by someone who is not a recipient.
    pub non_recipient_refused: String,
    /// The banned organisation's refusal.
    pub banned_refused: String,
    /// An administrator approving their own grant of a committee role.
    pub own_grant_refused: String,
    /// The operator trying to give themselves the chair's role.
    pub operator_grant_refused: String,
}

/// The people of the story at their desks, each with their own session and nothing else.
pub struct Committee {
    /// Where the policy service is.
    pub desk: Desk,
    /// The researcher (recipient of the approval).
    pub researcher: Person,
    /// The operator.
    pub operator: Person,
    /// The two administrators (accounts and hospitals; four eyes on privileged grants).
    pub administrators: Administrators,
    /// An auditor.
    pub auditor: Person,
    /// The committee's chair.
    pub chair: Person,
    /// Committee members who review (mei, kenta).
    pub members: Vec<Person>,
    /// The approved application.
    pub application: String,
}

/// The demo's application form for `channel`, every field filled as a researcher would (the benchmarks file it too).
pub fn form(channel: Channel) -> ApplicationForm {
    let today = japan_date(Utc::now());
    ApplicationForm {
        title: "Diabetes care across prefectures".into(),
        purpose: "Compare patient numbers and HbA1c results across prefectures for regional diabetes care plans".into(),
        public_interest: "Evidence for the national diabetes strategy".into(),
        methods: "Differentially private counts and means by prefecture and analyte".into(),
        tables: vec![
            TableRequest {
                table: "patients".into(),
                columns: vec!["prefecture".into(), "sex".into(), "linkage_key".into()],
            },
            TableRequest {
                table: "observations".into(),
                columns: vec!["jlac10".into(), "value".into(), "linkage_key".into()],
            },
        ],
        cohort_filter: String::new(),
        period_from: today,
        period_to: today + Duration::days(365),
        channel,
        security_measures: "Results only; analysis room with access control".into(),
        funding: "Ministry of Health, Labour and Welfare research grant".into(),
        recipients: vec![],
        requested_epsilon: Some(1.0),
        studies: vec![],
        not_for_advertising: true,
    }
}

/// `who` files `form`: the application as the service recorded it.
pub(crate) async fn file(desk: &Desk, who: &Person, form: &ApplicationForm) -> Result<pb::Application> {
    let mut service = desk.as_(who).await?;
    let request = service.request(pb::FileApplicationRequest {
        form: Some(form_to_proto(form)),
        amends: String::new(),
    })?;
    Ok(service
        .client
        .file_application(request)
        .await
        .map_err(refused)?
        .into_inner())
}

/// The chair assigns `members` to review `application`.
pub(crate) async fn assign(desk: &Desk, chair: &Person, application: &str, members: &[&str]) -> Result<()> {
    let mut service = desk.as_(chair).await?;
    let request = service.request(pb::AssignReviewersRequest {
        id: application.to_owned(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    })?;
    service.client.assign_reviewers(request).await.map_err(refused)?;
    Ok(())
}

/// `member` votes in favour of `application` with `comment`.
pub(crate) async fn vote(desk: &Desk, member: &Person, application: &str, comment: &str) -> Result<()> {
    let mut service = desk.as_(member).await?;
    let request = service.request(pb::CastVoteRequest {
        id: application.to_owned(),
        in_favour: true,
        comment: comment.to_owned(),
    })?;
    service.client.cast_vote(request).await.map_err(refused)?;
    Ok(())
}

/// The chair decides `application` with `conditions`.
pub(crate) async fn decide(
    desk: &Desk,
    chair: &Person,
    application: &str,
    conditions: &ApprovalConditions,
) -> Result<pb::Application> {
    let mut service = desk.as_(chair).await?;
    let request = service.request(pb::DecideRequest {
        id: application.to_owned(),
        conditions: Some(conditions_to_proto(conditions)),
    })?;
    Ok(service.client.decide(request).await.map_err(refused)?.into_inner())
}

/// `who` asks to use `application` in the way `kind` names (build, download, statistics).
pub(crate) async fn admit_use(desk: &Desk, who: &Person, application: &str, kind: &str) -> Result<pb::Application> {
    let mut service = desk.as_(who).await?;
    let request = service.request(pb::AdmitUseRequest {
        id: application.to_owned(),
        kind: kind.to_owned(),
        tables: Vec::new(),
    })?;
    Ok(service.client.admit_use(request).await.map_err(refused)?.into_inner())
}

/// The chair records a violation against `subject` (`person` or `organisation`).
pub(crate) async fn record_violation(
    desk: &Desk,
    chair: &Person,
    (subject_kind, subject): (&str, &str),
    (kind, description): (&str, &str),
    application: &str,
    banned_until: &str,
) -> Result<()> {
    let mut service = desk.as_(chair).await?;
    let request = service.request(pb::RecordViolationRequest {
        subject_kind: subject_kind.to_owned(),
        subject: subject.to_owned(),
        kind: kind.to_owned(),
        description: description.to_owned(),
        application: application.to_owned(),
        banned_until: banned_until.to_owned(),
    })?;
    service.client.record_violation(request).await.map_err(refused)?;
    Ok(())
}

/// Staffs the installation through the policy service: the two administrators from the bootstrap, then everyone
/// else invited by their own claim; tries the separation of duties.
async fn staff(
    desk: &Desk,
    codes: &crate::platform::Bootstrapped,
    out: &mut CommitteeChapter,
    say: &impl Fn(&str),
) -> Result<(Administrators, Vec<Person>)> {
    let admins = Administrators {
        first: activate(desk, "aoi", &codes.first).await?.0,
        second: activate(desk, "ren", &codes.second).await?.0,
    };
    let mut people = Vec::new();
    let cast: [(&str, &str, &str, &[Role]); 8] = [
        ("op", "Platform operator", "platform", &[Role::Operator]),
        ("sato", "Rika Sato", "univ-a", &[Role::Researcher]),
        (
            "chika",
            "Chika Ito (chair)",
            "univ-c",
            &[Role::CommitteeChair, Role::CommitteeMember],
        ),
        ("mei", "Mei Kato", "univ-m", &[Role::CommitteeMember]),
        ("kenta", "Kenta Mori", "hosp-k", &[Role::CommitteeMember]),
        ("sora", "Sora Abe (lawyer)", "law-s", &[Role::CommitteeMember]),
        ("audra", "Audra Ono (inspector)", "regulator", &[Role::Auditor]),
        ("kai", "Kai Ueda", "univ-k", &[Role::Researcher]),
    ];
    for (username, name, org, roles) in cast {
        let code = invite(desk, &admins, (username, name, org), roles).await?;
        let (who, uri) = activate(desk, username, &code).await?;
        if username == "sato" {
            out.otpauth_example = uri;
        }
        people.push(who);
    }
    // Separation of duties, tried: the first administrator approving their own grant, and the operator giving
    // themselves the chair's role.
    let (_, claim) = tokumei_policy::identity::directory::invitation_claim().map_err(tokumei_client::reason)?;
    let mut first = desk.as_(&admins.first).await?;
    let request = first.request(pb::AddUserRequest {
        username: "hiro".into(),
        display_name: "Hiro Kudo".into(),
        organisation: "univ-m".into(),
        roles: vec![Role::CommitteeMember.as_str().into()],
        claim: claim.clone(),
    })?;
    let grant = first
        .client
        .add_user(request)
        .await
        .map_err(refused)?
        .into_inner()
        .grant_id;
    let request = first.request(pb::ApproveGrantRequest {
        grant_id: grant.clone(),
        claim,
    })?;
    out.own_grant_refused = expect_refusal(first.client.approve_grant(request).await, "FOUR_EYES")?;
    say(&format!(
        "   aoi asks for a committee seat for hiro ({grant}) and approves it herself: {}",
        out.own_grant_refused
    ));
    let operator = people
        .iter()
        .find(|p| p.username == "op")
        .context("the operator is on the cast")?;
    let mut op = desk.as_(operator).await?;
    let request = op.request(pb::SetRolesRequest {
        username: "op".into(),
        roles: vec![Role::Operator.as_str().into(), Role::CommitteeChair.as_str().into()],
    })?;
    out.operator_grant_refused = expect_refusal(op.client.set_roles(request).await, "ROLE_NOT_PERMITTED")?;
    say(&format!(
        "   op gives itself the chair's role: {}",
        out.operator_grant_refused
    ));
    out.users = [
        "aoi", "ren", "op", "sato", "chika", "mei", "kenta", "sora", "audra", "kai",
    ]
    .map(String::from)
    .to_vec();
    say(&format!(
        "   {} people enrolled through the policy service: argon2id password + TOTP (RFC 6238), e.g. {}; each got 10 recovery codes",
        out.users.len(),
        out.otpauth_example
    ));
    Ok((admins, people))
}

/// Runs the committee chapter up to the approval, every act a call to the policy service (a process of its own);
/// returns the cast for the chapters that follow.
pub async fn chapter(
    desk: &Desk,
    codes: &crate::platform::Bootstrapped,
    say: &impl Fn(&str),
) -> Result<(Committee, CommitteeChapter)> {
    let mut out = CommitteeChapter::default();
    let (admins, people) = staff(desk, codes, &mut out, say).await?;
    let [op, researcher, chair, mei, kenta, sora, auditor, outsider]: [Person; 8] = people
        .try_into()
        .map_err(|_| anyhow::anyhow!("the cast is eight people"))?;

    // Lockout: five wrong passwords lock kai's account; the right password and code are then refused too.
    for _ in 0..5 {
        let mut service = desk.anonymous().await?;
        let _ = service
            .client
            .login(pb::LoginRequest {
                username: "kai".into(),
                password: "not the password!".into(),
                second_factor: Some(pb::login_request::SecondFactor::TotpCode("000000".into())),
            })
            .await;
    }
    out.lockout = expect_reason(crate::desk::sign_in(desk, "kai", "000000").await, "ACCOUNT_LOCKED")?;
    say(&format!(
        "   5 wrong passwords for kai, then the right one: {}",
        out.lockout
    ));

    // An application for advertising is refused at filing.
    let mut ad = form(Channel::Statistics);
    ad.purpose = "Marketing of a new DPP-4 inhibitor to clinics in high-HbA1c prefectures".into();
    out.advertising_refused = expect_reason(file(desk, &researcher, &ad).await, "ADVERTISING_REFUSED")?;
    say(&format!("   an application for marketing: {}", out.advertising_refused));

    // The real application, its review and approval.
    let app = file(desk, &researcher, &form(Channel::Statistics)).await?;
    out.application = app.id.clone();
    out.fee_yen = app.fee.as_ref().map_or(0, |f| f.total_yen);
    say(&format!(
        "   sato (University A) files {} (statistics channel, ε=1 requested); fee estimate ¥{}",
        app.id, out.fee_yen
    ));
    assign(desk, &chair, &app.id, &["mei", "kenta", "sora"]).await?;
    let mut recusing = desk.as_(&sora).await?;
    let request = recusing.request(pb::RecuseRequest {
        id: app.id.clone(),
        reason: "advises the funder".into(),
    })?;
    recusing.client.recuse(request).await.map_err(refused)?;
    vote(
        desk,
        &mei,
        &app.id,
        "Clear public interest; results-only channel is proportionate",
    )
    .await?;
    vote(desk, &kenta, &app.id, "Agree; keep the budget small").await?;
    let today = japan_date(Utc::now());
    let conditions = ApprovalConditions {
        tables: form(Channel::Statistics).tables,
        cohort_filter: String::new(),
        privacy: None,
        dp_budget: Some(DpBudget {
            epsilon: 1.0,
            delta: 1e-5,
        }),
        channel: Channel::Statistics,
        expires_on: today + Duration::days(180),
        max_downloads: 0,
        recipients: BTreeSet::from(["sato".to_owned()]),
        link_releases: false,
        pseudonymised: false,
        // The committee allows one small-cell table convention besides DP, at the platform floor.
        statistics: tokumei_policy::committee::conditions::StatisticsRules {
            small_cell_min: Some(tokumei_policy::committee::conditions::SMALL_CELL_FLOOR),
            groupable: Vec::new(),
        },
    };
    out.quorum_not_met = expect_reason(decide(desk, &chair, &app.id, &conditions).await, "QUORUM_NOT_MET")?;
    say(&format!(
        "   chika assigns mei, kenta, sora; sora recuses; 2 votes in favour; closing now: {}",
        out.quorum_not_met
    ));
    assign(desk, &chair, &app.id, &["chika"]).await?;
    vote(desk, &chair, &app.id, "Approve with a budget of ε=1").await?;
    let decided = decide(desk, &chair, &app.id, &conditions).await?;
    let in_favour = u32::try_from(decided.votes.iter().filter(|v| v.in_favour).count())?;
    let against = u32::try_from(decided.votes.len())? - in_favour;
    out.tally = (in_favour, against);
    out.conditions = decided
        .conditions
        .map(tokumei_policy::grpc::convert::conditions_from_proto)
        .transpose()
        .map_err(tokumei_client::reason)?;
    say(&format!(
        "   chika joins the review and votes: {} in favour, {} against → {} with conditions: statistics only, ε=1 δ=1e-5, recipient sato, until {}",
        in_favour,
        against,
        decided.status,
        today + Duration::days(180)
    ));

    // A researcher who is not a recipient cannot use the approval.
    out.non_recipient_refused =
        expect_reason(admit_use(desk, &outsider, &app.id, "statistics").await, "NOT_RECIPIENT")?;
    say(&format!(
        "   kai (not a recipient) asks for statistics under {}: {}",
        app.id, out.non_recipient_refused
    ));

    // A violation bans an organisation from applying.
    record_violation(
        desk,
        &chair,
        ("organisation", "univ-k"),
        (
            "re_identification_attempt",
            "matched a released table against a voter list",
        ),
        "",
        &(today + Duration::days(5 * 365)).to_string(),
    )
    .await?;
    out.banned_refused = expect_reason(file(desk, &outsider, &form(Channel::File)).await, "BANNED")?;
    say(&format!(
        "   a violation is recorded against University K; kai files again: {}",
        out.banned_refused
    ));

    let cast = Committee {
        desk: desk.clone(),
        researcher,
        operator: op,
        administrators: admins,
        auditor,
        chair,
        members: vec![mei, kenta],
        application: app.id,
    };
    Ok((cast, out))
}

/// What the closing part shows.
#[derive(Serialize, Default)]
pub struct TransparencyChapter {
    /// Decisions register files.
    pub decisions: Vec<String>,
    /// Provisions register entries.
    pub provisions: usize,
    /// The regulator report's period.
    pub report_period: String,
    /// Statistics in the regulator report: differentially private releases, and small-cell tables apart.
    pub report_statistics: (u64, u64),
    /// Audit entries verified.
    pub audit_entries: u64,
    /// The head hash (published with the report).
    pub audit_head: String,
    /// What verification said about the auditor's exported bundle and a copy with one vote comment edited.
    pub tampered_copy: String,
}

/// Registers, the regulator report (the committee's figures and the core's, each from its zone's service), the
/// audit ledger verified by the service, and a tampered copy caught.
pub async fn closing(
    home: &Path,
    cast: &Committee,
    say: &impl Fn(&str),
) -> Result<(TransparencyChapter, tokumei_store::regulator::CoreFigures)> {
    let mut out = TransparencyChapter::default();
    let dir = home.join("register");
    std::fs::create_dir_all(&dir)?;
    let service = cast.desk.as_(&cast.operator).await?;
    let register = |name: &str| {
        let request = service.request(pb::RegisterRef {
            register: name.to_owned(),
        });
        let mut client = service.client.clone();
        async move {
            anyhow::Ok(
                client
                    .publish_register(request?)
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .json,
            )
        }
    };
    let decisions: Vec<tokumei_policy::transparency::DecisionEntry> =
        serde_json::from_str(&register("decisions").await?)?;
    std::fs::write(dir.join("decisions.json"), serde_json::to_vec_pretty(&decisions)?)?;
    out.decisions = decisions
        .iter()
        .map(|d| format!("{} {} {}", d.application, d.organisation, d.scope))
        .collect();
    let provisions: Vec<tokumei_policy::transparency::ProvisionEntry> =
        serde_json::from_str(&register("provisions").await?)?;
    std::fs::write(dir.join("provisions.json"), serde_json::to_vec_pretty(&provisions)?)?;
    out.provisions = provisions.len();
    say(&format!(
        "   public registers in {}: {} decision(s), {} provision(s) (what was given to which organisation)",
        dir.display(),
        decisions.len(),
        provisions.len()
    ));
    let period = tokumei_policy::transparency::current_quarter(Utc::now());
    let mut auditor = cast.desk.as_(&cast.auditor).await?;
    let request = auditor.request(pb::PeriodRef { period: period.clone() })?;
    let text = auditor
        .client
        .regulator_report(request)
        .await
        .map_err(refused)?
        .into_inner()
        .json;
    let report: tokumei_policy::transparency::RegulatorReport = serde_json::from_str(&text)?;
    out.report_period = period.clone();
    out.report_statistics = (report.dp_releases, report.small_cell_tables);
    say(&format!(
        "   regulator report {period}: {} application(s) received, {} approved, {} refused at filing, {} violation(s), {} denied action(s); {} DP statistical release(s), {} small-cell table(s) counted apart (not DP)",
        report.applications_received,
        report.applications_approved,
        report.applications_refused_at_filing,
        report.violations,
        report.denied_actions,
        report.dp_releases,
        report.small_cell_tables
    ));
    // The core's half of the report: an order the core carries out, counts only.
    let figures = tokumei_client::core_orders::order(
        &cast.desk.options(Some(&cast.auditor)),
        &tokumei_client::core_orders::WaitOptions { wait_secs: 120 },
        pb::core_operation_request::Operation::RegulatorFigures(pb::PeriodRef { period: period.clone() }),
        false,
    )
    .await?;
    let figures: tokumei_store::regulator::CoreFigures =
        serde_json::from_str(&figures.result_json).context("the core's figures")?;
    say(&format!(
        "   the report's core figures for {period}, counted by the core for the auditor's order: {} hospitals provided {} patient records ({} clinical rows); {} opt-out(s), {} erasure request(s), {} erasure(s) completed",
        figures.hospitals_providing,
        figures.patient_records_received,
        figures.clinical_rows_received,
        figures.opt_outs_handled,
        figures.erasure_requests_handled,
        figures.erasures_completed
    ));
    let request = auditor.request(pb::Empty {})?;
    let verified = auditor
        .client
        .verify_audit(request)
        .await
        .map_err(refused)?
        .into_inner();
    anyhow::ensure!(verified.ok, "the demo's audit ledger does not verify: {verified:?}");
    out.audit_entries = verified.entries_checked;
    out.audit_head = verified.head_hash.clone();
    say(&format!(
        "   audit ledger, verified by the policy service for the auditor: {} entries, each chained to the previous one's SHA-256 and signed (ed25519); head {}…",
        verified.entries_checked,
        verified.head_hash.get(..16).unwrap_or_default()
    ));
    out.tampered_copy = tamper_and_verify(home, cast).await?;
    say(&format!(
        "   the auditor's inspection bundle of the last hour, and a copy with one vote comment edited: {}",
        out.tampered_copy
    ));
    Ok((out, figures))
}

/// The auditor's inspection bundle of the last hour (the demo's), exported by the policy service: its JSON as the
/// service signed it, and read.
pub(crate) async fn auditor_bundle(
    cast: &Committee,
) -> Result<(String, tokumei_policy::audit_ledger::InspectionBundle)> {
    let mut auditor = cast.desk.as_(&cast.auditor).await?;
    let now = Utc::now();
    let request = auditor.request(pb::AuditWindow {
        from: (now - Duration::hours(1)).to_rfc3339(),
        to: (now + Duration::minutes(1)).to_rfc3339(),
    })?;
    let text = auditor
        .client
        .export_audit(request)
        .await
        .map_err(refused)?
        .into_inner()
        .json;
    let bundle = serde_json::from_str(&text).context("the service's inspection bundle")?;
    Ok((text, bundle))
}

/// The auditor's inspection bundle of the demo's hour, exported by the policy service; one vote comment is edited
/// in a copy, as someone between the platform and an inspector could, and the copy is verified with the ledger's
/// public key (what an inspector holds): the original verifies, the edited copy does not.
async fn tamper_and_verify(home: &Path, cast: &Committee) -> Result<String> {
    use tokumei_policy::audit_ledger::verify_bundle;
    let (text, bundle) = auditor_bundle(cast).await?;
    let dir = home.join("register");
    tokumei_client::output::write_atomically(&dir.join("audit-bundle.json"), text.as_bytes())?;
    let ledger_key = tokumei_policy::service_key::public_key_path(&tokumei_policy::service_key::default_key_path(home));
    let public = tokumei_policy::ServicePublicKey::read(&ledger_key).map_err(tokumei_client::reason)?;
    let original = verify_bundle(&bundle, &public);
    anyhow::ensure!(
        original.first_bad.is_none(),
        "the exported bundle does not verify: {:?}",
        original.first_bad
    );
    let mut edited = bundle;
    let victim = edited
        .entries
        .iter_mut()
        .find(|e| e.action == "review.vote" && e.details.contains("proportionate"))
        .context("the bundle holds the first application's votes")?;
    victim.details = victim.details.replace("proportionate", "Proportionate");
    let victim = victim.seq;
    let report = verify_bundle(&edited, &public);
    Ok(match report.first_bad {
        Some(bad) => format!(
            "the original verifies ({} entries); the edited copy is caught at entry {} (the vote, seq {victim}): {}",
            original.entries_checked,
            bad.seq.unwrap_or_default(),
            bad.message
        ),
        None => anyhow::bail!("tampering was not detected"),
    })
}
