//! One active check: a TCP connect, or a minimal HTTP/1.1 GET.
//!
//! Deliberately not the data plane's client or pool: a check opens its own
//! connection each time (as ALB does), so it proves the target accepts new
//! connections, and it never counts as traffic. The HTTP exchange is a few
//! lines of hand-written protocol: we only need the status code, and at
//! thousands of checks a second a full client would cost more than the
//! checks themselves.

use std::time::Duration;

use switchyard_config::{Address, CheckProtocol, HealthCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected (tcp), or the status matched (http). Detail: the status.
    Pass(String),
    /// The status did not match. Detail: the status.
    Fail(String),
    /// No answer within `timeout`.
    Timeout,
    /// Refused, reset, or not HTTP. Detail: what happened.
    Error(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass(_))
    }

    /// The `result` label: pass | fail | timeout | error.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass(_) => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Timeout => "timeout",
            Outcome::Error(_) => "error",
        }
    }

    pub fn detail(&self, timeout: Duration) -> String {
        match self {
            Outcome::Pass(d) | Outcome::Fail(d) | Outcome::Error(d) => d.clone(),
            Outcome::Timeout => format!("no answer within {timeout:?}"),
        }
    }
}

/// Longest response head we read; anything longer is not a health answer.
const MAX_HEAD: usize = 8192;
/// Longest body we read to keep a connection; bigger answers close it.
const MAX_KEEP_BODY: usize = 64 * 1024;

/// One target's prober. HTTP checks reuse their keep-alive connection
/// (as Envoy does by default): at a thousand checks a second, opening a
/// new connection each time costs several times the check itself, almost
/// all of it kernel TCP setup and teardown. A kept connection that turns
/// out closed is replaced within the same check, never counted as a
/// failure. TCP checks always connect: the connect is the check.
#[derive(Default)]
pub struct Prober {
    conn: Option<TcpStream>,
    request: Vec<u8>,
    /// (path, host override, port) the request bytes were built for.
    built_for: Option<(String, Option<String>, u16)>,
}

impl Prober {
    /// Runs one check of `spec` against `target`, bounded by `spec.timeout`.
    pub async fn check(&mut self, spec: &HealthCheck, target: &Address) -> Outcome {
        if spec.protocol == CheckProtocol::None {
            return Outcome::Pass("none".into());
        }
        let port = spec.port.unwrap_or(target.port);
        let outcome = tokio::time::timeout(spec.timeout, self.exchange(spec, target, port)).await;
        match outcome {
            Ok(o) => o,
            Err(_) => {
                // Whatever the connection was doing, it is not reusable.
                self.conn = None;
                Outcome::Timeout
            }
        }
    }

    async fn exchange(&mut self, spec: &HealthCheck, target: &Address, port: u16) -> Outcome {
        if spec.protocol == CheckProtocol::Tcp {
            return match TcpStream::connect((target.host.as_str(), port)).await {
                Ok(_) => Outcome::Pass("connected".into()),
                Err(e) => Outcome::Error(e.to_string()),
            };
        }
        self.build_request(spec, target, port);
        // A kept connection first; if it fails before any answer, one
        // fresh connection.
        if let Some(conn) = self.conn.take() {
            match self.http_on(conn, spec).await {
                Attempt::Done(o) => return o,
                Attempt::Stale => {}
            }
        }
        let conn = match TcpStream::connect((target.host.as_str(), port)).await {
            Ok(s) => s,
            Err(e) => return Outcome::Error(e.to_string()),
        };
        let _ = conn.set_nodelay(true);
        match self.http_on(conn, spec).await {
            Attempt::Done(o) => o,
            Attempt::Stale => Outcome::Error("connection closed before a status line".into()),
        }
    }

    fn build_request(&mut self, spec: &HealthCheck, target: &Address, port: u16) {
        if let Some((path, host, p)) = &self.built_for {
            if *path == spec.path && *host == spec.host && *p == port {
                return;
            }
        }
        let host = match &spec.host {
            Some(h) => h.clone(),
            None if port == target.port => target.to_string(),
            None => Address {
                host: target.host.clone(),
                port,
            }
            .to_string(),
        };
        self.request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-health-check\r\nAccept: */*\r\n\r\n",
            spec.path
        )
        .into_bytes();
        self.built_for = Some((spec.path.clone(), spec.host.clone(), port));
        // A different request may go to a different place: start afresh.
        self.conn = None;
    }

    async fn http_on(&mut self, mut stream: TcpStream, spec: &HealthCheck) -> Attempt {
        if stream.write_all(&self.request).await.is_err() {
            return Attempt::Stale;
        }
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Attempt::Done(Outcome::Error("response head too long".into()));
            }
            match stream.read(&mut chunk).await {
                Ok(0) if buf.is_empty() => return Attempt::Stale,
                Ok(0) => {
                    return Attempt::Done(Outcome::Error("connection closed mid-response".into()))
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if buf.is_empty() => return Attempt::Stale,
                Err(e) => return Attempt::Done(Outcome::Error(e.to_string())),
            }
        };
        let code = match parse_status(&buf) {
            Some(Ok(c)) => c,
            _ => return Attempt::Done(Outcome::Error("not an HTTP response".into())),
        };
        let outcome = if spec.matcher.matches(code) {
            Outcome::Pass(code.to_string())
        } else {
            Outcome::Fail(code.to_string())
        };
        // Keep the connection only when the body's end is certain.
        if let Some(len) = reusable_body_len(&buf[..head_end], code) {
            let mut have = buf.len() - head_end;
            while have < len {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Attempt::Done(outcome),
                    Ok(n) => have += n,
                }
            }
            if have == len {
                self.conn = Some(stream);
            }
        }
        Attempt::Done(outcome)
    }
}

enum Attempt {
    Done(Outcome),
    /// The connection was closed before any answer: try a fresh one.
    Stale,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The body length when the connection may be kept after reading it:
/// a plain Content-Length (or a status without a body), no chunking, no
/// `Connection: close`.
fn reusable_body_len(head: &[u8], code: u16) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    let mut len = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            return None;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(value.parse::<usize>().ok()?);
        }
    }
    if code == 204 || code == 304 || (100..200).contains(&code) {
        return Some(0);
    }
    len.filter(|&l| l <= MAX_KEEP_BODY)
}

/// `Some(Ok(code))` once a full status line is in `buf`, `Some(Err)` if it
/// is not HTTP, `None` if more bytes are needed.
fn parse_status(buf: &[u8]) -> Option<Result<u16, ()>> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..end];
    // "HTTP/1.1 200 OK" / "HTTP/1.0 404"
    let code = line
        .strip_prefix(b"HTTP/1.")
        .filter(|r| r.len() >= 5 && (r[0] == b'0' || r[0] == b'1') && r[1] == b' ')
        .and_then(|r| std::str::from_utf8(&r[2..5]).ok())
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..=599).contains(c));
    Some(code.ok_or(()))
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(Ok(200)));
        assert_eq!(parse_status(b"HTTP/1.0 503\r\n"), Some(Ok(503)));
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), Some(Err(())));
        assert_eq!(parse_status(b"HTTP/1.1 abc\r\n"), Some(Err(())));
    }
}
