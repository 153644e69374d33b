//! The counters of one (app, service) and the one function that charges a call against all
//! of its limits at once.
//!
//! Every store keeps one [`ServiceState`] per (app, service) behind whatever makes it atomic
//! (a mutex in memory, a script in Redis) and calls [`ServiceState::charge`]. The rule is
//! evaluate everything, then commit everything or nothing: a refused call leaves every
//! counter as it was.

use crate::decision::{Decision, LimitReport, LimitStatus, Reason, Refusal};
use crate::gcra;
use crate::limits::{Dimension, ServiceLimits};
use crate::time::{Period, Timestamp, Window, millis_until};
use crate::units::Units;
use jiff::tz::TimeZone;

/// What one call consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub requests: u32,
    pub units: Units,
}

impl Default for Cost {
    fn default() -> Self {
        Cost { requests: 1, units: Units::ZERO }
    }
}

/// A store-assigned lease number, unique within one (app, service).
pub type LeaseId = u64;

/// Ask for a lease (a concurrency slot, and a reservation of the call's units that can be
/// settled when it is released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLease {
    pub id: LeaseId,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    id: LeaseId,
    expires: Timestamp,
    reserved: Units,
    /// Starts of the windows the reservation was charged to, so a refund only goes back to
    /// a window that is still current.
    charged: [i64; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counter {
    window: Window,
    used: Units,
}

/// What settling a released lease changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Actual minus reserved, in milli-units: positive is an extra charge, negative a refund.
    pub delta_milli: i64,
    /// Where the delta belongs in metered usage (Unix seconds of a minute): an extra charge
    /// is consumption now; a refund gives back what was charged in the lease's first minute.
    /// Metering it there keeps durable usage in step with the counters above, so a restart
    /// restores the same numbers.
    pub minute: i64,
}

/// All counters of one app for one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceState {
    tat: i64,
    /// Per-minute, daily and monthly usage, in that order.
    counters: [Counter; 3],
    leases: Vec<Lease>,
}

const PERIODS: [(Period, Dimension); 3] = [
    (Period::Minute, Dimension::PerMinute),
    (Period::Day, Dimension::Daily),
    (Period::Month, Dimension::Monthly),
];

impl ServiceState {
    /// Charges `cost` (and takes a lease when asked) if every limit allows it; otherwise
    /// changes nothing and says which limit refused and for how long.
    pub fn charge(
        &mut self,
        limits: &ServiceLimits,
        cost: Cost,
        lease: Option<NewLease>,
        now: Timestamp,
        tz: &TimeZone,
    ) -> Decision {
        self.roll(now, tz);
        let mut refusal: Option<Refusal> = None;
        let mut refuse = |dim: Dimension, wait_ms: u64| {
            let longer = refusal.is_none_or(|r| wait_ms > r.retry_after_ms);
            if longer {
                refusal =
                    Some(Refusal { reason: Reason::of(dim), dimension: Some(dim), retry_after_ms: wait_ms });
            }
        };

        let mut new_tat = self.tat;
        if let Some(rate) = limits.rate
            && cost.requests > 0
        {
            let c = gcra::check(self.tat, now.nanos(), rate.emission_ns(), rate.burst, cost.requests);
            if c.allowed {
                new_tat = c.new_tat;
            } else {
                refuse(Dimension::Rate, (c.wait_ns as u64).div_ceil(1_000_000));
            }
        }
        if let (Some(conc), Some(_)) = (limits.concurrency, lease)
            && self.leases.len() >= conc.max as usize
        {
            refuse(Dimension::Concurrency, self.concurrency_reset_ms(now));
        }
        for (i, (_, dim)) in PERIODS.iter().enumerate() {
            if let Some(limit) = limits.quota(*dim) {
                let c = &self.counters[i];
                let after = c.used.saturating_add(cost.units);
                // An exhausted quota refuses even a call that declares no units: callers that
                // settle later must not slip past a quota that is already spent.
                if after > limit || (cost.units.is_zero() && c.used >= limit) {
                    refuse(*dim, millis_until(now, Timestamp::from_secs(c.window.end)));
                }
            }
        }

        if refusal.is_none() {
            self.tat = new_tat;
            for c in &mut self.counters {
                c.used = c.used.saturating_add(cost.units);
            }
            if let Some(lease) = lease {
                self.leases.push(Lease {
                    id: lease.id,
                    expires: now.plus_millis(lease.ttl_ms),
                    reserved: cost.units,
                    charged: self.counters.map(|c| c.window.start),
                });
            }
        }
        let report = self.report(limits, now, lease.is_some());
        Decision { refused: refusal, limits: report }
    }

    /// The state of every limit, without charging anything.
    pub fn peek(&mut self, limits: &ServiceLimits, now: Timestamp, tz: &TimeZone) -> LimitReport {
        self.roll(now, tz);
        self.report(limits, now, true)
    }

