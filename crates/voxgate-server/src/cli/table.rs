//! Output helpers: aligned tables, key–value blocks, value formatting, and a pretty-printer
//! that re-indents the server's JSON without reordering it.

use serde_json::Value;

/// A table of left-aligned columns, two spaces apart; the last column is not padded, so no
/// line ends in spaces.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are empty and extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', w - width(cell)));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A block of `key  value` lines with the values aligned.
pub fn kv(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let line = format!("{k:<w$}  {v}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON value as a table cell: `-` for null or absent, strings bare, whole numbers
/// without a fraction, arrays joined with commas, objects as compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => number(n),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(_) => v.to_string(),
    }
}

fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        _ => n.to_string(),
    }
}

/// A limit value as the explain output shows it: `5/s burst 10` for a rate, `max 2` for
/// concurrency, `×2` for a multiplier, a number for a quota.
pub fn limit_value(v: &Value) -> String {
    match v {
        Value::Object(o) if o.contains_key("per_second") => {
            format!("{}/s burst {}", cell(&o["per_second"]), cell(&o["burst"]))
        }
        Value::Object(o) if o.contains_key("max") => format!("max {}", cell(&o["max"])),
        Value::Object(o) if o.contains_key("factor") => format!("×{}", cell(&o["factor"])),
        other => cell(other),
    }
}

/// Unix milliseconds as an RFC 3339 UTC time to the second; `-` for null.
pub fn millis(v: &Value) -> String {
    let Some(ms) = v.as_i64() else { return cell(v) };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => ms.to_string(),
    }
}

/// A duration in milliseconds, short and rounded up: `-` for 0, `250ms`, `42s`, `3m07s`,
/// `5h12m`, `2d03h`.
pub fn duration_ms(v: &Value) -> String {
    let Some(ms) = v.as_u64() else { return cell(v) };
    if ms == 0 {
        return "-".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Re-indents JSON text (two spaces, `": "` after keys) keeping its keys in the order the
/// server wrote them. Text that is not JSON is returned unchanged.
pub fn pretty_json(text: &str) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.trim().chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().unwrap_or_default());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_and_trims_the_last() {
        let mut t = Table::new(&["SERVICE", "DIMENSION", "LIMIT"]);
        t.row(vec!["asr".into(), "rate".into(), "10".into()]);
        t.row(vec!["conversational_ai".into(), "monthly".into(), "18000".into()]);
        t.row(vec!["tts".into()]);
        assert_eq!(
            t.render(),
            "SERVICE            DIMENSION  LIMIT\n\
             asr                rate       10\n\
             conversational_ai  monthly    18000\n\
             tts\n"
        );
        assert!(!t.is_empty());
        assert!(Table::new(&["A"]).is_empty());
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut t = Table::new(&["NAME", "ID"]);
        t.row(vec!["Ünïcødé".into(), "x".into()]);
        assert_eq!(t.render(), "NAME     ID\nÜnïcødé  x\n");
    }

    #[test]
    fn kv_aligns_values() {
        assert_eq!(
            kv(&[("id", "a".into()), ("time_zone", "UTC".into()), ("sector", "".into())]),
            "id         a\ntime_zone  UTC\nsector\n"
        );
    }

    #[test]
    fn cells_format_values() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(600.0)), "600");
        assert_eq!(cell(&json!(12.5)), "12.5");
        assert_eq!(cell(&json!(-3)), "-3");
        assert_eq!(cell(&json!("0.0025")), "0.0025");
        assert_eq!(cell(&json!(["a", "b"])), "a,b");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!(true)), "yes");
        assert_eq!(limit_value(&json!({"per_second": 5.0, "burst": 10})), "5/s burst 10");
        assert_eq!(limit_value(&json!({"max": 2, "lease_ttl_ms": 60000})), "max 2");
        assert_eq!(limit_value(&json!({"factor": 2.5})), "×2.5");
        assert_eq!(limit_value(&json!(1800.0)), "1800");
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(millis(&json!(1_795_812_454_099_i64)), "2026-11-27T20:47:34Z");
        assert_eq!(millis(&json!(null)), "-");
        assert_eq!(duration_ms(&json!(0)), "-");
        assert_eq!(duration_ms(&json!(250)), "250ms");
        assert_eq!(duration_ms(&json!(1001)), "2s");
        assert_eq!(duration_ms(&json!(187_000)), "3m07s");
        assert_eq!(duration_ms(&json!(18_720_000)), "5h12m");
        assert_eq!(duration_ms(&json!(183_600_000)), "2d03h");
    }

    #[test]
    fn pretty_json_keeps_key_order_and_strings() {
        let text = r#"{"z":1,"a":{"s":"x,{y}: \"q\"","e":[],"o":{}},"l":[1,2]}"#;
        let expected = "{\n  \"z\": 1,\n  \"a\": {\n    \"s\": \"x,{y}: \\\"q\\\"\",\n    \"e\": [],\n    \
                        \"o\": {}\n  },\n  \"l\": [\n    1,\n    2\n  ]\n}";
        assert_eq!(pretty_json(text), expected);
        // The same as serde_json's own pretty form, apart from the order it would impose.
        let v: Value = serde_json::from_str(r#"{"a":[{"b":null}],"c":"d"}"#).unwrap();
        assert_eq!(pretty_json(&v.to_string()), serde_json::to_string_pretty(&v).unwrap());
        assert_eq!(pretty_json("not json"), "not json");
    }
}
