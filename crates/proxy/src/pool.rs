//! Per-target pools of keep-alive upstream connections: HTTP/1.1 (one
//! request at a time per connection, many idle connections) or h2c
//! (multiplexed connections shared by every request, one until it carries
//! `H2_STREAMS` streams).
//!
//! Our own pool rather than hyper-util's legacy client because the proxy
//! needs what that client hides: connect and send as separate steps (a
//! connect failure leaves the request in our hands, so retrying it is always
//! safe, body or not), the request back when a pooled connection turns out
//! stale before anything was written, and per-target control for draining
//! (close idle connections at once, cut busy ones at the deadline).
//! HTTP/1.1 connections are our own client's (`h1`), h2c ones hyper's.
//!
//! The lock is held only to push or pop one entry.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use switchyard_routing::{Target, TargetState};

use crate::body::RequestBody;
use crate::h1;

/// Idle connections kept per target at most; more are closed when returned.
pub const MAX_IDLE_PER_TARGET: usize = 1024;

/// An upstream connection ready for a request: one of ours for HTTP/1.1
/// (see `h1`), or a handle on the shared h2c connection.
pub enum Sender {
    H1(h1::Conn),
    H2(H2Handle),
}

/// A handle on an h2c connection, numbered so that the pool can tell
/// whether the connection a refusal came from is still the shared one.
#[derive(Clone)]
pub struct H2Handle {
    send: http2::SendRequest<RequestBody>,
    conn: u64,
    /// Streams open on the connection (see `Stream`).
    streams: Arc<AtomicUsize>,
}

/// Numbers h2c connections, process-wide.
static H2_CONNS: AtomicU64 = AtomicU64::new(0);

/// An upstream response body: read by us (HTTP/1.1) or by hyper (h2c,
/// with its place among its connection's streams).
pub enum UpBody {
    H1(h1::Body),
    H2(Incoming, Stream),
}

/// Streams one h2c connection carries before the next request opens
/// another connection. Below the limits targets announce (NGINX 128, Go
/// 250, hyper 200, Envoy 2^31; h2o and Apache 100), so that streams held by
/// clients that stopped reading cannot make every other request to the
/// target wait for one: a connection that fills up leaves the rest to a
/// new one. A target announcing fewer queues the extra requests on the
/// connection, as it did with one.
pub const H2_STREAMS: usize = 100;

/// One open stream on an h2c connection, counted until dropped (the
/// response body read or let go, or the exchange failed).
pub struct Stream(Arc<AtomicUsize>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub use crate::h1::SendError;

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(c) => c.is_closed(),
            Sender::H2(h) => h.send.is_closed(),
        }
    }

    /// Sends `req`. The future owns the connection, so an exchange the
    /// client abandons can finish without it (`linger`).
    pub fn send(self, req: Request<RequestBody>) -> ResponseFuture {
        match self {
            Sender::H1(conn) => Box::pin(conn.send(req, UpBody::H1)),
            Sender::H2(H2Handle {
                mut send,
                conn,
                streams,
            }) => Box::pin(async move {
                streams.fetch_add(1, Ordering::Relaxed);
                let stream = Stream(streams);
                // Closed before we wrote anything: the request is still ours.
                if send.ready().await.is_err() {
                    return Err(SendError::Unsent(Box::new(req)));
                }
                match send.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(|body| UpBody::H2(body, stream))),
                    Err(mut e) => Err(match e.take_message() {
                        Some(req) => SendError::Unsent(Box::new(req)),
                        None => {
                            let e = e.into_error();
                            match refusal(&e) {
                                Some(going_away) => SendError::Refused { conn, going_away },
                                None => SendError::Failed(e.to_string()),
                            }
                        }
                    }),
                }
            }),
        }
    }
}

/// Whether an h2c exchange failed because the target refused the stream
/// before processing it (RFC 9113 8.7), and if so whether by a GOAWAY
/// (`Some(true)`: the connection takes no more streams) or REFUSED_STREAM.
/// h2 fails exactly the streams a GOAWAY excludes (above its last stream
/// id) with the remote GOAWAY error, and every stream opened after it;
/// streams the target did take and then lost fail otherwise (a broken
/// pipe), so they are never mistaken for refused ones.
///
/// A request still waiting to open a stream (the target at its
/// SETTINGS_MAX_CONCURRENT_STREAMS) when the GOAWAY comes never went out:
/// hyper's dispatch task ends holding it and reports "dispatch task is
/// gone", the one user error its h2c client path gives for a request.
fn refusal(e: &hyper::Error) -> Option<bool> {
    if e.is_user() {
        return Some(true);
    }
    let h2 = std::error::Error::source(e)?.downcast_ref::<h2::Error>()?;
    if !h2.is_remote() {
        return None;
    }
    if h2.is_go_away() {
        return Some(true);
    }
    (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)).then_some(false)
}

