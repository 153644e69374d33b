//! The limit-increase workflow over HTTP: a developer submits a request with a business case;
//! the sizing engine justifies a value and the app's own metered usage is attached as
//! evidence; the policy approves it at once or queues it for review; operators approve
//! (fully or partly), deny or renew; grants lapse at the end of their probation.

use super::auth::Caller;
use super::body::JsonBody;
use super::error::ApiError;
use crate::entitlements::parse_value;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use voxgate_core::entitlement::{LimitValue, value_of};
use voxgate_core::increase::{self, Action, Facts, Status};
use voxgate_core::sizing::{BusinessCase, Observed, Sizing};
use voxgate_core::store::CounterKey;
use voxgate_core::{CounterStore, Dimension, Timestamp};
use voxgate_registry::{Actor, IncreaseChange, IncreaseRequest, UsageStats};

const DAY_S: i64 = 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(
    example = json!(
        {
            "service": "asr", "dimension": "rate", "requested": {"per_second": 20, "burst": 40},
            "business_case": {
                "daily_active_users": 2000, "interactions_per_user_per_day": 10, "units_per_interaction": 15
            },
            "justification": "Evening peak of a voice assistant.", "contact_email": "ops@acme-voice.example"
        }
    )
)]
pub struct SubmitIncrease {
    pub service: String,
    pub dimension: Dimension,
    /// Shaped as in the catalogue: `{per_second, burst}`, `{max}` or a number of units.
    #[schema(schema_with = super::openapi::limit_value)]
    pub requested: serde_json::Value,
    pub business_case: BusinessCase,
    pub justification: String,
    pub contact_email: String,
}

#[derive(Serialize)]
struct WindowEvidence {
    days: i64,
    requests: u64,
    allowed: u64,
    refused: serde_json::Value,
    units: f64,
    active_minutes: u64,
    mean_per_second: f64,
    peak_per_minute: u64,
    peak_per_second: u64,
}

fn window_evidence(days: i64, s: &UsageStats) -> WindowEvidence {
    let requests = s.allowed + s.refused.iter().sum::<u64>();
    let mean = if s.active_minutes == 0 { 0.0 } else { requests as f64 / (s.active_minutes as f64 * 60.0) };
    WindowEvidence {
        days,
        requests,
        allowed: s.allowed,
        refused: serde_json::json!({
            "rate": s.refused[0], "quota": s.refused[1], "concurrency": s.refused[2],
            "suspended": s.refused[3], "capacity": s.refused[4],
        }),
        units: s.units_milli as f64 / 1000.0,
        active_minutes: s.active_minutes,
        mean_per_second: (mean * 1000.0).round() / 1000.0,
        peak_per_minute: s.peak_per_minute,
        peak_per_second: s.peak_per_second,
    }
}

fn justified(sizing: &Sizing, dim: Dimension) -> f64 {
    match dim {
        Dimension::Rate => sizing.rate_per_second,
        Dimension::Concurrency => sizing.concurrency.unwrap_or(0) as f64,
        Dimension::PerMinute => sizing.per_minute_units,
        Dimension::Daily => sizing.daily_units,
        Dimension::Monthly => sizing.monthly_units,
    }
}

fn invalid(code: &'static str, e: crate::entitlements::BodyError) -> ApiError {
    // Messages that already start with the field (`valid_from` …) are not prefixed again.
    let detail =
        if e.message.starts_with('`') { e.message.clone() } else { format!("`{}` {}", e.field, e.message) };
    ApiError::invalid_field(code, &e.field, detail)
}

