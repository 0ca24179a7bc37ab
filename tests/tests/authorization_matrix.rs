//! The must-show of the services issue for the policy service: every RPC called without a session and as each of
//! the six human roles, each outcome checked against the table in docs/committee.md ("Every RPC, the action it
//! asks and who may ask it"), and one `rpc.<Method>` entry in the audit ledger for every call — successes,
//! refusals and sessionless calls alike. The table is read from the document, so the document cannot drift from
//! what the service does.

mod common;

use std::collections::BTreeSet;

use common::people::{self, Person};
use common::policy_server::{Server, authed, form, reason};
use sqlx::Row;
use tokumei_proto::policy::v1 as pb;
use tokumei_proto::policy::v1::core_order_service_client::CoreOrderServiceClient;
use tokumei_proto::policy::v1::policy_service_client::PolicyServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// What a call ran into, as far as authorisation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    /// Refused for want of a valid session.
    NoSession,
    /// Refused because no role of the caller permits the action.
    RoleRefused,
    /// The role admitted it (whatever happened next: success, a relation refusal, a missing record...).
    Admitted,
}

fn classify<T>(result: &Result<tonic::Response<T>, Status>) -> Got {
    match result {
        Ok(_) => Got::Admitted,
        // A server fault is no answer to "may this role ask?": it fails the test rather than counting as admitted.
        Err(status) if matches!(status.code(), Code::Internal | Code::Unavailable | Code::Unknown) => {
            panic!("a server fault: {status:?}")
        }
        Err(status) => match reason(status).as_str() {
            "SESSION_INVALID" => Got::NoSession,
            "ROLE_NOT_PERMITTED" | "STRONG_AUTHENTICATION_REQUIRED" => Got::RoleRefused,
            _ => Got::Admitted,
        },
    }
}

fn expected(rule: &str, role: Option<&str>) -> Got {
    match (rule, role) {
        ("public", _) => Got::Admitted,
        (_, None) => Got::NoSession,
        ("signed in", Some(_)) => Got::Admitted,
        (roles, Some(role)) if roles.split(',').any(|r| r.trim() == role) => Got::Admitted,
        _ => Got::RoleRefused,
    }
}

/// A request with the caller's session, or none.
fn req<T>(message: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(t) => authed(message, t),
        None => Request::new(message),
    }
}

