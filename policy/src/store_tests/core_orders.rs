//! The queue of operators' orders for the core, on SQLite and PostgreSQL: each order is handed out once, signed;
//! a report is accepted once, on a taken order; expired orders are never handed out; an erasure's keys leave the
//! committee zone's database once the core has reported.
//!
//! Every body is an `async fn(PolicyDb, url)`; `on_both_backends!` runs it on a fresh SQLite file and on a fresh
//! PostgreSQL database (from `TOKUMEI_TEST_PG_URL`; skipped without it unless `TOKUMEI_REQUIRE_SERVERS` is set).

use chrono::{DateTime, TimeDelta, Utc};
use tokumei_policy::core_orders::{
    BuildScope, CoreOperation, CoreOrder, CoreOrders, DELIVERY_LEASE, DELIVERY_WINDOW, Delivery, OrderOutcome,
    OrderState,
};
use tokumei_policy::{PolicyDb, ServiceKey, SignaturePurpose};

on_both_backends!(
    orders_are_handed_out_once_and_reported_once,
    expired_orders_are_never_handed_out,
    racing_requests_get_distinct_numbers,
    unfinished_orders_end_and_keep_no_key,
    only_the_policy_service_queues_orders,
    a_build_is_claimed_once_within_its_window_and_a_lapsed_claim_again,
    the_latest_published_intake_key_is_in_force
);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("instant")
}

fn erase(key: &str) -> CoreOperation {
    CoreOperation::Erase {
        linkage_keys: vec![key.to_owned()],
        hospital_pseudonym: None,
        request_id: "req-1".into(),
    }
}

async fn orders_are_handed_out_once_and_reported_once(db: PolicyDb, _url: String) {
    let queue = CoreOrders::new(db.clone());
    let key = ServiceKey::generate();
    let sign = |p: &[u8]| hex::encode(key.sign(SignaturePurpose::CoreOrder, p));
    let linkage_key = "ab".repeat(32);
    let first = queue
        .queue(erase(&linkage_key), "op", t0(), sign)
        .await
        .expect("queued");
    let second = queue
        .queue(CoreOperation::Compact, "op", t0(), sign)
        .await
        .expect("queued");
    assert_eq!((first.state, second.id), (OrderState::Queued, first.id + 1));

    // One at a time, oldest first, each once.
    let mut taken = queue.take(t0()).await.expect("take");
    taken.extend(queue.take(t0()).await.expect("take"));
    assert_eq!(taken.len(), 2);
    assert!(
        queue.take(t0()).await.expect("take again").is_empty(),
        "handed out twice"
    );
    // What is handed out verifies under the service key, for this purpose only, and reads back as the order.
    let (id, _, signed) = &taken[0];
    let signature = hex::decode(&signed.signature).expect("hex");
    assert!(
        key.public()
            .verify(SignaturePurpose::CoreOrder, signed.payload.as_bytes(), &signature)
    );
    assert!(!key.public().verify(
        SignaturePurpose::HospitalDirectory,
        signed.payload.as_bytes(),
        &signature
    ));
    let order: CoreOrder = serde_json::from_str(&signed.payload).expect("order");
    assert_eq!((order.id, &order.operation), (*id, &erase(&linkage_key)));

    let report = serde_json::json!({"rows_removed": 6, "files_destroyed": 7});
    let (operation, requested_by) = queue
        .report(first.id, &OrderOutcome::Done(report.clone()), t0())
        .await
        .expect("report");
    assert_eq!((operation, requested_by.as_str()), (erase(&linkage_key), "op"));
    // Once: a second report, or a report on an order never taken, is refused.
    for (id, outcome) in [
        (first.id, OrderOutcome::Done(report.clone())),
        (first.id + 10, OrderOutcome::Failed("X".into())),
    ] {
        assert!(queue.report(id, &outcome, t0()).await.is_err());
    }
    // Reports are JSON objects and reason codes, nothing else.
    for bad in [
        OrderOutcome::Done(serde_json::json!("text")),
        OrderOutcome::Failed("not a code".into()),
    ] {
        let e = queue.report(second.id, &bad, t0()).await.expect_err("refused");
        assert_eq!(e.reason(), "INVALID_ARGUMENT");
    }
    let done = queue.get(first.id, t0()).await.expect("status");
    assert_eq!((done.state, done.result), (OrderState::Done, Some(report)));
    // The key is gone from the database with the payload.
    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload FROM core_orders")
        .fetch_all(db.pool())
        .await
        .expect("payloads");
    assert!(payloads.iter().all(|p| !p.contains(&linkage_key)));
    queue
        .report(second.id, &OrderOutcome::Failed("ORDER_REPLAYED".into()), t0())
        .await
        .expect("a failure");
    let failed = queue.get(second.id, t0()).await.expect("status");
    assert_eq!(
        (failed.state, failed.reason.as_deref()),
        (OrderState::Failed, Some("ORDER_REPLAYED"))
    );

    // The service claims a report before settling it (a statistics table's audit): once; while it settles, the
    // order still reads as the core's, without a result.
    let third = queue
        .queue(CoreOperation::Status, "op", t0(), sign)
        .await
        .expect("queued");
    assert_eq!(queue.take(t0()).await.expect("take").len(), 1);
    let (operation, _) = queue.claim_report(third.id).await.expect("claimed");
    assert_eq!(operation, CoreOperation::Status);
    assert_eq!(
        queue.claim_report(third.id).await.expect_err("claimed twice").reason(),
        "INVALID_STATE"
    );
    let settling = queue.get(third.id, t0()).await.expect("status");
    assert_eq!((settling.state, settling.result), (OrderState::Taken, None));
    queue
        .report(third.id, &OrderOutcome::Done(serde_json::json!({"tables": []})), t0())
        .await
        .expect("reported");
}

