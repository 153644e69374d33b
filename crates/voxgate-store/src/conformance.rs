//! The cases every counter store must pass. Each store's tests call [`run_all`] with a
//! factory for fresh, empty stores of two services.

use std::future::Future;
use std::sync::Arc;
use voxgate_core::store::{CheckInput, CounterKey, LeaseRelease};
use voxgate_core::time::{Period, Window};
use voxgate_core::{
    ConcurrencyLimit, CounterStore, Dimension, RateLimit, Reason, ServiceIdx, ServiceLimits, Timestamp,
    Units, engine::Cost,
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

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_conforms() {
        super::run_all(|| async { crate::MemoryStore::new(2) }).await;
    }
}
