//! The decision endpoints: `POST /v1/check` and the lease endpoints. This is the hot path:
//! one snapshot read, one store call, one meter update, one metrics update.
//!
//! [`decide_app`] and [`respond`] are shared with forward-auth (`/v1/authorize`), so a call
//! is decided, metered, counted and answered (status, `RateLimit-*`, `Retry-After`) the same
//! way whichever door it came in by.

use super::error::ApiError;
use super::limits_json::{LimitJson, ceil_secs, ratelimit_headers};
use crate::meter::Event;
use crate::metrics::Outcome;
use crate::state::{AppState, AppView};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;
use voxgate_core::engine::Cost;
use voxgate_core::store::{Charged, CheckInput, CounterKey, LeaseRelease};
use voxgate_core::{CounterStore, Decision, Reason, ServiceIdx, Units};

/// The body of `POST /v1/check` and `POST /v1/leases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(example = json!({ "app_id": "demo", "service": "asr", "units": 12.5 }))]
pub struct CheckRequest<'a> {
    /// Borrowed from the body when it has no escapes, saving two allocations per decision.
    #[serde(borrow)]
    pub app_id: Cow<'a, str>,
    #[serde(borrow)]
    pub service: Cow<'a, str>,
    /// Requests this call counts as (default 1; 0 consumes no rate).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000, multiple_of = 1)]
    pub requests: Option<f64>,
    /// Units of the service this call consumes or, for a lease, reserves (default 0).
    #[schema(minimum = 0, maximum = 1000000000000.0)]
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
    let started = Instant::now();
    let cost = cost(req)?;
    let (app, idx) = lookup(state, &req.app_id, &req.service)?;
    let charged = decide_app(state, &app, idx, cost, lease, started).await?;
    Ok((app, idx, charged))
}

/// Decides one call of a known app and service: suspension, spending cap, limits that can
/// never pass, then the counter store. Meters the outcome and records it in the metrics
/// with the time since `started`.
pub(crate) async fn decide_app(
    state: &AppState,
    app: &Arc<AppView>,
    idx: ServiceIdx,
    cost: Cost,
    lease: bool,
    started: Instant,
) -> Result<Charged, ApiError> {
    let now = state.now();
    let note = |event: Event| {
        state.record(&app.id, idx, now, event);
        let outcome = match event {
            Event::Refused(r) => Outcome::Refused(r),
            _ => Outcome::Allowed,
        };
        state.metrics.decision(&app.id, idx, outcome, started.elapsed());
    };
    if app.suspended {
        note(Event::Refused(Reason::Suspended));
        return Ok(Charged { decision: Decision::suspended(), lease: None });
    }
    if let Some(until) = state.capped.load().get(&*app.id).copied()
        && now < until
    {
        // The month's spending cap is reached: refused as a quota, until the month ends.
        note(Event::Refused(Reason::Quota));
        let wait = voxgate_core::time::millis_until(now, until);
        return Ok(Charged { decision: Decision::refused(Reason::Quota, wait), lease: None });
    }
    let limits = app.limits.service(idx);
    let service = &state.catalogue.service_def(idx).id;
    if let Some(dim) = limits.unreachable(cost.requests, cost.units, lease) {
        note(Event::Refused(Reason::of(dim)));
        let limit = voxgate_core::entitlement::value_of(limits, dim).map_or(0.0, |v| match v {
            voxgate_core::entitlement::LimitValue::Rate(r) => r.burst as f64,
            other => other.primary(),
        });
        let detail = if limit == 0.0 {
            format!(
                "this app has no `{}` allowance for `{}` (the limit is 0 on plan `{}`): change the plan or \
                 request an increase",
                dim.as_str(),
                service,
                app.plan
            )
        } else {
            format!(
                "this call can never pass the `{}` limit of `{}` ({limit}) as it stands: make it smaller \
                 (split the work) or raise the limit",
                dim.as_str(),
                service
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
        .await
        .inspect_err(|e| {
            if e.is_transient() {
                state.metrics.decision(&app.id, idx, Outcome::StoreError, started.elapsed());
            }
        })?;
    note(match charged.decision.refused {
        None => Event::Allowed { units_milli: cost.units.milli() as i64 },
        Some(r) => Event::Refused(r.reason),
    });
    Ok(charged)
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

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Decision)]
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
    /// Every limit that applied, after the decision.
    #[schema(value_type = Vec<LimitJson>)]
    limits: LimitsSeq<'a>,
}

/// The status of a decision: `ok` when allowed, 403 for a suspended app (retrying will not
/// help), else 429.
pub(crate) fn decision_status(d: &Decision, ok: StatusCode) -> StatusCode {
    match d.refused {
        None => ok,
        Some(r) if r.reason == Reason::Suspended => StatusCode::FORBIDDEN,
        Some(_) => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// `RateLimit-Policy` and `RateLimit` for every limit of a decision, and `Retry-After` (whole
/// seconds, at least 1) when it is answered with 429.
pub(crate) fn decision_headers(unit: &str, d: &Decision, status: StatusCode) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some((policy, current)) = ratelimit_headers(&d.limits, unit) {
        headers.insert("ratelimit-policy", policy);
        headers.insert("ratelimit", current);
    }
    if let Some(r) = d.refused
        && status == StatusCode::TOO_MANY_REQUESTS
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(r.retry_after_ms).max(1)));
    }
    headers
}

