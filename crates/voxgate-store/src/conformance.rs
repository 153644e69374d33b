//! The cases every counter store must pass. Each store's tests call [`run_all`] with a
//! factory for fresh, empty stores of two services.

use std::future::Future;
use std::sync::Arc;
use voxgate_core::engine::{Cost, Settlement};
use voxgate_core::store::{CheckInput, CounterKey, LeaseRelease};
use voxgate_core::time::{Period, Window};
use voxgate_core::{
    ConcurrencyLimit, CounterStore, Dimension, RateLimit, Reason, ServiceIdx, ServiceLimits, Timestamp, Units,
};

const ASR: ServiceIdx = ServiceIdx(0);
const TTS: ServiceIdx = ServiceIdx(1);

fn limits() -> ServiceLimits {
    ServiceLimits {
        rate: Some(RateLimit { per_second: 10.0, burst: 10 }),
        concurrency: Some(ConcurrencyLimit { max: 2, lease_ttl_ms: 10_000 }),
        per_minute: None,
        daily: Some(Units::whole(100)),
        monthly: Some(Units::whole(1000)),
    }
}

fn input<'a>(
    app: &'a str,
    service: ServiceIdx,
    l: &'a ServiceLimits,
    units: u64,
    now: Timestamp,
) -> CheckInput<'a> {
    CheckInput {
        key: CounterKey { app, service },
        limits: l,
        cost: Cost { requests: 1, units: Units::whole(units) },
        now,
        tz: &UTC,
        lease_ttl_ms: None,
    }
}

static UTC: jiff::tz::TimeZone = jiff::tz::TimeZone::UTC;

const T0: Timestamp = Timestamp::from_secs(1_795_000_000);

/// Runs every case; each gets a fresh store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: CounterStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    atomic_multi_limit(&make().await).await;
    services_and_apps_are_independent(&make().await).await;
    leases(&make().await).await;
    restore_keeps_the_larger_count(&make().await).await;
    concurrent_callers_never_overshoot(Arc::new(make().await)).await;
    settlement_charges_now_and_refunds_only_current_windows(&make().await).await;
    exhausted_quota_refuses_zero_unit_calls(&make().await).await;
    rate_waits_for_the_next_request(&make().await).await;
    leases_expire_to_the_nanosecond(&make().await).await;
}

async fn atomic_multi_limit<S: CounterStore>(store: &S) {
    let l = limits();
    let ok = store.charge(input("a", ASR, &l, 95, T0)).await.unwrap();
    assert!(ok.decision.allowed());
    // Refused by the daily quota: neither rate nor any quota moves.
    let refused = store.charge(input("a", ASR, &l, 10, T0)).await.unwrap();
    let r = refused.decision.refused.unwrap();
    assert_eq!((r.reason, r.dimension), (Reason::Quota, Some(Dimension::Daily)));
    let report =
        store.peek(CounterKey { app: "a", service: ASR }, &l, T0, &jiff::tz::TimeZone::UTC).await.unwrap();
    assert_eq!(report.get(Dimension::Rate).unwrap().remaining, 9);
    assert_eq!(report.get(Dimension::Daily).unwrap().used, 95_000);
    assert_eq!(report.get(Dimension::Monthly).unwrap().used, 95_000);
}

async fn services_and_apps_are_independent<S: CounterStore>(store: &S) {
    let l = ServiceLimits { daily: Some(Units::whole(1)), ..Default::default() };
    for (app, service) in [("a", ASR), ("a", TTS), ("b", ASR)] {
        assert!(store.charge(input(app, service, &l, 1, T0)).await.unwrap().decision.allowed());
        assert!(!store.charge(input(app, service, &l, 1, T0)).await.unwrap().decision.allowed());
    }
}

async fn leases<S: CounterStore>(store: &S) {
    let l = limits();
    let key = CounterKey { app: "a", service: ASR };
    let tz = jiff::tz::TimeZone::UTC;
    let take = |at| CheckInput { lease_ttl_ms: Some(10_000), ..input("a", ASR, &l, 30, at) };
    let (first, _) = store.charge(take(T0)).await.unwrap().lease.unwrap();
    let (second, _) = store.charge(take(T0)).await.unwrap().lease.unwrap();
    assert_ne!(first, second);
    let full = store.charge(take(T0)).await.unwrap();
    assert_eq!(full.decision.refused.unwrap().reason, Reason::Concurrency);
    assert!(full.lease.is_none());
    // Renew the first; the second expires; one slot is free again.
    let later = T0.plus_millis(8_000);
    assert!(store.renew_lease(key, first, 10_000, later).await.unwrap().is_some());
    let after = T0.plus_millis(12_000);
    assert!(store.renew_lease(key, second, 10_000, after).await.unwrap().is_none());
    let peek = store.peek(key, &l, after, &tz).await.unwrap();
    assert_eq!(peek.get(Dimension::Concurrency).unwrap().used, 1);
    // Releasing with the actual amount refunds the reservation.
    match store.release_lease(key, first, Some(Units::whole(5)), after, &tz).await.unwrap() {
        LeaseRelease::Released(s) => assert_eq!(s.delta_milli, -25_000),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.release_lease(key, first, None, after, &tz).await.unwrap(), LeaseRelease::NotFound);
    let peek = store.peek(key, &l, after, &tz).await.unwrap();
    assert_eq!(peek.get(Dimension::Daily).unwrap().used, 35_000);
    assert_eq!(peek.get(Dimension::Concurrency).unwrap().used, 0);
}

