//! The counter-store trait: where the counters of every (app, service) live, and the one
//! atomic operation each store must offer over them.
//!
//! A store receives everything a decision needs — the effective limits, the cost, the time
//! and the account's zone — so it can evaluate all limits of a call in one step: under one
//! lock in memory, in one server-side script in Redis (one round trip).

use crate::catalogue::ServiceIdx;
use crate::decision::{Decision, LimitReport};
use crate::engine::{Cost, LeaseId, Settlement};
use crate::limits::ServiceLimits;
use crate::time::{Period, Timestamp, Window};
use crate::units::Units;
use jiff::tz::TimeZone;
use std::future::Future;

/// Errors from a counter store. Each says whether retrying may help, so the caller's
/// failure policy (allow, deny, fall back) is an explicit choice.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("counter store unavailable: {0}")]
    Unavailable(String),
    #[error("counter store timed out after {0} ms")]
    Timeout(u64),
    #[error("counter store rejected the operation: {0}")]
    Invalid(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// Which counters a call touches.
#[derive(Debug, Clone, Copy)]
pub struct CounterKey<'a> {
    pub app: &'a str,
    pub service: ServiceIdx,
}

/// Everything one decision needs.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    pub key: CounterKey<'a>,
    pub limits: &'a ServiceLimits,
    pub cost: Cost,
    pub now: Timestamp,
    pub tz: &'a TimeZone,
    /// `Some(ttl_ms)` takes a lease (a concurrency slot holding a reservation of the cost).
    pub lease_ttl_ms: Option<u64>,
}

/// The result of [`CounterStore::charge`]: the decision, and the lease taken if one was
/// asked for and the call was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    pub decision: Decision,
    pub lease: Option<(LeaseId, Timestamp)>,
}

/// What releasing a lease did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRelease {
    Released(Settlement),
    /// Unknown, or expired before the release (its reservation stands).
    NotFound,
}

/// A place where counters live. Implementations must make [`CounterStore::charge`] atomic
/// across every limit of the call: all are charged, or none.
pub trait CounterStore: Send + Sync + 'static {
    fn charge(&self, input: CheckInput<'_>) -> impl Future<Output = Result<Charged, StoreError>> + Send;

    /// The state of every limit of one (app, service), charging nothing.
    fn peek(
        &self,
        key: CounterKey<'_>,
        limits: &ServiceLimits,
        now: Timestamp,
        tz: &TimeZone,
    ) -> impl Future<Output = Result<LimitReport, StoreError>> + Send;

    fn renew_lease(
        &self,
        key: CounterKey<'_>,
        lease: LeaseId,
        ttl_ms: u64,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<Timestamp>, StoreError>> + Send;

    fn release_lease(
        &self,
        key: CounterKey<'_>,
        lease: LeaseId,
        actual: Option<Units>,
        now: Timestamp,
        tz: &TimeZone,
    ) -> impl Future<Output = Result<LeaseRelease, StoreError>> + Send;

    /// Seeds a calendar counter from durable usage, keeping the larger of the two.
    fn restore(
        &self,
        key: CounterKey<'_>,
        period: Period,
        window: Window,
        used: Units,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
