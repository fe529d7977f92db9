//! One active check: a TCP connect, or a minimal HTTP/1.1 GET, or an h2c
//! GET for targets of `protocol: http2` groups.
//!
//! Deliberately not the data plane's client or pool: a check has its own
//! connection, so it never counts as traffic and never waits behind it.
//! The HTTP/1.1 exchange is a few lines of hand-written protocol: we only
//! need the status code, and at thousands of checks a second a full client
//! would cost more than the checks themselves. h2c is hyper's client: the
//! protocol is too much to write for checks alone.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2;
use hyper::Uri;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    /// The kept h2c connection (checks of `protocol: http2` groups).
    h2: Option<H2Conn>,
    request: Vec<u8>,
    /// The h2c request's URI: its authority is the check's Host.
    uri: Option<Uri>,
    /// (path, host override, port) the request bytes were built for.
    built_for: Option<(String, Option<String>, u16)>,
}

/// An h2c connection and the task that drives it, which ends with it.
struct H2Conn {
    sender: http2::SendRequest<Empty<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
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
                self.h2 = None;
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
        if spec.h2c {
            // A reload may switch the group's protocol: only one kind kept.
            self.conn = None;
            return self.h2c(spec, target, port).await;
        }
        self.h2 = None;
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
        self.uri = format!("http://{host}{}", spec.path).parse().ok();
        self.built_for = Some((spec.path.clone(), spec.host.clone(), port));
        // A different request may go to a different place: start afresh.
        self.conn = None;
        self.h2 = None;
    }

    /// The check over h2c: on the kept connection if it still takes
    /// requests, else on a new one.
    async fn h2c(&mut self, spec: &HealthCheck, target: &Address, port: u16) -> Outcome {
        let Some(uri) = self.uri.clone() else {
            return Outcome::Error("check host and path do not form a valid URI".into());
        };
        if let Some(mut conn) = self.h2.take() {
            if conn.sender.ready().await.is_ok() {
                if let Ok(status) = h2_get(&mut conn.sender, uri.clone()).await {
                    self.h2 = Some(conn);
                    return judge(spec, status);
                }
            }
        }
        let stream = match TcpStream::connect((target.host.as_str(), port)).await {
            Ok(s) => s,
            Err(e) => return Outcome::Error(e.to_string()),
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = match http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
        {
            Ok(pair) => pair,
            Err(e) => return Outcome::Error(format!("HTTP/2 handshake: {e}")),
        };
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut conn = H2Conn { sender, task };
        match h2_get(&mut conn.sender, uri).await {
            Ok(status) => {
                self.h2 = Some(conn);
                judge(spec, status)
            }
            Err(e) => Outcome::Error(format!("HTTP/2: {e}")),
        }
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
        let outcome = judge(spec, code);
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

/// Pass or fail by the check's matcher.
fn judge(spec: &HealthCheck, code: u16) -> Outcome {
    if spec.matcher.matches(code) {
        Outcome::Pass(code.to_string())
    } else {
        Outcome::Fail(code.to_string())
    }
}

/// One GET over h2c; the status. The body is not read: dropping the
/// response resets the stream, and the connection stays.
async fn h2_get(
    sender: &mut http2::SendRequest<Empty<Bytes>>,
    uri: Uri,
) -> Result<u16, hyper::Error> {
    let mut req = hyper::Request::new(Empty::new());
    *req.uri_mut() = uri;
    req.headers_mut().insert(
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static("switchyard-health-check"),
    );
    let resp = sender.send_request(req).await?;
    Ok(resp.status().as_u16())
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
