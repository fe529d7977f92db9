//! [`FakeUpstream`]: an in-process HTTP/1.1 + h2c server standing in for a
//! backend behind the proxy.
//!
//! Tests point a config at [`FakeUpstream::addr`] and then assert on what
//! the upstream saw ([`requests`](FakeUpstream::requests),
//! [`connections`](FakeUpstream::connections),
//! [`last_request`](FakeUpstream::last_request)) and flip its behaviour at
//! runtime ([`set_status`](FakeUpstream::set_status),
//! [`set_healthy`](FakeUpstream::set_healthy), [`stop`](FakeUpstream::stop),
//! [`restart`](FakeUpstream::restart)). The answers per path are in
//! `upstream/answer.rs` and documented on [`FakeUpstream`].

mod answer;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::listen::bind_reuse;

/// How many requests [`FakeUpstream::requests_log`] keeps: the last 1000.
pub const REQUEST_LOG_LIMIT: usize = 1000;

/// One request as the fake upstream received it (body fully read).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request method.
    pub method: Method,
    /// Path and query as sent, e.g. `/api/x?y=1` (`/` if the request had none).
    pub uri: String,
    /// The request target's authority: HTTP/2's `:authority`, or an
    /// absolute-form HTTP/1.1 target's host.
    pub authority: Option<String>,
    /// HTTP version the request arrived with (HTTP/1.x, or HTTP/2 for h2c).
    pub version: Version,
    /// Request headers, names lower-case. On HTTP/2 the authority is in the
    /// `:authority` pseudo-header, not in `host`.
    pub headers: HeaderMap,
    /// The whole request body (empty if reading it failed).
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first value of header `name` as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Builder for [`FakeUpstream`]; start with [`FakeUpstream::builder`].
#[derive(Debug, Clone)]
pub struct FakeUpstreamBuilder {
    name: String,
    status: u16,
    delay: Duration,
    body_size: Option<usize>,
    health_path: String,
    hang_health: bool,
}

