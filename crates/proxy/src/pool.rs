//! Per-target pools of keep-alive HTTP/1.1 upstream connections.
//!
//! Our own pool rather than hyper-util's legacy client because the proxy
//! needs what that client hides: connect and send as separate steps (a
//! connect failure leaves the request in our hands, so retrying it is always
//! safe, body or not), the request back when a pooled connection turns out
//! stale before anything was written (`try_send_request`), and per-target
//! control for draining (close idle connections at once).
//!
//! The lock is held only to push or pop one entry.

use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::body::RequestBody;

/// Idle connections kept per target at most; more are closed when returned.
pub const MAX_IDLE_PER_TARGET: usize = 1024;

pub type Sender = SendRequest<RequestBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    /// Every connection task of this target (pooled or busy), so that a
    /// draining target's remaining work can be cut at its deadline.
    tasks: Mutex<Vec<AbortHandle>>,
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
            idle_timeout,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// A live idle connection, most recently used first (warm, and the
    /// least likely to have been closed by the upstream's own timeout).
    pub fn take(&self) -> Option<Sender> {
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

    /// Returns a connection after its response finished.
    pub fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if guard.len() < MAX_IDLE_PER_TARGET {
            guard.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes every idle connection (draining, shutdown).
    pub fn clear(&self) {
        let drained = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(drained);
    }

    /// Drops connections idle for longer than the idle timeout.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        guard.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) <= self.idle_timeout);
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

    /// Closes everything: idle connections and every connection still
    /// carrying a request. Requests in flight on them fail. Used at a
    /// draining target's deadline.
    pub fn cut_all(&self) {
        self.clear();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|g| g.len()).unwrap_or(0)
    }
}

/// Opens a new connection to `addr` within `timeout`; its task is tracked
/// by `pool` when given.
pub async fn connect(
    addr: &str,
    timeout: Duration,
    pool: Option<&Pool>,
) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(s)) => s,
    };
    // Requests are small writes that must leave at once.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(256 * 1024)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    let task = tokio::spawn(async move {
        // Ends when the connection closes; errors were already seen by the
        // request that hit them.
        let _ = conn.await;
    });
    if let Some(pool) = pool {
        pool.track(task.abort_handle());
    }
    Ok(sender)
}
