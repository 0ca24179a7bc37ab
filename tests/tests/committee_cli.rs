//! The committee's command line as a client of the policy service, tried as an insider would.
//!
//! Before, `tokumei apply` and `tokumei committee` opened the policy database and the service key in their own
//! process and made the checks there: whoever could run their own code with those files could decide an
//! application without being the chair. Now they hold a session and the service's CA and nothing else: a whole
//! review runs from a desk whose home is empty, the desk still holds no policy file afterwards, and a researcher
//! trying the chair's commands is refused by the service and recorded.

mod common;

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use common::BoundedOutput;
use common::people::{self, Person, PolicyService};

/// `tokumei --json ARGS` from `desk` as `who`, expected to fail; returns stderr.
fn refused(desk: &Path, service: &PolicyService, who: &Person, args: &[&str]) -> String {
    let mut command = Command::new(common::tokumei_bin());
    command.env("TOKUMEI_HOME", desk).env_remove("TOKUMEI_POLICY_DB");
    for (k, v) in service.env(&[], who) {
        command.env(k, v);
    }
    let out = command.arg("--json").args(args).bounded_output().expect("run tokumei");
    assert!(!out.status.success(), "{args:?} should have been refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_review_runs_from_an_empty_desk_and_only_the_service_decides() {
    let home = common::Home::new();
    let db: &[(&str, &str)] = &[];
    let committee = people::committee(home.path(), db);
    let rika = people::invite(home.path(), db, "rika", "univ-a", "researcher");
    let service = PolicyService::start(home.path(), db);
    // The desk: an empty home holding only the two documents people write by hand.
    let desk = tempfile::tempdir().expect("desk");
    let today = Utc::now().date_naive();
    let form = desk.path().join("application.toml");
    std::fs::write(
        &form,
        format!(
            "title = \"HbA1c by region\"\npurpose = \"Regional care plans\"\npublic_interest = \"Diabetes strategy\"\n\
             methods = \"Regression\"\nperiod_from = \"{today}\"\nperiod_to = \"{}\"\nchannel = \"file\"\n\
             security_measures = \"Locked room\"\nfunding = \"None\"\nrecipients = [\"rika\"]\n\
             not_for_advertising = true\n\n[[tables]]\ntable = \"observations\"\ncolumns = [\"jlac10\", \"value\"]\n",
            today + chrono::Duration::days(365)
        ),
    )
    .expect("form");
    let conditions = desk.path().join("conditions.toml");
    std::fs::write(
        &conditions,
        format!(
            "channel = \"file\"\nexpires_on = \"{}\"\nmax_downloads = 3\nrecipients = [\"rika\"]\n\
             privacy = {{ k = 5, m = 1, max_suppression = 0.05 }}\n\n[[tables]]\ntable = \"observations\"\n\
             columns = [\"jlac10\", \"value\"]\n",
            today + chrono::Duration::days(180)
        ),
    )
    .expect("conditions");
    let before = common::files_under(desk.path());
    let at_desk = |who: &Person, args: &[&str]| people::run_json(desk.path(), args, &service.env(db, who), None);

    let filed = at_desk(&rika, &["apply", "file", "--form", form.to_str().expect("utf-8")]);
    let id = filed["id"].as_str().expect("id").to_owned();
    assert_eq!(filed["status"], "submitted", "{filed}");
    let names: Vec<&str> = committee.members.iter().map(|m| m.username.as_str()).collect();
    at_desk(
        &committee.chair,
        &["committee", "assign", &id, "--members", &names.join(",")],
    );

    // A researcher at the same desk tries the chair's and a member's commands: the service refuses, not the CLI.
    let conditions_arg = conditions.to_str().expect("utf-8");
    for args in [
        vec!["committee", "decide", id.as_str(), "--conditions", conditions_arg],
        vec!["committee", "vote", id.as_str(), "--approve", "--comment", "mine"],
        vec!["committee", "revoke", id.as_str(), "--reason", "x"],
        vec!["committee", "violations"],
    ] {
        let err = refused(desk.path(), &service, &rika, &args);
        assert!(
            err.contains("[ROLE_NOT_PERMITTED]") || err.contains("[NOT_ASSIGNED_REVIEWER]"),
            "{args:?}: {err}"
        );
    }
    for m in &committee.members {
        at_desk(
            m,
            &[
                "committee",
                "vote",
                &id,
                "--approve",
                "--comment",
                "clear public interest",
            ],
        );
    }
    let decided = at_desk(
        &committee.chair,
        &["committee", "decide", &id, "--conditions", conditions_arg],
    );
    assert_eq!(decided["status"], "approved", "{decided}");
    let shown = at_desk(&rika, &["apply", "show", &id]);
    assert_eq!(shown["conditions"]["max_downloads"], 3, "{shown}");
    let listed = at_desk(&committee.op, &["committee", "violations"]);
    assert_eq!(listed, serde_json::json!([]));

    // A new researcher joins from the same desk: the claim made there, the invitation by an administrator, then
    // enrolment, confirmation and login, all answered by the service.
    let claim = people::run_json(desk.path(), &["user", "claim"], &[], None);
    let (admin, _) = people::administrators(home.path());
    let added = at_desk(
        &admin,
        &[
            "user",
            "add",
            "--username",
            "sam",
            "--name",
            "Sam",
            "--organisation",
            "univ-a",
            "--roles",
            "researcher",
            "--claim",
            claim["claim"].as_str().expect("claim"),
        ],
    );
    assert_eq!(added["state"], "invited", "{added}");
    let desk_home = desk.path().to_path_buf();
    let no_db: &[(&str, &str)] = &[];
    let sam = people::activate_with(
        &service,
        &desk_home,
        no_db,
        "sam",
        claim["invitation_code"].as_str().expect("code"),
    );
    let me = at_desk(&sam, &["user", "whoami"]);
    assert_eq!(me["username"], "sam", "{me}");

    // An insider with the files every in-process command reads (the general service key) mints the chair's
    // session — real claims, real session id: neither the service nor an in-process command accepts it.
    let general = tokumei_policy::ServiceKey::load_or_create(&home.path().join("policy/service.key")).expect("key");
    let session_public =
        tokumei_policy::ServicePublicKey::read(&home.path().join("policy/session.pub")).expect("session key");
    let claims = tokumei_policy::identity::session_token::verify_signature(&session_public, &committee.chair.session)
        .expect("the chair's claims");
    let minted = tokumei_policy::identity::session_token::issue(&general, &claims).expect("sign");
    let forged = Person {
        username: committee.chair.username.clone(),
        session: minted.expose().to_owned(),
    };
    let err = refused(
        desk.path(),
        &service,
        &forged,
        &["committee", "revoke", &id, "--reason", "x"],
    );
    assert!(
        err.contains("[SESSION_INVALID]"),
        "the service took a minted session: {err}"
    );
    let operator_claims =
        tokumei_policy::identity::session_token::verify_signature(&session_public, &committee.op.session)
            .expect("the operator's claims");
    let minted = tokumei_policy::identity::session_token::issue(&general, &operator_claims).expect("sign");
    let forged_operator = Person {
        username: committee.op.username.clone(),
        session: minted.expose().to_owned(),
    };
    // `stats --input` (a researcher's own file) asks the service too: no command checks a session itself.
    let err = refused(
        desk.path(),
        &service,
        &forged_operator,
        &[
            "stats",
            "--input",
            "unread.csv",
            "--group-by",
            "sex",
            "--application",
            &id,
            "--output",
            "unwritten.csv",
        ],
    );
    assert!(
        err.contains("[SESSION_INVALID]"),
        "the service took a minted session for a file table: {err}"
    );

    // The desk holds what it held: no policy database, no key, no session file.
    assert_eq!(
        common::files_under(desk.path()),
        before,
        "the commands wrote into the desk"
    );

    // Each refusal is on the ledger, under the researcher, with its reason.
    let ledger = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(people::ledger(home.path()));
    let denied = ledger
        .iter()
        .filter(|e| e.actor == "rika" && e.outcome == "denied" && e.action.starts_with("rpc."))
        .count();
    assert!(denied >= 4, "the researcher's four attempts are recorded: {denied}");
}