async fn restore_keeps_the_larger_count<S: CounterStore>(store: &S) {
    let l = limits();
    let key = CounterKey { app: "r", service: ASR };
    let tz = jiff::tz::TimeZone::UTC;
    let day = Period::Day.window(T0, &tz);
    store.restore(key, Period::Day, day, Units::whole(60)).await.unwrap();
    store.restore(key, Period::Day, day, Units::whole(40)).await.unwrap();
    let peek = store.peek(key, &l, T0, &tz).await.unwrap();
    assert_eq!(peek.get(Dimension::Daily).unwrap().used, 60_000);
    // An old window is replaced by the current one when time moves on.
    let old = Window { start: day.start - 86_400, end: day.start };
    store.restore(CounterKey { app: "q", service: ASR }, Period::Day, old, Units::whole(99)).await.unwrap();
    let peek = store.peek(CounterKey { app: "q", service: ASR }, &l, T0, &tz).await.unwrap();
    assert_eq!(peek.get(Dimension::Daily).unwrap().used, 0);
}

async fn concurrent_callers_never_overshoot<S: CounterStore>(store: Arc<S>) {
    let l = ServiceLimits { daily: Some(Units::whole(500)), ..Default::default() };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0u64;
            for _ in 0..300 {
                if store.charge(input("c", ASR, &l, 1, T0)).await.unwrap().decision.allowed() {
                    allowed += 1;
                }
            }
            allowed
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 500);
}

async fn settlement_charges_now_and_refunds_only_current_windows<S: CounterStore>(store: &S) {
    let l = limits();
    let key = CounterKey { app: "s", service: ASR };
    let tz = jiff::tz::TimeZone::UTC;
    let day = Period::Day.window(T0, &tz);
    let late = Timestamp::from_secs(day.end - 60);
    let next = Timestamp::from_secs(day.end + 60).plus_millis(250);
    let take = |units, at| CheckInput { lease_ttl_ms: Some(600_000), ..input("s", ASR, &l, units, at) };
    let charged = store.charge(take(50, late)).await.unwrap();
    let (a, expires) = charged.lease.unwrap();
    assert_eq!(expires, late.plus_millis(600_000));
    let (b, _) = store.charge(take(10, late)).await.unwrap().lease.unwrap();
    assert!(store.charge(input("s", ASR, &l, 5, next)).await.unwrap().decision.allowed());
    // 50 reserved, 20 used: the refund belongs to the minute it was charged in, and only the
    // month (still the window charged) gets it back; yesterday is over.
    let settled = store.release_lease(key, a, Some(Units::whole(20)), next, &tz).await.unwrap();
    let minute = |t: Timestamp| t.secs().div_euclid(60) * 60;
    assert_eq!(settled, LeaseRelease::Released(Settlement { delta_milli: -30_000, minute: minute(late) }));
    // 10 reserved, 25 used: the extra is consumption now, charged to the current windows.
    let settled = store.release_lease(key, b, Some(Units::whole(25)), next, &tz).await.unwrap();
    assert_eq!(settled, LeaseRelease::Released(Settlement { delta_milli: 15_000, minute: minute(next) }));
    let peek = store.peek(key, &l, next, &tz).await.unwrap();
    assert_eq!(peek.get(Dimension::Daily).unwrap().used, 20_000);
    assert_eq!(peek.get(Dimension::Monthly).unwrap().used, 50_000);
    assert_eq!(peek.get(Dimension::Concurrency).unwrap().used, 0);
}

