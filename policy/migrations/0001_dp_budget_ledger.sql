-- Differential-privacy budget ledger.
--
-- Portable SQL: every statement runs unchanged on SQLite and PostgreSQL (BIGINT, DOUBLE PRECISION, TEXT;
-- no AUTOINCREMENT/SERIAL: sequence numbers are allocated inside the writing transaction, which holds the
-- project row's lock). Floating-point columns hold the exact f64 bits Rust computed, so the running total
-- can be checked for exact equality against the sum of the entries.

-- One row per project: its approved budget and the running total of what has been spent.
-- Every spend first UPDATEs this row, so spends of one project are serialised by the row lock
-- (PostgreSQL) or the database write lock (SQLite).
CREATE TABLE dp_projects (
    project          TEXT             NOT NULL PRIMARY KEY,
    budget_epsilon   DOUBLE PRECISION NOT NULL,
    budget_delta     DOUBLE PRECISION NOT NULL,
    -- Running total in mechanism units (PrivacyLoss): pure epsilon, zCDP rho, delta spent outright.
    spent_epsilon    DOUBLE PRECISION NOT NULL,
    spent_rho        DOUBLE PRECISION NOT NULL,
    spent_delta      DOUBLE PRECISION NOT NULL,
    -- Number of budget settings so far (1 when created); matches the last dp_budget_changes.revision.
    revision         BIGINT           NOT NULL,
    created_at_ms    BIGINT           NOT NULL,
    created_at       TEXT             NOT NULL,
    created_by       TEXT             NOT NULL,
    updated_at_ms    BIGINT           NOT NULL,
    updated_at       TEXT             NOT NULL,
    updated_by       TEXT             NOT NULL
);

-- Every admitted spend, append-only. seq is 1, 2, ... per project.
CREATE TABLE dp_ledger (
    project          TEXT             NOT NULL REFERENCES dp_projects (project),
    seq              BIGINT           NOT NULL,
    at_ms            BIGINT           NOT NULL,
    at               TEXT             NOT NULL,
    actor            TEXT             NOT NULL,
    query            TEXT             NOT NULL,
    mechanism        TEXT             NOT NULL,
    epsilon          DOUBLE PRECISION NOT NULL,
    rho              DOUBLE PRECISION NOT NULL,
    delta            DOUBLE PRECISION NOT NULL,
    -- The (epsilon, delta) the release itself reports (e.g. its own zCDP conversion), for the researcher.
    reported_epsilon DOUBLE PRECISION NOT NULL,
    reported_delta   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (project, seq)
);

-- Every budget setting (creation and each change), append-only: who approved which budget, when.
CREATE TABLE dp_budget_changes (
    project          TEXT             NOT NULL REFERENCES dp_projects (project),
    revision         BIGINT           NOT NULL,
    at_ms            BIGINT           NOT NULL,
    at               TEXT             NOT NULL,
    actor            TEXT             NOT NULL,
    budget_epsilon   DOUBLE PRECISION NOT NULL,
    budget_delta     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (project, revision)
);
