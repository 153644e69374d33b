//! What an app may read about itself: every limit with its current use, and the metered
//! usage series.

use super::auth::Caller;
use super::error::ApiError;
use super::limits_json::LimitJson;
use crate::state::{AppState, AppView};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use voxgate_core::entitlement::LimitValue;
use voxgate_core::store::CounterKey;
use voxgate_core::{CounterStore, Dimension, LayerKind, Op, Reason, ServiceIdx, Timestamp};
use voxgate_registry::Step;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AppLimits)]
struct LimitsJson<'a> {
    app_id: &'a str,
    account_id: &'a str,
    plan: &'a str,
    verification_level: &'a str,
    time_zone: &'a str,
    suspended: bool,
    /// Set when the month's spending cap stopped the app: until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    capped_until: Option<String>,
    limits: Vec<ExplainedLimit<'a>>,
    /// With `explain=true`: contracts and windows that exist but are not in force now.
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled: Option<Vec<ScheduledJson>>,
    /// With `explain=true`: when a contract or window next starts or stops.
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_until: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ExplainedLimit<'a> {
    #[serde(flatten)]
    limit: LimitJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explain: Option<ExplainJson>,
}

/// Every layer that touched one limit, in the order applied, and which one decided it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Explain)]
struct ExplainJson {
    winner: Option<String>,
    layers: Vec<StepJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ExplainStep)]
struct StepJson {
    kind: LayerKind,
    source: String,
    op: &'static str,
    /// What the layer brings: a value, or a factor for `multiply`.
    operand: serde_json::Value,
    /// The limit after this layer.
    result: serde_json::Value,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Scheduled)]
struct ScheduledJson {
    kind: LayerKind,
    source: String,
    next_change: Option<String>,
}

fn value_json(v: Option<LimitValue>) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(LimitValue::Rate(r)) => serde_json::json!({ "per_second": r.per_second, "burst": r.burst }),
        Some(LimitValue::Concurrency(c)) => {
            serde_json::json!({ "max": c.max, "lease_ttl_ms": c.lease_ttl_ms })
        }
        Some(LimitValue::Units(u)) => serde_json::json!(u.as_f64()),
    }
}

