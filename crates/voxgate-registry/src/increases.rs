//! Limit-increase requests and the usage statistics that serve as their evidence.

use crate::{Actor, Registry, RegistryError, Result, json};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A limit-increase request as stored. Status names and transitions are the server's
/// (see `voxgate_core::increase`); the registry keeps them and their audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct IncreaseRequest {
    pub id: String,
    pub app_id: String,
    pub account_id: String,
    pub service: String,
    pub dimension: String,
    pub requested: serde_json::Value,
    pub granted: Option<serde_json::Value>,
    pub business_case: serde_json::Value,
    pub justification: String,
    pub contact_email: String,
    pub sizing: serde_json::Value,
    pub evidence: serde_json::Value,
    pub status: String,
    pub reason: Option<String>,
    pub grant_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub decided_by: Option<String>,
}

fn parse(r: &AnyRow, col: &str) -> serde_json::Value {
    r.get::<Option<String>, _>(col)
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

impl IncreaseRequest {
    fn from_row(r: &AnyRow) -> IncreaseRequest {
        let granted = parse(r, "granted");
        IncreaseRequest {
            id: r.get("id"),
            app_id: r.get("app_id"),
            account_id: r.get("account_id"),
            service: r.get("service"),
            dimension: r.get("dimension"),
            requested: parse(r, "requested"),
            granted: (!granted.is_null()).then_some(granted),
            business_case: parse(r, "business_case"),
            justification: r.get("justification"),
            contact_email: r.get("contact_email"),
            sizing: parse(r, "sizing"),
            evidence: parse(r, "evidence"),
            status: r.get("status"),
            reason: r.get("reason"),
            grant_expires_at: r.get("grant_expires_at"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
            decided_by: r.get("decided_by"),
        }
    }
}

/// A change of status, with what goes with it.
#[derive(Debug, Clone)]
pub struct IncreaseChange<'a> {
    pub status: &'a str,
    pub granted: Option<serde_json::Value>,
    pub reason: Option<&'a str>,
    pub grant_expires_at: Option<i64>,
}

/// Usage of one app and service over a range, for evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct UsageStats {
    pub allowed: u64,
    pub refused: [u64; 5],
    pub units_milli: i64,
    /// Minutes with any traffic.
    pub active_minutes: u64,
    /// Most requests (allowed and refused) in one minute.
    pub peak_per_minute: u64,
    /// Most requests in one second.
    pub peak_per_second: u64,
}

