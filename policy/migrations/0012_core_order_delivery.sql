-- Release builds: the core's half is an order; the release zone's half (fingerprints, signatures, sealing) claims
-- the done order ('claimed', with the time of the claim: a claim the zone never finished may be taken again after
-- a lease) and records the release it delivered (its identifier) when it is finished, or 'stale' when the approval
-- changed after the core's half. The scope the policy service fixed is kept in its own column: the payload is
-- emptied when the core reports, and the zone's half is admitted against this, never against the core's report.
-- Portable SQL.
ALTER TABLE core_orders ADD COLUMN delivered TEXT;
ALTER TABLE core_orders ADD COLUMN delivery_claimed_at_ms BIGINT;
ALTER TABLE core_orders ADD COLUMN build_scope TEXT;

-- The release zone's intake key as the zone published it (over its pinned certificate): signed into every build
-- order, so the core seals packages to the key the policy service vouches for, never to a file beside the outbox.
-- The latest row is in force.
CREATE TABLE release_intake_keys (
    seq             BIGINT NOT NULL PRIMARY KEY,
    public_key      TEXT   NOT NULL,
    published_at_ms BIGINT NOT NULL
);
