//! The identity directory against both backends, with the same test bodies and fixed clocks.
//!
//! Every body is an `async fn(PolicyDb, url)`; `on_both_backends!` runs it on a fresh SQLite file and on a
//! fresh PostgreSQL database (from `TOKUMEI_TEST_PG_URL`; skipped without it unless
//! `TOKUMEI_REQUIRE_SERVERS` is set). No test reads the clock: every call gets its `now`, and TOTP codes
//! are computed for those instants with the same `totp` module an authenticator app mirrors.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use tokumei_policy::identity::directory::{InvitedUser, invitation_claim};
use tokumei_policy::identity::{
    Directory, Enrolment, RecoveryCodes, SecondFactor, Totp, TotpSecret, UserKind, UserStatus,
};
use tokumei_policy::{AuthMethod, PolicyDb, PolicyError, Role, ServiceKey};

on_both_backends!(
    enrol_login_authenticate_expire_logout,
    totp_codes_are_single_use_within_the_skew_window,
    lockout_backs_off_and_survives_restart,
    recovery_codes_work_once,
    invitations_are_single_use_and_expire,
    bootstrap_and_user_validation,
    concurrent_bootstraps_create_one_pair_of_administrators,
    concurrent_writers_on_two_handles_all_land,
    service_identities_authenticate_by_certificate,
    concurrent_logins_with_one_code_admit_one,
    secrets_stay_out_of_debug_output,
    totp_seeds_are_sealed_at_rest,
    only_the_session_key_makes_sessions,
    only_the_seed_key_opens_the_services_second_factors,
);

// ---------------------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------------------

const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "incorrect horse battery staple";

/// 2025-06-15T15:07:10Z, ten seconds into a TOTP step.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_030, 0).expect("valid instant")
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn directory(db: PolicyDb) -> Directory {
    Directory::new(db, ServiceKey::from_seed(&[9; 32]))
}

/// The second-factor seed of `user` as the database holds it (sealed, or in the clear).
async fn stored_seed(db: &PolicyDb, user: &str) -> String {
    use sqlx::Row;
    sqlx::query("SELECT totp_secret FROM users WHERE username = $1")
        .bind(user)
        .fetch_one(db.pool())
        .await
        .expect("row")
        .try_get::<String, _>("totp_secret")
        .expect("seed")
}

/// A person's authenticator app.
struct App {
    totp: Totp,
    /// The seed as enrolment showed it (base32).
    seed: String,
}

impl App {
    fn from(enrolment: &Enrolment) -> App {
        let secret = TotpSecret::from_base32(enrolment.secret_base32.expose()).expect("base32 secret");
        App {
            totp: Totp::new(&secret, "tokumei", &enrolment.username).expect("totp"),
            seed: enrolment.secret_base32.expose().to_owned(),
        }
    }

    fn code(&self, at: DateTime<Utc>) -> String {
        self.totp.code_at(at).to_string()
    }

    /// A well-formed code that is valid for none of the steps around `at`.
    fn wrong_code(&self, at: DateTime<Utc>) -> String {
        let valid: Vec<String> = [-30, 0, 30].into_iter().map(|d| self.code(at + secs(d))).collect();
        (0..)
            .map(|n| format!("{n:06}"))
            .find(|c| !valid.contains(c))
            .expect("some code is wrong")
    }
}

/// Invites `username` by the invitee's own claim; returns the invitation and the code only the invitee knows.
async fn invite(
    dir: &Directory,
    username: &str,
    name: &str,
    org: &str,
    roles: &[Role],
    at: DateTime<Utc>,
) -> Result<(InvitedUser, tokumei_policy::identity::SecretString), PolicyError> {
    let (code, claim) = invitation_claim()?;
    dir.add_user(username, name, org, roles, &claim, at)
        .await
        .map(|invited| (invited, code))
}

/// Invites, enrols and confirms `username` at `t0()` (consuming the TOTP step of `t0()`).
async fn active_user(dir: &Directory, username: &str, roles: &[Role]) -> (App, RecoveryCodes) {
    if dir.organisation("univ-a").await.is_err() {
        dir.add_organisation("univ-a", "University A", t0())
            .await
            .expect("add organisation");
    }
    let (_, code) = invite(dir, username, "Test User", "univ-a", roles, t0())
        .await
        .expect("add user");
    let enrolment = dir.enrol(username, code.expose(), PASSWORD, t0()).await.expect("enrol");
    let app = App::from(&enrolment);
    let codes = dir
        .confirm_totp(username, PASSWORD, &app.code(t0()), t0())
        .await
        .expect("confirm totp");
    (app, codes)
}

async fn login_totp(
    dir: &Directory,
    username: &str,
    password: &str,
    app: &App,
    at: DateTime<Utc>,
) -> Result<tokumei_policy::identity::Session, PolicyError> {
    dir.login(username, password, SecondFactor::Totp(&app.code(at)), "127.0.0.1", at)
        .await
}

fn roles(list: &[Role]) -> BTreeSet<Role> {
    list.iter().copied().collect()
}

fn session_reason(result: Result<impl std::fmt::Debug, PolicyError>) -> String {
    match result {
        Err(PolicyError::SessionInvalid(reason)) => reason,
        other => panic!("expected SessionInvalid, got {other:?}"),
    }
}

