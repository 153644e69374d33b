//! Time as the engine sees it: an instant passed in by the caller, and calendar windows
//! (days, months) found in an account's IANA time zone.
//!
//! GCRA and lease expiry use nanoseconds since the Unix epoch; calendar boundaries are found
//! with `jiff` from civil dates in the zone, so a 23- or 25-hour day across a DST change is one
//! day, not a fixed 86 400 seconds.

use jiff::tz::TimeZone;
use jiff::{ToSpan, Zoned};

/// Nanoseconds since the Unix epoch. The only notion of "now" the engine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_nanos(ns: i64) -> Timestamp {
        Timestamp(ns)
    }

    pub const fn from_secs(s: i64) -> Timestamp {
        Timestamp(s * 1_000_000_000)
    }

    pub fn from_jiff(ts: jiff::Timestamp) -> Timestamp {
        Timestamp(ts.as_nanosecond() as i64)
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    pub const fn millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    pub const fn plus_millis(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms as i64 * 1_000_000))
    }

    pub fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_nanosecond(self.0 as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// Milliseconds from `now` until `until`, rounded up so a client that waits this long is
/// never early; zero when `until` has passed.
pub fn millis_until(now: Timestamp, until: Timestamp) -> u64 {
    let ns = until.0.saturating_sub(now.0);
    if ns <= 0 { 0 } else { (ns as u64).div_ceil(1_000_000) }
}

/// A calendar period whose quota resets at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// A UTC-aligned minute (every zone in use is offset from UTC by whole minutes).
    Minute,
    /// A calendar day in the account's zone.
    Day,
    /// A calendar month in the account's zone.
    Month,
}

/// `[start, end)` of a calendar period, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    pub fn contains(&self, secs: i64) -> bool {
        self.start <= secs && secs < self.end
    }
}

impl Period {
    /// The period that contains `now` in zone `tz`.
    pub fn window(self, now: Timestamp, tz: &TimeZone) -> Window {
        let secs = now.secs();
        match self {
            Period::Minute => {
                let start = secs.div_euclid(60) * 60;
                Window { start, end: start + 60 }
            }
            Period::Day | Period::Month => {
                let zoned = Zoned::new(now.to_jiff(), tz.clone());
                calendar_window(self, &zoned).unwrap_or_else(|| {
                    // Only reachable at the ends of jiff's supported range (years ±9999).
                    let len = if self == Period::Day { 86_400 } else { 86_400 * 31 };
                    let start = secs.div_euclid(len) * len;
                    Window { start, end: start + len }
                })
            }
        }
    }
}

fn calendar_window(period: Period, zoned: &Zoned) -> Option<Window> {
    let (start, end) = match period {
        Period::Day => {
            let start = zoned.start_of_day().ok()?;
            let next = zoned.date().tomorrow().ok()?.to_zoned(zoned.time_zone().clone()).ok()?;
            (start, next)
        }
        Period::Month => {
            let first = zoned.first_of_month().ok()?.start_of_day().ok()?;
            let next = first.date().checked_add(1.month()).ok()?;
            let next = next.to_zoned(zoned.time_zone().clone()).ok()?;
            (first, next)
        }
        Period::Minute => unreachable!("minutes are not calendar periods"),
    };
    Some(Window { start: start.timestamp().as_second(), end: end.timestamp().as_second() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str, tz: &str) -> (Timestamp, TimeZone) {
        let tz = TimeZone::get(tz).unwrap();
        let z: Zoned = format!("{s}[{}]", tz.iana_name().unwrap()).parse().unwrap();
        (Timestamp::from_jiff(z.timestamp()), tz)
    }

    fn hours(w: Window) -> i64 {
        (w.end - w.start) / 3600
    }

    #[test]
    fn days_follow_the_zone_across_dst() {
        // Europe/Berlin springs forward on 2026-03-29 and falls back on 2026-10-25.
        let (now, tz) = at("2026-03-29T12:00:00", "Europe/Berlin");
        assert_eq!(hours(Period::Day.window(now, &tz)), 23);
        let (now, tz) = at("2026-10-25T01:30:00", "Europe/Berlin");
        assert_eq!(hours(Period::Day.window(now, &tz)), 25);
        let (now, tz) = at("2026-10-26T01:30:00", "Europe/Berlin");
        assert_eq!(hours(Period::Day.window(now, &tz)), 24);
    }

    #[test]
    fn day_boundary_is_local_midnight() {
        let (now, tz) = at("2026-11-27T23:59:59", "Asia/Shanghai");
        let w = Period::Day.window(now, &tz);
        let (midnight, _) = at("2026-11-28T00:00:00", "Asia/Shanghai");
        assert_eq!(w.end, midnight.secs());
        assert!(w.contains(now.secs()));
        assert!(!w.contains(midnight.secs()));
        assert_eq!(Period::Day.window(midnight, &tz).start, midnight.secs());
    }

    #[test]
    fn months_have_their_calendar_length() {
        let (now, tz) = at("2026-02-15T10:00:00", "UTC");
        assert_eq!(hours(Period::Month.window(now, &tz)), 28 * 24);
        let (now, tz) = at("2028-02-29T23:00:00", "UTC");
        assert_eq!(hours(Period::Month.window(now, &tz)), 29 * 24);
        let (now, tz) = at("2026-12-31T23:59:59", "America/New_York");
        let w = Period::Month.window(now, &tz);
        let (jan1, _) = at("2027-01-01T00:00:00", "America/New_York");
        assert_eq!(w.end, jan1.secs());
        // March in New York loses an hour to DST.
        let (now, tz) = at("2026-03-10T00:00:00", "America/New_York");
        assert_eq!(hours(Period::Month.window(now, &tz)), 31 * 24 - 1);
    }

    #[test]
    fn minutes_are_utc_aligned() {
        let w = Period::Minute.window(Timestamp::from_secs(125), &TimeZone::UTC);
        assert_eq!(w, Window { start: 120, end: 180 });
    }

    #[test]
    fn millis_until_rounds_up() {
        assert_eq!(millis_until(Timestamp(0), Timestamp(1)), 1);
        assert_eq!(millis_until(Timestamp(0), Timestamp(2_000_000)), 2);
        assert_eq!(millis_until(Timestamp(5), Timestamp(1)), 0);
    }
}
