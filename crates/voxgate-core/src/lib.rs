//! voxgate's decision engine: what a service, a limit and a decision are, how limits are
//! evaluated (GCRA, calendar quotas, leases), how entitlements resolve to effective limits,
//! and the counter-store trait that every store implements.
//!
//! Nothing here reads a clock, a file or a socket: time comes in as a [`Timestamp`] argument
//! and the catalogue comes in as text, so every rule is testable with plain values.

pub mod adjust;
pub mod catalogue;
pub mod decision;
pub mod engine;
pub mod entitlement;
pub mod gcra;
pub mod increase;
pub mod limits;
pub mod schedule;
pub mod sizing;
pub mod store;
pub mod time;
pub mod units;

pub use catalogue::{Catalogue, CatalogueError, ServiceIdx};
pub use decision::{Decision, LimitReport, LimitStatus, Reason};
pub use engine::{Cost, LeaseId, ServiceState};
pub use entitlement::{EffectiveLimits, Explanation, Layer, LayerKind, Op};
pub use limits::{ConcurrencyLimit, Dimension, RateLimit, ServiceLimits};
pub use store::{CheckInput, CounterStore, LeaseRelease, StoreError};
pub use time::Timestamp;
pub use units::{Units, UnitsError};
