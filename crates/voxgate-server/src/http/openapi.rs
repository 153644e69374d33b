//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! It is generated from the code. Each handler carries a `#[utoipa::path]` attribute (method,
//! path, parameters, body, the responses it gives itself) and its request and response types
//! derive `ToSchema`, so the description sits next to what it describes. This module gathers
//! them into [`ApiDoc`] and adds what every operation shares:
//!
//! - one problem document schema per error status (`Problem400` … `Problem503`): the RFC 9457
//!   fields of [`super::error`], `status` fixed, and `code` one of the codes that status
//!   carries ([`PROBLEMS`]);
//! - the responses that come from the layers rather than the handler ([`CommonResponses`]):
//!   500 `internal` anywhere; 400 where a body, a query or a path is read; 413 and 422 where a
//!   body is read; 401 and 403 where a token is looked at; 404 where the path names a record;
//! - the three bearer credentials: `admin_token`, `app_key` and `gateway_token`.
//!
//! Bodies that handlers build with `json!` are described by the shapes at the end of this file.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{RefOr, Schema};
use voxgate_registry::{Account, AuditEntry, IncreaseRequest, OutboxEntry, Record, Verification, Webhook};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "voxgate",
        description = "Rate limits and quotas for AI voice platforms: decisions, leases, limits, usage, \
                       accounts, apps, entitlements and limit increases. The narrative reference is \
                       docs/api.md. Every error is an RFC 9457 problem document \
                       (`application/problem+json`) with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        super::decide::check,
        super::decide::acquire,
        super::decide::renew,
        super::decide::release,
        super::forward_auth::authorize,
        super::admin::get_app,
        super::read::limits,
        super::read::usage,
        super::admin::create_account,
        super::admin::list_accounts,
        super::admin::get_account,
        super::entitle::patch_account,
        super::admin::create_app,
        super::admin::patch_app,
        super::admin::audit,
        super::entitle::submit_verification,
        super::entitle::account_verifications,
        super::entitle::verification_queue,
        super::entitle::get_verification,
        super::entitle::approve,
        super::entitle::reject,
        super::entitle::create_contract,
        super::entitle::account_contracts,
        super::entitle::end_contract,
        super::entitle::create_window,
        super::entitle::app_windows,
        super::entitle::delete_window,
        super::entitle::statement,
        super::increase::submit,
        super::increase::list_for_app,
        super::increase::queue,
        super::increase::get,
        super::increase::approve,
        super::increase::deny,
        super::increase::withdraw,
        super::increase::renew,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::delete,
        super::webhooks::alerts,
        super::healthz,
        super::readyz,
        super::metrics,
        openapi_json,
    ),
    modifiers(&CommonResponses),
    tags(
        (name = "decisions", description = "Decide a call, take and settle leases: the hot path."),
        (name = "apps", description = "What an app may read about itself, and admin changes to apps."),
        (name = "accounts", description = "Accounts and the audit log (admin)."),
        (name = "verification", description = "Verification requests and their review."),
        (name = "contracts and windows", description = "Contracts, capacity windows and statements."),
        (name = "increases", description = "Limit-increase requests and their review."),
        (name = "webhooks", description = "Webhooks and the alerts queued for them."),
        (name = "operations", description = "Health, readiness and this document."),
    )
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);
    &DOC
}

/// `GET /openapi.json` — public, like `/healthz`.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1).", body = serde_json::Value))
)]
pub async fn openapi_json() -> Response {
    static JSON: LazyLock<Result<String, String>> =
        LazyLock::new(|| serde_json::to_string(document()).map_err(|e| e.to_string()));
    match &*JSON {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response(),
        Err(e) => super::error::ApiError::internal(e).into_response(),
    }
}

// ---- problem documents -------------------------------------------------------------------

