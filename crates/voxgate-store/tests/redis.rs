//! The Redis store against real servers that this test starts itself, on free ports (never the
//! shared 6379): one standalone server, and a three-master Redis Cluster. `redis-server` and
//! `redis-cli` must be installed; without them these tests fail (they never skip).
//!
//! - both pass the store conformance suite;
//! - a random sequence of charges, leases, renewals, releases, peeks and restores at moving
//!   times gives the same decisions and reports on Redis as on the in-memory store;
//! - values past 2^53 (nanosecond times, huge quotas) stay exact;
//! - a decision is one `EVALSHA`, and a flushed script cache costs only a reload;
//! - every key expires by itself;
//! - a stopped or frozen server gives a transient `StoreError` within the call budget.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use voxgate_core::engine::Cost;
use voxgate_core::store::{Charged, CheckInput, CounterKey, LeaseRelease};
use voxgate_core::time::Period;
use voxgate_core::{
    ConcurrencyLimit, CounterStore, Dimension, RateLimit, ServiceIdx, ServiceLimits, StoreError, Timestamp,
    Units,
};
use voxgate_store::{MemoryStore, RedisOptions, RedisStore, conformance};

// ---- servers ---------------------------------------------------------------------------------

fn require(binary: &str) {
    if let Err(e) = Command::new(binary).arg("--version").output() {
        panic!(
            "`{binary}` is needed by the Redis store tests and could not be run ({e}). Install it \
             (Debian: `apt-get install redis-server`, which brings redis-server and redis-cli)."
        );
    }
}

/// `n` distinct free TCP ports on 127.0.0.1 (held together while chosen, so none repeats).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// One `redis-server`, stopped when dropped. It runs under a small shell that kills it when its
/// standard input closes, so it also goes away if this test process dies without unwinding.
struct Server {
    port: u16,
    pid: u32,
    args: Vec<String>,
    shell: Child,
    stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(port: u16, extra: &[String]) -> Server {
        require("redis-server");
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.path().to_str().unwrap(),
            "--logfile",
            dir.path().join("redis.log").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(extra);
        let (shell, stdin, pid) = spawn(&args);
        let server = Server { port, pid, args, shell, stdin: Some(stdin), _dir: dir };
        server.wait_ready();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_connection_with_timeout(Duration::from_secs(1)).unwrap()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not start: {ping:?}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM through the shell) and waits until it is gone.
    fn stop(&mut self) {
        if self.stdin.take().is_none() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shell.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
                let _ = self.shell.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.shell.wait();
    }

    /// Starts the server again on the same port with the same arguments (and no data).
    fn restart(&mut self) {
        self.stop();
        let (shell, stdin, pid) = spawn(&self.args);
        (self.shell, self.stdin, self.pid) = (shell, Some(stdin), pid);
        self.wait_ready();
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {}", self.pid);
    }
}

