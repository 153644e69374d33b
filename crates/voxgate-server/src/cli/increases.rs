//! `voxgate increases submit|list|show|withdraw|queue|approve|deny|renew`: the
//! limit-increase workflow, from the developer's request to the operator's decision.

use super::client::{CliError, encode, query};
use super::table::{Table, cell, kv, limit_value, millis};
use super::{Ctx, json_arg, object, s};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// The statuses a request can be in, and `all` for the queue.
const STATUSES: [&str; 9] = [
    "submitted",
    "auto_approved",
    "pending_review",
    "approved",
    "partially_approved",
    "denied",
    "withdrawn",
    "expired",
    "all",
];

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Ask for more of one dimension of one service for an app, with a business case
    /// (`POST /v1/apps/{id}/increase-requests`). The app's key or the admin token may submit.
    /// The answer is the stored request: approved at once, or waiting for review.
    Submit(Box<SubmitArgs>),
    /// An app's increase requests, oldest first (`GET /v1/apps/{id}/increase-requests`).
    List {
        /// The app id.
        #[arg(long)]
        app: String,
    },
    /// One request: status, requested and granted values, the reviewer's reason, the
    /// sizing's working and the usage evidence (`GET /v1/increase-requests/{id}`).
    Show {
        /// The increase request id.
        id: String,
    },
    /// Withdraw a request that has not been decided yet
    /// (`POST /v1/increase-requests/{id}/withdraw`).
    Withdraw {
        /// The increase request id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The review queue, oldest first, with the evidence beside each request
    /// (`GET /v1/increase-requests`).
    Queue {
        /// The status to list, or `all`.
        #[arg(long, default_value = "pending_review", value_parser = STATUSES)]
        status: String,
    },
    /// Approve a request in full, or in part with a smaller `--granted`
    /// (`POST /v1/increase-requests/{id}/approve`). The grant is in force at once.
    Approve {
        /// The increase request id.
        id: String,
        /// Why (required; the developer reads it, and it is recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// The value granted, shaped like the request's (JSON or `@file`): less than
        /// requested makes a partial approval. The requested value when omitted.
        #[arg(long)]
        granted: Option<String>,
        /// The grant lapses after this many days unless renewed (0: no expiry).
        #[arg(long, conflicts_with = "expires_at")]
        probation_days: Option<u32>,
        /// Or at this RFC 3339 instant. No expiry when neither is given.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Deny a request (`POST /v1/increase-requests/{id}/deny`).
    Deny {
        /// The increase request id.
        id: String,
        /// Why (required; the developer reads it, and it is recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Extend a grant (`POST /v1/increase-requests/{id}/renew`): for good when neither
    /// `--probation-days` nor `--expires-at` is given.
    Renew {
        /// The increase request id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// The grant now lapses this many days from now…
        #[arg(long, conflicts_with = "expires_at")]
        probation_days: Option<u32>,
        /// …or at this RFC 3339 instant.
        #[arg(long)]
        expires_at: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The app that needs more capacity.
    #[arg(long)]
    pub app: String,
    /// A service of the catalogue.
    #[arg(long)]
    pub service: String,
    /// The dimension to raise.
    #[arg(long, value_parser = ["rate", "concurrency", "per_minute", "daily", "monthly"])]
    pub dimension: String,
    /// The value asked for (JSON or `@file`): `{"per_second": 50, "burst": 100}` for rate,
    /// `{"max": 20}` or `20` for concurrency, a number of units for quotas.
    #[arg(long)]
    pub requested: String,
    /// The business case (JSON, `@file` or `@-`): daily_active_users,
    /// interactions_per_user_per_day, units_per_interaction, and optionally target_users,
    /// session_length_s, active_hours_per_day, peak_hours, time_zone, peak_to_mean,
    /// architecture {load_balancing, cache_hit_ratio, batch_size, async_queue}, headroom.
    #[arg(long)]
    pub business_case: String,
    /// Why the increase is needed (1 to 10000 characters).
    #[arg(long)]
    pub justification: String,
    /// Who to contact about the request.
    #[arg(long)]
    pub contact_email: String,
}

/// The request body of `increases submit`, with `--requested` and `--business-case` read.
pub fn submit_body(a: &SubmitArgs, requested: Value, business_case: Value) -> Value {
    json!({
        "service": a.service,
        "dimension": a.dimension,
        "requested": requested,
        "business_case": business_case,
        "justification": a.justification,
        "contact_email": a.contact_email,
    })
}

/// The request body of `approve` (with `granted` read) or `renew` (no `granted`).
pub fn grant_body(
    reason: String,
    granted: Option<Value>,
    probation_days: Option<u32>,
    expires_at: Option<String>,
) -> Value {
    object(vec![
        ("reason", Some(Value::String(reason))),
        ("granted", granted),
        ("expires_at", s(&expires_at)),
        ("probation_days", probation_days.map(|d| json!(d))),
    ])
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<String, CliError> {
    match cmd {
        Cmd::Submit(a) => {
            let requested = json_arg("--requested", &a.requested)?;
            let case = json_arg("--business-case", &a.business_case)?;
            let path = format!("/v1/apps/{}/increase-requests", encode(&a.app));
            ctx.output(ctx.client.post(&path, &submit_body(&a, requested, case))?, request)
        }
        Cmd::List { app } => {
            let path = format!("/v1/apps/{}/increase-requests", encode(&app));
            ctx.output(ctx.client.get(&path)?, list)
        }
        Cmd::Show { id } => {
            ctx.output(ctx.client.get(&format!("/v1/increase-requests/{}", encode(&id)))?, request)
        }
        Cmd::Withdraw { id, reason } => act(ctx, &id, "withdraw", object(vec![("reason", s(&reason))])),
        Cmd::Queue { status } => {
            let path = format!("/v1/increase-requests{}", query(&[("status", Some(&status))]));
            ctx.output(ctx.client.get(&path)?, queue)
        }
        Cmd::Approve { id, reason, granted, probation_days, expires_at } => {
            let granted = granted.as_deref().map(|g| json_arg("--granted", g)).transpose()?;
            act(ctx, &id, "approve", grant_body(reason, granted, probation_days, expires_at))
        }
        Cmd::Deny { id, reason } => act(ctx, &id, "deny", json!({ "reason": reason })),
        Cmd::Renew { id, reason, probation_days, expires_at } => {
            act(ctx, &id, "renew", grant_body(reason, None, probation_days, expires_at))
        }
    }
}

fn act(ctx: &Ctx, id: &str, verb: &str, body: Value) -> Result<String, CliError> {
    let path = format!("/v1/increase-requests/{}/{verb}", encode(id));
    ctx.output(ctx.client.post(&path, &body)?, decided)
}

/// A number rounded to three decimals (sizing and evidence figures are floats).
fn round3(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() => cell(&json!((f * 1000.0).round() / 1000.0)),
        _ => cell(v),
    }
}

/// An expiry in Unix milliseconds: `-` when there is none, `never` for the far-future
/// instant a renewal "for good" stores.
pub fn expiry(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) if jiff::Timestamp::from_millisecond(ms).is_err() => "never".into(),
        _ => millis(v),
    }
}

/// Whether a status grants capacity.
fn grants(status: &Value) -> bool {
    matches!(status.as_str(), Some("auto_approved" | "approved" | "partially_approved"))
}

/// The evidence window of `days` days, if attached.
fn window(v: &Value, days: i64) -> &Value {
    v["evidence"]["windows"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["days"].as_i64() == Some(days)))
        .unwrap_or(&Value::Null)
}

