//! People of the committee zone for end-to-end tests: accounts created, enrolled with TOTP and logged in
//! through the real `tokumei` binary, as an operator, a researcher and a committee would. The tests
//! compute TOTP codes from the enrolment's secret, as an authenticator app does.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::BoundedOutput;
use chrono::{Duration, Utc};
use tokumei_policy::identity::totp::{Totp, TotpSecret};

/// The password every test person uses (policy: ≥ 12 characters).
pub const PASSWORD: &str = "test password 1234";

/// A logged-in person: their username and session token.
#[derive(Debug, Clone)]
pub struct Person {
    /// Username.
    pub username: String,
    /// Session token (`TOKUMEI_SESSION`).
    pub session: String,
}

/// Runs `tokumei --json ARGS` under `home` with `env`, feeding `stdin`; returns the parsed JSON or panics
/// with the command's output.
pub fn run_json(home: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new(super::tokumei_bin());
    cmd.env("TOKUMEI_HOME", home)
        .env_remove("TOKUMEI_SESSION")
        .arg("--json")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tokumei");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = super::wait_bounded(child, &format!("{args:?}")).expect("tokumei output");
    assert!(
        out.status.success(),
        "tokumei {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Completes an invitation: enrol, confirm with the previous step's code, log in with the current one.
pub fn activate(home: &Path, db: &[(&str, &str)], username: &str, invitation: &str) -> Person {
    activate_with(&PolicyService::start(home, db), home, db, username, invitation)
}

/// Someone who enrolled and confirmed their authenticator but has not signed in: what a person signing in through a
/// browser holds (their password is [`PASSWORD`]).
#[derive(Debug)]
pub struct Enrolled {
    /// Username.
    pub username: String,
    /// Their authenticator.
    pub totp: Totp,
    /// The recovery codes they were given at confirmation.
    pub recovery_codes: Vec<String>,
}

impl Enrolled {
    /// A code their authenticator shows one step ahead of now: never the step their confirmation used, and within
    /// the service's ±1 step window.
    pub fn next_code(&self) -> String {
        self.totp.code_at(Utc::now() + Duration::seconds(30)).to_string()
    }
}

/// Enrols `username` with `invitation` and confirms their authenticator with the current step's code.
pub fn enrol_with(
    service: &PolicyService,
    home: &Path,
    db: &[(&str, &str)],
    username: &str,
    invitation: &str,
) -> Enrolled {
    let db = &service.anonymous_env(db);
    let e = run_json(
        home,
        &[
            "user",
            "enrol",
            "--username",
            username,
            "--invitation",
            invitation,
            "--password-stdin",
        ],
        db,
        Some(&format!("{PASSWORD}\n")),
    );
    let secret = TotpSecret::from_base32(e["secret_base32"].as_str().expect("secret")).expect("base32");
    let totp = Totp::new(&secret, "tokumei", username).expect("totp");
    let confirmed = run_json(
        home,
        &[
            "user",
            "confirm",
            "--username",
            username,
            "--code",
            &totp.code_at(Utc::now()),
            "--password-stdin",
        ],
        db,
        Some(&format!("{PASSWORD}\n")),
    );
    let recovery_codes = confirmed["recovery_codes"]
        .as_array()
        .map(|codes| codes.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Enrolled {
        username: username.to_owned(),
        totp,
        recovery_codes,
    }
}

/// [`activate`] through a running policy service.
pub fn activate_with(
    service: &PolicyService,
    home: &Path,
    db: &[(&str, &str)],
    username: &str,
    invitation: &str,
) -> Person {
    let enrolled = enrol_with(service, home, db, username, invitation);
    login(service, home, db, &enrolled)
}

/// A command-line session for someone enrolled, signed in with their authenticator's next step (a browser sign-in
/// after it must use a recovery code: that step is spent).
pub fn login(service: &PolicyService, home: &Path, db: &[(&str, &str)], who: &Enrolled) -> Person {
    // The step after the confirmation's (the ±1 step window accepts it even when a step boundary passes between
    // the calls; a replayed step would be refused).
    let s = run_json(
        home,
        &[
            "user",
            "login",
            "--username",
            &who.username,
            "--code",
            &who.next_code(),
            "--password-stdin",
            "--no-save",
        ],
        &service.anonymous_env(db),
        Some(&format!("{PASSWORD}\n")),
    );
    Person {
        username: who.username.clone(),
        session: s["session_token"].as_str().expect("token").to_owned(),
    }
}

/// The installation's two administrators, as [`operator`] bootstrapped them (kept beside the home so that every
/// [`invite`] asks with the first and approves with the second).
pub fn administrators(home: &Path) -> (Person, Person) {
    let text = std::fs::read_to_string(home.join(ADMINISTRATORS)).expect("operator() bootstraps the administrators");
    let v: serde_json::Value = serde_json::from_str(&text).expect("administrators file");
    let person = |i: usize| Person {
        username: v[i]["username"].as_str().expect("username").to_owned(),
        session: v[i]["session"].as_str().expect("session").to_owned(),
    };
    (person(0), person(1))
}

const ADMINISTRATORS: &str = "test-administrators.json";

/// A fresh installation: its two administrators (bootstrap), then its first operator, granted by one
/// administrator and approved by the other.
pub fn operator(home: &Path, db: &[(&str, &str)]) -> Person {
    let service = PolicyService::start(home, db);
    // Each first administrator makes their own code; the installer passes on only the claims.
    let claims = [
        run_json(home, &["user", "claim"], &[], None),
        run_json(home, &["user", "claim"], &[], None),
    ];
    let text = |i: usize, field: &str| claims[i][field].as_str().expect("claim output").to_owned();
    run_json(
        home,
        &[
            "user",
            "bootstrap",
            "--username",
            "adm1",
            "--name",
            "Administrator One",
            "--claim",
            &text(0, "claim"),
            "--second-username",
            "adm2",
            "--second-name",
            "Administrator Two",
            "--second-claim",
            &text(1, "claim"),
        ],
        db,
        None,
    );
    let first = activate_with(&service, home, db, "adm1", &text(0, "invitation_code"));
    let second = activate_with(&service, home, db, "adm2", &text(1, "invitation_code"));
    let saved = serde_json::json!([
        {"username": first.username, "session": first.session},
        {"username": second.username, "session": second.session},
    ]);
    std::fs::write(home.join(ADMINISTRATORS), saved.to_string()).expect("save administrators");
    invite_with(&service, home, db, "op", "platform", "operator")
}

/// A person of organisation `org` (created if needed) with `roles`, invited as the platform requires: the
/// invitee makes their own code (`user claim`) and hands over only its claim; the first administrator invites
/// with the claim; roles that need four eyes wait for the second administrator's approval.
pub fn invite(home: &Path, db: &[(&str, &str)], username: &str, org: &str, roles: &str) -> Person {
    invite_with(&PolicyService::start(home, db), home, db, username, org, roles)
}

/// [`invite`] through a running policy service.
pub fn invite_with(
    service: &PolicyService,
    home: &Path,
    db: &[(&str, &str)],
    username: &str,
    org: &str,
    roles: &str,
) -> Person {
    let code = invitation(service, home, db, username, org, roles);
    activate_with(service, home, db, username, &code)
}

/// A person invited as [`invite`] does, enrolled and confirmed, not signed in (they sign in through a browser).
pub fn invite_enrolled(
    service: &PolicyService,
    home: &Path,
    db: &[(&str, &str)],
    username: &str,
    org: &str,
    roles: &str,
) -> Enrolled {
    let code = invitation(service, home, db, username, org, roles);
    enrol_with(service, home, db, username, &code)
}

/// The invitee's own code, once the administrators invited (and, for four-eyes roles, approved) them.
fn invitation(
    service: &PolicyService,
    home: &Path,
    db: &[(&str, &str)],
    username: &str,
    org: &str,
    roles: &str,
) -> String {
    let (first, second) = administrators(home);
    let env = service.env(db, &first);
    let mut cmd = Command::new(super::tokumei_bin());
    cmd.env("TOKUMEI_HOME", home)
        .args(["user", "add-org", "--id", org, "--name", org]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let _ = cmd.bounded_output(); // Already there is fine.
    let claim = run_json(home, &["user", "claim"], &[], None);
    let added = run_json(
        home,
        &[
            "user",
            "add",
            "--username",
            username,
            "--name",
            username,
            "--organisation",
            org,
            "--roles",
            roles,
            "--claim",
            claim["claim"].as_str().expect("claim"),
        ],
        &env,
        None,
    );
    assert!(
        added.get("invitation_code").is_none(),
        "an administrator saw a code: {added}"
    );
    if added["state"] == "pending" {
        let grant = added["grant"].as_str().expect("grant id");
        // The invitee hands the claim to the second administrator too, who approves with it.
        run_json(
            home,
            &[
                "user",
                "approve",
                "--grant",
                grant,
                "--claim",
                claim["claim"].as_str().expect("claim"),
            ],
            &service.env(db, &second),
            None,
        );
    }
    claim["invitation_code"]
        .as_str()
        .expect("the invitee's code")
        .to_owned()
}

/// `db` plus `TOKUMEI_SESSION` of `person`.
pub fn session_env<'a>(db: &[(&'a str, &'a str)], person: &'a Person) -> Vec<(&'a str, &'a str)> {
    let mut env = db.to_vec();
    env.push(("TOKUMEI_SESSION", person.session.as_str()));
    env
}

/// The policy service over TLS on `home`'s database (`db`) for as long as it is held: the commands that are its
/// clients (`apply`, `committee`) reach it as a person would, with a session and the CA.
pub struct PolicyService {
    _server: super::policy_server::Server,
    url: String,
    ca: String,
}

impl PolicyService {
    /// Starts it.
    pub fn start(home: &Path, db: &[(&str, &str)]) -> PolicyService {
        // The development PKI (kept if the home has one): the service's certificate and the CA clients trust.
        let pki = tokumei_ingest::pki::PkiLayout::new(home.join("pki"));
        tokumei_ingest::pki::init(&pki, &[], &["localhost".to_owned()]).expect("development PKI");
        let server = super::policy_server::Server::start_tls_on(home, db);
        PolicyService {
            url: format!("https://{}", server.addr),
            ca: home.join("pki").join("ca.crt").display().to_string(),
            _server: server,
        }
    }

    /// What a client command run before login (enrol, confirm, login) needs in its environment.
    pub fn anonymous_env<'a>(&'a self, db: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = db.to_vec();
        env.push(("TOKUMEI_POLICY_URL", self.url.as_str()));
        env.push(("TOKUMEI_POLICY_CA", self.ca.as_str()));
        env
    }

    /// What a client command run as `person` needs in its environment.
    pub fn env<'a>(&'a self, db: &[(&'a str, &'a str)], person: &'a Person) -> Vec<(&'a str, &'a str)> {
        let mut env = session_env(db, person);
        env.push(("TOKUMEI_POLICY_URL", self.url.as_str()));
        env.push(("TOKUMEI_POLICY_CA", self.ca.as_str()));
        env
    }

    /// Runs `tokumei --json ARGS` as `person` against this service.
    pub fn run(&self, home: &Path, db: &[(&str, &str)], person: &Person, args: &[&str]) -> serde_json::Value {
        run_json(home, args, &self.env(db, person), None)
    }
}

/// One client command of the policy service as `person`, with a service started for it.
pub fn run_client(home: &Path, db: &[(&str, &str)], person: &Person, args: &[&str]) -> serde_json::Value {
    PolicyService::start(home, db).run(home, db, person, args)
}

/// An approved statistics application with a DP budget that also allows small-cell tables at the platform
/// floor: returns the researcher (sole recipient) and the application id. `tables` are `(table, [columns])`.
pub fn approved_statistics(
    home: &Path,
    db: &[(&str, &str)],
    epsilon: f64,
    delta: f64,
    tables: &[(&str, &[&str])],
) -> (Person, String) {
    approved_statistics_with(home, db, epsilon, delta, tables, "[statistics]\nsmall_cell_min = 10\n")
}

/// [`approved_statistics`] with the committee's statistics rules given as TOML (`""`: DP only, any approved
/// column).
pub fn approved_statistics_with(
    home: &Path,
    db: &[(&str, &str)],
    epsilon: f64,
    delta: f64,
    tables: &[(&str, &[&str])],
    statistics_toml: &str,
) -> (Person, String) {
    let (researcher, _, id) = approved_statistics_and_chair(home, db, epsilon, delta, tables, statistics_toml);
    (researcher, id)
}

/// [`approved_statistics_with`], also returning the chair who decided (to revoke, ban...): (researcher, chair, id).
pub fn approved_statistics_and_chair(
    home: &Path,
    db: &[(&str, &str)],
    epsilon: f64,
    delta: f64,
    tables: &[(&str, &[&str])],
    statistics_toml: &str,
) -> (Person, Person, String) {
    operator(home, db);
    let researcher = invite(home, db, "rika", "univ-a", "researcher");
    let chair = invite(home, db, "chika", "univ-c", "committee_chair,committee_member");
    let members: Vec<Person> = [("mei", "univ-m"), ("kenta", "hosp-k"), ("sora", "law-s")]
        .iter()
        .map(|(u, o)| invite(home, db, u, o, "committee_member"))
        .collect();
    let today = Utc::now().date_naive();
    let mut table_toml = String::new();
    for (t, cols) in tables {
        let cols: Vec<String> = cols.iter().map(|c| format!("{c:?}")).collect();
        table_toml.push_str(&format!(
            "\n[[tables]]\ntable = {t:?}\ncolumns = [{}]\n",
            cols.join(", ")
        ));
    }
    let form = format!(
        "title = \"Test statistics\"\npurpose = \"Testing\"\npublic_interest = \"Tests\"\nmethods = \"DP tables\"\n\
         period_from = \"{today}\"\nperiod_to = \"{}\"\nchannel = \"statistics\"\nsecurity_measures = \"Test site\"\n\
         funding = \"None\"\nnot_for_advertising = true\n{table_toml}",
        today + Duration::days(365)
    );
    let conditions = format!(
        "channel = \"statistics\"\nexpires_on = \"{}\"\nmax_downloads = 0\nrecipients = [\"rika\"]\n\
         dp_budget = {{ epsilon = {epsilon:?}, delta = {delta:?} }}\n{statistics_toml}{table_toml}",
        today + Duration::days(180)
    );
    let service = PolicyService::start(home, db);
    let id = approve(
        &service,
        home,
        db,
        &researcher,
        (&chair, members.as_slice()),
        &form,
        &conditions,
    );
    (researcher, chair, id)
}

/// Files `form` (an application form as TOML) for `applicant`; the chair assigns `members`, who all vote to approve,
/// and decides with `conditions` (TOML). Returns the approved application's id.
pub fn approve(
    service: &PolicyService,
    home: &Path,
    db: &[(&str, &str)],
    applicant: &Person,
    (chair, members): (&Person, &[Person]),
    form: &str,
    conditions: &str,
) -> String {
    let written = |text: &str| {
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile_in(home)
            .expect("a file for the form");
        std::fs::write(file.path(), text).expect("write the form");
        file
    };
    let form = written(form);
    let app = service.run(
        home,
        db,
        applicant,
        &["apply", "file", "--form", form.path().to_str().expect("utf-8 path")],
    );
    let id = app["id"].as_str().expect("id").to_owned();
    let names: Vec<&str> = members.iter().map(|m| m.username.as_str()).collect();
    service.run(
        home,
        db,
        chair,
        &["committee", "assign", &id, "--members", &names.join(",")],
    );
    for m in members {
        service.run(home, db, m, &["committee", "vote", &id, "--approve", "--comment", "ok"]);
    }
    let conditions = written(conditions);
    let decided = service.run(
        home,
        db,
        chair,
        &[
            "committee",
            "decide",
            &id,
            "--conditions",
            conditions.path().to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(decided["status"], "approved", "{decided}");
    id
}

/// Makes sure `home` has a logged-in operator whose session is saved where the CLI finds it by default
/// (`$TOKUMEI_HOME/session.token`), so operator commands (`tokumei sql`) run as they would after
/// `tokumei user login`. Bootstraps the operator on first use.
pub fn ensure_operator_session(home: &Path) {
    let file = home.join("session.token");
    if file.exists() {
        return;
    }
    let op = operator(home, &[]);
    std::fs::write(&file, &op.session).expect("save the operator's session");
}

/// The people who approve applications: the first operator, a chair and three voting members (each in an
/// organisation of their own, so none has a conflict of interest with an applicant from a university).
#[derive(Debug, Clone)]
pub struct Committee {
    /// The first operator (granted by the two administrators, who invite everyone).
    pub op: Person,
    /// The committee chair (assigns, decides).
    pub chair: Person,
    /// The voting members.
    pub members: Vec<Person>,
}

/// Bootstraps the administrators and the operator, and invites the committee of a fresh installation.
pub fn committee(home: &Path, db: &[(&str, &str)]) -> Committee {
    let op = operator(home, db);
    let service = PolicyService::start(home, db);
    let chair = invite_with(
        &service,
        home,
        db,
        "chika",
        "univ-c",
        "committee_chair,committee_member",
    );
    let members = [("mei", "univ-m"), ("kenta", "hosp-k"), ("sora", "law-s")]
        .iter()
        .map(|(u, o)| invite_with(&service, home, db, u, o, "committee_member"))
        .collect();
    Committee { op, chair, members }
}

/// What a file-channel approval allows.
#[derive(Debug, Clone)]
pub struct FileApproval<'a> {
    /// Usernames who may receive the files.
    pub recipients: &'a [&'a str],
    /// Last day of use (may be in the past, to test expiry: nothing refuses a decision that is already
    /// expired, and every use after it is refused with APPROVAL_EXPIRED).
    pub expires_on: chrono::NaiveDate,
    /// Downloads allowed in total.
    pub max_downloads: u32,
    /// `(table, [columns])` applied for and approved.
    pub tables: &'a [(&'a str, &'a [&'a str])],
    /// Filed as a change request (変更申出) to this approved application.
    pub amends: Option<&'a str>,
}

