-- The data-access committee: applications, their review, approvals, violations and provisions.
-- Portable SQL (SQLite and PostgreSQL): BIGINT, TEXT, DOUBLE PRECISION; identifiers are allocated inside
-- the writing transaction, which first locks the counter row.

-- Per-year counters for human-readable identifiers (A-2026-0001, V-2026-0001).
CREATE TABLE committee_counters (
    name             TEXT   NOT NULL PRIMARY KEY,
    last_value       BIGINT NOT NULL
);

-- One row per application (new, change request or umbrella).
CREATE TABLE applications (
    id                  TEXT   NOT NULL PRIMARY KEY,
    kind                TEXT   NOT NULL,
    -- For a change request: the approved application it amends.
    amends              TEXT   NULL REFERENCES applications (id),
    applicant           TEXT   NOT NULL,
    organisation        TEXT   NOT NULL,
    title               TEXT   NOT NULL,
    channel             TEXT   NOT NULL,
    -- The whole form as filed (JSON), kept verbatim for the committee's record.
    form_json           TEXT   NOT NULL,
    -- Fee estimate at filing (JSON), updated at the decision.
    fee_json            TEXT   NOT NULL,
    fee_total_yen       BIGINT NOT NULL,
    status              TEXT   NOT NULL,
    filed_at_ms         BIGINT NOT NULL,
    filed_at            TEXT   NOT NULL,
    decided_at_ms       BIGINT NULL,
    decided_at          TEXT   NULL,
    decided_by          TEXT   NULL,
    -- Tally at the decision.
    votes_in_favour     BIGINT NULL,
    votes_against       BIGINT NULL,
    -- Effective approval conditions (JSON); a change request's approval replaces its parent's.
    conditions_json     TEXT   NULL,
    conditions_revision BIGINT NOT NULL,
    revoked_at_ms       BIGINT NULL,
    revoked_reason      TEXT   NULL,
    downloads_used      BIGINT NOT NULL
);

CREATE INDEX applications_by_applicant ON applications (applicant);

-- Members the chair assigned; a recusal keeps the row (the record shows who stepped out and why).
CREATE TABLE review_assignments (
    application      TEXT   NOT NULL REFERENCES applications (id),
    member           TEXT   NOT NULL,
    assigned_by      TEXT   NOT NULL,
    assigned_at_ms   BIGINT NOT NULL,
    recused_at_ms    BIGINT NULL,
    recusal_reason   TEXT   NULL,
    PRIMARY KEY (application, member)
);

-- One vote per member per application, with the member's comment.
CREATE TABLE review_votes (
    application      TEXT   NOT NULL REFERENCES applications (id),
    member           TEXT   NOT NULL,
    in_favour        BIGINT NOT NULL,
    comment          TEXT   NOT NULL,
    at_ms            BIGINT NOT NULL,
    PRIMARY KEY (application, member)
);

-- Violations and the bans they carry (local and imported from other processors).
CREATE TABLE violations (
    id               TEXT   NOT NULL,
    source           TEXT   NOT NULL,
    subject_kind     TEXT   NOT NULL,
    subject          TEXT   NOT NULL,
    kind             TEXT   NOT NULL,
    description      TEXT   NOT NULL,
    application      TEXT   NULL,
    banned_until     TEXT   NULL,
    recorded_at_ms   BIGINT NOT NULL,
    recorded_at      TEXT   NOT NULL,
    recorded_by      TEXT   NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE INDEX violations_by_subject ON violations (subject_kind, subject);

-- What was provided to whom under which approval (the provisions register): releases, statistics.
CREATE TABLE provisions (
    application      TEXT   NOT NULL REFERENCES applications (id),
    seq              BIGINT NOT NULL,
    recipient        TEXT   NOT NULL,
    organisation     TEXT   NOT NULL,
    channel          TEXT   NOT NULL,
    description      TEXT   NOT NULL,
    rows_provided    BIGINT NOT NULL,
    at_ms            BIGINT NOT NULL,
    at               TEXT   NOT NULL,
    PRIMARY KEY (application, seq)
);
