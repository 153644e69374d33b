//! Integration tests of the HTTP API: the router driven in-process with a manual clock, and
//! one test of the real binary over TCP (start, check, SIGTERM, restart).
//!
//! The demo catalogue's figures these tests rely on (app `demo`: tier `individual`, plan
//! `free`, time zone UTC): asr rate 5/s with burst 10 (the free plan's cap), concurrency 2
//! (cap), quotas 600 per minute, 1800 a day, 18 000 a month, leases live 60 s.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tempfile::TempDir;
use tower::ServiceExt;
use voxgate_core::Timestamp;
use voxgate_server::AppState;
use voxgate_server::config::Config;
use voxgate_server::state::{Bootstrap, Clock};

const ADMIN: &str = "test-admin-token-0123456789";
const GATEWAY: &str = "test-gateway-token-0123456789";
const WRONG: &str = "not-a-token-anyone-knows-123";
const PROBLEM_JSON: &str = "application/problem+json";

// ---- harness -------------------------------------------------------------------------------

/// A clock the tests move by hand.
#[derive(Clone)]
struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    fn at(rfc3339: &str) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(instant(rfc3339).nanos())))
    }
    fn set(&self, rfc3339: &str) {
        self.0.store(instant(rfc3339).nanos(), Ordering::SeqCst);
    }
    fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms * 1_000_000, Ordering::SeqCst);
    }
    fn clock(&self) -> Clock {
        let ns = self.0.clone();
        Arc::new(move || Timestamp::from_nanos(ns.load(Ordering::SeqCst)))
    }
}

fn instant(rfc3339: &str) -> Timestamp {
    Timestamp::from_jiff(rfc3339.parse::<jiff::Timestamp>().expect("RFC 3339 instant"))
}

/// Milliseconds from one RFC 3339 instant to another.
fn ms_between(from: &str, to: &str) -> u64 {
    ((instant(to).nanos() - instant(from).nanos()) / 1_000_000) as u64
}

/// The instant most tests start at: a Tuesday morning, 14 h before UTC midnight, 21 days and
/// 14 h before the end of March.
const T0: &str = "2026-03-10T10:00:00Z";

struct Server {
    app: Router,
    state: Arc<AppState>,
    clock: ManualClock,
    demo_key: String,
    dir: TempDir,
}

async fn server() -> Server {
    server_with(|_| {}).await
}

async fn server_with(configure: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut s, boot) = open(dir, ManualClock::at(T0), configure).await;
    s.demo_key = boot.demo_key.expect("first open creates the demo app");
    s
}

/// Opens state on `dir` (the demo app is created on the first open only).
async fn open(dir: TempDir, clock: ManualClock, configure: impl FnOnce(&mut Config)) -> (Server, Bootstrap) {
    let mut config = Config::for_tests(dir.path());
    configure(&mut config);
    let (state, boot) = AppState::open(config, clock.clock()).await.expect("state opens");
    let server =
        Server { app: voxgate_server::router(state.clone()), state, clock, demo_key: String::new(), dir };
    (server, boot)
}

impl Server {
    /// A graceful stop (flush usage, close the registry), then new state on the same data
    /// directory with the clock set to `at`.
    async fn restart(self, at: &str) -> (Server, Bootstrap) {
        self.state.flush().await.expect("final flush");
        self.state.registry.close().await;
        let Server { clock, demo_key, dir, .. } = self;
        clock.set(at);
        let (mut s, boot) = open(dir, clock, |_| {}).await;
        s.demo_key = demo_key;
        (s, boot)
    }
}

/// One HTTP exchange as the tests see it.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as JSON; `Value::String` with the raw text when it is not JSON.
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }
    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

async fn call(app: &Router, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    let bytes = body.map(|b| serde_json::to_vec(&b).expect("serialisable"));
    call_raw(app, method, uri, token, bytes.as_deref()).await
}

async fn call_raw(app: &Router, method: &str, uri: &str, token: Option<&str>, body: Option<&[u8]>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_vec())),
        None => req.body(Body::empty()),
    }
    .expect("valid request");
    let response = app.clone().oneshot(req).await.expect("infallible router");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply { status: parts.status, headers: parts.headers, json }
}

/// `POST /v1/check` for the demo app (no token: decisions are open by default).
async fn check(s: &Server, service: &str, units: f64) -> Reply {
    call(
        &s.app,
        "POST",
        "/v1/check",
        None,
        Some(json!({ "app_id": "demo", "service": service, "units": units })),
    )
    .await
}

async fn lease(s: &Server, units: f64) -> Reply {
    call(
        &s.app,
        "POST",
        "/v1/leases",
        None,
        Some(json!({ "app_id": "demo", "service": "asr", "units": units })),
    )
    .await
}

/// The entry of `policy` in a `limits` array (of a decision, or of `/limits` when `service`
/// is given).
fn entry<'a>(limits: &'a Value, service: Option<&str>, policy: &str) -> &'a Value {
    limits
        .as_array()
        .expect("limits is an array")
        .iter()
        .find(|l| l["policy"] == policy && service.is_none_or(|s| l["service"].as_str() == Some(s)))
        .unwrap_or_else(|| panic!("no `{policy}` limit for {service:?} in {limits:#}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("`{v}` is not a number"))
}

/// `GET /v1/apps/{app}/limits` as the admin.
async fn limits_of(s: &Server, app: &str) -> Value {
    let r = call(&s.app, "GET", &format!("/v1/apps/{app}/limits"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    r.json
}

/// One limit of one of the demo app's services, from `/limits`.
async fn demo_limit(s: &Server, service: &str, policy: &str) -> Value {
    entry(&limits_of(s, "demo").await["limits"], Some(service), policy).clone()
}

/// (policy, used, remaining) of every asr limit of the demo app: what a refused call must
/// leave exactly as it was.
async fn asr_counters(s: &Server) -> Vec<(String, f64, f64)> {
    limits_of(s, "demo").await["limits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["service"] == "asr")
        .map(|l| (l["policy"].as_str().unwrap().to_string(), num(&l["used"]), num(&l["remaining"])))
        .collect()
}

/// Items of a structured-field list header: `"name";k=v;k="v", ...`.
fn sf_items(value: &str) -> Vec<(String, BTreeMap<String, String>)> {
    value
        .split(", ")
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap().trim_matches('"').to_string();
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("key=value");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name, params)
        })
        .collect()
}

fn ratelimit_item(r: &Reply, name: &str) -> BTreeMap<String, String> {
    let header = r.header("ratelimit").expect("ratelimit header");
    sf_items(header)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no `{name}` item in `{header}`"))
        .1
}

fn retry_after(r: &Reply) -> u64 {
    r.header("retry-after").expect("retry-after header").parse().expect("Retry-After in whole seconds")
}

fn assert_refused(r: &Reply, reason: &str) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:#}", r.json);
    assert_eq!(r.json["allowed"], false);
    assert_eq!(r.json["reason"], reason, "{:#}", r.json);
}

fn assert_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{code}: {:#}", r.json);
    assert!(r.content_type().starts_with(PROBLEM_JSON), "{code}: content-type `{}`", r.content_type());
    assert_eq!(r.json["code"], code, "{:#}", r.json);
    assert_eq!(r.json["status"], status);
    assert_eq!(r.json["type"], format!("urn:voxgate:problem:{code}"));
}

// ---- 1. an allowed check -------------------------------------------------------------------

