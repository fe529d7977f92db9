//! HTTP listeners: accept loop, connection limits, graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_config::Listener;
use switchyard_routing::Snapshot;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;

use crate::body::RequestBody;
use crate::guard::{ConnState, GuardedIo};
use crate::headers::ClientInfo;
use crate::service::{handle, ConnCtx};
use crate::stop::StopSignal;
use crate::Shared;

/// Largest request head accepted; bigger ones get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header lines accepted per request; more get 431.
pub const MAX_HEADERS: usize = 128;
/// Concurrent HTTP/2 streams per client connection.
pub const MAX_H2_STREAMS: u32 = 256;

/// Binds `addr` with SO_REUSEADDR (restarts do not wait out TIME_WAIT)
/// and TCP_NODELAY, which on Linux every accepted connection inherits:
/// listeners for `spawn_http` and L4 should come from here.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A running listener. Dropping the handle does not stop it; `stop` does.
pub struct ListenerHandle {
    pub name: String,
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    limit: Arc<Semaphore>,
    max_connections: std::sync::atomic::AtomicUsize,
    /// The last snapshot that had this listener, once a reload removed it:
    /// requests still arriving on its draining connections use it.
    retired: Arc<ArcSwapOption<Snapshot>>,
}

impl ListenerHandle {
    /// Stops accepting and asks every connection to finish gracefully
    /// (HTTP/1: close after the current response; HTTP/2: GOAWAY); `join`
    /// waits for them.
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Removed by a reload: keeps serving the connections it has on `last`
    /// (the last snapshot that had it) while they drain, accepts no more.
    pub fn retire(&self, last: Arc<Snapshot>) {
        self.retired.store(Some(last));
        self.signal_stop();
    }

    /// Applies a new `max_connections` to a running listener. Lowering it
    /// takes effect as connections close.
    pub fn set_max_connections(&self, max: usize) {
        use std::sync::atomic::Ordering;
        let old = self.max_connections.swap(max, Ordering::Relaxed);
        if max > old {
            self.limit.add_permits(max - old);
        } else if old > max {
            let mut owed = old - max;
            owed -= self.limit.forget_permits(owed);
            if owed > 0 {
                // Busy permits: take them back as connections close.
                let limit = Arc::clone(&self.limit);
                tokio::spawn(async move {
                    if let Ok(p) = limit.acquire_many_owned(owed as u32).await {
                        p.forget();
                    }
                });
            }
        }
    }

