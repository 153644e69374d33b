//! The catalogue: services and their units, tiers and plans with their per-service limits.
//!
//! Parsed in two steps, as the operator wrote it ([`raw`]) and then validated into typed
//! values, so a bad file is rejected once, at start-up, with the field that is wrong.

use crate::entitlement::{Layer, LayerKind};
use crate::limits::{ConcurrencyLimit, RateLimit, ServiceLimits};
use crate::units::Units;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

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
    /// `deny`, `allow` or `local`: what a shared counter store's failure means for this service.
    pub on_store_error: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub id: String,
    pub description: String,
    pub layer: Layer,
    /// Per service: the most self-service increases may grant at this level.
    pub ceiling: Vec<(ServiceIdx, ServiceLimits)>,
    pub requires_sector: bool,
}

/// What a plan sells, which decides how its usage is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// A free allowance with a hard stop at the quota.
    Free,
    /// Pay as you go: a free allowance (`included`), then overage billed at `prices`.
    Payg,
    /// A monthly package of `included` units; overage billed or blocked.
    Package,
    /// Limits from a contract.
    Enterprise,
}

impl PlanKind {
    pub fn parse(s: &str) -> Option<PlanKind> {
        match s {
            "free" => Some(PlanKind::Free),
            "payg" => Some(PlanKind::Payg),
            "package" => Some(PlanKind::Package),
            "enterprise" => Some(PlanKind::Enterprise),
            _ => None,
        }
    }

    /// Whether the plan's quotas and included units are a free allowance, which one verified
    /// identity may claim once.
    pub fn is_free_allowance(self) -> bool {
        matches!(self, PlanKind::Free | PlanKind::Payg)
    }
}

/// What happens to usage beyond a package's included units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overage {
    Bill,
    Block,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: String,
    pub description: String,
    pub kind: PlanKind,
    /// Limits the plan sets, then caps it puts on the tier's values.
    pub layers: Vec<Layer>,
    /// Units per month included, per service.
    pub included: Vec<(ServiceIdx, Units)>,
    /// Price per unit of overage, per service.
    pub prices: Vec<(ServiceIdx, Decimal)>,
    pub overage: Overage,
    pub auto_adjust: Option<crate::adjust::AutoAdjust>,
}

impl Plan {
    pub fn included(&self, idx: ServiceIdx) -> Units {
        self.included.iter().find(|(s, _)| *s == idx).map_or(Units::ZERO, |(_, u)| *u)
    }

    pub fn price(&self, idx: ServiceIdx) -> Option<Decimal> {
        self.prices.iter().find(|(s, _)| *s == idx).map(|(_, p)| *p)
    }

    /// Whether usage beyond the included units is billed (rather than free or blocked).
    pub fn bills_overage(&self) -> bool {
        match self.kind {
            PlanKind::Free => false,
            PlanKind::Payg | PlanKind::Enterprise => true,
            PlanKind::Package => self.overage == Overage::Bill,
        }
    }
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
    pub currency: String,
    /// Sectors an industry verification may name.
    pub sectors: Vec<String>,
    /// Rules for automatic approval of limit increases.
    pub increase_policy: crate::increase::Policy,
    /// How Envoy rate limit descriptors map to apps, services and costs.
    pub rls: Rls,
    /// How forward-auth (`/v1/authorize`) finds the key, the service and the units.
    pub forward_auth: ForwardAuth,
}

/// What a descriptor's hit count stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HitsAs {
    /// Hits are requests (the rate limit); units come from the units entry, if any.
    #[default]
    Requests,
    /// Hits are units of the service (the quotas); each descriptor is one request.
    Units,
}

/// What the rate limit service answers for a descriptor it cannot map to an app and a
/// service of the catalogue (no such app or key, no such service, entries missing, another
/// domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownPolicy {
    /// Let it through (`OK`): voxgate limits only what it knows.
    #[default]
    Ok,
    /// Refuse it (`OVER_LIMIT`).
    OverLimit,
}

