//! `/v1/authorize`: forward-auth for HTTP gateways (nginx `auth_request`, Traefik
//! `ForwardAuth`). The gateway forwards the client's headers; voxgate reads the app's API key
//! from one of them, the service from the original request path through the catalogue's
//! `[forward_auth]` route map, decides the call exactly as `POST /v1/check` does, and answers
//! 204 (allow) or the refused decision (429, or 403 for a suspended app).
//!
//! Not behind the gateway token: the caller proves who it is with the app's own key, and can
//! only spend that app's quota — what it could do anyway by calling the upstream through the
//! gateway. `/v1/check`, by contrast, names any app by id with no proof, which is why it needs
//! the gateway token off the loopback interface.

use super::decide::{decide_app, decision_headers, respond};
use super::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use voxgate_core::Units;
use voxgate_core::engine::Cost;

/// nginx sends the original request URI here (by convention, set in the example config).
pub const NGINX_URI: &str = "x-original-uri";
/// Traefik's ForwardAuth sends it here.
pub const TRAEFIK_URI: &str = "x-forwarded-uri";

/// `GET /v1/authorize` (any method: gateways forward the original one or use GET).
#[utoipa::path(
    get, path = "/v1/authorize", tag = "decisions", operation_id = "authorize",
    summary = "Forward-auth: decide a gateway's request",
    description = "For nginx `auth_request` and Traefik `ForwardAuth`, any method; see `[forward_auth]`.",
    params(
        ("X-Original-URI" = Option<String>, Header, description = "The original request URI (nginx)."),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "The original request URI (Traefik).")
    ),
    security(("app_key" = [])),
    responses(
        (
            status = 204, description = "Allowed, and charged.",
            headers(
                ("RateLimit-Policy" = String), ("RateLimit" = String),
                ("X-Voxgate-App" = String, description = "The app charged."),
                ("X-Voxgate-Service" = String, description = "The service charged.")
            )
        ),
        (
            status = 429, description = "Refused: nothing consumed.",
            body = ref("#/components/schemas/Decision"),
            headers(("Retry-After" = u64, description = "Seconds, at least 1."))
        ),
        (
            status = 403, description = "The app or its account is suspended.",
            body = ref("#/components/schemas/Decision")
        ),
        super::openapi::Unauthorized, super::openapi::NotFound, super::openapi::Unprocessable,
        super::openapi::Unavailable
    )
)]
pub async fn authorize(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let started = Instant::now();
    let rejected = |e: ApiError| {
        state.metrics.forward_auth_rejected(e.code);
        e
    };
    let fa = &state.catalogue.forward_auth;
    let key = api_key(&headers, &fa.key_header, fa.bearer).ok_or_else(|| {
        rejected(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("an API key is required in the `{}` header", header_label(&fa.key_header, fa.bearer)),
        ))
    })?;
    let snapshot = state.snapshot.load();
    let app = snapshot
        .keys
        .get(&voxgate_registry::hash_key(key))
        .and_then(|id| snapshot.apps.get(id))
        .cloned()
        .ok_or_else(|| {
            rejected(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the API key is not valid"))
        })?;
    drop(snapshot);
    let uri = headers.get(NGINX_URI).or_else(|| headers.get(TRAEFIK_URI)).ok_or_else(|| {
        rejected(ApiError::unknown(
            "unknown_route",
            "no `X-Original-URI` (nginx) or `X-Forwarded-Uri` (Traefik) header: the gateway must send the \
             original request's path",
        ))
    })?;
    let path = normalize_path(uri.as_bytes());
    let idx = fa.route(&path).ok_or_else(|| {
        rejected(ApiError::unknown(
            "unknown_route",
            format!(
                "no [forward_auth] route matches `{}`",
                String::from_utf8_lossy(&path).chars().take(200).collect::<String>()
            ),
        ))
    })?;
    let units = match fa.units_header.as_deref().and_then(|h| headers.get(h)) {
        None => Units::ZERO,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .ok_or_else(|| "is not a number".to_string())
            .and_then(|u| Units::from_f64(u).map_err(|e| e.to_string()))
            .map_err(|e| {
                let name = fa.units_header.as_deref().unwrap_or_default();
                rejected(ApiError::invalid_field("invalid_cost", name, format!("the `{name}` header {e}")))
            })?,
    };
    let charged = decide_app(&state, &app, idx, Cost { requests: 1, units }, false, started).await?;
    if !charged.decision.allowed() {
        // 429 with `Retry-After` (403 when suspended) and the decision body, as /v1/check.
        return Ok(respond(&state, &app, idx, &charged, Units::ZERO, StatusCode::OK));
    }
    let service = state.catalogue.service_def(idx);
    let mut headers = decision_headers(&service.unit, &charged.decision, StatusCode::NO_CONTENT);
    // For the upstream: which app and service the gateway's request was charged to.
    if let Ok(v) = HeaderValue::from_str(&app.id) {
        headers.insert("x-voxgate-app", v);
    }
    if let Ok(v) = HeaderValue::from_str(&service.id) {
        headers.insert("x-voxgate-service", v);
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

fn header_label(name: &str, bearer: bool) -> String {
    if bearer { format!("{name}: Bearer <key>") } else { name.to_string() }
}

/// The API key from `name`: `Bearer <key>` (scheme in any case) when `bearer`, else the
/// whole value. `None` when absent, empty or not visible ASCII.
fn api_key<'h>(headers: &'h HeaderMap, name: &str, bearer: bool) -> Option<&'h str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    let key = if bearer {
        let (scheme, key) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())?
    } else {
        value
    };
    (!key.is_empty()).then_some(key)
}

