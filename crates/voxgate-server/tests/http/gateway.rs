//! Gateway integration (issue 6): forward-auth and Prometheus metrics.
//!
//! - `/v1/authorize` in-process (manual clock): keys, routes, units, refusals, metering.
//! - A real nginx running `examples/nginx/voxgate.conf` (only its three addresses replaced)
//!   in front of a tiny upstream, with the real voxgate binary behind `auth_request`: requests
//!   beyond the limit get 429 from nginx with voxgate's headers; allowed ones reach the upstream.
//! - `/metrics` of the real binary parsed by the Prometheus project's Python parsers
//!   (`tests/python/parse_metrics.py`, `prometheus_client`).
//!
//! nginx, python3 and `prometheus_client` are required: a test that cannot find them fails
//! with a message naming what to install (`scripts/test-deps.sh` installs all three).

use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// ---- forward-auth in-process --------------------------------------------------------------

/// `GET /v1/authorize` with the given headers.
async fn authorize(s: &Server, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method("GET").uri("/v1/authorize");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = s.app.clone().oneshot(req.body(Body::empty()).unwrap()).await.expect("infallible router");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply { status: parts.status, headers: parts.headers, json }
}

/// Usage of the demo app for one service today: (allowed, refused by reason).
async fn demo_usage(s: &Server, service: &str) -> (u64, Value) {
    s.state.flush().await.expect("flush");
    let r =
        call(&s.app, "GET", &format!("/v1/apps/demo/usage?service={service}&step=day"), Some(ADMIN), None)
            .await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let b = &r.json["series"][0];
    (b["allowed"].as_u64().unwrap_or(0), b["refused"].clone())
}