    /// Waits for the listener and all its connections to end.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// The HTTP/2 server settings every client connection uses (HTTP/1.1 is
/// ours: `h1_server`).
fn h2_builder() -> http2::Builder<TokioExecutor> {
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        // What a stream may queue towards a client that reads slower than
        // its target answers. hyper's 400 KiB default made a connection's
        // 256 streams of large downloads hold about 100 MiB (measured: 483
        // MiB for 4 such connections); the connection window caps what
        // uploads can queue (below).
        .max_send_buf_size(H2_SEND_BUFFER)
        // A stream's upload waits in the balancer when its target stops
        // reading, and holds its share of the connection's window until
        // then. hyper's default gives one stream the whole window (1 MiB
        // each), so one target that stops reading stalled every other
        // upload of that client connection. Here it takes 16 such streams
        // (the 1:16 ratio of Envoy's edge settings, which use 64 KiB and
        // 1 MiB). The price: a connection may queue 4 MiB of uploads, not
        // 1 MiB.
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(16 * H2_STREAM_WINDOW);
    h2
}

/// Bytes one HTTP/2 stream may queue for its client (see `h2_builder`).
const H2_SEND_BUFFER: usize = 64 * 1024;

/// HTTP/2 flow-control window of one stream, both ways: what a stream may
/// have in flight unread. 256 KiB keeps an upload over a 50 ms path at
/// about 5 MB/s.
pub(crate) const H2_STREAM_WINDOW: u32 = 256 * 1024;

/// Serves one client connection until it ends: HTTP/2 when TLS
/// negotiated `h2` or the client opens with the h2 preface, else
/// HTTP/1.1 (with Upgrade). When `stop` turns true the connection is
/// asked to finish gracefully (HTTP/1: close after the current response;
/// HTTP/2: GOAWAY). Our own protocol detection instead of hyper-util's
/// `auto`: see `GuardedIo::sniff_h2`.
///
/// Not an `async fn`, which would keep `io` twice in this future (see
/// `service::handle`).
#[allow(clippy::manual_async_fn)] // see the comment above
fn serve_client<T>(
    mut io: GuardedIo<T>,
    ctx: Arc<ConnCtx>,
    h2: &http2::Builder<TokioExecutor>,
    alpn_h2: bool,
    stop: Arc<StopSignal>,
) -> impl Future<Output = ()> + Send + '_
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let sniffed = if alpn_h2 {
            Ok(Some(true))
        } else {
            // A client that connected and sent nothing must not hold up a
            // graceful stop until its header_read timeout; it gets the
            // stop's grace (as a keep-alive connection between requests)
            // to send its first bytes.
            tokio::select! {
                biased;
                r = io.sniff_h2() => r,
                () = stop.wait() => {
                    match tokio::time::timeout(crate::h1_server::STOP_GRACE, io.sniff_h2()).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
            }
        };
        let is_h2 = match sniffed {
            Ok(Some(h2)) => h2,
            // Closed before a byte: nothing to serve.
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "client connection ended before a request");
                return;
            }
        };
        if !is_h2 {
            let stall = io.idle();
            let stopping = std::pin::pin!(stop.wait());
            crate::h1_server::serve(io, ctx, stall, stopping).await;
            return;
        }
        let svc = service_fn(move |req: Request<Incoming>| {
            handle(req.map(RequestBody::Client), Arc::clone(&ctx))
        });
        // Boxed: inline, hyper's HTTP/2 connection state would size the task
        // of every client connection, HTTP/1.1 ones included.
        let mut conn = Box::pin(h2.serve_connection(TokioIo::new(io), svc));
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = stop.wait() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "client connection ended with an error");
        }
    }
}

/// The next client connection with its place under `max_connections`, or
/// `None` once the listener is told to stop (or its handle is gone).
/// Accept errors (EMFILE and friends) back off instead of spinning.
///
/// Under load the next connection and a free place are usually there
/// already: both are tried before the stop channel is waited on, since
/// waiting on it registers a waiter under its lock (and removes it again),
/// which cost about 350 instructions per connection. The stop is still
/// seen at once: checked before each accept, with one atomic load.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
    name: &str,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let stopped = |stop: &watch::Receiver<bool>| stop.has_changed().unwrap_or(true);
    let permit = match Arc::clone(limit).try_acquire_owned() {
        Ok(p) => p,
        Err(TryAcquireError::Closed) => return None,
        Err(TryAcquireError::NoPermits) => tokio::select! {
            biased;
            _ = stop.changed() => return None,
            p = Arc::clone(limit).acquire_owned() => p.ok()?,
        },
    };
    loop {
        // Also after an accept error: with accept polled first, a stream
        // of errors would otherwise never let the stop branch run.
        if stopped(stop) {
            return None;
        }
        tokio::select! {
            // Accept first: the stop future is then only made, not
            // polled (no waiter registered), when a connection is ready.
            biased;
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((stream, peer, permit)),
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return None,
        }
    }
}

