//! The Redis counter store: every node of a fleet shares one set of counters, on a single Redis
//! or a Redis Cluster, with exactly the rules of [`ServiceState`](voxgate_core::ServiceState).
//!
//! # One round trip per decision
//! Each operation ([`charge`](CounterStore::charge), [`peek`](CounterStore::peek), renew,
//! release, restore) is one server-side Lua script, sent as `EVALSHA` over a multiplexed
//! connection: the script reads the (app, service) state, evaluates every limit, and commits
//! everything or nothing before Redis runs any other command, so two nodes can never both
//! take the last unit of a quota. The scripts are loaded (`SCRIPT LOAD`) when the store
//! connects; a server that has lost them (restart, failover, `SCRIPT FLUSH`) answers
//! `NOSCRIPT`, and [`Script`] then loads the script and retries once — the only case
//! that takes more than one round trip. Concurrent calls share one connection
//! ([`ConnectionManager`] for a single server, which reconnects by itself;
//! [`ClusterConnection`] for a cluster) and are pipelined on it.
//!
//! # Key layout
//! The state of one (app, service) lives under `<prefix>:{<app>}:<service>:` (the default
//! prefix is `vg`; `<service>` is the catalogue index, or the name given in
//! [`RedisOptions::service_names`]). The braces are a hash tag: every key of an app is in one
//! cluster slot, so a script may touch all of them on Redis Cluster.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `…:s` | hash | `tat` (GCRA TAT, Unix ns) and, for counter `i` = 0 minute, 1 day, 2 month: `s<i>`, `e<i>` (window, Unix s) and `u<i>` (used, milli-units) |
//! | `…:l` | sorted set | live lease ids, scored by expiry in Unix µs (for pruning and counting) |
//! | `…:r` | hash | lease id → `"<expiry ns> <reserved milli-units> <c0> <c1> <c2>"`, `c<i>` the window starts the reservation was charged to |
//!
//! # Which clock decides
//! The node's: the `now` passed to every call, as for the in-memory store. Redis's own clock
//! (`TIME`) is never read for a decision. That keeps the Redis store conformant with the
//! engine, which takes time as an argument (the same inputs give the same decisions, which
//! the differential test checks), and calendar windows need the account's zone, which Lua
//! cannot know: the caller computes the current minute, day and month with
//! [`Period::window`] and passes their bounds. The cost is that nodes must keep their clocks
//! in step (NTP): a node whose clock is `d` ms ahead sees a GCRA bucket `d` ms fuller (and
//! lets one more request in `d` ms early), may see a lease expire `d` ms early, and near a
//! calendar boundary moves a quota into the next window `d` ms early. A node whose clock
//! steps back inside an earlier window keeps counting in the later one, as the engine does.
//!
//! # Integers only
//! Redis runs Lua 5.1, whose numbers are doubles, exact only to 2^53: Unix nanoseconds
//! (~1.8e18) and milli-unit amounts (up to 2^64) do not fit. The scripts handle every such
//! value as two limbs, `h·10⁹ + l` (for a time, the Unix second and the nanosecond in it), so
//! GCRA keeps full nanosecond precision and quotas the full `u64` range, with the engine's
//! saturation. Sorted-set scores are whole microseconds (exact until the year 2255); a lease
//! scored in the current microsecond is decided by its exact expiry. The scripts return the
//! state a decision was made on, and the retry-after, reset and remaining figures are
//! computed from it here in Rust, with the engine's own formulas.
//!
//! # Expiry
//! Every key expires by itself once it cannot matter: the state hash a margin
//! ([`RedisOptions::expiry_margin`], default one hour) after the end of its longest window
//! (the month) or its TAT, whichever is later; the two lease keys a margin after the last
//! lease's expiry. Expiries are set relative to `now` (`PEXPIRE`), so a skew between a node's
//! and Redis's clocks does not shorten them. A lease key that empties disappears at once.
//!
//! Redis must keep these keys until they expire: run it with `maxmemory-policy noeviction`
//! (every key here has an expiry, so a `volatile-*` policy would evict live counters first).
//!
//! # Failure
//! Every call has a budget ([`RedisOptions::timeout`], default 50 ms) covering reconnects,
//! redirects and the `NOSCRIPT` retry; past it the call returns [`StoreError::Timeout`].
//! A refused or dropped connection, a cluster that is down or resharding, and a server that
//! is loading are [`StoreError::Unavailable`]. Both are transient; the caller's failure policy
//! decides. A call that times out may still have been applied by Redis (the reply was lost).

