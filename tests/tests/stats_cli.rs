//! `tokumei stats` and `tokumei budget` as a researcher and an operator use them: DP tables with
//! public or selected keys, the budget ledger refusing before any noise, and the small-cell rule
//! checked by an independent recount of the published file.

mod common;

use common::BoundedOutput;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use common::adult;
use common::core_orders::CoreWithOrders;

/// `tokumei ARGS` (a `stats --input` table) as a client of a policy service started for it on the home's database
/// (`db`: the environment naming another). The command runs from an empty desk of its own — no database, no key,
/// no saved session: it holds the file, the CA and the session it is given — and leaves the desk empty.
fn file_stats(home: &Path, db: &[(&str, &str)], args: &[&str]) -> Output {
    let service = common::people::PolicyService::start(home, db);
    let desk = tempfile::tempdir().unwrap();
    let mut command = Command::new(common::tokumei_bin());
    command.env("TOKUMEI_HOME", desk.path()).env_remove("TOKUMEI_POLICY_DB");
    for (k, v) in service.anonymous_env(&[]) {
        command.env(k, v);
    }
    let out = command.args(args).bounded_output().unwrap();
    assert!(
        common::files_under(desk.path()).is_empty(),
        "the command wrote into its desk"
    );
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// Adult rows as (column → value) maps, read independently of the engine.
fn adult_rows() -> Vec<BTreeMap<String, String>> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_path(adult("adult.csv"))
        .unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

/// The audit ledger of today as an auditor (invited by the administrators) exports it: the bundle's JSON text.
fn exported_ledger(h: &Path, dir: &Path) -> String {
    let auditor = common::people::invite(h, &[], "audra", "audit-o", "auditor");
    let bundle = dir.join("bundle.json");
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today.to_string(), (today + chrono::Duration::days(2)).to_string());
    let out = bundle.to_str().unwrap();
    common::people::run_client(
        h,
        &[],
        &auditor,
        &["audit", "export", "--from", &from, "--to", &to, "--out", out],
    );
    std::fs::read_to_string(&bundle).unwrap()
}

