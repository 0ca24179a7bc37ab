//! The budget ledger against both backends, with the same test bodies.
//!
//! Every body is an `async fn(PolicyDb, url)`; `on_both_backends!` runs it on a fresh SQLite file and on a
//! fresh PostgreSQL database (from `TOKUMEI_TEST_PG_URL`; skipped without it unless
//! `TOKUMEI_REQUIRE_SERVERS` is set).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokumei_deid::dp::accounting::{self, Budget, PrivacyLoss};
use tokumei_deid::linked_tables::{AuditLimits, Dimension, LinkedTable, ValueLabel, recoverable};
use tokumei_deid::small_cell::{CountTable, SmallCellRule, protect};
use tokumei_policy::budget_ledger::LedgerEntry;
use tokumei_policy::small_cell_tables::{SmallCellHistory, SmallCellPublication};
use tokumei_policy::{BudgetLedger, PolicyDb, PolicyError, SpendRequest};

use super::support;

use support::{Target, postgres_target, sqlite_target, with_database};

on_both_backends!(
    spend_until_exhausted,
    restart_keeps_total_and_refusal,
    concurrent_spends_serialise,
    second_process_sees_the_same_ledger,
    zcdp_spend_needs_delta_in_the_budget,
    lowering_below_spent_is_refused,
    unknown_project,
    invalid_input_is_refused_and_writes_nothing,
    projects_are_listed,
    small_cell_tables_are_counted_apart,
    the_platform_ceiling_holds_across_approvals,
    concurrent_spends_of_different_approvals_respect_the_ceiling,
    linked_small_cell_tables_are_audited_one_after_the_other,
);

fn pure(epsilon: f64) -> PrivacyLoss {
    PrivacyLoss {
        epsilon,
        ..Default::default()
    }
}

fn request(actor: &str, loss: PrivacyLoss) -> SpendRequest {
    SpendRequest {
        actor: actor.to_owned(),
        query: "SELECT count(*) FROM admissions GROUP BY prefecture".to_owned(),
        mechanism: if loss.rho > 0.0 {
            "gaussian".to_owned()
        } else {
            "laplace".to_owned()
        },
        loss,
        reported_epsilon: loss.epsilon,
        reported_delta: loss.delta,
        differentially_private: true,
    }
}

/// A small-cell (not differentially private) entry; `loss` other than zero is for the refusal test.
fn small_cell(actor: &str, loss: PrivacyLoss) -> SpendRequest {
    SpendRequest {
        mechanism: "small-cell<10 (not differentially private)".into(),
        reported_epsilon: 0.0,
        reported_delta: 0.0,
        differentially_private: false,
        ..request(actor, loss)
    }
}

fn budget(epsilon: f64, delta: f64) -> Budget {
    Budget { epsilon, delta }
}

// ---------------------------------------------------------------------------------------------------------
// Test bodies
// ---------------------------------------------------------------------------------------------------------

