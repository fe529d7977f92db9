//! Body types: one enum for everything we send, so no per-response boxing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use switchyard_routing::InFlight;
use tokio::time::{Instant, Sleep};

use crate::guard::RequestMark;
use crate::pool::{self, Sender, UpBody};

/// Errors of a body streamed downstream.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

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
///
/// A target that stops sending in the middle of a body (and, after an
/// early answer, stops reading the upload) would otherwise hold the client
/// and the in-flight marks for ever: as NGINX's `proxy_read_timeout`, the
/// body fails once it has waited `timeouts.request` for its next bytes.
/// Only time spent waiting on the target counts; a client that reads
/// slowly does not poll us, so its pauses never start the clock.
pub struct UpstreamBody {
    /// `None` only once handed to `linger` on drop.
    body: Option<UpBody>,
    in_flight: InFlight,
    _mark: RequestMark,
    done: bool,
    /// How long an abandoned body may take to finish in the background,
    /// and how long it may wait for its next bytes.
    linger_ms: u32,
    /// Made on the first wait only: a body that arrives with its head, as
    /// small ones do, costs no timer and moves 8 bytes more.
    stall: Option<Box<Stall>>,
    /// The target went silent: the connection is dropped, not lingered on.
    stalled: bool,
}

/// The wait for a target's next bytes.
struct Stall {
    /// When the current wait began (`None`: not waiting).
    since: Option<Instant>,
    /// Made on the first wait. Its deadline may lag behind the current
    /// wait's; it is moved on when it fires, not on every wait.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The request's upload, if it had one: its progress is the target's.
    upload: Option<Arc<ClientWait>>,
}

