//! The client connection's IO wrapper: request framing (smuggling flag) and
//! the two client timers (header read and idle).
//!
//! One timer serves both `timeouts.header_read` (say 10s) and
//! `timeouts.idle` (say 60s), below the HTTP/1.1 server (ours) and the
//! HTTP/2 one (hyper's). This wrapper arms it:
//! - first request: `header_read` from accept (slowloris, silent clients);
//! - between requests: `idle` from when the last response finished;
//! - once a head starts arriving: `header_read` from its first byte;
//! - while any request is in flight: nothing (slow upstreams are
//!   `timeouts.request`'s business).
//!
//! Expiry fails the read with `TimedOut`, and the server closes the
//! connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::framing::Framing;

/// Per-connection state shared between the IO wrapper and the service.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests of this connection whose response has not finished.
    in_flight: AtomicUsize,
    /// A request head carried both Content-Length and Transfer-Encoding.
    pub smuggling: AtomicBool,
    /// The connection was handed to an Upgrade (WebSocket) tunnel: its
    /// write shutdowns are half-closes that must reach the client.
    upgraded: AtomicBool,
    /// The HTTP/1.1 server holds part of a request head. The byte tracker
    /// (`Framing`) stops following a connection it cannot follow (CONNECT,
    /// an Upgrade refused, a Content-Length it cannot read); the server's
    /// own parser always knows, so `header_read` bounds every head.
    head_partial: AtomicBool,
}

impl ConnState {
    /// Marks a request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> RequestMark {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestMark(Arc::clone(self))
    }

    /// Set by the HTTP/1.1 server while it holds part of a request head.
    pub fn set_head_partial(&self, partial: bool) {
        self.head_partial.store(partial, Ordering::Relaxed);
    }

    fn head_partial(&self) -> bool {
        self.head_partial.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Releases one in-flight mark on drop (when the response body is done).
#[derive(Debug)]
pub struct RequestMark(Arc<ConnState>);

impl RequestMark {
    /// The request's connection becomes an Upgrade tunnel.
    pub fn set_upgraded(&self) {
        self.0.upgraded.store(true, Ordering::Relaxed);
    }
}

impl Drop for RequestMark {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    Off,
    Idle,
    Header,
}

pub struct GuardedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    framing: Framing,
    /// Registered with the timer wheel at `registered`, which may be
    /// earlier than `deadline`: resetting a tokio timer takes the driver's
    /// lock, so we move it only when the deadline comes *sooner*, and when
    /// it fires early we re-arm it for the real deadline. Most requests
    /// never touch the timer wheel.
    timer: Pin<Box<Sleep>>,
    registered: Instant,
    deadline: Instant,
    armed: Armed,
    header_read: Duration,
    idle: Duration,
    /// No request has completed its head yet on this connection.
    first: bool,
    head_started: Instant,
    /// Bytes of the first read not yet handed on (see `poll_read`).
    early: Option<BytesMut>,
    /// Plain TCP: the server's final `poll_shutdown` is skipped (see there).
    plain_tcp: bool,
}

/// Size of the first read from a new connection: one read this large
/// takes a whole typical request head, which `sniff_h2` keeps and hands
/// on to the server from memory.
const FIRST_READ: usize = 4096;

