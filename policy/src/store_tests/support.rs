//! Test harness shared by the policy stores' tests: every body is an
//! `async fn(PolicyDb, url)`, and `on_both_backends!` runs it on a fresh SQLite file and on a fresh
//! PostgreSQL database (from `TOKUMEI_TEST_PG_URL`; skipped without it unless `TOKUMEI_REQUIRE_SERVERS` is
//! set, in which case a missing server fails the test).

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tokumei_policy::PolicyDb;

/// A database a test owns; dropped (PostgreSQL) or deleted with its directory (SQLite) afterwards.
pub struct Target {
    pub url: String,
    _dir: Option<TempDir>,
    /// (admin URL, database name) of a PostgreSQL database to drop afterwards.
    pg: Option<(String, String)>,
}

impl Target {
    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg {
            let mut conn = sqlx::postgres::PgConnection::connect(admin)
                .await
                .expect("connect to the admin database");
            conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .expect("drop test database");
        }
    }
}

pub fn sqlite_target() -> Target {
    let dir = tempfile::tempdir().expect("tempdir");
    // A nested directory that does not exist yet: `open` must create it.
    let url = tokumei_policy::default_url(dir.path());
    Target {
        url,
        _dir: Some(dir),
        pg: None,
    }
}

/// The PostgreSQL server to test against, or `None` (with a note) when none is configured.
fn pg_admin_url() -> Option<String> {
    match std::env::var("TOKUMEI_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var_os("TOKUMEI_REQUIRE_SERVERS").is_some() {
                panic!("TOKUMEI_REQUIRE_SERVERS is set but TOKUMEI_TEST_PG_URL is not");
            }
            eprintln!("skipping the PostgreSQL variant: TOKUMEI_TEST_PG_URL is not set");
            None
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

static PG_COUNTER: AtomicUsize = AtomicUsize::new(0);

pub async fn postgres_target() -> Option<Target> {
    let admin = pg_admin_url()?;
    let name = format!(
        "tokumei_t_{}_{}",
        std::process::id(),
        PG_COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .expect("connect to TOKUMEI_TEST_PG_URL");
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop stale database");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    conn.close().await.expect("close admin connection");
    Some(Target {
        url: with_database(&admin, &name),
        _dir: None,
        pg: Some((admin, name)),
    })
}

pub async fn run_on<F, Fut>(target: Target, test: F)
where
    F: FnOnce(PolicyDb, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = PolicyDb::open(&target.url).await.expect("open the policy database");
    test(db, target.url.clone()).await;
    target.cleanup().await;
}

pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(PolicyDb, String) -> Fut,
    Fut: Future<Output = ()>,
{
    run_on(sqlite_target(), test).await;
}

pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(PolicyDb, String) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(target) = postgres_target().await {
        run_on(target, test).await;
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::store_tests::support::run_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::store_tests::support::run_postgres(super::$name).await;
                }
            )*
        }
    };
}
