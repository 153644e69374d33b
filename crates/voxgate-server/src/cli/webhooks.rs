//! `voxgate webhooks create|list|delete` and `voxgate alerts list`: where an account's alerts
//! (quota thresholds, increase-request status changes) are sent, and what was sent.

use super::client::{CliError, encode};
use super::increases::expiry;
use super::table::{Table, cell, kv, millis};
use super::{Ctx, object, s};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Add a webhook endpoint to an account (`POST /v1/accounts/{id}/webhooks`). The admin
    /// token or a key of one of the account's apps may add one.
    Create {
        /// The account whose alerts are sent there.
        #[arg(long)]
        account: String,
        /// The `http://` or `https://` URL that receives the alerts.
        #[arg(long)]
        url: String,
        /// The HMAC key the deliveries are signed with (at least 16 characters); generated
        /// when omitted. Either way it is printed this once.
        #[arg(long)]
        secret: Option<String>,
    },
    /// An account's webhook endpoints (`GET /v1/accounts/{id}/webhooks`). Secrets are not
    /// listed.
    List {
        /// The account id.
        #[arg(long)]
        account: String,
    },
    /// Remove a webhook endpoint (`DELETE /v1/webhooks/{id}`); alerts queued for it are not
    /// delivered.
    Delete {
        /// The webhook id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// An account's latest alerts, newest first, and their delivery state
    /// (`GET /v1/accounts/{id}/alerts`).
    List {
        /// The account id.
        #[arg(long)]
        account: String,
    },
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<String, CliError> {
    match cmd {
        Cmd::Create { account, url, secret } => {
            let body = object(vec![("url", Some(json!(url))), ("secret", s(&secret))]);
            let path = format!("/v1/accounts/{}/webhooks", encode(&account));
            ctx.output(ctx.client.post(&path, &body)?, created)
        }
        Cmd::List { account } => {
            ctx.output(ctx.client.get(&format!("/v1/accounts/{}/webhooks", encode(&account)))?, list)
        }
        Cmd::Delete { id } => {
            let reply = ctx.client.delete(&format!("/v1/webhooks/{}", encode(&id)), &json!({}))?;
            ctx.output(reply, |_| format!("webhook {id} deleted\n"))
        }
    }
}

pub fn run_alerts(ctx: &Ctx, cmd: AlertsCmd) -> Result<String, CliError> {
    match cmd {
        AlertsCmd::List { account } => {
            ctx.output(ctx.client.get(&format!("/v1/accounts/{}/alerts", encode(&account)))?, alerts)
        }
    }
}

/// One webhook as a key–value block.
pub fn webhook(v: &Value) -> String {
    kv(&[
        ("id", cell(&v["id"])),
        ("account_id", cell(&v["account_id"])),
        ("url", cell(&v["url"])),
        ("created_at", millis(&v["created_at"])),
    ])
}

/// The answer to `create`: the webhook, and its secret, which is not shown again.
pub fn created(v: &Value) -> String {
    let mut out = webhook(v);
    out.push_str(&kv(&[("secret", format!("{}  (shown once: keep it now)", cell(&v["secret"])))]));
    out
}

/// `{"webhooks": [...]}` as a table.
pub fn list(v: &Value) -> String {
    let mut t = Table::new(&["ID", "URL", "CREATED"]);
    for w in v["webhooks"].as_array().into_iter().flatten() {
        t.row(vec![cell(&w["id"]), cell(&w["url"]), millis(&w["created_at"])]);
    }
    t.render()
}

/// What an alert is about, in a few words: `inc_… approved`, `app_… tts daily 80%`.
pub fn summary(alert: &Value) -> String {
    let p = &alert["payload"];
    match alert["event_type"].as_str() {
        Some("increase_request.status_changed") => {
            format!("{} {}", cell(&p["increase_request_id"]), cell(&p["status"]))
        }
        Some("quota.threshold") => format!(
            "{} {} {} {}%",
            cell(&p["app_id"]),
            cell(&p["service"]),
            cell(&p["dimension"]),
            cell(&p["threshold_percent"])
        ),
        _ => "-".into(),
    }
}

/// `{"alerts": [...]}` as a table: delivered alerts show when; the others their next attempt
/// and the last error.
pub fn alerts(v: &Value) -> String {
    let mut t = Table::new(&[
        "ID",
        "EVENT",
        "SUMMARY",
        "WEBHOOK",
        "CREATED",
        "ATTEMPTS",
        "DELIVERED",
        "NEXT ATTEMPT",
        "LAST ERROR",
    ]);
    for a in v["alerts"].as_array().into_iter().flatten() {
        let delivered = !a["delivered_at"].is_null();
        t.row(vec![
            cell(&a["id"]),
            cell(&a["event_type"]),
            summary(a),
            cell(&a["webhook_id"]),
            millis(&a["created_at"]),
            cell(&a["attempts"]),
            millis(&a["delivered_at"]),
            if delivered { "-".into() } else { expiry(&a["next_attempt_at"]) },
            cell(&a["last_error"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ClientCommand;
    use crate::cli::tests::parse;

    #[test]
    fn arguments() {
        let c = parse(&["webhooks", "create", "--account", "acc_1", "--url", "http://h/x"]).unwrap();
        assert!(
            matches!(c, ClientCommand::Webhooks { cmd: Cmd::Create { ref secret, .. }, .. } if secret.is_none()),
            "{c:?}"
        );
        assert!(parse(&["webhooks", "create", "--account", "acc_1"]).is_err(), "--url is required");
        assert!(parse(&["webhooks", "list"]).is_err(), "--account is required");
        assert!(matches!(
            parse(&["webhooks", "delete", "whk_1", "--json"]).unwrap(),
            ClientCommand::Webhooks { cmd: Cmd::Delete { .. }, .. }
        ));
        let c = parse(&["alerts", "list", "--account", "acc_1"]).unwrap();
        assert!(matches!(c, ClientCommand::Alerts { cmd: AlertsCmd::List { .. }, .. }), "{c:?}");
    }

    #[test]
    fn the_secret_is_shown_once() {
        let v = json!({"id": "whk_1", "account_id": "acc_1", "url": "https://h/x",
            "created_at": 1_795_812_454_099_i64, "secret": "whs_abc"});
        assert_eq!(
            created(&v),
            "id          whk_1\naccount_id  acc_1\nurl         https://h/x\ncreated_at  2026-11-27T20:47:34Z\n\
             secret  whs_abc  (shown once: keep it now)\n"
        );
    }

    #[test]
    fn alerts_summarise_their_payload() {
        let v = json!({"alerts": [
            {"id": "alt_2", "dedupe_key": "k2", "webhook_id": "whk_1", "event_type": "quota.threshold",
             "payload": {"app_id": "app_1", "service": "tts", "dimension": "daily", "threshold_percent": 80},
             "created_at": 1_795_812_454_099_i64, "attempts": 0, "next_attempt_at": 1_795_812_454_099_i64,
             "delivered_at": null, "last_error": null},
            {"id": "alt_1", "dedupe_key": "k1", "webhook_id": "whk_1",
             "event_type": "increase_request.status_changed",
             "payload": {"increase_request_id": "inc_1", "status": "approved"},
             "created_at": 1_795_812_454_099_i64, "attempts": 2, "next_attempt_at": 1_795_812_454_099_i64,
             "delivered_at": 1_795_812_454_099_i64, "last_error": null},
        ]});
        let text = alerts(&v);
        let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows[0],
            [
                "alt_2",
                "quota.threshold",
                "app_1",
                "tts",
                "daily",
                "80%",
                "whk_1",
                "2026-11-27T20:47:34Z",
                "0",
                "-",
                "2026-11-27T20:47:34Z",
                "-"
            ]
        );
        assert_eq!(
            rows[1],
            [
                "alt_1",
                "increase_request.status_changed",
                "inc_1",
                "approved",
                "whk_1",
                "2026-11-27T20:47:34Z",
                "2",
                "2026-11-27T20:47:34Z",
                "-",
                "-"
            ]
        );
        assert_eq!(summary(&json!({"event_type": "other"})), "-");
    }
}
