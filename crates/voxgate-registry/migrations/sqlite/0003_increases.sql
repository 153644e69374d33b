-- Limit increases, usage peaks, automatic adjustments, alert webhooks and their outbox.

-- The busiest second of the minute, as one node saw it (nodes' rows are summed by readers;
-- for peaks the sum over nodes is an upper bound).
ALTER TABLE usage_minute ADD COLUMN peak_per_second INTEGER NOT NULL DEFAULT 0;

CREATE TABLE increase_requests (
    id               TEXT PRIMARY KEY,
    app_id           TEXT NOT NULL REFERENCES apps(id),
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    service          TEXT NOT NULL,
    dimension        TEXT NOT NULL,
    -- Values shaped as in the catalogue (JSON): a number, {per_second, burst} or {max}.
    requested        TEXT NOT NULL,
    granted          TEXT,
    business_case    TEXT NOT NULL,
    justification    TEXT NOT NULL,
    contact_email    TEXT NOT NULL,
    sizing           TEXT NOT NULL,
    evidence         TEXT NOT NULL,
    status           TEXT NOT NULL,
    reason           TEXT,
    grant_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    decided_by       TEXT
);
CREATE INDEX increase_by_app ON increase_requests(app_id, created_at);
CREATE INDEX increase_by_status ON increase_requests(status, created_at);

-- Automatic adjustments in force: one factor per (app, service, dimension).
CREATE TABLE adjustments (
    app_id     TEXT NOT NULL,
    service    TEXT NOT NULL,
    dimension  TEXT NOT NULL,
    factor     REAL NOT NULL,
    -- Since when use has been above the high-water mark (or below the low-water mark).
    high_since INTEGER,
    low_since  INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, service, dimension)
);

CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX webhooks_by_account ON webhooks(account_id);

-- Alerts waiting to be delivered. `dedupe_key` makes each alert once per threshold and
-- period (or per status change); delivery retries with backoff until `delivered_at`.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    dedupe_key      TEXT NOT NULL,
    webhook_id      TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT,
    UNIQUE (dedupe_key, webhook_id)
);
CREATE INDEX outbox_due ON outbox(delivered_at, next_attempt_at);
