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
use tokumei_policy::committee::{
    ApplicationForm, ApprovalConditions, BanSubject, Channel, DpBudget, TableRequest, UseKind, japan_date,
};
use tokumei_policy::identity::SecondFactor;
use tokumei_policy::{Actor, Origin, Policy, Role};
use zeroize::Zeroizing;

pub(super) const DEMO: Origin<'static> = Origin("demo");

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

/// The people of the story and their sessions.
pub struct Committee {
    /// The service.
    pub policy: Policy,
    /// The hold on the home's keys, as a running service keeps it.
    _keys_in_use: tokumei_policy::service_key::KeysInUse,
    /// The researcher (recipient of the approval).
    pub researcher: Actor,
    /// The researcher's two-factor session token (what their download client presents).
    pub researcher_session: Zeroizing<String>,
    /// The operator.
    pub operator: Actor,
    /// The operator's two-factor session token (what their commands present to the services).
    pub operator_session: Zeroizing<String>,
    /// The two administrators (accounts and hospitals; four eyes on privileged grants).
    pub administrators: crate::staff::Administrators,
    /// An auditor.
    pub auditor: Actor,
    /// The auditor's two-factor session token (the risk measurement is asked of the release service).
    pub auditor_session: Zeroizing<String>,
    /// The committee's chair.
    pub chair: Actor,
    /// Committee members who review (mei, kenta).
    pub members: Vec<Actor>,
    /// The approved application.
    pub application: String,
}

const PASSWORD: &str = "demo password, not for production";

/// Enrols `username` with the demo's password and logs them in (see [`crate::staff::activate`]).
async fn activate(policy: &Policy, username: &str, invitation: &str) -> Result<(Actor, String, Zeroizing<String>)> {
    crate::staff::activate(policy, (username, PASSWORD), invitation, DEMO).await
}

pub(super) async fn person(
    policy: &Policy,
    admins: &crate::staff::Administrators,
    username: &str,
    name: &str,
    org: &str,
    roles: &[Role],
) -> Result<Actor> {
    Ok(person_with_session(policy, admins, username, name, org, roles).await?.0)
}

