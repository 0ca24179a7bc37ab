-- Small-cell tables refused because, with earlier tables of their population, they would give a suppressed cell
-- back. A refusal depends on the data (which cells are small), so it answers a question; an approval may ask only
-- a few before its small-cell tables close (differentially private tables stay open). Portable SQL.
CREATE TABLE small_cell_refusals (
    project      TEXT   NOT NULL,
    population   TEXT   NOT NULL,
    at_ms        BIGINT NOT NULL
);
CREATE INDEX small_cell_refusals_project ON small_cell_refusals (project);
