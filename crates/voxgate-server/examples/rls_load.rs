//! A small load generator for Envoy's `ShouldRateLimit`, for bench/rls-load.sh: a fixed
//! number of HTTP/2 connections (as Envoy keeps to its rate limit cluster), a fixed number of
//! calls in flight spread over them, each call one descriptor
//! `[app_id=demo, service=asr, units=1]`; a warm-up second, then a timed run.
//!
//!     rls_load <host:port> [seconds=8] [connections=4] [in_flight=64]
//!
//! Prints one line: `RESULT rps=<calls/s> p50_us=<µs> p99_us=<µs> calls=<n> over=<n> errors=<n>`.
//! Runs on one thread, so it takes one of the machine's cores, like `wrk -t1`.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    over: u64,
    errors: u64,
}

fn request() -> RateLimitRequest {
    let entry = |k: &str, v: &str| Entry { key: k.into(), value: v.into() };
    RateLimitRequest {
        domain: "voice".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![entry("app_id", "demo"), entry("service", "asr"), entry("units", "1")],
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

async fn drive(mut client: RateLimitServiceClient<Channel>, until: Instant, record: bool) -> Tally {
    let req = request();
    let mut t = Tally::default();
    while Instant::now() < until {
        let start = Instant::now();
        match client.should_rate_limit(req.clone()).await {
            Ok(r) if r.get_ref().overall_code == Code::Ok as i32 => {}
            Ok(_) => t.over += 1,
            Err(_) => t.errors += 1,
        }
        if record {
            t.latencies_us.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
    t
}

async fn phase(
    clients: &[RateLimitServiceClient<Channel>],
    in_flight: usize,
    secs: f64,
    record: bool,
) -> Tally {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..in_flight)
        .map(|i| tokio::spawn(drive(clients[i % clients.len()].clone(), until, record)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("load task");
        all.latencies_us.extend(t.latencies_us);
        all.over += t.over;
        all.errors += t.errors;
    }
    all
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:18281".into());
    let secs: f64 = args.get(2).map_or(Ok(8.0), |s| s.parse())?;
    let connections: usize = args.get(3).map_or(Ok(4), |s| s.parse())?;
    let in_flight: usize = args.get(4).map_or(Ok(64), |s| s.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            // One Endpoint::connect is one HTTP/2 connection.
            let channel =
                Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
            clients.push(RateLimitServiceClient::new(channel));
        }
        phase(&clients, in_flight, 1.0, false).await;
        let start = Instant::now();
        let mut t = phase(&clients, in_flight, secs, true).await;
        let elapsed = start.elapsed().as_secs_f64();
        t.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let n = t.latencies_us.len();
            if n == 0 { 0 } else { t.latencies_us[((n as f64 * p) as usize).min(n - 1)] }
        };
        println!(
            "RESULT rps={:.0} p50_us={} p99_us={} calls={} over={} errors={}",
            t.latencies_us.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            t.latencies_us.len(),
            t.over,
            t.errors
        );
        anyhow::Ok(())
    })
}
