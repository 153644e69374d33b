//! Automatic adjustment: an app whose use of a limit stays above a high-water mark for a
//! sustained period gets the limit raised by a step, up to its tier's ceiling; when use stays
//! below a low-water mark it decays by a step, never below the limit it would have without
//! adjustment. Pure arithmetic over a small state; the server stores the state and applies
//! the factor as a resolver layer.

use crate::limits::Dimension;
use serde::Serialize;

/// A plan's rules for automatic adjustment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoAdjust {
    pub dimensions: Vec<Dimension>,
    /// 0.1 = raise (or lower) by 10 % per step.
    pub step: f64,
    pub high_water: f64,
    pub low_water: f64,
    /// How long use must stay above (below) the mark before a step, in milliseconds.
    pub sustain_ms: i64,
}

/// Where one (app, service, dimension) stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct State {
    /// Multiplies the unadjusted limit; at least 1.
    pub factor: f64,
    pub high_since: Option<i64>,
    pub low_since: Option<i64>,
}

impl Default for State {
    fn default() -> Self {
        State { factor: 1.0, high_since: None, low_since: None }
    }
}

/// One observation: `utilisation` (used ÷ limit) at `now_ms`. `max_factor` is how far the
/// ceiling allows the unadjusted limit to grow. Returns the new state.
pub fn observe(rules: &AutoAdjust, s: State, utilisation: f64, now_ms: i64, max_factor: f64) -> State {
    let mut next = s;
    if utilisation >= rules.high_water {
        next.low_since = None;
        let since = *next.high_since.get_or_insert(now_ms);
        if now_ms - since >= rules.sustain_ms && s.factor < max_factor {
            next.factor = (s.factor * (1.0 + rules.step)).min(max_factor.max(1.0));
            // The next step needs another sustained period at the new limit.
            next.high_since = Some(now_ms);
        }
    } else if utilisation < rules.low_water {
        next.high_since = None;
        let since = *next.low_since.get_or_insert(now_ms);
        if now_ms - since >= rules.sustain_ms && s.factor > 1.0 {
            next.factor = (s.factor / (1.0 + rules.step)).max(1.0);
            next.low_since = Some(now_ms);
        }
    } else {
        next.high_since = None;
        next.low_since = None;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AutoAdjust {
        AutoAdjust {
            dimensions: vec![Dimension::Concurrency],
            step: 0.1,
            high_water: 0.7,
            low_water: 0.5,
            sustain_ms: 60_000,
        }
    }

    #[test]
    fn raises_after_sustained_high_use_up_to_the_ceiling_and_decays() {
        let r = rules();
        let mut s = State::default();
        // High from t=0; one step at 60 s, another at 120 s; capped at 1.2.
        for t in (0..=300_000).step_by(10_000) {
            s = observe(&r, s, 0.9, t, 1.2);
            if t == 50_000 {
                assert_eq!(s.factor, 1.0, "not sustained yet");
            }
            if t == 60_000 {
                assert!((s.factor - 1.1).abs() < 1e-9);
            }
        }
        assert!((s.factor - 1.2).abs() < 1e-9, "{}", s.factor);
        // A dip into the middle band resets the clocks.
        s = observe(&r, s, 0.6, 310_000, 1.2);
        assert_eq!((s.high_since, s.low_since), (None, None));
        // Low use decays it step by step, never below 1.
        for t in (320_000..=900_000).step_by(10_000) {
            s = observe(&r, s, 0.1, t, 1.2);
        }
        assert_eq!(s.factor, 1.0);
    }

    #[test]
    fn short_bursts_do_not_raise() {
        let r = rules();
        let mut s = State::default();
        for (i, t) in (0..600_000).step_by(10_000).enumerate() {
            let u = if i % 5 == 4 { 0.6 } else { 0.9 };
            s = observe(&r, s, u, t, 2.0);
        }
        assert_eq!(s.factor, 1.0);
    }
}
