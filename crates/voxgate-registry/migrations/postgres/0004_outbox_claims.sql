-- A node claims the alerts it is about to deliver, so nodes sharing one registry never POST
-- the same alert at the same time. A claim that outlives its node expires by itself.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT;