use crate::memory::unknown_service;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{ErrorKind, FromRedisValue, RedisError, Script, ScriptInvocation, ServerErrorKind};
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;
use voxgate_core::decision::{LimitStatus, Refusal};
use voxgate_core::engine::{Cost, NewLease, Settlement};
use voxgate_core::store::{Charged, CheckInput, CounterKey, LeaseRelease};
use voxgate_core::time::{Period, Window, millis_until};
use voxgate_core::{
    CounterStore, Decision, Dimension, LeaseId, LimitReport, Reason, ServiceLimits, StoreError, Timestamp,
    Units, gcra,
};

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/common.lua"), include_str!($file))))
    };
}

static CHARGE: LazyLock<Script> = script!("lua/charge.lua");
static PEEK: LazyLock<Script> = script!("lua/peek.lua");
static RENEW: LazyLock<Script> = script!("lua/renew.lua");
static RELEASE: LazyLock<Script> = script!("lua/release.lua");
static RESTORE: LazyLock<Script> = script!("lua/restore.lua");

/// How a [`RedisStore`] names its keys and how long it waits.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// First segment of every key. Must not be empty or contain `{` or `}`.
    pub prefix: String,
    /// Budget for one call, everything included. Default 50 ms.
    pub timeout: Duration,
    /// Budget for [`RedisStore::connect`]: connecting, finding the cluster's slots and loading
    /// the scripts. Default 2 s.
    pub connect_timeout: Duration,
    /// How long keys outlive the last moment they can matter. Default one hour.
    pub expiry_margin: Duration,
    /// Names used for the service segment of keys, by catalogue index (e.g. the catalogue's
    /// service ids, so counters survive a catalogue that lists services in another order).
    /// Empty: the index number.
    pub service_names: Vec<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "vg".into(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(2),
            expiry_margin: Duration::from_secs(3600),
            service_names: Vec::new(),
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn invoke<T: FromRedisValue>(&self, call: &ScriptInvocation<'_>) -> ::redis::RedisResult<T> {
        match self {
            Conn::Single(c) => call.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => call.invoke_async(&mut c.clone()).await,
        }
    }

    async fn load(&self, script: &Script) -> ::redis::RedisResult<String> {
        match self {
            Conn::Single(c) => script.prepare_invoke().load_async(&mut c.clone()).await,
            Conn::Cluster(c) => script.prepare_invoke().load_async(&mut c.clone()).await,
        }
    }

    async fn ping(&self) -> ::redis::RedisResult<()> {
        match self {
            Conn::Single(c) => ::redis::cmd("PING").exec_async(&mut c.clone()).await,
            Conn::Cluster(c) => ::redis::cmd("PING").exec_async(&mut c.clone()).await,
        }
    }
}