impl FakeUpstreamBuilder {
    /// Status of the default answer. Default 200.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn status(mut self, status: u16) -> Self {
        self.status = checked_status(status);
        self
    }

    /// Delay before answering every request except health checks.
    /// Default none.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answer the default path with `n` bytes (`x` repeated) instead of the
    /// upstream's name. Default: the name.
    pub fn body_size(mut self, n: usize) -> Self {
        self.body_size = Some(n);
        self
    }

    /// Path of the health endpoint. Default `/health`.
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = path.into();
        self
    }

    /// If `true`, the health endpoint never answers (the request hangs until
    /// the client gives up or the upstream stops). Default `false`.
    pub fn hang_health(mut self, hang: bool) -> Self {
        self.hang_health = hang;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    ///
    /// # Panics
    ///
    /// If the name is not a valid header value or no loopback port can be
    /// bound.
    pub async fn start(self) -> FakeUpstream {
        let name_header = HeaderValue::from_str(&self.name).unwrap_or_else(|_| {
            panic!(
                "testkit: upstream name {:?} is not a valid header value",
                self.name
            )
        });
        let body = match self.body_size {
            Some(n) => Bytes::from(vec![b'x'; n]),
            None => Bytes::from(self.name.clone()),
        };
        let listener = bind_reuse(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|e| panic!("testkit: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("testkit: no local address: {e}"));
        let shared = Arc::new(Shared {
            name: self.name,
            name_header,
            body,
            health_path: self.health_path,
            status: AtomicU16::new(self.status),
            delay_nanos: AtomicU64::new(duration_nanos(self.delay)),
            healthy: AtomicBool::new(true),
            hang_health: AtomicBool::new(self.hang_health),
            requests: AtomicUsize::new(0),
            health_requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            log: Mutex::new(VecDeque::new()),
            last_health: Mutex::new(None),
        });
        let running = Running::spawn(listener, shared.clone());
        FakeUpstream {
            shared,
            addr,
            running: tokio::sync::Mutex::new(Some(running)),
        }
    }
}

/// A fake HTTP upstream: HTTP/1.1 with keep-alive, and h2c (prior
/// knowledge) on the same port, on `127.0.0.1` with an ephemeral port.
///
/// Answers, by request path (the query is ignored):
///
/// | path | answer |
/// |---|---|
/// | health path (`/health`) | 200 `ok` when healthy, 503 `unhealthy` after `set_healthy(false)`; never answers with `hang_health`. Counted in [`health_requests`](Self::health_requests) only. No delay. |
/// | `/status/NNN` | status NNN, body = name (400 if NNN is not a status) |
/// | `/sleep/MS` | sleeps MS milliseconds, then 200, body = name |
/// | `/echo` | 200, body = the request body, same `content-type` |
/// | `/headers` | 200, JSON object of the request headers: lower-case names, repeated headers joined with `", "` |
/// | `/close` | the default answer plus `connection: close`, then closes the connection (HTTP/2: GOAWAY) |
/// | `/reset` | no answer: drops the connection with a TCP RST (`SO_LINGER` 0). On HTTP/2 the whole connection goes. |
/// | anything else | the configured status, `content-type: text/plain`, body = name (or `body_size` bytes) |
///
/// Every answer carries `x-upstream: <name>`. Every request except health
/// checks is recorded, counted in [`requests`](Self::requests) once its body
/// has been read, and then waits the configured delay before being answered
/// (special paths included). The special paths ignore the configured status.
///
/// Dropping the value stops the server, like [`stop`](Self::stop) but
/// without waiting.
#[derive(Debug)]
pub struct FakeUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl FakeUpstream {
    /// Starts building a fake upstream that answers with `name`.
    pub fn builder(name: impl Into<String>) -> FakeUpstreamBuilder {
        FakeUpstreamBuilder {
            name: name.into(),
            status: 200,
            delay: Duration::ZERO,
            body_size: None,
            health_path: "/health".to_owned(),
            hang_health: false,
        }
    }

    /// The address it listens on (`127.0.0.1:<ephemeral>`); unchanged by
    /// [`restart`](Self::restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The name it answers with (body and `x-upstream` header).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Requests seen, health checks excluded, since start (kept across
    /// stop/restart). A request counts once its body has been read, before
    /// the delay, so delayed, hung and reset requests count too.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Relaxed)
    }

    /// Requests to the health path seen since start.
    pub fn health_requests(&self) -> usize {
        self.shared.health_requests.load(Relaxed)
    }

    /// TCP connections accepted since start (kept across stop/restart).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Relaxed)
    }

    /// The most recent non-health request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.log().back().cloned()
    }

    /// The last [`REQUEST_LOG_LIMIT`] non-health requests, oldest first.
    pub fn requests_log(&self) -> Vec<RecordedRequest> {
        self.shared.log().iter().cloned().collect()
    }

    /// The most recent health-check request, if any.
    pub fn last_health_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.last_health).clone()
    }

    /// Changes the status of the default answer, effective for the next
    /// request.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(checked_status(status), Relaxed);
    }

    /// Changes the delay before answering, effective for the next request.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_nanos
            .store(duration_nanos(delay), Relaxed);
    }

    /// `false` makes the health path answer 503; `true` (the start state)
    /// makes it answer 200 `ok`. Other paths are unaffected.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Relaxed);
    }

    /// `true` makes the health path never answer, from the next check on.
    pub fn set_hang_health(&self, hang: bool) {
        self.shared.hang_health.store(hang, Relaxed);
    }

    /// Stops listening and drops every open connection (no graceful close,
    /// in-flight requests get no answer). When it returns, the port is
    /// closed and connecting to it is refused. No-op if already stopped.
    pub async fn stop(&self) {
        let mut running = self.running.lock().await;
        if let Some(running) = running.take() {
            running.stop().await;
        }
    }

    /// Listens again on the same port after [`stop`](Self::stop), with the
    /// same settings and counters. No-op if running.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound again within about a second (another
    /// socket took it meanwhile).
    pub async fn restart(&self) {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return;
        }
        let listener = rebind(self.addr).await;
        *running = Some(Running::spawn(listener, self.shared.clone()));
    }
}