/// Calls RPC `name` as the caller; the outcome's class.
async fn call(
    c: &mut PolicyServiceClient<Channel>,
    name: &str,
    role: &str,
    token: Option<&str>,
    fixture: &Fixture,
) -> Got {
    let app = || pb::ApplicationRef {
        id: fixture.application.clone(),
    };
    // A table over a researcher's own file, under the fixture's application.
    let file_table = || pb::StatisticsOperation {
        application_id: fixture.application.clone(),
        table: "adult".into(),
        group_by: vec!["sex".into()],
        measure: "count".into(),
        max_contrib: 1,
        epsilon: Some(0.1),
        ..Default::default()
    };
    match name {
        "Login" => classify(
            &c.login(pb::LoginRequest {
                username: "nobody".into(),
                password: "not a password".into(),
                second_factor: Some(pb::login_request::SecondFactor::TotpCode("000000".into())),
            })
            .await,
        ),
        "Enrol" => classify(
            &c.enrol(pb::EnrolRequest {
                username: "nobody".into(),
                invitation_code: "aaaa-bbbb-cccc-dddd".into(),
                password: "a long enough password".into(),
            })
            .await,
        ),
        "ConfirmTotp" => classify(
            &c.confirm_totp(pb::ConfirmTotpRequest {
                username: "nobody".into(),
                password: "a long enough password".into(),
                totp_code: "000000".into(),
            })
            .await,
        ),
        "WhoAmI" => classify(&c.who_am_i(req(pb::Empty {}, token)).await),
        "AddOrganisation" => classify(
            &c.add_organisation(req(
                pb::AddOrganisationRequest {
                    id: format!("org-{}", role.replace('_', "-")),
                    name: "Matrix".into(),
                },
                token,
            ))
            .await,
        ),
        "AddUser" => {
            let (_, claim) = tokumei_policy::identity::directory::invitation_claim().expect("claim");
            classify(
                &c.add_user(req(
                    pb::AddUserRequest {
                        username: format!("u-{}", role.replace('_', "-")),
                        display_name: "Matrix".into(),
                        organisation: "univ-a".into(),
                        roles: vec!["researcher".into()],
                        claim,
                    },
                    token,
                ))
                .await,
            )
        }
        "ApproveGrant" => classify(
            &c.approve_grant(req(
                pb::ApproveGrantRequest {
                    grant_id: fixture.grant.clone(),
                    claim: fixture.grant_claim.clone(),
                },
                token,
            ))
            .await,
        ),
        "ListUsers" => classify(&c.list_users(req(pb::Empty {}, token)).await),
        "FileApplication" => classify(
            &c.file_application(req(
                pb::FileApplicationRequest {
                    form: Some(fixture.form.clone()),
                    amends: String::new(),
                },
                token,
            ))
            .await,
        ),
        "GetApplication" => classify(&c.get_application(req(app(), token)).await),
        "ListApplications" => classify(&c.list_applications(req(pb::Empty {}, token)).await),
        "WithdrawApplication" => classify(
            &c.withdraw_application(req(
                pb::ApplicationRef {
                    id: fixture.to_withdraw.clone(),
                },
                token,
            ))
            .await,
        ),
        "EstimateFees" => classify(&c.estimate_fees(req(app(), token)).await),
        "AssignReviewers" => classify(
            &c.assign_reviewers(req(
                pb::AssignReviewersRequest {
                    id: fixture.application.clone(),
                    members: vec!["mei".into()],
                },
                token,
            ))
            .await,
        ),
        "Recuse" => classify(
            &c.recuse(req(
                pb::RecuseRequest {
                    id: fixture.application.clone(),
                    reason: "matrix".into(),
                },
                token,
            ))
            .await,
        ),
        "CastVote" => classify(
            &c.cast_vote(req(
                pb::CastVoteRequest {
                    id: fixture.application.clone(),
                    in_favour: true,
                    comment: String::new(),
                },
                token,
            ))
            .await,
        ),
        "Decide" => classify(
            &c.decide(req(
                pb::DecideRequest {
                    id: fixture.application.clone(),
                    conditions: Some(fixture.conditions.clone()),
                },
                token,
            ))
            .await,
        ),
        "Revoke" => classify(
            &c.revoke(req(
                pb::RevokeRequest {
                    id: fixture.application.clone(),
                    reason: "matrix".into(),
                },
                token,
            ))
            .await,
        ),
        "AdmitUse" => classify(
            &c.admit_use(req(
                pb::AdmitUseRequest {
                    id: fixture.application.clone(),
                    kind: "statistics".into(),
                    tables: vec![],
                },
                token,
            ))
            .await,
        ),
        "AdmitFileStatistics" => classify(&c.admit_file_statistics(req(file_table(), token)).await),
        "RecordFileStatistics" => classify(
            &c.record_file_statistics(req(
                pb::FileStatisticsRecord {
                    statistics: Some(file_table()),
                    cells: 2,
                    ..Default::default()
                },
                token,
            ))
            .await,
        ),
        "RecordViolation" => classify(
            &c.record_violation(req(
                pb::RecordViolationRequest {
                    subject_kind: "organisation".into(),
                    subject: "org-elsewhere".into(),
                    kind: "unauthorised disclosure".into(),
                    description: "matrix".into(),
                    application: String::new(),
                    banned_until: String::new(),
                },
                token,
            ))
            .await,
        ),
        "ExportBans" => classify(&c.export_bans(req(pb::Empty {}, token)).await),
        "ListGrants" => classify(&c.list_grants(req(pb::Empty {}, token)).await),
        "ExportAudit" => classify(
            &c.export_audit(req(
                pb::AuditWindow {
                    from: "2020-01-01T00:00:00Z".into(),
                    to: "2100-01-01T00:00:00Z".into(),
                },
                token,
            ))
            .await,
        ),
        "PublishRegister" => classify(
            &c.publish_register(req(
                pb::RegisterRef {
                    register: "decisions".into(),
                },
                token,
            ))
            .await,
        ),
        "ShowBudget" => classify(
            &c.show_budget(req(
                pb::BudgetQuery {
                    project: fixture.application.clone(),
                },
                token,
            ))
            .await,
        ),
        "SetBudget" => classify(
            &c.set_budget(req(
                pb::SetBudgetRequest {
                    project: fixture.application.clone(),
                    epsilon: 1.0,
                    delta: 1e-6,
                },
                token,
            ))
            .await,
        ),
        "SetPlatformCeiling" => classify(
            &c.set_platform_ceiling(req(
                pb::CeilingRequest {
                    period: "2099".into(),
                    epsilon: 10.0,
                    delta: 1e-5,
                },
                token,
            ))
            .await,
        ),
        "RegulatorReport" => classify(
            &c.regulator_report(req(
                pb::PeriodRef {
                    period: "2026-Q4".into(),
                },
                token,
            ))
            .await,
        ),
        "PlatformBudget" => classify(
            &c.platform_budget(req(pb::PeriodRef { period: "2099".into() }, token))
                .await,
        ),
        "SetRoles" => classify(
            &c.set_roles(req(
                pb::SetRolesRequest {
                    username: "spare".into(),
                    roles: vec!["researcher".into()],
                },
                token,
            ))
            .await,
        ),
        "DisableUser" => classify(
            &c.disable_user(req(
                pb::UserRef {
                    username: "spare".into(),
                },
                token,
            ))
            .await,
        ),
        "AddHospital" => classify(
            &c.add_hospital(req(
                pb::AddHospitalRequest {
                    code: common::HOSPITAL_A.into(),
                    organisation: "univ-a".into(),
                    certificate_sha256: "ab".repeat(32),
                },
                token,
            ))
            .await,
        ),
        "PublishHospitalDirectory" => classify(&c.publish_hospital_directory(req(pb::Empty {}, token)).await),
        "ListViolations" => classify(&c.list_violations(req(pb::Empty {}, token)).await),
        "ImportBans" => classify(
            &c.import_bans(req(
                pb::ImportBansRequest {
                    json: fixture.bans.clone(),
                    trusted_key: fixture.service_key.clone(),
                },
                token,
            ))
            .await,
        ),
        "VerifyAudit" => classify(&c.verify_audit(req(pb::Empty {}, token)).await),
        "Logout" => classify(&c.logout(req(pb::Empty {}, token)).await),
        "RequestCoreOperation" => classify(
            &c.request_core_operation(req(
                pb::CoreOperationRequest {
                    operation: Some(pb::core_operation_request::Operation::Status(pb::Empty {})),
                },
                token,
            ))
            .await,
        ),
        "GetCoreOrder" => classify(&c.get_core_order(req(pb::CoreOrderRef { id: 1 }, token)).await),
        other => panic!("docs/committee.md lists {other}, which this test does not know how to call"),
    }
}