#[tokio::test]
async fn authorize_allows_with_204_and_refuses_with_429_like_check() {
    let s = server().await;
    let bearer = format!("Bearer {}", s.demo_key);
    let asr = [("authorization", bearer.as_str()), ("x-original-uri", "/asr/v1/recognize?lang=en")];
    // asr on the free plan: rate 5/s, burst 10.
    for i in 0..10 {
        let r = authorize(&s, &asr).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "call {i}: {:#}", r.json);
        assert_eq!(r.json, Value::String(String::new()), "a 204 has no body");
        assert_eq!(r.header("x-voxgate-app"), Some("demo"));
        assert_eq!(r.header("x-voxgate-service"), Some("asr"));
        assert!(r.header("ratelimit-policy").unwrap().contains("\"rate\";q=10;w=2"), "{:?}", r.headers);
        assert_eq!(ratelimit_item(&r, "rate")["r"], (9 - i).to_string());
        assert!(r.header("retry-after").is_none());
    }
    let r = authorize(&s, &asr).await;
    assert_refused(&r, "rate");
    assert_eq!(r.json["app_id"], "demo");
    assert_eq!(r.json["service"], "asr");
    assert_eq!(retry_after(&r), 1, "one request returns in 200 ms: rounded up to 1 s");
    assert!(r.header("ratelimit-policy").is_some() && r.header("ratelimit").is_some());
    assert!(r.content_type().starts_with("application/json"), "{}", r.content_type());

    // The same decision as /v1/check, on the same counters: the refused call consumed nothing.
    let r = check(&s, "asr", 0.0).await;
    assert_refused(&r, "rate");
    s.clock.advance_ms(200);
    let r = authorize(&s, &asr).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:#}", r.json);

    // Traefik's header works too, and a query or traversal does not change the service.
    let tts = [("authorization", bearer.as_str()), ("x-forwarded-uri", "/asr/../tts/speak?x=/asr/")];
    let r = authorize(&s, &tts).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:#}", r.json);
    assert_eq!(r.header("x-voxgate-service"), Some("tts"));

    // Metered like /v1/check: 11 allowed asr calls, 2 refused for rate (one by /v1/check).
    let (allowed, refused) = demo_usage(&s, "asr").await;
    assert_eq!((allowed, &refused["rate"]), (11, &json!(2)), "{refused:#}");

    // Any method: nginx sends GET, other gateways may forward the original one.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/authorize")
        .header("authorization", &bearer)
        .header("x-original-uri", "/tts/")
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.app.clone().oneshot(req).await.unwrap().status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn authorize_rejects_missing_keys_unknown_routes_and_suspended_apps() {
    // The gateway token guards /v1/check, not /v1/authorize: the app's key is the credential.
    let s = server_with(|c| c.gateway_token = Some(GATEWAY.into())).await;
    let bearer = format!("Bearer {}", s.demo_key);
    let uri = ("x-original-uri", "/asr/x");
    for headers in [
        vec![uri],
        vec![uri, ("authorization", "Bearer vgk_nobody")],
        vec![uri, ("authorization", "Basic ZGVtbzpkZW1v")],
        vec![uri, ("authorization", "Bearer test-gateway-token-0123456789")],
        vec![uri, ("authorization", "Bearer test-admin-token-0123456789")],
        vec![uri, ("x-api-key", s.demo_key.as_str())],
    ] {
        let r = authorize(&s, &headers).await;
        assert_problem(&r, 401, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let r = authorize(&s, &[("authorization", &bearer)]).await;
    assert_problem(&r, 404, "unknown_route");
    assert!(r.json["detail"].as_str().unwrap().contains("X-Original-URI"), "{:#}", r.json);
    let r = authorize(&s, &[("authorization", &bearer), ("x-original-uri", "/billing/invoices")]).await;
    assert_problem(&r, 404, "unknown_route");
    let r = authorize(&s, &[("authorization", &bearer), ("x-original-uri", "/asr")]).await;
    assert_problem(&r, 404, "unknown_route");
    // A units header the catalogue does not name is not read.
    let r = authorize(&s, &[("authorization", &bearer), uri, ("x-voxgate-units", "1e9")]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:#}", r.json);

    let r = call(&s.app, "PATCH", "/v1/apps/demo", Some(ADMIN), Some(json!({ "status": "suspended" }))).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let r = authorize(&s, &[("authorization", &bearer), uri]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:#}", r.json);
    assert_eq!(r.json["reason"], "suspended");
    assert!(r.header("retry-after").is_none(), "retrying will not help a suspended app");
    let (_, refused) = demo_usage(&s, "asr").await;
    assert_eq!(refused["suspended"], 1, "{refused:#}");

    // Rejections that never reached a decision are counted by code.
    let r = call(&s.app, "GET", "/metrics", None, None).await;
    let text = r.json.as_str().expect("text exposition");
    assert!(text.contains("voxgate_forward_auth_rejections_total{code=\"unauthorized\"} 6"), "{text}");
    assert!(text.contains("voxgate_forward_auth_rejections_total{code=\"unknown_route\"} 3"), "{text}");
}

/// The built-in catalogue with a `[forward_auth]` table.
fn with_forward_auth(table: &str) -> impl FnOnce(&mut Config) {
    let text = format!("{}\n[forward_auth]\n{table}\n", voxgate_core::catalogue::DEFAULT_CATALOGUE);
    move |c: &mut Config| {
        c.catalogue = Arc::new(voxgate_core::Catalogue::parse(&text).expect("catalogue with [forward_auth]"))
    }
}

#[tokio::test]
async fn authorize_reads_a_bare_key_header_routes_by_longest_prefix_and_charges_units() {
    let s = server_with(with_forward_auth(
        r#"key_header = "X-Api-Key"
units_header = "X-Voxgate-Units"
routes = { "/v1/speech/" = "asr", "/v1/speech/synthesize/" = "tts" }"#,
    ))
    .await;
    let key = s.demo_key.clone();
    let ask = |path: &'static str, units: Option<&'static str>| {
        let mut h = vec![("x-api-key", key.clone()), ("x-original-uri", path.to_string())];
        if let Some(u) = units {
            h.push(("x-voxgate-units", u.to_string()));
        }
        h
    };
    let send = |h: Vec<(&'static str, String)>| {
        let s = &s;
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            authorize(s, &h).await
        }
    };
    let r = send(ask("/v1/speech/synthesize/en", None)).await;
    assert_eq!((r.status, r.header("x-voxgate-service")), (StatusCode::NO_CONTENT, Some("tts")));
    let r = send(ask("/v1/speech/recognize", None)).await;
    assert_eq!((r.status, r.header("x-voxgate-service")), (StatusCode::NO_CONTENT, Some("asr")));
    let r = send(ask("/v1/speech/synthesize/../recognize", None)).await;
    assert_eq!(r.header("x-voxgate-service"), Some("asr"), "routed as the gateway serves it");
    let r = send(ask("/asr/", None)).await;
    assert_problem(&r, 404, "unknown_route");
    // `Authorization` is not read when the key header is another one.
    let bearer = format!("Bearer {key}");
    let r = authorize(&s, &[("authorization", &bearer), ("x-original-uri", "/v1/speech/x")]).await;
    assert_problem(&r, 401, "unauthorized");
    assert!(r.json["detail"].as_str().unwrap().contains("x-api-key"), "{:#}", r.json);

    // Units: 600 a minute for asr on the free plan.
    for _ in 0..2 {
        let r = send(ask("/v1/speech/recognize", Some("250"))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:#}", r.json);
    }
    let r = send(ask("/v1/speech/recognize", Some("250"))).await;
    assert_refused(&r, "quota");
    let wait = retry_after(&r);
    assert!((1..=60).contains(&wait), "until the next minute: {wait}");
    assert_eq!(ratelimit_item(&r, "per_minute")["r"], "100");
    let r = send(ask("/v1/speech/recognize", Some("abc"))).await;
    assert_problem(&r, 422, "invalid_cost");
    assert_eq!(r.json["field"], "x-voxgate-units");
    let r = send(ask("/v1/speech/recognize", Some("-1"))).await;
    assert_problem(&r, 422, "invalid_cost");
    let r = send(ask("/v1/speech/recognize", Some("700"))).await;
    assert_problem(&r, 422, "exceeds_limit");
    let (allowed, refused) = demo_usage(&s, "asr").await;
    assert_eq!((allowed, &refused["quota"]), (4, &json!(2)), "{refused:#}");
    let r = call(&s.app, "GET", "/v1/apps/demo/limits", Some(ADMIN), None).await;
    assert_eq!(num(&entry(&r.json["limits"], Some("asr"), "per_minute")["used"]), 500.0);
}

// ---- processes: voxgate, nginx, a tiny upstream ---------------------------------------------

const TIMEOUT: Duration = Duration::from_secs(10);
const ADMIN_TOKEN: &str = "gateway-admin-token-0123456789";

/// A child process killed (and reaped) when the test ends, however it ends.
struct Proc {
    child: Child,
    log: PathBuf,
    what: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}):\n{}", self.what, self.log());
        }
    }
}

