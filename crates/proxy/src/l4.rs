//! `tcp` and `tls` listeners: each accepted connection goes to one target
//! for its whole life, and its bytes are copied both ways.
//!
//! Design choices:
//! - The same routing as HTTP: a group by the listener's weighted
//!   `forward` split (`Snapshot::choose_group`), a target by the group's
//!   algorithm with health, draining, failover and fail_open honoured
//!   (`Snapshot::pick`, client IP as the hash key). The snapshot is read
//!   once per connection, after the TLS handshake, and not held while
//!   bytes flow: a long-lived connection never pins an old config.
//! - Connect failures move on to another target (`retries.attempts`,
//!   backoff with jitter) since nothing was sent yet; nothing is retried
//!   once bytes have flowed. They also feed passive outlier detection.
//! - `limits` count connections per target in the target's pool, with
//!   the pool's own slots and wait (`Pool::wait_for_slot`), so one
//!   mechanism serves HTTP and TCP. A TCP connection is one request, so
//!   `max_requests` caps the same count as `max_connections` and the
//!   smaller applies. A client connection at the cap waits, like an HTTP
//!   request, at most `timeouts.connect` and only if fewer than
//!   `max_pending` already wait; then it is closed: a byte stream has no
//!   503 to send, and its client may go on to another balancer. The slot
//!   is taken before connecting and moved into the copy task, so it counts
//!   the connection until its bytes stop flowing (or the drain deadline
//!   aborts the task).
//! - The target's in-flight guard lives in the copy task, which is spawned
//!   on its own and registered with the target's pool: a draining target
//!   sees its TCP connections as in flight (so it is not forgotten early),
//!   and at `deregistration_delay` `Pool::cut_all` aborts the task, which
//!   closes both sockets and releases the guard.
//! - TLS (`tls` listeners) is terminated first, within the listener's
//!   `header_read` timeout; the server config is looked up per connection
//!   in [`crate::tls::TlsStore`], so a reload's renewed certificate applies
//!   to the next handshake on a running listener.
//! - Stopping a listener stops accepting and then waits for its
//!   connections: a byte stream has no "finish the current request", so
//!   shutdown's own timeout bounds the wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge};
use rustls::ServerConfig;
use switchyard_config::{Limits, Listener, ListenerTimeouts, ProxyProtocol};
use switchyard_health::outlier::observe;
use switchyard_routing::{InFlight, PickInput, Snapshot, Target};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::forward::pool_of;
use crate::listener::{accept_next, l4_handle, ListenerHandle};
use crate::pool::{LimitError, Slot};
use crate::tcp_copy::{relay, Ended};
use crate::tls::HandshakeMetrics;
use crate::{proxy_protocol, Shared};

/// Per-listener metric handles, registered once.
struct L4Metrics {
    active: Gauge,
    total: Counter,
    /// `switchyard_tcp_bytes_total{direction="rx"}`: client -> target.
    rx: Counter,
    /// `direction="tx"`: target -> client.
    tx: Counter,
    handshakes: HandshakeMetrics,
}

impl L4Metrics {
    fn new(listener: &str, tls: bool) -> L4Metrics {
        let bytes = |direction: &'static str| {
            metrics::counter!(
                "switchyard_tcp_bytes_total",
                "listener" => listener.to_owned(),
                "direction" => direction
            )
        };
        L4Metrics {
            active: metrics::gauge!("switchyard_connections_active", "listener" => listener.to_owned()),
            total: metrics::counter!("switchyard_connections_total", "listener" => listener.to_owned()),
            rx: bytes("rx"),
            tx: bytes("tx"),
            handshakes: HandshakeMetrics::new(listener, tls),
        }
    }
}

/// What every connection of one L4 listener shares.
struct Ctx {
    name: Arc<str>,
    /// The bound address, when a connection's own local address is unknown.
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// The listener's timeouts when the snapshot no longer lists it.
    fallback: ListenerTimeouts,
    /// `Some` for tls listeners: the config at start, used when the
    /// store has none for this listener.
    tls: Option<Arc<ServerConfig>>,
    metrics: L4Metrics,
}

impl Ctx {
    /// The listener's timeouts in the current config (a reload applies
    /// them to new connections).
    fn timeouts(&self) -> ListenerTimeouts {
        self.shared
            .snapshot
            .load()
            .listener(&self.name)
            .map_or_else(|| self.fallback.clone(), |l| l.spec.timeouts.clone())
    }

