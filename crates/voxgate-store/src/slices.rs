//! Local-lease mode for hot keys: a node reserves a slice of an app's limits from the shared
//! store in one call, then decides that app's calls from the slice with no round trip, and
//! gives back what it did not spend when the slice ends.
//!
//! A slice holds `r` requests and, when the service has quotas, `u` units: twice what the node
//! spent from its previous slice, at most the app's rate for `slice_ms` (and its burst) and
//! `units_fraction` of its smallest quota. It is reserved as a lease on the shared store (no concurrency slot), so its units
//! are charged up front and refunded when it is released with what was spent. It ends after
//! `slice_ms`, at the end of the minute it was taken in (so no calendar window changes under
//! it), or when it cannot cover a call; a call it cannot cover is decided by the shared store.
//!
//! What this trades:
//! - Quotas never overshoot: every unit spent locally was charged to the shared store first.
//!   Units reserved but not yet spent are counted as used until the slice is returned, so
//!   another node may be refused a little early (at most one slice per node).
//! - Rate can overshoot: a slice's requests were admitted by GCRA when reserved and are spent
//!   up to `slice_ms` later. In any window of length `w`, all nodes together allow at most
//!   `rate × w + burst + nodes × r` requests (tested in `tests`).
//! - A refusal from the shared store is remembered until its retry time: calls at least as
//!   large are refused locally until then (a node may refuse a little longer than needed when
//!   another node returns a slice meanwhile; it never admits more).
//! - Concurrency leases always go to the shared store.
//! - The `RateLimit` headers of a local decision are the reservation's, corrected by what the
//!   slice still holds: exact for this node, approximate for the app as a whole.

use std::collections::HashMap;
use std::sync::Arc;
use voxgate_core::engine::Cost;
use voxgate_core::store::{Charged, CheckInput, CounterKey, LeaseRelease};
use voxgate_core::{
    CounterStore, Decision, Dimension, LeaseId, LimitReport, ServiceLimits, StoreError, Timestamp, Units,
};

/// How big slices are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceConfig {
    /// How long a slice may be spent, and how much of the rate it holds.
    pub slice_ms: u64,
    /// Share of the smallest quota a slice reserves.
    pub units_fraction: f64,
}

impl Default for SliceConfig {
    fn default() -> Self {
        SliceConfig { slice_ms: 100, units_fraction: 0.01 }
    }
}

/// A refusal the shared store gave, remembered until it expires: calls at least as large are
/// refused locally until then, so a hot key that is over its limit costs no round trips.
#[derive(Debug, Clone, Copy)]
struct Refused {
    until: Timestamp,
    cost: Cost,
    decision: Decision,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    slice: Option<Slice>,
    refused: Option<Refused>,
    /// What this node spent from its last slice: the next one is sized from it, so a node
    /// reserves about what it uses rather than the whole app's rate.
    last_requests: u32,
    last_units: Units,
}

#[derive(Debug, Clone, Copy)]
struct Slice {
    lease: LeaseId,
    requests: u32,
    requests_left: u32,
    units_left: Units,
    spent_units: Units,
    /// Quotas apply: units are counted from the slice.
    metered: bool,
    expires: Timestamp,
    report: LimitReport,
}

type Key = (Box<str>, u16);

/// The slices this node holds, one per (app, service).
#[derive(Default)]
pub struct Slices {
    config: SliceConfig,
    slots: parking_lot::Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Slot>>>>,
}

fn has_quota(l: &ServiceLimits) -> bool {
    l.per_minute.is_some() || l.daily.is_some() || l.monthly.is_some()
}

impl Slices {
    pub fn new(config: SliceConfig) -> Slices {
        Slices { config, slots: Default::default() }
    }

    fn slot(&self, key: CounterKey<'_>) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock();
        slots.entry((key.app.into(), key.service.0)).or_default().clone()
    }

