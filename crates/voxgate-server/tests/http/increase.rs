//! The limit-increase workflow over HTTP (issue 4): sizing a business case, the request's
//! state machine, grants taking effect live and lapsing after probation, evidence from the
//! app's own usage, webhooks (signed, retried, from a durable outbox), quota threshold
//! alerts, audit entries, and who may do what.
//!
//! Same harness as the rest of this binary: the router driven in-process with a manual
//! clock. The only real I/O besides SQLite is a tiny webhook receiver on 127.0.0.1 in a
//! thread, which answers a fixed list of statuses and stops itself.
//!
//! Built-in catalogue figures relied on (app `demo`: tier `individual`, plan `free`, UTC):
//! - asr: tier 10/s burst 20, concurrency 10; the free plan caps these at 5/s burst 10 and 2
//!   leases; `individual`'s self-service ceiling is 50/s burst 100 and 50 leases; no ceiling
//!   for quotas or for voice_call (whose concurrency is 20 on `individual`).
//! - tts on `free`: 20 000 characters a day, 300 000 a month; rate capped at 10/s burst 20.
//! - increase policy: automatic approval up to the justified value + 20 %, and automatic
//!   grants on a 30-day probation.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;

// ---- helpers -------------------------------------------------------------------------------

/// A fresh server (with the demo app) whose clock starts at `at`.
async fn server_at(at: &str) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut s, boot) = open(dir, ManualClock::at(at), |_| {}).await;
    s.demo_key = boot.demo_key.expect("first open creates the demo app");
    s
}

/// Unix milliseconds of an RFC 3339 instant.
fn ms(rfc3339: &str) -> i64 {
    instant(rfc3339).millis()
}

