//! Metered usage: per app, service and minute, written in batches by the meter and summed
//! for quotas, series and (later) statements.

use crate::{Registry, Result};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;

/// Refusal counters in the order of `voxgate_core::Reason::ALL`.
pub const REFUSAL_COLUMNS: [&str; 5] =
    ["refused_rate", "refused_quota", "refused_concurrency", "refused_suspended", "refused_capacity"];

/// One minute of one app's use of one service, as one node counted it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageRow {
    pub app_id: String,
    pub service: String,
    /// Unix seconds of the start of the UTC minute.
    pub minute: i64,
    pub allowed: u64,
    /// By reason, in the order of [`REFUSAL_COLUMNS`].
    pub refused: [u64; 5],
    /// Units consumed, in milli-units; settlements may make a minute's delta negative.
    pub units_milli: i64,
    /// The most requests this node saw in one second of the minute.
    pub peak_per_second: u64,
}

/// The resolution of a usage series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Minute,
    Hour,
    Day,
}

impl Step {
    pub fn parse(s: &str) -> Option<Step> {
        match s {
            "minute" => Some(Step::Minute),
            "hour" => Some(Step::Hour),
            "day" => Some(Step::Day),
            _ => None,
        }
    }

    /// The start of the bucket holding `secs`, in zone `tz` (hours and days are local).
    fn floor(self, secs: i64, tz: &TimeZone) -> i64 {
        if self == Step::Minute {
            return secs.div_euclid(60) * 60;
        }
        let Ok(ts) = Timestamp::from_second(secs) else {
            return secs;
        };
        let zoned = Zoned::new(ts, tz.clone());
        let floored = match self {
            Step::Hour => zoned.with().minute(0).second(0).subsec_nanosecond(0).build(),
            _ => zoned.start_of_day(),
        };
        floored.map(|z| z.timestamp().as_second()).unwrap_or(secs)
    }
}

/// One bucket of a usage series for one service, summed over nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageBucket {
    pub start: i64,
    pub service: String,
    pub allowed: u64,
    pub refused: [u64; 5],
    pub units_milli: i64,
}

impl Registry {
    /// Adds a batch of usage under this node's id, in one transaction.
    pub async fn record_usage(&self, node_id: &str, rows: &[UsageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO usage_minute (app_id, service, minute, node_id, allowed, refused_rate, refused_quota,
                     refused_concurrency, refused_suspended, refused_capacity, units_milli, peak_per_second)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (app_id, service, minute, node_id) DO UPDATE SET
                     allowed = usage_minute.allowed + excluded.allowed,
                     refused_rate = usage_minute.refused_rate + excluded.refused_rate,
                     refused_quota = usage_minute.refused_quota + excluded.refused_quota,
                     refused_concurrency = usage_minute.refused_concurrency + excluded.refused_concurrency,
                     refused_suspended = usage_minute.refused_suspended + excluded.refused_suspended,
                     refused_capacity = usage_minute.refused_capacity + excluded.refused_capacity,
                     units_milli = usage_minute.units_milli + excluded.units_milli,
                     peak_per_second = CASE WHEN usage_minute.peak_per_second > excluded.peak_per_second
                         THEN usage_minute.peak_per_second ELSE excluded.peak_per_second END",
            )
            .bind(&r.app_id)
            .bind(&r.service)
            .bind(r.minute)
            .bind(node_id)
            .bind(r.allowed as i64)
            .bind(r.refused[0] as i64)
            .bind(r.refused[1] as i64)
            .bind(r.refused[2] as i64)
            .bind(r.refused[3] as i64)
            .bind(r.refused[4] as i64)
            .bind(r.units_milli)
            .bind(r.peak_per_second as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Units used by one app per service in `[from, to)` (Unix seconds), over all nodes.
    pub async fn units_by_service(&self, app_id: &str, from: i64, to: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT service, CAST(SUM(units_milli) AS BIGINT) AS units FROM usage_minute
             WHERE app_id = $1 AND minute >= $2 AND minute < $3 GROUP BY service",
        )
        .bind(app_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get("service"), r.get::<i64, _>("units"))).collect())
    }

    /// The usage series of one app in `[from, to)` (Unix seconds), optionally for one service,
    /// in buckets of `step` (hours and days in zone `tz`), oldest first.
    pub async fn usage_series(
        &self,
        app_id: &str,
        service: Option<&str>,
        from: i64,
        to: i64,
        step: Step,
        tz: &TimeZone,
    ) -> Result<Vec<UsageBucket>> {
        let rows = sqlx::query(
            "SELECT service, minute, CAST(SUM(allowed) AS BIGINT) AS allowed, CAST(SUM(refused_rate) AS BIGINT) AS refused_rate,
                    CAST(SUM(refused_quota) AS BIGINT) AS refused_quota, CAST(SUM(refused_concurrency) AS BIGINT) AS refused_concurrency,
                    CAST(SUM(refused_suspended) AS BIGINT) AS refused_suspended, CAST(SUM(refused_capacity) AS BIGINT) AS refused_capacity,
                    CAST(SUM(units_milli) AS BIGINT) AS units_milli
             FROM usage_minute
             WHERE app_id = $1 AND minute >= $2 AND minute < $3 AND (CAST($4 AS TEXT) IS NULL OR service = $5)
             GROUP BY service, minute ORDER BY minute, service",
        )
        .bind(app_id)
        .bind(from)
        .bind(to)
        .bind(service)
        .bind(service)
        .fetch_all(&self.pool)
        .await?;
        let mut buckets: BTreeMap<(i64, String), UsageBucket> = BTreeMap::new();
        for r in &rows {
            let service: String = r.get("service");
            let start = step.floor(r.get("minute"), tz);
            let b = buckets.entry((start, service.clone())).or_insert_with(|| UsageBucket {
                start,
                service,
                allowed: 0,
                refused: [0; 5],
                units_milli: 0,
            });
            b.allowed += r.get::<i64, _>("allowed") as u64;
            for (i, col) in REFUSAL_COLUMNS.iter().enumerate() {
                b.refused[i] += r.get::<i64, _>(*col) as u64;
            }
            b.units_milli += r.get::<i64, _>("units_milli");
        }
        Ok(buckets.into_values().collect())
    }
}