/// The real `voxgate serve` on a free port (it binds port 0 and prints the address).
struct Voxgate {
    proc: Proc,
    addr: SocketAddr,
}

impl Voxgate {
    fn start(dir: &Path, extra: &[&str]) -> Voxgate {
        let log = dir.join("voxgate.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_voxgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .env("VOXGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            // The Envoy gRPC listener, where this build has one: any free port.
            .env("VOXGATE_GRPC_LISTEN", "127.0.0.1:0")
            .env("VOXGATE_LOG", "warn")
            .env_remove("VOXGATE_GATEWAY_TOKEN")
            .env_remove("VOXGATE_CONFIG")
            .env_remove("VOXGATE_NO_DEMO")
            .env_remove("VOXGATE_METRICS_PER_APP")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("voxgate starts");
        let mut proc = Proc { child, log, what: "voxgate" };
        let deadline = Instant::now() + TIMEOUT;
        let addr = loop {
            proc.assert_running();
            let log = proc.log();
            if let Some(rest) = log.split("listening on http://").nth(1)
                && let Some(addr) = rest.lines().next().and_then(|a| a.trim().parse().ok())
            {
                break addr;
            }
            assert!(Instant::now() < deadline, "voxgate printed no address in {TIMEOUT:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let v = Voxgate { proc, addr };
        loop {
            if http(v.addr, "GET", "/healthz", &[], None).is_ok_and(|r| r.status == 200) {
                return v;
            }
            assert!(Instant::now() < deadline, "voxgate not healthy:\n{}", v.proc.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The demo app's key, printed once at the first start.
    fn demo_key(&self) -> String {
        let log = self.proc.log();
        let rest =
            log.split("its API key (shown once): ").nth(1).unwrap_or_else(|| panic!("no demo key:\n{log}"));
        rest.split_whitespace().next().unwrap().to_string()
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> HttpReply {
        let body = body.map(|b| b.to_string());
        http(self.addr, method, path, headers, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.proc.log()))
    }
}

#[derive(Debug)]
struct HttpReply {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), read to the end.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpReply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut payload = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        payload = dechunk(&payload).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpReply { status, headers, body: String::from_utf8_lossy(&payload).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.split(';').next()?.trim(), 16)
                .ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A tiny upstream API: answers every request 200 `upstream` and closes; keeps each request's
/// head. Serves at most 1000 connections, each read with a timeout; stops when dropped.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming().take(1000) {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                }
                seen2.lock().unwrap().push(String::from_utf8_lossy(&raw).into_owned());
                let _ = stream.write_all(
                    concat!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n",
                        "Connection: close\r\n\r\nupstream\n"
                    )
                    .as_bytes(),
                );
            }
        });
        Upstream { addr, seen, stop, thread: Some(thread) }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// The nginx binary, or a failure that says how to get it.
fn nginx_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: this test drives a real nginx (Debian package `nginx`; \
                 scripts/test-deps.sh installs it)"
            )
        })
}

