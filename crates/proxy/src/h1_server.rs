//! Our HTTP/1.1 server for client connections.
//!
//! Why not hyper's server: it keeps an 8 KiB read buffer, an 8 KiB write
//! buffer and a boxed per-request future for every client connection's
//! whole life, about 24 KiB per connection (heaptrack at 1,000 connections:
//! as much as NGINX's whole RSS), and it moves the request future into
//! place for every request. Here a connection keeps a read buffer only
//! while bytes of a request are in it, the response head is encoded into a
//! small reused buffer, and the request's future lives inline in the
//! connection's task.
//!
//! The socket sits behind a mutex shared by the connection's loop (request
//! heads, responses) and the request body (read by the upstream exchange).
//! Each poll takes it for a moment and never across an await, and the two
//! take turns by construction: the loop reads a head only once the
//! previous response is written, so it is never contended.
//!
//! Scope (RFC 9112): request framing by Content-Length or chunked, never
//! both (400 and close: the classic smuggling probe); `Expect:
//! 100-continue` answered when the body is first read; responses framed
//! by their known length, else chunked (HTTP/1.1) or close (HTTP/1.0);
//! pipelined requests answered in order; `Upgrade` handed over after a
//! 101 with the bytes already read. Timers stay in `GuardedIo` below us.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::body::{ProxyBody, RequestBody};
use crate::guard::ConnState;
use crate::h1::{
    content_length, decode_chunked, invalid, last_coding_is_chunked, only_chunked, push_field,
    take_data, Chunk, Decoded,
};
use crate::headers::has_token;
use crate::listener::{MAX_HEADERS, MAX_HEAD_BYTES};
use crate::service::{handle, ConnCtx};

/// Socket reads for request heads go through a stack buffer this large;
/// only what arrived is kept (a typical head is a few hundred bytes).
const HEAD_READ: usize = 4096;
/// Reads of a request body.
const BODY_READ: usize = 16 * 1024;
/// Response bytes gathered before a write; larger data goes out as is.
const WRITE_GATHER: usize = 16 * 1024;
/// A response head buffer grown past this is not kept between requests.
const KEEP_OUT: usize = 4096;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Unread request bytes discarded at most before a close (see `serve`).
const DISCARD_MAX: usize = 256 * 1024;

/// What an upgraded connection is: the client's stream, whatever its type.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// The client's side of an Upgrade, after our 101 went out: the stream
/// and the bytes the client sent after its request head.
pub struct Upgraded {
    pub io: Box<dyn UpgradedIo>,
    pub read_ahead: Bytes,
}

/// Resolves to the client's connection once the 101 has been written; in
/// the request's extensions when it asked to upgrade. (Extensions must be
/// `Clone`: clones share the one connection, the first to poll gets it.)
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl Future for OnUpgrade {
    type Output = Result<Upgraded, &'static str>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = lock(&self.0);
        let Some(rx) = slot.as_mut() else {
            return Poll::Ready(Err("upgrade already taken"));
        };
        let got = ready!(Pin::new(rx).poll(cx));
        *slot = None;
        Poll::Ready(got.map_err(|_| "the connection ended before the upgrade"))
    }
}

/// Where the current request's body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqBody {
    Done,
    Length(u64),
    Chunked(Chunk),
    /// Broken (client gone, bad framing): the connection cannot continue.
    Failed,
}

/// The client connection, shared by the loop and the request body.
struct Inner<T> {
    /// `None` once closed or handed to an upgrade.
    io: Option<T>,
    /// Bytes read and not yet used: the rest of a head, body, pipelined
    /// requests. Freed when empty between requests.
    buf: BytesMut,
    body: ReqBody,
    /// Which request `body` belongs to. A body can outlive its response
    /// (hyper's HTTP/2 client streams it from a task of its own); once the
    /// connection has moved on, that reader gets an error, never the next
    /// request's bytes.
    generation: u64,
    /// The body reader's waker: woken when the connection moves on or
    /// closes (dropping the socket wakes nobody), so it learns it is over.
    reader: Option<Waker>,
    /// `100 Continue` owed before the body is read: bytes of it sent.
    continue_sent: Option<usize>,
    /// How long a write may wait for the client to read (the listener's
    /// idle timeout): a client that stops reading does not hold its
    /// connection, its upstream exchange and a draining target forever.
    stall: std::time::Duration,
}

impl<T> Inner<T> {
    /// The current request's body is over for whoever still reads it;
    /// returns that reader's waker, to wake once the lock is released.
    #[must_use]
    fn move_on(&mut self) -> Option<Waker> {
        self.generation += 1;
        self.reader.take()
    }
}

type Link<T> = Arc<Mutex<Inner<T>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "client connection closed")
}

