//! The client connection's IO wrapper: request framing (smuggling flag) and
//! the two client timers hyper does not separate.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection
//! waits for its next request, so it cannot give `timeouts.header_read` 10s
//! and `timeouts.idle` 60s at once. This wrapper arms one timer:
//! - first request: `header_read` from accept (slowloris, silent clients);
//! - between requests: `idle` from when the last response finished;
//! - once a head starts arriving: `header_read` from its first byte;
//! - while any request is in flight: nothing (slow upstreams are
//!   `timeouts.request`'s business).
//!
//! Expiry fails the read with `TimedOut`, and hyper closes the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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
}

impl ConnState {
    /// Marks a request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> RequestMark {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestMark(Arc::clone(self))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Releases one in-flight mark on drop (when the response body is done).
#[derive(Debug)]
pub struct RequestMark(Arc<ConnState>);

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
}

impl<T> GuardedIo<T> {
    pub fn new(inner: T, state: Arc<ConnState>, header_read: Duration, idle: Duration) -> Self {
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
        }
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        let was_mid_head = self.framing.head_in_progress();
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
        } else if self.first || self.framing.head_in_progress() {
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
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