impl Registry {
    pub async fn create_increase_request(&self, r: &IncreaseRequest, actor: &Actor) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO increase_requests (id, app_id, account_id, service, dimension, requested, granted,
                 business_case, justification, contact_email, sizing, evidence, status, reason, grant_expires_at,
                 created_at, updated_at, decided_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(&r.id)
        .bind(&r.app_id)
        .bind(&r.account_id)
        .bind(&r.service)
        .bind(&r.dimension)
        .bind(r.requested.to_string())
        .bind(r.granted.as_ref().map(|g| g.to_string()))
        .bind(r.business_case.to_string())
        .bind(&r.justification)
        .bind(&r.contact_email)
        .bind(r.sizing.to_string())
        .bind(r.evidence.to_string())
        .bind(&r.status)
        .bind(&r.reason)
        .bind(r.grant_expires_at)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(&r.decided_by)
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            actor,
            "increase.submit",
            ("increase_request", &r.id),
            None,
            Some(json(r)),
            r.reason.as_deref(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn increase_request(&self, id: &str) -> Result<IncreaseRequest> {
        sqlx::query("SELECT * FROM increase_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| IncreaseRequest::from_row(&r))
            .ok_or_else(|| RegistryError::NotFound { kind: "increase request", id: id.into() })
    }

    /// Requests, oldest first, optionally of one app and/or with one of `statuses`.
    pub async fn increase_requests(
        &self,
        app_id: Option<&str>,
        statuses: &[&str],
    ) -> Result<Vec<IncreaseRequest>> {
        let rows = sqlx::query(
            "SELECT * FROM increase_requests WHERE (CAST($1 AS TEXT) IS NULL OR app_id = $2) ORDER BY created_at, id",
        )
        .bind(app_id)
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(IncreaseRequest::from_row)
            .filter(|r| statuses.is_empty() || statuses.contains(&r.status.as_str()))
            .collect())
    }

    /// Moves a request from one of `from` to `change.status`, audited as `action`. A request
    /// in any other status is a conflict (someone else acted first).
    pub async fn change_increase_request(
        &self,
        id: &str,
        from: &[&str],
        change: IncreaseChange<'_>,
        action: &str,
        actor: &Actor,
    ) -> Result<IncreaseRequest> {
        let mut tx = self.write_tx().await?;
        let before = sqlx::query("SELECT * FROM increase_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| IncreaseRequest::from_row(&r))
            .ok_or_else(|| RegistryError::NotFound { kind: "increase request", id: id.into() })?;
        if !from.contains(&before.status.as_str()) {
            return Err(RegistryError::Conflict(format!(
                "increase request `{id}` is {}; this needs it to be {}",
                before.status,
                from.join(" or ")
            )));
        }
        let mut after = before.clone();
        after.status = change.status.to_string();
        if change.granted.is_some() {
            after.granted = change.granted;
        }
        if change.reason.is_some() {
            after.reason = change.reason.map(str::to_string);
        }
        if change.grant_expires_at.is_some() {
            after.grant_expires_at = change.grant_expires_at;
        }
        after.updated_at = self.now_ms();
        if actor.0 != "system" {
            after.decided_by = Some(actor.0.clone());
        }
        sqlx::query(
            "UPDATE increase_requests SET status = $1, granted = $2, reason = $3, grant_expires_at = $4, updated_at = $5,
                 decided_by = $6 WHERE id = $7",
        )
        .bind(&after.status)
        .bind(after.granted.as_ref().map(|g| g.to_string()))
        .bind(&after.reason)
        .bind(after.grant_expires_at)
        .bind(after.updated_at)
        .bind(&after.decided_by)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            actor,
            action,
            ("increase_request", id),
            Some(json(&before)),
            Some(json(&after)),
            change.reason,
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Usage statistics of one app and service in `[from, to)` (Unix seconds).
    pub async fn usage_stats(&self, app_id: &str, service: &str, from: i64, to: i64) -> Result<UsageStats> {
        let rows = sqlx::query(
            "SELECT minute, CAST(SUM(allowed) AS BIGINT) AS allowed, CAST(SUM(refused_rate) AS BIGINT) AS r0, CAST(SUM(refused_quota) AS BIGINT) AS r1,
                    CAST(SUM(refused_concurrency) AS BIGINT) AS r2, CAST(SUM(refused_suspended) AS BIGINT) AS r3, CAST(SUM(refused_capacity) AS BIGINT) AS r4,
                    CAST(SUM(units_milli) AS BIGINT) AS units, CAST(SUM(peak_per_second) AS BIGINT) AS pps
             FROM usage_minute WHERE app_id = $1 AND service = $2 AND minute >= $3 AND minute < $4
             GROUP BY minute",
        )
        .bind(app_id)
        .bind(service)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let mut s = UsageStats::default();
        for r in &rows {
            let allowed = r.get::<i64, _>("allowed") as u64;
            let refused: [u64; 5] = ["r0", "r1", "r2", "r3", "r4"].map(|c| r.get::<i64, _>(c) as u64);
            let requests = allowed + refused.iter().sum::<u64>();
            s.allowed += allowed;
            for (a, b) in s.refused.iter_mut().zip(refused) {
                *a += b;
            }
            s.units_milli += r.get::<i64, _>("units");
            if requests > 0 {
                s.active_minutes += 1;
            }
            s.peak_per_minute = s.peak_per_minute.max(requests);
            s.peak_per_second = s.peak_per_second.max(r.get::<i64, _>("pps") as u64);
        }
        Ok(s)
    }
}

/// The automatic-adjustment state of one (app, service, dimension).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdjustmentRow {
    pub app_id: String,
    pub service: String,
    pub dimension: String,
    pub factor: f64,
    pub high_since: Option<i64>,
    pub low_since: Option<i64>,
    pub updated_at: i64,
}

impl Registry {
    pub async fn adjustments(&self) -> Result<Vec<AdjustmentRow>> {
        let rows = sqlx::query("SELECT * FROM adjustments ORDER BY app_id, service, dimension")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| AdjustmentRow {
                app_id: r.get("app_id"),
                service: r.get("service"),
                dimension: r.get("dimension"),
                factor: r.get("factor"),
                high_since: r.get("high_since"),
                low_since: r.get("low_since"),
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    /// Stores an adjustment state; a change of factor is audited (`adjustment.raise` or
    /// `adjustment.lower`) with the factors before and after.
    pub async fn save_adjustment(
        &self,
        row: &AdjustmentRow,
        before_factor: f64,
        actor: &Actor,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO adjustments (app_id, service, dimension, factor, high_since, low_since, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (app_id, service, dimension) DO UPDATE SET factor = excluded.factor,
                 high_since = excluded.high_since, low_since = excluded.low_since, updated_at = excluded.updated_at",
        )
        .bind(&row.app_id)
        .bind(&row.service)
        .bind(&row.dimension)
        .bind(row.factor)
        .bind(row.high_since)
        .bind(row.low_since)
        .bind(self.now_ms())
        .execute(&mut *tx)
        .await?;
        if (row.factor - before_factor).abs() > 1e-12 {
            let action = if row.factor > before_factor { "adjustment.raise" } else { "adjustment.lower" };
            let subject = format!("{}:{}:{}", row.app_id, row.service, row.dimension);
            self.audit(
                &mut tx,
                actor,
                action,
                ("adjustment", &subject),
                Some(serde_json::json!({ "factor": before_factor }).to_string()),
                Some(serde_json::json!({ "factor": row.factor }).to_string()),
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
