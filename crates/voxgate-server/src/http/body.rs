//! A JSON body extractor whose failures are problem documents: malformed JSON is
//! `invalid_json`, well-formed JSON of the wrong shape is `invalid_request`.
//!
//! It does not insist on a `Content-Type`, so `curl -d '{...}'` works as written.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let code = if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "invalid_request"
            };
            ApiError::new(e.status(), code, e.body_text())
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body; an empty body reads as `{}` so optional bodies may be omitted.
pub fn parse<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid_request(e.to_string()),
            _ => ApiError::invalid_json(e.to_string()),
        }
    })
}
