//! Webhook endpoints per account and the durable outbox of alerts waiting to be delivered.
//!
//! An alert is written once per `(dedupe_key, webhook)`: the unique index makes a second
//! write of the same threshold and period (or status change) a no-op, also across restarts
//! and nodes. Delivery is at least once: the receiver deduplicates by the delivery id.

use crate::{Actor, Registry, RegistryError, Result, json, random_hex};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Webhook {
    pub id: String,
    pub account_id: String,
    pub url: String,
    /// The HMAC key for signatures; shown when created, never listed.
    #[serde(skip)]
    pub secret: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct OutboxEntry {
    pub id: String,
    pub dedupe_key: String,
    pub webhook_id: String,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

impl OutboxEntry {
    fn from_row(r: &AnyRow) -> OutboxEntry {
        OutboxEntry {
            id: r.get("id"),
            dedupe_key: r.get("dedupe_key"),
            webhook_id: r.get("webhook_id"),
            event_type: r.get("event_type"),
            payload: serde_json::from_str(r.get("payload")).unwrap_or(serde_json::Value::Null),
            created_at: r.get("created_at"),
            attempts: r.get("attempts"),
            next_attempt_at: r.get("next_attempt_at"),
            delivered_at: r.get("delivered_at"),
            last_error: r.get("last_error"),
        }
    }
}

fn webhook_from_row(r: &AnyRow) -> Webhook {
    Webhook {
        id: r.get("id"),
        account_id: r.get("account_id"),
        url: r.get("url"),
        secret: r.get("secret"),
        created_at: r.get("created_at"),
    }
}

impl Registry {
    pub async fn create_webhook(
        &self,
        account_id: &str,
        url: &str,
        secret: &str,
        actor: &Actor,
    ) -> Result<Webhook> {
        let mut tx = self.write_tx().await?;
        let exists = sqlx::query("SELECT 1 FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(RegistryError::NotFound { kind: "account", id: account_id.into() });
        }
        let hook = Webhook {
            id: format!("whk_{}", random_hex(8)),
            account_id: account_id.into(),
            url: url.into(),
            secret: secret.into(),
            created_at: self.now_ms(),
        };
        sqlx::query(
            "INSERT INTO webhooks (id, account_id, url, secret, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&hook.id)
        .bind(&hook.account_id)
        .bind(&hook.url)
        .bind(&hook.secret)
        .bind(hook.created_at)
        .execute(&mut *tx)
        .await?;
        self.audit(&mut tx, actor, "webhook.create", ("webhook", &hook.id), None, Some(json(&hook)), None)
            .await?;
        tx.commit().await?;
        Ok(hook)
    }

    /// Live webhooks, optionally of one account.
    pub async fn webhooks(&self, account_id: Option<&str>) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(
            "SELECT * FROM webhooks WHERE deleted_at IS NULL AND (CAST($1 AS TEXT) IS NULL OR account_id = $2) ORDER BY created_at, id",
        )
        .bind(account_id)
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(webhook_from_row).collect())
    }

    pub async fn webhook(&self, id: &str) -> Result<Webhook> {
        sqlx::query("SELECT * FROM webhooks WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| webhook_from_row(&r))
            .ok_or_else(|| RegistryError::NotFound { kind: "webhook", id: id.into() })
    }

    pub async fn delete_webhook(&self, id: &str, actor: &Actor) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE webhooks SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(self.now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound { kind: "webhook", id: id.into() });
        }
        self.audit(&mut tx, actor, "webhook.delete", ("webhook", id), None, None, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues an alert for each of the account's webhooks. Returns how many were new: an
    /// alert already queued under the same `dedupe_key` for a webhook is not queued again.
    pub async fn enqueue_alert(
        &self,
        account_id: &str,
        dedupe_key: &str,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> Result<usize> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let hooks = sqlx::query("SELECT id FROM webhooks WHERE account_id = $1 AND deleted_at IS NULL")
            .bind(account_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut added = 0;
        for h in hooks {
            let hook: String = h.get("id");
            let done = sqlx::query(
                "INSERT INTO outbox (id, dedupe_key, webhook_id, event_type, payload, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe_key, webhook_id) DO NOTHING",
            )
            .bind(format!("evt_{}", random_hex(10)))
            .bind(dedupe_key)
            .bind(&hook)
            .bind(event_type)
            .bind(payload.to_string())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            added += done.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Undelivered alerts whose next attempt is due and that no other node holds, oldest
    /// first, claimed for `claimer` for `claim_ms` (delivery marks them done or failed, which
    /// ends the claim; a claim of a node that died runs out by itself).
    pub async fn claim_due_alerts(
        &self,
        claimer: &str,
        limit: i64,
        claim_ms: i64,
    ) -> Result<Vec<OutboxEntry>> {
        let now = self.now_ms();
        let until = now + claim_ms;
        let mut tx = self.write_tx().await?;
        // On PostgreSQL a concurrent claim re-checks `claimed_until` on rows another node just
        // claimed and skips them; SQLite has one writer at a time.
        sqlx::query(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2
             WHERE id IN (SELECT id FROM outbox
                          WHERE delivered_at IS NULL AND next_attempt_at <= $3
                            AND (claimed_until IS NULL OR claimed_until < $4)
                          ORDER BY seq LIMIT $5)
               AND (claimed_until IS NULL OR claimed_until < $6)",
        )
        .bind(claimer)
        .bind(until)
        .bind(now)
        .bind(now)
        .bind(limit)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT * FROM outbox WHERE claimed_by = $1 AND claimed_until = $2 AND delivered_at IS NULL ORDER BY seq",
        )
        .bind(claimer)
        .bind(until)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(OutboxEntry::from_row).collect())
    }

    /// Undelivered alerts whose next attempt is due, oldest first (claimed or not).
    pub async fn due_alerts(&self, limit: i64) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 ORDER BY seq LIMIT $2",
        )
        .bind(self.now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(OutboxEntry::from_row).collect())
    }

    /// Alerts of one account's webhooks, newest first.
    pub async fn alerts(&self, account_id: &str, limit: i64) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT o.* FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
             WHERE w.account_id = $1 ORDER BY o.seq DESC LIMIT $2",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(OutboxEntry::from_row).collect())
    }

    pub async fn mark_delivered(&self, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL, claimed_until = NULL
             WHERE id = $2",
        )
        .bind(self.now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn mark_failed(&self, id: &str, error: &str, next_attempt_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, claimed_until = NULL
             WHERE id = $3",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
