//! switchyard-tests: the integration test harness.
//!
//! The tests in `tests/tests/*.rs` run a real balancer in-process
//! ([`switchyard::start`]) on `127.0.0.1:0`, in front of `testkit` fake
//! upstreams, and talk to it over loopback as a client would. This library
//! holds what they share:
//!
//! - [`Cfg`] and [`Group`]: build a test configuration as YAML text, with the
//!   admin API on an ephemeral port, the access log off and every listener
//!   on `127.0.0.1:0`; [`Cfg::start`] / [`start_balancer`] parse it exactly
//!   like `switchyard check` does and start the balancer.
//! - [`Urls`]: URLs of a running balancer's listeners and admin API.
//! - [`RawConn`]: a client socket for bytes-on-the-wire tests (bad clients,
//!   timeouts, connection limits).
//! - [`metric`]: one sample from Prometheus text.
//! - [`l4`]: `tcp`/`tls` listener YAML and byte-stream exchanges;
//!   [`certs`]: test certificates (rcgen) and a TLS client.
//! - [`live`]: a balancer started from a config FILE (watched and reloaded
//!   as `switchyard run` does), and the reload and target APIs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use switchyard_testkit as kit;

pub mod certs;
pub mod l4;
pub mod live;

/// Generous bound for anything that should happen "at once" on a loaded
/// 2-core machine.
pub const WAIT: Duration = Duration::from_secs(5);

/// Parses `yaml` as `switchyard check` would (origin `test.yaml`) and starts
/// a balancer from it.
///
/// # Panics
///
/// If the configuration is invalid (the errors are in the message) or the
/// balancer cannot start.
pub async fn start_balancer(yaml: &str) -> Running {
    let loaded = switchyard_config::parse_str(yaml, "test.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n--- config ---\n{yaml}"));
    switchyard::start(loaded.config)
        .await
        .unwrap_or_else(|e| panic!("balancer did not start: {e:#}\n--- config ---\n{yaml}"))
}

/// Removes the common indentation of `text` (and blank first/last lines),
/// then indents every line by `by` spaces. Lets tests write YAML fragments
/// at whatever indentation reads best.
pub fn indent(text: &str, by: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| !l.trim().is_empty())
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(start, |i| i + 1);
    let lines = &lines[start..end];
    let common = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let pad = " ".repeat(by);
    let mut out = String::new();
    for l in lines {
        if !l.trim().is_empty() {
            out.push_str(&pad);
            out.push_str(&l[common..]);
        }
        out.push('\n');
    }
    out
}

const NO_CHECKS: &str = "{ protocol: none }";

/// A target group for a test config. Active health checks are off
/// (`health_check: { protocol: none }`) unless
/// [`health_check`](Group::health_check) says otherwise, so targets are
/// healthy from the start and a test needs no health endpoint.
#[derive(Debug, Clone)]
pub struct Group {
    name: String,
    targets: Vec<(SocketAddr, Option<u32>)>,
    health_check: String,
    extra: String,
}

impl Group {
    /// A group called `name` with the given targets (weight left default).
    pub fn new(name: &str, targets: &[SocketAddr]) -> Group {
        Group {
            name: name.to_owned(),
            targets: targets.iter().map(|a| (*a, None)).collect(),
            health_check: NO_CHECKS.to_owned(),
            extra: String::new(),
        }
    }

    /// A group whose targets carry explicit weights.
    pub fn weighted(name: &str, targets: &[(SocketAddr, u32)]) -> Group {
        Group {
            name: name.to_owned(),
            targets: targets.iter().map(|(a, w)| (*a, Some(*w))).collect(),
            health_check: NO_CHECKS.to_owned(),
            extra: String::new(),
        }
    }

    /// More group-level keys, as YAML (any indentation), e.g.
    /// `"retries: { attempts: 2, on: [503] }"`.
    pub fn with(mut self, yaml: &str) -> Group {
        self.extra.push_str(&indent(yaml, 4));
        self
    }

    /// Active health checks instead of none: the value of `health_check`
    /// as flow YAML, e.g. `"{ path: /health, interval: 200ms }"`. Targets
    /// then start `initial`.
    pub fn health_check(mut self, flow_yaml: &str) -> Group {
        self.health_check = flow_yaml.to_owned();
        self
    }

    fn yaml(&self) -> String {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|(a, w)| match w {
                Some(w) => format!("{{ address: \"{a}\", weight: {w} }}"),
                None => format!("{{ address: \"{a}\" }}"),
            })
            .collect();
        format!(
            "  - name: {}\n    health_check: {}\n    targets: [ {} ]\n{}",
            self.name,
            self.health_check,
            targets.join(", "),
            self.extra
        )
    }
}