/// Starts serving HTTP on `listener` as `spec` says.
pub fn spawn_http(
    listener: TcpListener,
    spec: &Listener,
    shared: Arc<Shared>,
) -> std::io::Result<ListenerHandle> {
    let local_addr = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    // What the connections wait on; set once the accept loop sees the stop.
    let signal = Arc::new(StopSignal::default());
    let name: Arc<str> = Arc::from(spec.name.as_str());
    let limit = Arc::new(Semaphore::new(spec.max_connections));
    let task_limit = Arc::clone(&limit);
    let retired: Arc<ArcSwapOption<Snapshot>> = Arc::new(ArcSwapOption::empty());
    let task_retired = Arc::clone(&retired);
    let fallback = spec.timeouts.clone();
    let builders = Arc::new(h2_builder());
    let active = metrics::gauge!("switchyard_connections_active", "listener" => spec.name.clone());
    let total = metrics::counter!("switchyard_connections_total", "listener" => spec.name.clone());
    let task_name = Arc::clone(&name);
    // https: TLS first (the certificate set in force is looked up per
    // connection, so a reload's renewed certificates apply at once).
    let https = spec.protocol == switchyard_config::ListenerProtocol::Https;
    let scheme: &'static str = if https { "https" } else { "http" };
    let handshakes = Arc::new(crate::tls::HandshakeMetrics::new(&spec.name, https));
    let task = tokio::spawn(async move {
        // Every connection task holds a receiver; `closed` below waits
        // for the last one to end.
        let (tracker, tracked) = watch::channel(());
        loop {
            let Some((stream, peer, permit)) =
                accept_next(&listener, &task_limit, &mut stop_rx, &task_name).await
            else {
                break;
            };
            // Linux: accepted sockets inherit TCP_NODELAY from the
            // listening socket (`bind` sets it): no syscall per connection.
            #[cfg(not(target_os = "linux"))]
            let _ = stream.set_nodelay(true);
            // Timeouts come from the current config: a reload applies them
            // to new connections.
            let timeouts = shared
                .snapshot
                .load()
                .listener(&task_name)
                .map_or_else(|| fallback.clone(), |l| l.spec.timeouts.clone());
            let (header_read, idle) = (timeouts.header_read, timeouts.idle);
            total.increment(1);
            active.increment(1.0);
            let state = Arc::new(ConnState::default());
            let ctx = Arc::new(ConnCtx {
                shared: Arc::clone(&shared),
                listener: Arc::clone(&task_name),
                client: ClientInfo::new(peer.ip(), scheme),
                client_ip: peer.ip(),
                state: Arc::clone(&state),
                scheme,
                retired: Arc::clone(&task_retired),
            });
            if https {
                let Some(config) = shared.tls.get(&task_name) else {
                    tracing::error!(listener = %task_name, "no TLS configuration; connection closed");
                    active.decrement(1.0);
                    continue;
                };
                let (builders, active, handshakes, stop) = (
                    Arc::clone(&builders),
                    active.clone(),
                    Arc::clone(&handshakes),
                    Arc::clone(&signal),
                );
                let tracked = tracked.clone();
                tokio::spawn(async move {
                    let _tracked = tracked;
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(header_read, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            handshakes.record(true);
                            let alpn_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            let io = GuardedIo::new(tls, state, header_read, idle, false);
                            Box::pin(serve_client(io, ctx, &builders, alpn_h2, stop)).await;
                        }
                        Ok(Err(e)) => {
                            handshakes.record(false);
                            tracing::debug!(error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            handshakes.record(false);
                            tracing::debug!("TLS handshake timed out");
                        }
                    }
                    active.decrement(1.0);
                    drop(permit);
                });
                continue;
            }
            let (builders, active, stop, tracked) = (
                Arc::clone(&builders),
                active.clone(),
                Arc::clone(&signal),
                tracked.clone(),
            );
            tokio::spawn(async move {
                let _tracked = tracked;
                // Made here, not before the spawn: the task's future then
                // holds the bare socket, and tokio moves that future
                // several times while spawning it and once more when it
                // ends (the wrapper is ten times the socket's size).
                let io = GuardedIo::new(stream, state, header_read, idle, true);
                // Boxed: the connection's future is kilobytes (the request's
                // future lives in it); spawning moves the task's future
                // several times and tokio copies its whole stage when it
                // ends, which made memmove 6% of a new-connection-per-request
                // profile. This task stays small.
                Box::pin(serve_client(io, ctx, &builders, false, stop)).await;
                active.decrement(1.0);
                drop(permit);
            });
        }
        // Stop accepting first, then let connections finish. A handle
        // dropped without a stop (the sender gone) ends the accept loop
        // but leaves the connections be, as before.
        if *stop_rx.borrow() {
            signal.stop();
        }
        drop(listener);
        drop(tracked);
        tracker.closed().await;
    });
    Ok(ListenerHandle {
        name: spec.name.clone(),
        local_addr,
        stop: stop_tx,
        task,
        limit,
        max_connections: std::sync::atomic::AtomicUsize::new(spec.max_connections),
        retired,
    })
}

