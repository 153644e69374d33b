//! `voxgate verification submit|list|queue|show|approve|reject`.

use super::client::{CliError, encode, query};
use super::table::{Table, cell, kv, millis};
use super::{Ctx, object, s};
use clap::{ArgGroup, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Ask for a verification level for an account (`POST /v1/accounts/{id}/verifications`).
    /// The admin token or a key of one of the account's apps may submit.
    #[command(group(ArgGroup::new("identity").required(true).multiple(true)
        .args(["id_number", "registration_number", "licence_id"])))]
    Submit {
        /// The account to verify.
        #[arg(long)]
        account: String,
        /// The level asked for (a tier of the catalogue, e.g. individual, enterprise,
        /// industry).
        #[arg(long)]
        level: String,
        /// For levels that need one (industry): a sector of the catalogue.
        #[arg(long)]
        sector: Option<String>,
        /// The legal name of the person or company.
        #[arg(long)]
        legal_name: String,
        /// A personal identity number (stored only as a keyed hash).
        #[arg(long)]
        id_number: Option<String>,
        /// A company registration number (stored only as a keyed hash).
        #[arg(long)]
        registration_number: Option<String>,
        /// An industry licence id (stored only as a keyed hash).
        #[arg(long)]
        licence_id: Option<String>,
        /// A reference to the corporate bank account used for the check (not the number).
        #[arg(long)]
        bank_account_ref: Option<String>,
        /// Who to contact about the request.
        #[arg(long)]
        contact: String,
    },
    /// An account's verification requests (`GET /v1/accounts/{id}/verifications`).
    List {
        /// The account id.
        #[arg(long)]
        account: String,
    },
    /// The review queue, oldest first (`GET /v1/verifications`).
    Queue {
        #[arg(long, default_value = "pending",
              value_parser = ["pending", "approved", "rejected", "all"])]
        status: String,
    },
    /// One verification request (`GET /v1/verifications/{id}`).
    Show {
        /// The verification id.
        id: String,
    },
    /// Approve a request: the account's tier changes at once.
    Approve {
        /// The verification id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Reject a request.
    Reject {
        /// The verification id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<String, CliError> {
    match cmd {
        Cmd::Submit {
            account,
            level,
            sector,
            legal_name,
            id_number,
            registration_number,
            licence_id,
            bank_account_ref,
            contact,
        } => {
            let body = object(vec![
                ("level", Some(Value::String(level))),
                ("sector", s(&sector)),
                ("legal_name", Some(Value::String(legal_name))),
                ("id_number", s(&id_number)),
                ("registration_number", s(&registration_number)),
                ("licence_id", s(&licence_id)),
                ("bank_account_ref", s(&bank_account_ref)),
                ("contact", Some(Value::String(contact))),
            ]);
            let path = format!("/v1/accounts/{}/verifications", encode(&account));
            ctx.output(ctx.client.post(&path, &body)?, verification)
        }
        Cmd::List { account } => {
            let path = format!("/v1/accounts/{}/verifications", encode(&account));
            ctx.output(ctx.client.get(&path)?, list)
        }
        Cmd::Queue { status } => {
            let path = format!("/v1/verifications{}", query(&[("status", Some(&status))]));
            ctx.output(ctx.client.get(&path)?, list)
        }
        Cmd::Show { id } => {
            ctx.output(ctx.client.get(&format!("/v1/verifications/{}", encode(&id)))?, verification)
        }
        Cmd::Approve { id, reason } => decide(ctx, &id, "approve", reason),
        Cmd::Reject { id, reason } => decide(ctx, &id, "reject", reason),
    }
}

fn decide(ctx: &Ctx, id: &str, verb: &str, reason: String) -> Result<String, CliError> {
    let path = format!("/v1/verifications/{}/{verb}", encode(id));
    ctx.output(ctx.client.post(&path, &json!({ "reason": reason }))?, decided)
}

/// One verification request as a key–value block.
pub fn verification(v: &Value) -> String {
    kv(&[
        ("id", cell(&v["id"])),
        ("account_id", cell(&v["account_id"])),
        ("level", cell(&v["level"])),
        ("sector", cell(&v["sector"])),
        ("legal_name", cell(&v["legal_name"])),
        ("bank_account_ref", cell(&v["bank_account_ref"])),
        ("contact", cell(&v["contact"])),
        ("identities", cell(&v["identities"])),
        ("linked_accounts", cell(&v["linked_accounts"])),
        ("status", cell(&v["status"])),
        ("reason", cell(&v["reason"])),
        ("submitted_at", millis(&v["submitted_at"])),
        ("decided_at", millis(&v["decided_at"])),
        ("decided_by", cell(&v["decided_by"])),
    ])
}

/// The answer to approve or reject: the request, and the account as it now is.
pub fn decided(v: &Value) -> String {
    let r = &v["verification"];
    let a = &v["account"];
    format!(
        "verification {} {}; account {} is at level {}{}\n",
        cell(&r["id"]),
        cell(&r["status"]),
        cell(&a["id"]),
        cell(&a["verification_level"]),
        a["sector"].as_str().map(|s| format!(" ({s})")).unwrap_or_default()
    )
}

/// `{"verifications": [...]}` as a table.
pub fn list(v: &Value) -> String {
    let mut t = Table::new(&[
        "ID",
        "ACCOUNT",
        "LEVEL",
        "SECTOR",
        "LEGAL NAME",
        "STATUS",
        "LINKED ACCOUNTS",
        "SUBMITTED",
    ]);
    for r in v["verifications"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&r["id"]),
            cell(&r["account_id"]),
            cell(&r["level"]),
            cell(&r["sector"]),
            cell(&r["legal_name"]),
            cell(&r["status"]),
            cell(&r["linked_accounts"]),
            millis(&r["submitted_at"]),
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
    fn submit_needs_an_identity_number() {
        let base = [
            "verification",
            "submit",
            "--account",
            "a",
            "--level",
            "enterprise",
            "--legal-name",
            "L",
            "--contact",
            "c@x",
        ];
        let e = parse(&base).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let mut args = base.to_vec();
        args.extend(["--registration-number", "91310000", "--licence-id", "L-1"]);
        let c = parse(&args).unwrap();
        assert!(matches!(c, ClientCommand::Verification { cmd: Cmd::Submit { .. }, .. }), "{c:?}");
        assert!(parse(&["verification", "approve", "v_1"]).is_err(), "--reason is required");
        let c = parse(&["verification", "queue"]).unwrap();
        assert!(
            matches!(c, ClientCommand::Verification { cmd: Cmd::Queue { status }, .. } if status == "pending")
        );
    }

    #[test]
    fn renders_a_decision() {
        let v = json!({"verification": {"id": "ver_1", "status": "approved"},
            "account": {"id": "acc_1", "verification_level": "industry", "sector": "education"}});
        assert_eq!(
            decided(&v),
            "verification ver_1 approved; account acc_1 is at level industry (education)\n"
        );
    }
}