async fn new_account(s: &Server, name: &str, time_zone: &str) -> String {
    let body = json!({ "name": name, "time_zone": time_zone });
    let r = call(&s.app, "POST", "/v1/accounts", Some(ADMIN), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    r.json["id"].as_str().expect("account id").to_string()
}

/// Creates an app of `account` on `plan`: (id, API key).
async fn new_app(s: &Server, account: &str, plan: &str) -> (String, String) {
    let body = json!({ "account_id": account, "name": format!("{plan} app"), "plan": plan });
    let r = call(&s.app, "POST", "/v1/apps", Some(ADMIN), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    (r.json["id"].as_str().unwrap().to_string(), r.json["api_key"].as_str().unwrap().to_string())
}

async fn check_app(s: &Server, app: &str, service: &str, units: f64) -> Reply {
    let body = json!({ "app_id": app, "service": service, "units": units });
    call(&s.app, "POST", "/v1/check", None, Some(body)).await
}

/// A check that must pass.
async fn allow(s: &Server, app: &str, service: &str, units: f64) {
    let r = check_app(s, app, service, units).await;
    assert_eq!(r.status, StatusCode::OK, "{app} {service} {units}: {:#}", r.json);
}

async fn lease_app(s: &Server, app: &str) -> Reply {
    call(&s.app, "POST", "/v1/leases", None, Some(json!({ "app_id": app, "service": "asr" }))).await
}

/// The limit of `policy` of `service` of `app`, from `/limits`.
async fn limit(s: &Server, app: &str, service: &str, policy: &str) -> f64 {
    num(&entry(&limits_of(s, app).await["limits"], Some(service), policy)["limit"])
}

/// The explanation of one limit (`/limits?explain=true` as the admin).
async fn explain_of(s: &Server, app: &str, service: &str, policy: &str) -> Value {
    let r = call(&s.app, "GET", &format!("/v1/apps/{app}/limits?explain=true"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    entry(&r.json["limits"], Some(service), policy)["explain"].clone()
}

/// The evening-peak case of the issue: a million daily users, 20 interactions each, 15 audio
/// seconds per interaction, 30-second sessions, a 16-hour active day, peak three times the
/// mean. Justifies 1250/s (burst 2500) and 37 500 concurrent streams.
fn million_users() -> Value {
    json!({
        "target_users": 5_000_000,
        "daily_active_users": 1_000_000,
        "interactions_per_user_per_day": 20,
        "units_per_interaction": 15,
        "session_length_s": 30,
        "active_hours_per_day": 16,
        "peak_hours": "19:00-23:00",
        "time_zone": "Asia/Shanghai",
        "peak_to_mean": 3,
        "architecture": { "load_balancing": true },
    })
}

/// A small app: 100 daily users × 10 interactions of 60-second sessions over 16 hours, peak
/// three times the mean. 1000 / 57 600 s × 3 = 0.052 sessions/s × 60 s × 1.2 = 3.75, so it
/// justifies 4 concurrent streams (automatic approval up to 4.8) and 1 request/s.
fn small_app() -> Value {
    json!({
        "daily_active_users": 100,
        "interactions_per_user_per_day": 10,
        "units_per_interaction": 15,
        "session_length_s": 60,
        "peak_to_mean": 3,
    })
}

fn increase(service: &str, dimension: &str, requested: Value, case: Value) -> Value {
    json!({
        "service": service,
        "dimension": dimension,
        "requested": requested,
        "business_case": case,
        "justification": "Launching voice search in the evening; the free cap refuses our peak.",
        "contact_email": "ops@acme.example",
    })
}

async fn submit(s: &Server, token: Option<&str>, app: &str, body: Value) -> Reply {
    call(&s.app, "POST", &format!("/v1/apps/{app}/increase-requests"), token, Some(body)).await
}

/// Submits and expects 201: the stored request.
async fn submitted(s: &Server, token: &str, app: &str, body: Value) -> Value {
    let r = submit(s, Some(token), app, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    r.json
}

fn id_of(request: &Value) -> String {
    request["id"].as_str().expect("request id").to_string()
}

/// `POST /v1/increase-requests/{id}/{verb}` with `token`.
async fn act(s: &Server, token: Option<&str>, id: &str, verb: &str, body: Value) -> Reply {
    call(&s.app, "POST", &format!("/v1/increase-requests/{id}/{verb}"), token, Some(body)).await
}

/// An admin action that must succeed: the request after it.
async fn acted(s: &Server, id: &str, verb: &str, body: Value) -> Value {
    let r = act(s, Some(ADMIN), id, verb, body).await;
    assert_eq!(r.status, StatusCode::OK, "{verb} {id}: {:#}", r.json);
    r.json
}

/// `GET /v1/increase-requests/{id}` as the admin.
async fn request(s: &Server, id: &str) -> Value {
    let r = call(&s.app, "GET", &format!("/v1/increase-requests/{id}"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    r.json
}

/// The ids in the review queue (`GET /v1/increase-requests{query}`), in the order given.
async fn queue(s: &Server, query: &str) -> Vec<Value> {
    let r = call(&s.app, "GET", &format!("/v1/increase-requests{query}"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    r.json["increase_requests"].as_array().expect("a list").clone()
}

/// (action, actor, status before, status after) of every audit entry of one request.
async fn audit_of(s: &Server, id: &str) -> Vec<(String, String, Value, Value)> {
    let uri = format!("/v1/audit?subject_kind=increase_request&subject_id={id}");
    let r = call(&s.app, "GET", &uri, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    r.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
                e["before"]["status"].clone(),
                e["after"]["status"].clone(),
            )
        })
        .collect()
}

fn audit_row(action: &str, actor: &str, before: Value, after: Value) -> (String, String, Value, Value) {
    (action.to_string(), actor.to_string(), before, after)
}

async fn create_webhook(s: &Server, token: &str, account: &str, url: &str, secret: &str) -> String {
    let body = json!({ "url": url, "secret": secret });
    let r = call(&s.app, "POST", &format!("/v1/accounts/{account}/webhooks"), Some(token), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    assert_eq!(r.json["secret"], secret, "the secret is shown when created");
    r.json["id"].as_str().unwrap().to_string()
}

/// `GET /v1/accounts/{id}/alerts` as the admin, newest first.
async fn alerts(s: &Server, account: &str) -> Vec<Value> {
    let r = call(&s.app, "GET", &format!("/v1/accounts/{account}/alerts"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    r.json["alerts"].as_array().unwrap().clone()
}

/// The `quota.threshold` alerts of one account as (app, service, dimension, threshold,
/// period start), oldest first.
async fn quota_alerts(s: &Server, account: &str) -> Vec<(String, String, String, u64, String)> {
    let mut list: Vec<_> = alerts(s, account)
        .await
        .iter()
        .filter(|a| a["event_type"] == "quota.threshold")
        .map(|a| {
            let p = &a["payload"];
            (
                p["app_id"].as_str().unwrap().to_string(),
                p["service"].as_str().unwrap().to_string(),
                p["dimension"].as_str().unwrap().to_string(),
                p["threshold_percent"].as_u64().unwrap(),
                p["period_start"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    list.reverse();
    list
}

// ---- a local webhook receiver ---------------------------------------------------------------

/// One POST the receiver saw.
#[derive(Debug)]
struct Delivery {
    /// Header names in lower case.
    headers: BTreeMap<String, String>,
    body: String,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no `{name}` header in {:#?}", self.headers))
    }
}

/// A webhook receiver on 127.0.0.1 that answers the POSTs it gets with `statuses`, one each
/// in turn, and stops (closing its port) after the last, or after 30 s whatever happens.
/// Each delivery is sent to the channel before it is answered, so it is there by the time
/// the sender sees the answer.
fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<Delivery>, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let url = format!("http://{}/hooks/voxgate", listener.local_addr().unwrap());
    listener.set_nonblocking(true).expect("non-blocking accept");
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut answers = statuses.into_iter();
        let Some(mut status) = answers.next() else { return };
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(delivery) = read_post(&stream) {
                        let _ = tx.send(delivery);
                    }
                    answer(stream, status);
                    match answers.next() {
                        Some(next) => status = next,
                        None => return,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return,
            }
        }
    });
    (url, rx, handle)
}

fn read_post(mut stream: &TcpStream) -> Option<Delivery> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    assert!(request_line.starts_with("POST /hooks/voxgate "), "{request_line}");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(data[head_end..head_end + length].to_vec()).ok()?;
    Some(Delivery { headers, body })
}

fn answer(mut stream: TcpStream, status: u16) {
    let text = if status < 300 { "OK" } else { "Internal Server Error" };
    let reply = format!("HTTP/1.1 {status} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

// ---- 1. sizing -----------------------------------------------------------------------------

#[tokio::test]
async fn a_million_users_with_an_evening_peak_is_sized_with_its_working() {
    let s = server().await;
    let body = increase("asr", "concurrency", json!(40), million_users());
    let created = submitted(&s, &s.demo_key, "demo", body).await;
    let stored = request(&s, &id_of(&created)).await;
    assert_eq!(stored, created, "what the submission answered is what was stored");

    let sizing = &stored["sizing"];
    let values = &sizing["values"];
    // 20 M interactions over 57 600 s = 347.22/s; × 3 = 1041.67/s; × 1.2 = 1250/s.
    assert_eq!(num(&values["rate_per_second"]), 1250.0, "{sizing:#}");
    assert_eq!(values["burst"], 2500);
    // 1041.67 sessions/s × 30 s × 1.2 = 37 500 streams.
    assert_eq!(values["concurrency"], 37_500);
    // 20 M × 15 s × 1.2 = 360 M audio seconds a day, 10.8 G a month.
    assert_eq!(num(&values["daily_units"]), 360_000_000.0);
    assert_eq!(num(&values["monthly_units"]), 10_800_000_000.0);
    let working: Vec<&str> =
        values["working"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(
        working,
        [
            "interactions per day = 1000000 DAU × 20 = 20000000",
            "mean rate = 20000000 ÷ (16 h × 3600 s) = 347 calls/s",
            "peak-to-mean = 3 (stated)",
            "peak rate = 347 × 3 = 1042 requests/s",
            "rate with 20 % headroom = 1250 requests/s, burst 2 × = 2500",
            "concurrency (Little's law) = 1042 sessions/s × 30 s × 1.20 = 37500",
            "daily units = 20000000 × 15 units × 1.20 = 360000000",
            "monthly units = 360000000 × 30 days = 10800000000",
            "load balancing noted: spreads load across regions, no change to totals",
        ]
    );
    // The requested dimension's justified value, what it is compared with, and the outcome.
    assert_eq!(num(&sizing["justified"]), 37_500.0);
    assert_eq!(num(&sizing["auto_approve_up_to"]), 45_000.0);
    assert_eq!(num(&sizing["current"]), 2.0);
    assert_eq!(num(&sizing["ceiling"]), 50.0);
    assert_eq!(stored["status"], "auto_approved", "40 is within 45 000 and the ceiling of 50");
    // The case is kept as given (with its defaults filled in).
    assert_eq!(stored["business_case"]["daily_active_users"], 1_000_000);
    assert_eq!(stored["business_case"]["peak_hours"], "19:00-23:00");

    // A case that does not add up names its field.
    let mut bad = million_users();
    bad["peak_to_mean"] = json!(0.5);
    let r = submit(&s, Some(&s.demo_key), "demo", increase("asr", "concurrency", json!(45), bad)).await;
    assert_problem(&r, 422, "invalid_business_case");
    assert_eq!(r.json["field"], "business_case.peak_to_mean", "{:#}", r.json);
    let mut bad = million_users();
    bad["surprise"] = json!(true);
    let r = submit(&s, Some(&s.demo_key), "demo", increase("asr", "concurrency", json!(45), bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "unknown fields are refused: {:#}", r.json);
}

// ---- 2. triage -----------------------------------------------------------------------------

#[tokio::test]
async fn triage_approves_within_justification_and_ceiling_and_queues_the_rest() {
    let s = server().await;
    let key = s.demo_key.clone();

    // Within the justified 4 (+20 %) and the ceiling of 50: approved at once, on the policy's
    // 30-day probation, with the request as the grant.
    let auto = submitted(&s, &key, "demo", increase("asr", "concurrency", json!(4), small_app())).await;
    assert_eq!(auto["status"], "auto_approved", "{auto:#}");
    assert_eq!(auto["granted"], 4);
    assert_eq!(auto["requested"], 4);
    assert_eq!(auto["grant_expires_at"], ms(T0) + 30 * DAY_MS);
    assert_eq!(num(&auto["sizing"]["justified"]), 4.0);
    assert!(auto["reason"].as_str().unwrap().starts_with("approved automatically"), "{auto:#}");
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 4.0, "approved means in force now");

    // Each of the reasons for review, on its own.
    s.clock.advance_ms(1000);
    let above_justified =
        submitted(&s, &key, "demo", increase("asr", "concurrency", json!(5), small_app())).await;
    s.clock.advance_ms(1000);
    let above_ceiling =
        submitted(&s, &key, "demo", increase("asr", "concurrency", json!(60), million_users())).await;
    s.clock.advance_ms(1000);
    let no_ceiling =
        submitted(&s, &key, "demo", increase("voice_call", "concurrency", json!(25), million_users())).await;
    s.clock.advance_ms(1000);
    let no_quota_ceiling =
        submitted(&s, &key, "demo", increase("asr", "daily", json!(5000), million_users())).await;
    let expected = [
        (&above_justified, "requested 5 is above the justified 4 plus the 20 % margin (4.8)"),
        (&above_ceiling, "requested 60 is above this verification level's ceiling 50"),
        (&no_ceiling, "no self-service ceiling is configured for this level and dimension"),
        (&no_quota_ceiling, "no self-service ceiling is configured for this level and dimension"),
    ];
    for (r, why) in expected {
        assert_eq!(r["status"], "pending_review", "{r:#}");
        assert_eq!(r["reason"], format!("needs review: {why}"), "{r:#}");
        assert_eq!(r["granted"], Value::Null);
        assert_eq!(r["grant_expires_at"], Value::Null);
    }
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 4.0, "nothing pending is in force");

    // A suspended app is not in good standing, however modest the request.
    let account = new_account(&s, "Paused Co", "UTC").await;
    let (paused, paused_key) = new_app(&s, &account, "free").await;
    let body = json!({ "status": "suspended", "reason": "chargeback under investigation" });
    let r = call(&s.app, "PATCH", &format!("/v1/apps/{paused}"), Some(ADMIN), Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    s.clock.advance_ms(1000);
    let suspended =
        submitted(&s, &paused_key, &paused, increase("asr", "concurrency", json!(4), small_app())).await;
    assert_eq!(suspended["status"], "pending_review", "{suspended:#}");
    assert_eq!(suspended["reason"], "needs review: the account or app is not in good standing");

    // Requests that are not increases, and values of the wrong shape.
    let r = submit(&s, Some(&key), "demo", increase("asr", "concurrency", json!(4), small_app())).await;
    assert_problem(&r, 422, "not_an_increase");
    assert_eq!(r.json["field"], "requested");
    let same_rate = json!({ "per_second": 5, "burst": 10 });
    let r = submit(&s, Some(&key), "demo", increase("asr", "rate", same_rate, small_app())).await;
    assert_problem(&r, 422, "not_an_increase");
    let r = submit(&s, Some(&key), "demo", increase("asr", "rate", json!("lots"), small_app())).await;
    assert_problem(&r, 422, "invalid_request_value");
    let r = submit(&s, Some(&key), "demo", increase("nope", "rate", json!(1), small_app())).await;
    assert_problem(&r, 404, "unknown_service");
    let r = submit(&s, Some(ADMIN), "nope", increase("asr", "concurrency", json!(9), small_app())).await;
    assert_problem(&r, 404, "unknown_app");

    // The operator's queue: what waits for review, oldest first, with evidence and sizing
    // beside each; `status=` picks another status or `all`.
    let waiting = queue(&s, "").await;
    let ids: Vec<String> = waiting.iter().map(id_of).collect();
    let expected_ids: Vec<String> =
        [&above_justified, &above_ceiling, &no_ceiling, &no_quota_ceiling, &suspended].map(id_of).to_vec();
    assert_eq!(ids, expected_ids);
    for r in &waiting {
        assert!(r["evidence"]["windows"].as_array().is_some_and(|w| w.len() == 2), "{r:#}");
        assert!(r["sizing"]["values"]["working"].is_array(), "{r:#}");
    }
    let all: Vec<String> = queue(&s, "?status=all").await.iter().map(id_of).collect();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0], id_of(&auto));
    let approved: Vec<String> = queue(&s, "?status=auto_approved").await.iter().map(id_of).collect();
    assert_eq!(approved, [id_of(&auto)]);
    let r = call(&s.app, "GET", "/v1/increase-requests?status=lost", Some(ADMIN), None).await;
    assert_problem(&r, 422, "invalid_status");

    // The developer lists their own app's requests.
    let r = call(&s.app, "GET", "/v1/apps/demo/increase-requests", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["increase_requests"].as_array().unwrap().len(), 5);
}

// ---- 3. the state machine ------------------------------------------------------------------

#[tokio::test]
async fn operators_approve_fully_or_partially_or_deny_and_developers_withdraw() {
    let s = server().await;
    let key = s.demo_key.clone();
    let full = submitted(&s, &key, "demo", increase("asr", "concurrency", json!(5), small_app())).await;
    let partial =
        submitted(&s, &key, "demo", increase("asr", "concurrency", json!(60), million_users())).await;
    let denied =
        submitted(&s, &key, "demo", increase("voice_call", "concurrency", json!(25), million_users())).await;
    let withdrawn = submitted(&s, &key, "demo", increase("asr", "daily", json!(5000), million_users())).await;
    for r in [&full, &partial, &denied, &withdrawn] {
        assert_eq!(r["status"], "pending_review", "{r:#}");
    }

    // Approve in full: the requested value is granted; no expiry unless one is given.
    let r = acted(&s, &id_of(&full), "approve", json!({ "reason": "evening launch checks out" })).await;
    assert_eq!(r["status"], "approved", "{r:#}");
    assert_eq!(r["requested"], 5);
    assert_eq!(r["granted"], 5);
    assert_eq!(r["reason"], "evening launch checks out");
    assert_eq!(r["decided_by"], "admin");
    assert_eq!(r["grant_expires_at"], Value::Null);

    // Granting more than was asked is refused and changes nothing.
    let id = id_of(&partial);
    let r = act(&s, Some(ADMIN), &id, "approve", json!({ "reason": "sure", "granted": 61 })).await;
    assert_problem(&r, 422, "invalid_request_value");
    assert_eq!(r.json["field"], "granted");
    assert_eq!(request(&s, &id).await["status"], "pending_review");
    // A reason is required.
    let r = act(&s, Some(ADMIN), &id, "approve", json!({ "reason": "  " })).await;
    assert_problem(&r, 422, "invalid_field");

    // Approve in part: requested and granted are kept apart.
    let body =
        json!({ "reason": "30 now; more once the evening peak is observed", "granted": { "max": 30 } });
    let r = acted(&s, &id, "approve", body).await;
    assert_eq!(r["status"], "partially_approved", "{r:#}");
    assert_eq!(r["requested"], 60);
    assert_eq!(r["granted"], json!({ "max": 30 }));
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 30.0, "the larger grant wins");

    // Deny, with a reason the developer can read.
    let id = id_of(&denied);
    let r = act(&s, Some(ADMIN), &id, "deny", json!({})).await;
    assert_problem(&r, 422, "invalid_field");
    let r = acted(&s, &id, "deny", json!({ "reason": "voice calls need the enterprise tier" })).await;
    assert_eq!(r["status"], "denied");
    assert_eq!(r["granted"], Value::Null);
    let mine = call(&s.app, "GET", &format!("/v1/increase-requests/{id}"), Some(&key), None).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.json["reason"], "voice calls need the enterprise tier");
    assert_eq!(limit(&s, "demo", "voice_call", "concurrency").await, 20.0);

    // The developer withdraws a request still under review (with or without a body).
    let id = id_of(&withdrawn);
    let r = act(&s, Some(&key), &id, "withdraw", json!({ "reason": "we batch instead" })).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["status"], "withdrawn");
    assert_eq!(r.json["decided_by"], "app:demo");
    let other = submitted(&s, &key, "demo", increase("asr", "monthly", json!(90000), million_users())).await;
    let r =
        call(&s.app, "POST", &format!("/v1/increase-requests/{}/withdraw", id_of(&other)), Some(&key), None)
            .await;
    assert_eq!(r.status, StatusCode::OK, "withdraw needs no body: {:#}", r.json);
    assert_eq!(r.json["status"], "withdrawn");

    assert!(queue(&s, "").await.is_empty(), "nothing is left to review");
}

#[tokio::test]
async fn every_refused_transition_is_a_conflict_and_unknown_ids_are_404() {
    let s = server().await;
    let key = s.demo_key.clone();
    let auto =
        id_of(&submitted(&s, &key, "demo", increase("asr", "concurrency", json!(4), small_app())).await);
    let approved = id_of(
        &submitted(
            &s,
            &key,
            "demo",
            increase("asr", "rate", json!({ "per_second": 8, "burst": 16 }), small_app()),
        )
        .await,
    );
    acted(&s, &approved, "approve", json!({ "reason": "ok" })).await;
    let denied =
        id_of(&submitted(&s, &key, "demo", increase("asr", "daily", json!(5000), million_users())).await);
    acted(&s, &denied, "deny", json!({ "reason": "no" })).await;
    let withdrawn =
        id_of(&submitted(&s, &key, "demo", increase("asr", "monthly", json!(90000), million_users())).await);
    assert_eq!(act(&s, Some(&key), &withdrawn, "withdraw", json!({})).await.status, StatusCode::OK);
    let pending = id_of(
        &submitted(&s, &key, "demo", increase("voice_call", "concurrency", json!(25), million_users())).await,
    );
    assert_eq!(request(&s, &pending).await["status"], "pending_review");

    let refused: [(&str, &str); 15] = [
        (&auto, "approve"),
        (&auto, "deny"),
        (&auto, "withdraw"),
        (&approved, "approve"),
        (&approved, "deny"),
        (&approved, "withdraw"),
        (&denied, "approve"),
        (&denied, "deny"),
        (&denied, "withdraw"),
        (&denied, "renew"),
        (&withdrawn, "approve"),
        (&withdrawn, "deny"),
        (&withdrawn, "withdraw"),
        (&withdrawn, "renew"),
        (&pending, "renew"),
    ];
    for (id, verb) in refused {
        let before = request(&s, id).await;
        let r = act(&s, Some(ADMIN), id, verb, json!({ "reason": "try it" })).await;
        assert_problem(&r, 409, "conflict");
        assert!(
            r.json["detail"].as_str().unwrap().contains(before["status"].as_str().unwrap()),
            "the conflict names the status: {:#}",
            r.json
        );
        assert_eq!(request(&s, id).await, before, "{verb} on {} changed it", before["status"]);
    }
    // The developer's own withdrawal of a decided request is the same conflict.
    let r = act(&s, Some(&key), &approved, "withdraw", json!({})).await;
    assert_problem(&r, 409, "conflict");

    for verb in ["approve", "deny", "withdraw", "renew"] {
        let r = act(&s, Some(ADMIN), "inc_0000000000000000", verb, json!({ "reason": "x" })).await;
        assert_problem(&r, 404, "unknown_increase_request");
    }
    let r = call(&s.app, "GET", "/v1/increase-requests/inc_0000000000000000", Some(ADMIN), None).await;
    assert_problem(&r, 404, "unknown_increase_request");
    let r = call(&s.app, "GET", "/v1/apps/nope/increase-requests", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:#}", r.json);
}

// ---- 4. live effect ------------------------------------------------------------------------

#[tokio::test]
async fn an_approval_takes_effect_live_and_explain_names_the_grant() {
    let s = server().await;
    let key = s.demo_key.clone();

    // Before: the free plan's cap, 10 at once, then 429; 2 streams, then 429.
    for _ in 0..10 {
        allow(&s, "demo", "asr", 1.0).await;
    }
    assert_refused(&check_app(&s, "demo", "asr", 1.0).await, "rate");
    s.clock.advance_ms(2_000); // a lease is a request too: let the bucket refill
    let mut held = Vec::new();
    for _ in 0..2 {
        let r = lease_app(&s, "demo").await;
        assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
        held.push(r.json["lease_id"].as_str().unwrap().to_string());
    }
    assert_refused(&lease_app(&s, "demo").await, "concurrency");

    // A rate increase within the justified 1250/s and the ceiling: approved automatically.
    let rate = submitted(
        &s,
        &key,
        "demo",
        increase("asr", "rate", json!({ "per_second": 20, "burst": 40 }), million_users()),
    )
    .await;
    assert_eq!(rate["status"], "auto_approved", "{rate:#}");
    s.clock.advance_ms(10_000); // the bucket refills
    for i in 0..40 {
        let r = check_app(&s, "demo", "asr", 1.0).await;
        assert_eq!(r.status, StatusCode::OK, "call {i} of 40: {:#}", r.json);
    }
    assert_refused(&check_app(&s, "demo", "asr", 1.0).await, "rate");
    let e = explain_of(&s, "demo", "asr", "rate").await;
    assert_eq!(e["winner"], format!("grant:{}", id_of(&rate)), "{e:#}");
    let kinds: Vec<&str> =
        e["layers"].as_array().unwrap().iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["tier", "plan", "grant"], "{e:#}");
    let grant = e["layers"].as_array().unwrap().last().unwrap();
    assert_eq!(grant["op"], "max");
    assert_eq!(grant["result"], json!({ "per_second": 20.0, "burst": 40 }));

    // A concurrency increase above the justified 4: reviewed, granted in part (4 of 6). The
    // two streams already held stay; two more fit at once; the fifth does not.
    let conc = submitted(&s, &key, "demo", increase("asr", "concurrency", json!(6), small_app())).await;
    assert_eq!(conc["status"], "pending_review");
    assert_refused(&lease_app(&s, "demo").await, "concurrency");
    acted(&s, &id_of(&conc), "approve", json!({ "reason": "4 to start", "granted": 4 })).await;
    s.clock.advance_ms(2_000);
    for _ in 0..2 {
        let r = lease_app(&s, "demo").await;
        assert_eq!(r.status, StatusCode::CREATED, "a lease beyond the old limit of 2: {:#}", r.json);
    }
    assert_refused(&lease_app(&s, "demo").await, "concurrency");
    let e = explain_of(&s, "demo", "asr", "concurrency").await;
    assert_eq!(e["winner"], format!("grant:{}", id_of(&conc)), "{e:#}");
    assert_eq!(num(&entry(&limits_of(&s, "demo").await["limits"], Some("asr"), "concurrency")["used"]), 4.0);

    // Other apps are untouched.
    let account = new_account(&s, "Neighbour", "UTC").await;
    let (other, _) = new_app(&s, &account, "free").await;
    assert_eq!(limit(&s, &other, "asr", "concurrency").await, 2.0);
    assert_eq!(limit(&s, &other, "asr", "rate").await, 10.0);
}

// ---- 5. probation --------------------------------------------------------------------------

#[tokio::test]
async fn a_probation_grant_lapses_unless_renewed() {
    let s = server().await;
    let key = s.demo_key.clone();
    let conc =
        id_of(&submitted(&s, &key, "demo", increase("asr", "concurrency", json!(6), small_app())).await);
    let r =
        acted(&s, &conc, "approve", json!({ "reason": "trial", "granted": 4, "probation_days": 1 })).await;
    assert_eq!(r["grant_expires_at"], ms(T0) + DAY_MS);
    let rate_body = increase("asr", "rate", json!({ "per_second": 8, "burst": 16 }), small_app());
    let rate = id_of(&submitted(&s, &key, "demo", rate_body).await);
    let r =
        acted(&s, &rate, "approve", json!({ "reason": "trial", "expires_at": "2026-03-11T10:00:00Z" })).await;
    assert_eq!(r["grant_expires_at"], ms("2026-03-11T10:00:00Z"));
    let r = act(
        &s,
        Some(ADMIN),
        &rate,
        "renew",
        json!({ "reason": "x", "expires_at": "2026-03-20T00:00:00Z", "probation_days": 3 }),
    )
    .await;
    assert_problem(&r, 422, "invalid_field");
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 4.0);
    assert_eq!(limit(&s, "demo", "asr", "rate").await, 16.0);

    // Half a day later the rate grant is renewed for a week from now.
    s.clock.set("2026-03-10T22:00:00Z");
    s.state.refresh_if_due().await.unwrap();
    let r = acted(&s, &rate, "renew", json!({ "reason": "steady use", "probation_days": 7 })).await;
    assert_eq!(r["status"], "approved", "renewing keeps the status");
    assert_eq!(r["grant_expires_at"], ms("2026-03-17T22:00:00Z"));

    // A second past a day: the unrenewed grant lapses, the renewed one stays.
    s.clock.set("2026-03-11T10:00:01Z");
    s.state.refresh_if_due().await.unwrap();
    let lapsed = request(&s, &conc).await;
    assert_eq!(lapsed["status"], "expired", "{lapsed:#}");
    assert_eq!(lapsed["reason"], "probation ended without renewal");
    assert_eq!(lapsed["granted"], 4, "what was granted stays on record");
    assert_eq!(request(&s, &rate).await["status"], "approved");
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 2.0, "back to the plan's cap");
    assert_eq!(limit(&s, "demo", "asr", "rate").await, 16.0);
    let e = explain_of(&s, "demo", "asr", "concurrency").await;
    assert!(!e.to_string().contains(&conc), "the lapsed grant is gone from explain: {e:#}");
    for _ in 0..2 {
        assert_eq!(lease_app(&s, "demo").await.status, StatusCode::CREATED);
    }
    assert_refused(&lease_app(&s, "demo").await, "concurrency");
    let audit = audit_of(&s, &conc).await;
    assert_eq!(
        audit.last().unwrap(),
        &audit_row("increase.expire", "system", json!("partially_approved"), json!("expired"))
    );
    // An expired grant is final.
    for verb in ["renew", "approve", "withdraw", "deny"] {
        assert_problem(
            &act(&s, Some(ADMIN), &conc, verb, json!({ "reason": "again" })).await,
            409,
            "conflict",
        );
    }

    // Refreshing again changes nothing; the renewed grant lapses at its own time.
    s.state.refresh_if_due().await.unwrap();
    assert_eq!(audit_of(&s, &conc).await.len(), audit.len());
    s.clock.set("2026-03-17T22:00:00Z");
    s.state.refresh_if_due().await.unwrap();
    assert_eq!(request(&s, &rate).await["status"], "expired");
    assert_eq!(limit(&s, "demo", "asr", "rate").await, 10.0);

    // Renewing with neither `expires_at` nor `probation_days` makes a grant permanent.
    let perm =
        id_of(&submitted(&s, &key, "demo", increase("asr", "concurrency", json!(4), small_app())).await);
    let r = acted(&s, &perm, "renew", json!({ "reason": "long-standing customer" })).await;
    assert_eq!(r["status"], "auto_approved");
    s.clock.set("2027-03-17T22:00:00Z");
    s.state.refresh_if_due().await.unwrap();
    assert_eq!(request(&s, &perm).await["status"], "auto_approved");
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 4.0);
}

/// A grant whose probation ended while the server was down (or just before any other
/// change rebuilt the snapshot) must still be recorded as expired.
#[tokio::test]
async fn a_grant_that_lapsed_while_the_server_was_down_is_marked_expired() {
    let s = server().await;
    let key = s.demo_key.clone();
    let id = id_of(&submitted(&s, &key, "demo", increase("asr", "concurrency", json!(6), small_app())).await);
    acted(&s, &id, "approve", json!({ "reason": "trial", "granted": 4, "probation_days": 1 })).await;
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 4.0);

    let (s, _) = s.restart("2026-03-12T10:00:00Z").await;
    s.state.refresh_if_due().await.unwrap();
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 2.0, "the grant no longer applies");
    let r = request(&s, &id).await;
    assert_eq!(r["status"], "expired", "a lapsed grant still reads as granting: {r:#}");
}

#[tokio::test]
async fn a_grant_that_lapsed_before_an_unrelated_change_is_marked_expired() {
    let s = server().await;
    let key = s.demo_key.clone();
    let id = id_of(&submitted(&s, &key, "demo", increase("asr", "concurrency", json!(6), small_app())).await);
    acted(&s, &id, "approve", json!({ "reason": "trial", "granted": 4, "probation_days": 1 })).await;

    // The day passes; before the timer runs, an operator creates an account (a rebuild).
    s.clock.set("2026-03-11T10:00:01Z");
    new_account(&s, "Someone else", "UTC").await;
    let other = new_account(&s, "Someone else again", "UTC").await;
    new_app(&s, &other, "free").await;
    s.state.refresh_if_due().await.unwrap();
    assert_eq!(limit(&s, "demo", "asr", "concurrency").await, 2.0, "the grant no longer applies");
    let r = request(&s, &id).await;
    assert_eq!(r["status"], "expired", "a lapsed grant still reads as granting: {r:#}");
}

// ---- 6. evidence ---------------------------------------------------------------------------

#[tokio::test]
async fn evidence_shows_the_apps_own_usage_over_7_and_30_days() {
    // Twenty days before the request: three calls of 2 audio seconds.
    let s = server_at("2026-02-18T10:00:00Z").await;
    for _ in 0..3 {
        allow(&s, "demo", "asr", 2.0).await;
    }
    // On the day: in one second, 10 allowed and 4 refused for rate.
    s.clock.set(T0);
    for _ in 0..10 {
        allow(&s, "demo", "asr", 1.0).await;
    }
    for _ in 0..4 {
        assert_refused(&check_app(&s, "demo", "asr", 1.0).await, "rate");
    }
    // A minute later: 500 s of audio, then 200 more refused by the minute's quota of 600;
    // both streams taken, a third refused.
    s.clock.advance_ms(61_000);
    allow(&s, "demo", "asr", 500.0).await;
    assert_refused(&check_app(&s, "demo", "asr", 200.0).await, "quota");
    for _ in 0..2 {
        assert_eq!(lease_app(&s, "demo").await.status, StatusCode::CREATED);
    }
    assert_refused(&lease_app(&s, "demo").await, "concurrency");

    // Nothing was flushed: the submission flushes for itself.
    let r = submitted(&s, &s.demo_key, "demo", increase("asr", "concurrency", json!(6), small_app())).await;
    let evidence = &r["evidence"];
    let windows = evidence["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 2, "{evidence:#}");
    let (week, month) = (&windows[0], &windows[1]);
    assert_eq!(week["days"], 7);
    assert_eq!(week["allowed"], 13, "11 calls and 2 leases: {week:#}");
    assert_eq!(
        week["refused"],
        json!({ "rate": 4, "quota": 1, "concurrency": 1, "suspended": 0, "capacity": 0 })
    );
    assert_eq!(week["requests"], 19);
    assert_eq!(week["peak_per_second"], 14, "{week:#}");
    assert_eq!(week["peak_per_minute"], 14);
    assert_eq!(week["active_minutes"], 2);
    assert_eq!(num(&week["units"]), 510.0);
    assert_eq!(num(&week["mean_per_second"]), 0.158, "19 requests over 2 active minutes");
    assert_eq!(month["days"], 30);
    assert_eq!(month["allowed"], 16, "the calls of 20 days ago count for 30 days only: {month:#}");
    assert_eq!(month["requests"], 22);
    assert_eq!(month["active_minutes"], 3);
    assert_eq!(num(&month["units"]), 516.0);
    assert_eq!(month["peak_per_second"], 14);
    assert_eq!(month["peak_per_minute"], 14);
    // Utilisation of the requested dimension now: both streams held.
    assert_eq!(num(&evidence["utilisation"]), 1.0, "{evidence:#}");
    // Under an hour of history: the stated peak-to-mean is used, not the observed one.
    assert!(r["sizing"]["values"]["working"].to_string().contains("peak-to-mean = 3 (stated)"));

    // The evidence is a snapshot taken at submission: it is stored, not recomputed.
    allow(&s, "demo", "asr", 1.0).await;
    s.state.flush().await.unwrap();
    assert_eq!(request(&s, &id_of(&r)).await["evidence"], *evidence);
}

// ---- 7. webhooks ---------------------------------------------------------------------------

#[tokio::test]
async fn status_changes_are_delivered_signed_and_retried_until_accepted() {
    let s = server().await;
    let account = new_account(&s, "Hooked Co", "UTC").await;
    let (app, app_key) = new_app(&s, &account, "free").await;
    let (url, seen, receiver) = receiver(vec![500, 200]);
    let secret = "whsec-test-0123456789abcdef";
    // The developer registers the endpoint with their own key; the secret is never listed.
    let hook = create_webhook(&s, &app_key, &account, &url, secret).await;
    let r = call(&s.app, "GET", &format!("/v1/accounts/{account}/webhooks"), Some(&app_key), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["webhooks"][0]["id"], hook.as_str());
    assert!(!r.json.to_string().contains(secret), "{:#}", r.json);

    let req = submitted(&s, &app_key, &app, increase("asr", "concurrency", json!(6), small_app())).await;
    assert_eq!(req["status"], "pending_review");

    // First attempt: the receiver answers 500.
    assert_eq!(s.state.deliver_alerts().await.unwrap(), (0, 1));
    let first = seen.recv_timeout(Duration::from_secs(10)).expect("first attempt");
    // Not due again before the 2-second backoff.
    s.clock.advance_ms(1_999);
    assert_eq!(s.state.deliver_alerts().await.unwrap(), (0, 0));
    let queued = alerts(&s, &account).await;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(queued[0]["attempts"], 1);
    assert_eq!(queued[0]["delivered_at"], Value::Null);
    assert!(queued[0]["last_error"].as_str().is_some_and(|e| e.contains("500")), "{:#}", queued[0]);
    assert_eq!(queued[0]["next_attempt_at"], ms(T0) + 2_000);

    // Second attempt, after the backoff: accepted.
    s.clock.advance_ms(1);
    assert_eq!(s.state.deliver_alerts().await.unwrap(), (1, 0));
    let second = seen.recv_timeout(Duration::from_secs(10)).expect("second attempt");
    receiver.join().expect("the receiver stops by itself");

    // Delivered once: nothing more is sent, whatever the clock says.
    s.clock.advance_ms(3_600_000);
    assert_eq!(s.state.deliver_alerts().await.unwrap(), (0, 0));
    assert!(seen.try_recv().is_err());
    let delivered = alerts(&s, &account).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["attempts"], 2);
    assert_eq!(delivered[0]["delivered_at"], ms(T0) + 2_000);
    assert_eq!(delivered[0]["last_error"], Value::Null);
    assert_eq!(delivered[0]["webhook_id"], hook.as_str());

    // Both attempts carry the same delivery id and body; each is signed with its timestamp.
    let event_id = delivered[0]["id"].as_str().unwrap();
    for (d, at) in [(&first, T0), (&second, "2026-03-10T10:00:02Z")] {
        assert_eq!(d.header("x-voxgate-delivery"), event_id);
        assert_eq!(d.header("x-voxgate-event"), "increase_request.status_changed");
        assert_eq!(d.header("content-type"), "application/json");
        let timestamp = d.header("x-voxgate-timestamp");
        assert_eq!(timestamp, (ms(at) / 1000).to_string());
        assert_eq!(d.header("x-voxgate-signature"), voxgate_server::alerts::sign(secret, timestamp, &d.body));
        assert_ne!(
            d.header("x-voxgate-signature"),
            voxgate_server::alerts::sign("another-secret-123456", timestamp, &d.body)
        );
    }
    assert_eq!(first.body, second.body);
    let body: Value = serde_json::from_str(&second.body).expect("a JSON body");
    assert_eq!(body["id"], event_id);
    assert_eq!(body["event_type"], "increase_request.status_changed");
    assert_eq!(body["created_at"], "2026-03-10T10:00:00Z");
    let data = &body["data"];
    assert_eq!(data["type"], "increase_request.status_changed");
    assert_eq!(data["increase_request_id"], req["id"]);
    assert_eq!(data["app_id"], app.as_str());
    assert_eq!(data["service"], "asr");
    assert_eq!(data["dimension"], "concurrency");
    assert_eq!(data["status"], "pending_review");
    assert_eq!(data["requested"], 6);
    assert_eq!(data["granted"], Value::Null);
    assert!(data["reason"].as_str().unwrap().starts_with("needs review"), "{data:#}");

    // The next status change is a new alert; a deleted webhook gets nothing more.
    acted(&s, &id_of(&req), "deny", json!({ "reason": "not yet" })).await;
    let list = alerts(&s, &account).await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["payload"]["status"], "denied");
    let r = call(&s.app, "DELETE", &format!("/v1/webhooks/{hook}"), Some(&app_key), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(s.state.deliver_alerts().await.unwrap(), (0, 0), "nothing is sent to a deleted webhook");
}

#[tokio::test]
async fn webhook_urls_and_secrets_are_checked_and_accounts_kept_apart() {
    let s = server().await;
    let account = new_account(&s, "Hooked Co", "UTC").await;
    let (_, app_key) = new_app(&s, &account, "free").await;
    let uri = format!("/v1/accounts/{account}/webhooks");
    let r = call(&s.app, "POST", &uri, Some(&app_key), Some(json!({ "url": "ftp://x.example/" }))).await;
    assert_problem(&r, 422, "invalid_url");
    let r = call(
        &s.app,
        "POST",
        &uri,
        Some(&app_key),
        Some(json!({ "url": "https://x.example/", "secret": "short" })),
    )
    .await;
    assert_problem(&r, 422, "invalid_field");
    // Without a secret one is generated and shown once.
    let r = call(&s.app, "POST", &uri, Some(&app_key), Some(json!({ "url": "https://x.example/" }))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    assert!(r.json["secret"].as_str().is_some_and(|k| k.len() >= 16));
    // The demo developer cannot register, list or read alerts for another account.
    let r =
        call(&s.app, "POST", &uri, Some(&s.demo_key), Some(json!({ "url": "https://evil.example/" }))).await;
    assert_problem(&r, 403, "forbidden");
    for path in ["webhooks", "alerts"] {
        let r = call(&s.app, "GET", &format!("/v1/accounts/{account}/{path}"), Some(&s.demo_key), None).await;
        assert_problem(&r, 403, "forbidden");
    }
}

// ---- 8. quota threshold alerts -------------------------------------------------------------

/// What the flush timer does, three times over: flush usage, then queue crossed thresholds.
/// Returns how many alerts were queued.
async fn alerts_after(s: &Server) -> usize {
    let mut queued = 0;
    for _ in 0..3 {
        s.state.flush().await.unwrap();
        queued += s.state.check_quota_alerts().await.unwrap();
    }
    queued
}

#[tokio::test]
async fn quota_thresholds_alert_once_per_threshold_and_day() {
    let s = server().await;
    // Shanghai: the quota day starts at 16:00 UTC.
    let account = new_account(&s, "Talkative Co", "Asia/Shanghai").await;
    let (app, _) = new_app(&s, &account, "free").await;
    create_webhook(&s, ADMIN, &account, "http://127.0.0.1:9/never-delivered", "whsec-0123456789abcdef").await;
    let day = "2026-03-09T16:00:00Z";
    assert_eq!(alerts_after(&s).await, 0, "nothing used yet");
    allow(&s, &app, "tts", 15_999.0).await;
    assert_eq!(alerts_after(&s).await, 0, "79.995 % is below 80 %");
    allow(&s, &app, "tts", 1.0).await;
    assert_eq!(alerts_after(&s).await, 1, "80 %");
    allow(&s, &app, "tts", 3_000.0).await;
    assert_eq!(alerts_after(&s).await, 1, "95 %");
    allow(&s, &app, "tts", 999.0).await;
    assert_eq!(alerts_after(&s).await, 0, "99.995 %");
    allow(&s, &app, "tts", 1.0).await;
    assert_eq!(alerts_after(&s).await, 1, "100 %");
    assert_refused(&check_app(&s, &app, "tts", 1.0).await, "quota");
    assert_eq!(alerts_after(&s).await, 0, "a refusal past 100 % alerts nothing more");
    let a = |threshold: u64, start: &str| {
        (app.clone(), "tts".to_string(), "daily".to_string(), threshold, start.to_string())
    };
    assert_eq!(quota_alerts(&s, &account).await, [a(80, day), a(95, day), a(100, day)]);
    let newest = &alerts(&s, &account).await[0]["payload"];
    assert_eq!(num(&newest["used"]), 20_000.0);
    assert_eq!(num(&newest["limit"]), 20_000.0);
    assert_eq!(newest["resets_at"], "2026-03-10T16:00:00Z");

    // Still the same local day: nothing new.
    s.clock.set("2026-03-10T15:59:59Z");
    assert_eq!(alerts_after(&s).await, 0);
    // The next local day re-arms every threshold; one jump past all three queues all three.
    s.clock.set("2026-03-10T16:00:01Z");
    assert_eq!(alerts_after(&s).await, 0, "the new day starts empty");
    allow(&s, &app, "tts", 20_000.0).await;
    assert_eq!(alerts_after(&s).await, 3);
    let next = "2026-03-10T16:00:00Z";
    assert_eq!(
        quota_alerts(&s, &account).await,
        [a(80, day), a(95, day), a(100, day), a(80, next), a(95, next), a(100, next)]
    );
    // The monthly quota (300 000) is at 13 %: no monthly alert.
    assert!(alerts(&s, &account).await.iter().all(|x| x["payload"]["dimension"] != "monthly"));
}

#[tokio::test]
async fn the_outbox_survives_a_restart_and_sends_nothing_twice() {
    let s = server().await;
    let account = new_account(&s, "Durable Co", "UTC").await;
    let (app, _) = new_app(&s, &account, "free").await;
    let (url, seen, receiver) = receiver(vec![200]);
    let secret = "whsec-durable-0123456789";
    create_webhook(&s, ADMIN, &account, &url, secret).await;
    allow(&s, &app, "tts", 16_500.0).await;
    s.state.flush().await.unwrap();
    assert_eq!(s.state.check_quota_alerts().await.unwrap(), 1);
    let before = alerts(&s, &account).await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["delivered_at"], Value::Null);

    // A graceful stop and a new process on the same data directory, a minute later.
    let (s, _) = s.restart("2026-03-10T10:01:00Z").await;
    assert_eq!(s.state.check_quota_alerts().await.unwrap(), 0, "the 80 % alert of today is already queued");
    s.state.flush().await.unwrap();
    assert_eq!(s.state.check_quota_alerts().await.unwrap(), 0);
    assert_eq!(alerts(&s, &account).await, before, "the outbox came back as it was");

    assert_eq!(s.state.deliver_alerts().await.unwrap(), (1, 0));
    let d = seen.recv_timeout(Duration::from_secs(10)).expect("the delivery");
    receiver.join().expect("the receiver stops by itself");
    assert_eq!(d.header("x-voxgate-delivery"), before[0]["id"].as_str().unwrap());
    assert_eq!(
        d.header("x-voxgate-signature"),
        voxgate_server::alerts::sign(secret, d.header("x-voxgate-timestamp"), &d.body)
    );
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["event_type"], "quota.threshold");
    assert_eq!(body["data"]["threshold_percent"], 80);
    assert_eq!(s.state.deliver_alerts().await.unwrap(), (0, 0), "delivered once");
    let after = alerts(&s, &account).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["attempts"], 1);
    assert_eq!(after[0]["delivered_at"], ms("2026-03-10T10:01:00Z"));

    // And after a second restart, still nothing new to queue or send.
    let (s, _) = s.restart("2026-03-10T10:02:00Z").await;
    assert_eq!(s.state.check_quota_alerts().await.unwrap(), 0);
    assert_eq!(s.state.deliver_alerts().await.unwrap(), (0, 0));
    assert_eq!(alerts(&s, &account).await.len(), 1);
}

// ---- 9. audit ------------------------------------------------------------------------------

#[tokio::test]
async fn every_step_of_a_request_is_audited() {
    let s = server().await;
    let key = s.demo_key.clone();
    let app = "app:demo";
    let null = Value::Null;

    let granted =
        id_of(&submitted(&s, &key, "demo", increase("asr", "concurrency", json!(6), small_app())).await);
    acted(&s, &granted, "approve", json!({ "reason": "trial", "granted": 4, "probation_days": 1 })).await;
    acted(&s, &granted, "renew", json!({ "reason": "another day", "probation_days": 2 })).await;
    let denied =
        id_of(&submitted(&s, ADMIN, "demo", increase("asr", "daily", json!(5000), million_users())).await);
    acted(&s, &denied, "deny", json!({ "reason": "no" })).await;
    let withdrawn =
        id_of(&submitted(&s, &key, "demo", increase("asr", "monthly", json!(90000), million_users())).await);
    assert_eq!(
        act(&s, Some(&key), &withdrawn, "withdraw", json!({ "reason": "later" })).await.status,
        StatusCode::OK
    );
    s.clock.set("2026-03-12T10:00:00Z");
    s.state.refresh_if_due().await.unwrap();

    let pending = json!("pending_review");
    assert_eq!(
        audit_of(&s, &granted).await,
        [
            audit_row("increase.submit", app, null.clone(), json!("submitted")),
            audit_row("increase.triage", "system", json!("submitted"), pending.clone()),
            audit_row("increase.approve", "admin", pending.clone(), json!("partially_approved")),
            audit_row("increase.renew", "admin", json!("partially_approved"), json!("partially_approved")),
            audit_row("increase.expire", "system", json!("partially_approved"), json!("expired")),
        ]
    );
    assert_eq!(
        audit_of(&s, &denied).await,
        [
            audit_row("increase.submit", "admin", null.clone(), json!("submitted")),
            audit_row("increase.triage", "system", json!("submitted"), pending.clone()),
            audit_row("increase.deny", "admin", pending.clone(), json!("denied")),
        ]
    );
    assert_eq!(
        audit_of(&s, &withdrawn).await,
        [
            audit_row("increase.submit", app, null.clone(), json!("submitted")),
            audit_row("increase.triage", "system", json!("submitted"), pending.clone()),
            audit_row("increase.withdraw", app, pending, json!("withdrawn")),
        ]
    );
    // Entries carry the reason and the full record before and after.
    let uri = format!("/v1/audit?subject_kind=increase_request&subject_id={granted}");
    let entries = call(&s.app, "GET", &uri, Some(ADMIN), None).await.json["entries"].clone();
    let renew = &entries[3];
    assert_eq!(renew["reason"], "another day");
    assert_eq!(renew["before"]["grant_expires_at"], ms(T0) + DAY_MS);
    assert_eq!(renew["after"]["grant_expires_at"], ms(T0) + 2 * DAY_MS);
    assert_eq!(entries[2]["after"]["granted"], 4);
    assert_eq!(entries[2]["at"], ms(T0));
}

// ---- 10. authorisation ---------------------------------------------------------------------

#[tokio::test]
async fn developers_cannot_review_or_touch_other_accounts_requests() {
    let s = server().await;
    let demo_key = s.demo_key.clone();
    let account = new_account(&s, "Other Co", "UTC").await;
    let (other, other_key) = new_app(&s, &account, "free").await;
    let (sibling, sibling_key) = new_app(&s, &account, "free").await;
    let mine =
        id_of(&submitted(&s, &demo_key, "demo", increase("asr", "concurrency", json!(6), small_app())).await);
    let theirs = id_of(
        &submitted(&s, &other_key, &other, increase("asr", "concurrency", json!(6), small_app())).await,
    );

    // No developer reviews, not even their own request.
    for (id, token) in [(&mine, &demo_key), (&theirs, &demo_key), (&theirs, &other_key)] {
        for verb in ["approve", "deny", "renew"] {
            let r = act(&s, Some(token), id, verb, json!({ "reason": "looks fine to me" })).await;
            assert_problem(&r, 403, "forbidden");
        }
    }
    let r = call(&s.app, "GET", "/v1/increase-requests", Some(&demo_key), None).await;
    assert_problem(&r, 403, "forbidden");
    for (verb, body) in [("approve", json!({ "reason": "x" })), ("withdraw", json!({}))] {
        let r = act(&s, None, &mine, verb, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{verb}: {:#}", r.json);
    }

    // Another account's requests are neither readable nor withdrawable.
    let r = call(&s.app, "GET", &format!("/v1/increase-requests/{theirs}"), Some(&demo_key), None).await;
    assert_problem(&r, 403, "forbidden");
    assert_problem(&act(&s, Some(&demo_key), &theirs, "withdraw", json!({})).await, 403, "forbidden");
    let r = call(&s.app, "GET", &format!("/v1/apps/{other}/increase-requests"), Some(&demo_key), None).await;
    assert_problem(&r, 403, "forbidden");
    // Nor may a developer submit for an app that is not theirs.
    let body = increase("asr", "concurrency", json!(6), small_app());
    assert_problem(&submit(&s, Some(&demo_key), &other, body.clone()).await, 403, "forbidden");
    assert_problem(&submit(&s, Some(&sibling_key), &other, body.clone()).await, 403, "forbidden");
    assert_eq!(submit(&s, None, &other, body).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(request(&s, &theirs).await["status"], "pending_review", "nothing above changed it");

    // Within an account, a sibling app's key may read and withdraw (the account is the
    // developer), and the owner reads their own.
    let r = call(&s.app, "GET", &format!("/v1/increase-requests/{theirs}"), Some(&sibling_key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let r = call(&s.app, "GET", &format!("/v1/increase-requests/{mine}"), Some(&demo_key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let r = act(&s, Some(&sibling_key), &theirs, "withdraw", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["decided_by"], format!("app:{sibling}"));
}
