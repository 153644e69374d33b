//! voxgate's control plane on disk: accounts, apps, API keys, the append-only audit log and
//! metered usage, in an embedded SQLite database.
//!
//! Only this crate knows the SQL schema. Every change and its audit entry are written in one
//! transaction, so a crash can lose neither half alone.

mod alerts;
mod entitlements;
mod increases;
mod model;
mod usage;

pub use alerts::*;
pub use entitlements::*;
pub use increases::*;
pub use model::*;
pub use usage::{REFUSAL_COLUMNS, Step, UsageBucket, UsageRow};

use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Executor, Row};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Registry errors. `NotFound` and `Conflict` are the caller's to report; `Database` is ours.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{kind} `{id}` not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("registry database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("registry migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The registry. Cheap to clone: it is a connection pool.
#[derive(Clone)]
pub struct Registry {
    pool: AnyPool,
    backend: Backend,
    /// Unix ms for `created_at`, `updated_at`, audit entries and plan history. The server
    /// passes its own clock, so everything it records agrees with its decisions.
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

/// Which database holds the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Who made a change, as the audit log records it: `admin`, `system`, `app:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    pub fn admin() -> Actor {
        Actor("admin".into())
    }
    pub fn system() -> Actor {
        Actor("system".into())
    }
}

pub(crate) fn wall_clock_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

