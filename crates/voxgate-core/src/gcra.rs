//! The generic cell rate algorithm: one theoretical arrival time (TAT) per key.
//!
//! With emission interval `T` and burst `b`, a request of cost `n` is allowed when
//! `max(TAT, now) + n·T - now <= b·T`; then `TAT = max(TAT, now) + n·T`. A refused request
//! leaves `TAT` untouched.

/// The outcome of asking GCRA about `cost` requests at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraCheck {
    pub allowed: bool,
    /// The TAT to store if the whole call is allowed.
    pub new_tat: i64,
    /// Nanoseconds until a call of this cost would fit (0 when allowed).
    pub wait_ns: i64,
}

pub fn check(tat: i64, now: i64, emission_ns: i64, burst: u32, cost: u32) -> GcraCheck {
    let base = tat.max(now);
    let new_tat = base.saturating_add(emission_ns.saturating_mul(cost as i64));
    let horizon = now.saturating_add(emission_ns.saturating_mul(burst as i64));
    if new_tat <= horizon {
        GcraCheck { allowed: true, new_tat, wait_ns: 0 }
    } else {
        GcraCheck { allowed: false, new_tat, wait_ns: new_tat - horizon }
    }
}

/// Requests that could be made right now, and nanoseconds until one more comes back
/// (0 when the bucket is full).
pub fn remaining(tat: i64, now: i64, emission_ns: i64, burst: u32) -> (u32, i64) {
    let used_ns = (tat - now).max(0);
    if used_ns == 0 {
        return (burst, 0);
    }
    let used = (used_ns + emission_ns - 1) / emission_ns;
    let remaining = (burst as i64 - used).max(0) as u32;
    let next = used_ns - (used - 1) * emission_ns;
    (remaining, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn allows_a_burst_then_paces() {
        // 10 per second, burst 5.
        let t = SEC / 10;
        let mut tat = 0;
        for _ in 0..5 {
            let c = check(tat, 0, t, 5, 1);
            assert!(c.allowed);
            tat = c.new_tat;
        }
        let refused = check(tat, 0, t, 5, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.wait_ns, t);
        assert_eq!(remaining(tat, 0, t, 5), (0, t));
        assert!(check(tat, t, t, 5, 1).allowed);
    }

    #[test]
    fn cost_larger_than_burst_never_fits() {
        assert!(!check(0, 0, SEC, 3, 4).allowed);
        assert!(check(0, 0, SEC, 3, 3).allowed);
    }

    proptest! {
        /// In any window of length `w`, GCRA never admits more than `rate·w + burst` requests.
        #[test]
        fn never_exceeds_rate_times_window_plus_burst(
            per_second in 1u32..200,
            burst in 1u32..50,
            gaps in proptest::collection::vec(0i64..50_000_000, 1..400),
            costs in proptest::collection::vec(1u32..4, 1..400),
            window_ms in 1i64..3_000,
        ) {
            let t = SEC / per_second as i64;
            let mut tat = 0i64;
            let mut now = 0i64;
            let mut admitted: Vec<(i64, u32)> = Vec::new();
            for (gap, cost) in gaps.iter().zip(costs.iter().cycle()) {
                now += gap;
                let c = check(tat, now, t, burst, *cost);
                if c.allowed {
                    tat = c.new_tat;
                    admitted.push((now, *cost));
                }
            }
            let w = window_ms * 1_000_000;
            for (i, &(start, _)) in admitted.iter().enumerate() {
                let in_window: u64 = admitted[i..]
                    .iter()
                    .take_while(|(at, _)| *at < start + w)
                    .map(|(_, c)| *c as u64)
                    .sum();
                let bound = (w as f64 / t as f64).ceil() as u64 + burst as u64;
                prop_assert!(in_window <= bound, "{in_window} > {bound}");
            }
        }
    }
}