/// The reason codes of the denied statistics requests in an exported audit bundle, in ledger order.
fn denied_statistics(bundle: &serde_json::Value) -> Vec<String> {
    bundle["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "run_statistics" && e["outcome"] == "denied")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `budget show --project` asked of the policy service, started on the database `db` names (the environment; empty:
/// the home's), as the researcher whose session `args` gives (`--session TOKEN`).
fn budget_json(home: &Path, db: &[(&str, &str)], args: &[&str], project: &str) -> serde_json::Value {
    let session = args
        .iter()
        .position(|a| *a == "--session")
        .and_then(|i| args.get(i + 1))
        .copied();
    let service = common::people::PolicyService::start(home, db);
    let mut client_env = service.anonymous_env(db);
    client_env.push(("TOKUMEI_SESSION", session.expect("a session")));
    common::people::run_json(home, &["budget", "show", "--project", project], &client_env, None)
}

fn dp_story(db_env: &[(&str, &str)], unapproved: &str) {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = tempfile::tempdir().unwrap();
    let data = adult("adult.csv");
    let age_h = format!("age={}:2", adult("adult_hierarchy_age.csv"));

    let keys = dir.path().join("sex.csv");
    std::fs::write(&keys, "sex\nMale\nFemale\nOther\n").unwrap();
    let keys_s = keys.to_str().unwrap();
    // The committee approves a statistics application on the Adult table with ε=1, δ=1e-5; the
    // researcher's session goes with every command below (appended to `db`).
    let columns: &[&str] = &["age", "sex", "native-country", "education", "race"];
    let (researcher, id) = common::people::approved_statistics(h, db_env, 1.0, 1e-5, &[("adult", columns)]);
    let project = id.as_str();
    let with_session: Vec<&str> = vec!["--session", researcher.session.as_str()];
    let db = &with_session[..];

    // Outside the approval: refused (with the condition's code) before reading anything.
    let args = vec![
        "stats",
        "--input",
        &data,
        "--delimiter",
        ";",
        "--group-by",
        "sex",
        "--public-keys",
        keys_s,
        "--measure",
        "count",
    ];
    let out_unknown = dir.path().join("x.csv");
    let out_unknown_s = out_unknown.to_str().unwrap();
    for (other_project, code) in [(unapproved, "NOT_FOUND"), (project, "COLUMN_NOT_APPROVED")] {
        let mut a = args.clone();
        if code == "COLUMN_NOT_APPROVED" {
            a.extend(["--subject", "workclass"]);
        }
        a.extend([
            "--epsilon",
            "0.1",
            "--project",
            other_project,
            "--output",
            out_unknown_s,
        ]);
        a.extend_from_slice(db);
        let out = file_stats(h, db_env, &a);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out_unknown.exists());
    }
    // Without a session nothing runs at all.
    let mut a = args.clone();
    a.extend(["--epsilon", "0.1", "--project", project, "--output", out_unknown_s]);
    let out = file_stats(h, db_env, &a);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SESSION_INVALID"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 1. Counts by 10-year age band: the hierarchy level declares the keys, all of them appear.
    let counts = dir.path().join("age.csv");
    let report = dir.path().join("age.json");
    let mut a = vec![
        "stats",
        "--input",
        &data,
        "--delimiter",
        ";",
        "--group-by",
        "age",
        "--hierarchy",
        &age_h,
        "--measure",
        "count",
        "--epsilon",
        "0.3",
        "--project",
        project,
        "--output",
        counts.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    a.extend_from_slice(db);
    ok(&file_stats(h, db_env, &a));
    let (header, rows) = read_csv(&counts);
    assert_eq!(header[..2], ["age".to_string(), "count".to_string()]);
    let bands: BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    let hierarchy = std::fs::read_to_string(adult("adult_hierarchy_age.csv")).unwrap();
    let declared: BTreeSet<String> = hierarchy
        .lines()
        .map(|l| l.split(';').nth(2).unwrap().to_string())
        .collect();
    assert_eq!(bands, declared, "every band of the level appears, and nothing else");
    // Noisy but close: the band labelled 30-39 (ARX's hierarchy puts ages 31..=40 in it) has thousands
    // of people; scale 1/0.3, so |noise| ≥ 30 has probability e^-9 ≈ 1e-4.
    let band_of: BTreeMap<String, String> = hierarchy
        .lines()
        .map(|l| {
            let mut f = l.split(';');
            (f.next().unwrap().to_string(), f.nth(1).unwrap().to_string())
        })
        .collect();
    let truth = adult_rows().iter().filter(|r| band_of[&r["age"]] == "30-39").count() as f64;
    let noisy: f64 = rows.iter().find(|r| r[0] == "30-39").unwrap()[1].parse().unwrap();
    assert!((noisy - truth).abs() < 30.0, "{noisy} vs {truth}");
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(rep["plan"]["mechanism"], "laplace");
    assert!((rep["plan"]["components"][0]["scale"].as_f64().unwrap() - 1.0 / 0.3).abs() < 1e-6);
    assert!(rep["plan"]["components"][0]["expected_abs_error"].as_f64().unwrap() > 3.0);
    assert!((rep["remaining_epsilon"].as_f64().unwrap() - 0.7).abs() < 1e-9);
    assert!(rep["protection"].as_str().unwrap().starts_with("dp:laplace"));

    // 2. Bounded mean of age by sex with a declared key list (a key absent from the data appears too).
    let means = dir.path().join("mean.csv");
    let mut a = vec![
        "stats",
        "--input",
        &data,
        "--delimiter",
        ";",
        "--group-by",
        "sex",
        "--public-keys",
        keys.to_str().unwrap(),
        "--measure",
        "mean:age:0:100",
        "--epsilon",
        "0.4",
        "--project",
        project,
        "--output",
        means.to_str().unwrap(),
    ];
    a.extend_from_slice(db);
    ok(&file_stats(h, db_env, &a));
    let (header, rows) = read_csv(&means);
    assert_eq!(
        header[..3],
        ["sex".to_string(), "mean".to_string(), "noisy_count".to_string()]
    );
    let got: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(got, BTreeSet::from(["Female", "Male", "Other"]));
    let adult = adult_rows();
    let male: Vec<f64> = adult
        .iter()
        .filter(|r| r["sex"] == "Male")
        .map(|r| r["age"].parse().unwrap())
        .collect();
    let true_mean = male.iter().sum::<f64>() / male.len() as f64;
    let noisy: f64 = rows.iter().find(|r| r[0] == "Male").unwrap()[1].parse().unwrap();
    assert!((noisy - true_mean).abs() < 0.5, "{noisy} vs {true_mean}");

    // 3. Over budget: refused before any noise, nothing written, the ledger unchanged — and it
    //    stays refused in the next process (each command is a fresh process on the same database).
    let before = budget_json(h, db_env, db, project);
    assert_eq!(before["entries"].as_array().unwrap().len(), 2);
    for _ in 0..2 {
        let refused = dir.path().join("refused.csv");
        let mut a = args.clone();
        a.extend([
            "--epsilon",
            "0.5",
            "--project",
            project,
            "--output",
            refused.to_str().unwrap(),
        ]);
        a.extend_from_slice(db);
        let out = file_stats(h, db_env, &a);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("BUDGET_EXCEEDED") && err.contains("remaining: ε=0.3"),
            "{err}"
        );
        assert!(!refused.exists());
        assert_eq!(budget_json(h, db_env, db, project)["entries"], before["entries"]);
    }
    // A dry run shows the cost and the error without spending.
    let mut a = args.clone();
    a.extend([
        "--epsilon",
        "0.5",
        "--dry-run",
        "--project",
        project,
        "--output",
        "unused.csv",
        "--json",
    ]);
    a.extend_from_slice(db);
    let dry: serde_json::Value = serde_json::from_str(&ok(&file_stats(h, db_env, &a))).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert!(dry["plan"]["components"][0]["expected_abs_error"].as_f64().unwrap() > 1.0);
    assert_eq!(budget_json(h, db_env, db, project)["entries"], before["entries"]);

    // 4. zCDP with DP partition selection: rare countries never appear.
    let countries = dir.path().join("countries.csv");
    a = vec![
        "stats",
        "--input",
        &data,
        "--delimiter",
        ";",
        "--group-by",
        "native-country",
        "--measure",
        "count",
        "--rho",
        "0.002",
        "--delta",
        "1e-6",
        "--project",
        project,
        "--output",
        countries.to_str().unwrap(),
    ];
    a.extend_from_slice(db);
    ok(&file_stats(h, db_env, &a));
    let (_, rows) = read_csv(&countries);
    let released: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(released.contains("United-States"));
    assert!(
        !released.contains("Holand-Netherlands"),
        "a country with one person must not be released"
    );
    assert!(rows.iter().all(|r| r.last().unwrap().starts_with("dp:gaussian")));
    let after = budget_json(h, db_env, db, project);
    let entries = after["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries[2]["loss"]["rho"].as_f64().unwrap() > 0.0);
    assert!(entries[2]["loss"]["delta"].as_f64().unwrap() > 0.0);
    assert!(after["spent"]["epsilon"].as_f64().unwrap() <= 1.0);
    // The total the ledger states is the sum of its entries.
    for k in ["epsilon", "rho", "delta"] {
        let sum: f64 = entries.iter().map(|e| e["loss"][k].as_f64().unwrap()).sum();
        assert!(
            (after["total"][k].as_f64().unwrap() - sum).abs() <= 1e-15 * sum.max(1.0),
            "{k}"
        );
    }
}

#[test]
fn dp_tables_and_the_budget_ledger_on_sqlite() {
    dp_story(&[], "adult-study");
}

#[test]
fn dp_tables_and_the_budget_ledger_on_postgresql() {
    let Some(url) = common::test_server("TOKUMEI_TEST_PG_URL", "PostgreSQL") else {
        return;
    };
    let url = common::fresh_postgres_database(&url);
    dp_story(&[("TOKUMEI_POLICY_DB", &url)], "adult-study");
}

/// Independent check of a published 2-D table with margins: every published value equals a recount
/// of the input, every interior cell below the threshold is blank, and no blank cell is determined
/// by the linear relations of the published values (rank test by exact Gaussian elimination).
#[test]
fn small_cell_table_is_verified_by_an_independent_recount() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = tempfile::tempdir().unwrap();
    let columns: &[&str] = &["education", "race"];
    let (researcher, nb) = common::people::approved_statistics(h, &[], 1.0, 1e-5, &[("adult", columns)]);
    let out = dir.path().join("t.csv");
    let report = dir.path().join("t.json");
    let data = adult("adult.csv");
    ok(&file_stats(
        h,
        &[],
        &[
            "stats",
            "--input",
            &data,
            "--delimiter",
            ";",
            "--group-by",
            "education,race",
            "--measure",
            "count",
            "--min-cell",
            "10",
            "--project",
            &nb,
            "--output",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "--session",
            &researcher.session,
        ],
    ));
    let (header, rows) = read_csv(&out);
    assert_eq!(header, ["education", "race", "count", "status", "protection"]);
    // Recount.
    let mut truth: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in adult_rows() {
        let (e, ra) = (r["education"].clone(), r["race"].clone());
        for key in [
            (e.clone(), ra.clone()),
            (e.clone(), "(total)".into()),
            ("(total)".into(), ra.clone()),
            ("(total)".into(), "(total)".into()),
        ] {
            *truth.entry(key).or_default() += 1;
        }
    }
    let mut value: BTreeMap<(String, String), Option<i64>> = BTreeMap::new();
    for r in &rows {
        let key = (r[0].clone(), r[1].clone());
        let t = *truth.get(&key).unwrap_or(&0);
        let v = if r[2].is_empty() {
            None
        } else {
            Some(r[2].parse::<i64>().unwrap())
        };
        if let Some(v) = v {
            assert_eq!(v, t, "{key:?}");
        }
        if t > 0 && t < 10 {
            assert!(v.is_none(), "small cell {key:?} = {t} published");
            assert_eq!(r[3], "suppressed (small cell)");
        }
        value.insert(key, v);
    }
    let suppressed: Vec<(String, String)> = value
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    assert!(suppressed.len() >= 2, "Adult has small education × race cells");
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(rep["differentially_private"], false);
    assert!(rep["small_cell"]["complementary_suppressed"].as_u64().unwrap() >= 1);

    // Linear system over the unknown (suppressed) cells: for each line (a row with its total, a
    // column with its total), Σ cells − total = 0, with the published values moved to the right.
    let rows_l: BTreeSet<String> = value.keys().map(|k| k.0.clone()).collect();
    let cols_l: BTreeSet<String> = value.keys().map(|k| k.1.clone()).collect();
    let unknown: BTreeMap<(String, String), usize> =
        suppressed.iter().cloned().enumerate().map(|(i, k)| (k, i)).collect();
    let mut equations: Vec<Vec<i128>> = Vec::new();
    let line = |cells: Vec<((String, String), i128)>| -> Vec<i128> {
        let mut eq = vec![0i128; unknown.len()];
        for (k, coef) in cells {
            if let Some(&i) = unknown.get(&k) {
                eq[i] += coef;
            }
        }
        eq
    };
    for r in &rows_l {
        let mut cells: Vec<((String, String), i128)> = cols_l
            .iter()
            .filter(|c| c.as_str() != "(total)")
            .map(|c| ((r.clone(), c.clone()), 1))
            .collect();
        cells.push(((r.clone(), "(total)".into()), -1));
        equations.push(line(cells));
    }
    for c in &cols_l {
        let mut cells: Vec<((String, String), i128)> = rows_l
            .iter()
            .filter(|r| r.as_str() != "(total)")
            .map(|r| ((r.clone(), c.clone()), 1))
            .collect();
        cells.push((("(total)".into(), c.clone()), -1));
        equations.push(line(cells));
    }
    // A cell is determined iff its unit vector lies in the row space: rank(A) == rank(A + e_i).
    // Coefficients are 0/±1 and the systems small: partial pivoting in f64 with a tolerance is exact enough.
    let rank = |m: &Vec<Vec<i128>>| -> usize {
        let mut m: Vec<Vec<f64>> = m.iter().map(|r| r.iter().map(|&x| x as f64).collect()).collect();
        let (mut rank, cols) = (0, m.first().map_or(0, |r| r.len()));
        for col in 0..cols {
            let Some(p) = (rank..m.len()).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs())) else {
                break;
            };
            if m[p][col].abs() < 1e-9 {
                continue;
            }
            m.swap(rank, p);
            for i in 0..m.len() {
                if i != rank && m[i][col].abs() > 1e-12 {
                    let f = m[i][col] / m[rank][col];
                    let pivot = m[rank].clone();
                    for (x, p) in m[i].iter_mut().zip(&pivot) {
                        *x -= p * f;
                    }
                }
            }
            rank += 1;
        }
        rank
    };
    let base = rank(&equations);
    for (k, &i) in &unknown {
        let mut with = equations.clone();
        let mut e = vec![0i128; unknown.len()];
        e[i] = 1;
        with.push(e);
        assert_eq!(
            rank(&with),
            base + 1,
            "suppressed cell {k:?} is determined by the published totals"
        );
    }
}

