//! The cost of one rate-limit decision: one call that checks and charges a rate, a daily and
//! a monthly quota of one (app, service).
//!
//! - `engine/*`: [`ServiceState::charge`] alone, no store, no lock (allowed and refused paths).
//! - `memory/*`: [`MemoryStore::charge_now`] (shard lookup, mutex, engine), on one hot key, on
//!   100 000 warm keys, and with two threads at once.
//!
//! Time is passed in, never read from the clock inside the loop: each decision is 10 ns of
//! simulated time after the previous one, so GCRA sees time move. Limits are set so every
//! call is allowed (except in `engine/charge_refused`, where every call is refused).
//!
//! Run with `cargo bench -p voxgate-store --bench decision`.

use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use jiff::tz::TimeZone;
use std::hint::black_box;
use std::{sync::Barrier, time::Duration, time::Instant};
use voxgate_core::store::CounterKey;
use voxgate_core::{
    CheckInput, Cost, Dimension, RateLimit, ServiceIdx, ServiceLimits, ServiceState, Timestamp, Units,
};
use voxgate_store::MemoryStore;

/// 2026-01-15T01:00:00Z: early in a day, so no bench crosses a daily or monthly window.
const BASE_NS: i64 = 1_768_438_800 * 1_000_000_000;
/// Simulated time between two decisions of one thread.
const STEP_NS: i64 = 10;
const KEYS: usize = 100_000;
const COST: Cost = Cost { requests: 1, units: Units::whole(1) };

/// 1e9 requests/s (one per ns) with a 4.29 s burst, never binding at one call per 10 ns per
/// thread even with one thread 400 M calls ahead; quotas of a trillion units, never reached.
const OPEN: ServiceLimits = ServiceLimits {
    rate: Some(RateLimit { per_second: 1e9, burst: u32::MAX }),
    concurrency: None,
    per_minute: None,
    daily: Some(Units::whole(1_000_000_000_000)),
    monthly: Some(Units::whole(1_000_000_000_000)),
};
static UTC: TimeZone = TimeZone::UTC;

fn at(step: i64) -> Timestamp {
    Timestamp::from_nanos(BASE_NS + step * STEP_NS)
}

/// One decision's input: `app`'s first service, charged at simulated `step`.
fn input(app: &str, step: i64) -> CheckInput<'_> {
    let key = CounterKey { app, service: ServiceIdx(0) };
    CheckInput { key, limits: &OPEN, cost: COST, now: at(step), tz: &UTC, lease_ttl_ms: None }
}

fn engine(c: &mut Criterion) {
    let (tz, mut g) = (&UTC, c.benchmark_group("engine"));
    let (mut state, mut step) = (ServiceState::default(), 0);
    g.bench_function("charge_one_key", |b| {
        b.iter(|| {
            step += 1;
            black_box(state.charge(&OPEN, COST, None, at(step), tz))
        })
    });
    assert!(state.charge(&OPEN, COST, None, at(step + 1), tz).allowed());

    // A daily quota of one unit, spent by the first call: every later call is refused.
    let spent = ServiceLimits { daily: Some(Units::whole(1)), ..OPEN };
    let (mut state, mut step) = (ServiceState::default(), 0);
    assert!(state.charge(&spent, COST, None, at(0), tz).allowed());
    g.bench_function("charge_refused", |b| {
        b.iter(|| {
            step += 1;
            black_box(state.charge(&spent, COST, None, at(step), tz))
        })
    });
    let refused = state.charge(&spent, COST, None, at(step + 1), tz).refused;
    assert_eq!(refused.and_then(|r| r.dimension), Some(Dimension::Daily));
    g.finish();
}

/// Runs `iters` decisions on each of two threads at once, thread `t` charging
/// `apps[(i + t * apps.len() / 2) % apps.len()]` at step `start + i`. Returns the wall time
/// from the moment both threads are ready until the later one finishes (thread spawning is
/// not counted). Criterion divides it by `iters`, so the reported time is the per-decision
/// latency with two threads contending; the combined throughput is twice its inverse.
fn two_threads(store: &MemoryStore, apps: &[String], start: i64, iters: u64) -> Duration {
    let barrier = Barrier::new(2);
    let spans: Vec<(Instant, Instant, u64)> = std::thread::scope(|s| {
        let run = |t: usize| {
            let barrier = &barrier;
            s.spawn(move || {
                let offset = t * apps.len() / 2;
                let mut refused = 0;
                barrier.wait();
                let begin = Instant::now();
                for i in 0..iters {
                    let app = &apps[(i as usize + offset) % apps.len()];
                    let d = store.charge_now(input(app, start + i as i64));
                    refused += u64::from(!black_box(d).unwrap().decision.allowed());
                }
                (begin, Instant::now(), refused)
            })
        };
        let handles = [run(0), run(1)];
        handles.map(|h| h.join().unwrap()).into()
    });
    assert!(spans.iter().all(|s| s.2 == 0), "a call was refused");
    let begin = spans.iter().map(|s| s.0).min().unwrap();
    spans.iter().map(|s| s.1).max().unwrap() - begin
}

fn memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory");

    // One simulated clock for every memory bench, so no store ever sees time step back.
    let mut step = 0;
    let hot = MemoryStore::new(1);
    g.bench_function("one_hot_key", |b| {
        b.iter(|| {
            step += 1;
            black_box(hot.charge_now(input("app-hot", step)))
        })
    });

    let many = MemoryStore::new(1);
    let apps: Vec<String> = (0..KEYS).map(|i| format!("app-{i:06}")).collect();
    for app in &apps {
        let charged = many.charge_now(input(app, 0)).unwrap();
        assert!(charged.decision.allowed());
    }
    assert_eq!(many.apps(), KEYS);
    g.bench_function("100k_keys", |b| {
        b.iter(|| {
            step += 1;
            let app = &apps[step as usize % KEYS];
            black_box(many.charge_now(input(app, step)))
        })
    });

    // Each sample starts after the last simulated time used; within it both threads walk
    // the same steps, so one is at most `iters` steps ahead of the other (far below the burst).
    let hot_app = ["app-hot".to_string()];
    let mut threaded = |b: &mut Bencher, store: &MemoryStore, apps: &[String]| {
        b.iter_custom(|iters| {
            let took = two_threads(store, apps, step + 1, iters);
            step += iters as i64;
            took
        })
    };
    g.bench_function("two_threads_hot_key", |b| threaded(b, &hot, &hot_app));
    g.bench_function("two_threads_100k_keys", |b| threaded(b, &many, &apps));
    g.finish();
}

criterion_group!(benches, engine, memory);
criterion_main!(benches);
