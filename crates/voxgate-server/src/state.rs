//! The server's shared state: the catalogue, the counter store, the registry, the meter, and
//! a snapshot of every app's resolved limits that the hot path reads without locking.
//!
//! Effective limits are resolved when something changes (start-up, an app created or
//! patched, a verification approved, a contract or window added), and again when a
//! time-bound layer starts or stops (`Snapshot::valid_until`), never per request: the
//! snapshot is an immutable map swapped atomically.

use crate::config::Config;
use crate::meter::{Event, Meter};
use anyhow::Context;
use arc_swap::ArcSwap;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use voxgate_core::entitlement::{EffectiveLimits, resolve, value_of};
use voxgate_core::store::CounterKey;
use voxgate_core::time::Period;
use voxgate_core::{Catalogue, CounterStore, Dimension, Layer, ServiceIdx, Timestamp, Units};
use voxgate_registry::{Account, Actor, App, NewAccount, NewApp, Registry, Status};
use voxgate_store::{Counters, FailurePolicy, MemoryStore, RedisOptions, RedisStore};

/// Where "now" comes from. Tests inject a manual clock; the server uses the system clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| Timestamp::from_jiff(jiff::Timestamp::now()))
}

/// One app as the hot path sees it.
pub struct AppView {
    pub id: Arc<str>,
    pub account_id: String,
    pub plan: String,
    pub tier: String,
    pub time_zone: TimeZone,
    pub time_zone_name: String,
    /// Suspended when the app or its account is.
    pub suspended: bool,
    /// False when the account's identity claimed the free allowance elsewhere first.
    pub free_allowance: bool,
    pub spending_cap: Option<Decimal>,
    pub limits: EffectiveLimits,
    /// The limits before automatic adjustment and windows: what adjustment factors multiply.
    pub base: EffectiveLimits,
    /// Time-bound layers of this app not in force now, for `explain`.
    pub scheduled: Vec<Layer>,
}

/// Every app and key, resolved. Replaced whole on each change.
#[derive(Default)]
pub struct Snapshot {
    pub apps: HashMap<String, Arc<AppView>>,
    /// SHA-256 of each live API key → app id.
    pub keys: HashMap<String, String>,
    /// When some app's limits change by the clock alone (a contract or window starts or
    /// ends): the snapshot must be rebuilt then.
    pub valid_until: Option<Timestamp>,
}

pub struct AppState {
    pub catalogue: Arc<Catalogue>,
    pub store: Counters,
    pub registry: Registry,
    pub meter: Meter,
    /// Prometheus series the decision path records (see `metrics.rs`).
    pub metrics: crate::metrics::Metrics,
    pub snapshot: ArcSwap<Snapshot>,
    pub clock: Clock,
    pub node_id: String,
    pub admin_token: String,
    pub gateway_token: Option<String>,
    /// Unix ms of the last successful usage flush (0 before the first).
    pub last_flush_ms: AtomicI64,
    /// Apps stopped for the rest of the month by their spending cap.
    pub capped: ArcSwap<HashMap<String, Timestamp>>,
    /// Key for the keyed hashes of identity numbers (HMAC-SHA256).
    pub identity_key: Vec<u8>,
    /// Quota thresholds already queued as alerts.
    pub alerted: crate::alerts::Alerted,
    /// Signalled after every snapshot rebuild, so the scheduler re-reads the next boundary.
    pub rebuilt: tokio::sync::Notify,
    /// The registry's change marker (newest audit sequence) the current snapshot was built
    /// from: the change watcher rebuilds only when the registry has moved past it, so this
    /// node's own changes (already rebuilt by their handlers) are not rebuilt twice.
    pub built_from_change: AtomicI64,
    /// Serialises snapshot rebuilds so a slow one never overwrites a newer one.
    reloading: tokio::sync::Mutex<()>,
    pub config: Config,
}