    /// The size of a new slice for a call of `cost`: twice what this node spent from its last
    /// slice (so it grows quickly on a hot key and shrinks on a cooling one), within the
    /// app's rate for `slice_ms` (at most its burst) and `units_fraction` of its smallest
    /// quota, and never less than the call itself.
    fn size(
        &self,
        limits: &ServiceLimits,
        cost: Cost,
        last_requests: u32,
        last_units: Units,
    ) -> (u32, Units) {
        let wanted = last_requests.saturating_mul(2).max(4);
        let requests = match limits.rate {
            Some(rate) => {
                let most =
                    ((rate.per_second * self.config.slice_ms as f64 / 1000.0).ceil() as u32).min(rate.burst);
                wanted.min(most).max(cost.requests.max(1))
            }
            None => wanted.max(cost.requests.max(1)),
        };
        let units = [limits.per_minute, limits.daily, limits.monthly].into_iter().flatten().min().map_or(
            Units::ZERO,
            |smallest| {
                let most = Units::from_milli((smallest.milli() as f64 * self.config.units_fraction) as u64);
                let wanted = Units::from_milli(last_units.milli().saturating_mul(2))
                    .max(cost.units.saturating_add(cost.units));
                wanted.min(most).max(cost.units)
            },
        );
        (requests, units)
    }

    /// Decides one call, from this node's slice when it can.
    pub async fn charge<S: CounterStore>(
        &self,
        shared: &S,
        input: CheckInput<'_>,
    ) -> Result<Charged, StoreError> {
        if input.lease_ttl_ms.is_some() {
            return shared.charge(input).await;
        }
        let slot = self.slot(input.key);
        let mut held = slot.lock().await;
        let now = input.now;
        let cost = input.cost;
        if let Some(s) = held.slice.as_mut()
            && now < s.expires
            && s.requests_left >= cost.requests
            && (!s.metered || s.units_left >= cost.units)
        {
            s.requests_left -= cost.requests;
            if s.metered {
                s.units_left = s.units_left.saturating_sub(cost.units);
                s.spent_units = s.spent_units.saturating_add(cost.units);
            }
            return Ok(Charged { decision: Decision { refused: None, limits: corrected(s) }, lease: None });
        }
        if let Some(r) = held.refused
            && now < r.until
            && cost.requests >= r.cost.requests
            && cost.units >= r.cost.units
        {
            let mut decision = r.decision;
            if let Some(refusal) = decision.refused.as_mut() {
                refusal.retry_after_ms = voxgate_core::time::millis_until(now, r.until);
            }
            return Ok(Charged { decision, lease: None });
        }
        held.refused = None;
        // The slice is spent, stale or too small: give it back, then take a new one.
        if let Some(old) = held.slice.take() {
            held.last_requests = old.requests - old.requests_left;
            held.last_units = old.spent_units;
            shared.release_lease(input.key, old.lease, Some(old.spent_units), now, input.tz).await?;
        }
        let (requests, units) = self.size(input.limits, cost, held.last_requests, held.last_units);
        let reserve_limits = ServiceLimits { concurrency: None, ..*input.limits };
        let minute_end = Timestamp::from_secs(now.secs().div_euclid(60) * 60 + 60);
        let expires = now.plus_millis(self.config.slice_ms).min(minute_end);
        let reserved = shared
            .charge(CheckInput {
                limits: &reserve_limits,
                cost: Cost { requests, units },
                // The lease outlives the slice a little, so it is still there to be released.
                lease_ttl_ms: Some(self.config.slice_ms + 60_000),
                ..input
            })
            .await?;
        if let (true, Some((lease, _))) = (reserved.decision.allowed(), reserved.lease) {
            let metered = has_quota(input.limits);
            let s = Slice {
                lease,
                requests,
                requests_left: requests - cost.requests,
                units_left: units.saturating_sub(cost.units),
                spent_units: if metered { cost.units } else { Units::ZERO },
                metered,
                expires,
                report: reserved.decision.limits,
            };
            let limits = corrected(&s);
            held.slice = Some(s);
            return Ok(Charged { decision: Decision { refused: None, limits }, lease: None });
        }
        // Not enough left for a whole slice: ask for less next time, and decide this call
        // alone with the shared store.
        held.last_requests /= 2;
        held.last_units = Units::from_milli(held.last_units.milli() / 2);
        let direct = shared.charge(input).await?;
        if let Some(r) = direct.decision.refused {
            held.refused =
                Some(Refused { until: now.plus_millis(r.retry_after_ms), cost, decision: direct.decision });
        }
        Ok(direct)
    }

