//! Entitlements: the layers that grant limits, and the resolver that folds them into the
//! effective limits of one app.
//!
//! A layer is a list of entries, each an operation on one dimension of one service. Layers
//! apply in a fixed order — tier, plan, contract, approved grants, automatic adjustments,
//! scheduled windows — and each keeps its contribution so `explain` can show who set what.
//! The operation, not the layer, decides how a value combines: `set` overrides, `max` only
//! raises, `min` only caps, `multiply` scales. Tiers and plans `set`, plan caps `min`.

use crate::catalogue::ServiceIdx;
use crate::limits::{ConcurrencyLimit, Dimension, RateLimit, ServiceLimits};
use crate::schedule::Schedule;
use crate::time::Timestamp;
use crate::units::Units;
use serde::Serialize;

/// Where a layer comes from, in the order layers apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    Tier,
    Plan,
    Contract,
    Grant,
    Adjustment,
    Window,
}

/// The value of one dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitValue {
    Rate(RateLimit),
    Concurrency(ConcurrencyLimit),
    Units(Units),
}

impl LimitValue {
    /// The number that compares values of one dimension: requests per second, leases, units.
    pub fn primary(&self) -> f64 {
        match self {
            LimitValue::Rate(r) => r.per_second,
            LimitValue::Concurrency(c) => c.max as f64,
            LimitValue::Units(u) => u.as_f64(),
        }
    }

    /// Combines two values number by number with `pick` (`min` or `max`): a cap of 5/s with
    /// burst 100 on 10/s with burst 20 gives 5/s with burst 20. A lease TTL is not a limit
    /// and keeps the earlier layer's value.
    fn combine(&self, other: &LimitValue, pick: fn(f64, f64) -> f64) -> LimitValue {
        match (*self, *other) {
            (LimitValue::Rate(a), LimitValue::Rate(b)) => LimitValue::Rate(RateLimit {
                per_second: pick(a.per_second, b.per_second),
                burst: pick(a.burst as f64, b.burst as f64) as u32,
            }),
            (LimitValue::Concurrency(a), LimitValue::Concurrency(b)) => {
                LimitValue::Concurrency(ConcurrencyLimit {
                    max: pick(a.max as f64, b.max as f64) as u32,
                    ..a
                })
            }
            (LimitValue::Units(a), LimitValue::Units(b)) => {
                LimitValue::Units(Units::from_milli(pick(a.milli() as f64, b.milli() as f64) as u64))
            }
            // Values of different shapes never meet: entries are typed by dimension.
            (current, _) => current,
        }
    }

    /// The value with its counted number(s) multiplied by `factor` (rate and burst, leases,
    /// units).
    pub fn scaled(&self, factor: f64) -> LimitValue {
        let factor = factor.max(0.0);
        match *self {
            LimitValue::Rate(r) => LimitValue::Rate(RateLimit {
                per_second: (r.per_second * factor).max(f64::MIN_POSITIVE),
                burst: ((r.burst as f64 * factor).round() as u32).max(1),
            }),
            LimitValue::Concurrency(c) => {
                LimitValue::Concurrency(ConcurrencyLimit { max: (c.max as f64 * factor).round() as u32, ..c })
            }
            LimitValue::Units(u) => {
                LimitValue::Units(Units::from_milli((u.milli() as f64 * factor).round() as u64))
            }
        }
    }
}

/// How an entry combines with what earlier layers produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Set(LimitValue),
    Max(LimitValue),
    Min(LimitValue),
    Multiply(f64),
}

impl Op {
    fn apply(&self, current: Option<LimitValue>) -> Option<LimitValue> {
        match (*self, current) {
            (Op::Set(v), _) => Some(v),
            (Op::Max(v), Some(c)) => Some(c.combine(&v, f64::max)),
            (Op::Min(v), Some(c)) => Some(c.combine(&v, f64::min)),
            // Raising "no limit" (max) leaves it unlimited; capping it (min) sets the cap.
            (Op::Max(_), None) => None,
            (Op::Min(v), None) => Some(v),
            (Op::Multiply(f), c) => c.map(|c| c.scaled(f)),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Set(_) => "set",
            Op::Max(_) => "max",
            Op::Min(_) => "min",
            Op::Multiply(_) => "multiply",
        }
    }
}

/// One operation on one dimension of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub service: ServiceIdx,
    pub dimension: Dimension,
    pub op: Op,
}

/// A named source of limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub kind: LayerKind,
    /// e.g. `tier:enterprise`, `plan:free`, `contract:ctr_1`, `window:win_2`.
    pub source: String,
    pub entries: Vec<Entry>,
    /// When the layer is in force (contracts and windows are time-bound).
    pub schedule: Schedule,
}

