//! The in-memory counter store: one small mutex per (app, service), in shards keyed by app.
//!
//! A decision takes the shard's read lock (shared by every app in the shard), then the
//! (app, service) mutex for the few comparisons of [`ServiceState::charge`]. Contention is
//! per app and service; the shard's write lock is taken only the first time an app is seen.

use crate::batch::{Batch, BatchCall, without_concurrency};
use foldhash::fast::RandomState;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::collections::HashMap;
use std::hash::BuildHasher;
use voxgate_core::engine::NewLease;
use voxgate_core::store::{Charged, CheckInput, CounterKey, LeaseRelease};
use voxgate_core::time::{Period, Window};
use voxgate_core::{
    CounterStore, Decision, LeaseId, LimitReport, ServiceLimits, ServiceState, StoreError, Timestamp, Units,
};

const SHARDS: usize = 64;

type Shard = RwLock<HashMap<Box<str>, Box<[Mutex<ServiceState>]>, RandomState>>;

/// Counters held in this process. Fast, and lost when the process stops: daily and monthly
/// counters are restored from the registry's durable usage at start-up.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    hasher: RandomState,
    services: usize,
}

impl MemoryStore {
    /// A store for a catalogue of `services` services.
    pub fn new(services: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::with_hasher(RandomState::default()))).collect(),
            hasher: RandomState::default(),
            services,
        }
    }

    /// Runs `f` on the state of one (app, service) under its lock, creating it if needed.
    /// `None` when the service index is outside the catalogue.
    pub fn with_state<R>(&self, key: CounterKey<'_>, f: impl FnOnce(&mut ServiceState) -> R) -> Option<R> {
        let idx = key.service.0 as usize;
        if idx >= self.services {
            return None;
        }
        let shard = &self.shards[self.shard_of(key.app)];
        {
            let map = shard.read();
            if let Some(states) = map.get(key.app) {
                return Some(f(&mut states[idx].lock()));
            }
        }
        let mut map = shard.write();
        let states = map
            .entry(key.app.into())
            .or_insert_with(|| (0..self.services).map(|_| Mutex::new(ServiceState::default())).collect());
        Some(f(&mut states[idx].lock()))
    }

    /// The shard of an app. The top bits pick it; the map inside uses its own seed, so the two
    /// do not correlate.
    fn shard_of(&self, app: &str) -> usize {
        (self.hasher.hash_one(app) >> 58) as usize % SHARDS
    }

    /// Decides several calls at once, all or nothing (see [`crate::batch`]): every call passes
    /// and the calls that are not dry runs are charged, or nothing is charged.
    ///
    /// Atomic against every other caller: the (app, service) states of the batch are locked
    /// together — shard read locks in shard order, then the state mutexes in (shard, app,
    /// service) order, the same global order for every batch, so two batches cannot deadlock
    /// and a single-key call (which holds one shard lock, then one mutex) cannot either.
    /// Calls are decided in order on copies of the states, so two calls on the same
    /// (app, service) add up; the copies replace the states only when all pass.
    pub fn charge_all_now(&self, calls: &[BatchCall<'_>]) -> Result<Batch, StoreError> {
        for c in calls {
            if c.input.lease_ttl_ms.is_some() {
                return Err(StoreError::Invalid("a batch of calls cannot take leases".into()));
            }
            if c.input.key.service.0 as usize >= self.services {
                return Err(unknown_service(c.input.key));
            }
        }
        if let [one] = calls
            && !one.dry_run
        {
            // One call is already all or nothing.
            let decision = self.charge_now(one.input)?.decision;
            let committed = decision.allowed();
            return Ok(Batch { committed, decisions: vec![decision], charged: vec![committed] });
        }
        for c in calls {
            self.with_state(c.input.key, |_| ());
        }
        let mut keys: Vec<(usize, &str, u16)> = calls
            .iter()
            .map(|c| (self.shard_of(c.input.key.app), c.input.key.app, c.input.key.service.0))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut shard_ids: Vec<usize> = keys.iter().map(|k| k.0).collect();
        shard_ids.dedup();
        let maps: Vec<(usize, RwLockReadGuard<'_, _>)> =
            shard_ids.iter().map(|&i| (i, self.shards[i].read())).collect();
        let mut locked: Vec<MutexGuard<'_, ServiceState>> = Vec::with_capacity(keys.len());
        for (shard, app, service) in &keys {
            let states = maps
                .iter()
                .find(|(i, _)| i == shard)
                .and_then(|(_, map)| map.get(*app))
                .ok_or_else(|| StoreError::Invalid(format!("counters of app `{app}` vanished")))?;
            locked.push(states[*service as usize].lock());
        }
        let slot = |c: &BatchCall<'_>| {
            let k = (self.shard_of(c.input.key.app), c.input.key.app, c.input.key.service.0);
            keys.binary_search(&k).unwrap_or(0)
        };
        let mut work: Vec<ServiceState> = locked.iter().map(|g| (**g).clone()).collect();
        let mut decisions = Vec::with_capacity(calls.len());
        for c in calls {
            let i = c.input;
            let state = &mut work[slot(c)];
            let decision = if c.dry_run {
                state.clone().charge(i.limits, i.cost, None, i.now, i.tz)
            } else {
                state.charge(i.limits, i.cost, None, i.now, i.tz)
            };
            decisions.push(decision);
        }
        let committed = decisions.iter().all(Decision::allowed);
        if committed {
            for (guard, state) in locked.iter_mut().zip(work) {
                **guard = state;
            }
        } else {
            for (c, d) in calls.iter().zip(&mut decisions) {
                if d.allowed() {
                    let i = c.input;
                    d.limits = without_concurrency(locked[slot(c)].peek(i.limits, i.now, i.tz));
                }
            }
        }
        let charged = calls.iter().map(|c| committed && !c.dry_run).collect();
        Ok(Batch { committed, decisions, charged })
    }

    /// The synchronous core of [`CounterStore::charge`]; the in-memory store never waits.
    pub fn charge_now(&self, input: CheckInput<'_>) -> Result<Charged, StoreError> {
        let lease = input.lease_ttl_ms.map(|ttl_ms| NewLease { id: rand::random::<u64>() >> 1, ttl_ms });
        self.with_state(input.key, |state| {
            let decision = state.charge(input.limits, input.cost, lease, input.now, input.tz);
            let lease = lease.filter(|_| decision.allowed()).map(|l| (l.id, input.now.plus_millis(l.ttl_ms)));
            Charged { decision, lease }
        })
        .ok_or_else(|| unknown_service(input.key))
    }

    /// Number of apps with counters, for metrics and tests.
    pub fn apps(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Leases alive at `now`, by service index, over every app: for metrics, sampled at
    /// scrape. Locks each (app, service) state in turn (never two at once), so it is O(apps ×
    /// services) short critical sections, not a pause of the decision path.
    pub fn active_leases(&self, now: Timestamp) -> Vec<u64> {
        let mut out = vec![0u64; self.services];
        for shard in self.shards.iter() {
            for states in shard.read().values() {
                for (n, state) in out.iter_mut().zip(states.iter()) {
                    *n += state.lock().active_leases(now) as u64;
                }
            }
        }
        out
    }
}

pub(crate) fn unknown_service(key: CounterKey<'_>) -> StoreError {
    StoreError::Invalid(format!("service index {} is outside the catalogue", key.service.0))
}

impl CounterStore for MemoryStore {
    async fn charge(&self, input: CheckInput<'_>) -> Result<Charged, StoreError> {
        self.charge_now(input)
    }

    async fn peek(
        &self,
        key: CounterKey<'_>,
        limits: &ServiceLimits,
        now: Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Result<LimitReport, StoreError> {
        self.with_state(key, |s| s.peek(limits, now, tz)).ok_or_else(|| unknown_service(key))
    }

    async fn renew_lease(
        &self,
        key: CounterKey<'_>,
        lease: LeaseId,
        ttl_ms: u64,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.with_state(key, |s| s.renew(lease, ttl_ms, now)).ok_or_else(|| unknown_service(key))
    }

    async fn release_lease(
        &self,
        key: CounterKey<'_>,
        lease: LeaseId,
        actual: Option<Units>,
        now: Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Result<LeaseRelease, StoreError> {
        let settled = self
            .with_state(key, |s| s.release(lease, actual, now, tz))
            .ok_or_else(|| unknown_service(key))?;
        Ok(settled.map_or(LeaseRelease::NotFound, LeaseRelease::Released))
    }

    async fn restore(
        &self,
        key: CounterKey<'_>,
        period: Period,
        window: Window,
        used: Units,
    ) -> Result<(), StoreError> {
        self.with_state(key, |s| s.restore(period, window, used)).ok_or_else(|| unknown_service(key))
    }
}
