//! Body types: one enum for everything we send, so no per-response boxing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use switchyard_routing::{InFlight, TargetState};

use crate::guard::RequestMark;
use crate::pool::{Pool, Sender};

/// What the proxy answers downstream: a fixed body, or an upstream's body
/// streamed through with whatever must live as long as it (the pooled
/// connection's return ticket, the target's in-flight mark).
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// An upstream response body on its way to the client. When it has been
/// read to the end, its connection goes back to the target's pool; if the
/// client goes away first, the connection is closed (its state is unknown).
/// The target's and the client connection's in-flight marks end with it.
pub struct UpstreamBody {
    body: Incoming,
    sender: Option<Sender>,
    in_flight: InFlight,
    _mark: RequestMark,
    done: bool,
}

impl UpstreamBody {
    pub fn new(body: Incoming, sender: Sender, in_flight: InFlight, mark: RequestMark) -> Self {
        let done = body.is_end_stream();
        UpstreamBody {
            body,
            sender: Some(sender),
            in_flight,
            _mark: mark,
            done,
        }
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(sender) = self.sender.take() {
            let target = self.in_flight.target();
            // A draining target's keep-alive connections close after their
            // current response.
            if target.state() == TargetState::Draining {
                return;
            }
            if let Some(pool) = target.ext.get().and_then(|p| p.downcast_ref::<Pool>()) {
                pool.put(sender);
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.done {
            self.finish();
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
                let polled = Pin::new(&mut up.body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => up.finish(),
                    Poll::Ready(Some(Ok(_))) if up.body.is_end_stream() => up.finish(),
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
            ProxyBody::Upstream(up) => up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(up) => up.body.size_hint(),
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
