//! Limit dimensions and the effective limits of one app for one service.

use crate::time::Period;
use crate::units::Units;
use serde::{Deserialize, Serialize};

/// One dimension of a limit. Each is counted independently per (app, service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Requests per second with a burst, by GCRA.
    Rate,
    /// Simultaneous leases (streams, sessions, calls).
    Concurrency,
    /// Units per UTC-aligned minute.
    PerMinute,
    /// Units per calendar day in the account's zone.
    Daily,
    /// Units per calendar month in the account's zone.
    Monthly,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Dimension::Rate,
        Dimension::Concurrency,
        Dimension::PerMinute,
        Dimension::Daily,
        Dimension::Monthly,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Dimension::Rate => "rate",
            Dimension::Concurrency => "concurrency",
            Dimension::PerMinute => "per_minute",
            Dimension::Daily => "daily",
            Dimension::Monthly => "monthly",
        }
    }

    /// Whether amounts of this dimension are in the service's unit (milli-units) rather
    /// than in requests or leases.
    pub const fn counts_units(self) -> bool {
        matches!(
            self,
            Dimension::PerMinute | Dimension::Daily | Dimension::Monthly
        )
    }

    pub const fn period(self) -> Option<Period> {
        match self {
            Dimension::PerMinute => Some(Period::Minute),
            Dimension::Daily => Some(Period::Day),
            Dimension::Monthly => Some(Period::Month),
            _ => None,
        }
    }
}

/// A request rate: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    /// GCRA's emission interval: nanoseconds that one request's worth of capacity takes to
    /// come back.
    pub fn emission_ns(&self) -> i64 {
        ((1e9 / self.per_second).round() as i64).max(1)
    }
}

/// Simultaneous leases, each living `lease_ttl_ms` unless renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    pub max: u32,
    pub lease_ttl_ms: u64,
}

/// The effective limits of one app for one service. `None` means no limit on that dimension.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ServiceLimits {
    pub rate: Option<RateLimit>,
    pub concurrency: Option<ConcurrencyLimit>,
    pub per_minute: Option<Units>,
    pub daily: Option<Units>,
    pub monthly: Option<Units>,
}

impl ServiceLimits {
    pub fn quota(&self, dim: Dimension) -> Option<Units> {
        match dim {
            Dimension::PerMinute => self.per_minute,
            Dimension::Daily => self.daily,
            Dimension::Monthly => self.monthly,
            _ => None,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        *self == ServiceLimits::default()
    }
}