/// The researcher's own approval cannot widen the platform's rules, and no error path echoes a value: a table
/// named like the store's patients file, with a marker value planted in a grouped and a measured column.
#[test]
fn platform_rules_refuse_the_bypasses_and_no_error_names_a_value() {
    const MARKER: &str = "ZZMARK4242";
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = tempfile::tempdir().unwrap();
    let columns: &[&str] = &["linkage_key", "sex", "prefecture", "weight"];
    let (researcher, id) = common::people::approved_statistics_with(
        h,
        &[],
        1.0,
        1e-5,
        &[("patients", columns)],
        "[statistics]\nsmall_cell_min = 10\n",
    );
    let data = dir.path().join("patients.csv");
    let mut csv = String::from("linkage_key,sex,prefecture,weight\n");
    for i in 0..200 {
        let prefecture = if i == 137 { MARKER } else { ["13", "14", "27"][i % 3] };
        let weight = if i == 59 {
            MARKER.to_owned()
        } else {
            format!("{}", 50 + i % 30)
        };
        csv.push_str(&format!("lk{i:04},{},{prefecture},{weight}\n", ["F", "M"][i % 2]));
    }
    std::fs::write(&data, csv).unwrap();
    let hierarchy = dir.path().join("pref.csv");
    std::fs::write(&hierarchy, "13;kanto;*\n14;kanto;*\n27;kinki;*\n").unwrap();
    let out = dir.path().join("out.csv");
    let report = dir.path().join("report.json");
    let generalise = format!("prefecture={}:1", hierarchy.display());
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["stats", "--input", data.to_str().unwrap(), "--project", &id]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        a.extend(["--output".into(), out.to_str().unwrap().into()]);
        a.extend(["--report".into(), report.to_str().unwrap().into()]);
        a.extend(["--session".into(), researcher.session.clone()]);
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // Every patient's sex under the linkage key, at minimum cell 1, then 10, then with DP.
        (
            vec!["--group-by", "sex,linkage_key", "--min-cell", "1"],
            "SMALL_CELL_BELOW_FLOOR",
        ),
        (
            vec!["--group-by", "sex,linkage_key", "--min-cell", "10"],
            "COLUMN_NOT_GROUPABLE",
        ),
        (
            vec!["--group-by", "linkage_key", "--epsilon", "0.1", "--delta", "1e-6"],
            "COLUMN_NOT_GROUPABLE",
        ),
        (
            vec!["--measure", "sum:linkage_key:0:1", "--epsilon", "0.1"],
            "COLUMN_NOT_GROUPABLE",
        ),
    ];
    for (extra, expected) in cases {
        let args = base(&extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = file_stats(h, &[], &refs);
        let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!o.status.success(), "{extra:?} was admitted: {stdout}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(
            !stdout.contains(MARKER) && !stderr.contains(MARKER),
            "{extra:?} echoed the value: {stderr}"
        );
        assert!(!stderr.contains("lk0"), "{extra:?} echoed a linkage key: {stderr}");
        assert!(!out.exists() && !report.exists(), "nothing is written on a refusal");
    }
    // The budget did not move: every refusal came before the ledger was charged.
    let budget = budget_json(h, &[], &["--session", &researcher.session], &id);
    assert_eq!(budget["entries"].as_array().map(Vec::len), Some(0), "{budget}");

    // A hierarchy that does not cover the planted value, and a measured column holding a non-number: no error
    // at all (an error, even a count, would answer "is this value in the column?" for free, as often as
    // asked); those rows are simply not counted, as a key outside a public key list is not.
    for extra in [
        vec![
            "--group-by",
            "prefecture",
            "--hierarchy",
            &generalise,
            "--epsilon",
            "0.1",
        ],
        vec![
            "--group-by",
            "sex",
            "--measure",
            "mean:weight:0:200",
            "--epsilon",
            "0.1",
            "--delta",
            "1e-6",
        ],
    ] {
        let args = base(&extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = file_stats(h, &[], &refs);
        let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{extra:?}: {stderr}");
        let written = std::fs::read_to_string(&out).unwrap();
        let reported = std::fs::read_to_string(&report).unwrap();
        for text in [&*stdout, &*stderr, &written, &reported] {
            assert!(!text.contains(MARKER), "{extra:?} echoed the value: {text}");
        }
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_file(&report).unwrap();
    }
    // A small-cell table whose hierarchy does not cover the planted value, and a DP table whose public keys
    // omit it: published, and the value is nowhere — not in the output, nor in the policy database, which
    // keeps the small-cell table's definition (values by rank, labels as published).
    let keys = dir.path().join("prefectures.csv");
    std::fs::write(&keys, "prefecture\n13\n14\n27\n").unwrap();
    for extra in [
        vec![
            "--group-by",
            "prefecture",
            "--hierarchy",
            &generalise,
            "--min-cell",
            "10",
        ],
        vec![
            "--group-by",
            "prefecture",
            "--public-keys",
            keys.to_str().unwrap(),
            "--epsilon",
            "0.1",
        ],
    ] {
        let args = base(&extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = file_stats(h, &[], &refs);
        let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{extra:?}: {stderr}");
        let written = std::fs::read_to_string(&out).unwrap();
        let reported = std::fs::read_to_string(&report).unwrap();
        for text in [&*stdout, &*stderr, &written, &reported] {
            assert!(!text.contains(MARKER), "{extra:?} echoed the value: {text}");
        }
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_file(&report).unwrap();
    }
    for entry in std::fs::read_dir(h.join("policy")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "the policy database holds the value"
        );
    }
    // Labels that contain the separator of a 3-column table and would print alike: refused without
    // naming them (the table would be ambiguous; the old error printed the colliding key).
    let collide = tempfile::tempdir().unwrap();
    let colliding = collide.path().join("patients.csv");
    let mut rows = String::from("sex,prefecture,weight\n");
    for _ in 0..12 {
        rows.push_str(&format!("F,{MARKER} | x,y\nF,{MARKER},x | y\n"));
    }
    std::fs::write(&colliding, rows).unwrap();
    let o = file_stats(
        h,
        &[],
        &[
            "stats",
            "--input",
            colliding.to_str().unwrap(),
            "--project",
            &id,
            "--group-by",
            "sex,prefecture,weight",
            "--min-cell",
            "10",
            "--output",
            out.to_str().unwrap(),
            "--session",
            &researcher.session,
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("separator"), "{stderr}");
    assert!(!stderr.contains(MARKER) && !String::from_utf8_lossy(&o.stdout).contains(MARKER));
    assert!(!out.exists());
    // Nor does the audit ledger hold a value or a linkage key: refusals name the rule.
    let ledger = exported_ledger(h, dir.path());
    assert!(
        !ledger.contains(MARKER) && !ledger.contains("lk0"),
        "the ledger holds a value"
    );
    for code in ["SMALL_CELL_BELOW_FLOOR", "COLUMN_NOT_GROUPABLE"] {
        assert!(ledger.contains(code), "{code} is not in the ledger");
    }
}

/// The committee's rules for one approval, end to end: DP only (no small-cell tables) and only `sex` may be
/// grouped; every refusal carries its code and is in the audit ledger an auditor exports.
#[test]
fn the_committee_fixes_mechanism_and_groupings_and_each_refusal_is_audited() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = tempfile::tempdir().unwrap();
    let columns: &[&str] = &["sex", "prefecture"];
    let (researcher, id) = common::people::approved_statistics_with(
        h,
        &[],
        1.0,
        1e-5,
        &[("patients", columns)],
        "[statistics]\ngroupable = [{ table = \"patients\", columns = [\"sex\"] }]\n",
    );
    let data = dir.path().join("patients.csv");
    let mut csv = String::from("sex,prefecture\n");
    for i in 0..300 {
        csv.push_str(&format!("{},{}\n", ["F", "M"][i % 2], ["13", "14", "27"][i % 3]));
    }
    std::fs::write(&data, csv).unwrap();
    let keys = dir.path().join("sex.csv");
    std::fs::write(&keys, "sex\nF\nM\n").unwrap();
    let out = dir.path().join("out.csv");
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = vec!["stats", "--input", data.to_str().unwrap(), "--project", &id];
        a.extend(["--output", out.to_str().unwrap(), "--session", &researcher.session]);
        a.extend_from_slice(extra);
        file_stats(h, &[], &a)
    };
    for (extra, code) in [
        (vec!["--group-by", "sex", "--min-cell", "10"], "SMALL_CELL_NOT_APPROVED"),
        (vec!["--group-by", "sex", "--min-cell", "50"], "SMALL_CELL_NOT_APPROVED"),
        (
            vec!["--group-by", "prefecture", "--epsilon", "0.1", "--delta", "1e-6"],
            "GROUPING_NOT_APPROVED",
        ),
        (
            vec![
                "--group-by",
                "sex",
                "--measure",
                "hist:prefecture:0:50:50",
                "--epsilon",
                "0.1",
                "--public-keys",
                keys.to_str().unwrap(),
            ],
            "GROUPING_NOT_APPROVED",
        ),
    ] {
        let o = run(&extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && stderr.contains(code), "{extra:?}: {stderr}");
        assert!(!out.exists());
    }
    // Within the rules: DP counts by sex.
    ok(&run(&[
        "--group-by",
        "sex",
        "--epsilon",
        "0.1",
        "--public-keys",
        keys.to_str().unwrap(),
    ]));
    // An auditor finds the four refusals in the ledger, each with its code.
    let bundle: serde_json::Value = serde_json::from_str(&exported_ledger(h, dir.path())).unwrap();
    let denied = denied_statistics(&bundle);
    assert_eq!(
        denied,
        [
            "SMALL_CELL_NOT_APPROVED",
            "SMALL_CELL_NOT_APPROVED",
            "GROUPING_NOT_APPROVED",
            "GROUPING_NOT_APPROVED"
        ],
        "{denied:?}"
    );
}

