//! Entitlement endpoints: account changes, verification requests and their review,
//! contracts, capacity windows and statements. Every change is audited by the registry and
//! is live at once (the snapshot is rebuilt before the response).

use super::admin::check_time_zone;
use super::auth::Caller;
use super::body::JsonBody;
use super::error::ApiError;
use crate::entitlements::{BodyError, ContractBody, WindowBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use voxgate_registry::{AccountPatch, Actor, NewVerification, Status, VerificationStatus};

fn body_error(code: &'static str, e: BodyError) -> ApiError {
    // Messages that already start with the field (`valid_from` …) are not prefixed again.
    let detail =
        if e.message.starts_with('`') { e.message.clone() } else { format!("`{}` {}", e.field, e.message) };
    ApiError::invalid_field(code, &e.field, detail)
}

fn actor(caller: &Caller) -> Actor {
    match caller {
        Caller::App(app) => Actor(format!("app:{app}")),
        _ => Actor::admin(),
    }
}

async fn reload(state: &AppState) -> Result<(), ApiError> {
    state.reload().await.map_err(ApiError::internal)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct PatchAccount {
    pub time_zone: Option<String>,
    pub status: Option<String>,
    pub reason: Option<String>,
}

/// `PATCH /v1/accounts/{id}` — the account's zone or status (suspending an account stops
/// all its apps). Verification level changes only through an approved verification.
#[utoipa::path(
    patch, path = "/v1/accounts/{id}", tag = "accounts", summary = "Change an account's time zone or status",
    params(("id" = String, Path, description = "The account id.")), request_body = Option<PatchAccount>,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The account after the change.", body = voxgate_registry::Account),
        super::openapi::NotFound, super::openapi::Unprocessable
    )
)]
pub async fn patch_account(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchAccount>,
) -> Result<Response, ApiError> {
    if let Some(tz) = &req.time_zone {
        check_time_zone(tz)?;
    }
    let status = match req.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::invalid_field("invalid_status", "status", "`status` must be `active` or `suspended`")
        })?),
    };
    let patch = AccountPatch { time_zone: req.time_zone, status };
    let account = state.registry.update_account(&id, patch, &Actor::admin(), req.reason.as_deref()).await?;
    reload(&state).await?;
    Ok(Json(account).into_response())
}

// ---- verification -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(
    example = json!(
        {
            "level": "enterprise", "legal_name": "Acme Speech Ltd",
            "registration_number": "91310000MA1FL0000X", "contact": "ops@acme-voice.example"
        }
    )
)]
pub struct SubmitVerification {
    /// The verification level asked for (a tier of the catalogue).
    pub level: String,
    /// Required for levels that need one (e.g. `industry`): one of the catalogue's sectors.
    pub sector: Option<String>,
    pub legal_name: String,
    /// A personal identity number (individual verification).
    pub id_number: Option<String>,
    /// A company registration number (enterprise verification).
    pub registration_number: Option<String>,
    /// An industry licence id (industry verification).
    pub licence_id: Option<String>,
    /// A reference to the corporate bank account used for the check (not the number).
    pub bank_account_ref: Option<String>,
    pub contact: String,
}

