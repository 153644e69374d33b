//! Entitlements over HTTP (issue 3): verification tiers and identity links, plan changes
//! with prorated statements, statement arithmetic and spending caps, contracts, capacity
//! windows across DST, `explain` snapshots, audit entries, and who may do what.
//!
//! Same harness as the rest of this binary: the router driven in-process with a manual
//! clock, no sleeps. The registry records times from that clock too, so plan history,
//! verification and audit times are the test's instants.
//!
//! Built-in catalogue figures relied on (asr):
//! - tiers: `individual` rate 10/s burst 20, concurrency 10; `enterprise` 100/s burst 200,
//!   concurrency 200; `industry` 200/s burst 400, concurrency 500. `/limits` reports a rate
//!   limit as its burst.
//! - plans: `free` caps rate at 5/s burst 10 and concurrency at 2, with 600 a minute, 1800 a
//!   day, 18 000 a month; `payg` includes 18 000 a month at 0.00025 (daily limit 360 000);
//!   `package` includes 360 000 at 0.0002 (monthly limit 360 000); `package_strict` blocks
//!   at its 360 000 included and has no prices.

use super::*;
use rust_decimal::Decimal;
use std::str::FromStr;

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
    let body = json!({ "app_id": app, "service": "asr" });
    call(&s.app, "POST", "/v1/leases", None, Some(body)).await
}

/// The limit of `policy` of `service` of `app`, from `/limits`.
async fn limit(s: &Server, app: &str, service: &str, policy: &str) -> f64 {
    num(&entry(&limits_of(s, app).await["limits"], Some(service), policy)["limit"])
}