/// A real nginx with `examples/nginx/voxgate.conf`, in the foreground as one process.
fn start_nginx(dir: &Path, voxgate: SocketAddr, upstream: SocketAddr) -> (Proc, SocketAddr) {
    let nginx = nginx_binary();
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nginx/voxgate.conf");
    let example = std::fs::read_to_string(&example_path).expect("examples/nginx/voxgate.conf");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut site = example;
    for (directive, actual) in [
        ("server 127.0.0.1:8080;", format!("server {voxgate};")),
        ("server 127.0.0.1:9000;", format!("server {upstream};")),
        ("listen 127.0.0.1:8000;", format!("listen {listen};")),
    ] {
        assert_eq!(site.matches(directive).count(), 1, "the example has `{directive}` once");
        site = site.replace(directive, &actual);
    }
    std::fs::write(dir.join("voxgate.conf"), site).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\nhttp {{\n\
         access_log {d}/access.log;\nclient_body_temp_path {d}/client_body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         include {d}/voxgate.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let log = dir.join("error.log");
    let stderr = std::fs::File::create(dir.join("nginx.stderr")).unwrap();
    let child = Command::new(&nginx)
        .arg("-e")
        .arg(&log)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nginx.display()));
    let mut proc = Proc { child, log, what: "nginx" };
    let deadline = Instant::now() + TIMEOUT;
    while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = proc.child.try_wait() {
            let stderr = std::fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default();
            panic!("nginx exited ({status}):\n{stderr}\n{}", proc.log());
        }
        assert!(Instant::now() < deadline, "nginx not listening on {listen}:\n{}", proc.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, listen)
}

/// asr: 3 requests, then one every 100 s; tts: plenty. The demo app gets them.
const GATEWAY_CATALOGUE: &str = r#"
[defaults]
tier = "gateway"
plan = "test"

[services.asr]
unit = "audio_second"

[services.tts]
unit = "character"

[tiers.gateway]
limits.asr = { rate = { per_second = 0.01, burst = 3 }, daily = 100000 }
limits.tts = { rate = { per_second = 100, burst = 100 } }

[plans.test]
"#;

