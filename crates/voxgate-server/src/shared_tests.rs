//! Two voxgate nodes sharing counters through a real Redis that the test starts itself, and
//! what each failure policy does when that Redis stops.

use crate::config::Config;
use crate::state::AppState;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use voxgate_core::Timestamp;

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Redis::start_on(port)
    }

    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/services.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn node(dir: &std::path::Path, url: &str, catalogue: &str) -> Arc<AppState> {
    let mut config = Config::for_tests(dir);
    config.counters = Some(url.to_string());
    config.nodes = 2;
    config.catalogue = Arc::new(voxgate_core::Catalogue::parse(catalogue).unwrap());
    let clock: crate::state::Clock = Arc::new(|| Timestamp::from_jiff(jiff::Timestamp::now()));
    AppState::open(config, clock).await.unwrap().0
}

const CATALOGUE: &str = r#"
[defaults]
tier = "t"
plan = "p"
[services.asr]
unit = "audio_second"
on_store_error = "local"
[services.tts]
unit = "character"
on_store_error = "allow"
[services.rtm]
unit = "message"
[tiers.t]
[plans.p]
limits.asr = { daily = 100 }
limits.tts = { daily = 100 }
limits.rtm = { daily = 100 }
"#;

async fn check(state: &Arc<AppState>, service: &str, units: f64) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let body = serde_json::json!({ "app_id": "demo", "service": service, "units": units }).to_string();
    let req = axum::http::Request::post("/v1/check").body(axum::body::Body::from(body)).unwrap();
    let res = crate::router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_limits_and_each_failure_policy_holds() {
    let mut redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (node(d1.path(), &url, CATALOGUE).await, node(d2.path(), &url, CATALOGUE).await);

    // 150 calls of 1 unit spread over both nodes: exactly the shared 100 pass.
    let mut allowed = 0;
    for i in 0..150 {
        let n = if i % 2 == 0 { &a } else { &b };
        if check(n, "rtm", 1.0).await.0 == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 100);
    assert!(!a.store.degraded());

    // Redis stops: `deny` (rtm) answers 503 within the budget, `allow` (tts) lets calls
    // through, `local` (asr) decides on the node with half the daily quota (2 nodes).
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let started = Instant::now();
    let (status, body) = check(&a, "rtm", 1.0).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "store_unavailable");
    assert!(started.elapsed() < Duration::from_secs(2), "no request hangs on a dead store");
    assert!(a.store.degraded());
    for _ in 0..3 {
        // 150 of a daily 100, all let through: the store cannot count them.
        assert_eq!(check(&a, "tts", 50.0).await.0, 200);
    }
    assert_eq!(check(&a, "asr", 50.0).await.0, 200);
    let (status, body) = check(&a, "asr", 1.0).await;
    assert_eq!((status, body["reason"].as_str()), (429, Some("quota")), "{body}");

    // Redis comes back (empty: it keeps nothing on disk here): the nodes reconnect by
    // themselves and share counters again.
    let _redis = Redis::start_on(redis.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check(&b, "rtm", 1.0).await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "node did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!b.store.degraded());
}