/// A request body read from the client connection, type-erased over the
/// stream (plain TCP or TLS).
pub(crate) trait Source: Send + Sync {
    fn poll_body(
        &self,
        generation: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>>;
    fn hint(&self, generation: u64) -> (bool, SizeHint);
}

/// The body of a request received by this server.
pub struct ClientBody {
    source: Arc<dyn Source>,
    generation: u64,
}

impl ClientBody {
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.source.poll_body(self.generation, cx)
    }
    pub fn is_end_stream(&self) -> bool {
        self.source.hint(self.generation).0
    }
    pub fn size_hint(&self) -> SizeHint {
        self.source.hint(self.generation).1
    }
}

/// Reads more of the connection into `buf`; the end of the stream is an
/// error (a request body is never delimited by the close).
fn poll_more<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    want: usize,
) -> Poll<io::Result<()>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(want.max(1024));
    }
    match ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)) {
        Ok(0) => Poll::Ready(Err(invalid(
            "client closed the connection before the body ended",
        ))),
        Ok(_) => Poll::Ready(Ok(())),
        Err(e) => Poll::Ready(Err(e)),
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Source for Mutex<Inner<T>> {
    fn poll_body(
        &self,
        generation: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let mut guard = lock(self);
        let inner = &mut *guard;
        if generation != inner.generation {
            return Poll::Ready(Some(Err(invalid(
                "the client connection moved on before the request body was read",
            ))));
        }
        let polled = inner.poll_body(cx);
        if polled.is_pending() {
            // A reader in another task (hyper's HTTP/2 client) must hear
            // when the connection moves on: dropping the socket wakes nobody.
            if !inner
                .reader
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.reader = Some(cx.waker().clone());
            }
        } else {
            inner.reader = None;
        }
        polled
    }

    fn hint(&self, generation: u64) -> (bool, SizeHint) {
        let inner = lock(self);
        if generation != inner.generation {
            // Not "ended": a reader that takes this for the end would send
            // a cut-off body on as complete. Its next poll gets the error.
            return (false, SizeHint::default());
        }
        match inner.body {
            ReqBody::Done | ReqBody::Length(0) => (true, SizeHint::with_exact(0)),
            ReqBody::Length(n) => (false, SizeHint::with_exact(n)),
            _ => (false, SizeHint::default()),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Inner<T> {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let inner = self;
        if matches!(inner.body, ReqBody::Done | ReqBody::Length(0)) {
            inner.body = ReqBody::Done;
            return Poll::Ready(None);
        }
        let Some(io) = inner.io.as_mut() else {
            inner.body = ReqBody::Failed;
            return Poll::Ready(Some(Err(closed())));
        };
        // The client waits for our go-ahead before it sends the body.
        while let Some(sent) = inner.continue_sent {
            if sent == CONTINUE.len() {
                if let Err(e) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                    inner.body = ReqBody::Failed;
                    return Poll::Ready(Some(Err(e)));
                }
                inner.continue_sent = None;
                break;
            }
            match ready!(Pin::new(&mut *io).poll_write(cx, &CONTINUE[sent..])) {
                Ok(n) if n > 0 => inner.continue_sent = Some(sent + n),
                Ok(_) => {
                    inner.body = ReqBody::Failed;
                    return Poll::Ready(Some(Err(closed())));
                }
                Err(e) => {
                    inner.body = ReqBody::Failed;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        let buf = &mut inner.buf;
        loop {
            match inner.body {
                ReqBody::Done | ReqBody::Length(0) => {
                    inner.body = ReqBody::Done;
                    return Poll::Ready(None);
                }
                ReqBody::Failed => {
                    return Poll::Ready(Some(Err(invalid("client request body broken"))))
                }
                ReqBody::Length(left) => {
                    if buf.is_empty() {
                        let want = usize::try_from(left).unwrap_or(BODY_READ).min(BODY_READ);
                        if let Err(e) = ready!(poll_more(io, buf, cx, want)) {
                            inner.body = ReqBody::Failed;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    let data = take_data(buf, left);
                    inner.body = ReqBody::Length(left - data.len() as u64);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                ReqBody::Chunked(mut chunk) => {
                    let decoded = decode_chunked(buf, &mut chunk);
                    inner.body = ReqBody::Chunked(chunk);
                    match decoded {
                        Err(e) => {
                            inner.body = ReqBody::Failed;
                            return Poll::Ready(Some(Err(invalid(e))));
                        }
                        Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(Decoded::End(trailers)) => {
                            inner.body = ReqBody::Done;
                            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                        }
                        Ok(Decoded::More) => {}
                    }
                    if let Err(e) = ready!(poll_more(io, buf, cx, BODY_READ)) {
                        inner.body = ReqBody::Failed;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        }
    }
}

/// What reading a request head gave.
// Returned once per request and matched at once: boxing the request to
// even out the variants would cost an allocation per request instead.
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    Request(Request<RequestBody>, Meta),
    /// Refused: answer this and close.
    Bad(StatusCode, &'static str),
    /// The client closed, timed out or failed: close without a word.
    Gone,
}

/// What the response to a request must respect.
struct Meta {
    keep_alive: bool,
    http10: bool,
    head: bool,
    /// CONNECT: a 2xx answer starts a tunnel and has no body framing.
    connect: bool,
    upgrade: Option<oneshot::Sender<Upgraded>>,
}

/// A request head, its body framing, and whether it expects `100 Continue`.
type Parsed = (http::request::Parts, ReqBody, bool);
/// A request refused before it reaches the service: the status and why.
type Refusal = (StatusCode, &'static str);

/// Whether the first line ends in an `HTTP/` version token.
fn speaks_http(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    line.split(|&b| b == b' ')
        .nth(2)
        .is_some_and(|v| v.starts_with(b"HTTP/"))
}

/// A request head parsed from the front of `buf` (consumed), with the
/// body framing it declares. Kept synchronous so the field array lives
/// on the stack.
fn parse_request(buf: &mut BytesMut) -> Result<Option<Parsed>, Refusal> {
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large\n",
            ))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header lines\n",
            ))
        }
        // A request line ending in another HTTP version (not garbage).
        Err(httparse::Error::Version) if speaks_http(buf) => {
            return Err((
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "unsupported HTTP version\n",
            ))
        }
        Err(_) => return Err((StatusCode::BAD_REQUEST, "malformed request head\n")),
    };
    let bad = |why| (StatusCode::BAD_REQUEST, why);
    // One copy of the head; the URI and header values are slices of it.
    let copy = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let slice = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        copy.slice(start..start + s.len())
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method\n"))?;
    let path = req.path.unwrap_or("");
    let uri = Uri::from_maybe_shared(slice(path.as_bytes()))
        .map_err(|_| bad("invalid request target\n"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len() + crate::headers::FORWARD_FIELDS);
    for field in req.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| bad("invalid header name\n"))?;
        let value = HeaderValue::from_maybe_shared(slice(field.value))
            .map_err(|_| bad("invalid header value\n"))?;
        headers.append(name, value);
    }
    buf.advance(len);
    let length = content_length(&headers).map_err(|()| bad("invalid content-length\n"))?;
    let body = if headers.contains_key(TRANSFER_ENCODING) {
        if length.is_some() {
            return Err(bad("both content-length and transfer-encoding\n"));
        }
        if version == Version::HTTP_10 || !last_coding_is_chunked(&headers) {
            return Err(bad("unsupported transfer-encoding\n"));
        }
        // Codings before `chunked` (gzip, ...) would reach the target
        // without their label: we re-frame the body as plain chunked.
        // RFC 9112 6.1: 501 for a coding the server does not implement.
        if !only_chunked(&headers) {
            return Err((
                StatusCode::NOT_IMPLEMENTED,
                "transfer-encoding other than chunked is not supported\n",
            ));
        }
        ReqBody::Chunked(Chunk::Size)
    } else {
        match length {
            Some(n) if n > 0 => ReqBody::Length(n),
            _ => ReqBody::Done,
        }
    };
    let expects = version == Version::HTTP_11
        && body != ReqBody::Done
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((parts, body, expects)))
}

/// Whether `bytes` hold an empty line (CRLF CRLF, or bare LFs, which the
/// parser also accepts).
fn head_may_end(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

/// How long a keep-alive connection with no request under way may still
/// send one after a graceful stop (answered with `Connection: close`).
pub(crate) const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// At a stop: the next request, if one comes within `STOP_GRACE` (or has
/// begun to arrive: then read to its end, `header_read` still bounding
/// it), else `Gone`. Closing an idle keep-alive connection at once races a
/// client that sends its next request at that instant: measured with 12
/// clients sending back to back, 11-12 of them lost the request they had
/// just sent. With the grace they get it answered, with the close.
async fn begun_head<T>(link: &Link<T>, state: &ConnState) -> HeadRead
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = read_head(link, state);
    let mut head = std::pin::pin!(head);
    let started = poll_fn(|cx| match head.as_mut().poll(cx) {
        Poll::Ready(h) => Poll::Ready(Some(h)),
        Poll::Pending if !lock(link).buf.is_empty() => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    });
    match tokio::time::timeout(STOP_GRACE, started).await {
        Ok(Some(h)) => h,
        Ok(None) => head.await,
        Err(_) => HeadRead::Gone,
    }
}

/// Reads the next request head, parses it and sets the connection up for
/// its body.
async fn read_head<T>(link: &Link<T>, state: &ConnState) -> HeadRead
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Bytes already searched for the blank line: a head arriving in many
    // small pieces is parsed once it is whole, not once per piece.
    let mut scanned = 0usize;
    let parsed = poll_fn(|cx| {
        let mut guard = lock(link);
        let inner = &mut *guard;
        loop {
            // The first try parses at once (a head usually comes whole);
            // after a partial one, only new bytes that may end it count.
            let from = scanned.saturating_sub(3);
            let worth = !inner.buf.is_empty() && (scanned == 0 || head_may_end(&inner.buf[from..]));
            if worth {
                match parse_request(&mut inner.buf) {
                    Ok(Some(p)) => return Poll::Ready(Ok(p)),
                    Ok(None) => {
                        if scanned == 0 {
                            // The connection guard times the rest.
                            state.set_head_partial(true);
                        }
                        scanned = inner.buf.len();
                    }
                    Err(bad) => return Poll::Ready(Err(Some(bad))),
                }
            } else if scanned > 0 {
                scanned = inner.buf.len();
            }
            if inner.buf.len() >= MAX_HEAD_BYTES {
                return Poll::Ready(Err(Some((
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request head too large\n",
                ))));
            }
            let Some(io) = inner.io.as_mut() else {
                return Poll::Ready(Err(None));
            };
            // Uninitialised: no 4 KiB memset per read.
            let mut chunk = [MaybeUninit::<u8>::uninit(); HEAD_READ];
            let mut rb = ReadBuf::uninit(&mut chunk);
            match ready!(Pin::new(io).poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => {
                    if !inner.buf.is_empty() {
                        tracing::debug!("client closed the connection inside a request head");
                    }
                    return Poll::Ready(Err(None));
                }
                Ok(()) => inner.buf.extend_from_slice(rb.filled()),
                Err(e) => {
                    tracing::debug!(error = %e, "client connection ended");
                    return Poll::Ready(Err(None));
                }
            }
        }
    })
    .await;
    if scanned > 0 {
        state.set_head_partial(false);
    }
    let (mut parts, body, expects) = match parsed {
        Ok(p) => p,
        Err(Some((status, why))) => return HeadRead::Bad(status, why),
        Err(None) => return HeadRead::Gone,
    };
    let http10 = parts.version == Version::HTTP_10;
    let keep_alive = if http10 {
        has_token(&parts.headers, &CONNECTION, "keep-alive")
    } else {
        !has_token(&parts.headers, &CONNECTION, "close")
    } && parts.method != Method::CONNECT;
    let upgrade = (!http10 && crate::upgrade::wants_upgrade(&parts.headers)).then(|| {
        let (tx, rx) = oneshot::channel();
        parts
            .extensions
            .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
        tx
    });
    let (body, stale) = {
        let mut inner = lock(link);
        // The previous body is done (or nobody reads it); any reader of it
        // still around gets an error from here on.
        let stale = inner.move_on();
        inner.body = body;
        inner.continue_sent = expects.then_some(0);
        if inner.buf.is_empty() {
            // Nothing more to read for now: the connection keeps no buffer
            // while its request is away.
            inner.buf = BytesMut::new();
        }
        let body = if body == ReqBody::Done {
            RequestBody::Empty
        } else {
            let source: Arc<dyn Source> = Arc::clone(link) as Arc<dyn Source>;
            RequestBody::H1(ClientBody {
                source,
                generation: inner.generation,
            })
        };
        (body, stale)
    };
    if let Some(w) = stale {
        w.wake();
    }
    let meta = Meta {
        keep_alive,
        http10,
        head: parts.method == Method::HEAD,
        connect: parts.method == Method::CONNECT,
        upgrade,
    };
    HeadRead::Request(Request::from_parts(parts, body), meta)
}

/// Writes all of `parts` in order (vectored where the stream can), failing
/// once a write has made no progress for the listener's idle timeout (the
/// client stopped reading; 0 means no limit).
async fn write_all<T: AsyncWrite + Unpin>(
    link: &Mutex<Inner<T>>,
    parts: &[&[u8]],
) -> io::Result<()> {
    let mut done = 0usize;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    // Armed only when a write has to wait (most complete at once), and
    // pushed back whenever bytes go out.
    let mut stall: Option<(Pin<Box<tokio::time::Sleep>>, std::time::Duration)> = None;
    poll_fn(|cx| {
        let before = done;
        let polled = poll_write_parts(link, parts, &mut done, total, cx);
        if polled.is_ready() {
            return polled;
        }
        let limit = match &stall {
            Some((_, limit)) => *limit,
            None => lock(link).stall,
        };
        if limit.is_zero() {
            return Poll::Pending;
        }
        let deadline = tokio::time::Instant::now() + limit;
        match &mut stall {
            None => stall = Some((Box::pin(tokio::time::sleep_until(deadline)), limit)),
            Some((timer, _)) if done > before => timer.as_mut().reset(deadline),
            Some(_) => {}
        }
        if let Some((timer, _)) = &mut stall {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(stalled()));
            }
        }
        Poll::Pending
    })
    .await
}