async fn spend_until_exhausted(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    let created = ledger
        .set_budget("cardio", budget(1.0, 0.0), "committee")
        .await
        .expect("set budget");
    assert_eq!(created.revision, 1);
    assert_eq!(created.created_at, created.updated_at);
    for seq in 1..=3 {
        let entry = ledger
            .spend("cardio", request("alice", pure(0.25)))
            .await
            .expect("spend fits");
        assert_eq!(entry.seq, seq);
        assert_eq!(entry.loss, pure(0.25));
        assert!(
            entry.at.ends_with('Z') && entry.at.len() == "2025-01-01T00:00:00.000Z".len(),
            "{}",
            entry.at
        );
    }
    let before = ledger.status("cardio").await.expect("status");
    assert_eq!(before.entries.len(), 3);
    assert_eq!(before.total, pure(0.75));

    let refused = ledger
        .spend("cardio", request("alice", pure(0.5)))
        .await
        .expect_err("0.75 + 0.5 > 1");
    assert_eq!(refused.reason(), "BUDGET_EXCEEDED");
    let message = refused.to_string();
    assert!(message.contains("remaining: ε=0.250000"), "{message}");
    let PolicyError::BudgetExceeded(exceeded) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(exceeded.spent.remaining_epsilon(&exceeded.budget), 0.25);
    let after = ledger.status("cardio").await.expect("status");
    assert_eq!(after, before, "a refused request writes nothing");

    // The rest fits exactly, then nothing more does.
    let last = ledger
        .spend("cardio", request("bob", pure(0.25)))
        .await
        .expect("exactly the rest fits");
    assert_eq!(last.seq, 4);
    let refused = ledger
        .spend("cardio", request("bob", pure(0.001)))
        .await
        .expect_err("exhausted");
    assert!(refused.to_string().contains("remaining: ε=0.000000"), "{refused}");

    let status = ledger.status("cardio").await.expect("status");
    assert_eq!(status.total, pure(1.0));
    assert_eq!(status.spent.epsilon, 1.0);
    assert_eq!(status.spent.remaining_epsilon(&status.project.budget), 0.0);
    assert_eq!(
        status.entries.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(),
        ["alice", "alice", "alice", "bob"]
    );
    let check = ledger.verify_totals("cardio").await.expect("verify");
    assert!(check.is_consistent(), "{check:?}");
    assert_eq!(check.entries, 4);

    // The CLI prints these as JSON.
    let json = serde_json::to_value(&status).expect("serialise status");
    assert_eq!(json["project"]["budget"]["epsilon"], 1.0);
    assert_eq!(json["entries"][3]["seq"], 4);
    assert_eq!(json["entries"][0]["loss"]["epsilon"], 0.25);
    assert_eq!(json["total"]["epsilon"], 1.0);
}

async fn restart_keeps_total_and_refusal(db: PolicyDb, url: String) {
    {
        let ledger = BudgetLedger::new(db);
        ledger
            .set_budget("onco", budget(1.0, 0.0), "committee")
            .await
            .expect("set budget");
        ledger
            .spend("onco", request("alice", pure(0.5)))
            .await
            .expect("first half");
        ledger
            .spend("onco", request("alice", pure(0.5)))
            .await
            .expect("second half");
        ledger.db().close().await;
    }
    let db = PolicyDb::open(&url)
        .await
        .expect("reopen (runs migrations again: a no-op)");
    let ledger = BudgetLedger::new(db);
    let status = ledger.status("onco").await.expect("status after restart");
    assert_eq!(status.total, pure(1.0));
    assert_eq!(status.entries.len(), 2);
    let refused = ledger
        .spend("onco", request("alice", pure(0.1)))
        .await
        .expect_err("still exhausted");
    assert_eq!(refused.reason(), "BUDGET_EXCEEDED");
    assert_eq!(ledger.status("onco").await.expect("status").entries.len(), 2);
    assert_eq!(ledger.budget_history("onco").await.expect("history").len(), 1);
}

/// Eight spends of 0.2 race for a budget of 1.0: exactly five fit (0.2 added five times is exactly 1.0).
async fn concurrent_spends_serialise(db: PolicyDb, url: String) {
    let ledger = BudgetLedger::new(db);
    ledger
        .set_budget("race", budget(1.0, 0.0), "committee")
        .await
        .expect("set budget");
    let outcomes = race(&ledger, &url, |_| "race".to_owned(), pure(0.2)).await;
    let mut admitted = Vec::new();
    let mut refused = 0;
    for outcome in outcomes {
        match outcome {
            Ok(entry) => admitted.push(entry.seq),
            Err(PolicyError::BudgetExceeded(_)) => refused += 1,
            Err(other) => panic!("unexpected error under contention: {other}"),
        }
    }
    admitted.sort_unstable();
    assert_eq!(admitted, [1, 2, 3, 4, 5]);
    assert_eq!(refused, 3);
    let check = ledger.verify_totals("race").await.expect("verify");
    assert!(check.is_consistent(), "{check:?}");
    assert_eq!(check.stored, pure(1.0));
}

