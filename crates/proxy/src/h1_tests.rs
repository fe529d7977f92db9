//! The upstream HTTP/1.1 client against scripted upstreams on loopback.

use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// The body as it comes, for `Conn::send`.
fn identity(body: Body) -> Body {
    body
}

/// An upstream that reads one request head (and `body_len` body bytes),
/// records what it read, and answers with `answer` (raw bytes).
async fn scripted(answers: Vec<&'static [u8]>) -> (Conn, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for answer in answers {
            // Read until the head's blank line (requests here have no body
            // unless the test says so in the head, and then read a bit more).
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return seen;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            s.write_all(answer).await.unwrap();
        }
        // Keep reading until the client closes, so writes never fail.
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    (Conn::new(stream, Arc::new(Cut::default()), None), server)
}

fn get(path: &str) -> Request<RequestBody> {
    let mut req = Request::new(RequestBody::Empty);
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert("host", HeaderValue::from_static("app.test"));
    req
}

fn post(
    body: impl hyper::body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
) -> Request<RequestBody> {
    let (mut parts, _) = get("/up").into_parts();
    parts.method = Method::POST;
    Request::from_parts(parts, RequestBody::from_test(body))
}

/// Sends `req`, reads the (empty) answer, and returns what the upstream
/// received on the connection.
async fn sent_bytes(
    conn: Conn,
    server: tokio::task::JoinHandle<Vec<u8>>,
    req: Request<RequestBody>,
) -> String {
    let mut resp = send_ok(conn, req).await.into_body();
    assert!(resp.take_conn().is_some());
    drop(resp);
    String::from_utf8(server.await.unwrap()).unwrap()
}

async fn send_ok(conn: Conn, req: Request<RequestBody>) -> Response<Body> {
    match conn.send(req, identity).await {
        Ok(r) => r,
        Err(SendError::Unsent(_)) => panic!("unsent"),
        Err(SendError::Failed(why)) => panic!("failed: {why}"),
        Err(SendError::Client(why)) => panic!("client body failed: {why}"),
        Err(SendError::Refused { .. }) => panic!("refused"),
    }
}

async fn collect(body: &mut Body) -> (Vec<u8>, Option<HeaderMap>) {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = poll_fn(|cx| body.poll_frame(cx)).await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    (data, trailers)
}

#[tokio::test]
async fn content_length_response_and_reuse() {
    let (conn, server) = scripted(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello",
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    ])
    .await;
    let resp = send_ok(conn, get("/one?q=1")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-a"], "1");
    let mut body = resp.into_body();
    assert_eq!(body.size_hint().exact(), Some(5));
    assert_eq!(collect(&mut body).await.0, b"hello");
    let conn = body.take_conn().expect("keep-alive connection back");
    assert!(!conn.is_closed());
    let resp = send_ok(conn, get("/two")).await;
    assert_eq!(resp.status(), 404);
    let mut body = resp.into_body();
    assert!(body.is_end_stream());
    assert!(body.take_conn().is_some());
    drop(body);
    let seen = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        seen.starts_with("GET /one?q=1 HTTP/1.1\r\nhost: app.test\r\n\r\nGET /two HTTP/1.1\r\n"),
        "{seen}"
    );
}

#[tokio::test]
async fn chunked_response_with_trailers_and_interim_answer() {
    let (conn, _server) = scripted(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n",
    ])
    .await;
    let resp = send_ok(conn, get("/")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (data, trailers) = collect(&mut body).await;
    assert_eq!(data, b"hello world");
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert!(
        body.take_conn().is_some(),
        "chunked response keeps the connection"
    );
}

#[tokio::test]
async fn close_delimited_response_is_read_to_eof_and_not_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil").await.unwrap();
        s.write_all(b" close").await.unwrap();
    });
    let conn = Conn::new(
        TcpStream::connect(addr).await.unwrap(),
        Arc::default(),
        None,
    );
    let mut body = send_ok(conn, get("/")).await.into_body();
    assert_eq!(collect(&mut body).await.0, b"until close");
    assert!(body.take_conn().is_none());
}

#[tokio::test]
async fn head_204_and_304_have_no_body() {
    for (method, answer) in [
        (
            Method::HEAD,
            &b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n"[..],
        ),
        (Method::GET, &b"HTTP/1.1 204 No Content\r\n\r\n"[..]),
        (
            Method::GET,
            &b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n"[..],
        ),
    ] {
        let (conn, _server) = scripted(vec![answer]).await;
        let mut req = get("/");
        *req.method_mut() = method;
        let mut body = send_ok(conn, req).await.into_body();
        assert!(body.is_end_stream());
        assert_eq!(collect(&mut body).await.0, b"");
        assert!(body.take_conn().is_some());
    }
}