/// The `[rls]` table: how the Envoy rate limit service reads descriptors. Each descriptor is
/// a list of `(key, value)` entries; these name the keys whose values voxgate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rls {
    /// Only requests of this domain are voxgate's; `None` accepts any domain.
    pub domain: Option<String>,
    /// Key whose value is an app id (`app_id`); `None` when disabled.
    pub app_key: Option<String>,
    /// Key whose value is an API key, resolved to its app (`api_key`); `None` when disabled.
    pub api_key_key: Option<String>,
    /// Key whose value is a service id of the catalogue (`service`).
    pub service_key: String,
    /// Key whose value is the units of the call (`units`); `None` when disabled.
    pub units_key: Option<String>,
    pub hits_as: HitsAs,
    pub unknown: UnknownPolicy,
}

impl Default for Rls {
    fn default() -> Self {
        Rls {
            domain: None,
            app_key: Some("app_id".into()),
            api_key_key: Some("api_key".into()),
            service_key: "service".into(),
            units_key: Some("units".into()),
            hits_as: HitsAs::Requests,
            unknown: UnknownPolicy::Ok,
        }
    }
}

/// The `[forward_auth]` table: how `/v1/authorize` reads a gateway's forwarded request.
/// Header names are lower case (HTTP field names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// The header carrying the app's API key (`authorization`).
    pub key_header: String,
    /// Whether the key is sent as `Bearer <key>`: true exactly when `key_header` is
    /// `authorization`; any other header carries the bare key.
    pub bearer: bool,
    /// (path prefix, service), longest prefix first, so the first match is the longest.
    pub routes: Vec<(String, ServiceIdx)>,
    /// The header carrying the units of the call, if any; absent on a request means 0 units.
    pub units_header: Option<String>,
}

impl Default for ForwardAuth {
    fn default() -> Self {
        ForwardAuth {
            key_header: "authorization".into(),
            bearer: true,
            routes: Vec::new(),
            units_header: None,
        }
    }
}