/// Eight spends of `loss` (to `project(i)`, by researcher-i) started together behind a barrier, half of
/// them through a second pool as a second process would; their outcomes in spender order.
async fn race(
    ledger: &BudgetLedger,
    url: &str,
    project: impl Fn(usize) -> String,
    loss: PrivacyLoss,
) -> Vec<Result<LedgerEntry, PolicyError>> {
    let other = BudgetLedger::new(PolicyDb::open(url).await.expect("second handle"));
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let ledger = if i % 2 == 0 { ledger.clone() } else { other.clone() };
        let (barrier, project) = (barrier.clone(), project(i));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            ledger.spend(&project, request(&format!("researcher-{i}"), loss)).await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    other.db().close().await;
    outcomes
}

/// Eight approvals, each with room for its own spend of 0.25, race under a platform ceiling of 1.0: the
/// project locks do not serialise them, the ceiling's row does — exactly four fit.
async fn concurrent_spends_of_different_approvals_respect_the_ceiling(db: PolicyDb, url: String) {
    let ledger = BudgetLedger::new(db);
    for i in 0..8 {
        ledger
            .set_budget(&format!("app-{i}"), budget(1.0, 0.0), "committee")
            .await
            .expect("set budget");
    }
    let now = chrono::Utc::now().timestamp_millis();
    ledger
        .set_platform_ceiling("2026-Q4", (now - 60_000, now + 3_600_000), budget(1.0, 0.0), "op")
        .await
        .expect("ceiling");
    let (mut admitted, mut refused) = (0, 0);
    for outcome in race(&ledger, &url, |i| format!("app-{i}"), pure(0.25)).await {
        match outcome {
            Ok(_) => admitted += 1,
            Err(PolicyError::PlatformCeilingExceeded { .. }) => refused += 1,
            Err(other) => panic!("unexpected error under contention: {other}"),
        }
    }
    assert_eq!((admitted, refused), (4, 4));
    let status = ledger
        .platform_status("2026-Q4", (now - 60_000, now + 3_600_000))
        .await
        .expect("status");
    assert_eq!(status.spent, pure(1.0));
}

/// A second handle (another process) sees spends and budget changes of the first at once.
async fn second_process_sees_the_same_ledger(db: PolicyDb, url: String) {
    let a = BudgetLedger::new(db);
    let b = BudgetLedger::new(PolicyDb::open(&url).await.expect("second handle"));
    a.set_budget("shared", budget(0.5, 0.0), "committee")
        .await
        .expect("set budget");
    b.spend("shared", request("alice", pure(0.5)))
        .await
        .expect("spend via b");
    a.spend("shared", request("bob", pure(0.1)))
        .await
        .expect_err("a sees b's spend");
    b.set_budget("shared", budget(0.6, 0.0), "committee")
        .await
        .expect("raise via b");
    let entry = a
        .spend("shared", request("bob", pure(0.1)))
        .await
        .expect("a sees the raise");
    assert_eq!(entry.seq, 2);
    b.db().close().await;
}

async fn zcdp_spend_needs_delta_in_the_budget(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    let gaussian = PrivacyLoss {
        rho: 0.01,
        ..Default::default()
    };
    ledger
        .set_budget("renal", budget(10.0, 0.0), "committee")
        .await
        .expect("set budget");
    let refused = ledger
        .spend("renal", request("alice", gaussian))
        .await
        .expect_err("ρ cannot convert without δ");
    assert_eq!(refused.reason(), "BUDGET_EXCEEDED");
    assert!(ledger.status("renal").await.expect("status").entries.is_empty());

    ledger
        .set_budget("renal", budget(10.0, 1e-6), "committee")
        .await
        .expect("add δ");
    let entry = ledger
        .spend("renal", request("alice", gaussian))
        .await
        .expect("now it converts");
    assert_eq!(entry.loss, gaussian);
    let status = ledger.status("renal").await.expect("status");
    assert_eq!(status.total, gaussian);
    assert!(
        status.spent.epsilon > 0.0 && status.spent.epsilon < 10.0,
        "{:?}",
        status.spent
    );
    assert_eq!(status.spent.delta, 1e-6);
    let expected = accounting::spent(&gaussian, &status.project.budget).expect("spent");
    assert_eq!(status.spent, expected);

    // Taking the δ away again would leave the ρ already spent without a conversion: refused.
    let lowered = ledger
        .set_budget("renal", budget(10.0, 0.0), "committee")
        .await
        .expect_err("ρ needs δ");
    assert_eq!(lowered.reason(), "BUDGET_BELOW_SPENT");
}

