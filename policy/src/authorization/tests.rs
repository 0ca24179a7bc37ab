//! The authorisation matrix: every (role, action) pair, written out independently of the role table in
//! the module, with a resource on which the role's relation holds (its own application, its own
//! institution, an assigned review...). Any success that the expected table does not grant is counted;
//! the test demands zero, and also that every granted pair succeeds.

use super::*;

fn actor(username: &str, organisation: &str, role: Role, auth: AuthMethod) -> Actor {
    Actor {
        username: username.into(),
        organisation: organisation.into(),
        roles: BTreeSet::from([role]),
        auth,
    }
}

fn auth_for(role: Role) -> AuthMethod {
    if role.is_human() {
        AuthMethod::PasswordTotp
    } else {
        AuthMethod::Certificate
    }
}

/// An application on which `username` (of organisation `org-x`) has every relation its role could use:
/// applicant (researchers), assigned reviewer (members and chairs), recipient.
fn favourable_application(role: Role, username: &str) -> ApplicationFacts {
    let committee = matches!(role, Role::CommitteeMember | Role::CommitteeChair | Role::OutputChecker);
    ApplicationFacts {
        id: "A-1".into(),
        // Committee members must not be the applicant (conflict of interest): someone else filed it.
        applicant: if committee {
            "other-researcher".into()
        } else {
            username.into()
        },
        organisation: if committee {
            "org-applicant".into()
        } else {
            "org-x".into()
        },
        reviewers: BTreeSet::from([username.to_owned()]),
        recused: BTreeSet::new(),
        // An output checker judges a project whose data they do not receive.
        recipients: if role == Role::OutputChecker {
            BTreeSet::from(["other-researcher".to_owned()])
        } else {
            BTreeSet::from([username.to_owned()])
        },
    }
}

/// The resource each action is about, favourable to the actor.
fn favourable_resource(role: Role, action: Action, username: &str) -> Resource {
    use Action::*;
    match action {
        SubmitRecords | SubmitOptOut => Resource::Institution(username.into()),
        ManageUsers | ViewUsers | FileApplication | ExportBans | ImportBans | RunOperatorSql | OperateCore
        | PublishRegister | ReportRegulator | ViewAudit | VerifyAudit | ExportAudit => Resource::Platform,
        RecordViolation | ViewViolations | SetBudget | SetPlatformCeiling | CertifyUser | ViewAnalysisUsage => {
            Resource::Platform
        }
        ViewApplication | AmendApplication | AssignReviewers | CastVote | Recuse | DecideApplication
        | RevokeApproval | EstimateFees | RunStatistics | BuildRelease | DownloadRelease | TraceLeak
        | AssessReleaseRisk | PlanRelease | DeclareDeletion | UseWorkspace | CheckOutput => {
            Resource::Application(favourable_application(role, username))
        }
    }
}

/// The expected grants, written as a table by action (not derived from `allowed_for_role`).
fn expected(role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    let roles: &[Role] = match action {
        SubmitRecords | SubmitOptOut => &[Hospital],
        ManageUsers => &[Administrator],
        ViewUsers => &[Administrator, Operator, Auditor],
        FileApplication => &[Researcher],
        ViewApplication => &[Researcher, CommitteeMember, CommitteeChair, Operator, Auditor],
        AmendApplication => &[Researcher],
        AssignReviewers => &[CommitteeChair],
        CastVote | Recuse => &[CommitteeMember, CommitteeChair],
        DecideApplication | RevokeApproval => &[CommitteeChair],
        RecordViolation => &[CommitteeChair],
        ViewViolations => &[CommitteeChair, Operator, Auditor],
        ExportBans => &[Operator, Auditor],
        ImportBans => &[Operator],
        EstimateFees => &[Researcher, CommitteeMember, CommitteeChair, Operator, Auditor],
        SetBudget => &[CommitteeChair],
        SetPlatformCeiling => &[Operator],
        RunStatistics | DownloadRelease | DeclareDeletion => &[Researcher],
        BuildRelease | TraceLeak => &[Operator],
        AssessReleaseRisk => &[Operator, Auditor, CommitteeChair],
        PlanRelease => &[Operator, CommitteeChair, CommitteeMember],
        RunOperatorSql | OperateCore | PublishRegister => &[Operator],
        ReportRegulator => &[Operator, Auditor],
        ViewAudit | ExportAudit => &[Auditor],
        VerifyAudit => &[Operator, Auditor],
        UseWorkspace => &[Researcher],
        CheckOutput => &[OutputChecker],
        CertifyUser => &[CommitteeChair],
        ViewAnalysisUsage => &[Operator, Auditor],
    };
    roles.contains(&role)
}

