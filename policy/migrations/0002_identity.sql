-- Identity: organisations, users, roles, recovery codes and sessions.
--
-- Portable SQL as in 0001 (BIGINT, TEXT; no AUTOINCREMENT/SERIAL). Times are unix milliseconds in BIGINT
-- columns (*_ms) for arithmetic, with an RFC 3339 copy where people read them. Secrets are stored only as
-- hashes, except the TOTP secret, which verifying a code needs in the clear (see users.totp_secret).

-- Organisations users belong to (universities, hospitals, the committee's secretariat, the operator).
CREATE TABLE organisations (
    id                    TEXT   NOT NULL PRIMARY KEY,
    name                  TEXT   NOT NULL,
    created_at_ms         BIGINT NOT NULL,
    created_at            TEXT   NOT NULL
);

-- People (kind 'person': password + TOTP) and service identities (kind 'service': a hospital, username =
-- its 10-digit institution code, authenticated by the SHA-256 of its client certificate).
-- Every login first UPDATEs its user's row, so the lockout counter and the TOTP replay guard
-- (totp_last_step) of one user are read and written by one login at a time.
CREATE TABLE users (
    username              TEXT   NOT NULL PRIMARY KEY,
    display_name          TEXT   NOT NULL,
    organisation          TEXT   NOT NULL REFERENCES organisations (id),
    kind                  TEXT   NOT NULL CHECK (kind IN ('person', 'service')),
    status                TEXT   NOT NULL CHECK (status IN ('invited', 'pending_totp', 'active', 'disabled')),
    -- argon2id PHC string; NULL until enrolment (and always for services).
    password_hash         TEXT,
    -- TOTP shared secret, base32, in the clear: the server must compute the same HMAC as the phone.
    -- Protect the database accordingly (file mode 0600 / database access control).
    totp_secret           TEXT,
    -- Last TOTP time step accepted (unix seconds / 30): codes of this step or earlier are refused.
    totp_last_step        BIGINT,
    -- Consecutive failed logins since the last success, and the end of the current lock.
    failed_attempts       BIGINT NOT NULL,
    locked_until_ms       BIGINT,
    -- SHA-256 (hex) of the one-time invitation code, until it is used; and its expiry.
    invitation_hash       TEXT,
    invitation_expires_ms BIGINT,
    -- Lower-case hex SHA-256 of the DER client certificate (services only).
    certificate_sha256    TEXT   UNIQUE,
    created_at_ms         BIGINT NOT NULL,
    created_at            TEXT   NOT NULL,
    updated_at_ms         BIGINT NOT NULL,
    last_login_ms         BIGINT
);

-- Roles by their stable names (Role::as_str). No CHECK on the name: adding a role must not need a table
-- rebuild on SQLite; the code refuses unknown names when reading.
CREATE TABLE user_roles (
    username              TEXT   NOT NULL REFERENCES users (username),
    role                  TEXT   NOT NULL,
    PRIMARY KEY (username, role)
);

-- Single-use recovery codes: only their SHA-256 (80-bit random codes need no slow hash).
CREATE TABLE recovery_codes (
    username              TEXT   NOT NULL REFERENCES users (username),
    code_hash             TEXT   NOT NULL,
    created_at_ms         BIGINT NOT NULL,
    used_at_ms            BIGINT,
    PRIMARY KEY (username, code_hash)
);

-- Every session a login opened: a token is accepted only while its row exists and is not revoked.
CREATE TABLE sessions (
    session_id            TEXT   NOT NULL PRIMARY KEY,
    username              TEXT   NOT NULL REFERENCES users (username),
    -- 'password_totp' or 'password_recovery_code'.
    auth_method           TEXT   NOT NULL,
    -- Where the login came from (client address or 'cli'), as the front-end reported it.
    source                TEXT   NOT NULL,
    issued_at_ms          BIGINT NOT NULL,
    issued_at             TEXT   NOT NULL,
    expires_at_ms         BIGINT NOT NULL,
    revoked_at_ms         BIGINT
);

CREATE INDEX sessions_by_username ON sessions (username);

-- One-off facts about the directory. 'bootstrapped' is inserted by the creation of the first operator, so
-- two concurrent bootstraps cannot both succeed.
CREATE TABLE identity_meta (
    name                  TEXT   NOT NULL PRIMARY KEY,
    value                 TEXT   NOT NULL
);