async fn lowering_below_spent_is_refused(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    ledger
        .set_budget("derm", budget(1.0, 0.0), "chair")
        .await
        .expect("set budget");
    ledger.spend("derm", request("alice", pure(0.5))).await.expect("spend");
    let refused = ledger
        .set_budget("derm", budget(0.4, 0.0), "chair")
        .await
        .expect_err("below spent");
    assert_eq!(refused.reason(), "BUDGET_BELOW_SPENT");
    assert!(refused.to_string().contains("below what is already spent"), "{refused}");
    let status = ledger.status("derm").await.expect("status");
    assert_eq!(status.project.budget, budget(1.0, 0.0));
    assert_eq!(status.project.revision, 1);

    let exact = ledger
        .set_budget("derm", budget(0.5, 0.0), "vice-chair")
        .await
        .expect("down to spent is allowed");
    assert_eq!(exact.revision, 2);
    assert_eq!(exact.updated_by, "vice-chair");
    assert_eq!(exact.created_by, "chair");
    ledger
        .spend("derm", request("alice", pure(0.01)))
        .await
        .expect_err("nothing left");
    let raised = ledger
        .set_budget("derm", budget(2.0, 1e-6), "chair")
        .await
        .expect("raise");
    assert_eq!(raised.revision, 3);
    let history = ledger.budget_history("derm").await.expect("history");
    let summary: Vec<_> = history
        .iter()
        .map(|c| (c.revision, c.actor.as_str(), c.budget))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "chair", budget(1.0, 0.0)),
            (2, "vice-chair", budget(0.5, 0.0)),
            (3, "chair", budget(2.0, 1e-6))
        ]
    );
}

async fn unknown_project(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    for err in [
        ledger.status("ghost").await.expect_err("status"),
        ledger
            .spend("ghost", request("alice", pure(0.1)))
            .await
            .expect_err("spend"),
        ledger.verify_totals("ghost").await.expect_err("verify"),
        ledger.budget_history("ghost").await.expect_err("history"),
    ] {
        assert!(
            matches!(&err, PolicyError::UnknownProject(p) if p == "ghost"),
            "{err:?}"
        );
        assert_eq!(err.reason(), "UNKNOWN_PROJECT");
    }
    assert!(
        ledger.projects().await.expect("projects").is_empty(),
        "a refused spend creates nothing"
    );
}

