//! switchyard-proxy: the data plane.
//!
//! Reads the `Arc<Snapshot>` that `control` publishes (one `ArcSwap` load
//! per request) and does everything that touches client and upstream
//! sockets: listeners, request framing guards, routing actions, upstream
//! connection pools, retries, header rewriting, access logs. It never
//! reads files or signals.

pub mod access_log;
pub mod body;
pub mod error;
pub mod forward;
pub mod framing;
pub mod guard;
pub mod h1;
pub mod h1_server;
pub mod headers;
pub mod l4;
pub mod listener;
pub mod pool;
pub mod proxy_protocol;
pub mod service;
mod stop;
pub mod tcp_copy;
#[cfg(target_os = "linux")]
mod tcp_splice;
pub mod tls;
pub mod upgrade;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_routing::Snapshot;

pub use access_log::AccessLog;
pub use error::ProxyError;
pub use l4::spawn_tcp;
pub use listener::{bind, spawn_http, ListenerHandle};

/// State every connection of every listener shares.
pub struct Shared {
    /// The one published snapshot (owned by `control`; read here).
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub access_log: AccessLog,
    /// Set at SIGTERM: HTTP/1 responses then carry `Connection: close`.
    pub shutting_down: AtomicBool,
    /// TLS configs of the https and tls listeners, by name; replaced by
    /// `control` at start and at each reload.
    pub tls: tls::TlsStore,
}

impl Shared {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, access_log: AccessLog) -> Shared {
        Shared {
            snapshot,
            access_log,
            shutting_down: AtomicBool::new(false),
            tls: tls::TlsStore::default(),
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}

/// Closes upstream connections idle past their group's `timeouts.idle`.
/// Run periodically; requests also skip stale ones on checkout.
pub fn prune_idle_pools(snapshot: &Snapshot) {
    for g in &snapshot.groups {
        for t in &g.targets {
            if let Some(pool) = t.ext.get().and_then(|p| p.downcast_ref::<pool::Pool>()) {
                pool.prune();
            }
        }
    }
}
