//! Contracts and capacity windows as the API accepts them, and how each becomes a layer of
//! the entitlement resolver.
//!
//! Bodies are validated once, when created, and stored as JSON; at every snapshot rebuild
//! they are turned into layers again with the same code, so what was accepted is what runs.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use voxgate_core::catalogue::raw;
use voxgate_core::entitlement::{Entry, LimitValue};
use voxgate_core::schedule::{Schedule, parse_weekday};
use voxgate_core::{Catalogue, Dimension, Layer, LayerKind, Op, ServiceLimits, Timestamp};

/// Why a body was rejected: the field and what is wrong.
#[derive(Debug)]
pub struct BodyError {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> BodyError {
    BodyError { field: field.into(), message: message.into() }
}

/// Priority classes, highest first; used by capacity shedding (a later issue).
pub const PRIORITY_CLASSES: [&str; 4] = ["critical", "high", "standard", "low"];

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct Sla {
    /// e.g. 99.95 (percent).
    pub availability_target: Option<f64>,
    /// e.g. `business-hours`, `24x7`.
    pub support_level: Option<String>,
    pub account_manager: Option<String>,
}

/// `POST /v1/accounts/{id}/contracts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(as = Contract)]
#[schema(
    example = json!(
        {
            "limits": {"asr": {"rate": {"per_second": 200, "burst": 400}, "daily": 500000}},
            "priority_class": "high", "valid_from": "2026-12-01T00:00:00+08:00", "reason": "annual contract"
        }
    )
)]
pub struct ContractBody {
    /// Per-service limits, written as in the catalogue.
    #[schema(value_type = BTreeMap<String, crate::http::openapi::ServiceLimits>)]
    pub limits: BTreeMap<String, raw::Limits>,
    #[serde(default)]
    pub priority_class: Option<String>,
    #[serde(default)]
    pub sla: Option<Sla>,
    /// RFC 3339; open when omitted.
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    /// For the audit log.
    pub reason: Option<String>,
}

pub fn parse_instant(field: &str, s: &str) -> Result<Timestamp, BodyError> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .filter(|t| (0..=7_258_118_400).contains(&t.as_second()))
        .map(Timestamp::from_jiff)
        .ok_or_else(|| {
            bad(field, "must be an RFC 3339 instant between 1970 and 2200, such as 2026-12-01T00:00:00Z")
        })
}

/// A contract checked against the catalogue: its limits and its validity.
pub struct Contract {
    pub limits: Vec<(voxgate_core::ServiceIdx, ServiceLimits)>,
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
}

impl ContractBody {
    pub fn validate(self, catalogue: &Catalogue) -> Result<Contract, BodyError> {
        if self.limits.is_empty() {
            return Err(bad("limits", "a contract must set at least one service's limits"));
        }
        let limits = catalogue.limit_table("limits", self.limits).map_err(|e| match e {
            voxgate_core::CatalogueError::Invalid { field, message } => bad(field, message),
            other => bad("limits", other.to_string()),
        })?;
        if let Some(p) = &self.priority_class
            && !PRIORITY_CLASSES.contains(&p.as_str())
        {
            return Err(bad("priority_class", format!("must be one of {}", PRIORITY_CLASSES.join(", "))));
        }
        if let Some(t) = self.sla.as_ref().and_then(|s| s.availability_target)
            && !(t.is_finite() && (0.0..=100.0).contains(&t))
        {
            return Err(bad("sla.availability_target", "must be a percentage from 0 to 100"));
        }
        let valid_from = self.valid_from.as_deref().map(|s| parse_instant("valid_from", s)).transpose()?;
        let valid_until = self.valid_until.as_deref().map(|s| parse_instant("valid_until", s)).transpose()?;
        if let (Some(f), Some(u)) = (valid_from, valid_until)
            && u <= f
        {
            return Err(bad("valid_until", "must be after `valid_from`"));
        }
        Ok(Contract { limits, valid_from, valid_until })
    }
}

