-- The operator's ceiling on the privacy loss of all differentially private releases together in one period
-- (a Japanese calendar quarter), over every approval: the whole research population's budget, beside each
-- approval's own. Portable SQL (SQLite and PostgreSQL). A spend locks the ceiling row of its period, so
-- spends of different projects in a period with a ceiling are serialised against it.
CREATE TABLE dp_platform_ceilings (
    period           TEXT             NOT NULL PRIMARY KEY,
    from_ms          BIGINT           NOT NULL,
    to_ms            BIGINT           NOT NULL,
    epsilon          DOUBLE PRECISION NOT NULL,
    delta            DOUBLE PRECISION NOT NULL,
    set_at           TEXT             NOT NULL,
    set_by           TEXT             NOT NULL
);
