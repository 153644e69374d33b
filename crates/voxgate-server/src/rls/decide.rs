//! `ShouldRateLimit`: descriptors mapped to voxgate's model and decided all or nothing.
//!
//! 1. Each descriptor is mapped with the catalogue's `[rls]` table to an app (by app id or by
//!    API key), a service and a cost, or found unknown (answered by the `unknown` policy), or
//!    refused at once (suspended app, spending cap reached, a cost no limit could ever admit,
//!    a malformed units entry).
//! 2. The mapped calls go to the counter store as one batch
//!    ([`voxgate_store::Counters::charge_all`]): when any descriptor is over its limit — or was
//!    refused in step 1, or is unknown under `unknown = "over_limit"` — nothing is charged.
//!    A descriptor whose hit count is 0 is a check: decided, never charged.
//! 3. One status per descriptor, in order, each with the limit that binds it; the response
//!    headers describe the limit that refused (with `Retry-After`) or, when all pass, the
//!    descriptor closest to its limit.
//!
//! Every decision on a known app is metered as the HTTP API meters it.

use super::{STATS, Stats};
use crate::http::limits_json::{ceil_secs, ratelimit_headers};
use crate::meter::Event;
use crate::metrics::Outcome;
use crate::state::{AppState, AppView, Snapshot};
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;
use voxgate_core::catalogue::{HitsAs, UnknownPolicy};
use voxgate_core::decision::LimitStatus;
use voxgate_core::engine::Cost;
use voxgate_core::store::{CheckInput, CounterKey};
use voxgate_core::{Decision, Dimension, LimitReport, Reason, ServiceIdx, Timestamp, Units};
use voxgate_store::{Batch, BatchCall};

/// At most this many descriptors in one request (Envoy sends one per matching rate limit
/// action; a route has a handful).
pub const MAX_DESCRIPTORS: usize = 64;

/// What one descriptor is, for voxgate.
enum Mapped {
    /// A call of a known app to a known service.
    Call { app: Arc<AppView>, service: ServiceIdx, cost: Cost, check_only: bool },
    /// Refused before any counter is read. `retry_after_ms` only where waiting helps.
    Refused { app: Option<(Arc<AppView>, ServiceIdx)>, reason: Option<Reason>, retry_after_ms: Option<u64> },
    /// Not mapped to a known app and service: answered by the `unknown` policy.
    Unknown,
    /// `is_negative_hits` (give back hits): voxgate does not refund through this API; the
    /// descriptor is answered `OK` and changes nothing.
    Refund,
}

fn unknown(domain: &str, d: &RateLimitDescriptor, why: &'static str) -> Mapped {
    tracing::debug!(
        domain,
        why,
        entries = d.entries.len(),
        "rls: descriptor not mapped to an app and service"
    );
    Mapped::Unknown
}

fn invalid(domain: &str, why: &'static str) -> Mapped {
    tracing::debug!(domain, why, "rls: malformed descriptor refused");
    Stats::add(&STATS.invalid, 1);
    Mapped::Refused { app: None, reason: None, retry_after_ms: None }
}

