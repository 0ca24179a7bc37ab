//! `tokumei policy serve` end to end: the real binary, a real gRPC client, the committee workflow from the
//! first operator's bootstrap to an approval, and the refusals a client must be able to tell apart by their
//! `ErrorInfo` reason.

mod common;

use common::BoundedOutput;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::policy_server::{Server, authed, form, reason};
use common::tokumei_bin;
use tokumei_policy::identity::totp::{Totp, TotpSecret};
use tokumei_proto::policy::v1 as pb;
use tokumei_proto::policy::v1::policy_service_client::PolicyServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const PASSWORD: &str = "correct horse battery staple";

/// Runs `tokumei --json ARGS` in `home` with `stdin`, expects success, returns the JSON it printed.
/// `tokumei --json ARGS` with `stdin`; a client command reaches the policy service at `url`.
fn cli(home: &Path, url: &str, args: &[&str], stdin: &str) -> serde_json::Value {
    let mut child = Command::new(tokumei_bin())
        .arg("--json")
        .args(args)
        .env("TOKUMEI_HOME", home)
        .env("TOKUMEI_POLICY_URL", url)
        .env_remove("TOKUMEI_SESSION")
        .env_remove("TOKUMEI_PASSWORD")
        .env_remove("TOKUMEI_POLICY_DB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokumei");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = common::wait_bounded(child, &format!("{args:?}")).expect("tokumei output");
    assert!(
        out.status.success(),
        "tokumei {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tokumei {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn text(v: &serde_json::Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key:?} in {v}"))
        .to_owned()
}

/// A person's authenticator app. The service refuses a code for a step it already accepted (replay), so
/// each call returns the code of a step later than the last one used: the current step, or the next one
/// (accepted with ±1 step of skew), waiting only when both were used.
struct Authenticator {
    totp: Totp,
    last_step: Option<i64>,
}

impl Authenticator {
    fn new(username: &str, secret_base32: &str) -> Authenticator {
        let secret = TotpSecret::from_base32(secret_base32).expect("TOTP secret");
        let totp = Totp::new(&secret, "tokumei", username).expect("TOTP");
        Authenticator { totp, last_step: None }
    }

