//! The audit ledger against both backends, with the same test bodies: appends, verification of the whole
//! chain, every kind of tampering (edit, drop, swap, re-sign, forge), the append-only guards, concurrent
//! appenders, inspection bundles checked offline, and a clock stepping backwards.
//!
//! Every body is an `async fn(PolicyDb, url)`; `on_both_backends!` (tests/support) runs it on a fresh SQLite
//! file and on a fresh PostgreSQL database (from `TOKUMEI_TEST_PG_URL`; skipped without it unless
//! `TOKUMEI_REQUIRE_SERVERS` is set). Tampering goes through raw SQL after dropping the triggers, as a
//! database superuser would.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use sqlx::Executor;
use tokumei_policy::audit_ledger::{
    AuditEntry, AuditEvent, AuditLedger, GENESIS_HASH, InspectionBundle, LedgerHead, Outcome, Problem, VerifyReport,
    entry_hash, verify_bundle, verify_bundle_with_keys,
};
use tokumei_policy::{Backend, PolicyDb, ServiceKey, SignaturePurpose};

on_both_backends!(
    append_fifty_and_verify,
    edited_byte_is_named,
    dropped_middle_entry_is_named,
    dropped_last_entry_is_caught_by_the_head,
    swapped_entries_are_named,
    entry_resigned_with_another_key_is_named,
    guards_refuse_changes_and_forged_inserts_are_detected,
    guards_are_restored_on_open,
    concurrent_appenders_build_one_chain,
    exported_window_verifies_offline_and_tampering_is_named,
    clock_going_backwards_never_reorders,
    ledger_survives_a_restart,
    invalid_events_write_nothing,
    ledger_keys_have_periods,
);

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn service_key() -> ServiceKey {
    ServiceKey::from_seed(&[42; 32])
}

/// A ledger reading 7 entries per query, so that verification and export cross page boundaries (tampering
/// at seq 20/21 straddles one).
fn small_pages(db: PolicyDb) -> AuditLedger {
    AuditLedger::new(db, service_key()).with_page_size(7)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 9, 0, 0).single().expect("valid time")
}

/// Event number `i`: varied actors, actions, outcomes and details.
fn event(i: usize) -> AuditEvent {
    let (action, outcome) = match i % 5 {
        0 => ("login.success", Outcome::Ok),
        1 => ("login.failure", Outcome::Denied),
        2 => ("vote", Outcome::Ok),
        3 => ("release.build", Outcome::Failed),
        _ => ("sql", Outcome::Ok),
    };
    let mut e = AuditEvent::new(
        format!("user-{i}"),
        action,
        format!("application A-2026-{i:04}"),
        outcome,
    )
    .source(if i.is_multiple_of(2) { "cli" } else { "192.0.2.10" })
    .details(json!({"n": i, "note": format!("entry {i}"), "ε": 0.25, "列": ["a", "b"]}));
    if outcome != Outcome::Ok {
        e = e.reason("AUTHENTICATION_FAILED");
    }
    e
}

/// Appends `n` events, one minute apart from `t0`.
async fn fill(ledger: &AuditLedger, n: usize) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    for i in 0..n {
        let at = t0() + Duration::minutes(i as i64);
        entries.push(ledger.append(&event(i), at).await.expect("append"));
    }
    entries
}

/// Drops every trigger on the ledger's tables, as a superuser bypassing the guards would.
async fn drop_guards(db: &PolicyDb) {
    let triggers = [
        ("audit_entries", "audit_entries_no_update"),
        ("audit_entries", "audit_entries_no_delete"),
        ("audit_entries", "audit_entries_no_truncate"),
        ("audit_entries", "audit_entries_extend_head"),
        ("audit_head", "audit_head_forward_only"),
        ("audit_head", "audit_head_no_delete"),
        ("audit_head", "audit_head_no_truncate"),
    ];
    for (table, trigger) in triggers {
        let sql = match db.backend() {
            Backend::Sqlite => format!("DROP TRIGGER IF EXISTS {trigger}"),
            Backend::Postgres => format!("DROP TRIGGER IF EXISTS {trigger} ON {table}"),
        };
        db.pool().execute(sql.as_str()).await.expect("drop trigger");
    }
}

