//! Several calls decided together, all or nothing: the Envoy rate limit service sends one
//! request with several descriptors, and when any of them is over its limit none may be
//! charged.
//!
//! [`MemoryStore::charge_all_now`](crate::MemoryStore::charge_all_now) is atomic: it locks
//! every (app, service) of the batch in one global order, decides every call on copies, and
//! writes the copies back only when all pass. [`Counters::charge_all`](crate::Counters) on a
//! shared (Redis) store is check-then-charge: it reads every state, decides with
//! [`evaluate`], and charges one call at a time only when all would pass; a concurrent caller
//! that takes the last of a limit between the check and the charge can still leave the
//! batch's earlier calls charged (see `docs/gateway.md`).

use voxgate_core::decision::{LimitStatus, Refusal};
use voxgate_core::engine::Cost;
use voxgate_core::store::CheckInput;
use voxgate_core::{Decision, Dimension, LimitReport, Reason, ServiceLimits};

/// One call of a batch. `input.lease_ttl_ms` must be `None`: a batch takes no leases.
#[derive(Debug, Clone, Copy)]
pub struct BatchCall<'a> {
    pub input: CheckInput<'a>,
    /// Only ask whether the call would pass; charge nothing for it.
    pub dry_run: bool,
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Every call passed and every call that is not a dry run was charged.
    pub committed: bool,
    /// One per call, in order. A refused call carries its refusal; a call that passed
    /// carries the state after its charge when the batch committed, else the state as it
    /// is (nothing was charged).
    pub decisions: Vec<Decision>,
    /// One per call: whether its cost was charged. All false when the batch did not commit,
    /// except on a shared store that lost a race between its check and its charges.
    pub charged: Vec<bool>,
}

/// `report` without the concurrency limit: a batch takes no lease, so that limit does not
/// apply to it (as [`ServiceState::charge`](voxgate_core::ServiceState::charge) without a
/// lease leaves it out).
pub fn without_concurrency(report: LimitReport) -> LimitReport {
    if report.get(Dimension::Concurrency).is_none() {
        return report;
    }
    let mut out = LimitReport::default();
    for s in report.as_slice().iter().filter(|s| s.dimension != Dimension::Concurrency) {
        out.push(*s);
    }
    out
}

/// Whether a call of `cost` would pass limits whose state is `report` (from a peek), and if
/// not, which limit refuses and for how long: the first half of
/// [`ServiceState::charge`](voxgate_core::ServiceState::charge), from the reported figures.
///
/// Exact for the quotas and for whether the rate allows the call; a rate wait is computed
/// from the report's millisecond `reset_ms`, so it may be up to 1 ms longer than the
/// engine's (never shorter).
pub fn evaluate(report: &LimitReport, limits: &ServiceLimits, cost: Cost) -> Option<Refusal> {
    evaluate_after(report, limits, Cost { requests: 0, units: voxgate_core::Units::ZERO }, cost)
}

/// [`evaluate`] for a call made after `before` has been charged on the same state (earlier
/// calls of a batch), from the figures read before any of them.
pub fn evaluate_after(
    report: &LimitReport,
    limits: &ServiceLimits,
    before: Cost,
    cost: Cost,
) -> Option<Refusal> {
    let mut refusal: Option<Refusal> = None;
    let mut refuse = |dim: Dimension, wait_ms: u64| {
        if refusal.is_none_or(|r| wait_ms > r.retry_after_ms) {
            refusal =
                Some(Refusal { reason: Reason::of(dim), dimension: Some(dim), retry_after_ms: wait_ms });
        }
    };
    if let (Some(rate), Some(s)) = (limits.rate, report.get(Dimension::Rate))
        && cost.requests > 0
    {
        // GCRA adds up: n requests after m fit exactly when m + n fit at once.
        let total = cost.requests.saturating_add(before.requests);
        if u64::from(total) > s.remaining {
            refuse(Dimension::Rate, rate_wait_ms(s, rate.emission_ns(), total));
        }
    }
    for dim in [Dimension::PerMinute, Dimension::Daily, Dimension::Monthly] {
        if let (Some(_), Some(s)) = (limits.quota(dim), report.get(dim)) {
            let (before, units) = (before.units.milli(), cost.units.milli());
            // As the engine: an exhausted quota refuses even a call of no units.
            if before.saturating_add(units) > s.remaining || (units == 0 && before >= s.remaining) {
                refuse(dim, s.reset_ms);
            }
        }
    }
    refusal
}

