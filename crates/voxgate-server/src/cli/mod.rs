//! The client subcommands (`voxgate accounts|apps|verification|contracts|windows|increases|
//! webhooks|alerts|statement|audit`) talk to a running voxgate server over plain HTTP and
//! print what it answers, as aligned tables by default or, with `--json`, as the server's
//! JSON (re-indented, keys in the server's order).
//!
//! Errors end the process with status 1 and one `error: <code>: <detail>` line on standard
//! error (argument errors are clap's, with status 2).

pub mod accounts;
pub mod apps;
pub mod audit;
pub mod client;
pub mod contracts;
pub mod increases;
pub mod statement;
pub mod table;
pub mod verification;
pub mod webhooks;
pub mod windows;

use clap::{Args, Subcommand};
use client::{CliError, Client, Reply};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How to reach the server. Every option may come before or after the verb.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection options")]
pub struct Connection {
    /// The server's base URL. Plain HTTP only: the client has no TLS, so run it on the
    /// server's host or over a trusted network. Proxy variables are ignored.
    #[arg(long, global = true, env = "VOXGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token: the admin token, or an app's API key for what an app may read. When
    /// unset, the admin token is read from `<data-dir>/admin-token` if that file exists.
    #[arg(long, global = true, env = "VOXGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's data directory, where its generated admin token is kept.
    #[arg(long, global = true, env = "VOXGATE_DATA_DIR", default_value = "voxgate-data")]
    pub data_dir: PathBuf,
    /// Print the server's JSON (pretty) instead of a table, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Connection {
    /// `--token`, else the contents of `<data-dir>/admin-token`, else none.
    pub fn resolve_token(&self) -> Option<String> {
        if let Some(t) = self.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            return Some(t.to_string());
        }
        token_file(&self.data_dir)
    }
}

fn token_file(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("admin-token")).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The client subcommands, flattened into the binary's `Command`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Accounts on a running server: create, list, show, update.
    Accounts {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: accounts::Cmd,
    },
    /// Apps on a running server: create, show, update (plan, status, spending cap), limits,
    /// usage.
    Apps {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: apps::Cmd,
    },
    /// Verification requests: submit, list, the review queue, show, approve, reject.
    Verification {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: verification::Cmd,
    },
    /// Contracts of an account: create, list, end.
    Contracts {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: contracts::Cmd,
    },
    /// Scheduled capacity windows of an app: create, list, delete.
    Windows {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: windows::Cmd,
    },
    /// Limit-increase requests: submit, list, show, withdraw; the review queue, approve (in
    /// full or in part), deny, renew.
    Increases {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: increases::Cmd,
    },
    /// Webhook endpoints of an account, where its alerts are sent: create, list, delete.
    Webhooks {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: webhooks::Cmd,
    },
    /// The alerts queued for an account's webhooks, and their delivery state.
    Alerts {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: webhooks::AlertsCmd,
    },
    /// An account's statement for a month: usage, included units, overage and amounts.
    Statement {
        #[command(flatten)]
        conn: Connection,
        #[command(flatten)]
        args: statement::Args,
    },
    /// The audit log, or one subject's entries.
    Audit {
        #[command(flatten)]
        conn: Connection,
        #[command(flatten)]
        args: audit::Args,
    },
}

/// What a subcommand has to work with: the client and the output mode.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

impl Ctx {
    /// The reply as the server's JSON (with `--json`) or rendered for people.
    pub fn output(&self, reply: Reply, render: impl FnOnce(&Value) -> String) -> Result<String, CliError> {
        if self.json {
            if reply.body.trim().is_empty() {
                return Ok(String::new());
            }
            let mut text = table::pretty_json(&reply.body);
            text.push('\n');
            return Ok(text);
        }
        Ok(render(&reply.json()?))
    }
}

/// Runs one client subcommand: prints its output, or the error, and says how to exit.
pub fn run(command: ClientCommand) -> ExitCode {
    match dispatch(command) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: ClientCommand) -> Result<String, CliError> {
    let conn = match &command {
        ClientCommand::Accounts { conn, .. }
        | ClientCommand::Apps { conn, .. }
        | ClientCommand::Verification { conn, .. }
        | ClientCommand::Contracts { conn, .. }
        | ClientCommand::Windows { conn, .. }
        | ClientCommand::Increases { conn, .. }
        | ClientCommand::Webhooks { conn, .. }
        | ClientCommand::Alerts { conn, .. }
        | ClientCommand::Statement { conn, .. }
        | ClientCommand::Audit { conn, .. } => conn,
    };
    let ctx = Ctx { client: Client::new(&conn.server, conn.resolve_token())?, json: conn.json };
    match command {
        ClientCommand::Accounts { cmd, .. } => accounts::run(&ctx, cmd),
        ClientCommand::Apps { cmd, .. } => apps::run(&ctx, cmd),
        ClientCommand::Verification { cmd, .. } => verification::run(&ctx, cmd),
        ClientCommand::Contracts { cmd, .. } => contracts::run(&ctx, cmd),
        ClientCommand::Windows { cmd, .. } => windows::run(&ctx, cmd),
        ClientCommand::Increases { cmd, .. } => increases::run(&ctx, cmd),
        ClientCommand::Webhooks { cmd, .. } => webhooks::run(&ctx, cmd),
        ClientCommand::Alerts { cmd, .. } => webhooks::run_alerts(&ctx, cmd),
        ClientCommand::Statement { args, .. } => statement::run(&ctx, args),
        ClientCommand::Audit { args, .. } => audit::run(&ctx, args),
    }
}