/// `GET /v1/apps/{app}/limits?explain=true` as the admin.
async fn explained(s: &Server, app: &str) -> Value {
    let r = call(&s.app, "GET", &format!("/v1/apps/{app}/limits?explain=true"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    r.json
}

/// The sources of the layers that set one limit, in order, and the winner.
fn layers_of(limits: &Value, service: &str, policy: &str) -> (Vec<String>, Value) {
    let e = &entry(limits, Some(service), policy)["explain"];
    let sources = e["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no explain for {service} {policy}: {e:#}"))
        .iter()
        .map(|l| l["source"].as_str().unwrap().to_string())
        .collect();
    (sources, e["winner"].clone())
}

/// Rebuilds the snapshot if a contract or window started or stopped (what the server's
/// timer does).
async fn refresh(s: &Server) {
    s.state.refresh_if_due().await.expect("refresh");
}

/// An exact decimal, which the API writes as a JSON string.
fn dec(v: &Value) -> Decimal {
    let text = v.as_str().unwrap_or_else(|| panic!("`{v}` is not a decimal string"));
    Decimal::from_str(text).unwrap_or_else(|e| panic!("`{text}`: {e}"))
}

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

async fn submit(s: &Server, token: &str, account: &str, body: Value) -> Reply {
    call(&s.app, "POST", &format!("/v1/accounts/{account}/verifications"), Some(token), Some(body)).await
}

fn enterprise(registration_number: &str) -> Value {
    json!({
        "level": "enterprise",
        "legal_name": "Acme Voice Ltd",
        "registration_number": registration_number,
        "bank_account_ref": "bank-check-0042",
        "contact": "compliance@acme.example",
    })
}

fn industry(sector: &str, licence_id: &str) -> Value {
    json!({
        "level": "industry",
        "sector": sector,
        "legal_name": "Learn Loud Education Co",
        "licence_id": licence_id,
        "contact": "it@learnloud.example",
    })
}

/// Submits and expects 201: the verification's id.
async fn submitted(s: &Server, token: &str, account: &str, body: Value) -> String {
    let r = submit(s, token, account, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

/// `POST /v1/verifications/{id}/{verb}` as the admin.
async fn decide(s: &Server, id: &str, verb: &str, reason: &str) -> Reply {
    let uri = format!("/v1/verifications/{id}/{verb}");
    call(&s.app, "POST", &uri, Some(ADMIN), Some(json!({ "reason": reason }))).await
}

/// The ids in `GET /v1/verifications{query}`, in the order given.
async fn queue(s: &Server, query: &str) -> Vec<String> {
    let r = call(&s.app, "GET", &format!("/v1/verifications{query}"), Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    r.json["verifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

async fn statement(s: &Server, account: &str, period: &str) -> Value {
    let uri = format!("/v1/accounts/{account}/statement?period={period}");
    let r = call(&s.app, "GET", &uri, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    r.json
}

/// The statement line of one app and service.
fn line<'a>(st: &'a Value, app: &str, service: &str) -> &'a Value {
    st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["app_id"] == app && l["service"] == service)
        .unwrap_or_else(|| panic!("no line for {app} {service} in {st:#}"))
}

/// (status, content type, body) of a GET with `Accept: text/csv`.
async fn get_csv(s: &Server, uri: &str, token: &str) -> (StatusCode, String, String) {
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, "text/csv")
        .body(Body::empty())
        .unwrap();
    let response = s.app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8(bytes.to_vec()).expect("UTF-8 CSV"))
}

async fn create_contract(s: &Server, account: &str, body: Value) -> Reply {
    call(&s.app, "POST", &format!("/v1/accounts/{account}/contracts"), Some(ADMIN), Some(body)).await
}

async fn create_window(s: &Server, app: &str, body: Value) -> Reply {
    call(&s.app, "POST", &format!("/v1/apps/{app}/windows"), Some(ADMIN), Some(body)).await
}

/// Creates and expects 201: the record's id.
async fn created(r: Reply) -> String {
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

// ---- 1. verification changes the tier, live -------------------------------------------------

#[tokio::test]
async fn an_approved_verification_changes_the_tier_at_once() {
    let s = server_at("2026-11-11T09:00:00Z").await;
    let acc = new_account(&s, "Acme Voice", "UTC").await;
    // `payg` caps no rate or concurrency, so the tier's figures show through (the free plan
    // would cap asr at 5/s and 2 streams whatever the tier).
    let (app, key) = new_app(&s, &acc, "payg").await;
    assert_eq!(limit(&s, &app, "asr", "rate").await, 20.0);
    assert_eq!(limit(&s, &app, "asr", "concurrency").await, 10.0);
    let burst_150 = json!({ "app_id": app, "service": "asr", "requests": 150 });
    let r = call(&s.app, "POST", "/v1/check", None, Some(burst_150.clone())).await;
    assert_problem(&r, 422, "exceeds_limit");
    assert_eq!(r.json["field"], "rate");

    // Requests review could not act on are refused, and none is recorded.
    let no_identity = json!({ "level": "enterprise", "legal_name": "Acme", "contact": "a@acme.example" });
    let punctuation_only = json!({ "level": "enterprise", "legal_name": "Acme",
                                   "registration_number": " - / - ", "contact": "a@acme.example" });
    let no_sector = json!({ "level": "industry", "legal_name": "Acme", "licence_id": "EDU-1",
                            "contact": "a@acme.example" });
    let blank_name = json!({ "level": "enterprise", "legal_name": "  ", "registration_number": "X1",
                             "contact": "a@acme.example" });
    let cases = [
        (no_sector, "invalid_sector", "sector"),
        (industry("astrology", "EDU-1"), "invalid_sector", "sector"),
        (no_identity, "missing_identity", "id_number"),
        (punctuation_only, "missing_identity", "id_number"),
        (
            json!({ "level": "royal", "legal_name": "Acme", "registration_number": "X1", "contact": "a@b" }),
            "unknown_verification_level",
            "level",
        ),
        (blank_name, "invalid_field", "legal_name"),
    ];
    for (body, code, field) in cases {
        let r = submit(&s, &key, &acc, body.clone()).await;
        assert_problem(&r, 422, code);
        assert_eq!(r.json["field"], field, "{body}");
    }
    assert_eq!(queue(&s, "?status=all").await, Vec::<String>::new());

    // The developer (the app's key) asks for enterprise.
    let r = submit(&s, &key, &acc, enterprise("91310000-MA1K-4ABC2X")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    let v1 = r.json["id"].as_str().unwrap().to_string();
    assert!(v1.starts_with("ver_"), "{v1}");
    assert_eq!(r.json["account_id"], acc.as_str());
    assert_eq!(r.json["level"], "enterprise");
    assert_eq!(r.json["status"], "pending");
    assert_eq!(r.json["legal_name"], "Acme Voice Ltd");
    assert_eq!(r.json["bank_account_ref"], "bank-check-0042");
    assert_eq!(r.json["contact"], "compliance@acme.example");
    assert_eq!(r.json["identities"], 1);
    assert_eq!(r.json["linked_accounts"], json!([]));
    assert_eq!(r.json["submitted_at"], ms("2026-11-11T09:00:00Z"));
    assert_eq!(r.json["decided_at"], Value::Null);
    assert!(!r.json.to_string().to_uppercase().contains("MA1K"), "the number is not echoed: {:#}", r.json);
    // Nothing changes before review.
    assert_eq!(limit(&s, &app, "asr", "rate").await, 20.0);

    // Two more accounts ask, later.
    s.clock.set("2026-11-11T09:01:00Z");
    let acc2 = new_account(&s, "Maybe Corp", "UTC").await;
    let (app2, key2) = new_app(&s, &acc2, "payg").await;
    let v2 = submitted(&s, &key2, &acc2, industry("medical", "MED-77")).await;
    s.clock.set("2026-11-11T09:02:00Z");
    let acc3 = new_account(&s, "Learn Loud", "UTC").await;
    let (app3, key3) = new_app(&s, &acc3, "payg").await;
    let v3 = submitted(&s, &key3, &acc3, industry("education", "EDU-2026-001")).await;

    // The admin's queue: pending requests, oldest first.
    assert_eq!(queue(&s, "").await, [v1.clone(), v2.clone(), v3.clone()]);
    assert_eq!(queue(&s, "?status=pending").await, [v1.clone(), v2.clone(), v3.clone()]);
    let r = call(&s.app, "GET", "/v1/verifications?status=bogus", Some(ADMIN), None).await;
    assert_problem(&r, 422, "invalid_status");

    // A decision needs a reason, and a verification that exists.
    assert_problem(&decide(&s, &v1, "approve", " ").await, 422, "invalid_field");
    let r =
        call(&s.app, "POST", &format!("/v1/verifications/{v1}/approve"), Some(ADMIN), Some(json!({}))).await;
    assert_problem(&r, 422, "invalid_request");
    assert_problem(&decide(&s, "ver_0000000000000000", "approve", "ok").await, 404, "unknown_verification");

    // Approval: the tier changes at once, on the read side and on the hot path.
    s.clock.set("2026-11-11T09:05:00Z");
    let r = decide(&s, &v1, "approve", "registry extract and bank check match").await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["verification"]["status"], "approved");
    assert_eq!(r.json["verification"]["reason"], "registry extract and bank check match");
    assert_eq!(r.json["verification"]["decided_by"], "admin");
    assert_eq!(r.json["verification"]["decided_at"], ms("2026-11-11T09:05:00Z"));
    assert_eq!(r.json["account"]["verification_level"], "enterprise");
    assert_eq!(r.json["account"]["free_allowance"], true);
    assert_eq!(limit(&s, &app, "asr", "rate").await, 200.0);
    assert_eq!(limit(&s, &app, "asr", "concurrency").await, 200.0);
    assert_eq!(limits_of(&s, &app).await["verification_level"], "enterprise");
    let r = call(&s.app, "POST", "/v1/check", None, Some(burst_150)).await;
    assert_eq!(r.status, StatusCode::OK, "a burst of 150 fits enterprise's 200: {:#}", r.json);

    // A decision is final.
    assert_problem(&decide(&s, &v1, "approve", "again").await, 409, "conflict");
    assert_problem(&decide(&s, &v1, "reject", "changed my mind").await, 409, "conflict");
    assert_eq!(queue(&s, "").await, [v2.clone(), v3.clone()]);
    assert_eq!(queue(&s, "?status=approved").await, [v1.as_str()]);

    // Rejection leaves the tier as it was.
    let r = decide(&s, &v2, "reject", "licence not found in the register").await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["verification"]["status"], "rejected");
    assert_eq!(r.json["account"]["verification_level"], "individual");
    assert_eq!(limit(&s, &app2, "asr", "rate").await, 20.0);
    assert_eq!(limit(&s, &app2, "asr", "concurrency").await, 10.0);
    assert_problem(&decide(&s, &v2, "approve", "oops").await, 409, "conflict");
    let r = call(&s.app, "GET", &format!("/v1/accounts/{acc2}"), Some(ADMIN), None).await;
    assert_eq!(r.json["verification_level"], "individual");

    // Industry approval brings the sector along.
    let r = decide(&s, &v3, "approve", "education licence verified").await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["account"]["verification_level"], "industry");
    assert_eq!(r.json["account"]["sector"], "education");
    assert_eq!(limit(&s, &app3, "asr", "rate").await, 400.0);
    assert_eq!(limit(&s, &app3, "asr", "concurrency").await, 500.0);

    assert_eq!(queue(&s, "").await, Vec::<String>::new());
    assert_eq!(queue(&s, "?status=all").await, [v1.clone(), v2.clone(), v3]);
    assert_eq!(queue(&s, "?status=rejected").await, [v2]);

    // The developer follows their own request.
    let r = call(&s.app, "GET", &format!("/v1/verifications/{v1}"), Some(&key), None).await;
    assert_eq!((r.status, &r.json["status"]), (StatusCode::OK, &json!("approved")), "{:#}", r.json);
    let r = call(&s.app, "GET", &format!("/v1/accounts/{acc}/verifications"), Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let ids: Vec<&str> =
        r.json["verifications"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [v1.as_str()]);
}

// ---- 2. one identity, two accounts ----------------------------------------------------------

#[tokio::test]
async fn one_identity_verifying_two_accounts_is_linked_and_claims_the_free_allowance_once() {
    let s = server_at("2026-11-01T00:00:00Z").await;
    let a = new_account(&s, "Acme Shanghai", "UTC").await;
    let b = new_account(&s, "Acme Beijing", "UTC").await;
    let c = new_account(&s, "Unrelated Ltd", "UTC").await;
    let (a_free, a_key) = new_app(&s, &a, "free").await;
    let (a_payg, _) = new_app(&s, &a, "payg").await;
    let (b_free, b_key) = new_app(&s, &b, "free").await;
    let (b_payg, _) = new_app(&s, &b, "payg").await;
    let (_, c_key) = new_app(&s, &c, "free").await;

    s.clock.set("2026-11-01T08:00:00Z");
    let r = submit(&s, &a_key, &a, enterprise("91310000-MA1K-4ABC2X")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    let va = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["linked_accounts"], json!([]));

    // The same registration number, written differently: the same identity.
    s.clock.set("2026-11-01T08:01:00Z");
    let r = submit(&s, &b_key, &b, enterprise(" 91310000 ma1k 4abc2x ")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    let vb = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["linked_accounts"], json!([a]), "{:#}", r.json);
    // A different number is not linked.
    let r = submit(&s, &c_key, &c, enterprise("91310000-MA1K-4ABC2Y")).await;
    assert_eq!(r.json["linked_accounts"], json!([]), "{:#}", r.json);
    // The review queue shows the link to whoever decides.
    let r = call(&s.app, "GET", &format!("/v1/verifications/{vb}"), Some(ADMIN), None).await;
    assert_eq!(r.json["linked_accounts"], json!([a]));

    let r = decide(&s, &va, "approve", "documents checked").await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["account"]["free_allowance"], true);
    // Before b is approved, b's free app still has its allowance.
    s.clock.set("2026-11-02T10:00:00Z");
    allow(&s, &b_free, "asr", 1.0).await;

    let r = decide(&s, &vb, "approve", "documents checked; same company as the Shanghai account").await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.json["account"]["verification_level"], "enterprise");
    assert_eq!(r.json["account"]["free_allowance"], false, "{:#}", r.json);
    for (account, free) in [(&a, true), (&b, false)] {
        let r = call(&s.app, "GET", &format!("/v1/accounts/{account}"), Some(ADMIN), None).await;
        assert_eq!(r.json["free_allowance"], free, "{account}: {:#}", r.json);
    }

    // b's free app: its free quotas are zero, so no call can ever pass.
    let r = check_app(&s, &b_free, "asr", 1.0).await;
    assert_problem(&r, 422, "exceeds_limit");
    let limits = explained(&s, &b_free).await;
    for policy in ["per_minute", "daily", "monthly"] {
        assert_eq!(num(&entry(&limits["limits"], Some("asr"), policy)["limit"]), 0.0, "{policy}");
        let (_, winner) = layers_of(&limits["limits"], "asr", policy);
        assert_eq!(winner, "plan:free:allowance-claimed-elsewhere", "{policy}");
    }
    assert_eq!(num(&entry(&limits["limits"], Some("tts"), "daily")["limit"]), 0.0);
    // a's free app keeps its allowance.
    allow(&s, &a_free, "asr", 1.0).await;
    assert_eq!(limit(&s, &a_free, "asr", "daily").await, 1800.0);

    // Pay-as-you-go still works for b, but with nothing included: every unit is billed.
    allow(&s, &b_payg, "asr", 100.0).await;
    allow(&s, &a_payg, "asr", 100.0).await;
    let st = statement(&s, &b, "2026-11").await;
    let l = line(&st, &b_payg, "asr");
    assert_eq!(dec(&l["included"]), d("0"), "{l:#}");
    assert_eq!(dec(&l["used"]), d("100"));
    assert_eq!(dec(&l["overage"]), d("100"));
    assert_eq!(dec(&l["amount"]), d("0.025"));
    assert_eq!(dec(&st["total"]), d("0.03"), "0.025 rounds half away from zero");
    let st = statement(&s, &a, "2026-11").await;
    let l = line(&st, &a_payg, "asr");
    assert_eq!(dec(&l["included"]), d("18000"), "{l:#}");
    assert_eq!(dec(&l["overage"]), d("0"));
    assert_eq!(dec(&l["amount"]), d("0"));

    // Identity numbers are stored only as keyed hashes: no API answer shows them.
    let audit = call(&s.app, "GET", "/v1/audit", Some(ADMIN), None).await;
    let queue = call(&s.app, "GET", "/v1/verifications?status=all", Some(ADMIN), None).await;
    for text in [audit.json.to_string(), queue.json.to_string()] {
        let upper = text.to_uppercase();
        assert!(!upper.contains("MA1K"), "an identity number leaked: {text}");
        assert!(!text.contains("identity_hashes"), "identity hashes leaked: {text}");
    }
}

// ---- 3. authorisation -----------------------------------------------------------------------

