//! The Envoy rate limit service (gRPC `ShouldRateLimit`), issue 6.
//!
//! In-process: a tonic client (the `envoy-types` stubs) against the service served on
//! 127.0.0.1 from the same state as the router, with the manual clock: statuses, the
//! binding limit, headers, all-or-nothing across descriptors, check-only hits, the
//! `[rls]` mapping (app id, API key, hits as units) and the unknown policy.
//!
//! Against the real binary: a third-party client, Python `grpcio` with the stubs generated
//! from Envoy's own protos (PyPI `xds-protos`), runs `tests/python/rls_client.py`.
//!
//! Built-in catalogue figures relied on (app `demo`: tier `individual`, plan `free`, UTC; the
//! clock at T0, 14 h before UTC midnight):
//! - asr: rate 5/s burst 10, 600 audio seconds a minute, 1800 a day, 18 000 a month.
//! - tts: rate 10/s burst 20, 20 000 characters a day, 300 000 a month.

use super::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use tonic::transport::Channel;
use voxgate_core::Catalogue;

// ---- harness -------------------------------------------------------------------------------

/// The service on a free port of 127.0.0.1, over the server's state; stops when dropped.
struct Rls {
    client: RateLimitServiceClient<Channel>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve_rls(s: &Server) -> Rls {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    voxgate_server::rls::spawn(s.state.clone(), listener, async {
        let _ = stopped.await;
    });
    let client = RateLimitServiceClient::connect(format!("http://{addr}")).await.expect("gRPC connects");
    Rls { client, _stop: stop }
}

/// A server whose catalogue is the built-in one with `rls` as its `[rls]` table.
async fn server_with_rls(rls: &str) -> Server {
    let text = format!("{}\n[rls]\n{rls}\n", voxgate_core::catalogue::DEFAULT_CATALOGUE);
    let catalogue = Catalogue::parse(&text).expect("catalogue with [rls]");
    server_with(|c| c.catalogue = Arc::new(catalogue)).await
}

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries.iter().map(|(k, v)| Entry { key: (*k).into(), value: (*v).into() }).collect(),
        ..Default::default()
    }
}

/// A descriptor with its own hit count.
fn hits(mut d: RateLimitDescriptor, n: u64) -> RateLimitDescriptor {
    d.hits_addend = Some(UInt64Value { value: n });
    d
}

fn demo(service: &str, units: &str) -> RateLimitDescriptor {
    desc(&[("app_id", "demo"), ("service", service), ("units", units)])
}

impl Rls {
    async fn ask_with(
        &mut self,
        hits_addend: u32,
        descriptors: Vec<RateLimitDescriptor>,
    ) -> RateLimitResponse {
        let req = RateLimitRequest { domain: "voice".into(), descriptors, hits_addend };
        self.client.should_rate_limit(req).await.expect("ShouldRateLimit answers").into_inner()
    }

    async fn ask(&mut self, descriptors: Vec<RateLimitDescriptor>) -> RateLimitResponse {
        self.ask_with(0, descriptors).await
    }
}

fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add.iter().find(|h| h.key.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

fn code(r: &RateLimitResponse) -> Code {
    Code::try_from(r.overall_code).expect("a known code")
}

fn codes(r: &RateLimitResponse) -> Vec<Code> {
    r.statuses.iter().map(|s| Code::try_from(s.code).expect("a known code")).collect()
}

/// (name, requests_per_unit, unit, limit_remaining, duration_until_reset in ms).
fn limit_of(s: &DescriptorStatus) -> (String, u32, Unit, u32, i64) {
    let l = s.current_limit.as_ref().expect("current_limit");
    let d = s.duration_until_reset.as_ref().expect("duration_until_reset");
    (
        l.name.clone(),
        l.requests_per_unit,
        Unit::try_from(l.unit).expect("a known unit"),
        s.limit_remaining,
        d.seconds * 1000 + i64::from(d.nanos) / 1_000_000,
    )
}

async fn used(s: &Server, service: &str, policy: &str) -> f64 {
    num(&demo_limit(s, service, policy).await["used"])
}

// ---- tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_allowed_descriptor_reports_the_limit_closest_to_refusing() {
    let s = server().await;
    let mut rls = serve_rls(&s).await;
    let r = rls.ask(vec![demo("asr", "100")]).await;
    assert_eq!(code(&r), Code::Ok);
    assert_eq!(codes(&r), [Code::Ok]);
    // 500 of 600 left this minute is the smallest share (rate 9/10, day 1700/1800, ...).
    assert_eq!(limit_of(&r.statuses[0]), ("asr.per_minute".into(), 600, Unit::Minute, 500, 60_000));
    // The headers are the HTTP API's for the same call: every limit of the descriptor.
    let policy = sf_items(header(&r, "ratelimit-policy").expect("RateLimit-Policy"));
    let names: Vec<&str> = policy.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["rate", "per_minute", "daily", "monthly"]);
    assert_eq!(policy[2].1["q"], "1800");
    assert_eq!(policy[2].1["qu"], "audio_second");
    let state = sf_items(header(&r, "ratelimit").expect("RateLimit"));
    assert_eq!(state[0].1["r"], "9");
    assert_eq!(state[2].1["r"], "1700");
    assert!(header(&r, "retry-after").is_none());
    assert_eq!(used(&s, "asr", "daily").await, 100.0);
    // The decision is metered like an HTTP one.
    s.state.flush().await.unwrap();
    let u = call(&s.app, "GET", "/v1/apps/demo/usage?service=asr&step=day", Some(ADMIN), None).await;
    let series = u.json["series"].as_array().expect("series");
    let allowed: u64 = series.iter().map(|b| b["allowed"].as_u64().unwrap()).sum();
    assert_eq!(allowed, 1, "{:#}", u.json);
}

