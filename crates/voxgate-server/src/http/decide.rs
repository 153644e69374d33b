//! The decision endpoints: `POST /v1/check` and the lease endpoints. This is the hot path:
//! one snapshot read, one store call, one meter update.

use super::error::ApiError;
use super::limits_json::{LimitJson, ceil_secs, ratelimit_headers};
use crate::meter::Event;
use crate::state::{AppState, AppView};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;
use voxgate_core::engine::Cost;
use voxgate_core::store::{Charged, CheckInput, CounterKey, LeaseRelease};
use voxgate_core::{CounterStore, Decision, Reason, ServiceIdx, Units};

/// The body of `POST /v1/check` and `POST /v1/leases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest<'a> {
    /// Borrowed from the body when it has no escapes, saving two allocations per decision.
    #[serde(borrow)]
    pub app_id: Cow<'a, str>,
    #[serde(borrow)]
    pub service: Cow<'a, str>,
    /// Requests this call counts as (default 1; 0 consumes no rate).
    #[serde(default)]
    pub requests: Option<f64>,
    /// Units of the service this call consumes or, for a lease, reserves (default 0).
    #[serde(default)]
    pub units: Option<f64>,
}

/// At most this many requests in one call.
const MAX_REQUESTS: f64 = 1_000_000.0;

fn cost(req: &CheckRequest<'_>) -> Result<Cost, ApiError> {
    let requests = req.requests.unwrap_or(1.0);
    if !(requests.is_finite() && requests >= 0.0 && requests.fract() == 0.0 && requests <= MAX_REQUESTS) {
        return Err(ApiError::invalid_field(
            "invalid_cost",
            "requests",
            format!("`requests` must be a whole number from 0 to {MAX_REQUESTS}"),
        ));
    }
    let units = Units::from_f64(req.units.unwrap_or(0.0))
        .map_err(|e| ApiError::invalid_field("invalid_cost", "units", format!("`units` {e}")))?;
    Ok(Cost { requests: requests as u32, units })
}

fn lookup(state: &AppState, app_id: &str, service: &str) -> Result<(Arc<AppView>, ServiceIdx), ApiError> {
    let app = state
        .snapshot
        .load()
        .apps
        .get(app_id)
        .cloned()
        .ok_or_else(|| ApiError::unknown("unknown_app", format!("no app `{app_id}`")))?;
    let idx = state.catalogue.service(service).ok_or_else(|| {
        ApiError::unknown("unknown_service", format!("no service `{service}` in the catalogue"))
    })?;
    Ok((app, idx))
}

/// Decides one call (taking a lease when `lease` is set), meters it, and returns the app,
/// the service and the store's answer.
async fn decide(
    state: &AppState,
    req: &CheckRequest<'_>,
    lease: bool,
) -> Result<(Arc<AppView>, ServiceIdx, Charged), ApiError> {
    let cost = cost(req)?;
    let (app, idx) = lookup(state, &req.app_id, &req.service)?;
    let now = state.now();
    if app.suspended {
        state.record(&app.id, idx, now, Event::Refused(Reason::Suspended));
        return Ok((app, idx, Charged { decision: Decision::suspended(), lease: None }));
    }
    if let Some(until) = state.capped.load().get(&*app.id).copied()
        && now < until
    {
        // The month's spending cap is reached: refused as a quota, until the month ends.
        state.record(&app.id, idx, now, Event::Refused(Reason::Quota));
        let wait = voxgate_core::time::millis_until(now, until);
        return Ok((app, idx, Charged { decision: Decision::refused(Reason::Quota, wait), lease: None }));
    }
    let limits = app.limits.service(idx);
    if let Some(dim) = limits.unreachable(cost.requests, cost.units, lease) {
        state.record(&app.id, idx, now, Event::Refused(Reason::of(dim)));
        let limit = voxgate_core::entitlement::value_of(limits, dim).map_or(0.0, |v| match v {
            voxgate_core::entitlement::LimitValue::Rate(r) => r.burst as f64,
            other => other.primary(),
        });
        let detail = if limit == 0.0 {
            format!(
                "this app has no `{}` allowance for `{}` (the limit is 0 on plan `{}`): change the plan or \
                 request an increase",
                dim.as_str(),
                req.service,
                app.plan
            )
        } else {
            format!(
                "this call can never pass the `{}` limit of `{}` ({limit}) as it stands: make it smaller \
                 (split the work) or raise the limit",
                dim.as_str(),
                req.service
            )
        };
        return Err(ApiError::invalid_field("exceeds_limit", dim.as_str(), detail));
    }
    let ttl = limits.concurrency.map_or(state.catalogue.lease_ttl_ms, |c| c.lease_ttl_ms);
    let charged = state
        .store
        .charge(CheckInput {
            key: CounterKey { app: &app.id, service: idx },
            limits,
            cost,
            now,
            tz: &app.time_zone,
            lease_ttl_ms: lease.then_some(ttl),
        })
        .await?;
    let event = match charged.decision.refused {
        None => Event::Allowed { units_milli: cost.units.milli() as i64 },
        Some(r) => Event::Refused(r.reason),
    };
    state.record(&app.id, idx, now, event);
    Ok((app, idx, charged))
}

/// The limits of a decision, serialised straight from the engine's report.
struct LimitsSeq<'a> {
    items: &'a [voxgate_core::LimitStatus],
    unit: &'a str,
}

impl Serialize for LimitsSeq<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.items.iter().map(|s| LimitJson::new(s, None, self.unit)))
    }
}