/// A file-channel application filed by `applicant` and approved by `committee` with a k-anonymity privacy
/// model (k = 5, 5 % suppression) and the expiry, download limit and recipients of `approval`. Returns the
/// application id.
pub fn approved_file_application(
    home: &Path,
    db: &[(&str, &str)],
    committee: &Committee,
    applicant: &Person,
    approval: &FileApproval<'_>,
) -> String {
    static FORMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FORMS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let today = Utc::now().date_naive();
    let period_from = today.min(approval.expires_on);
    let period_to = (today + Duration::days(365)).max(approval.expires_on);
    let mut table_toml = String::new();
    for (t, cols) in approval.tables {
        let cols: Vec<String> = cols.iter().map(|c| format!("{c:?}")).collect();
        table_toml.push_str(&format!(
            "\n[[tables]]\ntable = {t:?}\ncolumns = [{}]\n",
            cols.join(", ")
        ));
    }
    let recipients: Vec<String> = approval.recipients.iter().map(|r| format!("{r:?}")).collect();
    let recipients = recipients.join(", ");
    let form = home.join(format!("file-application-{n}.toml"));
    std::fs::write(
        &form,
        format!(
            "title = \"Test file release {n}\"\npurpose = \"Testing\"\npublic_interest = \"Tests\"\n\
             methods = \"Regression\"\nperiod_from = \"{period_from}\"\nperiod_to = \"{period_to}\"\n\
             channel = \"file\"\nsecurity_measures = \"Test site\"\nfunding = \"None\"\n\
             recipients = [{recipients}]\nnot_for_advertising = true\n{table_toml}"
        ),
    )
    .expect("write form");
    let mut apply = vec!["apply", "file", "--form", form.to_str().expect("utf-8 path")];
    if let Some(parent) = approval.amends {
        apply.extend(["--amends", parent]);
    }
    let service = PolicyService::start(home, db);
    let app = service.run(home, db, applicant, &apply);
    let id = app["id"].as_str().expect("id").to_owned();
    let names: Vec<&str> = committee.members.iter().map(|m| m.username.as_str()).collect();
    service.run(
        home,
        db,
        &committee.chair,
        &["committee", "assign", &id, "--members", &names.join(",")],
    );
    for m in &committee.members {
        service.run(home, db, m, &["committee", "vote", &id, "--approve", "--comment", "ok"]);
    }
    let conditions = home.join(format!("file-conditions-{n}.toml"));
    std::fs::write(
        &conditions,
        // m = 1: these tests are about building, delivering and tracing; with m = 2 on this small cohort lab dates
        // are generalised to a year or more and the fingerprint's anchors carry too few positions to trace a
        // partial leak reliably (docs/release.md, "Limits"). The demo test builds with m = 2.
        format!(
            "channel = \"file\"\nexpires_on = \"{}\"\nmax_downloads = {}\nrecipients = [{recipients}]\n\
             privacy = {{ k = 5, m = 1, max_suppression = 0.05 }}\n{table_toml}",
            approval.expires_on, approval.max_downloads
        ),
    )
    .expect("write conditions");
    let decided = service.run(
        home,
        db,
        &committee.chair,
        &[
            "committee",
            "decide",
            &id,
            "--conditions",
            conditions.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(decided["status"], "approved", "{decided}");
    id
}

/// Every entry of the audit ledger of the policy database under `home`, in sequence order (what an auditor
/// exports), read through the policy service's own API.
pub async fn ledger(home: &Path) -> Vec<tokumei_policy::audit_ledger::AuditEntry> {
    let policy = tokumei_policy::Policy::open(
        &tokumei_policy::default_url(home),
        &tokumei_policy::service_key::default_key_path(home),
        tokumei_policy::PolicyConfig::default(),
    )
    .await
    .expect("open the policy service");
    policy.audit_entries().await.expect("ledger entries")
}
