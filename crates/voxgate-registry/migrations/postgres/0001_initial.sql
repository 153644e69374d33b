-- voxgate registry on PostgreSQL, first schema (the same as SQLite's, in PostgreSQL types). Times are Unix milliseconds unless named `minute`
-- (Unix seconds of the start of a UTC minute). Amounts of units are milli-units.

CREATE TABLE accounts (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    verification_level TEXT NOT NULL,
    time_zone          TEXT NOT NULL,
    status             TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);

CREATE TABLE apps (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name       TEXT NOT NULL,
    plan       TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX apps_by_account ON apps(account_id);

-- Only a SHA-256 of each key is kept; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES apps(id),
    prefix     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_app ON api_keys(app_id);

-- Every change, in the transaction that made it. Rows are never updated or deleted.
CREATE TABLE audit_log (
    seq          BIGSERIAL PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    before       TEXT,
    after        TEXT,
    reason       TEXT
);
CREATE INDEX audit_by_subject ON audit_log(subject_kind, subject_id);
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Metered usage per app, service and minute. Each node writes its own rows (node_id) and
-- readers sum them, so nothing is counted twice and no node overwrites another.
CREATE TABLE usage_minute (
    app_id              TEXT NOT NULL,
    service             TEXT NOT NULL,
    minute              BIGINT NOT NULL,
    node_id             TEXT NOT NULL,
    allowed             BIGINT NOT NULL DEFAULT 0,
    refused_rate        BIGINT NOT NULL DEFAULT 0,
    refused_quota       BIGINT NOT NULL DEFAULT 0,
    refused_concurrency BIGINT NOT NULL DEFAULT 0,
    refused_suspended   BIGINT NOT NULL DEFAULT 0,
    refused_capacity    BIGINT NOT NULL DEFAULT 0,
    units_milli         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, service, minute, node_id)
);

-- Small facts about this registry (e.g. the node id usage rows are written under).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
