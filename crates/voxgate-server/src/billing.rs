//! Statements: what each app of an account used in a calendar month, what its plans
//! included, the overage and its amount — in exact decimal arithmetic — and the spending cap
//! that stops a pay-as-you-go app when its month's amount reaches it.
//!
//! Proration: an app that changes plan mid-month is billed per plan segment. Each segment
//! includes `included × (segment length ÷ month length)` units of its plan (rounded to the
//! nearest thousandth of a unit), is charged for the usage metered during it, and bills its
//! own overage at its own plan's price. Usage is attributed by the minute: the minute in
//! which the plan changed counts for the new plan.

use crate::state::AppState;
use jiff::tz::TimeZone;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::collections::HashMap;
use voxgate_core::Timestamp;
use voxgate_core::time::{Period, Window};
use voxgate_registry::{Account, App};

/// One plan segment of one app and service.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = StatementSegment)]
pub struct Segment {
    pub plan: String,
    pub from: String,
    pub to: String,
    pub used: Decimal,
    pub included: Decimal,
    pub overage: Decimal,
    pub unit_price: Option<Decimal>,
    /// Whether this plan bills overage (a free plan or a blocking package does not).
    pub billed: bool,
    pub amount: Decimal,
}

/// One app and service for the period: the sum of its segments.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = StatementLine)]
pub struct Line {
    pub app_id: String,
    pub service: String,
    pub unit: String,
    pub used: Decimal,
    pub included: Decimal,
    pub overage: Decimal,
    pub amount: Decimal,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Statement {
    pub account_id: String,
    pub period: String,
    pub time_zone: String,
    pub from: String,
    pub to: String,
    pub currency: String,
    pub lines: Vec<Line>,
    /// The sum of the lines' amounts, rounded half away from zero to cents.
    pub total: Decimal,
}

fn units(milli: i64) -> Decimal {
    Decimal::new(milli, 3)
}

fn rfc(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map(|t| t.to_string()).unwrap_or_default()
}

/// The calendar month `YYYY-MM` in `tz`.
pub fn month_window(period: &str, tz: &TimeZone) -> Option<Window> {
    let (y, m) = period.split_once('-')?;
    let (y, m): (i16, i8) = (y.parse().ok()?, m.parse().ok()?);
    // Years a statement can be about (and that every timestamp type here can hold).
    if period.len() != 7 || !(1..=12).contains(&m) || !(1970..=2200).contains(&y) {
        return None;
    }
    let first = jiff::civil::date(y, m, 1).to_zoned(tz.clone()).ok()?;
    Some(Period::Month.window(Timestamp::from_jiff(first.timestamp()), tz))
}

/// The statement of `account` for `period` (`YYYY-MM`, in the account's zone), optionally
/// of one app only.
pub async fn statement(
    state: &AppState,
    account: &Account,
    period: &str,
    only_app: Option<&str>,
) -> anyhow::Result<Option<Statement>> {
    let tz = TimeZone::get(&account.time_zone).unwrap_or(TimeZone::UTC);
    let Some(window) = month_window(period, &tz) else { return Ok(None) };
    let cat = &state.catalogue;
    // One app (the spending-cap check, every flush) is read alone, not found in a scan of all.
    let apps: Vec<App> = match only_app {
        Some(id) => {
            vec![state.registry.app(id).await?].into_iter().filter(|a| a.account_id == account.id).collect()
        }
        None => state.registry.apps().await?.into_iter().filter(|a| a.account_id == account.id).collect(),
    };
    let month_secs = Decimal::from(window.end - window.start);
    let mut lines = Vec::new();
    for app in &apps {
        let history = state.registry.plan_history(&app.id).await?;
        // Plan segments clipped to the month.
        let mut segments: Vec<(String, i64, i64)> = Vec::new();
        for (i, span) in history.iter().enumerate() {
            let start = (span.from_ms.div_euclid(1000)).max(window.start);
            let end = history.get(i + 1).map_or(window.end, |n| n.from_ms.div_euclid(1000)).min(window.end);
            if start < end {
                segments.push((span.plan.clone(), start, end));
            }
        }
        let mut per_service: HashMap<String, Line> = HashMap::new();
        for (plan_id, start, end) in &segments {
            let Some(plan) = cat.plans.get(plan_id) else { continue };
            let used_by_service: HashMap<String, i64> = state
                .registry
                .units_by_service(&app.id, start.div_euclid(60) * 60, end.div_euclid(60) * 60)
                .await?
                .into_iter()
                .collect();
            for idx in cat.service_indices() {
                let service = cat.service_def(idx);
                let used = units(used_by_service.get(&service.id).copied().unwrap_or(0).max(0));
                let included_full = if plan.kind.is_free_allowance() && !account.free_allowance {
                    Decimal::ZERO
                } else {
                    units(plan.included(idx).milli() as i64)
                };
                let included = (included_full * Decimal::from(end - start) / month_secs)
                    .round_dp_with_strategy(3, RoundingStrategy::MidpointAwayFromZero);
                let overage = (used - included).max(Decimal::ZERO);
                let billed = plan.bills_overage();
                let price = plan.price(idx);
                let amount = if billed { overage * price.unwrap_or(Decimal::ZERO) } else { Decimal::ZERO };
                if used.is_zero() && included.is_zero() {
                    continue;
                }
                let line = per_service.entry(service.id.clone()).or_insert_with(|| Line {
                    app_id: app.id.clone(),
                    service: service.id.clone(),
                    unit: service.unit.clone(),
                    used: Decimal::ZERO,
                    included: Decimal::ZERO,
                    overage: Decimal::ZERO,
                    amount: Decimal::ZERO,
                    segments: Vec::new(),
                });
                line.used += used;
                line.included += included;
                line.overage += overage;
                line.amount += amount;
                line.segments.push(Segment {
                    plan: plan_id.clone(),
                    from: rfc(*start),
                    to: rfc(*end),
                    used,
                    included,
                    overage,
                    unit_price: price,
                    billed,
                    amount,
                });
            }
        }
        let mut app_lines: Vec<Line> = per_service.into_values().collect();
        app_lines.sort_by(|a, b| a.service.cmp(&b.service));
        lines.extend(app_lines);
    }
    let total = lines
        .iter()
        .map(|l| l.amount)
        .sum::<Decimal>()
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    Ok(Some(Statement {
        account_id: account.id.clone(),
        period: period.to_string(),
        time_zone: account.time_zone.clone(),
        from: rfc(window.start),
        to: rfc(window.end),
        currency: cat.currency.clone(),
        lines,
        total,
    }))
}

/// The statement as CSV: one row per plan segment of each app and service.
pub fn to_csv(s: &Statement) -> String {
    let mut out = String::from(
        "period,account_id,app_id,service,unit,plan,from,to,used,included,overage,unit_price,billed,amount,currency\n",
    );
    for line in &s.lines {
        for seg in &line.segments {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                s.period,
                s.account_id,
                line.app_id,
                line.service,
                line.unit,
                seg.plan,
                seg.from,
                seg.to,
                seg.used.normalize(),
                seg.included.normalize(),
                seg.overage.normalize(),
                seg.unit_price.map(|p| p.normalize().to_string()).unwrap_or_default(),
                seg.billed,
                seg.amount.normalize(),
                s.currency
            ));
        }
    }
    out.push_str(&format!(",,,,,,,,,,,,total,{},{}\n", s.total, s.currency));
    out
}