/// Binds `addr` again, retrying for about a second.
async fn rebind(addr: SocketAddr) -> TcpListener {
    const ATTEMPTS: u32 = 50;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        match bind_reuse(addr) {
            Ok(listener) => return listener,
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("testkit: cannot listen again on {addr}: {last_error:?}")
}

/// State shared by the handle, the accept loop and every connection.
#[derive(Debug)]
struct Shared {
    name: String,
    name_header: HeaderValue,
    /// Default body: the name, or `body_size` bytes; built once.
    body: Bytes,
    health_path: String,
    status: AtomicU16,
    delay_nanos: AtomicU64,
    healthy: AtomicBool,
    hang_health: AtomicBool,
    requests: AtomicUsize,
    health_requests: AtomicUsize,
    connections: AtomicUsize,
    log: Mutex<VecDeque<RecordedRequest>>,
    last_health: Mutex<Option<RecordedRequest>>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        lock(&self.log)
    }

    /// Appends to the bounded log, then counts: a test that sees the count
    /// move can read the request.
    fn record(&self, request: RecordedRequest) {
        {
            let mut log = self.log();
            if log.len() >= REQUEST_LOG_LIMIT {
                log.pop_front();
            }
            log.push_back(request);
        }
        self.requests.fetch_add(1, Relaxed);
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Relaxed))
    }
}

/// Locks ignoring poisoning: a panicking test thread must not turn every
/// later read into a second panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn checked_status(status: u16) -> u16 {
    match StatusCode::from_u16(status) {
        Ok(_) => status,
        Err(_) => panic!("testkit: {status} is not an HTTP status code"),
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A serving listener: the accept loop and how to stop it.
#[derive(Debug)]
struct Running {
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    fn spawn(listener: TcpListener, shared: Arc<Shared>) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let counter = Arc::clone(&shared);
            crate::listen::accept_loop(listener, &counter.connections, stop_rx, |stream| {
                serve_connection(stream, Arc::clone(&shared))
            })
            .await
        });
        Running { stop_tx, task }
    }

    /// Signals the accept loop and waits until listener and connections are
    /// closed.
    async fn stop(self) {
        let _ = self.stop_tx.send(());
        let _ = self.task.await;
    }
}

/// Per-connection controls the request handler can pull.
#[derive(Debug)]
struct ConnControl {
    /// `/reset`: drop the connection with RST.
    reset: Notify,
    /// `/close`: close gracefully after the in-flight answer.
    close: Notify,
    /// Closed (its sender dropped) when the connection task ends, so
    /// handlers running in their own tasks (HTTP/2 streams) stop waiting.
    gone: watch::Receiver<()>,
}

impl ConnControl {
    /// Resolves once the connection is gone.
    async fn gone(&self) {
        let mut gone = self.gone.clone();
        // Nothing is ever sent: this only returns when the sender drops.
        while gone.changed().await.is_ok() {}
    }

    /// Sleeps `d`; `false` if the connection went away first.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.gone() => false,
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let rst = Arc::new(AtomicBool::new(false));
    let (_gone_tx, gone_rx) = watch::channel(());
    let control = Arc::new(ConnControl {
        reset: Notify::new(),
        close: Notify::new(),
        gone: gone_rx,
    });
    let io = TokioIo::new(ConnIo {
        stream,
        rst: rst.clone(),
    });
    let service = {
        let control = control.clone();
        service_fn(move |req| answer::answer(shared.clone(), control.clone(), req))
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            // Errors here are clients going away mid-request: nothing to do.
            _ = conn.as_mut() => break,
            () = control.reset.notified() => {
                rst.store(true, Relaxed);
                break;
            }
            () = control.close.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    // Leaving drops `conn`, then its socket (with RST if asked), then
    // `_gone_tx`.
}

/// The accepted socket, so that dropping it can send RST instead of FIN.
#[derive(Debug)]
struct ConnIo {
    stream: TcpStream,
    rst: Arc<AtomicBool>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.rst.load(Relaxed) {
            // Zero linger makes close() send RST and discard unsent data.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
