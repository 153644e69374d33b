//! The counter store a server runs on, chosen at start-up, and what happens when a shared
//! store fails.
//!
//! [`Counters`] is in-memory, or Redis with a per-service failure policy: on a transient
//! error (Redis down, or slower than its timeout budget) a call is either allowed, refused,
//! or decided by a per-node in-memory fallback whose limits are the shared limits divided by
//! the number of nodes. The store reconnects by itself; [`Counters::degraded`] says whether
//! the last call to the shared store failed, for `/readyz` and metrics.

use crate::batch::{Batch, BatchCall, evaluate, evaluate_after, without_concurrency};
use crate::{MemoryStore, RedisStore};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use voxgate_core::engine::Cost;
use voxgate_core::entitlement::LimitValue;
use voxgate_core::store::{Charged, CheckInput, CounterKey, LeaseRelease};
use voxgate_core::time::{Period, Window};
use voxgate_core::{
    CounterStore, Decision, LeaseId, LimitReport, ServiceLimits, StoreError, Timestamp, Units,
};

/// What a service does when the shared counter store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Let the call through (fail open).
    Allow,
    /// Refuse with a store error (fail closed): the caller answers 503.
    #[default]
    Deny,
    /// Decide on this node alone, with each limit divided by the number of nodes.
    Local,
}

impl FailurePolicy {
    pub fn parse(s: &str) -> Option<FailurePolicy> {
        match s {
            "allow" => Some(FailurePolicy::Allow),
            "deny" => Some(FailurePolicy::Deny),
            "local" => Some(FailurePolicy::Local),
            _ => None,
        }
    }
}

pub enum Counters {
    Memory(MemoryStore),
    Shared {
        redis: RedisStore,
        /// Per-node fallback for services whose policy is `local`.
        local: MemoryStore,
        /// Failure policy by service index.
        policies: Vec<FailurePolicy>,
        nodes: u32,
        degraded: AtomicBool,
        failures: AtomicU64,
        /// Set when a call succeeds after a failure; see [`Counters::take_recovered`].
        recovered: AtomicBool,
        /// Local-lease mode for hot keys, when on.
        slices: Option<crate::Slices>,
    },
}

impl Counters {
    pub fn shared(redis: RedisStore, services: usize, policies: Vec<FailurePolicy>, nodes: u32) -> Counters {
        Counters::Shared {
            redis,
            local: MemoryStore::new(services),
            policies,
            nodes: nodes.max(1),
            degraded: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            recovered: AtomicBool::new(false),
            slices: None,
        }
    }

    /// Turns on local-lease mode (see `slices.rs`): decisions of a hot key are spent from a
    /// slice reserved in Redis, with no round trip, within the documented overshoot bound.
    pub fn with_slices(mut self, config: crate::SliceConfig) -> Counters {
        if let Counters::Shared { slices, .. } = &mut self {
            *slices = Some(crate::Slices::new(config));
        }
        self
    }

    /// Gives every local-lease slice back to Redis (at shutdown), refunding unspent units.
    pub async fn return_slices(&self, now: Timestamp) -> Result<usize, StoreError> {
        match self {
            Counters::Shared { redis, slices: Some(slices), .. } => slices.return_all(redis, now).await,
            _ => Ok(0),
        }
    }

    /// Whether the shared store's last call failed.
    pub fn degraded(&self) -> bool {
        match self {
            Counters::Memory(_) => false,
            Counters::Shared { degraded, .. } => degraded.load(Ordering::Relaxed),
        }
    }

    /// Calls to the shared store that failed since start.
    pub fn failures(&self) -> u64 {
        match self {
            Counters::Memory(_) => 0,
            Counters::Shared { failures, .. } => failures.load(Ordering::Relaxed),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Counters::Memory(_) => "memory",
            Counters::Shared { .. } => "redis",
        }
    }

    /// Leases alive at `now` by service index, when this process holds them (in-memory
    /// counters); `None` for a shared store, whose leases live in Redis for every node.
    pub fn active_leases(&self, now: Timestamp) -> Option<Vec<u64>> {
        match self {
            Counters::Memory(m) => Some(m.active_leases(now)),
            Counters::Shared { .. } => None,
        }
    }

    fn note<T>(&self, r: &Result<T, StoreError>) {
        if let Counters::Shared { degraded, failures, recovered, .. } = self {
            let failed = matches!(r, Err(e) if e.is_transient());
            let was = degraded.swap(failed, Ordering::Relaxed);
            if failed {
                failures.fetch_add(1, Ordering::Relaxed);
            } else if was {
                recovered.store(true, Ordering::Relaxed);
            }
        }
    }