#[tokio::test]
async fn a_developer_cannot_approve_or_read_another_accounts_records() {
    let s = server_with(|c| c.gateway_token = Some(GATEWAY.into())).await;
    let a = new_account(&s, "Acme", "UTC").await;
    let b = new_account(&s, "Beta", "UTC").await;
    let (_, a_key) = new_app(&s, &a, "payg").await;
    let (_, a_key2) = new_app(&s, &a, "free").await;
    let (_, b_key) = new_app(&s, &b, "payg").await;
    let va = submitted(&s, &a_key, &a, enterprise("A-REG-1")).await;
    s.clock.set("2026-03-10T10:00:01Z");
    let vb = submitted(&s, &b_key, &b, enterprise("B-REG-2")).await;
    let contract = json!({ "limits": { "asr": { "daily": 1000 } } });
    let ctr_b = created(create_contract(&s, &b, contract.clone()).await).await;

    // Nobody but the admin decides, not even on their own request.
    for (id, verb) in [(&va, "approve"), (&va, "reject"), (&vb, "approve"), (&vb, "reject")] {
        let uri = format!("/v1/verifications/{id}/{verb}");
        let body = Some(json!({ "reason": "trust me" }));
        for token in [a_key.as_str(), GATEWAY] {
            assert_problem(&call(&s.app, "POST", &uri, Some(token), body.clone()).await, 403, "forbidden");
        }
        assert_problem(&call(&s.app, "POST", &uri, None, body.clone()).await, 401, "unauthorized");
    }
    assert_problem(&call(&s.app, "GET", "/v1/verifications", Some(&a_key), None).await, 403, "forbidden");

    // Another account's statement, verifications and contracts are not theirs to read, and
    // they cannot ask for a verification on its behalf.
    let foreign: [(&str, String); 5] = [
        ("GET", format!("/v1/accounts/{b}/statement?period=2026-03")),
        ("GET", format!("/v1/accounts/{b}/verifications")),
        ("GET", format!("/v1/verifications/{vb}")),
        ("GET", format!("/v1/accounts/{b}/contracts")),
        ("POST", format!("/v1/accounts/{b}/verifications")),
    ];
    for (method, uri) in &foreign {
        let body = (*method == "POST").then(|| enterprise("A-REG-1"));
        let r = call(&s.app, method, uri, Some(&a_key), body.clone()).await;
        assert_problem(&r, 403, "forbidden");
        assert_problem(&call(&s.app, method, uri, Some(GATEWAY), body.clone()).await, 403, "forbidden");
        assert_problem(&call(&s.app, method, uri, None, body.clone()).await, 401, "unauthorized");
    }
    let (status, _, _) = get_csv(&s, &format!("/v1/accounts/{b}/statement?period=2026-03"), &a_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "CSV statements are guarded too");
    // Nor may they change entitlements.
    let admin_only: [(&str, String, Value); 6] = [
        ("POST", format!("/v1/accounts/{a}/contracts"), contract),
        ("POST", format!("/v1/contracts/{ctr_b}/end"), json!({})),
        ("PATCH", format!("/v1/accounts/{a}"), json!({ "time_zone": "Asia/Shanghai" })),
        ("POST", "/v1/apps/demo/windows".to_string(), json!({})),
        ("DELETE", "/v1/windows/win_0000000000000000".to_string(), json!({})),
        ("PATCH", "/v1/apps/demo".to_string(), json!({ "spending_cap": null })),
    ];
    for (method, uri, body) in admin_only {
        let r = call(&s.app, method, &uri, Some(&a_key), Some(body)).await;
        assert_problem(&r, 403, "forbidden");
    }

    // Their own: any key of the account reads it.
    for key in [&a_key, &a_key2] {
        for uri in [
            format!("/v1/accounts/{a}/statement?period=2026-03"),
            format!("/v1/accounts/{a}/verifications"),
            format!("/v1/verifications/{va}"),
            format!("/v1/accounts/{a}/contracts"),
        ] {
            let r = call(&s.app, "GET", &uri, Some(key), None).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}: {:#}", r.json);
        }
    }
    let (status, content_type, _) =
        get_csv(&s, &format!("/v1/accounts/{a}/statement?period=2026-03"), &a_key2).await;
    assert_eq!((status, content_type.starts_with("text/csv")), (StatusCode::OK, true));

    // The refused attempts changed nothing.
    assert_eq!(queue(&s, "").await, [va, vb]);
    for account in [&a, &b] {
        let r = call(&s.app, "GET", &format!("/v1/accounts/{account}"), Some(ADMIN), None).await;
        assert_eq!(r.json["verification_level"], "individual");
        assert_eq!(r.json["time_zone"], "UTC");
    }
    let r = call(&s.app, "GET", &format!("/v1/accounts/{a}/contracts"), Some(ADMIN), None).await;
    assert_eq!(r.json["contracts"], json!([]));
}

// ---- 4. plan change mid-period, prorated -----------------------------------------------------

/// (service, unit, payg included, package included) for November 2026 with the app on payg
/// from the 11th to the 16th (5 of 30 days) and on package from the 16th (15 of 30 days):
/// `included × days ÷ 30`, rounded to thousandths.
const PRORATED: [(&str, &str, &str, &str); 7] = [
    ("asr", "audio_second", "3000", "180000"),
    ("conversational_ai", "minute", "50", "15000"),
    ("live_streaming", "minute", "500", "100000"),
    ("rtm", "message", "50000", "25000000"),
    ("tts", "character", "50000", "10000000"),
    ("video_call", "minute", "1666.667", "150000"),
    ("voice_call", "minute", "1666.667", "250000"),
];

#[tokio::test]
async fn a_plan_change_mid_month_is_live_and_prorated_on_the_statement() {
    let s = server_at("2026-11-11T00:00:00Z").await;
    let acc = new_account(&s, "Switcher", "UTC").await;
    let (app, key) = new_app(&s, &acc, "payg").await;

    // On payg: 3620 asr (620 beyond the 3000 included for five days) and 60 000 tts
    // (10 000 beyond 50 000). The last payg call is in the minute before the change.
    s.clock.set("2026-11-12T10:00:00Z");
    allow(&s, &app, "asr", 3520.0).await;
    allow(&s, &app, "tts", 60_000.0).await;
    s.clock.set("2026-11-15T23:59:30Z");
    allow(&s, &app, "asr", 100.0).await;
    assert_eq!(limit(&s, &app, "asr", "daily").await, 360_000.0);

    s.clock.set("2026-11-16T00:00:00Z");
    let r = call(
        &s.app,
        "PATCH",
        &format!("/v1/apps/{app}"),
        Some(ADMIN),
        Some(json!({ "plan": "package", "reason": "bought the monthly package" })),
    )
    .await;
    assert_eq!((r.status, &r.json["plan"]), (StatusCode::OK, &json!("package")), "{:#}", r.json);
    // Live: the package's monthly safety stop (3 × the package), no daily limit, and the month's use carried over.
    let limits = limits_of(&s, &app).await;
    assert_eq!(limits["plan"], "package");
    let monthly = entry(&limits["limits"], Some("asr"), "monthly");
    assert_eq!((num(&monthly["limit"]), num(&monthly["used"])), (1_080_000.0, 3620.0));
    assert!(
        !limits["limits"].as_array().unwrap().iter().any(|l| l["service"] == "asr" && l["policy"] == "daily"),
        "the package has no daily limit: {limits:#}"
    );

    // On package: 50 in the minute of the change (it counts for the new plan), then 200 000:
    // 20 050 beyond the 180 000 included for fifteen days.
    s.clock.set("2026-11-16T00:00:30Z");
    allow(&s, &app, "asr", 50.0).await;
    s.clock.set("2026-11-20T10:00:00Z");
    allow(&s, &app, "asr", 200_000.0).await;
    allow(&s, &app, "tts", 1000.0).await;

    // The developer reads the statement with the app's key.
    let r =
        call(&s.app, "GET", &format!("/v1/accounts/{acc}/statement?period=2026-11"), Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let st = r.json;
    assert_eq!(st["account_id"], acc.as_str());
    assert_eq!(st["period"], "2026-11");
    assert_eq!(st["time_zone"], "UTC");
    assert_eq!(st["from"], "2026-11-01T00:00:00Z");
    assert_eq!(st["to"], "2026-12-01T00:00:00Z");
    assert_eq!(st["currency"], "USD");
    let services: Vec<&str> =
        st["lines"].as_array().unwrap().iter().map(|l| l["service"].as_str().unwrap()).collect();
    assert_eq!(services, PRORATED.map(|p| p.0), "one line per service, by name");

    // (service, payg used, payg overage, payg amount, package used, package overage, package amount)
    let usage: [(&str, &str, &str, &str, &str, &str, &str); 2] = [
        ("asr", "3620", "620", "0.155", "200050", "20050", "4.01"),
        ("tts", "60000", "10000", "0.16", "1000", "0", "0"),
    ];
    for (service, unit, payg_included, package_included) in PRORATED {
        let l = line(&st, &app, service);
        assert_eq!(l["unit"], unit);
        let segs = l["segments"].as_array().unwrap();
        assert_eq!(segs.len(), 2, "{service}: {l:#}");
        let (payg, package) = (&segs[0], &segs[1]);
        assert_eq!(
            (&payg["plan"], &payg["from"], &payg["to"]),
            (&json!("payg"), &json!("2026-11-11T00:00:00Z"), &json!("2026-11-16T00:00:00Z"))
        );
        assert_eq!(
            (&package["plan"], &package["from"], &package["to"]),
            (&json!("package"), &json!("2026-11-16T00:00:00Z"), &json!("2026-12-01T00:00:00Z"))
        );
        assert_eq!(dec(&payg["included"]), d(payg_included), "{service} payg included");
        assert_eq!(dec(&package["included"]), d(package_included), "{service} package included");
        assert_eq!((payg["billed"].clone(), package["billed"].clone()), (json!(true), json!(true)));
        let (pu, po, pa, ku, ko, ka) = usage
            .iter()
            .find(|u| u.0 == service)
            .map(|u| (u.1, u.2, u.3, u.4, u.5, u.6))
            .unwrap_or(("0", "0", "0", "0", "0", "0"));
        assert_eq!(dec(&payg["used"]), d(pu), "{service} payg used");
        assert_eq!(dec(&payg["overage"]), d(po), "{service} payg overage");
        assert_eq!(dec(&payg["amount"]), d(pa), "{service} payg amount");
        assert_eq!(dec(&package["used"]), d(ku), "{service} package used");
        assert_eq!(dec(&package["overage"]), d(ko), "{service} package overage");
        assert_eq!(dec(&package["amount"]), d(ka), "{service} package amount");
        // The line sums its segments.
        for field in ["used", "included", "overage", "amount"] {
            assert_eq!(dec(&l[field]), dec(&payg[field]) + dec(&package[field]), "{service} {field}");
        }
    }
    let asr = line(&st, &app, "asr");
    assert_eq!(dec(&asr["segments"][0]["unit_price"]), d("0.00025"));
    assert_eq!(dec(&asr["segments"][1]["unit_price"]), d("0.0002"));
    assert_eq!(dec(&asr["amount"]), d("4.165"));
    // 0.155 + 0.16 + 4.01 = 4.325, rounded half away from zero to cents.
    assert_eq!(dec(&st["total"]), d("4.33"));
    assert_eq!(st["total"], "4.33");

    // The same statement as CSV: a header, one row per segment, a total row.
    let uri = format!("/v1/accounts/{acc}/statement?period=2026-11");
    let (status, content_type, csv) = get_csv(&s, &uri, &key).await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "period,account_id,app_id,service,unit,plan,from,to,used,included,overage,unit_price,billed,amount,currency"
    );
    assert_eq!(rows.len(), 1 + 2 * PRORATED.len() + 1, "{csv}");
    let row = |service: &str, plan: &str, rest: &str| {
        let (from, to) = if plan == "payg" {
            ("2026-11-11T00:00:00Z", "2026-11-16T00:00:00Z")
        } else {
            ("2026-11-16T00:00:00Z", "2026-12-01T00:00:00Z")
        };
        let unit = PRORATED.iter().find(|p| p.0 == service).unwrap().1;
        format!("2026-11,{acc},{app},{service},{unit},{plan},{from},{to},{rest},USD")
    };
    assert_eq!(rows[1], row("asr", "payg", "3620,3000,620,0.00025,true,0.155"));
    assert_eq!(rows[2], row("asr", "package", "200050,180000,20050,0.0002,true,4.01"));
    assert_eq!(rows[11], row("video_call", "payg", "0,1666.667,0,0.00399,true,0"));
    assert_eq!(rows[14], row("voice_call", "package", "0,250000,0,0.0008,true,0"));
    for (i, (service, ..)) in PRORATED.iter().enumerate() {
        assert!(rows[1 + 2 * i].contains(&format!(",{service},")), "row {}: {}", 1 + 2 * i, rows[1 + 2 * i]);
        assert!(rows[1 + 2 * i].contains(",payg,") && rows[2 + 2 * i].contains(",package,"), "{csv}");
    }
    assert_eq!(*rows.last().unwrap(), ",,,,,,,,,,,,total,4.33,USD");

    let r =
        call(&s.app, "GET", &format!("/v1/accounts/{acc}/statement?period=2026-13"), Some(&key), None).await;
    assert_problem(&r, 422, "invalid_period");
    // An earlier month has no segment: the app did not exist.
    assert_eq!(statement(&s, &acc, "2026-10").await["lines"], json!([]));
}

