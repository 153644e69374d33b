//! The catalogue: services and their units, tiers and plans with their per-service limits.
//!
//! Parsed in two steps, as the operator wrote it ([`raw`]) and then validated into typed
//! values, so a bad file is rejected once, at start-up, with the field that is wrong.

use crate::entitlement::{Layer, LayerKind};
use crate::limits::{ConcurrencyLimit, RateLimit, ServiceLimits};
use crate::units::Units;
use jiff::tz::TimeZone;
use std::collections::{BTreeMap, HashMap};

/// The built-in catalogue, used when no file is given.
pub const DEFAULT_CATALOGUE: &str = include_str!("default-catalogue.toml");

/// A service's position in the catalogue: counters and limits are indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceIdx(pub u16);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub unit: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub id: String,
    pub description: String,
    pub layer: Layer,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: String,
    pub description: String,
    /// Limits the plan sets, then caps it puts on the tier's values.
    pub layers: Vec<Layer>,
}

/// A validated catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub services: Vec<Service>,
    index: HashMap<String, ServiceIdx>,
    pub tiers: BTreeMap<String, Tier>,
    pub plans: BTreeMap<String, Plan>,
    pub default_tier: String,
    pub default_plan: String,
    pub default_time_zone: String,
    pub lease_ttl_ms: u64,
}

/// Why a catalogue was rejected. `field` is the dotted path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("{0}")]
    Syntax(String),
    #[error("field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> CatalogueError {
    CatalogueError::Invalid { field: field.into(), message: message.into() }
}