#[tokio::test]
async fn a_rate_refusal_names_the_rate_and_says_when_to_retry() {
    let s = server().await;
    let mut rls = serve_rls(&s).await;
    // The request's hits_addend counts 10 requests: the whole burst.
    let r = rls.ask_with(10, vec![demo("asr", "0")]).await;
    assert_eq!(code(&r), Code::Ok);
    assert_eq!(limit_of(&r.statuses[0]).0, "asr.rate");
    let r = rls.ask(vec![demo("asr", "0")]).await;
    assert_eq!(code(&r), Code::OverLimit);
    // The rate is a bucket of 10 refilled at 5/s: one request back in 200 ms.
    assert_eq!(limit_of(&r.statuses[0]), ("asr.rate".into(), 10, Unit::Second, 0, 200));
    // Only the limit that refused is in the headers.
    assert_eq!(header(&r, "ratelimit-policy"), Some("\"rate\";q=10;w=2;qu=\"requests\""));
    assert_eq!(header(&r, "ratelimit"), Some("\"rate\";r=0;t=1"));
    assert_eq!(header(&r, "retry-after"), Some("1"));
    s.clock.advance_ms(200);
    assert_eq!(code(&rls.ask(vec![demo("asr", "0")]).await), Code::Ok);
}

#[tokio::test]
async fn when_one_descriptor_is_over_no_descriptor_is_charged() {
    let s = server().await;
    let mut rls = serve_rls(&s).await;
    assert_eq!(code(&rls.ask(vec![demo("tts", "19990")]).await), Code::Ok);
    let asr_before = asr_counters(&s).await;

    // The second descriptor is over its daily quota: the first passes but is not charged.
    let r = rls.ask(vec![demo("asr", "10"), demo("tts", "20")]).await;
    assert_eq!(code(&r), Code::OverLimit);
    assert_eq!(codes(&r), [Code::Ok, Code::OverLimit]);
    assert_eq!(asr_counters(&s).await, asr_before, "the passing descriptor consumed nothing");
    assert_eq!(used(&s, "tts", "daily").await, 19990.0);
    // Its status reports the state as it is (nothing charged): every limit untouched, so the
    // first (the rate, its bucket full) binds.
    assert_eq!(limit_of(&r.statuses[0]), ("asr.rate".into(), 10, Unit::Second, 10, 0));
    // The refusing status and every header are the tts daily quota's, never the asr limits'.
    assert_eq!(limit_of(&r.statuses[1]), ("tts.daily".into(), 20_000, Unit::Day, 10, 50_400_000));
    assert_eq!(header(&r, "ratelimit-policy"), Some("\"daily\";q=20000;w=86400;qu=\"character\""));
    assert_eq!(header(&r, "ratelimit"), Some("\"daily\";r=10;t=50400"));
    assert_eq!(header(&r, "retry-after"), Some("50400"));

    // The first descriptor over (the asr burst spent) leaves the second uncharged too.
    assert_eq!(code(&rls.ask_with(10, vec![demo("asr", "0")]).await), Code::Ok);
    let r = rls.ask(vec![demo("asr", "0"), demo("tts", "5")]).await;
    assert_eq!(codes(&r), [Code::OverLimit, Code::Ok]);
    assert_eq!(header(&r, "retry-after"), Some("1"));
    assert_eq!(used(&s, "tts", "daily").await, 19990.0);

    // The longest wait wins when several refuse: both over, Retry-After is the day's.
    let r = rls.ask(vec![demo("asr", "0"), demo("tts", "20")]).await;
    assert_eq!(codes(&r), [Code::OverLimit, Code::OverLimit]);
    assert_eq!(header(&r, "retry-after"), Some("50400"));
    assert_eq!(header(&r, "ratelimit"), Some("\"daily\";r=10;t=50400"));

    // Two descriptors of the same app and service add up: 6 + 5 > 10 left.
    s.clock.advance_ms(2_000);
    let r = rls.ask(vec![demo("tts", "6"), demo("tts", "5")]).await;
    assert_eq!(codes(&r), [Code::Ok, Code::OverLimit]);
    assert_eq!(used(&s, "tts", "daily").await, 19990.0);
    let r = rls.ask(vec![demo("tts", "6"), demo("tts", "4")]).await;
    assert_eq!(codes(&r), [Code::Ok, Code::Ok]);
    assert_eq!(used(&s, "tts", "daily").await, 20_000.0);
}