fn stalled() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "client stopped reading: idle timeout while writing",
    )
}

/// One attempt at writing the rest of `parts` (from byte `done`), then a
/// flush.
fn poll_write_parts<T: AsyncWrite + Unpin>(
    link: &Mutex<Inner<T>>,
    parts: &[&[u8]],
    done: &mut usize,
    total: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let mut guard = lock(link);
    let inner = &mut *guard;
    let Some(io) = inner.io.as_mut() else {
        return Poll::Ready(Err(closed()));
    };
    // A `100 Continue` not begun is no longer owed (it would now be
    // read as the answer); one begun is finished first.
    while let Some(sent) = inner.continue_sent {
        if sent == 0 || sent == CONTINUE.len() {
            inner.continue_sent = None;
            break;
        }
        match ready!(Pin::new(&mut *io).poll_write(cx, &CONTINUE[sent..]))? {
            0 => return Poll::Ready(Err(closed())),
            n => inner.continue_sent = Some(sent + n),
        }
    }
    while *done < total {
        let mut skip = *done;
        let mut slices = [IoSlice::new(&[]); 3];
        let mut k = 0;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            if k < slices.len() {
                slices[k] = IoSlice::new(&p[skip..]);
                k += 1;
            }
            skip = 0;
        }
        let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..k]))?;
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "client connection closed while writing",
            )));
        }
        *done += n;
    }
    Pin::new(&mut *io).poll_flush(cx)
}