/// The catalogue as written in TOML.
pub mod raw {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Catalogue {
        #[serde(default)]
        pub defaults: Defaults,
        pub services: BTreeMap<String, Service>,
        pub tiers: BTreeMap<String, Tier>,
        pub plans: BTreeMap<String, Plan>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Defaults {
        pub tier: Option<String>,
        pub plan: Option<String>,
        pub time_zone: Option<String>,
        pub lease_ttl_s: Option<f64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Service {
        pub unit: String,
        #[serde(default)]
        pub description: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tier {
        #[serde(default)]
        pub description: String,
        #[serde(default)]
        pub limits: BTreeMap<String, Limits>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Plan {
        #[serde(default)]
        pub description: String,
        #[serde(default)]
        pub limits: BTreeMap<String, Limits>,
        #[serde(default)]
        pub caps: BTreeMap<String, Limits>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Limits {
        pub rate: Option<Rate>,
        pub concurrency: Option<Concurrency>,
        pub per_minute: Option<f64>,
        pub daily: Option<f64>,
        pub monthly: Option<f64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rate {
        pub per_second: f64,
        pub burst: Option<i64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Concurrency {
        pub max: i64,
        pub lease_ttl_s: Option<f64>,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Catalogue {
    /// The built-in catalogue.
    pub fn builtin() -> Catalogue {
        Catalogue::parse(DEFAULT_CATALOGUE).expect("the built-in catalogue is valid")
    }

    /// Parses and validates catalogue text.
    pub fn parse(text: &str) -> Result<Catalogue, CatalogueError> {
        let raw: raw::Catalogue = toml::from_str(text).map_err(|e| CatalogueError::Syntax(e.to_string()))?;
        Catalogue::validate(raw)
    }

    pub fn validate(raw: raw::Catalogue) -> Result<Catalogue, CatalogueError> {
        if raw.services.is_empty() {
            return Err(invalid("services", "declare at least one service"));
        }
        if raw.services.len() > u16::MAX as usize {
            return Err(invalid("services", "too many services"));
        }
        let lease_ttl_ms = match raw.defaults.lease_ttl_s {
            None => 60_000,
            Some(s) => seconds_to_ms(s)
                .ok_or_else(|| invalid("defaults.lease_ttl_s", "must be a positive number of seconds"))?,
        };
        let mut services = Vec::new();
        let mut index = HashMap::new();
        for (id, s) in raw.services {
            if !valid_id(&id) {
                return Err(invalid(
                    format!("services.{id}"),
                    "service ids use a-z, 0-9, `_` and `-` (at most 64)",
                ));
            }
            if !valid_id(&s.unit) {
                return Err(invalid(
                    format!("services.{id}.unit"),
                    "must name the metered unit with a-z, 0-9, `_` and `-` (e.g. `audio_second`)",
                ));
            }
            index.insert(id.clone(), ServiceIdx(services.len() as u16));
            services.push(Service { id, unit: s.unit, description: s.description });
        }
        let mut cat = Catalogue {
            services,
            index,
            tiers: BTreeMap::new(),
            plans: BTreeMap::new(),
            default_tier: String::new(),
            default_plan: String::new(),
            default_time_zone: String::new(),
            lease_ttl_ms,
        };
        for (id, t) in raw.tiers {
            let path = format!("tiers.{id}");
            if !valid_id(&id) {
                return Err(invalid(path, "tier ids use a-z, 0-9, `_` and `-` (at most 64)"));
            }
            let limits = cat.limit_table(&format!("{path}.limits"), t.limits)?;
            let layer = Layer::setting(LayerKind::Tier, format!("tier:{id}"), &limits);
            cat.tiers.insert(id.clone(), Tier { id, description: t.description, layer });
        }
        for (id, p) in raw.plans {
            let path = format!("plans.{id}");
            if !valid_id(&id) {
                return Err(invalid(path, "plan ids use a-z, 0-9, `_` and `-` (at most 64)"));
            }
            let limits = cat.limit_table(&format!("{path}.limits"), p.limits)?;
            let caps = cat.limit_table(&format!("{path}.caps"), p.caps)?;
            let mut layers = vec![Layer::setting(LayerKind::Plan, format!("plan:{id}"), &limits)];
            if !caps.is_empty() {
                layers.push(Layer::capping(LayerKind::Plan, format!("plan:{id}:cap"), &caps));
            }
            cat.plans.insert(id.clone(), Plan { id, description: p.description, layers });
        }
        if cat.tiers.is_empty() {
            return Err(invalid("tiers", "declare at least one tier"));
        }
        if cat.plans.is_empty() {
            return Err(invalid("plans", "declare at least one plan"));
        }
        cat.default_tier = match raw.defaults.tier {
            Some(t) if cat.tiers.contains_key(&t) => t,
            Some(t) => return Err(invalid("defaults.tier", format!("no tier named `{t}`"))),
            None => cat.tiers.keys().next().cloned().unwrap_or_default(),
        };
        cat.default_plan = match raw.defaults.plan {
            Some(p) if cat.plans.contains_key(&p) => p,
            Some(p) => return Err(invalid("defaults.plan", format!("no plan named `{p}`"))),
            None => cat.plans.keys().next().cloned().unwrap_or_default(),
        };
        let tz = raw.defaults.time_zone.unwrap_or_else(|| "UTC".into());
        if TimeZone::get(&tz).is_err() {
            return Err(invalid("defaults.time_zone", format!("`{tz}` is not an IANA time zone")));
        }
        cat.default_time_zone = tz;
        Ok(cat)
    }

    fn limit_table(
        &self,
        path: &str,
        table: BTreeMap<String, raw::Limits>,
    ) -> Result<Vec<(ServiceIdx, ServiceLimits)>, CatalogueError> {
        let mut out = Vec::new();
        for (service, l) in table {
            let path = format!("{path}.{service}");
            let idx = self
                .service(&service)
                .ok_or_else(|| invalid(&path, format!("no service named `{service}` in [services]")))?;
            out.push((idx, self.limits(&path, l)?));
        }
        Ok(out)
    }

    fn limits(&self, path: &str, l: raw::Limits) -> Result<ServiceLimits, CatalogueError> {
        let rate = match l.rate {
            None => None,
            Some(r) => {
                if !(r.per_second.is_finite() && r.per_second > 0.0 && r.per_second <= 1e9) {
                    return Err(invalid(
                        format!("{path}.rate.per_second"),
                        "must be a number above 0 and at most 1e9",
                    ));
                }
                let burst = r.burst.unwrap_or_else(|| r.per_second.ceil() as i64);
                if !(1..=u32::MAX as i64).contains(&burst) {
                    return Err(invalid(
                        format!("{path}.rate.burst"),
                        "must be a whole number from 1 to 4294967295",
                    ));
                }
                Some(RateLimit { per_second: r.per_second, burst: burst as u32 })
            }
        };
        let concurrency = match l.concurrency {
            None => None,
            Some(c) => {
                if !(0..=u32::MAX as i64).contains(&c.max) {
                    return Err(invalid(
                        format!("{path}.concurrency.max"),
                        "must be a whole number from 0 to 4294967295",
                    ));
                }
                let lease_ttl_ms = match c.lease_ttl_s {
                    None => self.lease_ttl_ms,
                    Some(s) => seconds_to_ms(s).ok_or_else(|| {
                        invalid(
                            format!("{path}.concurrency.lease_ttl_s"),
                            "must be a positive number of seconds",
                        )
                    })?,
                };
                Some(ConcurrencyLimit { max: c.max as u32, lease_ttl_ms })
            }
        };
        let quota = |name: &str, v: Option<f64>| -> Result<Option<Units>, CatalogueError> {
            v.map(|v| Units::from_f64(v).map_err(|e| invalid(format!("{path}.{name}"), e.to_string())))
                .transpose()
        };
        Ok(ServiceLimits {
            rate,
            concurrency,
            per_minute: quota("per_minute", l.per_minute)?,
            daily: quota("daily", l.daily)?,
            monthly: quota("monthly", l.monthly)?,
        })
    }

    pub fn service(&self, id: &str) -> Option<ServiceIdx> {
        self.index.get(id).copied()
    }

    pub fn service_def(&self, idx: ServiceIdx) -> &Service {
        &self.services[idx.0 as usize]
    }

    pub fn service_indices(&self) -> impl Iterator<Item = ServiceIdx> + '_ {
        (0..self.services.len()).map(|i| ServiceIdx(i as u16))
    }
}

fn seconds_to_ms(s: f64) -> Option<u64> {
    (s.is_finite() && s > 0.0 && s <= 1e9).then(|| (s * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entitlement::resolve;
    use crate::time::Timestamp;

    #[test]
    fn builtin_catalogue_has_the_demo_services_tiers_and_plans() {
        let cat = Catalogue::builtin();
        for s in ["asr", "tts", "conversational_ai", "voice_call", "video_call", "live_streaming", "rtm"] {
            assert!(cat.service(s).is_some(), "{s}");
        }
        for t in ["unverified", "individual", "enterprise", "industry"] {
            assert!(cat.tiers.contains_key(t), "{t}");
        }
        for p in ["free", "payg", "package"] {
            assert!(cat.plans.contains_key(p), "{p}");
        }
        let asr = cat.service("asr").unwrap();
        let tier = &cat.tiers["enterprise"].layer;
        let mut layers = vec![tier];
        layers.extend(cat.plans["free"].layers.iter());
        let eff = resolve(cat.services.len(), &layers, Timestamp(0));
        let l = eff.service(asr);
        assert_eq!(l.rate.unwrap().per_second, 5.0, "the free plan caps enterprise rates");
        assert_eq!(l.daily, Some(Units::whole(1800)));
        assert_eq!(l.concurrency.unwrap().lease_ttl_ms, 60_000);
    }

    fn err(text: &str) -> String {
        Catalogue::parse(text).unwrap_err().to_string()
    }

    const BASE: &str = "[services.asr]\nunit = \"s\"\n[tiers.t]\n[plans.p]\n";

    #[test]
    fn errors_name_the_field() {
        assert!(Catalogue::parse(BASE).is_ok());
        let e = err(&format!("{BASE}[plans.q.limits.nope]\ndaily = 1\n"));
        assert_eq!(e, "field `plans.q.limits.nope`: no service named `nope` in [services]");
        let e = err(&format!("{BASE}[tiers.u.limits.asr]\nrate = {{ per_second = -1 }}\n"));
        assert_eq!(e, "field `tiers.u.limits.asr.rate.per_second`: must be a number above 0 and at most 1e9");
        let e = err(&format!("{BASE}[plans.q.limits.asr]\ndaily = -5\n"));
        assert_eq!(e, "field `plans.q.limits.asr.daily`: must not be negative");
        let e = err(&format!("{BASE}[defaults]\ntime_zone = \"Mars/Olympus\"\n"));
        assert!(e.starts_with("field `defaults.time_zone`"), "{e}");
        let e = err(&format!("{BASE}[defaults]\ntier = \"gold\"\n"));
        assert_eq!(e, "field `defaults.tier`: no tier named `gold`");
        let e = err(&format!("{BASE}[tiers.t2.limits.asr]\nconcurency = {{ max = 1 }}\n"));
        assert!(e.contains("concurency"), "{e}");
        let e = err("[services.asr]\nunit = \"Audio Seconds\"\n[tiers.t]\n[plans.p]\n");
        assert!(e.starts_with("field `services.asr.unit`"), "{e}");
        let e = err("[services.asr]\nunit = 5\n");
        assert!(e.contains("unit"), "{e}");
    }
}