#[tokio::test]
async fn connection_close_and_http10_answers_are_not_reused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx"[..],
        &b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx"[..],
    ] {
        let (conn, _server) = scripted(vec![answer]).await;
        let mut body = send_ok(conn, get("/")).await.into_body();
        assert_eq!(collect(&mut body).await.0, b"x");
        assert!(body.take_conn().is_none());
    }
}

#[tokio::test]
async fn both_lengths_use_chunked_and_close() {
    let (conn, _server) = scripted(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ])
    .await;
    let resp = send_ok(conn, get("/")).await;
    assert!(!resp.headers().contains_key(CONTENT_LENGTH));
    let mut body = resp.into_body();
    assert_eq!(collect(&mut body).await.0, b"ok");
    assert!(body.take_conn().is_none());
}

#[tokio::test]
async fn malformed_answers_fail_clearly() {
    for (answer, why) in [
        (&b"HTTP/1.1 abc OK\r\n\r\n"[..], "invalid response"),
        (&b"NOT HTTP\r\n\r\n"[..], "invalid response head"),
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5, 7\r\n\r\n"[..],
            "invalid content-length",
        ),
        (
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n"[..],
            "transfer-encoding other than chunked",
        ),
        (
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nxyz"[..],
            "transfer-encoding other than chunked",
        ),
    ] {
        let (conn, _server) = scripted(vec![answer]).await;
        match conn.send(get("/"), identity).await {
            Err(SendError::Failed(w)) => assert!(w.contains(why), "{w}"),
            _ => panic!("expected a failure for {answer:?}"),
        }
    }
    // A broken chunk size is a body error, not a hang.
    let (conn, _server) = scripted(vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ])
    .await;
    let mut body = send_ok(conn, get("/")).await.into_body();
    let err = poll_fn(|cx| body.poll_frame(cx))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("chunk size"), "{err}");
    assert!(body.take_conn().is_none());
}

#[tokio::test]
async fn upstream_closing_before_answer_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
    });
    let conn = Conn::new(
        TcpStream::connect(addr).await.unwrap(),
        Arc::default(),
        None,
    );
    match conn.send(get("/"), identity).await {
        Err(SendError::Failed(w)) => assert!(w.contains("before answering"), "{w}"),
        _ => panic!("expected a failure"),
    }
}

#[tokio::test]
async fn idle_connection_closed_by_upstream_is_seen_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        drop(s);
        let _ = tx.send(());
    });
    let conn = Conn::new(
        TcpStream::connect(addr).await.unwrap(),
        Arc::default(),
        None,
    );
    rx.await.unwrap();
    // The FIN reaches the reactor shortly after the close.
    let closed = async {
        while !conn.is_closed() {
            conn.io.readable().await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), closed)
        .await
        .expect("close not seen");
}

#[tokio::test]
async fn request_bodies_are_framed_by_length_or_chunks() {
    // Length: the client's content-length is kept and the body follows.
    let (conn, server) = scripted(vec![b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"]).await;
    let mut req = post(http_body_util::Full::new(Bytes::from_static(b"abc")));
    req.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
    let seen = sent_bytes(conn, server, req).await;
    assert!(seen.starts_with("POST /up HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("content-length: 3\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nabc"), "{seen}");

    // Unknown length: chunked, with the terminating chunk.
    let (conn, server) = scripted(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
    let (tx, stream) = chan_body(vec![b"ab", b"cde"]);
    drop(tx);
    let seen = sent_bytes(conn, server, post(stream)).await;
    assert!(seen.contains("transfer-encoding: chunked\r\n"), "{seen}");
    assert!(
        seen.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
        "{seen}"
    );
}

#[tokio::test]
async fn early_answer_stops_the_upload_and_the_connection_is_not_reused() {
    let (conn, _server) = scripted(vec![
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
    ])
    .await;
    // A body that never ends: the answer must still come through.
    let (_tx, body) = chan_body(vec![b"part"]);
    let req = post(body);
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), conn.send(req, identity))
        .await
        .expect("early answer not delivered");
    let Ok(resp) = resp else { panic!("failed") };
    assert_eq!(resp.status(), 413);
    assert!(resp.into_body().take_conn().is_none());
}

#[tokio::test]
async fn a_cut_fails_the_exchange_and_the_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        // Head and part of the body, then silence.
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    });
    let cut = Arc::new(Cut::default());
    let conn = Conn::new(
        TcpStream::connect(addr).await.unwrap(),
        Arc::clone(&cut),
        None,
    );
    let mut body = send_ok(conn, get("/")).await.into_body();
    let first = poll_fn(|cx| body.poll_frame(cx)).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "abc");
    let cutter = Arc::clone(&cut);
    tokio::spawn(async move { cutter.cut() });
    let next = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        poll_fn(|cx| body.poll_frame(cx)),
    )
    .await
    .expect("cut did not wake the body");
    assert!(next.unwrap().is_err());
    assert!(body.take_conn().is_none());
}