/// A whole test configuration.
#[derive(Debug, Clone, Default)]
pub struct Cfg {
    top: String,
    listeners: Vec<String>,
    groups: Vec<Group>,
}

impl Cfg {
    pub fn new() -> Cfg {
        Cfg::default()
    }

    /// The usual single-listener setup: listener `web` with one route `all`
    /// forwarding everything to group `g` with these targets.
    pub fn simple(targets: &[SocketAddr]) -> Cfg {
        Cfg::new()
            .listener("web", "- name: all\n  forward: { target_group: g }")
            .group(Group::new("g", targets))
    }

    /// Top-level keys besides `admin`, `access_log`, `listeners` and
    /// `target_groups` (e.g. `shutdown`), as YAML.
    pub fn top(mut self, yaml: &str) -> Cfg {
        self.top.push_str(&indent(yaml, 0));
        self
    }

    /// An http listener on `127.0.0.1:0` with these routes (a YAML list,
    /// any indentation).
    pub fn listener(self, name: &str, routes: &str) -> Cfg {
        self.listener_with(name, "", routes)
    }

    /// Like [`listener`](Self::listener), with more listener-level keys
    /// (e.g. `timeouts`, `max_connections`) as YAML.
    pub fn listener_with(self, name: &str, extra: &str, routes: &str) -> Cfg {
        self.listener_on(name, "127.0.0.1:0", extra, routes)
    }

    /// Like [`listener_with`](Self::listener_with), bound to `bind`
    /// instead of an ephemeral port (e.g. one the test holds, to make the
    /// bind fail).
    pub fn listener_on(mut self, name: &str, bind: &str, extra: &str, routes: &str) -> Cfg {
        self.listeners.push(format!(
            "  - name: {name}\n    bind: \"{bind}\"\n    protocol: http\n{}    routes:\n{}",
            indent(extra, 4),
            indent(routes, 6)
        ));
        self
    }

    /// A listener given whole as YAML (one list item, any indentation),
    /// e.g. from [`l4::tcp_listener`].
    pub fn listener_yaml(mut self, yaml: &str) -> Cfg {
        self.listeners.push(indent(yaml, 2));
        self
    }

    pub fn group(mut self, group: Group) -> Cfg {
        self.groups.push(group);
        self
    }

    /// The YAML text.
    pub fn yaml(&self) -> String {
        let mut out =
            String::from("admin: { bind: \"127.0.0.1:0\" }\naccess_log: { enabled: false }\n");
        out.push_str(&self.top);
        out.push_str("listeners:\n");
        for l in &self.listeners {
            out.push_str(l);
        }
        if !self.groups.is_empty() {
            out.push_str("target_groups:\n");
            for g in &self.groups {
                out.push_str(&g.yaml());
            }
        }
        out
    }

    /// Starts a balancer from this configuration; see [`start_balancer`].
    pub async fn start(&self) -> Running {
        start_balancer(&self.yaml()).await
    }
}

/// URLs of a running balancer.
pub trait Urls {
    /// `http://<first listener><path>`.
    fn url(&self, path: &str) -> String;
    /// `http://<listener `name`><path>`.
    fn url_on(&self, listener: &str, path: &str) -> String;
    /// The first listener's address.
    fn listen_addr(&self) -> SocketAddr;
    /// `http://<admin><path>`.
    fn admin_url(&self, path: &str) -> String;
}

impl Urls for Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen_addr())
    }

    fn url_on(&self, listener: &str, path: &str) -> String {
        let addr = self
            .addr(listener)
            .unwrap_or_else(|| panic!("no listener named {listener:?}"));
        format!("http://{addr}{path}")
    }

    fn listen_addr(&self) -> SocketAddr {
        match self.listeners.first() {
            Some((_, a)) => *a,
            None => panic!("the balancer has no listener"),
        }
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }
}

/// Sends `GET url` on a fresh connection and returns the response.
///
/// # Panics
///
/// If no response comes (connect failure, protocol error, timeout).
pub async fn must_get(url: &str) -> kit::TestResponse {
    kit::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The value of the sample of metric `name` whose labels include all of
/// `labels`, from Prometheus text; `None` if there is no such sample.
/// With several matching samples (other labels differ), their sum.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
            match rest.rsplit_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            // Another metric whose name starts with `name`.
            continue;
        };
        let pairs = parse_labels(label_text);
        let matches = labels
            .iter()
            .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v));
        if !matches {
            continue;
        }
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

