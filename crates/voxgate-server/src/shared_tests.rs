//! voxgate nodes sharing counters through a real Redis that the test starts itself (and
//! what each failure policy does when that Redis stops), and sharing one PostgreSQL registry
//! (a database of the test's own on the local server).

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
    let (mut allowed, mut allowed_on_b) = (0, 0);
    for i in 0..150 {
        let n = if i % 2 == 0 { &a } else { &b };
        if check(n, "rtm", 1.0).await.0 == 200 {
            allowed += 1;
            if i % 2 == 1 {
                allowed_on_b += 1;
            }
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

    // The Redis that came back is empty; the flush loop sees the recovery and restores the
    // day's counts from metered usage. These two nodes keep separate embedded registries, so
    // node b restores what it metered itself (a shared PostgreSQL registry would give the
    // fleet's total).
    b.flush().await.unwrap();
    assert!(b.store.take_recovered());
    assert!(!b.store.take_recovered(), "reported once");
    b.restore_quotas().await.unwrap();
    let (_, body) = check(&b, "rtm", 0.0).await;
    let daily = &body["limits"][0];
    assert!(daily["used"].as_f64().unwrap() >= allowed_on_b as f64, "{body}");
}

/// The PostgreSQL server tests use: `VOXGATE_TEST_POSTGRES` or the local one (trust auth).
fn pg_base() -> String {
    std::env::var("VOXGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn pg_admin(sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&format!("{}/postgres", pg_base()))
        .await
        .expect("PostgreSQL must be running (scripts/services.sh starts it)");
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

const SHARED: &str = r#"
[defaults]
tier = "t"
plan = "small"
[services.asr]
unit = "audio_second"
[tiers.t]
limits.asr = { concurrency = { max = 2, lease_ttl_s = 1 } }
[plans.small]
limits.asr = { daily = 60 }
[plans.big]
limits.asr = { daily = 600 }
"#;

async fn call(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", "Bearer test-admin-token-0123456789")
        .body(axum::body::Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let res = crate::router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

async fn daily_limit(state: &Arc<AppState>, app: &str) -> f64 {
    let (_, limits) = call(state, "GET", &format!("/v1/apps/{app}/limits"), None).await;
    limits["limits"].as_array().unwrap().iter().find(|l| l["dimension"] == "daily").unwrap()["limit"]
        .as_f64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_registry_and_one_redis() {
    let redis = Redis::start();
    let db = format!("vg_nodes_{:016x}", rand::random::<u64>());
    pg_admin(&format!("CREATE DATABASE {db}")).await;
    let registry = format!("{}/{db}", pg_base());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for dir in &dirs {
        let mut config = Config::for_tests(dir.path());
        config.counters = Some(format!("redis://127.0.0.1:{}", redis.port));
        config.registry = Some(registry.clone());
        config.nodes = 3;
        config.catalogue = Arc::new(voxgate_core::Catalogue::parse(SHARED).unwrap());
        let clock: crate::state::Clock = Arc::new(|| Timestamp::from_jiff(jiff::Timestamp::now()));
        let state = AppState::open(config, clock).await.unwrap().0;
        tokio::spawn(crate::serve::watch_changes(state.clone()));
        nodes.push(state);
    }
    // One demo app for all: created by the first node only.
    assert_eq!(nodes[2].registry.apps().await.unwrap().len(), 1);
    let node_ids: std::collections::HashSet<_> = nodes.iter().map(|n| n.node_id.clone()).collect();
    assert_eq!(node_ids.len(), 3, "each node meters under its own id");

    // Spread 90 calls of 1 unit over the nodes: exactly the daily 60 pass, as on one node.
    let mut allowed = 0;
    for i in 0..90 {
        if check(&nodes[i % 3], "asr", 1.0).await.0 == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 60);

    // A plan change on node 1 is in force on nodes 2 and 3 within a second.
    let (status, _) =
        call(&nodes[0], "PATCH", "/v1/apps/demo", Some(serde_json::json!({ "plan": "big" }))).await;
    assert_eq!(status, 200);
    // The node that made the change rebuilt for it already; its watcher has nothing to redo.
    assert_eq!(
        nodes[0].built_from_change.load(std::sync::atomic::Ordering::Relaxed),
        nodes[0].registry.last_change().await.unwrap()
    );
    let changed = Instant::now();
    for n in &nodes[1..] {
        while daily_limit(n, "demo").await != 600.0 {
            assert!(changed.elapsed() < Duration::from_secs(1), "change not seen within a second");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(check(&nodes[2], "asr", 1.0).await.0, 200);

    // A node dies holding both leases; the others can take them once they expire (1 s).
    let lease = |n: &Arc<AppState>| {
        let n = n.clone();
        async move {
            call(&n, "POST", "/v1/leases", Some(serde_json::json!({ "app_id": "demo", "service": "asr" })))
                .await
                .0
        }
    };
    assert_eq!(lease(&nodes[0]).await, 201);
    assert_eq!(lease(&nodes[0]).await, 201);
    // It had flushed its usage before it died (a crash loses at most one flush interval).
    let dead = nodes.remove(0);
    dead.flush().await.unwrap();
    drop(dead);
    assert_eq!(lease(&nodes[0]).await, 429, "the dead node's leases still count");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(lease(&nodes[0]).await, 201);
    assert_eq!(lease(&nodes[1]).await, 201);

    // Usage from all nodes adds up without double counting.
    for n in &nodes {
        n.flush().await.unwrap();
    }
    let (_, usage) = call(&nodes[1], "GET", "/v1/apps/demo/usage?service=asr&step=day", None).await;
    let sum = |field: &str| -> u64 {
        usage["series"].as_array().unwrap().iter().map(|b| b[field].as_u64().unwrap_or(0)).sum()
    };
    let refused: u64 =
        usage["series"].as_array().unwrap().iter().map(|b| b["refused"]["quota"].as_u64().unwrap()).sum();
    // 60 checks, 1 after the plan change, 4 leases; refused: 30 by the quota.
    assert_eq!((sum("allowed"), refused), (65, 30), "{usage}");
    for n in nodes {
        n.registry.close().await;
    }
    pg_admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_lease_mode_keeps_quotas_exact_across_nodes() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut nodes = Vec::new();
    for dir in [&d1, &d2] {
        let mut config = Config::for_tests(dir.path());
        config.counters = Some(url.clone());
        config.local_lease_ms = 200;
        config.catalogue = Arc::new(voxgate_core::Catalogue::parse(CATALOGUE).unwrap());
        let clock: crate::state::Clock = Arc::new(|| Timestamp::from_jiff(jiff::Timestamp::now()));
        nodes.push(AppState::open(config, clock).await.unwrap().0);
    }
    // 150 calls of 1 unit over two nodes spending slices: never more than the daily 100.
    let mut allowed = 0;
    for i in 0..150 {
        if check(&nodes[i % 2], "rtm", 1.0).await.0 == 200 {
            allowed += 1;
        }
    }
    assert!((90..=100).contains(&allowed), "{allowed}");
    // Returning the slices refunds what was reserved and not spent: Redis holds exactly the
    // units allowed.
    for n in &nodes {
        n.store.return_slices(n.now()).await.unwrap();
    }
    let (_, limits) = call(&nodes[0], "GET", "/v1/apps/demo/limits", None).await;
    let daily = limits["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["service"] == "rtm" && l["dimension"] == "daily")
        .unwrap()
        .clone();
    assert_eq!(daily["used"].as_f64().unwrap(), allowed as f64, "{daily}");
}