/// Counters in Redis, shared by every node that connects to the same server or cluster.
/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Box<str>,
    services: Box<[Box<str>]>,
    timeout: Duration,
    margin_ms: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.conn {
            Conn::Single(_) => "single",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("kind", &kind)
            .field("prefix", &self.prefix)
            .field("services", &self.services.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisStore {
    /// Connects to `redis://host:port[/db]` (one server; `redis+unix:///path` also works) or
    /// `redis+cluster://[user:password@]h1:p1,h2:p2,…` (a cluster, found from any of the
    /// nodes), for a catalogue of `services` services, and loads the scripts.
    pub async fn connect(
        url: &str,
        services: usize,
        options: RedisOptions,
    ) -> Result<RedisStore, StoreError> {
        if options.prefix.is_empty() || options.prefix.contains(['{', '}']) {
            return Err(StoreError::Invalid(format!(
                "key prefix {:?} must be non-empty and contain no braces",
                options.prefix
            )));
        }
        if !options.service_names.is_empty() && options.service_names.len() != services {
            return Err(StoreError::Invalid(format!(
                "{} service names given for {services} services",
                options.service_names.len()
            )));
        }
        if options.timeout.is_zero() {
            return Err(StoreError::Invalid("the call timeout must be above zero".into()));
        }
        let names = if options.service_names.is_empty() {
            (0..services).map(|i| i.to_string().into_boxed_str()).collect()
        } else {
            options.service_names.iter().map(|s| s.as_str().into()).collect()
        };
        // The libraries' own timeouts are looser than ours, so that ours decides (and says
        // `Timeout`); they only keep a wedged connection from living forever.
        let response_timeout = options.timeout * 4;
        let connect = async {
            let conn = if let Some(nodes) = url.strip_prefix("redis+cluster://") {
                let client = ClusterClient::builder(cluster_nodes(nodes)?)
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(response_timeout)
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build()
                    .map_err(store_error)?;
                Conn::Cluster(client.get_async_connection().await.map_err(store_error)?)
            } else if url.starts_with("redis://") || url.starts_with("redis+unix://") {
                let client = ::redis::Client::open(url).map_err(store_error)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(3)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(ConnectionManager::new_with_config(client, config).await.map_err(store_error)?)
            } else {
                return Err(StoreError::Invalid(format!(
                    "unsupported Redis URL {:?}: expected redis://host:port[/db] or \
                     redis+cluster://host:port,host:port,…",
                    redact(url)
                )));
            };
            for script in [&CHARGE, &PEEK, &RENEW, &RELEASE, &RESTORE] {
                conn.load(script).await.map_err(store_error)?;
            }
            Ok(conn)
        };
        let conn = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .map_err(|_| StoreError::Timeout(options.connect_timeout.as_millis() as u64))??;
        Ok(RedisStore {
            conn,
            prefix: options.prefix.into(),
            services: names,
            timeout: options.timeout,
            margin_ms: options.expiry_margin.as_millis() as u64,
        })
    }

    /// One `PING` within the call budget, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.within(self.conn.ping()).await
    }

    /// The three keys of one (app, service): state, leases, reservations.
    fn keys(&self, key: CounterKey<'_>) -> Result<[String; 3], StoreError> {
        let service = self.services.get(key.service.0 as usize).ok_or_else(|| unknown_service(key))?;
        if key.app.is_empty() {
            // `{}` is not a hash tag: the keys would land in different cluster slots.
            return Err(StoreError::Invalid("an app id must not be empty".into()));
        }
        let base = format!("{}:{{{}}}:{}:", self.prefix, key.app, service);
        Ok([format!("{base}s"), format!("{base}l"), format!("{base}r")])
    }

    async fn within<T>(&self, call: impl Future<Output = ::redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout(self.timeout.as_millis() as u64)),
            Ok(Err(e)) => Err(store_error(e)),
            Err(_) => Err(StoreError::Timeout(self.timeout.as_millis() as u64)),
        }
    }

    async fn run<T: FromRedisValue>(&self, call: &ScriptInvocation<'_>) -> Result<T, StoreError> {
        self.within(self.conn.invoke(call)).await
    }

    /// Pushes now, the current minute, day and month, and the expiry margin: the arguments
    /// every script that rolls the counters starts with.
    fn time_args(&self, call: &mut ScriptInvocation<'_>, now: Timestamp, tz: &jiff::tz::TimeZone) {
        let (h, l) = split_i(now.nanos());
        call.arg(h).arg(l);
        for period in [Period::Minute, Period::Day, Period::Month] {
            let w = period.window(now, tz);
            call.arg(w.start).arg(w.end);
        }
        call.arg(self.margin_ms);
    }
}

/// `h1:p1,h2:p2` (with optional `user:password@` in front) as one `redis://` URL per node.
fn cluster_nodes(spec: &str) -> Result<Vec<String>, StoreError> {
    let (auth, hosts) = match spec.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), spec),
    };
    let hosts = hosts.trim_end_matches('/');
    if hosts.contains('/') {
        return Err(StoreError::Invalid("a Redis Cluster has only database 0: drop the /db".into()));
    }
    let nodes: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{auth}{h}")).collect();
    if nodes.is_empty() {
        return Err(StoreError::Invalid("redis+cluster:// needs at least one host:port".into()));
    }
    Ok(nodes)
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Whether retrying may help: connection trouble, a cluster that is down, resharding or
/// failing over, and a server that is loading, busy or out of memory are transient; a script
/// error, a wrong type, a cross-slot call or a refused login are not.
fn store_error(e: RedisError) -> StoreError {
    let transient = match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound | ErrorKind::Parse => true,
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        ),
        ErrorKind::Extension => matches!(e.code(), Some("OOM" | "BUSY")),
        _ => false,
    };
    if transient { StoreError::Unavailable(e.to_string()) } else { StoreError::Invalid(e.to_string()) }
}

const LIMB: i64 = 1_000_000_000;

/// An `i64` as the scripts' two limbs: `h·10⁹ + l`, `0 <= l < 10⁹`.
fn split_i(v: i64) -> (i64, i64) {
    (v.div_euclid(LIMB), v.rem_euclid(LIMB))
}