/// `POST /v1/accounts/{id}/verifications` — a developer asks for a verification level.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/verifications", tag = "verification",
    summary = "Ask for a verification level", params(("id" = String, Path, description = "The account id.")),
    request_body = SubmitVerification, security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 201, description = "Submitted, pending review.", body = voxgate_registry::Verification),
        super::openapi::NotFound, super::openapi::Unprocessable
    )
)]
pub async fn submit_verification(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
    JsonBody(req): JsonBody<SubmitVerification>,
) -> Result<Response, ApiError> {
    caller.may_act_for_account(&state, &account_id)?;
    let tier = state.catalogue.tiers.get(&req.level).ok_or_else(|| {
        ApiError::invalid_field(
            "unknown_verification_level",
            "level",
            format!("no verification level `{}`", req.level),
        )
    })?;
    match (&req.sector, tier.requires_sector) {
        (None, true) => {
            return Err(ApiError::invalid_field(
                "invalid_sector",
                "sector",
                format!(
                    "level `{}` needs a sector: one of {}",
                    req.level,
                    state.catalogue.sectors.join(", ")
                ),
            ));
        }
        (Some(s), _) if !state.catalogue.sectors.contains(s) => {
            return Err(ApiError::invalid_field(
                "invalid_sector",
                "sector",
                format!("no sector `{s}`: one of {}", state.catalogue.sectors.join(", ")),
            ));
        }
        _ => {}
    }
    for (field, value) in [("legal_name", &req.legal_name), ("contact", &req.contact)] {
        if value.trim().is_empty() || value.chars().count() > 300 {
            return Err(ApiError::invalid_field(
                "invalid_field",
                field,
                format!("`{field}` must be 1 to 300 characters"),
            ));
        }
    }
    let mut hashes = Vec::new();
    for (kind, number) in
        [("person", &req.id_number), ("company", &req.registration_number), ("licence", &req.licence_id)]
    {
        if let Some(n) = number.as_deref().filter(|n| n.chars().any(|c| c.is_ascii_alphanumeric())) {
            hashes.push(state.identity_hash(kind, n));
        }
    }
    if hashes.is_empty() {
        return Err(ApiError::invalid_field(
            "missing_identity",
            "id_number",
            "give at least one identity number: `id_number`, `registration_number` or `licence_id`",
        ));
    }
    let new = NewVerification {
        account_id,
        level: req.level,
        sector: req.sector,
        legal_name: req.legal_name.trim().to_string(),
        bank_account_ref: req.bank_account_ref,
        contact: req.contact.trim().to_string(),
        identity_hashes: hashes,
    };
    let v = state.registry.submit_verification(new, &actor(&caller)).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `GET /v1/accounts/{id}/verifications`
#[utoipa::path(
    get, path = "/v1/accounts/{id}/verifications", tag = "verification",
    summary = "The account's verification requests",
    params(("id" = String, Path, description = "The account id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "Its requests.", body = super::openapi::VerificationList),
        super::openapi::NotFound
    )
)]
pub async fn account_verifications(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may_act_for_account(&state, &account_id)?;
    state.registry.account(&account_id).await?;
    let list = state.registry.verifications(Some(&account_id), None).await?;
    Ok(Json(serde_json::json!({ "verifications": list })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    pub status: Option<String>,
}

/// `GET /v1/verifications?status=pending` — the review queue, oldest first (admin).
#[utoipa::path(
    get, path = "/v1/verifications", tag = "verification", summary = "The review queue", params(QueueQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Requests, oldest first.", body = super::openapi::VerificationList),
        super::openapi::Unprocessable
    )
)]
pub async fn verification_queue(
    State(state): State<Arc<AppState>>,
    Query(q): Query<QueueQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref() {
        None => Some(VerificationStatus::Pending),
        Some("all") => None,
        Some(s) => Some(VerificationStatus::parse(s).ok_or_else(|| {
            ApiError::invalid_field(
                "invalid_status",
                "status",
                "`status` must be pending, approved, rejected or all",
            )
        })?),
    };
    let list = state.registry.verifications(None, status).await?;
    Ok(Json(serde_json::json!({ "verifications": list })).into_response())
}

/// `GET /v1/verifications/{id}` — the admin, or the account's developer.
#[utoipa::path(
    get, path = "/v1/verifications/{id}", tag = "verification", summary = "One verification request",
    params(("id" = String, Path, description = "The verification request id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "The request.", body = voxgate_registry::Verification),
        super::openapi::NotFound
    )
)]
pub async fn get_verification(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v =
        caller.screen(state.registry.verification(&id).await)?.map_err(not_found("unknown_verification"))?;
    caller.may_act_for_account(&state, &v.account_id)?;
    Ok(Json(v).into_response())
}

