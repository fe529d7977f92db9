//! Our HTTP/1.1 client for upstream connections.
//!
//! Why not hyper's client: hyper runs each connection as a task of its own,
//! fed by a channel. Per upstream connection that is a task, an 8 KiB write
//! buffer, an 8-16 KiB read buffer and two channel blocks of about 9 KiB,
//! all kept for the connection's life: heaptrack at 1,000 connections
//! counted 37 of the proxy's 66 MiB there. Per request it costs a channel
//! send, a oneshot and two task wake-ups. Here a connection is a socket;
//! its read buffer exists only during an exchange, and the request's own
//! task does the reading and writing.
//!
//! Scope: what a proxy needs from an origin. Responses are framed by
//! RFC 9112 6.3 (no body for HEAD, 1xx, 204 and 304; chunked wins over
//! Content-Length and then the connection is not reused; otherwise
//! Content-Length; otherwise until close). Interim 1xx answers other than
//! 101 are skipped. A 101 hands the socket over for a tunnel.

use std::future::{poll_fn, Future};
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::pool::Slot;

/// How soon after a request went out on a reused connection a close
/// without answer counts as the keep-alive race (and the request may go
/// out again): a loopback or LAN round trip, with room to spare.
const RACE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);
/// Largest response head (or trailer block) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// First read of an exchange: a typical head and small body fit.
const FIRST_READ: usize = 4096;
/// Reads for larger bodies.
const BODY_READ: usize = 16 * 1024;
/// Body data below this is copied out of the read buffer, which then stays
/// ours for the next read instead of being shared with a frame in flight
/// (and reallocated).
const COPY_BELOW: usize = 4096;
/// Answer bytes buffered while a request body is still going out to an
/// upstream that answered 2xx early.
const EARLY_BUFFER: usize = 1024 * 1024;
/// Request body data gathered before a write.
const WRITE_GATHER: usize = 16 * 1024;

/// A way to close a connection from outside its task (a draining target's
/// deadline). The exchange and the body poll it, so a cut wakes them.
#[derive(Default)]
pub struct Cut {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Cut {
    pub fn cut(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    fn is_cut(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_cut() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.is_cut() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut (target drained)",
    )
}

/// One upstream HTTP/1.1 connection.
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet used; empty (no allocation) between exchanges.
    buf: BytesMut,
    cut: Arc<Cut>,
    /// The connection's place under `limits.max_connections`.
    _slot: Option<Slot>,
    /// It carried an exchange before (came from the pool).
    reused: bool,
}

/// Why an exchange failed.
pub enum SendError {
    /// The request is ours to send again (boxed: the rare path should not
    /// size every result): nothing was written, or it went out on a reused
    /// connection that closed without a byte of answer and is safe to
    /// repeat (bodyless and idempotent; RFC 9112 9.3.1). The latter is the
    /// race of a keep-alive connection the upstream closes as we use it.
    Unsent(Box<Request<RequestBody>>),
    Failed(String),
    /// The client's request body failed on the way (malformed chunks, cut
    /// short, longer than its length): the client's fault, not the
    /// target's (400, not counted against the target, never retried).
    Client(String),
    /// An h2c target refused the stream unprocessed (RFC 9113 8.7): a
    /// GOAWAY that excluded it (`going_away`: the connection, numbered
    /// `conn`, takes no more), or REFUSED_STREAM. Safe to send again
    /// whatever the method, but the request went into the exchange: only
    /// a copy can go. Never made by the HTTP/1.1 client.
    Refused {
        conn: u64,
        going_away: bool,
    },
}

/// Why a request body step failed.
enum StepError {
    /// Writing to the upstream.
    Upstream(String),
    /// Reading the client's body.
    Client(String),
}

pin_project_lite::pin_project! {
    /// An exchange that ends with an error as soon as its connection is
    /// cut (draining past `deregistration_delay`), whatever it waits for.
    pub struct CutRace<F> {
        cut: Arc<Cut>,
        #[pin]
        exchange: F,
    }
}

impl<F, T> Future for CutRace<F>
where
    F: Future<Output = Result<T, SendError>>,
{
    type Output = Result<T, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.cut.poll(cx).is_ready() {
            return Poll::Ready(Err(SendError::Failed(cut_error().to_string())));
        }
        this.exchange.poll(cx)
    }
}