/// The path of an original request URI as the gateway routes it: the query and fragment
/// dropped, an absolute-form `scheme://authority` prefix dropped, percent-escapes decoded,
/// repeated slashes merged and `.`/`..` segments resolved — so `/asr/..%2Ftts/x` is charged
/// to the route of `/tts/x`, the location nginx actually serves.
pub fn normalize_path(uri: &[u8]) -> Vec<u8> {
    let end = uri.iter().position(|b| *b == b'?' || *b == b'#').unwrap_or(uri.len());
    let mut raw = &uri[..end];
    for scheme in [&b"http://"[..], b"https://"] {
        if raw.len() >= scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &raw[scheme.len()..];
            raw = &rest[rest.iter().position(|b| *b == b'/').unwrap_or(rest.len())..];
        }
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%'
            && let (Some(h), Some(l)) =
                (raw.get(i + 1).and_then(|b| hex(*b)), raw.get(i + 2).and_then(|b| hex(*b)))
        {
            decoded.push((h * 16 + l) as u8);
            i += 3;
        } else {
            decoded.push(raw[i]);
            i += 1;
        }
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = decoded.split(|b| *b == b'/').collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing = false;
    for (n, seg) in parts.iter().enumerate() {
        trailing = false;
        match *seg {
            b"" => trailing = n == last,
            b"." => trailing = true,
            b".." => {
                segments.pop();
                trailing = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || segments.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        String::from_utf8(normalize_path(s.as_bytes())).unwrap()
    }

    #[test]
    fn paths_are_normalized_like_the_gateway_routes_them() {
        assert_eq!(norm("/asr/v1/recognize?lang=en#x"), "/asr/v1/recognize");
        assert_eq!(norm("/asr/"), "/asr/");
        assert_eq!(norm("/asr"), "/asr");
        assert_eq!(norm(""), "/");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("//asr///x"), "/asr/x");
        assert_eq!(norm("/asr/./x/"), "/asr/x/");
        assert_eq!(norm("/asr/../tts/x"), "/tts/x");
        assert_eq!(norm("/asr/..%2Ftts/x"), "/tts/x");
        assert_eq!(norm("/asr/%2e%2e/tts/x"), "/tts/x");
        assert_eq!(norm("/../../asr/x"), "/asr/x");
        assert_eq!(norm("/asr/x/.."), "/asr/");
        assert_eq!(norm("/asr/x/."), "/asr/x/");
        assert_eq!(norm("/a%zzb"), "/a%zzb");
        assert_eq!(norm("HTTP://gw.example:8080/tts/x?y"), "/tts/x");
        assert_eq!(norm("https://gw.example"), "/");
    }

    #[test]
    fn keys_come_from_bearer_or_a_bare_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("bEaReR  vgk_1 "));
        h.insert("x-api-key", HeaderValue::from_static(" vgk_2"));
        assert_eq!(api_key(&h, "authorization", true), Some("vgk_1"));
        assert_eq!(api_key(&h, "x-api-key", false), Some("vgk_2"));
        assert_eq!(api_key(&h, "x-other", false), None);
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(api_key(&h, "authorization", true), None);
        h.insert("authorization", HeaderValue::from_static("Bearer "));
        assert_eq!(api_key(&h, "authorization", true), None);
    }
}