/// `POST /v1/apps/{id}/increase-requests` — the app's key or the admin.
#[utoipa::path(
    post, path = "/v1/apps/{id}/increase-requests", operation_id = "submit_increase_request",
    tag = "increases", summary = "Ask for a higher limit",
    params(("id" = String, Path, description = "The app id.")), request_body = SubmitIncrease,
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (
            status = 201, description = "Submitted and triaged: approved at once, or pending review.",
            body = IncreaseRequest
        ),
        super::openapi::NotFound, super::openapi::Unprocessable, super::openapi::Unavailable
    )
)]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
    JsonBody(req): JsonBody<SubmitIncrease>,
) -> Result<Response, ApiError> {
    caller.may_read(&app_id)?;
    let app = state.snapshot.load().apps.get(&app_id).cloned();
    let app = app.ok_or_else(|| ApiError::unknown("unknown_app", format!("no app `{app_id}`")))?;
    let idx = state.catalogue.service(&req.service).ok_or_else(|| {
        ApiError::unknown("unknown_service", format!("no service `{}` in the catalogue", req.service))
    })?;
    let requested = parse_value(&state.catalogue, &req.service, req.dimension, "requested", &req.requested)
        .map_err(|e| invalid("invalid_request_value", e))?;
    let current = value_of(app.limits.service(idx), req.dimension);
    if let Some(c) = current
        && requested.primary() <= c.primary()
    {
        return Err(ApiError::invalid_field(
            "not_an_increase",
            "requested",
            format!("the current {} limit is already {}", req.dimension.as_str(), c.primary()),
        ));
    }
    if !req.contact_email.contains('@') || req.contact_email.len() > 254 {
        return Err(ApiError::invalid_field(
            "invalid_field",
            "contact_email",
            "`contact_email` must be an email address",
        ));
    }
    if req.justification.trim().is_empty() || req.justification.len() > 10_000 {
        return Err(ApiError::invalid_field(
            "invalid_field",
            "justification",
            "`justification` must be 1 to 10000 characters",
        ));
    }

    // Evidence: the app's own metered usage, and where it stands now.
    let now = state.now();
    state.flush().await.map_err(ApiError::internal)?;
    let now_s = now.secs();
    let mut evidence = Vec::new();
    let mut week = UsageStats::default();
    for days in [7, 30] {
        let stats =
            state.registry.usage_stats(&app.id, &req.service, now_s - days * DAY_S, now_s + 1).await?;
        if days == 7 {
            week = stats;
        }
        evidence.push(window_evidence(days, &stats));
    }
    let report = state
        .store
        .peek(CounterKey { app: &app.id, service: idx }, app.limits.service(idx), now, &app.time_zone)
        .await?;
    let utilisation = report.get(req.dimension).map(|s| {
        let share = if s.limit == 0 { 1.0 } else { s.used as f64 / s.limit as f64 };
        (share * 1000.0).round() / 1000.0
    });
    let w = window_evidence(7, &week);
    let observed = (w.active_minutes >= 60 && w.peak_per_second > 0).then_some(Observed {
        mean_per_second: w.mean_per_second,
        peak_per_second: w.peak_per_second as f64,
    });

    if req.dimension == Dimension::Concurrency && req.business_case.session_length_s.is_none() {
        return Err(ApiError::invalid_field(
            "invalid_business_case",
            "business_case.session_length_s",
            "`business_case.session_length_s` is needed to size concurrency (Little's law)",
        ));
    }
    let sizing = req.business_case.size(observed).map_err(|e| {
        ApiError::invalid_field(
            "invalid_business_case",
            &format!("business_case.{}", e.field),
            format!("`business_case.{}` {}", e.field, e.message),
        )
    })?;
    let justified_value = justified(&sizing, req.dimension);
    let ceiling = state
        .catalogue
        .tiers
        .get(&app.tier)
        .and_then(|t| t.ceiling.iter().find(|(s, _)| *s == idx).and_then(|(_, l)| value_of(l, req.dimension)))
        .map(|v| v.primary());
    let policy = state.catalogue.increase_policy;
    let facts = Facts {
        requested: requested.primary(),
        justified: justified_value,
        ceiling,
        good_standing: !app.suspended,
    };
    let (auto, why_not) = increase::triage(&policy, &facts);

    let record = IncreaseRequest {
        id: format!("inc_{}", hex::encode(rand::random::<[u8; 8]>())),
        app_id: app.id.to_string(),
        account_id: app.account_id.clone(),
        service: req.service.clone(),
        dimension: req.dimension.as_str().to_string(),
        requested: req.requested.clone(),
        granted: None,
        business_case: serde_json::to_value(&req.business_case).unwrap_or_default(),
        justification: req.justification.trim().to_string(),
        contact_email: req.contact_email.trim().to_string(),
        sizing: serde_json::json!({
            "justified": justified_value,
            "current": current.map(|c| c.primary()),
            "ceiling": ceiling,
            "auto_approve_up_to": justified_value * (1.0 + policy.margin),
            "values": sizing,
        }),
        evidence: serde_json::json!({ "windows": evidence, "utilisation": utilisation }),
        status: Status::Submitted.as_str().to_string(),
        reason: None,
        grant_expires_at: None,
        created_at: now.millis(),
        updated_at: now.millis(),
        decided_by: None,
    };
    let actor = match &caller {
        Caller::App(a) => Actor(format!("app:{a}")),
        _ => Actor::admin(),
    };
    state.registry.create_increase_request(&record, &actor).await?;
    let to = increase::next(Status::Submitted, Action::Triage { auto_approve: auto })
        .unwrap_or(Status::PendingReview);
    let (reason, granted, expires) = if auto {
        let expires =
            (policy.probation_days > 0).then(|| now.millis() + policy.probation_days as i64 * DAY_S * 1000);
        (
            "approved automatically: within the justified value, the margin and the ceiling".to_string(),
            Some(req.requested.clone()),
            expires,
        )
    } else {
        (format!("needs review: {}", why_not.join("; ")), None, None)
    };
    let change =
        IncreaseChange { status: to.as_str(), granted, reason: Some(&reason), grant_expires_at: expires };
    let record = state
        .registry
        .change_increase_request(
            &record.id,
            &[Status::Submitted.as_str()],
            change,
            "increase.triage",
            &Actor::system(),
        )
        .await?;
    if auto {
        state.reload().await.map_err(ApiError::internal)?;
    }
    crate::alerts::increase_changed(&state, &record).await;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// `GET /v1/apps/{id}/increase-requests` — the app's key or the admin.
#[utoipa::path(
    get, path = "/v1/apps/{id}/increase-requests", operation_id = "app_increase_requests", tag = "increases",
    summary = "The app's increase requests", params(("id" = String, Path, description = "The app id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "Its requests.", body = super::openapi::IncreaseRequestList),
        super::openapi::NotFound
    )
)]
pub async fn list_for_app(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may_read(&app_id)?;
    state.registry.app(&app_id).await?;
    let list = state.registry.increase_requests(Some(&app_id), &[]).await?;
    Ok(Json(serde_json::json!({ "increase_requests": list })).into_response())
}

