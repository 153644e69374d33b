//! When a time-bound layer is in force: always, between two instants (contracts, one-off
//! windows), or on some days of the week between two local times in a zone (recurring
//! capacity windows, e.g. 19:00–23:00 Asia/Shanghai every day).
//!
//! Local times are turned into instants with the zone's rules on each date, so a window keeps
//! its wall-clock hours across DST changes. A local time that falls in a DST gap is reached when the gap ends (02:30 on a
//! spring-forward night in New York is 03:00, the first instant the clock reads past 02:30);
//! in the repeated hour of a fall-back night the first occurrence counts.

use crate::time::Timestamp;
use jiff::Zoned;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Always,
    /// In force from `from` (inclusive) until `until` (exclusive); either end may be open.
    Between {
        from: Option<Timestamp>,
        until: Option<Timestamp>,
    },
    /// In force on `days` from local `start` to local `end`; an `end` at or before `start`
    /// runs past midnight into the next day.
    Weekly {
        days: Vec<Weekday>,
        start: Time,
        end: Time,
        tz: TimeZone,
    },
}

impl Schedule {
    pub fn active_at(&self, now: Timestamp) -> bool {
        match self {
            Schedule::Always => true,
            Schedule::Between { from, until } => {
                from.is_none_or(|f| now >= f) && until.is_none_or(|u| now < u)
            }
            Schedule::Weekly { .. } => self.weekly_spans(now).iter().any(|(s, e)| *s <= now && now < *e),
        }
    }

    /// The first instant after `now` at which [`Schedule::active_at`] may change.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Always => None,
            Schedule::Between { from, until } => {
                [*from, *until].into_iter().flatten().filter(|t| *t > now).min()
            }
            Schedule::Weekly { .. } => {
                self.weekly_spans(now).iter().flat_map(|(s, e)| [*s, *e]).filter(|t| *t > now).min()
            }
        }
    }

    /// The occurrences that start from yesterday to a week ahead, as instants.
    fn weekly_spans(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let Schedule::Weekly { days, start, end, tz } = self else { return Vec::new() };
        let today = Zoned::new(now.to_jiff(), tz.clone()).date();
        let mut spans = Vec::new();
        for offset in -1..=8 {
            let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else { continue };
            if !days.contains(&date.weekday()) {
                continue;
            }
            let end_date = if end <= start { date.tomorrow().ok() } else { Some(date) };
            let (Some(s), Some(e)) = (instant(date, *start, tz), end_date.and_then(|d| instant(d, *end, tz)))
            else {
                continue;
            };
            spans.push((s, e));
        }
        spans
    }
}

fn instant(date: Date, time: Time, tz: &TimeZone) -> Option<Timestamp> {
    let ambiguous = tz.to_ambiguous_zoned(date.to_datetime(time));
    let gap = matches!(ambiguous.offset(), jiff::tz::AmbiguousOffset::Gap { .. });
    // `compatible` takes the first occurrence of a repeated local time and, for a local time
    // that does not exist, shifts it past the gap by the gap's length.
    let zoned = ambiguous.compatible().ok()?;
    if gap {
        // A local time inside a DST gap is reached when the gap ends: the transition.
        let transition = tz.preceding(zoned.timestamp()).next()?;
        return Some(Timestamp::from_jiff(transition.timestamp()));
    }
    Some(Timestamp::from_jiff(zoned.timestamp()))
}

