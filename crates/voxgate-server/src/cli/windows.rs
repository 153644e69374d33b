//! `voxgate windows create|list|delete`.

use super::client::{CliError, encode};
use super::table::{Table, cell, kv, limit_value, millis};
use super::{Ctx, json_arg, object, s};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Schedule a capacity window for an app (`POST /v1/apps/{id}/windows`): one dimension
    /// of one service multiplied or set, every week on some days and hours, or once.
    Create(Box<CreateArgs>),
    /// An app's windows (`GET /v1/apps/{id}/windows`).
    List {
        /// The app id.
        #[arg(long)]
        app: String,
    },
    /// Delete a window (`DELETE /v1/windows/{id}`).
    Delete {
        /// The window id.
        id: String,
        /// Recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).args(["multiply", "value"])))]
#[command(group(ArgGroup::new("schedule").required(true).args(["recurring_start", "once_start"])))]
pub struct CreateArgs {
    /// The app the window is for.
    #[arg(long)]
    pub app: String,
    /// A service of the catalogue.
    #[arg(long)]
    pub service: String,
    /// The dimension to change.
    #[arg(long, value_parser = ["rate", "concurrency", "per_minute", "daily", "monthly"])]
    pub dimension: String,
    /// Scale the dimension by this factor while the window is open (0 to 1000).
    #[arg(long)]
    pub multiply: Option<f64>,
    /// Or set it to this value (JSON or `@file`): `{"per_second": 50, "burst": 100}` for
    /// rate, `{"max": 20}` for concurrency, a number for quotas.
    #[arg(long)]
    pub value: Option<String>,
    /// Weekly: local start time, HH:MM.
    #[arg(long, requires = "recurring_end")]
    pub recurring_start: Option<String>,
    /// Weekly: local end time, HH:MM; at or before the start means the next day.
    #[arg(long, requires = "recurring_start")]
    pub recurring_end: Option<String>,
    /// Weekly: the days it opens, e.g. mon,tue,fri; every day when omitted.
    #[arg(long, value_delimiter = ',', requires = "recurring_start")]
    pub days: Vec<String>,
    /// Weekly: the IANA time zone of the hours; the account's zone when omitted.
    #[arg(long, requires = "recurring_start")]
    pub time_zone: Option<String>,
    /// Once: RFC 3339 start.
    #[arg(long, requires = "once_end")]
    pub once_start: Option<String>,
    /// Once: RFC 3339 end.
    #[arg(long, requires = "once_start")]
    pub once_end: Option<String>,
    /// Recorded in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

/// The request body of `windows create`: the arguments, with `--value` already read.
pub fn create_body(a: &CreateArgs, value: Option<Value>) -> Value {
    let recurring = a.recurring_start.as_ref().map(|start| {
        object(vec![
            ("days", (!a.days.is_empty()).then(|| json!(a.days))),
            ("start", Some(json!(start))),
            ("end", s(&a.recurring_end)),
            ("time_zone", s(&a.time_zone)),
        ])
    });
    let once = a
        .once_start
        .as_ref()
        .map(|start| object(vec![("start", Some(json!(start))), ("end", s(&a.once_end))]));
    object(vec![
        ("service", Some(json!(a.service))),
        ("dimension", Some(json!(a.dimension))),
        ("multiply", a.multiply.map(|f| json!(f))),
        ("value", value),
        ("recurring", recurring),
        ("once", once),
        ("reason", s(&a.reason)),
    ])
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<String, CliError> {
    match cmd {
        Cmd::Create(a) => {
            let value = a.value.as_deref().map(|v| json_arg("--value", v)).transpose()?;
            let body = create_body(&a, value);
            let path = format!("/v1/apps/{}/windows", encode(&a.app));
            ctx.output(ctx.client.post(&path, &body)?, window)
        }
        Cmd::List { app } => ctx.output(ctx.client.get(&format!("/v1/apps/{}/windows", encode(&app)))?, list),
        Cmd::Delete { id, reason } => {
            let body = object(vec![("reason", s(&reason))]);
            let reply = ctx.client.delete(&format!("/v1/windows/{}", encode(&id)), &body)?;
            ctx.output(reply, |_| format!("window {id} deleted\n"))
        }
    }
}

fn change(body: &Value) -> String {
    if !body["multiply"].is_null() {
        return format!("×{}", cell(&body["multiply"]));
    }
    format!("= {}", limit_value(&body["value"]))
}

fn schedule(body: &Value) -> String {
    let r = &body["recurring"];
    if r.is_object() {
        let days =
            if r["days"].as_array().is_none_or(|d| d.is_empty()) { "daily".into() } else { cell(&r["days"]) };
        let zone = r["time_zone"].as_str().unwrap_or("account zone");
        return format!("{days} {}-{} {zone}", cell(&r["start"]), cell(&r["end"]));
    }
    let o = &body["once"];
    format!("{} to {}", cell(&o["start"]), cell(&o["end"]))
}

/// One window record as a key–value block.
pub fn window(v: &Value) -> String {
    let body = &v["body"];
    kv(&[
        ("id", cell(&v["id"])),
        ("app_id", cell(&v["owner_id"])),
        ("service", cell(&body["service"])),
        ("dimension", cell(&body["dimension"])),
        ("change", change(body)),
        ("schedule", schedule(body)),
        ("created_at", millis(&v["created_at"])),
    ])
}

/// `{"windows": [...]}` as a table.
pub fn list(v: &Value) -> String {
    let mut t = Table::new(&["ID", "SERVICE", "DIMENSION", "CHANGE", "SCHEDULE", "CREATED"]);
    for w in v["windows"].as_array().into_iter().flatten() {
        let body = &w["body"];
        t.row(vec![
            cell(&w["id"]),
            cell(&body["service"]),
            cell(&body["dimension"]),
            change(body),
            schedule(body),
            millis(&w["created_at"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ClientCommand;
    use crate::cli::tests::parse;
    use clap::error::ErrorKind;

    const BASE: [&str; 8] =
        ["windows", "create", "--app", "app_1", "--service", "asr", "--dimension", "concurrency"];

    fn create(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        let mut all = BASE.to_vec();
        all.extend(args);
        match parse(&all)? {
            ClientCommand::Windows { cmd: Cmd::Create(a), .. } => Ok(*a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_weekly_multiplier() {
        let a = create(&[
            "--multiply",
            "2",
            "--recurring-start",
            "19:00",
            "--recurring-end",
            "23:00",
            "--days",
            "mon,tue",
            "--time-zone",
            "Asia/Shanghai",
            "--reason",
            "evening classes",
        ])
        .unwrap();
        assert_eq!(
            create_body(&a, None),
            json!({"service": "asr", "dimension": "concurrency", "multiply": 2.0,
                   "recurring": {"days": ["mon", "tue"], "start": "19:00", "end": "23:00",
                                 "time_zone": "Asia/Shanghai"},
                   "reason": "evening classes"})
        );
    }

    #[test]
    fn a_one_off_value() {
        let a = create(&[
            "--value",
            r#"{"max": 20}"#,
            "--once-start",
            "2026-12-14T00:00:00Z",
            "--once-end",
            "2026-12-21T00:00:00Z",
        ])
        .unwrap();
        let value = json_arg("--value", a.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            create_body(&a, Some(value)),
            json!({"service": "asr", "dimension": "concurrency", "value": {"max": 20},
                   "once": {"start": "2026-12-14T00:00:00Z", "end": "2026-12-21T00:00:00Z"}})
        );
    }

    #[test]
    fn exactly_one_change_and_one_schedule() {
        let kind = |args: &[&str]| create(args).map(|_| ()).unwrap_err().kind();
        let weekly = ["--recurring-start", "19:00", "--recurring-end", "23:00"];
        assert_eq!(kind(&weekly), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--multiply", "2"]), ErrorKind::MissingRequiredArgument);
        let mut both = vec!["--multiply", "2", "--value", "3"];
        both.extend(weekly);
        assert_eq!(kind(&both), ErrorKind::ArgumentConflict);
        let mut both = vec!["--multiply", "2", "--once-start", "a", "--once-end", "b"];
        both.extend(weekly);
        assert_eq!(kind(&both), ErrorKind::ArgumentConflict);
        assert_eq!(
            kind(&["--multiply", "2", "--recurring-start", "19:00"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["--multiply", "2", "--once-start", "a", "--once-end", "b", "--days", "mon"]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn renders_the_list() {
        let v = json!({"windows": [
            {"id": "win_1", "owner_id": "app_1", "created_at": 1795812454099_i64,
             "body": {"service": "asr", "dimension": "concurrency", "multiply": 2.0,
                      "recurring": {"start": "19:00", "end": "23:00", "time_zone": "Asia/Shanghai"}}},
            {"id": "win_2", "owner_id": "app_1", "created_at": 1795812454099_i64,
             "body": {"service": "tts", "dimension": "rate", "value": {"per_second": 50, "burst": 100},
                      "once": {"start": "2026-12-14T00:00:00Z", "end": "2026-12-21T00:00:00Z"}}}]});
        assert_eq!(
            list(&v),
            "ID     SERVICE  DIMENSION    CHANGE            SCHEDULE                                      CREATED\n\
             win_1  asr      concurrency  ×2                daily 19:00-23:00 Asia/Shanghai               2026-11-27T20:47:34Z\n\
             win_2  tts      rate         = 50/s burst 100  2026-12-14T00:00:00Z to 2026-12-21T00:00:00Z  2026-11-27T20:47:34Z\n"
        );
    }
}
