//! The OpenAPI document (`GET /openapi.json`) against what the server does.
//!
//! - In process: the document is OpenAPI 3.1, names exactly the routes the router declares
//!   (src/http/mod.rs), and the router serves exactly the documented methods of each path.
//! - Live: schemathesis (PyPI, installed by scripts/test-deps.sh) fuzzes the real binary from
//!   the document, with the admin token so that admin endpoints are exercised, and must find
//!   no server error and no response that the document does not describe (status, content
//!   type, headers, body). A missing schemathesis fails the test; it never skips.

use super::process::{TOKEN, Voxgate};
use super::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The paths the router declares, and whether each is served for any method (`any(…)`):
/// read from the source of the router, so a route added there without being documented
/// fails this test.
fn router_paths() -> Vec<(String, bool)> {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs");
    let source = std::fs::read_to_string(file).expect("src/http/mod.rs");
    let mut paths = Vec::new();
    for (at, _) in source.match_indices(".route(") {
        let rest = source[at + ".route(".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('"') else { continue };
        let end = rest.find('"').expect("a closed string literal");
        let handler = rest[end + 1..].trim_start_matches([',', ' ', '\n']);
        let any = handler.starts_with("any(") || handler.starts_with("axum::routing::any(");
        paths.push((rest[..end].to_string(), any));
    }
    assert!(paths.len() > 30, "found only {paths:?} in {file}");
    paths
}

/// The fallback's answer: no route at all (a handler's 404 names what it did not find).
fn is_no_route(r: &Reply) -> bool {
    r.status == StatusCode::NOT_FOUND && r.json["code"] == "not_found" && r.json["detail"] == "Not Found"
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_names_every_route_with_its_methods() {
    let s = server().await;
    let r = call(&s.app, "GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:#}", r.json);
    assert_eq!(r.content_type(), "application/json");
    let doc = &r.json;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", doc["openapi"]);
    assert_eq!(doc, &serde_json::to_value(voxgate_server::http::openapi::document()).unwrap());
    for scheme in ["admin_token", "app_key", "gateway_token"] {
        assert_eq!(doc["components"]["securitySchemes"][scheme]["scheme"], "bearer", "{scheme}");
    }

    // Every path of the router is documented, and nothing else is.
    let paths = doc["paths"].as_object().expect("paths");
    let routes = router_paths();
    let declared: BTreeSet<&str> = routes.iter().map(|(p, _)| p.as_str()).collect();
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(declared, documented, "router (left) and document (right) differ");

    let mut operation_ids = BTreeSet::new();
    for (path, item) in paths {
        let any = routes.iter().any(|(p, any)| p == path && *any);
        let uri = path.replace("{id}", "x");
        for method in METHODS {
            let op = &item[method.to_ascii_lowercase()];
            let body = (method != "GET").then(|| json!({}));
            let r = call(&s.app, method, &uri, Some(ADMIN), body).await;
            if op.is_object() {
                let id = op["operationId"].as_str().expect("an operationId");
                assert!(operation_ids.insert(id.to_string()), "operationId `{id}` twice");
                let responses = op["responses"].as_object().expect("responses");
                assert!(responses.keys().any(|k| k.starts_with('2')), "{method} {path}: no 2xx");
                assert!(responses.contains_key("500"), "{method} {path}: no 500");
                assert!(
                    r.status != StatusCode::METHOD_NOT_ALLOWED && !is_no_route(&r),
                    "{method} {path} is documented but not served: {} {:#}",
                    r.status,
                    r.json
                );
                assert!(
                    responses.contains_key(r.status.as_str()),
                    "{method} {uri}: status {} is not documented: {:#}",
                    r.status,
                    r.json
                );
            } else if !any {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented: {:#}",
                    r.json
                );
            }
        }
    }
}

/// The schemathesis command line, or why it cannot run.
fn schemathesis() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "schemathesis.cli"]);
    cmd
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    let version = schemathesis().arg("--version").output();
    match &version {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "schemathesis is not installed (`python3 -m schemathesis.cli --version` failed: {version:?}): \
             run scripts/test-deps.sh, which installs PyPI `schemathesis`"
        ),
    }
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let v = Voxgate::start(data.path(), work.path().join("server.log"));
    let out_path = work.path().join("schemathesis.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = schemathesis()
        .arg("run")
        .arg(format!("http://{}/openapi.json", v.addr))
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,\
             content_type_conformance,response_headers_conformance",
        ])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        // Bounded: about 20 s on an idle 2-core machine; the deadline below is the guard.
        .args(["--max-examples", "30", "--request-timeout", "10", "--workers", "2"])
        .args(["--suppress-health-check", "all", "--generation-database", "none", "--no-color"])
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("schemathesis starts");
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&out_path).unwrap_or_default();
    let Some(status) = status else {
        panic!("schemathesis did not finish within 150 s:\n{report}\n--- server log ---\n{}", v.log());
    };
    assert!(status.success(), "schemathesis failed ({status}):\n{report}\n--- server log ---\n{}", v.log());
    // It ran every operation and found nothing.
    assert!(report.contains("passed"), "{report}");
    assert!(!v.log().contains("panicked"), "the server panicked:\n{}", v.log());
    assert!(v.terminate().success());
}