fn unknown(e: voxgate_registry::RegistryError) -> ApiError {
    match e {
        voxgate_registry::RegistryError::NotFound { id, .. } => {
            ApiError::unknown("unknown_increase_request", format!("no increase request `{id}`"))
        }
        other => other.into(),
    }
}

/// `GET /v1/increase-requests/{id}` — the admin, or a key of the request's account.
#[utoipa::path(
    get, path = "/v1/increase-requests/{id}", operation_id = "get_increase_request", tag = "increases",
    summary = "One increase request", params(("id" = String, Path, description = "The increase request id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "The request, with its sizing and evidence.", body = IncreaseRequest),
        super::openapi::NotFound
    )
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = caller.screen(state.registry.increase_request(&id).await)?.map_err(unknown)?;
    caller.may_act_for_account(&state, &r.account_id)?;
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// A status, or `all`; `pending_review` by default.
    pub status: Option<String>,
}

/// `GET /v1/increase-requests` — the review queue, oldest first, evidence beside each (admin).
#[utoipa::path(
    get, path = "/v1/increase-requests", operation_id = "increase_request_queue", tag = "increases",
    summary = "The review queue", params(QueueQuery), security(("admin_token" = [])),
    responses(
        (status = 200, description = "Requests, oldest first.", body = super::openapi::IncreaseRequestList),
        super::openapi::Unprocessable
    )
)]
pub async fn queue(
    State(state): State<Arc<AppState>>,
    Query(q): Query<QueueQuery>,
) -> Result<Response, ApiError> {
    let statuses: Vec<&str> = match q.status.as_deref() {
        None => vec![Status::PendingReview.as_str()],
        Some("all") => vec![],
        Some(s) => vec![
            Status::parse(s)
                .ok_or_else(|| {
                    ApiError::invalid_field("invalid_status", "status", "`status` is not a request status")
                })?
                .as_str(),
        ],
    };
    let list = state.registry.increase_requests(None, &statuses).await?;
    Ok(Json(serde_json::json!({ "increase_requests": list })).into_response())
}