// ---- 5. statement arithmetic and spending caps ----------------------------------------------

#[tokio::test]
async fn statements_bill_overage_by_plan_and_blocking_packages_stop_at_the_package() {
    let s = server_at("2026-11-01T00:00:00Z").await;
    let acc = new_account(&s, "Billing Co", "UTC").await;
    let (payg, _) = new_app(&s, &acc, "payg").await;
    let (package, _) = new_app(&s, &acc, "package").await;
    let (strict, _) = new_app(&s, &acc, "package_strict").await;

    s.clock.set("2026-11-02T10:00:00Z");
    allow(&s, &payg, "asr", 20_000.0).await;
    allow(&s, &package, "asr", 300_000.0).await;
    // The blocking package stops at its 360 000 included units.
    allow(&s, &strict, "asr", 180_000.0).await;
    s.clock.set("2026-11-02T10:00:01Z");
    allow(&s, &strict, "asr", 180_000.0).await;
    let r = check_app(&s, &strict, "asr", 1.0).await;
    assert_refused(&r, "quota");
    let to_month_end = ms_between("2026-11-02T10:00:01Z", "2026-12-01T00:00:00Z");
    assert_eq!(r.json["retry_after_ms"], to_month_end);
    assert_eq!(retry_after(&r), to_month_end / 1000);
    let r = check_app(&s, &strict, "asr", 360_001.0).await;
    assert_problem(&r, 422, "exceeds_limit");
    assert_eq!(r.json["field"], "monthly");

    // A package that bills overage, bought mid-month: half the package is included.
    s.clock.set("2026-11-16T00:00:00Z");
    let (late, _) = new_app(&s, &acc, "package").await;
    s.clock.set("2026-11-16T10:00:00Z");
    allow(&s, &late, "asr", 200_000.0).await;

    let st = statement(&s, &acc, "2026-11").await;
    // (app, used, included, overage, unit price, billed, amount)
    let expected = [
        (&payg, "20000", "18000", "2000", Some("0.00025"), true, "0.5"),
        (&package, "300000", "360000", "0", Some("0.0002"), true, "0"),
        (&strict, "360000", "360000", "0", None, false, "0"),
        (&late, "200000", "180000", "20000", Some("0.0002"), true, "4"),
    ];
    for (app, used, included, overage, price, billed, amount) in expected {
        let l = line(&st, app, "asr");
        assert_eq!(dec(&l["used"]), d(used), "{l:#}");
        assert_eq!(dec(&l["included"]), d(included), "{l:#}");
        assert_eq!(dec(&l["overage"]), d(overage), "{l:#}");
        assert_eq!(dec(&l["amount"]), d(amount), "{l:#}");
        let seg = &l["segments"][0];
        assert_eq!(l["segments"].as_array().unwrap().len(), 1);
        assert_eq!(seg["billed"], billed, "{l:#}");
        match price {
            Some(p) => assert_eq!(dec(&seg["unit_price"]), d(p)),
            None => assert_eq!(seg["unit_price"], Value::Null),
        }
    }
    assert_eq!(line(&st, &late, "asr")["segments"][0]["from"], "2026-11-16T00:00:00Z");
    assert_eq!(dec(&st["total"]), d("4.5"));
    assert_eq!(st["total"], "4.50");
}

#[tokio::test]
async fn a_spending_cap_stops_a_payg_app_until_the_month_ends() {
    let s = server_at("2026-11-01T00:00:00Z").await;
    let acc = new_account(&s, "Capped", "UTC").await;
    let (app, _) = new_app(&s, &acc, "payg").await;
    let (other, _) = new_app(&s, &acc, "payg").await;
    s.clock.set("2026-11-20T12:00:00Z");
    // 100 beyond the 18 000 included: 0.025 spent.
    allow(&s, &app, "asr", 18_100.0).await;
    allow(&s, &other, "asr", 18_100.0).await;

    let patch = async |body: Value| {
        let r = call(&s.app, "PATCH", &format!("/v1/apps/{app}"), Some(ADMIN), Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
        r.json
    };
    let enforce = async || {
        s.state.flush().await.expect("flush");
        s.state.enforce_spending_caps().await.expect("enforce");
    };
    for bad in [json!("-1"), json!("ten"), json!(true)] {
        let r = call(
            &s.app,
            "PATCH",
            &format!("/v1/apps/{app}"),
            Some(ADMIN),
            Some(json!({ "spending_cap": bad })),
        )
        .await;
        assert_problem(&r, 422, "invalid_amount");
        assert_eq!(r.json["field"], "spending_cap");
    }

    // A cap above what was spent stops nothing.
    assert_eq!(patch(json!({ "spending_cap": "1" })).await["spending_cap"], "1");
    enforce().await;
    allow(&s, &app, "asr", 0.0).await;
    assert!(limits_of(&s, &app).await.get("capped_until").is_none());

    // A cap below it stops the app, as a quota, until the month ends.
    assert_eq!(patch(json!({ "spending_cap": "0.01", "reason": "budget" })).await["spending_cap"], "0.01");
    enforce().await;
    let to_month_end = ms_between("2026-11-20T12:00:00Z", "2026-12-01T00:00:00Z");
    for units in [1.0, 0.0] {
        let r = check_app(&s, &app, "asr", units).await;
        assert_refused(&r, "quota");
        assert_eq!(r.json["retry_after_ms"], to_month_end);
        assert_eq!(retry_after(&r), to_month_end / 1000);
    }
    assert_refused(&check_app(&s, &app, "tts", 1.0).await, "quota");
    assert_refused(&lease_app(&s, &app).await, "quota");
    assert_eq!(limits_of(&s, &app).await["capped_until"], "2026-12-01T00:00:00Z");
    // Only the capped app.
    allow(&s, &other, "asr", 1.0).await;
    assert!(limits_of(&s, &other).await.get("capped_until").is_none());
    // The refused calls billed nothing.
    let st = statement(&s, &acc, "2026-11").await;
    assert_eq!(dec(&line(&st, &app, "asr")["amount"]), d("0.025"));

    // Removing the cap lets calls through again once enforced.
    assert_eq!(patch(json!({ "spending_cap": null })).await["spending_cap"], Value::Null);
    enforce().await;
    allow(&s, &app, "asr", 1.0).await;
    assert!(limits_of(&s, &app).await.get("capped_until").is_none());

    // The changes were audited with before and after.
    let r =
        call(&s.app, "GET", &format!("/v1/audit?subject_kind=app&subject_id={app}"), Some(ADMIN), None).await;
    let caps: Vec<(Value, Value)> = r.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "app.update")
        .map(|e| (e["before"]["spending_cap"].clone(), e["after"]["spending_cap"].clone()))
        .collect();
    assert_eq!(
        caps,
        [(Value::Null, json!("1")), (json!("1"), json!("0.01")), (json!("0.01"), Value::Null)],
        "{:#}",
        r.json
    );
}