async fn raw(db: &PolicyDb, sql: &str) -> Result<u64, sqlx::Error> {
    Ok(db.pool().execute(sql).await?.rows_affected())
}

async fn set_text(db: &PolicyDb, seq: i64, column: &str, value: &str) {
    let changed = sqlx::query(&format!("UPDATE audit_entries SET {column} = $1 WHERE seq = $2"))
        .bind(value)
        .bind(seq)
        .execute(db.pool())
        .await
        .expect("tamper")
        .rows_affected();
    assert_eq!(changed, 1);
}

async fn insert_raw(db: &PolicyDb, e: &AuditEntry) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_entries (seq, at_ms, at, actor, action, resource, outcome, reason, source, details, \
         prev_hash, hash, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(e.seq)
    .bind(e.at_ms)
    .bind(&e.at)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.resource)
    .bind(&e.outcome)
    .bind(e.reason.as_deref())
    .bind(e.source.as_deref())
    .bind(&e.details)
    .bind(&e.prev_hash)
    .bind(&e.hash)
    .bind(&e.key_id)
    .bind(&e.signature)
    .execute(db.pool())
    .await
    .map(|_| ())
}

/// One byte of `s` changed (its first ASCII letter flipped), so the length stays the same.
fn flip_a_byte(s: &str) -> String {
    let mut bytes = s.as_bytes().to_vec();
    let i = bytes
        .iter()
        .position(u8::is_ascii_lowercase)
        .expect("a lower-case letter");
    bytes[i] ^= 0x01;
    String::from_utf8(bytes).expect("still UTF-8")
}

#[track_caller]
fn assert_bad(report: &VerifyReport, seq: Option<i64>, problem: Problem) {
    let bad = report
        .first_bad
        .as_ref()
        .unwrap_or_else(|| panic!("tampering not detected: {report}"));
    assert_eq!((bad.seq, bad.problem), (seq, problem), "{report}");
    assert!(!report.is_ok());
}

async fn verify(ledger: &AuditLedger) -> VerifyReport {
    ledger.verify(&ledger.public_key()).await.expect("verify runs")
}

// ---------------------------------------------------------------------------------------------------------
// Test bodies
// ---------------------------------------------------------------------------------------------------------

async fn append_fifty_and_verify(db: PolicyDb, _url: String) {
    let ledger = small_pages(db);
    let empty = verify(&ledger).await;
    assert!(empty.is_ok(), "{empty}");
    assert_eq!(empty.head, LedgerHead::genesis());
    assert_eq!(empty.entries_checked, 0);

    let entries = fill(&ledger, 50).await;
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    assert_eq!(entries[0].prev_hash, GENESIS_HASH);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    let first = &entries[0];
    assert_eq!(first.at, "2026-04-01T09:00:00.000Z");
    assert_eq!(first.outcome_kind(), Some(Outcome::Ok));
    assert_eq!(first.details_value().expect("details")["列"], json!(["a", "b"]));
    assert_eq!(entries[1].reason.as_deref(), Some("AUTHENTICATION_FAILED"));
    assert_eq!(entries[1].outcome, "denied");

    let last = entries.last().expect("50 entries");
    let head = LedgerHead {
        seq: 50,
        hash: last.hash.clone(),
    };
    assert_eq!(ledger.head().await.expect("head"), head);
    let report = verify(&ledger).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries_checked, 50);
    assert_eq!(report.head, head);
    assert_eq!(report.verified_through, head);
    assert!(report.to_string().starts_with("ok: 50 entries verified"), "{report}");
    // The page size changes nothing but memory.
    for rows in [1, 49, 50, 10_000] {
        let paged = AuditLedger::new(ledger.db().clone(), service_key()).with_page_size(rows);
        assert_eq!(verify(&paged).await, report, "page size {rows}");
        let bundle = paged.export(t0(), t0() + Duration::days(1)).await.expect("export");
        assert_eq!(bundle.entries, entries, "page size {rows}");
    }

    // What is read back is what was appended.
    assert_eq!(ledger.entries_by_seq(1, 50).await.expect("by seq"), entries);
    let window = ledger
        .entries(t0() + Duration::minutes(10), t0() + Duration::minutes(20))
        .await
        .expect("by time");
    assert_eq!(window, entries[10..20]);

    // Another key does not vouch for these entries.
    let stranger = ServiceKey::from_seed(&[1; 32]).public();
    let report = ledger.verify(&stranger).await.expect("verify runs");
    assert_bad(&report, Some(1), Problem::UnknownKey);
    let report = ledger
        .verify_with_keys(&[stranger, ledger.public_key()])
        .await
        .expect("verify runs");
    assert!(report.is_ok(), "{report}");
}