/// SHA-256 of an API key, hex-encoded: what is stored and looked up.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Registry {
    /// Opens (creating if needed) the embedded registry in `data_dir/voxgate.db` and
    /// migrates it.
    pub async fn open(data_dir: &Path) -> Result<Registry> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| RegistryError::DataDir { path: data_dir.to_owned(), source })?;
        let url = format!("sqlite://{}?mode=rwc", data_dir.join("voxgate.db").display());
        Registry::connect(&url).await
    }

    /// Connects to `sqlite://…` or `postgres://…` and migrates the schema. One registry may
    /// serve many voxgate nodes on PostgreSQL.
    pub async fn connect(url: &str) -> Result<Registry> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(RegistryError::Conflict(format!(
                "unsupported registry URL `{url}`: use sqlite:// or postgres://"
            )));
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL with FULL sync: a committed change survives power loss, not only a
                        // process crash; readers never block the writer.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
                             PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(url).await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Registry { pool, backend, clock: Arc::new(wall_clock_ms) })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads, then finds another writer
    /// busy, fails at once with "database is locked" instead of waiting its busy timeout.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        Ok(self.pool.begin_with(begin).await?)
    }

    /// Uses `clock` (Unix ms) for every time the registry records.
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> i64 + Send + Sync>) -> Registry {
        self.clock = clock;
        self
    }

    pub(crate) fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn audit(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        action: &str,
        subject: (&str, &str),
        before: Option<String>,
        after: Option<String>,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, subject_kind, subject_id, before, after, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(self.now_ms())
        .bind(&actor.0)
        .bind(action)
        .bind(subject.0)
        .bind(subject.1)
        .bind(before)
        .bind(after)
        .bind(reason)
        .execute(tx)
        .await?;
        Ok(())
    }

    // ---- accounts -------------------------------------------------------------------------

    /// Creates an account. `id` is generated unless given (the demo account is `demo`).
    pub async fn create_account(
        &self,
        new: NewAccount,
        id: Option<String>,
        actor: &Actor,
    ) -> Result<Account> {
        let now = self.now_ms();
        let account = Account {
            id: id.unwrap_or_else(|| format!("acc_{}", random_hex(8))),
            name: new.name,
            verification_level: new.verification_level,
            sector: None,
            time_zone: new.time_zone,
            status: Status::Active,
            free_allowance: true,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, name, verification_level, time_zone, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&account.id)
        .bind(&account.name)
        .bind(&account.verification_level)
        .bind(&account.time_zone)
        .bind(account.status.as_str())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::Conflict(format!("account `{}` already exists", account.id)));
        }
        self.audit(
            &mut tx,
            actor,
            "account.create",
            ("account", &account.id),
            None,
            Some(json(&account)),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(account)
    }

    pub async fn account(&self, id: &str) -> Result<Account> {
        sqlx::query("SELECT * FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| Account::from_row(&r))
            .ok_or_else(|| RegistryError::NotFound { kind: "account", id: id.into() })
    }

    pub async fn accounts(&self) -> Result<Vec<Account>> {
        let rows =
            sqlx::query("SELECT * FROM accounts ORDER BY created_at, id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(Account::from_row).collect())
    }

    // ---- apps -----------------------------------------------------------------------------

    /// Creates an app and its first API key. The key is returned this once; only its hash is
    /// stored. `id` is generated unless given (the demo app is `demo`).
    pub async fn create_app(&self, new: NewApp, id: Option<String>, actor: &Actor) -> Result<(App, String)> {
        let now = self.now_ms();
        let app = App {
            id: id.unwrap_or_else(|| format!("app_{}", random_hex(8))),
            account_id: new.account_id,
            name: new.name,
            plan: new.plan,
            status: Status::Active,
            spending_cap: None,
            created_at: now,
            updated_at: now,
        };
        let key = format!("vgk_{}", random_hex(24));
        let mut tx = self.write_tx().await?;
        let account_exists = sqlx::query("SELECT 1 FROM accounts WHERE id = $1")
            .bind(&app.account_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !account_exists {
            return Err(RegistryError::NotFound { kind: "account", id: app.account_id });
        }
        let inserted = sqlx::query(
            "INSERT INTO apps (id, account_id, name, plan, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&app.id)
        .bind(&app.account_id)
        .bind(&app.name)
        .bind(&app.plan)
        .bind(app.status.as_str())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::Conflict(format!("app `{}` already exists", app.id)));
        }
        sqlx::query("INSERT INTO plan_history (app_id, plan, from_ms) VALUES ($1, $2, $3)")
            .bind(&app.id)
            .bind(&app.plan)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO api_keys (key_hash, app_id, prefix, created_at) VALUES ($1, $2, $3, $4)")
            .bind(hash_key(&key))
            .bind(&app.id)
            .bind(&key[..8])
            .bind(now)
            .execute(&mut *tx)
            .await?;
        self.audit(&mut tx, actor, "app.create", ("app", &app.id), None, Some(json(&app)), None).await?;
        tx.commit().await?;
        Ok((app, key))
    }

    pub async fn app(&self, id: &str) -> Result<App> {
        sqlx::query("SELECT * FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| App::from_row(&r))
            .ok_or_else(|| RegistryError::NotFound { kind: "app", id: id.into() })
    }

    pub async fn apps(&self) -> Result<Vec<App>> {
        let rows = sqlx::query("SELECT * FROM apps ORDER BY created_at, id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(App::from_row).collect())
    }

    /// Changes an app's plan and/or status, with an audit entry holding before and after.
    pub async fn update_app(
        &self,
        id: &str,
        patch: AppPatch,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<App> {
        let mut tx = self.write_tx().await?;
        let before = sqlx::query("SELECT * FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| App::from_row(&r))
            .ok_or_else(|| RegistryError::NotFound { kind: "app", id: id.into() })?;
        let mut after = before.clone();
        if let Some(plan) = patch.plan {
            after.plan = plan;
        }
        if let Some(status) = patch.status {
            after.status = status;
        }
        if let Some(cap) = patch.spending_cap {
            after.spending_cap = cap;
        }
        if after == before {
            return Ok(before);
        }
        after.updated_at = self.now_ms();
        sqlx::query(
            "UPDATE apps SET plan = $1, status = $2, spending_cap = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(&after.plan)
        .bind(after.status.as_str())
        .bind(&after.spending_cap)
        .bind(after.updated_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if after.plan != before.plan {
            sqlx::query("INSERT INTO plan_history (app_id, plan, from_ms) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(&after.plan)
                .bind(after.updated_at)
                .execute(&mut *tx)
                .await?;
        }
        self.audit(
            &mut tx,
            actor,
            "app.update",
            ("app", id),
            Some(json(&before)),
            Some(json(&after)),
            reason,
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    // ---- keys and audit -------------------------------------------------------------------

    /// Every live key hash and the app it belongs to.
    pub async fn key_hashes(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT key_hash, app_id FROM api_keys WHERE revoked_at IS NULL")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get("key_hash"), r.get("app_id"))).collect())
    }

    /// Audit entries, oldest first, optionally for one subject.
    pub async fn audit_log(&self, subject: Option<(&str, &str)>) -> Result<Vec<AuditEntry>> {
        let rows = match subject {
            Some((kind, id)) => {
                sqlx::query(
                    "SELECT * FROM audit_log WHERE subject_kind = $1 AND subject_id = $2 ORDER BY seq",
                )
                .bind(kind)
                .bind(id)
                .fetch_all(&self.pool)
                .await?
            }
            None => sqlx::query("SELECT * FROM audit_log ORDER BY seq").fetch_all(&self.pool).await?,
        };
        Ok(rows.iter().map(AuditEntry::from_row).collect())
    }

    /// A value from the registry's small key-value table (e.g. the node id).
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get("value")))
    }

    /// Sets a value unless one is there already (the first node to start wins).
    pub async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[doc(hidden)]
impl Registry {
    /// Tries to rewrite history; returns the database's refusal. For the registry's tests.
    pub async fn audit_tamper_for_tests(&self) -> String {
        let update = sqlx::query("UPDATE audit_log SET actor = 'mallory'").execute(&self.pool).await;
        let delete = sqlx::query("DELETE FROM audit_log").execute(&self.pool).await;
        match (update, delete) {
            (Err(u), Err(d)) => format!("{u}; {d}"),
            _ => "tampering succeeded".into(),
        }
    }
}

impl Registry {
    /// Checks that the database answers.
    /// The sequence number of the newest audit entry: every change writes one, so a node
    /// that sees it move knows to rebuild its view (how nodes sharing one registry learn of
    /// each other's changes).
    pub async fn last_change(&self) -> Result<i64> {
        let row = sqlx::query("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS seq FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get("seq"))
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