/// What the calls act on.
struct Fixture {
    grant_claim: String,
    application: String,
    to_withdraw: String,
    grant: String,
    form: pb::ApplicationForm,
    conditions: pb::ApprovalConditions,
    bans: String,
    service_key: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_as_every_role_matches_the_documented_table_and_is_in_the_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    let op = people::operator(home, &[]);
    let (admin, _) = people::administrators(home);
    let researcher = people::invite(home, &[], "rika", "univ-a", "researcher");
    let chair = people::invite(home, &[], "chika", "univ-c", "committee_chair,committee_member");
    let member = people::invite(home, &[], "mei", "univ-m", "committee_member");
    let auditor = people::invite(home, &[], "audra", "audit-o", "auditor");
    people::invite(home, &[], "spare", "univ-a", "researcher");
    let server = Server::start(home);
    let mut c = PolicyServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");

    // What the calls act on: two applications of the researcher, a pending grant, a ban list to import.
    let mut application_form = form("Matrix");
    application_form.recipients = vec!["rika".into()];
    let application = file_application(&mut c, &application_form, &researcher).await;
    let to_withdraw = file_application(&mut c, &application_form, &researcher).await;
    let (_, grant_claim) = tokumei_policy::identity::directory::invitation_claim().expect("claim");
    let claim = grant_claim.clone();
    let grant = c
        .add_user(authed(
            pb::AddUserRequest {
                username: "kenta".into(),
                display_name: "Kenta".into(),
                organisation: "univ-a".into(),
                roles: vec!["committee_member".into()],
                claim,
            },
            &admin.session,
        ))
        .await
        .expect("a grant")
        .into_inner()
        .grant_id;
    let bans = c
        .export_bans(authed(pb::Empty {}, &op.session))
        .await
        .expect("bans")
        .into_inner()
        .json;
    let key_path = tokumei_policy::service_key::public_key_path(&tokumei_policy::service_key::bans_key_path(home));
    let service_key = tokumei_policy::ServicePublicKey::read(&key_path)
        .expect("service public key")
        .to_hex();
    let fixture = Fixture {
        grant_claim,
        application,
        to_withdraw,
        grant,
        form: application_form.clone(),
        conditions: pb::ApprovalConditions {
            tables: vec![pb::TableColumns {
                table: "lab_results".into(),
                columns: vec!["jlac10".into()],
            }],
            ..Default::default()
        },
        bans,
        service_key,
    };