    /// Moves a live lease's expiry to `now + ttl`. `None` when the lease is unknown or has
    /// already expired.
    pub fn renew(&mut self, id: LeaseId, ttl_ms: u64, now: Timestamp) -> Option<Timestamp> {
        self.prune(now);
        let lease = self.leases.iter_mut().find(|l| l.id == id)?;
        lease.expires = now.plus_millis(ttl_ms);
        Some(lease.expires)
    }

    /// Ends a live lease. With `actual`, settles the reservation: an extra charge goes to the
    /// current windows; a refund goes back only to windows that are still the ones charged.
    /// `None` when the lease is unknown or has already expired (its reservation then stands).
    pub fn release(
        &mut self,
        id: LeaseId,
        actual: Option<Units>,
        now: Timestamp,
        tz: &TimeZone,
    ) -> Option<Settlement> {
        self.roll(now, tz);
        let at = self.leases.iter().position(|l| l.id == id)?;
        let lease = self.leases.swap_remove(at);
        let now_minute = now.secs().div_euclid(60) * 60;
        let Some(actual) = actual else {
            return Some(Settlement { delta_milli: 0, minute: now_minute });
        };
        let delta = actual.milli() as i64 - lease.reserved.milli() as i64;
        for (c, charged) in self.counters.iter_mut().zip(lease.charged) {
            if delta > 0 || c.window.start == charged {
                c.used = c.used.apply_delta(delta);
            }
        }
        let minute = if delta > 0 { now_minute } else { lease.charged[0] };
        Some(Settlement { delta_milli: delta, minute })
    }

    /// Sets a calendar counter from durable usage (at start-up), keeping the larger of what
    /// is here and what was recorded.
    pub fn restore(&mut self, period: Period, window: Window, used: Units) {
        let i = PERIODS.iter().position(|(p, _)| *p == period).unwrap_or(0);
        let c = &mut self.counters[i];
        if c.window != window {
            *c = Counter { window, used };
        } else if used > c.used {
            c.used = used;
        }
    }

    /// Number of leases alive at `now`.
    pub fn active_leases(&self, now: Timestamp) -> usize {
        self.leases.iter().filter(|l| l.expires > now).count()
    }

    fn roll(&mut self, now: Timestamp, tz: &TimeZone) {
        let secs = now.secs();
        for (c, (period, _)) in self.counters.iter_mut().zip(PERIODS) {
            if !c.window.contains(secs) {
                let window = period.window(now, tz);
                // A clock that steps back inside the previous window keeps that window's count.
                if window.start >= c.window.end {
                    *c = Counter { window, used: Units::ZERO };
                }
            }
        }
        self.prune(now);
    }

    fn prune(&mut self, now: Timestamp) {
        self.leases.retain(|l| l.expires > now);
    }

    fn concurrency_reset_ms(&self, now: Timestamp) -> u64 {
        self.leases.iter().map(|l| millis_until(now, l.expires)).min().unwrap_or(0)
    }