fn split_u(v: u64) -> (u64, u64) {
    (v / LIMB as u64, v % LIMB as u64)
}

fn join_i(h: i64, l: i64) -> i64 {
    h.saturating_mul(LIMB).saturating_add(l)
}

fn join_u(h: i64, l: i64) -> u64 {
    (h.max(0) as u64).saturating_mul(LIMB as u64).saturating_add(l.max(0) as u64)
}

fn bad_reply(what: &str) -> StoreError {
    StoreError::Invalid(format!("unexpected reply from the {what} script"))
}

/// The state of one (app, service) that a script reported, after rolling the windows and
/// pruning expired leases: what [`ServiceState`](voxgate_core::ServiceState) holds at the
/// moment it decides. The decision, refusal and report are computed from it with the
/// engine's rules, here rather than in Lua (divisions, floats for `window_s`).
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    tat: i64,
    counters: [(Window, Units); 3],
    /// Live leases, and the earliest expiry among them; counted only when the call needs them
    /// (a charge that asks for a lease, a peek under a concurrency limit), else 0 and `None`.
    leases: u64,
    next_expiry: Option<Timestamp>,
}

const PERIODS: [Dimension; 3] = [Dimension::PerMinute, Dimension::Daily, Dimension::Monthly];

impl Snapshot {
    /// `{allowed, tat h, l, (start, end, used h, l) x 3, leases, found, expiry h, l}`.
    fn parse(r: &[i64], what: &str) -> Result<(bool, Snapshot), StoreError> {
        let [allowed, th, tl, rest @ ..] = r else { return Err(bad_reply(what)) };
        let [c @ .., leases, found, xh, xl] = rest else { return Err(bad_reply(what)) };
        if c.len() != 12 {
            return Err(bad_reply(what));
        }
        let counter = |i: usize| {
            (
                Window { start: c[4 * i], end: c[4 * i + 1] },
                Units::from_milli(join_u(c[4 * i + 2], c[4 * i + 3])),
            )
        };
        let snapshot = Snapshot {
            tat: join_i(*th, *tl),
            counters: [counter(0), counter(1), counter(2)],
            leases: (*leases).max(0) as u64,
            next_expiry: (*found == 1).then(|| Timestamp(join_i(*xh, *xl))),
        };
        Ok((*allowed == 1, snapshot))
    }

    /// The first half of `ServiceState::charge`: every limit evaluated, nothing changed.
    fn evaluate(
        &self,
        limits: &ServiceLimits,
        cost: Cost,
        lease: bool,
        now: Timestamp,
    ) -> (Option<Refusal>, i64) {
        let mut refusal: Option<Refusal> = None;
        let mut refuse = |dim: Dimension, wait_ms: u64| {
            if refusal.is_none_or(|r| wait_ms > r.retry_after_ms) {
                refusal =
                    Some(Refusal { reason: Reason::of(dim), dimension: Some(dim), retry_after_ms: wait_ms });
            }
        };
        let mut new_tat = self.tat;
        if let Some(rate) = limits.rate
            && cost.requests > 0
        {
            let c = gcra::check(self.tat, now.nanos(), rate.emission_ns(), rate.burst, cost.requests);
            if c.allowed {
                new_tat = c.new_tat;
            } else {
                refuse(Dimension::Rate, (c.wait_ns as u64).div_ceil(1_000_000));
            }
        }
        if let (Some(conc), true) = (limits.concurrency, lease)
            && self.leases >= conc.max as u64
        {
            refuse(Dimension::Concurrency, self.concurrency_reset_ms(now));
        }
        for ((window, used), dim) in self.counters.iter().zip(PERIODS) {
            if let Some(limit) = limits.quota(dim) {
                let after = used.saturating_add(cost.units);
                if after > limit || (cost.units.is_zero() && *used >= limit) {
                    refuse(dim, millis_until(now, Timestamp::from_secs(window.end)));
                }
            }
        }
        (refusal, new_tat)
    }

    /// The second half: what the script committed.
    fn commit(&mut self, new_tat: i64, cost: Cost, lease_expiry: Option<Timestamp>) {
        self.tat = new_tat;
        for (_, used) in &mut self.counters {
            *used = used.saturating_add(cost.units);
        }
        if let Some(expires) = lease_expiry {
            self.leases += 1;
            self.next_expiry = Some(self.next_expiry.map_or(expires, |e| e.min(expires)));
        }
    }

    fn concurrency_reset_ms(&self, now: Timestamp) -> u64 {
        self.next_expiry.map_or(0, |e| millis_until(now, e))
    }

