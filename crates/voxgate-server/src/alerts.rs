//! Alerts: quota thresholds (80 %, 95 %, 100 % of daily and monthly quotas) and changes of
//! an increase request's status, delivered to the account's webhooks from a durable outbox.
//!
//! Each alert is written once per threshold and period (the outbox's dedupe key), so neither
//! a restart nor a second node sends it twice. A worker delivers due alerts: a JSON POST
//! signed with HMAC-SHA256 over `"<timestamp>.<body>"` with the webhook's secret, retried
//! with exponential backoff (2 s doubling, at most an hour apart) until the receiver answers
//! 2xx. Nodes sharing a registry claim alerts before sending them, and send up to eight at a
//! time, so one slow receiver does not hold up the others. Delivery is at least once (a node
//! that dies after a POST but before recording it lets the claim run out and the alert go
//! again); receivers deduplicate by `X-Voxgate-Delivery`.

use crate::state::AppState;
use hmac::Mac;
use std::collections::HashSet;
use std::sync::Arc;
use voxgate_core::store::CounterKey;
use voxgate_core::time::Period;
use voxgate_core::{CounterStore, Dimension, Timestamp};
use voxgate_registry::IncreaseRequest;

/// Quota shares that raise an alert, in percent.
pub const THRESHOLDS: [u64; 3] = [80, 95, 100];

/// Queues a status-change alert for the request's account.
pub async fn increase_changed(state: &AppState, r: &IncreaseRequest) {
    let payload = serde_json::json!({
        "type": "increase_request.status_changed",
        "increase_request_id": r.id,
        "app_id": r.app_id,
        "service": r.service,
        "dimension": r.dimension,
        "status": r.status,
        "requested": r.requested,
        "granted": r.granted,
        "reason": r.reason,
        "at": Timestamp::from_nanos(r.updated_at.saturating_mul(1_000_000)).to_jiff().to_string(),
    });
    let key = format!("increase:{}:{}:{}", r.id, r.status, r.updated_at);
    if let Err(e) =
        state.registry.enqueue_alert(&r.account_id, &key, "increase_request.status_changed", &payload).await
    {
        tracing::warn!(error = %e, request = %r.id, "could not queue an increase alert");
    }
}

impl AppState {
    /// Queues quota-threshold alerts for every app and service whose daily or monthly use has
    /// crossed 80, 95 or 100 % in the current period. Cheap when nothing crossed: thresholds
    /// already queued are remembered in memory (and deduplicated by the outbox after a
    /// restart).
    pub async fn check_quota_alerts(&self) -> anyhow::Result<usize> {
        let now = self.now();
        let snapshot = self.snapshot.load();
        let mut queued = 0;
        for view in snapshot.apps.values() {
            for idx in self.catalogue.service_indices() {
                let limits = view.limits.service(idx);
                if limits.daily.is_none() && limits.monthly.is_none() {
                    continue;
                }
                let key = CounterKey { app: &view.id, service: idx };
                let report = self.store.peek(key, limits, now, &view.time_zone).await?;
                for (dim, period) in [(Dimension::Daily, Period::Day), (Dimension::Monthly, Period::Month)] {
                    let Some(s) = report.get(dim) else { continue };
                    if s.limit == 0 {
                        continue;
                    }
                    let pct = s.used.saturating_mul(100) / s.limit;
                    let window = period.window(now, &view.time_zone);
                    let service = &self.catalogue.service_def(idx).id;
                    for threshold in THRESHOLDS.iter().filter(|t| pct >= **t) {
                        let dedupe = format!(
                            "quota:{}:{service}:{}:{}:{threshold}",
                            view.id,
                            dim.as_str(),
                            window.start
                        );
                        if self.alerted.lock().contains(&dedupe) {
                            continue;
                        }
                        let payload = serde_json::json!({
                            "type": "quota.threshold",
                            "app_id": &*view.id,
                            "service": service,
                            "dimension": dim.as_str(),
                            "threshold_percent": threshold,
                            "used": s.used as f64 / 1000.0,
                            "limit": s.limit as f64 / 1000.0,
                            "period_start": Timestamp::from_secs(window.start).to_jiff().to_string(),
                            "resets_at": Timestamp::from_secs(window.end).to_jiff().to_string(),
                        });
                        let added = self
                            .registry
                            .enqueue_alert(&view.account_id, &dedupe, "quota.threshold", &payload)
                            .await?;
                        queued += added;
                        // Remembered only once queued: a webhook added later in the period
                        // still gets the alert.
                        if added > 0 {
                            self.alerted.lock().insert(dedupe);
                        }
                    }
                }
            }
        }
        Ok(queued)
    }