impl AppState {
    /// Stops, for the rest of the month, every app whose month-to-date amount has reached
    /// its spending cap, and lets go of apps whose cap was raised or removed. Runs after each
    /// usage flush, so an app can overshoot its cap by at most one flush interval of usage.
    pub async fn enforce_spending_caps(&self) -> anyhow::Result<()> {
        let now = self.now();
        let snapshot = self.snapshot.load();
        let mut capped = HashMap::new();
        for view in snapshot.apps.values() {
            let Some(cap) = view.spending_cap else { continue };
            let account = self.registry.account(&view.account_id).await?;
            let period =
                jiff::fmt::strtime::format("%Y-%m", &now.to_jiff().to_zoned(view.time_zone.clone()))?;
            let Some(st) = statement(self, &account, &period, Some(&view.id)).await? else { continue };
            let spent: Decimal = st.lines.iter().map(|l| l.amount).sum();
            if spent >= cap {
                let month_end = Period::Month.window(now, &view.time_zone).end;
                capped.insert(view.id.to_string(), Timestamp::from_secs(month_end));
            }
        }
        self.capped.store(std::sync::Arc::new(capped));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_windows_follow_the_zone() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let w = month_window("2026-11", &tz).unwrap();
        assert_eq!(rfc(w.start), "2026-10-31T16:00:00Z");
        assert_eq!(rfc(w.end), "2026-11-30T16:00:00Z");
        assert!(month_window("2026-13", &tz).is_none());
        assert!(month_window("26-11", &tz).is_none());
        assert!(month_window("nope", &tz).is_none());
        assert!(month_window("9999-12", &tz).is_none());
        assert!(month_window("0000-01", &tz).is_none());
    }
}