fn not_found(code: &'static str) -> impl Fn(voxgate_registry::RegistryError) -> ApiError {
    move |e| match e {
        voxgate_registry::RegistryError::NotFound { kind, id } => {
            ApiError::unknown(code, format!("no {kind} `{id}`"))
        }
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(as = VerificationReview)]
#[schema(example = json!({ "reason": "documents checked" }))]
pub struct Decide {
    pub reason: String,
}

async fn decide(state: &AppState, id: &str, approve: bool, req: Decide) -> Result<Response, ApiError> {
    if req.reason.trim().is_empty() {
        return Err(ApiError::invalid_field("invalid_field", "reason", "`reason` is required"));
    }
    let (v, account) = state
        .registry
        .decide_verification(id, approve, req.reason.trim(), &Actor::admin())
        .await
        .map_err(not_found("unknown_verification"))?;
    reload(state).await?;
    Ok(Json(serde_json::json!({ "verification": v, "account": account })).into_response())
}

/// `POST /v1/verifications/{id}/approve` (admin) — the account's tier changes at once.
#[utoipa::path(
    post, path = "/v1/verifications/{id}/approve", operation_id = "approve_verification",
    tag = "verification", summary = "Approve: the account's tier changes",
    params(("id" = String, Path, description = "The verification request id.")), request_body = Decide,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Approved.", body = super::openapi::VerificationDecision),
        super::openapi::NotFound, super::openapi::Conflict, super::openapi::Unprocessable
    )
)]
pub async fn approve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Decide>,
) -> Result<Response, ApiError> {
    decide(&state, &id, true, req).await
}

/// `POST /v1/verifications/{id}/reject` (admin).
#[utoipa::path(
    post, path = "/v1/verifications/{id}/reject", operation_id = "reject_verification", tag = "verification",
    summary = "Reject a verification request",
    params(("id" = String, Path, description = "The verification request id.")), request_body = Decide,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Rejected.", body = super::openapi::VerificationDecision),
        super::openapi::NotFound, super::openapi::Conflict, super::openapi::Unprocessable
    )
)]
pub async fn reject(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Decide>,
) -> Result<Response, ApiError> {
    decide(&state, &id, false, req).await
}

// ---- contracts ----------------------------------------------------------------------------