/// Small-cell tables across requests: a regrouped table that would give back a suppressed prefecture
/// by subtraction is refused (SMALL_CELL_DIFFERENCING), a regrouping nested in the first is published,
/// and a table of changed data is refused (SMALL_CELL_POPULATION_CHANGED); each refusal is in the audit
/// ledger, writes no output and names no value.
#[test]
fn linked_small_cell_tables_cannot_give_a_suppressed_cell_back() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = tempfile::tempdir().unwrap();
    let (researcher, id) = common::people::approved_statistics_with(
        h,
        &[],
        1.0,
        1e-5,
        &[("patients", &["prefecture"])],
        "[statistics]\nsmall_cell_min = 10\n",
    );
    // Prefecture pXa: 3 patients, pXb: 20, pXc: 30 (the values double as markers).
    let data = dir.path().join("patients.csv");
    let mut csv = String::from("prefecture\n");
    for (value, n) in [("pXa", 3), ("pXb", 20), ("pXc", 30)] {
        for _ in 0..n {
            csv.push_str(&format!("{value}\n"));
        }
    }
    std::fs::write(&data, &csv).unwrap();
    let hierarchy = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        format!("prefecture={}:1", path.display())
    };
    let a_with_c = hierarchy("ac.csv", "pXa;AC;*\npXb;B;*\npXc;AC;*\n");
    let a_with_b = hierarchy("ab.csv", "pXa;AB;*\npXb;AB;*\npXc;C;*\n");
    let run = |out: &Path, extra: &[&str]| {
        let mut a: Vec<&str> = vec!["stats", "--input", data.to_str().unwrap(), "--project", &id];
        a.extend(["--group-by", "prefecture", "--output", out.to_str().unwrap()]);
        a.extend(["--session", &researcher.session]);
        a.extend_from_slice(extra);
        file_stats(h, &[], &a)
    };
    let refused = |o: &Output, code: &str, out: &Path| {
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success() && stderr.contains(code), "{stderr}");
        for marker in ["pXa", "pXb", "pXc"] {
            assert!(!stderr.contains(marker) && !String::from_utf8_lossy(&o.stdout).contains(marker));
        }
        assert!(!out.exists(), "a refused table is not written");
    };

    // 1. By prefecture: pXa (3) is suppressed, and pXb with it so the total does not give it back.
    let first = dir.path().join("first.csv");
    ok(&run(&first, &[]));
    let (_, rows) = read_csv(&first);
    let shown: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(shown, ["", "", "30", "53"], "{rows:?}");
    // 2. pXa grouped with pXc: 33 and 20 alone are harmless, but with the first table 53 − 20 − 30 = 3.
    let second = dir.path().join("second.csv");
    refused(
        &run(&second, &["--hierarchy", &a_with_c]),
        "SMALL_CELL_DIFFERENCING",
        &second,
    );
    // Raising the minimum cell until the refused table passes would read pXb's count (20): one threshold per population.
    refused(
        &run(&second, &["--hierarchy", &a_with_c, "--min-cell", "21"]),
        "SMALL_CELL_THRESHOLD_FIXED",
        &second,
    );
    // 3. pXa grouped with pXb publishes 23, which the first table already implied: published.
    let third = dir.path().join("third.csv");
    ok(&run(&third, &["--hierarchy", &a_with_b]));
    // 4. New patients: the same table again would difference the change.
    csv.push_str("pXa\n");
    std::fs::write(&data, &csv).unwrap();
    let fourth = dir.path().join("fourth.csv");
    refused(&run(&fourth, &[]), "SMALL_CELL_POPULATION_CHANGED", &fourth);
    // DP stays available on the changed data.
    let keys = dir.path().join("keys.csv");
    std::fs::write(&keys, "prefecture\npXa\npXb\npXc\n").unwrap();
    ok(&run(
        &fourth,
        &["--epsilon", "0.1", "--public-keys", keys.to_str().unwrap()],
    ));
    // 5. A differencing refusal depends on which cells are small: an answer, so only a few per approval. Back on
    // the first population, the refused regrouping twice more (three in all), then small-cell tables close —
    // even a harmless one — while DP stays open.
    csv.truncate(csv.len() - "pXa\n".len());
    std::fs::write(&data, &csv).unwrap();
    for _ in 0..2 {
        refused(
            &run(&second, &["--hierarchy", &a_with_c]),
            "SMALL_CELL_DIFFERENCING",
            &second,
        );
    }
    refused(
        &run(&second, &["--hierarchy", &a_with_c]),
        "SMALL_CELL_PROBING_LIMIT",
        &second,
    );
    refused(
        &run(&second, &["--hierarchy", &a_with_b]),
        "SMALL_CELL_PROBING_LIMIT",
        &second,
    );
    std::fs::remove_file(&fourth).unwrap();
    ok(&run(
        &fourth,
        &["--epsilon", "0.1", "--public-keys", keys.to_str().unwrap()],
    ));

    let bundle: serde_json::Value = serde_json::from_str(&exported_ledger(h, dir.path())).unwrap();
    let denied = denied_statistics(&bundle);
    assert_eq!(
        denied,
        [
            "SMALL_CELL_DIFFERENCING",
            "SMALL_CELL_THRESHOLD_FIXED",
            "SMALL_CELL_POPULATION_CHANGED",
            "SMALL_CELL_DIFFERENCING",
            "SMALL_CELL_DIFFERENCING",
            "SMALL_CELL_PROBING_LIMIT",
            "SMALL_CELL_PROBING_LIMIT",
        ]
    );
    assert!(!bundle.to_string().contains("pXa"));
    let budget = budget_json(h, &[], &["--session", &researcher.session], &id);
    let kinds: Vec<bool> = budget["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["differentially_private"].as_bool().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [false, false, true, true],
        "two small-cell tables, then the DP ones"
    );
}

