//! The sizing engine: turns a developer's business case into justified values for each limit
//! dimension, and shows its working line by line so a reviewer (or the developer) can check
//! every number.
//!
//! The model:
//! - mean rate = DAU × interactions per user per day ÷ seconds in the active day;
//! - peak rate = mean × peak-to-mean (observed from the app's own usage when it has history,
//!   else the stated ratio, else 3);
//! - concurrency = peak arrival rate × average session length (Little's law);
//! - daily units = DAU × interactions × units per interaction; monthly = daily × 30;
//! - every result gets the stated headroom (default 20 %).
//!
//! Architecture that reduces load is credited: a cache hit ratio removes that share of
//! calls; batching divides the request rate (not the units) by the batch size; an async
//! queue flattens the peak to at most 1.5 × the mean.

use serde::{Deserialize, Serialize};

/// What the developer tells us about their traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BusinessCase {
    pub target_users: Option<u64>,
    pub daily_active_users: u64,
    pub interactions_per_user_per_day: f64,
    /// Units of the service per interaction (e.g. 15 audio seconds).
    pub units_per_interaction: f64,
    /// For concurrent services (streams, calls): the average session length in seconds.
    pub session_length_s: Option<f64>,
    /// Hours a day the product is in use (default 16).
    pub active_hours_per_day: Option<f64>,
    /// Local `HH:MM-HH:MM` of the daily peak, for the reviewer.
    pub peak_hours: Option<String>,
    pub time_zone: Option<String>,
    /// Expected peak ÷ mean request rate.
    pub peak_to_mean: Option<f64>,
    #[serde(default)]
    pub architecture: Architecture,
    /// Extra margin on every result (default 0.2 = 20 %).
    pub headroom: Option<f64>,
}

/// Load-reducing architecture, credited in the sizing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    #[serde(default)]
    pub load_balancing: bool,
    /// Share of calls answered from a cache (0 to 0.95).
    pub cache_hit_ratio: Option<f64>,
    /// Calls combined into one request.
    pub batch_size: Option<f64>,
    /// Work is queued and drained at a steady rate.
    #[serde(default)]
    pub async_queue: bool,
}

/// What the app's own history says, when it has any.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observed {
    pub mean_per_second: f64,
    pub peak_per_second: f64,
}

/// The justified value of each dimension, and how it was reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizing {
    pub rate_per_second: f64,
    pub burst: u64,
    pub concurrency: Option<u64>,
    pub per_minute_units: f64,
    pub daily_units: f64,
    pub monthly_units: f64,
    pub working: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("business case field `{field}`: {message}")]
pub struct CaseError {
    pub field: &'static str,
    pub message: &'static str,
}

fn check(ok: bool, field: &'static str, message: &'static str) -> Result<(), CaseError> {
    if ok { Ok(()) } else { Err(CaseError { field, message }) }
}

fn fmt(x: f64) -> String {
    if x >= 100.0 || x.fract() == 0.0 { format!("{:.0}", x) } else { format!("{:.2}", x) }
}

impl BusinessCase {
    pub fn validate(&self) -> Result<(), CaseError> {
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        check(self.daily_active_users > 0, "daily_active_users", "must be at least 1")?;
        check(self.daily_active_users <= 10_000_000_000, "daily_active_users", "is implausibly large")?;
        check(
            finite_pos(self.interactions_per_user_per_day),
            "interactions_per_user_per_day",
            "must be above 0",
        )?;
        check(
            self.interactions_per_user_per_day <= 1e6,
            "interactions_per_user_per_day",
            "is implausibly large",
        )?;
        check(
            self.units_per_interaction.is_finite() && self.units_per_interaction >= 0.0,
            "units_per_interaction",
            "must be 0 or more",
        )?;
        check(self.session_length_s.is_none_or(finite_pos), "session_length_s", "must be above 0")?;
        check(
            self.active_hours_per_day.is_none_or(|h| finite_pos(h) && h <= 24.0),
            "active_hours_per_day",
            "must be above 0 and at most 24",
        )?;
        check(
            self.peak_to_mean.is_none_or(|p| p.is_finite() && (1.0..=1000.0).contains(&p)),
            "peak_to_mean",
            "must be from 1 to 1000",
        )?;
        check(
            self.headroom.is_none_or(|h| h.is_finite() && (0.0..=10.0).contains(&h)),
            "headroom",
            "must be from 0 to 10",
        )?;
        let a = &self.architecture;
        check(
            a.cache_hit_ratio.is_none_or(|c| c.is_finite() && (0.0..=0.95).contains(&c)),
            "architecture.cache_hit_ratio",
            "must be from 0 to 0.95",
        )?;
        check(
            a.batch_size.is_none_or(|b| b.is_finite() && b >= 1.0),
            "architecture.batch_size",
            "must be 1 or more",
        )?;
        Ok(())
    }

