-- Grants of committee, operator and administrator roles waiting for a second administrator (four eyes). An
-- invitation's claim is the hash of a code only the invitee knows. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE role_grants (
    id              TEXT   NOT NULL PRIMARY KEY,
    kind            TEXT   NOT NULL,
    username        TEXT   NOT NULL,
    display_name    TEXT,
    organisation    TEXT,
    roles           TEXT   NOT NULL,
    -- A change of roles: the roles held when it was asked for (it applies only if they are still the same).
    prior_roles     TEXT,
    claim           TEXT,
    requested_by    TEXT   NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    state           TEXT   NOT NULL,
    approved_by     TEXT,
    approved_at_ms  BIGINT
);
CREATE INDEX role_grants_state ON role_grants (state);
-- Every claim an invitation was ever made with: one claim opens one account, also after its code was used.
CREATE TABLE used_claims (
    claim           TEXT   NOT NULL PRIMARY KEY
);