#[test]
fn chunk_decoder_steps() {
    let mut buf = BytesMut::from(&b"A \r\n0123456789\r\n0\r\n\r\n"[..]);
    let mut chunk = Chunk::Size;
    let mut data = Vec::new();
    loop {
        match decode_chunked(&mut buf, &mut chunk).unwrap() {
            Decoded::Data(d) => data.extend_from_slice(&d),
            Decoded::End(t) => {
                assert!(t.is_none());
                break;
            }
            Decoded::More => panic!("all bytes were there"),
        }
    }
    assert_eq!(data, b"0123456789");
    assert!(buf.is_empty());
    // Leading zeros do not count against the 64-bit limit.
    let mut buf = BytesMut::from(&b"00000000000000000000a\r\n"[..]);
    assert!(matches!(
        step_chunk(&mut buf, Chunk::Size),
        Ok(ChunkStep::Next(Chunk::Data(10)))
    ));
    for bad in [
        &b"\r\n"[..],
        b"-1\r\n",
        b"12345678901234567\r\n",
        b"5 x\r\n",
        b"5\n",
    ] {
        let mut buf = BytesMut::from(bad);
        assert!(step_chunk(&mut buf, Chunk::Size).is_err(), "{bad:?}");
    }
}

/// A request body fed through a channel (unknown length).
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn chan_body(parts: Vec<&'static [u8]>) -> (tokio::sync::mpsc::Sender<Bytes>, ChanBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(parts.len().max(1));
    for p in parts {
        tx.try_send(Bytes::from_static(p)).unwrap();
    }
    (tx, ChanBody(rx))
}

/// An upstream that answers the first request on its connection and closes
/// the connection as the second arrives, without a byte of answer: the
/// race of a keep-alive timeout.
async fn closes_on_second_request() -> (Conn, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let _ = s.read(&mut buf).await.unwrap();
    });
    let conn = Conn::new(
        TcpStream::connect(addr).await.unwrap(),
        Arc::default(),
        None,
    );
    (conn, server)
}

#[tokio::test]
async fn a_reused_connection_closed_without_answer_gives_a_safe_request_back() {
    let (conn, server) = closes_on_second_request().await;
    let mut body = send_ok(conn, get("/first")).await.into_body();
    assert_eq!(collect(&mut body).await.0, b"ok");
    let conn = body.take_conn().expect("pooled");
    match conn.send(get("/second"), identity).await {
        Err(SendError::Unsent(req)) => assert_eq!(req.uri(), "/second"),
        Err(SendError::Failed(w) | SendError::Client(w)) => {
            panic!("failed instead of given back: {w}")
        }
        Err(SendError::Refused { .. }) => panic!("refused"),
        Ok(_) => panic!("answered"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn a_request_with_a_body_is_not_given_back_after_it_went_out() {
    let (conn, server) = closes_on_second_request().await;
    let mut body = send_ok(conn, get("/first")).await.into_body();
    assert_eq!(collect(&mut body).await.0, b"ok");
    let conn = body.take_conn().expect("pooled");
    let mut req = post(http_body_util::Full::new(Bytes::from_static(b"abc")));
    req.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
    match conn.send(req, identity).await {
        Err(SendError::Failed(w)) => assert!(w.contains("closed"), "{w}"),
        _ => panic!("a POST must not come back for a resend"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn an_early_success_answer_still_gets_the_whole_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        // Answer before the body, then echo the body as it comes.
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n")
            .await
            .unwrap();
        while !seen.ends_with(b"abcdef") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "body cut short: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"abcdef").await.unwrap();
        let _ = s.read(&mut buf).await;
    });
    let conn = Conn::new(
        TcpStream::connect(addr).await.unwrap(),
        Arc::default(),
        None,
    );
    let (tx, body) = chan_body(vec![b"abc"]);
    let mut req = post(body);
    req.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("6"));
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tx.send(Bytes::from_static(b"def")).await.unwrap();
    });
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), send_ok(conn, req))
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let echoed = tokio::time::timeout(std::time::Duration::from_secs(10), collect(&mut body))
        .await
        .expect("the upstream never got the whole body");
    assert_eq!(echoed.0, b"abcdef");
    feeder.await.unwrap();
    drop(body);
    server.await.unwrap();
}
