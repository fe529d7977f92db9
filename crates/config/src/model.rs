//! The validated domain model: what the rest of switchyard sees.
//!
//! Everything here has already been checked: references resolve, weights are
//! in range, keys apply where they stand. Defaults are filled in (see each
//! field). Nothing downstream re-validates.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A whole, validated configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Runtime worker threads; 0 = one per CPU core. Default 0.
    pub workers: usize,
    pub admin: Admin,
    pub shutdown: Shutdown,
    pub access_log: AccessLog,
    pub listeners: Vec<Listener>,
    pub target_groups: Vec<TargetGroup>,
}

impl Config {
    /// The group called `name`, if any.
    pub fn group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|g| g.name == name)
    }
}

/// `IP:PORT` or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl Address {
    /// The socket address when `host` is an IP literal (no DNS needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `admin:`. Default bind 127.0.0.1:9901.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub bind: Address,
}

/// `shutdown:`. Defaults: drain_delay 0s, timeout 30s.
#[derive(Debug, Clone, PartialEq)]
pub struct Shutdown {
    pub drain_delay: Duration,
    pub timeout: Duration,
}

/// `access_log:`. Default: enabled, to stdout.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    pub enabled: bool,
    pub path: LogPath,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogPath {
    Stdout,
    Stderr,
    /// Relative paths are resolved against the config file's directory.
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

impl ListenerProtocol {
    /// http and https listeners have `routes`; tcp and tls have `forward`.
    pub fn is_http(self) -> bool {
        matches!(self, ListenerProtocol::Http | ListenerProtocol::Https)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub bind: Address,
    pub protocol: ListenerProtocol,
    pub timeouts: ListenerTimeouts,
    /// Open client connections at most; further connections wait in the
    /// kernel backlog. Default 10000.
    pub max_connections: usize,
    /// Required for https and tls listeners, `None` otherwise.
    pub tls: Option<Tls>,
    /// http/https listeners: evaluated in order, first match wins. Empty for tcp/tls.
    pub routes: Vec<Route>,
    /// tcp/tls listeners only.
    pub forward: Option<Forward>,
}

/// Defaults: header_read 10s, idle 60s.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTimeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// At least one; the first is the default when SNI is absent or unknown.
    pub certificates: Vec<CertificatePair>,
    /// https only; default `[h2, http/1.1]`. Empty for tls listeners.
    pub alpn: Vec<String>,
}

/// Paths are resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificatePair {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
}

/// Every given condition must hold; all `None`/empty matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteMatch {
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    /// Upper-case method name, e.g. `GET`.
    pub method: Option<String>,
    /// (lower-case name, exact value) pairs.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host, no port: `api.example.com`.
    Exact(String),
    /// Lower-case suffix including the leading dot: `*.example.com` is
    /// stored as `.example.com` and does not match `example.com` itself.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Source of a regex that has already been checked to compile.
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    Forward(Forward),
    Redirect(Redirect),
    FixedResponse(FixedResponse),
}

/// `forward:`. `target_group: x` is stored as one entry of weight 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// Weights 0..=1000, not all 0; names resolve to existing groups.
    pub target_groups: Vec<WeightedGroup>,
    /// Group stickiness (http routes only).
    pub stickiness: Option<Stickiness>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WeightedGroup {
    pub name: String,
    pub weight: u32,
}

/// A cookie that binds a client to a group (on a forward; default cookie
/// `SWYG`) or to a target (on a group; default cookie `SWYD`).
/// Default duration 1h.
#[derive(Debug, Clone, PartialEq)]
pub struct Stickiness {
    pub cookie: String,
    pub duration: Duration,
}

/// `redirect:`. Either `location` (used as given) or any of
/// scheme/host/port/path replacing the request's. Status default 301;
/// one of 301, 302, 303, 307, 308.
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub location: Option<String>,
    /// `http` or `https`.
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: u16,
}

/// `fixed_response:`. Defaults: status 200, content_type text/plain, body "".
#[derive(Debug, Clone, PartialEq)]
pub struct FixedResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// HTTP/1.1 to the targets.
    Http,
    /// HTTP/2 with prior knowledge (h2c) to the targets.
    Http2,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Random,
    ConsistentHash(HashOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// Lower-case header name.
    Header(String),
    Cookie(String),
    ClientIp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroup {
    pub name: String,
    /// Default http.
    pub protocol: GroupProtocol,
    /// Default round_robin.
    pub balance: Balance,
    /// May be empty (targets can be added through the API).
    pub targets: Vec<TargetSpec>,
    pub health_check: HealthCheck,
    /// `None` = passive outlier detection off.
    pub outlier_detection: Option<OutlierDetection>,
    /// Default 30s.
    pub deregistration_delay: Duration,
    /// Default 0s (off).
    pub slow_start: Duration,
    /// Default true.
    pub fail_open: bool,
    /// Name of an existing group; chains allowed, cycles rejected.
    pub failover: Option<String>,
    /// Target stickiness, http groups only.
    pub stickiness: Option<Stickiness>,
    pub retries: Retries,
    pub timeouts: GroupTimeouts,
    pub limits: Limits,
    /// tcp groups only.
    pub proxy_protocol: Option<ProxyProtocol>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub address: Address,
    /// 1..=1000, default 1.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckProtocol {
    Http,
    Tcp,
    /// Always healthy.
    None,
}

/// `health_check:`. Defaults: protocol http for http/http2 groups and tcp
/// for tcp groups, path `/`, port = target's, host = target address,
/// interval 10s, timeout 5s (< interval), thresholds 3/3, matcher 200-399.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub protocol: CheckProtocol,
    /// An `http` check goes as h2c (prior knowledge): the group speaks
    /// HTTP/2 to its targets (`protocol: http2`), which may speak nothing
    /// else (gRPC servers, NGINX's cleartext `http2` listeners), and the
    /// check goes to the traffic port (a `port` of its own is HTTP/1.1).
    pub h2c: bool,
    pub path: String,
    pub port: Option<u16>,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub matcher: StatusMatcher,
}

/// `"200"`, `"200,204"`, `"200-299"`, or a comma list mixing both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher {
    /// Inclusive ranges; a single code is `(c, c)`.
    pub ranges: Vec<(u16, u16)>,
}

impl StatusMatcher {
    pub fn matches(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| lo <= status && status <= hi)
    }
}

/// Defaults when the section is present: consecutive_failures 5,
/// ejection 30s, max_ejected_percent 50.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_failures: u32,
    pub ejection: Duration,
    /// 0..=100.
    pub max_ejected_percent: u32,
}

/// Defaults: attempts 2, backoff 25ms, on `[connect_failure]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    /// Retries after the first try (2 = up to 3 tries).
    pub attempts: u32,
    /// Base of the exponential backoff (with jitter).
    pub backoff: Duration,
    pub on: RetryOn,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub reset: bool,
    /// Upstream statuses (5xx) that are retried for safe requests.
    pub statuses: Vec<u16>,
}

/// Defaults: connect 5s, request 60s, idle 90s.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupTimeouts {
    pub connect: Duration,
    /// Until the upstream's response head arrives; then 504. Also the
    /// longest a response body may wait for the upstream's next bytes.
    pub request: Duration,
    /// Idle pooled upstream connections are closed after this.
    pub idle: Duration,
}

/// Per target. `None` = unlimited. Hitting a limit answers 503; for
/// `tcp` groups it closes the client connection, and `max_requests` caps
/// open connections as `max_connections` does (one connection is one
/// request; the smaller applies).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    pub max_requests: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    V2,
}