#[tokio::test]
async fn allowed_check_reports_every_limit_in_body_and_headers() {
    let s = server().await;
    let r = check(&s, "asr", 12.5).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert!(r.content_type().starts_with("application/json"));
    assert_eq!(r.json["allowed"], true);
    assert_eq!(r.json["reason"], Value::Null);
    assert_eq!(r.json["retry_after_ms"], 0);
    assert_eq!(r.json["app_id"], "demo");
    assert_eq!(r.json["service"], "asr");
    assert!(r.json.get("lease_id").is_none(), "a check takes no lease");
    assert!(r.header("retry-after").is_none());

    // (policy, limit, used, remaining, reset_ms, window_s, unit)
    let month_end = ms_between(T0, "2026-04-01T00:00:00Z");
    let expected: [(&str, f64, f64, f64, u64, u64, &str); 4] = [
        ("rate", 10.0, 1.0, 9.0, 200, 2, "requests"),
        ("per_minute", 600.0, 12.5, 587.5, 60_000, 60, "audio_second"),
        ("daily", 1800.0, 12.5, 1787.5, 14 * 3_600_000, 86_400, "audio_second"),
        ("monthly", 18000.0, 12.5, 17987.5, month_end, 31 * 86_400, "audio_second"),
    ];
    let limits = r.json["limits"].as_array().unwrap();
    let policies: Vec<&str> = limits.iter().map(|l| l["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["rate", "per_minute", "daily", "monthly"]);
    for (policy, limit, used, remaining, reset_ms, window_s, unit) in expected {
        let l = entry(&r.json["limits"], None, policy);
        assert_eq!(l["dimension"], policy);
        assert_eq!(num(&l["limit"]), limit, "{policy} limit");
        assert_eq!(num(&l["used"]), used, "{policy} used");
        assert_eq!(num(&l["remaining"]), remaining, "{policy} remaining");
        assert_eq!(l["reset_ms"], reset_ms, "{policy} reset_ms");
        assert_eq!(l["window_s"], window_s, "{policy} window_s");
        assert_eq!(l["unit"], unit, "{policy} unit");
    }

    assert_eq!(
        r.header("ratelimit-policy").unwrap(),
        "\"rate\";q=10;w=2;qu=\"requests\", \"per_minute\";q=600;w=60;qu=\"audio_second\", \
         \"daily\";q=1800;w=86400;qu=\"audio_second\", \"monthly\";q=18000;w=2678400;qu=\"audio_second\""
    );
    assert_eq!(
        r.header("ratelimit").unwrap(),
        format!(
            "\"rate\";r=9;t=1, \"per_minute\";r=587;t=60, \"daily\";r=1787;t=50400, \
             \"monthly\";r=17987;t={}",
            month_end / 1000
        )
    );
}

/// Every service's check answers with one header item per limit in the body, in the same
/// order and with the same figures.
#[tokio::test]
async fn ratelimit_headers_have_one_item_per_limit_for_every_service() {
    let s = server().await;
    let cases: [(&str, &[&str]); 4] = [
        ("asr", &["rate", "per_minute", "daily", "monthly"]),
        ("tts", &["rate", "daily", "monthly"]),
        ("conversational_ai", &["rate", "daily", "monthly"]),
        ("rtm", &["rate", "daily", "monthly"]),
    ];
    for (service, policies) in cases {
        let r = check(&s, service, 1.0).await;
        assert_eq!(r.status, StatusCode::OK, "{service}: {:#}", r.json);
        let limits = r.json["limits"].as_array().unwrap();
        let policy_items = sf_items(r.header("ratelimit-policy").expect("policy header"));
        let state_items = sf_items(r.header("ratelimit").expect("ratelimit header"));
        let names: Vec<&str> = policy_items.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, policies, "{service}");
        assert_eq!(limits.len(), policies.len(), "{service}");
        assert_eq!(state_items.len(), policies.len(), "{service}");
        for ((l, (pname, p)), (sname, st)) in limits.iter().zip(&policy_items).zip(&state_items) {
            assert_eq!(l["policy"], pname.as_str(), "{service}");
            assert_eq!(pname, sname, "{service}");
            assert_eq!(p["q"], (num(&l["limit"]).floor() as u64).to_string());
            assert_eq!(st["r"], (num(&l["remaining"]).floor() as u64).to_string());
            let reset_ms = l["reset_ms"].as_u64().unwrap();
            assert_eq!(st["t"], reset_ms.div_ceil(1000).to_string(), "{service}");
        }
    }
}

// ---- 2. rate refusal -----------------------------------------------------------------------

#[tokio::test]
async fn rate_refusal_says_when_to_retry_and_recovers() {
    let s = server().await;
    // The free plan caps asr at 5/s with a burst of 10: ten calls at one instant pass.
    for i in 0..10 {
        let r = check(&s, "asr", 0.0).await;
        assert_eq!(r.status, StatusCode::OK, "call {i}: {:#}", r.json);
        assert_eq!(num(&entry(&r.json["limits"], None, "rate")["remaining"]), 9.0 - i as f64);
    }
    let r = check(&s, "asr", 0.0).await;
    assert_refused(&r, "rate");
    assert!(r.content_type().starts_with("application/json"));
    assert_eq!(r.json["retry_after_ms"], 200, "one emission interval at 5/s");
    let t: u64 = ratelimit_item(&r, "rate")["t"].parse().unwrap();
    assert_eq!(ratelimit_item(&r, "rate")["r"], "0");
    assert!(retry_after(&r) >= t, "Retry-After {} < t={t}", retry_after(&r));
    assert!(retry_after(&r) * 1000 >= 200);

    // One millisecond early is still too early, and being refused again changes nothing.
    s.clock.advance_ms(199);
    assert_refused(&check(&s, "asr", 0.0).await, "rate");
    s.clock.advance_ms(1);
    let r = check(&s, "asr", 0.0).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_refused(&check(&s, "asr", 0.0).await, "rate");
}

// ---- 3. daily quota refusal ----------------------------------------------------------------

#[tokio::test]
async fn daily_quota_refusal_points_at_midnight_and_consumes_nothing() {
    let s = server().await;
    // 600 per minute, so the day's 1800 take three minutes.
    for minute in ["10:00", "10:01", "10:02"] {
        s.clock.set(&format!("2026-03-10T{minute}:00Z"));
        let r = check(&s, "asr", 600.0).await;
        assert_eq!(r.status, StatusCode::OK, "{minute}: {:#}", r.json);
    }
    assert_eq!(num(&demo_limit(&s, "asr", "daily").await["remaining"]), 0.0);

    s.clock.set("2026-03-10T10:03:00Z");
    let before = asr_counters(&s).await;
    let to_midnight = ms_between("2026-03-10T10:03:00Z", "2026-03-11T00:00:00Z");
    for units in [1.0, 0.0] {
        let r = check(&s, "asr", units).await;
        assert_refused(&r, "quota");
        assert_eq!(r.json["retry_after_ms"], to_midnight, "units {units}");
        assert_eq!(retry_after(&r), to_midnight / 1000);
        let daily = ratelimit_item(&r, "daily");
        assert_eq!(daily["r"], "0");
        assert_eq!(daily["t"], (to_midnight / 1000).to_string());
        assert_eq!(num(&entry(&r.json["limits"], None, "daily")["used"]), 1800.0);
    }
    assert_eq!(asr_counters(&s).await, before, "refused calls consume nothing");

    // Still refused one millisecond before midnight; Retry-After rounds up to 1 s.
    s.clock.set("2026-03-10T23:59:59.999Z");
    let r = check(&s, "asr", 1.0).await;
    assert_refused(&r, "quota");
    assert_eq!(r.json["retry_after_ms"], 1);
    assert_eq!(retry_after(&r), 1);

    // A new UTC day: a new quota; the month keeps counting.
    s.clock.set("2026-03-11T00:00:00Z");
    let r = check(&s, "asr", 600.0).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(num(&demo_limit(&s, "asr", "daily").await["used"]), 600.0);
    assert_eq!(num(&demo_limit(&s, "asr", "monthly").await["used"]), 2400.0);
}

// ---- 4. atomicity ---------------------------------------------------------------------------

#[tokio::test]
async fn a_refused_call_changes_no_other_limit() {
    let s = server().await;

    // Refused by the per-minute quota: the rate (and every other counter) stays as it was.
    let r = check(&s, "asr", 600.0).await;
    assert_eq!(r.status, StatusCode::OK);
    s.clock.advance_ms(100);
    let before = asr_counters(&s).await;
    assert_eq!(before.iter().find(|(p, ..)| p == "rate").unwrap().2, 9.0, "{before:?}");
    let r = check(&s, "asr", 1.0).await;
    assert_refused(&r, "quota");
    assert_eq!(r.json["retry_after_ms"], 59_900, "until the next minute");
    assert_eq!(asr_counters(&s).await, before, "per-minute refusal");

    // Refused by the daily quota: the rate stays as it was.
    s.clock.set("2026-03-10T10:01:00Z");
    assert_eq!(check(&s, "asr", 600.0).await.status, StatusCode::OK);
    s.clock.set("2026-03-10T10:02:00Z");
    assert_eq!(check(&s, "asr", 599.0).await.status, StatusCode::OK);
    s.clock.set("2026-03-10T10:03:00Z");
    let before = asr_counters(&s).await;
    let r = check(&s, "asr", 2.0).await;
    assert_refused(&r, "quota");
    assert!(r.json["retry_after_ms"].as_u64().unwrap() > 3_600_000);
    assert_eq!(asr_counters(&s).await, before, "daily refusal");
    assert_eq!(num(&entry(&r.json["limits"], None, "rate")["remaining"]), 10.0);

    // Refused by the rate: no quota is charged.
    s.clock.set("2026-03-10T10:04:00Z");
    for _ in 0..10 {
        assert_eq!(check(&s, "asr", 0.0).await.status, StatusCode::OK);
    }
    let before = asr_counters(&s).await;
    let r = check(&s, "asr", 1.0).await;
    assert_refused(&r, "rate");
    assert_eq!(asr_counters(&s).await, before, "rate refusal");
    assert_eq!(
        num(&demo_limit(&s, "asr", "daily").await["used"]),
        1799.0,
        "the 1 unit of the rate-refused call was not charged"
    );

    // A lease refused by the daily quota takes no concurrency slot.
    s.clock.set("2026-03-10T10:05:00Z");
    let before = asr_counters(&s).await;
    let r = lease(&s, 5.0).await;
    assert_refused(&r, "quota");
    assert!(r.json.get("lease_id").is_none());
    assert_eq!(asr_counters(&s).await, before, "lease refused by quota");
    assert_eq!(num(&demo_limit(&s, "asr", "concurrency").await["used"]), 0.0);

    // A lease refused by concurrency charges neither rate nor quota. (Zero units: 1 unit
    // of the day is left, and a refusal reports only the limit that binds longest.)
    s.clock.set("2026-03-10T10:06:00Z");
    for _ in 0..2 {
        assert_eq!(lease(&s, 0.0).await.status, StatusCode::CREATED);
    }
    let before = asr_counters(&s).await;
    assert_refused(&lease(&s, 0.0).await, "concurrency");
    assert_eq!(asr_counters(&s).await, before, "lease refused by concurrency");
}

// ---- 5. leases -------------------------------------------------------------------------------

#[tokio::test]
async fn leases_fill_concurrency_renew_settle_and_expire() {
    let s = server().await;
    let daily_used = async |s: &Server| num(&demo_limit(s, "asr", "daily").await["used"]);

    let r1 = lease(&s, 30.0).await;
    assert_eq!(r1.status, StatusCode::CREATED, "{:#}", r1.json);
    assert_eq!(r1.json["allowed"], true);
    let l1 = r1.json["lease_id"].as_str().expect("lease_id").to_string();
    assert!(l1.starts_with("demo.asr."), "{l1}");
    assert_eq!(r1.json["expires_at"], "2026-03-10T10:01:00Z");
    assert_eq!(num(&r1.json["reserved_units"]), 30.0);
    let conc = entry(&r1.json["limits"], None, "concurrency");
    assert_eq!((conc["limit"].as_u64(), conc["used"].as_u64()), (Some(2), Some(1)));
    assert_eq!(conc["reset_ms"], 60_000);
    assert_eq!(ratelimit_item(&r1, "concurrency")["r"], "1");
    assert_eq!(daily_used(&s).await, 30.0, "a lease reserves its units");

    s.clock.set("2026-03-10T10:00:10Z");
    let r2 = lease(&s, 30.0).await;
    assert_eq!(r2.status, StatusCode::CREATED, "{:#}", r2.json);
    let l2 = r2.json["lease_id"].as_str().unwrap().to_string();
    assert_ne!(l1, l2);

    // Both slots taken: refused until the first lease expires.
    let r3 = lease(&s, 30.0).await;
    assert_refused(&r3, "concurrency");
    assert_eq!(r3.json["retry_after_ms"], 50_000);
    assert_eq!(retry_after(&r3), 50);
    assert_eq!(daily_used(&s).await, 60.0, "a refused lease reserves nothing");

    // Renewing moves the expiry to now + TTL.
    s.clock.set("2026-03-10T10:00:30Z");
    let r = call(&s.app, "POST", &format!("/v1/leases/{l1}/renew"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["lease_id"], l1.as_str());
    assert_eq!(r.json["expires_at"], "2026-03-10T10:01:30Z");
    assert_eq!(r.json["ttl_ms"], 60_000);

    // Releasing with the actual units refunds the difference and frees the slot.
    s.clock.set("2026-03-10T10:00:40Z");
    let r = call(&s.app, "DELETE", &format!("/v1/leases/{l1}"), None, Some(json!({ "units": 12 }))).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["released"], true);
    assert_eq!(num(&r.json["settled_units"]), -18.0);
    assert_eq!(daily_used(&s).await, 42.0);
    assert_eq!(num(&demo_limit(&s, "asr", "concurrency").await["used"]), 1.0);

    // A released lease is gone; unknown and malformed ids are not found.
    for id in [
        l1.as_str(),
        "demo.asr.00000000deadbeef",
        "nope.asr.0000000000000001",
        "demo.fax.0000000000000001",
        "garbage",
    ] {
        let r = call(&s.app, "POST", &format!("/v1/leases/{id}/renew"), None, None).await;
        assert_problem(&r, 404, "lease_not_found");
        let r = call(&s.app, "DELETE", &format!("/v1/leases/{id}"), None, None).await;
        assert_problem(&r, 404, "lease_not_found");
    }

    // Take the freed slot (reserving 10), so both are held again until lease 2 expires.
    let r4 = lease(&s, 10.0).await;
    assert_eq!(r4.status, StatusCode::CREATED, "{:#}", r4.json);
    let l4 = r4.json["lease_id"].as_str().unwrap().to_string();
    s.clock.set("2026-03-10T10:01:09.999Z");
    assert_refused(&lease(&s, 0.0).await, "concurrency");

    // Lease 2 (taken at 10:00:10, TTL 60 s) expires at 10:01:10: its slot comes back, it can
    // no longer be renewed or released, and its reservation stands.
    s.clock.set("2026-03-10T10:01:10Z");
    let r = call(&s.app, "POST", &format!("/v1/leases/{l2}/renew"), None, None).await;
    assert_problem(&r, 404, "lease_not_found");
    let r = call(&s.app, "DELETE", &format!("/v1/leases/{l2}"), None, Some(json!({ "units": 0 }))).await;
    assert_problem(&r, 404, "lease_not_found");
    let r5 = lease(&s, 0.0).await;
    assert_eq!(r5.status, StatusCode::CREATED, "{:#}", r5.json);
    assert_eq!(daily_used(&s).await, 52.0);

    // Using more than reserved charges the difference.
    let r = call(&s.app, "DELETE", &format!("/v1/leases/{l4}"), None, Some(json!({ "units": 25 }))).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(num(&r.json["settled_units"]), 15.0);
    assert_eq!(daily_used(&s).await, 67.0);

    // Releasing without a body settles nothing.
    let l5 = r5.json["lease_id"].as_str().unwrap();
    let r = call(&s.app, "DELETE", &format!("/v1/leases/{l5}"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(num(&r.json["settled_units"]), 0.0);
    assert_eq!(daily_used(&s).await, 67.0);
    assert_eq!(num(&demo_limit(&s, "asr", "concurrency").await["used"]), 0.0);
}

// ---- 6. every error code ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Tok {
    None,
    Admin,
    App,
    Wrong,
}

/// (method, uri, token, raw body, status, code, field)
type ErrorCase =
    (&'static str, &'static str, Tok, Option<&'static str>, u16, &'static str, Option<&'static str>);

#[rustfmt::skip]
const ERROR_CASES: &[ErrorCase] = &[
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id": "demo","#), 400, "invalid_json", None),
    ("POST", "/v1/leases", Tok::None, Some("units=3"), 400, "invalid_json", None),
    ("POST", "/v1/accounts", Tok::Admin, Some("{name: 'x'}"), 400, "invalid_json", None),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo"}"#), 422, "invalid_request", None),
    ("POST", "/v1/check", Tok::None, None, 422, "invalid_request", None),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","unit":1}"#), 422, "invalid_request", None),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","units":"ten"}"#), 422, "invalid_request", None),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":7,"service":"asr"}"#), 422, "invalid_request", None),
    ("POST", "/v1/check", Tok::None, Some("[1, 2]"), 422, "invalid_request", None),
    ("POST", "/v1/accounts", Tok::Admin, Some(r#"{"name":"x","tier":"individual"}"#), 422, "invalid_request", None),
    ("PATCH", "/v1/apps/demo", Tok::Admin, Some(r#"{"plan":7}"#), 422, "invalid_request", None),
    ("DELETE", "/v1/leases/demo.asr.0000000000000001", Tok::None, Some(r#"{"unit":3}"#), 422, "invalid_request", None),
    ("GET", "/v1/audit?subject_kind=app", Tok::Admin, None, 422, "invalid_request", None),
    // Query strings are rejected by the framework: the same code, but 400 rather than 422.
    ("GET", "/v1/apps/demo/usage?bogus=1", Tok::Admin, None, 400, "invalid_request", None),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","units":-1}"#), 422, "invalid_cost", Some("units")),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","units":2e12}"#), 422, "invalid_cost", Some("units")),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","requests":1.5}"#), 422, "invalid_cost", Some("requests")),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","requests":-1}"#), 422, "invalid_cost", Some("requests")),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","requests":2000000}"#), 422, "invalid_cost", Some("requests")),
    ("POST", "/v1/leases", Tok::None, Some(r#"{"app_id":"demo","service":"asr","units":-0.5}"#), 422, "invalid_cost", Some("units")),
    ("DELETE", "/v1/leases/demo.asr.0000000000000001", Tok::None, Some(r#"{"units":-3}"#), 422, "invalid_cost", Some("units")),
    // Calls no amount of waiting would let through (asr: burst 10, 600 a minute, 1800 a day).
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","requests":11}"#), 422, "exceeds_limit", Some("rate")),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"asr","units":601}"#), 422, "exceeds_limit", Some("per_minute")),
    ("POST", "/v1/leases", Tok::None, Some(r#"{"app_id":"demo","service":"tts","units":20001}"#), 422, "exceeds_limit", Some("daily")),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"nope","service":"asr"}"#), 404, "unknown_app", None),
    ("POST", "/v1/leases", Tok::None, Some(r#"{"app_id":"nope","service":"asr"}"#), 404, "unknown_app", None),
    ("GET", "/v1/apps/nope/limits", Tok::Admin, None, 404, "unknown_app", None),
    ("GET", "/v1/apps/nope/usage", Tok::Admin, None, 404, "unknown_app", None),
    ("GET", "/v1/apps/nope", Tok::Admin, None, 404, "unknown_app", None),
    ("PATCH", "/v1/apps/nope", Tok::Admin, Some(r#"{"plan":"payg"}"#), 404, "unknown_app", None),
    ("POST", "/v1/check", Tok::None, Some(r#"{"app_id":"demo","service":"fax"}"#), 404, "unknown_service", None),
    ("GET", "/v1/apps/demo/usage?service=fax", Tok::Admin, None, 404, "unknown_service", None),
    ("POST", "/v1/apps", Tok::Admin, Some(r#"{"account_id":"acc_missing","name":"x"}"#), 404, "unknown_account", None),
    ("GET", "/v1/accounts/acc_missing", Tok::Admin, None, 404, "unknown_account", None),
    ("POST", "/v1/apps", Tok::Admin, Some(r#"{"account_id":"demo","name":"x","plan":"gold"}"#), 422, "unknown_plan", Some("plan")),
    ("PATCH", "/v1/apps/demo", Tok::Admin, Some(r#"{"plan":"gold"}"#), 422, "unknown_plan", Some("plan")),
    ("POST", "/v1/accounts", Tok::Admin, Some(r#"{"name":"x","verification_level":"royal"}"#), 422, "unknown_verification_level", Some("verification_level")),
    ("POST", "/v1/accounts", Tok::Admin, Some(r#"{"name":"x","time_zone":"Mars/Olympus_Mons"}"#), 422, "invalid_time_zone", Some("time_zone")),
    ("POST", "/v1/accounts", Tok::Admin, Some(r#"{"name":"   "}"#), 422, "invalid_name", Some("name")),
    ("PATCH", "/v1/apps/demo", Tok::Admin, Some(r#"{"status":"frozen"}"#), 422, "invalid_status", Some("status")),
    ("GET", "/v1/apps/demo/usage?step=week", Tok::Admin, None, 422, "invalid_step", Some("step")),
    ("GET", "/v1/apps/demo/usage?from=2000&to=1000", Tok::Admin, None, 422, "invalid_range", Some("from")),
    ("GET", "/v1/apps/demo/usage?from=1000&to=1000", Tok::Admin, None, 422, "invalid_range", Some("from")),
    ("GET", "/v1/apps/demo/usage?step=minute&from=2026-03-01T00:00:00Z&to=2026-03-10T00:00:00Z", Tok::Admin, None, 422, "invalid_range", Some("from")),
    ("GET", "/v1/apps/demo/usage?from=yesterday", Tok::Admin, None, 422, "invalid_time", Some("from")),
    ("GET", "/v1/apps/demo/usage?to=2026-13-01T00:00:00Z", Tok::Admin, None, 422, "invalid_time", Some("to")),
    ("POST", "/v1/leases/demo.asr.0000000000000001/renew", Tok::None, None, 404, "lease_not_found", None),
    ("DELETE", "/v1/leases/not-a-lease", Tok::None, None, 404, "lease_not_found", None),
    ("GET", "/nope", Tok::None, None, 404, "not_found", None),
    ("GET", "/v1/apps/demo/nothing", Tok::Admin, None, 404, "not_found", None),
    ("POST", "/v1/check/extra", Tok::None, Some("{}"), 404, "not_found", None),
    ("GET", "/v1/check", Tok::None, None, 405, "method_not_allowed", None),
    ("PUT", "/v1/apps/demo", Tok::Admin, Some("{}"), 405, "method_not_allowed", None),
    ("DELETE", "/v1/accounts", Tok::Admin, None, 405, "method_not_allowed", None),
    ("GET", "/v1/accounts", Tok::None, None, 401, "unauthorized", None),
    ("GET", "/v1/accounts", Tok::Wrong, None, 401, "unauthorized", None),
    ("GET", "/v1/apps/demo/limits", Tok::None, None, 401, "unauthorized", None),
    ("GET", "/v1/apps/demo/limits", Tok::Wrong, None, 401, "unauthorized", None),
    ("GET", "/v1/accounts", Tok::App, None, 403, "forbidden", None),
    ("PATCH", "/v1/apps/demo", Tok::App, Some(r#"{"plan":"payg"}"#), 403, "forbidden", None),
];

#[tokio::test]
async fn every_error_is_a_problem_document_with_its_code() {
    let s = server().await;
    let mut failures = Vec::new();
    for (method, uri, tok, body, status, code, field) in ERROR_CASES {
        let token = match tok {
            Tok::None => None,
            Tok::Admin => Some(ADMIN),
            Tok::App => Some(s.demo_key.as_str()),
            Tok::Wrong => Some(WRONG),
        };
        let r = call_raw(&s.app, method, uri, token, body.map(str::as_bytes)).await;
        let ok = r.status.as_u16() == *status
            && r.content_type().starts_with(PROBLEM_JSON)
            && r.json["code"] == *code
            && r.json["status"] == *status
            && r.json["type"] == format!("urn:voxgate:problem:{code}")
            && r.json["title"].is_string()
            && r.json["detail"].as_str().is_some_and(|d| !d.is_empty())
            && r.json.get("field").and_then(Value::as_str) == *field
            && (*status != 401 || r.header("www-authenticate") == Some("Bearer"));
        if !ok {
            failures.push(format!(
                "{method} {uri} ({tok:?}, body {body:?}): expected {status} {code} field {field:?}, \
                 got {} content-type `{}` www-authenticate {:?} {}",
                r.status,
                r.content_type(),
                r.header("www-authenticate"),
                r.json
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The wrong method keeps its Allow header through the rewrite.
    let r = call(&s.app, "GET", "/v1/check", None, None).await;
    assert_problem(&r, 405, "method_not_allowed");
    assert!(r.header("allow").is_some_and(|a| a.contains("POST")), "{:?}", r.headers);
}

// ---- 7. auth ---------------------------------------------------------------------------------

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let s = server().await;
    let endpoints: [(&str, &str, Option<Value>); 6] = [
        ("GET", "/v1/accounts", None),
        ("POST", "/v1/accounts", Some(json!({ "name": "Acme" }))),
        ("GET", "/v1/accounts/demo", None),
        ("POST", "/v1/apps", Some(json!({ "account_id": "demo", "name": "Second" }))),
        ("PATCH", "/v1/apps/demo", Some(json!({ "reason": "no-op" }))),
        ("GET", "/v1/audit", None),
    ];
    for (method, uri, body) in endpoints {
        for (token, status) in [(None, 401), (Some(WRONG), 401), (Some(s.demo_key.as_str()), 403)] {
            let r = call(&s.app, method, uri, token, body.clone()).await;
            let code = if status == 401 { "unauthorized" } else { "forbidden" };
            assert_problem(&r, status, code);
        }
        let r = call(&s.app, method, uri, Some(ADMIN), body.clone()).await;
        assert!(r.status.is_success(), "{method} {uri}: {} {:#}", r.status, r.json);
    }
    // A malformed Authorization header is not anonymous.
    let mut req = Request::get("/v1/apps/demo/limits")
        .header(header::AUTHORIZATION, format!("Basic {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let r = s.app.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // ... and the scheme is case-insensitive enough for `bearer`.
    req = Request::get("/v1/apps/demo/limits")
        .header(header::AUTHORIZATION, format!("bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let r = s.app.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn app_keys_read_only_their_own_app() {
    let s = server().await;
    let r =
        call(&s.app, "POST", "/v1/apps", Some(ADMIN), Some(json!({ "account_id": "demo", "name": "Other" })))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    let other = r.json["id"].as_str().unwrap().to_string();
    let other_key = r.json["api_key"].as_str().unwrap().to_string();

    for (app, own_key, foreign_key) in [
        ("demo", s.demo_key.as_str(), other_key.as_str()),
        (other.as_str(), other_key.as_str(), s.demo_key.as_str()),
    ] {
        for path in ["", "/limits", "/usage"] {
            let uri = format!("/v1/apps/{app}{path}");
            let r = call(&s.app, "GET", &uri, Some(own_key), None).await;
            assert_eq!(r.status, StatusCode::OK, "own key on {uri}: {:#}", r.json);
            let id = if path.is_empty() { &r.json["id"] } else { &r.json["app_id"] };
            assert_eq!(id, app, "{uri}");
            let r = call(&s.app, "GET", &uri, Some(foreign_key), None).await;
            assert_problem(&r, 403, "forbidden");
            let r = call(&s.app, "GET", &uri, Some(ADMIN), None).await;
            assert_eq!(r.status, StatusCode::OK, "admin on {uri}");
            assert_problem(&call(&s.app, "GET", &uri, None, None).await, 401, "unauthorized");
            assert_problem(&call(&s.app, "GET", &uri, Some(WRONG), None).await, 401, "unauthorized");
        }
    }
    // An app key may not even learn whether another app exists.
    let r = call(&s.app, "GET", "/v1/apps/nope/limits", Some(&s.demo_key), None).await;
    assert_problem(&r, 403, "forbidden");
}

#[tokio::test]
async fn a_configured_gateway_token_guards_decisions() {
    let s = server_with(|c| c.gateway_token = Some(GATEWAY.into())).await;
    let body = json!({ "app_id": "demo", "service": "asr", "units": 1 });
    for uri in ["/v1/check", "/v1/leases"] {
        let ok = if uri == "/v1/check" { 200 } else { 201 };
        for (token, status, code) in [
            (None, 401, Some("unauthorized")),
            (Some(WRONG), 401, Some("unauthorized")),
            (Some(s.demo_key.as_str()), 403, Some("forbidden")),
            (Some(GATEWAY), ok, None),
            (Some(ADMIN), ok, None),
        ] {
            let r = call(&s.app, "POST", uri, token, Some(body.clone())).await;
            match code {
                Some(code) => assert_problem(&r, status, code),
                None => assert_eq!(r.status.as_u16(), status, "{uri} {token:?}: {:#}", r.json),
            }
        }
    }
    // Renew and release are decisions too.
    let id = "demo.asr.0000000000000001";
    for (method, uri) in [("POST", format!("/v1/leases/{id}/renew")), ("DELETE", format!("/v1/leases/{id}"))]
    {
        assert_problem(&call(&s.app, method, &uri, None, None).await, 401, "unauthorized");
        assert_problem(&call(&s.app, method, &uri, Some(&s.demo_key), None).await, 403, "forbidden");
        assert_problem(&call(&s.app, method, &uri, Some(GATEWAY), None).await, 404, "lease_not_found");
    }
    // The gateway token decides; it neither reads apps nor administers.
    for uri in ["/v1/apps/demo/limits", "/v1/apps/demo", "/v1/accounts"] {
        let r = call(&s.app, "GET", uri, Some(GATEWAY), None).await;
        assert_problem(&r, 403, "forbidden");
    }
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let s = server().await;
    let r = call(&s.app, "GET", "/healthz", None, None).await;
    assert_eq!((r.status, &r.json), (StatusCode::OK, &json!({ "status": "ok" })));
    let r = call(&s.app, "GET", "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["status"], "ready");
    assert_eq!(r.json["registry"], "ok");
}

// ---- 8. admin ----------------------------------------------------------------------------------

#[tokio::test]
async fn admin_creates_accounts_and_apps_and_patches_take_effect_live() {
    let s = server().await;
    let r = call(
        &s.app,
        "POST",
        "/v1/accounts",
        Some(ADMIN),
        Some(json!({ "name": "Acme Voice", "verification_level": "individual",
                     "time_zone": "Asia/Shanghai" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    let acc = r.json["id"].as_str().expect("account id").to_string();
    assert!(acc.starts_with("acc_"), "{acc}");
    assert_eq!(r.json["name"], "Acme Voice");
    assert_eq!(r.json["time_zone"], "Asia/Shanghai");
    assert_eq!(r.json["status"], "active");

    let r = call(&s.app, "GET", &format!("/v1/accounts/{acc}"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["id"], acc.as_str());
    assert_eq!(r.json["verification_level"], "individual");
    assert_eq!(r.json["apps"], json!([]));
    let r = call(&s.app, "GET", "/v1/accounts", Some(ADMIN), None).await;
    let ids: Vec<&str> =
        r.json["accounts"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"demo") && ids.contains(&acc.as_str()), "{ids:?}");

    let r = call(
        &s.app,
        "POST",
        "/v1/apps",
        Some(ADMIN),
        Some(json!({ "account_id": acc, "name": "Voice bot" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    let app = r.json["id"].as_str().expect("app id").to_string();
    let key = r.json["api_key"].as_str().expect("api key").to_string();
    assert_eq!(r.json["plan"], "free", "the catalogue's default plan");
    assert_eq!(r.json["account_id"], acc.as_str());
    let r = call(&s.app, "GET", &format!("/v1/accounts/{acc}"), Some(ADMIN), None).await;
    assert_eq!(r.json["apps"][0]["id"], app.as_str());

    // The new key reads its app's limits at once, in its account's zone.
    let limits_uri = format!("/v1/apps/{app}/limits");
    let r = call(&s.app, "GET", &limits_uri, Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["plan"], "free");
    assert_eq!(r.json["time_zone"], "Asia/Shanghai");
    assert_eq!(r.json["suspended"], false);
    assert_eq!(num(&entry(&r.json["limits"], Some("asr"), "daily")["limit"]), 1800.0);
    assert_eq!(num(&entry(&r.json["limits"], Some("asr"), "rate")["limit"]), 10.0);
    assert_eq!(num(&entry(&r.json["limits"], Some("asr"), "concurrency")["limit"]), 2.0);
    let r = call(&s.app, "GET", &format!("/v1/apps/{app}"), Some(&key), None).await;
    assert_eq!((r.status, &r.json["id"]), (StatusCode::OK, &json!(app)));

    let check_body = json!({ "app_id": app, "service": "asr", "units": 100 });
    let r = call(&s.app, "POST", "/v1/check", None, Some(check_body.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    // 10:00 UTC is 18:00 in Shanghai: the day ends in 6 h.
    assert_eq!(entry(&r.json["limits"], None, "daily")["reset_ms"], 6 * 3_600_000);

    // Plan change: live, and the day's usage is kept.
    let patch =
        async |body: Value| call(&s.app, "PATCH", &format!("/v1/apps/{app}"), Some(ADMIN), Some(body)).await;
    let r = patch(json!({ "plan": "payg", "reason": "upgrade" })).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["plan"], "payg");
    let r = call(&s.app, "GET", &limits_uri, Some(&key), None).await;
    assert_eq!(r.json["plan"], "payg");
    let daily = entry(&r.json["limits"], Some("asr"), "daily");
    assert_eq!((num(&daily["limit"]), num(&daily["used"])), (360_000.0, 100.0));
    assert_eq!(num(&entry(&r.json["limits"], Some("asr"), "rate")["limit"]), 20.0);
    assert_eq!(num(&entry(&r.json["limits"], Some("asr"), "concurrency")["limit"]), 10.0);
    let r = call(&s.app, "POST", "/v1/check", None, Some(check_body.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(num(&entry(&r.json["limits"], None, "daily")["limit"]), 360_000.0);

    // Suspension: decisions answer 403 `suspended`, with no Retry-After.
    let r = patch(json!({ "status": "suspended", "reason": "chargeback" })).await;
    assert_eq!((r.status, &r.json["status"]), (StatusCode::OK, &json!("suspended")));
    for uri in ["/v1/check", "/v1/leases"] {
        let r = call(&s.app, "POST", uri, None, Some(check_body.clone())).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}: {:#}", r.json);
        assert!(r.content_type().starts_with("application/json"));
        assert_eq!(r.json["allowed"], false);
        assert_eq!(r.json["reason"], "suspended");
        assert!(r.header("retry-after").is_none());
        assert!(r.json.get("lease_id").is_none());
    }
    let r = call(&s.app, "GET", &limits_uri, Some(&key), None).await;
    assert_eq!(r.json["suspended"], true);
    // The demo app is not affected.
    assert_eq!(check(&s, "asr", 1.0).await.status, StatusCode::OK);

    let r = patch(json!({ "status": "active" })).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let r = call(&s.app, "POST", "/v1/check", None, Some(check_body.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    // A patch that changes nothing is not audited.
    let r = patch(json!({ "plan": "payg" })).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);

    let r =
        call(&s.app, "GET", &format!("/v1/audit?subject_kind=app&subject_id={app}"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let entries = r.json["entries"].as_array().unwrap();
    let summary: Vec<(&str, Value, Value, Value)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["actor"], "admin");
            assert_eq!(e["subject_kind"], "app");
            assert_eq!(e["subject_id"], app.as_str());
            let pick = |v: &Value| {
                if v.is_null() { Value::Null } else { json!([v["plan"], v["status"]]) }
            };
            (e["action"].as_str().unwrap(), pick(&e["before"]), pick(&e["after"]), e["reason"].clone())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("app.create", Value::Null, json!(["free", "active"]), Value::Null),
            ("app.update", json!(["free", "active"]), json!(["payg", "active"]), json!("upgrade")),
            ("app.update", json!(["payg", "active"]), json!(["payg", "suspended"]), json!("chargeback")),
            ("app.update", json!(["payg", "suspended"]), json!(["payg", "active"]), Value::Null),
        ]
    );
    let r =
        call(&s.app, "GET", &format!("/v1/audit?subject_kind=account&subject_id={acc}"), Some(ADMIN), None)
            .await;
    let entries = r.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["action"], "account.create");
    assert_eq!(entries[0]["after"]["name"], "Acme Voice");

    // The suspended refusals were metered.
    let r = call(&s.app, "GET", &format!("/v1/apps/{app}/usage?service=asr"), Some(&key), None).await;
    let series = r.json["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{series:#?}");
    assert_eq!(series[0]["allowed"], 3);
    assert_eq!(series[0]["refused"]["suspended"], 2);
    assert_eq!(num(&series[0]["units"]), 300.0);
}

// ---- 9. usage ----------------------------------------------------------------------------------

fn bucket(start: &str, service: &str, allowed: u64, rate: u64, quota: u64, units: f64) -> Value {
    json!({
        "start": start,
        "service": service,
        "allowed": allowed,
        "refused": { "rate": rate, "quota": quota, "concurrency": 0, "suspended": 0, "capacity": 0 },
        "units": units,
    })
}

/// Series with `units` as f64 whatever its JSON spelling, for comparison.
fn normalised(series: &Value) -> Vec<Value> {
    series
        .as_array()
        .expect("series")
        .iter()
        .map(|b| {
            let mut b = b.clone();
            b["units"] = json!(num(&b["units"]));
            b
        })
        .collect()
}

#[tokio::test]
async fn usage_counts_allowed_and_refused_calls_by_minute_and_hour() {
    let s = server().await;
    // 10:00 — ten calls of 5 units pass, the eleventh is refused by the rate.
    for _ in 0..10 {
        assert_eq!(check(&s, "asr", 5.0).await.status, StatusCode::OK);
    }
    assert_refused(&check(&s, "asr", 5.0).await, "rate");
    // 10:01 — two calls of 100 pass; 500 more would exceed the 600 per minute.
    s.clock.set("2026-03-10T10:01:10Z");
    assert_eq!(check(&s, "asr", 100.0).await.status, StatusCode::OK);
    assert_eq!(check(&s, "asr", 100.0).await.status, StatusCode::OK);
    assert_refused(&check(&s, "asr", 500.0).await, "quota");
    s.clock.set("2026-03-10T10:01:20Z");
    assert_eq!(check(&s, "tts", 50.0).await.status, StatusCode::OK);

    let usage = async |query: &str| {
        let r = call(&s.app, "GET", &format!("/v1/apps/demo/usage{query}"), Some(&s.demo_key), None).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {:#}", r.json);
        r.json
    };
    let minute_00 = bucket("2026-03-10T10:00:00Z", "asr", 10, 1, 0, 50.0);

    // A read in the middle of a minute includes what the meter holds (it flushes) ...
    s.clock.set("2026-03-10T10:01:30Z");
    let u = usage("?service=asr").await;
    assert_eq!(
        normalised(&u["series"]),
        vec![minute_00.clone(), bucket("2026-03-10T10:01:00Z", "asr", 2, 0, 1, 200.0)]
    );
    // ... and what comes later in that minute is added to it, not written over it.
    s.clock.set("2026-03-10T10:01:40Z");
    assert_eq!(check(&s, "asr", 1.0).await.status, StatusCode::OK);
    let minute_01 = bucket("2026-03-10T10:01:00Z", "asr", 3, 0, 1, 201.0);

    s.clock.set("2026-03-10T10:02:00Z");

    let u = usage("?service=asr&step=minute").await;
    assert_eq!(u["app_id"], "demo");
    assert_eq!(u["step"], "minute");
    assert_eq!(u["time_zone"], "UTC");
    assert_eq!(u["to"], "2026-03-10T10:02:01Z", "default `to` is now (+1 s)");
    assert_eq!(u["from"], "2026-03-10T09:02:01Z", "default span is an hour of minutes");
    assert_eq!(normalised(&u["series"]), vec![minute_00.clone(), minute_01.clone()]);
    // `minute` is the default step.
    assert_eq!(normalised(&usage("?service=asr").await["series"]), normalised(&u["series"]));

    let hour = usage("?service=asr&step=hour").await;
    assert_eq!(normalised(&hour["series"]), vec![bucket("2026-03-10T10:00:00Z", "asr", 13, 1, 1, 251.0)]);
    let all = usage("?step=hour").await;
    assert_eq!(
        normalised(&all["series"]),
        vec![
            bucket("2026-03-10T10:00:00Z", "asr", 13, 1, 1, 251.0),
            bucket("2026-03-10T10:00:00Z", "tts", 1, 0, 0, 50.0),
        ]
    );
    let day = usage("?service=asr&step=day").await;
    assert_eq!(normalised(&day["series"]), vec![bucket("2026-03-10T00:00:00Z", "asr", 13, 1, 1, 251.0)]);

    // Explicit ranges: `from` inclusive, `to` exclusive; RFC 3339 or Unix seconds.
    let ten_02 = instant("2026-03-10T10:02:00Z").nanos() / 1_000_000_000;
    let u = usage(&format!("?service=asr&from=2026-03-10T10:01:00Z&to={ten_02}")).await;
    assert_eq!(normalised(&u["series"]), vec![minute_01.clone()]);
    let u = usage("?service=asr&from=2026-03-10T09:00:00Z&to=2026-03-10T10:01:00Z").await;
    assert_eq!(normalised(&u["series"]), vec![minute_00.clone()]);

    // A later minute gets its own bucket.
    s.clock.set("2026-03-10T10:02:30Z");
    assert_eq!(check(&s, "asr", 1.0).await.status, StatusCode::OK);
    s.clock.set("2026-03-10T10:03:00Z");
    let u = usage("?service=asr").await;
    assert_eq!(
        normalised(&u["series"]),
        vec![minute_00, minute_01, bucket("2026-03-10T10:02:00Z", "asr", 1, 0, 0, 1.0),]
    );
}

// ---- 10. restart -------------------------------------------------------------------------------

#[tokio::test]
async fn a_restart_keeps_the_days_quota() {
    let s = server().await;
    for (at, units) in [("10:00", 600.0), ("10:01", 600.0), ("10:02", 300.0)] {
        s.clock.set(&format!("2026-03-10T{at}:00Z"));
        let r = check(&s, "asr", units).await;
        assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    }

    let (s, boot) = s.restart("2026-03-10T10:05:00Z").await;
    assert!(boot.demo_key.is_none(), "the demo app is created once");
    assert!(boot.restored >= 2, "asr's daily and monthly counters: {boot:?}");
    assert_eq!(num(&demo_limit(&s, "asr", "daily").await["used"]), 1500.0);
    assert_eq!(num(&demo_limit(&s, "asr", "monthly").await["used"]), 1500.0);
    assert_refused(&check(&s, "asr", 301.0).await, "quota");
    assert_eq!(check(&s, "asr", 300.0).await.status, StatusCode::OK);
    s.clock.set("2026-03-10T10:06:00Z");
    assert_refused(&check(&s, "asr", 1.0).await, "quota");
    // The demo key issued before the restart still reads the app.
    let r = call(&s.app, "GET", "/v1/apps/demo/limits", Some(&s.demo_key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);

    // A second restart on the next day: a fresh day, the month still counted.
    let (s, _) = s.restart("2026-03-11T00:00:00Z").await;
    assert_eq!(num(&demo_limit(&s, "asr", "daily").await["used"]), 0.0);
    assert_eq!(num(&demo_limit(&s, "asr", "monthly").await["used"]), 1800.0);
}

/// A refund for a lease taken yesterday goes back to no counter of today (the engine's rule);
/// a restart must not turn it into quota for today either.
#[tokio::test]
async fn a_restart_after_a_cross_midnight_refund_keeps_the_days_quota() {
    let s = server().await;
    s.clock.set("2026-03-10T23:59:30Z");
    let r = lease(&s, 100.0).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    let id = r.json["lease_id"].as_str().unwrap().to_string();
    s.clock.set("2026-03-11T00:00:10Z");
    let r = call(&s.app, "DELETE", &format!("/v1/leases/{id}"), None, Some(json!({ "units": 10 }))).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(num(&r.json["settled_units"]), -90.0);
    s.clock.set("2026-03-11T00:00:20Z");
    assert_eq!(check(&s, "asr", 500.0).await.status, StatusCode::OK);
    let live = num(&demo_limit(&s, "asr", "daily").await["used"]);
    assert_eq!(live, 500.0, "yesterday's reservation is not refunded today");

    let (s, _) = s.restart("2026-03-11T00:01:00Z").await;
    assert_eq!(
        num(&demo_limit(&s, "asr", "daily").await["used"]),
        live,
        "the restarted server must count the day as the running one did"
    );
}

// ---- 11. the real binary -----------------------------------------------------------------------

mod process {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::Path;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::{Duration, Instant};

    const TIMEOUT: Duration = Duration::from_secs(10);
    pub(super) const TOKEN: &str = "process-admin-token-0123456789";

    /// A started server, killed if the test ends without stopping it.
    pub(super) struct Voxgate {
        child: Child,
        pub(super) addr: SocketAddr,
        log: std::path::PathBuf,
    }

    impl Drop for Voxgate {
        fn drop(&mut self) {
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    impl Voxgate {
        pub(super) fn start(data_dir: &Path, log: std::path::PathBuf) -> Voxgate {
            let port =
                TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let out = std::fs::File::create(&log).expect("log file");
            let child = Command::new(env!("CARGO_BIN_EXE_voxgate"))
                .arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .args(["--grpc-listen", "127.0.0.1:0", "--allow-private-webhooks"])
                .arg("--data-dir")
                .arg(data_dir)
                // Only the shutdown flush writes usage, so the restart proves it ran.
                .arg("--flush-interval-ms")
                .arg("60000")
                .env("VOXGATE_ADMIN_TOKEN", TOKEN)
                .env_remove("VOXGATE_GATEWAY_TOKEN")
                .env_remove("VOXGATE_CONFIG")
                .env_remove("VOXGATE_NO_DEMO")
                .env_remove("VOXGATE_LISTEN")
                .env_remove("VOXGATE_DATA_DIR")
                .env_remove("VOXGATE_FLUSH_INTERVAL_MS")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("voxgate starts");
            let mut v = Voxgate { child, addr, log };
            v.wait_healthy();
            v
        }

        pub(super) fn log(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        fn wait_healthy(&mut self) {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("voxgate exited early ({status}):\n{}", self.log());
                }
                if let Ok((200, _)) = http(self.addr, "GET", "/healthz", None, None) {
                    return;
                }
                assert!(Instant::now() < deadline, "voxgate not healthy after {TIMEOUT:?}:\n{}", self.log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        pub(super) fn call(
            &self,
            method: &str,
            path: &str,
            token: Option<&str>,
            body: Option<Value>,
        ) -> (u16, Value) {
            let body = body.map(|b| b.to_string());
            http(self.addr, method, path, token, body.as_deref())
                .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
        }

        /// SIGTERM, then the exit status (bounded).
        pub(super) fn terminate(mut self) -> ExitStatus {
            let pid = self.child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
            assert!(sent.success(), "kill -TERM {pid}");
            let deadline = Instant::now() + TIMEOUT;
            loop {
                if let Some(status) = self.child.try_wait().expect("wait") {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "voxgate did not stop within {TIMEOUT:?} of SIGTERM:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A minimal HTTP/1.1 client: one request per connection, `Connection: close`.
    fn http(
        addr: SocketAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<(u16, Value)> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let body = body.unwrap_or("");
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        stream.flush()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut payload = raw[split + 4..].to_vec();
        let status: u16 = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        if chunked {
            payload = dechunk(&payload).ok_or_else(|| bad("bad chunked body"))?;
        }
        let json = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        Ok((status, json))
    }

    fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line_end = data.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            data = &data[line_end + 2..];
            if size == 0 {
                return Some(out);
            }
            out.extend_from_slice(data.get(..size)?);
            data = data.get(size + 2..)?;
        }
    }

    fn utc_day() -> jiff::civil::Date {
        jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
    }

    fn asr_daily_used(v: &Voxgate) -> f64 {
        let (status, limits) = v.call("GET", "/v1/apps/demo/limits", Some(TOKEN), None);
        assert_eq!(status, 200, "{limits:#}");
        num(&entry(&limits["limits"], Some("asr"), "daily")["used"])
    }

    #[test]
    fn the_binary_serves_stops_on_sigterm_and_keeps_usage() {
        let data = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let day = utc_day();

        let v = Voxgate::start(data.path(), logs.path().join("first.log"));
        let body = json!({ "app_id": "demo", "service": "asr", "units": 100 });
        for _ in 0..2 {
            let (status, r) = v.call("POST", "/v1/check", None, Some(body.clone()));
            assert_eq!(status, 200, "{r:#}");
            assert_eq!(r["allowed"], true);
        }
        let (status, r) = v.call("GET", "/v1/accounts", None, None);
        assert_eq!((status, &r["code"]), (401, &json!("unauthorized")));
        let (status, r) =
            v.call("POST", "/v1/check", None, Some(json!({ "app_id": "nope", "service": "asr" })));
        assert_eq!((status, &r["code"]), (404, &json!("unknown_app")));
        assert_eq!(asr_daily_used(&v), 200.0);
        let status = v.terminate();
        let first_log = std::fs::read_to_string(logs.path().join("first.log")).unwrap();
        assert!(status.success(), "exit {status}:\n{first_log}");
        assert!(first_log.contains("voxgate stopped; usage flushed"), "{first_log}");

        let v = Voxgate::start(data.path(), logs.path().join("second.log"));
        assert!(!v.log().contains("demo app `demo` created"), "{}", v.log());
        // The metered usage survived (whatever the date), and so did today's quota counter,
        // unless the test straddled UTC midnight.
        let (status, usage) = v.call("GET", "/v1/apps/demo/usage?service=asr&step=day", Some(TOKEN), None);
        assert_eq!(status, 200, "{usage:#}");
        let series = usage["series"].as_array().unwrap();
        let allowed: u64 = series.iter().map(|b| b["allowed"].as_u64().unwrap()).sum();
        let units: f64 = series.iter().map(|b| num(&b["units"])).sum();
        assert_eq!((allowed, units), (2, 200.0), "{usage:#}");
        if utc_day() == day {
            assert_eq!(asr_daily_used(&v), 200.0, "{}", v.log());
        }
        let (status, r) = v.call("POST", "/v1/check", None, Some(body));
        assert_eq!(status, 200, "{r:#}");
        assert!(v.terminate().success());
    }
}

// ---- 12. the client subcommands against the real binary ----------------------------------------

mod cli {
    use super::process::{TOKEN, Voxgate};
    use serde_json::{Value, json};
    use std::net::TcpListener;
    use std::path::Path;
    use std::process::{Command, Stdio};

    /// What one client run printed, and how it exited.
    struct Run {
        code: Option<i32>,
        stdout: String,
        stderr: String,
    }

    impl Run {
        fn ok(self) -> String {
            assert_eq!(self.code, Some(0), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
            self.stdout
        }

        fn json(self) -> Value {
            let text = self.ok();
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
        }
    }

    /// Runs `voxgate <args>` with the server URL in VOXGATE_URL and no other voxgate
    /// variable but those in `env`.
    fn client(url: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
        cmd.args(args).env("VOXGATE_URL", url).stdin(Stdio::null());
        for var in ["VOXGATE_TOKEN", "VOXGATE_DATA_DIR", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("the client runs");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The line of a table whose cells start with `cells` (split on runs of spaces).
    fn row<'a>(table: &'a str, cells: &[&str]) -> Option<&'a str> {
        table.lines().find(|l| l.split_whitespace().take(cells.len()).eq(cells.iter().copied()))
    }

    #[test]
    fn the_client_subcommands_drive_a_running_server() {
        let data = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let v = Voxgate::start(data.path(), logs.path().join("server.log"));
        let url = format!("http://{}", v.addr);
        let admin = [("VOXGATE_TOKEN", TOKEN)];
        let run = |args: &[&str]| client(&url, &admin, args);

        // accounts: create (JSON, the server's key order kept), list (table).
        let out =
            run(&["accounts", "create", "--name", "Acme Edu", "--time-zone", "Asia/Shanghai", "--json"]);
        let text = out.ok();
        assert!(text.starts_with("{\n  \"id\": \"acc_"), "{text}");
        let account: Value = serde_json::from_str(&text).unwrap();
        let acc = account["id"].as_str().unwrap().to_string();
        assert_eq!(account["time_zone"], "Asia/Shanghai");
        let list = run(&["accounts", "list"]).ok();
        assert!(list.starts_with("ID  "), "{list}");
        let line = row(&list, &[&acc]).unwrap_or_else(|| panic!("{list}"));
        assert!(line.contains("Acme Edu") && line.contains("Asia/Shanghai"), "{list}");

        // apps: create on a package, then its limits explained.
        let app =
            run(&["apps", "create", "--account", &acc, "--name", "tutor", "--plan", "package", "--json"])
                .json();
        let app_id = app["id"].as_str().unwrap().to_string();
        assert!(app["api_key"].as_str().unwrap().starts_with("vgk_"), "{app:#}");
        let limits = run(&["apps", "limits", &app_id, "--explain"]).ok();
        let header = ["SERVICE", "DIMENSION", "LIMIT", "USED", "REMAINING", "RESET", "UNIT", "WINNER"];
        assert!(limits.lines().any(|l| l.split_whitespace().eq(header)), "{limits}");
        let monthly = row(&limits, &["asr", "monthly"]).unwrap_or_else(|| panic!("{limits}"));
        assert!(monthly.ends_with("audio_second  plan:package"), "{limits}");
        assert!(limits.contains("Layers, in the order applied:"), "{limits}");
        assert!(row(&limits, &["asr", "rate", "tier", "tier:individual", "set"]).is_some(), "{limits}");

        // verification: submit, the queue, approve; the tier changes at once.
        let ver = run(&[
            "verification",
            "submit",
            "--account",
            &acc,
            "--level",
            "industry",
            "--sector",
            "education",
            "--legal-name",
            "Acme Edu Ltd",
            "--registration-number",
            "91310000MA1",
            "--contact",
            "ops@acme.example",
            "--json",
        ])
        .json();
        let ver_id = ver["id"].as_str().unwrap().to_string();
        assert_eq!(ver["status"], "pending");
        let queue = run(&["verification", "queue"]).ok();
        assert!(row(&queue, &[&ver_id, &acc, "industry", "education"]).is_some(), "{queue}");
        let approved = run(&["verification", "approve", &ver_id, "--reason", "licence checked"]).ok();
        assert_eq!(
            approved,
            format!("verification {ver_id} approved; account {acc} is at level industry (education)\n")
        );
        let limits = run(&["apps", "limits", &app_id, "--json"]).json();
        assert_eq!(limits["verification_level"], "industry");

        // statement as CSV: the server's body, as it comes.
        let check = json!({ "app_id": app_id, "service": "asr", "units": 12.5 });
        let (status, r) = v.call("POST", "/v1/check", None, Some(check));
        assert_eq!(status, 200, "{r:#}");
        let csv = run(&["statement", "--account", &acc, "--csv"]).ok();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some(
                "period,account_id,app_id,service,unit,plan,from,to,used,included,overage,unit_price,billed,\
                 amount,currency"
            ),
            "{csv}"
        );
        let asr =
            csv.lines().find(|l| l.contains(&format!(",{app_id},asr,"))).unwrap_or_else(|| panic!("{csv}"));
        let cells: Vec<&str> = asr.split(',').collect();
        assert_eq!((cells[1], cells[5], cells[8]), (acc.as_str(), "package", "12.5"), "{csv}");
        let total = csv.lines().last().unwrap_or_default();
        assert!(total.starts_with(",,,,,,,,,,,,total,") && total.ends_with(",USD"), "{csv}");
        let table = run(&["statement", "--account", &acc]).ok();
        assert!(row(&table, &[&app_id, "asr", "audio_second", "12.500"]).is_some(), "{table}");

        // Errors: a problem document is one line on stderr and exit status 1.
        let bad = run(&["accounts", "update", &acc, "--time-zone", "Mars/Base"]);
        assert_eq!(bad.code, Some(1), "{}", bad.stderr);
        assert_eq!(bad.stdout, "");
        assert!(
            bad.stderr.starts_with("error: invalid_time_zone: `Mars/Base` is not an IANA time zone"),
            "{}",
            bad.stderr
        );
        assert!(bad.stderr.trim_end().ends_with("(field: time_zone)"), "{}", bad.stderr);
        let missing = run(&["apps", "show", "app_nope"]);
        assert_eq!(missing.code, Some(1));
        assert!(missing.stderr.starts_with("error: unknown_app: "), "{}", missing.stderr);

        // No token: the data directory's admin-token file stands in; without it, 401.
        let dir = tempfile::tempdir().unwrap();
        let dir_arg = dir.path().to_str().unwrap();
        let anonymous = client(&url, &[], &["accounts", "list", "--data-dir", dir_arg]);
        assert_eq!(anonymous.code, Some(1));
        assert!(anonymous.stderr.starts_with("error: unauthorized: "), "{}", anonymous.stderr);
        std::fs::write(Path::new(dir_arg).join("admin-token"), format!("{TOKEN}\n")).unwrap();
        let from_file = client(&url, &[], &["accounts", "list", "--data-dir", dir_arg]).ok();
        assert!(row(&from_file, &[&acc]).is_some(), "{from_file}");

        // Nothing listening: a clear message naming the server.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
        let closed = format!("http://127.0.0.1:{port}");
        let refused = client(&closed, &admin, &["accounts", "list"]);
        assert_eq!(refused.code, Some(1));
        assert!(
            refused.stderr.starts_with(&format!("error: cannot reach the voxgate server at {closed}: ")),
            "{}",
            refused.stderr
        );

        // An argument error is clap's (status 2), before anything is sent.
        let usage = run(&["windows", "create", "--app", &app_id, "--service", "asr", "--dimension", "rate"]);
        assert_eq!(usage.code, Some(2), "{}", usage.stderr);

        let status = v.terminate();
        assert!(status.success(), "exit {status}");
    }

    /// The limit-increase workflow from the command line: a developer submits requests with
    /// their app's key (one approved at once, three for review), the operator works the queue
    /// (a partial approval, a denial, a renewal), the developer withdraws one; webhooks are
    /// created, listed and deleted, and a change of status shows up as an alert.
    ///
    /// The webhook that collects alerts is created only at the end: a failed delivery writes
    /// to the registry, and while the delivery worker writes, a concurrent registry
    /// transaction of an API call can fail with SQLite's `database is locked`.
    #[test]
    fn the_increase_workflow_from_the_client() {
        let data = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let v = Voxgate::start(data.path(), logs.path().join("server.log"));
        let url = format!("http://{}", v.addr);
        let admin = [("VOXGATE_TOKEN", TOKEN)];
        let run = |args: &[&str]| client(&url, &admin, args);

        // A new account (tier `individual`) with an app on `free`: asr concurrency 2, a
        // self-service ceiling of 50 leases.
        let acc = run(&["accounts", "create", "--name", "Growing Co", "--json"]).json();
        let acc = acc["id"].as_str().unwrap().to_string();
        let app =
            run(&["apps", "create", "--account", &acc, "--name", "voice", "--plan", "free", "--json"]).json();
        let app_id = app["id"].as_str().unwrap().to_string();
        let key = app["api_key"].as_str().unwrap().to_string();
        let developer = [("VOXGATE_TOKEN", key.as_str())];
        let dev = |args: &[&str]| client(&url, &developer, args);

        // webhooks: create (the secret given, or generated and shown once), list, delete.
        let second = dev(&[
            "webhooks",
            "create",
            "--account",
            &acc,
            "--url",
            "https://hooks.example/voxgate",
            "--secret",
            "0123456789abcdef-secret",
            "--json",
        ])
        .json();
        assert_eq!(second["secret"], "0123456789abcdef-secret", "{second:#}");
        let second = second["id"].as_str().unwrap().to_string();
        assert!(second.starts_with("whk_"), "{second}");
        let hooks = dev(&["webhooks", "list", "--account", &acc]).ok();
        assert_eq!(
            hooks.lines().next().map(|h| h.split_whitespace().collect()),
            Some(vec!["ID", "URL", "CREATED"])
        );
        assert!(row(&hooks, &[&second, "https://hooks.example/voxgate"]).is_some(), "{hooks}");
        assert!(!hooks.contains("secret"), "secrets are not listed: {hooks}");
        assert_eq!(dev(&["webhooks", "delete", &second]).ok(), format!("webhook {second} deleted\n"));
        assert_eq!(run(&["webhooks", "delete", &second, "--json"]).code, Some(1), "already deleted");
        let hooks = run(&["webhooks", "list", "--account", &acc, "--json"]).json();
        assert_eq!(hooks["webhooks"], json!([]), "{hooks:#}");

        // submit: 100 daily users × 10 sessions of 60 s, peak 3 × the mean, justify 4 leases
        // (automatic approval up to 4.8); the case is read from a file.
        let small = files.path().join("small.json");
        let small_case = json!({
            "daily_active_users": 100,
            "interactions_per_user_per_day": 10,
            "units_per_interaction": 15,
            "session_length_s": 60,
            "peak_to_mean": 3,
        });
        std::fs::write(&small, small_case.to_string()).unwrap();
        let small_arg = format!("@{}", small.display());
        let million = json!({
            "daily_active_users": 1_000_000,
            "interactions_per_user_per_day": 20,
            "units_per_interaction": 15,
            "session_length_s": 30,
            "peak_hours": "19:00-23:00",
            "time_zone": "Asia/Shanghai",
            "peak_to_mean": 3,
        })
        .to_string();
        let submit = |service: &str, dimension: &str, requested: &str, case: &str, json: bool| {
            let mut args = vec![
                "increases",
                "submit",
                "--app",
                &app_id,
                "--service",
                service,
                "--dimension",
                dimension,
                "--requested",
                requested,
                "--business-case",
                case,
                "--justification",
                "Launching voice search in the evening",
                "--contact-email",
                "ops@growing.example",
            ];
            if json {
                args.push("--json");
            }
            dev(&args)
        };
        let out = submit("asr", "concurrency", "4", &small_arg, false).ok();
        let auto = row(&out, &["id"]).unwrap_or_else(|| panic!("{out}")).split_whitespace().nth(1).unwrap();
        let auto = auto.to_string();
        assert!(row(&out, &["status", "auto_approved"]).is_some(), "{out}");
        assert!(row(&out, &["requested", "4"]).is_some() && row(&out, &["granted", "4"]).is_some(), "{out}");
        assert!(row(&out, &["reason", "approved", "automatically:"]).is_some(), "{out}");
        assert!(
            out.contains("\nSizing: justified 4 (current 2, ceiling 50, automatic approval up to 4.8)\n"),
            "{out}"
        );
        assert!(out.contains("\n  peak-to-mean = 3 (stated)\n"), "the working is shown: {out}");
        assert!(out.contains("\nEvidence from the app's metered usage:\n"), "{out}");
        assert!(row(&out, &["7d", "0", "0", "0"]).is_some() && row(&out, &["30d"]).is_some(), "{out}");

        let partial = submit("asr", "concurrency", r#"{"max": 60}"#, &million, true).json();
        assert_eq!(partial["status"], "pending_review", "above the ceiling of 50: {partial:#}");
        assert_eq!(
            partial["reason"],
            "needs review: requested 60 is above this verification level's ceiling 50"
        );
        let partial = partial["id"].as_str().unwrap().to_string();
        let denied = submit("voice_call", "concurrency", "25", &million, true).json();
        assert_eq!(denied["status"], "pending_review", "{denied:#}");
        let denied = denied["id"].as_str().unwrap().to_string();
        let withdrawn = submit("asr", "daily", "5000", &million, true).json();
        assert_eq!(withdrawn["status"], "pending_review", "{withdrawn:#}");
        let withdrawn = withdrawn["id"].as_str().unwrap().to_string();

        // A case that is not JSON is refused before anything is sent; one that does not add
        // up is refused by the server, naming the field.
        let bad = submit("asr", "concurrency", "8", "{daily", false);
        assert_eq!(bad.code, Some(1));
        assert!(bad.stderr.starts_with("error: --business-case is not valid JSON"), "{}", bad.stderr);
        let mut zero = small_case.clone();
        zero["daily_active_users"] = json!(0);
        let bad = submit("asr", "concurrency", "8", &zero.to_string(), false);
        assert_eq!(bad.code, Some(1), "{}", bad.stderr);
        assert!(bad.stderr.starts_with("error: invalid_business_case: "), "{}", bad.stderr);
        assert!(
            bad.stderr.trim_end().ends_with("(field: business_case.daily_active_users)"),
            "{}",
            bad.stderr
        );

        // queue: what waits for review, oldest first, evidence beside each.
        let queue = run(&["increases", "queue"]).ok();
        let header = queue.lines().next().unwrap_or_default();
        for column in ["PEAK/S", "MEAN/S", "REFUSED 7D", "UTILISATION", "JUSTIFIED"] {
            assert!(header.contains(column), "{queue}");
        }
        let position = |id: &str| {
            queue.lines().position(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} not in {queue}"))
        };
        assert!(
            position(&partial) < position(&denied) && position(&denied) < position(&withdrawn),
            "{queue}"
        );
        assert!(!queue.contains(&auto), "an approved request is not waiting: {queue}");
        let line =
            row(&queue, &[&partial, &app_id, "asr", "concurrency", "max", "60", "37500", "pending_review"]);
        assert!(line.is_some(), "{queue}");
        let all = run(&["increases", "queue", "--status", "all", "--json"]).json();
        let ids: Vec<&str> =
            all["increase_requests"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [&auto, &partial, &denied, &withdrawn]);

        // The developer may not decide their own request.
        let own = dev(&["increases", "approve", &partial, "--reason", "looks fine to me"]);
        assert_eq!(own.code, Some(1));
        assert!(own.stderr.starts_with("error: forbidden: "), "{}", own.stderr);

        // approve in part: a smaller --granted; in force at once.
        let out = run(&[
            "increases",
            "approve",
            &partial,
            "--reason",
            "30 now; more once the evening peak is observed",
            "--granted",
            r#"{"max": 30}"#,
            "--probation-days",
            "30",
        ])
        .ok();
        let prefix = format!(
            "increase request {partial} partially_approved: asr concurrency, requested max 60, \
             granted max 30, until "
        );
        assert!(out.starts_with(&prefix) && out.ends_with("Z\n") && out.lines().count() == 1, "{out}");
        let shown = run(&["increases", "show", &partial]).ok();
        assert!(row(&shown, &["status", "partially_approved"]).is_some(), "{shown}");
        assert!(row(&shown, &["granted", "max", "30"]).is_some(), "{shown}");
        assert!(row(&shown, &["reason", "30", "now;"]).is_some(), "{shown}");
        assert!(row(&shown, &["decided_by", "admin"]).is_some(), "{shown}");
        let limits = run(&["apps", "limits", &app_id]).ok();
        assert!(row(&limits, &["asr", "concurrency", "30"]).is_some(), "{limits}");

        // deny, with a reason the developer reads.
        let out =
            run(&["increases", "deny", &denied, "--reason", "voice calls need an enterprise contract"]).ok();
        assert_eq!(out, format!("increase request {denied} denied: voice_call concurrency, requested 25\n"));
        let shown = dev(&["increases", "show", &denied, "--json"]).json();
        assert_eq!(shown["reason"], "voice calls need an enterprise contract");

        // withdraw, by the developer; a second withdrawal is a conflict.
        let out = dev(&["increases", "withdraw", &withdrawn, "--reason", "the campaign moved"]).ok();
        assert_eq!(out, format!("increase request {withdrawn} withdrawn: asr daily, requested 5000\n"));
        let again = dev(&["increases", "withdraw", &withdrawn]);
        assert_eq!(again.code, Some(1), "{}", again.stdout);
        assert!(again.stderr.starts_with("error: conflict: "), "{}", again.stderr);

        // list: the app's requests as the developer sees them.
        let list = dev(&["increases", "list", "--app", &app_id]).ok();
        let expected = [
            (&auto, "auto_approved"),
            (&partial, "partially_approved"),
            (&denied, "denied"),
            (&withdrawn, "withdrawn"),
        ];
        for (id, status) in expected {
            let line = row(&list, &[id]).unwrap_or_else(|| panic!("{id} not in {list}"));
            assert!(line.split_whitespace().any(|c| c == status), "{list}");
        }
        assert!(
            row(&list, &[&partial, "asr", "concurrency", "max", "60", "max", "30", "partially_approved"])
                .is_some()
        );
        let empty = run(&["increases", "queue"]).ok();
        assert_eq!(empty.lines().count(), 1, "nothing waits now: {empty}");

        // A webhook for the account's alerts (nothing listens at the URL, so they stay queued),
        // then a renewal of the automatic grant, for good: one alert.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
        let hook_url = format!("http://127.0.0.1:{port}/hooks/voxgate");
        let out = run(&["webhooks", "create", "--account", &acc, "--url", &hook_url]).ok();
        let hook = row(&out, &["id"]).unwrap_or_else(|| panic!("{out}")).split_whitespace().nth(1).unwrap();
        let hook = hook.to_string();
        assert!(hook.starts_with("whk_"), "{out}");
        assert!(row(&out, &["url", &hook_url]).is_some(), "{out}");
        let secret = row(&out, &["secret"]).unwrap_or_else(|| panic!("{out}"));
        assert!(secret.starts_with("secret  whs_") && secret.ends_with("(shown once: keep it now)"), "{out}");
        let hooks = run(&["webhooks", "list", "--account", &acc]).ok();
        assert!(row(&hooks, &[&hook, &hook_url]).is_some(), "{hooks}");
        assert!(!hooks.contains("whs_"), "secrets are not listed: {hooks}");
        let alerts = run(&["alerts", "list", "--account", &acc]).ok();
        assert_eq!(alerts.lines().count(), 1, "no alert before the webhook existed: {alerts}");

        let out = run(&["increases", "renew", &auto, "--reason", "steady use"]).ok();
        let expected = format!(
            "increase request {auto} auto_approved: asr concurrency, requested 4, granted 4, no expiry\n"
        );
        assert_eq!(out, expected);

        let alerts = run(&["alerts", "list", "--account", &acc]).ok();
        let header: Vec<&str> = alerts.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header[..4], ["ID", "EVENT", "SUMMARY", "WEBHOOK"], "{alerts}");
        assert_eq!(alerts.lines().count(), 2, "{alerts}");
        let line = alerts.lines().nth(1).unwrap_or_default();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert!(cells[0].starts_with("evt_"), "{alerts}");
        assert_eq!(
            cells[1..5],
            ["increase_request.status_changed", auto.as_str(), "auto_approved", hook.as_str()]
        );
        let json = run(&["alerts", "list", "--account", &acc, "--json"]).json();
        let list = json["alerts"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{json:#}");
        assert_eq!(list[0]["webhook_id"], hook.as_str());
        assert_eq!(list[0]["payload"]["increase_request_id"], auto.as_str(), "{json:#}");
        assert_eq!(list[0]["payload"]["reason"], "steady use", "{json:#}");

        // Argument errors are clap's (status 2): an expiry given twice.
        let usage = run(&[
            "increases",
            "approve",
            &partial,
            "--reason",
            "r",
            "--probation-days",
            "7",
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ]);
        assert_eq!(usage.code, Some(2), "{}", usage.stderr);
        let usage = run(&["increases", "queue", "--status", "lost"]);
        assert_eq!(usage.code, Some(2), "{}", usage.stderr);

        let status = v.terminate();
        assert!(status.success(), "exit {status}");
    }
}

// ---- entitlements (issue 3) ------------------------------------------------------------------

#[path = "http/entitlements.rs"]
mod entitlements;
#[path = "http/gateway.rs"]
mod gateway;
#[path = "http/increase.rs"]
mod increase;
#[path = "http/openapi.rs"]
mod openapi;
#[path = "http/rls.rs"]
mod rls;