/// The refusals of an evidence window, all reasons together.
fn refusals(window: &Value) -> Value {
    match window["refused"].as_object() {
        Some(by_reason) => json!(by_reason.values().filter_map(Value::as_u64).sum::<u64>()),
        None => Value::Null,
    }
}

/// Refusals by reason, the non-zero ones: `rate 12, quota 3`; `0` when none.
fn refusals_by_reason(window: &Value) -> String {
    const ORDER: [&str; 5] = ["rate", "quota", "concurrency", "suspended", "capacity"];
    let Some(by_reason) = window["refused"].as_object() else { return "-".into() };
    let mut reasons: Vec<(&String, &Value)> = by_reason.iter().collect();
    reasons.sort_by_key(|(reason, _)| ORDER.iter().position(|o| o == reason).unwrap_or(ORDER.len()));
    let parts: Vec<String> = reasons
        .into_iter()
        .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
        .map(|(reason, n)| format!("{reason} {}", cell(n)))
        .collect();
    if parts.is_empty() { "0".into() } else { parts.join(", ") }
}

/// The current utilisation of the requested dimension as a percentage.
fn utilisation(v: &Value) -> String {
    match v["evidence"]["utilisation"].as_f64() {
        Some(share) => format!("{}%", cell(&json!((share * 1000.0).round() / 10.0))),
        None => "-".into(),
    }
}

