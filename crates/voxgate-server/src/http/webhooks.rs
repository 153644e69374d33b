//! Webhook endpoints per account, and the alerts queued for them.

use super::auth::Caller;
use super::body::JsonBody;
use super::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use voxgate_registry::Actor;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct CreateWebhook {
    /// `http://` or `https://` URL that receives alerts.
    pub url: String,
    /// The HMAC key for signatures; generated (and shown once) when omitted.
    pub secret: Option<String>,
}

fn actor(caller: &Caller) -> Actor {
    match caller {
        Caller::App(a) => Actor(format!("app:{a}")),
        _ => Actor::admin(),
    }
}

/// `POST /v1/accounts/{id}/webhooks` — the admin or the account's developer.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/webhooks", operation_id = "create_webhook", tag = "webhooks",
    summary = "Register a webhook", params(("id" = String, Path, description = "The account id.")),
    request_body = CreateWebhook, security(("admin_token" = []), ("app_key" = [])),
    responses(
        (
            status = 201, description = "Created; `secret` is shown this once.",
            body = super::openapi::CreatedWebhook
        ),
        super::openapi::NotFound, super::openapi::Unprocessable
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
    JsonBody(req): JsonBody<CreateWebhook>,
) -> Result<Response, ApiError> {
    caller.may_act_for_account(&state, &account_id)?;
    let url = req.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2000 {
        return Err(ApiError::invalid_field(
            "invalid_url",
            "url",
            "`url` must be an http:// or https:// URL",
        ));
    }
    let secret = match req.secret {
        Some(s) if s.len() >= 16 => s,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "invalid_field",
                "secret",
                "`secret` must be at least 16 characters",
            ));
        }
        None => format!("whs_{}", hex::encode(rand::random::<[u8; 24]>())),
    };
    let hook = state.registry.create_webhook(&account_id, url, &secret, &actor(&caller)).await?;
    let mut body = serde_json::to_value(&hook).map_err(ApiError::internal)?;
    body["secret"] = serde_json::Value::String(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/accounts/{id}/webhooks`
#[utoipa::path(
    get, path = "/v1/accounts/{id}/webhooks", operation_id = "account_webhooks", tag = "webhooks",
    summary = "The account's webhooks", params(("id" = String, Path, description = "The account id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "Its webhooks, without secrets.", body = super::openapi::WebhookList),
        super::openapi::NotFound
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may_act_for_account(&state, &account_id)?;
    state.registry.account(&account_id).await?;
    Ok(Json(serde_json::json!({ "webhooks": state.registry.webhooks(Some(&account_id)).await? }))
        .into_response())
}

/// `DELETE /v1/webhooks/{id}`
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks",
    summary = "Delete a webhook", params(("id" = String, Path, description = "The webhook id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses((status = 204, description = "Deleted."), super::openapi::NotFound)
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hook = caller.screen(state.registry.webhook(&id).await)?.map_err(|e| match e {
        voxgate_registry::RegistryError::NotFound { .. } => {
            ApiError::unknown("unknown_webhook", format!("no webhook `{id}`"))
        }
        other => other.into(),
    })?;
    caller.may_act_for_account(&state, &hook.account_id)?;
    state.registry.delete_webhook(&id, &actor(&caller)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/accounts/{id}/alerts` — the latest alerts and their delivery state.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/alerts", operation_id = "account_alerts", tag = "webhooks",
    summary = "Alerts and their delivery", params(("id" = String, Path, description = "The account id.")),
    security(("admin_token" = []), ("app_key" = [])),
    responses(
        (
            status = 200, description = "The latest 200 alerts, newest first.",
            body = super::openapi::AlertList
        ),
        super::openapi::NotFound
    )
)]
pub async fn alerts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may_act_for_account(&state, &account_id)?;
    state.registry.account(&account_id).await?;
    Ok(Json(serde_json::json!({ "alerts": state.registry.alerts(&account_id, 200).await? })).into_response())
}