async fn expired_orders_are_never_handed_out(db: PolicyDb, _url: String) {
    let queue = CoreOrders::new(db);
    let key = ServiceKey::generate();
    let sign = |p: &[u8]| hex::encode(key.sign(SignaturePurpose::CoreOrder, p));
    let s = queue
        .queue(CoreOperation::Status, "op", t0(), sign)
        .await
        .expect("queued");
    let later = t0() + TimeDelta::minutes(11);
    assert_eq!(queue.get(s.id, later).await.expect("status").state, OrderState::Expired);
    assert!(queue.take(later).await.expect("take").is_empty());
    assert_eq!(queue.get(s.id, t0()).await.expect("status").state, OrderState::Expired);
}

async fn racing_requests_get_distinct_numbers(db: PolicyDb, _url: String) {
    let queue = CoreOrders::new(db);
    let key = ServiceKey::generate();
    let asks = (0..8).map(|_| {
        let queue = queue.clone();
        let key = key.clone();
        async move {
            queue
                .queue(CoreOperation::Status, "op", t0(), |p| {
                    hex::encode(key.sign(SignaturePurpose::CoreOrder, p))
                })
                .await
                .map(|s| s.id)
        }
    });
    let ids: Vec<u64> = futures::future::join_all(asks)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every request queued");
    let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 8, "{ids:?}");
}

/// Orders that end without a report keep no key: expired before anyone took them, or taken by a core that stopped
/// before reporting (given up as ORDER_LOST ten minutes after expiry).
async fn unfinished_orders_end_and_keep_no_key(db: PolicyDb, _url: String) {
    let queue = CoreOrders::new(db.clone());
    let key = ServiceKey::generate();
    let sign = |p: &[u8]| hex::encode(key.sign(SignaturePurpose::CoreOrder, p));
    let (first, second) = ("cd".repeat(32), "ef".repeat(32));
    let never_taken = queue.queue(erase(&first), "op", t0(), sign).await.expect("queued");
    let later = t0() + TimeDelta::minutes(5);
    let lost = queue.queue(erase(&second), "op", later, sign).await.expect("queued");
    // The core takes one order at a time: the first, then the second.
    assert_eq!(queue.take(later).await.expect("take").len(), 1);
    assert_eq!(queue.take(later).await.expect("take").len(), 1);
    sqlx::query("UPDATE core_orders SET state = 'queued' WHERE id = $1")
        .bind(i64::try_from(never_taken.id).expect("id"))
        .execute(db.pool())
        .await
        .expect("put back");
    // Past the first's expiry, and past the second's expiry plus the grace for a report.
    let much_later = later + TimeDelta::minutes(21);
    assert!(queue.take(much_later).await.expect("take").is_empty());
    let a = queue.get(never_taken.id, much_later).await.expect("status");
    let b = queue.get(lost.id, much_later).await.expect("status");
    assert_eq!(a.state, OrderState::Expired);
    assert_eq!((b.state, b.reason.as_deref()), (OrderState::Failed, Some("ORDER_LOST")));
    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload FROM core_orders")
        .fetch_all(db.pool())
        .await
        .expect("payloads");
    assert!(
        payloads.iter().all(|p| !p.contains(&first) && !p.contains(&second)),
        "{payloads:?}"
    );
}

/// Only a front-end given the core-order key queues orders: the façade as every in-process command opens it (the
/// general service key only) refuses, after the role check; the policy service's (with the key) queues.
async fn only_the_policy_service_queues_orders(db: PolicyDb, _url: String) {
    use tokumei_policy::{Actor, AuthMethod, Origin, Policy, PolicyConfig, Role, system_clock};
    let operator = Actor {
        username: "op".into(),
        organisation: "platform".into(),
        roles: [Role::Operator].into_iter().collect(),
        auth: AuthMethod::PasswordTotp,
    };
    let in_process = Policy::new(
        db.clone(),
        ServiceKey::generate(),
        PolicyConfig::default(),
        system_clock(),
    )
    .expect("policy");
    let refused = in_process
        .request_core_operation(&operator, CoreOperation::Status, Origin("test"))
        .await
        .expect_err("no core-order key");
    assert_eq!(refused.reason(), "INVALID_STATE");
    let service = Policy::new(
        db.clone(),
        ServiceKey::generate(),
        PolicyConfig::default(),
        system_clock(),
    )
    .expect("policy")
    .with_core_order_key(ServiceKey::generate());
    let queued = service
        .request_core_operation(&operator, CoreOperation::Status, Origin("test"))
        .await
        .expect("queued");
    assert_eq!(queued.state, OrderState::Queued);
}