    /// Delivers the alerts that are due, up to eight at a time, after claiming them so no
    /// other node sharing the registry sends the same ones. Returns (delivered, failed).
    pub async fn deliver_alerts(&self) -> anyhow::Result<(usize, usize)> {
        // A claim outlives the slowest possible round (eight at a time, 10 s each) with room.
        let due = self.registry.claim_due_alerts(&self.node_id, 50, 120_000).await?;
        let mut sends = tokio::task::JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(8));
        let mut gone = Vec::new();
        for entry in due {
            let hook = match self.registry.webhook(&entry.webhook_id).await {
                Ok(h) => h,
                Err(voxgate_registry::RegistryError::NotFound { .. }) => {
                    gone.push(entry.id.clone());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let body = serde_json::json!({
                "id": entry.id,
                "event_type": entry.event_type,
                "created_at": Timestamp::from_nanos(entry.created_at.saturating_mul(1_000_000)).to_jiff().to_string(),
                "data": entry.payload,
            })
            .to_string();
            let timestamp = self.now().secs().to_string();
            let signature = sign(&hook.secret, &timestamp, &body);
            let permit = permits.clone().acquire_owned().await?;
            sends.spawn_blocking(move || {
                let result = post(&hook.url, &entry.id, &entry.event_type, &timestamp, &signature, &body);
                drop(permit);
                (entry, result)
            });
        }
        for id in gone {
            // The webhook was deleted: nothing to deliver to.
            self.registry.mark_failed(&id, "webhook deleted", i64::MAX / 4).await?;
        }
        let (mut ok, mut failed) = (0, 0);
        while let Some(done) = sends.join_next().await {
            let (entry, result) = done?;
            match result {
                Ok(()) => {
                    self.registry.mark_delivered(&entry.id).await?;
                    ok += 1;
                }
                Err(e) => {
                    let backoff_s = 2i64.saturating_pow(entry.attempts.clamp(0, 20) as u32 + 1).min(3600);
                    let next = self.now().millis() + backoff_s * 1000;
                    self.registry.mark_failed(&entry.id, &e, next).await?;
                    tracing::info!(alert = %entry.id, error = %e, retry_in_s = backoff_s, "webhook delivery failed");
                    failed += 1;
                }
            }
        }
        Ok((ok, failed))
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn post(
    url: &str,
    id: &str,
    event: &str,
    timestamp: &str,
    signature: &str,
    body: &str,
) -> Result<(), String> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(10))).build().into();
    agent
        .post(url)
        .header("content-type", "application/json")
        .header("x-voxgate-delivery", id)
        .header("x-voxgate-event", event)
        .header("x-voxgate-timestamp", timestamp)
        .header("x-voxgate-signature", signature)
        .send(body)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs delivery every half second until the process stops.
pub async fn delivery_loop(state: Arc<AppState>) {
    loop {
        if let Err(e) = state.deliver_alerts().await {
            tracing::warn!(error = %e, "alert delivery failed; will retry");
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Remembered thresholds, so a crossed one is not written again every second.
pub type Alerted = parking_lot::Mutex<HashSet<String>>;