    fn code(&mut self) -> String {
        loop {
            let current = Totp::step_at(Utc::now()).expect("step");
            let step = match self.last_step {
                Some(last) if last >= current => last + 1,
                _ => current,
            };
            if step <= current + 1 {
                self.last_step = Some(step);
                let at = Utc.timestamp_opt(step * 30, 0).single().expect("step time");
                return self.totp.code_at(at).to_string();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn assert_refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>, code: Code, expected: &str) {
    let status = result.expect_err("the call must be refused");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (code, expected),
        "{status:?}"
    );
}

/// Enrols an invited person over gRPC, confirms their authenticator and logs them in: their session token.
async fn join(client: &mut PolicyServiceClient<Channel>, username: &str, invitation: &str) -> String {
    let enrolment = client
        .enrol(pb::EnrolRequest {
            username: username.into(),
            invitation_code: invitation.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("enrol {username}: {s:?}"))
        .into_inner();
    assert!(enrolment.otpauth_uri.starts_with("otpauth://totp/"));
    let mut app = Authenticator::new(username, &enrolment.secret_base32);
    let codes = client
        .confirm_totp(pb::ConfirmTotpRequest {
            username: username.into(),
            password: PASSWORD.into(),
            totp_code: app.code(),
        })
        .await
        .unwrap_or_else(|s| panic!("confirm {username}: {s:?}"))
        .into_inner();
    assert_eq!(codes.recovery_codes.len(), 10);
    login(client, username, &mut app).await
}

async fn login(client: &mut PolicyServiceClient<Channel>, username: &str, app: &mut Authenticator) -> String {
    let session = client
        .login(pb::LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
            second_factor: Some(pb::login_request::SecondFactor::TotpCode(app.code())),
        })
        .await
        .unwrap_or_else(|s| panic!("login {username}: {s:?}"))
        .into_inner();
    assert_eq!(session.actor.as_ref().map(|a| a.username.as_str()), Some(username));
    assert_eq!(
        session.actor.as_ref().map(|a| a.auth_method.as_str()),
        Some("password_totp")
    );
    assert!(session.expires_at > Utc::now().timestamp());
    session.session_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committee_workflow_over_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();

    // The first two administrators, at the host's console: each made a code of their own (`user claim`), the
    // installer passes on only the claims.
    let claims = [
        cli(home, "", &["user", "claim"], ""),
        cli(home, "", &["user", "claim"], ""),
    ];
    cli(
        home,
        "",
        &[
            "user",
            "bootstrap",
            "--username",
            "adm1",
            "--name",
            "Admin One",
            "--claim",
            &text(&claims[0], "claim"),
            "--second-username",
            "adm2",
            "--second-name",
            "Admin Two",
            "--second-claim",
            &text(&claims[1], "claim"),
        ],
        "",
    );
    // Enrolment and everything after it go through the service (plaintext on loopback in this test).
    let mut server = Server::start(home);
    let url = format!("http://{}", server.addr);
    let mut apps = Vec::new();
    for (i, username) in ["adm1", "adm2"].into_iter().enumerate() {
        let invitation = text(&claims[i], "invitation_code");
        let enrolment = cli(
            home,
            &url,
            &[
                "user",
                "enrol",
                "--username",
                username,
                "--invitation",
                &invitation,
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        );
        let mut app = Authenticator::new(username, &text(&enrolment, "secret_base32"));
        let code = app.code();
        cli(
            home,
            &url,
            &[
                "user",
                "confirm",
                "--username",
                username,
                "--code",
                &code,
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        );
        apps.push(app);
    }

    let mut client = PolicyServiceClient::connect(url.clone()).await.expect("connect");

    // Everything else over gRPC, starting with the administrators' logins.
    let op = login(&mut client, "adm1", &mut apps[0]).await;
    let second = login(&mut client, "adm2", &mut apps[1]).await;
    let me = client
        .who_am_i(authed(pb::Empty {}, &op))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(
        (me.username.as_str(), me.roles.as_slice()),
        ("adm1", ["administrator".to_owned()].as_slice())
    );

    // The researcher's university, over gRPC; the CLI accepts the same session (a second organisation).
    let org = client
        .add_organisation(authed(
            pb::AddOrganisationRequest {
                id: "univ".into(),
                name: "University".into(),
            },
            &op,
        ))
        .await
        .expect("add organisation")
        .into_inner();
    assert_eq!(org.id, "univ");
    cli(
        home,
        &url,
        &[
            "user",
            "add-org",
            "--id",
            "univ-2",
            "--name",
            "Second university",
            "--session",
            &op,
        ],
        "",
    );

    // Each invitee makes their own code; the administrator sends only its claim and never receives a code.
    // Committee roles wait for the second administrator; the first cannot approve its own request.
    let people: [(&str, &str, &[&str]); 6] = [
        ("rin", "univ", &["researcher"]),
        ("m1", "platform", &["committee_member"]),
        ("m2", "platform", &["committee_member"]),
        ("m3", "platform", &["committee_member"]),
        ("chair", "platform", &["committee_chair"]),
        ("aud", "platform", &["auditor"]),
    ];
    let mut tokens = HashMap::new();
    for (username, organisation, roles) in people {
        let (code, claim) = tokumei_policy::identity::directory::invitation_claim().expect("claim");
        let added = client
            .add_user(authed(
                pb::AddUserRequest {
                    username: username.into(),
                    display_name: format!("Dr {username}"),
                    organisation: organisation.into(),
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                    claim: claim.clone(),
                },
                &op,
            ))
            .await
            .unwrap_or_else(|s| panic!("add {username}: {s:?}"))
            .into_inner();
        assert_eq!(added.username, username);
        assert!(added.invitation_code.is_empty(), "an administrator received a code");
        let committee = roles.iter().any(|r| r.starts_with("committee") || *r == "auditor");
        assert_eq!(added.state, if committee { "pending" } else { "invited" });
        if committee {
            let own = client
                .approve_grant(authed(
                    pb::ApproveGrantRequest {
                        grant_id: added.grant_id.clone(),
                        claim: claim.clone(),
                    },
                    &op,
                ))
                .await
                .expect_err("an administrator approved their own request");
            assert_eq!(own.code(), tonic::Code::PermissionDenied, "{own:?}");
            assert!(format!("{own:?}").contains("FOUR_EYES"), "{own:?}");
            // A claim other than the one the invitee gave the approver (the requester's own, say) applies nothing.
            let (_, substituted) = tokumei_policy::identity::directory::invitation_claim().expect("claim");
            let swapped = client
                .approve_grant(authed(
                    pb::ApproveGrantRequest {
                        grant_id: added.grant_id.clone(),
                        claim: substituted,
                    },
                    &second,
                ))
                .await
                .expect_err("a substituted claim was accepted");
            assert_eq!(swapped.code(), tonic::Code::InvalidArgument, "{swapped:?}");
            client
                .approve_grant(authed(
                    pb::ApproveGrantRequest {
                        grant_id: added.grant_id.clone(),
                        claim: claim.clone(),
                    },
                    &second,
                ))
                .await
                .unwrap_or_else(|s| panic!("approve {username}: {s:?}"));
        }
        let token = join(&mut client, username, code.expose()).await;
        tokens.insert(username, token);
    }
    let token = |u: &str| tokens[u].clone();
    let users = client
        .list_users(authed(pb::Empty {}, &op))
        .await
        .expect("list users")
        .into_inner()
        .users;
    assert_eq!(users.len(), 8);
    assert!(users.iter().all(|u| u.status == "active"), "{users:?}");

    // The researcher files; the chair assigns three members; they vote; the chair approves with conditions.
    let app = client
        .file_application(authed(
            pb::FileApplicationRequest {
                form: Some(form("Diabetes care across prefectures")),
                amends: String::new(),
            },
            &token("rin"),
        ))
        .await
        .expect("file application")
        .into_inner();
    assert_eq!(
        (app.status.as_str(), app.applicant.as_str(), app.organisation.as_str()),
        ("submitted", "rin", "univ")
    );
    assert!(app.fee.as_ref().is_some_and(|f| f.total_yen > 0));
    let id = app.id.clone();
    let members = vec!["m1".to_owned(), "m2".to_owned(), "m3".to_owned()];
    let app = client
        .assign_reviewers(authed(
            pb::AssignReviewersRequest {
                id: id.clone(),
                members,
            },
            &token("chair"),
        ))
        .await
        .expect("assign")
        .into_inner();
    assert_eq!(app.status, "under_review");
    assert_eq!(app.reviewers.len(), 3);
    for m in ["m1", "m2", "m3"] {
        client
            .cast_vote(authed(
                pb::CastVoteRequest {
                    id: id.clone(),
                    in_favour: true,
                    comment: format!("{m}: sound methods"),
                },
                &token(m),
            ))
            .await
            .unwrap_or_else(|s| panic!("vote {m}: {s:?}"));
    }
    let conditions = pb::ApprovalConditions {
        tables: vec![pb::TableColumns {
            table: "lab_results".into(),
            columns: vec!["jlac10".into()],
        }],
        cohort_filter: String::new(),
        privacy: Some(pb::PrivacyModel {
            k: 5,
            l: None,
            t: None,
            max_suppression: 0.05,
            m: Some(2),
            demographic_weight: None,
        }),
        dp_budget: None,
        channel: "file".into(),
        expires_on: "2030-12-31".into(),
        max_downloads: 2,
        recipients: vec!["rin".into()],
        link_releases: false,
        pseudonymised: false,
        statistics: None,
    };
    let mut bad = conditions.clone();
    bad.expires_on = "31/12/2030".into();
    assert_refused(
        client
            .decide(authed(
                pb::DecideRequest {
                    id: id.clone(),
                    conditions: Some(bad),
                },
                &token("chair"),
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    let decided = client
        .decide(authed(
            pb::DecideRequest {
                id: id.clone(),
                conditions: Some(conditions.clone()),
            },
            &token("chair"),
        ))
        .await
        .expect("decide")
        .into_inner();
    assert_eq!(decided.status, "approved");
    let seen = client
        .get_application(authed(pb::ApplicationRef { id: id.clone() }, &token("rin")))
        .await
        .expect("get application")
        .into_inner();
    assert_eq!(seen.status, "approved");
    assert_eq!(seen.conditions.as_ref(), Some(&conditions));
    assert_eq!(seen.votes.len(), 3);
    assert!(!seen.decided_at.is_empty());

    // The approval is enforced: a download within scope is admitted, a column outside it is not.
    let tables = vec![pb::TableColumns {
        table: "lab_results".into(),
        columns: vec!["jlac10".into()],
    }];
    let admitted = client
        .admit_use(authed(
            pb::AdmitUseRequest {
                id: id.clone(),
                kind: "download".into(),
                tables,
            },
            &token("rin"),
        ))
        .await
        .expect("admit download")
        .into_inner();
    assert_eq!(admitted.downloads_used, 1);
    let wider = vec![pb::TableColumns {
        table: "lab_results".into(),
        columns: vec!["value".into()],
    }];
    assert_refused(
        client
            .admit_use(authed(
                pb::AdmitUseRequest {
                    id: id.clone(),
                    kind: "download".into(),
                    tables: wider,
                },
                &token("rin"),
            ))
            .await,
        Code::PermissionDenied,
        "COLUMN_NOT_APPROVED",
    );

    // Without a session, or with a forged one: SESSION_INVALID.
    assert_refused(
        client
            .get_application(Request::new(pb::ApplicationRef { id: id.clone() }))
            .await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    assert_refused(
        client
            .get_application(authed(pb::ApplicationRef { id: id.clone() }, "tks1.forged"))
            .await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );

    // A member not assigned to a review may not vote on it.
    let second = client
        .file_application(authed(
            pb::FileApplicationRequest {
                form: Some(form("Hypertension follow-up")),
                amends: String::new(),
            },
            &token("rin"),
        ))
        .await
        .expect("file second application")
        .into_inner();
    assert_refused(
        client
            .cast_vote(authed(
                pb::CastVoteRequest {
                    id: second.id.clone(),
                    in_favour: true,
                    comment: String::new(),
                },
                &token("m1"),
            ))
            .await,
        Code::PermissionDenied,
        "NOT_ASSIGNED_REVIEWER",
    );
    let mine = client
        .list_applications(authed(pb::Empty {}, &token("rin")))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(mine.applications.len(), 2);

    // A researcher cannot manage accounts.
    assert_refused(
        client
            .add_user(authed(
                pb::AddUserRequest {
                    username: "eve".into(),
                    display_name: "Eve".into(),
                    organisation: "univ".into(),
                    roles: vec!["operator".into()],
                    claim: "0".repeat(64),
                },
                &token("rin"),
            ))
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_PERMITTED",
    );

    // A wrong password: the same refusal whatever was wrong.
    assert_refused(
        client
            .login(pb::LoginRequest {
                username: "m2".into(),
                password: "not the password".into(),
                second_factor: Some(pb::login_request::SecondFactor::TotpCode("000000".into())),
            })
            .await,
        Code::Unauthenticated,
        "AUTHENTICATION_FAILED",
    );

    // The auditor verifies the ledger, which recorded all of the above.
    let audit = client
        .verify_audit(authed(pb::Empty {}, &token("aud")))
        .await
        .expect("verify audit")
        .into_inner();
    assert!(audit.ok, "{audit:?}");
    assert!(audit.entries_checked > 0, "{audit:?}");
    assert!(audit.head_seq > 0 && !audit.head_hash.is_empty(), "{audit:?}");

    // A logged-out session is refused from then on.
    client.logout(authed(pb::Empty {}, &token("m3"))).await.expect("logout");
    assert_refused(
        client.who_am_i(authed(pb::Empty {}, &token("m3"))).await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );

    drop(client);
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown on SIGTERM: {status:?}");
}

#[test]
fn plaintext_needs_the_flag_and_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = Command::new(tokumei_bin())
            .args(["policy", "serve"])
            .args(args)
            .env("TOKUMEI_HOME", dir.path())
            .env_remove("TOKUMEI_POLICY_DB")
            .bounded_output()
            .expect("run tokumei");
        assert!(!out.status.success(), "{args:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--listen", "0.0.0.0:0", "--insecure-dev"]);
    assert!(err.contains("loopback"), "{err}");
    let err = run(&["--listen", "127.0.0.1:0"]);
    assert!(err.contains("--tls-cert"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_certificates_are_given() {
    // The development PKI's gateway certificate (for "localhost") serves as the policy service's.
    let home = common::Home::new();
    let cert = home.pki.gateway_cert();
    let key = home.pki.gateway_key();
    let server = Server::start_with(
        home.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
        ],
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(home.pki.ca_cert()).expect("CA certificate");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", server.addr))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("TLS connection");
    let mut client = PolicyServiceClient::new(channel);
    // The service answers over TLS (and still wants a session).
    assert_refused(
        client.who_am_i(Request::new(pb::Empty {})).await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    // Nothing is served in plaintext on that port.
    let plain = async {
        let mut c = PolicyServiceClient::connect(format!("http://{}", server.addr))
            .await
            .map_err(|e| e.to_string())?;
        c.who_am_i(Request::new(pb::Empty {})).await.map_err(|e| e.to_string())
    };
    let plain = tokio::time::timeout(Duration::from_secs(10), plain).await;
    assert!(!matches!(plain, Ok(Ok(_))), "a plaintext client must get nowhere");
}
