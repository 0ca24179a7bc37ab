//! The policy zone's database: one connection pool, two backends, one schema.
//!
//! A single-site deployment keeps everything in an embedded SQLite file (nothing to operate, backed up
//! with the rest of `TOKUMEI_HOME`); a deployment with several committee front-ends points every process
//! at one PostgreSQL database instead. Both are reached through sqlx's `Any` driver so that every query
//! in this crate is written once: the migrations in `policy/migrations/` use only portable SQL (`BIGINT`,
//! `DOUBLE PRECISION`, `TEXT`, no `AUTOINCREMENT`/`SERIAL`) and statements use numbered placeholders
//! (`$1`), which PostgreSQL understands natively and sqlx binds by number on SQLite as well.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

use crate::error::{PolicyError, Result};

/// How long a SQLite connection waits for another writer before giving up. Writers hold the lock
/// only for one short transaction, so reaching this means something is stuck, not merely busy.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;

/// The schema, embedded at compile time so a binary never runs against migrations it does not ship.
///
/// Listed by hand rather than through `sqlx::migrate!`: the macro needs sqlx's `macros` feature, which
/// compiles sqlx, both database drivers and SQLite's C amalgamation a second time for the compiler host
/// (several minutes of every cold build). The versions, SQL text and therefore checksums are exactly
/// what the macro produced, so databases migrated by earlier binaries are recognised as up to date.
const MIGRATIONS: [(i64, &str, &str); 14] = [
    (
        1,
        "dp budget ledger",
        include_str!("../migrations/0001_dp_budget_ledger.sql"),
    ),
    (2, "identity", include_str!("../migrations/0002_identity.sql")),
    (3, "audit ledger", include_str!("../migrations/0003_audit_ledger.sql")),
    (4, "committee", include_str!("../migrations/0004_committee.sql")),
    (
        5,
        "ledger protection kind",
        include_str!("../migrations/0005_ledger_protection_kind.sql"),
    ),
    (
        6,
        "platform ceilings",
        include_str!("../migrations/0006_platform_ceilings.sql"),
    ),
    (
        7,
        "small cell tables",
        include_str!("../migrations/0007_small_cell_tables.sql"),
    ),
    (
        8,
        "small cell refusals",
        include_str!("../migrations/0008_small_cell_refusals.sql"),
    ),
    (9, "role grants", include_str!("../migrations/0009_role_grants.sql")),
    (10, "core orders", include_str!("../migrations/0010_core_orders.sql")),
    (
        11,
        "core order application",
        include_str!("../migrations/0011_core_order_application.sql"),
    ),
    (
        12,
        "core order delivery",
        include_str!("../migrations/0012_core_order_delivery.sql"),
    ),
    (
        13,
        "core exclusions",
        include_str!("../migrations/0013_core_exclusions.sql"),
    ),
    (
        14,
        "analysis environment",
        include_str!("../migrations/0014_analysis_environment.sql"),
    ),
];

/// [`MIGRATIONS`] as a source for sqlx's migrator (versions ascending, each in its own transaction).
#[derive(Debug)]
struct EmbeddedMigrations;

impl<'s> sqlx::migrate::MigrationSource<'s> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::result::Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send + 's,
        >,
    > {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    (*sql).into(),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// A PostgreSQL server off this host is reached only over TLS that verifies the server and its name against a CA
/// the configuration names (`sslmode=verify-full` with `sslrootcert`, or `PGSSLROOTCERT`): the policy database
/// holds sessions, approvals and the audit ledger. `prefer`/`require` accept any certificate, `verify-ca` any name,
/// and without a root file the public web CAs would be trusted. On loopback or a Unix socket plaintext stays
/// possible (test set-ups, a database on the same host).
fn check_postgres_transport(url: &str) -> Result<()> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    let options: PgConnectOptions = url
        .parse()
        .map_err(|_| PolicyError::Invalid(format!("unreadable PostgreSQL URL {:?}", redact(url))))?;
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let root_named = url.contains("sslrootcert=") || std::env::var_os("PGSSLROOTCERT").is_some();
    if local || (matches!(options.get_ssl_mode(), PgSslMode::VerifyFull) && root_named) {
        return Ok(());
    }
    Err(PolicyError::Invalid(format!(
        "the PostgreSQL server {host} is off this host: connect over verified TLS (add \
         sslmode=verify-full&sslrootcert=CA.pem to the URL)"
    )))
}