    /// `ServiceState::report`. `active` is the number of leases alive at `now`.
    fn report(&self, limits: &ServiceLimits, now: Timestamp, active: Option<u64>) -> LimitReport {
        let mut report = LimitReport::default();
        if let Some(rate) = limits.rate {
            let t = rate.emission_ns();
            let (remaining, next_ns) = gcra::remaining(self.tat, now.nanos(), t, rate.burst);
            report.push(LimitStatus {
                dimension: Dimension::Rate,
                limit: rate.burst as u64,
                used: (rate.burst - remaining) as u64,
                remaining: remaining as u64,
                reset_ms: (next_ns as u64).div_ceil(1_000_000),
                window_s: ((rate.burst as f64 / rate.per_second).ceil() as u64).max(1),
            });
        }
        if let (Some(conc), Some(used)) = (limits.concurrency, active) {
            report.push(LimitStatus {
                dimension: Dimension::Concurrency,
                limit: conc.max as u64,
                used,
                remaining: (conc.max as u64).saturating_sub(used),
                reset_ms: self.concurrency_reset_ms(now),
                window_s: conc.lease_ttl_ms.div_ceil(1000),
            });
        }
        for ((window, used), dim) in self.counters.iter().zip(PERIODS) {
            if let Some(limit) = limits.quota(dim) {
                report.push(LimitStatus {
                    dimension: dim,
                    limit: limit.milli(),
                    used: used.milli(),
                    remaining: limit.saturating_sub(*used).milli(),
                    reset_ms: millis_until(now, Timestamp::from_secs(window.end)),
                    window_s: (window.end - window.start).max(0) as u64,
                });
            }
        }
        report
    }
}

impl CounterStore for RedisStore {
    async fn charge(&self, input: CheckInput<'_>) -> Result<Charged, StoreError> {
        let [state, leases, reservations] = self.keys(input.key)?;
        let limits = input.limits;
        let (now, cost) = (input.now, input.cost);
        let lease = input.lease_ttl_ms.map(|ttl_ms| NewLease { id: rand::random::<u64>() >> 1, ttl_ms });
        let lease_expiry = lease.map(|l| now.plus_millis(l.ttl_ms));

        let mut call = CHARGE.prepare_invoke();
        call.key(&state).key(&leases).key(&reservations);
        self.time_args(&mut call, now, input.tz);
        match limits.rate.filter(|_| cost.requests > 0) {
            Some(rate) => {
                let t = rate.emission_ns();
                let (nh, nl) = split_i(t.saturating_mul(cost.requests as i64));
                let (hh, hl) = split_i(now.nanos().saturating_add(t.saturating_mul(rate.burst as i64)));
                call.arg(1).arg(nh).arg(nl).arg(hh).arg(hl);
            }
            None => {
                call.arg(0).arg(0).arg(0).arg(0).arg(0);
            }
        }
        let conc = match (limits.concurrency, lease) {
            (Some(c), Some(_)) => c.max as i64,
            _ => -1,
        };
        call.arg(conc);
        match (lease, lease_expiry) {
            (Some(l), Some(expires)) => {
                let (h, l2) = split_i(expires.nanos());
                call.arg(l.id).arg(h).arg(l2);
            }
            _ => {
                call.arg("").arg(0).arg(0);
            }
        }
        let (uh, ul) = split_u(cost.units.milli());
        call.arg(uh).arg(ul);
        for dim in PERIODS {
            match limits.quota(dim) {
                Some(limit) => {
                    let (h, l) = split_u(limit.milli());
                    call.arg(h as i64).arg(l);
                }
                None => {
                    call.arg(-1).arg(0);
                }
            }
        }

        let reply: Vec<i64> = self.run(&call).await?;
        let (allowed, mut snapshot) = Snapshot::parse(&reply, "charge")?;
        let (refused, new_tat) = snapshot.evaluate(limits, cost, lease.is_some(), now);
        if allowed != refused.is_none() {
            return Err(StoreError::Invalid(format!(
                "the charge script and the engine disagree (script allowed: {allowed}, engine: {refused:?})"
            )));
        }
        let mut active = lease.map(|_| snapshot.leases);
        if allowed {
            snapshot.commit(new_tat, cost, lease_expiry);
            if let (Some(n), Some(expires)) = (&mut active, lease_expiry)
                && expires > now
            {
                *n += 1;
            }
        }
        let report = snapshot.report(limits, now, active);
        let lease = lease.zip(lease_expiry).filter(|_| allowed).map(|(l, expires)| (l.id, expires));
        Ok(Charged { decision: Decision { refused, limits: report }, lease })
    }