/// Over the core store, hierarchies and key lists are the platform catalogue's: a level is named, its keys
/// come from the code system (every region, also those with no patient), a hierarchy file or a key outside
/// the code system is refused and audited without naming it, and the second linkage key is never a grouping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_tables_take_hierarchies_and_keys_from_the_platform_catalogue() {
    const MARKER: &str = "ZZMARK4242";
    let home = common::Home::new();
    let h = home.path();
    {
        let gw = home.start();
        let mut client = gw.client(&home, common::HOSPITAL_A).await;
        let records = tokumei_ingest::synth::Synth::new(11).records(common::HOSPITAL_A, 0, 400);
        let batches = records
            .chunks(200)
            .enumerate()
            .map(|(i, c)| tokumei_proto::ingest::v1::RecordBatch {
                batch_id: format!("b{i}"),
                records: c.to_vec(),
            })
            .collect();
        tokumei_ingest::client::push(&mut client, batches).await.expect("push");
    }
    common::drain_core(&home);
    let (researcher, id) = common::people::approved_statistics_with(
        h,
        &[],
        2.0,
        1e-5,
        &[
            ("patients", &["linkage_key", "sex", "prefecture", "id4_key"]),
            ("conditions", &["linkage_key", "icd10"]),
        ],
        "[statistics]\nsmall_cell_min = 10\n",
    );
    // The researcher works from an empty desk: the policy service and the core (taking orders) do the rest.
    let core = CoreWithOrders::start(h, &[]);
    let service = core.client_env(h);
    let desk = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let run = |table: &str, extra: &[&str]| -> Output {
        let mut args: Vec<&str> = vec!["stats", "--table", table, "--project", &id];
        args.extend(["--output", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        client(desk.path(), &service, &researcher, &args)
    };

    // A named level: every region is a public key (no δ needed), regions without patients included.
    let o = run(
        "patients",
        &[
            "--group-by",
            "prefecture",
            "--hierarchy",
            "prefecture=region",
            "--epsilon",
            "0.2",
        ],
    );
    ok(&o);
    let (header, rows) = read_csv(&out);
    assert_eq!(header[0], "prefecture");
    let regions: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(regions.len(), 8, "{regions:?}");
    assert!(
        regions.contains("関東地方") && regions.contains("九州・沖縄地方"),
        "{regions:?}"
    );
    std::fs::remove_file(&out).unwrap();
    // ICD-10 chapters under the small-cell rule: labels of the catalogue, every chapter listed.
    let o = run("conditions", &["--group-by", "icd10", "--hierarchy", "icd10=chapter"]);
    ok(&o);
    let (_, rows) = read_csv(&out);
    assert!(rows.iter().any(|r| r[0] == "IX I00-I99"), "{rows:?}");
    std::fs::remove_file(&out).unwrap();

    // Refusals, each audited with its code, none naming what was asked.
    let hierarchy = dir.path().join("pref.csv");
    std::fs::write(&hierarchy, format!("13;{MARKER};*\n")).unwrap();
    let file_level = format!("prefecture={}:1", hierarchy.display());
    let keys = dir.path().join("keys.csv");
    std::fs::write(&keys, format!("prefecture\n13\n{MARKER}\n")).unwrap();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "patients",
            vec![
                "--group-by",
                "prefecture",
                "--hierarchy",
                &file_level,
                "--epsilon",
                "0.1",
            ],
            "HIERARCHY_NOT_IN_CATALOGUE",
        ),
        (
            "patients",
            vec![
                "--group-by",
                "prefecture",
                "--public-keys",
                keys.to_str().unwrap(),
                "--epsilon",
                "0.1",
            ],
            "KEY_NOT_IN_CATALOGUE",
        ),
        (
            "patients",
            vec!["--group-by", "sex,id4_key", "--min-cell", "10"],
            "COLUMN_NOT_GROUPABLE",
        ),
    ];
    for (table, extra, code) in &cases {
        let o = run(table, extra);
        let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!o.status.success(), "{extra:?} was admitted: {stdout}");
        assert!(stderr.contains(code), "{extra:?}: {stderr}");
        assert!(
            !stdout.contains(MARKER) && !stderr.contains(MARKER),
            "{extra:?} echoed: {stderr}"
        );
        assert!(!out.exists(), "nothing is written on a refusal");
    }
    let ledger = exported_ledger(h, dir.path());
    assert!(!ledger.contains(MARKER), "the ledger holds the marker");
    for (_, _, code) in &cases {
        assert!(ledger.contains(code), "{code} is not in the ledger");
    }
    assert!(
        common::files_under(desk.path()).is_empty(),
        "the statistics client wrote to its home"
    );
}