/// Which server is behind a [`PolicyDb`]: the few places where SQL or set-up differ ask this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (the default: no server to run).
    Sqlite,
    /// A PostgreSQL server (several processes sharing one ledger).
    Postgres,
}

/// The policy zone's database, migrated and ready; cheap to clone (it is a connection pool), so
/// every service of the zone shares one.
#[derive(Debug, Clone)]
pub struct PolicyDb {
    pool: AnyPool,
    backend: Backend,
}

/// The default database when none is configured: an SQLite file under the installation's home, so a
/// fresh installation keeps its ledger without any set-up.
pub fn default_url(home: &Path) -> String {
    sqlite_url(&home.join("policy").join("policy.db"))
}

/// `sqlite://` URL of a file, with the characters sqlx would read as URL syntax (`%`, `?`, `#`)
/// percent-encoded, so any path round-trips.
pub fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

impl PolicyDb {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`) and brings the schema up to date.
    ///
    /// For SQLite the file and its parent directory are created if missing, the database is put in
    /// WAL mode (readers never block the writer) and connections wait for a busy writer instead of
    /// failing at once: concurrent spenders queue on the write lock.
    pub async fn open(url: &str) -> Result<PolicyDb> {
        sqlx::any::install_default_drivers();
        let (backend, connect_url) = if let Some(rest) = strip_sqlite_scheme(url) {
            (Backend::Sqlite, prepare_sqlite(rest)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            check_postgres_transport(url)?;
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(PolicyError::Invalid(format!(
                "unsupported database URL {:?}: expected sqlite://PATH or postgres://...",
                redact(url)
            )));
        };
        let options: AnyConnectOptions = connect_url.parse()?;

        if backend == Backend::Sqlite {
            // Switching into WAL needs an exclusive lock that the busy timeout does not wait for, so
            // do it once on a lone connection before the pool opens several.
            let mut conn = options.connect().await?;
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.close().await?;
        }

        let pool_options = match backend {
            Backend::Sqlite => AnyPoolOptions::new().max_connections(4).after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str())
                        .await?;
                    // A committed spend must survive a power cut: the ledger is the only record of it.
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(8),
        };
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Migrator::new(EmbeddedMigrations).await?.run(&pool).await?;
        crate::audit_ledger::install_guards(&pool, backend).await?;
        Ok(PolicyDb { pool, backend })
    }

    /// The backend, for the few statements that must differ.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for the zone's other stores (users, audit ledger) to share.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A read-only transaction over one snapshot, so readers racing writers (a verification or export
    /// racing appends, a budget status racing spends) see one consistent state: SQLite's deferred
    /// transaction pins its WAL snapshot at the first read; PostgreSQL's default READ COMMITTED would not,
    /// so ask for REPEATABLE READ.
    pub async fn begin_read(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    /// A transaction that writes. On SQLite it takes the write lock at its start (`BEGIN IMMEDIATE`): a deferred
    /// transaction that reads first and then writes cannot wait for another writer (SQLite answers
    /// "database is locked" at once when its snapshot is stale, whatever the busy timeout), whereas an
    /// immediate one queues on the lock like any single statement.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Closes every connection, waiting for them to be returned: lets a SQLite file be checkpointed and
    /// released before a restart or a copy.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The part after `sqlite://` or `sqlite:`, if `url` is a SQLite URL.
fn strip_sqlite_scheme(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
}

/// Creates the database file's directory and returns the URL sqlx should open, with `mode=rwc` so the
/// file itself is created too.
fn prepare_sqlite(rest: &str) -> Result<String> {
    let (path, params) = match rest.split_once('?') {
        Some((path, params)) => (path, Some(params)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Err(PolicyError::Invalid(
            "the policy database must be a file (sqlite://PATH): an in-memory ledger would forget spent budget"
                .to_owned(),
        ));
    }
    let file = PathBuf::from(percent_decode(path)?);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            PolicyError::Invalid(format!(
                "cannot create the policy database directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let params = match params {
        Some(p) if p.split('&').any(|kv| kv.starts_with("mode=")) => p.to_owned(),
        Some(p) if !p.is_empty() => format!("{p}&mode=rwc"),
        _ => "mode=rwc".to_owned(),
    };
    Ok(format!("sqlite://{path}?{params}"))
}

/// Decodes `%XX` escapes the way sqlx does, to find the directory to create.
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| PolicyError::Invalid(format!("database path {s:?} is not valid UTF-8")))
}

/// A URL for error messages: the password of `scheme://user:password@host` is never echoed.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _password)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_is_a_file_under_home() {
        assert_eq!(
            default_url(Path::new("/srv/tokumei")),
            "sqlite:///srv/tokumei/policy/policy.db"
        );
        assert_eq!(sqlite_url(Path::new("/a b/c?d#e%f")), "sqlite:///a b/c%3Fd%23e%25f");
    }

    #[test]
    fn sqlite_urls_get_create_mode_and_decoded_paths() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let file = dir.path().join("x%y?").join("db.sqlite");
        let url = sqlite_url(&file);
        let prepared =
            prepare_sqlite(strip_sqlite_scheme(&url).unwrap_or_default()).unwrap_or_else(|e| panic!("prepare: {e}"));
        assert!(prepared.ends_with("?mode=rwc"), "{prepared}");
        assert!(dir.path().join("x%y?").is_dir());
        assert!(prepare_sqlite(":memory:").is_err());
        assert_eq!(
            prepare_sqlite("/tmp/a.db?mode=ro").ok().as_deref(),
            Some("sqlite:///tmp/a.db?mode=ro")
        );
    }

    #[test]
    fn postgres_off_this_host_needs_verified_tls() {
        let refused = |url: &str| matches!(check_postgres_transport(url), Err(PolicyError::Invalid(_)));
        // The measured problem: connections to a remote policy database without TLS.
        assert!(refused("postgres://tokumei:pw@db.internal/policy"));
        assert!(refused("postgres://tokumei@10.0.40.5:5432/policy?sslmode=prefer"));
        assert!(
            refused("postgres://tokumei@10.0.40.5/policy?sslmode=require"),
            "require verifies nothing"
        );
        assert!(
            refused("postgres://tokumei@10.0.40.5/policy?sslmode=verify-ca&sslrootcert=/etc/tokumei/ca.pem"),
            "verify-ca accepts any name"
        );
        if std::env::var_os("PGSSLROOTCERT").is_none() {
            assert!(
                refused("postgres://tokumei@db.internal/policy?sslmode=verify-full"),
                "without a root file the public web CAs would be trusted"
            );
        }
        for ok in [
            "postgres://tokumei@db.internal/policy?sslmode=verify-full&sslrootcert=/etc/tokumei/ca.pem",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@localhost/postgres",
            "postgres://postgres@[::1]:5432/postgres",
            "postgresql:///policy?host=/var/run/postgresql",
        ] {
            assert!(check_postgres_transport(ok).is_ok(), "{ok}");
        }
        match check_postgres_transport("postgres://tokumei:hunter2@db.internal/policy") {
            Err(e) => assert!(!e.to_string().contains("hunter2"), "{e}"),
            Ok(()) => panic!("plaintext to a remote server was accepted"),
        }
    }

    #[test]
    fn passwords_are_not_echoed() {
        assert_eq!(redact("mysql://u:secret@h/db"), "mysql://u:***@h/db");
    }

    /// Every file in `policy/migrations/` is embedded, under the version and name the file carries:
    /// a migration added to the folder but not to [`MIGRATIONS`] would otherwise never run.
    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
            .expect("migrations directory")
            .map(|entry| {
                let path = entry.expect("entry").path();
                let stem = path.file_stem().and_then(|s| s.to_str()).expect("file name").to_owned();
                let (version, name) = stem.split_once('_').expect("VERSION_name.sql");
                let sql = std::fs::read_to_string(&path).expect("migration text");
                (version.parse().expect("numeric version"), name.replace('_', " "), sql)
            })
            .collect();
        files.sort();
        let embedded: Vec<(i64, String, String)> = MIGRATIONS
            .iter()
            .map(|(v, d, sql)| (*v, (*d).to_owned(), (*sql).to_owned()))
            .collect();
        assert_eq!(files, embedded);
    }
}
