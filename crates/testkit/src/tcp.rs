//! [`TcpEcho`]: a TCP upstream for L4 (plain TCP proxying) tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A TCP server on `127.0.0.1:<ephemeral>` that writes back every byte it
/// reads, and closes its side once the client has closed its write side.
///
/// Dropping the value stops it, like [`stop`](Self::stop) without waiting.
#[derive(Debug)]
pub struct TcpEcho {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    running: tokio::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl TcpEcho {
    /// Binds `127.0.0.1:0` and starts echoing.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start() -> TcpEcho {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap_or_else(|e| panic!("testkit: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("testkit: no local address: {e}"));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn({
            let connections = connections.clone();
            async move { crate::listen::accept_loop(listener, &connections, stop_rx, echo).await }
        });
        TcpEcho {
            addr,
            connections,
            running: tokio::sync::Mutex::new(Some((stop_tx, task))),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted since start.
    pub fn connections(&self) -> usize {
        self.connections.load(Relaxed)
    }

    /// Stops listening and drops every open connection; when it returns the
    /// port is closed. No-op if already stopped.
    pub async fn stop(&self) {
        if let Some((stop_tx, task)) = self.running.lock().await.take() {
            let _ = stop_tx.send(());
            let _ = task.await;
        }
    }
}

/// Copies until the client half-closes or the connection fails; errors just
/// end the copy.
async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.split();
    let _ = tokio::io::copy(&mut read, &mut write).await;
}
