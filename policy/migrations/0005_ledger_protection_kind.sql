-- Whether a ledger entry paid for a differentially private release (1) or records a small-cell table (0),
-- which is a convention, not a guarantee, and must never read as "epsilon = 0". Portable SQL (BIGINT on both
-- SQLite and PostgreSQL); entries written before this column existed are classified by their mechanism.
ALTER TABLE dp_ledger ADD COLUMN differentially_private BIGINT NOT NULL DEFAULT 1;
UPDATE dp_ledger SET differentially_private = 0 WHERE mechanism LIKE 'small-cell%';
