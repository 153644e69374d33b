//! Admin endpoints: accounts and apps. Every change is audited by the registry and takes
//! effect at once (the snapshot is rebuilt before the response is sent).

use super::auth::Caller;
use super::body::JsonBody;
use super::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use voxgate_registry::{Actor, App, AppPatch, NewAccount, NewApp, Status};

fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "invalid_name",
            field,
            format!("`{field}` must be 1 to 200 characters"),
        ));
    }
    Ok(name.to_string())
}

fn check_tier(state: &AppState, level: &str) -> Result<(), ApiError> {
    if state.catalogue.tiers.contains_key(level) {
        return Ok(());
    }
    let known: Vec<&str> = state.catalogue.tiers.keys().map(String::as_str).collect();
    Err(ApiError::invalid_field(
        "unknown_verification_level",
        "verification_level",
        format!("no verification level `{level}`; the catalogue has {}", known.join(", ")),
    ))
}

fn check_plan(state: &AppState, plan: &str) -> Result<(), ApiError> {
    if state.catalogue.plans.contains_key(plan) {
        return Ok(());
    }
    let known: Vec<&str> = state.catalogue.plans.keys().map(String::as_str).collect();
    Err(ApiError::invalid_field(
        "unknown_plan",
        "plan",
        format!("no plan `{plan}`; the catalogue has {}", known.join(", ")),
    ))
}

pub fn check_time_zone(time_zone: &str) -> Result<(), ApiError> {
    if TimeZone::get(time_zone).is_err() {
        return Err(ApiError::invalid_field(
            "invalid_time_zone",
            "time_zone",
            format!("`{time_zone}` is not an IANA time zone (e.g. Asia/Shanghai)"),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(example = json!({ "name": "Acme Speech Ltd", "time_zone": "Asia/Shanghai" }))]
pub struct CreateAccount {
    pub name: String,
    pub verification_level: Option<String>,
    pub time_zone: Option<String>,
}

/// `POST /v1/accounts`
#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts", summary = "Create an account",
    request_body = CreateAccount, security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created.", body = voxgate_registry::Account),
        super::openapi::Unprocessable
    )
)]
pub async fn create_account(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CreateAccount>,
) -> Result<Response, ApiError> {
    let name = check_name("name", &req.name)?;
    let level = req.verification_level.unwrap_or_else(|| state.catalogue.default_tier.clone());
    check_tier(&state, &level)?;
    let time_zone = req.time_zone.unwrap_or_else(|| state.catalogue.default_time_zone.clone());
    check_time_zone(&time_zone)?;
    let account = state
        .registry
        .create_account(NewAccount { name, verification_level: level, time_zone }, None, &Actor::admin())
        .await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AccountWithApps)]
struct AccountJson {
    #[serde(flatten)]
    account: voxgate_registry::Account,
    apps: Vec<App>,
}

/// `GET /v1/accounts/{id}`
#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts", summary = "One account and its apps",
    params(("id" = String, Path, description = "The account id.")), security(("admin_token" = [])),
    responses((status = 200, description = "The account.", body = AccountJson), super::openapi::NotFound)
)]
pub async fn get_account(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let account = state.registry.account(&id).await?;
    let apps = state.registry.apps().await?.into_iter().filter(|a| a.account_id == id).collect();
    Ok(Json(AccountJson { account, apps }).into_response())
}