#[derive(Serialize)]
struct DecisionJson<'a> {
    allowed: bool,
    reason: Option<Reason>,
    retry_after_ms: u64,
    app_id: &'a str,
    service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved_units: Option<f64>,
    limits: LimitsSeq<'a>,
}

fn respond(
    state: &AppState,
    app: &AppView,
    idx: ServiceIdx,
    charged: &Charged,
    units: Units,
    ok: StatusCode,
) -> Response {
    let d = &charged.decision;
    let service = state.catalogue.service_def(idx);
    let body = DecisionJson {
        allowed: d.allowed(),
        reason: d.refused.map(|r| r.reason),
        retry_after_ms: d.refused.map_or(0, |r| r.retry_after_ms),
        app_id: &app.id,
        service: &service.id,
        lease_id: charged.lease.map(|(id, _)| lease_id(&app.id, &service.id, id)),
        expires_at: charged.lease.map(|(_, at)| at.to_jiff().to_string()),
        reserved_units: charged.lease.map(|_| units.as_f64()),
        limits: LimitsSeq { items: d.limits.as_slice(), unit: &service.unit },
    };
    let status = match d.refused {
        None => ok,
        Some(r) if r.reason == Reason::Suspended => StatusCode::FORBIDDEN,
        Some(_) => StatusCode::TOO_MANY_REQUESTS,
    };
    let mut headers = HeaderMap::new();
    if let Some((policy, current)) = ratelimit_headers(&d.limits, &service.unit) {
        headers.insert("ratelimit-policy", policy);
        headers.insert("ratelimit", current);
    }
    if let Some(r) = d.refused
        && status == StatusCode::TOO_MANY_REQUESTS
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(r.retry_after_ms).max(1)));
    }
    (status, headers, Json(body)).into_response()
}

/// `POST /v1/check`
pub async fn check(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: CheckRequest<'_> = super::body::parse(&body)?;
    let (app, idx, charged) = decide(&state, &req, false).await?;
    Ok(respond(&state, &app, idx, &charged, Units::ZERO, StatusCode::OK))
}

/// `POST /v1/leases`
pub async fn acquire(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: CheckRequest<'_> = super::body::parse(&body)?;
    let (app, idx, charged) = decide(&state, &req, true).await?;
    let units = cost(&req)?.units;
    Ok(respond(&state, &app, idx, &charged, units, StatusCode::CREATED))
}

/// Lease ids carry their app and service, so renewing or releasing needs nothing else and
/// any node (or a shared store) can find the lease: `<app>.<service>.<16 hex digits>`.
fn lease_id(app: &str, service: &str, id: u64) -> String {
    format!("{app}.{service}.{id:016x}")
}

fn parse_lease_id(state: &AppState, lease: &str) -> Result<(Arc<AppView>, ServiceIdx, u64), ApiError> {
    let not_found = || ApiError::unknown("lease_not_found", format!("no live lease `{lease}`"));
    let mut parts = lease.split('.');
    let (Some(app), Some(service), Some(id), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(not_found());
    };
    let id = u64::from_str_radix(id, 16).map_err(|_| not_found())?;
    let (app, idx) = lookup(state, app, service).map_err(|_| not_found())?;
    Ok((app, idx, id))
}

#[derive(Serialize)]
struct LeaseJson {
    lease_id: String,
    expires_at: String,
    ttl_ms: u64,
}

/// `POST /v1/leases/{id}/renew`
pub async fn renew(
    State(state): State<Arc<AppState>>,
    Path(lease): Path<String>,
) -> Result<Response, ApiError> {
    let (app, idx, id) = parse_lease_id(&state, &lease)?;
    let ttl = app.limits.service(idx).concurrency.map_or(state.catalogue.lease_ttl_ms, |c| c.lease_ttl_ms);
    let now = state.now();
    let key = CounterKey { app: &app.id, service: idx };
    match state.store.renew_lease(key, id, ttl, now).await? {
        Some(expires) => {
            Ok(Json(LeaseJson { lease_id: lease, expires_at: expires.to_jiff().to_string(), ttl_ms: ttl })
                .into_response())
        }
        None => Err(ApiError::unknown(
            "lease_not_found",
            format!("no live lease `{lease}` (expired or released)"),
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The units actually consumed; settles the reservation made when the lease was taken.
    pub units: Option<f64>,
}

#[derive(Serialize)]
struct ReleasedJson {
    lease_id: String,
    released: bool,
    /// Actual minus reserved units: positive was charged extra, negative refunded.
    settled_units: f64,
}

/// `DELETE /v1/leases/{id}`, optionally with `{"units": actual}`.
pub async fn release(
    State(state): State<Arc<AppState>>,
    Path(lease): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ReleaseRequest = super::body::parse(&body)?;
    let actual = req
        .units
        .map(Units::from_f64)
        .transpose()
        .map_err(|e| ApiError::invalid_field("invalid_cost", "units", format!("`units` {e}")))?;
    let (app, idx, id) = parse_lease_id(&state, &lease)?;
    let now = state.now();
    let key = CounterKey { app: &app.id, service: idx };
    match state.store.release_lease(key, id, actual, now, &app.time_zone).await? {
        LeaseRelease::Released(s) => {
            if s.delta_milli != 0 {
                let at = voxgate_core::Timestamp::from_secs(s.minute);
                state.record(&app.id, idx, at, Event::Settled { units_milli: s.delta_milli });
            }
            Ok(Json(ReleasedJson {
                lease_id: lease,
                released: true,
                settled_units: s.delta_milli as f64 / 1000.0,
            })
            .into_response())
        }
        LeaseRelease::NotFound => Err(ApiError::unknown(
            "lease_not_found",
            format!("no live lease `{lease}` (expired or released)"),
        )),
    }
}
