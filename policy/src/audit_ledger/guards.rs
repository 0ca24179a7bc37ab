//! Append-only guards: database triggers that refuse to change or remove audit entries, so that no
//! command an operator can run — the CLI, an SQL console with the service's credentials, another
//! service's bug — rewrites the ledger. The chain and the signatures detect tampering; the triggers
//! prevent the easy kind, and turn the hard kind (a superuser dropping them first) into a deliberate act.
//!
//! The triggers:
//! - `audit_entries_no_update`, `audit_entries_no_delete` (and `audit_entries_no_truncate` on
//!   PostgreSQL): entries are never changed or removed.
//! - `audit_entries_extend_head`: a new entry must extend the head (`seq` = head + 1, `prev_hash` = head's
//!   hash) — the only insert [`AuditLedger::append`](super::AuditLedger::append) makes.
//! - `audit_head_forward_only`, `audit_head_no_delete` (and `audit_head_no_truncate`): the head row is
//!   either left as is (the lock-taking no-op update) or advanced by exactly one onto the entry just
//!   inserted; it is never removed or moved back.
//!
//! SQLite and PostgreSQL write triggers differently, so they are installed in code per backend rather than
//! in a migration, idempotently, on every [`PolicyDb::open`] — which also restores triggers someone
//! dropped.

use sqlx::{AnyPool, Executor};

use crate::database::{Backend, PolicyDb};
use crate::error::Result;

const SQLITE: &[&str] = &[
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries \
     BEGIN SELECT RAISE(ABORT, 'audit ledger is append-only: entries cannot be changed'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries \
     BEGIN SELECT RAISE(ABORT, 'audit ledger is append-only: entries cannot be removed'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_entries_extend_head BEFORE INSERT ON audit_entries \
     WHEN NOT EXISTS (SELECT 1 FROM audit_head h WHERE h.id = 1 AND h.last_seq = NEW.seq - 1 \
     AND h.last_hash = NEW.prev_hash) \
     BEGIN SELECT RAISE(ABORT, 'audit ledger is append-only: a new entry must extend the head'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_head_forward_only BEFORE UPDATE ON audit_head \
     WHEN NOT (NEW.id = OLD.id AND ( \
     (NEW.last_seq = OLD.last_seq AND NEW.last_hash = OLD.last_hash AND NEW.last_at_ms = OLD.last_at_ms) \
     OR (NEW.last_seq = OLD.last_seq + 1 AND EXISTS (SELECT 1 FROM audit_entries e WHERE e.seq = NEW.last_seq \
     AND e.hash = NEW.last_hash AND e.at_ms = NEW.last_at_ms)))) \
     BEGIN SELECT RAISE(ABORT, 'audit ledger head only moves forward, onto the entry just appended'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_head_no_delete BEFORE DELETE ON audit_head \
     BEGIN SELECT RAISE(ABORT, 'audit ledger head cannot be removed'); END",
];

const POSTGRES: &[&str] = &[
    // Serialises concurrent installers (two processes opening at once would otherwise race on the
    // function's catalog row: "tuple concurrently updated"); appends wait for the few milliseconds it takes.
    "LOCK TABLE audit_head IN SHARE ROW EXCLUSIVE MODE",
    "CREATE OR REPLACE FUNCTION tokumei_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN RAISE EXCEPTION 'audit ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME; END $$",
    "CREATE OR REPLACE FUNCTION tokumei_audit_extend_head() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF NOT EXISTS (SELECT 1 FROM audit_head h WHERE h.id = 1 AND h.last_seq = NEW.seq - 1 \
                      AND h.last_hash = NEW.prev_hash) THEN \
         RAISE EXCEPTION 'audit ledger is append-only: a new entry must extend the head (seq %)', NEW.seq; \
       END IF; \
       RETURN NEW; \
     END $$",
    "CREATE OR REPLACE FUNCTION tokumei_audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF NEW.id = OLD.id AND ( \
            (NEW.last_seq = OLD.last_seq AND NEW.last_hash = OLD.last_hash AND NEW.last_at_ms = OLD.last_at_ms) \
         OR (NEW.last_seq = OLD.last_seq + 1 AND EXISTS (SELECT 1 FROM audit_entries e \
              WHERE e.seq = NEW.last_seq AND e.hash = NEW.last_hash AND e.at_ms = NEW.last_at_ms))) THEN \
         RETURN NEW; \
       END IF; \
       RAISE EXCEPTION 'audit ledger head only moves forward, onto the entry just appended'; \
     END $$",
    "CREATE OR REPLACE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries \
     FOR EACH ROW EXECUTE FUNCTION tokumei_audit_refuse()",
    "CREATE OR REPLACE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries \
     FOR EACH ROW EXECUTE FUNCTION tokumei_audit_refuse()",
    "CREATE OR REPLACE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries \
     FOR EACH STATEMENT EXECUTE FUNCTION tokumei_audit_refuse()",
    "CREATE OR REPLACE TRIGGER audit_entries_extend_head BEFORE INSERT ON audit_entries \
     FOR EACH ROW EXECUTE FUNCTION tokumei_audit_extend_head()",
    "CREATE OR REPLACE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head \
     FOR EACH ROW EXECUTE FUNCTION tokumei_audit_head_forward()",
    "CREATE OR REPLACE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head \
     FOR EACH ROW EXECUTE FUNCTION tokumei_audit_refuse()",
    "CREATE OR REPLACE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head \
     FOR EACH STATEMENT EXECUTE FUNCTION tokumei_audit_refuse()",
];

/// Installs (or re-installs) the append-only triggers on `db`. Idempotent; [`PolicyDb::open`] runs it
/// after the migrations, so every process that opens the database restores them.
pub async fn install_append_only_guards(db: &PolicyDb) -> Result<()> {
    install_guards(db.pool(), db.backend()).await
}

/// [`install_append_only_guards`] before the [`PolicyDb`] exists (called from [`PolicyDb::open`]).
pub(crate) async fn install_guards(pool: &AnyPool, backend: Backend) -> Result<()> {
    match backend {
        Backend::Sqlite => {
            // One statement at a time in autocommit: each is atomic and waits on the busy timeout, where a
            // deferred transaction that first reads the schema could fail to upgrade to a write.
            for statement in SQLITE {
                pool.execute(*statement).await?;
            }
        }
        Backend::Postgres => {
            let mut tx = pool.begin().await?;
            for statement in POSTGRES {
                tx.execute(*statement).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}
