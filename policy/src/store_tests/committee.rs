//! The committee workflow end to end through the policy service (`Policy`), with real users who enrol and
//! log in with TOTP at a controlled clock, on SQLite and PostgreSQL: filing (advertising refused, bans),
//! review with recusal and the quorum rule's edges, approval conditions enforced on use (recipient,
//! channel, columns, download limit, expiry), revocation, change requests and umbrella applications, fee
//! estimates, ban export/import between processors, and the audit ledger recording all of it — denials
//! included — and still verifying.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use tokumei_policy::committee::{
    ApplicationForm, ApplicationStatus, ApprovalConditions, BanSubject, Channel, DpBudget, PrivacyModel, Study,
    TableRequest, UseKind,
};
use tokumei_policy::identity::SecondFactor;
use tokumei_policy::identity::totp::{Totp, TotpSecret};
use tokumei_policy::{Actor, Origin, Policy, PolicyConfig, PolicyDb, PolicyError, Role, ServiceKey};

on_both_backends!(
    full_review_with_recusal_and_quorum_edges,
    conditions_are_enforced_on_every_use,
    change_requests_and_umbrella_applications,
    bans_stop_applications_and_travel_between_processors,
    the_ledger_records_denials_and_verifies,
    stale_grants_do_not_apply,
);

const ORIGIN: Origin<'static> = Origin("test");
const PASSWORD: &str = "correct horse battery staple";

/// A clock the test moves by hand.
struct World {
    policy: Policy,
    clock: Arc<AtomicI64>,
    /// The two administrators, once bootstrapped: the first invites, the second approves four-eyes grants.
    admins: std::sync::Mutex<Option<(Actor, Actor)>>,
}