async fn invalid_input_is_refused_and_writes_nothing(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    let err = ledger
        .set_budget("neuro", budget(-1.0, 0.0), "chair")
        .await
        .expect_err("negative budget");
    assert_eq!(err.reason(), "INVALID_PRIVACY_PARAMETERS");
    let err = ledger
        .set_budget("neuro", budget(1.0, 1.0), "chair")
        .await
        .expect_err("δ = 1");
    assert_eq!(err.reason(), "INVALID_PRIVACY_PARAMETERS");
    let err = ledger
        .set_budget("", budget(1.0, 0.0), "chair")
        .await
        .expect_err("empty project");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
    assert!(ledger.projects().await.expect("projects").is_empty());

    ledger
        .set_budget("neuro", budget(1.0, 0.0), "chair")
        .await
        .expect("set budget");
    let err = ledger
        .spend("neuro", request("alice", pure(-0.5)))
        .await
        .expect_err("negative loss adds budget");
    assert_eq!(err.reason(), "INVALID_PRIVACY_PARAMETERS");
    let err = ledger
        .spend("neuro", request("alice", pure(f64::NAN)))
        .await
        .expect_err("NaN loss");
    assert_eq!(err.reason(), "INVALID_PRIVACY_PARAMETERS");
    let err = ledger
        .spend("neuro", request("", pure(0.1)))
        .await
        .expect_err("no actor");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
    let mut bad = request("alice", pure(0.1));
    bad.reported_epsilon = f64::INFINITY;
    assert_eq!(
        ledger
            .spend("neuro", bad)
            .await
            .expect_err("infinite reported ε")
            .reason(),
        "INVALID_ARGUMENT"
    );
    let status = ledger.status("neuro").await.expect("status");
    assert!(status.entries.is_empty());
    assert_eq!(status.total, PrivacyLoss::default());

    // -0.0 is valid (not negative) and is stored as +0.0.
    let entry = ledger
        .spend("neuro", request("alice", pure(-0.0)))
        .await
        .expect("zero loss");
    assert!(entry.loss.epsilon.is_sign_positive());
    assert!(ledger.verify_totals("neuro").await.expect("verify").is_consistent());
}

async fn small_cell_tables_are_counted_apart(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    ledger
        .set_budget("neuro", budget(1.0, 0.0), "chair")
        .await
        .expect("set budget");
    let small = |loss| small_cell("alice", loss);
    // A small-cell entry cannot carry a loss: it is not a DP release of some small ε.
    let err = ledger
        .spend("neuro", small(pure(0.1)))
        .await
        .expect_err("loss on a small-cell entry");
    assert_eq!(err.reason(), "INVALID_ARGUMENT");
    let before = chrono::Utc::now().timestamp_millis() - 1;
    ledger
        .spend("neuro", small(PrivacyLoss::default()))
        .await
        .expect("small-cell");
    ledger.spend("neuro", request("alice", pure(0.25))).await.expect("dp");
    let after = chrono::Utc::now().timestamp_millis() + 1;
    let status = ledger.status("neuro").await.expect("status");
    let kinds: Vec<bool> = status.entries.iter().map(|e| e.differentially_private).collect();
    assert_eq!(kinds, [false, true], "the flag survives the database");
    let window = ledger.entries_between(before, after).await.expect("window");
    assert_eq!(window.len(), 2);
    assert!(
        ledger
            .entries_between(after, after + 1000)
            .await
            .expect("later")
            .is_empty()
    );
    assert!(ledger.verify_totals("neuro").await.expect("verify").is_consistent());
}

/// A 1-D count table by prefecture of one population (A=3, B=20, C=30), grouped by `labels`, protected
/// by the minimum-cell rule (10) as `tokumei stats` protects it.
fn prefecture_table(labels: [&str; 3]) -> LinkedTable {
    let counts = [3u64, 20, 30];
    let mut cells: std::collections::BTreeMap<&str, u64> = Default::default();
    for (l, c) in labels.iter().zip(counts) {
        *cells.entry(l).or_default() += c;
    }
    let cells: Vec<(Vec<String>, u64)> = cells.into_iter().map(|(l, c)| (vec![l.to_owned()], c)).collect();
    let table = CountTable::from_cells(&cells, 1).expect("table");
    let protected = protect(&table, &SmallCellRule::default()).expect("protect");
    let dimension = Dimension {
        column: "prefecture".into(),
        // The prefectures A, B and C in sorted order.
        labels: labels.iter().map(|l| ValueLabel::Shown((*l).to_owned())).collect(),
    };
    let rows = protected.table().row_labels.clone();
    LinkedTable::from_protected(&protected, vec![dimension], false, |i, _| vec![rows[i].clone()]).expect("linked")
}