/// An upstream's answer on its way (boxed: one small allocation per
/// request buys an exchange that can outlive its client, see `linger`).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<UpBody>, SendError>> + Send>>;

/// The largest flow-control window HTTP/2 allows (RFC 9113 6.9.1).
const H2_MAX_WINDOW: u32 = (1 << 31) - 1;

/// Body bytes of an abandoned response read to keep its connection; a
/// longer body closes the connection instead (cheaper than reading it).
const LINGER_BYTES: usize = 64 * 1024;

/// Returns `sender` to `target`'s pool after a complete exchange, unless
/// the target is draining (its keep-alive connections close after their
/// current response).
pub fn release(target: &Target, sender: Sender) {
    if target.state() == TargetState::Draining {
        return;
    }
    if let Some(pool) = target.ext.get().and_then(|p| p.downcast_ref::<Pool>()) {
        pool.put(sender);
    }
}

/// The client went away in the middle of an HTTP/1.1 exchange: before the
/// answer (`head`) or during its body. Dropping the exchange would close
/// the upstream connection (its state unknown), so a burst of client
/// aborts (a load tool stopping, a balancer in front restarting) would
/// cost as many reconnects. Instead the rest of the answer is read in the
/// background and discarded, and the connection pooled, within `limit` and
/// `LINGER_BYTES`; beyond either the connection closes. Only this abort
/// path spawns a task. h2c needs none of this (the caller does not call
/// it): the stream is reset and the connection lives on.
pub fn linger(
    target: Arc<Target>,
    head: Option<ResponseFuture>,
    body: Option<h1::Body>,
    limit: Duration,
) {
    // Dropped outside a runtime (process teardown): nothing to keep.
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let finish = async {
            let mut body = match (head, body) {
                (Some(head), _) => match head.await.ok()?.into_body() {
                    UpBody::H1(b) => b,
                    UpBody::H2(..) => return None,
                },
                (None, Some(body)) => body,
                (None, None) => return None,
            };
            // Read to close, `Connection: close`, an upgrade: nothing to keep.
            if !body.reusable() {
                return None;
            }
            let mut left = LINGER_BYTES;
            while let Some(frame) = std::future::poll_fn(|cx| body.poll_frame(cx)).await {
                if let Some(data) = frame.ok()?.data_ref() {
                    left = left.checked_sub(data.len())?;
                }
            }
            // An upgraded or unframed answer gives no connection back.
            body.take_conn()
        };
        if let Ok(Some(conn)) = tokio::time::timeout(limit, finish).await {
            release(&target, Sender::H1(conn));
        }
    });
}

struct Idle {
    sender: Sender,
    since: Instant,
}

pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// The shared h2c connections, for `protocol: http2` groups: the
    /// first with room (see `H2_STREAMS`) takes the next request.
    h2: Mutex<Vec<H2Handle>>,
    /// Held while an h2c connection is being made, so that a burst of
    /// first requests waits for one connection instead of opening many.
    h2_connecting: tokio::sync::Mutex<()>,
    idle_timeout: Duration,
    /// Every connection task of this target (h2c connections, TCP streams,
    /// tunnels), so that a draining target's remaining work can be cut at
    /// its deadline.
    tasks: Mutex<Vec<AbortHandle>>,
    /// The same for HTTP/1.1 connections, which have no task of their own.
    cuts: Mutex<Vec<Weak<h1::Cut>>>,
    /// Open (or opening) connections, for `limits.max_connections`.
    slots: Arc<Slots>,
    /// Requests waiting for a connection, for `limits.max_pending`.
    waiting: AtomicUsize,
}

/// Connection accounting shared with the connection tasks.
#[derive(Default)]
struct Slots {
    open: AtomicUsize,
    /// Signalled when a connection is returned or closes while requests
    /// wait at `max_connections`.
    freed: Notify,
}

/// One counted upstream connection; released when dropped (the
/// connection's task ends, or connecting failed).
pub struct Slot(Arc<Slots>);

impl Slot {
    /// A slot beyond any limit: the first h2c connection may always be
    /// made (`max_connections` then caps how many more).
    fn extra(slots: &Arc<Slots>) -> Slot {
        slots.open.fetch_add(1, Ordering::SeqCst);
        Slot(Arc::clone(slots))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.freed.notify_one();
    }
}

/// Why no connection could be had under the target's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// `max_pending` requests already wait.
    Pending,
    /// No connection came free within the wait.
    Timeout,
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Handshake(e) => write!(f, "{e}"),
        }
    }
}