    /// Sizes the case. `observed` replaces the stated peak-to-mean with the app's own.
    pub fn size(&self, observed: Option<Observed>) -> Result<Sizing, CaseError> {
        self.validate()?;
        let mut w = Vec::new();
        let dau = self.daily_active_users as f64;
        let per_user = self.interactions_per_user_per_day;
        let mut interactions = dau * per_user;
        w.push(format!(
            "interactions per day = {} DAU × {} = {}",
            fmt(dau),
            fmt(per_user),
            fmt(interactions)
        ));
        if let Some(hit) = self.architecture.cache_hit_ratio.filter(|h| *h > 0.0) {
            interactions *= 1.0 - hit;
            w.push(format!(
                "caching credit: {:.0} % of calls served from cache → {} calls per day reach the service",
                hit * 100.0,
                fmt(interactions)
            ));
        }
        let hours = self.active_hours_per_day.unwrap_or(16.0);
        let active_s = hours * 3600.0;
        let mut mean = interactions / active_s;
        w.push(format!(
            "mean rate = {} ÷ ({} h × 3600 s) = {} calls/s",
            fmt(interactions),
            fmt(hours),
            fmt(mean)
        ));
        if let Some(batch) = self.architecture.batch_size.filter(|b| *b > 1.0) {
            mean /= batch;
            w.push(format!("batching credit: {} calls per request → {} requests/s", fmt(batch), fmt(mean)));
        }
        let (mut ptm, source) = match (observed, self.peak_to_mean) {
            (Some(o), _) if o.mean_per_second > 0.0 && o.peak_per_second > 0.0 => {
                ((o.peak_per_second / o.mean_per_second).max(1.0), "observed in the app's own usage")
            }
            (_, Some(p)) => (p, "stated"),
            _ => (3.0, "default (no history, none stated)"),
        };
        w.push(format!("peak-to-mean = {} ({source})", fmt(ptm)));
        if self.architecture.async_queue && ptm > 1.5 {
            ptm = 1.5;
            w.push("async queue credit: peaks drained at a steady rate → peak-to-mean capped at 1.5".into());
        }
        let peak = mean * ptm;
        w.push(format!("peak rate = {} × {} = {} requests/s", fmt(mean), fmt(ptm), fmt(peak)));
        let headroom = self.headroom.unwrap_or(0.2);
        let grow = 1.0 + headroom;
        let rate = (peak * grow).ceil().max(1.0);
        w.push(format!(
            "rate with {:.0} % headroom = {} requests/s, burst 2 × = {}",
            headroom * 100.0,
            fmt(rate),
            fmt(rate * 2.0)
        ));
        let concurrency = self.session_length_s.map(|len| {
            // Sessions arrive at the interaction rate (batching does not shorten a stream).
            let arrivals = interactions / active_s * ptm;
            let c = (arrivals * len * grow).ceil().max(1.0);
            w.push(format!(
                "concurrency (Little's law) = {} sessions/s × {} s × {} = {}",
                fmt(arrivals),
                fmt(len),
                fmt(grow),
                fmt(c)
            ));
            c as u64
        });
        let daily = interactions * self.units_per_interaction * grow;
        w.push(format!(
            "daily units = {} × {} units × {} = {}",
            fmt(interactions),
            fmt(self.units_per_interaction),
            fmt(grow),
            fmt(daily)
        ));
        let monthly = daily * 30.0;
        w.push(format!("monthly units = {} × 30 days = {}", fmt(daily), fmt(monthly)));
        let per_minute = peak
            * 60.0
            * self.units_per_interaction
            * grow
            * self.architecture.batch_size.unwrap_or(1.0).max(1.0);
        if self.architecture.load_balancing {
            w.push("load balancing noted: spreads load across regions, no change to totals".into());
        }
        Ok(Sizing {
            rate_per_second: rate,
            burst: (rate * 2.0) as u64,
            concurrency,
            per_minute_units: per_minute.ceil(),
            daily_units: daily.ceil(),
            monthly_units: monthly.ceil(),
            working: w,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case() -> BusinessCase {
        BusinessCase {
            target_users: Some(5_000_000),
            daily_active_users: 1_000_000,
            interactions_per_user_per_day: 20.0,
            units_per_interaction: 15.0,
            session_length_s: Some(30.0),
            active_hours_per_day: Some(16.0),
            peak_hours: Some("19:00-23:00".into()),
            time_zone: Some("Asia/Shanghai".into()),
            peak_to_mean: Some(3.0),
            architecture: Architecture::default(),
            headroom: Some(0.2),
        }
    }

    #[test]
    fn a_million_users_with_an_evening_peak() {
        let s = case().size(None).unwrap();
        // 20 M interactions over 57 600 s = 347.22/s; × 3 = 1041.67/s; × 1.2 = 1250/s.
        assert_eq!(s.rate_per_second, 1250.0);
        assert_eq!(s.burst, 2500);
        // 1041.67 sessions/s × 30 s × 1.2 = 37 500.
        assert_eq!(s.concurrency, Some(37_500));
        // 20 M × 15 s × 1.2 = 360 M audio seconds a day; × 30 a month.
        assert_eq!(s.daily_units, 360_000_000.0);
        assert_eq!(s.monthly_units, 10_800_000_000.0);
        assert!(s.working.iter().any(|l| l.contains("peak-to-mean = 3 (stated)")), "{:#?}", s.working);
    }

    #[test]
    fn observed_history_replaces_the_stated_ratio() {
        let s = case().size(Some(Observed { mean_per_second: 100.0, peak_per_second: 200.0 })).unwrap();
        // 347.22 × 2 × 1.2 = 833.3 → 834.
        assert_eq!(s.rate_per_second, 834.0);
        assert!(s.working.iter().any(|l| l.contains("observed")));
    }

    #[test]
    fn architecture_is_credited() {
        let mut c = case();
        c.architecture = Architecture {
            load_balancing: true,
            cache_hit_ratio: Some(0.5),
            batch_size: Some(4.0),
            async_queue: true,
        };
        let s = c.size(None).unwrap();
        // 10 M calls / 57 600 s = 173.61/s; ÷ 4 = 43.40/s; × 1.5 = 65.10/s; × 1.2 = 78.1 → 79.
        assert_eq!(s.rate_per_second, 79.0);
        for credit in ["caching credit", "batching credit", "async queue credit", "load balancing"] {
            assert!(s.working.iter().any(|l| l.contains(credit)), "{credit}");
        }
    }

    #[test]
    fn bad_cases_name_the_field() {
        let mut c = case();
        c.daily_active_users = 0;
        assert_eq!(c.size(None).unwrap_err().field, "daily_active_users");
        let mut c = case();
        c.peak_to_mean = Some(0.5);
        assert_eq!(c.size(None).unwrap_err().field, "peak_to_mean");
        let mut c = case();
        c.architecture.cache_hit_ratio = Some(1.0);
        assert_eq!(c.size(None).unwrap_err().field, "architecture.cache_hit_ratio");
    }
}