/// Why no response head came.
enum HeadError {
    /// Closed or reset before a single byte of answer.
    Unanswered,
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqFraming {
    None,
    Length(u64),
    Chunked,
}

impl Conn {
    pub fn new(io: TcpStream, cut: Arc<Cut>, slot: Option<Slot>) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            cut,
            _slot: slot,
            reused: false,
        }
    }

    /// Whether the connection can no longer carry a request: cut, or the
    /// upstream closed it (or sent something unasked) while it was idle.
    /// No syscall unless the socket has signalled readable.
    pub fn is_closed(&self) -> bool {
        if self.cut.is_cut() {
            return true;
        }
        let mut probe = [0u8; 1];
        !matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `req` and waits for the answer's head. The body streams from
    /// the returned response (its body wrapped by `wrap`); at its end the
    /// connection can be taken back for reuse ([`Body::take_conn`]).
    ///
    /// Plain functions returning futures rather than `async fn`s, here and
    /// on the request path: an `async fn` keeps its arguments twice in its
    /// future (rust-lang/rust#62958), and this one is boxed per request.
    pub fn send<B>(
        self,
        req: Request<RequestBody>,
        wrap: fn(Body) -> B,
    ) -> CutRace<impl Future<Output = Result<Response<B>, SendError>> + Send> {
        CutRace {
            cut: Arc::clone(&self.cut),
            exchange: self.exchange(req, wrap),
        }
    }

    fn exchange<B>(
        mut self,
        req: Request<RequestBody>,
        wrap: fn(Body) -> B,
    ) -> impl Future<Output = Result<Response<B>, SendError>> + Send {
        let head_request = req.method() == Method::HEAD;
        let (parts, mut body) = req.into_parts();
        let framing = request_framing(&parts.headers, &body);
        let mut out = Vec::with_capacity(256 + 64 * parts.headers.len());
        encode_head(&parts, framing, &mut out);
        async move {
            // Written after the other tasks of this scheduler tick: the writes
            // of a burst of requests then leave together, and the upstream
            // wakes once for them rather than once per request. Measured (ka64,
            // benches/README.md): without this the extra wake-ups cost more
            // kernel time than hyper's channel and connection task did.
            tokio::task::yield_now().await;
            // Nothing of the body is taken before the head is out, so a socket
            // that turns out closed hands the request back whole.
            let n = match self.io.write(&out).await {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(SendError::Unsent(Box::new(Request::from_parts(
                        parts, body,
                    ))))
                }
            };
            out.drain(..n);
            if out.is_empty() && framing == ReqFraming::None {
                // Nothing more to write: no buffer held while the answer comes.
                out = Vec::new();
            }
            let written = tokio::time::Instant::now();
            let repeatable = self.reused
                && framing == ReqFraming::None
                && crate::forward::is_idempotent(&parts.method);
            let mut heard = false;
            let mut sending = Sending {
                framing,
                sent: 0,
                done: framing == ReqFraming::None,
                complete: true,
            };
            // Write the rest while watching for an early answer. An upstream
            // refusing the body (an error status before it has all of it) is
            // answered at once and the upload stopped. One that answers 2xx
            // early with an answer still streaming (an echo that streams
            // back as it reads) has its answer passed on at once, and the
            // rest of the body goes out from the response body's polls
            // ([`Upload`]): waiting for the whole upload first would
            // deadlock an echo once both directions' buffers are full. A
            // whole early 2xx answer waits for the upload (see
            // `answer_whole`).
            let mut early = false;
            let mut streaming_back = false;
            while !(sending.done && out.is_empty()) {
                let (mut rd, mut wr) = self.io.split();
                // A whole 2xx answer is here: only the upload goes on.
                let room = self.buf.len() < EARLY_BUFFER && !streaming_back;
                if room && self.buf.capacity() - self.buf.len() < 1024 {
                    self.buf.reserve(FIRST_READ);
                }
                tokio::select! {
                    biased;
                    r = rd.read_buf(&mut self.buf), if room => {
                        match r {
                            Ok(0) => return Err(SendError::Failed("upstream closed the connection while the request was sent".into())),
                            Err(e) => return Err(SendError::Failed(e.to_string())),
                            Ok(_) => heard = true,
                        }
                        if !skip_interim(&mut self.buf).map_err(SendError::Failed)? {
                            continue;
                        }
                        match parse_head(&self.buf).map_err(SendError::Failed)? {
                            Some(h) if h.status.is_success() => {
                                streaming_back = true;
                                // A whole answer (no body, or all of it
                                // here) comes from a target that may still
                                // read the rest, as Node's does after
                                // `res.end()`: the upload is finished first,
                                // as before. One still streaming (an echo)
                                // goes to the client at once.
                                if !answer_whole(&h, head_request, self.buf.len()) {
                                    break;
                                }
                            }
                            // Not all of the head yet: its status decides.
                            None => {}
                            Some(_) => {
                                early = true;
                                break;
                            }
                        }
                    }
                    r = sending.step(&mut wr, &mut body, &mut out) => {
                        match r {
                            Ok(()) => {}
                            Err(StepError::Client(e)) => return Err(SendError::Client(e)),
                            // The upstream stopped reading but has answered
                            // in full: its answer stands.
                            Err(StepError::Upstream(_)) if streaming_back => {
                                early = true;
                                break;
                            }
                            Err(StepError::Upstream(e)) => return Err(SendError::Failed(e)),
                        }
                    }
                }
            }
            // A connection whose upload goes on in the background is not
            // reused (its end is not known here).
            let uploading = streaming_back && !early && !(sending.done && out.is_empty());
            let complete = !early && !uploading && sending.complete;
            match self.read_head(head_request, complete, heard).await {
                Ok(mut resp) => {
                    if uploading {
                        resp.body_mut().upload = Some(Box::new(Upload { sending, body, out }));
                    }
                    Ok(resp.map(wrap))
                }
                // Only the race: a close that follows the write at once, not a
                // target failing while it works on the request.
                Err(HeadError::Unanswered) if repeatable && written.elapsed() < RACE_WINDOW => Err(
                    SendError::Unsent(Box::new(Request::from_parts(parts, body))),
                ),
                Err(HeadError::Unanswered) => Err(SendError::Failed(
                    "upstream closed the connection before answering".into(),
                )),
                Err(HeadError::Failed(why)) => Err(SendError::Failed(why)),
            }
        }
    }

    /// Reads the final response head (interim 1xx answers skipped).
    async fn read_head(
        mut self,
        head_request: bool,
        request_complete: bool,
        mut heard: bool,
    ) -> Result<Response<Body>, HeadError> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf).map_err(HeadError::Failed)? {
                    Some(head)
                        if head.status.is_informational()
                            && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        self.buf.advance(head.len);
                        continue;
                    }
                    Some(head) => {
                        self.buf.advance(head.len);
                        return self.response(head, head_request, request_complete);
                    }
                    None if self.buf.len() >= MAX_HEAD => {
                        return Err(HeadError::Failed("response head too large".into()));
                    }
                    None => {}
                }
            }
            match poll_fn(|cx| read_exact_size(&mut self.io, &mut self.buf, cx)).await {
                Ok(0) if !heard => return Err(HeadError::Unanswered),
                Ok(0) => return Err(HeadError::Failed("response head incomplete".into())),
                Ok(_) => heard = true,
                Err(_) if !heard => return Err(HeadError::Unanswered),
                Err(e) => return Err(HeadError::Failed(e.to_string())),
            }
        }
    }

    fn response(
        self,
        head: Head,
        head_request: bool,
        request_complete: bool,
    ) -> Result<Response<Body>, HeadError> {
        let Head {
            status,
            version,
            mut headers,
            ..
        } = head;
        let mut keep_alive = request_complete
            && version == Version::HTTP_11
            && !crate::headers::has_token(&headers, &CONNECTION, "close");
        let state = if status == StatusCode::SWITCHING_PROTOCOLS {
            keep_alive = false;
            BodyState::Upgrade
        } else if head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            BodyState::Done
        } else if headers.contains_key(TRANSFER_ENCODING) {
            // Chunked wins over a length; a message with both is suspect, so
            // its connection is not reused (RFC 9112 6.3).
            if headers.remove(CONTENT_LENGTH).is_some() {
                keep_alive = false;
            }
            // Any other coding (gzip, ...) would reach the client without
            // its label, as we re-frame the body: 502, as NGINX answers.
            if !only_chunked(&headers) {
                return Err(HeadError::Failed(
                    "transfer-encoding other than chunked in response".into(),
                ));
            }
            BodyState::Chunked(Chunk::Size)
        } else {
            match content_length(&headers) {
                Ok(Some(n)) => BodyState::Length(n),
                Ok(None) => {
                    keep_alive = false;
                    BodyState::Eof
                }
                // RFC 9112 6.3: a proxy discards such a response (502).
                Err(()) => {
                    return Err(HeadError::Failed(
                        "invalid content-length in response".into(),
                    ))
                }
            }
        };
        let mut resp = Response::new(Body {
            conn: Some(self),
            state,
            keep_alive,
            upload: None,
        });
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        Ok(resp)
    }
}