impl ForwardAuth {
    /// The service of a normalized request path: the route with the longest matching prefix.
    pub fn route(&self, path: &[u8]) -> Option<ServiceIdx> {
        self.routes.iter().find(|(prefix, _)| path.starts_with(prefix.as_bytes())).map(|(_, s)| *s)
    }
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
        #[serde(default)]
        pub verification: Verification,
        #[serde(default)]
        pub increase: Increase,
        #[serde(default)]
        pub rls: Rls,
        #[serde(default)]
        pub forward_auth: ForwardAuth,
    }

    /// `[forward_auth]`: how `/v1/authorize` reads the request a gateway forwards.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct ForwardAuth {
        /// The header with the API key; default `Authorization` (as `Bearer <key>`).
        pub key_header: Option<String>,
        /// Path prefix → service id, longest prefix wins; default `/<service>/` for each service.
        pub routes: Option<BTreeMap<String, String>>,
        /// The header with the units of the call (e.g. `X-Voxgate-Units`); default none.
        pub units_header: Option<String>,
    }

    /// `[rls]`: the Envoy rate limit service's descriptor mapping. An empty string turns an
    /// optional key off.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Rls {
        pub domain: Option<String>,
        pub app_key: Option<String>,
        pub api_key_key: Option<String>,
        pub service_key: Option<String>,
        pub units_key: Option<String>,
        /// `requests` (default) or `units`.
        pub hits_addend: Option<String>,
        /// `ok` (default) or `over_limit`.
        pub unknown: Option<String>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Increase {
        /// Approve automatically up to the justified value × (1 + margin); default 0.2.
        pub auto_approve_margin: Option<f64>,
        /// Days an automatic grant lasts unless renewed; default 30, 0 for good.
        pub probation_days: Option<u32>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Verification {
        /// Sectors an industry verification may name.
        #[serde(default)]
        pub sectors: Vec<String>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Defaults {
        pub tier: Option<String>,
        pub plan: Option<String>,
        pub time_zone: Option<String>,
        pub lease_ttl_s: Option<f64>,
        pub currency: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Service {
        pub unit: String,
        #[serde(default)]
        pub description: String,
        /// With a shared counter store: `deny` (default), `allow` or `local` when it fails.
        pub on_store_error: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tier {
        #[serde(default)]
        pub description: String,
        #[serde(default)]
        pub limits: BTreeMap<String, Limits>,
        /// The most that self-service increases may grant at this level.
        #[serde(default)]
        pub ceiling: BTreeMap<String, Limits>,
        /// Whether a verification to this level must name a sector.
        #[serde(default)]
        pub requires_sector: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Plan {
        #[serde(default)]
        pub description: String,
        /// `free`, `payg`, `package` or `enterprise`; defaults to the plan's id when that is
        /// one of these, else `free`.
        pub kind: Option<String>,
        #[serde(default)]
        pub limits: BTreeMap<String, Limits>,
        #[serde(default)]
        pub caps: BTreeMap<String, Limits>,
        /// Units per month included in the plan, per service.
        #[serde(default)]
        pub included: BTreeMap<String, f64>,
        /// Price per unit beyond what is included, per service, as a decimal string.
        #[serde(default)]
        pub prices: BTreeMap<String, toml::Value>,
        /// For packages: `bill` overage at `prices`, or `block` at the included units.
        pub overage: Option<String>,
        /// Raise rate or concurrency automatically while use stays high.
        pub auto_adjust: Option<AutoAdjust>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AutoAdjust {
        /// `rate` and/or `concurrency`.
        pub dimensions: Vec<String>,
        pub step: Option<f64>,
        pub high_water: Option<f64>,
        pub low_water: Option<f64>,
        pub sustain_s: Option<f64>,
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
            let on_store_error = s.on_store_error.unwrap_or_else(|| "deny".into());
            if !["deny", "allow", "local"].contains(&on_store_error.as_str()) {
                return Err(invalid(
                    format!("services.{id}.on_store_error"),
                    "must be `deny`, `allow` or `local`",
                ));
            }
            index.insert(id.clone(), ServiceIdx(services.len() as u16));
            services.push(Service { id, unit: s.unit, description: s.description, on_store_error });
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
            currency: raw.defaults.currency.unwrap_or_else(|| "USD".into()),
            sectors: raw.verification.sectors,
            increase_policy: crate::increase::Policy {
                margin: raw.increase.auto_approve_margin.unwrap_or(0.2),
                probation_days: raw.increase.probation_days.unwrap_or(30),
            },
            rls: rls(raw.rls)?,
            forward_auth: ForwardAuth::default(),
        };
        cat.forward_auth = cat.forward_auth_table(raw.forward_auth)?;
        if !(cat.increase_policy.margin.is_finite() && (0.0..=10.0).contains(&cat.increase_policy.margin)) {
            return Err(invalid("increase.auto_approve_margin", "must be a number from 0 to 10"));
        }
        if !(3..=8).contains(&cat.currency.len()) || !cat.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid("defaults.currency", "must be an upper-case currency code such as `USD`"));
        }
        for (i, sector) in cat.sectors.iter().enumerate() {
            if !valid_id(sector) {
                return Err(invalid(
                    format!("verification.sectors[{i}]"),
                    "sectors use a-z, 0-9, `_` and `-`",
                ));
            }
        }
        for (id, t) in raw.tiers {
            let path = format!("tiers.{id}");
            if !valid_id(&id) {
                return Err(invalid(path, "tier ids use a-z, 0-9, `_` and `-` (at most 64)"));
            }
            let limits = cat.limit_table(&format!("{path}.limits"), t.limits)?;
            let ceiling = cat.limit_table(&format!("{path}.ceiling"), t.ceiling)?;
            let layer = Layer::setting(LayerKind::Tier, format!("tier:{id}"), &limits);
            if t.requires_sector && cat.sectors.is_empty() {
                return Err(invalid(
                    format!("{path}.requires_sector"),
                    "needs [verification] sectors to choose from",
                ));
            }
            cat.tiers.insert(
                id.clone(),
                Tier { id, description: t.description, layer, ceiling, requires_sector: t.requires_sector },
            );
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
            // Without `kind`, a plan named like a kind is of that kind; any other plan is `free`:
            // its limits stop the app and nothing is billed.
            let kind = match &p.kind {
                Some(k) => PlanKind::parse(k).ok_or_else(|| {
                    invalid(format!("{path}.kind"), "must be `free`, `payg`, `package` or `enterprise`")
                })?,
                None => PlanKind::parse(&id).unwrap_or(PlanKind::Free),
            };
            let mut included = Vec::new();
            for (service, units) in p.included {
                let field = format!("{path}.included.{service}");
                let idx = cat
                    .service(&service)
                    .ok_or_else(|| invalid(&field, format!("no service named `{service}`")))?;
                included.push((idx, Units::from_f64(units).map_err(|e| invalid(&field, e.to_string()))?));
            }
            let mut prices = Vec::new();
            for (service, price) in p.prices {
                let field = format!("{path}.prices.{service}");
                let idx = cat
                    .service(&service)
                    .ok_or_else(|| invalid(&field, format!("no service named `{service}`")))?;
                let text = match price {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    _ => return Err(invalid(&field, "must be a decimal number such as \"0.0024\"")),
                };
                let price =
                    Decimal::from_str(&text).ok().filter(|d| !d.is_sign_negative()).ok_or_else(|| {
                        invalid(&field, "must be a decimal number of at least 0 such as \"0.0024\"")
                    })?;
                prices.push((idx, price));
            }
            let overage = match p.overage.as_deref() {
                None | Some("bill") => Overage::Bill,
                Some("block") => Overage::Block,
                Some(_) => return Err(invalid(format!("{path}.overage"), "must be `bill` or `block`")),
            };
            if kind == PlanKind::Package && overage == Overage::Block && !included.is_empty() {
                // A package that blocks overage stops each service at its included units.
                let caps: Vec<(ServiceIdx, ServiceLimits)> = included
                    .iter()
                    .map(|(idx, units)| (*idx, ServiceLimits { monthly: Some(*units), ..Default::default() }))
                    .collect();
                layers.push(Layer::capping(LayerKind::Plan, format!("plan:{id}:included"), &caps));
            }
            let auto_adjust = match p.auto_adjust {
                None => None,
                Some(a) => Some(auto_adjust(&format!("{path}.auto_adjust"), a)?),
            };
            cat.plans.insert(
                id.clone(),
                Plan { id, description: p.description, kind, layers, included, prices, overage, auto_adjust },
            );
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

    /// Validates a table of per-service limits written like the catalogue's (e.g. a
    /// contract's or a window's), naming fields under `path`.
    pub fn limit_table(
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

    fn forward_auth_table(&self, raw: raw::ForwardAuth) -> Result<ForwardAuth, CatalogueError> {
        let header = |field: &str, name: String| -> Result<String, CatalogueError> {
            // An HTTP field name is a token (RFC 9110 section 5.1).
            let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || name.len() > 64 || !name.bytes().all(tchar) {
                return Err(invalid(
                    format!("forward_auth.{field}"),
                    "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~, at most 64)",
                ));
            }
            Ok(name.to_ascii_lowercase())
        };
        let key_header = header("key_header", raw.key_header.unwrap_or_else(|| "Authorization".into()))?;
        let units_header = raw.units_header.map(|h| header("units_header", h)).transpose()?;
        if units_header.as_ref() == Some(&key_header) {
            return Err(invalid("forward_auth.units_header", "must differ from `key_header`"));
        }
        let routes = match raw.routes {
            None => self.services.iter().map(|s| (format!("/{}/", s.id), s.id.clone())).collect(),
            Some(r) => r,
        };
        let mut out = Vec::new();
        for (prefix, service) in routes {
            let field = format!("forward_auth.routes.\"{prefix}\"");
            // Paths are matched after normalization (no `//`, `.` or `..` segments, no query),
            // so a prefix holding any of these could never match.
            let normalized = prefix.starts_with('/')
                && prefix.len() <= 1024
                && !prefix.contains("//")
                && !prefix
                    .bytes()
                    .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#' || b == b'%')
                && !prefix.split('/').any(|seg| seg == "." || seg == "..");
            if !normalized {
                return Err(invalid(
                    field,
                    "must be a path prefix starting with `/`, without `//`, `.` or `..` segments, \
                     `?`, `#`, `%`, spaces or control characters (at most 1024)",
                ));
            }
            let idx = self
                .service(&service)
                .ok_or_else(|| invalid(&field, format!("no service named `{service}` in [services]")))?;
            out.push((prefix, idx));
        }
        // Longest first, so the first match is the longest; ties cannot happen (keys are unique).
        out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(ForwardAuth { bearer: key_header == "authorization", key_header, routes: out, units_header })
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

fn auto_adjust(path: &str, a: raw::AutoAdjust) -> Result<crate::adjust::AutoAdjust, CatalogueError> {
    use crate::limits::Dimension;
    let mut dimensions = Vec::new();
    for (i, d) in a.dimensions.iter().enumerate() {
        dimensions.push(match d.as_str() {
            "rate" => Dimension::Rate,
            "concurrency" => Dimension::Concurrency,
            _ => return Err(invalid(format!("{path}.dimensions[{i}]"), "must be `rate` or `concurrency`")),
        });
    }
    let share = |name: &str, v: Option<f64>, default: f64| -> Result<f64, CatalogueError> {
        let v = v.unwrap_or(default);
        if v.is_finite() && v > 0.0 && v <= 1.0 {
            Ok(v)
        } else {
            Err(invalid(format!("{path}.{name}"), "must be above 0 and at most 1"))
        }
    };
    let rules = crate::adjust::AutoAdjust {
        dimensions,
        step: share("step", a.step, 0.1)?,
        high_water: share("high_water", a.high_water, 0.7)?,
        low_water: share("low_water", a.low_water, 0.5)?,
        sustain_ms: match a.sustain_s {
            None => 300_000,
            Some(s) => seconds_to_ms(s)
                .ok_or_else(|| invalid(format!("{path}.sustain_s"), "must be a positive number of seconds"))?
                as i64,
        },
    };
    if rules.low_water >= rules.high_water {
        return Err(invalid(format!("{path}.low_water"), "must be below `high_water`"));
    }
    Ok(rules)
}

fn rls(raw: raw::Rls) -> Result<Rls, CatalogueError> {
    let defaults = Rls::default();
    // Absent: the default; empty: off (for the optional keys).
    let key =
        |name: &str, v: Option<String>, default: Option<String>| -> Result<Option<String>, CatalogueError> {
            match v {
                None => Ok(default),
                Some(k) if k.is_empty() => Ok(None),
                Some(k) if k.len() > 128 || k.chars().any(char::is_control) => Err(invalid(
                    format!("rls.{name}"),
                    "must be at most 128 characters, none of them control characters",
                )),
                Some(k) => Ok(Some(k)),
            }
        };
    let app_key = key("app_key", raw.app_key, defaults.app_key)?;
    let api_key_key = key("api_key_key", raw.api_key_key, defaults.api_key_key)?;
    let units_key = key("units_key", raw.units_key, defaults.units_key)?;
    let service_key = key("service_key", raw.service_key, Some(defaults.service_key))?
        .ok_or_else(|| invalid("rls.service_key", "must name the entry key that holds the service"))?;
    if app_key.is_none() && api_key_key.is_none() {
        return Err(invalid(
            "rls.app_key",
            "`app_key` and `api_key_key` cannot both be off: one must name the app",
        ));
    }
    let named = [
        ("app_key", app_key.as_ref()),
        ("api_key_key", api_key_key.as_ref()),
        ("service_key", Some(&service_key)),
        ("units_key", units_key.as_ref()),
    ];
    for (i, (name, k)) in named.iter().enumerate() {
        if let Some(k) = k
            && let Some((other, _)) = named[..i].iter().find(|(_, o)| *o == Some(*k))
        {
            return Err(invalid(format!("rls.{name}"), format!("`{k}` is already `rls.{other}`")));
        }
    }
    let hits_as = match raw.hits_addend.as_deref() {
        None | Some("requests") => HitsAs::Requests,
        Some("units") => HitsAs::Units,
        Some(_) => return Err(invalid("rls.hits_addend", "must be `requests` or `units`")),
    };
    let unknown = match raw.unknown.as_deref() {
        None | Some("ok") => UnknownPolicy::Ok,
        Some("over_limit") => UnknownPolicy::OverLimit,
        Some(_) => return Err(invalid("rls.unknown", "must be `ok` or `over_limit`")),
    };
    let domain = key("domain", raw.domain, None)?;
    Ok(Rls { domain, app_key, api_key_key, service_key, units_key, hits_as, unknown })
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
    fn plans_carry_kind_included_units_prices_and_overage() {
        let cat = Catalogue::builtin();
        let asr = cat.service("asr").unwrap();
        let payg = &cat.plans["payg"];
        assert_eq!(payg.kind, PlanKind::Payg);
        assert_eq!(payg.included(asr), Units::whole(18000));
        assert_eq!(payg.price(asr), Some(Decimal::from_str("0.00025").unwrap()));
        assert!(payg.bills_overage());
        let strict = &cat.plans["package_strict"];
        assert!(!strict.bills_overage());
        let eff = resolve(cat.services.len(), &strict.layers.iter().collect::<Vec<_>>(), Timestamp(0));
        assert_eq!(eff.service(asr).monthly, Some(Units::whole(360000)), "block stops at the package");
        assert!(cat.tiers["industry"].requires_sector);
        assert!(cat.sectors.contains(&"education".to_string()));
        assert_eq!(cat.currency, "USD");
        let e = err(&format!("{BASE}[plans.q]\nprices = {{ asr = \"-1\" }}\n"));
        assert_eq!(
            e,
            "field `plans.q.prices.asr`: must be a decimal number of at least 0 such as \"0.0024\""
        );
        let e = err(&format!("{BASE}[plans.q]\nkind = \"gold\"\n"));
        assert_eq!(e, "field `plans.q.kind`: must be `free`, `payg`, `package` or `enterprise`");
        let e = err(&format!("{BASE}[plans.q]\noverage = \"maybe\"\n"));
        assert_eq!(e, "field `plans.q.overage`: must be `bill` or `block`");
        let e = err(&format!("{BASE}[tiers.z]\nrequires_sector = true\n"));
        assert_eq!(e, "field `tiers.z.requires_sector`: needs [verification] sectors to choose from");
    }

    #[test]
    fn rls_mapping_has_defaults_and_checks_its_keys() {
        let cat = Catalogue::parse(BASE).unwrap();
        assert_eq!(cat.rls, Rls::default());
        assert_eq!(cat.rls.app_key.as_deref(), Some("app_id"));
        let cat = Catalogue::parse(&format!(
            "{BASE}[rls]\ndomain = \"voice\"\napp_key = \"\"\napi_key_key = \"x-api-key\"\n\
             hits_addend = \"units\"\nunknown = \"over_limit\"\nunits_key = \"\"\n"
        ))
        .unwrap();
        assert_eq!(
            cat.rls,
            Rls {
                domain: Some("voice".into()),
                app_key: None,
                api_key_key: Some("x-api-key".into()),
                service_key: "service".into(),
                units_key: None,
                hits_as: HitsAs::Units,
                unknown: UnknownPolicy::OverLimit,
            }
        );
        let e = err(&format!("{BASE}[rls]\napp_key = \"\"\napi_key_key = \"\"\n"));
        assert_eq!(
            e,
            "field `rls.app_key`: `app_key` and `api_key_key` cannot both be off: one must name the app"
        );
        let e = err(&format!("{BASE}[rls]\nunits_key = \"service\"\n"));
        assert_eq!(e, "field `rls.units_key`: `service` is already `rls.service_key`");
        let e = err(&format!("{BASE}[rls]\nservice_key = \"\"\n"));
        assert_eq!(e, "field `rls.service_key`: must name the entry key that holds the service");
        let e = err(&format!("{BASE}[rls]\nhits_addend = \"bytes\"\n"));
        assert_eq!(e, "field `rls.hits_addend`: must be `requests` or `units`");
        let e = err(&format!("{BASE}[rls]\nunknown = \"deny\"\n"));
        assert_eq!(e, "field `rls.unknown`: must be `ok` or `over_limit`");
        assert!(err(&format!("{BASE}[rls]\napp = \"x\"\n")).contains("app"));
    }

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

    #[test]
    fn forward_auth_routes_headers_and_defaults() {
        let cat = Catalogue::builtin();
        let fa = &cat.forward_auth;
        assert_eq!(
            (fa.key_header.as_str(), fa.bearer, fa.units_header.as_deref()),
            ("authorization", true, None)
        );
        assert_eq!(fa.routes.len(), cat.services.len(), "default: one route per service");
        assert_eq!(fa.route(b"/tts/v1/speak"), cat.service("tts"));
        assert_eq!(fa.route(b"/tts"), None, "a prefix is literal: `/tts/` does not match `/tts`");

        let cat = Catalogue::parse(&format!(
            "{BASE}[services.tts]\nunit = \"c\"\n[forward_auth]\nkey_header = \"X-Api-Key\"\n\
             units_header = \"X-Voxgate-Units\"\nroutes = {{ \"/v1/\" = \"tts\", \"/v1/asr/\" = \"asr\" }}\n"
        ))
        .unwrap();
        let fa = &cat.forward_auth;
        assert_eq!((fa.key_header.as_str(), fa.bearer), ("x-api-key", false));
        assert_eq!(fa.units_header.as_deref(), Some("x-voxgate-units"));
        assert_eq!(fa.route(b"/v1/asr/stream"), cat.service("asr"), "the longest prefix wins");
        assert_eq!(fa.route(b"/v1/tts"), cat.service("tts"));
        assert_eq!(fa.route(b"/v2/asr/"), None);
        let fa = Catalogue::parse(&format!("{BASE}[forward_auth]\nroutes = {{}}\n")).unwrap().forward_auth;
        assert!(fa.routes.is_empty(), "an empty table routes nothing");

        let e = err(&format!("{BASE}[forward_auth]\nroutes = {{ \"/x/\" = \"nope\" }}\n"));
        assert_eq!(e, "field `forward_auth.routes.\"/x/\"`: no service named `nope` in [services]");
        for bad in ["asr/", "/a/../b/", "/a//b", "/a?b", "/a%2f"] {
            let e = err(&format!("{BASE}[forward_auth]\nroutes = {{ \"{bad}\" = \"asr\" }}\n"));
            assert!(
                e.starts_with(&format!("field `forward_auth.routes.\"{bad}\"`: must be a path prefix")),
                "{e}"
            );
        }
        let e = err(&format!("{BASE}[forward_auth]\nkey_header = \"X Api Key\"\n"));
        assert!(e.starts_with("field `forward_auth.key_header`: must be an HTTP header name"), "{e}");
        let e = err(&format!("{BASE}[forward_auth]\nkey_header = \"X-K\"\nunits_header = \"x-k\"\n"));
        assert_eq!(e, "field `forward_auth.units_header`: must differ from `key_header`");
        let e = err(&format!("{BASE}[forward_auth]\nkey = \"x\"\n"));
        assert!(e.contains("key"), "{e}");
    }
}
