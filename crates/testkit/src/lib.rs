//! Dev-only test kit for switchyard: in-process fakes for unit and
//! integration tests, never linked into the binary.
//!
//! It sits outside the data flow (YAML -> `config` -> `routing` -> `control`
//! -> `proxy`) and stands in for the world around it:
//!
//! - [`FakeUpstream`]: a real HTTP/1.1 + h2c server on an ephemeral loopback
//!   port that reports its address, request and connection counts, records
//!   requests and can be switched (status, delay, health) at runtime.
//! - [`TcpEcho`]: a TCP echo server for L4 tests.
//! - [`free_port`] / [`refused_addr`]: ephemeral ports, no fixed numbers.
//! - [`eventually!`] / [`wait_until`]: wait for a condition, with a bound.
//! - [`TestClient`], [`get`], [`get_with`], [`request`], [`raw_exchange`]:
//!   a small HTTP client and a raw-socket helper.
//!
//! Everything listens on and connects to `127.0.0.1` only.

mod client;
mod ports;
mod tcp;
mod upstream;
mod wait;

#[cfg(test)]
mod tests;

pub use client::{get, get_with, raw_exchange, request, TestClient, TestResponse, DEFAULT_TIMEOUT};
pub use ports::{free_port, refused_addr};
pub use tcp::TcpEcho;
pub use upstream::{FakeUpstream, FakeUpstreamBuilder, RecordedRequest, REQUEST_LOG_LIMIT};
pub use wait::{wait_until, POLL_INTERVAL};

/// Paths used by exported macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use tokio::time::Instant;
}

/// Listener plumbing shared by the fakes.
mod listen {
    use std::future::Future;
    use std::io;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinSet;

    /// Accepts until told to stop (or the handle is dropped), counting
    /// connections in `connections` and serving each with `serve`; then
    /// closes the listener and aborts every connection task, waiting for
    /// them so their sockets are closed when the caller's `stop` returns.
    pub(crate) async fn accept_loop<F, Fut>(
        listener: TcpListener,
        connections: &AtomicUsize,
        mut stop_rx: oneshot::Receiver<()>,
        mut serve: F,
    ) where
        F: FnMut(TcpStream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = &mut stop_rx => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.fetch_add(1, Relaxed);
                        conns.spawn(serve(stream));
                    }
                    // Out of descriptors or similar: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
            }
        }
        drop(listener);
        conns.shutdown().await;
    }

    /// Binds a listener with `SO_REUSEADDR`, so a stopped fake can listen
    /// again on the same port while old connections sit in `TIME_WAIT`.
    pub(crate) fn bind_reuse(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }
}