#[tokio::test]
async fn hits_addend_zero_checks_without_charging() {
    let s = server().await;
    let mut rls = serve_rls(&s).await;
    let r = rls.ask(vec![hits(demo("tts", "500"), 0)]).await;
    assert_eq!(code(&r), Code::Ok);
    assert_eq!(used(&s, "tts", "daily").await, 0.0);
    assert_eq!(num(&demo_limit(&s, "tts", "rate").await["remaining"]), 20.0, "no request counted");
    // A per-descriptor hits_addend overrides the request's.
    let r = rls.ask_with(7, vec![hits(demo("tts", "0"), 2), demo("asr", "0")]).await;
    assert_eq!(code(&r), Code::Ok);
    assert_eq!(num(&demo_limit(&s, "tts", "rate").await["remaining"]), 18.0);
    assert_eq!(num(&demo_limit(&s, "asr", "rate").await["remaining"]), 3.0);
    // Spend the day; a check now says over the limit, and still charges nothing.
    assert_eq!(code(&rls.ask(vec![demo("tts", "20000")]).await), Code::Ok);
    let r = rls.ask(vec![hits(demo("tts", "0"), 0), demo("asr", "1")]).await;
    assert_eq!(codes(&r), [Code::OverLimit, Code::Ok]);
    assert_eq!(header(&r, "retry-after"), Some("50400"));
    assert_eq!(used(&s, "asr", "daily").await, 0.0, "the check refused the whole request");
    // A check of a quota with room passes while the other descriptor is charged.
    let r = rls.ask(vec![hits(demo("asr", "100"), 0), demo("asr", "1")]).await;
    assert_eq!(codes(&r), [Code::Ok, Code::Ok]);
    assert_eq!(used(&s, "asr", "daily").await, 1.0);
}

#[tokio::test]
async fn unknown_apps_and_services_follow_the_policy() {
    // Default `unknown = "ok"`: let through, nothing else changes, the known one is charged.
    let s = server().await;
    let mut rls = serve_rls(&s).await;
    let r = rls
        .ask(vec![
            desc(&[("app_id", "nope"), ("service", "asr")]),
            desc(&[("app_id", "demo"), ("service", "teleport")]),
            desc(&[("generic_key", "slash")]),
            demo("asr", "5"),
        ])
        .await;
    assert_eq!(code(&r), Code::Ok);
    assert_eq!(codes(&r), [Code::Ok; 4]);
    assert!(r.statuses[..3].iter().all(|st| st.current_limit.is_none()));
    assert_eq!(used(&s, "asr", "daily").await, 5.0);

    // `unknown = "over_limit"`: refused, and then nothing is charged.
    let s = server_with_rls("unknown = \"over_limit\"").await;
    let mut rls = serve_rls(&s).await;
    let r = rls.ask(vec![desc(&[("app_id", "nope"), ("service", "asr")]), demo("asr", "5")]).await;
    assert_eq!(code(&r), Code::OverLimit);
    assert_eq!(codes(&r), [Code::OverLimit, Code::Ok]);
    assert!(header(&r, "retry-after").is_none(), "waiting does not help an unknown app");
    assert_eq!(used(&s, "asr", "daily").await, 0.0);
}