#[test]
fn every_role_action_pair_matches_the_expected_table() {
    let mut unauthorised_successes = Vec::new();
    let mut wrongly_refused = Vec::new();
    for role in Role::ALL {
        for action in Action::ALL {
            let a = actor("u1", "org-x", role, auth_for(role));
            let resource = favourable_resource(role, action, "u1");
            let outcome = authorize(&a, action, &resource);
            match (expected(role, action), outcome) {
                (false, Ok(())) => unauthorised_successes.push((role, action)),
                (true, Err(d)) => wrongly_refused.push((role, action, d.reason)),
                _ => {}
            }
        }
    }
    assert_eq!(unauthorised_successes, vec![], "unauthorised successes");
    assert_eq!(wrongly_refused, vec![], "granted pairs refused");
    assert_eq!(Role::ALL.len() * Action::ALL.len(), 8 * 37);
}

#[test]
fn without_a_second_factor_no_human_role_can_do_anything() {
    for role in Role::ALL.into_iter().filter(|r| r.is_human()) {
        for action in Action::ALL {
            let a = actor("u1", "org-x", role, AuthMethod::Certificate);
            let r = authorize(&a, action, &favourable_resource(role, action, "u1"));
            assert!(r.is_err(), "{role} {action} succeeded with a certificate only");
            if expected(role, action) {
                assert_eq!(
                    r.err().map(|d| d.reason),
                    Some(DenialReason::StrongAuthenticationRequired)
                );
            }
        }
    }
    // And a hospital needs its certificate: a password-and-TOTP login of a service name does not count.
    let h = actor("1310000001", "org-h", Role::Hospital, AuthMethod::PasswordTotp);
    assert!(authorize(&h, Action::SubmitRecords, &Resource::Institution("1310000001".into())).is_err());
}

#[test]
fn nobody_changes_their_own_account() {
    let admin = actor("adm", "platform", Role::Administrator, AuthMethod::PasswordTotp);
    assert_eq!(
        authorize(&admin, Action::ManageUsers, &Resource::Person("adm".into()))
            .err()
            .map(|d| d.reason),
        Some(DenialReason::OwnAccount),
        "an administrator changing their own roles"
    );
    assert!(authorize(&admin, Action::ManageUsers, &Resource::Person("rika".into())).is_ok());
    // Every other role may not manage users at all, on their own account or anyone's — operators included
    // (the attack: an operator gave itself the chair role).
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Administrator) {
        let a = actor("someone", "univ-s", role, auth_for(role));
        for target in ["someone", "rika"] {
            assert!(authorize(&a, Action::ManageUsers, &Resource::Person(target.into())).is_err());
        }
        let grant = Resource::Grant {
            username: "rika".into(),
            requested_by: "adm".into(),
        };
        assert!(authorize(&a, Action::ManageUsers, &grant).is_err());
    }
}

#[test]
fn a_grant_is_approved_by_a_second_administrator_only() {
    let asked_by = |who: &str, to: &str| Resource::Grant {
        username: to.into(),
        requested_by: who.into(),
    };
    let first = actor("adm1", "platform", Role::Administrator, AuthMethod::PasswordTotp);
    let second = actor("adm2", "platform", Role::Administrator, AuthMethod::PasswordTotp);
    let reason = |a: &Actor, r: &Resource| authorize(a, Action::ManageUsers, r).err().map(|d| d.reason);
    assert_eq!(reason(&first, &asked_by("adm1", "op")), Some(DenialReason::FourEyes));
    assert_eq!(reason(&second, &asked_by("adm1", "op")), None);
    // Nobody approves a grant to themselves, whoever asked for it.
    assert_eq!(
        reason(&second, &asked_by("adm1", "adm2")),
        Some(DenialReason::OwnAccount)
    );
    // Without a second factor, not at all.
    let weak = actor("adm2", "platform", Role::Administrator, AuthMethod::Certificate);
    assert_eq!(
        reason(&weak, &asked_by("adm1", "op")),
        Some(DenialReason::StrongAuthenticationRequired)
    );
}