/// A `package` whose overage policy is `bill` lets calls past its included units and bills
/// them (`package_strict` is the one that blocks).
#[tokio::test]
async fn a_package_that_bills_overage_lets_calls_past_the_package() {
    let s = server_at("2026-11-01T00:00:00Z").await;
    let acc = new_account(&s, "Heavy User", "UTC").await;
    let (app, _) = new_app(&s, &acc, "package").await;
    s.clock.set("2026-11-02T10:00:00Z");
    allow(&s, &app, "asr", 360_000.0).await;
    allow(&s, &app, "asr", 1000.0).await;
    let st = statement(&s, &acc, "2026-11").await;
    let l = line(&st, &app, "asr");
    assert_eq!(dec(&l["overage"]), d("1000"), "{l:#}");
    assert_eq!(dec(&l["amount"]), d("0.2"), "{l:#}");
}

// ---- 6. contracts ---------------------------------------------------------------------------

#[tokio::test]
async fn a_contract_overrides_tier_and_plan_while_valid_and_lapses_by_itself() {
    let s = server().await; // 2026-03-10T10:00:00Z
    let acc = new_account(&s, "Big Customer", "UTC").await;
    let (payg, key) = new_app(&s, &acc, "payg").await;
    let (free, _) = new_app(&s, &acc, "free").await;

    let r = create_contract(
        &s,
        &acc,
        json!({
            "limits": { "asr": { "rate": { "per_second": 300, "burst": 600 },
                                 "concurrency": { "max": 400 }, "daily": 1000000 } },
            "priority_class": "high",
            "sla": { "availability_target": 99.95, "support_level": "24x7",
                     "account_manager": "am@voxgate.example" },
            "valid_from": "2026-03-12T00:00:00Z",
            "valid_until": "2026-03-20T00:00:00Z",
            "reason": "MSA signed 2026-03-09",
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.json);
    let ctr = r.json["id"].as_str().unwrap().to_string();
    assert!(ctr.starts_with("ctr_"), "{ctr}");
    assert_eq!(r.json["owner_id"], acc.as_str());
    assert_eq!(r.json["valid_from"], ms("2026-03-12T00:00:00Z"));
    assert_eq!(r.json["valid_until"], ms("2026-03-20T00:00:00Z"));
    assert_eq!(r.json["body"]["priority_class"], "high");
    assert_eq!(r.json["body"]["sla"]["support_level"], "24x7");
    // The developer sees it.
    let r = call(&s.app, "GET", &format!("/v1/accounts/{acc}/contracts"), Some(&key), None).await;
    assert_eq!(r.json["contracts"][0]["id"], ctr.as_str(), "{:#}", r.json);

    let source = format!("contract:{ctr}");
    let tier_and_plan = async |s: &Server| {
        assert_eq!(limit(s, &payg, "asr", "rate").await, 20.0);
        assert_eq!(limit(s, &payg, "asr", "concurrency").await, 10.0);
        assert_eq!(limit(s, &payg, "asr", "daily").await, 360_000.0);
        assert_eq!(limit(s, &free, "asr", "rate").await, 10.0);
        assert_eq!(limit(s, &free, "asr", "concurrency").await, 2.0);
        assert_eq!(limit(s, &free, "asr", "daily").await, 1800.0);
    };

    // Before it starts: tier and plan; explain lists it as scheduled.
    tier_and_plan(&s).await;
    let e = explained(&s, &payg).await;
    assert_eq!(e["valid_until"], "2026-03-12T00:00:00Z");
    assert_eq!(
        e["scheduled"],
        json!([{ "kind": "contract", "source": source, "next_change": "2026-03-12T00:00:00Z" }])
    );
    s.clock.set("2026-03-11T23:59:59.999Z");
    refresh(&s).await;
    tier_and_plan(&s).await;

    // In force from valid_from: over the tier and over the free plan's caps.
    s.clock.set("2026-03-12T00:00:00Z");
    refresh(&s).await;
    for app in [&payg, &free] {
        assert_eq!(limit(&s, app, "asr", "rate").await, 600.0, "{app}");
        assert_eq!(limit(&s, app, "asr", "concurrency").await, 400.0, "{app}");
        assert_eq!(limit(&s, app, "asr", "daily").await, 1_000_000.0, "{app}");
        let e = explained(&s, app).await;
        for policy in ["rate", "concurrency", "daily"] {
            let (_, winner) = layers_of(&e["limits"], "asr", policy);
            assert_eq!(winner, source.as_str(), "{app} {policy}");
        }
        assert_eq!(e["valid_until"], "2026-03-20T00:00:00Z");
        assert_eq!(e["scheduled"], json!([]));
    }
    let (layers, _) = layers_of(&explained(&s, &free).await["limits"], "asr", "rate");
    assert_eq!(layers, ["tier:individual", "plan:free:cap", source.as_str()]);
    let r = call(
        &s.app,
        "POST",
        "/v1/check",
        None,
        Some(json!({ "app_id": free, "service": "asr", "requests": 500 })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the hot path uses the contract: {:#}", r.json);

    // It survives a restart.
    let (s, _) = s.restart("2026-03-15T00:00:00Z").await;
    assert_eq!(limit(&s, &payg, "asr", "rate").await, 600.0);

    // It lapses at valid_until.
    s.clock.set("2026-03-19T23:59:59Z");
    refresh(&s).await;
    assert_eq!(limit(&s, &payg, "asr", "rate").await, 600.0);
    s.clock.set("2026-03-20T00:00:00Z");
    refresh(&s).await;
    tier_and_plan(&s).await;
    let e = explained(&s, &payg).await;
    assert_eq!(e["valid_until"], Value::Null);
    assert_eq!(e["scheduled"], json!([{ "kind": "contract", "source": source, "next_change": null }]));

    // Ending: now, or at a given instant; an end never moves later. (That the limits follow
    // is `ending_a_contract_early_restores_tier_and_plan_at_once`.)
    let open_ended = json!({ "limits": { "asr": { "rate": { "per_second": 50, "burst": 100 } } } });
    let ctr2 = created(create_contract(&s, &acc, open_ended).await).await;
    assert_eq!(limit(&s, &payg, "asr", "rate").await, 100.0, "in force as soon as created");
    s.clock.set("2026-03-21T08:00:00Z");
    let end = async |id: &str, body: Value| {
        let r = call(&s.app, "POST", &format!("/v1/contracts/{id}/end"), Some(ADMIN), Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
        r.json["valid_until"].clone()
    };
    assert_eq!(end(&ctr2, json!({ "reason": "churned" })).await, ms("2026-03-21T08:00:00Z"));
    assert_eq!(end(&ctr2, json!({ "at": "2026-04-30T00:00:00Z" })).await, ms("2026-03-21T08:00:00Z"));
    assert_eq!(end(&ctr, json!({ "at": "2026-03-19T00:00:00Z" })).await, ms("2026-03-19T00:00:00Z"));
    let r = call(&s.app, "GET", &format!("/v1/accounts/{acc}/contracts"), Some(&key), None).await;
    let ends: Vec<&Value> =
        r.json["contracts"].as_array().unwrap().iter().map(|c| &c["valid_until"]).collect();
    assert_eq!(ends, [&json!(ms("2026-03-19T00:00:00Z")), &json!(ms("2026-03-21T08:00:00Z"))]);
    let r =
        call(&s.app, "POST", "/v1/contracts/ctr_0000000000000000/end", Some(ADMIN), Some(json!({}))).await;
    assert_problem(&r, 404, "unknown_contract");
    let r = call(
        &s.app,
        "POST",
        &format!("/v1/contracts/{ctr2}/end"),
        Some(ADMIN),
        Some(json!({ "at": "soon" })),
    )
    .await;
    assert_problem(&r, 422, "invalid_time");
    assert_eq!(r.json["field"], "at");

    // Bodies that cannot become limits are refused, naming the field, and not stored.
    let asr_daily = json!({ "asr": { "daily": 1000 } });
    let invalid = [
        (json!({ "limits": { "fax": { "daily": 1 } } }), "limits.fax"),
        (json!({ "limits": { "asr": { "rate": { "per_second": -5 } } } }), "limits.asr.rate.per_second"),
        (json!({ "limits": { "asr": { "daily": -1 } } }), "limits.asr.daily"),
        (json!({ "limits": { "asr": { "concurrency": { "max": -1 } } } }), "limits.asr.concurrency.max"),
        (json!({ "limits": {} }), "limits"),
        (json!({ "limits": asr_daily, "priority_class": "urgent" }), "priority_class"),
        (
            json!({ "limits": asr_daily, "valid_from": "2026-04-02T00:00:00Z", "valid_until": "2026-04-01T00:00:00Z" }),
            "valid_until",
        ),
        (
            json!({ "limits": asr_daily, "valid_from": "2026-04-01T00:00:00Z", "valid_until": "2026-04-01T00:00:00Z" }),
            "valid_until",
        ),
        (json!({ "limits": asr_daily, "valid_from": "next tuesday" }), "valid_from"),
        (json!({ "limits": asr_daily, "sla": { "availability_target": 120 } }), "sla.availability_target"),
    ];
    for (body, field) in invalid {
        let r = create_contract(&s, &acc, body.clone()).await;
        assert_problem(&r, 422, "invalid_contract");
        assert_eq!(r.json["field"], field, "{body}: {:#}", r.json);
    }
    let r = create_contract(&s, &acc, json!({ "limits": asr_daily, "priority": "high" })).await;
    assert_problem(&r, 422, "invalid_request");
    let r = create_contract(&s, "acc_missing", json!({ "limits": asr_daily })).await;
    assert_problem(&r, 404, "unknown_account");
    let r = call(&s.app, "GET", &format!("/v1/accounts/{acc}/contracts"), Some(ADMIN), None).await;
    let ids: Vec<&str> =
        r.json["contracts"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [ctr.as_str(), ctr2.as_str()]);
}

/// `POST /v1/contracts/{id}/end` must take the contract out of force: at once when it ends
/// now, at `at` otherwise, and after a restart too.
#[tokio::test]
async fn ending_a_contract_early_restores_tier_and_plan_at_once() {
    let s = server().await; // 2026-03-10T10:00:00Z
    let acc = new_account(&s, "Churning", "UTC").await;
    let (payg, _) = new_app(&s, &acc, "payg").await;
    let open_ended = json!({ "limits": { "asr": { "rate": { "per_second": 50, "burst": 100 } } } });
    let now_ended = created(create_contract(&s, &acc, open_ended.clone()).await).await;
    assert_eq!(limit(&s, &payg, "asr", "rate").await, 100.0);
    s.clock.set("2026-03-11T08:00:00Z");
    let r =
        call(&s.app, "POST", &format!("/v1/contracts/{now_ended}/end"), Some(ADMIN), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(limit(&s, &payg, "asr", "rate").await, 20.0, "ended now: out of force at once");

    let mut until_april = open_ended.clone();
    until_april["valid_until"] = json!("2026-04-01T00:00:00Z");
    let later_ended = created(create_contract(&s, &acc, until_april).await).await;
    let uri = format!("/v1/contracts/{later_ended}/end");
    let r = call(&s.app, "POST", &uri, Some(ADMIN), Some(json!({ "at": "2026-03-25T00:00:00Z" }))).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(limit(&s, &payg, "asr", "rate").await, 100.0, "still in force until the new end");
    assert_eq!(explained(&s, &payg).await["valid_until"], "2026-03-25T00:00:00Z");
    s.clock.set("2026-03-25T00:00:00Z");
    refresh(&s).await;
    assert_eq!(limit(&s, &payg, "asr", "rate").await, 20.0);
    let (s, _) = s.restart("2026-03-26T00:00:00Z").await;
    assert_eq!(limit(&s, &payg, "asr", "rate").await, 20.0, "ended contracts stay ended after a restart");
}

// ---- 7. capacity windows --------------------------------------------------------------------

#[tokio::test]
async fn an_evening_window_keeps_its_local_hours_across_dst() {
    // Saturday 2026-03-07, 12:00 in New York (EST, UTC-5). New York springs forward on
    // Sunday 2026-03-08 and falls back on Sunday 2026-11-01.
    let s = server_at("2026-03-07T17:00:00Z").await;
    // The account is in Shanghai: the window's own zone is the one that counts.
    let acc = new_account(&s, "Evening Tutors", "Asia/Shanghai").await;
    let (app, _) = new_app(&s, &acc, "payg").await;
    let r = create_window(
        &s,
        &app,
        json!({
            "service": "asr",
            "dimension": "concurrency",
            "multiply": 2,
            "recurring": { "start": "19:00", "end": "23:00", "time_zone": "America/New_York" },
            "reason": "evening classes",
        }),
    )
    .await;
    let win = created(r).await;
    let source = format!("window:{win}");
    let e = explained(&s, &app).await;
    assert_eq!(num(&entry(&e["limits"], Some("asr"), "concurrency")["limit"]), 10.0);
    assert_eq!(e["valid_until"], "2026-03-08T00:00:00Z");
    assert_eq!(
        e["scheduled"],
        json!([{ "kind": "window", "source": source, "next_change": "2026-03-08T00:00:00Z" }])
    );

    // (instant, New York time, concurrency limit, next boundary)
    let steps = [
        ("2026-03-07T23:59:59Z", "Sat 18:59:59 EST", 10.0, "2026-03-08T00:00:00Z"),
        ("2026-03-08T00:00:00Z", "Sat 19:00 EST", 20.0, "2026-03-08T04:00:00Z"),
        ("2026-03-08T03:59:59Z", "Sat 22:59:59 EST", 20.0, "2026-03-08T04:00:00Z"),
        ("2026-03-08T04:00:00Z", "Sat 23:00 EST", 10.0, "2026-03-08T23:00:00Z"),
        // DST day: 19:00 is now UTC-4.
        ("2026-03-08T22:59:59Z", "Sun 18:59:59 EDT", 10.0, "2026-03-08T23:00:00Z"),
        ("2026-03-08T23:00:00Z", "Sun 19:00 EDT", 20.0, "2026-03-09T03:00:00Z"),
        ("2026-03-09T03:00:00Z", "Sun 23:00 EDT", 10.0, "2026-03-09T23:00:00Z"),
        ("2026-10-31T22:59:59Z", "Sat 18:59:59 EDT", 10.0, "2026-10-31T23:00:00Z"),
        ("2026-10-31T23:00:00Z", "Sat 19:00 EDT", 20.0, "2026-11-01T03:00:00Z"),
        // Fall-back day: 19:00 is UTC-5 again.
        ("2026-11-01T23:59:59Z", "Sun 18:59:59 EST", 10.0, "2026-11-02T00:00:00Z"),
        ("2026-11-02T00:00:00Z", "Sun 19:00 EST", 20.0, "2026-11-02T04:00:00Z"),
        ("2026-11-02T04:00:00Z", "Sun 23:00 EST", 10.0, "2026-11-03T00:00:00Z"),
    ];
    for (at, local, expected, next) in steps {
        s.clock.set(at);
        refresh(&s).await;
        let e = explained(&s, &app).await;
        assert_eq!(
            num(&entry(&e["limits"], Some("asr"), "concurrency")["limit"]),
            expected,
            "{local} ({at})"
        );
        assert_eq!(e["valid_until"], next, "{local} ({at})");
        let (layers, winner) = layers_of(&e["limits"], "asr", "concurrency");
        if expected == 20.0 {
            assert_eq!(layers, ["tier:individual", source.as_str()], "{local}");
            assert_eq!(winner, source.as_str(), "{local}");
            assert_eq!(e["scheduled"], json!([]), "{local}");
        } else {
            assert_eq!((layers, winner), (vec!["tier:individual".to_string()], json!("tier:individual")));
            assert_eq!(e["scheduled"][0]["next_change"], next, "{local}");
        }
    }
}

/// On the hot path: streams held when the window opens stay, and the window's extra ones
/// become available at 19:00 EDT on the day clocks spring forward.
#[tokio::test]
async fn the_window_opens_on_the_hot_path_at_the_dst_boundary() {
    let s = server_at("2026-03-08T20:00:00Z").await;
    let acc = new_account(&s, "Evening Tutors", "America/New_York").await;
    let (app, _) = new_app(&s, &acc, "payg").await;
    // No zone given: the account's.
    let r = create_window(
        &s,
        &app,
        json!({ "service": "asr", "dimension": "concurrency", "multiply": 2,
                "recurring": { "start": "19:00", "end": "23:00" } }),
    )
    .await;
    created(r).await;
    s.clock.set("2026-03-08T22:59:59Z");
    refresh(&s).await;
    for i in 0..10 {
        assert_eq!(lease_app(&s, &app).await.status, StatusCode::CREATED, "lease {i}");
    }
    assert_refused(&lease_app(&s, &app).await, "concurrency");
    s.clock.set("2026-03-08T23:00:00Z");
    refresh(&s).await;
    for i in 10..20 {
        let r = lease_app(&s, &app).await;
        assert_eq!(r.status, StatusCode::CREATED, "lease {i}: {:#}", r.json);
    }
    let r = lease_app(&s, &app).await;
    assert_refused(&r, "concurrency");
    assert_eq!(num(&entry(&r.json["limits"], None, "concurrency")["limit"]), 20.0);
}

/// A local start inside the spring-forward gap (02:30 does not exist in New York on
/// 2026-03-08) starts at the first instant after the gap, 03:00 EDT, as `schedule.rs` says.
#[tokio::test]
async fn a_window_starting_in_the_dst_gap_starts_when_the_gap_ends() {
    let s = server_at("2026-03-08T05:00:00Z").await; // Sunday 00:00 EST
    let acc = new_account(&s, "Night Batch", "America/New_York").await;
    let (app, _) = new_app(&s, &acc, "payg").await;
    let r = create_window(
        &s,
        &app,
        json!({ "service": "asr", "dimension": "concurrency", "multiply": 3,
                "recurring": { "days": ["sun"], "start": "02:30", "end": "04:00" } }),
    )
    .await;
    created(r).await;
    assert_eq!(explained(&s, &app).await["valid_until"], "2026-03-08T07:00:00Z", "03:00 EDT");
    s.clock.set("2026-03-08T06:59:59Z"); // 01:59:59 EST
    refresh(&s).await;
    assert_eq!(limit(&s, &app, "asr", "concurrency").await, 10.0);
    s.clock.set("2026-03-08T07:00:00Z"); // 03:00 EDT
    refresh(&s).await;
    assert_eq!(limit(&s, &app, "asr", "concurrency").await, 30.0);
    assert_eq!(explained(&s, &app).await["valid_until"], "2026-03-08T08:00:00Z", "04:00 EDT");
}

#[tokio::test]
async fn one_off_windows_set_absolute_values_and_deleting_a_window_is_live() {
    let s = server().await; // 2026-03-10T10:00:00Z
    let acc = new_account(&s, "Exam Board", "UTC").await;
    let (app, key) = new_app(&s, &acc, "payg").await;
    let exam_week = json!({ "start": "2026-03-12T00:00:00Z", "end": "2026-03-13T00:00:00Z" });
    let w_conc = created(
        create_window(
            &s,
            &app,
            json!({ "service": "asr", "dimension": "concurrency", "value": { "max": 50 }, "once": exam_week,
                    "reason": "exam day" }),
        )
        .await,
    )
    .await;
    let w_rate = created(
        create_window(
            &s,
            &app,
            json!({ "service": "asr", "dimension": "rate", "value": { "per_second": 40, "burst": 80 },
                    "once": exam_week }),
        )
        .await,
    )
    .await;
    let w_daily = created(
        create_window(
            &s,
            &app,
            json!({ "service": "tts", "dimension": "daily", "value": 500, "once": exam_week }),
        )
        .await,
    )
    .await;
    let r = call(&s.app, "GET", &format!("/v1/apps/{app}/windows"), Some(&key), None).await;
    let mut ids: Vec<&str> =
        r.json["windows"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut expected = [w_conc.as_str(), w_rate.as_str(), w_daily.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "created at the same instant: in no particular order");

    let figures = async |s: &Server| {
        (
            limit(s, &app, "asr", "concurrency").await,
            limit(s, &app, "asr", "rate").await,
            limit(s, &app, "tts", "daily").await,
        )
    };
    assert_eq!(figures(&s).await, (10.0, 20.0, 5_000_000.0));
    assert_eq!(explained(&s, &app).await["valid_until"], "2026-03-12T00:00:00Z");
    s.clock.set("2026-03-12T00:00:00Z");
    refresh(&s).await;
    assert_eq!(figures(&s).await, (50.0, 80.0, 500.0));
    let e = explained(&s, &app).await;
    let step = &entry(&e["limits"], Some("asr"), "concurrency")["explain"]["layers"][1];
    assert_eq!(step["op"], "set");
    assert_eq!(step["operand"]["max"], 50);
    assert_eq!(layers_of(&e["limits"], "tts", "daily").1, format!("window:{w_daily}"));
    // Windows survive a restart.
    let (s, _) = s.restart("2026-03-12T12:00:00Z").await;
    assert_eq!(figures(&s).await, (50.0, 80.0, 500.0));
    s.clock.set("2026-03-13T00:00:00Z");
    refresh(&s).await;
    assert_eq!(figures(&s).await, (10.0, 20.0, 5_000_000.0));

    // A window in force now, deleted: gone at once.
    let now_on = json!({ "start": "2026-03-13T00:00:00Z", "end": "2026-03-20T00:00:00Z" });
    let w = created(
        create_window(
            &s,
            &app,
            json!({ "service": "asr", "dimension": "concurrency", "multiply": 5, "once": now_on }),
        )
        .await,
    )
    .await;
    assert_eq!(limit(&s, &app, "asr", "concurrency").await, 50.0);
    let r = call(
        &s.app,
        "DELETE",
        &format!("/v1/windows/{w}"),
        Some(ADMIN),
        Some(json!({ "reason": "cancelled" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:#}", r.json);
    assert_eq!(limit(&s, &app, "asr", "concurrency").await, 10.0);
    let r = call(&s.app, "GET", &format!("/v1/apps/{app}/windows"), Some(ADMIN), None).await;
    assert!(!r.json.to_string().contains(&w), "{:#}", r.json);
    let r = call(&s.app, "DELETE", &format!("/v1/windows/{w}"), Some(ADMIN), None).await;
    assert_problem(&r, 404, "unknown_window");

    // Windows that cannot become a layer are refused, naming the field, and not stored.
    let evening = json!({ "start": "19:00", "end": "23:00" });
    let base = |extra: Value| {
        let mut body = json!({ "service": "asr", "dimension": "concurrency" });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let invalid = [
        (json!({ "service": "fax", "multiply": 2, "recurring": evening }), "service"),
        (json!({ "multiply": 2, "value": { "max": 5 }, "recurring": evening }), "multiply"),
        (json!({ "recurring": evening }), "multiply"),
        (json!({ "multiply": -1, "recurring": evening }), "multiply"),
        (json!({ "multiply": 5000, "recurring": evening }), "multiply"),
        (json!({ "dimension": "rate", "value": 5, "recurring": evening }), "value"),
        (json!({ "value": { "max": -3 }, "recurring": evening }), "value"),
        (json!({ "multiply": 2 }), "recurring"),
        (json!({ "multiply": 2, "recurring": evening, "once": exam_week }), "recurring"),
        (
            json!({ "multiply": 2, "recurring": { "days": ["mon", "funday"], "start": "19:00", "end": "23:00" } }),
            "recurring.days[1]",
        ),
        (json!({ "multiply": 2, "recurring": { "start": "7pm", "end": "23:00" } }), "recurring.start"),
        (json!({ "multiply": 2, "recurring": { "start": "19:00", "end": "25:00" } }), "recurring.end"),
        (
            json!({ "multiply": 2, "recurring": { "start": "19:00", "end": "23:00", "time_zone": "Mars/Olympus" } }),
            "recurring.time_zone",
        ),
        (
            json!({ "multiply": 2, "once": { "start": "2026-04-02T00:00:00Z", "end": "2026-04-01T00:00:00Z" } }),
            "once.end",
        ),
        (json!({ "multiply": 2, "once": { "start": "soon", "end": "2026-04-01T00:00:00Z" } }), "once.start"),
    ];
    for (extra, field) in invalid {
        let body = base(extra);
        let r = create_window(&s, &app, body.clone()).await;
        assert_problem(&r, 422, "invalid_window");
        assert_eq!(r.json["field"], field, "{body}: {:#}", r.json);
    }
    let r = create_window(
        &s,
        &app,
        json!({ "service": "asr", "dimension": "bandwidth", "multiply": 2, "recurring": evening }),
    )
    .await;
    assert_problem(&r, 422, "invalid_request");
    let r = create_window(&s, "app_missing", base(json!({ "multiply": 2, "recurring": evening }))).await;
    assert_problem(&r, 404, "unknown_app");
    let r = call(&s.app, "GET", &format!("/v1/apps/{app}/windows"), Some(ADMIN), None).await;
    assert_eq!(r.json["windows"].as_array().unwrap().len(), 3, "{:#}", r.json);
}

// ---- 8. explain snapshots -------------------------------------------------------------------

/// The `explain` JSON of asr and tts with ids replaced by names, for a snapshot.
fn normalised_explain(e: &Value, names: &[(&str, &str)]) -> Value {
    let mut e = e.clone();
    let kept: Vec<Value> = e["limits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["service"] == "asr" || l["service"] == "tts")
        .cloned()
        .collect();
    e["limits"] = Value::Array(kept);
    let mut text = e.to_string();
    for (id, name) in names {
        text = text.replace(id, &format!("[{name}]"));
    }
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn explain_shows_every_layer_and_the_winner() {
    // 17:59 in Shanghai; records a second apart so they list in a known order.
    let s = server_at("2026-03-10T09:59:00Z").await;
    let acc = new_account(&s, "Snapshot Co", "Asia/Shanghai").await;
    let (app, _) = new_app(&s, &acc, "free").await;
    let ctr = created(
        create_contract(
            &s,
            &acc,
            json!({
                "limits": { "asr": { "concurrency": { "max": 30 }, "daily": 5000 },
                            "tts": { "rate": { "per_second": 50, "burst": 100 } } },
                "priority_class": "standard",
                "valid_from": "2026-03-01T00:00:00Z",
                "valid_until": "2026-04-01T00:00:00Z",
            }),
        )
        .await,
    )
    .await;
    let evening = created(
        create_window(
            &s,
            &app,
            json!({ "service": "asr", "dimension": "concurrency", "multiply": 2,
                    "recurring": { "start": "19:00", "end": "23:00" } }),
        )
        .await,
    )
    .await;
    s.clock.set("2026-03-10T09:59:01Z");
    let exams = created(
        create_window(
            &s,
            &app,
            json!({ "service": "tts", "dimension": "daily", "value": 40000,
                    "once": { "start": "2026-06-01T00:00:00Z", "end": "2026-06-08T00:00:00Z" } }),
        )
        .await,
    )
    .await;
    s.clock.set("2026-03-10T10:00:00Z"); // 18:00 in Shanghai
    allow(&s, &app, "asr", 12.5).await;
    let names = [
        (acc.as_str(), "account"),
        (app.as_str(), "app"),
        (ctr.as_str(), "contract"),
        (evening.as_str(), "evening"),
        (exams.as_str(), "exams"),
    ];

    let before = normalised_explain(&explained(&s, &app).await, &names);
    insta::assert_json_snapshot!("explain_before_the_evening_window", before);

    s.clock.set("2026-03-10T11:30:00Z"); // 19:30 in Shanghai
    refresh(&s).await;
    let during = normalised_explain(&explained(&s, &app).await, &names);
    insta::assert_json_snapshot!("explain_in_the_evening_window", during);

    // Without `explain`, none of it.
    let plain = limits_of(&s, &app).await;
    assert!(plain.get("scheduled").is_none() && plain.get("valid_until").is_none(), "{plain:#}");
    assert!(plain["limits"].as_array().unwrap().iter().all(|l| l.get("explain").is_none()));
}

// ---- 9. audit -------------------------------------------------------------------------------

#[tokio::test]
async fn every_entitlement_change_is_audited_with_before_and_after() {
    let s = server().await; // 2026-03-10T10:00:00Z
    let acc = new_account(&s, "Audited", "UTC").await;
    let (app, key) = new_app(&s, &acc, "payg").await;
    let at = |hhmm: &str| format!("2026-03-10T{hhmm}:00Z");

    s.clock.set(&at("10:01"));
    let v1 = submitted(&s, &key, &acc, enterprise("AUD-1")).await;
    s.clock.set(&at("10:02"));
    assert_eq!(decide(&s, &v1, "approve", "documents checked").await.status, StatusCode::OK);
    s.clock.set(&at("10:03"));
    let v2 = submitted(&s, ADMIN, &acc, industry("education", "EDU-9")).await;
    s.clock.set(&at("10:04"));
    assert_eq!(decide(&s, &v2, "reject", "licence expired").await.status, StatusCode::OK);

    let patch_account = async |body: Value| {
        call(&s.app, "PATCH", &format!("/v1/accounts/{acc}"), Some(ADMIN), Some(body)).await
    };
    s.clock.set(&at("10:05"));
    let r = patch_account(json!({ "time_zone": "Asia/Shanghai", "reason": "moved HQ" })).await;
    assert_eq!((r.status, &r.json["time_zone"]), (StatusCode::OK, &json!("Asia/Shanghai")), "{:#}", r.json);
    assert_eq!(limits_of(&s, &app).await["time_zone"], "Asia/Shanghai", "live");
    s.clock.set(&at("10:06"));
    let r = patch_account(json!({ "status": "suspended", "reason": "fraud review" })).await;
    assert_eq!((r.status, &r.json["status"]), (StatusCode::OK, &json!("suspended")), "{:#}", r.json);
    // Suspending the account stops its apps, and only its apps.
    let r = check_app(&s, &app, "asr", 1.0).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:#}", r.json);
    assert_eq!(r.json["reason"], "suspended");
    assert_eq!(lease_app(&s, &app).await.status, StatusCode::FORBIDDEN);
    assert_eq!(limits_of(&s, &app).await["suspended"], true);
    allow(&s, "demo", "asr", 1.0).await;
    s.clock.set(&at("10:07"));
    let r = patch_account(json!({ "status": "active" })).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    allow(&s, &app, "asr", 1.0).await;
    // A patch that changes nothing is not audited; bad patches change nothing.
    assert_eq!(patch_account(json!({ "time_zone": "Asia/Shanghai" })).await.status, StatusCode::OK);
    assert_problem(&patch_account(json!({ "time_zone": "Mars/Olympus" })).await, 422, "invalid_time_zone");
    assert_problem(&patch_account(json!({ "status": "frozen" })).await, 422, "invalid_status");
    assert_problem(&patch_account(json!({ "verification_level": "industry" })).await, 422, "invalid_request");
    let r =
        call(&s.app, "PATCH", "/v1/accounts/acc_missing", Some(ADMIN), Some(json!({ "status": "active" })))
            .await;
    assert_problem(&r, 404, "unknown_account");

    s.clock.set(&at("10:08"));
    let body = json!({ "limits": { "asr": { "daily": 1000 } }, "reason": "MSA 2026" });
    let ctr = created(create_contract(&s, &acc, body).await).await;
    s.clock.set(&at("10:09"));
    let r = call(
        &s.app,
        "POST",
        &format!("/v1/contracts/{ctr}/end"),
        Some(ADMIN),
        Some(json!({ "reason": "terminated" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    s.clock.set(&at("10:10"));
    let body = json!({ "service": "asr", "dimension": "concurrency", "multiply": 2,
                       "recurring": { "start": "19:00", "end": "23:00" }, "reason": "exam week" });
    let win = created(create_window(&s, &app, body).await).await;
    s.clock.set(&at("10:11"));
    let r = call(
        &s.app,
        "DELETE",
        &format!("/v1/windows/{win}"),
        Some(ADMIN),
        Some(json!({ "reason": "cancelled" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    s.clock.set(&at("10:12"));
    let r = call(
        &s.app,
        "PATCH",
        &format!("/v1/apps/{app}"),
        Some(ADMIN),
        Some(json!({ "spending_cap": "0.01", "reason": "budget" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);

    let r = call(&s.app, "GET", "/v1/audit", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    let names: [(&str, &str); 6] =
        [(&acc, "acc"), (&app, "app"), (&v1, "v1"), (&v2, "v2"), (&ctr, "ctr"), (&win, "win")];
    let name = |id: &Value| names.iter().find(|(i, _)| id == *i).map(|(_, n)| *n);
    let app_actor = format!("app:{app}");
    let entries: Vec<&Value> =
        r.json["entries"].as_array().unwrap().iter().filter(|e| name(&e["subject_id"]).is_some()).collect();
    let summary: Vec<(&str, &str, &str, &str, i64, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["subject_kind"].as_str().unwrap(),
                name(&e["subject_id"]).unwrap(),
                e["actor"].as_str().unwrap(),
                e["at"].as_i64().unwrap(),
                e["reason"].clone(),
            )
        })
        .collect();
    let null = Value::Null;
    assert_eq!(
        summary,
        vec![
            ("account.create", "account", "acc", "admin", ms(&at("10:00")), null.clone()),
            ("app.create", "app", "app", "admin", ms(&at("10:00")), null.clone()),
            ("verification.submit", "verification", "v1", app_actor.as_str(), ms(&at("10:01")), null.clone()),
            (
                "verification.approve",
                "verification",
                "v1",
                "admin",
                ms(&at("10:02")),
                json!("documents checked")
            ),
            ("account.verify", "account", "acc", "admin", ms(&at("10:02")), json!("documents checked")),
            ("verification.submit", "verification", "v2", "admin", ms(&at("10:03")), null.clone()),
            (
                "verification.reject",
                "verification",
                "v2",
                "admin",
                ms(&at("10:04")),
                json!("licence expired")
            ),
            ("account.update", "account", "acc", "admin", ms(&at("10:05")), json!("moved HQ")),
            ("account.update", "account", "acc", "admin", ms(&at("10:06")), json!("fraud review")),
            ("account.update", "account", "acc", "admin", ms(&at("10:07")), null.clone()),
            ("contract.create", "contract", "ctr", "admin", ms(&at("10:08")), json!("MSA 2026")),
            ("contract.end", "contract", "ctr", "admin", ms(&at("10:09")), json!("terminated")),
            ("window.create", "window", "win", "admin", ms(&at("10:10")), json!("exam week")),
            ("window.delete", "window", "win", "admin", ms(&at("10:11")), json!("cancelled")),
            ("app.update", "app", "app", "admin", ms(&at("10:12")), json!("budget")),
        ]
    );

    // Before and after of each.
    let pick = |e: &Value, field: &str| (e["before"][field].clone(), e["after"][field].clone());
    assert_eq!(entries[2]["before"], null);
    assert_eq!(entries[2]["after"]["status"], "pending");
    assert_eq!(entries[2]["after"]["level"], "enterprise");
    assert_eq!(pick(entries[3], "status"), (json!("pending"), json!("approved")));
    assert_eq!(pick(entries[4], "verification_level"), (json!("individual"), json!("enterprise")));
    assert_eq!(pick(entries[4], "free_allowance"), (json!(true), json!(true)));
    assert_eq!(pick(entries[6], "status"), (json!("pending"), json!("rejected")));
    assert_eq!(pick(entries[7], "time_zone"), (json!("UTC"), json!("Asia/Shanghai")));
    assert_eq!(pick(entries[8], "status"), (json!("active"), json!("suspended")));
    assert_eq!(pick(entries[9], "status"), (json!("suspended"), json!("active")));
    assert_eq!(entries[10]["before"], null);
    assert_eq!(entries[10]["after"]["body"]["limits"]["asr"]["daily"], 1000);
    assert_eq!(pick(entries[11], "valid_until"), (null.clone(), json!(ms(&at("10:09")))));
    assert_eq!(entries[12]["before"], null);
    assert_eq!(entries[12]["after"]["body"]["multiply"], 2);
    assert_eq!(entries[13]["before"]["id"], win.as_str());
    assert_eq!(entries[13]["after"], null);
    assert_eq!(pick(entries[14], "spending_cap"), (null.clone(), json!("0.01")));
}
