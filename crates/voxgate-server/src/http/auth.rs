//! Who is calling: the admin, the gateway, an app (by its API key), or nobody.
//!
//! Admin routes and decision routes are guarded by tower middleware; routes an app may read
//! check [`Caller::may_read`] against the app in the path.

use super::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Gateway,
    App(String),
    Anonymous,
}

impl Caller {
    /// Reads the bearer token and says who it belongs to; an unknown token is an error,
    /// not an anonymous caller.
    pub fn identify(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        // The scheme name is case-insensitive (RFC 9110 section 11.1).
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(ApiError::unauthorized)?;
        if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
            return Ok(Caller::Admin);
        }
        if let Some(gw) = &state.gateway_token
            && constant_time_eq(token.as_bytes(), gw.as_bytes())
        {
            return Ok(Caller::Gateway);
        }
        let hash = voxgate_registry::hash_key(token);
        match state.snapshot.load().keys.get(&hash) {
            Some(app) => Ok(Caller::App(app.clone())),
            None => Err(ApiError::unauthorized()),
        }
    }

    /// Whether this caller may act for `account_id` as its developer (read its statement,
    /// submit a verification): the admin, or a key of one of the account's apps.
    pub fn may_act_for_account(&self, state: &AppState, account_id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::App(app) => {
                let snapshot = state.snapshot.load();
                match snapshot.apps.get(app) {
                    Some(view) if view.account_id == account_id => Ok(()),
                    _ => Err(ApiError::forbidden("an app key may act only for its own account")),
                }
            }
            Caller::Gateway => Err(ApiError::forbidden("the gateway token may only make decisions")),
            Caller::Anonymous => Err(ApiError::unauthorized()),
        }
    }

    /// Screens a lookup by id for this caller: anonymous callers are refused, and for anyone
    /// but the admin a missing record reads as forbidden, exactly like someone else's, so ids
    /// cannot be probed. The caller still checks ownership of a record that was found.
    pub fn screen<T>(
        &self,
        found: Result<T, voxgate_registry::RegistryError>,
    ) -> Result<Result<T, voxgate_registry::RegistryError>, ApiError> {
        if *self == Caller::Anonymous {
            return Err(ApiError::unauthorized());
        }
        if *self != Caller::Admin && matches!(found, Err(voxgate_registry::RegistryError::NotFound { .. })) {
            return Err(ApiError::forbidden("an app key may act only for its own account"));
        }
        Ok(found)
    }

    /// Whether this caller may read the limits and usage of `app_id`.
    pub fn may_read(&self, app_id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::App(own) if own == app_id => Ok(()),
            Caller::App(_) => Err(ApiError::forbidden("an app key may read only its own app")),
            Caller::Gateway => Err(ApiError::forbidden("the gateway token may only make decisions")),
            Caller::Anonymous => Err(ApiError::unauthorized()),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        Caller::identify(state, parts)
    }
}

/// Admin routes: only the admin token passes.
pub async fn require_admin(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    match Caller::identify(&state, &parts)? {
        Caller::Admin => {
            parts.extensions.insert(Caller::Admin);
            Ok(next.run(Request::from_parts(parts, body)).await)
        }
        Caller::Anonymous => Err(ApiError::unauthorized()),
        _ => Err(ApiError::forbidden("this endpoint needs the admin token")),
    }
}

/// Decision routes: open when no gateway token is configured; otherwise the gateway (or
/// admin) token is required.
pub async fn require_gateway(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.gateway_token.is_none() {
        return Ok(next.run(req).await);
    }
    let (parts, body) = req.into_parts();
    match Caller::identify(&state, &parts)? {
        Caller::Gateway | Caller::Admin => Ok(next.run(Request::from_parts(parts, body)).await),
        Caller::Anonymous => Err(ApiError::unauthorized()),
        _ => Err(ApiError::forbidden("decisions need the gateway token")),
    }
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