/// Every error status the API answers with, its schema's description, and the `code`s it
/// carries. 405 and 415 come only from the framework (a wrong method; no endpoint checks
/// `Content-Type`), so no operation lists them; they are in the general `Problem` schema.
pub const PROBLEMS: &[(u16, &str, &[&str])] = &[
    (
        400,
        "The body is not well-formed JSON, or the query string or path cannot be read.",
        &["invalid_json", "invalid_request"],
    ),
    (401, "No valid bearer token where one is needed (with `WWW-Authenticate: Bearer`).", &["unauthorized"]),
    (403, "The token is valid but may not call this endpoint or act on this record.", &["forbidden"]),
    (
        404,
        "No such record, service or lease (or no such route).",
        &[
            "not_found",
            "unknown_app",
            "unknown_service",
            "unknown_account",
            "lease_not_found",
            "unknown_verification",
            "unknown_contract",
            "unknown_window",
            "unknown_increase_request",
            "unknown_webhook",
            "unknown_route",
        ],
    ),
    (405, "The route exists but not with this method (with `Allow`).", &["method_not_allowed"]),
    (409, "A record with this id already exists.", &["conflict"]),
    (413, "The body is larger than 2 MiB.", &["payload_too_large"]),
    (415, "Unsupported media type.", &["unsupported_media_type"]),
    (
        422,
        "JSON of the wrong shape, or a value that is not valid; `field` names it when one field is at fault.",
        &[
            "invalid_request",
            "invalid_cost",
            "exceeds_limit",
            "invalid_name",
            "unknown_verification_level",
            "unknown_plan",
            "invalid_time_zone",
            "invalid_status",
            "invalid_step",
            "invalid_range",
            "invalid_time",
            "invalid_amount",
            "invalid_field",
            "invalid_sector",
            "missing_identity",
            "invalid_contract",
            "invalid_window",
            "invalid_period",
            "invalid_request_value",
            "not_an_increase",
            "invalid_business_case",
            "invalid_url",
        ],
    ),
    (500, "A server fault; the server log has the cause.", &["internal"]),
    (503, "The counter store did not answer; retrying may help.", &["store_unavailable"]),
];

fn problem_schema(description: &str, status: Option<u16>, codes: &[&str]) -> Schema {
    let status = match status {
        Some(s) => json!({ "type": "integer", "enum": [s] }),
        None => json!({ "type": "integer", "minimum": 400, "maximum": 599 }),
    };
    serde_json::from_value(json!({
        "type": "object",
        "description": description,
        "required": ["type", "title", "status", "code", "detail"],
        "additionalProperties": false,
        "properties": {
            "type": { "type": "string", "pattern": "^urn:voxgate:problem:[a-z_]+$",
                      "description": "`urn:voxgate:problem:<code>`." },
            "title": { "type": "string", "description": "The HTTP reason phrase of `status`." },
            "status": status,
            "code": { "type": "string", "enum": codes,
                      "description": "A stable, machine-readable code: branch on this, not on `detail`." },
            "detail": { "type": "string",
                        "description": "A human-readable explanation; wording may change." },
            "field": { "type": "string", "description": "The request field at fault, when there is one." },
        },
    }))
    .expect("a valid schema object")
}

fn problem_name(status: u16) -> String {
    format!("Problem{status}")
}

/// The response of one error status: its problem document, by reference.
fn problem_response(status: u16) -> RefOr<utoipa::openapi::Response> {
    let (_, description, _) = PROBLEMS.iter().find(|p| p.0 == status).expect("a status of PROBLEMS");
    let mut response = json!({
        "description": description,
        "content": { super::error::PROBLEM_JSON: { "schema": {
            "$ref": format!("#/components/schemas/{}", problem_name(status)) } } },
    });
    if status == 401 {
        response["headers"] = json!({ "WWW-Authenticate": {
            "description": "`Bearer`.", "schema": { "type": "string" } } });
    }
    RefOr::T(serde_json::from_value(response).expect("a valid response object"))
}

macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident = $status:literal;)+) => {$(
        $(#[$doc])*
        ///
        /// In `responses(...)` of a path it adds this status with its problem schema; as a
        /// schema (`content((Forbidden = "application/problem+json"))`) it is that schema.
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                BTreeMap::from([($status.to_string(), problem_response($status))])
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let (_, description, codes) =
                    PROBLEMS.iter().find(|p| p.0 == $status).expect("a status of PROBLEMS");
                RefOr::T(problem_schema(description, Some($status), codes))
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                problem_name($status).into()
            }
        }
    )+};
}