/// Parses a weekday name (`mon`, `monday`, case-insensitive).
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    let s = s.to_ascii_lowercase();
    let days = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
        ("sat", Weekday::Saturday),
        ("sun", Weekday::Sunday),
    ];
    days.iter()
        .find(|(short, day)| s == *short || s == format!("{day:?}").to_ascii_lowercase())
        .map(|(_, d)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str, tz: &str) -> Timestamp {
        let z: Zoned = format!("{s}[{tz}]").parse().unwrap();
        Timestamp::from_jiff(z.timestamp())
    }

    fn evening(tz: &str) -> Schedule {
        Schedule::Weekly {
            days: vec![
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
                Weekday::Saturday,
                Weekday::Sunday,
            ],
            start: Time::constant(19, 0, 0, 0),
            end: Time::constant(23, 0, 0, 0),
            tz: TimeZone::get(tz).unwrap(),
        }
    }

    #[test]
    fn daily_evening_window_in_shanghai() {
        let w = evening("Asia/Shanghai");
        assert!(!w.active_at(local("2026-11-27T18:59:59", "Asia/Shanghai")));
        assert!(w.active_at(local("2026-11-27T19:00:00", "Asia/Shanghai")));
        assert!(!w.active_at(local("2026-11-27T23:00:00", "Asia/Shanghai")));
        assert_eq!(
            w.next_change(local("2026-11-27T12:00:00", "Asia/Shanghai")),
            Some(local("2026-11-27T19:00:00", "Asia/Shanghai"))
        );
        assert_eq!(
            w.next_change(local("2026-11-27T20:00:00", "Asia/Shanghai")),
            Some(local("2026-11-27T23:00:00", "Asia/Shanghai"))
        );
    }

    #[test]
    fn keeps_wall_clock_hours_across_dst() {
        // New York springs forward on 2026-03-08 and falls back on 2026-11-01.
        let w = evening("America/New_York");
        for day in ["2026-03-07", "2026-03-08", "2026-03-09", "2026-10-31", "2026-11-01", "2026-11-02"] {
            let start = local(&format!("{day}T19:00:00"), "America/New_York");
            assert!(w.active_at(start), "{day}");
            assert!(!w.active_at(Timestamp(start.nanos() - 1)), "{day}");
            assert_eq!(w.next_change(start), Some(local(&format!("{day}T23:00:00"), "America/New_York")));
        }
    }

    #[test]
    fn a_start_inside_the_dst_gap_begins_when_the_gap_ends() {
        let w = Schedule::Weekly {
            days: vec![Weekday::Sunday],
            start: Time::constant(2, 30, 0, 0),
            end: Time::constant(4, 0, 0, 0),
            tz: TimeZone::get("America/New_York").unwrap(),
        };
        // 2026-03-08 (a Sunday): 02:00 EST jumps to 03:00 EDT at 07:00Z.
        let gap_end = Timestamp::from_jiff("2026-03-08T07:00:00Z".parse().unwrap());
        assert!(!w.active_at(Timestamp(gap_end.nanos() - 1)));
        assert!(w.active_at(gap_end));
        assert_eq!(
            w.next_change(Timestamp::from_jiff("2026-03-08T06:00:00Z".parse().unwrap())),
            Some(gap_end)
        );
    }

    #[test]
    fn overnight_windows_and_weekdays() {
        let w = Schedule::Weekly {
            days: vec![Weekday::Friday],
            start: Time::constant(22, 0, 0, 0),
            end: Time::constant(2, 0, 0, 0),
            tz: TimeZone::UTC,
        };
        // 2026-11-27 is a Friday.
        assert!(w.active_at(local("2026-11-27T23:00:00", "UTC")));
        assert!(w.active_at(local("2026-11-28T01:59:59", "UTC")));
        assert!(!w.active_at(local("2026-11-28T22:30:00", "UTC")));
        assert_eq!(
            w.next_change(local("2026-11-28T03:00:00", "UTC")),
            Some(local("2026-12-04T22:00:00", "UTC"))
        );
    }

    #[test]
    fn between_bounds() {
        let s =
            Schedule::Between { from: Some(Timestamp::from_secs(10)), until: Some(Timestamp::from_secs(20)) };
        assert!(!s.active_at(Timestamp::from_secs(9)));
        assert!(s.active_at(Timestamp::from_secs(10)));
        assert!(!s.active_at(Timestamp::from_secs(20)));
        assert_eq!(s.next_change(Timestamp::from_secs(0)), Some(Timestamp::from_secs(10)));
        assert_eq!(s.next_change(Timestamp::from_secs(15)), Some(Timestamp::from_secs(20)));
        assert_eq!(s.next_change(Timestamp::from_secs(25)), None);
        assert_eq!(parse_weekday("Sat"), Some(Weekday::Saturday));
        assert_eq!(parse_weekday("sunday"), Some(Weekday::Sunday));
        assert_eq!(parse_weekday("xyz"), None);
    }
}