/// The handle of a listener whose accept loop lives elsewhere in this
/// crate (`l4.rs`): same stop, join and `max_connections` behaviour.
pub(crate) fn l4_handle(
    name: String,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    limit: Arc<Semaphore>,
    max_connections: usize,
) -> ListenerHandle {
    ListenerHandle {
        name,
        local_addr,
        stop,
        task,
        limit,
        max_connections: std::sync::atomic::AtomicUsize::new(max_connections),
        // L4 connections pick their target once, at accept: nothing reads
        // the retired snapshot.
        retired: Arc::new(ArcSwapOption::empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every busy client connection keeps this future (boxed) with the
    /// request's future inside it for as long as its request is at the
    /// target: its size is most of what a connection costs in memory
    /// (RSS under 1,000 connections, benches/README.md). `async fn`s keep
    /// their arguments twice and every local live across two awaits gets a
    /// place of its own; this fails when a change brings that back. The
    /// bound leaves about 40% room over the size measured when it was set
    /// with rustc 1.95 (2,952 bytes in a release build, 2,968 in a test
    /// build; 6,920 before the request path's futures were made smaller):
    /// a new compiler lays futures out differently, and may need it moved.
    #[tokio::test]
    async fn a_client_connection_future_stays_small() {
        let yaml = "listeners:\n  - name: l\n    bind: \"127.0.0.1:0\"\n    routes:\n      - name: r\n        forward: { target_group: g }\ntarget_groups:\n  - name: g\n    targets: [ { address: \"127.0.0.1:9\" } ]\n";
        let loaded =
            switchyard_config::parse_str(yaml, "t.yaml", std::path::Path::new(".")).unwrap();
        let snapshot = Snapshot::compile(loaded.config, None).unwrap();
        let shared = Arc::new(Shared::new(
            Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)),
            crate::access_log::AccessLog::disabled(),
        ));
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (stream, peer) = accepted.unwrap();
        let state = Arc::new(ConnState::default());
        let ctx = Arc::new(ConnCtx {
            shared,
            listener: Arc::from("l"),
            client: ClientInfo::new(peer.ip(), "http"),
            client_ip: peer.ip(),
            state: Arc::clone(&state),
            scheme: "http",
            retired: Arc::new(ArcSwapOption::empty()),
        });
        let io = GuardedIo::new(
            stream,
            state,
            Duration::from_secs(5),
            Duration::from_secs(5),
            true,
        );
        let builders = h2_builder();
        let stop = Arc::new(StopSignal::default());
        let connection = serve_client(io, ctx, &builders, false, stop);
        let size = std::mem::size_of_val(&connection);
        eprintln!("client connection future: {size} bytes");
        let bound = 4096;
        assert!(
            size <= bound,
            "client connection future is {size} bytes (bound {bound})"
        );
        drop(connection);
        drop(client);
    }

    /// The accept loops rely on it instead of a setsockopt per connection.
    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_bind() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server_side, _) = accepted.unwrap();
        assert!(server_side.nodelay().unwrap(), "TCP_NODELAY not inherited");
        drop(client);
    }
}
