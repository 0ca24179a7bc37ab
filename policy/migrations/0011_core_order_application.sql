-- The approval a statistics table or a release plan was asked under, kept after the order's payload is emptied, so
-- that its result is given out only while that approval still stands: a revoked approval's tables stop at once.
-- Portable SQL.
ALTER TABLE core_orders ADD COLUMN application TEXT;
