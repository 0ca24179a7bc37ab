//! The remote analysis environment as its users and an insider would try it, with the policy service and the core
//! running: a workspace of pseudonymised data opens only for a certified recipient; queries and analyses are
//! answered by the core and sealed to the researcher; the workspace reaches nothing but its own tables; a
//! disclosive output is refused by the automatic checks and cannot be approved; a fixed one is approved by an
//! output checker of another organisation (a checker of the researcher's own is refused), released signed and
//! fetched by the recipient alone; every act is on the ledger by shape and hash, and the usage report and the
//! monitoring's alerts reach the operators.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use chrono::{Duration, Utc};
use common::BoundedOutput;
use common::core_orders::CoreWithOrders;
use common::people::{Committee, Person, PolicyService};

/// `tokumei --json ARGS` as `person`, a client of the service in `env`, from `desk` (an empty home).
fn client(desk: &Path, env: &[(String, String)], person: &Person, args: &[&str]) -> Output {
    Command::new(common::tokumei_bin())
        .env("TOKUMEI_HOME", desk)
        .env_remove("TOKUMEI_POLICY_DB")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("TOKUMEI_SESSION", &person.session)
        .arg("--json")
        .args(args)
        .bounded_output()
        .unwrap()
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn refused(out: &Output, code: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "admitted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(code), "expected {code}: {stderr}");
    stderr
}

/// An on-platform application of `applicant`, approved with pseudonymised detail for `recipients`.
fn approved_on_platform(home: &Path, committee: &Committee, applicant: &Person, recipients: &[&str]) -> String {
    let today = Utc::now().date_naive();
    let tables =
        "\n[[tables]]\ntable = \"patients\"\ncolumns = [\"linkage_key\", \"sex\", \"birth_date\", \"prefecture\"]\n";
    let recipients: Vec<String> = recipients.iter().map(|r| format!("{r:?}")).collect();
    let recipients = recipients.join(", ");
    let form = format!(
        "title = \"Workspace study\"\npurpose = \"Testing\"\npublic_interest = \"Tests\"\n\
         methods = \"Regression\"\nperiod_from = \"{today}\"\nperiod_to = \"{}\"\n\
         channel = \"on_platform\"\nsecurity_measures = \"Platform workspace\"\nfunding = \"None\"\n\
         recipients = [{recipients}]\nnot_for_advertising = true\n{tables}",
        today + Duration::days(365)
    );
    let conditions = format!(
        "channel = \"on_platform\"\nexpires_on = \"{}\"\nmax_downloads = 0\nrecipients = [{recipients}]\n\
         pseudonymised = true\nprivacy = {{ k = 5, m = 1, max_suppression = 0.05 }}\n{tables}",
        today + Duration::days(180)
    );
    let service = PolicyService::start(home, &[]);
    let id = common::people::approve(
        &service,
        home,
        &[],
        applicant,
        (&committee.chair, committee.members.as_slice()),
        &form,
        &conditions,
    );
    let decided = service.run(home, &[], &committee.chair, &["apply", "show", &id]);
    assert_eq!(decided["conditions"]["pseudonymised"], true, "{decided}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_answers_its_certified_recipient_and_only_a_checked_output_leaves() {
    let home = common::Home::new();
    let h = home.path();
    {
        let gw = home.start();
        let mut client = gw.client(&home, common::HOSPITAL_A).await;
        let records = tokumei_ingest::synth::Synth::new(7).records(common::HOSPITAL_A, 0, 300);
        let batches = vec![tokumei_proto::ingest::v1::RecordBatch {
            batch_id: "b0".into(),
            records,
        }];
        tokumei_ingest::client::push(&mut client, batches).await.expect("push");
    }
    common::drain_core(&home);
    let committee = common::people::committee(h, &[]);
    let rika = common::people::invite(h, &[], "rika", "univ-a", "researcher");
    let yui = common::people::invite(h, &[], "yui", "univ-y", "researcher");
    let oto = common::people::invite(h, &[], "oto", "trc-o", "output_checker");
    let aki = common::people::invite(h, &[], "aki", "univ-a", "output_checker");
    let id = approved_on_platform(h, &committee, &rika, &["rika"]);
    let core = CoreWithOrders::start(h, &[]);
    let env = core.client_env(h);
    let desk = tempfile::tempdir().unwrap();
    let run = |who: &Person, args: &[&str]| client(desk.path(), &env, who, args);
    let query = |who: &Person, sql: &str| run(who, &["analysis", "query", "--application", &id, sql]);
    let decide = |who: &Person, output: &str, decision: &str, comment: &str| {
        run(
            who,
            &[
                "analysis",
                "decide",
                "--id",
                output,
                "--decision",
                decision,
                "--comment",
                comment,
            ],
        )
    };
    let crosstab = |sql: &str, rows: &str, columns: Option<&str>| {
        let mut args = vec![
            "analysis",
            "run",
            "--application",
            id.as_str(),
            "--kind",
            "crosstab",
            "--sql",
            sql,
        ];
        args.extend(["--rows", rows]);
        if let Some(c) = columns {
            args.extend(["--columns", c]);
        }
        ok(&run(&rika, &args))
    };

    // Pseudonymised data: not before the chair registers rika as a certified user.
    refused(&query(&rika, "SELECT count(*) AS n FROM patients"), "NOT_CERTIFIED");
    let expires = (Utc::now().date_naive() + Duration::days(365)).to_string();
    let certify = |who: &Person| {
        run(
            who,
            &[
                "analysis",
                "certify",
                "--username",
                "rika",
                "--reference",
                "MHLW-2026-0042",
                "--expires-on",
                &expires,
            ],
        )
    };
    refused(&certify(&rika), "ROLE_NOT_PERMITTED");
    ok(&certify(&committee.chair));
    let counted = ok(&query(&rika, "SELECT count(*) AS n FROM patients"));
    let n = counted["result"]["rows"][0][0].as_f64().expect("a count");
    assert!(n > 250.0, "{counted}");
    assert_eq!(
        counted["report"]["rows_scanned"],
        serde_json::json!(n as u64),
        "{counted}"
    );
    assert!(counted["report"]["sealed"].is_string(), "the rows travel sealed");
    // Workspace pseudonyms, never the store's linkage keys.
    let rows = ok(&query(&rika, "SELECT patient FROM patients LIMIT 5"));
    let patient = rows["result"]["rows"][0][0].as_str().expect("a pseudonym").to_owned();
    assert_eq!(patient.len(), 32, "{patient}");
    assert!(rows["report"]["alerts"].to_string().contains("FEW_PATIENTS"), "{rows}");

    // A researcher who is not a recipient; a workspace that reaches nothing but its tables.
    refused(&query(&yui, "SELECT count(*) FROM patients"), "NOT_RECIPIENT");
    for (sql, code) in [
        ("SELECT * FROM opt_outs", "SQL_ERROR"),
        ("SELECT linkage_key FROM patients", "SQL_ERROR"),
        ("SELECT * FROM information_schema.tables", "SQL_ERROR"),
        (
            "COPY (SELECT * FROM patients) TO '/tmp/tokumei-leak.csv'",
            "SQL_REFUSED",
        ),
        (
            "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
            "SQL_REFUSED",
        ),
    ] {
        let stderr = refused(&query(&rika, sql), code);
        assert!(!stderr.contains("passwd") && !stderr.contains("opt_outs"), "{stderr}");
    }
    assert!(!Path::new("/tmp/tokumei-leak.csv").exists());

    // A logistic regression, answered and kept in the workspace.
    let sql = "SELECT patient, CASE WHEN sex = 'F' THEN 1.0 ELSE 0.0 END AS first_sex, \
               CAST(substr(birth_date, 1, 4) AS DOUBLE) AS birth_year FROM patients";
    let fit = ok(&run(
        &rika,
        &[
            "analysis",
            "run",
            "--application",
            &id,
            "--kind",
            "logistic",
            "--sql",
            sql,
            "--outcome",
            "first_sex",
            "--covariates",
            "birth_year",
        ],
    ));
    assert_eq!(fit["result"]["coefficients"].as_array().map(Vec::len), Some(2), "{fit}");
    // One patient's birth date attached to every other patient's label: refused before it runs.
    let relabelled = run(
        &rika,
        &[
            "analysis",
            "run",
            "--application",
            &id,
            "--kind",
            "describe",
            "--value",
            "birth_year",
            "--sql",
            &format!(
                "SELECT q.patient, CAST(substr(p.birth_date, 1, 4) AS DOUBLE) AS birth_year FROM patients p \
                 CROSS JOIN patients q WHERE p.patient = '{patient}'"
            ),
        ],
    );
    let stderr = refused(&relabelled, "FRAME_LINEAGE");
    assert!(!stderr.contains(&patient), "{stderr}");

    // A cross-tabulation by prefecture: small cells, refused by the checks; the checker cannot approve it.
    let by_prefecture = crosstab(
        "SELECT patient, sex, prefecture FROM patients",
        "prefecture",
        Some("sex"),
    );
    assert_eq!(by_prefecture["report"]["verdict"], "refused", "{by_prefecture}");
    let result = by_prefecture["report"]["result"].as_u64().unwrap().to_string();
    let request = |result: &str| {
        ok(&run(
            &rika,
            &["analysis", "request-output", "--application", &id, "--result", result],
        ))
    };
    let asked = request(&result);
    let output = asked["output"].as_u64().unwrap().to_string();
    let listed = ok(&run(&oto, &["analysis", "outputs"]));
    assert!(listed.to_string().contains(&format!("\"id\":{output}")), "{listed}");
    assert!(listed[0]["content"].is_null(), "a list carries no content: {listed}");
    let seen = ok(&run(&oto, &["analysis", "output", "--id", &output]));
    assert!(
        seen["content"].is_null(),
        "a refused output's values left the workspace: {seen}"
    );
    assert!(seen["checks"].to_string().contains("THRESHOLD"), "{seen}");
    // The checker reads how the result was made: the analysis and its query.
    assert_eq!(
        seen["spec"]["sql"], "SELECT patient, sex, prefecture FROM patients",
        "{seen}"
    );
    assert_eq!(seen["spec"]["analysis"], "crosstab", "{seen}");
    refused(&decide(&oto, &output, "approve", "fine"), "CHECKS_REFUSED");
    let changed = ok(&decide(&oto, &output, "changes", "group prefectures into regions"));
    assert_eq!(changed["state"], "changes_requested", "{changed}");
    // The same result is not put to another checker.
    refused(
        &run(
            &rika,
            &["analysis", "request-output", "--application", &id, "--result", &result],
        ),
        "ALREADY_REQUESTED",
    );

    // Fixed: by sex alone. The researcher's own organisation's checker is refused; another approves.
    let by_sex = crosstab("SELECT patient, sex FROM patients", "sex", None);
    assert_ne!(by_sex["report"]["verdict"], "refused", "{by_sex}");
    let fixed = request(&by_sex["report"]["result"].as_u64().unwrap().to_string());
    let fixed = fixed["output"].as_u64().unwrap().to_string();
    refused(&decide(&aki, &fixed, "approve", "ok"), "CONFLICT_OF_INTEREST");
    refused(&decide(&rika, &fixed, "approve", "ok"), "ROLE_NOT_PERMITTED");
    ok(&decide(&oto, &fixed, "approve", "safe margins"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = ok(&run(&rika, &["analysis", "output", "--id", &fixed]));
        if o["state"] == "released" {
            break;
        }
        assert!(o["state"] == "releasing", "{o}");
        assert!(std::time::Instant::now() < deadline, "never released: {o}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let outputs = tempfile::tempdir().unwrap();
    let file = outputs.path().join(format!("output-{fixed}.json"));
    let fetched = ok(&run(
        &rika,
        &["analysis", "fetch", "--id", &fixed, "--out", file.to_str().unwrap()],
    ));
    assert!(fetched["sha256"].is_string(), "{fetched}");
    let signed: tokumei_policy::analysis::SignedOutput =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let key = tokumei_policy::service_key::ServicePublicKey::from_hex(&signed.public_key).unwrap();
    assert!(signed.verify(&key));
    let mut forged = signed.clone();
    forged.document = forged.document.replacen("\"counts\":[[", "\"counts\":[[1", 1);
    assert!(!forged.verify(&key), "an edited output still verifies");
    std::fs::remove_file(&file).unwrap();
    refused(
        &run(&yui, &["analysis", "fetch", "--id", &fixed, "--out", "/dev/null"]),
        "NOT_RECIPIENT",
    );
    // Once released, a differencing attempt against it is refused: the whole cohort minus nobody, by sex, is fine,
    // but the cohort without the first few patients differs from it by them.
    let differencing = crosstab(
        &format!("SELECT patient, sex FROM patients WHERE patient <> '{patient}'"),
        "sex",
        None,
    );
    assert_eq!(differencing["report"]["verdict"], "refused", "{differencing}");
    assert!(
        differencing["report"].to_string().contains("DIFFERENCING"),
        "{differencing}"
    );

    // Operators see the usage and the alerts; a researcher does not.
    let usage = ok(&run(&committee.op, &["analysis", "usage", "--application", &id]));
    let mine = usage["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["user"] == "rika")
        .expect("rika's usage");
    assert!(mine["usage"]["queries"].as_u64().unwrap() >= 3, "{usage}");
    assert!(mine["usage"]["analyses"].as_u64().unwrap() >= 4, "{usage}");
    assert!(mine["usage"]["rows_scanned"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["alerts"].to_string().contains("FEW_PATIENTS"), "{usage}");
    refused(&run(&rika, &["analysis", "usage"]), "ROLE_NOT_PERMITTED");

    // The committee revokes the approval: the workspace closes, and what was released is no longer handed out.
    let revoked = ok(&run(
        &committee.chair,
        &["committee", "revoke", &id, "--reason", "breach found"],
    ));
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    refused(&query(&rika, "SELECT count(*) AS n FROM patients"), "APPROVAL_REVOKED");
    refused(&run(&rika, &["analysis", "output", "--id", &fixed]), "APPROVAL_REVOKED");
    refused(
        &run(
            &rika,
            &["analysis", "fetch", "--id", &fixed, "--out", file.to_str().unwrap()],
        ),
        "APPROVAL_REVOKED",
    );
    assert!(!file.exists());

    // The ledger: each query by shape and hash, never its literal; the release and its provision.
    let entries = common::people::ledger(h).await;
    let analysis: Vec<_> = entries.iter().filter(|e| e.action == "core.analysis").collect();
    assert!(analysis.len() >= 10, "{}", analysis.len());
    for e in &analysis {
        assert!(
            !e.details.contains(&patient),
            "a pseudonym on the ledger: {}",
            e.details
        );
    }
    assert!(
        analysis
            .iter()
            .any(|e| e.details.contains("query_sha256") && e.details.contains("rows_scanned"))
    );
    for action in [
        "analysis.certify_user",
        "analysis.output_requested",
        "analysis.output_decided",
        "analysis.output_released",
        "provision",
    ] {
        assert!(
            entries.iter().any(|e| e.action == action),
            "{action} missing from the ledger"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e.actor == "aki" && e.reason.as_deref() == Some("CONFLICT_OF_INTEREST")),
        "the conflicted checker's refusal is not on the ledger"
    );
    drop(core);
}

/// Every `AnalysisService` RPC, called without a session and as each human role: the role is asked before anything
/// is looked up (a refused role learns nothing about which outputs exist), and every call is on the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_analysis_rpc_asks_its_role_first_and_is_on_the_ledger() {
    use common::policy_server::{Server, authed, reason};
    use tokumei_proto::analysis::v1 as pb;
    use tokumei_proto::analysis::v1::analysis_service_client::AnalysisServiceClient;
    use tonic::Code;

    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let op = common::people::operator(home, &[]);
    let (admin, _) = common::people::administrators(home);
    let cast: Vec<(&str, Person)> = vec![
        (
            "researcher",
            common::people::invite(home, &[], "rika", "univ-a", "researcher"),
        ),
        (
            "committee_member",
            common::people::invite(home, &[], "mei", "univ-m", "committee_member"),
        ),
        (
            "committee_chair",
            common::people::invite(home, &[], "chika", "univ-c", "committee_chair"),
        ),
        ("operator", op),
        (
            "auditor",
            common::people::invite(home, &[], "audra", "audit-o", "auditor"),
        ),
        ("administrator", admin),
        (
            "output_checker",
            common::people::invite(home, &[], "oto", "trc-o", "output_checker"),
        ),
    ];
    let server = Server::start(home);
    let mut c = AnalysisServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let expected: [(&str, &[&str]); 7] = [
        ("Submit", &["researcher"]),
        (
            "ListOutputs",
            &[
                "researcher",
                "committee_member",
                "committee_chair",
                "operator",
                "auditor",
                "administrator",
                "output_checker",
            ],
        ),
        ("GetOutput", &["researcher", "output_checker"]),
        ("DecideOutput", &["output_checker"]),
        ("FetchOutput", &["researcher"]),
        ("CertifyUser", &["committee_chair"]),
        ("Usage", &["operator", "auditor"]),
    ];
    let mut calls = 0;
    for (method, admitted) in expected {
        let callers: Vec<(&str, &str)> = std::iter::once(("nobody", "not-a-session"))
            .chain(cast.iter().map(|(role, p)| (*role, p.session.as_str())))
            .collect();
        for (role, token) in callers {
            calls += 1;
            let status = match method {
                "Submit" => c
                    .submit(authed(
                        pb::WorkspaceRequest {
                            application_id: "A-2026-9999".into(),
                            request_json: r#"{"request": "upload", "name": "codes", "csv": "code\n1\n"}"#.into(),
                            recipient_key: String::new(),
                        },
                        token,
                    ))
                    .await
                    .err(),
                "ListOutputs" => c.list_outputs(authed(pb::OutputFilter::default(), token)).await.err(),
                "GetOutput" => c.get_output(authed(pb::OutputRef { id: 9 }, token)).await.err(),
                "DecideOutput" => c
                    .decide_output(authed(
                        pb::OutputDecision {
                            id: 9,
                            decision: "refuse".into(),
                            comment: "no".into(),
                        },
                        token,
                    ))
                    .await
                    .err(),
                "FetchOutput" => c.fetch_output(authed(pb::OutputRef { id: 9 }, token)).await.err(),
                "CertifyUser" => c
                    .certify_user(authed(
                        pb::Certification {
                            username: "rika".into(),
                            reference: "MHLW-1".into(),
                            expires_on: "2099-01-01".into(),
                        },
                        token,
                    ))
                    .await
                    .err(),
                _ => c.usage(authed(pb::OutputFilter::default(), token)).await.err(),
            };
            if let Some(s) = &status {
                assert!(
                    !matches!(s.code(), Code::Internal | Code::Unknown | Code::Unavailable),
                    "{method} as {role}: a server fault {s:?}"
                );
            }
            let why = status.as_ref().map(reason);
            if role == "nobody" {
                assert_eq!(why.as_deref(), Some("SESSION_INVALID"), "{method} without a session");
                continue;
            }
            let refused_by_role = why.as_deref() == Some("ROLE_NOT_PERMITTED");
            assert_eq!(
                !refused_by_role,
                admitted.contains(&role),
                "{method} as {role}: {why:?}"
            );
            // A role admitted to look learns that output 9 does not exist; no other does.
            if why.as_deref() == Some("NOT_FOUND") {
                assert!(admitted.contains(&role), "{method} as {role} learnt what exists");
            }
        }
    }
    let entries = common::people::ledger(home).await;
    let recorded = entries
        .iter()
        .filter(|e| e.resource == "analysis service" && e.action.starts_with("rpc."))
        .count();
    assert_eq!(recorded, calls, "one rpc entry per call");
}