/// The layer a stored contract contributes to each app of its account. Validity comes from
/// the record (`valid_from`/`valid_until` columns), which ending a contract moves; the body
/// keeps what was signed.
pub fn contract_layer(record: &voxgate_registry::Record, catalogue: &Catalogue) -> Option<Layer> {
    let parsed: ContractBody = serde_json::from_value(record.body.clone()).ok()?;
    let c = parsed.validate(catalogue).ok()?;
    let at = |ms: Option<i64>| ms.map(|ms| Timestamp::from_nanos(ms.saturating_mul(1_000_000)));
    let layer = Layer::setting(LayerKind::Contract, format!("contract:{}", record.id), &c.limits);
    Some(
        layer.with_schedule(Schedule::Between { from: at(record.valid_from), until: at(record.valid_until) }),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct Recurring {
    /// `mon` … `sun`; every day when omitted.
    #[serde(default)]
    pub days: Vec<String>,
    /// Local `HH:MM`.
    pub start: String,
    /// Local `HH:MM`; at or before `start` means the next day.
    pub end: String,
    /// IANA zone; the account's zone when omitted.
    pub time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct Once {
    pub start: String,
    pub end: String,
}

/// `POST /v1/apps/{id}/windows`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
#[schema(as = Window)]
#[schema(
    example = json!(
        {
            "service": "asr", "dimension": "rate", "multiply": 2,
            "recurring": {"days": ["sat", "sun"], "start": "19:00", "end": "23:00"},
            "reason": "weekend evenings"
        }
    )
)]
pub struct WindowBody {
    pub service: String,
    pub dimension: Dimension,
    /// Scale the dimension by this factor while the window is open…
    pub multiply: Option<f64>,
    /// …or set it to this value (shaped as in the catalogue: `{per_second, burst}` for rate,
    /// `{max}` for concurrency, a number for quotas).
    #[schema(schema_with = crate::http::openapi::limit_value, required = false)]
    pub value: Option<serde_json::Value>,
    pub recurring: Option<Recurring>,
    pub once: Option<Once>,
    pub reason: Option<String>,
}

impl WindowBody {
    /// Checks the window and builds its layer; `account_tz` is the default zone.
    pub fn layer(&self, id: &str, catalogue: &Catalogue, account_tz: &str) -> Result<Layer, BodyError> {
        let service = catalogue
            .service(&self.service)
            .ok_or_else(|| bad("service", format!("no service `{}` in the catalogue", self.service)))?;
        let op = match (self.multiply, &self.value) {
            (Some(f), None) => {
                if !(f.is_finite() && (0.0..=1000.0).contains(&f)) {
                    return Err(bad("multiply", "must be a number from 0 to 1000"));
                }
                Op::Multiply(f)
            }
            (None, Some(v)) => Op::Set(parse_value(catalogue, &self.service, self.dimension, "value", v)?),
            _ => return Err(bad("multiply", "give exactly one of `multiply` or `value`")),
        };
        let schedule = match (&self.recurring, &self.once) {
            (Some(r), None) => {
                let mut days = Vec::new();
                for (i, d) in r.days.iter().enumerate() {
                    days.push(
                        parse_weekday(d)
                            .ok_or_else(|| bad(format!("recurring.days[{i}]"), "must be mon … sun"))?,
                    );
                }
                if days.is_empty() {
                    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                        .iter()
                        .filter_map(|d| parse_weekday(d))
                        .collect();
                }
                let time = |field: &str, s: &str| {
                    s.parse::<Time>()
                        .map_err(|_| bad(format!("recurring.{field}"), "must be a local time like 19:00"))
                };
                let tz_name = r.time_zone.as_deref().unwrap_or(account_tz);
                let tz = TimeZone::get(tz_name).map_err(|_| {
                    bad("recurring.time_zone", format!("`{tz_name}` is not an IANA time zone"))
                })?;
                Schedule::Weekly { days, start: time("start", &r.start)?, end: time("end", &r.end)?, tz }
            }
            (None, Some(o)) => {
                let start = parse_instant("once.start", &o.start)?;
                let end = parse_instant("once.end", &o.end)?;
                if end <= start {
                    return Err(bad("once.end", "must be after `once.start`"));
                }
                Schedule::Between { from: Some(start), until: Some(end) }
            }
            _ => return Err(bad("recurring", "give exactly one of `recurring` or `once`")),
        };
        Ok(Layer {
            kind: LayerKind::Window,
            source: format!("window:{id}"),
            entries: vec![Entry { service, dimension: self.dimension, op }],
            schedule,
        })
    }
}

/// Reads one dimension's value written as in the catalogue: `{per_second, burst}` for rate,
/// `{max}` (or a number) for concurrency, a number of units for quotas.
pub fn parse_value(
    catalogue: &Catalogue,
    service: &str,
    dimension: Dimension,
    field: &str,
    v: &serde_json::Value,
) -> Result<LimitValue, BodyError> {
    let v = match (dimension, v) {
        (Dimension::Concurrency, serde_json::Value::Number(n)) => serde_json::json!({ "max": n }),
        _ => v.clone(),
    };
    let table = serde_json::json!({ dimension.as_str(): v });
    let limits: raw::Limits =
        serde_json::from_value(table).map_err(|e| bad(field, format!("wrong shape: {e}")))?;
    let mut map = BTreeMap::new();
    map.insert(service.to_string(), limits);
    let parsed = catalogue.limit_table(field, map).map_err(|e| match e {
        voxgate_core::CatalogueError::Invalid { message, .. } => bad(field, message),
        other => bad(field, other.to_string()),
    })?;
    let l = parsed[0].1;
    let value = match dimension {
        Dimension::Rate => l.rate.map(LimitValue::Rate),
        Dimension::Concurrency => l.concurrency.map(LimitValue::Concurrency),
        d => l.quota(d).map(LimitValue::Units),
    };
    value.ok_or_else(|| bad(field, "missing"))
}

/// The layer a stored window contributes to its app.
pub fn window_layer(
    id: &str,
    body: &serde_json::Value,
    catalogue: &Catalogue,
    account_tz: &str,
) -> Option<Layer> {
    let parsed: WindowBody = serde_json::from_value(body.clone()).ok()?;
    parsed.layer(id, catalogue, account_tz).ok()
}

/// For an account whose verified identity claimed the free allowance on another account
/// first: a free plan's quotas drop to zero.
pub fn allowance_claimed_layer(plan: &voxgate_core::catalogue::Plan, services: usize) -> Option<Layer> {
    if plan.kind != voxgate_core::catalogue::PlanKind::Free {
        return None;
    }
    let zero = voxgate_core::Units::ZERO;
    let limits: Vec<_> = (0..services)
        .map(|i| voxgate_core::ServiceIdx(i as u16))
        .map(|idx| {
            (
                idx,
                ServiceLimits {
                    per_minute: Some(zero),
                    daily: Some(zero),
                    monthly: Some(zero),
                    ..Default::default()
                },
            )
        })
        .collect();
    Some(Layer::setting(LayerKind::Plan, format!("plan:{}:allowance-claimed-elsewhere", plan.id), &limits))
}
