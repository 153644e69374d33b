//! Fixed-point amounts of a service's metered unit.
//!
//! Counters never hold floats: 12.5 audio seconds is stored as 12 500 milli-units, so sums are
//! exact and two nodes adding the same usage always agree.

use std::fmt;

/// An amount of a service's unit, in thousandths of that unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Units(u64);

/// Largest amount accepted from a caller: one trillion units. Far above any real call, far
/// below the point where milli-unit sums could overflow a `u64`.
pub const MAX_UNITS: f64 = 1e12;

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum UnitsError {
    #[error("must be a finite number")]
    NotFinite,
    #[error("must not be negative")]
    Negative,
    #[error("must be at most {MAX_UNITS}")]
    TooLarge,
}

impl Units {
    pub const ZERO: Units = Units(0);

    pub const fn from_milli(milli: u64) -> Units {
        Units(milli)
    }

    pub const fn whole(units: u64) -> Units {
        Units(units * 1000)
    }

    /// Converts a caller's decimal amount, rounding to the nearest thousandth.
    pub fn from_f64(value: f64) -> Result<Units, UnitsError> {
        if !value.is_finite() {
            return Err(UnitsError::NotFinite);
        }
        if value < 0.0 {
            return Err(UnitsError::Negative);
        }
        if value > MAX_UNITS {
            return Err(UnitsError::TooLarge);
        }
        Ok(Units((value * 1000.0).round() as u64))
    }

    pub const fn milli(self) -> u64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub const fn saturating_add(self, other: Units) -> Units {
        Units(self.0.saturating_add(other.0))
    }

    pub const fn saturating_sub(self, other: Units) -> Units {
        Units(self.0.saturating_sub(other.0))
    }

    /// Adds a signed milli-unit delta, never going below zero.
    pub fn apply_delta(self, delta_milli: i64) -> Units {
        if delta_milli >= 0 {
            Units(self.0.saturating_add(delta_milli as u64))
        } else {
            Units(self.0.saturating_sub(delta_milli.unsigned_abs()))
        }
    }
}

impl fmt::Display for Units {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_decimal_amounts_exactly() {
        assert_eq!(Units::from_f64(12.5).unwrap().milli(), 12_500);
        assert_eq!(Units::from_f64(0.0005).unwrap().milli(), 1);
        assert_eq!(Units::from_f64(0.0).unwrap(), Units::ZERO);
        assert_eq!(Units::from_f64(-0.1), Err(UnitsError::Negative));
        assert_eq!(Units::from_f64(f64::NAN), Err(UnitsError::NotFinite));
        assert_eq!(Units::from_f64(f64::INFINITY), Err(UnitsError::NotFinite));
        assert_eq!(Units::from_f64(2e12), Err(UnitsError::TooLarge));
    }

    #[test]
    fn signed_deltas_saturate_at_zero() {
        let u = Units::whole(5);
        assert_eq!(u.apply_delta(-7000), Units::ZERO);
        assert_eq!(u.apply_delta(500).milli(), 5500);
    }
}