impl Layer {
    /// A layer that sets every dimension that `limits` names, per service.
    pub fn setting(kind: LayerKind, source: String, limits: &[(ServiceIdx, ServiceLimits)]) -> Layer {
        Layer { kind, source, entries: entries_of(limits, Op::Set), schedule: Schedule::Always }
    }

    /// A layer that caps every dimension that `limits` names, per service.
    pub fn capping(kind: LayerKind, source: String, limits: &[(ServiceIdx, ServiceLimits)]) -> Layer {
        Layer { kind, source, entries: entries_of(limits, Op::Min), schedule: Schedule::Always }
    }

    pub fn with_schedule(mut self, schedule: Schedule) -> Layer {
        self.schedule = schedule;
        self
    }
}

fn entries_of(limits: &[(ServiceIdx, ServiceLimits)], op: fn(LimitValue) -> Op) -> Vec<Entry> {
    let mut out = Vec::new();
    for (service, l) in limits {
        for dim in Dimension::ALL {
            if let Some(v) = value_of(l, dim) {
                out.push(Entry { service: *service, dimension: dim, op: op(v) });
            }
        }
    }
    out
}

/// The value of one dimension of `l`.
pub fn value_of(l: &ServiceLimits, dim: Dimension) -> Option<LimitValue> {
    match dim {
        Dimension::Rate => l.rate.map(LimitValue::Rate),
        Dimension::Concurrency => l.concurrency.map(LimitValue::Concurrency),
        _ => l.quota(dim).map(LimitValue::Units),
    }
}

fn set(l: &mut ServiceLimits, dim: Dimension, v: Option<LimitValue>) {
    match (dim, v) {
        (Dimension::Rate, Some(LimitValue::Rate(r))) => l.rate = Some(r),
        (Dimension::Rate, None) => l.rate = None,
        (Dimension::Concurrency, Some(LimitValue::Concurrency(c))) => l.concurrency = Some(c),
        (Dimension::Concurrency, None) => l.concurrency = None,
        (Dimension::PerMinute, v) => l.per_minute = units_of(v),
        (Dimension::Daily, v) => l.daily = units_of(v),
        (Dimension::Monthly, v) => l.monthly = units_of(v),
        // A value of the wrong shape for its dimension is ignored; catalogue validation and
        // the layer builders never produce one.
        _ => {}
    }
}

fn units_of(v: Option<LimitValue>) -> Option<Units> {
    match v {
        Some(LimitValue::Units(u)) => Some(u),
        _ => None,
    }
}

/// One layer's part in one limit, for `explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: LayerKind,
    pub source: String,
    pub op: Op,
    /// The value after this step.
    pub result: Option<LimitValue>,
}

/// For each (service, dimension) that any layer touched: the steps, in order, and which one
/// decided the final value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explanation {
    pub limits: Vec<(ServiceIdx, Dimension, Vec<Step>, Option<usize>)>,
}

/// The effective limits of one app, per service, with how they came about.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveLimits {
    pub services: Vec<ServiceLimits>,
    pub explanation: Explanation,
    /// When a time-bound layer next starts or stops: resolve again at that instant.
    pub valid_until: Option<Timestamp>,
}

impl EffectiveLimits {
    pub fn service(&self, idx: ServiceIdx) -> &ServiceLimits {
        &self.services[idx.0 as usize]
    }
}