    /// The TLS config in force for this listener; `None` for tcp ones.
    fn tls_config(&self) -> Option<Arc<ServerConfig>> {
        let initial = self.tls.as_ref()?;
        Some(
            self.shared
                .tls
                .get(&self.name)
                .unwrap_or_else(|| Arc::clone(initial)),
        )
    }
}

/// Starts serving a `tcp` listener (`tls` None) or a `tls` listener (the
/// server config from [`crate::tls::server_config`]) on `listener`.
pub fn spawn_tcp(
    listener: TcpListener,
    spec: &Listener,
    shared: Arc<Shared>,
    tls: Option<Arc<ServerConfig>>,
) -> std::io::Result<ListenerHandle> {
    let local_addr = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(spec.max_connections));
    let task_limit = Arc::clone(&limit);
    let ctx = Arc::new(Ctx {
        name: Arc::from(spec.name.as_str()),
        local_addr,
        shared,
        fallback: spec.timeouts.clone(),
        metrics: L4Metrics::new(&spec.name, tls.is_some()),
        tls,
    });
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Some((stream, peer, permit)) =
                accept_next(&listener, &task_limit, &mut stop_rx, &ctx.name).await
            else {
                break;
            };
            // Reap finished connections so the set stays as big as the
            // number of open ones.
            while conns.try_join_next().is_some() {}
            conns.spawn(connection(Arc::clone(&ctx), stream, peer, permit));
        }
        // Stop accepting first, then let the open connections run out.
        drop(listener);
        while conns.join_next().await.is_some() {}
    });
    Ok(l4_handle(
        spec.name.clone(),
        local_addr,
        stop_tx,
        task,
        limit,
        spec.max_connections,
    ))
}

/// Decrements the active-connections gauge when the connection ends,
/// however it ends (including an abort).
struct Active(Gauge);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

async fn connection(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    // Linux: inherited from the listening socket (see `listener::bind`).
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    ctx.metrics.total.increment(1);
    ctx.metrics.active.increment(1.0);
    let _active = Active(ctx.metrics.active.clone());
    // The address the client connected to (not the wildcard bind), for
    // the PROXY header's destination.
    let local = stream.local_addr().unwrap_or(ctx.local_addr);
    let timeouts = ctx.timeouts();
    let Some(config) = ctx.tls_config() else {
        serve(&ctx, stream, peer, local, timeouts.idle).await;
        return;
    };
    let accept = TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(timeouts.header_read, accept).await {
        Ok(Ok(tls)) => {
            ctx.metrics.handshakes.record(true);
            serve(&ctx, tls, peer, local, timeouts.idle).await;
        }
        Ok(Err(e)) => {
            ctx.metrics.handshakes.record(false);
            tracing::debug!(listener = %ctx.name, client = %peer, error = %e, "tls handshake failed");
        }
        Err(_) => {
            ctx.metrics.handshakes.record(false);
            tracing::debug!(listener = %ctx.name, client = %peer, "tls handshake timed out");
        }
    }
}

/// An upstream connection with the target it goes to.
struct Upstream {
    group: usize,
    target: Arc<Target>,
    in_flight: InFlight,
    /// Its place under the target's connection cap (`None` only if the
    /// target has no pool).
    slot: Option<Slot>,
    stream: TcpStream,
}

/// Why a client connection is closed without reaching a target.
enum Unserved {
    /// No target could be picked, or none could be connected.
    NoTarget,
    /// The picked target stayed at its connection cap.
    AtLimit(Arc<Target>, LimitError),
}