/// The real audit over the population's stored tables and `table`: the number of recomputed entries.
fn audited(table: &LinkedTable, history: &SmallCellHistory) -> Result<(), usize> {
    let mut tables: Vec<LinkedTable> = history
        .same_population
        .iter()
        .map(|t| serde_json::from_str(&t.definition).expect("stored"))
        .collect();
    tables.push(table.clone());
    let audit = recoverable(&tables, &AuditLimits::default()).expect("audit");
    if audit.recovered.is_empty() {
        Ok(())
    } else {
        Err(audit.recovered.len())
    }
}

/// Two researchers publish at once two small-cell tables of one population; each is safe alone, together
/// they give back the suppressed prefecture A. The population lock makes one audit see the other's table:
/// exactly one is published, the other refused with nothing written.
async fn linked_small_cell_tables_are_audited_one_after_the_other(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    for project in ["neuro", "cardio"] {
        ledger
            .set_budget(project, budget(1.0, 0.0), "chair")
            .await
            .expect("set budget");
    }
    let by_prefecture = prefecture_table(["A", "B", "C"]);
    let a_with_c = prefecture_table(["AC", "B", "AC"]);
    for t in [&by_prefecture, &a_with_c] {
        let alone = recoverable(std::slice::from_ref(t), &AuditLimits::default()).expect("audit");
        assert!(alone.recovered.is_empty(), "each table is safe alone");
    }
    let small = small_cell("alice", PrivacyLoss::default());
    let publish = |project: &'static str, table: LinkedTable| {
        let ledger = ledger.clone();
        let small = small.clone();
        tokio::spawn(async move {
            let definition = serde_json::to_string(&table).expect("json");
            let publication = SmallCellPublication {
                population: "store:patients@7+opt_outs@2",
                source: "store:patients",
                definition: &definition,
            };
            ledger
                // Refusals counted as probes: the counting commit runs under the same race.
                .publish_small_cell(
                    project,
                    small,
                    publication,
                    |history| audited(&table, history),
                    |_| true,
                )
                .await
                .expect("database")
        })
    };
    let first = publish("neuro", by_prefecture.clone());
    let second = publish("cardio", a_with_c.clone());
    let outcomes = [first.await.expect("join"), second.await.expect("join")];
    let published = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(published, 1, "exactly one of the two tables is published: {outcomes:?}");
    let refused = outcomes.iter().find_map(|o| o.as_ref().err()).copied();
    assert_eq!(
        refused,
        Some(2),
        "A and B of the table by prefecture would be recomputed"
    );
    let stored = ledger
        .small_cell_tables("store:patients@7+opt_outs@2")
        .await
        .expect("stored");
    assert_eq!(stored.len(), 1);
    let entries: usize = [ledger.status("neuro").await, ledger.status("cardio").await]
        .into_iter()
        .map(|s| s.expect("status").entries.len())
        .sum();
    assert_eq!(entries, 1, "the refused table left no ledger entry");
    // The stored definition holds no suppressed count: only the published total and C.
    let shown: Vec<Option<u64>> = serde_json::from_str::<LinkedTable>(&stored[0].definition)
        .expect("stored")
        .entries
        .iter()
        .map(|e| e.count)
        .collect();
    assert!(!shown.contains(&Some(3)), "{shown:?}");
    // A regrouping that does not cut across it is published beside it.
    let a_with_b = prefecture_table(["AB", "AB", "C"]);
    let definition = serde_json::to_string(&a_with_b).expect("json");
    let third = ledger
        .publish_small_cell(
            "neuro",
            small.clone(),
            SmallCellPublication {
                population: "store:patients@7+opt_outs@2",
                source: "store:patients",
                definition: &definition,
            },
            |history| audited(&a_with_b, history),
            |_| true,
        )
        .await
        .expect("database");
    assert!(third.is_ok());
}

