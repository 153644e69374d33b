//! What the engine answers: allowed or refused, why, when to retry, and the state of every
//! limit that applied.

use crate::limits::Dimension;
use serde::Serialize;

/// Why a call was refused. Stable, machine-readable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The request rate (GCRA) is spent for now.
    Rate,
    /// A per-minute, daily or monthly quota is spent.
    Quota,
    /// All leases are taken.
    Concurrency,
    /// The app or its account is suspended.
    Suspended,
    /// The platform's capacity is short (reserved for fleet-level shedding).
    Capacity,
}

impl Reason {
    pub const ALL: [Reason; 5] =
        [Reason::Rate, Reason::Quota, Reason::Concurrency, Reason::Suspended, Reason::Capacity];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Rate => "rate",
            Reason::Quota => "quota",
            Reason::Concurrency => "concurrency",
            Reason::Suspended => "suspended",
            Reason::Capacity => "capacity",
        }
    }

    pub const fn of(dim: Dimension) -> Reason {
        match dim {
            Dimension::Rate => Reason::Rate,
            Dimension::Concurrency => Reason::Concurrency,
            Dimension::PerMinute | Dimension::Daily | Dimension::Monthly => Reason::Quota,
        }
    }
}

/// The state of one limit after a decision. Amounts are in requests (rate), leases
/// (concurrency) or milli-units (quotas); see [`Dimension::counts_units`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    pub dimension: Dimension,
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    /// Milliseconds until this limit gives back capacity: the end of the calendar window for
    /// quotas, the return of the next request for rate, the earliest lease expiry for
    /// concurrency (0 when nothing is held).
    pub reset_ms: u64,
    /// The length of the window the limit is counted over, in seconds, for the
    /// `RateLimit-Policy` header.
    pub window_s: u64,
}

impl LimitStatus {
    pub const EMPTY: LimitStatus =
        LimitStatus { dimension: Dimension::Rate, limit: 0, used: 0, remaining: 0, reset_ms: 0, window_s: 0 };
}

/// Every limit that applied to one call, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReport {
    items: [LimitStatus; 5],
    len: u8,
}

impl Default for LimitReport {
    fn default() -> Self {
        LimitReport { items: [LimitStatus::EMPTY; 5], len: 0 }
    }
}

impl LimitReport {
    pub fn push(&mut self, status: LimitStatus) {
        self.items[self.len as usize] = status;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[LimitStatus] {
        &self.items[..self.len as usize]
    }

    pub fn get(&self, dim: Dimension) -> Option<&LimitStatus> {
        self.as_slice().iter().find(|s| s.dimension == dim)
    }
}

/// The engine's answer to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// `None` when allowed.
    pub refused: Option<Refusal>,
    pub limits: LimitReport,
}

/// Why and for how long a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// The limit that refused and binds longest; `None` for `suspended` and `capacity`.
    pub dimension: Option<Dimension>,
    /// How long to wait before the same call could pass; never earlier than the refusing
    /// limit's `reset_ms`.
    pub retry_after_ms: u64,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.refused.is_none()
    }

    /// A refusal that no single limit of the report made (e.g. a spending cap).
    pub fn refused(reason: Reason, retry_after_ms: u64) -> Decision {
        Decision {
            refused: Some(Refusal { reason, dimension: None, retry_after_ms }),
            limits: LimitReport::default(),
        }
    }

    pub fn suspended() -> Decision {
        Decision {
            refused: Some(Refusal { reason: Reason::Suspended, dimension: None, retry_after_ms: 0 }),
            limits: LimitReport::default(),
        }
    }
}
