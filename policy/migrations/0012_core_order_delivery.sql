-- Release builds: the core's half is an order; the release zone's half (fingerprints, signatures, sealing) claims
-- the done order once ('claimed') and records the release it delivered (its identifier) when it is finished.
-- Portable SQL.
ALTER TABLE core_orders ADD COLUMN delivered TEXT;
