//! `voxgate accounts create|list|show|update`.

use super::client::{CliError, encode};
use super::table::{Table, cell, kv, millis};
use super::{Ctx, object, s};
use clap::Subcommand;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create an account (`POST /v1/accounts`).
    Create {
        /// The account's name (1 to 200 characters).
        #[arg(long)]
        name: String,
        /// A tier of the catalogue; the catalogue's default tier when omitted.
        #[arg(long)]
        verification_level: Option<String>,
        /// IANA time zone for daily and monthly quotas; the catalogue's default when omitted.
        #[arg(long)]
        time_zone: Option<String>,
    },
    /// List every account (`GET /v1/accounts`).
    List,
    /// One account and its apps (`GET /v1/accounts/{id}`).
    Show {
        /// The account id.
        id: String,
    },
    /// Change an account's time zone or status (`PATCH /v1/accounts/{id}`). Suspending an
    /// account stops all its apps.
    Update {
        /// The account id.
        id: String,
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long, value_parser = ["active", "suspended"])]
        status: Option<String>,
        /// Recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<String, CliError> {
    match cmd {
        Cmd::Create { name, verification_level, time_zone } => {
            let body = object(vec![
                ("name", Some(Value::String(name))),
                ("verification_level", s(&verification_level)),
                ("time_zone", s(&time_zone)),
            ]);
            ctx.output(ctx.client.post("/v1/accounts", &body)?, account)
        }
        Cmd::List => ctx.output(ctx.client.get("/v1/accounts")?, list),
        Cmd::Show { id } => ctx.output(ctx.client.get(&format!("/v1/accounts/{}", encode(&id)))?, |v| {
            let mut out = account(v);
            out.push('\n');
            out.push_str(&super::apps::table(&v["apps"]));
            out
        }),
        Cmd::Update { id, time_zone, status, reason } => {
            if time_zone.is_none() && status.is_none() {
                return Err(CliError::Other("nothing to change: give --time-zone or --status".into()));
            }
            let body =
                object(vec![("time_zone", s(&time_zone)), ("status", s(&status)), ("reason", s(&reason))]);
            ctx.output(ctx.client.patch(&format!("/v1/accounts/{}", encode(&id)), &body)?, account)
        }
    }
}

/// One account as a key–value block.
pub fn account(v: &Value) -> String {
    kv(&[
        ("id", cell(&v["id"])),
        ("name", cell(&v["name"])),
        ("verification_level", cell(&v["verification_level"])),
        ("sector", cell(&v["sector"])),
        ("time_zone", cell(&v["time_zone"])),
        ("status", cell(&v["status"])),
        ("free_allowance", cell(&v["free_allowance"])),
        ("created_at", millis(&v["created_at"])),
        ("updated_at", millis(&v["updated_at"])),
    ])
}

/// `{"accounts": [...]}` as a table.
pub fn list(v: &Value) -> String {
    let mut t = Table::new(&["ID", "NAME", "LEVEL", "SECTOR", "TIME ZONE", "STATUS", "CREATED"]);
    for a in v["accounts"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&a["id"]),
            cell(&a["name"]),
            cell(&a["verification_level"]),
            cell(&a["sector"]),
            cell(&a["time_zone"]),
            cell(&a["status"]),
            millis(&a["created_at"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ClientCommand;
    use crate::cli::tests::parse;
    use serde_json::json;

    #[test]
    fn parses_update() {
        let c =
            parse(&["accounts", "update", "acc_1", "--status", "suspended", "--reason", "fraud"]).unwrap();
        let ClientCommand::Accounts { cmd: Cmd::Update { id, status, reason, time_zone }, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            (id.as_str(), status.as_deref(), reason.as_deref(), time_zone),
            ("acc_1", Some("suspended"), Some("fraud"), None)
        );
        let e = parse(&["accounts", "update", "acc_1", "--status", "gone"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(parse(&["accounts", "create"]).is_err(), "--name is required");
    }

    #[test]
    fn renders_the_list() {
        let v = json!({"accounts": [
            {"created_at": 1795812426541_i64, "id": "demo", "name": "Demo developer", "sector": null,
             "status": "active", "time_zone": "UTC", "verification_level": "individual"},
            {"created_at": 1795812454099_i64, "id": "acc_97d787c1003da260", "name": "Acme Speech Ltd",
             "sector": "education", "status": "active", "time_zone": "Asia/Shanghai",
             "verification_level": "industry"}
        ]});
        assert_eq!(
            list(&v),
            "ID                    NAME             LEVEL       SECTOR     TIME ZONE      STATUS  CREATED\n\
             demo                  Demo developer   individual  -          UTC            active  2026-11-27T20:47:06Z\n\
             acc_97d787c1003da260  Acme Speech Ltd  industry    education  Asia/Shanghai  active  2026-11-27T20:47:34Z\n"
        );
    }
}