problem_responses! {
    /// 400: `invalid_json`, `invalid_request`.
    BadRequest = 400;
    /// 401: `unauthorized`.
    Unauthorized = 401;
    /// 403: `forbidden`.
    Forbidden = 403;
    /// 404: an unknown record, service or lease.
    NotFound = 404;
    /// 409: `conflict`.
    Conflict = 409;
    /// 413: `payload_too_large`.
    PayloadTooLarge = 413;
    /// 422: an invalid body or value.
    Unprocessable = 422;
    /// 500: `internal`.
    Internal = 500;
    /// 503: `store_unavailable`.
    Unavailable = 503;
}

// ---- what every operation shares ---------------------------------------------------------

/// Adds the problem schemas, the security schemes, and the responses that the layers give
/// rather than the handler (see the module documentation). A response a handler describes
/// itself is kept as it is.
pub struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let all_codes: Vec<&str> = {
            let mut codes: Vec<&str> = PROBLEMS.iter().flat_map(|p| p.2.iter().copied()).collect();
            codes.sort_unstable();
            codes.dedup();
            codes
        };
        components.schemas.insert(
            "Problem".into(),
            RefOr::T(problem_schema(
                "An RFC 9457 problem document: every error of this API.",
                None,
                &all_codes,
            )),
        );
        for (status, description, codes) in PROBLEMS {
            components
                .schemas
                .insert(problem_name(*status), RefOr::T(problem_schema(description, Some(*status), codes)));
        }
        let bearer = |description: &str| {
            serde_json::from_value(json!({ "type": "http", "scheme": "bearer", "description": description }))
                .expect("a valid security scheme")
        };
        components.security_schemes.insert(
            "admin_token".into(),
            bearer("The admin token (`--admin-token`, or `<data-dir>/admin-token`): everything."),
        );
        components.security_schemes.insert(
            "app_key".into(),
            bearer("An app's API key (`vgk_…`): its own app, and the developer of its account."),
        );
        components.security_schemes.insert(
            "gateway_token".into(),
            bearer("The gateway token (`--gateway-token`): the decision endpoints only."),
        );

        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                add_common_responses(path, op);
            }
        }
    }
}

fn add_common_responses(path: &str, op: &mut Operation) {
    use utoipa::openapi::path::ParameterIn;
    optional_body(op);
    demo_examples(path, op);
    add_links(op);
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_path_id = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let has_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let has_body = op.request_body.is_some();
    let needs_token =
        op.security.as_ref().is_some_and(|s| s.iter().any(|r| *r != SecurityRequirement::default()));
    let mut statuses = vec![500];
    if has_body || has_query || has_path_id {
        statuses.push(400);
    }
    if has_body {
        statuses.extend([413, 422]);
    }
    if needs_token {
        statuses.extend([401, 403]);
    }
    if has_path_id {
        statuses.push(404);
    }
    for status in statuses {
        op.responses.responses.entry(status.to_string()).or_insert_with(|| problem_response(status));
    }
}

/// The demo account and app (both `demo`, made on a first start) are the examples of the
/// account and app ids in paths: a reader can try them, and so does a fuzzer.
fn demo_examples(path: &str, op: &mut Operation) {
    if !(path.starts_with("/v1/apps/{id}") || path.starts_with("/v1/accounts/{id}")) {
        return;
    }
    for param in op.parameters.iter_mut().flatten() {
        if param.name == "id" {
            let mut value = serde_json::to_value(&*param).expect("a parameter serialises");
            value["example"] = json!("demo");
            *param = serde_json::from_value(value).expect("a valid parameter");
        }
    }
}