async fn edited_byte_is_named(db: PolicyDb, _url: String) {
    let ledger = small_pages(db.clone());
    let entries = fill(&ledger, 30).await;
    drop_guards(&db).await;

    set_text(&db, 17, "actor", &flip_a_byte(&entries[16].actor)).await;
    let report = verify(&ledger).await;
    assert_bad(&report, Some(17), Problem::HashMismatch);
    assert_eq!(report.entries_checked, 16);
    assert_eq!(report.verified_through.seq, 16);
    assert!(
        report.to_string().contains("entry 17: hash mismatch (entry changed)"),
        "{report}"
    );

    // Restore it: the ledger verifies again, so the detection was about that byte.
    set_text(&db, 17, "actor", &entries[16].actor).await;
    assert!(verify(&ledger).await.is_ok());

    // A byte of the details (the digit of "n") of an earlier entry.
    let details = entries[8].details.replace("\"n\":8", "\"n\":9");
    assert_ne!(details, entries[8].details);
    set_text(&db, 9, "details", &details).await;
    assert_bad(&verify(&ledger).await, Some(9), Problem::HashMismatch);
}

async fn dropped_middle_entry_is_named(db: PolicyDb, _url: String) {
    let ledger = small_pages(db.clone());
    fill(&ledger, 30).await;
    drop_guards(&db).await;
    assert_eq!(
        raw(&db, "DELETE FROM audit_entries WHERE seq = 20")
            .await
            .expect("delete"),
        1
    );
    let report = verify(&ledger).await;
    assert_bad(&report, Some(21), Problem::SequenceGap);
    let message = &report.first_bad.as_ref().expect("bad").message;
    assert!(
        message.starts_with("sequence gap after 19 (entry removed)"),
        "{message}"
    );

    // Renumbering the rest to hide the gap breaks the hashes instead.
    for seq in 21..=30 {
        raw(
            &db,
            &format!("UPDATE audit_entries SET seq = {} WHERE seq = {seq}", seq - 1),
        )
        .await
        .expect("renumber");
    }
    assert_bad(&verify(&ledger).await, Some(20), Problem::HashMismatch);
}

async fn dropped_last_entry_is_caught_by_the_head(db: PolicyDb, _url: String) {
    let ledger = small_pages(db.clone());
    let entries = fill(&ledger, 10).await;
    drop_guards(&db).await;
    raw(&db, "DELETE FROM audit_entries WHERE seq = 10")
        .await
        .expect("delete");
    let report = verify(&ledger).await;
    assert_bad(&report, Some(10), Problem::Truncated);
    assert_eq!(report.entries_checked, 9);
    assert_eq!(report.head.seq, 10);
    assert_eq!(report.head.hash, entries[9].hash);

    // Moving the head back too hides it from the database alone: that is why the head is published.
    raw(
        &db,
        &format!(
            "UPDATE audit_head SET last_seq = 9, last_hash = '{}', last_at_ms = {}",
            entries[8].hash, entries[8].at_ms
        ),
    )
    .await
    .expect("move the head back");
    let report = verify(&ledger).await;
    assert!(report.is_ok(), "{report}");
    assert_ne!(
        report.head,
        LedgerHead {
            seq: 10,
            hash: entries[9].hash.clone()
        },
        "a published head no longer matches"
    );
}