thread_local! {
    /// The `date` value for the current second, per worker thread.
    static DATE_NOW: std::cell::RefCell<(u64, Option<HeaderValue>)> = const { std::cell::RefCell::new((0, None)) };
}

/// Today's `date` header value, formatted once a second per thread.
fn date_now() -> Option<HeaderValue> {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE_NOW.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs || cell.1.is_none() {
            cell.1 = HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok();
            cell.0 = secs;
        }
        cell.1.clone()
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body on the wire (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until we close (HTTP/1.0 client, length unknown).
    Close,
}

/// Encodes the response head into `out`; returns the framing chosen and
/// whether the connection may stay open after it.
fn encode_head(
    resp: &Response<ProxyBody>,
    meta: &Meta,
    mut keep_alive: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = resp.status();
    let headers = resp.headers();
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    // RFC 9110 8.6: no Content-Length in these at all.
    let no_length = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || (meta.connect && status.is_success());
    let bodiless = meta.head || no_length || status == StatusCode::NOT_MODIFIED;
    let hint = resp.body().size_hint().exact();
    let framing = if bodiless {
        Framing::None
    } else if let Some(n) = hint {
        Framing::Length(n)
    } else if meta.http10 {
        Framing::Close
    } else {
        Framing::Chunked
    };
    if framing == Framing::Close || has_token(headers, &CONNECTION, "close") {
        keep_alive = false;
    }
    // Once per connection (the buffer is kept): growing it by doubling
    // cost five reallocations on a new connection's first response.
    out.reserve((128 + 48 * headers.len()).min(KEEP_OUT));
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // Framing and the connection's fate are ours to state (below),
        // except in a 101, whose Connection and Upgrade go as they are.
        let ours = name == TRANSFER_ENCODING
            || (name == CONNECTION && !upgrade)
            || (name == CONTENT_LENGTH
                && (no_length
                    || matches!(
                        framing,
                        Framing::Length(_) | Framing::Chunked | Framing::Close
                    )));
        if !ours {
            push_field(out, name, value);
        }
    }
    if !headers.contains_key(DATE) {
        if let Some(date) = date_now() {
            push_field(out, &DATE, &date);
        }
    }
    match framing {
        // Writing into a Vec cannot fail.
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None if meta.head && !headers.contains_key(CONTENT_LENGTH) => {
            if let Some(n) = hint.filter(|&n| n > 0) {
                let _ = write!(out, "content-length: {n}\r\n");
            }
        }
        _ => {}
    }
    if !upgrade {
        if !keep_alive && !meta.http10 {
            out.extend_from_slice(b"connection: close\r\n");
        } else if keep_alive && meta.http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// Writes the response; Ok(true) if the connection may carry another request.
async fn respond<T>(
    link: &Link<T>,
    resp: Response<ProxyBody>,
    meta: &Meta,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> io::Result<bool>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    out.clear();
    let (framing, keep_alive) = encode_head(&resp, meta, keep_alive, out);
    let mut body = resp.into_body();
    if framing == Framing::None {
        drop(body);
        write_all(link, &[out]).await?;
        return Ok(keep_alive);
    }
    let mut sent = 0u64;
    loop {
        // Gather what is at hand; wait only with nothing to write.
        let frame = if out.is_empty() {
            poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        } else {
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    write_all(link, &[out]).await?;
                    out.clear();
                    continue;
                }
            }
        };
        match frame {
            None => {
                if let Framing::Length(n) = framing {
                    if sent != n {
                        return Err(invalid("response body shorter than its length"));
                    }
                }
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                write_all(link, &[out]).await?;
                return Ok(keep_alive);
            }
            Some(Err(e)) => {
                // The client sees a cut response: a close, or no last chunk.
                let _ = write_all(link, &[out]).await;
                return Err(io::Error::other(e));
            }
            Some(Ok(frame)) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        sent += data.len() as u64;
                        if let Framing::Length(n) = framing {
                            if sent > n {
                                return Err(invalid("response body longer than its length"));
                            }
                        }
                        if framing == Framing::Chunked {
                            let _ = write!(out, "{:x}\r\n", data.len());
                        }
                        let tail: &[u8] = if framing == Framing::Chunked {
                            b"\r\n"
                        } else {
                            b""
                        };
                        if out.len() + data.len() <= WRITE_GATHER {
                            out.extend_from_slice(&data);
                            out.extend_from_slice(tail);
                        } else {
                            write_all(link, &[out, &data, tail]).await?;
                            out.clear();
                        }
                        continue;
                    }
                    Err(frame) => frame,
                };
                if let (Framing::Chunked, Ok(trailers)) = (framing, frame.into_trailers()) {
                    out.extend_from_slice(b"0\r\n");
                    // Already cleaned (`body::clean_trailers`).
                    for (name, value) in &trailers {
                        push_field(out, name, value);
                    }
                    out.extend_from_slice(b"\r\n");
                    write_all(link, &[out]).await?;
                    return Ok(keep_alive);
                }
            }
        }
        if out.len() >= WRITE_GATHER {
            write_all(link, &[out]).await?;
            out.clear();
        }
    }
}