impl World {
    fn new(db: PolicyDb, seed: u8) -> World {
        let start = Utc.with_ymd_and_hms(2026, 11, 2, 1, 0, 0).single().expect("start time");
        let clock = Arc::new(AtomicI64::new(start.timestamp_millis()));
        let c = clock.clone();
        let policy = Policy::new(
            db,
            ServiceKey::from_seed(&[seed; 32]),
            PolicyConfig::default(),
            Arc::new(move || DateTime::<Utc>::from_timestamp_millis(c.load(Ordering::SeqCst)).unwrap_or_default()),
        )
        .expect("policy service")
        .with_bans_key(ServiceKey::from_seed(&[seed.wrapping_add(100); 32]));
        World {
            policy,
            clock,
            admins: std::sync::Mutex::new(None),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.policy.now()
    }

    fn advance(&self, by: Duration) {
        self.clock.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }

    /// Completes an invitation and logs in: enrol, confirm with the current code, log in with the next
    /// step's code (a code is accepted once).
    async fn activate(&self, username: &str, invitation: &str) -> Actor {
        let enrolment = self
            .policy
            .enrol(username, invitation, PASSWORD, ORIGIN)
            .await
            .expect("enrol");
        let secret = TotpSecret::from_base32(enrolment.secret_base32.expose()).expect("secret");
        let totp = Totp::new(&secret, "tokumei", username).expect("totp");
        let code = totp.code_at(self.now());
        self.policy
            .confirm_totp(username, PASSWORD, &code, ORIGIN)
            .await
            .expect("confirm");
        self.advance(Duration::seconds(30));
        let code = totp.code_at(self.now());
        let session = self
            .policy
            .login(username, PASSWORD, SecondFactor::Totp(&code), ORIGIN)
            .await
            .expect("login");
        self.policy
            .authenticate(session.token.expose())
            .await
            .expect("authenticate")
    }

    /// The first two administrators, then an operator they grant (four eyes).
    async fn operator(&self) -> Actor {
        let claim = || tokumei_policy::identity::directory::invitation_claim().expect("claim");
        let ((code1, claim1), (code2, claim2)) = (claim(), claim());
        self.policy
            .bootstrap(
                [("adm1", "Admin One", &claim1), ("adm2", "Admin Two", &claim2)],
                "platform",
                ORIGIN,
            )
            .await
            .expect("bootstrap");
        let first = self.activate("adm1", code1.expose()).await;
        let second = self.activate("adm2", code2.expose()).await;
        *self.admins.lock().expect("admins") = Some((first, second));
        self.person("op", "platform", &[Role::Operator]).await
    }

    /// A person invited by their own claim with `roles` in `org`: the first administrator asks, the second
    /// approves when the roles need four eyes.
    async fn person(&self, username: &str, org: &str, roles: &[Role]) -> Actor {
        let (first, second) = self.admins.lock().expect("admins").clone().expect("bootstrapped");
        if self.policy.add_organisation(&first, org, org, ORIGIN).await.is_err() {
            // Already there.
        }
        let (code, claim) = tokumei_policy::identity::directory::invitation_claim().expect("claim");
        let invitee = tokumei_policy::NewPerson {
            username,
            display_name: username,
            organisation: org,
            claim: &claim,
        };
        let change = self
            .policy
            .add_user(&first, invitee, roles, ORIGIN)
            .await
            .expect("add user");
        if let tokumei_policy::UserChange::Pending(g) = change {
            self.policy
                .approve_grant(&second, &g.id, Some(&claim), ORIGIN)
                .await
                .expect("second administrator approves");
        }
        self.activate(username, code.expose()).await
    }
}

/// The cast of a review: an operator, a researcher, a chair and four members from four organisations.
struct Cast {
    op: Actor,
    researcher: Actor,
    chair: Actor,
    members: Vec<Actor>,
}

async fn cast(w: &World) -> Cast {
    let op = w.operator().await;
    let researcher = w.person("rika", "univ-a", &[Role::Researcher]).await;
    let chair = w
        .person("chika", "univ-c", &[Role::CommitteeChair, Role::CommitteeMember])
        .await;
    let mut members = Vec::new();
    for (name, org) in [
        ("mei", "univ-m"),
        ("kenta", "hosp-k"),
        ("sora", "law-s"),
        ("yui", "univ-a"),
    ] {
        members.push(w.person(name, org, &[Role::CommitteeMember]).await);
    }
    Cast {
        op,
        researcher,
        chair,
        members,
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

fn form() -> ApplicationForm {
    ApplicationForm {
        title: "HbA1c control by prefecture".into(),
        purpose: "Compare glycaemic control across prefectures to inform regional diabetes care plans".into(),
        public_interest: "Evidence for the national diabetes strategy".into(),
        methods: "Multilevel regression of HbA1c on prefecture, age band and sex".into(),
        tables: vec![
            TableRequest {
                table: "observations".into(),
                columns: vec!["jlac10".into(), "value".into()],
            },
            TableRequest {
                table: "patients".into(),
                columns: vec!["birth_date".into(), "sex".into(), "prefecture".into()],
            },
        ],
        cohort_filter: "jlac10 LIKE '3D046%'".into(),
        period_from: date(2026, 12, 1),
        period_to: date(2027, 11, 30),
        channel: Channel::File,
        security_measures: "Isolated analysis room, encrypted disks, no network".into(),
        funding: "JSPS KAKENHI 26K00001".into(),
        recipients: vec![],
        requested_epsilon: None,
        studies: vec![],
        not_for_advertising: true,
    }
}

fn conditions(recipients: &[&str]) -> ApprovalConditions {
    ApprovalConditions {
        tables: vec![
            TableRequest {
                table: "observations".into(),
                columns: vec!["jlac10".into(), "value".into()],
            },
            TableRequest {
                table: "patients".into(),
                columns: vec!["sex".into(), "prefecture".into()],
            },
        ],
        cohort_filter: "jlac10 LIKE '3D046%'".into(),
        privacy: Some(PrivacyModel {
            k: 5,
            l: None,
            t: None,
            max_suppression: 0.02,
            m: 2,
            demographic_weight: None,
        }),
        dp_budget: None,
        channel: Channel::File,
        expires_on: date(2027, 6, 30),
        max_downloads: 2,
        recipients: recipients.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        link_releases: false,
        pseudonymised: false,
        statistics: Default::default(),
    }
}

fn reason<T: std::fmt::Debug>(r: Result<T, tokumei_policy::PolicyError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e.reason(),
    }
}

async fn full_review_with_recusal_and_quorum_edges(db: PolicyDb, _url: String) {
    let w = World::new(db, 1);
    let c = cast(&w).await;
    let p = &w.policy;
    let app = p
        .file_application(&c.researcher, form(), None, ORIGIN)
        .await
        .expect("file");
    assert_eq!(app.status, ApplicationStatus::Submitted);
    assert_eq!(app.id, "A-2026-0001");
    assert_eq!(app.fee.total_yen, 30_000 + 60_000 + 2 * 45_000);

    // yui belongs to the applicant's organisation: the chair cannot assign her.
    let names = |xs: &[&Actor]| xs.iter().map(|a| a.username.clone()).collect::<Vec<_>>();
    let (mei, kenta, sora, yui) = (&c.members[0], &c.members[1], &c.members[2], &c.members[3]);
    assert_eq!(
        reason(p.assign(&c.chair, &app.id, &names(&[yui]), ORIGIN).await),
        "INVALID_STATE"
    );
    // Members cannot assign; the researcher cannot either.
    assert_eq!(
        reason(p.assign(mei, &app.id, &names(&[mei]), ORIGIN).await),
        "ROLE_NOT_PERMITTED"
    );
    p.assign(&c.chair, &app.id, &names(&[mei, kenta, sora]), ORIGIN)
        .await
        .expect("assign");

    // Not assigned → cannot vote; the applicant's colleague could never vote anyway.
    assert_eq!(
        reason(p.vote(&c.chair, &app.id, true, "chair", ORIGIN).await),
        "NOT_ASSIGNED_REVIEWER"
    );
    assert_eq!(
        reason(p.vote(yui, &app.id, true, "colleague", ORIGIN).await),
        "CONFLICT_OF_INTEREST"
    );

    p.vote(mei, &app.id, true, "Clear public interest; k=5 adequate", ORIGIN)
        .await
        .expect("vote");
    assert_eq!(
        reason(p.vote(mei, &app.id, false, "again", ORIGIN).await),
        "INVALID_STATE",
        "one vote each"
    );
    p.vote(kenta, &app.id, false, "Cohort filter too broad", ORIGIN)
        .await
        .expect("vote");
    // sora recuses (consulting for the funder): 2 voting members left, below the quorum of 3.
    p.recuse(sora, &app.id, "consults for the funder", ORIGIN)
        .await
        .expect("recuse");
    assert_eq!(
        reason(p.vote(sora, &app.id, true, "after recusal", ORIGIN).await),
        "NOT_ASSIGNED_REVIEWER"
    );
    assert_eq!(
        reason(p.decide(&c.chair, &app.id, Some(conditions(&["rika"])), ORIGIN).await),
        "QUORUM_NOT_MET"
    );

    // The chair adds herself as a reviewer: 3 voting, 2 in favour = exactly two thirds → approved.
    p.assign(&c.chair, &app.id, &names(&[&c.chair]), ORIGIN)
        .await
        .expect("assign chair");
    p.vote(&c.chair, &app.id, true, "Approve with narrowed columns", ORIGIN)
        .await
        .expect("vote");
    // An approval without conditions, or with conditions wider than applied for, is refused.
    assert_eq!(
        reason(p.decide(&c.chair, &app.id, None, ORIGIN).await),
        "INVALID_ARGUMENT"
    );
    let mut wide = conditions(&["rika"]);
    wide.tables[1].columns.push("municipality_code".into());
    assert_eq!(
        reason(p.decide(&c.chair, &app.id, Some(wide), ORIGIN).await),
        "INVALID_ARGUMENT"
    );
    let decided = p
        .decide(&c.chair, &app.id, Some(conditions(&["rika"])), ORIGIN)
        .await
        .expect("decide");
    assert_eq!(decided.status, ApplicationStatus::Approved);
    let tally = decided.tally.expect("tally");
    assert_eq!((tally.voting, tally.in_favour, tally.against), (3, 2, 1));
    assert_eq!(
        reason(p.vote(mei, &app.id, true, "late", ORIGIN).await),
        "INVALID_STATE"
    );

    // A second application: 1 of 3 in favour → refused.
    let app2 = p
        .file_application(&c.researcher, form(), None, ORIGIN)
        .await
        .expect("file 2");
    p.assign(&c.chair, &app2.id, &names(&[mei, kenta, sora]), ORIGIN)
        .await
        .expect("assign");
    p.vote(mei, &app2.id, true, "ok", ORIGIN).await.expect("vote");
    p.vote(kenta, &app2.id, false, "duplicate of A-2026-0001", ORIGIN)
        .await
        .expect("vote");
    p.vote(sora, &app2.id, false, "duplicate", ORIGIN).await.expect("vote");
    let refused = p.decide(&c.chair, &app2.id, None, ORIGIN).await.expect("decide");
    assert_eq!(refused.status, ApplicationStatus::Refused);
    assert!(refused.conditions.is_none());

    // Researchers see their own applications only; the register lists the approval, not the refusal.
    let other = w.person("taro", "univ-t", &[Role::Researcher]).await;
    assert_eq!(p.applications(&other).await.expect("list").len(), 0);
    assert_eq!(reason(p.application(&other, &app.id, ORIGIN).await), "NOT_APPLICANT");
    assert_eq!(p.applications(&c.researcher).await.expect("list").len(), 2);
    let register = p.decisions_register(&c.op, ORIGIN).await.expect("register");
    assert_eq!(register.len(), 1);
    assert_eq!(register[0].organisation, "univ-a");
    assert_eq!(
        register[0].scope,
        "observations(jlac10, value); patients(sex, prefecture)"
    );
}

async fn conditions_are_enforced_on_every_use(db: PolicyDb, _url: String) {
    let w = World::new(db, 2);
    let c = cast(&w).await;
    let p = &w.policy;
    let colleague = w.person("aoi", "univ-a", &[Role::Researcher]).await;
    let app = p
        .file_application(&c.researcher, form(), None, ORIGIN)
        .await
        .expect("file");
    let members: Vec<String> = c.members[..3].iter().map(|m| m.username.clone()).collect();
    p.assign(&c.chair, &app.id, &members, ORIGIN).await.expect("assign");
    for m in &c.members[..3] {
        p.vote(m, &app.id, true, "ok", ORIGIN).await.expect("vote");
    }
    p.decide(&c.chair, &app.id, Some(conditions(&["rika"])), ORIGIN)
        .await
        .expect("decide");

    let ok_tables = [TableRequest {
        table: "observations".into(),
        columns: vec!["jlac10".into()],
    }];
    let wide = [TableRequest {
        table: "patients".into(),
        columns: vec!["birth_date".into()],
    }];
    let other_table = [TableRequest {
        table: "medications".into(),
        columns: vec!["yj_code".into()],
    }];
    let use_ = |who: &Actor, kind: UseKind, t: &[TableRequest]| {
        let (p, who, id, t) = (p.clone(), who.clone(), app.id.clone(), t.to_vec());
        async move { p.admit_use(&who, &id, kind, &t, ORIGIN).await }
    };
    // Before the period: fine (expiry is the limit, the start is the researcher's plan).
    use_(&c.researcher, UseKind::Download, &ok_tables)
        .await
        .expect("first download");
    assert_eq!(
        reason(use_(&c.researcher, UseKind::Download, &wide).await),
        "COLUMN_NOT_APPROVED"
    );
    assert_eq!(
        reason(use_(&c.researcher, UseKind::Download, &other_table).await),
        "TABLE_NOT_APPROVED"
    );
    assert_eq!(
        reason(use_(&c.researcher, UseKind::Statistics, &ok_tables).await),
        "CHANNEL_NOT_APPROVED"
    );
    // A colleague who is not a named recipient is refused by authorisation itself.
    assert_eq!(
        reason(use_(&colleague, UseKind::Download, &ok_tables).await),
        "NOT_RECIPIENT"
    );
    use_(&c.researcher, UseKind::Download, &ok_tables)
        .await
        .expect("second download");
    assert_eq!(
        reason(use_(&c.researcher, UseKind::Download, &ok_tables).await),
        "DOWNLOAD_LIMIT_REACHED"
    );
    // Builds are the operator's, and are not counted as downloads.
    assert_eq!(
        reason(use_(&c.researcher, UseKind::Build, &ok_tables).await),
        "ROLE_NOT_PERMITTED"
    );

    // A statistics approval with a DP budget creates the project's budget in the budget ledger.
    let mut stats_form = form();
    stats_form.channel = Channel::Statistics;
    stats_form.requested_epsilon = Some(2.0);
    let s = p
        .file_application(&c.researcher, stats_form, None, ORIGIN)
        .await
        .expect("file statistics");
    p.assign(&c.chair, &s.id, &members, ORIGIN).await.expect("assign");
    for m in &c.members[..3] {
        p.vote(m, &s.id, true, "ok", ORIGIN).await.expect("vote");
    }
    let mut sc = conditions(&["rika"]);
    sc.channel = Channel::Statistics;
    sc.privacy = None;
    sc.dp_budget = Some(DpBudget {
        epsilon: 1.5,
        delta: 1e-6,
    });
    p.decide(&c.chair, &s.id, Some(sc), ORIGIN)
        .await
        .expect("decide statistics");
    let budget = p.budget_status(&c.chair, &s.id, ORIGIN).await.expect("budget created");
    assert_eq!(budget.project.budget.epsilon, 1.5);
    // Listing budgets shows the caller's own and leaves no refusal behind for everyone else's.
    let outsider = w.person("taro", "univ-t", &[Role::Researcher]).await;
    let seq_before = p.audit_entries().await.expect("ledger").len();
    let mine: Vec<String> = p
        .visible_budgets(&c.researcher)
        .await
        .expect("budgets")
        .into_iter()
        .map(|b| b.project.project)
        .collect();
    assert_eq!(mine, vec![s.id.clone()]);
    assert!(p.visible_budgets(&outsider).await.expect("budgets").is_empty());
    let seq_after = p.audit_entries().await.expect("ledger").len();
    assert_eq!(seq_before, seq_after, "listing wrote ledger entries");
    p.admit_use(&c.researcher, &s.id, UseKind::Statistics, &ok_tables, ORIGIN)
        .await
        .expect("statistics");

    // Expiry: the last day is valid (JST), the next is not.
    w.advance(Duration::days(200));
    let today = tokumei_policy::committee::japan_date(w.now());
    w.advance(date(2027, 6, 30) - today);
    assert_eq!(tokumei_policy::committee::japan_date(w.now()), date(2027, 6, 30));
    p.admit_use(&c.researcher, &s.id, UseKind::Statistics, &ok_tables, ORIGIN)
        .await
        .expect("last day");
    w.advance(Duration::days(1));
    let s_use = p
        .admit_use(&c.researcher, &s.id, UseKind::Statistics, &ok_tables, ORIGIN)
        .await;
    assert_eq!(reason(s_use), "APPROVAL_EXPIRED");
    assert_eq!(
        reason(use_(&c.researcher, UseKind::Download, &ok_tables).await),
        "APPROVAL_EXPIRED"
    );

    // Revocation withdraws at once (and needs a reason).
    assert_eq!(
        reason(p.revoke(&c.chair, &app.id, " ", ORIGIN).await),
        "INVALID_ARGUMENT"
    );
    let revoked = p
        .revoke(&c.chair, &app.id, "data found on a public share", ORIGIN)
        .await
        .expect("revoke");
    assert_eq!(revoked.status, ApplicationStatus::Revoked);
    assert_eq!(
        reason(use_(&c.researcher, UseKind::Download, &ok_tables).await),
        "APPROVAL_REVOKED"
    );
    assert_eq!(
        reason(p.revoke(&c.chair, &app.id, "twice", ORIGIN).await),
        "INVALID_STATE"
    );
    // Nobody but the chair revokes.
    assert_eq!(
        reason(p.revoke(&c.op, &s.id, "operator", ORIGIN).await),
        "ROLE_NOT_PERMITTED"
    );
}

async fn change_requests_and_umbrella_applications(db: PolicyDb, _url: String) {
    let w = World::new(db, 3);
    let c = cast(&w).await;
    let p = &w.policy;
    let members: Vec<String> = c.members[..3].iter().map(|m| m.username.clone()).collect();
    let approve = |id: String, cond: ApprovalConditions| {
        let (p, chair, members, voters) = (p.clone(), c.chair.clone(), members.clone(), c.members[..3].to_vec());
        async move {
            p.assign(&chair, &id, &members, ORIGIN).await.expect("assign");
            for m in &voters {
                p.vote(m, &id, true, "ok", ORIGIN).await.expect("vote");
            }
            p.decide(&chair, &id, Some(cond), ORIGIN).await.expect("decide")
        }
    };
    let app = p
        .file_application(&c.researcher, form(), None, ORIGIN)
        .await
        .expect("file");
    // A change request needs an approved application.
    assert_eq!(
        reason(p.file_application(&c.researcher, form(), Some(&app.id), ORIGIN).await),
        "INVALID_STATE"
    );
    approve(app.id.clone(), conditions(&["rika"])).await;

    // 変更申出: add a recipient and the birth date column; reviewed the same way; replaces the conditions.
    let other = w.person("aoi", "univ-a", &[Role::Researcher]).await;
    let mut change = form();
    change.recipients = vec!["aoi".into()];
    let ch = p
        .file_application(&c.researcher, change, Some(&app.id), ORIGIN)
        .await
        .expect("change request");
    assert_eq!(ch.kind.as_str(), "change");
    assert_eq!(ch.amends.as_deref(), Some(app.id.as_str()));
    // Somebody else cannot amend rika's application.
    assert_eq!(
        reason(p.file_application(&other, form(), Some(&app.id), ORIGIN).await),
        "NOT_APPLICANT"
    );
    let mut wider = conditions(&["rika", "aoi"]);
    wider.tables[1].columns.push("birth_date".into());
    approve(ch.id.clone(), wider).await;
    let parent = p.application(&c.researcher, &app.id, ORIGIN).await.expect("parent");
    assert_eq!(parent.conditions_revision, 2);
    let cond = parent.conditions.expect("conditions");
    assert!(cond.recipients.contains("aoi"));
    assert!(cond.tables[1].columns.contains(&"birth_date".to_string()));
    let bd = [TableRequest {
        table: "patients".into(),
        columns: vec!["birth_date".into()],
    }];
    p.admit_use(&other, &app.id, UseKind::Download, &bd, ORIGIN)
        .await
        .expect("new recipient, new column");
    // A use under the change request itself stands on its parent: revoking the parent revokes the change
    // request in the same transaction (and says so in the ledger), and nothing is admitted under either.
    p.admit_use(&other, &ch.id, UseKind::Download, &bd, ORIGIN)
        .await
        .expect("use under the approved change request");
    p.recheck_transfer("aoi", &ch.id).await.expect("transfer re-check");
    p.revoke(&c.chair, &app.id, "data found on a public share", ORIGIN)
        .await
        .expect("revoke the parent");
    let ch_now = p
        .application(&c.researcher, &ch.id, ORIGIN)
        .await
        .expect("change request");
    assert_eq!(ch_now.status, ApplicationStatus::Revoked);
    for id in [&app.id, &ch.id] {
        assert_eq!(
            reason(p.admit_use(&other, id, UseKind::Download, &bd, ORIGIN).await),
            "APPROVAL_REVOKED"
        );
        assert_eq!(reason(p.recheck_transfer("aoi", id).await), "APPROVAL_REVOKED");
    }
    let ledger = p.audit_entries().await.expect("ledger");
    let revocation = ledger
        .iter()
        .rfind(|e| e.action == "approval.revoke" && e.outcome == "ok")
        .expect("revocation audited");
    assert_eq!(
        revocation.details_value().expect("details")["change_requests_revoked"],
        serde_json::json!([ch.id])
    );

    // 包括申出: several studies under one purpose, one review; fees count the extra studies.
    let mut umbrella = form();
    umbrella.studies = vec![
        Study {
            title: "Regional HbA1c".into(),
            methods: "regression".into(),
        },
        Study {
            title: "Treatment intensification".into(),
            methods: "survival analysis".into(),
        },
        Study {
            title: "Complications".into(),
            methods: "cohort".into(),
        },
    ];
    let u = p
        .file_application(&c.researcher, umbrella, None, ORIGIN)
        .await
        .expect("umbrella");
    assert_eq!(u.kind.as_str(), "umbrella");
    assert_eq!(u.fee.coordination.yen, 60_000 + 2 * 20_000);
    let fees = p.estimate_fees(&c.researcher, &u.id, ORIGIN).await.expect("fees");
    assert_eq!(fees.total_yen, 30_000 + 100_000 + 90_000);
    assert_eq!(reason(p.estimate_fees(&other, &u.id, ORIGIN).await), "NOT_APPLICANT");

    // Advertising is refused at filing and the refusal is audited.
    let mut ad = form();
    ad.purpose = "Marketing of our new DPP-4 inhibitor to clinics".into();
    assert_eq!(
        reason(p.file_application(&c.researcher, ad, None, ORIGIN).await),
        "ADVERTISING_REFUSED"
    );
    let mut undeclared = form();
    undeclared.not_for_advertising = false;
    assert_eq!(
        reason(p.file_application(&c.researcher, undeclared, None, ORIGIN).await),
        "ADVERTISING_REFUSED"
    );
    // A withdrawn application can no longer be reviewed.
    let wd = p
        .file_application(&c.researcher, form(), None, ORIGIN)
        .await
        .expect("file");
    p.withdraw(&c.researcher, &wd.id, ORIGIN).await.expect("withdraw");
    assert_eq!(
        reason(p.assign(&c.chair, &wd.id, &members, ORIGIN).await),
        "INVALID_STATE"
    );
}

async fn bans_stop_applications_and_travel_between_processors(db: PolicyDb, _url: String) {
    let w = World::new(db, 4);
    let c = cast(&w).await;
    let p = &w.policy;
    let app = p
        .file_application(&c.researcher, form(), None, ORIGIN)
        .await
        .expect("file");
    // Only the chair records violations.
    let subject = BanSubject::Organisation("univ-a".into());
    let until = Some(date(2031, 3, 31));
    let v = p
        .record_violation(&c.op, subject.clone(), "leak", "x", Some(&app.id), until, ORIGIN)
        .await;
    assert_eq!(reason(v), "ROLE_NOT_PERMITTED");
    let v = p
        .record_violation(
            &c.chair,
            subject,
            "re_identification_attempt",
            "linked a release to a voter list",
            Some(&app.id),
            until,
            ORIGIN,
        )
        .await
        .expect("violation");
    assert_eq!(v.id, "V-2026-0001");
    // The organisation's researchers can no longer file.
    assert_eq!(
        reason(p.file_application(&c.researcher, form(), None, ORIGIN).await),
        "BANNED"
    );
    // A person ban for an approved recipient stops the use.
    let other = w.person("kai", "univ-k", &[Role::Researcher]).await;
    let ok = p
        .file_application(&other, form(), None, ORIGIN)
        .await
        .expect("other org files");
    let members: Vec<String> = c.members[..3].iter().map(|m| m.username.clone()).collect();
    p.assign(&c.chair, &ok.id, &members, ORIGIN).await.expect("assign");
    for m in &c.members[..3] {
        p.vote(m, &ok.id, true, "ok", ORIGIN).await.expect("vote");
    }
    p.decide(&c.chair, &ok.id, Some(conditions(&["kai"])), ORIGIN)
        .await
        .expect("decide");
    p.record_violation(
        &c.chair,
        BanSubject::Person("kai".into()),
        "use_beyond_approval",
        "shared with a contractor",
        None,
        None,
        ORIGIN,
    )
    .await
    .expect("person ban");
    let t = [TableRequest {
        table: "observations".into(),
        columns: vec!["jlac10".into()],
    }];
    assert_eq!(
        reason(p.admit_use(&other, &ok.id, UseKind::Download, &t, ORIGIN).await),
        "BANNED"
    );
    // An organisation ban stops its members' use of an approval too, not only their filing.
    let ren = w.person("ren", "univ-r", &[Role::Researcher]).await;
    let approved = p.file_application(&ren, form(), None, ORIGIN).await.expect("ren files");
    p.assign(&c.chair, &approved.id, &members, ORIGIN)
        .await
        .expect("assign");
    for m in &c.members[..3] {
        p.vote(m, &approved.id, true, "ok", ORIGIN).await.expect("vote");
    }
    p.decide(&c.chair, &approved.id, Some(conditions(&["ren"])), ORIGIN)
        .await
        .expect("decide");
    p.admit_use(&ren, &approved.id, UseKind::Download, &t, ORIGIN)
        .await
        .expect("used before the ban");
    p.record_violation(
        &c.chair,
        BanSubject::Organisation("univ-r".into()),
        "leak",
        "x",
        None,
        None,
        ORIGIN,
    )
    .await
    .expect("organisation ban");
    assert_eq!(
        reason(p.admit_use(&ren, &approved.id, UseKind::Download, &t, ORIGIN).await),
        "BANNED"
    );

    // Export the signed list; another processor imports it only under our key.
    let list = p.export_bans(&c.op, ORIGIN).await.expect("export");
    assert_eq!(list.bans.len(), 3);
    let bans_key = p.bans_public_key().expect("the service signs ban lists");
    // The second processor has its own (embedded) database.
    let dir = tempfile::tempdir().expect("tempdir");
    let db2 = PolicyDb::open(&tokumei_policy::default_url(dir.path()))
        .await
        .expect("second processor");
    let w2 = World::new(db2, 5);
    let op2 = w2.operator().await;
    let wrong_key = ServiceKey::from_seed(&[9; 32]).public();
    assert_eq!(
        reason(w2.policy.import_bans(&op2, &list, &wrong_key, ORIGIN).await),
        "INVALID_ARGUMENT"
    );
    // Nor under the general service key every process beside the database holds: ban lists have a key of their own.
    assert_eq!(
        reason(w2.policy.import_bans(&op2, &list, &p.public_key(), ORIGIN).await),
        "INVALID_ARGUMENT"
    );
    let mut altered = list.clone();
    altered.bans.pop();
    assert_eq!(
        reason(w2.policy.import_bans(&op2, &altered, &bans_key, ORIGIN).await),
        "INVALID_ARGUMENT"
    );
    assert_eq!(
        w2.policy
            .import_bans(&op2, &list, &bans_key, ORIGIN)
            .await
            .expect("import"),
        3
    );
    assert_eq!(
        w2.policy
            .import_bans(&op2, &list, &bans_key, ORIGIN)
            .await
            .expect("re-import"),
        0
    );
    let researcher2 = w2.person("rika", "univ-a", &[Role::Researcher]).await;
    assert_eq!(
        reason(w2.policy.file_application(&researcher2, form(), None, ORIGIN).await),
        "BANNED"
    );
    // The ban ends after its last day.
    w2.advance(Duration::days(365 * 5));
    let researcher2 = w2.person("rika2", "univ-a", &[Role::Researcher]).await;
    w2.policy
        .file_application(&researcher2, form(), None, ORIGIN)
        .await
        .expect("ban over");
}

async fn the_ledger_records_denials_and_verifies(db: PolicyDb, _url: String) {
    let w = World::new(db, 6);
    let c = cast(&w).await;
    let p = &w.policy;
    let before = p.audit_entries().await.expect("ledger").len() as i64;
    // A denied action and a failed login are both recorded.
    let _ = p.assign(&c.researcher, "A-2026-0042", &[], ORIGIN).await;
    let app = p
        .file_application(&c.researcher, form(), None, ORIGIN)
        .await
        .expect("file");
    assert_eq!(
        reason(p.assign(&c.researcher, &app.id, &[], ORIGIN).await),
        "ROLE_NOT_PERMITTED"
    );
    let _ = p
        .login("rika", "wrong password!!", SecondFactor::Totp("000000"), ORIGIN)
        .await;
    // The issue's attack: the operator gives itself the chair's role. Operators manage no accounts at all now.
    let op_name = c.op.username.clone();
    assert_eq!(
        reason(
            p.set_roles(&c.op, &op_name, &[Role::Operator, Role::CommitteeChair], ORIGIN)
                .await
        ),
        "ROLE_NOT_PERMITTED"
    );
    assert_eq!(
        reason(p.disable_user(&c.op, &op_name, ORIGIN).await),
        "ROLE_NOT_PERMITTED"
    );
    // An administrator changes no role of their own; a grant of committee roles waits for the second
    // administrator, who alone may approve it — not the one who asked, not the grantee.
    let (first, second) = w.admins.lock().expect("admins").clone().expect("admins");
    assert_eq!(
        reason(p.set_roles(&first, &first.username, &[Role::Auditor], ORIGIN).await),
        "OWN_ACCOUNT"
    );
    let promoted = p
        .set_roles(&first, "rika", &[Role::Researcher, Role::CommitteeMember], ORIGIN)
        .await
        .expect("asked");
    let grant = promoted
        .grant_id()
        .expect("a committee seat waits for four eyes")
        .to_owned();
    assert_eq!(
        p.user(&second, "rika", ORIGIN).await.expect("rika").roles,
        BTreeSet::from([Role::Researcher]),
        "nothing changes before the second administrator approves"
    );
    assert_eq!(reason(p.approve_grant(&first, &grant, None, ORIGIN).await), "FOUR_EYES");
    assert_eq!(
        reason(p.approve_grant(&c.op, &grant, None, ORIGIN).await),
        "ROLE_NOT_PERMITTED"
    );
    p.approve_grant(&second, &grant, None, ORIGIN).await.expect("four eyes");
    assert_eq!(
        p.user(&second, "rika", ORIGIN).await.expect("rika").roles,
        BTreeSet::from([Role::Researcher, Role::CommitteeMember])
    );
    assert!(
        matches!(
            p.approve_grant(&second, &grant, None, ORIGIN).await,
            Err(PolicyError::InvalidState(_))
        ),
        "a grant applies once"
    );
    // Taking a role away needs no second administrator.
    assert!(matches!(
        p.set_roles(&first, "rika", &[Role::Researcher], ORIGIN).await,
        Ok(tokumei_policy::UserChange::RolesSet(_))
    ));
    let entries = p.audit_entries().await.expect("entries");
    assert!(entries.iter().any(|e| e.action == "assign_reviewers"
        && e.outcome == "denied"
        && e.reason.as_deref() == Some("ROLE_NOT_PERMITTED")));
    assert!(entries.iter().any(|e| e.action == "login.failure" && e.actor == "rika"));
    assert!(entries.iter().any(|e| e.action == "manage_users"
        && e.outcome == "denied"
        && e.reason.as_deref() == Some("ROLE_NOT_PERMITTED")
        && e.resource == format!("user {op_name}")));
    assert!(entries.iter().any(|e| e.action == "manage_users"
        && e.outcome == "denied"
        && e.reason.as_deref() == Some("FOUR_EYES")
        && e.resource == "grant for user rika"));
    assert!(
        entries
            .iter()
            .any(|e| e.action == "user.grant_approved" && e.outcome == "ok" && e.actor == second.username)
    );
    assert!(
        entries
            .iter()
            .any(|e| e.action == "application.file" && e.outcome == "ok")
    );
    assert!(p.audit_entries().await.expect("ledger").len() as i64 >= before + 3);
    // No secret ever reaches the ledger.
    for e in &entries {
        let text = format!("{e:?}");
        assert!(!text.contains(PASSWORD) && !text.contains("wrong password"), "{text}");
    }
    // Auditors verify; researchers cannot.
    let auditor = w.person("audra", "regulator", &[Role::Auditor]).await;
    let report = p.verify_audit(&auditor, ORIGIN).await.expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        reason(p.verify_audit(&c.researcher, ORIGIN).await),
        "ROLE_NOT_PERMITTED"
    );
    let bundle = p
        .export_audit(
            &auditor,
            w.now() - Duration::days(1),
            w.now() + Duration::days(1),
            ORIGIN,
        )
        .await
        .expect("export");
    assert!(tokumei_policy::audit_ledger::verify_bundle(&bundle, &p.public_key()).is_ok());
    assert_eq!(
        reason(p.export_audit(&c.op, w.now(), w.now(), ORIGIN).await),
        "ROLE_NOT_PERMITTED"
    );
    // The regulator's report counts the quarter.
    let report = p.regulator_report(&auditor, "2026-Q4", ORIGIN).await.expect("report");
    assert_eq!(report.applications_received, 1);
    assert!(report.denied_actions >= 2);
    assert!(report.audit_head.seq > 0);
}

/// A grant applies only as it was asked: not after its requester stopped being an administrator, not over roles
/// changed since, not after it lapsed.
async fn stale_grants_do_not_apply(db: PolicyDb, _url: String) {
    let w = World::new(db, 9);
    let c = cast(&w).await;
    let p = &w.policy;
    let (first, second) = w.admins.lock().expect("admins").clone().expect("admins");
    let reason = |r: Result<_, PolicyError>| {
        r.map(|_: tokumei_policy::identity::grants::RoleGrant| ())
            .err()
            .map(|e| e.reason())
    };
    // Roles changed between the request and the approval: the approval would silently undo the change.
    let asked = p
        .set_roles(&first, "mei", &[Role::CommitteeMember, Role::CommitteeChair], ORIGIN)
        .await
        .expect("asked");
    let grant = asked.grant_id().expect("pending").to_owned();
    assert!(matches!(
        p.set_roles(&second, "mei", &[Role::Researcher], ORIGIN).await,
        Ok(tokumei_policy::UserChange::RolesSet(_))
    ));
    assert_eq!(
        reason(p.approve_grant(&second, &grant, None, ORIGIN).await),
        Some("INVALID_STATE")
    );
    // A grant whose requester is no longer an administrator.
    let third = w.person("adm3", "platform", &[Role::Administrator]).await;
    let asked = p
        .set_roles(&third, "rika", &[Role::Researcher, Role::CommitteeMember], ORIGIN)
        .await
        .expect("asked");
    let grant = asked.grant_id().expect("pending").to_owned();
    // Taking an administrator out needs four eyes too: alone, one administrator only asks.
    let removal = p
        .set_roles(&first, "adm3", &[Role::Researcher], ORIGIN)
        .await
        .expect("asked");
    assert!(removal.grant_id().is_some(), "one administrator removed another alone");
    let disabling = p.disable_user(&first, "adm3", ORIGIN).await.expect("asked");
    let disabling = disabling
        .grant_id()
        .expect("disabling an administrator waits for four eyes")
        .to_owned();
    assert_eq!(
        p.user(&second, "adm3", ORIGIN).await.expect("adm3").status,
        tokumei_policy::identity::UserStatus::Active
    );
    assert_eq!(
        reason(p.approve_grant(&third, &disabling, None, ORIGIN).await),
        Some("OWN_ACCOUNT")
    );
    p.approve_grant(&second, &disabling, None, ORIGIN)
        .await
        .expect("disabled with four eyes");
    assert_eq!(
        reason(p.approve_grant(&second, &grant, None, ORIGIN).await),
        Some("INVALID_STATE")
    );
    // A grant nobody approved within its time.
    let asked = p
        .set_roles(&first, "rika", &[Role::Researcher, Role::CommitteeMember], ORIGIN)
        .await
        .expect("asked");
    let grant = asked.grant_id().expect("pending").to_owned();
    w.advance(Duration::hours(73));
    assert_eq!(
        reason(p.approve_grant(&second, &grant, None, ORIGIN).await),
        Some("INVALID_STATE")
    );
    // None of them changed anything.
    for u in ["rika", "mei"] {
        let held = p.user(&second, u, ORIGIN).await.expect("user").roles;
        assert_eq!(held, BTreeSet::from([Role::Researcher]), "{u}");
    }
    let _ = c;
}