async fn transition(
    state: &AppState,
    id: &str,
    action: Action,
    change: IncreaseChange<'_>,
    audit_action: &str,
    actor: &Actor,
) -> Result<IncreaseRequest, ApiError> {
    let from: Vec<&str> = increase::sources(action).into_iter().map(Status::as_str).collect();
    let r = state
        .registry
        .change_increase_request(id, &from, change, audit_action, actor)
        .await
        .map_err(unknown)?;
    state.reload().await.map_err(ApiError::internal)?;
    crate::alerts::increase_changed(state, &r).await;
    Ok(r)
}

fn expiry(
    state: &AppState,
    field: &str,
    at: Option<&str>,
    days: Option<u32>,
) -> Result<Option<i64>, ApiError> {
    match (at, days) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "invalid_field",
            field,
            "give `expires_at` or `probation_days`, not both",
        )),
        (Some(s), None) => crate::entitlements::parse_instant(field, s)
            .map(|t| Some(t.millis()))
            .map_err(|e| invalid("invalid_time", e)),
        (None, Some(d)) => Ok((d > 0).then(|| state.now().millis() + d as i64 * DAY_S * 1000)),
        (None, None) => Ok(None),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(as = IncreaseApproval)]
#[schema(example = json!({ "reason": "the evidence supports it", "probation_days": 30 }))]
pub struct Approve {
    pub reason: String,
    /// Less than requested makes a partial approval; the requested value when omitted.
    #[schema(schema_with = super::openapi::limit_value, required = false)]
    pub granted: Option<serde_json::Value>,
    /// When the grant lapses unless renewed (RFC 3339)…
    pub expires_at: Option<String>,
    /// …or after this many days.
    pub probation_days: Option<u32>,
}

fn need_reason(reason: &str) -> Result<&str, ApiError> {
    let r = reason.trim();
    if r.is_empty() {
        Err(ApiError::invalid_field("invalid_field", "reason", "`reason` is required"))
    } else {
        Ok(r)
    }
}