/// Consumes what is left of the request body if it is already buffered;
/// false if the connection cannot go on to another request.
fn body_finished<T>(inner: &mut Inner<T>) -> bool {
    loop {
        match inner.body {
            ReqBody::Done | ReqBody::Length(0) => {
                inner.body = ReqBody::Done;
                return true;
            }
            ReqBody::Failed => return false,
            ReqBody::Length(n) => {
                if (inner.buf.len() as u64) < n {
                    return false;
                }
                inner.buf.advance(n as usize);
                inner.body = ReqBody::Done;
            }
            ReqBody::Chunked(mut chunk) => match decode_chunked(&mut inner.buf, &mut chunk) {
                Ok(Decoded::Data(_)) => inner.body = ReqBody::Chunked(chunk),
                Ok(Decoded::End(_)) => inner.body = ReqBody::Done,
                Ok(Decoded::More) | Err(_) => return false,
            },
        }
    }
}

/// Serves HTTP/1.1 on a client connection until it closes, fails, is
/// upgraded, or `stop` resolves (then the connection closes between
/// requests, or after the response in progress).
///
/// Not an `async fn`: the socket goes into the shared state here, so the
/// future (which lives as long as the connection) holds no copy of it, and
/// `stop` stays pinned where the caller keeps it.
pub fn serve<'a, T, S>(
    io: T,
    ctx: Arc<ConnCtx>,
    stall: std::time::Duration,
    mut stop: Pin<&'a mut S>,
) -> impl Future<Output = ()> + Send + 'a
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Future<Output = ()> + Send,
{
    let link: Link<T> = Arc::new(Mutex::new(Inner {
        io: Some(io),
        buf: BytesMut::new(),
        body: ReqBody::Done,
        generation: 0,
        reader: None,
        continue_sent: None,
        stall,
    }));
    async move {
        let mut out = Vec::new();
        let mut stopping = false;
        let mut refused = false;
        loop {
            // The parsed head is moved into the request's future in this block,
            // so it has no place of its own in this future while that runs.
            let mut meta;
            let Ok(mut resp) = {
                let req;
                (req, meta) = match if stopping {
                    HeadRead::Gone
                } else {
                    tokio::select! {
                        biased;
                        h = read_head(&link, &ctx.state) => h,
                        // Idle: closed at once. A head already begun is read
                        // to its end (header_read still bounds it) and
                        // answered, with the close.
                        () = stop.as_mut() => {
                            stopping = true;
                            begun_head(&link, &ctx.state).await
                        }
                    }
                } {
                    HeadRead::Request(req, meta) => (req, meta),
                    HeadRead::Gone => break,
                    HeadRead::Bad(status, why) => {
                        let meta = Meta {
                            keep_alive: false,
                            http10: false,
                            head: false,
                            connect: false,
                            upgrade: None,
                        };
                        out.clear();
                        let resp = crate::error::text_response(status, why);
                        let (_, _) = encode_head(&resp, &meta, false, &mut out);
                        if let ProxyBody::Full(Some(b)) = resp.into_body() {
                            out.extend_from_slice(&b);
                        }
                        let _ = write_all(&link, &[&out]).await;
                        // Whatever came after the refused head is unread.
                        refused = true;
                        break;
                    }
                };
                handle(req, Arc::clone(&ctx))
            }
            .await;
            let upgrading =
                resp.status() == StatusCode::SWITCHING_PROTOCOLS && meta.upgrade.is_some();
            if resp.status().is_informational() && !upgrading {
                // An interim status as the answer (a 1xx fixed response, a 101
                // nobody asked for) would leave the client waiting for the
                // final one: 500, as hyper's server did.
                resp = crate::error::text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "interim status as a final answer\n",
                );
            }
            // A stop during the request: this response is the last. Polled
            // without a waker: the next head read polls it with one, and an
            // await here would keep the response in this future twice.
            if !stopping {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                stopping = stop.as_mut().poll(&mut cx).is_ready();
            }
            // A body nobody reads any more (a fixed answer, a 404, an upstream
            // that answered early): skipped if it has all arrived, else the
            // response says the connection closes after it.
            let unread = {
                let mut inner = lock(&link);
                Arc::strong_count(&link) == 1 && !body_finished(&mut inner)
            };
            let keep = meta.keep_alive && !stopping && !unread;
            let kept = respond(&link, resp, &meta, keep, &mut out).await;
            if out.capacity() > KEEP_OUT {
                out = Vec::new();
            }
            match kept {
                Ok(_) if upgrading => {
                    if let Some(tx) = meta.upgrade.take() {
                        let mut inner = lock(&link);
                        let stale = inner.move_on();
                        if let Some(io) = inner.io.take() {
                            let read_ahead = inner.buf.split().freeze();
                            let _ = tx.send(Upgraded {
                                io: Box::new(io),
                                read_ahead,
                            });
                        }
                        drop(inner);
                        if let Some(w) = stale {
                            w.wake();
                        }
                    }
                    return;
                }
                Ok(true) => {
                    let mut inner = lock(&link);
                    if !body_finished(&mut inner) {
                        break;
                    }
                    if inner.buf.is_empty() {
                        inner.buf = BytesMut::new();
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "response not delivered");
                    break;
                }
            }
        }
        close(&link, refused, stall).await;
    }
}