impl UpstreamBody {
    pub fn new(
        body: UpBody,
        in_flight: InFlight,
        mark: RequestMark,
        linger: Duration,
        upload: Option<Arc<ClientWait>>,
    ) -> Self {
        let mut up = UpstreamBody {
            body: Some(body),
            in_flight,
            _mark: mark,
            done: false,
            // Milliseconds in 4 bytes, not a 16-byte Duration: every
            // response moves this struct several times.
            linger_ms: u32::try_from(linger.as_millis()).unwrap_or(u32::MAX),
            // An upload's watch is kept from the start (such requests pay
            // this box); others only once they wait.
            stall: upload.map(|w| {
                Box::new(Stall {
                    since: None,
                    sleep: None,
                    upload: Some(w),
                })
            }),
            stalled: false,
        };
        up.done = up.is_end_stream();
        up
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(UpBody::H1(b)) => b.is_end_stream(),
            Some(UpBody::H2(b, _)) => b.is_end_stream(),
            None => true,
        }
    }

    fn linger(&self) -> Duration {
        Duration::from_millis(u64::from(self.linger_ms))
    }

    /// Called while the body waits on the target: ready once that wait
    /// has lasted `linger`.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let linger = self.linger();
        let stall = self.stall.get_or_insert_with(|| {
            Box::new(Stall {
                since: None,
                sleep: None,
                upload: None,
            })
        });
        if stall.upload.as_ref().is_some_and(|w| w.take_moved()) {
            stall.since = None;
        }
        let deadline = *stall.since.get_or_insert_with(Instant::now) + linger;
        let sleep = stall
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }

    /// The target moved (sent bytes, or took upload ones): no wait now.
    fn progressed(&mut self) {
        if let Some(stall) = self.stall.as_mut() {
            stall.since = None;
        }
    }

    /// Read to the end: an HTTP/1.1 connection goes back to the pool.
    fn finish(&mut self) {
        self.done = true;
        if let Some(UpBody::H1(b)) = self.body.as_mut() {
            if let Some(conn) = b.take_conn() {
                pool::release(self.in_flight.target(), Sender::H1(conn));
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.done {
            self.finish();
        } else if self.stalled {
            // Dropped with `body`: the connection closes.
        } else if let Some(UpBody::H1(body)) = self.body.take() {
            let target = Arc::clone(self.in_flight.target());
            pool::linger(target, None, Some(body), self.linger());
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
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(up) => {
                let polled = match up.body.as_mut() {
                    None => return Poll::Ready(None),
                    Some(UpBody::H1(b)) => b.poll_frame(cx).map_err(BodyError::from),
                    Some(UpBody::H2(b, _)) => Pin::new(b).poll_frame(cx).map_err(BodyError::from),
                };
                let polled = clean_trailers(polled);
                // A broken body never gives its connection back (`take_conn`
                // refuses one not read to its end).
                match &polled {
                    Poll::Ready(None) => up.finish(),
                    Poll::Ready(Some(Ok(_))) if up.is_end_stream() => up.finish(),
                    Poll::Pending => {
                        ready!(up.poll_stalled(cx));
                        up.stalled = true;
                        tracing::warn!(
                            target = %up.in_flight.target().label(),
                            after = ?up.linger(),
                            "target sent nothing for timeouts.request in the middle of a response body; cut"
                        );
                        return Poll::Ready(Some(Err(BodyError::from(
                            "target stalled in the middle of the response body",
                        ))));
                    }
                    _ => {}
                }
                if polled.is_ready() {
                    up.progressed();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(up) => up.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(up) => match &up.body {
                Some(UpBody::H1(b)) => b.size_hint(),
                Some(UpBody::H2(b, _)) => b.size_hint(),
                None => SizeHint::with_exact(0),
            },
        }
    }
}

/// A trailer section passed on, less the fields that have no place in one.
fn clean_trailers<E>(
    mut polled: Poll<Option<Result<Frame<Bytes>, E>>>,
) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    if let Poll::Ready(Some(Ok(frame))) = &mut polled {
        if let Some(trailers) = frame.trailers_mut() {
            crate::headers::strip_trailer_fields(trailers);
        }
    }
    polled
}

/// An upload as last seen when it was polled. Waiting on its client: a
/// request that times out then is the client's fault (408), not the
/// target's. Moved (a frame taken): the target is reading, as both
/// upstream clients take the next frame only once the last is written
/// (HTTP/1.1) or the target has granted window (HTTP/2), so a response
/// body waiting meanwhile is not a stalled target.
#[derive(Debug, Default)]
pub struct ClientWait {
    waiting: AtomicBool,
    moved: AtomicBool,
}

impl ClientWait {
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether the upload moved since the last call.
    fn take_moved(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed)
    }
}

/// What we send upstream: the client's body streamed, or nothing (for a
/// retried body-less request).
pub enum RequestBody {
    /// A client's body whose waits are recorded (requests with a body).
    Watched(Box<RequestBody>, Arc<ClientWait>),
    /// An upload to an h2c target, kept to go again (see `Replay`).
    Replay(Box<Replay>),
    /// An HTTP/2 client's body (hyper's server).
    Client(Incoming),
    /// An HTTP/1.1 client's body (our server, `h1_server`).
    H1(crate::h1_server::ClientBody),
    Empty,
    /// A body made in a unit test (an `Incoming` cannot be).
    #[cfg(test)]
    Test(Pin<Box<dyn Body<Data = Bytes, Error = std::convert::Infallible> + Send>>),
}

impl RequestBody {
    /// What waits now is the target (a write to it), not the client, even
    /// if the client's body has nothing more at hand either.
    pub fn not_waiting_on_client(&self) {
        match self {
            RequestBody::Watched(_, wait) => wait.waiting.store(false, Ordering::Relaxed),
            RequestBody::Replay(r) => r.source.not_waiting_on_client(),
            _ => {}
        }
    }
}

#[cfg(test)]
impl RequestBody {
    pub fn from_test(
        b: impl Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
    ) -> Self {
        RequestBody::Test(Box::pin(b))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Watched(b, wait) => {
                let polled = Pin::new(&mut **b).poll_frame(cx);
                wait.waiting.store(polled.is_pending(), Ordering::Relaxed);
                if let Poll::Ready(Some(Ok(_))) = &polled {
                    wait.moved.store(true, Ordering::Relaxed);
                }
                polled
            }
            RequestBody::Replay(r) => r.poll_frame(cx),
            RequestBody::Client(b) => {
                clean_trailers(Pin::new(b).poll_frame(cx).map_err(BodyError::from))
            }
            RequestBody::H1(b) => clean_trailers(b.poll_frame(cx).map_err(BodyError::from)),
            RequestBody::Empty => Poll::Ready(None),
            #[cfg(test)]
            RequestBody::Test(b) => b
                .as_mut()
                .poll_frame(cx)
                .map_ok(|f| f)
                .map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Watched(b, _) => b.is_end_stream(),
            RequestBody::Replay(r) => r.next >= r.kept.len() && r.source.is_end_stream(),
            RequestBody::Client(b) => b.is_end_stream(),
            RequestBody::H1(b) => b.is_end_stream(),
            RequestBody::Empty => true,
            #[cfg(test)]
            RequestBody::Test(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Watched(b, _) => b.size_hint(),
            RequestBody::Replay(r) => {
                // The source's hint plus what is to be given again; upper
                // first (SizeHint asserts lower <= upper on each set).
                let source = r.source.size_hint();
                let again = r.again as u64;
                let mut hint = SizeHint::new();
                if let Some(upper) = source.upper() {
                    hint.set_upper(upper.saturating_add(again));
                }
                hint.set_lower(source.lower().saturating_add(again));
                hint
            }
            RequestBody::Client(b) => b.size_hint(),
            RequestBody::H1(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
            #[cfg(test)]
            RequestBody::Test(b) => b.size_hint(),
        }
    }
}

/// Upload bytes kept per request for `Replay`; a longer upload streams on
/// without a copy, and cannot go again.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// An upload to an h2c target, kept as it goes (up to `REPLAY_LIMIT`
/// bytes; the chunks are shared, not copied) so that it can go again when
/// the target refuses the stream unprocessed: a GOAWAY as it closes the
/// connection (NGINX after `keepalive_requests`), or REFUSED_STREAM. Most
/// gRPC calls are such uploads. hyper owns the request once sent, so the
/// body comes back when hyper drops it, through `back`.
pub struct Replay {
    /// The client's body, from where the copy stops.
    source: RequestBody,
    /// Every frame given out so far, unless over the limit.
    kept: Vec<Frame<Bytes>>,
    /// The next kept frame to give out again (after a comeback).
    next: usize,
    /// Bytes in `kept`.
    kept_bytes: usize,
    /// Kept bytes not given out again yet.
    again: usize,
    /// Past the limit: `kept` is let go, and the body cannot go again.
    overflow: bool,
    back: Option<tokio::sync::oneshot::Sender<Box<Replay>>>,
}

impl Replay {
    /// `body` as a replayable upload that comes back through `back` when
    /// dropped; a body that came back is given out again from its start.
    pub fn wrap(body: RequestBody, back: tokio::sync::oneshot::Sender<Box<Replay>>) -> RequestBody {
        let mut replay = match body {
            RequestBody::Replay(r) => r,
            source => Box::new(Replay {
                source,
                kept: Vec::new(),
                next: 0,
                kept_bytes: 0,
                again: 0,
                overflow: false,
                back: None,
            }),
        };
        replay.back = Some(back);
        RequestBody::Replay(replay)
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.kept.get(self.next) {
            self.next += 1;
            let frame = copy_frame(frame);
            self.again -= frame.data_ref().map_or(0, Bytes::len);
            return Poll::Ready(Some(Ok(frame)));
        }
        let polled = Pin::new(&mut self.source).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if !self.overflow {
                self.kept_bytes += frame.data_ref().map_or(0, Bytes::len);
                if self.kept_bytes > REPLAY_LIMIT {
                    self.overflow = true;
                    self.kept = Vec::new();
                } else {
                    self.kept.push(copy_frame(frame));
                    self.next = self.kept.len();
                }
            }
        }
        polled
    }
}

fn copy_frame(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let Some(back) = self.back.take() else {
            return;
        };
        // Nobody waits once the exchange is over, the common case.
        if self.overflow || back.is_closed() {
            return;
        }
        let _ = back.send(Box::new(Replay {
            source: std::mem::replace(&mut self.source, RequestBody::Empty),
            kept: std::mem::take(&mut self.kept),
            next: 0,
            kept_bytes: self.kept_bytes,
            again: self.kept_bytes,
            overflow: false,
            back: None,
        }));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use http_body_util::BodyExt;

    /// A body of ready chunks.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> RequestBody {
        RequestBody::from_test(Chunks(
            parts.iter().map(|p| Bytes::from_static(p)).collect(),
        ))
    }

    async fn frame(body: &mut RequestBody) -> Option<Bytes> {
        body.frame().await.map(|f| f.unwrap().into_data().unwrap())
    }

    #[tokio::test]
    async fn an_upload_that_comes_back_is_given_again_from_its_start() {
        let (back, comes) = tokio::sync::oneshot::channel();
        let mut body = Replay::wrap(chunks(&[b"ab", b"cd"]), back);
        assert_eq!(frame(&mut body).await.as_deref(), Some(&b"ab"[..]));
        drop(body);
        let (back, _comes) = tokio::sync::oneshot::channel();
        let mut again = Replay::wrap(RequestBody::Replay(comes.await.unwrap()), back);
        assert_eq!(again.size_hint().lower(), 2);
        assert_eq!(frame(&mut again).await.as_deref(), Some(&b"ab"[..]));
        assert_eq!(frame(&mut again).await.as_deref(), Some(&b"cd"[..]));
        assert_eq!(frame(&mut again).await, None);
    }

    #[tokio::test]
    async fn an_upload_longer_than_the_limit_does_not_come_back() {
        static BIG: [u8; REPLAY_LIMIT + 1] = [b'x'; REPLAY_LIMIT + 1];
        let (back, comes) = tokio::sync::oneshot::channel();
        let mut body = Replay::wrap(chunks(&[&BIG]), back);
        assert_eq!(frame(&mut body).await.map(|b| b.len()), Some(BIG.len()));
        drop(body);
        assert!(comes.await.is_err(), "a body past the limit came back");
    }
}