/// Links from an operation that makes a record to the operations that take its id in their
/// path: `(operation, status, where the id is in its body, operations it links to)`. They
/// document the workflow, and let a stateful fuzzer reach the records it made itself.
pub const LINKS: &[(&str, &str, &str, &[&str])] = &[
    (
        "create_account",
        "201",
        "/id",
        &[
            "get_account",
            "patch_account",
            "submit_verification",
            "account_verifications",
            "create_contract",
            "account_contracts",
            "statement",
            "create_webhook",
            "account_webhooks",
            "account_alerts",
        ],
    ),
    (
        "create_app",
        "201",
        "/id",
        &[
            "get_app",
            "patch_app",
            "app_limits",
            "app_usage",
            "create_window",
            "app_windows",
            "submit_increase_request",
            "app_increase_requests",
        ],
    ),
    ("acquire_lease", "201", "/lease_id", &["renew_lease", "release_lease"]),
    (
        "submit_verification",
        "201",
        "/id",
        &["get_verification", "approve_verification", "reject_verification"],
    ),
    ("create_contract", "201", "/id", &["end_contract"]),
    ("create_window", "201", "/id", &["delete_window"]),
    (
        "submit_increase_request",
        "201",
        "/id",
        &[
            "get_increase_request",
            "approve_increase_request",
            "deny_increase_request",
            "withdraw_increase_request",
            "renew_increase_request",
        ],
    ),
    ("create_webhook", "201", "/id", &["delete_webhook"]),
];

fn add_links(op: &mut Operation) {
    let Some(id) = op.operation_id.as_deref() else { return };
    for (from, status, pointer, targets) in LINKS.iter().filter(|l| l.0 == id) {
        let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
            panic!("LINKS: `{from}` has no {status} response");
        };
        for target in *targets {
            let mut link = utoipa::openapi::link::LinkBuilder::new()
                .parameter("id", format!("$response.body#{pointer}"))
                .build();
            // utoipa 5.5 writes `Link::operation_id` as `operation_id` (6.0 fixes it): the
            // spec's `operationId` goes in through the extensions, which are written flat.
            link.extensions.get_or_insert_with(Default::default).insert("operationId".into(), json!(target));
            response.links.insert((*target).into(), RefOr::T(link));
        }
    }
}

/// `request_body = Option<T>` says the body may be left out (an empty body reads as `{}`),
/// not that it may be `null`: utoipa renders it as `oneOf: [null, T]`, so this makes it `T`,
/// not required.
fn optional_body(op: &mut Operation) {
    let Some(body) = op.request_body.as_mut() else { return };
    if body.required.is_some() {
        return;
    }
    for content in body.content.values_mut() {
        if let Some(RefOr::T(Schema::OneOf(one_of))) = content.schema.as_ref() {
            let null =
                |s: &RefOr<Schema>| serde_json::to_value(s).is_ok_and(|v| v == json!({ "type": "null" }));
            if let [a, b] = one_of.items.as_slice()
                && (null(a) || null(b))
            {
                content.schema = Some(if null(a) { b.clone() } else { a.clone() });
            }
        }
    }
}

// ---- shapes of bodies written with `json!` -------------------------------------------------
//
// Descriptions only: the handlers build these bodies with `serde_json::json!`, so nothing
// constructs these types. The schemathesis run checks the live responses against them.

/// `GET /v1/accounts`
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AccountList {
    pub accounts: Vec<Account>,
}

/// `GET /v1/audit`, oldest first.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
}

/// Verification requests.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct VerificationList {
    pub verifications: Vec<Verification>,
}

/// A decided verification request and its account after the decision.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct VerificationDecision {
    pub verification: Verification,
    pub account: Account,
}

/// An account's contracts.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ContractList {
    pub contracts: Vec<Record>,
}

/// An app's capacity windows.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct WindowList {
    pub windows: Vec<Record>,
}

/// Limit-increase requests.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct IncreaseRequestList {
    pub increase_requests: Vec<IncreaseRequest>,
}

/// An account's webhooks (their secrets are never listed).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// A new webhook, with its signing secret: shown this once.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CreatedWebhook {
    pub id: String,
    pub account_id: String,
    pub url: String,
    pub created_at: i64,
    pub secret: String,
}