#[test]
fn relations_are_enforced_on_unfavourable_resources() {
    let researcher = actor("alice", "univ-a", Role::Researcher, AuthMethod::PasswordTotp);
    let someone_elses = ApplicationFacts {
        id: "A-2".into(),
        applicant: "bob".into(),
        organisation: "univ-b".into(),
        ..Default::default()
    };
    let res = Resource::Application(someone_elses.clone());
    for action in [Action::ViewApplication, Action::AmendApplication, Action::EstimateFees] {
        assert_eq!(
            authorize(&researcher, action, &res).err().map(|d| d.reason),
            Some(DenialReason::NotApplicant)
        );
    }
    for action in [Action::DownloadRelease, Action::RunStatistics, Action::DeclareDeletion] {
        assert_eq!(
            authorize(&researcher, action, &res).err().map(|d| d.reason),
            Some(DenialReason::NotRecipient)
        );
    }
    // A recipient who is not the applicant may view and download, not amend.
    let mut shared = someone_elses.clone();
    shared.recipients.insert("alice".into());
    let res = Resource::Application(shared);
    assert!(authorize(&researcher, Action::ViewApplication, &res).is_ok());
    assert!(authorize(&researcher, Action::DownloadRelease, &res).is_ok());
    assert!(authorize(&researcher, Action::AmendApplication, &res).is_err());

    // Members vote only where assigned, not after recusing, never on their organisation's application.
    let member = actor("mika", "univ-m", Role::CommitteeMember, AuthMethod::PasswordTotp);
    let mut app = someone_elses.clone();
    let vote = |app: &ApplicationFacts| authorize(&member, Action::CastVote, &Resource::Application(app.clone()));
    assert_eq!(
        vote(&app).err().map(|d| d.reason),
        Some(DenialReason::NotAssignedReviewer)
    );
    app.reviewers.insert("mika".into());
    assert!(vote(&app).is_ok());
    app.recused.insert("mika".into());
    assert_eq!(
        vote(&app).err().map(|d| d.reason),
        Some(DenialReason::NotAssignedReviewer)
    );
    app.recused.clear();
    app.organisation = "univ-m".into();
    assert_eq!(
        vote(&app).err().map(|d| d.reason),
        Some(DenialReason::ConflictOfInterest)
    );

    // A chair does not decide on their own organisation's application.
    let chair = actor("chika", "univ-b", Role::CommitteeChair, AuthMethod::PasswordTotp);
    assert_eq!(
        authorize(&chair, Action::DecideApplication, &Resource::Application(someone_elses))
            .err()
            .map(|d| d.reason),
        Some(DenialReason::ConflictOfInterest)
    );

    // A hospital acts only for its own institution.
    let hospital = actor("1310000001", "org-h", Role::Hospital, AuthMethod::Certificate);
    assert_eq!(
        authorize(
            &hospital,
            Action::SubmitRecords,
            &Resource::Institution("1310000002".into())
        )
        .err()
        .map(|d| d.reason),
        Some(DenialReason::OtherInstitution)
    );
}

#[test]
fn several_roles_combine_and_report_the_most_specific_refusal() {
    let mut a = actor("chika", "univ-c", Role::CommitteeChair, AuthMethod::PasswordTotp);
    a.roles.insert(Role::CommitteeMember);
    let app = ApplicationFacts {
        id: "A-3".into(),
        applicant: "bob".into(),
        organisation: "univ-b".into(),
        ..Default::default()
    };
    assert_eq!(
        authorize(&a, Action::CastVote, &Resource::Application(app.clone()))
            .err()
            .map(|d| d.reason),
        Some(DenialReason::NotAssignedReviewer)
    );
    assert!(authorize(&a, Action::AssignReviewers, &Resource::Application(app)).is_ok());
    // Operators never vote or decide, whatever the resource.
    let op = actor("oscar", "platform", Role::Operator, AuthMethod::PasswordTotp);
    let app = favourable_application(Role::CommitteeMember, "oscar");
    for action in [
        Action::CastVote,
        Action::DecideApplication,
        Action::RevokeApproval,
        Action::ViewAudit,
    ] {
        assert_eq!(
            authorize(&op, action, &Resource::Application(app.clone()))
                .err()
                .map(|d| d.reason),
            Some(DenialReason::RoleNotPermitted)
        );
    }
}