#[test]
fn nginx_answers_429_with_voxgate_headers_and_lets_allowed_requests_through() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalogue.toml"), GATEWAY_CATALOGUE).unwrap();
    let config = dir.path().join("catalogue.toml");
    let voxgate = Voxgate::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let key = voxgate.demo_key();
    let upstream = Upstream::start();
    let nginx_dir = tempfile::tempdir().unwrap();
    let (mut nginx, gw) = start_nginx(nginx_dir.path(), voxgate.addr, upstream.addr);
    let bearer = format!("Bearer {key}");
    let get = |path: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        http(gw, "GET", path, &headers, None).unwrap_or_else(|e| panic!("GET {path} via nginx: {e}"))
    };

    // Within the burst: through to the upstream, with voxgate's headers on the way back.
    for i in 0..3 {
        let r = get("/asr/v1/recognize?lang=en", Some(&bearer));
        assert_eq!((r.status, r.body.as_str()), (200, "upstream\n"), "call {i}: {r:#?}");
        let policy = r.header("ratelimit-policy").unwrap_or_else(|| panic!("no RateLimit-Policy: {r:#?}"));
        assert!(policy.contains("\"rate\";q=3;w=300"), "{policy}");
        let state = r.header("ratelimit").unwrap_or_else(|| panic!("no RateLimit: {r:#?}"));
        assert!(state.starts_with(&format!("\"rate\";r={};", 2 - i)), "{state}");
        assert!(r.header("retry-after").is_none(), "{r:#?}");
    }
    // Beyond it: 429 from nginx, with voxgate's RateLimit headers and Retry-After.
    for _ in 0..2 {
        let r = get("/asr/v1/recognize", Some(&bearer));
        assert_eq!(r.status, 429, "{r:#?}\n{}", nginx.log());
        let wait: u64 =
            r.header("retry-after").unwrap_or_else(|| panic!("no Retry-After: {r:#?}")).parse().unwrap();
        assert!((90..=100).contains(&wait), "one request returns every 100 s: {wait}");
        assert!(r.header("ratelimit-policy").unwrap().contains("\"rate\";q=3"), "{r:#?}");
        assert!(r.header("ratelimit").unwrap().starts_with("\"rate\";r=0;"), "{r:#?}");
        assert_eq!(r.json()["code"], "rate_limited", "{}", r.body);
        assert!(r.header("content-type").unwrap().starts_with("application/problem+json"));
    }
    // Only the allowed requests reached the upstream, charged to the app and service.
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for head in &seen {
        assert!(head.starts_with("GET /asr/v1/recognize"), "{head}");
        assert!(head.contains("X-Voxgate-App: demo\r\n"), "{head}");
        assert!(head.contains("X-Voxgate-Service: asr\r\n"), "{head}");
        assert!(head.contains(&format!("Authorization: {bearer}\r\n")), "{head}");
    }

    // Another service has its own limits; keys and routes are checked.
    let r = get("/tts/v1/speak", Some(&bearer));
    assert_eq!(r.status, 200, "{r:#?}");
    assert!(r.header("ratelimit-policy").unwrap().contains("\"rate\";q=100"), "{r:#?}");
    assert_eq!(get("/tts/v1/speak", None).status, 401);
    assert_eq!(get("/tts/v1/speak", Some("Bearer vgk_not_a_key")).status, 401);
    let r = get("/billing/", Some(&bearer));
    assert_eq!((r.status, r.json()["code"].as_str()), (404, Some("unknown_route")), "{r:#?}");
    assert_eq!(upstream.requests().len(), 4);

    // Decisions through nginx are decisions like any other: metered and counted.
    let metrics = voxgate.request("GET", "/metrics", &[], None).body;
    for line in [
        "voxgate_decisions_total{service=\"asr\",outcome=\"allowed\",reason=\"none\"} 3",
        "voxgate_decisions_total{service=\"asr\",outcome=\"refused\",reason=\"rate\"} 2",
        "voxgate_decisions_total{service=\"tts\",outcome=\"allowed\",reason=\"none\"} 1",
        "voxgate_forward_auth_rejections_total{code=\"unauthorized\"} 2",
        "voxgate_forward_auth_rejections_total{code=\"unknown_route\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in\n{metrics}");
    }

    // A suspended app: 403 through nginx.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = voxgate.request(
        "PATCH",
        "/v1/apps/demo",
        &[("Authorization", &auth)],
        Some(json!({"status": "suspended"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get("/tts/v1/speak", Some(&bearer)).status, 403);

    // voxgate away: nginx fails closed with 503, never lets the request through.
    drop(voxgate);
    let r = get("/tts/v1/speak", Some(&bearer));
    assert_eq!((r.status, r.json()["code"].as_str()), (503, Some("limiter_unavailable")), "{r:#?}");
    assert_eq!(upstream.requests().len(), 4);
    nginx.assert_running();
}

// ---- /metrics through Prometheus's own parser ------------------------------------------------

/// Runs `tests/python/parse_metrics.py` on an exposition; its JSON view of the families.
fn parse_metrics(exposition: &str, format: &str, per_app: bool) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/parse_metrics.py");
    let probe = Command::new("python3").args(["-c", "import prometheus_client"]).output();
    match probe {
        Err(e) => panic!("python3 is needed to parse /metrics with prometheus_client: {e}"),
        Ok(o) if !o.status.success() => panic!(
            "python package `prometheus_client` is missing (scripts/test-deps.sh installs it): {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => {}
    }
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(format);
    if per_app {
        cmd.arg("--per-app");
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from parse_metrics.py")
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"))
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {:#}", families[family]))
}

#[test]
fn metrics_parse_with_prometheus_client_and_count_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let v = Voxgate::start(dir.path(), &[]);
    let key = v.demo_key();
    let check = json!({ "app_id": "demo", "service": "asr", "units": 10 });
    for _ in 0..4 {
        assert_eq!(v.request("POST", "/v1/check", &[], Some(check.clone())).status, 200);
    }
    let lease = json!({ "app_id": "demo", "service": "asr" });
    assert_eq!(v.request("POST", "/v1/leases", &[], Some(lease.clone())).status, 201);
    assert_eq!(v.request("POST", "/v1/leases", &[], Some(lease.clone())).status, 201);
    // Concurrency 2 on the free plan: the third is refused.
    assert_eq!(v.request("POST", "/v1/leases", &[], Some(lease)).status, 429);
    let bearer = format!("Bearer {key}");
    let r =
        v.request("GET", "/v1/authorize", &[("Authorization", &bearer), ("X-Original-URI", "/tts/x")], None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(v.request("GET", "/v1/authorize", &[("X-Original-URI", "/tts/x")], None).status, 401);

    let r = v.request("GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let families = parse_metrics(&r.body, "text", false);
    let decisions = |service: &str, outcome: &str, reason: &str| {
        let labels = [("service", service), ("outcome", outcome), ("reason", reason)];
        sample(&families, "voxgate_decisions", "voxgate_decisions_total", &labels)
    };
    assert_eq!(decisions("asr", "allowed", "none"), 6.0);
    assert_eq!(decisions("asr", "refused", "concurrency"), 1.0);
    assert_eq!(decisions("asr", "refused", "rate"), 0.0, "known series start at 0");
    assert_eq!(decisions("tts", "allowed", "none"), 1.0);
    assert_eq!(decisions("rtm", "error", "store_unavailable"), 0.0);
    let h = "voxgate_decision_duration_seconds";
    assert_eq!(sample(&families, h, &format!("{h}_count"), &[("service", "asr")]), 7.0);
    assert_eq!(sample(&families, h, &format!("{h}_bucket"), &[("service", "asr"), ("le", "+Inf")]), 7.0);
    assert!(sample(&families, h, &format!("{h}_sum"), &[("service", "asr")]) > 0.0);
    let leases = |service| {
        sample(&families, "voxgate_leases_in_use", "voxgate_leases_in_use", &[("service", service)])
    };
    assert_eq!((leases("asr"), leases("tts")), (2.0, 0.0));
    let rejections = "voxgate_forward_auth_rejections";
    let unauthorized =
        sample(&families, rejections, &format!("{rejections}_total"), &[("code", "unauthorized")]);
    assert_eq!(unauthorized, 1.0);
    let store = [("store", "memory")];
    assert_eq!(
        sample(&families, "voxgate_counter_store_degraded", "voxgate_counter_store_degraded", &store),
        0.0
    );
    assert_eq!(
        sample(&families, "voxgate_counter_store_errors", "voxgate_counter_store_errors_total", &store),
        0.0
    );
    assert_eq!(sample(&families, "voxgate_snapshot_apps", "voxgate_snapshot_apps", &[]), 1.0);
    let lag = sample(&families, "voxgate_usage_flush_lag_seconds", "voxgate_usage_flush_lag_seconds", &[]);
    assert!((0.0..5.0).contains(&lag), "the flush runs every second: {lag}");
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(sample(&families, "voxgate_build_info", "voxgate_build_info", &version), 1.0);

    // What Prometheus asks for: OpenMetrics, through the strict parser.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let r = v.request("GET", "/metrics", &[("Accept", accept)], None);
    assert!(r.header("content-type").unwrap().starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    let families = parse_metrics(&r.body, "openmetrics", false);
    assert_eq!(
        sample(
            &families,
            "voxgate_decisions",
            "voxgate_decisions_total",
            &[("service", "tts"), ("outcome", "allowed")]
        ),
        1.0
    );
    drop(v);

    // With --metrics-per-app: one more family, labelled by app.
    let dir = tempfile::tempdir().unwrap();
    let v = Voxgate::start(dir.path(), &["--metrics-per-app"]);
    assert_eq!(v.request("POST", "/v1/check", &[], Some(check)).status, 200);
    let r = v.request("GET", "/metrics", &[], None);
    let families = parse_metrics(&r.body, "text", true);
    let labels = [("app", "demo"), ("service", "asr"), ("outcome", "allowed"), ("reason", "none")];
    assert_eq!(sample(&families, "voxgate_app_decisions", "voxgate_app_decisions_total", &labels), 1.0);
}