    fn report(&self, limits: &ServiceLimits, now: Timestamp, with_concurrency: bool) -> LimitReport {
        let mut report = LimitReport::default();
        if let Some(rate) = limits.rate {
            let t = rate.emission_ns();
            let (remaining, next_ns) = gcra::remaining(self.tat, now.nanos(), t, rate.burst);
            report.push(LimitStatus {
                dimension: Dimension::Rate,
                limit: rate.burst as u64,
                used: (rate.burst - remaining) as u64,
                remaining: remaining as u64,
                reset_ms: (next_ns as u64).div_ceil(1_000_000),
                window_s: ((rate.burst as f64 / rate.per_second).ceil() as u64).max(1),
            });
        }
        if let (Some(conc), true) = (limits.concurrency, with_concurrency) {
            let used = self.active_leases(now) as u64;
            report.push(LimitStatus {
                dimension: Dimension::Concurrency,
                limit: conc.max as u64,
                used,
                remaining: (conc.max as u64).saturating_sub(used),
                reset_ms: self.concurrency_reset_ms(now),
                window_s: conc.lease_ttl_ms.div_ceil(1000),
            });
        }
        for (c, (_, dim)) in self.counters.iter().zip(PERIODS) {
            if let Some(limit) = limits.quota(dim) {
                report.push(LimitStatus {
                    dimension: dim,
                    limit: limit.milli(),
                    used: c.used.milli(),
                    remaining: limit.saturating_sub(c.used).milli(),
                    reset_ms: millis_until(now, Timestamp::from_secs(c.window.end)),
                    window_s: (c.window.end - c.window.start).max(0) as u64,
                });
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{ConcurrencyLimit, RateLimit};
    use proptest::prelude::*;

    const SEC: i64 = 1_000_000_000;

    fn limits() -> ServiceLimits {
        ServiceLimits {
            rate: Some(RateLimit { per_second: 10.0, burst: 5 }),
            concurrency: Some(ConcurrencyLimit { max: 2, lease_ttl_ms: 30_000 }),
            per_minute: None,
            daily: Some(Units::whole(100)),
            monthly: Some(Units::whole(1000)),
        }
    }

    fn cost(units: u64) -> Cost {
        Cost { requests: 1, units: Units::whole(units) }
    }

    fn utc(s: &str) -> Timestamp {
        Timestamp::from_jiff(s.parse::<jiff::Timestamp>().unwrap())
    }

    #[test]
    fn quota_refusal_consumes_nothing_and_points_at_midnight() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let mut s = ServiceState::default();
        let now = utc("2026-11-27T15:00:00Z"); // 23:00 in Shanghai
        assert!(s.charge(&limits(), cost(90), None, now, &tz).allowed());
        let before = s.clone();
        let d = s.charge(&limits(), cost(20), None, now.plus_millis(1000), &tz);
        let r = d.refused.unwrap();
        assert_eq!((r.reason, r.dimension), (Reason::Quota, Some(Dimension::Daily)));
        assert_eq!(r.retry_after_ms, 3_599_000);
        let daily = d.limits.get(Dimension::Daily).unwrap();
        assert_eq!(daily.remaining, 10_000);
        assert!(r.retry_after_ms >= daily.reset_ms);
        assert_eq!(s.tat, before.tat);
        assert_eq!(s.counters, before.counters);
        // After local midnight the day starts afresh; the month keeps counting.
        let d = s.charge(&limits(), cost(20), None, utc("2026-11-27T16:00:00Z"), &tz);
        assert!(d.allowed());
        assert_eq!(d.limits.get(Dimension::Daily).unwrap().used, 20_000);
        assert_eq!(d.limits.get(Dimension::Monthly).unwrap().used, 110_000);
    }

    #[test]
    fn monthly_quota_resets_at_local_month_end() {
        let tz = TimeZone::get("America/New_York").unwrap();
        let mut s = ServiceState::default();
        let l = ServiceLimits { monthly: Some(Units::whole(10)), ..Default::default() };
        let end_of_jan = utc("2027-02-01T04:59:00Z"); // 23:59 on 31 January in New York
        assert!(s.charge(&l, cost(10), None, end_of_jan, &tz).allowed());
        let r = s.charge(&l, cost(1), None, end_of_jan, &tz).refused.unwrap();
        assert_eq!(r.retry_after_ms, 60_000);
        assert!(s.charge(&l, cost(10), None, utc("2027-02-01T05:00:00Z"), &tz).allowed());
    }

    #[test]
    fn daily_quota_spans_a_25_hour_dst_day() {
        // Berlin falls back on 2026-10-25: that local day runs 22:00Z on the 24th to 23:00Z
        // on the 25th.
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let mut s = ServiceState::default();
        let l = ServiceLimits { daily: Some(Units::whole(10)), ..Default::default() };
        assert!(s.charge(&l, cost(10), None, utc("2026-10-24T22:30:00Z"), &tz).allowed());
        let late = s.charge(&l, cost(1), None, utc("2026-10-25T22:59:00Z"), &tz);
        assert_eq!(late.refused.unwrap().retry_after_ms, 60_000);
        assert_eq!(late.limits.get(Dimension::Daily).unwrap().window_s, 25 * 3600);
        assert!(s.charge(&l, cost(1), None, utc("2026-10-25T23:00:00Z"), &tz).allowed());
    }

    #[test]
    fn exhausted_quota_refuses_zero_unit_calls() {
        let tz = TimeZone::UTC;
        let mut s = ServiceState::default();
        let l = ServiceLimits { daily: Some(Units::whole(1)), ..Default::default() };
        assert!(s.charge(&l, cost(0), None, Timestamp(0), &tz).allowed());
        assert!(s.charge(&l, cost(1), None, Timestamp(0), &tz).allowed());
        assert!(!s.charge(&l, cost(0), None, Timestamp(0), &tz).allowed());
    }

    #[test]
    fn leases_fill_expire_renew_and_release() {
        let tz = TimeZone::UTC;
        let mut s = ServiceState::default();
        let l = limits();
        let lease = |id| Some(NewLease { id, ttl_ms: 30_000 });
        let t0 = Timestamp::from_secs(1_000);
        assert!(s.charge(&l, cost(1), lease(1), t0, &tz).allowed());
        assert!(s.charge(&l, cost(1), lease(2), t0, &tz).allowed());
        let d = s.charge(&l, cost(1), lease(3), t0, &tz);
        let r = d.refused.unwrap();
        assert_eq!(r.reason, Reason::Concurrency);
        assert_eq!(r.retry_after_ms, 30_000);
        // A plain check does not need a slot.
        assert!(s.charge(&l, cost(1), None, t0.plus_millis(200), &tz).allowed());
        // Renewing lease 1 keeps it; lease 2 expires; a third fits.
        let t1 = t0.plus_millis(20_000);
        assert_eq!(s.renew(1, 30_000, t1), Some(t1.plus_millis(30_000)));
        let t2 = t0.plus_millis(31_000);
        assert_eq!(s.active_leases(t2), 1);
        assert!(s.charge(&l, cost(1), lease(3), t2, &tz).allowed());
        assert_eq!(s.renew(2, 30_000, t2), None);
        assert!(s.release(2, None, t2, &tz).is_none());
        assert_eq!(s.release(1, None, t2, &tz).map(|s| s.delta_milli), Some(0));
        assert_eq!(s.active_leases(t2), 1);
    }

    #[test]
    fn settling_refunds_and_extra_charges() {
        let tz = TimeZone::UTC;
        let mut s = ServiceState::default();
        let l = limits();
        let t0 = Timestamp::from_secs(10);
        s.charge(&l, cost(30), Some(NewLease { id: 7, ttl_ms: 60_000 }), t0, &tz);
        let st = s.release(7, Some(Units::from_milli(12_500)), t0.plus_millis(5000), &tz);
        // The refund belongs to the minute the reservation was charged in.
        assert_eq!(st, Some(Settlement { delta_milli: -17_500, minute: 0 }));
        assert_eq!(s.peek(&l, t0, &tz).get(Dimension::Daily).unwrap().used, 12_500);
        s.charge(&l, cost(10), Some(NewLease { id: 8, ttl_ms: 60_000 }), t0, &tz);
        s.release(8, Some(Units::whole(40)), t0, &tz);
        assert_eq!(s.peek(&l, t0, &tz).get(Dimension::Daily).unwrap().used, 52_500);
    }

    #[test]
    fn refund_does_not_reach_into_a_new_day() {
        let tz = TimeZone::UTC;
        let mut s = ServiceState::default();
        let l = limits();
        let late = utc("2026-11-27T23:59:00Z");
        s.charge(&l, cost(50), Some(NewLease { id: 1, ttl_ms: 600_000 }), late, &tz);
        let next_day = utc("2026-11-28T00:01:00Z");
        s.charge(&l, cost(5), None, next_day, &tz);
        s.release(1, Some(Units::ZERO), next_day, &tz);
        let report = s.peek(&l, next_day, &tz);
        assert_eq!(report.get(Dimension::Daily).unwrap().used, 5_000);
        // The month was charged in the same window, so it gets the refund.
        assert_eq!(report.get(Dimension::Monthly).unwrap().used, 5_000);
    }

    #[test]
    fn rate_refusal_waits_for_the_next_request() {
        let tz = TimeZone::UTC;
        let mut s = ServiceState::default();
        let l = ServiceLimits { rate: Some(RateLimit { per_second: 2.0, burst: 1 }), ..Default::default() };
        assert!(s.charge(&l, cost(0), None, Timestamp(0), &tz).allowed());
        let d = s.charge(&l, cost(0), None, Timestamp(SEC / 10), &tz);
        let r = d.refused.unwrap();
        assert_eq!((r.reason, r.retry_after_ms), (Reason::Rate, 400));
        assert_eq!(d.limits.get(Dimension::Rate).unwrap().reset_ms, 400);
    }

    proptest! {
        /// Whatever the call, a refusal leaves every counter as it was.
        #[test]
        fn refused_calls_change_no_counter(
            calls in proptest::collection::vec((0u32..4, 0u64..40, 0i64..400, proptest::bool::ANY), 1..200),
        ) {
            let tz = TimeZone::UTC;
            let l = limits();
            let mut s = ServiceState::default();
            let mut now = Timestamp::from_secs(1_700_000_000);
            for (i, (requests, units, gap_ms, lease)) in calls.into_iter().enumerate() {
                now = now.plus_millis(gap_ms as u64);
                s.roll(now, &tz);
                let before = s.clone();
                let lease = lease.then_some(NewLease { id: i as u64, ttl_ms: 1_000 });
                let d = s.charge(&l, Cost { requests, units: Units::whole(units) }, lease, now, &tz);
                if !d.allowed() {
                    prop_assert_eq!(&s, &before);
                    let r = d.refused.unwrap();
                    let binding = d.limits.get(r.dimension.unwrap()).unwrap();
                    prop_assert!(r.retry_after_ms >= binding.reset_ms);
                } else {
                    let daily = d.limits.get(Dimension::Daily).unwrap();
                    prop_assert!(daily.used <= daily.limit);
                }
            }
        }
    }
}
