//! Load on the Redis counter store alone (no HTTP): `tasks` concurrent callers charging
//! decisions (rate + daily + monthly, all allowed) for `seconds`, over `keys` apps, through
//! one multiplexed, pipelined connection. Prints decisions per second and p50/p99 latency.
//!
//!   cargo run --release -p voxgate-store --example redis_load -- redis://127.0.0.1:6379 [tasks] [seconds] [keys] [slice_ms]
//!
//! With `slice_ms` above 0 the calls go through local-lease mode (`Slices`), as one node would.

use std::sync::Arc;
use std::time::{Duration, Instant};
use voxgate_core::engine::Cost;
use voxgate_core::store::{CheckInput, CounterKey};
use voxgate_core::{CounterStore, RateLimit, ServiceIdx, ServiceLimits, Timestamp, Units};
use voxgate_store::{RedisOptions, RedisStore, SliceConfig, Slices};

const OPEN: ServiceLimits = ServiceLimits {
    rate: Some(RateLimit { per_second: 1e9, burst: u32::MAX }),
    concurrency: None,
    per_minute: None,
    daily: Some(Units::whole(1_000_000_000_000)),
    monthly: Some(Units::whole(1_000_000_000_000)),
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let tasks: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let keys: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let slice_ms: u64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0);
    let slices =
        Arc::new((slice_ms > 0).then(|| Slices::new(SliceConfig { slice_ms, ..SliceConfig::default() })));
    let options = RedisOptions {
        prefix: format!("vgbench{}", std::process::id()),
        timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    };
    let store = Arc::new(RedisStore::connect(&url, 1, options).await.expect("redis reachable"));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let slices = slices.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = t;
            while Instant::now() < deadline {
                let app = format!("app{}", i % keys);
                i += tasks;
                let now = Timestamp::from_jiff(jiff::Timestamp::now());
                let input = CheckInput {
                    key: CounterKey { app: &app, service: ServiceIdx(0) },
                    limits: &OPEN,
                    cost: Cost { requests: 1, units: Units::whole(1) },
                    now,
                    tz: &jiff::tz::TimeZone::UTC,
                    lease_ttl_ms: None,
                };
                let started = Instant::now();
                let charged = match slices.as_ref() {
                    Some(slices) => slices.charge(&*store, input).await.expect("charge"),
                    None => store.charge(input).await.expect("charge"),
                };
                lat.push(started.elapsed());
                assert!(charged.decision.allowed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    let n = all.len();
    let pct = |p: f64| all[((n as f64 * p) as usize).min(n - 1)].as_micros();
    println!(
        "RESULT decisions={n} per_second={:.0} p50_us={} p99_us={} tasks={tasks} keys={keys} slice_ms={slice_ms}",
        n as f64 / seconds as f64,
        pct(0.50),
        pct(0.99)
    );
}