/// The end of a client connection: the socket is taken from the shared
/// state and closed. Its own future, and not an `async fn` (see `serve`):
/// the socket is kept once, and only while it closes.
fn close<T: AsyncRead + AsyncWrite + Unpin>(
    link: &Link<T>,
    refused: bool,
    stall: std::time::Duration,
) -> impl Future<Output = ()> {
    let (io, unread, stale) = {
        let mut inner = lock(link);
        let stale = inner.move_on();
        (
            inner.io.take(),
            refused || inner.body != ReqBody::Done,
            stale,
        )
    };
    if let Some(w) = stale {
        w.wake();
    }
    async move {
        let Some(mut io) = io else {
            return;
        };
        if unread {
            // Closing a socket with unread input sends a reset, which can
            // destroy the response before the client reads it: discard what
            // has arrived (without waiting, bounded) first.
            let mut discarded = 0usize;
            poll_fn(|cx| loop {
                let mut chunk = [MaybeUninit::<u8>::uninit(); HEAD_READ];
                let mut rb = ReadBuf::uninit(&mut chunk);
                match Pin::new(&mut io).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if !rb.filled().is_empty() && discarded < DISCARD_MAX => {
                        discarded += rb.filled().len();
                    }
                    _ => return Poll::Ready(()),
                }
            })
            .await;
        }
        // TLS sends close_notify (plain TCP's FIN comes with the drop), as
        // long as the client reads it.
        // Plain TCP shuts down at once: the timer (a clock read and a
        // timer entry) only for a shutdown that has to wait.
        let shutdown = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx));
        if stall.is_zero() {
            let _ = shutdown.await;
        } else {
            let mut shutdown = std::pin::pin!(shutdown);
            let first = poll_fn(|cx| Poll::Ready(shutdown.as_mut().poll(cx))).await;
            if first.is_pending() {
                let _ = tokio::time::timeout(stall, shutdown).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Parsed>, Refusal> {
        parse_request(&mut BytesMut::from(bytes))
    }

    fn status_of(bytes: &[u8]) -> StatusCode {
        match parse(bytes) {
            Err((status, _)) => status,
            Ok(p) => panic!("accepted: {:?}", p.map(|p| p.0)),
        }
    }

    #[test]
    fn a_head_is_parsed_with_its_body_framing_and_the_rest_left_for_later() {
        let mut buf = BytesMut::from(
            &b"POST /up?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabcGET"[..],
        );
        let (parts, body, expects) = parse_request(&mut buf).unwrap().unwrap();
        assert_eq!(parts.method, Method::POST);
        assert_eq!(parts.uri, "/up?x=1");
        assert_eq!(parts.headers["host"], "a");
        assert_eq!(body, ReqBody::Length(3));
        assert!(expects);
        assert_eq!(
            &buf[..],
            b"abcGET",
            "the body and what follows stay buffered"
        );
        // Incomplete: nothing consumed.
        let mut part = BytesMut::from(&b"GET / HTTP/1.1\r\nHost:"[..]);
        assert!(parse_request(&mut part).unwrap().is_none());
        assert_eq!(part.len(), 21);
        // Chunked; no 100-continue owed without a body.
        let (_, body, _) = parse(b"PUT / HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(body, ReqBody::Chunked(Chunk::Size));
        let (_, body, expects) = parse(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((body, expects), (ReqBody::Done, false));
    }

    #[tokio::test]
    async fn a_body_reader_left_behind_is_woken_and_told_once_the_connection_moves_on() {
        let (client, server) = tokio::io::duplex(1024);
        let link: Link<tokio::io::DuplexStream> = Arc::new(Mutex::new(Inner {
            io: Some(server),
            buf: BytesMut::new(),
            body: ReqBody::Length(10),
            generation: 1,
            reader: None,
            continue_sent: None,
            stall: std::time::Duration::from_secs(5),
        }));
        let mut body = ClientBody {
            source: Arc::clone(&link) as Arc<dyn Source>,
            generation: 1,
        };
        let left_behind = ClientBody {
            source: Arc::clone(&link) as Arc<dyn Source>,
            generation: 1,
        };
        // A reader in a task of its own (as hyper's HTTP/2 client has),
        // waiting for body bytes that will not come.
        let reader = tokio::spawn(async move {
            poll_fn(|cx| body.poll_frame(cx))
                .await
                .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
        });
        let parked = std::time::Instant::now();
        while lock(&link).reader.is_none() {
            assert!(parked.elapsed() < std::time::Duration::from_secs(5));
            tokio::task::yield_now().await;
        }
        // The next request's head comes in (or the connection closes).
        let stale = {
            let mut inner = lock(&link);
            inner.body = ReqBody::Length(5);
            inner.move_on()
        };
        stale.expect("the parked reader left its waker").wake();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the reader was never woken")
            .unwrap();
        assert!(
            matches!(&got, Some(Err(e)) if e.contains("moved on")),
            "{got:?}"
        );
        // Nor does a reader left behind take the move for a normal end
        // (it would send a cut-off body on as complete).
        assert!(!left_behind.is_end_stream());
        drop(client);
    }

    #[test]
    fn ambiguous_or_unsupported_framing_is_refused() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            status_of(
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            bad
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            bad
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            bad
        );
        // A coding under chunked would be dropped on the way: not served.
        for te in [
            &b"Transfer-Encoding: gzip, chunked\r\n"[..],
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked, chunked\r\n",
        ] {
            let req = [&b"POST / HTTP/1.1\r\n"[..], te, b"\r\n"].concat();
            assert_eq!(status_of(&req), StatusCode::NOT_IMPLEMENTED, "{te:?}");
        }
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"),
            bad
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            bad
        );
        assert_eq!(
            status_of(b"GET / HTTP/2.0\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
        assert_eq!(status_of(b"NOT HTTP AT ALL\r\n\r\n"), bad);
    }

    #[test]
    fn heads_over_the_limits_get_431_even_when_they_arrive_whole() {
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(
            status_of(big.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            status_of(head.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn response_heads_state_framing_and_keep_alive_for_the_client() {
        let meta = |http10, head| Meta {
            keep_alive: true,
            http10,
            head,
            connect: false,
            upgrade: None,
        };
        let encode = |resp: &Response<ProxyBody>, m: &Meta| {
            let mut out = Vec::new();
            let (framing, keep) = encode_head(resp, m, true, &mut out);
            (framing, keep, String::from_utf8(out).unwrap())
        };
        let mut resp = Response::new(ProxyBody::full(Bytes::from_static(b"hello")));
        resp.headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let (framing, keep, text) = encode(&resp, &meta(false, false));
        assert_eq!((framing, keep), (Framing::Length(5), true));
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(text.contains("date: "), "{text}");
        // HTTP/1.0 keep-alive is stated; HEAD keeps the length, sends no body.
        let (framing, _, text) = encode(&resp, &meta(true, true));
        assert_eq!(framing, Framing::None);
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        // The service asking for a close is honoured and said.
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        let (_, keep, text) = encode(&resp, &meta(false, false));
        assert!(!keep);
        assert_eq!(text.matches("connection: close").count(), 1, "{text}");
        // 204 gets no framing headers at all.
        let mut empty = Response::new(ProxyBody::empty());
        *empty.status_mut() = StatusCode::NO_CONTENT;
        empty
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let (framing, _, text) = encode(&empty, &meta(false, false));
        assert_eq!(framing, Framing::None);
        assert!(!text.contains("content-length"), "{text}");
        // Nor does a 2xx to CONNECT: a tunnel follows, not a body.
        *empty.status_mut() = StatusCode::OK;
        let connect = Meta {
            connect: true,
            ..meta(false, false)
        };
        let (framing, _, text) = encode(&empty, &connect);
        assert_eq!(framing, Framing::None);
        assert!(!text.contains("content-length"), "{text}");
    }
}
