-- voxgate registry, first schema. Times are Unix milliseconds unless named `minute`
-- (Unix seconds of the start of a UTC minute). Amounts of units are milli-units.

CREATE TABLE accounts (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    verification_level TEXT NOT NULL,
    time_zone          TEXT NOT NULL,
    status             TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE TABLE apps (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name       TEXT NOT NULL,
    plan       TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX apps_by_account ON apps(account_id);

-- Only a SHA-256 of each key is kept; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES apps(id),
    prefix     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_keys_by_app ON api_keys(app_id);

-- Every change, in the transaction that made it. Rows are never updated or deleted.
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    before       TEXT,
    after        TEXT,
    reason       TEXT
);
CREATE INDEX audit_by_subject ON audit_log(subject_kind, subject_id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- Metered usage per app, service and minute. Each node writes its own rows (node_id) and
-- readers sum them, so nothing is counted twice and no node overwrites another.
CREATE TABLE usage_minute (
    app_id              TEXT NOT NULL,
    service             TEXT NOT NULL,
    minute              INTEGER NOT NULL,
    node_id             TEXT NOT NULL,
    allowed             INTEGER NOT NULL DEFAULT 0,
    refused_rate        INTEGER NOT NULL DEFAULT 0,
    refused_quota       INTEGER NOT NULL DEFAULT 0,
    refused_concurrency INTEGER NOT NULL DEFAULT 0,
    refused_suspended   INTEGER NOT NULL DEFAULT 0,
    refused_capacity    INTEGER NOT NULL DEFAULT 0,
    units_milli         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, service, minute, node_id)
);

-- Small facts about this registry (e.g. the node id usage rows are written under).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
