//! How limits and decisions look on the wire: JSON entries and the IETF `RateLimit-Policy`
//! / `RateLimit` header fields (draft-ietf-httpapi-ratelimit-headers), one item per limit.

use axum::http::HeaderValue;
use serde::Serialize;
use std::fmt::Write;
use voxgate_core::{Dimension, LimitReport, LimitStatus};

/// A count of requests or leases, or an amount of a service's unit.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum Amount {
    Count(u64),
    Units(f64),
}

fn amount(dim: Dimension, raw: u64) -> Amount {
    if dim.counts_units() { Amount::Units(raw as f64 / 1000.0) } else { Amount::Count(raw) }
}

/// One limit in a response body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Limit)]
pub struct LimitJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'a str>,
    /// The name of this limit in the `RateLimit-Policy` header.
    pub policy: &'static str,
    pub dimension: Dimension,
    /// Whole requests (rate: the burst) or leases; units of the service for quotas.
    #[schema(value_type = f64)]
    pub limit: Amount,
    #[schema(value_type = f64)]
    pub used: Amount,
    #[schema(value_type = f64)]
    pub remaining: Amount,
    pub reset_ms: u64,
    pub window_s: u64,
    /// `requests` (rate), `leases` (concurrency) or the service's unit (quotas).
    pub unit: &'a str,
}

impl<'a> LimitJson<'a> {
    pub fn new(s: &LimitStatus, service: Option<&'a str>, service_unit: &'a str) -> LimitJson<'a> {
        LimitJson {
            service,
            policy: s.dimension.as_str(),
            dimension: s.dimension,
            limit: amount(s.dimension, s.limit),
            used: amount(s.dimension, s.used),
            remaining: amount(s.dimension, s.remaining),
            reset_ms: s.reset_ms,
            window_s: s.window_s,
            unit: match s.dimension {
                Dimension::Rate => "requests",
                Dimension::Concurrency => "leases",
                _ => service_unit,
            },
        }
    }
}

/// Whole seconds, rounded up, for header fields.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

fn whole(dim: Dimension, raw: u64) -> u64 {
    if dim.counts_units() { raw / 1000 } else { raw }
}

/// `RateLimit-Policy` and `RateLimit` for every limit in `report`; `None` when there are none.
///
/// Quota items carry `qu` with the service's unit (e.g. `"audio_second"`), so no client reads
/// 1800 audio seconds as 1800 requests (the draft's default unit).
pub fn ratelimit_headers(report: &LimitReport, unit: &str) -> Option<(HeaderValue, HeaderValue)> {
    let items = report.as_slice();
    if items.is_empty() {
        return None;
    }
    let mut policy = String::with_capacity(48 * items.len());
    let mut state = String::with_capacity(32 * items.len());
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            policy.push_str(", ");
            state.push_str(", ");
        }
        let name = s.dimension.as_str();
        let _ = write!(policy, "\"{name}\";q={};w={}", whole(s.dimension, s.limit), s.window_s.max(1));
        match s.dimension {
            Dimension::Rate => policy.push_str(";qu=\"requests\""),
            Dimension::Concurrency => policy.push_str(";qu=\"concurrent-requests\""),
            _ => {
                let _ = write!(policy, ";qu=\"{unit}\"");
            }
        }
        let _ = write!(state, "\"{name}\";r={};t={}", whole(s.dimension, s.remaining), ceil_secs(s.reset_ms));
    }
    Some((HeaderValue::from_str(&policy).ok()?, HeaderValue::from_str(&state).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_item_per_limit() {
        let mut report = LimitReport::default();
        report.push(LimitStatus {
            dimension: Dimension::Rate,
            limit: 20,
            used: 1,
            remaining: 19,
            reset_ms: 100,
            window_s: 2,
        });
        report.push(LimitStatus {
            dimension: Dimension::Daily,
            limit: 1_800_000,
            used: 12_500,
            remaining: 1_787_500,
            reset_ms: 3_600_001,
            window_s: 86_400,
        });
        let (policy, state) = ratelimit_headers(&report, "audio_second").unwrap();
        assert_eq!(policy, "\"rate\";q=20;w=2;qu=\"requests\", \"daily\";q=1800;w=86400;qu=\"audio_second\"");
        assert_eq!(state, "\"rate\";r=19;t=1, \"daily\";r=1787;t=3601");
    }
}