/// An account's latest alerts (at most 200, newest first) and their delivery state.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AlertList {
    pub alerts: Vec<OutboxEntry>,
}

/// `GET /healthz`
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// Always `ok`.
    #[schema(value_type = String, pattern = "^ok$")]
    pub status: String,
}

/// `GET /readyz`
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready` (status 200) or `not_ready` (503).
    #[schema(pattern = "^(ready|not_ready)$")]
    pub status: String,
    /// `ok` or `unavailable`.
    #[schema(pattern = "^(ok|unavailable)$")]
    pub registry: String,
    /// Milliseconds since the last successful usage flush; 0 before the first.
    pub usage_flush_lag_ms: i64,
    pub counters: CounterState,
}

/// The counter store's state.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CounterState {
    /// `memory` or `redis`.
    pub kind: String,
    /// Whether the shared store's last call failed.
    pub degraded: bool,
    /// Calls to the shared store that failed since start.
    pub failures: u64,
}

/// A money amount: a decimal string (`"150.00"`) or a JSON number, at least 0; `null` removes it.
pub fn money() -> Schema {
    serde_json::from_value(json!({
        "description": "A monthly spending cap in the catalogue's currency: a decimal string or a number, at \
                        least 0; `null` removes the cap.",
        "type": ["string", "number", "null"],
    }))
    .expect("a valid schema")
}

/// A limit value shaped as in the catalogue.
pub fn limit_value() -> Schema {
    serde_json::from_value(json!({
        "description": "Shaped as in the catalogue: `{\"per_second\", \"burst\"}` for rate, `{\"max\"}` for \
                        concurrency, a number of units for quotas.",
        "type": ["object", "number"],
    }))
    .expect("a valid schema")
}