/// `a="x",b="y\"z"` -> [(a, x), (b, y"z)].
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            chars.next();
            if c == '=' {
                break;
            }
            if c != ',' && !c.is_whitespace() {
                key.push(c);
            }
        }
        if key.is_empty() {
            return out;
        }
        if chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key, value));
    }
}

/// One HTTP/1.1 response read off a [`RawConn`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The head as text: status line and header lines.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection: write any bytes, read responses one by one,
/// watch for the server closing it.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn {
    /// Connects to `addr` (bounded by [`WAIT`]).
    ///
    /// # Panics
    ///
    /// If the connection cannot be made.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = match tokio::time::timeout(WAIT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => panic!("connect {addr}: {e}"),
            Err(_) => panic!("connect {addr}: timed out"),
        };
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes `bytes`; `Err` if the server already closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Writes `bytes`.
    ///
    /// # Panics
    ///
    /// If writing fails.
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes).await {
            panic!("raw write failed: {e}");
        }
    }

    /// Shuts the sending side (half-close), as `nc -N` does after its input.
    ///
    /// # Panics
    ///
    /// If the shutdown fails.
    pub async fn shutdown_write(&mut self) {
        if let Err(e) = self.stream.shutdown().await {
            panic!("shutdown failed: {e}");
        }
    }

    /// Reads more bytes into the buffer; `false` at EOF, error or deadline.
    async fn fill(&mut self, deadline: Instant) -> Result<(), String> {
        if self.eof {
            return Err("connection closed".into());
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) => {
                self.eof = true;
                Err("connection closed".into())
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Err(e)) => {
                self.eof = true;
                Err(format!("read error: {e}"))
            }
            Err(_) => Err("timed out".into()),
        }
    }

    /// Reads one whole response (head, then a body framed by
    /// Content-Length, chunked encoding, or the close) within `timeout`.
    pub async fn response(&mut self, timeout: Duration) -> Result<RawResponse, String> {
        let deadline = Instant::now() + timeout;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill(deadline).await.map_err(|e| {
                format!(
                    "{e} before a whole response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut resp = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        if status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        if chunked {
            resp.body = self.chunked_body(deadline).await?;
        } else if let Some(n) = length {
            while self.buf.len() < n {
                self.fill(deadline)
                    .await
                    .map_err(|e| format!("{e} inside the body"))?;
            }
            resp.body = self.buf.drain(..n).collect();
        } else {
            // Delimited by the close.
            while self.fill(deadline).await.is_ok() {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    async fn chunked_body(&mut self, deadline: Instant) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill(deadline).await?;
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        let empty = i == 0;
                        self.buf.drain(..i + 2);
                        if empty {
                            return Ok(body);
                        }
                        continue;
                    }
                    self.fill(deadline).await?;
                }
            }
            while self.buf.len() < size + 2 {
                self.fill(deadline).await?;
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Waits for the server to close the connection (EOF or reset),
    /// discarding whatever it sends meanwhile. `Ok(elapsed)` once closed,
    /// `Err` if still open after `timeout`.
    pub async fn closed_within(&mut self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            if self.eof {
                return Ok(started.elapsed());
            }
            match self.fill(deadline).await {
                Ok(()) => {}
                Err(_) if self.eof => return Ok(started.elapsed()),
                Err(e) => return Err(format!("still open: {e} after {timeout:?}")),
            }
        }
    }

    /// Everything received and not yet consumed as a response, as text.
    pub fn pending_text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A minimal `GET path` request head for raw sockets (Host `test`).
pub fn raw_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indent_strips_common_prefix() {
        let text = "\n      - a: 1\n        b: 2\n    ";
        assert_eq!(indent(text, 2), "  - a: 1\n    b: 2\n");
    }

    #[test]
    fn metric_matches_labels_and_sums() {
        let text = "# TYPE x counter\n\
            x_total{a=\"1\",b=\"2\"} 3\n\
            x_total{a=\"1\",b=\"3\"} 4\n\
            x_total_other{a=\"1\"} 100\n\
            y 7\n";
        assert_eq!(
            metric(text, "x_total", &[("a", "1"), ("b", "2")]),
            Some(3.0)
        );
        assert_eq!(metric(text, "x_total", &[("a", "1")]), Some(7.0));
        assert_eq!(metric(text, "x_total", &[("a", "2")]), None);
        assert_eq!(metric(text, "y", &[]), Some(7.0));
    }

    #[test]
    fn config_is_valid_yaml_for_the_loader() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let yaml = Cfg::simple(&[a])
            .group(Group::new("h", &[a]).with("retries: { attempts: 1 }"))
            .yaml();
        switchyard_config::parse_str(&yaml, "t.yaml", Path::new(".")).unwrap();
    }
}