/// `tokumei stats` as a client of the policy service, from `desk` (its home), as `person`.
fn client(desk: &Path, service: &[(String, String)], person: &common::people::Person, args: &[&str]) -> Output {
    Command::new(common::tokumei_bin())
        .env("TOKUMEI_HOME", desk)
        .env_remove("TOKUMEI_POLICY_DB")
        .envs(service.iter().map(|(k, v)| (k, v)))
        .env("TOKUMEI_SESSION", &person.session)
        .args(args)
        .bounded_output()
        .unwrap()
}

/// Statistics over the store as an insider would try them, with the policy service and the core running: the table
/// is computed by the core and goes back to its requester alone (another researcher is refused, an operator sees
/// where the order stands but not the table); a researcher who is not a recipient is refused before any order is
/// queued; a table over budget is refused before any order exists, so no noise is ever drawn for it; a small-cell
/// table the differencing audit refuses is withdrawn before its requester can read it. Every refusal is on the
/// ledger under the name of who asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_statistics_are_paid_before_drawn_and_go_to_the_requester_alone() {
    let home = common::Home::new();
    let h = home.path();
    {
        let gw = home.start();
        let mut client = gw.client(&home, common::HOSPITAL_A).await;
        let records = tokumei_ingest::synth::Synth::new(12).records(common::HOSPITAL_A, 0, 300);
        let batches = vec![tokumei_proto::ingest::v1::RecordBatch {
            batch_id: "b0".into(),
            records: records.clone(),
        }];
        tokumei_ingest::client::push(&mut client, batches).await.expect("push");
    }
    common::drain_core(&home);
    let (rika, chair, id) = common::people::approved_statistics_and_chair(
        h,
        &[],
        0.5,
        1e-5,
        &[("patients", &["linkage_key", "sex", "prefecture"])],
        "[statistics]\nsmall_cell_min = 10\n",
    );
    let yui = common::people::invite(h, &[], "yui", "univ-y", "researcher");
    let op2 = common::people::invite(h, &[], "op2", "platform", "operator");
    let core = CoreWithOrders::start(h, &[]);
    let service = core.client_env(h);
    let desk = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.csv");
    let stats = |who: &common::people::Person, extra: &[&str]| -> Output {
        let mut args: Vec<&str> = vec!["--json", "stats", "--table", "patients", "--project", &id];
        args.extend(["--output", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        client(desk.path(), &service, who, &args)
    };
    let refused = |o: &Output, code: &str| {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "admitted: {}", String::from_utf8_lossy(&o.stdout));
        assert!(stderr.contains(code), "expected {code}: {stderr}");
        assert!(!out.exists(), "a refused table was written");
    };

    // rika's DP table: computed by the core, paid from the approval's budget.
    let o = stats(
        &rika,
        &[
            "--group-by",
            "sex",
            "--epsilon",
            "0.3",
            "--public-keys",
            &sex_keys(dir.path()),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let order = report["order"].as_u64().expect("order number").to_string();
    assert_eq!(report["differentially_private"], true, "{report}");
    let (header, rows) = read_csv(&out);
    assert_eq!(header[0], "sex");
    assert_eq!(rows.len(), 3, "every declared key is released: {rows:?}");
    std::fs::remove_file(&out).unwrap();

    // Reading it back: another researcher is refused; an operator sees the order, not the table.
    let look = |who: &common::people::Person| {
        client(
            desk.path(),
            &service,
            who,
            &["--json", "store", "order", "--id", &order],
        )
    };
    let o = look(&yui);
    assert!(!o.status.success(), "yui read rika's order");
    let seen: serde_json::Value = serde_json::from_str(&ok(&look(&op2))).unwrap();
    assert_eq!(seen["state"], "done", "{seen}");
    assert!(seen["result"].is_null(), "an operator read the table: {seen}");
    let mine: serde_json::Value = serde_json::from_str(&ok(&look(&rika))).unwrap();
    assert!(mine["result"]["csv"].is_string(), "{mine}");

    // yui is not a recipient of the approval: refused before anything is queued.
    refused(
        &stats(
            &yui,
            &["--group-by", "sex", "--hierarchy", "sex=value", "--epsilon", "0.1"],
        ),
        "NOT_RECIPIENT",
    );
    // Over budget (0.3 + 0.3 > 0.5): refused before an order exists.
    refused(
        &stats(
            &rika,
            &[
                "--group-by",
                "sex",
                "--epsilon",
                "0.3",
                "--public-keys",
                &sex_keys(dir.path()),
            ],
        ),
        "BUDGET_EXCEEDED",
    );
    // Small-cell tables of one population keep one minimum: the second is computed by the core, then refused by
    // the service's audit and withdrawn; its requester never reads it.
    ok(&stats(&rika, &["--group-by", "sex", "--min-cell", "10"]));
    std::fs::remove_file(&out).unwrap();
    refused(
        &stats(
            &rika,
            &[
                "--group-by",
                "prefecture",
                "--hierarchy",
                "prefecture=region",
                "--min-cell",
                "12",
            ],
        ),
        "SMALL_CELL_THRESHOLD_FIXED",
    );

    // The committee revokes the approval: rika's table, computed and paid for, is no longer given out.
    let revoked = client(
        desk.path(),
        &service,
        &chair,
        &["--json", "committee", "revoke", &id, "--reason", "breach found"],
    );
    let revoked: serde_json::Value = serde_json::from_str(&ok(&revoked)).unwrap();
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let o = look(&rika);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a revoked approval's table was read: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(stderr.contains("APPROVAL_REVOKED"), "{stderr}");
    assert!(!stderr.contains("csv"), "{stderr}");

    let bundle: serde_json::Value = serde_json::from_str(&exported_ledger(h, dir.path())).unwrap();
    let entries = bundle["entries"].as_array().unwrap();
    let by = |user: &str, action: &str| -> Vec<&serde_json::Value> {
        entries
            .iter()
            .filter(|e| e["actor"] == user && e["action"] == action)
            .collect()
    };
    assert!(
        by("rika", "run_statistics")
            .iter()
            .any(|e| e["outcome"] == "denied" && e["reason"] == "APPROVAL_REVOKED"),
        "the refused read is not on the ledger"
    );
    assert!(by("yui", "core.requested").is_empty(), "an order was queued for yui");
    assert_eq!(
        by("rika", "core.requested").len(),
        3,
        "only the admitted tables became orders"
    );
    let denied: Vec<&str> = by("rika", "run_statistics")
        .iter()
        .chain(by("yui", "run_statistics").iter())
        .filter(|e| e["outcome"] == "denied")
        .map(|e| e["reason"].as_str().unwrap_or_default())
        .collect();
    for code in ["BUDGET_EXCEEDED", "SMALL_CELL_THRESHOLD_FIXED"] {
        assert!(denied.contains(&code), "{code} not audited: {denied:?}");
    }
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "yui" && e["outcome"] == "denied" && e["reason"] == "NOT_RECIPIENT"),
        "yui's refusal is not on the ledger"
    );
    let computed = by("rika", "core.statistics");
    assert_eq!(computed.len(), 3, "{computed:?}");
    assert!(
        computed
            .iter()
            .any(|e| e["outcome"] == "failed" && e["reason"] == "SMALL_CELL_THRESHOLD_FIXED"),
        "{computed:?}"
    );
    assert!(
        common::files_under(desk.path()).is_empty(),
        "the client wrote to its home"
    );
}

