//! Prometheus metrics: what the decision path records (lock-free counters and a latency
//! histogram in fixed arrays, indexed by service and outcome), and what `GET /metrics`
//! samples at scrape time (leases in use, the counter store's state, flush lag, snapshot size).
//!
//! Recording a decision costs two clock reads and three relaxed atomic adds on the service's
//! own cache lines: no lock, no allocation, no label formatting. Labels are written only when
//! a scraper asks. Per-app series are off by default (`--metrics-per-app`): an app label on
//! every series multiplies their number by the number of apps.
//!
//! The exposition is written by `prometheus-client` (the Prometheus project's Rust client):
//! the Prometheus text format 0.0.4 by default, OpenMetrics 1.0 when the scraper's `Accept`
//! asks for `application/openmetrics-text` (as Prometheus itself does).

use crate::state::AppState;
use foldhash::fast::RandomState;
use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use voxgate_core::{Reason, ServiceIdx};

/// How a decision ended, as the `outcome` and `reason` labels say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Refused(Reason),
    /// The counter store failed and the service's policy refused the call (503).
    StoreError,
}

/// Number of distinct [`Outcome`]s: allowed, one per refusal reason, store error.
const OUTCOMES: usize = 2 + Reason::ALL.len();

impl Outcome {
    fn index(self) -> usize {
        match self {
            Outcome::Allowed => 0,
            Outcome::Refused(r) => 1 + r as usize,
            Outcome::StoreError => OUTCOMES - 1,
        }
    }

    fn labels(i: usize) -> (&'static str, &'static str) {
        match i {
            0 => ("allowed", "none"),
            i if i == OUTCOMES - 1 => ("error", "store_unavailable"),
            i => ("refused", Reason::ALL[i - 1].as_str()),
        }
    }
}