/// A person invited (by their own claim; four eyes where the roles need them), enrolled and logged in, with the
/// session token their tools (the download client) present.
pub(super) async fn person_with_session(
    policy: &Policy,
    admins: &crate::staff::Administrators,
    username: &str,
    name: &str,
    org: &str,
    roles: &[Role],
) -> Result<(Actor, Zeroizing<String>)> {
    let code = crate::staff::invite(policy, admins, (username, name, org), roles, DEMO).await?;
    let (actor, _, token) = activate(policy, username, code.expose()).await?;
    Ok((actor, token))
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

/// Runs the committee chapter up to the approval; returns the cast for the chapters that follow.
pub async fn chapter(home: &Path, say: &impl Fn(&str)) -> Result<(Committee, CommitteeChapter)> {
    // The demo plays the policy service on this host: it logs its cast in with the service's session key, and holds
    // the home's keys as a service does (no rotation under it).
    let (policy, keys_in_use) = tokumei_policy::on_home::open_service(home, None)
        .await
        .map_err(tokumei_client::reason)?;
    let mut out = CommitteeChapter::default();

    // The installation's first two administrators (the installer hands each their code); every other account
    // is invited by its own claim, and committee and operator roles need both administrators.
    let [first, second] = crate::staff::bootstrap(&policy, DEMO).await?;
    let admins = crate::staff::Administrators {
        first: activate(&policy, "aoi", first.expose()).await?.0,
        second: activate(&policy, "ren", second.expose()).await?.0,
    };
    let (op, operator_session) = person_with_session(
        &policy,
        &admins,
        "op",
        "Platform operator",
        "platform",
        &[Role::Operator],
    )
    .await?;
    let researcher = {
        let code = crate::staff::invite(
            &policy,
            &admins,
            ("sato", "Rika Sato", "univ-a"),
            &[Role::Researcher],
            DEMO,
        )
        .await?;
        let (actor, uri, token) = activate(&policy, "sato", code.expose()).await?;
        out.otpauth_example = uri;
        (actor, token)
    };
    let (researcher, researcher_session) = researcher;
    let chair = person(
        &policy,
        &admins,
        "chika",
        "Chika Ito (chair)",
        "univ-c",
        &[Role::CommitteeChair, Role::CommitteeMember],
    )
    .await?;
    let mei = person(&policy, &admins, "mei", "Mei Kato", "univ-m", &[Role::CommitteeMember]).await?;
    let kenta = person(
        &policy,
        &admins,
        "kenta",
        "Kenta Mori",
        "hosp-k",
        &[Role::CommitteeMember],
    )
    .await?;
    let sora = person(
        &policy,
        &admins,
        "sora",
        "Sora Abe (lawyer)",
        "law-s",
        &[Role::CommitteeMember],
    )
    .await?;
    let (auditor, auditor_session) = person_with_session(
        &policy,
        &admins,
        "audra",
        "Audra Ono (inspector)",
        "regulator",
        &[Role::Auditor],
    )
    .await?;
    let outsider = person(&policy, &admins, "kai", "Kai Ueda", "univ-k", &[Role::Researcher]).await?;
    // Separation of duties, tried: the first administrator approving their own grant, and the operator giving
    // themselves the chair's role.
    let (_, claim) = tokumei_policy::identity::directory::invitation_claim().map_err(tokumei_client::reason)?;
    let invitee = tokumei_policy::NewPerson {
        username: "hiro",
        display_name: "Hiro Kudo",
        organisation: "univ-m",
        claim: &claim,
    };
    let asked = policy
        .add_user(&admins.first, invitee, &[Role::CommitteeMember], DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    let grant = asked.grant_id().unwrap_or_default().to_owned();
    out.own_grant_refused = match policy.approve_grant(&admins.first, &grant, Some(&claim), DEMO).await {
        Ok(_) => anyhow::bail!("an administrator approved their own grant"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
    say(&format!(
        "   aoi asks for a committee seat for hiro ({grant}) and approves it herself: {}",
        out.own_grant_refused
    ));
    out.operator_grant_refused = match policy
        .set_roles(&op, "op", &[Role::Operator, Role::CommitteeChair], DEMO)
        .await
    {
        Ok(_) => anyhow::bail!("the operator changed their own roles"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
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
        "   {} people enrolled: argon2id password + TOTP (RFC 6238), e.g. {}; each got 10 recovery codes",
        out.users.len(),
        out.otpauth_example
    ));

    // Lockout: five wrong passwords lock kai's account; the right password and code are then refused too.
    for _ in 0..5 {
        let _ = policy
            .login("kai", "not the password!", SecondFactor::Totp("000000"), DEMO)
            .await;
    }
    out.lockout = match policy.login("kai", PASSWORD, SecondFactor::Totp("000000"), DEMO).await {
        Ok(_) => anyhow::bail!("a locked account logged in"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
    say(&format!(
        "   5 wrong passwords for kai, then the right one: {}",
        out.lockout
    ));

    // An application for advertising is refused at filing.
    let mut ad = form(Channel::Statistics);
    ad.purpose = "Marketing of a new DPP-4 inhibitor to clinics in high-HbA1c prefectures".into();
    out.advertising_refused = match policy.file_application(&researcher, ad, None, DEMO).await {
        Ok(_) => anyhow::bail!("an advertising application was accepted"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
    say(&format!("   an application for marketing: {}", out.advertising_refused));

    // The real application, its review and approval.
    let app = policy
        .file_application(&researcher, form(Channel::Statistics), None, DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    out.application = app.id.clone();
    out.fee_yen = app.fee.total_yen;
    say(&format!(
        "   sato (University A) files {} (statistics channel, ε=1 requested); fee estimate ¥{}",
        app.id, app.fee.total_yen
    ));
    let members = ["mei", "kenta", "sora"].map(String::from).to_vec();
    policy
        .assign(&chair, &app.id, &members, DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    policy
        .recuse(&sora, &app.id, "advises the funder", DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    policy
        .vote(
            &mei,
            &app.id,
            true,
            "Clear public interest; results-only channel is proportionate",
            DEMO,
        )
        .await
        .map_err(tokumei_client::reason)?;
    policy
        .vote(&kenta, &app.id, true, "Agree; keep the budget small", DEMO)
        .await
        .map_err(tokumei_client::reason)?;
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
        // The committee allows one small-cell table convention besides DP, at the platform floor.
        statistics: tokumei_policy::committee::conditions::StatisticsRules {
            small_cell_min: Some(tokumei_policy::committee::conditions::SMALL_CELL_FLOOR),
            groupable: Vec::new(),
        },
    };
    out.quorum_not_met = match policy.decide(&chair, &app.id, Some(conditions.clone()), DEMO).await {
        Ok(_) => anyhow::bail!("decided below the quorum"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
    say(&format!(
        "   chika assigns mei, kenta, sora; sora recuses; 2 votes in favour; closing now: {}",
        out.quorum_not_met
    ));
    policy
        .assign(&chair, &app.id, &["chika".to_owned()], DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    policy
        .vote(&chair, &app.id, true, "Approve with a budget of ε=1", DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    let decided = policy
        .decide(&chair, &app.id, Some(conditions), DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    let tally = decided.tally.context("a decided application has a tally")?;
    out.tally = (tally.in_favour, tally.against);
    out.conditions = decided.conditions.clone();
    say(&format!(
        "   chika joins the review and votes: {} in favour, {} against → {} with conditions: statistics only, ε=1 δ=1e-5, recipient sato, until {}",
        tally.in_favour,
        tally.against,
        decided.status,
        today + Duration::days(180)
    ));

    // A researcher who is not a recipient cannot use the approval.
    out.non_recipient_refused = match policy
        .admit_use(&outsider, &app.id, UseKind::Statistics, &[], DEMO)
        .await
    {
        Ok(_) => anyhow::bail!("a non-recipient used the approval"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
    say(&format!(
        "   kai (not a recipient) asks for statistics under {}: {}",
        app.id, out.non_recipient_refused
    ));

    // A violation bans an organisation from applying.
    policy
        .record_violation(
            &chair,
            BanSubject::Organisation("univ-k".into()),
            "re_identification_attempt",
            "matched a released table against a voter list",
            None,
            Some(today + Duration::days(5 * 365)),
            DEMO,
        )
        .await
        .map_err(tokumei_client::reason)?;
    out.banned_refused = match policy
        .file_application(&outsider, form(Channel::File), None, DEMO)
        .await
    {
        Ok(_) => anyhow::bail!("a banned organisation filed"),
        Err(e) => format!("[{}] {e}", e.reason()),
    };
    say(&format!(
        "   a violation is recorded against University K; kai files again: {}",
        out.banned_refused
    ));

    let cast = Committee {
        policy,
        _keys_in_use: keys_in_use,
        researcher,
        researcher_session,
        operator: op,
        operator_session,
        administrators: admins,
        auditor,
        auditor_session,
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
    /// What verification said about a copy with one byte changed.
    pub tampered_copy: String,
}

/// Registers, the regulator report, the audit ledger verified, and a tampered copy caught.
pub async fn closing(home: &Path, cast: &Committee, say: &impl Fn(&str)) -> Result<TransparencyChapter> {
    let p = &cast.policy;
    let mut out = TransparencyChapter::default();
    let dir = home.join("register");
    std::fs::create_dir_all(&dir)?;
    let decisions = p
        .decisions_register(&cast.operator, DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    std::fs::write(dir.join("decisions.json"), serde_json::to_vec_pretty(&decisions)?)?;
    out.decisions = decisions
        .iter()
        .map(|d| format!("{} {} {}", d.application, d.organisation, d.scope))
        .collect();
    let provisions = p
        .provisions_register(&cast.operator, DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    std::fs::write(dir.join("provisions.json"), serde_json::to_vec_pretty(&provisions)?)?;
    out.provisions = provisions.len();
    say(&format!(
        "   public registers in {}: {} decision(s), {} provision(s) (what was given to which organisation)",
        dir.display(),
        decisions.len(),
        provisions.len()
    ));
    let period = tokumei_policy::transparency::current_quarter(Utc::now());
    let report = p
        .regulator_report(&cast.auditor, &period, DEMO)
        .await
        .map_err(tokumei_client::reason)?;
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
    let verified = p
        .verify_audit(&cast.auditor, DEMO)
        .await
        .map_err(tokumei_client::reason)?;
    anyhow::ensure!(
        verified.is_ok(),
        "the demo's audit ledger does not verify: {verified:?}"
    );
    out.audit_entries = verified.entries_checked;
    out.audit_head = verified.head.hash.clone();
    say(&format!(
        "   audit ledger: {} entries, each chained to the previous one's SHA-256 and signed (ed25519); verified, head {}…",
        verified.entries_checked,
        &verified.head.hash[..16.min(verified.head.hash.len())]
    ));
    out.tampered_copy = tamper_and_verify(home, p).await?;
    say(&format!(
        "   a copy of the ledger with one vote comment edited (triggers dropped, as a DBA could): {}",
        out.tampered_copy
    ));
    Ok(out)
}

/// Copies the SQLite database, edits one entry as a database administrator could, and verifies the copy.
async fn tamper_and_verify(home: &Path, p: &Policy) -> Result<String> {
    use sqlx::Executor;
    let copy_dir = home.join("tampered");
    std::fs::create_dir_all(&copy_dir)?;
    let copy = copy_dir.join("policy.db");
    // SQLite's own copy (`VACUUM INTO`), never a file copy: opening and closing the live database file outside
    // SQLite drops this process's POSIX locks on it, after which another process (the policy service of
    // chapter 8) and this one stopped seeing each other's commits and a checkpoint lost the other's entries.
    let target = copy.display().to_string().replace('\'', "''");
    let live = tokumei_policy::PolicyDb::open(&tokumei_policy::database::default_url(home)).await?;
    live.pool().execute(format!("VACUUM INTO '{target}'").as_str()).await?;
    live.close().await;
    let db = tokumei_policy::PolicyDb::open(&tokumei_policy::database::sqlite_url(&copy)).await?;
    // What a database administrator with write access could do: drop the append-only trigger.
    db.pool()
        .execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
        .await?;
    let victim: i64 = sqlx::query_scalar("SELECT MIN(seq) FROM audit_entries WHERE action = 'review.vote'")
        .fetch_one(db.pool())
        .await?;
    sqlx::query("UPDATE audit_entries SET details = REPLACE(details, 'proportionate', 'Proportionate') WHERE seq = $1")
        .bind(victim)
        .execute(db.pool())
        .await?;
    let report = tokumei_policy::audit_ledger::verify_database(db.clone(), &[p.public_key()]).await?;
    db.close().await;
    let _ = std::fs::remove_dir_all(&copy_dir);
    Ok(match report.first_bad {
        Some(bad) => format!(
            "detected at entry {} (the vote, seq {victim}): {}",
            bad.seq.unwrap_or_default(),
            bad.message
        ),
        None => anyhow::bail!("tampering was not detected"),
    })
}