fn explain(app: &AppView, idx: ServiceIdx, dim: Dimension) -> ExplainJson {
    let found = app.limits.explanation.limits.iter().find(|(s, d, ..)| *s == idx && *d == dim);
    let Some((_, _, steps, winner)) = found else { return ExplainJson { winner: None, layers: Vec::new() } };
    ExplainJson {
        winner: winner.map(|w| steps[w].source.clone()),
        layers: steps
            .iter()
            .map(|st| StepJson {
                kind: st.kind,
                source: st.source.clone(),
                op: st.op.name(),
                operand: match st.op {
                    Op::Set(v) | Op::Max(v) | Op::Min(v) => value_json(Some(v)),
                    Op::Multiply(f) => serde_json::json!({ "factor": f }),
                },
                result: value_json(st.result),
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitsQuery {
    #[serde(default)]
    pub explain: bool,
}

/// `GET /v1/apps/{id}/limits[?explain=true]` — every limit of every service, and with
/// `explain` every layer that set it. No hidden limits.
#[utoipa::path(
    get, path = "/v1/apps/{id}/limits", operation_id = "app_limits", tag = "apps",
    summary = "Every limit of the app with its current use",
    params(("id" = String, Path, description = "The app id."), LimitsQuery),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "Every limit of every service.", body = LimitsJson),
        super::openapi::NotFound, super::openapi::Unavailable
    )
)]
pub async fn limits(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LimitsQuery>,
) -> Result<Response, ApiError> {
    caller.may_read(&id)?;
    let snapshot = state.snapshot.load();
    let app =
        snapshot.apps.get(&id).ok_or_else(|| ApiError::unknown("unknown_app", format!("no app `{id}`")))?;
    let now = state.now();
    let mut reports = Vec::new();
    for idx in state.catalogue.service_indices() {
        let key = CounterKey { app: &app.id, service: idx };
        let report = state.store.peek(key, app.limits.service(idx), now, &app.time_zone).await?;
        reports.push((idx, report));
    }
    let mut limits = Vec::new();
    for (idx, report) in &reports {
        let service = state.catalogue.service_def(*idx);
        limits.extend(report.as_slice().iter().map(|s| ExplainedLimit {
            limit: LimitJson::new(s, Some(&service.id), &service.unit),
            explain: q.explain.then(|| explain(app, *idx, s.dimension)),
        }));
    }
    let rfc = |t: Timestamp| t.to_jiff().to_string();
    let scheduled = q.explain.then(|| {
        app.scheduled
            .iter()
            .map(|l| ScheduledJson {
                kind: l.kind,
                source: l.source.clone(),
                next_change: l.schedule.next_change(now).map(rfc),
            })
            .collect()
    });
    let capped_until = state.capped.load().get(&*app.id).copied().filter(|t| now < *t).map(rfc);
    Ok(Json(LimitsJson {
        app_id: &app.id,
        account_id: &app.account_id,
        plan: &app.plan,
        verification_level: &app.tier,
        time_zone: &app.time_zone_name,
        suspended: app.suspended,
        capped_until,
        limits,
        scheduled,
        valid_until: if q.explain { app.limits.valid_until.map(rfc) } else { None },
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    pub service: Option<String>,
    /// RFC 3339 instant or Unix seconds; default: `to` minus one bucket-range.
    pub from: Option<String>,
    /// RFC 3339 instant or Unix seconds; default: now.
    pub to: Option<String>,
    /// `minute` (default), `hour` or `day`.
    pub step: Option<String>,
}

/// Instants voxgate accepts from callers: 1970 to 2200, so every later computation (spans,
/// nanoseconds) stays far from overflow.
const EARLIEST_S: i64 = 0;
const LATEST_S: i64 = 7_258_118_400;

fn parse_instant(field: &str, s: &str) -> Result<i64, ApiError> {
    let secs = s.parse::<i64>().ok().or_else(|| s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second()));
    match secs {
        Some(secs) if (EARLIEST_S..=LATEST_S).contains(&secs) => Ok(secs),
        _ => Err(ApiError::invalid_field(
            "invalid_time",
            field,
            format!("`{field}` must be an RFC 3339 instant or Unix seconds between 1970 and 2200"),
        )),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Refused {
    rate: u64,
    quota: u64,
    concurrency: u64,
    suspended: u64,
    capacity: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = UsageBucket)]
struct Bucket {
    start: String,
    service: String,
    allowed: u64,
    refused: Refused,
    units: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Usage)]
struct UsageJson<'a> {
    app_id: &'a str,
    step: &'a str,
    from: String,
    to: String,
    time_zone: &'a str,
    series: Vec<Bucket>,
}

/// `GET /v1/apps/{id}/usage` — the metered series, including usage not yet flushed.
#[utoipa::path(
    get, path = "/v1/apps/{id}/usage", operation_id = "app_usage", tag = "apps",
    summary = "Metered usage series", params(("id" = String, Path, description = "The app id."), UsageQuery),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "Buckets with activity, by `start` then `service`.", body = UsageJson),
        super::openapi::NotFound, super::openapi::Unprocessable
    )
)]
pub async fn usage(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    caller.may_read(&id)?;
    let app = state
        .snapshot
        .load()
        .apps
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::unknown("unknown_app", format!("no app `{id}`")))?;
    if let Some(s) = &q.service
        && state.catalogue.service(s).is_none()
    {
        return Err(ApiError::unknown("unknown_service", format!("no service `{s}` in the catalogue")));
    }
    let step_name = q.step.as_deref().unwrap_or("minute");
    let step = Step::parse(step_name).ok_or_else(|| {
        ApiError::invalid_field("invalid_step", "step", "`step` must be minute, hour or day")
    })?;
    let (default_span, max_span) = match step {
        Step::Minute => (3_600, 2 * 86_400),
        Step::Hour => (86_400, 92 * 86_400),
        Step::Day => (31 * 86_400, 800 * 86_400),
    };
    let to = match &q.to {
        Some(s) => parse_instant("to", s)?,
        None => state.now().secs() + 1,
    };
    let from = match &q.from {
        Some(s) => parse_instant("from", s)?,
        None => to.saturating_sub(default_span),
    };
    if from >= to || to.saturating_sub(from) > max_span {
        return Err(ApiError::invalid_field(
            "invalid_range",
            "from",
            format!(
                "`from` must be before `to`, at most {} days apart for step `{step_name}`",
                max_span / 86_400
            ),
        ));
    }
    // Reads include what the meter still holds.
    state.flush().await.map_err(ApiError::internal)?;
    let buckets =
        state.registry.usage_series(&app.id, q.service.as_deref(), from, to, step, &app.time_zone).await?;
    let rfc = |s: i64| jiff::Timestamp::from_second(s).map(|t| t.to_string()).unwrap_or_default();
    let series = buckets
        .into_iter()
        .map(|b| Bucket {
            start: rfc(b.start),
            service: b.service,
            allowed: b.allowed,
            refused: Refused {
                rate: b.refused[Reason::Rate as usize],
                quota: b.refused[Reason::Quota as usize],
                concurrency: b.refused[Reason::Concurrency as usize],
                suspended: b.refused[Reason::Suspended as usize],
                capacity: b.refused[Reason::Capacity as usize],
            },
            units: b.units_milli as f64 / 1000.0,
        })
        .collect();
    Ok(Json(UsageJson {
        app_id: &app.id,
        step: step_name,
        from: rfc(from),
        to: rfc(to),
        time_zone: &app.time_zone_name,
        series,
    })
    .into_response())
}