#[tokio::test]
async fn descriptors_name_the_app_by_api_key_and_hits_can_be_units() {
    let s = server_with_rls("hits_addend = \"units\"\ndomain = \"voice\"").await;
    let key = s.demo_key.clone();
    let mut rls = serve_rls(&s).await;
    // hits are units: 250 audio seconds, one request.
    let r = rls.ask_with(250, vec![desc(&[("api_key", &key), ("service", "asr")])]).await;
    assert_eq!(code(&r), Code::Ok);
    assert_eq!(used(&s, "asr", "daily").await, 250.0);
    assert_eq!(num(&demo_limit(&s, "asr", "rate").await["remaining"]), 9.0);
    // A key of nobody, and a key that contradicts the app entry, are unknown.
    let r = rls
        .ask(vec![
            desc(&[("api_key", "vgk_not-a-key"), ("service", "asr")]),
            desc(&[("api_key", &key), ("app_id", "other"), ("service", "asr")]),
        ])
        .await;
    assert_eq!(codes(&r), [Code::Ok, Code::Ok]);
    assert!(r.statuses.iter().all(|st| st.current_limit.is_none()));
    // Another domain is not voxgate's.
    let req =
        RateLimitRequest { domain: "other".into(), descriptors: vec![demo("asr", "1")], hits_addend: 100 };
    let r = rls.client.should_rate_limit(req).await.unwrap().into_inner();
    assert!(r.statuses[0].current_limit.is_none());
    assert_eq!(used(&s, "asr", "daily").await, 250.0);
}

#[tokio::test]
async fn calls_that_can_never_pass_and_suspended_apps_are_over_limit_without_retry() {
    let s = server().await;
    let mut rls = serve_rls(&s).await;
    // More than a day's quota in one call; a malformed units entry.
    for d in [demo("asr", "5000"), demo("asr", "lots"), demo("asr", "-1")] {
        let r = rls.ask(vec![d, demo("tts", "1")]).await;
        assert_eq!(codes(&r), [Code::OverLimit, Code::Ok]);
        assert!(header(&r, "retry-after").is_none());
    }
    assert_eq!(used(&s, "tts", "daily").await, 0.0);
    let r = call(&s.app, "PATCH", "/v1/apps/demo", Some(ADMIN), Some(json!({ "status": "suspended" }))).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let r = rls.ask(vec![demo("asr", "1")]).await;
    assert_eq!(code(&r), Code::OverLimit);
    assert!(header(&r, "retry-after").is_none(), "waiting does not lift a suspension");
}

#[tokio::test]
async fn a_configured_gateway_token_guards_the_service() {
    let s = server_with(|c| c.gateway_token = Some(GATEWAY.into())).await;
    let mut rls = serve_rls(&s).await;
    let req =
        || RateLimitRequest { domain: "voice".into(), descriptors: vec![demo("asr", "1")], hits_addend: 1 };
    let e = rls.client.should_rate_limit(req()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(req());
    wrong.metadata_mut().insert("authorization", format!("Bearer {WRONG}").parse().unwrap());
    assert_eq!(rls.client.should_rate_limit(wrong).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let mut right = tonic::Request::new(req());
    right.metadata_mut().insert("authorization", format!("Bearer {GATEWAY}").parse().unwrap());
    let r = rls.client.should_rate_limit(right).await.unwrap().into_inner();
    assert_eq!(code(&r), Code::Ok);
    // An empty request is a caller's bug, not a decision.
    let mut empty = tonic::Request::new(RateLimitRequest::default());
    empty.metadata_mut().insert("authorization", format!("Bearer {GATEWAY}").parse().unwrap());
    assert_eq!(rls.client.should_rate_limit(empty).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

// ---- a third-party client: Python grpcio with Envoy's own protos, against the binary ------

mod python {
    use super::super::process::{TOKEN, Voxgate};
    use std::process::Command;

    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/rls_client.py");

    /// The gRPC address the binary printed at start-up.
    fn grpc_addr(v: &Voxgate) -> String {
        let log = v.log();
        log.lines()
            .find_map(|l| l.trim().strip_prefix("Envoy RLS (gRPC):"))
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|| panic!("no gRPC address in the start-up output:\n{log}"))
    }

    #[test]
    fn python_grpcio_with_envoy_protos_drives_the_binary() {
        let probe = Command::new("python3")
            .args(["-c", "import grpc; from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc"])
            .output();
        match probe {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "this test needs Python's grpcio and xds-protos (Envoy's protos): run scripts/test-deps.sh \
                 (or `python3 -m pip install grpcio xds-protos`)\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => {
                panic!("this test needs python3 with grpcio and xds-protos (scripts/test-deps.sh): {e}")
            }
        }
        let data = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let v = Voxgate::start(data.path(), logs.path().join("server.log"));
        let out = Command::new("python3")
            .arg(SCRIPT)
            .args(["--grpc", &grpc_addr(&v), "--http", &v.addr.to_string(), "--admin-token", TOKEN])
            .output()
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "rls_client.py failed ({}):\n{stdout}\n{stderr}\n{}",
            out.status,
            v.log()
        );
        assert!(stdout.contains("rls_client: all checks passed"), "{stdout}\n{stderr}");
        assert!(v.terminate().success());
    }
}