/// One increase request: the record, then the sizing's working and the usage evidence.
pub fn request(v: &Value) -> String {
    let mut out = kv(&[
        ("id", cell(&v["id"])),
        ("app_id", cell(&v["app_id"])),
        ("account_id", cell(&v["account_id"])),
        ("service", cell(&v["service"])),
        ("dimension", cell(&v["dimension"])),
        ("status", cell(&v["status"])),
        ("requested", limit_value(&v["requested"])),
        ("granted", limit_value(&v["granted"])),
        ("reason", cell(&v["reason"])),
        ("grant_expires_at", expiry(&v["grant_expires_at"])),
        ("justification", cell(&v["justification"])),
        ("contact_email", cell(&v["contact_email"])),
        ("created_at", millis(&v["created_at"])),
        ("updated_at", millis(&v["updated_at"])),
        ("decided_by", cell(&v["decided_by"])),
    ]);
    let mut case = Vec::new();
    flatten("", &v["business_case"], &mut case);
    if !case.is_empty() {
        out.push_str("\nBusiness case:\n");
        let pairs: Vec<(&str, String)> = case.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        for line in kv(&pairs).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    let sizing = &v["sizing"];
    if sizing.is_object() {
        out.push_str(&format!(
            "\nSizing: justified {} (current {}, ceiling {}, automatic approval up to {})\n",
            round3(&sizing["justified"]),
            round3(&sizing["current"]),
            round3(&sizing["ceiling"]),
            round3(&sizing["auto_approve_up_to"]),
        ));
        for line in sizing["values"]["working"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {}\n", cell(line)));
        }
    }
    let windows = v["evidence"]["windows"].as_array();
    if windows.is_some() {
        out.push_str("\nEvidence from the app's metered usage:\n");
        let mut t = Table::new(&[
            "WINDOW",
            "REQUESTS",
            "ALLOWED",
            "REFUSED",
            "PEAK/S",
            "PEAK/MIN",
            "MEAN/S",
            "ACTIVE MIN",
            "UNITS",
        ]);
        for w in windows.into_iter().flatten() {
            t.row(vec![
                format!("{}d", cell(&w["days"])),
                cell(&w["requests"]),
                cell(&w["allowed"]),
                refusals_by_reason(w),
                cell(&w["peak_per_second"]),
                cell(&w["peak_per_minute"]),
                round3(&w["mean_per_second"]),
                cell(&w["active_minutes"]),
                round3(&w["units"]),
            ]);
        }
        out.push_str(&t.render());
        out.push_str(&format!("utilisation of the current limit: {}\n", utilisation(v)));
    }
    out
}

/// The fields of the business case that were given, nested ones as `architecture.batch_size`;
/// absent (null) and false ones are left out.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let Some(fields) = v.as_object() else { return };
    for (k, v) in fields {
        let key = format!("{prefix}{k}");
        match v {
            Value::Null | Value::Bool(false) => {}
            Value::Object(_) => flatten(&format!("{key}."), v, out),
            _ => out.push((key, round3(v))),
        }
    }
}

/// The answer to withdraw, approve, deny or renew: the request's new status in one line.
pub fn decided(v: &Value) -> String {
    let mut line = format!(
        "increase request {} {}: {} {}, requested {}",
        cell(&v["id"]),
        cell(&v["status"]),
        cell(&v["service"]),
        cell(&v["dimension"]),
        limit_value(&v["requested"]),
    );
    if grants(&v["status"]) {
        line.push_str(&format!(", granted {}", limit_value(&v["granted"])));
        match expiry(&v["grant_expires_at"]).as_str() {
            "-" | "never" => line.push_str(", no expiry"),
            at => line.push_str(&format!(", until {at}")),
        }
    }
    line.push('\n');
    line
}

/// `{"increase_requests": [...]}` of one app as a table.
pub fn list(v: &Value) -> String {
    let mut t = Table::new(&[
        "ID",
        "SERVICE",
        "DIMENSION",
        "REQUESTED",
        "GRANTED",
        "STATUS",
        "EXPIRES",
        "SUBMITTED",
        "REASON",
    ]);
    for r in v["increase_requests"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&r["id"]),
            cell(&r["service"]),
            cell(&r["dimension"]),
            limit_value(&r["requested"]),
            limit_value(&r["granted"]),
            cell(&r["status"]),
            expiry(&r["grant_expires_at"]),
            millis(&r["created_at"]),
            cell(&r["reason"]),
        ]);
    }
    t.render()
}