    /// True once after the shared store answers again following a failure: it may have
    /// restarted empty, so its calendar counters should be restored from metered usage.
    pub fn take_recovered(&self) -> bool {
        match self {
            Counters::Shared { recovered, .. } => recovered.swap(false, Ordering::Relaxed),
            _ => false,
        }
    }
}

impl Counters {
    /// Decides several calls all or nothing (see [`crate::batch`]).
    ///
    /// In memory this is atomic ([`MemoryStore::charge_all_now`]). On the shared store it is
    /// check-then-charge: every state is read (one peek per call), every call is decided on
    /// those figures — calls on the same (app, service) adding up — and only if all pass are
    /// the calls charged, one by one. A concurrent caller (another request, another node) can
    /// take the last of a limit between the check and a charge: that call is then refused
    /// while the batch's earlier calls stay charged, and the batch reports `committed: false`.
    /// While the shared store fails, the calls are charged one by one under each service's
    /// failure policy, without the check.
    pub async fn charge_all(&self, calls: &[BatchCall<'_>]) -> Result<Batch, StoreError> {
        if let Counters::Memory(m) = self {
            return m.charge_all_now(calls);
        }
        if calls.iter().any(|c| c.input.lease_ttl_ms.is_some()) {
            return Err(StoreError::Invalid("a batch of calls cannot take leases".into()));
        }
        // Check: each call against the state read for it, plus what the batch's earlier
        // calls on the same (app, service) will have charged.
        let mut decisions = Vec::with_capacity(calls.len());
        let mut all_pass = true;
        for (n, c) in calls.iter().enumerate() {
            let i = c.input;
            let report = match self.peek(i.key, i.limits, i.now, i.tz).await {
                Ok(r) => without_concurrency(r),
                Err(e) if e.is_transient() => return self.charge_each(calls).await,
                Err(e) => return Err(e),
            };
            let mut before = Cost { requests: 0, units: Units::ZERO };
            for p in calls[..n].iter().filter(|p| !p.dry_run && same_key(p, c)) {
                before.requests = before.requests.saturating_add(p.input.cost.requests);
                before.units = before.units.saturating_add(p.input.cost.units);
            }
            let refused = evaluate_after(&report, i.limits, before, i.cost);
            all_pass &= refused.is_none();
            decisions.push(Decision { refused, limits: report });
        }
        let mut charged = vec![false; calls.len()];
        if !all_pass {
            return Ok(Batch { committed: false, decisions, charged });
        }
        // Charge.
        let mut committed = true;
        for ((c, d), charged) in calls.iter().zip(&mut decisions).zip(&mut charged) {
            if c.dry_run {
                continue;
            }
            if !committed {
                // Lost a race: charge nothing more.
                break;
            }
            *d = self.charge(c.input).await?.decision;
            *charged = d.allowed();
            committed &= d.allowed();
        }
        Ok(Batch { committed, decisions, charged })
    }

    /// Each call on its own, under the failure policy (dry runs are peeked, or let through).
    async fn charge_each(&self, calls: &[BatchCall<'_>]) -> Result<Batch, StoreError> {
        let mut decisions = Vec::with_capacity(calls.len());
        for c in calls {
            let i = c.input;
            let decision = if c.dry_run {
                match self.peek(i.key, i.limits, i.now, i.tz).await {
                    Ok(r) => {
                        let r = without_concurrency(r);
                        Decision { refused: evaluate(&r, i.limits, i.cost), limits: r }
                    }
                    Err(_) => Decision { refused: None, limits: LimitReport::default() },
                }
            } else {
                self.charge(i).await?.decision
            };
            decisions.push(decision);
        }
        let committed = decisions.iter().all(Decision::allowed);
        let charged = calls.iter().zip(&decisions).map(|(c, d)| !c.dry_run && d.allowed()).collect();
        Ok(Batch { committed, decisions, charged })
    }
}

fn same_key(a: &BatchCall<'_>, b: &BatchCall<'_>) -> bool {
    a.input.key.app == b.input.key.app && a.input.key.service == b.input.key.service
}

/// `limits` with every limit divided by `nodes` (rounded down, at least 1 where the limit
/// was at least 1): this node's share while the shared store is away.
pub fn share(limits: &ServiceLimits, nodes: u32) -> ServiceLimits {
    if nodes <= 1 {
        return *limits;
    }
    let f = 1.0 / nodes as f64;
    let scale = |v: LimitValue| v.scaled(f);
    let mut out = *limits;
    out.rate = limits.rate.map(|r| match scale(LimitValue::Rate(r)) {
        LimitValue::Rate(r) => r,
        _ => r,
    });
    out.concurrency = limits.concurrency.map(|c| match scale(LimitValue::Concurrency(c)) {
        LimitValue::Concurrency(s) => voxgate_core::ConcurrencyLimit { max: s.max.max(c.max.min(1)), ..s },
        _ => c,
    });
    let units = |u: Option<Units>| u.map(|u| Units::from_milli(u.milli() / nodes as u64));
    out.per_minute = units(limits.per_minute);
    out.daily = units(limits.daily);
    out.monthly = units(limits.monthly);
    out
}

impl CounterStore for Counters {
    async fn charge(&self, input: CheckInput<'_>) -> Result<Charged, StoreError> {
        match self {
            Counters::Memory(m) => m.charge(input).await,
            Counters::Shared { redis, local, policies, nodes, slices, .. } => {
                let r = match slices {
                    Some(slices) => slices.charge(redis, input).await,
                    None => redis.charge(input).await,
                };
                self.note(&r);
                match r {
                    Err(e) if e.is_transient() => {
                        match policies.get(input.key.service.0 as usize).copied().unwrap_or_default() {
                            FailurePolicy::Deny => Err(e),
                            // A lease cannot be allowed blind: nothing could renew or release it.
                            FailurePolicy::Allow if input.lease_ttl_ms.is_some() => Err(e),
                            FailurePolicy::Allow => Ok(Charged {
                                decision: Decision { refused: None, limits: LimitReport::default() },
                                lease: None,
                            }),
                            FailurePolicy::Local => {
                                let limits = share(input.limits, *nodes);
                                local.charge(CheckInput { limits: &limits, ..input }).await
                            }
                        }
                    }
                    other => other,
                }
            }
        }
    }

    async fn peek(
        &self,
        key: CounterKey<'_>,
        limits: &ServiceLimits,
        now: Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Result<LimitReport, StoreError> {
        match self {
            Counters::Memory(m) => m.peek(key, limits, now, tz).await,
            Counters::Shared { redis, .. } => {
                let r = redis.peek(key, limits, now, tz).await;
                self.note(&r);
                r
            }
        }
    }

    async fn renew_lease(
        &self,
        key: CounterKey<'_>,
        lease: LeaseId,
        ttl_ms: u64,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        match self {
            Counters::Memory(m) => m.renew_lease(key, lease, ttl_ms, now).await,
            Counters::Shared { redis, .. } => {
                let r = redis.renew_lease(key, lease, ttl_ms, now).await;
                self.note(&r);
                r
            }
        }
    }

    async fn release_lease(
        &self,
        key: CounterKey<'_>,
        lease: LeaseId,
        actual: Option<Units>,
        now: Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Result<LeaseRelease, StoreError> {
        match self {
            Counters::Memory(m) => m.release_lease(key, lease, actual, now, tz).await,
            Counters::Shared { redis, .. } => {
                let r = redis.release_lease(key, lease, actual, now, tz).await;
                self.note(&r);
                r
            }
        }
    }

    async fn restore(
        &self,
        key: CounterKey<'_>,
        period: Period,
        window: Window,
        used: Units,
    ) -> Result<(), StoreError> {
        match self {
            Counters::Memory(m) => m.restore(key, period, window, used).await,
            Counters::Shared { redis, .. } => redis.restore(key, period, window, used).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxgate_core::{ConcurrencyLimit, RateLimit};

    #[test]
    fn a_nodes_share_divides_every_limit() {
        let l = ServiceLimits {
            rate: Some(RateLimit { per_second: 30.0, burst: 60 }),
            concurrency: Some(ConcurrencyLimit { max: 2, lease_ttl_ms: 1000 }),
            per_minute: None,
            daily: Some(Units::whole(900)),
            monthly: None,
        };
        let s = share(&l, 3);
        assert_eq!(s.rate, Some(RateLimit { per_second: 10.0, burst: 20 }));
        assert_eq!(s.concurrency.unwrap().max, 1, "a share never drops a limit of at least 1 to 0");
        assert_eq!(s.daily, Some(Units::whole(300)));
        assert_eq!(share(&l, 1), l);
    }
}
