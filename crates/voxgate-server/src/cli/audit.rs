//! `voxgate audit`: the audit log.

use super::Ctx;
use super::client::{CliError, query};
use super::table::{Table, cell, millis};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this subject's entries: its kind (account, app, verification, contract, window).
    #[arg(long, requires = "subject_id")]
    pub subject_kind: Option<String>,
    /// Only this subject's entries: its id.
    #[arg(long, requires = "subject_kind")]
    pub subject_id: Option<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<String, CliError> {
    let q =
        query(&[("subject_kind", args.subject_kind.as_deref()), ("subject_id", args.subject_id.as_deref())]);
    ctx.output(ctx.client.get(&format!("/v1/audit{q}"))?, render)
}

/// `{"entries": [...]}` as a table (`--json` has the records before and after each change).
pub fn render(v: &Value) -> String {
    let mut t = Table::new(&["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "REASON"]);
    for e in v["entries"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&e["seq"]),
            millis(&e["at"]),
            cell(&e["actor"]),
            cell(&e["action"]),
            format!("{}:{}", cell(&e["subject_kind"]), cell(&e["subject_id"])),
            cell(&e["reason"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::parse;
    use serde_json::json;

    #[test]
    fn both_subject_options_or_neither() {
        assert!(parse(&["audit"]).is_ok());
        assert!(parse(&["audit", "--subject-kind", "app", "--subject-id", "demo"]).is_ok());
        let e = parse(&["audit", "--subject-kind", "app"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn renders_entries() {
        let v = json!({"entries": [{"seq": 5, "at": 1795812459740_i64, "actor": "admin", "action": "app.update",
            "subject_kind": "app", "subject_id": "app_5", "before": {}, "after": {},
            "reason": "unpaid invoice INV-1042"}]});
        assert_eq!(
            render(&v),
            "SEQ  AT                    ACTOR  ACTION      SUBJECT    REASON\n\
             5    2026-11-27T20:47:39Z  admin  app.update  app:app_5  unpaid invoice INV-1042\n"
        );
    }
}
