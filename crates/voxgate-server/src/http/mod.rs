//! The HTTP API: routes, and the layers around them (auth, problem documents).

pub mod admin;
pub mod auth;
pub mod body;
pub mod decide;
pub mod entitle;
pub mod error;
pub mod forward_auth;
pub mod increase;
pub mod limits_json;
pub mod openapi;
pub mod read;
pub mod webhooks;

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The whole HTTP API over `state`. Tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(state: Arc<AppState>) -> Router {
    let decisions = Router::new()
        .route("/v1/check", post(decide::check))
        .route("/v1/leases", post(decide::acquire))
        .route("/v1/leases/{id}/renew", post(decide::renew))
        .route("/v1/leases/{id}", axum::routing::delete(decide::release))
        .route_layer(from_fn_with_state(state.clone(), auth::require_gateway));
    let admin = Router::new()
        .route("/v1/accounts", post(admin::create_account).get(admin::list_accounts))
        .route("/v1/accounts/{id}", get(admin::get_account))
        .route("/v1/apps", post(admin::create_app))
        .route("/v1/apps/{id}", axum::routing::patch(admin::patch_app))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/accounts/{id}", axum::routing::patch(entitle::patch_account))
        .route("/v1/verifications", get(entitle::verification_queue))
        .route("/v1/verifications/{id}/approve", post(entitle::approve))
        .route("/v1/verifications/{id}/reject", post(entitle::reject))
        .route("/v1/accounts/{id}/contracts", post(entitle::create_contract))
        .route("/v1/contracts/{id}/end", post(entitle::end_contract))
        .route("/v1/apps/{id}/windows", post(entitle::create_window))
        .route("/v1/windows/{id}", axum::routing::delete(entitle::delete_window))
        .route("/v1/increase-requests", get(increase::queue))
        .route("/v1/increase-requests/{id}/approve", post(increase::approve))
        .route("/v1/increase-requests/{id}/deny", post(increase::deny))
        .route("/v1/increase-requests/{id}/renew", post(increase::renew))
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin));
    let reads = Router::new()
        .route("/v1/apps/{id}", get(admin::get_app))
        .route("/v1/apps/{id}/limits", get(read::limits))
        .route("/v1/apps/{id}/usage", get(read::usage))
        .route("/v1/apps/{id}/windows", get(entitle::app_windows))
        .route(
            "/v1/accounts/{id}/verifications",
            post(entitle::submit_verification).get(entitle::account_verifications),
        )
        .route("/v1/verifications/{id}", get(entitle::get_verification))
        .route("/v1/accounts/{id}/contracts", get(entitle::account_contracts))
        .route("/v1/accounts/{id}/statement", get(entitle::statement))
        .route("/v1/apps/{id}/increase-requests", post(increase::submit).get(increase::list_for_app))
        .route("/v1/increase-requests/{id}", get(increase::get))
        .route("/v1/increase-requests/{id}/withdraw", post(increase::withdraw))
        .route("/v1/accounts/{id}/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/v1/accounts/{id}/alerts", get(webhooks::alerts));
    Router::new()
        .merge(decisions)
        .merge(admin)
        .merge(reads)
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Authenticated by the app's own key, not the gateway token (see forward_auth.rs).
        .route("/v1/authorize", axum::routing::any(forward_auth::authorize))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(map_response(error::problem_layer))
        .with_state(state)
}

#[utoipa::path(
    get, path = "/healthz", tag = "operations", summary = "Liveness",
    responses((status = 200, description = "The process is up.", body = openapi::Health))
)]
async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// The Prometheus exposition (see `metrics.rs`). Open, like `/healthz`: it names services
/// and counts, never keys or (unless `--metrics-per-app`) apps.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses(
        (
            status = 200,
            description = "Prometheus text format 0.0.4, or OpenMetrics 1.0 when `Accept` asks for it.",
            content((String = "text/plain"), (String = "application/openmetrics-text"))
        )
    )
)]
async fn metrics(State(state): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let content_type = crate::metrics::content_type(accept);
    match crate::metrics::render(&state, content_type) {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => error::ApiError::internal(e).into_response(),
    }
}

/// Ready when the registry answers and usage has been flushed within the last ten flush
/// intervals (or not yet attempted). A degraded shared counter store is reported, not
/// failed: each service's `on_store_error` policy already decides what calls get.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", summary = "Readiness",
    responses(
        (status = 200, description = "Ready.", body = openapi::Readiness),
        (
            status = 503,
            description = "Not ready: the registry does not answer, or usage has not been flushed lately.",
            body = openapi::Readiness
        )
    )
)]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let registry_ok = state.registry.ping().await.is_ok();
    let last = state.last_flush_ms.load(Ordering::Relaxed);
    let lag_ms = if last == 0 { 0 } else { (state.now().millis() - last).max(0) };
    let flush_ok = lag_ms <= 10 * state.config.flush_interval.as_millis() as i64 + 1000;
    let ready = registry_ok && flush_ok;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "registry": if registry_ok { "ok" } else { "unavailable" },
        "usage_flush_lag_ms": lag_ms,
        "counters": {
            "kind": state.store.kind(),
            "degraded": state.store.degraded(),
            "failures": state.store.failures(),
        },
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}
