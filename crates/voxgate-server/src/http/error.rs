//! Every HTTP error as one RFC 9457 `application/problem+json` body with a stable `code`.
//!
//! Handlers return [`ApiError`]; framework rejections (bad paths, bad queries, unknown
//! routes, wrong methods) are rewritten into the same shape by [`problem_layer`], so a
//! client never has to parse two error formats.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn invalid_json(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", detail)
    }
    pub fn invalid_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
    }
    pub fn invalid_field(code: &'static str, field: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).with_field(field)
    }
    pub fn unknown(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
    }
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("urn:voxgate:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            field: self.field.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<voxgate_registry::RegistryError> for ApiError {
    fn from(e: voxgate_registry::RegistryError) -> ApiError {
        use voxgate_registry::RegistryError as E;
        match e {
            E::NotFound { kind: "account", id } => {
                ApiError::unknown("unknown_account", format!("no account `{id}`"))
            }
            E::NotFound { kind: "app", id } => ApiError::unknown("unknown_app", format!("no app `{id}`")),
            E::NotFound { kind, id } => ApiError::unknown("not_found", format!("no {kind} `{id}`")),
            E::Conflict(msg) => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            other => ApiError::internal(other),
        }
    }
}

impl From<voxgate_core::StoreError> for ApiError {
    fn from(e: voxgate_core::StoreError) -> ApiError {
        if e.is_transient() {
            tracing::warn!(error = %e, "counter store unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the counter store is unavailable",
            )
        } else {
            ApiError::internal(e)
        }
    }
}

/// Rewrites any error response that is not JSON (axum's rejections for paths, queries and
/// methods; the 404 fallback) into a problem document, keeping its status and text.
pub async fn problem_layer(response: Response) -> Response {
    let status = response.status();
    // Our own JSON answers (problem documents, and decisions refused with 429 or 403) pass
    // through; only the framework's plain-text rejections are rewritten.
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(PROBLEM_JSON.as_bytes()) || v.starts_with(b"application/json")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "invalid_request",
        _ => "internal",
    };
    let detail =
        if detail.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { detail };
    let mut rewritten = ApiError::new(status, code, detail).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}
