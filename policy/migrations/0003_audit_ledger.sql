-- Audit ledger: the hash-chained, ed25519-signed record of every action (policy/src/audit_ledger/).
--
-- Portable SQL (SQLite and PostgreSQL). Hashes and signatures are lower-case hex TEXT. The append-only
-- triggers differ between the two servers, so they are installed in code on every open
-- (audit_ledger::install_append_only_guards), not here.

-- Every entry, append-only. seq is 1, 2, ... with no gaps, allocated inside the appending transaction,
-- which holds the audit_head row's lock. Every column except hash and signature is part of the entry's
-- canonical bytes; see the module documentation for the exact encoding.
CREATE TABLE audit_entries (
    seq        BIGINT NOT NULL PRIMARY KEY,
    -- Unix milliseconds; never decreases with seq.
    at_ms      BIGINT NOT NULL,
    -- The same instant, RFC 3339 UTC with milliseconds.
    at         TEXT   NOT NULL,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    resource   TEXT   NOT NULL,
    -- 'ok', 'denied' or 'failed'.
    outcome    TEXT   NOT NULL,
    reason     TEXT,
    source     TEXT,
    -- RFC 8785 canonical JSON object, hashed byte for byte.
    details    TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL,
    key_id     TEXT   NOT NULL,
    signature  TEXT   NOT NULL
);

-- Time-window queries (entries, export).
CREATE INDEX audit_entries_at_ms ON audit_entries (at_ms);

-- The one-row head: the last entry's seq, hash and time. Every append UPDATEs it first (taking SQLite's
-- write lock or PostgreSQL's row lock, which serialises appenders), then advances it in the same
-- transaction. Verification compares it with the last entry, which catches removal of the newest entries.
CREATE TABLE audit_head (
    id         BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    last_seq   BIGINT NOT NULL,
    last_hash  TEXT   NOT NULL,
    last_at_ms BIGINT NOT NULL
);

INSERT INTO audit_head (id, last_seq, last_hash, last_at_ms)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);