impl Pool {
    pub fn new(idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(Vec::new()),
            h2_connecting: tokio::sync::Mutex::new(()),
            idle_timeout,
            tasks: Mutex::new(Vec::new()),
            cuts: Mutex::new(Vec::new()),
            slots: Arc::new(Slots::default()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A live idle connection, most recently used first (warm, and the
    /// least likely to have been closed by the upstream's own timeout).
    /// For h2c, a handle on the first shared connection with room.
    pub fn take(&self, h2: bool) -> Option<Sender> {
        if h2 {
            return self.take_h2(H2_STREAMS);
        }
        let now = Instant::now();
        loop {
            let idle = {
                let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                guard.pop()?
            };
            if idle.sender.is_closed() || now.duration_since(idle.since) > self.idle_timeout {
                continue;
            }
            return Some(idle.sender);
        }
    }

    /// A slot for a new connection, unless `max` are open already.
    pub fn try_slot(&self, max: Option<u32>) -> Option<Slot> {
        let open = &self.slots.open;
        let mut cur = open.load(Ordering::SeqCst);
        loop {
            if max.is_some_and(|m| cur >= m as usize) {
                return None;
            }
            match open.compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(Slot(Arc::clone(&self.slots))),
                Err(now) => cur = now,
            }
        }
    }

    /// At `max_connections`: waits (at most `wait`, and only if fewer than
    /// `max_pending` already wait) for an idle connection or a free slot.
    /// Without `reuse` (an Upgrade, or a redo after a stale connection),
    /// only a slot will do: an idle connection is closed to free its own.
    pub async fn wait_for_connection(
        &self,
        max: Option<u32>,
        max_pending: Option<u32>,
        wait: Duration,
        reuse: bool,
    ) -> Result<Result<Sender, Slot>, LimitError> {
        self.wait_at_limit(max, max_pending, wait, || {
            let idle = self.take(false);
            if reuse {
                return idle;
            }
            drop(idle);
            None
        })
        .await
    }

    /// A slot for a connection that is never pooled (an L4 stream): at
    /// once if fewer than `max` are open, else waits as
    /// [`Pool::wait_for_connection`] does, for a slot only.
    pub async fn wait_for_slot(
        &self,
        max: Option<u32>,
        max_pending: Option<u32>,
        wait: Duration,
    ) -> Result<Slot, LimitError> {
        let Err(slot) = self
            .wait_at_limit(max, max_pending, wait, || None::<Infallible>)
            .await?;
        Ok(slot)
    }

    /// The wait behind both: a free slot, or whatever `reuse` hands out
    /// (an idle connection) once woken by a return or a close.
    async fn wait_at_limit<T>(
        &self,
        max: Option<u32>,
        max_pending: Option<u32>,
        wait: Duration,
        reuse: impl Fn() -> Option<T>,
    ) -> Result<Result<T, Slot>, LimitError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(slot) = self.try_slot(max) {
                return Ok(Err(slot));
            }
            if max_pending.is_some_and(|m| self.waiting.load(Ordering::SeqCst) >= m as usize) {
                return Err(LimitError::Pending);
            }
            let freed = self.slots.freed.notified();
            tokio::pin!(freed);
            // Registered before looking again, so a return in between is
            // not missed.
            freed.as_mut().enable();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let got = match reuse() {
                Some(s) => Some(Ok(Ok(s))),
                // `reuse` may have closed an idle connection, freeing a slot.
                None => match self.try_slot(max) {
                    Some(slot) => Some(Ok(Err(slot))),
                    None => match tokio::time::timeout_at(deadline, freed).await {
                        Ok(()) => None,
                        Err(_) => Some(Err(LimitError::Timeout)),
                    },
                },
            };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Some(result) = got {
                return result;
            }
            if let Some(s) = reuse() {
                return Ok(Ok(s));
            }
        }
    }

    /// Returns a connection after its response finished.
    pub fn put(&self, sender: Sender) {
        let sender = match sender {
            Sender::H1(s) if !s.is_closed() => Sender::H1(s),
            // h2 handles are clones of the shared connection; a new h2
            // connection is installed by `share_h2`.
            _ => return,
        };
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if guard.len() < MAX_IDLE_PER_TARGET {
            guard.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
        drop(guard);
        // Only requests held at max_connections wait for this.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.slots.freed.notify_one();
        }
    }