    /// Gives every slice back (at shutdown): unspent units are refunded.
    pub async fn return_all<S: CounterStore>(&self, shared: &S, now: Timestamp) -> Result<usize, StoreError> {
        let slots: Vec<(Key, Arc<tokio::sync::Mutex<Slot>>)> =
            self.slots.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut returned = 0;
        for ((app, service), slot) in slots {
            if let Some(s) = slot.lock().await.slice.take() {
                let key = CounterKey { app: &app, service: voxgate_core::ServiceIdx(service) };
                let r = shared
                    .release_lease(key, s.lease, Some(s.spent_units), now, &jiff::tz::TimeZone::UTC)
                    .await?;
                if matches!(r, LeaseRelease::Released(_)) {
                    returned += 1;
                }
            }
        }
        Ok(returned)
    }
}

/// The reservation's report with what the slice still holds added back.
fn corrected(s: &Slice) -> LimitReport {
    let mut out = LimitReport::default();
    for st in s.report.as_slice() {
        let mut st = *st;
        match st.dimension {
            Dimension::Rate => st.remaining += s.requests_left as u64,
            Dimension::Concurrency => continue,
            _ if s.metered => {
                st.remaining += s.units_left.milli();
                st.used = st.used.saturating_sub(s.units_left.milli());
            }
            _ => {}
        }
        st.remaining = st.remaining.min(st.limit);
        out.push(st);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use std::sync::atomic::{AtomicU64, Ordering};
    use voxgate_core::time::{Period, Window};
    use voxgate_core::{RateLimit, ServiceIdx};

    /// A shared store that counts its calls.
    struct Counting {
        inner: MemoryStore,
        calls: AtomicU64,
    }

    impl CounterStore for Counting {
        async fn charge(&self, input: CheckInput<'_>) -> Result<Charged, StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.charge(input).await
        }
        async fn peek(
            &self,
            key: CounterKey<'_>,
            limits: &ServiceLimits,
            now: Timestamp,
            tz: &jiff::tz::TimeZone,
        ) -> Result<LimitReport, StoreError> {
            self.inner.peek(key, limits, now, tz).await
        }
        async fn renew_lease(
            &self,
            key: CounterKey<'_>,
            lease: LeaseId,
            ttl_ms: u64,
            now: Timestamp,
        ) -> Result<Option<Timestamp>, StoreError> {
            self.inner.renew_lease(key, lease, ttl_ms, now).await
        }
        async fn release_lease(
            &self,
            key: CounterKey<'_>,
            lease: LeaseId,
            actual: Option<Units>,
            now: Timestamp,
            tz: &jiff::tz::TimeZone,
        ) -> Result<LeaseRelease, StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.release_lease(key, lease, actual, now, tz).await
        }
        async fn restore(
            &self,
            key: CounterKey<'_>,
            p: Period,
            w: Window,
            used: Units,
        ) -> Result<(), StoreError> {
            self.inner.restore(key, p, w, used).await
        }
    }

    static UTC: jiff::tz::TimeZone = jiff::tz::TimeZone::UTC;

    fn input<'a>(limits: &'a ServiceLimits, units: u64, now: Timestamp) -> CheckInput<'a> {
        CheckInput {
            key: CounterKey { app: "hot", service: ServiceIdx(0) },
            limits,
            cost: Cost { requests: 1, units: Units::whole(units) },
            now,
            tz: &UTC,
            lease_ttl_ms: None,
        }
    }

    #[tokio::test]
    async fn quotas_never_overshoot_and_unspent_units_come_back() {
        let shared = Counting { inner: MemoryStore::new(1), calls: AtomicU64::new(0) };
        let limits = ServiceLimits { daily: Some(Units::whole(1000)), ..Default::default() };
        let nodes: Vec<Slices> =
            (0..3).map(|_| Slices::new(SliceConfig { slice_ms: 100, units_fraction: 0.05 })).collect();
        let mut now = Timestamp::from_secs(1_795_000_000);
        let mut allowed = 0u64;
        for i in 0..3000u64 {
            now = now.plus_millis(7);
            let units = 1 + i % 3;
            if nodes[(i % 3) as usize]
                .charge(&shared, input(&limits, units, now))
                .await
                .unwrap()
                .decision
                .allowed()
            {
                allowed += units;
            }
        }
        assert!(allowed <= 1000, "{allowed}");
        assert!(allowed >= 990, "slices leave at most a few units unused at the end: {allowed}");
        for n in &nodes {
            n.return_all(&shared, now).await.unwrap();
        }
        let report =
            shared.peek(CounterKey { app: "hot", service: ServiceIdx(0) }, &limits, now, &UTC).await.unwrap();
        assert_eq!(
            report.get(Dimension::Daily).unwrap().used,
            allowed * 1000,
            "refunds leave exactly what was spent"
        );
    }

    #[tokio::test]
    async fn rate_overshoot_stays_within_nodes_times_slice() {
        let shared = Counting { inner: MemoryStore::new(1), calls: AtomicU64::new(0) };
        // 100/s, burst 20; slices of 100 ms hold 10 requests.
        let limits =
            ServiceLimits { rate: Some(RateLimit { per_second: 100.0, burst: 20 }), ..Default::default() };
        let nodes: Vec<Slices> =
            (0..3).map(|_| Slices::new(SliceConfig { slice_ms: 100, units_fraction: 0.01 })).collect();
        let start = Timestamp::from_secs(1_795_000_000);
        let mut admitted = Vec::new();
        for i in 0..6000u64 {
            // Three nodes each calling every 0.5 ms: far above the rate.
            let now = Timestamp(start.nanos() + i as i64 * 500_000);
            if nodes[(i % 3) as usize]
                .charge(&shared, input(&limits, 0, now))
                .await
                .unwrap()
                .decision
                .allowed()
            {
                admitted.push(now.nanos());
            }
        }
        let slice_requests = 10; // the most a 100 ms slice can hold at 100/s
        for w_ms in [50i64, 100, 250, 1000] {
            let w = w_ms * 1_000_000;
            let bound = (100 * w_ms / 1000) as usize + 20 + 3 * slice_requests;
            for (i, &t) in admitted.iter().enumerate() {
                let n = admitted[i..].iter().take_while(|&&x| x < t + w).count();
                assert!(n <= bound, "{n} > {bound} in a {w_ms} ms window");
            }
        }
        // Even saturated, refusals are mostly answered locally.
        let calls = shared.calls.load(Ordering::Relaxed);
        assert!(calls * 2 < 6000, "{calls} shared calls for 6000 decisions");
    }

    #[tokio::test]
    async fn a_hot_key_under_its_limit_rarely_goes_to_the_shared_store() {
        let shared = Counting { inner: MemoryStore::new(1), calls: AtomicU64::new(0) };
        let limits = ServiceLimits {
            rate: Some(RateLimit { per_second: 10_000.0, burst: 2_000 }),
            daily: Some(Units::whole(10_000_000)),
            ..Default::default()
        };
        let nodes: Vec<Slices> = (0..3).map(|_| Slices::new(SliceConfig::default())).collect();
        let start = Timestamp::from_secs(1_795_000_000);
        let mut allowed = 0;
        for i in 0..30_000u64 {
            // 6000 calls/s over three nodes, under the 10 000/s limit.
            let now = Timestamp(start.nanos() + i as i64 * 166_667);
            if nodes[(i % 3) as usize]
                .charge(&shared, input(&limits, 1, now))
                .await
                .unwrap()
                .decision
                .allowed()
            {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 30_000);
        let calls = shared.calls.load(Ordering::Relaxed);
        assert!(calls * 50 < 30_000, "{calls} shared calls for 30 000 decisions");
    }
}