fn spawn(args: &[String]) -> (Child, ChildStdin, u32) {
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(r#"redis-server "$@" & echo $!; read _; kill $! 2>/dev/null; wait"#)
        .arg("sh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let stdin = shell.stdin.take().unwrap();
    let mut line = String::new();
    BufReader::new(shell.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let pid =
        line.trim().parse().unwrap_or_else(|_| panic!("no pid from the redis-server wrapper: {line:?}"));
    (shell, stdin, pid)
}

impl Drop for Server {
    fn drop(&mut self) {
        // A frozen server would ignore SIGTERM.
        let _ = Command::new("kill").args(["-CONT", &self.pid.to_string()]).status();
        self.stop();
    }
}

/// Three masters and no replicas, slots split by `redis-cli --cluster create`.
struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    fn start() -> Cluster {
        require("redis-cli");
        let ports = free_ports(6);
        let nodes: Vec<Server> = (0..3)
            .map(|i| {
                let config = format!("nodes-{}.conf", ports[i]);
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config,
                    "--cluster-port",
                    &ports[i + 3].to_string(),
                    "--cluster-node-timeout",
                    "5000",
                ]
                .map(String::from);
                Server::start(ports[i], &extra)
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create.args(["--cluster-replicas", "0", "--cluster-yes"]).output().unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut n.client()).unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not reach cluster_state:ok:\n{info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Cluster { nodes }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

// ---- stores ----------------------------------------------------------------------------------

static PREFIXES: AtomicU32 = AtomicU32::new(0);

fn unique_prefix() -> String {
    format!("t{}x{}", std::process::id(), PREFIXES.fetch_add(1, Ordering::Relaxed))
}

/// Generous budgets: the tests share two cores with compilers.
fn options(prefix: String) -> RedisOptions {
    RedisOptions { prefix, timeout: Duration::from_secs(3), ..RedisOptions::default() }
}

async fn store(url: &str) -> RedisStore {
    RedisStore::connect(url, 2, options(unique_prefix())).await.unwrap()
}

const ASR: ServiceIdx = ServiceIdx(0);
static UTC: jiff::tz::TimeZone = jiff::tz::TimeZone::UTC;
const T0: Timestamp = Timestamp::from_secs(1_795_000_000);

fn check<'a>(
    app: &'a str,
    limits: &'a ServiceLimits,
    requests: u32,
    milli: u64,
    now: Timestamp,
) -> CheckInput<'a> {
    CheckInput {
        key: CounterKey { app, service: ASR },
        limits,
        cost: Cost { requests, units: Units::from_milli(milli) },
        now,
        tz: &UTC,
        lease_ttl_ms: None,
    }
}

// ---- conformance -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_store_conforms() {
    let server = Server::start(free_ports(1)[0], &[]);
    let url = server.url();
    conformance::run_all(|| store(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_store_conforms_and_spreads_apps_over_the_masters() {
    let cluster = Cluster::start();
    let url = cluster.url();
    conformance::run_all(|| store(&url)).await;
    // Apps land in different slots, so on every master; each app's keys share one slot (a
    // script touching keys of two slots would fail with CROSSSLOT).
    let s = store(&url).await;
    let l = ServiceLimits {
        concurrency: Some(ConcurrencyLimit { max: 5, lease_ttl_ms: 60_000 }),
        daily: Some(Units::whole(10)),
        ..Default::default()
    };
    for i in 0..30 {
        let app = format!("app-{i}");
        let input = CheckInput { lease_ttl_ms: Some(60_000), ..check(&app, &l, 1, 1_000, T0) };
        assert!(s.charge(input).await.unwrap().decision.allowed());
    }
    for node in &cluster.nodes {
        let keys: i64 = redis::cmd("DBSIZE").query(&mut node.client()).unwrap();
        assert!(keys > 0, "master on port {} holds no keys", node.port);
    }
}

// ---- differential: Redis against memory --------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Move the clock forward (or, rarely, back) by this many nanoseconds.
    Advance(i64),
    Charge {
        requests: u32,
        milli: u64,
        lease_ttl_ms: Option<u64>,
    },
    Renew {
        lease: usize,
        ttl_ms: u64,
    },
    Release {
        lease: usize,
        actual: Option<u64>,
    },
    Peek,
    /// Seed a counter with the current (or the previous) window.
    Restore {
        period: usize,
        milli: u64,
        previous: bool,
    },
}

const MS: i64 = 1_000_000;

fn op() -> impl Strategy<Value = Op> {
    let advance = prop_oneof![
        4 => 0..5 * MS,
        4 => 0..2_000 * MS,
        2 => 0..90_000 * MS,
        1 => 0..2 * 86_400_000 * MS,
        1 => -90_000 * MS..0,
    ];
    let ttl = prop_oneof![Just(0u64), 1..3_000u64, Just(60_000u64)];
    prop_oneof![
        5 => advance.prop_map(Op::Advance),
        8 => (0..4u32, 0..30_000u64, proptest::option::of(ttl.clone()))
            .prop_map(|(requests, milli, lease_ttl_ms)| Op::Charge { requests, milli, lease_ttl_ms }),
        2 => (0..8usize, ttl).prop_map(|(lease, ttl_ms)| Op::Renew { lease, ttl_ms }),
        3 => (0..8usize, proptest::option::of(0..40_000u64))
            .prop_map(|(lease, actual)| Op::Release { lease, actual }),
        2 => Just(Op::Peek),
        1 => (0..3usize, 0..60_000u64, proptest::bool::weighted(0.3))
            .prop_map(|(period, milli, previous)| Op::Restore { period, milli, previous }),
    ]
}

fn limits() -> impl Strategy<Value = ServiceLimits> {
    let rate = proptest::option::weighted(
        0.7,
        (prop_oneof![Just(0.5), Just(1.0), Just(3.0), Just(7.0), Just(1000.0), Just(0.001)], 1..6u32)
            .prop_map(|(per_second, burst)| RateLimit { per_second, burst }),
    );
    let concurrency = proptest::option::weighted(
        0.6,
        (0..4u32, 1..5_000u64).prop_map(|(max, lease_ttl_ms)| ConcurrencyLimit { max, lease_ttl_ms }),
    );
    let quota = |max: u64| proptest::option::weighted(0.6, (0..max).prop_map(Units::from_milli));
    (rate, concurrency, quota(60_000), quota(150_000), quota(400_000)).prop_map(
        |(rate, concurrency, per_minute, daily, monthly)| ServiceLimits {
            rate,
            concurrency,
            per_minute,
            daily,
            monthly,
        },
    )
}

const ZONES: [&str; 5] = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"];

/// Starting points next to calendar boundaries: a month end in New York, Berlin's autumn DST
/// change, New York's spring one, a quiet day.
const STARTS: [&str; 4] =
    ["2026-12-01T04:58:30Z", "2026-10-24T21:59:00Z", "2026-03-08T06:59:50Z", "2026-06-15T12:00:00Z"];

#[derive(Debug, Clone)]
struct Case {
    limits: ServiceLimits,
    zone: usize,
    start: usize,
    offset_ns: i64,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (limits(), 0..ZONES.len(), 0..STARTS.len(), 0..1_000_000_000i64, proptest::collection::vec(op(), 1..80))
        .prop_map(|(limits, zone, start, offset_ns, ops)| Case { limits, zone, start, offset_ns, ops })
}

/// A decision with the lease's id left out (each store picks its own ids).
fn comparable(c: Charged) -> (voxgate_core::Decision, Option<Timestamp>) {
    (c.decision, c.lease.map(|(_, expires)| expires))
}

async fn run_case(redis: &RedisStore, app: &str, case: &Case) -> Result<(), TestCaseError> {
    let memory = MemoryStore::new(2);
    let tz = jiff::tz::TimeZone::get(ZONES[case.zone]).unwrap();
    let start: jiff::Timestamp = STARTS[case.start].parse().unwrap();
    let mut now = Timestamp(Timestamp::from_jiff(start).nanos() + case.offset_ns);
    let key = CounterKey { app, service: ASR };
    let l = &case.limits;
    // Leases taken, as (memory id, Redis id).
    let mut leases: Vec<(u64, u64)> = Vec::new();
    let pick =
        |leases: &Vec<(u64, u64)>, i: usize| leases.get(i % leases.len().max(1)).copied().unwrap_or((7, 7));
    for (step, op) in case.ops.iter().enumerate() {
        match *op {
            Op::Advance(ns) => now = Timestamp(now.nanos() + ns),
            Op::Charge { requests, milli, lease_ttl_ms } => {
                let input = CheckInput {
                    key,
                    limits: l,
                    cost: Cost { requests, units: Units::from_milli(milli) },
                    now,
                    tz: &tz,
                    lease_ttl_ms,
                };
                let m = memory.charge(input).await.unwrap();
                let r = redis.charge(input).await.unwrap();
                if let (Some((mid, _)), Some((rid, _))) = (m.lease, r.lease) {
                    leases.push((mid, rid));
                }
                prop_assert_eq!(comparable(m), comparable(r), "step {}: {:?}", step, op);
            }
            Op::Renew { lease, ttl_ms } => {
                let (mid, rid) = pick(&leases, lease);
                let m = memory.renew_lease(key, mid, ttl_ms, now).await.unwrap();
                let r = redis.renew_lease(key, rid, ttl_ms, now).await.unwrap();
                prop_assert_eq!(m, r, "step {}: {:?}", step, op);
            }
            Op::Release { lease, actual } => {
                let (mid, rid) = pick(&leases, lease);
                let actual = actual.map(Units::from_milli);
                let m = memory.release_lease(key, mid, actual, now, &tz).await.unwrap();
                let r = redis.release_lease(key, rid, actual, now, &tz).await.unwrap();
                prop_assert_eq!(m, r, "step {}: {:?}", step, op);
            }
            Op::Peek => {
                let m = memory.peek(key, l, now, &tz).await.unwrap();
                let r = redis.peek(key, l, now, &tz).await.unwrap();
                prop_assert_eq!(m, r, "step {}: {:?}", step, op);
            }
            Op::Restore { period, milli, previous } => {
                let period = [Period::Minute, Period::Day, Period::Month][period];
                let mut window = period.window(now, &tz);
                if previous {
                    window = period.window(Timestamp::from_secs(window.start - 1), &tz);
                }
                memory.restore(key, period, window, Units::from_milli(milli)).await.unwrap();
                redis.restore(key, period, window, Units::from_milli(milli)).await.unwrap();
            }
        }
    }
    // The end state agrees too.
    let m = memory.peek(key, l, now, &tz).await.unwrap();
    let r = redis.peek(key, l, now, &tz).await.unwrap();
    prop_assert_eq!(m, r, "final peek");
    Ok(())
}

/// `VOXGATE_REDIS_CASES` overrides the number of cases (for a long local run).
fn differential(url: &str, cases: u32) {
    let cases = std::env::var("VOXGATE_REDIS_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis = rt.block_on(store(url));
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let apps = AtomicU32::new(0);
    let result = runner.run(&case(), |case| {
        // A fresh app per run, so shrinking replays start from empty counters too.
        let app = format!("diff-{}", apps.fetch_add(1, Ordering::Relaxed));
        rt.block_on(run_case(&redis, &app, &case))
    });
    if let Err(e) = result {
        panic!("Redis and memory disagree: {e}");
    }
}

#[test]
fn standalone_store_decides_like_the_engine() {
    let server = Server::start(free_ports(1)[0], &[]);
    differential(&server.url(), 200);
}

#[test]
fn cluster_store_decides_like_the_engine() {
    let cluster = Cluster::start();
    differential(&cluster.url(), 40);
}

/// Values past 2^53 — nanosecond TATs far ahead, quotas near `u64::MAX`, saturation — are
/// exact in the scripts' two-limb arithmetic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_stay_exact() {
    let server = Server::start(free_ports(1)[0], &[]);
    let redis = store(&server.url()).await;
    let memory = MemoryStore::new(2);
    let huge = ServiceLimits {
        // One request per 11.6 days, burst 4000: the TAT runs ~1.3e17 ns ahead per call.
        rate: Some(RateLimit { per_second: 1e-6, burst: 4_000 }),
        concurrency: Some(ConcurrencyLimit { max: 3, lease_ttl_ms: 1 << 40 }),
        per_minute: None,
        daily: Some(Units::from_milli(u64::MAX - 10)),
        monthly: Some(Units::from_milli((1 << 61) + 3)),
    };
    let open = ServiceLimits { daily: Some(Units::from_milli(u64::MAX)), ..Default::default() };
    let mut now = Timestamp(T0.nanos() + 987_654_321);
    for step in 0..12u64 {
        for (app, l, requests, milli) in
            [("huge", &huge, 1_000, (1u64 << 59) + step), ("open", &open, 1, u64::MAX / 3 + step)]
        {
            let lease_ttl_ms = (step % 3 == 0).then_some(1u64 << 40);
            let input = CheckInput { lease_ttl_ms, ..check(app, l, requests, milli, now) };
            let m = memory.charge(input).await.unwrap();
            let r = redis.charge(input).await.unwrap();
            assert_eq!(comparable(m), comparable(r), "step {step} {app}");
            if let (Some((mid, _)), Some((rid, _))) = (m.lease, r.lease) {
                let key = CounterKey { app, service: ASR };
                let actual = Some(Units::from_milli(step << 58));
                let mr = memory.release_lease(key, mid, actual, now, &UTC).await.unwrap();
                let rr = redis.release_lease(key, rid, actual, now, &UTC).await.unwrap();
                assert_eq!(mr, rr, "step {step} {app} release");
            }
            let key = CounterKey { app, service: ASR };
            assert_eq!(
                memory.peek(key, l, now, &UTC).await.unwrap(),
                redis.peek(key, l, now, &UTC).await.unwrap(),
                "step {step} {app} peek"
            );
        }
        now = Timestamp(now.nanos() + 3_600_000 * MS + 7);
    }
    let open_used = redis.peek(CounterKey { app: "open", service: ASR }, &open, now, &UTC).await.unwrap();
    assert_eq!(open_used.get(Dimension::Daily).unwrap().used, u64::MAX, "saturates like Units");
}

// ---- round trips, scripts, expiry ----------------------------------------------------------------

fn evalsha_calls(conn: &mut redis::Connection) -> (u64, String) {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let calls = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap());
    (calls, info)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_evalsha_per_decision_and_a_flushed_script_is_reloaded() {
    let server = Server::start(free_ports(1)[0], &[]);
    let s = store(&server.url()).await;
    let mut admin = server.client();
    let l = ServiceLimits {
        rate: Some(RateLimit { per_second: 100.0, burst: 100 }),
        concurrency: Some(ConcurrencyLimit { max: 50, lease_ttl_ms: 10_000 }),
        per_minute: Some(Units::whole(1_000)),
        daily: Some(Units::whole(1_000)),
        monthly: Some(Units::whole(1_000)),
    };
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut admin).unwrap();
    for i in 0..10 {
        let lease_ttl_ms = (i % 2 == 0).then_some(10_000);
        assert!(
            s.charge(CheckInput { lease_ttl_ms, ..check("rt", &l, 1, 1_000, T0) })
                .await
                .unwrap()
                .decision
                .allowed()
        );
    }
    let (calls, info) = evalsha_calls(&mut admin);
    assert_eq!(calls, 10, "{info}");
    for other in ["cmdstat_eval:", "cmdstat_script"] {
        assert!(!info.contains(other), "a decision sent more than EVALSHA ({other}):\n{info}");
    }
    // After SCRIPT FLUSH the next call gets NOSCRIPT, loads the script, and goes on.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut admin).unwrap();
    assert!(s.charge(check("rt", &l, 1, 1_000, T0)).await.unwrap().decision.allowed());
    let peek = s.peek(CounterKey { app: "rt", service: ASR }, &l, T0, &UTC).await.unwrap();
    assert_eq!(peek.get(Dimension::Daily).unwrap().used, 11_000);
    assert_eq!(peek.get(Dimension::Concurrency).unwrap().used, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_expires_by_itself() {
    let server = Server::start(free_ports(1)[0], &[]);
    let prefix = unique_prefix();
    let margin = Duration::from_secs(600);
    let opts = RedisOptions { expiry_margin: margin, ..options(prefix.clone()) };
    let s = RedisStore::connect(&server.url(), 2, opts).await.unwrap();
    let mut admin = server.client();
    let l = ServiceLimits {
        concurrency: Some(ConcurrencyLimit { max: 5, lease_ttl_ms: 30_000 }),
        monthly: Some(Units::whole(100)),
        ..Default::default()
    };
    let key = CounterKey { app: "exp", service: ASR };
    let (id, _) = s
        .charge(CheckInput { lease_ttl_ms: Some(30_000), ..check("exp", &l, 1, 1_000, T0) })
        .await
        .unwrap()
        .lease
        .unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut admin).unwrap();
    keys.sort();
    let base = format!("{prefix}:{{exp}}:0:");
    assert_eq!(keys, [format!("{base}l"), format!("{base}r"), format!("{base}s")]);
    let ttl =
        |k: &str, admin: &mut redis::Connection| -> i64 { redis::cmd("PTTL").arg(k).query(admin).unwrap() };
    // The state lives until the month's end plus the margin (measured from the node's now).
    let month = Period::Month.window(T0, &UTC);
    let want = month.end * 1000 - T0.millis() + margin.as_millis() as i64;
    let state_ttl = ttl(&format!("{base}s"), &mut admin);
    assert!(state_ttl <= want && state_ttl > want - 60_000, "state ttl {state_ttl}, want about {want}");
    // The leases until the last lease's expiry plus the margin.
    let want = 30_000 + margin.as_millis() as i64;
    for k in ["l", "r"] {
        let t = ttl(&format!("{base}{k}"), &mut admin);
        assert!(t <= want && t > want - 60_000, "{k} ttl {t}, want about {want}");
    }
    // The last lease gone, its keys are gone.
    assert!(matches!(s.release_lease(key, id, None, T0, &UTC).await.unwrap(), LeaseRelease::Released(_)));
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut admin).unwrap();
    assert_eq!(keys, [format!("{base}s")]);
    // A restored counter gets an expiry too.
    let day = Period::Day.window(T0, &UTC);
    s.restore(CounterKey { app: "rest", service: ASR }, Period::Day, day, Units::whole(3)).await.unwrap();
    let t = ttl(&format!("{prefix}:{{rest}}:0:s"), &mut admin);
    assert!(t > 0 && t <= 86_400_000 + margin.as_millis() as i64, "restored ttl {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_invalid_not_transient() {
    let server = Server::start(free_ports(1)[0], &[]);
    let s = store(&server.url()).await;
    let l = ServiceLimits::default();
    let out_of_catalogue =
        CheckInput { key: CounterKey { app: "a", service: ServiceIdx(2) }, ..check("a", &l, 1, 0, T0) };
    assert!(matches!(s.charge(out_of_catalogue).await, Err(StoreError::Invalid(_))));
    assert!(matches!(s.charge(check("", &l, 1, 0, T0)).await, Err(StoreError::Invalid(_))));
    for prefix in ["", "a{b", "c}"] {
        let e = RedisStore::connect(&server.url(), 2, options(prefix.into())).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{prefix:?}: {e:?}");
    }
    let e = RedisStore::connect("rediss://127.0.0.1:1", 2, options(unique_prefix())).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    // Keys may use the catalogue's service names.
    let names = RedisOptions { service_names: vec!["asr".into(), "tts".into()], ..options(unique_prefix()) };
    let prefix = names.prefix.clone();
    let named = RedisStore::connect(&server.url(), 2, names).await.unwrap();
    named.charge(check("a", &l, 1, 0, T0)).await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut server.client()).unwrap();
    assert_eq!(keys, [format!("{prefix}:{{a}}:asr:s")]);
}

// ---- failure ---------------------------------------------------------------------------------------

/// Within the budget, give or take the scheduler on a busy two-core machine.
fn assert_within(started: Instant, budget: Duration, what: &str) {
    let took = started.elapsed();
    assert!(took < budget + Duration::from_millis(250), "{what} took {took:?} with a budget of {budget:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_frozen_redis_fails_within_the_budget() {
    let mut server = Server::start(free_ports(1)[0], &[]);
    let budget = Duration::from_millis(100);
    let opts =
        RedisOptions { timeout: budget, ..RedisOptions { prefix: unique_prefix(), ..Default::default() } };
    let s = RedisStore::connect(&server.url(), 2, opts).await.unwrap();
    let l = ServiceLimits { daily: Some(Units::whole(100)), ..Default::default() };
    assert!(s.charge(check("f", &l, 1, 1_000, T0)).await.unwrap().decision.allowed());
    s.ping().await.unwrap();

    // Frozen: the connection is open, nothing answers.
    server.signal("-STOP");
    let started = Instant::now();
    let e = s.charge(check("f", &l, 1, 1_000, T0)).await.unwrap_err();
    assert_within(started, budget, "a call to a frozen server");
    assert_eq!(e, StoreError::Timeout(100));
    assert!(e.is_transient());
    server.signal("-CONT");

    // Stopped: the connection drops, reconnecting is refused.
    server.stop();
    for attempt in 0..3 {
        let started = Instant::now();
        let e = s.charge(check("f", &l, 1, 1_000, T0)).await.unwrap_err();
        assert_within(started, budget, "a call to a stopped server");
        assert!(e.is_transient(), "attempt {attempt}: {e:?}");
    }
    let started = Instant::now();
    assert!(s.ping().await.unwrap_err().is_transient());
    assert_within(started, budget, "a ping to a stopped server");

    // Back again (empty): the store reconnects by itself and reloads its scripts.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.charge(check("f", &l, 1, 1_000, T0)).await {
            Ok(c) => {
                assert!(c.decision.allowed());
                assert_eq!(c.decision.limits.get(Dimension::Daily).unwrap().used, 1_000);
                break;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e:?}");
                assert!(Instant::now() < deadline, "no reconnect after a restart: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_within_the_connect_budget() {
    let port = free_ports(1)[0];
    let connect_timeout = Duration::from_millis(300);
    for url in [format!("redis://127.0.0.1:{port}"), format!("redis+cluster://127.0.0.1:{port}")] {
        let opts = RedisOptions { connect_timeout, ..options(unique_prefix()) };
        let started = Instant::now();
        let e = RedisStore::connect(&url, 2, opts).await.unwrap_err();
        assert_within(started, connect_timeout, &url);
        assert!(e.is_transient(), "{url}: {e:?}");
    }
}

// ---- several calls all or nothing (the Envoy rate limit service's descriptors) --------------

/// `Counters::charge_all` on Redis (check, then charge): a batch whose second call is over
/// charges nothing; calls on one (app, service) add up; a dry run is never charged; and a
/// batch that passes is charged on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_batches_charge_all_or_nothing() {
    use voxgate_store::{BatchCall, Counters, FailurePolicy};
    let server = Server::start(free_ports(1)[0], &[]);
    let counters = Counters::shared(store(&server.url()).await, 2, vec![FailurePolicy::Deny; 2], 1);
    let l = ServiceLimits { daily: Some(Units::whole(100)), ..Default::default() };
    let tts = ServiceIdx(1);
    let call = |service: ServiceIdx, units: u64, dry_run: bool| BatchCall {
        input: CheckInput { key: CounterKey { app: "a", service }, ..check("a", &l, 1, units * 1000, T0) },
        dry_run,
    };
    let daily = |service: ServiceIdx| {
        let counters = &counters;
        let l = &l;
        async move {
            let key = CounterKey { app: "a", service };
            counters.peek(key, l, T0, &UTC).await.unwrap().get(Dimension::Daily).unwrap().used / 1000
        }
    };
    assert!(counters.charge_all(&[call(tts, 95, false)]).await.unwrap().committed);
    let b = counters.charge_all(&[call(ASR, 10, false), call(tts, 10, false)]).await.unwrap();
    assert!(!b.committed);
    assert_eq!(b.charged, [false, false]);
    assert!(b.decisions[0].allowed() && !b.decisions[1].allowed());
    assert_eq!(b.decisions[1].refused.unwrap().dimension, Some(Dimension::Daily));
    assert_eq!((daily(ASR).await, daily(tts).await), (0, 95));
    // 3 + 3 > 5 left on one (app, service).
    let b = counters.charge_all(&[call(tts, 3, false), call(tts, 3, false)]).await.unwrap();
    assert!(!b.committed && b.decisions[0].allowed() && !b.decisions[1].allowed());
    assert_eq!(daily(tts).await, 95);
    // A dry run does not count for the calls after it, and is not charged.
    let b =
        counters.charge_all(&[call(tts, 5, true), call(tts, 5, false), call(ASR, 7, false)]).await.unwrap();
    assert!(b.committed);
    assert_eq!(b.charged, [false, true, true]);
    assert_eq!((daily(ASR).await, daily(tts).await), (7, 100));
}