fn assert_auth_failed<T: std::fmt::Debug>(result: Result<T, PolicyError>, what: &str) {
    match result {
        Err(PolicyError::AuthenticationFailed) => {}
        other => panic!("{what}: expected AuthenticationFailed, got {other:?}"),
    }
}

fn assert_locked<T: std::fmt::Debug>(result: Result<T, PolicyError>, until: DateTime<Utc>) {
    match result {
        Err(PolicyError::AccountLocked { until: text }) => {
            assert_eq!(text, until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }
        other => panic!("expected AccountLocked until {until}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Test bodies
// ---------------------------------------------------------------------------------------------------------

async fn enrol_login_authenticate_expire_logout(db: PolicyDb, _url: String) {
    let dir = directory(db);
    dir.add_organisation("univ-a", "University A", t0())
        .await
        .expect("organisation");
    let (invitation, code) = invite(
        &dir,
        "alice",
        "Alice Tanaka",
        "univ-a",
        &[Role::Researcher, Role::CommitteeMember],
        t0(),
    )
    .await
    .expect("add user");
    assert_eq!(invitation.expires_at, t0() + TimeDelta::hours(72));
    assert_eq!(dir.user("alice").await.expect("user").status, UserStatus::Invited);

    // A password that breaks the policy is refused before the invitation is used.
    let weak = dir.enrol("alice", code.expose(), "short", t0()).await;
    assert!(matches!(weak, Err(PolicyError::Invalid(_))), "{weak:?}");

    let enrolment = dir.enrol("alice", code.expose(), PASSWORD, t0()).await.expect("enrol");
    let uri = enrolment.otpauth_uri.expose();
    assert!(uri.starts_with("otpauth://totp/tokumei:alice?secret="), "{uri}");
    assert!(uri.contains(enrolment.secret_base32.expose()));
    assert!(uri.ends_with("&issuer=tokumei"), "{uri}");
    assert!(enrolment.qr_terminal.expose().lines().count() > 15);
    assert_eq!(dir.user("alice").await.expect("user").status, UserStatus::PendingTotp);
    let app = App::from(&enrolment);

    // No login before the app is confirmed; a wrong first code does not confirm it.
    assert_auth_failed(
        login_totp(&dir, "alice", PASSWORD, &app, t0()).await,
        "login while pending",
    );
    assert_auth_failed(
        dir.confirm_totp("alice", PASSWORD, &app.wrong_code(t0() + secs(30)), t0() + secs(30))
            .await,
        "wrong confirmation code",
    );
    let codes = dir
        .confirm_totp("alice", PASSWORD, &app.code(t0() + secs(30)), t0() + secs(30))
        .await
        .expect("confirm");
    assert_eq!(codes.codes().len(), 10);
    let record = dir.user("alice").await.expect("user");
    assert_eq!(record.status, UserStatus::Active);
    assert_eq!(record.kind, UserKind::Person);
    assert_eq!(record.recovery_codes_left, 10);
    assert_eq!(record.last_login_at, None);

    // Login, then the token authenticates until its 15 minutes are over.
    let t1 = t0() + TimeDelta::minutes(5);
    let session = login_totp(&dir, "alice", PASSWORD, &app, t1).await.expect("login");
    assert_eq!(session.expires_at, t1 + TimeDelta::minutes(15));
    assert_eq!(session.actor.roles, roles(&[Role::Researcher, Role::CommitteeMember]));
    assert_eq!(session.actor.auth, AuthMethod::PasswordTotp);
    assert_eq!(session.actor.organisation, "univ-a");
    let token = session.token.expose();
    let actor = dir.authenticate(token, t1).await.expect("authenticate");
    assert_eq!(actor, session.actor);
    assert!(dir.authenticate(token, t1 + TimeDelta::minutes(14)).await.is_ok());
    assert_eq!(
        session_reason(dir.authenticate(token, t1 + TimeDelta::minutes(16)).await),
        "expired"
    );
    assert!(dir.user("alice").await.expect("user").last_login_at.is_some());

    // Offline verification with the public key alone (what the release service does).
    let claims = tokumei_policy::identity::session_token::verify(&dir.public_key(), token, t1).expect("offline verify");
    assert_eq!(claims.username, "alice");
    assert_eq!(claims.session_id, session.session_id);

    // A token signed by another key is refused.
    let other = Directory::new(dir.db().clone(), ServiceKey::from_seed(&[7; 32]));
    assert_eq!(session_reason(other.authenticate(token, t1).await), "bad signature");
    assert_eq!(session_reason(dir.authenticate("tks1.garbage", t1).await), "malformed");

    // A role change is visible on the next request of an open session.
    dir.set_roles("alice", &[Role::Researcher], t1)
        .await
        .expect("set roles");
    let actor = dir.authenticate(token, t1 + secs(1)).await.expect("authenticate");
    assert_eq!(actor.roles, roles(&[Role::Researcher]));
    assert!(matches!(
        dir.set_roles("alice", &[Role::Hospital], t1).await,
        Err(PolicyError::Invalid(_))
    ));
    assert!(matches!(
        dir.set_roles("alice", &[], t1).await,
        Err(PolicyError::Invalid(_))
    ));
    assert!(matches!(
        dir.set_roles("nobody", &[Role::Auditor], t1).await,
        Err(PolicyError::NotFound { .. })
    ));

    // Logout revokes; a second logout is harmless.
    dir.logout(token, t1 + secs(2)).await.expect("logout");
    assert_eq!(session_reason(dir.authenticate(token, t1 + secs(3)).await), "revoked");
    dir.logout(token, t1 + secs(4)).await.expect("logout twice");

    // Disabling the user ends their sessions and their logins.
    let t2 = t1 + TimeDelta::minutes(1);
    let session = login_totp(&dir, "alice", PASSWORD, &app, t2)
        .await
        .expect("login again");
    let open = login_totp(&dir, "alice", PASSWORD, &app, t2 + secs(30))
        .await
        .expect("second session");
    assert_eq!(dir.revoke_sessions_of("alice", t2 + secs(31)).await.expect("revoke"), 2);
    assert_eq!(
        session_reason(dir.authenticate(open.token.expose(), t2 + secs(32)).await),
        "revoked"
    );
    let session2 = login_totp(&dir, "alice", PASSWORD, &app, t2 + secs(60))
        .await
        .expect("third session");
    dir.disable_user("alice", t2 + secs(61)).await.expect("disable");
    dir.disable_user("alice", t2 + secs(61))
        .await
        .expect("disable is idempotent");
    assert!(matches!(
        dir.authenticate(session2.token.expose(), t2 + secs(62)).await,
        Err(PolicyError::SessionInvalid(_))
    ));
    assert!(matches!(
        dir.authenticate(session.token.expose(), t2 + secs(62)).await,
        Err(PolicyError::SessionInvalid(_))
    ));
    assert_auth_failed(
        login_totp(&dir, "alice", PASSWORD, &app, t2 + secs(90)).await,
        "disabled user logs in",
    );
    assert_eq!(dir.user("alice").await.expect("user").status, UserStatus::Disabled);
    assert!(dir.prune_sessions(t2 + TimeDelta::hours(1)).await.expect("prune") >= 3);
}

async fn totp_codes_are_single_use_within_the_skew_window(db: PolicyDb, _url: String) {
    let dir = directory(db);
    let (app, _) = active_user(&dir, "bob", &[Role::Researcher]).await;
    let t = t0() + TimeDelta::minutes(10);

    login_totp(&dir, "bob", PASSWORD, &app, t).await.expect("first use");
    assert_auth_failed(login_totp(&dir, "bob", PASSWORD, &app, t).await, "same code again");
    assert_auth_failed(
        login_totp(&dir, "bob", PASSWORD, &app, t + secs(5)).await,
        "same code a few seconds later",
    );

    // Two steps ago is outside the window, one step either side is inside.
    let u = t + TimeDelta::minutes(10);
    let two_ago = app.code(u - secs(60));
    assert_auth_failed(
        dir.login("bob", PASSWORD, SecondFactor::Totp(&two_ago), "cli", u).await,
        "code from two steps ago",
    );
    let one_ago = app.code(u - secs(30));
    let s = dir
        .login("bob", PASSWORD, SecondFactor::Totp(&one_ago), "cli", u)
        .await
        .expect("previous step accepted");
    assert_eq!(s.actor.auth, AuthMethod::PasswordTotp);

    let v = u + TimeDelta::minutes(10);
    let next = app.code(v + secs(30));
    dir.login("bob", PASSWORD, SecondFactor::Totp(&next), "cli", v)
        .await
        .expect("next step accepted");
    // Having used the next step's code, the current step's code is older: refused.
    let current = app.code(v);
    assert_auth_failed(
        dir.login("bob", PASSWORD, SecondFactor::Totp(&current), "cli", v + secs(1))
            .await,
        "code older than the last accepted one",
    );
    // A right code with a wrong password does not burn the step.
    let w = v + TimeDelta::minutes(10);
    assert_auth_failed(login_totp(&dir, "bob", WRONG, &app, w).await, "wrong password");
    login_totp(&dir, "bob", PASSWORD, &app, w)
        .await
        .expect("code still unused");
}

async fn lockout_backs_off_and_survives_restart(db: PolicyDb, url: String) {
    let dir = directory(db);
    let (app, codes) = active_user(&dir, "carol", &[Role::CommitteeChair]).await;
    let t = t0() + TimeDelta::hours(1);

    // Four failures: not locked yet.
    for i in 0..4 {
        assert_auth_failed(
            login_totp(&dir, "carol", WRONG, &app, t + secs(i)).await,
            "wrong password",
        );
    }
    // The right password with a wrong code is a failure too: the fifth locks for 60 s.
    let fifth = t + secs(4);
    assert_auth_failed(
        dir.login(
            "carol",
            PASSWORD,
            SecondFactor::Totp(&app.wrong_code(fifth)),
            "cli",
            fifth,
        )
        .await,
        "wrong code",
    );
    let until = fifth + secs(60);

    // During the lock, even the right password and a fresh code are refused, without extending it;
    // recovery codes too.
    let during = fifth + secs(30);
    assert_locked(login_totp(&dir, "carol", PASSWORD, &app, during).await, until);
    assert_locked(login_totp(&dir, "carol", WRONG, &app, during).await, until);
    assert_locked(
        dir.login(
            "carol",
            PASSWORD,
            SecondFactor::RecoveryCode(codes.codes()[0].expose()),
            "cli",
            during,
        )
        .await,
        until,
    );
    // Unknown users never lock: they always get the same AuthenticationFailed.
    for i in 0..7 {
        assert_auth_failed(
            dir.login("nobody", WRONG, SecondFactor::Totp("123456"), "cli", t + secs(i))
                .await,
            "unknown user",
        );
    }

    // The lock survives a restart (another process, the same database).
    dir.db().close().await;
    let dir = directory(PolicyDb::open(&url).await.expect("reopen"));
    assert_locked(login_totp(&dir, "carol", PASSWORD, &app, fifth + secs(45)).await, until);

    // At the end of the lock a wrong password locks again, for twice as long.
    assert_auth_failed(
        login_totp(&dir, "carol", WRONG, &app, until).await,
        "wrong password after lock",
    );
    let until2 = until + secs(120);
    assert_locked(
        login_totp(&dir, "carol", PASSWORD, &app, until + secs(119)).await,
        until2,
    );

    // After it, the right credentials get in and reset the count: one failure then does not lock.
    let session = login_totp(&dir, "carol", PASSWORD, &app, until2)
        .await
        .expect("login after the lock");
    assert_eq!(session.actor.roles, roles(&[Role::CommitteeChair]));
    assert_auth_failed(
        login_totp(&dir, "carol", WRONG, &app, until2 + secs(30)).await,
        "wrong password after reset",
    );
    login_totp(&dir, "carol", PASSWORD, &app, until2 + secs(31))
        .await
        .expect("not locked after one failure");
    dir.db().close().await;
}

async fn recovery_codes_work_once(db: PolicyDb, _url: String) {
    let dir = directory(db);
    let (app, codes) = active_user(&dir, "dave", &[Role::Auditor]).await;
    let t = t0() + TimeDelta::minutes(3);
    let first = codes.codes()[0].expose();

    // A wrong password does not consume the code.
    assert_auth_failed(
        dir.login("dave", WRONG, SecondFactor::RecoveryCode(first), "cli", t)
            .await,
        "wrong password",
    );
    assert_eq!(dir.user("dave").await.expect("user").recovery_codes_left, 10);

    // Typed in capitals without dashes it still works, once.
    let typed = first.replace('-', "").to_uppercase();
    let session = dir
        .login("dave", PASSWORD, SecondFactor::RecoveryCode(&typed), "cli", t)
        .await
        .expect("recovery login");
    assert_eq!(session.actor.auth, AuthMethod::PasswordRecoveryCode);
    let actor = dir.authenticate(session.token.expose(), t).await.expect("authenticate");
    assert_eq!(actor.auth, AuthMethod::PasswordRecoveryCode);
    assert_auth_failed(
        dir.login("dave", PASSWORD, SecondFactor::RecoveryCode(first), "cli", t + secs(1))
            .await,
        "second use",
    );
    assert_eq!(dir.user("dave").await.expect("user").recovery_codes_left, 9);
    assert_auth_failed(
        dir.login(
            "dave",
            PASSWORD,
            SecondFactor::RecoveryCode("not-a-code"),
            "cli",
            t + secs(2),
        )
        .await,
        "garbage code",
    );

    // Regenerating replaces the whole set.
    let fresh = dir
        .regenerate_recovery_codes("dave", PASSWORD, &app.code(t + secs(60)), t + secs(60))
        .await
        .expect("regenerate");
    assert_eq!(dir.user("dave").await.expect("user").recovery_codes_left, 10);
    let old_second = codes.codes()[1].expose();
    assert_auth_failed(
        dir.login(
            "dave",
            PASSWORD,
            SecondFactor::RecoveryCode(old_second),
            "cli",
            t + secs(61),
        )
        .await,
        "old set",
    );
    dir.login(
        "dave",
        PASSWORD,
        SecondFactor::RecoveryCode(fresh.codes()[1].expose()),
        "cli",
        t + secs(62),
    )
    .await
    .expect("new set");
    // Regenerating needs the password and a fresh TOTP code.
    assert_auth_failed(
        dir.regenerate_recovery_codes("dave", WRONG, &app.code(t + secs(90)), t + secs(90))
            .await,
        "regenerate with a wrong password",
    );
}

async fn invitations_are_single_use_and_expire(db: PolicyDb, _url: String) {
    let dir = directory(db);
    dir.add_organisation("univ-b", "University B", t0())
        .await
        .expect("organisation");
    let (_, code) = invite(&dir, "erin", "Erin", "univ-b", &[Role::Researcher], t0())
        .await
        .expect("add user");
    let code = code.expose();
    assert_eq!(code.len(), 19);

    assert_auth_failed(
        dir.enrol("erin", "aaaa-bbbb-cccc-dddd", PASSWORD, t0()).await,
        "wrong invitation code",
    );
    assert_auth_failed(dir.enrol("erin", "", PASSWORD, t0()).await, "empty invitation code");
    assert_auth_failed(dir.enrol("nobody", code, PASSWORD, t0()).await, "unknown user");
    assert!(matches!(
        dir.enrol("erin", code, "erin", t0()).await,
        Err(PolicyError::Invalid(_))
    ));
    let expired = dir.enrol("erin", code, PASSWORD, t0() + TimeDelta::hours(72)).await;
    assert!(matches!(expired, Err(PolicyError::InvalidState(_))), "{expired:?}");

    // The operator re-invites; the old code is dead, the new one works once.
    let again = dir
        .reset_credentials("erin", t0() + TimeDelta::hours(73))
        .await
        .expect("re-invite");
    assert_auth_failed(
        dir.enrol("erin", code, PASSWORD, t0() + TimeDelta::hours(74)).await,
        "superseded invitation",
    );
    let enrolment = dir
        .enrol("erin", again.code.expose(), PASSWORD, t0() + TimeDelta::hours(74))
        .await
        .expect("enrol with the new invitation");
    assert_auth_failed(
        dir.enrol("erin", again.code.expose(), PASSWORD, t0() + TimeDelta::hours(74))
            .await,
        "invitation used twice",
    );
    // Enrolment can be started over by an operator too (e.g. the QR code was never scanned): the old TOTP
    // secret stops working.
    let old_app = App::from(&enrolment);
    let third = dir
        .reset_credentials("erin", t0() + TimeDelta::hours(75))
        .await
        .expect("reset");
    assert_auth_failed(
        dir.confirm_totp(
            "erin",
            PASSWORD,
            &old_app.code(t0() + TimeDelta::hours(75)),
            t0() + TimeDelta::hours(75),
        )
        .await,
        "confirm after reset",
    );
    let enrolment = dir
        .enrol("erin", third.code.expose(), PASSWORD, t0() + TimeDelta::hours(76))
        .await
        .expect("enrol again");
    let app = App::from(&enrolment);
    let t = t0() + TimeDelta::hours(76);
    dir.confirm_totp("erin", PASSWORD, &app.code(t), t)
        .await
        .expect("confirm");
    assert_eq!(dir.user("erin").await.expect("user").status, UserStatus::Active);
}

async fn bootstrap_and_user_validation(db: PolicyDb, _url: String) {
    let dir = directory(db);
    assert!(dir.is_empty().await.expect("is_empty"));
    let ((_, c1), (_, c2), (_, c3)) = (
        invitation_claim().expect("claim"),
        invitation_claim().expect("claim"),
        invitation_claim().expect("claim"),
    );
    // Two people with one claim: refused (one code would open both accounts).
    assert!(matches!(
        dir.bootstrap_administrators([("root", "First", &c1), ("deputy", "Second", &c1)], "ops", t0())
            .await,
        Err(PolicyError::Invalid(_))
    ));
    let invited: [InvitedUser; 2] = dir
        .bootstrap_administrators(
            [
                ("root", "First Administrator", &c1),
                ("deputy", "Second Administrator", &c2),
            ],
            "ops",
            t0(),
        )
        .await
        .expect("bootstrap");
    assert_eq!(invited[0].username, "root");
    assert_eq!(invited[1].username, "deputy");
    assert!(!dir.is_empty().await.expect("is_empty"));
    let record = dir.user("root").await.expect("root");
    assert_eq!(record.roles, roles(&[Role::Administrator]));
    assert_eq!(record.organisation, "ops");
    assert_eq!(dir.organisation("ops").await.expect("org created").name, "ops");
    assert!(matches!(
        dir.bootstrap_administrators([("mallory", "Mallory", &c3), ("eve", "Eve", &c2)], "ops", t0())
            .await,
        Err(PolicyError::InvalidState(_))
    ));

    assert!(matches!(
        dir.add_organisation("ops", "Again", t0()).await,
        Err(PolicyError::AlreadyExists {
            kind: "organisation",
            ..
        })
    ));
    assert!(matches!(
        dir.add_organisation("Bad Id", "Bad", t0()).await,
        Err(PolicyError::Invalid(_))
    ));
    dir.add_organisation("univ-c", "University C", t0())
        .await
        .expect("organisation");

    let refused = invite(&dir, "h1", "Hospital", "univ-c", &[Role::Hospital], t0()).await;
    assert!(matches!(refused, Err(PolicyError::Invalid(_))), "{refused:?}");
    let long = "a".repeat(65);
    for bad in ["", "Frank", "frank smith", "frank:x", "フランク", long.as_str()] {
        let result = invite(&dir, bad, "Frank", "univ-c", &[Role::Researcher], t0()).await;
        assert!(matches!(result, Err(PolicyError::Invalid(_))), "{bad:?}: {result:?}");
    }
    assert!(matches!(
        invite(&dir, "frank", "Frank", "univ-c", &[], t0()).await,
        Err(PolicyError::Invalid(_))
    ));
    // Separation of duties: an administrator holds no operator or committee role.
    for with in [Role::Operator, Role::CommitteeChair, Role::CommitteeMember] {
        assert!(matches!(
            invite(&dir, "frank", "Frank", "univ-c", &[Role::Administrator, with], t0()).await,
            Err(PolicyError::Invalid(_))
        ));
    }
    // A claim is a hash, not a code.
    assert!(matches!(
        dir.add_user(
            "frank",
            "Frank",
            "univ-c",
            &[Role::Researcher],
            "aaaa-bbbb-cccc-dddd",
            t0()
        )
        .await,
        Err(PolicyError::Invalid(_))
    ));
    assert!(matches!(
        invite(&dir, "frank", "Frank", "no-such-org", &[Role::Researcher], t0()).await,
        Err(PolicyError::NotFound {
            kind: "organisation",
            ..
        })
    ));
    invite(&dir, "frank", "Frank", "univ-c", &[Role::Researcher], t0())
        .await
        .expect("add");
    assert!(matches!(
        invite(&dir, "frank", "Frank Again", "univ-c", &[Role::Auditor], t0()).await,
        Err(PolicyError::AlreadyExists { kind: "user", .. })
    ));
    assert!(matches!(
        invite(&dir, "root", "Root Again", "univ-c", &[Role::Auditor], t0()).await,
        Err(PolicyError::AlreadyExists { kind: "user", .. })
    ));

    // Two administrators must remain: grants need both.
    assert!(matches!(
        dir.disable_user("root", t0()).await,
        Err(PolicyError::InvalidState(_))
    ));
    assert!(matches!(
        dir.set_roles("root", &[Role::Auditor], t0()).await,
        Err(PolicyError::InvalidState(_))
    ));
    dir.set_roles("frank", &[Role::Administrator], t0())
        .await
        .expect("a third administrator");
    dir.set_roles("root", &[Role::Auditor], t0())
        .await
        .expect("now root may step down");

    let users = dir.users().await.expect("users");
    let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["deputy", "frank", "root"]);
    assert_eq!(users[1].roles, roles(&[Role::Administrator]));
    assert_eq!(users[2].roles, roles(&[Role::Auditor]));
    let orgs: Vec<String> = dir
        .organisations()
        .await
        .expect("orgs")
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(orgs, ["ops", "univ-c"]);
    assert!(matches!(
        dir.user("nobody").await,
        Err(PolicyError::NotFound { kind: "user", .. })
    ));
}

async fn concurrent_bootstraps_create_one_pair_of_administrators(db: PolicyDb, url: String) {
    let a = directory(db);
    let b = directory(PolicyDb::open(&url).await.expect("second handle"));
    let barrier = Arc::new(tokio::sync::Barrier::new(6));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let dir = if i % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let ((_, first), (_, second)) = (invitation_claim().expect("claim"), invitation_claim().expect("claim"));
            barrier.wait().await;
            dir.bootstrap_administrators(
                [
                    (&format!("adm{i}"), "Administrator", &first),
                    (&format!("dep{i}"), "Deputy", &second),
                ],
                "ops",
                t0(),
            )
            .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(PolicyError::InvalidState(_)) => {}
            Err(other) => panic!("unexpected error under contention: {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(a.users().await.expect("users").len(), 2);
    b.db().close().await;
}

/// Two processes (the service and an offline command, say) writing at once: every write lands. On SQLite a
/// transaction that reads before it writes cannot wait for a concurrent writer unless it took the write lock at
/// its start, so without `BEGIN IMMEDIATE` some of these fail with "database is locked".
async fn concurrent_writers_on_two_handles_all_land(db: PolicyDb, url: String) {
    let a = directory(db);
    a.add_organisation("ops", "Operations", t0())
        .await
        .expect("organisation");
    let b = directory(PolicyDb::open(&url).await.expect("second handle"));
    const WRITERS: usize = 24;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let dir = if i % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let (_, claim) = invitation_claim().expect("claim");
            barrier.wait().await;
            dir.add_user(&format!("user{i}"), "Member", "ops", &[Role::Researcher], &claim, t0())
                .await
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        if let Err(e) = task.await.expect("task") {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {WRITERS} writes failed: {failures:?}",
        failures.len()
    );
    assert_eq!(a.users().await.expect("users").len(), WRITERS);
    b.db().close().await;
}

async fn service_identities_authenticate_by_certificate(db: PolicyDb, _url: String) {
    let dir = directory(db);
    dir.add_organisation("hosp-a", "Hospital A", t0())
        .await
        .expect("organisation");
    let der = b"0\x82\x01\x0a this stands for a DER certificate".to_vec();
    let fingerprint = hex::encode(Sha256::digest(&der));
    // Accepted as openssl prints it: upper case with colons.
    let openssl_style = fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let record = dir
        .add_service_identity("1310000001", "hosp-a", &openssl_style, t0())
        .await
        .expect("add service identity");
    assert_eq!(record.kind, UserKind::Service);
    assert_eq!(record.status, UserStatus::Active);
    assert_eq!(record.roles, roles(&[Role::Hospital]));
    assert_eq!(record.certificate_sha256.as_deref(), Some(fingerprint.as_str()));

    let actor = dir.authenticate_certificate(&der).await.expect("certificate");
    assert_eq!(actor.username, "1310000001");
    assert_eq!(actor.organisation, "hosp-a");
    assert_eq!(actor.roles, roles(&[Role::Hospital]));
    assert_eq!(actor.auth, AuthMethod::Certificate);
    assert_auth_failed(
        dir.authenticate_certificate(b"another certificate").await,
        "other bytes",
    );
    assert_auth_failed(dir.authenticate_certificate(&[]).await, "no bytes");

    assert!(matches!(
        dir.add_service_identity("131", "hosp-a", &fingerprint, t0()).await,
        Err(PolicyError::Invalid(_))
    ));
    assert!(matches!(
        dir.add_service_identity("1310000002", "hosp-a", "abcd", t0()).await,
        Err(PolicyError::Invalid(_))
    ));
    assert!(matches!(
        dir.add_service_identity("1310000002", "hosp-a", &fingerprint, t0())
            .await,
        Err(PolicyError::AlreadyExists {
            kind: "certificate",
            ..
        })
    ));
    let other_fp = hex::encode(Sha256::digest(b"other"));
    assert!(matches!(
        dir.add_service_identity("1310000001", "hosp-a", &other_fp, t0()).await,
        Err(PolicyError::AlreadyExists { kind: "user", .. })
    ));
    // A service has no password: a login as it fails like any other.
    assert_auth_failed(
        dir.login("1310000001", PASSWORD, SecondFactor::Totp("123456"), "cli", t0())
            .await,
        "password login of a service",
    );
    assert!(matches!(
        dir.set_roles("1310000001", &[Role::Researcher], t0()).await,
        Err(PolicyError::InvalidState(_))
    ));

    // Certificate renewal, then disabling.
    let renewed = b"renewed certificate".to_vec();
    dir.set_service_certificate("1310000001", &hex::encode(Sha256::digest(&renewed)), t0())
        .await
        .expect("renew");
    assert_auth_failed(dir.authenticate_certificate(&der).await, "old certificate");
    assert_eq!(
        dir.authenticate_certificate(&renewed).await.expect("renewed").username,
        "1310000001"
    );
    dir.disable_user("1310000001", t0()).await.expect("disable");
    assert_auth_failed(dir.authenticate_certificate(&renewed).await, "disabled service");
}

/// Eight logins race with the same valid code: the replay guard admits exactly one.
async fn concurrent_logins_with_one_code_admit_one(db: PolicyDb, url: String) {
    let a = directory(db);
    let (app, _) = active_user(&a, "gina", &[Role::Researcher]).await;
    let b = directory(PolicyDb::open(&url).await.expect("second handle"));
    let t = t0() + TimeDelta::minutes(2);
    let code = app.code(t);
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let dir = if i % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = barrier.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            dir.login("gina", PASSWORD, SecondFactor::Totp(&code), "race", t).await
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(session) => {
                admitted += 1;
                assert_eq!(session.actor.username, "gina");
            }
            Err(PolicyError::AuthenticationFailed | PolicyError::AccountLocked { .. }) => {}
            Err(other) => panic!("unexpected error under contention: {other}"),
        }
    }
    assert_eq!(admitted, 1);
    b.db().close().await;
}

async fn secrets_stay_out_of_debug_output(db: PolicyDb, _url: String) {
    let dir = directory(db);
    dir.add_organisation("univ-d", "University D", t0())
        .await
        .expect("organisation");
    let (invitation, code) = invite(&dir, "hana", "Hana", "univ-d", &[Role::Researcher], t0())
        .await
        .expect("add user");
    let debug = format!("{invitation:?} {code:?}");
    assert!(!debug.contains(code.expose()), "{debug}");
    assert!(debug.contains("hana"));

    let enrolment = dir.enrol("hana", code.expose(), PASSWORD, t0()).await.expect("enrol");
    let debug = format!("{enrolment:?}");
    assert!(!debug.contains(enrolment.secret_base32.expose()), "{debug}");
    assert!(!debug.contains("otpauth://"), "{debug}");
    assert!(!debug.contains('\u{2588}'), "no QR code in {debug}");

    let app = App::from(&enrolment);
    let codes = dir
        .confirm_totp("hana", PASSWORD, &app.code(t0()), t0())
        .await
        .expect("confirm");
    let debug = format!("{codes:?}");
    for code in codes.codes() {
        assert!(!debug.contains(code.expose()), "{debug}");
    }

    let t = t0() + secs(30);
    let code = app.code(t);
    let session = dir
        .login("hana", PASSWORD, SecondFactor::Totp(&code), "cli", t)
        .await
        .expect("login");
    let debug = format!("{session:?}");
    assert!(!debug.contains(session.token.expose()), "{debug}");
    let payload = session.token.expose().split('.').nth(1).unwrap_or_default();
    assert!(!debug.contains(payload), "{debug}");
    assert!(!format!("{:?}", SecondFactor::Totp(&code)).contains(code.as_str()));

    // Nor in errors or records.
    let failure = dir
        .login(
            "hana",
            "a wrong secret password",
            SecondFactor::Totp(&code),
            "cli",
            t + secs(1),
        )
        .await
        .expect_err("replayed");
    assert!(!format!("{failure} {failure:?}").contains("secret password"));
    let record = format!("{:?}", dir.user("hana").await.expect("user"));
    assert!(!record.contains("argon2"), "{record}");
    assert!(!record.contains(enrolment.secret_base32.expose()), "{record}");
    assert!(!format!("{dir:?}").contains("argon2"));
}

/// A dump of the database does not give anyone's second factor: the seed is sealed, bound to its account, and
/// only the service key opens it; a seed an earlier version stored in the clear still works and is sealed at
/// its owner's next code.
async fn totp_seeds_are_sealed_at_rest(db: PolicyDb, _url: String) {
    let dir = directory(db);
    let (app, _) = active_user(&dir, "iris", &[Role::Researcher]).await;
    let stored = |user: &'static str| stored_seed(dir.db(), user);
    let sealed = stored("iris").await;
    assert!(sealed.starts_with("tkw1:"), "stored in the clear");
    let clear = app.seed.clone();
    assert!(!sealed.contains(clear.as_str()));
    let t = t0() + secs(60);
    login_totp(&dir, "iris", PASSWORD, &app, t)
        .await
        .expect("login with the sealed seed");

    // Another service key (a stolen database on another platform) cannot open it: the code is refused.
    let other = Directory::new(dir.db().clone(), ServiceKey::from_seed(&[8; 32]));
    assert!(login_totp(&other, "iris", PASSWORD, &app, t + secs(60)).await.is_err());

    // A sealed seed copied onto another account does not open there.
    let (_, _) = active_user(&dir, "jun", &[Role::Researcher]).await;
    sqlx::query("UPDATE users SET totp_secret = $2 WHERE username = $1")
        .bind("jun")
        .bind(&sealed)
        .execute(dir.db().pool())
        .await
        .expect("copy");
    assert!(login_totp(&dir, "jun", PASSWORD, &app, t + secs(120)).await.is_err());

    // An earlier version's clear seed: accepted, then sealed.
    sqlx::query("UPDATE users SET totp_secret = $2 WHERE username = $1")
        .bind("iris")
        .bind(clear.as_str())
        .execute(dir.db().pool())
        .await
        .expect("legacy seed");
    login_totp(&dir, "iris", PASSWORD, &app, t + secs(180))
        .await
        .expect("legacy login");
    let resealed = stored("iris").await;
    assert!(resealed.starts_with("tkw1:") && !resealed.contains(clear.as_str()));
    dir.db().close().await;
}

/// The attack on session separation: every process beside the policy database holds the general service key (it
/// signs ledger entries there). Sessions are signed with a key of their own that only the policy service loads, so
/// a token minted with the general key — valid claims, the chair's real session id — is refused, and a process
/// that only checks sessions cannot log anyone in.
async fn only_the_session_key_makes_sessions(db: PolicyDb, _url: String) {
    let general = ServiceKey::from_seed(&[9; 32]);
    let session_key = ServiceKey::from_seed(&[10; 32]);
    let service = Directory::new(db.clone(), general.clone()).with_session_key(session_key.clone());
    let (app, _) = active_user(&service, "chair", &[Role::CommitteeChair]).await;
    let session = login_totp(&service, "chair", PASSWORD, &app, t0() + secs(30))
        .await
        .expect("the service logs the chair in");
    // A process beside the database: the general key, and the session key's public half only.
    let beside = Directory::new(db, general.clone()).with_session_verifier(session_key.public());
    let actor = beside
        .authenticate(session.token.expose(), t0() + secs(31))
        .await
        .expect("it checks the service's sessions");
    assert_eq!(actor.username, "chair");
    let claims =
        tokumei_policy::identity::session_token::verify_signature(&session_key.public(), session.token.expose())
            .expect("claims");
    let minted = tokumei_policy::identity::session_token::issue(&general, &claims).expect("sign");
    for (who, dir) in [("the service", &service), ("a process beside it", &beside)] {
        assert_eq!(
            session_reason(dir.authenticate(minted.expose(), t0() + secs(31)).await),
            "bad signature",
            "{who} accepted a session minted with the general key"
        );
    }
    let refused = login_totp(&beside, "chair", PASSWORD, &app, t0() + secs(60)).await;
    assert!(
        matches!(refused, Err(PolicyError::InvalidState(_))),
        "a process that only checks sessions logged someone in: {refused:?}"
    );
}

/// The attack on second factors at rest: a process beside the policy database holds the database and the general
/// service key — and, stolen from the service's host, even the session key. Seeds the service sealed under its TOTP
/// seal key still do not open there: such a process can neither read a seed nor check a code. Seeds an earlier
/// version sealed under the general key are re-sealed under the TOTP key at their owner's next code.
async fn only_the_seed_key_opens_the_services_second_factors(db: PolicyDb, _url: String) {
    let general = ServiceKey::from_seed(&[9; 32]);
    let session_key = ServiceKey::from_seed(&[10; 32]);
    let seed_key = ServiceKey::from_seed(&[11; 32]);
    let stored = |user: &'static str| stored_seed(&db, user);
    // An account enrolled by an earlier version: its seed under the general key.
    let earlier = Directory::new(db.clone(), general.clone()).with_session_key(session_key.clone());
    let (old_app, _) = active_user(&earlier, "olga", &[Role::Researcher]).await;
    assert!(stored("olga").await.starts_with("tkw1:"));

    let service = Directory::new(db.clone(), general.clone())
        .with_session_key(session_key.clone())
        .with_seed_key(&seed_key);
    let (app, _) = active_user(&service, "iris", &[Role::Researcher]).await;
    assert!(stored("iris").await.starts_with("tkw2:"), "sealed under the TOTP key");
    login_totp(&service, "iris", PASSWORD, &app, t0() + secs(60))
        .await
        .expect("the service checks the code");

    let beside = Directory::new(db.clone(), general.clone()).with_session_key(session_key.clone());
    let refused = login_totp(&beside, "iris", PASSWORD, &app, t0() + secs(90)).await;
    assert!(
        matches!(refused, Err(PolicyError::InvalidState(_))),
        "a process without the TOTP key checked a code: {refused:?}"
    );
    // Relabelling the sealed seed as an older one does not make it open under the general key.
    let relabelled = stored("iris").await.replacen("tkw2:", "tkw1:", 1);
    sqlx::query("UPDATE users SET totp_secret = $2 WHERE username = $1")
        .bind("iris")
        .bind(&relabelled)
        .execute(db.pool())
        .await
        .expect("relabel");
    assert!(
        login_totp(&beside, "iris", PASSWORD, &app, t0() + secs(120))
            .await
            .is_err()
    );

    // The earlier account logs in at the service and its seed moves under the TOTP key.
    login_totp(&service, "olga", PASSWORD, &old_app, t0() + secs(60))
        .await
        .expect("an earlier seed still works");
    assert!(
        stored("olga").await.starts_with("tkw2:"),
        "re-sealed at the owner's code"
    );
    assert!(
        login_totp(&beside, "olga", PASSWORD, &old_app, t0() + secs(90))
            .await
            .is_err(),
        "after re-sealing, the general key no longer opens it"
    );
}