    let table = common::policy_server::documented_table("rpc-matrix");
    assert_eq!(table.len(), 41, "every RPC of PolicyService is in the table");
    // Logout last (it ends the session the other calls use); researchers last among callers (they withdraw).
    let rpcs: Vec<&String> = table.keys().filter(|r| *r != "Logout").collect();
    let callers: [(&str, Option<&Person>); 7] = [
        ("anonymous", None),
        ("administrator", Some(&admin)),
        ("operator", Some(&op)),
        ("auditor", Some(&auditor)),
        ("committee_member", Some(&member)),
        ("committee_chair", Some(&chair)),
        ("researcher", Some(&researcher)),
    ];
    let db = tokumei_policy::PolicyDb::open(&tokumei_policy::default_url(home))
        .await
        .expect("the policy database");
    let rpc_entries = || async {
        sqlx::query("SELECT COUNT(*) AS n FROM audit_entries WHERE action LIKE 'rpc.%'")
            .fetch_one(db.pool())
            .await
            .expect("count")
            .try_get::<i64, _>("n")
            .expect("n")
    };
    let mut wrong = Vec::new();
    let mut unrecorded = Vec::new();
    let mut calls = BTreeSet::new();
    for rpc in &rpcs {
        for (role, person) in &callers {
            let before = rpc_entries().await;
            let token = person.map(|p| p.session.as_str());
            let got = call(&mut c, rpc, role, token, &fixture).await;
            let want = expected(&table[*rpc], (*role != "anonymous").then_some(*role));
            if got != want {
                wrong.push(format!("{rpc} as {role}: {got:?}, the table says {want:?}"));
            }
            if rpc_entries().await != before + 1 {
                unrecorded.push(format!("{rpc} as {role}"));
            }
            calls.insert((rpc.to_string(), role.to_string()));
        }
    }
    // `RequestCoreOperation` asks another action for each kind of order than for the `status` probe above: the two
    // that return data, and release builds, are probed as every role too (the table's action cell names them).
    use pb::core_operation_request::Operation;
    let kinds = [
        (
            "statistics",
            Operation::Statistics(pb::StatisticsOperation {
                application_id: fixture.application.clone(),
                table: "patients".into(),
                group_by: vec!["sex".into()],
                hierarchy: vec!["sex=value".into()],
                measure: "count".into(),
                max_contrib: 1,
                epsilon: Some(0.1),
                ..Default::default()
            }),
            "researcher",
        ),
        (
            "sql",
            Operation::Sql(pb::SqlOperation {
                query: "SELECT count(*) FROM patients".into(),
                all_rows: false,
                recipient_key: "ab".repeat(32),
            }),
            "operator",
        ),
        (
            "build_release",
            Operation::BuildRelease(pb::BuildReleaseOperation {
                application_id: fixture.application.clone(),
                recipients: vec![],
                tables: vec![],
            }),
            "operator",
        ),
    ];
    for (kind, operation, admitted) in &kinds {
        for (role, person) in &callers {
            let before = rpc_entries().await;
            let token = person.map(|p| p.session.as_str());
            let request = pb::CoreOperationRequest {
                operation: Some(operation.clone()),
            };
            let got = classify(&c.request_core_operation(req(request, token)).await);
            let want = expected(admitted, (*role != "anonymous").then_some(*role));
            if got != want {
                wrong.push(format!(
                    "RequestCoreOperation ({kind}) as {role}: {got:?}, expected {want:?}"
                ));
            }
            if rpc_entries().await != before + 1 {
                unrecorded.push(format!("RequestCoreOperation ({kind}) as {role}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(
        unrecorded.is_empty(),
        "calls without exactly one ledger entry: {unrecorded:#?}"
    );

    // The core's own service admits no person, whatever the role: only the core's certificate (this server has
    // none to check, so nobody gets in), and every refusal is on the ledger.
    let mut core = CoreOrderServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    for (role, person) in &callers {
        let token = person.map(|p| p.session.as_str());
        let before = rpc_entries().await;
        let took = core.take_core_orders(req(pb::CoreState::default(), token)).await;
        let report = pb::CoreOrderReport {
            id: 1,
            ok: false,
            result_json: String::new(),
            reason: "FORGED".into(),
            exclusions_changed_at_ms: 0,
        };
        let reported = core.report_core_order(req(report, token)).await;
        for (what, result) in [("TakeCoreOrders", took.err()), ("ReportCoreOrder", reported.err())] {
            let refused = result.is_some_and(|s| s.code() == Code::PermissionDenied && reason(&s) == "NOT_THE_CORE");
            assert!(refused, "{what} as {role} was not refused as NOT_THE_CORE");
        }
        assert_eq!(
            rpc_entries().await,
            before + 2,
            "core service calls as {role} unrecorded"
        );
    }

    // A refused caller learns nothing about their input: with garbage in every field the service reads, each
    // role the table refuses still gets ROLE_NOT_PERMITTED, never a validation error (before the fix,
    // `Decide` answered every role INVALID_ARGUMENT, reading the conditions before asking who was calling).
    let garbage = Fixture {
        grant_claim: fixture.grant_claim.clone(),
        grant: fixture.grant.clone(),
        application: fixture.application.clone(),
        to_withdraw: fixture.to_withdraw.clone(),
        form: pb::ApplicationForm::default(),
        conditions: pb::ApprovalConditions {
            privacy: Some(pb::PrivacyModel {
                k: 0,
                max_suppression: 7.0,
                ..Default::default()
            }),
            ..Default::default()
        },
        bans: "not a ban list".into(),
        service_key: "zz".into(),
    };
    for rpc in ["FileApplication", "Decide", "RecordViolation", "ImportBans"] {
        for (role, person) in callers.iter().skip(1) {
            if expected(&table[rpc], Some(role)) == Got::RoleRefused {
                let got = call(&mut c, rpc, role, person.map(|p| p.session.as_str()), &garbage).await;
                if got != Got::RoleRefused {
                    wrong.push(format!("{rpc} as {role} with garbage: {got:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Logout last: it ends the sessions the other calls used.
    for (role, person) in &callers {
        let before = rpc_entries().await;
        let got = call(&mut c, "Logout", role, person.map(|p| p.session.as_str()), &fixture).await;
        assert_eq!(
            got,
            expected(&table["Logout"], (*role != "anonymous").then_some(*role)),
            "Logout as {role}"
        );
        assert_eq!(rpc_entries().await, before + 1, "Logout as {role} unrecorded");
        calls.insert(("Logout".to_owned(), role.to_string()));
    }
    assert_eq!(calls.len(), 41 * 7);
    // The ledger names the sessionless caller and the reason, and still verifies.
    let sessionless: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM audit_entries WHERE action LIKE 'rpc.%' AND actor = 'anonymous' \
         AND reason = 'SESSION_INVALID'",
    )
    .fetch_one(db.pool())
    .await
    .expect("count")
    .try_get("n")
    .expect("n");
    assert_eq!(
        sessionless,
        38 + 3,
        "every sessionless call of the 38 non-public RPCs, and of the three extra kinds of core order"
    );
    drop(server);
}

async fn file_application(c: &mut PolicyServiceClient<Channel>, form: &pb::ApplicationForm, who: &Person) -> String {
    c.file_application(authed(
        pb::FileApplicationRequest {
            form: Some(form.clone()),
            amends: String::new(),
        },
        &who.session,
    ))
    .await
    .expect("file")
    .into_inner()
    .id
}
