//! Separation of duties through the `tokumei` binary, as the insider tried it: an operator giving itself
//! the chair's role, an administrator approving its own grant, an administrator who would also operate, and
//! invitation codes reaching someone other than the invitee. Each attempt is refused with its code and found in
//! the audit ledger an auditor exports.

mod common;

use std::path::Path;
use std::process::Command;

use common::BoundedOutput;
use common::people::{self, Person, PolicyService, activate, administrators, run_json};

/// `user add` of `username` into the platform organisation with `roles`, by `claim`.
fn add<'a>(username: &'a str, name: &'a str, roles: &'a str, claim: &'a str) -> Vec<&'a str> {
    vec![
        "user",
        "add",
        "--username",
        username,
        "--name",
        name,
        "--organisation",
        "platform",
        "--roles",
        roles,
        "--claim",
        claim,
    ]
}

/// `tokumei --json ARGS` as `who`, expected to fail; returns stderr.
fn refused(home: &Path, service: &PolicyService, who: &Person, args: &[&str]) -> String {
    let mut command = Command::new(common::tokumei_bin());
    command.env("TOKUMEI_HOME", home);
    for (k, v) in service.env(&[], who) {
        command.env(k, v);
    }
    let out = command.arg("--json").args(args).bounded_output().expect("run tokumei");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn roles_are_granted_by_two_administrators_and_codes_reach_only_the_invitee() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    let op = people::operator(home, &[]);
    let service = PolicyService::start(home, &[]);
    let (first, second) = administrators(home);
    let as_first = service.env(&[], &first);
    let as_second = service.env(&[], &second);

    // The attack: the operator gives itself the chair's role, or invites a friend as chair.
    let err = refused(
        home,
        &service,
        &op,
        &[
            "user",
            "roles",
            "--username",
            "op",
            "--roles",
            "operator,committee_chair",
        ],
    );
    assert!(err.contains("ROLE_NOT_PERMITTED"), "{err}");
    let claim = run_json(home, &["user", "claim"], &[], None);
    let friend_claim = claim["claim"].as_str().expect("claim").to_owned();
    let err = refused(
        home,
        &service,
        &op,
        &add("friend", "Friend", "committee_chair", &friend_claim),
    );
    assert!(err.contains("ROLE_NOT_PERMITTED"), "{err}");

    // An administrator invites a chair by the invitee's claim: no code comes back, and nothing exists until
    // a second administrator approves.
    let added = run_json(
        home,
        &add("chika", "Chika", "committee_chair,committee_member", &friend_claim),
        &as_first,
        None,
    );
    assert_eq!(added["state"], "pending", "{added}");
    assert!(
        added.get("invitation_code").is_none()
            && !added
                .to_string()
                .contains(claim["invitation_code"].as_str().unwrap_or("-"))
    );
    let grant = added["grant"].as_str().expect("grant").to_owned();
    let listed = run_json(home, &["user", "grants"], &as_second, None);
    assert!(listed.to_string().contains(&grant), "{listed}");
    let users = run_json(home, &["user", "list"], &as_second, None);
    assert!(
        !users.to_string().contains("chika"),
        "an account before the second approval: {users}"
    );
    // The one who asked cannot approve; the operator cannot either.
    let err = refused(home, &service, &first, &["user", "approve", "--grant", &grant]);
    assert!(err.contains("FOUR_EYES"), "{err}");
    let err = refused(home, &service, &op, &["user", "approve", "--grant", &grant]);
    assert!(err.contains("ROLE_NOT_PERMITTED"), "{err}");
    // The requesting administrator's own claim in place of the invitee's (a code only the requester holds) is the
    // takeover the approver must catch: the approver enters the claim the invitee gave them directly.
    let substituted = run_json(home, &["user", "claim"], &[], None);
    let err = refused(
        home,
        &service,
        &second,
        &[
            "user",
            "approve",
            "--grant",
            &grant,
            "--claim",
            substituted["claim"].as_str().expect("claim"),
        ],
    );
    assert!(err.contains("does not match"), "{err}");
    let err = refused(home, &service, &second, &["user", "approve", "--grant", &grant]);
    assert!(
        err.contains("does not match"),
        "an invitation approved without a claim: {err}"
    );
    let applied = run_json(
        home,
        &["user", "approve", "--grant", &grant, "--claim", &friend_claim],
        &as_second,
        None,
    );
    assert_eq!(applied["state"], "applied", "{applied}");
    let err = refused(home, &service, &second, &["user", "approve", "--grant", &grant]);
    assert!(
        err.contains("INVALID_STATE") || err.contains("not pending"),
        "a grant applies once: {err}"
    );
    // Only the invitee's own code opens the account.
    let mut wrong = Command::new(common::tokumei_bin());
    wrong.env("TOKUMEI_HOME", home);
    for (k, v) in service.anonymous_env(&[]) {
        wrong.env(k, v);
    }
    let wrong = wrong
        .args([
            "--json",
            "user",
            "enrol",
            "--username",
            "chika",
            "--invitation",
            "aaaa-bbbb-cccc-dddd",
            "--password-stdin",
        ])
        .bounded_output()
        .expect("enrol");
    assert!(!wrong.status.success());
    let chika = activate(home, &[], "chika", claim["invitation_code"].as_str().expect("code"));
    let me = run_json(home, &["user", "whoami"], &service.env(&[], &chika), None);
    assert!(me.to_string().contains("committee_chair"), "{me}");

    // One claim opens one account: reusing the invitee's claim for another username is refused.
    let err = refused(
        home,
        &service,
        &first,
        &add("chika2", "Chika", "researcher", &friend_claim),
    );
    assert!(err.contains("already in use"), "{err}");

    // An administrator neither operates nor sits on the committee, and changes no role of their own.
    let other = run_json(home, &["user", "claim"], &[], None);
    let err = refused(
        home,
        &service,
        &first,
        &add(
            "both",
            "Both",
            "administrator,operator",
            other["claim"].as_str().expect("claim"),
        ),
    );
    assert!(
        err.contains("INVALID_ARGUMENT") || err.contains("separation of duties"),
        "{err}"
    );
    let err = refused(
        home,
        &service,
        &first,
        &["user", "roles", "--username", "adm1", "--roles", "auditor"],
    );
    assert!(err.contains("OWN_ACCOUNT"), "{err}");

    // Every refusal and the approval are in the audit ledger.
    let auditor = people::invite(home, &[], "audra", "audit-o", "auditor");
    let bundle = dir.path().join("bundle.json");
    let today = chrono::Utc::now().date_naive();
    run_json(
        home,
        &[
            "audit",
            "export",
            "--from",
            &today.to_string(),
            "--to",
            &(today + chrono::Duration::days(2)).to_string(),
            "--out",
            bundle.to_str().expect("path"),
        ],
        &service.env(&[], &auditor),
        None,
    );
    let ledger = std::fs::read_to_string(&bundle).expect("bundle");
    for needle in [
        "ROLE_NOT_PERMITTED",
        "FOUR_EYES",
        "OWN_ACCOUNT",
        "user.grant_requested",
        "user.grant_approved",
    ] {
        assert!(ledger.contains(needle), "{needle} is not in the ledger");
    }
    assert!(
        !ledger.contains(claim["invitation_code"].as_str().unwrap_or("-")),
        "a code in the ledger"
    );
}