/// GCRA's wait for `n` requests when `s.remaining` fit now: the next request returns after
/// `reset_ms`, each further one an emission interval later.
fn rate_wait_ms(s: &LimitStatus, emission_ns: i64, n: u32) -> u64 {
    let more = u64::from(n).saturating_sub(s.remaining).saturating_sub(1);
    let ns = s.reset_ms.saturating_mul(1_000_000).saturating_add(more.saturating_mul(emission_ns as u64));
    ns.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use proptest::prelude::*;
    use std::sync::Arc;
    use voxgate_core::store::CounterKey;
    use voxgate_core::{RateLimit, ServiceIdx, ServiceState, Timestamp, Units};

    static UTC: jiff::tz::TimeZone = jiff::tz::TimeZone::UTC;
    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn call<'a>(
        app: &'a str,
        service: u16,
        l: &'a ServiceLimits,
        units: u64,
        dry_run: bool,
    ) -> BatchCall<'a> {
        BatchCall {
            input: CheckInput {
                key: CounterKey { app, service: ServiceIdx(service) },
                limits: l,
                cost: Cost { requests: 1, units: Units::whole(units) },
                now: T0,
                tz: &UTC,
                lease_ttl_ms: None,
            },
            dry_run,
        }
    }

    fn daily(used: &MemoryStore, app: &str, service: u16, l: &ServiceLimits) -> u64 {
        let key = CounterKey { app, service: ServiceIdx(service) };
        used.with_state(key, |s| s.peek(l, T0, &UTC)).unwrap().get(Dimension::Daily).unwrap().used / 1000
    }

    #[test]
    fn memory_batch_is_all_or_nothing() {
        let store = MemoryStore::new(2);
        let l = ServiceLimits { per_minute: None, ..limits() };
        // Fill service 1 to 100 of 120 a day.
        assert!(store.charge_all_now(&[call("a", 1, &l, 40, false)]).unwrap().committed);
        assert!(
            store
                .charge_all_now(&[call("a", 1, &l, 40, false), call("a", 1, &l, 20, false)])
                .unwrap()
                .committed
        );
        assert_eq!(daily(&store, "a", 1, &l), 100);
        // The second call is over: neither is charged, and the first reports the state as is.
        let b = store.charge_all_now(&[call("a", 0, &l, 10, false), call("a", 1, &l, 30, false)]).unwrap();
        assert!(!b.committed);
        assert!(b.decisions[0].allowed());
        assert_eq!(b.decisions[0].limits.get(Dimension::Daily).unwrap().used, 0);
        assert_eq!(b.decisions[0].limits.get(Dimension::Rate).unwrap().remaining, 5);
        let r = b.decisions[1].refused.unwrap();
        assert_eq!(r.dimension, Some(Dimension::Daily));
        assert_eq!((daily(&store, "a", 0, &l), daily(&store, "a", 1, &l)), (0, 100));
        // Two calls on one (app, service) add up: 15 + 10 > 20 left.
        let b = store.charge_all_now(&[call("a", 1, &l, 15, false), call("a", 1, &l, 10, false)]).unwrap();
        assert!(!b.committed && b.decisions[0].allowed() && !b.decisions[1].allowed());
        assert_eq!(daily(&store, "a", 1, &l), 100);
        // A dry run is decided but never charged; it does not count for later calls.
        let b = store.charge_all_now(&[call("a", 1, &l, 20, true), call("a", 1, &l, 20, false)]).unwrap();
        assert!(b.committed);
        assert_eq!(daily(&store, "a", 1, &l), 120);
        let b = store.charge_all_now(&[call("a", 1, &l, 0, true)]).unwrap();
        assert!(!b.committed, "an exhausted quota refuses a check of no units");
        assert!(store.charge_all_now(&[call("a", 0, &l, 1, false).clone()]).unwrap().committed);
        let mut leasing = call("a", 0, &l, 1, false);
        leasing.input.lease_ttl_ms = Some(1000);
        assert!(store.charge_all_now(&[leasing, leasing]).is_err());
    }

    #[test]
    fn concurrent_batches_in_any_order_never_deadlock_or_overshoot() {
        let store = Arc::new(MemoryStore::new(2));
        let l = ServiceLimits { daily: Some(Units::whole(1000)), ..Default::default() };
        let apps = ["x", "y", "z"];
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut allowed = 0u64;
                    for i in 0..3000usize {
                        let a = apps[(i + t) % 3];
                        let b = apps[(i + 2 * t + 1) % 3];
                        let calls = [
                            call(a, (i % 2) as u16, &l, 1, false),
                            call(b, ((i + t) % 2) as u16, &l, 1, false),
                        ];
                        if i % 5 == 0 {
                            let single = store.charge_all_now(&calls[..1]).unwrap();
                            allowed += single.committed as u64;
                        } else if store.charge_all_now(&calls).unwrap().committed {
                            allowed += 2;
                        }
                    }
                    allowed
                })
            })
            .collect();
        let allowed: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let mut used = 0;
        for app in apps {
            for service in 0..2 {
                let d = daily(&store, app, service, &l);
                assert!(d <= 1000);
                used += d;
            }
        }
        assert_eq!(used, allowed, "every committed call counted once, nothing from refused batches");
    }

    fn limits() -> ServiceLimits {
        ServiceLimits {
            rate: Some(RateLimit { per_second: 7.0, burst: 5 }),
            concurrency: None,
            per_minute: Some(Units::whole(50)),
            daily: Some(Units::whole(120)),
            monthly: None,
        }
    }

    proptest! {
        /// Deciding from a peek agrees with the engine: same outcome, same refusing limit,
        /// a wait at most 1 ms longer.
        #[test]
        fn evaluate_agrees_with_the_engine(
            calls in proptest::collection::vec((0u32..4, 0u64..30, 0i64..300), 1..120),
        ) {
            let tz = jiff::tz::TimeZone::UTC;
            let l = limits();
            let mut s = ServiceState::default();
            let mut now = Timestamp::from_secs(1_800_000_000);
            for (requests, units, gap_ms) in calls {
                now = now.plus_millis(gap_ms as u64);
                let cost = Cost { requests, units: Units::whole(units) };
                let report = s.peek(&l, now, &tz);
                let predicted = evaluate(&report, &l, cost);
                let decided = s.charge(&l, cost, None, now, &tz);
                prop_assert_eq!(predicted.is_none(), decided.allowed());
                // The same call after a first one of `cost`, predicted from the same figures.
                if decided.allowed() {
                    let after = evaluate_after(&report, &l, cost, cost);
                    let second = s.clone().charge(&l, cost, None, now, &tz);
                    prop_assert_eq!(after.is_none(), second.allowed());
                }
                if let (Some(p), Some(d)) = (predicted, decided.refused) {
                    prop_assert_eq!(p.dimension, d.dimension);
                    prop_assert!(p.retry_after_ms >= d.retry_after_ms && p.retry_after_ms <= d.retry_after_ms + 1,
                        "predicted {} engine {}", p.retry_after_ms, d.retry_after_ms);
                }
            }
        }
    }
}
