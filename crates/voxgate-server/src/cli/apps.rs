//! `voxgate apps create|show|update|limits|usage`.

use super::client::{CliError, encode, query};
use super::table::{Table, cell, duration_ms, kv, limit_value, millis};
use super::{Ctx, object, s};
use clap::Subcommand;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create an app and its API key (`POST /v1/apps`). The key is shown once.
    Create {
        /// The account the app belongs to.
        #[arg(long)]
        account: String,
        /// The app's name (1 to 200 characters).
        #[arg(long)]
        name: String,
        /// A plan of the catalogue; the catalogue's default plan when omitted.
        #[arg(long)]
        plan: Option<String>,
    },
    /// One app (`GET /v1/apps/{id}`).
    Show {
        /// The app id.
        id: String,
    },
    /// Change an app's plan, status or spending cap (`PATCH /v1/apps/{id}`). Live at once.
    Update {
        /// The app id.
        id: String,
        /// A plan of the catalogue. A change mid-month is prorated on the statement.
        #[arg(long)]
        plan: Option<String>,
        #[arg(long, value_parser = ["active", "suspended"])]
        status: Option<String>,
        /// A monthly spending cap in the catalogue's currency (e.g. 250.00), or `none` to
        /// remove the cap.
        #[arg(long)]
        spending_cap: Option<String>,
        /// Recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Every limit of the app with its current use (`GET /v1/apps/{id}/limits`).
    Limits {
        /// The app id.
        id: String,
        /// Also show which layer (tier, plan, contract, window) set each limit.
        #[arg(long)]
        explain: bool,
    },
    /// The app's metered usage series (`GET /v1/apps/{id}/usage`).
    Usage {
        /// The app id.
        id: String,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Start: RFC 3339 instant or Unix seconds (default: `to` minus one hour, day or
        /// 31 days, by step).
        #[arg(long)]
        from: Option<String>,
        /// End, exclusive: RFC 3339 instant or Unix seconds (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Bucket size.
        #[arg(long, value_parser = ["minute", "hour", "day"])]
        step: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<String, CliError> {
    match cmd {
        Cmd::Create { account, name, plan } => {
            let body = object(vec![
                ("account_id", Some(Value::String(account))),
                ("name", Some(Value::String(name))),
                ("plan", s(&plan)),
            ]);
            ctx.output(ctx.client.post("/v1/apps", &body)?, |v| {
                let mut out = app(v);
                out.push_str(&kv(&[(
                    "api_key",
                    format!("{}  (shown once: keep it now)", cell(&v["api_key"])),
                )]));
                out
            })
        }
        Cmd::Show { id } => ctx.output(ctx.client.get(&format!("/v1/apps/{}", encode(&id)))?, app),
        Cmd::Update { id, plan, status, spending_cap, reason } => {
            if plan.is_none() && status.is_none() && spending_cap.is_none() {
                return Err(CliError::Other(
                    "nothing to change: give --plan, --status or --spending-cap".into(),
                ));
            }
            let cap = spending_cap
                .map(|c| if c.eq_ignore_ascii_case("none") { Value::Null } else { Value::String(c) });
            let body = object(vec![
                ("plan", s(&plan)),
                ("status", s(&status)),
                ("spending_cap", cap),
                ("reason", s(&reason)),
            ]);
            ctx.output(ctx.client.patch(&format!("/v1/apps/{}", encode(&id)), &body)?, app)
        }
        Cmd::Limits { id, explain } => {
            let q = query(&[("explain", explain.then_some("true"))]);
            ctx.output(ctx.client.get(&format!("/v1/apps/{}/limits{q}", encode(&id)))?, |v| {
                limits(v, explain)
            })
        }
        Cmd::Usage { id, service, from, to, step } => {
            let q = query(&[
                ("service", service.as_deref()),
                ("from", from.as_deref()),
                ("to", to.as_deref()),
                ("step", step.as_deref()),
            ]);
            ctx.output(ctx.client.get(&format!("/v1/apps/{}/usage{q}", encode(&id)))?, usage)
        }
    }
}

/// One app as a key–value block.
pub fn app(v: &Value) -> String {
    kv(&[
        ("id", cell(&v["id"])),
        ("account_id", cell(&v["account_id"])),
        ("name", cell(&v["name"])),
        ("plan", cell(&v["plan"])),
        ("status", cell(&v["status"])),
        ("spending_cap", cell(&v["spending_cap"])),
        ("created_at", millis(&v["created_at"])),
        ("updated_at", millis(&v["updated_at"])),
    ])
}

/// A list of apps as a table.
pub fn table(apps: &Value) -> String {
    let mut t = Table::new(&["APP", "NAME", "PLAN", "STATUS", "SPENDING CAP", "CREATED"]);
    for a in apps.as_array().into_iter().flatten() {
        t.row(vec![
            cell(&a["id"]),
            cell(&a["name"]),
            cell(&a["plan"]),
            cell(&a["status"]),
            cell(&a["spending_cap"]),
            millis(&a["created_at"]),
        ]);
    }
    t.render()
}

/// `GET /v1/apps/{id}/limits` for people: a summary, the limits table (with the winning
/// layer when explained), then each limit's layers and what is scheduled.
pub fn limits(v: &Value, explain: bool) -> String {
    let mut pairs = vec![
        ("app", cell(&v["app_id"])),
        ("account", cell(&v["account_id"])),
        ("plan", cell(&v["plan"])),
        ("verification_level", cell(&v["verification_level"])),
        ("time_zone", cell(&v["time_zone"])),
        ("suspended", cell(&v["suspended"])),
    ];
    if !v["capped_until"].is_null() {
        pairs.push(("capped_until", cell(&v["capped_until"])));
    }
    if explain {
        pairs.push(("next_change", cell(&v["valid_until"])));
    }
    let mut out = kv(&pairs);
    out.push('\n');
    let mut header = vec!["SERVICE", "DIMENSION", "LIMIT", "USED", "REMAINING", "RESET", "UNIT"];
    if explain {
        header.push("WINNER");
    }
    let mut t = Table::new(&header);
    let mut layers = Table::new(&["SERVICE", "DIMENSION", "KIND", "SOURCE", "OP", "OPERAND", "RESULT"]);
    for l in v["limits"].as_array().into_iter().flatten() {
        let mut row = vec![
            cell(&l["service"]),
            cell(&l["dimension"]),
            cell(&l["limit"]),
            cell(&l["used"]),
            cell(&l["remaining"]),
            duration_ms(&l["reset_ms"]),
            cell(&l["unit"]),
        ];
        if explain {
            row.push(cell(&l["explain"]["winner"]));
            for step in l["explain"]["layers"].as_array().into_iter().flatten() {
                layers.row(vec![
                    cell(&l["service"]),
                    cell(&l["dimension"]),
                    cell(&step["kind"]),
                    cell(&step["source"]),
                    cell(&step["op"]),
                    limit_value(&step["operand"]),
                    limit_value(&step["result"]),
                ]);
            }
        }
        t.row(row);
    }
    out.push_str(&t.render());
    if explain {
        out.push_str("\nLayers, in the order applied:\n");
        out.push_str(&layers.render());
        let scheduled = v["scheduled"].as_array().filter(|a| !a.is_empty());
        if let Some(scheduled) = scheduled {
            out.push_str("\nScheduled (not in force now):\n");
            let mut t = Table::new(&["KIND", "SOURCE", "NEXT CHANGE"]);
            for s in scheduled {
                t.row(vec![cell(&s["kind"]), cell(&s["source"]), cell(&s["next_change"])]);
            }
            out.push_str(&t.render());
        }
    }
    out
}

/// `GET /v1/apps/{id}/usage` for people.
pub fn usage(v: &Value) -> String {
    let mut out = format!(
        "app {} from {} to {} by {} ({})\n",
        cell(&v["app_id"]),
        cell(&v["from"]),
        cell(&v["to"]),
        cell(&v["step"]),
        cell(&v["time_zone"])
    );
    let series = v["series"].as_array().filter(|a| !a.is_empty());
    let Some(series) = series else {
        out.push_str("no usage in this range\n");
        return out;
    };
    let mut t = Table::new(&["START", "SERVICE", "ALLOWED", "REFUSED", "UNITS"]);
    for b in series {
        let refused: Vec<String> = b["refused"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
            .map(|(k, n)| format!("{k}={}", cell(n)))
            .collect();
        t.row(vec![
            cell(&b["start"]),
            cell(&b["service"]),
            cell(&b["allowed"]),
            if refused.is_empty() { "0".into() } else { refused.join(" ") },
            cell(&b["units"]),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ClientCommand;
    use crate::cli::tests::parse;
    use serde_json::json;

    #[test]
    fn parses_limits_and_update() {
        let c = parse(&["apps", "limits", "demo", "--explain"]).unwrap();
        assert!(matches!(c, ClientCommand::Apps { cmd: Cmd::Limits { explain: true, .. }, .. }), "{c:?}");
        let c = parse(&["apps", "update", "app_1", "--plan", "payg", "--spending-cap", "none"]).unwrap();
        let ClientCommand::Apps { cmd: Cmd::Update { plan, spending_cap, .. }, .. } = c else { panic!() };
        assert_eq!((plan.as_deref(), spending_cap.as_deref()), (Some("payg"), Some("none")));
        assert!(parse(&["apps", "usage", "demo", "--step", "week"]).is_err());
        assert!(parse(&["apps", "create", "--name", "x"]).is_err(), "--account is required");
    }

    fn sample() -> Value {
        json!({
            "app_id": "demo", "account_id": "demo", "plan": "free", "verification_level": "individual",
            "time_zone": "UTC", "suspended": false,
            "limits": [
                {"service": "asr", "policy": "rate", "dimension": "rate", "limit": 10, "used": 1,
                 "remaining": 9, "reset_ms": 200, "window_s": 2, "unit": "requests",
                 "explain": {"winner": "plan:free", "layers": [
                    {"kind": "tier", "source": "tier:individual", "op": "set",
                     "operand": {"per_second": 20.0, "burst": 40}, "result": {"per_second": 20.0, "burst": 40}},
                    {"kind": "plan", "source": "plan:free", "op": "min",
                     "operand": {"per_second": 5.0, "burst": 10}, "result": {"per_second": 5.0, "burst": 10}}]}},
                {"service": "asr", "policy": "daily", "dimension": "daily", "limit": 1800.0, "used": 12.5,
                 "remaining": 1787.5, "reset_ms": 11_658_000, "window_s": 86400, "unit": "audio_second",
                 "explain": {"winner": "window:win_1", "layers": [
                    {"kind": "window", "source": "window:win_1", "op": "multiply",
                     "operand": {"factor": 2.0}, "result": 1800.0}]}}
            ],
            "scheduled": [{"kind": "contract", "source": "contract:ctr_1", "next_change": "2026-12-01T00:00:00Z"}],
            "valid_until": "2026-12-01T00:00:00Z"
        })
    }

    #[test]
    fn limits_table() {
        let text = limits(&sample(), false);
        assert!(text.starts_with("app                 demo\n"), "{text}");
        assert!(
            text.contains(
                "SERVICE  DIMENSION  LIMIT  USED  REMAINING  RESET  UNIT\n\
                 asr      rate       10     1     9          200ms  requests\n\
                 asr      daily      1800   12.5  1787.5     3h14m  audio_second\n"
            ),
            "{text}"
        );
        assert!(!text.contains("WINNER") && !text.contains("Layers"), "{text}");
    }

    #[test]
    fn limits_table_explained() {
        let text = limits(&sample(), true);
        assert!(
            text.contains(
                "SERVICE  DIMENSION  LIMIT  USED  REMAINING  RESET  UNIT          WINNER\n\
                 asr      rate       10     1     9          200ms  requests      plan:free\n\
                 asr      daily      1800   12.5  1787.5     3h14m  audio_second  window:win_1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "SERVICE  DIMENSION  KIND    SOURCE           OP        OPERAND        RESULT\n\
                 asr      rate       tier    tier:individual  set       20/s burst 40  20/s burst 40\n\
                 asr      rate       plan    plan:free        min       5/s burst 10   5/s burst 10\n\
                 asr      daily      window  window:win_1     multiply  ×2             1800\n"
            ),
            "{text}"
        );
        assert!(text.contains("contract  contract:ctr_1  2026-12-01T00:00:00Z"), "{text}");
        assert!(text.contains("next_change         2026-12-01T00:00:00Z"), "{text}");
    }

    #[test]
    fn usage_table() {
        let v = json!({"app_id": "demo", "step": "minute", "from": "2026-11-27T20:00:00Z",
            "to": "2026-11-27T20:47:40Z", "time_zone": "UTC", "series": [
            {"start": "2026-11-27T20:47:00Z", "service": "asr", "allowed": 14,
             "refused": {"rate": 3, "quota": 0, "concurrency": 1, "suspended": 0, "capacity": 0}, "units": 56.75}]});
        assert_eq!(
            usage(&v),
            "app demo from 2026-11-27T20:00:00Z to 2026-11-27T20:47:40Z by minute (UTC)\n\
             START                 SERVICE  ALLOWED  REFUSED               UNITS\n\
             2026-11-27T20:47:00Z  asr      14       concurrency=1 rate=3  56.75\n"
        );
    }
}