/// `POST /v1/increase-requests/{id}/approve` (admin).
#[utoipa::path(
    post, path = "/v1/increase-requests/{id}/approve", operation_id = "approve_increase_request",
    tag = "increases", summary = "Approve, fully or in part",
    params(("id" = String, Path, description = "The increase request id.")), request_body = Approve,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Approved.", body = IncreaseRequest), super::openapi::NotFound,
        super::openapi::Conflict, super::openapi::Unprocessable
    )
)]
pub async fn approve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Approve>,
) -> Result<Response, ApiError> {
    let reason = need_reason(&req.reason)?;
    let r = state.registry.increase_request(&id).await.map_err(unknown)?;
    // The status decides first: a request that is no longer pending is a conflict, whatever
    // the values.
    let status = Status::parse(&r.status).unwrap_or(Status::Denied);
    if !increase::sources(Action::Approve { partial: false }).contains(&status) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("increase request `{id}` is {}; approving needs it to be pending_review", r.status),
        ));
    }
    let dim: Dimension =
        serde_json::from_value(serde_json::json!(r.dimension)).map_err(ApiError::internal)?;
    let requested = parse_value(&state.catalogue, &r.service, dim, "requested", &r.requested)
        .map_err(|e| invalid("invalid_request_value", e))?;
    let granted_json = req.granted.clone().unwrap_or_else(|| r.requested.clone());
    let granted: LimitValue = parse_value(&state.catalogue, &r.service, dim, "granted", &granted_json)
        .map_err(|e| invalid("invalid_request_value", e))?;
    if granted.primary() > requested.primary() {
        return Err(ApiError::invalid_field(
            "invalid_request_value",
            "granted",
            "`granted` may not exceed what was requested",
        ));
    }
    let partial = granted.primary() < requested.primary();
    let current = state.snapshot.load().apps.get(&r.app_id).and_then(|app| {
        state.catalogue.service(&r.service).and_then(|idx| value_of(app.limits.service(idx), dim))
    });
    if let Some(c) = current
        && granted.primary() <= c.primary()
    {
        return Err(ApiError::invalid_field(
            "not_an_increase",
            "granted",
            format!("the app's current {} limit is already {}; grant more or deny", r.dimension, c.primary()),
        ));
    }
    let expires = expiry(&state, "expires_at", req.expires_at.as_deref(), req.probation_days)?;
    if expires.is_some_and(|t| t <= state.now().millis()) {
        return Err(ApiError::invalid_field(
            "invalid_time",
            "expires_at",
            "`expires_at` must be in the future",
        ));
    }
    let change = IncreaseChange {
        status: if partial { "partially_approved" } else { "approved" },
        granted: Some(granted_json),
        reason: Some(reason),
        grant_expires_at: expires,
    };
    let r = transition(&state, &id, Action::Approve { partial }, change, "increase.approve", &Actor::admin())
        .await?;
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(example = json!({ "reason": "not needed after all" }))]
pub struct WithReason {
    pub reason: Option<String>,
}

/// `POST /v1/increase-requests/{id}/deny` (admin).
#[utoipa::path(
    post, path = "/v1/increase-requests/{id}/deny", operation_id = "deny_increase_request", tag = "increases",
    summary = "Deny", params(("id" = String, Path, description = "The increase request id.")),
    request_body = WithReason, security(("admin_token" = [])),
    responses(
        (status = 200, description = "Denied.", body = IncreaseRequest), super::openapi::NotFound,
        super::openapi::Conflict, super::openapi::Unprocessable
    )
)]
pub async fn deny(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<WithReason>,
) -> Result<Response, ApiError> {
    let reason = need_reason(req.reason.as_deref().unwrap_or(""))?;
    let change =
        IncreaseChange { status: "denied", granted: None, reason: Some(reason), grant_expires_at: None };
    let r = transition(&state, &id, Action::Deny, change, "increase.deny", &Actor::admin()).await?;
    Ok(Json(r).into_response())
}

/// `POST /v1/increase-requests/{id}/withdraw` — the developer (or admin), while not decided.
#[utoipa::path(
    post, path = "/v1/increase-requests/{id}/withdraw", operation_id = "withdraw_increase_request",
    tag = "increases", summary = "Withdraw an undecided request",
    params(("id" = String, Path, description = "The increase request id.")),
    request_body = Option<WithReason>, security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "Withdrawn.", body = IncreaseRequest), super::openapi::NotFound,
        super::openapi::Conflict
    )
)]
pub async fn withdraw(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: WithReason = super::body::parse(&body)?;
    let r = caller.screen(state.registry.increase_request(&id).await)?.map_err(unknown)?;
    caller.may_act_for_account(&state, &r.account_id)?;
    let actor = match &caller {
        Caller::App(a) => Actor(format!("app:{a}")),
        _ => Actor::admin(),
    };
    let change = IncreaseChange {
        status: "withdrawn",
        granted: None,
        reason: req.reason.as_deref(),
        grant_expires_at: None,
    };
    let r = transition(&state, &id, Action::Withdraw, change, "increase.withdraw", &actor).await?;
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(as = IncreaseRenewal)]
#[schema(example = json!({ "reason": "sustained use", "probation_days": 90 }))]
pub struct Renew {
    pub reason: String,
    pub expires_at: Option<String>,
    pub probation_days: Option<u32>,
}