async fn the_platform_ceiling_holds_across_approvals(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    for p in ["a-2026-0001", "a-2026-0002"] {
        ledger
            .set_budget(p, budget(1.0, 0.0), "chair")
            .await
            .expect("set budget");
    }
    let now = chrono::Utc::now().timestamp_millis();
    let window = (now - 60_000, now + 3_600_000);
    // Before any ceiling: nothing stops the two approvals from spending 0.6 + 0.6 on one population.
    ledger
        .spend("a-2026-0001", request("alice", pure(0.6)))
        .await
        .expect("first");
    let set = ledger
        .set_platform_ceiling("2026-Q4", window, budget(1.0, 0.0), "op")
        .await
        .expect("ceiling");
    assert_eq!(set.spent, pure(0.6));
    // The second approval's own budget has room for 0.6; the platform does not.
    let err = ledger
        .spend("a-2026-0002", request("bob", pure(0.6)))
        .await
        .expect_err("over the ceiling");
    assert_eq!(err.reason(), "PLATFORM_CEILING_EXCEEDED", "{err}");
    assert!(
        ledger.status("a-2026-0002").await.expect("status").entries.is_empty(),
        "nothing written"
    );
    ledger
        .spend("a-2026-0002", request("bob", pure(0.4)))
        .await
        .expect("within the ceiling");
    // Small-cell tables carry no loss and are not refused by the ceiling.
    let small = small_cell("bob", PrivacyLoss::default());
    ledger.spend("a-2026-0002", small).await.expect("small-cell");
    let status = ledger.platform_status("2026-Q4", window).await.expect("status");
    assert!((status.spent.epsilon - 1.0).abs() < 1e-12, "{status:?}");
    assert_eq!(status.set_by.as_deref(), Some("op"));
    // Raising it admits again; a bad ceiling is refused.
    ledger
        .set_platform_ceiling("2026-Q4", window, budget(2.0, 0.0), "op")
        .await
        .expect("raise");
    ledger
        .spend("a-2026-0001", request("alice", pure(0.3)))
        .await
        .expect("after raising");
    assert!(
        ledger
            .set_platform_ceiling("2026-Q4", window, budget(-1.0, 0.0), "op")
            .await
            .is_err()
    );
    // Outside the period the ceiling does not apply.
    assert_eq!(
        ledger
            .platform_status("2027-Q1", (window.1, window.1 + 1))
            .await
            .expect("later")
            .ceiling,
        None
    );
}

async fn projects_are_listed(db: PolicyDb, _url: String) {
    let ledger = BudgetLedger::new(db);
    ledger
        .set_budget("b-project", budget(1.0, 0.0), "chair")
        .await
        .expect("b");
    ledger
        .set_budget("a-project", budget(2.0, 1e-7), "chair")
        .await
        .expect("a");
    ledger
        .set_budget("日本語のプロジェクト", budget(3.0, 0.0), "委員長")
        .await
        .expect("unicode");
    let projects = ledger.projects().await.expect("projects");
    let names: Vec<_> = projects.iter().map(|p| p.project.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"a-project") && names.contains(&"b-project") && names.contains(&"日本語のプロジェクト"));
    let a = projects.iter().find(|p| p.project == "a-project").expect("a listed");
    assert_eq!(a.budget, budget(2.0, 1e-7));
    let json = serde_json::to_value(&projects).expect("serialise");
    assert!(json.as_array().is_some_and(|a| a.len() == 3));
}

// ---------------------------------------------------------------------------------------------------------
// Property: after any sequence of budget settings and spends, the stored total is exactly the sum of
// the entries, the sequence is 1..n, and every decision is the one `accounting::admit` makes.
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    SetBudget(Budget),
    Spend(PrivacyLoss),
}

fn budget_strategy() -> impl Strategy<Value = Budget> {
    (
        prop_oneof![Just(0.0), Just(1.0), 0.0f64..4.0],
        prop_oneof![2 => Just(0.0), 1 => Just(1e-6), 1 => 1e-9f64..1e-5],
    )
        .prop_map(|(epsilon, delta)| Budget { epsilon, delta })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let loss = (
        prop_oneof![1 => Just(0.0), 1 => Just(0.2), 3 => 0.0f64..0.8],
        prop_oneof![3 => Just(0.0), 1 => 0.0f64..0.05],
        prop_oneof![3 => Just(0.0), 1 => 0.0f64..3e-7],
    )
        .prop_map(|(epsilon, rho, delta)| PrivacyLoss { epsilon, rho, delta });
    prop_oneof![1 => budget_strategy().prop_map(Op::SetBudget), 4 => loss.prop_map(Op::Spend)]
}

