//! A small blocking HTTP client for the voxgate API (ureq, plain HTTP, no TLS), and the
//! errors a client subcommand can end with.

use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Why a client subcommand failed. Each is printed as one `error: …` line on standard
/// error, and the process exits with status 1.
#[derive(Debug, PartialEq)]
pub enum CliError {
    /// The server answered with a problem document.
    Api { status: u16, code: String, detail: String, field: Option<String>, hint: Option<String> },
    /// The server answered with an error status but no problem document.
    Http { status: u16, body: String },
    /// The server could not be reached.
    Connect { url: String, message: String },
    /// Anything else: bad input noticed before sending, an unreadable file, a bad answer.
    Other(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Api { code, detail, field, hint, .. } => {
                write!(f, "{code}: {detail}")?;
                if let Some(field) = field {
                    write!(f, " (field: {field})")?;
                }
                if let Some(hint) = hint {
                    write!(f, "\nhint: {hint}")?;
                }
                Ok(())
            }
            CliError::Http { status, body } if body.trim().is_empty() => write!(f, "HTTP {status}"),
            CliError::Http { status, body } => write!(f, "HTTP {status}: {}", body.trim()),
            CliError::Connect { url, message } => write!(
                f,
                "cannot reach the voxgate server at {url}: {message}\n\
                 hint: is `voxgate serve` running there? Point --server or VOXGATE_URL at it."
            ),
            CliError::Other(msg) => f.write_str(msg),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A successful answer: its status and body text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Result<Value, CliError> {
        if self.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.body)
            .map_err(|e| CliError::Other(format!("the server's answer is not JSON ({e}): {}", self.body)))
    }
}

/// The largest answer read (an audit log or a usage series can be long).
const MAX_BODY: u64 = 256 * 1024 * 1024;

pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// Checks the server URL: plain `http://` only, no trailing slash.
pub fn base_url(server: &str) -> Result<String, CliError> {
    let server = server.trim().trim_end_matches('/');
    if server.starts_with("https://") {
        return Err(CliError::Other(format!(
            "--server {server}: https is not supported; this client speaks plain HTTP to the server \
             (run it on the server's host, or reach the server over a trusted network)"
        )));
    }
    match server.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() => Ok(server.to_string()),
        _ => Err(CliError::Other(format!("--server `{server}` must be a URL like http://127.0.0.1:8080"))),
    }
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from the pairs whose value is present, with its leading `?`.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Result<Client, CliError> {
        let base = base_url(server)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Straight to the server: proxy variables are for the outside world.
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .user_agent(concat!("voxgate-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client { agent: ureq::Agent::new_with_config(config), base, token })
    }

    pub fn get(&self, path: &str) -> Result<Reply, CliError> {
        self.send(Method::Get, path, None, "application/json")
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Reply, CliError> {
        self.send(Method::Post, path, Some(body), "application/json")
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Reply, CliError> {
        self.send(Method::Patch, path, Some(body), "application/json")
    }

    pub fn delete(&self, path: &str, body: &Value) -> Result<Reply, CliError> {
        self.send(Method::Delete, path, Some(body), "application/json")
    }

    /// One request; an error status becomes [`CliError::Api`] (or `Http` when the body is
    /// not a problem document).
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> Result<Reply, CliError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! prepare {
            ($builder:expr) => {{
                let mut b = $builder.header("Accept", accept);
                if let Some(auth) = &auth {
                    b = b.header("Authorization", auth.as_str());
                }
                b
            }};
        }
        let result = match (method, body) {
            (Method::Get, _) => prepare!(self.agent.get(&url)).call(),
            (Method::Post, Some(b)) => prepare!(self.agent.post(&url)).send_json(b),
            (Method::Post, None) => prepare!(self.agent.post(&url)).send_empty(),
            (Method::Patch, Some(b)) => prepare!(self.agent.patch(&url)).send_json(b),
            (Method::Patch, None) => prepare!(self.agent.patch(&url)).send_empty(),
            (Method::Delete, Some(b)) => prepare!(self.agent.delete(&url)).force_send_body().send_json(b),
            (Method::Delete, None) => prepare!(self.agent.delete(&url)).call(),
        };
        let mut response = result.map_err(|e| self.transport_error(method, &url, e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|e| self.transport_error(method, &url, e))?;
        if status >= 400 {
            return Err(self.problem(status, text));
        }
        Ok(Reply { status, body: text })
    }

    fn transport_error(&self, method: Method, url: &str, e: ureq::Error) -> CliError {
        use std::io::ErrorKind;
        let message = match &e {
            ureq::Error::Io(io) => match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused".to_string(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                    "the connection was closed".to_string()
                }
                _ => io.to_string(),
            },
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            other => format!("{} {url}: {other}", method.as_str()),
        };
        CliError::Connect { url: self.base.clone(), message }
    }

    fn problem(&self, status: u16, body: String) -> CliError {
        let doc: Option<Value> = serde_json::from_str(&body).ok();
        let code = doc.as_ref().and_then(|d| d.get("code")).and_then(Value::as_str);
        let Some(code) = code else { return CliError::Http { status, body } };
        let doc = doc.as_ref().unwrap_or(&Value::Null);
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        let hint = (status == 401 && self.token.is_none()).then(|| {
            "no token was sent: give --token, set VOXGATE_TOKEN, or run where \
             <--data-dir>/admin-token is readable"
                .to_string()
        });
        CliError::Api {
            status,
            code: code.to_string(),
            detail: text("detail").unwrap_or_default(),
            field: text("field"),
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(base_url("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url(" http://h:1 ").unwrap(), "http://h:1");
        assert!(matches!(base_url("https://h"), Err(CliError::Other(m)) if m.contains("plain HTTP")));
        assert!(base_url("127.0.0.1:8080").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("acc_12-ab.~"), "acc_12-ab.~");
        assert_eq!(encode("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
        assert_eq!(query(&[("a", Some("x y")), ("b", None), ("c", Some("1"))]), "?a=x%20y&c=1");
        assert_eq!(query(&[("a", None)]), "");
    }

    #[test]
    fn problem_documents_become_api_errors() {
        let client = Client::new("http://127.0.0.1:1", None).unwrap();
        let body = r#"{"type":"urn:voxgate:problem:invalid_time_zone","title":"Unprocessable Entity",
            "status":422,"code":"invalid_time_zone","detail":"`Mars/Base` is not an IANA time zone",
            "field":"time_zone"}"#;
        let e = client.problem(422, body.to_string());
        assert_eq!(
            e.to_string(),
            "invalid_time_zone: `Mars/Base` is not an IANA time zone (field: time_zone)"
        );
        let e = client
            .problem(401, r#"{"code":"unauthorized","detail":"a valid bearer token is required"}"#.into());
        assert!(
            e.to_string()
                .starts_with("unauthorized: a valid bearer token is required\nhint: no token was sent")
        );
        assert_eq!(client.problem(502, "bad gateway".into()).to_string(), "HTTP 502: bad gateway");
    }

    #[test]
    fn connection_refused_names_the_server() {
        // Port 1 on the loopback interface: nothing listens there.
        let client = Client::new("http://127.0.0.1:1", None).unwrap();
        let e = client.get("/healthz").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, CliError::Connect { .. }), "{e:?}");
        assert!(text.contains("http://127.0.0.1:1"), "{text}");
    }
}