async fn swapped_entries_are_named(db: PolicyDb, _url: String) {
    let ledger = small_pages(db.clone());
    fill(&ledger, 40).await;
    drop_guards(&db).await;
    for sql in [
        "UPDATE audit_entries SET seq = -1 WHERE seq = 10",
        "UPDATE audit_entries SET seq = 10 WHERE seq = 30",
        "UPDATE audit_entries SET seq = 30 WHERE seq = -1",
    ] {
        assert_eq!(raw(&db, sql).await.expect("swap"), 1);
    }
    assert_bad(&verify(&ledger).await, Some(10), Problem::HashMismatch);

    // Swapping adjacent entries is no different.
    for sql in [
        "UPDATE audit_entries SET seq = -1 WHERE seq = 10",
        "UPDATE audit_entries SET seq = 10 WHERE seq = 30",
        "UPDATE audit_entries SET seq = 30 WHERE seq = -1",
        "UPDATE audit_entries SET seq = -1 WHERE seq = 3",
        "UPDATE audit_entries SET seq = 3 WHERE seq = 4",
        "UPDATE audit_entries SET seq = 4 WHERE seq = -1",
    ] {
        raw(&db, sql).await.expect("swap");
    }
    assert_bad(&verify(&ledger).await, Some(3), Problem::HashMismatch);
}

async fn entry_resigned_with_another_key_is_named(db: PolicyDb, _url: String) {
    let ledger = small_pages(db.clone());
    let entries = fill(&ledger, 20).await;
    drop_guards(&db).await;
    let forger = ServiceKey::from_seed(&[9; 32]);

    // Changed, re-hashed, and signed by a key that is not the service's, while claiming the service's id.
    let mut forged = entries[11].clone();
    forged.actor = "someone-else".to_owned();
    forged.hash = entry_hash(&forged);
    forged.signature = hex::encode(forger.sign(SignaturePurpose::AuditEntry, &hex::decode(&forged.hash).expect("hex")));
    for (column, value) in [
        ("actor", &forged.actor),
        ("hash", &forged.hash),
        ("signature", &forged.signature),
    ] {
        set_text(&db, 12, column, value).await;
    }
    let report = verify(&ledger).await;
    assert_bad(&report, Some(12), Problem::BadSignature);
    assert!(report.to_string().contains("entry 12: bad signature"), "{report}");

    // The same with the forger's own key id: an untrusted key.
    forged.key_id = forger.public().key_id();
    forged.hash = entry_hash(&forged);
    forged.signature = hex::encode(forger.sign(SignaturePurpose::AuditEntry, &hex::decode(&forged.hash).expect("hex")));
    for (column, value) in [
        ("key_id", &forged.key_id),
        ("hash", &forged.hash),
        ("signature", &forged.signature),
    ] {
        set_text(&db, 12, column, value).await;
    }
    assert_bad(&verify(&ledger).await, Some(12), Problem::UnknownKey);

    // A signature for another purpose (here: made as a session token) does not pass as an entry's.
    let mut replayed = entries[11].clone();
    replayed.signature = hex::encode(service_key().sign(
        SignaturePurpose::SessionToken,
        &hex::decode(&replayed.hash).expect("hex"),
    ));
    for (column, value) in [
        ("actor", &replayed.actor),
        ("key_id", &replayed.key_id),
        ("hash", &replayed.hash),
        ("signature", &replayed.signature),
    ] {
        set_text(&db, 12, column, value).await;
    }
    assert_bad(&verify(&ledger).await, Some(12), Problem::BadSignature);
    set_text(&db, 12, "signature", &entries[11].signature).await;
    assert!(verify(&ledger).await.is_ok());
}

