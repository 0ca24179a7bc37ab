//! The policy database over TLS against the real PostgreSQL server `scripts/test.sh` starts with a certificate
//! from a throwaway CA: a connection that verifies the server is encrypted (the server says so), one that trusts
//! another CA or names the server by a name its certificate does not carry is refused, and a plaintext URL to a
//! server off this host is refused before any connection (`database::check_postgres_transport`, unit-tested).

use super::support;

use sqlx::Row;
use tokumei_policy::PolicyDb;

/// The server's URL of a fresh database, and the two CA files, or `None` (with a note) without a server.
async fn tls_target() -> Option<(support::Target, String, String)> {
    let target = support::postgres_target().await?;
    match (
        std::env::var("TOKUMEI_TEST_PG_CA"),
        std::env::var("TOKUMEI_TEST_PG_OTHER_CA"),
    ) {
        (Ok(ca), Ok(other)) => Some((target, ca, other)),
        _ => {
            if std::env::var_os("TOKUMEI_REQUIRE_SERVERS").is_some() {
                panic!("TOKUMEI_REQUIRE_SERVERS is set but TOKUMEI_TEST_PG_CA is not (scripts/test.sh sets it)");
            }
            eprintln!("skipping: TOKUMEI_TEST_PG_CA is not set");
            None
        }
    }
}

fn with_params(url: &str, params: &str) -> String {
    format!("{url}{}{params}", if url.contains('?') { '&' } else { '?' })
}

#[tokio::test]
async fn the_policy_database_is_reached_over_verified_tls() {
    let Some((target, ca, other)) = tls_target().await else {
        return;
    };
    let url = target.url.clone();
    let verified = with_params(&url, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let db = PolicyDb::open(&verified).await.expect("open over verified TLS");
    let row = sqlx::query("SELECT CAST(ssl AS TEXT) AS ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(db.pool())
        .await
        .expect("pg_stat_ssl");
    assert_eq!(
        row.try_get::<String, _>("ssl").expect("ssl"),
        "true",
        "the server sees no TLS"
    );
    let version: String = row.try_get("version").expect("version");
    assert!(version.starts_with("TLSv1."), "{version}");
    db.close().await;

    // A server certificate from another CA, or a name it does not carry, is refused.
    let wrong_ca = with_params(&url, &format!("sslmode=verify-full&sslrootcert={other}"));
    assert!(
        PolicyDb::open(&wrong_ca).await.is_err(),
        "a server signed by an untrusted CA was accepted"
    );
    let by_name = with_params(
        &url.replacen("127.0.0.1", "localhost", 1),
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert!(
        PolicyDb::open(&by_name).await.is_err(),
        "a certificate for another name was accepted"
    );
}
