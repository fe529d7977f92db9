//! Body types: one enum for everything we send, so no per-response boxing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use switchyard_routing::InFlight;

use crate::guard::RequestMark;
use crate::pool::{self, Sender};

/// What the proxy answers downstream: a fixed body, or an upstream's body
/// streamed through with whatever must live as long as it (the pooled
/// connection's return ticket, the target's in-flight mark).
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// An upstream response body on its way to the client. When it has been
/// read to the end, its connection goes back to the target's pool; if the
/// client goes away first, the rest is read in the background (bounded,
/// see `pool::linger`) so that the connection can still be pooled. The
/// target's and the client connection's in-flight marks end with it.
pub struct UpstreamBody {
    /// `None` only once handed to `linger` on drop.
    body: Option<Incoming>,
    sender: Option<Sender>,
    in_flight: InFlight,
    _mark: RequestMark,
    done: bool,
    /// How long an abandoned body may take to finish in the background.
    linger: Duration,
}

impl UpstreamBody {
    pub fn new(
        body: Incoming,
        sender: Sender,
        in_flight: InFlight,
        mark: RequestMark,
        linger: Duration,
    ) -> Self {
        let done = body.is_end_stream();
        UpstreamBody {
            body: Some(body),
            sender: Some(sender),
            in_flight,
            _mark: mark,
            done,
            linger,
        }
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(sender) = self.sender.take() {
            pool::release(self.in_flight.target(), sender);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.done {
            self.finish();
        } else if let (Some(sender), Some(body)) = (self.sender.take(), self.body.take()) {
            let target = Arc::clone(self.in_flight.target());
            pool::linger(target, sender, None, Some(body), self.linger);
        }
    }
}

impl ProxyBody {
    pub fn full(b: Bytes) -> ProxyBody {
        ProxyBody::Full(if b.is_empty() { None } else { Some(b) })
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(up) => {
                let Some(body) = up.body.as_mut() else {
                    return Poll::Ready(None);
                };
                let polled = Pin::new(body).poll_frame(cx);
                let end = up.body.as_ref().is_none_or(|b| b.is_end_stream());
                match &polled {
                    Poll::Ready(None) => up.finish(),
                    Poll::Ready(Some(Ok(_))) if end => up.finish(),
                    Poll::Ready(Some(Err(_))) => {
                        // Broken mid-body: never reuse this connection.
                        up.sender = None;
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(up) => up.body.as_ref().is_none_or(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(up) => up
                .body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
        }
    }
}

/// What we send upstream: the client's body streamed, or nothing (for a
/// retried body-less request).
pub enum RequestBody {
    Client(Incoming),
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