/// Per-service limits of a contract, written as in the catalogue.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ServiceLimits {
    pub rate: Option<RateValue>,
    pub concurrency: Option<ConcurrencyValue>,
    /// Units per UTC minute.
    pub per_minute: Option<f64>,
    /// Units per calendar day in the account's zone.
    pub daily: Option<f64>,
    /// Units per calendar month in the account's zone.
    pub monthly: Option<f64>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RateValue {
    pub per_second: f64,
    /// Default: the catalogue's rule (at least `per_second`).
    pub burst: Option<i64>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConcurrencyValue {
    pub max: i64,
    /// Lease lifetime in seconds; the catalogue default when omitted.
    pub lease_ttl_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_json() -> serde_json::Value {
        serde_json::to_value(document()).expect("the document serialises")
    }

    #[test]
    fn the_document_is_openapi_3_1_with_a_problem_schema_per_error_status() {
        let doc = doc_json();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = &doc["components"]["schemas"];
        for (status, _, codes) in PROBLEMS {
            let schema = &schemas[problem_name(*status)];
            assert_eq!(schema["properties"]["status"]["enum"], json!([status]));
            assert_eq!(schema["properties"]["code"]["enum"], json!(codes));
        }
        // Every `$ref` resolves.
        let text = doc.to_string();
        for (at, _) in text.match_indices("\"$ref\":\"#/components/schemas/") {
            let name = &text[at + 29..];
            let name = &name[..name.find('"').unwrap()];
            assert!(schemas.get(name).is_some(), "dangling $ref to `{name}`");
        }
        // Every link names an operation of the document.
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        for (from, _, _, targets) in LINKS {
            assert!(ids.contains(from), "LINKS: no operation `{from}`");
            for t in *targets {
                assert!(ids.contains(t), "LINKS: no operation `{t}`");
            }
        }
    }

    /// What `ApiError` writes is what the problem schema says, field for field.
    #[tokio::test]
    async fn an_api_error_is_a_document_of_its_status_schema() {
        let doc = doc_json();
        for (e, status) in [
            (super::super::error::ApiError::invalid_field("invalid_cost", "units", "bad"), 422),
            (super::super::error::ApiError::unknown("unknown_app", "no app"), 404),
        ] {
            let response = e.into_response();
            assert_eq!(response.status().as_u16(), status);
            let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let schema = &doc["components"]["schemas"][problem_name(status)];
            let properties = schema["properties"].as_object().unwrap();
            for (key, value) in body.as_object().unwrap() {
                assert!(properties.contains_key(key), "`{key}` is not in {}", problem_name(status));
                if key == "code" {
                    assert!(properties[key]["enum"].as_array().unwrap().contains(value));
                }
            }
            for key in schema["required"].as_array().unwrap() {
                assert!(body.get(key.as_str().unwrap()).is_some(), "`{key}` missing from {body}");
            }
        }
    }

    /// Every `code` the handlers write is listed under its status in [`PROBLEMS`], and every
    /// listed code is written somewhere. Read from the source: `ApiError::new(StatusCode::…,
    /// "code"`, `invalid_field("code"` and the 422 helpers around it, `unknown("code"` and
    /// `not_found("code"` (404), and the framework statuses of `problem_layer`.
    #[test]
    fn every_error_code_of_the_handlers_is_documented_under_its_status() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut source = String::new();
        for entry in std::fs::read_dir(format!("{dir}/http")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("openapi.rs") {
                source.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
        source.push_str(&std::fs::read_to_string(format!("{dir}/entitlements.rs")).unwrap());
        // One line per call, whatever rustfmt did.
        let flat: String = source.split_whitespace().collect::<Vec<_>>().join(" ").replace("( ", "(");
        let literal = |s: &str| -> Option<String> {
            let s = s.strip_prefix('"')?;
            let end = s.find('"')?;
            let code = &s[..end];
            code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_').then(|| code.to_string())
        };
        let status_of = |name: &str| match name {
            "BAD_REQUEST" => Some(400),
            "UNAUTHORIZED" => Some(401),
            "FORBIDDEN" => Some(403),
            "NOT_FOUND" => Some(404),
            "METHOD_NOT_ALLOWED" => Some(405),
            "CONFLICT" => Some(409),
            "PAYLOAD_TOO_LARGE" => Some(413),
            "UNSUPPORTED_MEDIA_TYPE" => Some(415),
            "UNPROCESSABLE_ENTITY" => Some(422),
            "INTERNAL_SERVER_ERROR" => Some(500),
            "SERVICE_UNAVAILABLE" => Some(503),
            _ => None,
        };
        // Written with a status that is not a literal: `problem_layer` names any other client
        // error `invalid_request`, and so does the body extractor for a body it cannot read.
        let mut found: Vec<(u16, String)> = vec![(400, "invalid_request".into())];
        for (prefix, status) in [
            ("invalid_field(", 422),
            ("body_error(", 422),
            ("invalid(", 422),
            ("unknown(", 404),
            ("not_found(", 404),
        ] {
            for (at, _) in flat.match_indices(prefix) {
                if let Some(code) = literal(&flat[at + prefix.len()..]) {
                    found.push((status, code));
                }
            }
        }
        for pattern in ["ApiError::new(StatusCode::", "StatusCode::"] {
            for (at, _) in flat.match_indices(pattern) {
                let rest = &flat[at + pattern.len()..];
                let name_end =
                    rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(rest.len());
                let Some(status) = status_of(&rest[..name_end]) else { continue };
                let rest = &rest[name_end..];
                let rest = rest.strip_prefix(", ").or_else(|| rest.strip_prefix(" => "));
                if let Some(code) = rest.and_then(literal) {
                    found.push((status, code));
                }
            }
        }
        assert!(found.len() > 40, "the scan found only {found:?}");
        for (status, code) in &found {
            let listed = PROBLEMS.iter().any(|(s, _, codes)| s == status && codes.contains(&code.as_str()));
            assert!(listed, "`{code}` ({status}) is written by a handler but not listed in PROBLEMS");
        }
        for (status, _, codes) in PROBLEMS {
            for code in *codes {
                assert!(
                    found.iter().any(|(s, c)| s == status && c == code),
                    "`{code}` is listed under {status} in PROBLEMS but no handler writes it with that status"
                );
            }
        }
    }
}
