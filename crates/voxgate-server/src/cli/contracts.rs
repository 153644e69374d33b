//! `voxgate contracts create|list|end`.

use super::client::{CliError, encode};
use super::table::{Table, cell, kv, millis};
use super::{Ctx, json_arg, object, s};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Give an account a contract (`POST /v1/accounts/{id}/contracts`): per-service limits
    /// that override tier and plan while the contract is valid.
    Create(CreateArgs),
    /// An account's contracts (`GET /v1/accounts/{id}/contracts`).
    List {
        /// The account id.
        #[arg(long)]
        account: String,
    },
    /// End a contract now, or at `--at` (`POST /v1/contracts/{id}/end`).
    End {
        /// The contract id.
        id: String,
        /// RFC 3339 instant; now when omitted.
        #[arg(long)]
        at: Option<String>,
        /// Recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The account the contract is for.
    #[arg(long)]
    pub account: String,
    /// Per-service limits as in the catalogue, as JSON or `@file` (`@-` for standard
    /// input), e.g. '{"asr": {"rate": {"per_second": 200, "burst": 400}, "monthly": 5000000}}'.
    #[arg(long)]
    pub limits: String,
    /// Priority class for capacity shedding.
    #[arg(long, value_parser = ["critical", "high", "standard", "low"])]
    pub priority_class: Option<String>,
    /// RFC 3339 instant; in force at once when omitted.
    #[arg(long)]
    pub valid_from: Option<String>,
    /// RFC 3339 instant; open-ended when omitted.
    #[arg(long)]
    pub valid_until: Option<String>,
    /// SLA availability target in percent, e.g. 99.95.
    #[arg(long)]
    pub availability_target: Option<f64>,
    /// SLA support level, e.g. 24x7.
    #[arg(long)]
    pub support_level: Option<String>,
    /// SLA account manager contact.
    #[arg(long)]
    pub account_manager: Option<String>,
    /// Recorded in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

/// The request body of `contracts create`: the arguments, with `--limits` already read.
pub fn create_body(a: &CreateArgs, limits: Value) -> Value {
    let sla = (a.availability_target.is_some() || a.support_level.is_some() || a.account_manager.is_some())
        .then(|| {
            object(vec![
                ("availability_target", a.availability_target.map(|t| json!(t))),
                ("support_level", s(&a.support_level)),
                ("account_manager", s(&a.account_manager)),
            ])
        });
    object(vec![
        ("limits", Some(limits)),
        ("priority_class", s(&a.priority_class)),
        ("sla", sla),
        ("valid_from", s(&a.valid_from)),
        ("valid_until", s(&a.valid_until)),
        ("reason", s(&a.reason)),
    ])
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<String, CliError> {
    match cmd {
        Cmd::Create(a) => {
            let limits = json_arg("--limits", &a.limits)?;
            let body = create_body(&a, limits);
            let path = format!("/v1/accounts/{}/contracts", encode(&a.account));
            ctx.output(ctx.client.post(&path, &body)?, contract)
        }
        Cmd::List { account } => {
            let path = format!("/v1/accounts/{}/contracts", encode(&account));
            ctx.output(ctx.client.get(&path)?, list)
        }
        Cmd::End { id, at, reason } => {
            let body = object(vec![("at", s(&at)), ("reason", s(&reason))]);
            ctx.output(ctx.client.post(&format!("/v1/contracts/{}/end", encode(&id)), &body)?, contract)
        }
    }
}

fn services(body: &Value) -> String {
    let names: Vec<&str> =
        body["limits"].as_object().into_iter().flatten().map(|(k, _)| k.as_str()).collect();
    if names.is_empty() { "-".into() } else { names.join(",") }
}

fn sla(body: &Value) -> String {
    let s = &body["sla"];
    let mut parts = Vec::new();
    if !s["availability_target"].is_null() {
        parts.push(format!("{}%", cell(&s["availability_target"])));
    }
    for k in ["support_level", "account_manager"] {
        if let Some(v) = s[k].as_str() {
            parts.push(v.to_string());
        }
    }
    if parts.is_empty() { "-".into() } else { parts.join(" ") }
}

/// One contract record as a key–value block.
pub fn contract(v: &Value) -> String {
    let body = &v["body"];
    kv(&[
        ("id", cell(&v["id"])),
        ("account_id", cell(&v["owner_id"])),
        ("priority_class", cell(&body["priority_class"])),
        ("valid_from", millis(&v["valid_from"])),
        ("valid_until", millis(&v["valid_until"])),
        ("sla", sla(body)),
        ("limits", cell(&body["limits"])),
        ("created_at", millis(&v["created_at"])),
    ])
}

/// `{"contracts": [...]}` as a table.
pub fn list(v: &Value) -> String {
    let mut t = Table::new(&["ID", "PRIORITY", "VALID FROM", "VALID UNTIL", "SERVICES", "SLA", "CREATED"]);
    for c in v["contracts"].as_array().into_iter().flatten() {
        let body = &c["body"];
        t.row(vec![
            cell(&c["id"]),
            cell(&body["priority_class"]),
            millis(&c["valid_from"]),
            millis(&c["valid_until"]),
            services(body),
            sla(body),
            millis(&c["created_at"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ClientCommand;
    use crate::cli::tests::parse;

    fn create(args: &[&str]) -> CreateArgs {
        let mut all = vec!["contracts", "create", "--account", "acc_1", "--limits", "{}"];
        all.extend(args);
        match parse(&all) {
            Ok(ClientCommand::Contracts { cmd: Cmd::Create(a), .. }) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_create() {
        let a = create(&["--priority-class", "high", "--availability-target", "99.95"]);
        assert_eq!((a.priority_class.as_deref(), a.availability_target), (Some("high"), Some(99.95)));
        assert!(
            parse(&["contracts", "create", "--account", "a", "--limits", "{}", "--priority-class", "vip"])
                .is_err()
        );
        assert!(parse(&["contracts", "create", "--account", "a"]).is_err(), "--limits is required");
    }

    #[test]
    fn builds_the_body() {
        let limits = json!({"asr": {"monthly": 5000000}});
        let a = create(&["--support-level", "24x7", "--reason", "deal"]);
        assert_eq!(
            create_body(&a, limits.clone()),
            json!({"limits": limits, "sla": {"support_level": "24x7"}, "reason": "deal"})
        );
        let a = create(&["--priority-class", "low", "--valid-from", "t"]);
        assert_eq!(
            create_body(&a, json!({})),
            json!({"limits": {}, "priority_class": "low", "valid_from": "t"})
        );
    }

    #[test]
    fn renders_the_list() {
        let v = json!({"contracts": [{"id": "ctr_1", "owner_id": "acc_1", "created_at": 1795812454099_i64,
            "valid_from": null, "valid_until": 1798761600000_i64,
            "body": {"limits": {"asr": {}, "tts": {}}, "priority_class": "high",
                     "sla": {"availability_target": 99.95, "support_level": "24x7"}}}]});
        assert_eq!(
            list(&v),
            "ID     PRIORITY  VALID FROM  VALID UNTIL           SERVICES  SLA          CREATED\n\
             ctr_1  high      -           2027-01-01T00:00:00Z  asr,tts   99.95% 24x7  2026-11-27T20:47:34Z\n"
        );
    }
}