/// Progress of a request body on its way out.
struct Sending {
    framing: ReqFraming,
    sent: u64,
    done: bool,
    /// False when the body ended short of its declared length or failed:
    /// the upstream is left waiting, so the connection is not reused.
    complete: bool,
}

impl Sending {
    /// One step: write pending bytes, or take the next body frame. Safe to
    /// drop between polls (nothing is lost: a write either happened or not).
    async fn step(
        &mut self,
        wr: &mut tokio::net::tcp::WriteHalf<'_>,
        body: &mut RequestBody,
        out: &mut Vec<u8>,
    ) -> Result<(), StepError> {
        if !out.is_empty() && (self.done || out.len() >= WRITE_GATHER) {
            body.not_waiting_on_client();
            let n = wr
                .write(out)
                .await
                .map_err(|e| StepError::Upstream(e.to_string()))?;
            if n == 0 {
                return Err(StepError::Upstream(
                    "upstream connection closed while writing".into(),
                ));
            }
            out.drain(..n);
            return Ok(());
        }
        let frame = if out.is_empty() {
            poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        } else {
            // Bytes are waiting: flush them unless more body is at hand.
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    body.not_waiting_on_client();
                    let n = wr
                        .write(out)
                        .await
                        .map_err(|e| StepError::Upstream(e.to_string()))?;
                    if n == 0 {
                        return Err(StepError::Upstream(
                            "upstream connection closed while writing".into(),
                        ));
                    }
                    out.drain(..n);
                    return Ok(());
                }
            }
        };
        self.encode(frame, out)
    }

    /// Appends one frame of the client's body (or its end) to `out`, in the
    /// request's framing.
    fn encode<E: std::fmt::Display>(
        &mut self,
        frame: Option<Result<Frame<Bytes>, E>>,
        out: &mut Vec<u8>,
    ) -> Result<(), StepError> {
        match frame {
            None => {
                match self.framing {
                    ReqFraming::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
                    ReqFraming::Length(n) if self.sent != n => {
                        self.complete = false;
                        return Err(StepError::Client(
                            "client request body shorter than its length".into(),
                        ));
                    }
                    _ => {}
                }
                self.done = true;
            }
            Some(Err(e)) => {
                self.complete = false;
                return Err(StepError::Client(format!("client request body: {e}")));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        return Ok(());
                    }
                    self.sent += data.len() as u64;
                    match self.framing {
                        ReqFraming::Chunked => {
                            // Writing into a Vec cannot fail.
                            let _ = write!(out, "{:x}\r\n", data.len());
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        }
                        ReqFraming::Length(n) if self.sent > n => {
                            return Err(StepError::Client(
                                "client request body longer than its length".into(),
                            ));
                        }
                        _ => out.extend_from_slice(&data),
                    }
                }
                Err(frame) => {
                    // Trailers: only chunked framing can carry them.
                    if let (ReqFraming::Chunked, Ok(trailers)) =
                        (self.framing, frame.into_trailers())
                    {
                        out.extend_from_slice(b"0\r\n");
                        for (name, value) in &trailers {
                            push_field(out, name, value);
                        }
                        out.extend_from_slice(b"\r\n");
                        self.done = true;
                        self.framing = ReqFraming::None;
                    }
                }
            },
        }
        Ok(())
    }
}