async fn exhausted_quota_refuses_zero_unit_calls<S: CounterStore>(store: &S) {
    let l = ServiceLimits { per_minute: Some(Units::whole(2)), ..Default::default() };
    let now = T0.plus_millis(500);
    let minute = Period::Minute.window(now, &UTC);
    assert!(store.charge(input("z", ASR, &l, 0, now)).await.unwrap().decision.allowed());
    assert!(store.charge(input("z", ASR, &l, 2, now)).await.unwrap().decision.allowed());
    let refused = store.charge(input("z", ASR, &l, 0, now)).await.unwrap().decision;
    let r = refused.refused.unwrap();
    assert_eq!((r.reason, r.dimension), (Reason::Quota, Some(Dimension::PerMinute)));
    let wait = (minute.end * 1000 - now.millis()) as u64;
    assert_eq!(r.retry_after_ms, wait);
    let status = refused.limits.get(Dimension::PerMinute).unwrap();
    assert_eq!((status.used, status.remaining, status.reset_ms, status.window_s), (2_000, 0, wait, 60));
    let next = Timestamp::from_secs(minute.end);
    assert!(store.charge(input("z", ASR, &l, 0, next)).await.unwrap().decision.allowed());
}

async fn rate_waits_for_the_next_request<S: CounterStore>(store: &S) {
    // Three per second: an emission interval of 333 333 333 ns, which no whole number of
    // microseconds or milliseconds expresses.
    let l = ServiceLimits { rate: Some(RateLimit { per_second: 3.0, burst: 2 }), ..Default::default() };
    assert!(store.charge(input("g", ASR, &l, 0, T0)).await.unwrap().decision.allowed());
    assert!(store.charge(input("g", ASR, &l, 0, T0)).await.unwrap().decision.allowed());
    let refused = store.charge(input("g", ASR, &l, 0, T0)).await.unwrap().decision;
    let r = refused.refused.unwrap();
    assert_eq!((r.reason, r.retry_after_ms), (Reason::Rate, 334));
    let status = refused.limits.get(Dimension::Rate).unwrap();
    assert_eq!((status.used, status.remaining, status.reset_ms, status.window_s), (2, 0, 334, 1));
    // A call of no requests is not rate limited.
    let free = CheckInput { cost: Cost { requests: 0, units: Units::ZERO }, ..input("g", ASR, &l, 0, T0) };
    assert!(store.charge(free).await.unwrap().decision.allowed());
    // One nanosecond early is too early.
    let early = Timestamp(T0.nanos() + 333_333_332);
    assert!(!store.charge(input("g", ASR, &l, 0, early)).await.unwrap().decision.allowed());
    let on_time = Timestamp(T0.nanos() + 333_333_333);
    let d = store.charge(input("g", ASR, &l, 0, on_time)).await.unwrap().decision;
    assert!(d.allowed());
    assert_eq!(d.limits.get(Dimension::Rate).unwrap().reset_ms, 334);
}

async fn leases_expire_to_the_nanosecond<S: CounterStore>(store: &S) {
    let l = ServiceLimits {
        concurrency: Some(ConcurrencyLimit { max: 1, lease_ttl_ms: 1_500 }),
        ..Default::default()
    };
    let key = CounterKey { app: "n", service: ASR };
    let tz = jiff::tz::TimeZone::UTC;
    let start = Timestamp(T0.nanos() + 123_456_789);
    let take = |at| CheckInput { lease_ttl_ms: Some(1_500), ..input("n", ASR, &l, 1, at) };
    let (id, expires) = store.charge(take(start)).await.unwrap().lease.unwrap();
    assert_eq!(expires, start.plus_millis(1_500));
    let full = store.charge(take(start)).await.unwrap().decision;
    assert_eq!(full.refused.unwrap().retry_after_ms, 1_500);
    let status = full.limits.get(Dimension::Concurrency).unwrap();
    assert_eq!((status.used, status.remaining, status.reset_ms, status.window_s), (1, 0, 1_500, 2));
    let renewed = store.renew_lease(key, id, 1_000, start.plus_millis(1_000)).await.unwrap();
    let expires = start.plus_millis(2_000);
    assert_eq!(renewed, Some(expires));
    // Alive one nanosecond before its expiry, gone at it.
    let before = Timestamp(expires.nanos() - 1);
    let d = store.charge(take(before)).await.unwrap().decision;
    assert_eq!(d.refused.unwrap().retry_after_ms, 1);
    assert_eq!(store.peek(key, &l, before, &tz).await.unwrap().get(Dimension::Concurrency).unwrap().used, 1);
    assert_eq!(store.peek(key, &l, expires, &tz).await.unwrap().get(Dimension::Concurrency).unwrap().used, 0);
    assert_eq!(store.renew_lease(key, id, 1_000, expires).await.unwrap(), None);
    assert_eq!(store.release_lease(key, id, None, expires, &tz).await.unwrap(), LeaseRelease::NotFound);
    let (_, again) = store.charge(take(expires)).await.unwrap().lease.unwrap();
    assert_eq!(again, expires.plus_millis(1_500));
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_conforms() {
        super::run_all(|| async { crate::MemoryStore::new(2) }).await;
    }
}
