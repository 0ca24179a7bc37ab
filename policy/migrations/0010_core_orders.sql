-- Core operations ordered by operators and carried out by the core, which pulls them (it listens on nothing).
-- `payload` is the signed order (JSON) until the core reports; an erasure's payload, which names linkage keys,
-- is emptied then, so the committee zone keeps no key once the core has acted. Portable SQL.
CREATE TABLE core_orders (
    id              BIGINT NOT NULL PRIMARY KEY,
    operation       TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    signature       TEXT   NOT NULL,
    key_count       BIGINT NOT NULL,
    requested_by    TEXT   NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    state           TEXT   NOT NULL,
    taken_at_ms     BIGINT,
    finished_at_ms  BIGINT,
    result          TEXT,
    reason          TEXT
);
CREATE INDEX core_orders_state ON core_orders (state);
-- The next order number: one row, incremented as the first statement of a request's transaction, so racing
-- requests queue on its lock (PostgreSQL's row lock, SQLite's write lock) instead of colliding.
CREATE TABLE core_order_seq (
    one             INTEGER NOT NULL PRIMARY KEY,
    n               BIGINT NOT NULL
);
INSERT INTO core_order_seq (one, n) VALUES (1, 0);