/// A decision as `/v1/check` answers it: the status, the headers and the decision body.
pub(crate) fn respond(
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
    let status = decision_status(d, ok);
    (status, decision_headers(&service.unit, d, status), Json(body)).into_response()
}

/// `POST /v1/check`
#[utoipa::path(
    post, path = "/v1/check", tag = "decisions", summary = "Decide one call and charge it",
    request_body = CheckRequest, security((), ("gateway_token" = []), ("admin_token" = [])),
    responses(
        (
            status = 200, description = "Allowed, and charged.", body = DecisionJson,
            headers(
                ("RateLimit-Policy" = String, description = "One item per limit: `q`, `w`, `qu`."),
                ("RateLimit" = String, description = "One item per limit: `r` remaining, `t` reset.")
            )
        ),
        (
            status = 429,
            description = "Refused (`rate`, `quota`, `concurrency`, `capacity`): nothing consumed.",
            body = DecisionJson, headers(("Retry-After" = u64, description = "Seconds, at least 1."))
        ),
        (
            status = 403,
            description = "The app is suspended (a decision), or the token may not decide (a problem).",
            content(
                (DecisionJson = "application/json"), (super::openapi::Forbidden = "application/problem+json")
            )
        ),
        super::openapi::NotFound, super::openapi::Unprocessable, super::openapi::Unavailable
    )
)]
pub async fn check(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: CheckRequest<'_> = super::body::parse(&body)?;
    let (app, idx, charged) = decide(&state, &req, false).await?;
    Ok(respond(&state, &app, idx, &charged, Units::ZERO, StatusCode::OK))
}

/// `POST /v1/leases`
#[utoipa::path(
    post, path = "/v1/leases", operation_id = "acquire_lease", tag = "decisions",
    summary = "Decide one call and take a lease", request_body = CheckRequest,
    security((), ("gateway_token" = []), ("admin_token" = [])),
    responses(
        (
            status = 201,
            description = "Allowed; the lease is taken (none if a down shared store's policy allowed it).",
            body = DecisionJson, headers(("RateLimit-Policy" = String), ("RateLimit" = String))
        ),
        (
            status = 429, description = "Refused: nothing consumed, no lease.", body = DecisionJson,
            headers(("Retry-After" = u64, description = "Seconds, at least 1."))
        ),
        (
            status = 403,
            description = "The app is suspended (a decision), or the token may not decide (a problem).",
            content(
                (DecisionJson = "application/json"), (super::openapi::Forbidden = "application/problem+json")
            )
        ),
        super::openapi::NotFound, super::openapi::Unprocessable, super::openapi::Unavailable
    )
)]
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

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Lease)]
struct LeaseJson {
    lease_id: String,
    expires_at: String,
    ttl_ms: u64,
}

/// `POST /v1/leases/{id}/renew`
#[utoipa::path(
    post, path = "/v1/leases/{id}/renew", operation_id = "renew_lease", tag = "decisions",
    summary = "Extend a live lease",
    params(("id" = String, Path, description = "The lease id: `<app>.<service>.<16 hex digits>`.")),
    security((), ("gateway_token" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "Renewed.", body = LeaseJson), super::openapi::NotFound,
        super::openapi::Unavailable
    )
)]
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
#[derive(utoipa::ToSchema)]
pub struct ReleaseRequest {
    /// The units actually consumed; settles the reservation made when the lease was taken.
    pub units: Option<f64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = LeaseReleased)]
struct ReleasedJson {
    lease_id: String,
    released: bool,
    /// Actual minus reserved units: positive was charged extra, negative refunded.
    settled_units: f64,
}

/// `DELETE /v1/leases/{id}`, optionally with `{"units": actual}`.
#[utoipa::path(
    delete, path = "/v1/leases/{id}", operation_id = "release_lease", tag = "decisions",
    summary = "Release a lease, settling the units used",
    params(("id" = String, Path, description = "The lease id.")), request_body = Option<ReleaseRequest>,
    security((), ("gateway_token" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "Released.", body = ReleasedJson), super::openapi::NotFound,
        super::openapi::Unavailable
    )
)]
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