/// Step 1 for one descriptor.
fn map(
    state: &AppState,
    snapshot: &Snapshot,
    req: &RateLimitRequest,
    d: &RateLimitDescriptor,
    now: Timestamp,
) -> Mapped {
    let rls = &state.catalogue.rls;
    let domain = req.domain.as_str();
    if rls.domain.as_deref().is_some_and(|want| want != domain) {
        return unknown(domain, d, "another domain");
    }
    let (mut app_id, mut api_key, mut service, mut units) = (None, None, None, None);
    for e in &d.entries {
        let key = Some(e.key.as_str());
        let value = Some(e.value.as_str());
        if key == rls.app_key.as_deref() {
            app_id = value;
        } else if key == rls.api_key_key.as_deref() {
            api_key = value;
        } else if key == Some(rls.service_key.as_str()) {
            service = value;
        } else if key == rls.units_key.as_deref() {
            units = value;
        }
    }
    let owner = match api_key {
        None => None,
        Some(key) => match snapshot.keys.get(&voxgate_registry::hash_key(key)) {
            Some(app) => Some(app.as_str()),
            None => return unknown(domain, d, "no such API key"),
        },
    };
    let app_id = match (owner, app_id) {
        (Some(owner), Some(named)) if owner != named => {
            return unknown(domain, d, "the API key belongs to another app than the app entry names");
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return unknown(domain, d, "no app entry"),
    };
    let Some(app) = snapshot.apps.get(app_id) else {
        return unknown(domain, d, "no such app");
    };
    let Some(service) = service else {
        return unknown(domain, d, "no service entry");
    };
    let Some(idx) = state.catalogue.service(service) else {
        return unknown(domain, d, "no such service");
    };
    if d.is_negative_hits {
        return Mapped::Refund;
    }
    let hits = d.hits_addend.as_ref().map_or(u64::from(req.hits_addend.max(1)), |h| h.value);
    let check_only = hits == 0;
    let cost = match rls.hits_as {
        HitsAs::Requests => {
            let units = match units {
                None => Units::ZERO,
                Some(text) => match text.trim().parse::<f64>().ok().and_then(|u| Units::from_f64(u).ok()) {
                    Some(u) => u,
                    None => {
                        return invalid(domain, "the units entry is not a number of units from 0 to 1e12");
                    }
                },
            };
            Cost { requests: u32::try_from(hits.max(1)).unwrap_or(u32::MAX), units }
        }
        // The hit count is the units; a units entry is not read.
        HitsAs::Units => match Units::from_f64(hits as f64) {
            Ok(units) => Cost { requests: 1, units },
            Err(_) => return invalid(domain, "hits_addend is more units than any call may have"),
        },
    };
    let app = app.clone();
    let refuse =
        |reason, retry_after_ms| Mapped::Refused { app: Some((app.clone(), idx)), reason, retry_after_ms };
    if app.suspended {
        return refuse(Some(Reason::Suspended), None);
    }
    if let Some(until) = state.capped.load().get(&*app.id).copied()
        && now < until
    {
        return refuse(Some(Reason::Quota), Some(voxgate_core::time::millis_until(now, until)));
    }
    if let Some(dim) = app.limits.service(idx).unreachable(cost.requests, cost.units, false) {
        // No wait lets this call pass: a smaller cost or a bigger limit is needed.
        return refuse(Some(Reason::of(dim)), None);
    }
    Mapped::Call { app, service: idx, cost, check_only }
}

/// The whole `ShouldRateLimit`.
pub async fn should_rate_limit(
    state: &AppState,
    req: &RateLimitRequest,
) -> Result<RateLimitResponse, Status> {
    if req.descriptors.is_empty() {
        return Err(Status::invalid_argument("a rate limit request needs at least one descriptor"));
    }
    if req.descriptors.len() > MAX_DESCRIPTORS {
        return Err(Status::invalid_argument(format!("at most {MAX_DESCRIPTORS} descriptors per request")));
    }
    let started = Instant::now();
    let now = state.now();
    // Meter a decision of a known app, and count it in the metrics, as the HTTP API does.
    let note = |app: &Arc<str>, service: ServiceIdx, event: Event| {
        state.record(app, service, now, event);
        let outcome = match event {
            Event::Refused(r) => Outcome::Refused(r),
            _ => Outcome::Allowed,
        };
        state.metrics.decision(app, service, outcome, started.elapsed());
    };
    let snapshot = state.snapshot.load();
    let policy = state.catalogue.rls.unknown;
    let mapped: Vec<Mapped> = req.descriptors.iter().map(|d| map(state, &snapshot, req, d, now)).collect();
    let blocked = mapped.iter().any(|m| match m {
        Mapped::Refused { .. } => true,
        Mapped::Unknown => policy == UnknownPolicy::OverLimit,
        _ => false,
    });

    // Step 2: one batch; only checks when something is refused already.
    let calls: Vec<BatchCall<'_>> = mapped
        .iter()
        .filter_map(|m| match m {
            Mapped::Call { app, service, cost, check_only } => Some(BatchCall {
                input: CheckInput {
                    key: CounterKey { app: &app.id, service: *service },
                    limits: app.limits.service(*service),
                    cost: *cost,
                    now,
                    tz: &app.time_zone,
                    lease_ttl_ms: None,
                },
                dry_run: *check_only || blocked,
            }),
            _ => None,
        })
        .collect();
    let batch = if calls.is_empty() {
        Batch { committed: true, decisions: Vec::new(), charged: Vec::new() }
    } else {
        state.store.charge_all(&calls).await.map_err(|e| {
            tracing::warn!(error = %e, "rls: counter store failed");
            for c in &calls {
                let app: Arc<str> = c.input.key.app.into();
                state.metrics.decision(&app, c.input.key.service, Outcome::StoreError, started.elapsed());
            }
            Status::unavailable(e.to_string())
        })?
    };

    // Step 3: statuses, metering, headers.
    let first_reason = mapped
        .iter()
        .filter_map(|m| match m {
            Mapped::Refused { reason, .. } => *reason,
            _ => None,
        })
        .chain(batch.decisions.iter().filter_map(|d| d.refused.map(|r| r.reason)))
        .next();
    let mut statuses = Vec::with_capacity(mapped.len());
    // The refusal that waits longest (its wait, and its limit when one limit made it).
    let mut headline: Option<(u64, Option<(LimitStatus, &str)>)> = None;
    // When all pass: the descriptor closest to its limit.
    let mut closest: Option<(f64, &Decision, &str)> = None;
    let mut unknown = 0;
    let mut calls_seen = 0;
    for m in &mapped {
        let status = match m {
            Mapped::Call { app, service, cost, check_only } => {
                let k = calls_seen;
                calls_seen += 1;
                let d = &batch.decisions[k];
                let def = state.catalogue.service_def(*service);
                if !check_only {
                    let event = if batch.charged[k] {
                        Some(Event::Allowed { units_milli: cost.units.milli() as i64 })
                    } else {
                        d.refused.map(|r| r.reason).or(first_reason).map(Event::Refused)
                    };
                    if let Some(event) = event {
                        note(&app.id, *service, event);
                    }
                }
                let binding = binding(d);
                if let Some(r) = d.refused {
                    let limit = binding.map(|s| (*s, def.unit.as_str()));
                    if headline.is_none_or(|(wait, _)| r.retry_after_ms > wait) {
                        headline = Some((r.retry_after_ms, limit));
                    }
                } else if let Some(s) = binding {
                    let ratio = fill_ratio(s);
                    if closest.is_none_or(|(best, _, _)| ratio < best) {
                        closest = Some((ratio, d, def.unit.as_str()));
                    }
                }
                let code = if d.allowed() { Code::Ok } else { Code::OverLimit };
                descriptor_status(code, &def.id, binding)
            }
            Mapped::Refused { app, reason, retry_after_ms } => {
                if let (Some((app, service)), Some(reason)) = (app, reason) {
                    note(&app.id, *service, Event::Refused(*reason));
                }
                if let Some(wait) = retry_after_ms
                    && headline.is_none_or(|(w, _)| *wait > w)
                {
                    headline = Some((*wait, None));
                }
                descriptor_status(Code::OverLimit, "", None)
            }
            Mapped::Unknown => {
                unknown += 1;
                let code = match policy {
                    UnknownPolicy::Ok => Code::Ok,
                    UnknownPolicy::OverLimit => Code::OverLimit,
                };
                descriptor_status(code, "", None)
            }
            Mapped::Refund => descriptor_status(Code::Ok, "", None),
        };
        statuses.push(status);
    }
    let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
    let mut headers = Vec::new();
    if over {
        if let Some((wait_ms, limit)) = headline {
            if let Some((status, unit)) = limit {
                let mut report = LimitReport::default();
                report.push(status);
                push_ratelimit(&mut headers, &report, unit);
            }
            headers.push(header("retry-after", ceil_secs(wait_ms).max(1).to_string()));
        }
    } else if let Some((_, d, unit)) = closest {
        push_ratelimit(&mut headers, &d.limits, unit);
    }
    Stats::add(&STATS.requests, 1);
    Stats::add(&STATS.over_limit, u64::from(over));
    Stats::add(&STATS.unknown, unknown);
    Ok(RateLimitResponse {
        overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
        statuses,
        response_headers_to_add: headers,
        ..Default::default()
    })
}

/// The limit that binds a descriptor: the one that refused it, else the one with the
/// smallest share left (the first such, in the order rate, per-minute, daily, monthly).
fn binding(d: &Decision) -> Option<&LimitStatus> {
    match d.refused.and_then(|r| r.dimension) {
        Some(dim) => d.limits.get(dim),
        None => d.limits.as_slice().iter().min_by(|a, b| fill_ratio(a).total_cmp(&fill_ratio(b))),
    }
}

fn fill_ratio(s: &LimitStatus) -> f64 {
    if s.limit == 0 { 0.0 } else { s.remaining as f64 / s.limit as f64 }
}

/// Requests, or whole units (rounded down) for quotas.
fn whole(dim: Dimension, raw: u64) -> u32 {
    let v = if dim.counts_units() { raw / 1000 } else { raw };
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn descriptor_status(code: Code, service: &str, binding: Option<&LimitStatus>) -> DescriptorStatus {
    let Some(s) = binding else {
        return DescriptorStatus { code: code as i32, ..Default::default() };
    };
    // The rate is a GCRA bucket of `burst` requests refilled at `per_second`: reported as
    // `burst` per SECOND, so the remaining count never exceeds the limit.
    let unit = match s.dimension {
        Dimension::Rate => Unit::Second,
        Dimension::PerMinute => Unit::Minute,
        Dimension::Daily => Unit::Day,
        Dimension::Monthly => Unit::Month,
        Dimension::Concurrency => Unit::Unknown,
    };
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(RateLimit {
            name: format!("{service}.{}", s.dimension.as_str()),
            requests_per_unit: whole(s.dimension, s.limit),
            unit: unit as i32,
        }),
        limit_remaining: whole(s.dimension, s.remaining),
        duration_until_reset: Some(Duration {
            seconds: (s.reset_ms / 1000) as i64,
            nanos: ((s.reset_ms % 1000) * 1_000_000) as i32,
        }),
        quota: None,
    }
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue { key: key.into(), value, ..Default::default() }
}

fn push_ratelimit(headers: &mut Vec<HeaderValue>, report: &LimitReport, unit: &str) {
    if let Some((policy, current)) = ratelimit_headers(report, unit)
        && let (Ok(policy), Ok(current)) = (policy.to_str(), current.to_str())
    {
        headers.push(header("ratelimit-policy", policy.to_string()));
        headers.push(header("ratelimit", current.to_string()));
    }
}