fn build(application: &str) -> CoreOperation {
    CoreOperation::BuildRelease {
        scope: BuildScope {
            application: application.to_owned(),
            approval_revision: 1,
            expires_on: chrono::NaiveDate::from_ymd_opt(2030, 1, 1).expect("date"),
            channel: tokumei_policy::committee::Channel::File,
            tables: vec![],
            recipients: vec!["rika".into()],
            cohort_filter: String::new(),
            privacy: None,
            link_releases: false,
        },
        intake_key: "cd".repeat(32),
    }
}

/// The release zone's claim on a done build: once; a claim never settled lapses after the lease and may be taken
/// again; a build older than the delivery window is never delivered; the scope handed out is the one queued, not
/// the core's report; a delivered or stale build is closed.
async fn a_build_is_claimed_once_within_its_window_and_a_lapsed_claim_again(db: PolicyDb, _url: String) {
    let queue = CoreOrders::new(db);
    let key = ServiceKey::generate();
    let sign = |p: &[u8]| hex::encode(key.sign(SignaturePurpose::CoreOrder, p));
    let not_deliverable = |e: tokumei_policy::PolicyError| assert_eq!(e.reason(), "BUILD_NOT_DELIVERABLE");
    let mut ids = Vec::new();
    for app in ["A-1", "A-2", "A-3"] {
        let queued = queue.queue(build(app), "op", t0(), sign).await.expect("queued");
        // Not done yet: nothing to claim.
        not_deliverable(queue.claim_delivery(queued.id, t0()).await.expect_err("not done"));
        queue.take(t0()).await.expect("take");
        // The core's report names another scope: what the claim hands out is the queued one.
        let report = serde_json::json!({"package_sha256": "ab".repeat(32), "scope": {"application": "A-9"}});
        queue
            .report(queued.id, &OrderOutcome::Done(report), t0())
            .await
            .expect("reported");
        ids.push(queued.id);
    }
    let claimed = queue.claim_delivery(ids[0], t0()).await.expect("claimed");
    assert_eq!(
        (claimed.scope.application.as_str(), claimed.requested_by.as_str()),
        ("A-1", "op")
    );
    not_deliverable(queue.claim_delivery(ids[0], t0()).await.expect_err("claimed twice"));
    // The zone never settled: after the lease, another claim may finish it (still within the window).
    let lapsed = t0() + DELIVERY_LEASE + TimeDelta::minutes(1);
    assert!(lapsed < t0() + DELIVERY_WINDOW);
    queue
        .claim_delivery(ids[0], lapsed)
        .await
        .expect("claimed again after the lease");
    queue
        .settle_delivery(ids[0], Delivery::Delivered("R-A-1-1"))
        .await
        .expect("settled");
    not_deliverable(queue.claim_delivery(ids[0], lapsed).await.expect_err("delivered"));
    // A failed half may be tried again; a stale one never.
    queue.claim_delivery(ids[1], t0()).await.expect("claimed");
    queue.settle_delivery(ids[1], Delivery::Again).await.expect("released");
    queue.claim_delivery(ids[1], t0()).await.expect("claimed again");
    queue.settle_delivery(ids[1], Delivery::Stale).await.expect("closed");
    not_deliverable(queue.claim_delivery(ids[1], t0()).await.expect_err("stale"));
    // Past the delivery window: never.
    let late = t0() + DELIVERY_WINDOW + TimeDelta::minutes(1);
    not_deliverable(queue.claim_delivery(ids[2], late).await.expect_err("too late"));
    // Settling what is not claimed is refused.
    assert!(queue.settle_delivery(ids[2], Delivery::Again).await.is_err());
}

/// The intake key the release zone publishes: the latest is in force, a republished one changes nothing, and
/// only an X25519-sized hex key is taken.
async fn the_latest_published_intake_key_is_in_force(db: PolicyDb, _url: String) {
    let keys = tokumei_policy::core_orders::IntakeKeys::new(db);
    assert_eq!(keys.current().await.expect("read"), None);
    assert!(keys.publish(&"ab".repeat(32), t0()).await.expect("published"));
    assert!(!keys.publish(&"ab".repeat(32), t0()).await.expect("the same again"));
    assert!(keys.publish(&"cd".repeat(32), t0()).await.expect("a new key"));
    assert_eq!(keys.current().await.expect("read"), Some("cd".repeat(32)));
    assert!(keys.publish("not a key", t0()).await.is_err());
    assert!(keys.publish(&"AB".repeat(32), t0()).await.is_err());
}