/// A JSON argument given inline or as `@file` (`@-` reads standard input).
pub fn json_arg(flag: &str, value: &str) -> Result<Value, CliError> {
    let text = match value.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| CliError::Other(format!("{flag}: cannot read standard input: {e}")))?;
            s
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Other(format!("{flag}: cannot read {path}: {e}")))?,
        None => value.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| CliError::Other(format!("{flag} is not valid JSON: {e}")))
}

/// A JSON object of the given fields, leaving out those that are `None`.
pub fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect())
}

/// A string field for [`object`].
pub fn s(v: &Option<String>) -> Option<Value> {
    v.as_ref().map(|v| Value::String(v.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Command};
    use clap::Parser;

    pub fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("voxgate").chain(args.iter().copied()))?;
        match cli.command {
            Command::Client(c) => Ok(*c),
            other => panic!("not a client command: {other:?}"),
        }
    }

    fn conn_of(c: &ClientCommand) -> &Connection {
        match c {
            ClientCommand::Accounts { conn, .. }
            | ClientCommand::Apps { conn, .. }
            | ClientCommand::Verification { conn, .. }
            | ClientCommand::Contracts { conn, .. }
            | ClientCommand::Windows { conn, .. }
            | ClientCommand::Increases { conn, .. }
            | ClientCommand::Webhooks { conn, .. }
            | ClientCommand::Alerts { conn, .. }
            | ClientCommand::Statement { conn, .. }
            | ClientCommand::Audit { conn, .. } => conn,
        }
    }

    #[test]
    fn global_options_go_before_or_after_the_verb() {
        let c = parse(&["accounts", "--json", "--server", "http://h:1", "list"]).unwrap();
        assert!(conn_of(&c).json);
        assert_eq!(conn_of(&c).server, "http://h:1");
        let c = parse(&["accounts", "list", "--json", "--token", "t0ken"]).unwrap();
        assert!(conn_of(&c).json);
        assert_eq!(conn_of(&c).token.as_deref(), Some("t0ken"));
        assert!(matches!(c, ClientCommand::Accounts { cmd: accounts::Cmd::List, .. }));
    }

    #[test]
    fn the_token_falls_back_to_the_data_dir_file() {
        let dir = tempfile::tempdir().unwrap();
        let conn = |token: Option<&str>| Connection {
            server: "http://h".into(),
            token: token.map(str::to_string),
            data_dir: dir.path().to_owned(),
            json: false,
        };
        assert_eq!(conn(None).resolve_token(), None);
        std::fs::write(dir.path().join("admin-token"), "vga_abc\n").unwrap();
        assert_eq!(conn(None).resolve_token().as_deref(), Some("vga_abc"));
        assert_eq!(conn(Some("given")).resolve_token().as_deref(), Some("given"));
        assert_eq!(conn(Some("  ")).resolve_token().as_deref(), Some("vga_abc"));
    }

    #[test]
    fn json_arguments_inline_or_from_a_file() {
        assert_eq!(json_arg("--limits", r#"{"a":1}"#).unwrap(), serde_json::json!({"a": 1}));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.json");
        std::fs::write(&path, "[1, 2]").unwrap();
        assert_eq!(json_arg("--limits", &format!("@{}", path.display())).unwrap(), serde_json::json!([1, 2]));
        let e = json_arg("--limits", "{nope").unwrap_err().to_string();
        assert!(e.starts_with("--limits is not valid JSON"), "{e}");
        let e = json_arg("--limits", "@/no/such/file").unwrap_err().to_string();
        assert!(e.starts_with("--limits: cannot read /no/such/file"), "{e}");
    }

    #[test]
    fn object_leaves_out_absent_fields() {
        let v = object(vec![("a", s(&Some("x".into()))), ("b", None), ("c", Some(Value::Null))]);
        assert_eq!(v, serde_json::json!({"a": "x", "c": null}));
    }
}
