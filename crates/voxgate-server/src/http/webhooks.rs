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
    if !state.config.allow_private_webhooks && targets_private_network(url) {
        return Err(ApiError::invalid_field(
            "invalid_url",
            "url",
            "`url` points at a loopback, private or link-local address; the operator can allow that with \
             --allow-private-webhooks",
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

/// Whether a webhook URL names this machine or a private network by address or as
/// `localhost`. Names that resolve to such addresses are not caught here (documented).
pub fn targets_private_network(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            let seg = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (seg & 0xfe00) == 0xfc00
                || (seg & 0xffc0) == 0xfe80
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private() || v4.is_link_local())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::targets_private_network as private;

    #[tokio::test]
    async fn private_webhooks_are_refused_unless_allowed() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::for_tests(dir.path());
        config.allow_private_webhooks = false;
        let (state, _) = crate::AppState::open(config, crate::state::system_clock()).await.unwrap();
        let create = |url: &str| {
            axum::http::Request::post("/v1/accounts/demo/webhooks")
                .header("authorization", "Bearer test-admin-token-0123456789")
                .body(axum::body::Body::from(serde_json::json!({ "url": url }).to_string()))
                .unwrap()
        };
        let res = crate::router(state.clone()).oneshot(create("http://127.0.0.1:9/hook")).await.unwrap();
        assert_eq!(res.status(), 422);
        let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["code"], "invalid_url");
        let res = crate::router(state).oneshot(create("https://hooks.example.com/voxgate")).await.unwrap();
        assert_eq!(res.status(), 201);
    }

    #[test]
    fn private_targets_are_recognised() {
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "https://10.1.2.3/x",
            "http://192.168.0.10",
            "http://172.16.5.4:80/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://user:pw@127.0.0.1/",
            "http://0.0.0.0/",
        ] {
            assert!(private(url), "{url}");
        }
        for url in
            ["https://hooks.example.com/voxgate", "http://203.0.113.7:8080/h", "https://[2001:db8::1]/"]
        {
            assert!(!private(url), "{url}");
        }
    }
}
