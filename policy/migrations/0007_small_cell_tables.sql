-- Small-cell tables as published, so that a later table of the same population is audited against them
-- (tokumei_deid::linked_tables). A row holds the definition — each grouped column's values by rank with the labels the
-- researcher received, cells, the counts shown and which entries were suppressed — never a suppressed count, never a
-- value the table does not show. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE small_cell_tables (
    project      TEXT   NOT NULL,
    seq          BIGINT NOT NULL,
    population   TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    definition   TEXT   NOT NULL,
    at_ms        BIGINT NOT NULL,
    PRIMARY KEY (project, seq)
);
CREATE INDEX small_cell_tables_population ON small_cell_tables (population);
CREATE INDEX small_cell_tables_source ON small_cell_tables (project, source);
-- One row per population, written by every publication on it: two tables of one population are audited
-- one after the other, never both against the same earlier set.
CREATE TABLE small_cell_populations (
    population   TEXT   NOT NULL PRIMARY KEY,
    tables       BIGINT NOT NULL
);