/// Upper bounds of the decision latency buckets, in nanoseconds: 25 µs to 1 s. An in-memory
/// decision lands in the first; a shared store's round trip in the next few; its timeout
/// budget (50 ms by default) near the top.
const BUCKETS_NS: [u64; 12] = [
    25_000,
    100_000,
    250_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// One service's series. Aligned so two services never share a cache line.
#[repr(align(128))]
#[derive(Default)]
struct ServiceSeries {
    decisions: [AtomicU64; OUTCOMES],
    /// Non-cumulative: `[i]` counts latencies in (bound i-1, bound i]; the last is +Inf.
    buckets: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

/// Forward-auth requests answered without a decision, by problem code.
pub const FORWARD_AUTH_REJECTIONS: [&str; 3] = ["unauthorized", "unknown_route", "invalid_cost"];

/// One app's decisions: by service, then by outcome.
type AppSeries = Box<[[AtomicU64; OUTCOMES]]>;
type PerAppMap = HashMap<Arc<str>, AppSeries, RandomState>;

pub struct Metrics {
    services: Box<[ServiceSeries]>,
    /// Per (app, service) decisions, when `--metrics-per-app` is set.
    per_app: Option<RwLock<PerAppMap>>,
    forward_auth_rejections: [AtomicU64; FORWARD_AUTH_REJECTIONS.len()],
    /// Unix ms when the process started: the flush lag counts from here until the first flush.
    started_ms: i64,
}

impl Metrics {
    pub fn new(services: usize, per_app: bool, started_ms: i64) -> Metrics {
        Metrics {
            services: (0..services).map(|_| ServiceSeries::default()).collect(),
            per_app: per_app.then(|| RwLock::new(HashMap::with_hasher(RandomState::default()))),
            forward_auth_rejections: Default::default(),
            started_ms,
        }
    }

    /// Records one decision and how long it took.
    #[inline]
    pub fn decision(&self, app: &Arc<str>, service: ServiceIdx, outcome: Outcome, took: Duration) {
        let Some(s) = self.services.get(service.0 as usize) else { return };
        let i = outcome.index();
        s.decisions[i].fetch_add(1, Ordering::Relaxed);
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        let bucket = BUCKETS_NS.iter().position(|b| ns <= *b).unwrap_or(BUCKETS_NS.len());
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        s.sum_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some(per_app) = &self.per_app {
            self.per_app_decision(per_app, app, service, i);
        }
    }

    #[cold]
    fn per_app_decision(&self, per_app: &RwLock<PerAppMap>, app: &Arc<str>, service: ServiceIdx, i: usize) {
        let s = service.0 as usize;
        if let Some(series) = per_app.read().get(app) {
            series[s][i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let services = self.services.len();
        let mut map = per_app.write();
        let series =
            map.entry(app.clone()).or_insert_with(|| (0..services).map(|_| Default::default()).collect());
        series[s][i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a forward-auth request answered with one of [`FORWARD_AUTH_REJECTIONS`].
    pub fn forward_auth_rejected(&self, code: &str) {
        if let Some(i) = FORWARD_AUTH_REJECTIONS.iter().position(|c| *c == code) {
            self.forward_auth_rejections[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The exposition's content type for a scraper's `Accept` header.
pub fn content_type(accept: Option<&str>) -> &'static str {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    }
}

/// Every metric, in the format `content_type` names.
pub fn render(state: &Arc<AppState>, content_type: &str) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(state.clone())));
    let mut out = String::with_capacity(16 * 1024);
    if content_type.starts_with("application/openmetrics-text") {
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    }
    Ok(out)
}

/// Reads the recorded series and samples the rest, once per scrape.
struct Scrape(Arc<AppState>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        metric.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let state = &self.0;
        let m = &state.metrics;
        let cat = &state.catalogue;
        let name = |idx: usize| cat.services[idx].id.clone();

        counter(
            &mut encoder,
            "voxgate_decisions",
            "Decisions made (check, lease, forward-auth) by service, outcome (allowed, refused, error) \
             and reason (none, rate, quota, concurrency, suspended, capacity, store_unavailable)",
            m.services.iter().enumerate().flat_map(|(s, series)| {
                series.decisions.iter().enumerate().map(move |(i, n)| {
                    let (outcome, reason) = Outcome::labels(i);
                    let labels =
                        vec![("service", name(s)), ("outcome", outcome.into()), ("reason", reason.into())];
                    (labels, n.load(Ordering::Relaxed))
                })
            }),
        )?;

        {
            let mut histogram = encoder.encode_descriptor(
                "voxgate_decision_duration_seconds",
                "Time to decide one call: snapshot lookup, counter store, metering",
                None,
                MetricType::Histogram,
            )?;
            for (s, series) in m.services.iter().enumerate() {
                let counts: Vec<u64> = series.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
                let buckets: Vec<(f64, u64)> = BUCKETS_NS
                    .iter()
                    .map(|ns| *ns as f64 / 1e9)
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(counts.iter().copied())
                    .collect();
                let count = counts.iter().sum();
                let sum = series.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
                let labels = vec![("service", name(s))];
                histogram
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }

        if let Some(per_app) = &m.per_app {
            let map = per_app.read();
            let mut apps: Vec<(&Arc<str>, &AppSeries)> = map.iter().collect();
            apps.sort_by(|a, b| a.0.cmp(b.0));
            counter(
                &mut encoder,
                "voxgate_app_decisions",
                "Decisions by app, service, outcome and reason (only with --metrics-per-app; \
                 series appear once an app has decided)",
                apps.into_iter().flat_map(|(app, services)| {
                    services.iter().enumerate().flat_map(move |(s, outcomes)| {
                        outcomes.iter().enumerate().filter(|(_, n)| n.load(Ordering::Relaxed) > 0).map(
                            move |(i, n)| {
                                let (outcome, reason) = Outcome::labels(i);
                                let labels = vec![
                                    ("app", app.to_string()),
                                    ("service", name(s)),
                                    ("outcome", outcome.into()),
                                    ("reason", reason.into()),
                                ];
                                (labels, n.load(Ordering::Relaxed))
                            },
                        )
                    })
                }),
            )?;
        }

        counter(
            &mut encoder,
            "voxgate_forward_auth_rejections",
            "Forward-auth requests answered without a decision, by code (unauthorized: missing or \
             unknown key; unknown_route: no route for the original path; invalid_cost: bad units header)",
            FORWARD_AUTH_REJECTIONS
                .iter()
                .zip(&m.forward_auth_rejections)
                .map(|(code, n)| (vec![("code", code.to_string())], n.load(Ordering::Relaxed))),
        )?;

        let now = state.now();
        if let Some(leases) = state.store.active_leases(now) {
            gauge(
                &mut encoder,
                "voxgate_leases_in_use",
                "Live leases (concurrency slots) by service, sampled at scrape",
                leases.into_iter().enumerate().map(|(s, n)| (vec![("service", name(s))], n as i64)),
            )?;
        }

        gauge(
            &mut encoder,
            "voxgate_counter_store_degraded",
            "1 while the shared counter store's last call failed (each service's on_store_error \
             policy decides calls meanwhile), else 0; always 0 for in-memory counters",
            [(vec![("store", state.store.kind().to_string())], i64::from(state.store.degraded()))],
        )?;
        counter(
            &mut encoder,
            "voxgate_counter_store_errors",
            "Calls to the shared counter store that failed (error or timeout) since start",
            [(vec![("store", state.store.kind().to_string())], state.store.failures())],
        )?;

        let last = state.last_flush_ms.load(Ordering::Relaxed);
        let lag_ms = (now.millis() - if last == 0 { m.started_ms } else { last }).max(0);
        gauge(
            &mut encoder,
            "voxgate_usage_flush_lag_seconds",
            "Seconds since metered usage was last written to the registry (since start before the \
             first flush)",
            [(vec![], lag_ms as f64 / 1000.0)],
        )?;
        gauge(
            &mut encoder,
            "voxgate_usage_last_flush_timestamp_seconds",
            "Unix time of the last successful usage flush; 0 before the first",
            [(vec![], last as f64 / 1000.0)],
        )?;

        let snapshot = state.snapshot.load();
        gauge(
            &mut encoder,
            "voxgate_snapshot_apps",
            "Apps in the resolved snapshot the decision path reads",
            [(vec![], snapshot.apps.len() as i64)],
        )?;
        gauge(
            &mut encoder,
            "voxgate_build_info",
            "The running voxgate's version (always 1)",
            [(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1i64)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_have_distinct_indices_and_labels() {
        let mut all = vec![Outcome::Allowed, Outcome::StoreError];
        all.extend(Reason::ALL.map(Outcome::Refused));
        let mut seen: Vec<usize> = all.iter().map(|o| o.index()).collect();
        seen.sort();
        assert_eq!(seen, (0..OUTCOMES).collect::<Vec<_>>());
        assert_eq!(Outcome::labels(Outcome::Refused(Reason::Quota).index()), ("refused", "quota"));
        assert_eq!(Outcome::labels(Outcome::StoreError.index()), ("error", "store_unavailable"));
    }

    #[test]
    fn latencies_land_in_their_bucket() {
        let m = Metrics::new(1, true, 0);
        let app: Arc<str> = "a".into();
        for us in [1, 25, 26, 5_000, 2_000_000] {
            m.decision(&app, ServiceIdx(0), Outcome::Allowed, Duration::from_micros(us));
        }
        let counts: Vec<u64> = m.services[0].buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, [2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(m.services[0].decisions[0].load(Ordering::Relaxed), 5);
        let per_app = m.per_app.as_ref().unwrap().read();
        assert_eq!(per_app[&app][0][0].load(Ordering::Relaxed), 5);
        m.decision(&app, ServiceIdx(7), Outcome::Allowed, Duration::ZERO);
    }
}
