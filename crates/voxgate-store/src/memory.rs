//! The in-memory counter store: one small mutex per (app, service), in shards keyed by app.
//!
//! A decision takes the shard's read lock (shared by every app in the shard), then the
//! (app, service) mutex for the few comparisons of [`ServiceState::charge`]. Contention is
//! per app and service; the shard's write lock is taken only the first time an app is seen.

use foldhash::fast::RandomState;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::hash::BuildHasher;
use voxgate_core::engine::NewLease;
use voxgate_core::store::{Charged, CheckInput, CounterKey, LeaseRelease};
use voxgate_core::time::{Period, Window};
use voxgate_core::{
    CounterStore, LeaseId, LimitReport, ServiceLimits, ServiceState, StoreError, Timestamp, Units,
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
        // The top bits pick the shard; the map inside uses its own seed, so the two do not correlate.
        let shard = &self.shards[(self.hasher.hash_one(key.app) >> 58) as usize % SHARDS];
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