    /// A handle on the first open shared h2c connection carrying fewer
    /// than `room` streams; closed ones are let go on the way.
    fn take_h2(&self, room: usize) -> Option<Sender> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|h| !h.send.is_closed());
        h2.iter()
            .find(|h| h.streams.load(Ordering::Relaxed) < room)
            .map(|h| Sender::H2(h.clone()))
    }

    /// A shared h2c connection with room, made (once, whatever the number
    /// of requests waiting) if there is none. At `max_connections`, the
    /// least busy one takes the request beyond its share.
    pub async fn h2_or_connect(
        &self,
        addr: &str,
        timeout: Duration,
        max: Option<u32>,
    ) -> Result<Sender, ConnectError> {
        if let Some(s) = self.take_h2(H2_STREAMS) {
            return Ok(s);
        }
        let _one = self.h2_connecting.lock().await;
        if let Some(s) = self.take_h2(H2_STREAMS) {
            return Ok(s);
        }
        let slot = match self.try_slot(max) {
            Some(slot) => slot,
            None => match self.least_busy_h2() {
                Some(s) => return Ok(s),
                // None open that counts: the first one may always be made.
                None => Slot::extra(&self.slots),
            },
        };
        let s = connect(addr, timeout, Some(self), true, Some(slot)).await?;
        if let Sender::H2(h) = &s {
            self.h2
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(h.clone());
        }
        Ok(s)
    }

    fn least_busy_h2(&self) -> Option<Sender> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|h| !h.send.is_closed());
        h2.iter()
            .min_by_key(|h| h.streams.load(Ordering::Relaxed))
            .map(|h| Sender::H2(h.clone()))
    }

    /// Stops sharing h2c connection `conn`, which the target is closing
    /// (it sent GOAWAY): the next request makes a new one at once rather
    /// than being refused on it too. Its streams in flight finish on it.
    pub fn retire_h2(&self, conn: u64) {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|h| h.conn != conn);
    }

    /// Closes every idle connection (draining, shutdown). The shared h2c
    /// connection is let go: it closes when its last stream ends.
    pub fn clear(&self) {
        let drained = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(drained);
        self.h2.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Drops connections idle for longer than the idle timeout.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        guard.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) <= self.idle_timeout);
        drop(guard);
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|h| !h.send.is_closed());
    }

    /// Registers a connection task (an upstream HTTP connection, a TCP
    /// stream) to be aborted by [`Pool::cut_all`].
    pub fn track(&self, task: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Finished tasks are dropped here rather than by a sweeper.
        if tasks.len() >= 64 {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(task);
    }

    /// Registers an HTTP/1.1 connection to be cut by [`Pool::cut_all`].
    fn track_conn(&self, cut: &Arc<h1::Cut>) {
        let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        // Closed connections are dropped here rather than by a sweeper.
        if cuts.len() >= 64 {
            cuts.retain(|c| c.strong_count() > 0);
        }
        cuts.push(Arc::downgrade(cut));
    }

    /// Closes everything: idle connections and every connection still
    /// carrying a request. Requests in flight on them fail. Used at a
    /// draining target's deadline.
    pub fn cut_all(&self) {
        self.clear();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
        }
        let cuts = std::mem::take(&mut *self.cuts.lock().unwrap_or_else(|p| p.into_inner()));
        for c in cuts.iter().filter_map(Weak::upgrade) {
            c.cut();
        }
    }
}

/// Opens a new connection to `addr` within `timeout` (HTTP/1.1, or h2c
/// with prior knowledge when `h2`); its task is tracked by `pool` when
/// given and holds `slot` (the connection's place under
/// `max_connections`) until the connection ends.
pub async fn connect(
    addr: &str,
    timeout: Duration,
    pool: Option<&Pool>,
    h2: bool,
    slot: Option<Slot>,
) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(s)) => s,
    };
    // Requests are small writes that must leave at once.
    let _ = stream.set_nodelay(true);
    let (sender, task) = if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            // Every client of the target shares this connection. A client
            // that stops reading leaves its stream's data waiting here and
            // holding the connection's window; with hyper's default (2 MiB
            // a stream, 5 MiB the connection) three such clients stalled
            // every answer to every other client. So each stream may hold
            // only its own window, and the connection's is as large as h2
            // allows: what waits is bounded per stalled client.
            .initial_stream_window_size(crate::listener::H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_MAX_WINDOW)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        (
            Sender::H2(H2Handle {
                send: sender,
                conn: H2_CONNS.fetch_add(1, Ordering::Relaxed),
                streams: Arc::default(),
            }),
            tokio::spawn(async move {
                let _slot = slot;
                let _ = conn.await;
            }),
        )
    } else {
        let cut = Arc::new(h1::Cut::default());
        if let Some(pool) = pool {
            pool.track_conn(&cut);
        }
        return Ok(Sender::H1(h1::Conn::new(stream, cut, slot)));
    };
    if let Some(pool) = pool {
        pool.track(task.abort_handle());
    }
    Ok(sender)
}