/// What start-up did that the operator should be told.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// Where the generated admin token was written, if it was generated.
    pub admin_token_file: Option<PathBuf>,
    /// The demo app's key, when the demo app was created by this start.
    pub demo_key: Option<String>,
    /// (app, service) counters restored from durable usage.
    pub restored: usize,
}

impl AppState {
    /// Opens the registry, creates what a first start needs, restores quota counters from
    /// durable usage, and builds the first snapshot.
    pub async fn open(config: Config, clock: Clock) -> anyhow::Result<(Arc<AppState>, Bootstrap)> {
        let mut boot = Bootstrap::default();
        let registry_clock = clock.clone();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
        let registry = match &config.registry {
            None => Registry::open(&config.data_dir)
                .await
                .with_context(|| format!("cannot open the registry in {}", config.data_dir.display()))?,
            Some(url) => Registry::connect(url)
                .await
                .with_context(|| format!("cannot open the registry {}", crate::serve::redact(url)))?,
        }
        .with_clock(Arc::new(move || registry_clock().millis()));
        let admin_token = match &config.admin_token {
            Some(t) => t.clone(),
            None => {
                let (token, path) = secret_file(&config.data_dir, "admin-token", "vga")?;
                boot.admin_token_file = Some(path);
                token
            }
        };
        // Each node writes its usage under its own id. The embedded registry kept it in its
        // meta table (one node per database); a shared registry needs it per data directory.
        let node_id = match (&config.registry, registry.meta("node_id").await?) {
            (None, Some(id)) => id,
            (None, None) => {
                let id = format!("node_{:016x}", rand::random::<u64>());
                registry.set_meta("node_id", &id).await?;
                id
            }
            (Some(_), _) => secret_file(&config.data_dir, "node-id", "node")?.0,
        };
        // Identity numbers must hash alike on every node sharing a registry, so a shared
        // registry keeps the key itself; the embedded one keeps it beside the database.
        let identity_key = match &config.registry {
            None => secret_file(&config.data_dir, "identity-key", "vgi")?.0,
            Some(_) => match registry.meta("identity_key").await? {
                Some(k) => k,
                None => {
                    let k = format!("vgi_{}", hex::encode(rand::random::<[u8; 24]>()));
                    registry.set_meta_if_absent("identity_key", &k).await?;
                    registry.meta("identity_key").await?.unwrap_or(k)
                }
            },
        }
        .into_bytes();
        let store = match &config.counters {
            None => Counters::Memory(MemoryStore::new(config.catalogue.services.len())),
            Some(url) => {
                let services = &config.catalogue.services;
                let options = RedisOptions {
                    timeout: config.store_timeout,
                    service_names: services.iter().map(|s| s.id.clone()).collect(),
                    ..RedisOptions::default()
                };
                let redis = RedisStore::connect(url, services.len(), options)
                    .await
                    .with_context(|| format!("cannot use the counter store {}", crate::serve::redact(url)))?;
                let policies = services
                    .iter()
                    .map(|s| FailurePolicy::parse(&s.on_store_error).unwrap_or_default())
                    .collect();
                let counters = Counters::shared(redis, services.len(), policies, config.nodes);
                if config.local_lease_ms > 0 {
                    counters.with_slices(voxgate_store::SliceConfig {
                        slice_ms: config.local_lease_ms,
                        ..Default::default()
                    })
                } else {
                    counters
                }
            }
        };
        let catalogue = config.catalogue.clone();
        if config.demo && registry.accounts().await?.is_empty() {
            // Another node starting on the same shared registry may create it first.
            match create_demo(&registry, &catalogue).await {
                Ok(key) => boot.demo_key = Some(key),
                Err(e)
                    if e.downcast_ref::<voxgate_registry::RegistryError>()
                        .is_some_and(|e| matches!(e, voxgate_registry::RegistryError::Conflict(_))) => {}
                Err(e) => return Err(e),
            }
        }
        let state = Arc::new(AppState {
            store,
            catalogue,
            registry,
            meter: Meter::default(),
            metrics: crate::metrics::Metrics::new(
                config.catalogue.services.len(),
                config.metrics_per_app,
                clock().millis(),
            ),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            clock,
            node_id,
            admin_token,
            gateway_token: config.gateway_token.clone(),
            last_flush_ms: AtomicI64::new(0),
            capped: ArcSwap::from_pointee(HashMap::new()),
            identity_key,
            alerted: Default::default(),
            rebuilt: tokio::sync::Notify::new(),
            built_from_change: AtomicI64::new(0),
            reloading: tokio::sync::Mutex::new(()),
            config,
        });
        state.reload().await?;
        boot.restored = state.restore_quotas().await?;
        Ok((state, boot))
    }

    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Rebuilds the snapshot from the registry. Refuses (and keeps the old snapshot) when a
    /// record names a tier or plan the catalogue does not define: such an app would
    /// otherwise run with no limits at all.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        // Grants whose probation ended (also while the server was down) are recorded as
        // expired before the snapshot is built.
        self.expire_grants().await?;
        // Read before the records: a change made while this rebuild reads them moves the
        // marker past this value, so the watcher rebuilds again.
        let change = self.registry.last_change().await?;
        let accounts: HashMap<String, Account> =
            self.registry.accounts().await?.into_iter().map(|a| (a.id.clone(), a)).collect();
        let mut missing = Vec::new();
        for a in accounts.values() {
            if !self.catalogue.tiers.contains_key(&a.verification_level) {
                missing.push(format!("account `{}` has verification level `{}`", a.id, a.verification_level));
            }
        }
        let apps = self.registry.apps().await?;
        for app in &apps {
            if !self.catalogue.plans.contains_key(&app.plan) {
                missing.push(format!("app `{}` is on plan `{}`", app.id, app.plan));
            }
        }
        if !missing.is_empty() {
            anyhow::bail!(
                "the catalogue ({}) does not define what the registry uses: {}; add them back to the \
                 catalogue or move these accounts and apps first",
                self.config.catalogue_source,
                missing.join("; ")
            );
        }
        let now = self.now();
        let mut contracts: HashMap<String, Vec<Layer>> = HashMap::new();
        for c in self.registry.contracts(None).await? {
            match crate::entitlements::contract_layer(&c, &self.catalogue) {
                Some(layer) => contracts.entry(c.owner_id).or_default().push(layer),
                None => {
                    tracing::warn!(contract = %c.id, "contract no longer fits the catalogue; not applied")
                }
            }
        }
        let mut app_layers: HashMap<String, Vec<Layer>> = HashMap::new();
        let mut windows: HashMap<String, Vec<(String, serde_json::Value)>> = HashMap::new();
        for w in self.registry.windows(None).await? {
            windows.entry(w.owner_id).or_default().push((w.id, w.body));
        }
        let mut adjustments: HashMap<String, Vec<(ServiceIdx, Dimension, f64)>> = HashMap::new();
        for a in self.registry.adjustments().await? {
            let dim = serde_json::from_value::<Dimension>(serde_json::json!(a.dimension)).ok();
            if let (Some(idx), Some(dim)) = (self.catalogue.service(&a.service), dim) {
                adjustments.entry(a.app_id).or_default().push((idx, dim, a.factor));
            }
        }
        let granting = ["auto_approved", "approved", "partially_approved"];
        for r in self.registry.increase_requests(None, &granting).await? {
            if let Some(layer) = crate::http::increase::grant_layer(&r, &self.catalogue) {
                app_layers.entry(r.app_id.clone()).or_default().push(layer);
            }
        }
        let mut snapshot = Snapshot::default();
        for app in apps {
            let Some(account) = accounts.get(&app.account_id) else {
                continue;
            };
            let mut timed = contracts.get(&account.id).cloned().unwrap_or_default();
            timed.extend(app_layers.remove(&app.id).unwrap_or_default());
            for (id, body) in windows.get(&app.id).map(Vec::as_slice).unwrap_or_default() {
                if let Some(layer) =
                    crate::entitlements::window_layer(id, body, &self.catalogue, &account.time_zone)
                {
                    timed.push(layer);
                }
            }
            let adjust = adjustments.remove(&app.id).unwrap_or_default();
            let view = self.view(&app, account, timed, &adjust, now);
            snapshot.valid_until =
                [snapshot.valid_until, view.limits.valid_until].into_iter().flatten().min();
            snapshot.apps.insert(app.id.clone(), Arc::new(view));
        }
        snapshot.keys = self.registry.key_hashes().await?.into_iter().collect();
        self.snapshot.store(Arc::new(snapshot));
        self.built_from_change.store(change, Ordering::Relaxed);
        self.rebuilt.notify_waiters();
        Ok(())
    }

    /// Rebuilds the snapshot if a time-bound layer has started or stopped since it was built.
    /// Returns when it should be called next.
    pub async fn refresh_if_due(&self) -> anyhow::Result<Option<Timestamp>> {
        let due = self.snapshot.load().valid_until;
        if due.is_some_and(|t| self.now() >= t) {
            self.reload().await?;
        }
        Ok(self.snapshot.load().valid_until)
    }

    /// Resolves one app's effective limits: tier (the account's verification level), plan,
    /// the time-bound layers (contracts, grants, windows) in force at `now`, then automatic
    /// adjustments — each a factor on the limit the other layers give, kept within the tier's
    /// ceiling.
    pub fn view(
        &self,
        app: &App,
        account: &Account,
        timed: Vec<Layer>,
        adjustments: &[(ServiceIdx, Dimension, f64)],
        now: Timestamp,
    ) -> AppView {
        let cat = &self.catalogue;
        let mut layers: Vec<&Layer> = Vec::new();
        if let Some(tier) = cat.tiers.get(&account.verification_level) {
            layers.push(&tier.layer);
        }
        let claimed = cat
            .plans
            .get(&app.plan)
            .filter(|_| !account.free_allowance)
            .and_then(|plan| crate::entitlements::allowance_claimed_layer(plan, cat.services.len()));
        if let Some(plan) = cat.plans.get(&app.plan) {
            layers.extend(plan.layers.iter());
        }
        layers.extend(claimed.iter());
        // Adjustments multiply the limits without windows (a window scales whatever it finds,
        // adjustment included, so basing one on the other would count the window twice).
        layers.extend(timed.iter().filter(|l| l.kind != voxgate_core::LayerKind::Window));
        let base = resolve(cat.services.len(), &layers, now);
        layers.extend(timed.iter().filter(|l| l.kind == voxgate_core::LayerKind::Window));
        let mut adjusted = Layer {
            kind: voxgate_core::LayerKind::Adjustment,
            source: "adjustment:auto".into(),
            entries: Vec::new(),
            schedule: voxgate_core::schedule::Schedule::Always,
        };
        for (idx, dim, factor) in adjustments.iter().filter(|a| a.2 > 1.0) {
            let Some(v) = value_of(base.service(*idx), *dim) else { continue };
            let Some(ceiling) = self.ceiling(&account.verification_level, *idx, *dim) else { continue };
            let target = (v.primary() * factor).min(ceiling.max(v.primary()));
            if target > v.primary() {
                let op = voxgate_core::Op::Max(v.scaled(target / v.primary()));
                adjusted.entries.push(voxgate_core::entitlement::Entry {
                    service: *idx,
                    dimension: *dim,
                    op,
                });
            }
        }
        if !adjusted.entries.is_empty() {
            layers.push(&adjusted);
        }
        let limits = resolve(cat.services.len(), &layers, now);
        let scheduled = timed.iter().filter(|l| !l.schedule.active_at(now)).cloned().collect();
        let time_zone = TimeZone::get(&account.time_zone).unwrap_or(TimeZone::UTC);
        AppView {
            id: app.id.as_str().into(),
            account_id: account.id.clone(),
            plan: app.plan.clone(),
            tier: account.verification_level.clone(),
            time_zone,
            time_zone_name: account.time_zone.clone(),
            suspended: app.status == Status::Suspended || account.status == Status::Suspended,
            free_allowance: account.free_allowance,
            spending_cap: app.spending_cap.as_deref().and_then(|c| c.parse().ok()),
            limits,
            base,
            scheduled,
        }
    }

    /// The tier's ceiling for one dimension of one service, as a plain number.
    pub fn ceiling(&self, tier: &str, idx: ServiceIdx, dim: Dimension) -> Option<f64> {
        let tier = self.catalogue.tiers.get(tier)?;
        let (_, limits) = tier.ceiling.iter().find(|(s, _)| *s == idx)?;
        value_of(limits, dim).map(|v| v.primary())
    }

    /// A keyed hash of an identity number: what is stored and compared, never the number.
    /// `kind` keeps, say, a licence id from matching a registration number.
    pub fn identity_hash(&self, kind: &str, number: &str) -> String {
        use hmac::Mac;
        let normalized: String =
            number.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect();
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.identity_key).expect("HMAC takes any key");
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(normalized.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Seeds every app's per-minute, daily and monthly counters from the registry, so a
    /// restart never hands out a fresh minute's or day's quota.
    pub async fn restore_quotas(&self) -> anyhow::Result<usize> {
        let now = self.now();
        let snapshot = self.snapshot.load();
        let mut restored = 0;
        for view in snapshot.apps.values() {
            for period in [Period::Minute, Period::Day, Period::Month] {
                let window = period.window(now, &view.time_zone);
                let minute_start = window.start.div_euclid(60) * 60;
                for (service, units) in
                    self.registry.units_by_service(&view.id, minute_start, window.end).await?
                {
                    let Some(idx) = self.catalogue.service(&service) else {
                        continue;
                    };
                    let key = CounterKey { app: &view.id, service: idx };
                    let used = Units::from_milli(units.max(0) as u64);
                    self.store.restore(key, period, window, used).await?;
                    restored += 1;
                }
            }
        }
        Ok(restored)
    }

    /// Writes metered usage to the registry.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let n = self.meter.flush(&self.registry, &self.catalogue, &self.node_id).await?;
        self.last_flush_ms.store(self.now().millis(), Ordering::Relaxed);
        Ok(n)
    }

    pub fn record(&self, app: &Arc<str>, service: ServiceIdx, now: Timestamp, event: Event) {
        self.meter.record(app, service, now, event);
    }
}

/// Reads `<data-dir>/<name>`, or creates it (mode 0600) with a fresh random secret.
fn secret_file(data_dir: &std::path::Path, name: &str, prefix: &str) -> anyhow::Result<(String, PathBuf)> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), path)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = format!("{prefix}_{}", hex::encode(rand::random::<[u8; 24]>()));
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((token, path))
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{text}\n"))
}

/// The demo account and app (`demo`), so the README's first request works at once.
async fn create_demo(registry: &Registry, catalogue: &Catalogue) -> anyhow::Result<String> {
    let account = NewAccount {
        name: "Demo developer".into(),
        verification_level: catalogue.default_tier.clone(),
        time_zone: catalogue.default_time_zone.clone(),
    };
    registry.create_account(account, Some("demo".into()), &Actor::system()).await?;
    let app =
        NewApp { account_id: "demo".into(), name: "Demo app".into(), plan: catalogue.default_plan.clone() };
    let (_, key) = registry.create_app(app, Some("demo".into()), &Actor::system()).await?;
    Ok(key)
}