    async fn peek(
        &self,
        key: CounterKey<'_>,
        limits: &ServiceLimits,
        now: Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Result<LimitReport, StoreError> {
        let [state, leases, reservations] = self.keys(key)?;
        let mut call = PEEK.prepare_invoke();
        call.key(&state).key(&leases).key(&reservations);
        self.time_args(&mut call, now, tz);
        call.arg(u8::from(limits.concurrency.is_some()));
        let reply: Vec<i64> = self.run(&call).await?;
        let (_, snapshot) = Snapshot::parse(&reply, "peek")?;
        Ok(snapshot.report(limits, now, Some(snapshot.leases)))
    }

    async fn renew_lease(
        &self,
        key: CounterKey<'_>,
        lease: LeaseId,
        ttl_ms: u64,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let [_, leases, reservations] = self.keys(key)?;
        let expires = now.plus_millis(ttl_ms);
        let (nh, nl) = split_i(now.nanos());
        let (eh, el) = split_i(expires.nanos());
        let mut call = RENEW.prepare_invoke();
        call.key(&leases).key(&reservations).arg(nh).arg(nl).arg(lease).arg(eh).arg(el).arg(self.margin_ms);
        let found: i64 = self.run(&call).await?;
        Ok((found == 1).then_some(expires))
    }

    async fn release_lease(
        &self,
        key: CounterKey<'_>,
        lease: LeaseId,
        actual: Option<Units>,
        now: Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Result<LeaseRelease, StoreError> {
        let [state, leases, reservations] = self.keys(key)?;
        let mut call = RELEASE.prepare_invoke();
        call.key(&state).key(&leases).key(&reservations);
        self.time_args(&mut call, now, tz);
        let (ah, al) = split_u(actual.unwrap_or_default().milli());
        call.arg(lease).arg(u8::from(actual.is_some())).arg(ah).arg(al);
        let reply: Vec<i64> = self.run(&call).await?;
        let (reserved, charged_minute) = match reply.as_slice() {
            [0] => return Ok(LeaseRelease::NotFound),
            [1, rh, rl, minute] => (Units::from_milli(join_u(*rh, *rl)), *minute),
            _ => return Err(bad_reply("release")),
        };
        // As `ServiceState::release`.
        let now_minute = now.secs().div_euclid(60) * 60;
        let Some(actual) = actual else {
            return Ok(LeaseRelease::Released(Settlement { delta_milli: 0, minute: now_minute }));
        };
        let delta = actual.milli() as i64 - reserved.milli() as i64;
        let minute = if delta > 0 { now_minute } else { charged_minute };
        Ok(LeaseRelease::Released(Settlement { delta_milli: delta, minute }))
    }

    async fn restore(
        &self,
        key: CounterKey<'_>,
        period: Period,
        window: Window,
        used: Units,
    ) -> Result<(), StoreError> {
        let [state, _, _] = self.keys(key)?;
        let index = match period {
            Period::Minute => 0,
            Period::Day => 1,
            Period::Month => 2,
        };
        let (uh, ul) = split_u(used.milli());
        let ttl_ms =
            ((window.end - window.start).max(0) as u64).saturating_mul(1000).saturating_add(self.margin_ms);
        let mut call = RESTORE.prepare_invoke();
        call.key(&state).arg(index).arg(window.start).arg(window.end).arg(uh).arg(ul).arg(ttl_ms);
        let _: i64 = self.run(&call).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limbs_round_trip() {
        for v in [0, 1, 999_999_999, 1_000_000_000, 1_795_000_000_123_456_789, -1, -1_000_000_001, i64::MAX] {
            let (h, l) = split_i(v);
            assert!((0..LIMB).contains(&l));
            assert_eq!(join_i(h, l), v);
        }
        for v in [0, 12_500, u64::MAX] {
            let (h, l) = split_u(v);
            assert_eq!(join_u(h as i64, l as i64), v);
        }
    }

    #[test]
    fn cluster_urls_become_one_url_per_node() {
        assert_eq!(cluster_nodes("a:1,b:2").unwrap(), ["redis://a:1", "redis://b:2"]);
        assert_eq!(cluster_nodes("u:p@a:1,b:2/").unwrap(), ["redis://u:p@a:1", "redis://u:p@b:2"]);
        assert!(cluster_nodes("a:1/3").is_err());
        assert!(cluster_nodes("").is_err());
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://…@h:1/0");
    }
}