fn request_framing(headers: &HeaderMap, body: &RequestBody) -> ReqFraming {
    if let Ok(Some(n)) = content_length(headers) {
        return ReqFraming::Length(n);
    }
    if body.is_end_stream() {
        return ReqFraming::None;
    }
    match body.size_hint().exact() {
        Some(n) => ReqFraming::Length(n),
        None => ReqFraming::Chunked,
    }
}

pub(crate) fn push_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn encode_head(parts: &http::request::Parts, framing: ReqFraming, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    // Origin-form only: CONNECT never gets here (the service answers 405).
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // Framing is ours to decide (below): a client's `5, 5`, two
        // lines or `0005` go out as one plain value, which every target
        // reads alike.
        if name == TRANSFER_ENCODING || name == CONTENT_LENGTH {
            continue;
        }
        push_field(out, name, value);
    }
    match framing {
        ReqFraming::Length(n) => {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        ReqFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head; `len` bytes of the buffer.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    len: usize,
}

/// Parses a response head at the start of `buf`; `None` while incomplete.
/// Kept synchronous so the header array lives on the stack, not in the
/// exchange's future.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    // Uninitialised: no 4 KiB of stores per answer for fields never used.
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| "invalid response status".to_string())?;
    // One copy of the head; the values are slices of it.
    let copy = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for field in resp.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| format!("invalid response header name {:?}", field.name))?;
        let start = field.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(copy.slice(start..start + field.value.len()))
            .map_err(|_| format!("invalid value in response header {name}"))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        len,
    }))
}