/// What an HTTP/2 prior-knowledge client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<T> GuardedIo<T> {
    /// `plain_tcp`: `inner` is the client's TCP socket itself (no TLS).
    pub fn new(
        inner: T,
        state: Arc<ConnState>,
        header_read: Duration,
        idle: Duration,
        plain_tcp: bool,
    ) -> Self {
        let now = Instant::now();
        GuardedIo {
            inner,
            state,
            framing: Framing::default(),
            // The first request's head must arrive within header_read of accept.
            timer: Box::pin(tokio::time::sleep_until(now + header_read)),
            registered: now + header_read,
            deadline: now + header_read,
            armed: Armed::Header,
            header_read,
            idle,
            first: true,
            head_started: now,
            early: None,
            plain_tcp,
        }
    }

    /// The listener's idle timeout this connection runs with.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        let was_mid_head = self.framing.head_in_progress() || self.state.head_partial();
        self.framing.feed(bytes);
        if self.framing.smuggling {
            self.state.smuggling.store(true, Ordering::Relaxed);
        }
        if !was_mid_head && !self.first {
            self.head_started = Instant::now();
        }
        if !self.framing.head_in_progress() {
            // A whole head (or an h2 preface) went by: the first-request
            // rule is over.
            self.first = false;
        }
        if self.armed == Armed::Idle {
            self.armed = Armed::Off;
        }
    }

    /// Called when the read would block: decides which deadline applies.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let want = if self.state.in_flight() > 0 {
            Armed::Off
        } else if self.first || self.framing.head_in_progress() || self.state.head_partial() {
            Armed::Header
        } else {
            Armed::Idle
        };
        if want != self.armed {
            match want {
                Armed::Off => {}
                Armed::Header => self.deadline = self.head_started + self.header_read,
                Armed::Idle => self.deadline = Instant::now() + self.idle,
            }
            self.armed = want;
        }
        if self.armed == Armed::Off {
            return Poll::Pending;
        }
        if self.deadline < self.registered {
            self.registered = self.deadline;
            self.timer.as_mut().reset(self.deadline);
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= self.deadline {
                let what = if self.armed == Armed::Idle {
                    "idle timeout"
                } else {
                    "request head not received within header_read timeout"
                };
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
            }
            // Fired for an older, earlier deadline: re-arm for the real one.
            self.registered = self.deadline;
            self.timer.as_mut().reset(self.deadline);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(early) = this.early.as_mut() {
            // Already seen by `on_bytes` when they were read.
            let n = early.len().min(buf.remaining());
            buf.put_slice(&early.split_to(n));
            if early.is_empty() {
                this.early = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled().len();
                if filled > before {
                    this.on_bytes(&buf.filled()[before..filled]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncRead + Unpin> GuardedIo<T> {
    /// Reads the start of a new connection to tell HTTP/2 prior knowledge
    /// (the h2 preface) from HTTP/1.1: `Some(true)` for h2, `None` if the
    /// client closed before sending anything. The bytes read stay here and
    /// are the server's first read, so a typical head costs one socket read (as
    /// opposed to hyper-util's detection: 24 bytes, then the rest).
    pub async fn sniff_h2(&mut self) -> io::Result<Option<bool>> {
        std::future::poll_fn(|cx| loop {
            let have = self.early.as_ref().map_or(&[][..], |e| &e[..]);
            let n = have.len().min(H2_PREFACE.len());
            if have[..n] != H2_PREFACE[..n] {
                return Poll::Ready(Ok(Some(false)));
            }
            if n == H2_PREFACE.len() {
                return Poll::Ready(Ok(Some(true)));
            }
            // Uninitialised: no 4 KiB memset per connection.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut rb = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // EOF: whatever came is the server's to judge.
                    return Poll::Ready(Ok(self.early.as_ref().map(|_| false)));
                }
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    self.on_bytes(got);
                    self.early
                        .get_or_insert_with(|| BytesMut::with_capacity(got.len()))
                        .extend_from_slice(got);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    return match self.poll_deadline(cx) {
                        Poll::Ready(e) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
        })
        .await
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The server shuts the write side down just before it drops the
        // connection, whose close sends the same FIN: on plain TCP that is a
        // syscall per closed connection for nothing. TLS needs it (it sends
        // close_notify), and so does an Upgrade tunnel (a half-close).
        if this.plain_tcp && !this.state.upgraded.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client socket that has `data` waiting and counts the calls.
    #[derive(Default)]
    struct Mock {
        data: Vec<u8>,
        pos: usize,
        reads: usize,
        shutdowns: usize,
        /// Bytes per read at most (0: no limit).
        max_read: usize,
    }

    impl AsyncRead for Mock {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let mut n = (self.data.len() - self.pos).min(buf.remaining());
            if self.max_read > 0 {
                n = n.min(self.max_read);
            }
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Mock {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shutdowns += 1;
            Poll::Ready(Ok(()))
        }
    }

    fn guarded(data: &[u8], plain_tcp: bool) -> (GuardedIo<Mock>, Arc<ConnState>) {
        let state = Arc::new(ConnState::default());
        let mock = Mock {
            data: data.to_vec(),
            ..Mock::default()
        };
        let secs = Duration::from_secs(10);
        let io = GuardedIo::new(mock, Arc::clone(&state), secs, secs, plain_tcp);
        (io, state)
    }

    #[tokio::test]
    async fn a_new_connection_s_head_is_read_from_the_socket_once() {
        let head = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(300));
        let (mut io, _) = guarded(head.as_bytes(), true);
        assert_eq!(io.sniff_h2().await.unwrap(), Some(false));
        // The server's first read gets the whole head from memory.
        let mut got = vec![0u8; 8192];
        let n = io.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], head.as_bytes());
        assert_eq!(io.inner.reads, 1, "the head took more than one socket read");
        // Seen once by the framing tracker: one whole head.
        assert!(!io.first);
        assert!(!io.framing.head_in_progress());
    }

    #[tokio::test]
    async fn the_h2_preface_is_recognised_even_in_pieces() {
        let mut bytes = H2_PREFACE.to_vec();
        bytes.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        let (mut io, _) = guarded(&bytes, true);
        io.inner.max_read = 5;
        assert_eq!(io.sniff_h2().await.unwrap(), Some(true));
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, bytes, "bytes lost or repeated");
        // An empty connection: nothing to serve.
        let (mut empty, _) = guarded(b"", true);
        assert_eq!(empty.sniff_h2().await.unwrap(), None);
        // A short non-h2 start is HTTP/1.1's to judge.
        let (mut short, _) = guarded(b"GET", true);
        assert_eq!(short.sniff_h2().await.unwrap(), Some(false));
    }

    #[tokio::test]
    async fn plain_tcp_skips_the_final_shutdown_but_tunnels_and_tls_keep_it() {
        let (mut io, state) = guarded(b"", true);
        io.shutdown().await.unwrap();
        assert_eq!(io.inner.shutdowns, 0, "close sends the FIN");
        state.begin().set_upgraded();
        io.shutdown().await.unwrap();
        assert_eq!(io.inner.shutdowns, 1, "a tunnel's half-close must go out");
        let (mut tls, _) = guarded(b"", false);
        tls.shutdown().await.unwrap();
        assert_eq!(tls.inner.shutdowns, 1, "TLS sends close_notify");
    }
}