/// The review queue as a table, with the key evidence beside each request: the observed
/// peak and mean rate and the refusals over the last 7 days, and the current utilisation.
pub fn queue(v: &Value) -> String {
    let mut t = Table::new(&[
        "ID",
        "APP",
        "SERVICE",
        "DIMENSION",
        "REQUESTED",
        "JUSTIFIED",
        "STATUS",
        "PEAK/S",
        "MEAN/S",
        "REFUSED 7D",
        "UTILISATION",
        "SUBMITTED",
    ]);
    for r in v["increase_requests"].as_array().into_iter().flatten() {
        let week = window(r, 7);
        t.row(vec![
            cell(&r["id"]),
            cell(&r["app_id"]),
            cell(&r["service"]),
            cell(&r["dimension"]),
            limit_value(&r["requested"]),
            round3(&r["sizing"]["justified"]),
            cell(&r["status"]),
            cell(&week["peak_per_second"]),
            round3(&week["mean_per_second"]),
            cell(&refusals(week)),
            utilisation(r),
            millis(&r["created_at"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ClientCommand;
    use crate::cli::tests::parse;

    fn submit_args() -> Vec<&'static str> {
        vec![
            "increases",
            "submit",
            "--app",
            "app_1",
            "--service",
            "asr",
            "--dimension",
            "concurrency",
            "--requested",
            r#"{"max": 40}"#,
            "--business-case",
            r#"{"daily_active_users": 100}"#,
            "--justification",
            "evening launch",
            "--contact-email",
            "ops@acme.example",
        ]
    }

    #[test]
    fn submit_takes_every_field_and_builds_the_body() {
        let c = parse(&submit_args()).unwrap();
        let ClientCommand::Increases { cmd: Cmd::Submit(a), .. } = c else { panic!("{c:?}") };
        let body = submit_body(&a, json!({"max": 40}), json!({"daily_active_users": 100}));
        assert_eq!(
            body,
            json!({
                "service": "asr", "dimension": "concurrency", "requested": {"max": 40},
                "business_case": {"daily_active_users": 100}, "justification": "evening launch",
                "contact_email": "ops@acme.example",
            })
        );
        for missing in ["--requested", "--business-case", "--justification", "--contact-email"] {
            let mut args = submit_args();
            let i = args.iter().position(|a| *a == missing).unwrap();
            args.drain(i..i + 2);
            let e = parse(&args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{missing}");
        }
        let mut args = submit_args();
        args[7] = "hourly";
        assert_eq!(parse(&args).unwrap_err().kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn review_arguments() {
        let c = parse(&["increases", "queue"]).unwrap();
        assert!(
            matches!(c, ClientCommand::Increases { cmd: Cmd::Queue { ref status }, .. } if status == "pending_review"),
            "{c:?}"
        );
        assert!(parse(&["increases", "queue", "--status", "all"]).is_ok());
        assert!(parse(&["increases", "queue", "--status", "lost"]).is_err());
        assert!(parse(&["increases", "approve", "inc_1"]).is_err(), "--reason is required");
        assert!(parse(&["increases", "deny", "inc_1"]).is_err(), "--reason is required");
        let both =
            ["increases", "approve", "inc_1", "--reason", "r", "--probation-days", "30", "--expires-at", "x"];
        assert_eq!(parse(&both).unwrap_err().kind(), clap::error::ErrorKind::ArgumentConflict);
        let c = parse(&["increases", "approve", "inc_1", "--reason", "ok", "--granted", "30"]).unwrap();
        assert!(
            matches!(c, ClientCommand::Increases { cmd: Cmd::Approve { ref granted, .. }, .. }
                if granted.as_deref() == Some("30")),
            "{c:?}"
        );
        assert!(parse(&["increases", "withdraw", "inc_1"]).is_ok(), "the reason is optional");
        assert!(parse(&["increases", "renew", "inc_1", "--reason", "r", "--probation-days", "7"]).is_ok());
    }

    #[test]
    fn grant_bodies_leave_out_what_was_not_given() {
        assert_eq!(grant_body("ok".into(), None, None, None), json!({"reason": "ok"}));
        assert_eq!(
            grant_body("part".into(), Some(json!({"max": 30})), Some(14), None),
            json!({"reason": "part", "granted": {"max": 30}, "probation_days": 14})
        );
        assert_eq!(
            grant_body("r".into(), None, None, Some("2027-01-01T00:00:00Z".into())),
            json!({"reason": "r", "expires_at": "2027-01-01T00:00:00Z"})
        );
    }

    fn sample() -> Value {
        json!({
            "id": "inc_1", "app_id": "app_1", "account_id": "acc_1", "service": "asr",
            "dimension": "concurrency", "requested": 60, "granted": {"max": 30},
            "business_case": {"daily_active_users": 100, "interactions_per_user_per_day": 20.0,
                "headroom": null, "architecture": {"load_balancing": true, "async_queue": false}},
            "justification": "launch",
            "contact_email": "ops@acme.example",
            "sizing": {"justified": 37500.0, "current": 2.0, "ceiling": 50.0,
                "auto_approve_up_to": 4.800000000000001,
                "values": {"working": ["peak-to-mean = 3 (stated)", "concurrency = 38"]}},
            "evidence": {"windows": [
                {"days": 7, "requests": 12, "allowed": 9,
                 "refused": {"rate": 2, "quota": 0, "concurrency": 1, "suspended": 0, "capacity": 0},
                 "units": 187.5, "active_minutes": 3, "mean_per_second": 0.0667,
                 "peak_per_minute": 6, "peak_per_second": 2},
                {"days": 30, "requests": 0, "allowed": 0,
                 "refused": {"rate": 0, "quota": 0, "concurrency": 0, "suspended": 0, "capacity": 0},
                 "units": 0.0, "active_minutes": 0, "mean_per_second": 0.0,
                 "peak_per_minute": 0, "peak_per_second": 0}],
                "utilisation": 0.5},
            "status": "partially_approved", "reason": "30 now", "grant_expires_at": 1_795_812_454_099_i64,
            "created_at": 1_795_812_454_099_i64, "updated_at": 1_795_812_454_099_i64, "decided_by": "admin",
        })
    }

    #[test]
    fn shows_a_request_with_its_working_and_evidence() {
        let text = request(&sample());
        assert!(text.contains("status            partially_approved\n"), "{text}");
        assert!(text.contains("requested         60\ngranted           max 30\n"), "{text}");
        assert!(text.contains("reason            30 now\n"), "{text}");
        assert!(
            text.contains(
                "\nBusiness case:\n  \
                 architecture.load_balancing    yes\n  \
                 daily_active_users             100\n  \
                 interactions_per_user_per_day  20\n\n"
            ),
            "{text}"
        );
        assert!(text.contains("grant_expires_at  2026-11-27T20:47:34Z\n"), "{text}");
        assert!(
            text.contains(
                "\nSizing: justified 37500 (current 2, ceiling 50, automatic approval up to 4.8)\n  \
                 peak-to-mean = 3 (stated)\n  concurrency = 38\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Evidence from the app's metered usage:\n\
                 WINDOW  REQUESTS  ALLOWED  REFUSED                PEAK/S  PEAK/MIN  MEAN/S  ACTIVE MIN  UNITS\n\
                 7d      12        9        rate 2, concurrency 1  2       6         0.067   3           187.5\n\
                 30d     0         0        0                      0       0         0       0           0\n\
                 utilisation of the current limit: 50%\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn decisions_are_one_line() {
        let mut v = sample();
        assert_eq!(
            decided(&v),
            "increase request inc_1 partially_approved: asr concurrency, requested 60, granted max 30, \
             until 2026-11-27T20:47:34Z\n"
        );
        v["grant_expires_at"] = json!(i64::MAX / 4);
        assert!(decided(&v).ends_with("granted max 30, no expiry\n"), "{}", decided(&v));
        assert_eq!(expiry(&v["grant_expires_at"]), "never");
        v["status"] = json!("denied");
        v["granted"] = Value::Null;
        assert_eq!(decided(&v), "increase request inc_1 denied: asr concurrency, requested 60\n");
    }

    #[test]
    fn the_queue_has_the_key_evidence() {
        let v = json!({ "increase_requests": [sample()] });
        let text = queue(&v);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap().split("  ").filter(|c| !c.is_empty()).map(str::trim).collect::<Vec<_>>(),
            [
                "ID",
                "APP",
                "SERVICE",
                "DIMENSION",
                "REQUESTED",
                "JUSTIFIED",
                "STATUS",
                "PEAK/S",
                "MEAN/S",
                "REFUSED 7D",
                "UTILISATION",
                "SUBMITTED"
            ]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "inc_1",
                "app_1",
                "asr",
                "concurrency",
                "60",
                "37500",
                "partially_approved",
                "2",
                "0.067",
                "3",
                "50%",
                "2026-11-27T20:47:34Z"
            ]
        );
        assert_eq!(utilisation(&json!({"evidence": {"utilisation": null}})), "-");
        assert_eq!(utilisation(&json!({"evidence": {"utilisation": 0.125}})), "12.5%");
        let list = list(&v);
        assert!(
            list.lines().nth(1).unwrap().starts_with("inc_1  asr      concurrency  60         max 30"),
            "{list}"
        );
    }
}