static PROP_CASE: AtomicUsize = AtomicUsize::new(0);

async fn check_sequence(ledger: &BudgetLedger, first: Budget, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let project = format!("prop-{}", PROP_CASE.fetch_add(1, Ordering::SeqCst));
    let err = |e: PolicyError| TestCaseError::fail(e.to_string());
    ledger.set_budget(&project, first, "chair").await.map_err(err)?;
    let mut model_budget = first;
    let mut model_total = PrivacyLoss::default();
    let mut model_entries = 0usize;
    for op in ops {
        match op {
            Op::SetBudget(b) => {
                let fits = accounting::spent(&model_total, &b)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .fits(&b);
                match ledger.set_budget(&project, b, "chair").await {
                    Ok(_) => {
                        prop_assert!(fits, "budget {b:?} accepted below spent {model_total:?}");
                        model_budget = b;
                    }
                    Err(PolicyError::BudgetBelowSpent { .. }) => prop_assert!(!fits, "budget {b:?} refused"),
                    Err(e) => return Err(err(e)),
                }
            }
            Op::Spend(loss) => {
                let decision = accounting::admit(&model_budget, &model_total, &loss)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                match (ledger.spend(&project, request("alice", loss)).await, decision) {
                    (Ok(entry), Ok(total)) => {
                        model_entries += 1;
                        prop_assert_eq!(entry.seq as usize, model_entries);
                        model_total = total.loss;
                    }
                    (Err(PolicyError::BudgetExceeded(got)), Err(expected)) => prop_assert_eq!(*got, expected),
                    (got, expected) => {
                        return Err(TestCaseError::fail(format!(
                            "ledger {got:?} but accounting {expected:?}"
                        )));
                    }
                }
            }
        }
        let check = ledger.verify_totals(&project).await.map_err(err)?;
        prop_assert!(check.is_consistent(), "{:?}", check);
        prop_assert_eq!(check.entries, model_entries);
        prop_assert_eq!(check.stored, model_total);
    }
    let status = ledger.status(&project).await.map_err(err)?;
    let seqs: Vec<i64> = status.entries.iter().map(|e| e.seq).collect();
    prop_assert_eq!(seqs, (1..=model_entries as i64).collect::<Vec<_>>());
    let recomputed = PrivacyLoss::total(status.entries.iter().map(|e| &e.loss));
    // Bit-for-bit, not approximately.
    prop_assert_eq!(status.total.epsilon.to_bits(), recomputed.epsilon.to_bits());
    prop_assert_eq!(status.total.rho.to_bits(), recomputed.rho.to_bits());
    prop_assert_eq!(status.total.delta.to_bits(), recomputed.delta.to_bits());
    prop_assert_eq!(status.project.budget, model_budget);
    Ok(())
}

fn run_property(target: Target) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ledger = BudgetLedger::new(rt.block_on(PolicyDb::open(&target.url)).expect("open"));
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (budget_strategy(), proptest::collection::vec(op_strategy(), 0..=12));
    let result = runner.run(&strategy, |(first, ops)| {
        rt.block_on(check_sequence(&ledger, first, ops))
    });
    rt.block_on(ledger.db().close());
    rt.block_on(target.cleanup());
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn property_totals_match_entries_sqlite() {
    run_property(sqlite_target());
}

#[test]
fn property_totals_match_entries_postgres() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(target) = rt.block_on(postgres_target()) {
        drop(rt);
        run_property(target);
    }
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(with_database("postgres://u@h:5/postgres", "x"), "postgres://u@h:5/x");
    assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    assert_eq!(
        with_database("postgres://u@h/db?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
}
