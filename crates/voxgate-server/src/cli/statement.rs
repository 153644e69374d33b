//! `voxgate statement`: an account's statement for a month, as a table, JSON or CSV.

use super::Ctx;
use super::client::{CliError, Method, encode, query};
use super::table::{Table, cell};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The account.
    #[arg(long)]
    pub account: String,
    /// The month, YYYY-MM; the current month in the account's time zone when omitted.
    #[arg(long)]
    pub period: Option<String>,
    /// Ask the server for CSV (`Accept: text/csv`) and print it as it comes: one row per
    /// app, service and plan segment, then a total row.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<String, CliError> {
    let path = format!(
        "/v1/accounts/{}/statement{}",
        encode(&args.account),
        query(&[("period", args.period.as_deref())])
    );
    if args.csv {
        return Ok(ctx.client.send(Method::Get, &path, None, "text/csv")?.body);
    }
    ctx.output(ctx.client.get(&path)?, render)
}

/// A statement for people: a heading, one line per app and service, the plan segments of
/// any line that changed plan during the month, and the total.
pub fn render(v: &Value) -> String {
    let mut out = format!(
        "statement of account {} for {} ({}, {} to {})\n",
        cell(&v["account_id"]),
        cell(&v["period"]),
        cell(&v["time_zone"]),
        cell(&v["from"]),
        cell(&v["to"]),
    );
    let currency = cell(&v["currency"]);
    let lines = v["lines"].as_array().map(Vec::as_slice).unwrap_or_default();
    if lines.is_empty() {
        out.push_str("no usage and nothing included in this period\n");
    } else {
        let mut t = Table::new(&["APP", "SERVICE", "UNIT", "USED", "INCLUDED", "OVERAGE", "AMOUNT"]);
        for l in lines {
            t.row(vec![
                cell(&l["app_id"]),
                cell(&l["service"]),
                cell(&l["unit"]),
                cell(&l["used"]),
                cell(&l["included"]),
                cell(&l["overage"]),
                cell(&l["amount"]),
            ]);
        }
        out.push_str(&t.render());
        let split: Vec<&Value> =
            lines.iter().filter(|l| l["segments"].as_array().is_some_and(|s| s.len() > 1)).collect();
        if !split.is_empty() {
            out.push_str("\nplan segments (a plan changed during the month; included units are prorated):\n");
            let mut t = Table::new(&[
                "APP",
                "SERVICE",
                "PLAN",
                "FROM",
                "TO",
                "USED",
                "INCLUDED",
                "OVERAGE",
                "UNIT PRICE",
                "AMOUNT",
            ]);
            for l in split {
                for s in l["segments"].as_array().into_iter().flatten() {
                    t.row(vec![
                        cell(&l["app_id"]),
                        cell(&l["service"]),
                        cell(&s["plan"]),
                        cell(&s["from"]),
                        cell(&s["to"]),
                        cell(&s["used"]),
                        cell(&s["included"]),
                        cell(&s["overage"]),
                        cell(&s["unit_price"]),
                        cell(&s["amount"]),
                    ]);
                }
            }
            out.push_str(&t.render());
        }
    }
    out.push_str(&format!("total {} {currency}\n", cell(&v["total"])));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ClientCommand;
    use crate::cli::tests::parse;
    use serde_json::json;

    #[test]
    fn parses() {
        let c = parse(&["statement", "--account", "acc_1", "--period", "2026-11", "--csv"]).unwrap();
        let ClientCommand::Statement { args, .. } = c else { panic!("{c:?}") };
        assert_eq!(
            (args.account.as_str(), args.period.as_deref(), args.csv),
            ("acc_1", Some("2026-11"), true)
        );
        let e = parse(&["statement", "--account", "a", "--csv", "--json"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["statement"]).is_err(), "--account is required");
    }

    #[test]
    fn renders_lines_segments_and_total() {
        let seg = |plan: &str, used: &str, amount: &str| {
            json!({"plan": plan, "from": "2026-11-01T00:00:00Z", "to": "2026-11-16T00:00:00Z", "used": used,
                   "included": "0", "overage": used, "unit_price": "0.00025", "billed": true, "amount": amount})
        };
        let v = json!({
            "account_id": "acc_1", "period": "2026-11", "time_zone": "UTC", "from": "2026-11-01T00:00:00Z",
            "to": "2026-12-01T00:00:00Z", "currency": "USD", "total": "0.03",
            "lines": [
                {"app_id": "app_1", "service": "asr", "unit": "audio_second", "used": "120.500",
                 "included": "0", "overage": "120.500", "amount": "0.030125",
                 "segments": [seg("free", "0", "0"), seg("payg", "120.500", "0.030125")]},
                {"app_id": "app_1", "service": "tts", "unit": "character", "used": "0",
                 "included": "5000", "overage": "0", "amount": "0", "segments": [seg("payg", "0", "0")]}
            ]
        });
        let text = render(&v);
        assert!(
            text.starts_with(
                "statement of account acc_1 for 2026-11 (UTC, 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z)\n\
             APP    SERVICE  UNIT          USED     INCLUDED  OVERAGE  AMOUNT\n\
             app_1  asr      audio_second  120.500  0         120.500  0.030125\n\
             app_1  tts      character     0        5000      0        0\n"
            ),
            "{text}"
        );
        assert!(text.contains("app_1  asr      free  2026-11-01T00:00:00Z"), "{text}");
        assert!(text.contains("app_1  asr      payg  2026-11-01T00:00:00Z"), "{text}");
        assert!(!text.contains("app_1  tts      payg"), "{text}");
        assert!(text.ends_with("total 0.03 USD\n"), "{text}");
    }
}