/// Routes one (decrypted) client stream and copies it to the target.
async fn serve<C>(ctx: &Ctx, client: C, peer: SocketAddr, local: SocketAddr, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snap = ctx.shared.snapshot.load_full();
    let Some(split) = snap.listener(&ctx.name).and_then(|l| l.forward.as_ref()) else {
        // Removed by a reload between accept and now.
        tracing::debug!(listener = %ctx.name, "listener no longer configured: closing");
        return;
    };
    let Some(group) = snap.choose_group(split) else {
        tracing::debug!(listener = %ctx.name, "every target group is weighted 0: closing");
        return;
    };
    let mut up = match connect(&snap, group, peer).await {
        Ok(up) => up,
        Err(Unserved::NoTarget) => {
            tracing::debug!(listener = %ctx.name, client = %peer, "no usable target: closing");
            return;
        }
        Err(Unserved::AtLimit(target, why)) => {
            tracing::debug!(
                listener = %ctx.name,
                client = %peer,
                target = %target.label(),
                limit = ?why,
                "target at its connection limit: closing"
            );
            return;
        }
    };
    let spec = &snap.groups[up.group].spec;
    if spec.proxy_protocol == Some(ProxyProtocol::V2) {
        let header = proxy_protocol::encode_v2(peer, local);
        if let Err(e) = up.stream.write_all(header.as_bytes()).await {
            tracing::debug!(target = %up.target.label(), error = %e, "cannot send the PROXY header");
            return;
        }
    }
    let (rx, tx) = (ctx.metrics.rx.clone(), ctx.metrics.tx.clone());
    let label = Arc::clone(&ctx.name);
    let Upstream {
        target,
        in_flight,
        slot,
        mut stream,
        ..
    } = up;
    let copy = tokio::spawn(async move {
        // Held for the whole connection: the target counts it as in flight
        // and under its connection cap.
        let _in_flight = in_flight;
        let _slot = slot;
        let mut client = client;
        match relay(&mut client, &mut stream, idle, &rx, &tx).await {
            Ok(Ended::Closed) => {}
            Ok(Ended::Idle) => {
                tracing::debug!(listener = %label, "idle timeout: closing both sides");
            }
            Err(e) => tracing::debug!(listener = %label, error = %e, "tcp connection ended"),
        }
    });
    if let Some(pool) = pool_of(&target, spec) {
        pool.track(copy.abort_handle());
    }
    drop(snap);
    // Cancelled when the target's drain deadline cut it: nothing to report.
    let _ = copy.await;
}

/// The cap on one target's open TCP connections: one connection is one
/// request, so `max_requests` bounds the same count and the smaller wins.
fn connection_cap(limits: &Limits) -> Option<u32> {
    limits
        .max_connections
        .into_iter()
        .chain(limits.max_requests)
        .min()
}

/// Picks and connects a target of `group`, moving on to another target
/// after a connect failure as the group's retries allow. A target at its
/// connection cap is waited for (see the module docs), not skipped, as
/// for HTTP.
async fn connect(snap: &Snapshot, group: usize, peer: SocketAddr) -> Result<Upstream, Unserved> {
    let input = PickInput {
        headers: None,
        client_ip: Some(peer.ip()),
    };
    let mut tried: Vec<Arc<Target>> = Vec::new();
    let mut retry = 0u32;
    loop {
        let (g, target) = snap.pick(group, input, &tried).ok_or(Unserved::NoTarget)?;
        let grp = &snap.groups[g];
        // Counted from the wait on, so least_request sees it (as HTTP).
        let in_flight = target.begin();
        let slot = match pool_of(&target, &grp.spec) {
            Some(pool) => {
                let limits = &grp.spec.limits;
                let wait = pool.wait_for_slot(
                    connection_cap(limits),
                    limits.max_pending,
                    grp.spec.timeouts.connect,
                );
                match wait.await {
                    Ok(slot) => Some(slot),
                    Err(why) => return Err(Unserved::AtLimit(target, why)),
                }
            }
            None => None,
        };
        let attempt = tokio::time::timeout(
            grp.spec.timeouts.connect,
            TcpStream::connect(target.label()),
        )
        .await;
        let error = match attempt {
            Ok(Ok(stream)) => {
                observe(grp, &target, false);
                let _ = stream.set_nodelay(true);
                return Ok(Upstream {
                    group: g,
                    target,
                    in_flight,
                    slot,
                    stream,
                });
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        // As HTTP counts a target that gave no answer: `code="error"`.
        target.upstream.error();
        observe(grp, &target, true);
        tracing::debug!(target = %target.label(), %error, "tcp connect failed");
        drop((slot, in_flight));
        tried.push(target);
        let retries = &grp.spec.retries;
        if !(retries.on.connect_failure && retry < retries.attempts) {
            return Err(Unserved::NoTarget);
        }
        retry += 1;
        grp.retries.increment(1);
        tokio::time::sleep(backoff(retries.backoff, retry)).await;
    }
}

/// Exponential backoff with full jitter: uniform in [base, base * 2^n]
/// (as the HTTP retries).
fn backoff(base: Duration, retry: u32) -> Duration {
    let cap = base.saturating_mul(1u32 << retry.min(10));
    let extra = cap.saturating_sub(base);
    base + extra.mul_f64(fastrand::f64())
}