fn sex_keys(dir: &Path) -> String {
    let keys = dir.join("sex-keys.csv");
    std::fs::write(&keys, "sex\nF\nM\nO\n").unwrap();
    keys.display().to_string()
}

/// `RecordFileStatistics` as a researcher with their own gRPC client would try it, not through the command: a DP
/// table recorded without being paid for, a small-cell table protected at a lower minimum than the approval's, one
/// publishing a count that rule suppresses, one grouped by a column the request does not name, and one filed into
/// the store's population (where other approvals' tables are audited) — each refused, with nothing recorded. The
/// honest table is recorded, in a population of the file's digest kept apart for this approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_file_table_is_not_recorded() {
    use tokumei_deid::linked_tables::{Dimension, LinkedEntry, LinkedTable, ValueLabel};
    use tokumei_proto::policy::v1 as pb;
    use tokumei_proto::policy::v1::policy_service_client::PolicyServiceClient;

    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_path_buf();
    let (researcher, id) = tokio::task::spawn_blocking(move || {
        common::people::approved_statistics(&h, &[], 1.0, 1e-5, &[("adult", &["sex"])])
    })
    .await
    .unwrap();
    let server = common::policy_server::Server::start(home.path());
    let mut c = PolicyServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let spec = |epsilon: Option<f64>| pb::StatisticsOperation {
        application_id: id.clone(),
        table: "adult".into(),
        group_by: vec!["sex".into()],
        measure: "count".into(),
        max_contrib: 1,
        epsilon,
        public_keys: vec![
            pb::KeyRow {
                values: vec!["F".into()],
            },
            pb::KeyRow {
                values: vec!["M".into()],
            },
        ],
        keys_declared: true,
        ..Default::default()
    };
    let table = |threshold: u64, counts: [Option<u64>; 3], column: &str| LinkedTable {
        dimensions: vec![Dimension {
            column: column.into(),
            labels: vec![ValueLabel::Shown("F".into()), ValueLabel::Shown("M".into())],
        }],
        cells: vec![vec!["F".into()], vec!["M".into()]],
        entries: vec![
            LinkedEntry {
                cells: vec![0],
                count: counts[0],
                at_least_one: false,
            },
            LinkedEntry {
                cells: vec![1],
                count: counts[1],
                at_least_one: false,
            },
            LinkedEntry {
                cells: vec![0, 1],
                count: counts[2],
                at_least_one: false,
            },
        ],
        keys_declared: true,
        threshold,
    };
    let digest = "ab".repeat(32);
    let record = |statistics: pb::StatisticsOperation, linked: &LinkedTable, population: &str| {
        common::policy_server::authed(
            pb::FileStatisticsRecord {
                statistics: Some(statistics),
                cells: 3,
                linked_json: serde_json::to_string(linked).unwrap(),
                population_json: serde_json::json!({"name": population, "source": "adult"}).to_string(),
            },
            &researcher.session,
        )
    };
    let honest = table(10, [Some(40), Some(60), Some(100)], "sex");
    let file = format!("file:{digest}");
    let forgeries = [
        ("DP, unpaid", record(spec(Some(0.5)), &honest, &file)),
        (
            "a lower minimum",
            record(spec(None), &table(3, [Some(4), Some(96), Some(100)], "sex"), &file),
        ),
        (
            "a suppressed count",
            record(spec(None), &table(10, [Some(4), Some(96), Some(100)], "sex"), &file),
        ),
        (
            "another column",
            record(spec(None), &table(10, [Some(40), Some(60), Some(100)], "race"), &file),
        ),
        (
            "the store's population",
            record(spec(None), &honest, "store:patients@42"),
        ),
    ];
    for (what, request) in forgeries {
        let status = c.record_file_statistics(request).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
    }
    let budget = |c: &mut PolicyServiceClient<tonic::transport::Channel>| {
        let request = common::policy_server::authed(pb::BudgetQuery { project: id.clone() }, &researcher.session);
        let mut c = c.clone();
        async move {
            let json = c.show_budget(request).await.expect("budget").into_inner().json;
            serde_json::from_str::<serde_json::Value>(&json).unwrap()
        }
    };
    assert_eq!(
        budget(&mut c).await["entries"].as_array().map(Vec::len),
        Some(0),
        "nothing recorded"
    );

    let done = c
        .record_file_statistics(record(spec(None), &honest, &file))
        .await
        .expect("the honest table")
        .into_inner();
    let entry: serde_json::Value = serde_json::from_str(&done.json).unwrap();
    assert!(
        entry["ledger_entry"]["mechanism"]
            .as_str()
            .unwrap()
            .starts_with("small-cell<10"),
        "{entry}"
    );
    let population: String = {
        let db = tokumei_policy::PolicyDb::open(&tokumei_policy::default_url(home.path()))
            .await
            .expect("db");
        sqlx::query_scalar("SELECT population FROM small_cell_tables")
            .fetch_one(db.pool())
            .await
            .expect("the recorded table")
    };
    assert_eq!(population, format!("file:{id}:{digest}"));
    drop(server);
}
