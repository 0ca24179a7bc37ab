-- The remote analysis environment. Portable SQL.
-- Certified users (認定利活用者) the committee registered: only they may open a workspace of pseudonymised data.
CREATE TABLE certified_users (
    username        TEXT   NOT NULL PRIMARY KEY,
    reference       TEXT   NOT NULL,
    certified_by    TEXT   NOT NULL,
    certified_at_ms BIGINT NOT NULL,
    expires_on      TEXT   NOT NULL
);
-- Output requests of the workspaces: what a researcher asked to take out (aggregates: the content the output checker
-- reads; withheld when the checks refused it), the automatic checks' findings, the checker's decision and, once
-- released, the platform's signature. `id` is the number of the core order that prepared the request.
CREATE TABLE analysis_outputs (
    id              BIGINT NOT NULL PRIMARY KEY,
    application     TEXT   NOT NULL,
    result          BIGINT NOT NULL,
    analysis        TEXT   NOT NULL,
    computed_by     TEXT   NOT NULL,
    spec            TEXT   NOT NULL,
    requested_by    TEXT   NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    verdict         TEXT   NOT NULL,
    checks          TEXT   NOT NULL,
    content         TEXT   NOT NULL,
    state           TEXT   NOT NULL,
    checker         TEXT,
    decided_at_ms   BIGINT,
    comment         TEXT,
    release_order   BIGINT,
    content_sha256  TEXT,
    signature       TEXT,
    released_at_ms  BIGINT
);
CREATE INDEX analysis_outputs_application ON analysis_outputs (application);
