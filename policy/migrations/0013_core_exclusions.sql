-- When an opt-out or an erasure last changed the core's research view, as the core reports it with every poll for
-- orders (unix ms, the core's clock): a release package the core read before it is not delivered. One row. Portable
-- SQL.
CREATE TABLE core_state (
    one                      INTEGER NOT NULL PRIMARY KEY,
    exclusions_changed_at_ms BIGINT  NOT NULL
);
INSERT INTO core_state (one, exclusions_changed_at_ms) VALUES (1, 0);