/// Whether an early answer's head `h`, with `buffered` bytes read so far,
/// is the whole answer: no body, or all of a known-length one.
fn answer_whole(h: &Head, head_request: bool, buffered: usize) -> bool {
    if head_request || h.status == StatusCode::NO_CONTENT || h.status == StatusCode::NOT_MODIFIED {
        return true;
    }
    if h.headers.contains_key(TRANSFER_ENCODING) {
        return false;
    }
    let here = buffered.saturating_sub(h.len) as u64;
    matches!(content_length(&h.headers), Ok(Some(n)) if here >= n)
}

/// While a request body is still going out: drops complete interim (1xx)
/// heads at the start of `buf`; true once a final answer has begun.
fn skip_interim(buf: &mut BytesMut) -> Result<bool, String> {
    loop {
        match parse_head(buf)? {
            Some(h)
                if h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS =>
            {
                buf.advance(h.len);
            }
            Some(_) => return Ok(true),
            None if buf.len() >= MAX_HEAD => return Err("response head too large".into()),
            // A partial head: a final answer unless it is a 1xx in pieces.
            None => return Ok(!buf.is_empty() && !starts_interim(buf)),
        }
    }
}

fn starts_interim(buf: &[u8]) -> bool {
    // "HTTP/1.x 1"
    buf.len() < 10 || buf.get(9) == Some(&b'1')
}

pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut found = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        for part in v.to_str().map_err(|_| ())?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = part.parse().map_err(|_| ())?;
            if found.is_some_and(|f| f != n) {
                return Err(());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Whether a message's transfer codings are exactly one `chunked`.
pub(crate) fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

pub(crate) fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    Chunked(Chunk),
    Eof,
    Done,
    Upgrade,
}

/// A response body read straight from the upstream connection.
pub struct Body {
    conn: Option<Conn>,
    state: BodyState,
    /// The exchange allows reuse once the body has been read to its end.
    keep_alive: bool,
    /// The rest of a request body still going out after an early 2xx
    /// answer, written as this body is polled.
    upload: Option<Box<Upload>>,
}

/// A request body's remainder on its way out while the answer streams back.
struct Upload {
    sending: Sending,
    body: RequestBody,
    out: Vec<u8>,
}

/// Reads what the socket has through a stack buffer and appends it to
/// `buf`, which so grows only by what arrived: an exchange waiting for its
/// answer holds no read buffer (at 1,000 connections, 4 KiB each).
fn read_exact_size(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    // Uninitialised: no 4 KiB memset per read.
    let mut chunk = [MaybeUninit::<u8>::uninit(); FIRST_READ];
    let mut rb = tokio::io::ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    buf.extend_from_slice(rb.filled());
    Poll::Ready(Ok(rb.filled().len()))
}