async fn guards_refuse_changes_and_forged_inserts_are_detected(db: PolicyDb, _url: String) {
    let ledger = small_pages(db.clone());
    let entries = fill(&ledger, 5).await;
    let refused = [
        "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2",
        "UPDATE audit_entries SET seq = seq + 100",
        "DELETE FROM audit_entries WHERE seq = 5",
        "DELETE FROM audit_entries",
        "DELETE FROM audit_head",
        "UPDATE audit_head SET last_seq = 4",
        "UPDATE audit_head SET last_hash = 'x'",
        "UPDATE audit_head SET last_seq = 6",
    ];
    for sql in refused {
        let err = raw(&db, sql).await.expect_err(sql);
        assert!(err.to_string().contains("audit ledger"), "{sql}: {err}");
    }
    if db.backend() == Backend::Postgres {
        for sql in ["TRUNCATE audit_entries", "TRUNCATE audit_head"] {
            let err = raw(&db, sql).await.expect_err(sql);
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
    }
    assert_eq!(
        ledger.entries_by_seq(1, 100).await.expect("entries"),
        entries,
        "nothing changed"
    );

    // A forged row that does not extend the head is refused...
    let mut forged = entries[4].clone();
    forged.seq = 6;
    forged.actor = "mallory".to_owned();
    forged.prev_hash = GENESIS_HASH.to_owned();
    forged.hash = entry_hash(&forged);
    let err = insert_raw(&db, &forged).await.expect_err("forged insert refused");
    assert!(err.to_string().contains("extend the head"), "{err}");

    // ...and once a superuser has dropped the guards, verification names it.
    drop_guards(&db).await;
    insert_raw(&db, &forged).await.expect("insert without guards");
    let report = verify(&ledger).await;
    assert_bad(&report, Some(6), Problem::BrokenLink);

    // Linked and signed correctly (as if the key had leaked) but never recorded in the head: still named.
    raw(&db, "DELETE FROM audit_entries WHERE seq = 6")
        .await
        .expect("clean up");
    forged.prev_hash = entries[4].hash.clone();
    forged.hash = entry_hash(&forged);
    forged.signature =
        hex::encode(service_key().sign(SignaturePurpose::AuditEntry, &hex::decode(&forged.hash).expect("hex")));
    insert_raw(&db, &forged).await.expect("insert without guards");
    assert_bad(&verify(&ledger).await, Some(6), Problem::HeadMismatch);

    // A row numbered before the start is seen too.
    raw(&db, "DELETE FROM audit_entries WHERE seq = 6")
        .await
        .expect("clean up");
    forged.seq = 0;
    insert_raw(&db, &forged).await.expect("insert without guards");
    assert_bad(&verify(&ledger).await, Some(0), Problem::OutOfOrder);
}

async fn guards_are_restored_on_open(db: PolicyDb, url: String) {
    let ledger = small_pages(db.clone());
    fill(&ledger, 3).await;
    drop_guards(&db).await;
    raw(&db, "UPDATE audit_entries SET source = source WHERE seq = 1")
        .await
        .expect("unguarded");
    // Any process opening the database puts them back (and re-running the install is harmless).
    let reopened = PolicyDb::open(&url).await.expect("reopen");
    tokumei_policy::audit_ledger::install_append_only_guards(&reopened)
        .await
        .expect("install again");
    raw(&db, "UPDATE audit_entries SET source = source WHERE seq = 1")
        .await
        .expect_err("guarded again");
    raw(&db, "DELETE FROM audit_entries WHERE seq = 3")
        .await
        .expect_err("guarded again");
    let ledger = AuditLedger::new(reopened.clone(), service_key());
    ledger.append(&event(3), t0()).await.expect("append still works");
    assert!(verify(&ledger).await.is_ok());
    reopened.close().await;
}

/// 8 appenders × 25 entries, half through a second pool (as a second process would): one gapless chain.
async fn concurrent_appenders_build_one_chain(db: PolicyDb, url: String) {
    let first = small_pages(db);
    let second_db = PolicyDb::open(&url).await.expect("second handle");
    let second = AuditLedger::new(second_db.clone(), service_key());
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let ledger = if task % 2 == 0 { first.clone() } else { second.clone() };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut seqs = Vec::new();
            for i in 0..25 {
                let e = AuditEvent::new(
                    format!("appender-{task}"),
                    "download",
                    format!("release R-{i}"),
                    Outcome::Ok,
                )
                .details(json!({"task": task, "i": i}));
                seqs.push(
                    ledger
                        .append(&e, Utc::now())
                        .await
                        .expect("append under contention")
                        .seq,
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.expect("task");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "each appender's entries are in its order"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    let report = verify(&second).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries_checked, 200);
    assert_eq!(report.head.seq, 200);
    let entries = first.entries_by_seq(1, 200).await.expect("entries");
    for task in 0..8 {
        let actor = format!("appender-{task}");
        assert_eq!(entries.iter().filter(|e| e.actor == actor).count(), 25);
    }
    assert!(entries.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    second_db.close().await;
}

async fn exported_window_verifies_offline_and_tampering_is_named(db: PolicyDb, _url: String) {
    let ledger = small_pages(db);
    let entries = fill(&ledger, 30).await;
    let key = ledger.public_key();
    // Seq n is appended n-1 minutes after t0: the window [10 min, 20 min) holds seqs 11..=20.
    let bundle = ledger
        .export(t0() + Duration::minutes(10), t0() + Duration::minutes(20))
        .await
        .expect("export");
    assert_eq!(
        bundle.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (11..=20).collect::<Vec<_>>()
    );
    assert_eq!(
        bundle.anchor,
        LedgerHead {
            seq: 10,
            hash: entries[9].hash.clone()
        }
    );
    assert_eq!(
        bundle.last,
        LedgerHead {
            seq: 20,
            hash: entries[19].hash.clone()
        }
    );
    assert_eq!(
        bundle.head,
        LedgerHead {
            seq: 30,
            hash: entries[29].hash.clone()
        }
    );
    assert_eq!(
        (bundle.from.as_str(), bundle.to.as_str()),
        ("2026-04-01T09:10:00.000Z", "2026-04-01T09:20:00.000Z")
    );
    assert_eq!(bundle.public_key, key.to_hex());
    let report = verify_bundle(&bundle, &key);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries_checked, 10);
    assert_eq!(report.verified_through, bundle.last);

    // Through JSON, as an inspector receives it.
    let text = serde_json::to_string_pretty(&bundle).expect("serialise");
    let parsed: InspectionBundle = serde_json::from_str(&text).expect("parse");
    assert_eq!(parsed, bundle);
    assert!(verify_bundle(&parsed, &key).is_ok());

    // One byte of the JSON text, inside entry 14.
    let needle = "\"actor\": \"user-13\"";
    assert_eq!(text.matches(needle).count(), 1);
    let tampered: InspectionBundle =
        serde_json::from_str(&text.replace(needle, "\"actor\": \"user-14\"")).expect("still JSON");
    assert_bad(&verify_bundle(&tampered, &key), Some(14), Problem::HashMismatch);

    // An entry dropped in the middle, at the start, at the end.
    let mut dropped = bundle.clone();
    dropped.entries.remove(4);
    assert_bad(&verify_bundle(&dropped, &key), Some(16), Problem::SequenceGap);
    let mut dropped = bundle.clone();
    dropped.entries.remove(0);
    assert_bad(&verify_bundle(&dropped, &key), Some(12), Problem::SequenceGap);
    let mut dropped = bundle.clone();
    dropped.entries.pop();
    assert_bad(&verify_bundle(&dropped, &key), Some(20), Problem::Truncated);

    // Two entries swapped in the array.
    let mut swapped = bundle.clone();
    swapped.entries.swap(2, 3);
    assert_bad(&verify_bundle(&swapped, &key), Some(14), Problem::SequenceGap);

    // Hiding a removal by editing the summary breaks its signature.
    let mut edited = bundle.clone();
    edited.entries.pop();
    edited.last = LedgerHead {
        seq: 19,
        hash: entries[18].hash.clone(),
    };
    assert_bad(&verify_bundle(&edited, &key), None, Problem::BundleSignature);

    // The key inside the bundle is not trusted: the inspector's key is.
    let stranger = ServiceKey::from_seed(&[3; 32]).public();
    assert_bad(&verify_bundle(&bundle, &stranger), None, Problem::UnknownKey);

    // Empty windows still pin their place; the whole ledger verifies from the genesis.
    let before = ledger.export(t0() - Duration::days(1), t0()).await.expect("export");
    assert!(before.entries.is_empty());
    assert_eq!(before.anchor, LedgerHead::genesis());
    assert!(verify_bundle(&before, &key).is_ok());
    let after = ledger
        .export(t0() + Duration::days(1), t0() + Duration::days(2))
        .await
        .expect("export");
    assert_eq!(
        after.anchor,
        LedgerHead {
            seq: 30,
            hash: entries[29].hash.clone()
        }
    );
    assert!(verify_bundle(&after, &key).is_ok());
    let whole = ledger
        .export(t0() - Duration::days(1), t0() + Duration::days(1))
        .await
        .expect("export");
    assert_eq!(whole.entries.len(), 30);
    assert_eq!(whole.last, whole.head);
    assert!(verify_bundle(&whole, &key).is_ok());
    ledger
        .export(t0(), t0() - Duration::minutes(1))
        .await
        .expect_err("reversed window");
}

async fn clock_going_backwards_never_reorders(db: PolicyDb, _url: String) {
    let ledger = small_pages(db);
    let late = t0() + Duration::minutes(10);
    let a = ledger.append(&event(0), late).await.expect("append");
    let b = ledger.append(&event(1), t0()).await.expect("clock stepped back");
    let c = ledger
        .append(&event(2), t0() + Duration::minutes(5))
        .await
        .expect("still behind");
    let d = ledger
        .append(&event(3), late + Duration::milliseconds(1))
        .await
        .expect("caught up");
    assert_eq!([a.at_ms, b.at_ms, c.at_ms], [late.timestamp_millis(); 3]);
    assert_eq!(b.at, a.at);
    assert_eq!(d.at_ms, late.timestamp_millis() + 1);
    assert!(verify(&ledger).await.is_ok());
    // Time windows stay contiguous runs of the chain.
    let bundle = ledger
        .export(late, late + Duration::milliseconds(1))
        .await
        .expect("export");
    assert_eq!(bundle.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(verify_bundle(&bundle, &ledger.public_key()).is_ok());
}

async fn ledger_survives_a_restart(db: PolicyDb, url: String) {
    let entries = {
        let ledger = small_pages(db.clone());
        fill(&ledger, 5).await
    };
    db.close().await;
    let db = PolicyDb::open(&url).await.expect("reopen");
    let ledger = small_pages(db.clone());
    let next = ledger.append(&event(5), t0()).await.expect("append after restart");
    assert_eq!(next.seq, 6);
    assert_eq!(next.prev_hash, entries[4].hash);
    assert_eq!(
        next.at_ms, entries[4].at_ms,
        "time never goes back, even across restarts"
    );
    assert!(verify(&ledger).await.is_ok());
    db.close().await;
}

async fn invalid_events_write_nothing(db: PolicyDb, _url: String) {
    let ledger = small_pages(db);
    let bad = [
        AuditEvent::new("", "vote", "application A", Outcome::Ok),
        AuditEvent::new("alice", "", "application A", Outcome::Ok),
        AuditEvent::new("alice", "vote now", "application A", Outcome::Ok),
        AuditEvent::new("alice", "vote", "application\0A", Outcome::Ok),
        AuditEvent::new("alice", "vote", "application A", Outcome::Ok).details(json!("not an object")),
        AuditEvent::new("alice", "vote", "application A", Outcome::Ok).details(json!({"id": u64::MAX})),
    ];
    for event in &bad {
        let err = ledger.append(event, t0()).await.expect_err("refused");
        assert_eq!(err.reason(), "INVALID_ARGUMENT", "{err}");
    }
    assert_eq!(ledger.head().await.expect("head"), LedgerHead::genesis());
    // Hostile free text (a login attempt's user name) is recorded faithfully.
    let hostile = AuditEvent::new(
        "root'; DROP TABLE audit_entries; --\n\u{1b}[2J",
        "login.failure",
        "user ?",
        Outcome::Denied,
    )
    .reason("AUTHENTICATION_FAILED")
    .source("203.0.113.9");
    let entry = ledger.append(&hostile, t0()).await.expect("recorded");
    assert_eq!(ledger.entries_by_seq(1, 1).await.expect("read")[0].actor, hostile.actor);
    assert_eq!(entry.details, "{}");
    assert!(verify(&ledger).await.is_ok());
}

/// A rotation of the ledger key hands over from one key to the next, and only that: entries of the old key before
/// the rotation and of the new one after verify (offline too, with both keys); the old key signing after its
/// rotation — the leaked key the rotation was for — is named; so is a key the verifier trusts (planted among the
/// retired ones) that no rotation handed over to, even from the first entry after the rotation.
async fn ledger_keys_have_periods(db: PolicyDb, _url: String) {
    let old_key = service_key();
    let new_key = ServiceKey::from_seed(&[43; 32]);
    let planted = ServiceKey::from_seed(&[44; 32]);
    let before = small_pages(db.clone());
    fill(&before, 5).await;
    let rotation = AuditEvent::new("policy-service", "key.rotated", "key ledger", Outcome::Ok)
        .source("cli")
        .details(json!({
            "old_key_id": old_key.public().key_id(),
            "new_key_id": new_key.public().key_id(),
            "new_public_key": new_key.public().to_hex(),
        }));
    before
        .append(&rotation, t0() + Duration::minutes(10))
        .await
        .expect("rotation");
    let after = AuditLedger::new(db.clone(), new_key.clone()).with_page_size(7);
    for i in 0..4 {
        after
            .append(&event(100 + i), t0() + Duration::minutes(20 + i as i64))
            .await
            .expect("append");
    }
    let trusted = [old_key.public(), new_key.public(), planted.public()];
    let report = after.verify_with_keys(&trusted).await.expect("verify runs");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries_checked, 10);
    let bundle = after.export(t0(), t0() + Duration::hours(1)).await.expect("export");
    assert!(verify_bundle_with_keys(&bundle, &trusted[..2]).is_ok());
    assert_bad(&verify_bundle(&bundle, &new_key.public()), Some(1), Problem::UnknownKey);

    // The old key signs on after its rotation.
    before
        .append(&event(200), t0() + Duration::minutes(30))
        .await
        .expect("append");
    let report = after.verify_with_keys(&trusted).await.expect("verify runs");
    assert_bad(&report, Some(11), Problem::KeyNotInForce);
}

/// A trusted key nothing handed over to vouches for nothing after the first entry.
#[tokio::test]
async fn a_planted_key_is_not_in_force() {
    let dir = tempfile::tempdir().expect("dir");
    let url = tokumei_policy::database::sqlite_url(&dir.path().join("p.db"));
    let db = PolicyDb::open(&url).await.expect("db");
    let ledger = small_pages(db.clone());
    fill(&ledger, 3).await;
    let planted = ServiceKey::from_seed(&[44; 32]);
    let forger = AuditLedger::new(db, planted.clone());
    forger
        .append(&event(9), t0() + Duration::minutes(9))
        .await
        .expect("append");
    let report = ledger
        .verify_with_keys(&[service_key().public(), planted.public()])
        .await
        .expect("verify runs");
    assert_bad(&report, Some(4), Problem::KeyNotInForce);
}