/// `POST /v1/accounts/{id}/contracts` (admin).
#[utoipa::path(
    post, path = "/v1/accounts/{id}/contracts", tag = "contracts and windows", summary = "Create a contract",
    params(("id" = String, Path, description = "The account id.")),
    request_body = crate::entitlements::ContractBody, security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created.", body = voxgate_registry::Record), super::openapi::NotFound,
        super::openapi::Unprocessable
    )
)]
pub async fn create_contract(
    State(state): State<Arc<AppState>>,
    Path(account_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let value: serde_json::Value = super::body::parse(&body)?;
    let parsed: ContractBody = super::body::parse(&body)?;
    let reason = parsed.reason.clone();
    let c = parsed.validate(&state.catalogue).map_err(|e| body_error("invalid_contract", e))?;
    let valid = (c.valid_from.map(|t| t.millis()), c.valid_until.map(|t| t.millis()));
    let record = state
        .registry
        .create_contract(&account_id, &value, valid, &Actor::admin(), reason.as_deref())
        .await?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// `GET /v1/accounts/{id}/contracts` — the admin, or the account's developer.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/contracts", tag = "contracts and windows",
    summary = "The account's contracts", params(("id" = String, Path, description = "The account id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "Its contracts.", body = super::openapi::ContractList),
        super::openapi::NotFound
    )
)]
pub async fn account_contracts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may_act_for_account(&state, &account_id)?;
    state.registry.account(&account_id).await?;
    let list = state.registry.contracts(Some(&account_id)).await?;
    Ok(Json(serde_json::json!({ "contracts": list })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct EndContract {
    /// RFC 3339; now when omitted.
    pub at: Option<String>,
    pub reason: Option<String>,
}

/// `POST /v1/contracts/{id}/end` (admin) — ends a contract now or at `at`.
#[utoipa::path(
    post, path = "/v1/contracts/{id}/end", tag = "contracts and windows", summary = "End a contract",
    params(("id" = String, Path, description = "The contract id.")), request_body = Option<EndContract>,
    security(("admin_token" = [])),
    responses(
        (
            status = 200, description = "The contract record with its new `valid_until`.",
            body = voxgate_registry::Record
        ),
        super::openapi::NotFound, super::openapi::Conflict, super::openapi::Unprocessable
    )
)]
pub async fn end_contract(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<EndContract>,
) -> Result<Response, ApiError> {
    let at = match req.at.as_deref() {
        Some(s) => crate::entitlements::parse_instant("at", s).map_err(|e| body_error("invalid_time", e))?,
        None => state.now(),
    };
    let record = state
        .registry
        .end_contract(&id, at.millis(), &Actor::admin(), req.reason.as_deref())
        .await
        .map_err(not_found("unknown_contract"))?;
    reload(&state).await?;
    Ok(Json(record).into_response())
}

// ---- windows ------------------------------------------------------------------------------

/// `POST /v1/apps/{id}/windows` (admin).
#[utoipa::path(
    post, path = "/v1/apps/{id}/windows", tag = "contracts and windows", summary = "Create a capacity window",
    params(("id" = String, Path, description = "The app id.")),
    request_body = crate::entitlements::WindowBody, security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created.", body = voxgate_registry::Record), super::openapi::NotFound,
        super::openapi::Unprocessable
    )
)]
pub async fn create_window(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let value: serde_json::Value = super::body::parse(&body)?;
    let parsed: WindowBody = super::body::parse(&body)?;
    let app = state.snapshot.load().apps.get(&app_id).cloned();
    let app = app.ok_or_else(|| ApiError::unknown("unknown_app", format!("no app `{app_id}`")))?;
    parsed
        .layer("new", &state.catalogue, &app.time_zone_name)
        .map_err(|e| body_error("invalid_window", e))?;
    let record =
        state.registry.create_window(&app_id, &value, &Actor::admin(), parsed.reason.as_deref()).await?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// `GET /v1/apps/{id}/windows` — the admin, or the app's key.
#[utoipa::path(
    get, path = "/v1/apps/{id}/windows", tag = "contracts and windows", summary = "The app's windows",
    params(("id" = String, Path, description = "The app id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "Its windows.", body = super::openapi::WindowList),
        super::openapi::NotFound
    )
)]
pub async fn app_windows(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may_read(&app_id)?;
    state.registry.app(&app_id).await?;
    let list = state.registry.windows(Some(&app_id)).await?;
    Ok(Json(serde_json::json!({ "windows": list })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct DeleteWindow {
    pub reason: Option<String>,
}

/// `DELETE /v1/windows/{id}` (admin).
#[utoipa::path(
    delete, path = "/v1/windows/{id}", tag = "contracts and windows", summary = "Delete a window",
    params(("id" = String, Path, description = "The window id.")), request_body = Option<DeleteWindow>,
    security(("admin_token" = [])),
    responses((status = 204, description = "Deleted."), super::openapi::NotFound)
)]
pub async fn delete_window(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: DeleteWindow = super::body::parse(&body)?;
    state
        .registry
        .delete_window(&id, &Actor::admin(), req.reason.as_deref())
        .await
        .map_err(not_found("unknown_window"))?;
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- statements ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// `YYYY-MM`; the current month in the account's zone when omitted.
    pub period: Option<String>,
}

/// `GET /v1/accounts/{id}/statement?period=2026-11` — JSON, or CSV with `Accept: text/csv`.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/statement", tag = "contracts and windows",
    summary = "A month's statement, JSON or CSV",
    params(("id" = String, Path, description = "The account id."), StatementQuery),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (
            status = 200, description = "The statement; CSV with `Accept: text/csv`.",
            content((crate::billing::Statement = "application/json"), (String = "text/csv"))
        ),
        super::openapi::NotFound, super::openapi::Unprocessable
    )
)]
pub async fn statement(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
    Query(q): Query<StatementQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.may_act_for_account(&state, &account_id)?;
    let account = state.registry.account(&account_id).await?;
    let period = match q.period {
        Some(p) => p,
        None => {
            let tz = jiff::tz::TimeZone::get(&account.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
            jiff::fmt::strtime::format("%Y-%m", &state.now().to_jiff().to_zoned(tz))
                .map_err(ApiError::internal)?
        }
    };
    state.flush().await.map_err(ApiError::internal)?;
    let st = crate::billing::statement(&state, &account, &period, None)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::invalid_field("invalid_period", "period", "`period` must be a month like 2026-11")
        })?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")));
    if wants_csv {
        let csv = crate::billing::to_csv(&st);
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    Ok(Json(st).into_response())
}