/// Up to `max` buffered bytes as a frame's data.
pub(crate) fn take_data(buf: &mut BytesMut, max: u64) -> Bytes {
    let n = buf.len().min(usize::try_from(max).unwrap_or(usize::MAX));
    if n < COPY_BELOW {
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

/// Errors of a body in progress.
pub(crate) fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

impl Body {
    /// The connection, if the body was read to its end and the exchange
    /// allows another request on it.
    pub fn take_conn(&mut self) -> Option<Conn> {
        if !(self.keep_alive && self.is_end_stream()) {
            return None;
        }
        let mut conn = self.conn.take()?;
        // Leftover bytes are an answer nobody asked for.
        if !conn.buf.is_empty() || conn.cut.is_cut() {
            return None;
        }
        conn.buf = BytesMut::new();
        conn.reused = true;
        // The finished exchange's task need not be kept alive by it.
        drop(conn.cut.waker.take());
        Some(conn)
    }

    /// Moves the upload on as far as it goes without waiting: writes what
    /// is encoded, takes the client's next frames. Its wakers are set where
    /// it stopped, so the task is polled again when either side can move.
    /// The upstream no longer reading ends the upload (its answer stands);
    /// a failing client body fails this response too.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let (Some(conn), Some(up)) = (self.conn.as_mut(), self.upload.as_mut()) else {
            return Ok(());
        };
        let ended = loop {
            if !up.out.is_empty() {
                match tokio::io::AsyncWrite::poll_write(Pin::new(&mut conn.io), cx, &up.out) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        up.out.drain(..n);
                        continue;
                    }
                    Poll::Ready(_) => break Ok(()),
                    Poll::Pending => return Ok(()),
                }
            }
            if up.sending.done {
                break Ok(());
            }
            let frame = match Pin::new(&mut up.body).poll_frame(cx) {
                Poll::Ready(f) => f,
                Poll::Pending => return Ok(()),
            };
            match up.sending.encode(frame, &mut up.out) {
                Ok(()) => {}
                Err(StepError::Client(why)) => break Err(invalid(&why)),
                Err(StepError::Upstream(_)) => break Ok(()),
            }
        };
        self.upload = None;
        self.keep_alive = false;
        ended
    }

    /// Whether the connection could be reused once the body is read.
    pub fn reusable(&self) -> bool {
        self.keep_alive
    }

    /// After a 101: the socket and any bytes the upstream sent after the
    /// head, for the tunnel.
    pub fn into_upgraded(mut self) -> Option<(TcpStream, Bytes)> {
        if self.state != BodyState::Upgrade {
            return None;
        }
        let conn = self.conn.take()?;
        Some((conn.io, conn.buf.freeze()))
    }

    pub fn is_end_stream(&self) -> bool {
        matches!(
            self.state,
            BodyState::Done | BodyState::Length(0) | BodyState::Upgrade
        )
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done | BodyState::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// Reads more into the buffer; Ok(0) at end of stream.
    fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if conn.cut.poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(want.max(1024));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if self.upload.is_some() {
            if let Err(e) = self.poll_upload(cx) {
                return Poll::Ready(Some(Err(e)));
            }
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.state {
                BodyState::Done | BodyState::Upgrade | BodyState::Length(0) => {
                    self.state = BodyState::Done;
                    return Poll::Ready(None);
                }
                BodyState::Length(left) => {
                    if conn.buf.is_empty() {
                        let want = usize::try_from(left).unwrap_or(BODY_READ).min(BODY_READ);
                        if ready!(Self::poll_fill(conn, cx, want))? == 0 {
                            self.keep_alive = false;
                            return Poll::Ready(Some(Err(invalid(
                                "upstream closed the connection before the body ended",
                            ))));
                        }
                    }
                    let data = take_data(&mut conn.buf, left);
                    self.state = BodyState::Length(left - data.len() as u64);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::Eof => {
                    if conn.buf.is_empty() && ready!(Self::poll_fill(conn, cx, BODY_READ))? == 0 {
                        self.state = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    let data = take_data(&mut conn.buf, u64::MAX);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::Chunked(mut chunk) => {
                    let decoded = decode_chunked(&mut conn.buf, &mut chunk);
                    self.state = BodyState::Chunked(chunk);
                    match decoded {
                        Err(e) => {
                            self.keep_alive = false;
                            return Poll::Ready(Some(Err(invalid(e))));
                        }
                        Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(Decoded::End(trailers)) => {
                            self.state = BodyState::Done;
                            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                        }
                        Ok(Decoded::More) => {}
                    }
                    if ready!(Self::poll_fill(conn, cx, FIRST_READ))? == 0 {
                        self.keep_alive = false;
                        return Poll::Ready(Some(Err(invalid(
                            "upstream closed the connection before the body ended",
                        ))));
                    }
                }
            }
        }
    }
}

/// What decoding chunked framing over the buffered bytes gave.
pub(crate) enum Decoded {
    Data(Bytes),
    /// The last chunk and the trailer section (trailers if any).
    End(Option<HeaderMap>),
    /// Need more bytes.
    More,
}

/// Decodes chunked framing from `buf` up to the next data, the end, or a
/// want of bytes; `chunk` follows. The one decoder of both directions
/// (upstream answers, client uploads).
pub(crate) fn decode_chunked(
    buf: &mut BytesMut,
    chunk: &mut Chunk,
) -> Result<Decoded, &'static str> {
    loop {
        match step_chunk(buf, *chunk)? {
            ChunkStep::Next(next) => *chunk = next,
            ChunkStep::Data(data, next) => {
                *chunk = next;
                return Ok(Decoded::Data(data));
            }
            ChunkStep::End(trailers) => return Ok(Decoded::End(trailers)),
            ChunkStep::More if buf.len() >= MAX_HEAD => return Err("chunk framing too long"),
            ChunkStep::More => return Ok(Decoded::More),
        }
    }
}

enum ChunkStep {
    /// Need more bytes.
    More,
    Next(Chunk),
    Data(Bytes, Chunk),
    /// Last chunk and trailer section read; trailers if any.
    End(Option<HeaderMap>),
}

/// One step of chunked decoding over the buffered bytes.
fn step_chunk(buf: &mut BytesMut, chunk: Chunk) -> Result<ChunkStep, &'static str> {
    match chunk {
        Chunk::Size => {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > 1024 {
                    Err("chunk size line too long")
                } else {
                    Ok(ChunkStep::More)
                };
            };
            let line = &buf[..lf];
            let line = line
                .strip_suffix(b"\r")
                .ok_or("chunk size line without CRLF")?;
            let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let zeros = line[..digits].iter().take_while(|&&b| b == b'0').count();
            // Leading zeros are allowed; the value must fit in 64 bits.
            if digits == 0 || digits - zeros.min(digits - 1) > 16 {
                return Err("invalid chunk size");
            }
            let rest = &line[digits..];
            let rest_ok = rest.is_empty()
                || rest
                    .iter()
                    .position(|&b| b != b' ' && b != b'\t')
                    .is_none_or(|i| rest[i] == b';');
            if !rest_ok {
                return Err("invalid chunk size");
            }
            let start = zeros.min(digits - 1);
            let hex =
                std::str::from_utf8(&line[start..digits]).map_err(|_| "invalid chunk size")?;
            let size = u64::from_str_radix(hex, 16).map_err(|_| "invalid chunk size")?;
            buf.advance(lf + 1);
            Ok(ChunkStep::Next(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(ChunkStep::More);
            }
            let data = take_data(buf, left);
            let left = left - data.len() as u64;
            Ok(ChunkStep::Data(
                data,
                if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                },
            ))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(ChunkStep::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err("chunk data not followed by CRLF");
            }
            buf.advance(2);
            Ok(ChunkStep::Next(Chunk::Size))
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(ChunkStep::End(None));
            }
            let mut fields = [httparse::EMPTY_HEADER; 32];
            match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Partial) => Ok(ChunkStep::More),
                Err(_) => Err("invalid trailer section"),
                Ok(httparse::Status::Complete((len, fields))) => {
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for f in fields.iter() {
                        let name = HeaderName::from_bytes(f.name.as_bytes())
                            .map_err(|_| "invalid trailer name")?;
                        let value = HeaderValue::from_bytes(f.value)
                            .map_err(|_| "invalid trailer value")?;
                        trailers.append(name, value);
                    }
                    buf.advance(len);
                    Ok(ChunkStep::End((!trailers.is_empty()).then_some(trailers)))
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
