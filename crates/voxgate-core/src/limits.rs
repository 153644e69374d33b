//! Limit dimensions and the effective limits of one app for one service.

use crate::time::Period;
use crate::units::Units;
use serde::{Deserialize, Serialize};

/// One dimension of a limit. Each is counted independently per (app, service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
    pub const ALL: [Dimension; 5] =
        [Dimension::Rate, Dimension::Concurrency, Dimension::PerMinute, Dimension::Daily, Dimension::Monthly];

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
        matches!(self, Dimension::PerMinute | Dimension::Daily | Dimension::Monthly)
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

    /// The dimension that no amount of waiting would let this call pass, if any: more
    /// requests than the burst, more units than a quota holds (or a quota of zero), a lease
    /// where no lease is allowed. Such a call needs a smaller cost or a bigger limit.
    pub fn unreachable(&self, requests: u32, units: Units, lease: bool) -> Option<Dimension> {
        if let Some(rate) = self.rate
            && requests > rate.burst
        {
            return Some(Dimension::Rate);
        }
        if let Some(c) = self.concurrency
            && lease
            && c.max == 0
        {
            return Some(Dimension::Concurrency);
        }
        [Dimension::PerMinute, Dimension::Daily, Dimension::Monthly]
            .into_iter()
            .find(|d| self.quota(*d).is_some_and(|limit| units > limit || limit.is_zero()))
    }

    pub fn is_unlimited(&self) -> bool {
        *self == ServiceLimits::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_calls_that_can_never_pass() {
        let l = ServiceLimits {
            rate: Some(RateLimit { per_second: 1.0, burst: 5 }),
            concurrency: Some(ConcurrencyLimit { max: 0, lease_ttl_ms: 1000 }),
            per_minute: None,
            daily: Some(Units::whole(10)),
            monthly: Some(Units::whole(100)),
        };
        assert_eq!(l.unreachable(5, Units::whole(10), false), None);
        assert_eq!(l.unreachable(6, Units::ZERO, false), Some(Dimension::Rate));
        assert_eq!(l.unreachable(1, Units::ZERO, true), Some(Dimension::Concurrency));
        assert_eq!(l.unreachable(1, Units::from_milli(10_001), false), Some(Dimension::Daily));
        let closed = ServiceLimits { monthly: Some(Units::ZERO), ..Default::default() };
        assert_eq!(closed.unreachable(1, Units::ZERO, false), Some(Dimension::Monthly));
    }
}