#[test]
fn names_round_trip() {
    for r in Role::ALL {
        assert_eq!(r.as_str().parse::<Role>(), Ok(r));
    }
    assert!("root".parse::<Role>().is_err());
    let names: BTreeSet<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(names.len(), Action::ALL.len());
}

#[test]
fn a_member_previews_a_release_only_for_a_review_they_sit_on() {
    let member = actor("mei", "org-m", Role::CommitteeMember, AuthMethod::PasswordTotp);
    let assigned = ApplicationFacts {
        id: "A-9".into(),
        applicant: "rika".into(),
        organisation: "univ-a".into(),
        reviewers: BTreeSet::from(["mei".to_owned()]),
        ..Default::default()
    };
    let app = |facts: ApplicationFacts| Resource::Application(facts);
    assert_eq!(authorize(&member, Action::PlanRelease, &app(assigned.clone())), Ok(()));
    let not_assigned = ApplicationFacts {
        reviewers: BTreeSet::new(),
        ..assigned.clone()
    };
    let reason = |r: Result<(), Denied>| r.err().map(|d| d.reason);
    assert_eq!(
        reason(authorize(&member, Action::PlanRelease, &app(not_assigned))),
        Some(DenialReason::NotAssignedReviewer)
    );
    let recused = ApplicationFacts {
        recused: BTreeSet::from(["mei".to_owned()]),
        ..assigned.clone()
    };
    assert_eq!(
        reason(authorize(&member, Action::PlanRelease, &app(recused))),
        Some(DenialReason::NotAssignedReviewer)
    );
    let own_organisation = ApplicationFacts {
        organisation: "org-m".into(),
        ..assigned
    };
    assert_eq!(
        reason(authorize(&member, Action::PlanRelease, &app(own_organisation))),
        Some(DenialReason::ConflictOfInterest)
    );
    // Nor does the chair, on their own organisation's application.
    let chair = actor("chika", "univ-a", Role::CommitteeChair, AuthMethod::PasswordTotp);
    for action in [Action::PlanRelease, Action::AssessReleaseRisk] {
        let own = ApplicationFacts {
            organisation: "univ-a".into(),
            ..Default::default()
        };
        assert_eq!(
            reason(authorize(&chair, action, &app(own))),
            Some(DenialReason::ConflictOfInterest)
        );
    }
    // A member never measures the attack on a built release: that is the chair's, an operator's or an
    // auditor's.
    let facts = ApplicationFacts {
        reviewers: BTreeSet::from(["mei".to_owned()]),
        ..Default::default()
    };
    assert_eq!(
        reason(authorize(&member, Action::AssessReleaseRisk, &app(facts))),
        Some(DenialReason::RoleNotPermitted)
    );
}

/// `authorize_role` is necessary for `authorize`: over every set of roles, every action and every authentication
/// method, whenever `authorize` admits on some resource (a favourable one for each role held, or the platform),
/// `authorize_role` admits; and when no role held may ever ask the action, both refuse with the same reason.
#[test]
fn the_role_precheck_never_refuses_what_authorize_admits() {
    let methods = [
        AuthMethod::PasswordTotp,
        AuthMethod::PasswordRecoveryCode,
        AuthMethod::Certificate,
    ];
    for mask in 0u32..(1 << Role::ALL.len()) {
        let roles: BTreeSet<Role> = Role::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, r)| *r)
            .collect();
        for auth in methods {
            let who = Actor {
                username: "u".into(),
                organisation: "org-x".into(),
                roles: roles.clone(),
                auth,
            };
            for action in Action::ALL {
                let mut resources = vec![Resource::Platform];
                resources.extend(roles.iter().map(|&r| favourable_resource(r, action, "u")));
                let admitted_somewhere = resources.iter().any(|r| authorize(&who, action, r).is_ok());
                let pre = authorize_role(&who, action);
                if admitted_somewhere {
                    assert!(
                        pre.is_ok(),
                        "{roles:?} {auth:?} {action:?}: the pre-check refuses what authorize admits"
                    );
                }
                if !roles.iter().any(|&r| allowed_for_role(r, action)) {
                    let full = authorize(&who, action, &Resource::Platform).expect_err("no role allows it");
                    assert_eq!(pre.expect_err("refused").reason, full.reason, "{roles:?} {action:?}");
                }
            }
        }
    }
}
