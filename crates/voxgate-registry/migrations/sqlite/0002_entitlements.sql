-- Entitlements: verification, identities, plan history, contracts, capacity windows.

ALTER TABLE accounts ADD COLUMN sector TEXT;
-- 0 when the account's verified identity already claimed the free allowance elsewhere.
ALTER TABLE accounts ADD COLUMN free_allowance INTEGER NOT NULL DEFAULT 1;
-- A monthly spending cap in the catalogue's currency, as an exact decimal string.
ALTER TABLE apps ADD COLUMN spending_cap TEXT;

-- Which plan an app was on from when: statements prorate included units by it.
CREATE TABLE plan_history (
    app_id  TEXT NOT NULL REFERENCES apps(id),
    plan    TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    seq     INTEGER PRIMARY KEY AUTOINCREMENT
);
CREATE INDEX plan_history_by_app ON plan_history(app_id, from_ms);
INSERT INTO plan_history (app_id, plan, from_ms) SELECT id, plan, created_at FROM apps;

-- Identity numbers are never stored: only keyed hashes (HMAC-SHA256 with the registry's
-- identity key), in `identity_hashes` as a JSON array.
CREATE TABLE verification_requests (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts(id),
    level              TEXT NOT NULL,
    sector             TEXT,
    legal_name         TEXT NOT NULL,
    bank_account_ref   TEXT,
    contact            TEXT NOT NULL,
    identity_hashes    TEXT NOT NULL,
    linked_accounts    TEXT NOT NULL,
    status             TEXT NOT NULL,
    reason             TEXT,
    submitted_at       INTEGER NOT NULL,
    decided_at         INTEGER,
    decided_by         TEXT
);
CREATE INDEX verification_by_account ON verification_requests(account_id);
CREATE INDEX verification_by_status ON verification_requests(status, submitted_at);

-- Every account that presented an identity, and the first one to have it approved (the one
-- that holds the free allowance).
CREATE TABLE identity_links (
    identity_hash TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    first_seen    INTEGER NOT NULL,
    PRIMARY KEY (identity_hash, account_id)
);
CREATE TABLE identity_claims (
    identity_hash TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    claimed_at    INTEGER NOT NULL
);

CREATE TABLE contracts (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    body           TEXT NOT NULL,
    valid_from     INTEGER,
    valid_until    INTEGER,
    created_at     INTEGER NOT NULL
);
CREATE INDEX contracts_by_account ON contracts(account_id);

CREATE TABLE capacity_windows (
    id         TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES apps(id),
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX windows_by_app ON capacity_windows(app_id);