/// Folds the layers in force at `now` into effective limits for `service_count` services.
/// Layers apply in the order of their [`LayerKind`], then in the order given; the result
/// says when it stops being true (the next start or end of any time-bound layer).
pub fn resolve(service_count: usize, layers: &[&Layer], now: Timestamp) -> EffectiveLimits {
    let valid_until = layers.iter().filter_map(|l| l.schedule.next_change(now)).min();
    let mut ordered: Vec<&Layer> = layers.iter().copied().filter(|l| l.schedule.active_at(now)).collect();
    ordered.sort_by_key(|l| l.kind);
    let mut services = vec![ServiceLimits::default(); service_count];
    let mut explanation = Explanation::default();
    for layer in ordered {
        for e in &layer.entries {
            let Some(limits) = services.get_mut(e.service.0 as usize) else {
                continue;
            };
            let before = value_of(limits, e.dimension);
            let after = e.op.apply(before);
            set(limits, e.dimension, after);
            let slot =
                match explanation.limits.iter().position(|(s, d, ..)| *s == e.service && *d == e.dimension) {
                    Some(i) => i,
                    None => {
                        explanation.limits.push((e.service, e.dimension, Vec::new(), None));
                        explanation.limits.len() - 1
                    }
                };
            let (_, _, steps, winner) = &mut explanation.limits[slot];
            steps.push(Step { kind: layer.kind, source: layer.source.clone(), op: e.op, result: after });
            if after != before || winner.is_none() {
                *winner = Some(steps.len() - 1);
            }
        }
    }
    EffectiveLimits { services, explanation, valid_until }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASR: ServiceIdx = ServiceIdx(0);

    fn rate(per_second: f64, burst: u32) -> ServiceLimits {
        ServiceLimits { rate: Some(RateLimit { per_second, burst }), ..Default::default() }
    }

    #[test]
    fn later_layers_override_and_caps_only_lower() {
        let tier = Layer::setting(LayerKind::Tier, "tier:enterprise".into(), &[(ASR, rate(50.0, 100))]);
        let plan = Layer::setting(
            LayerKind::Plan,
            "plan:free".into(),
            &[(ASR, ServiceLimits { daily: Some(Units::whole(3600)), ..Default::default() })],
        );
        let cap = Layer::capping(LayerKind::Plan, "plan:free (cap)".into(), &[(ASR, rate(5.0, 10))]);
        // Given out of order on purpose: kinds decide the order.
        let eff = resolve(1, &[&cap, &plan, &tier], Timestamp(0));
        let asr = eff.service(ASR);
        assert_eq!(asr.rate, Some(RateLimit { per_second: 5.0, burst: 10 }));
        assert_eq!(asr.daily, Some(Units::whole(3600)));
        let (_, _, steps, winner) =
            eff.explanation.limits.iter().find(|(_, d, ..)| *d == Dimension::Rate).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[winner.unwrap()].source, "plan:free (cap)");
    }

    #[test]
    fn caps_apply_number_by_number() {
        let tier = Layer::setting(LayerKind::Tier, "tier:t".into(), &[(ASR, rate(10.0, 20))]);
        let cap = Layer::capping(LayerKind::Plan, "plan:p".into(), &[(ASR, rate(5.0, 100))]);
        let eff = resolve(1, &[&tier, &cap], Timestamp(0));
        assert_eq!(eff.service(ASR).rate, Some(RateLimit { per_second: 5.0, burst: 20 }));
    }

    #[test]
    fn a_cap_above_the_tier_does_not_win() {
        let tier = Layer::setting(LayerKind::Tier, "tier:individual".into(), &[(ASR, rate(2.0, 4))]);
        let cap = Layer::capping(LayerKind::Plan, "plan:free".into(), &[(ASR, rate(5.0, 10))]);
        let eff = resolve(1, &[&tier, &cap], Timestamp(0));
        assert_eq!(eff.service(ASR).rate, Some(RateLimit { per_second: 2.0, burst: 4 }));
        let (_, _, steps, winner) = &eff.explanation.limits[0];
        assert_eq!(steps[winner.unwrap()].source, "tier:individual");
    }

    #[test]
    fn multiply_and_max_combine_with_what_came_before() {
        let tier = Layer::setting(
            LayerKind::Tier,
            "tier:x".into(),
            &[(
                ASR,
                ServiceLimits {
                    concurrency: Some(ConcurrencyLimit { max: 10, lease_ttl_ms: 60_000 }),
                    ..Default::default()
                },
            )],
        );
        let grant = Layer {
            kind: LayerKind::Grant,
            source: "grant:1".into(),
            entries: vec![Entry {
                service: ASR,
                dimension: Dimension::Concurrency,
                op: Op::Max(LimitValue::Concurrency(ConcurrencyLimit { max: 25, lease_ttl_ms: 60_000 })),
            }],
            schedule: Schedule::Always,
        };
        let window = Layer {
            kind: LayerKind::Window,
            source: "window:evening".into(),
            entries: vec![Entry { service: ASR, dimension: Dimension::Concurrency, op: Op::Multiply(2.0) }],
            schedule: Schedule::Between {
                from: Some(Timestamp::from_secs(100)),
                until: Some(Timestamp::from_secs(200)),
            },
        };
        let before = resolve(1, &[&window, &grant, &tier], Timestamp(0));
        assert_eq!(before.service(ASR).concurrency.unwrap().max, 25);
        assert_eq!(before.valid_until, Some(Timestamp::from_secs(100)));
        let during = resolve(1, &[&window, &grant, &tier], Timestamp::from_secs(150));
        assert_eq!(during.service(ASR).concurrency.unwrap().max, 50);
        assert_eq!(during.valid_until, Some(Timestamp::from_secs(200)));
        let after = resolve(1, &[&window, &grant, &tier], Timestamp::from_secs(200));
        assert_eq!(after.service(ASR).concurrency.unwrap().max, 25);
        assert_eq!(after.valid_until, None);
    }
}