/// `GET /v1/accounts`
#[utoipa::path(
    get, path = "/v1/accounts", tag = "accounts", summary = "List accounts", security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every account, oldest first.", body = super::openapi::AccountList)
    )
)]
pub async fn list_accounts(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(Json(serde_json::json!({ "accounts": state.registry.accounts().await? })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(example = json!({ "account_id": "demo", "name": "Call-centre transcription" }))]
pub struct CreateApp {
    pub account_id: String,
    pub name: String,
    pub plan: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CreatedApp {
    #[serde(flatten)]
    app: App,
    /// Shown this once; only its hash is stored.
    api_key: String,
}

/// `POST /v1/apps`
#[utoipa::path(
    post, path = "/v1/apps", tag = "apps", summary = "Create an app and its API key",
    request_body = CreateApp, security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created; `api_key` is shown this once.", body = CreatedApp),
        super::openapi::NotFound, super::openapi::Unprocessable
    )
)]
pub async fn create_app(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CreateApp>,
) -> Result<Response, ApiError> {
    let name = check_name("name", &req.name)?;
    let plan = req.plan.unwrap_or_else(|| state.catalogue.default_plan.clone());
    check_plan(&state, &plan)?;
    let (app, api_key) = state
        .registry
        .create_app(NewApp { account_id: req.account_id, name, plan }, None, &Actor::admin())
        .await?;
    state.reload().await.map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(CreatedApp { app, api_key })).into_response())
}

/// `GET /v1/apps/{id}` — the admin, or the app's own key.
#[utoipa::path(
    get, path = "/v1/apps/{id}", tag = "apps", summary = "One app",
    params(("id" = String, Path, description = "The app id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses((status = 200, description = "The app.", body = App), super::openapi::NotFound)
)]
pub async fn get_app(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may_read(&id)?;
    Ok(Json(state.registry.app(&id).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct PatchApp {
    pub plan: Option<String>,
    pub status: Option<String>,
    /// A monthly spending cap (decimal string or number, catalogue currency); `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::openapi::money, required = false)]
    pub spending_cap: Option<Option<serde_json::Value>>,
    /// Recorded in the audit log.
    pub reason: Option<String>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Parses a money amount: a decimal string or a JSON number, at least 0.
pub fn parse_money(field: &str, v: &serde_json::Value) -> Result<rust_decimal::Decimal, ApiError> {
    use std::str::FromStr;
    let text = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    rust_decimal::Decimal::from_str(&text).ok().filter(|d| !d.is_sign_negative()).ok_or_else(|| {
        ApiError::invalid_field(
            "invalid_amount",
            field,
            format!("`{field}` must be a decimal amount of at least 0"),
        )
    })
}

/// `PATCH /v1/apps/{id}` — change the plan or spending cap, suspend or reactivate. Live at once.
#[utoipa::path(
    patch, path = "/v1/apps/{id}", tag = "apps", summary = "Change an app's plan, status or spending cap",
    params(("id" = String, Path, description = "The app id.")), request_body = Option<PatchApp>,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The app after the change.", body = App), super::openapi::NotFound,
        super::openapi::Unprocessable
    )
)]
pub async fn patch_app(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchApp>,
) -> Result<Response, ApiError> {
    if let Some(plan) = &req.plan {
        check_plan(&state, plan)?;
    }
    let status = match req.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::invalid_field("invalid_status", "status", "`status` must be `active` or `suspended`")
        })?),
    };
    let spending_cap = match &req.spending_cap {
        None => None,
        Some(None) => Some(None),
        Some(Some(v)) => Some(Some(parse_money("spending_cap", v)?.normalize().to_string())),
    };
    let patch = AppPatch { plan: req.plan, status, spending_cap };
    let app = state.registry.update_app(&id, patch, &Actor::admin(), req.reason.as_deref()).await?;
    state.reload().await.map_err(ApiError::internal)?;
    Ok(Json(app).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub subject_kind: Option<String>,
    pub subject_id: Option<String>,
}

/// `GET /v1/audit`
#[utoipa::path(
    get, path = "/v1/audit", operation_id = "audit_log", tag = "accounts", summary = "The audit log",
    params(AuditQuery), security(("admin_token" = [])),
    responses(
        (status = 200, description = "Entries, oldest first.", body = super::openapi::AuditLog),
        super::openapi::Unprocessable
    )
)]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let subject = match (&q.subject_kind, &q.subject_id) {
        (Some(k), Some(i)) => Some((k.as_str(), i.as_str())),
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid_request("give both `subject_kind` and `subject_id`, or neither"));
        }
    };
    Ok(Json(serde_json::json!({ "entries": state.registry.audit_log(subject).await? })).into_response())
}