/// `POST /v1/increase-requests/{id}/renew` (admin) — extends a grant (no expiry when neither
/// `expires_at` nor `probation_days` is given).
#[utoipa::path(
    post, path = "/v1/increase-requests/{id}/renew", operation_id = "renew_increase_request",
    tag = "increases", summary = "Extend a grant",
    params(("id" = String, Path, description = "The increase request id.")), request_body = Renew,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Renewed.", body = IncreaseRequest), super::openapi::NotFound,
        super::openapi::Conflict, super::openapi::Unprocessable
    )
)]
pub async fn renew(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Renew>,
) -> Result<Response, ApiError> {
    let reason = need_reason(&req.reason)?;
    let r = state.registry.increase_request(&id).await.map_err(unknown)?;
    let status = Status::parse(&r.status).unwrap_or(Status::Denied);
    let to = increase::next(status, Action::Renew).unwrap_or(status);
    let expires = expiry(&state, "expires_at", req.expires_at.as_deref(), req.probation_days)?;
    if expires.is_some_and(|t| t <= state.now().millis()) {
        return Err(ApiError::invalid_field(
            "invalid_time",
            "expires_at",
            "`expires_at` must be in the future",
        ));
    }
    // No expiry given means "for good": store a far-future instant rather than NULL, so the
    // change is visible in the record and the audit log.
    let expires = expires.unwrap_or(i64::MAX / 4);
    let change = IncreaseChange {
        status: to.as_str(),
        granted: None,
        reason: Some(reason),
        grant_expires_at: Some(expires),
    };
    let r = transition(&state, &id, Action::Renew, change, "increase.renew", &Actor::admin()).await?;
    Ok(Json(r).into_response())
}

impl AppState {
    /// Marks grants whose probation has ended as `expired` (audited). Their layers already
    /// stopped applying at the expiry instant; this records it.
    pub async fn expire_grants(&self) -> anyhow::Result<usize> {
        let now = self.now().millis();
        let granting: Vec<&str> =
            [Status::AutoApproved, Status::Approved, Status::PartiallyApproved].map(Status::as_str).to_vec();
        let mut expired = 0;
        for r in self.registry.increase_requests(None, &granting).await? {
            if r.grant_expires_at.is_some_and(|t| t <= now) {
                let change = IncreaseChange {
                    status: "expired",
                    granted: None,
                    reason: Some("probation ended without renewal"),
                    grant_expires_at: None,
                };
                let r = self
                    .registry
                    .change_increase_request(&r.id, &granting, change, "increase.expire", &Actor::system())
                    .await?;
                crate::alerts::increase_changed(self, &r).await;
                expired += 1;
            }
        }
        Ok(expired)
    }
}

/// The grant layers of the requests that grant capacity, by app.
pub fn grant_layer(r: &IncreaseRequest, catalogue: &voxgate_core::Catalogue) -> Option<voxgate_core::Layer> {
    let status = Status::parse(&r.status)?;
    if !status.grants() {
        return None;
    }
    let dim: Dimension = serde_json::from_value(serde_json::json!(r.dimension)).ok()?;
    let value = parse_value(catalogue, &r.service, dim, "granted", r.granted.as_ref()?).ok()?;
    let service = catalogue.service(&r.service)?;
    Some(voxgate_core::Layer {
        kind: voxgate_core::LayerKind::Grant,
        source: format!("grant:{}", r.id),
        entries: vec![voxgate_core::entitlement::Entry {
            service,
            dimension: dim,
            op: voxgate_core::Op::Max(value),
        }],
        schedule: voxgate_core::schedule::Schedule::Between {
            from: None,
            until: r.grant_expires_at.map(|ms| Timestamp::from_nanos(ms.saturating_mul(1_000_000))),
        },
    })
}
