//! HTTP/1.x towards clients, as our own server (`h1_server`) speaks it:
//! keep-alive after a body nobody read, HTTP/1.0 clients, responses of
//! unknown length, and bytes that follow an Upgrade request.

// Test helpers: a panic is how a failed expectation is reported.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use switchyard_testkit::FakeUpstream;
use switchyard_tests::{Cfg, Group, RawConn, Urls, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A balancer with one route to `up` and the listener's `idle` timeout set.
async fn one_route_with_idle(up: SocketAddr, idle: &str) -> switchyard::Running {
    Cfg::new()
        .listener_with(
            "web",
            &format!("timeouts: {{ header_read: 10s, idle: {idle} }}"),
            "- name: all\n  forward: { target_group: g }",
        )
        .group(Group::new("g", &[up]))
        .start()
        .await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request head off `s`; the bytes that came after it, or `None`
/// if the connection ended first.
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            return Some(buf.split_off(end + 4));
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A raw upstream on loopback: `serve` runs for each accepted connection.
async fn raw_upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// An upstream that answers every request with a chunked body of unknown
/// length ("hello world" in two chunks), keeping the connection open.
async fn chunked_upstream() -> SocketAddr {
    raw_upstream(|mut s| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = find(&buf, b"\r\n\r\n") {
                buf.drain(..end + 4);
                let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                                       6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
                if s.write_all(answer).await.is_err() {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// An upstream that answers 101 to the first request and then echoes
/// every byte after that request's head, including bytes that came with it.
async fn raw_upgrade_echo() -> SocketAddr {
    raw_upstream(|mut s| async move {
        let Some(extra) = read_head(&mut s).await else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let head =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";
        if s.write_all(head).await.is_err() || s.write_all(&extra).await.is_err() {
            return;
        }
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_request_body_answered_without_being_read_does_not_cost_the_connection() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::new()
        .listener(
            "web",
            "- name: down\n  match: { path_prefix: /down }\n  \
             fixed_response: { status: 503, body: \"down\" }\n\
             - name: rest\n  forward: { target_group: g }",
        )
        .group(Group::new("g", &[up.addr()]))
        .start()
        .await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    // The body comes with its head, and the next request right after it.
    conn.send(
        b"POST /down HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let first = conn.response(WAIT).await.unwrap();
    assert_eq!((first.status, first.body_text().as_str()), (503, "down"));
    let second = conn.response(WAIT).await.unwrap();
    assert_eq!((second.status, second.body_text().as_str()), (200, "up"));
    // The unread body was skipped, never taken for a request.
    assert_eq!(up.requests(), 1);
    assert_eq!(up.last_request().map(|r| r.uri).as_deref(), Some("/after"));
}

#[tokio::test]
async fn a_request_body_still_on_its_way_when_answered_closes_the_connection_with_notice() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::new()
        .listener(
            "web",
            "- name: down\n  match: { path_prefix: /down }\n  \
             fixed_response: { status: 503, body: \"down\" }\n\
             - name: tea\n  match: { path_prefix: /early }\n  \
             fixed_response: { status: 103, body: \"\" }\n\
             - name: rest\n  forward: { target_group: g }",
        )
        .group(Group::new("g", &[up.addr()]))
        .start()
        .await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    // 100 KB announced, 10 bytes sent: the answer does not wait for the rest.
    conn.send(b"POST /down HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789")
        .await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!((res.status, res.body_text().as_str()), (503, "down"));
    assert_eq!(res.header("connection"), Some("close"), "{}", res.head);
    conn.closed_within(WAIT).await.unwrap();
    // An interim status can never be the answer: the client is not left waiting.
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(b"GET /early HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 500);
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn http_1_0_clients_keep_their_connection_only_when_they_ask() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::simple(&[up.addr()]).start().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    for path in ["/one", "/two"] {
        let req = format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        conn.send(req.as_bytes()).await;
        let res = conn.response(WAIT).await.unwrap();
        assert_eq!((res.status, res.body_text().as_str()), (200, "up"));
        assert_eq!(res.header("connection"), Some("keep-alive"), "{}", res.head);
        assert!(res.header("transfer-encoding").is_none(), "{}", res.head);
    }
    assert_eq!(up.requests(), 2);
    // Without asking: one response, then the close.
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(b"GET /three HTTP/1.0\r\n\r\n").await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!(res.status, 200);
    conn.closed_within(WAIT).await.unwrap();
}

#[tokio::test]
async fn a_body_of_unknown_length_is_chunked_for_http_1_1_and_ends_with_the_close_for_1_0() {
    let up = chunked_upstream().await;
    let lb = Cfg::simple(&[up]).start().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!(
        res.header("transfer-encoding"),
        Some("chunked"),
        "{}",
        res.head
    );
    assert_eq!(res.body_text(), "hello world");
    // Still open for the next request.
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        conn.response(WAIT).await.unwrap().body_text(),
        "hello world"
    );

    // HTTP/1.0 knows no chunked encoding: the close ends the body.
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let res = conn.response(WAIT).await.unwrap();
    assert!(res.header("transfer-encoding").is_none(), "{}", res.head);
    assert!(res.header("content-length").is_none(), "{}", res.head);
    assert_eq!(res.body_text(), "hello world");
}

#[tokio::test]
async fn bytes_sent_with_an_upgrade_request_reach_the_target() {
    let up = raw_upgrade_echo().await;
    let lb = Cfg::simple(&[up]).start().await;
    let mut s = TcpStream::connect(lb.listen_addr()).await.unwrap();
    // A client that does not wait for the 101 before its first bytes.
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nping")
        .await
        .unwrap();
    let after_head = read_101(&mut s, 4).await;
    assert_eq!(after_head, b"ping");
    // And the tunnel carries on.
    echoes(&mut s, b"pong").await;
}

/// Reads a 101 answer's head off `s` and at least `more` bytes after it;
/// returns those.
async fn read_101(s: &mut TcpStream, more: usize) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let after_head = loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            if got.len() >= end + 4 + more {
                break got.split_off(end + 4);
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no answer; got {:?}", String::from_utf8_lossy(&got)))
            .unwrap();
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    };
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    after_head
}

/// Writes `msg` into an upgraded connection and reads it back.
async fn echoes(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut echo = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo, msg);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_idle_timeout() {
    // A target that streams without end, and says when its stream is cut.
    let (cut_tx, mut cut_rx) = tokio::sync::mpsc::channel::<()>(4);
    let up = raw_upstream(move |mut s| {
        let cut_tx = cut_tx.clone();
        async move {
            if read_head(&mut s).await.is_none() {
                return;
            }
            let piece = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            if s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            while s.write_all(piece.as_bytes()).await.is_ok() {}
            let _ = cut_tx.send(()).await;
        }
    })
    .await;
    let lb = one_route_with_idle(up, "1s").await;
    let mut s = TcpStream::connect(lb.listen_addr()).await.unwrap();
    s.write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // This client never reads. Once the socket buffers are full, the
    // balancer's write waits; after the idle timeout it gives up, and the
    // target's stream is cut.
    let started = Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(20), cut_rx.recv())
        .await
        .expect("the target kept streaming to a client that never reads")
        .unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "cut before the idle timeout: {:?}",
        started.elapsed()
    );
    drop(s);
}

#[tokio::test]
async fn a_slow_reader_gets_the_whole_body_and_idle_zero_sets_no_write_limit() {
    const PIECES: usize = 128; // 8 MiB: more than the socket buffers hold
    let up = raw_upstream(|mut s| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let piece = format!("10000\r\n{}\r\n", "y".repeat(0x10000));
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        for _ in 0..PIECES {
            if s.write_all(piece.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let lb = one_route_with_idle(up, "0s").await;
    let mut s = TcpStream::connect(lb.listen_addr()).await.unwrap();
    s.write_all(b"GET /big HTTP/1.0\r\n\r\n").await.unwrap();
    // A client that takes its time before it reads: the balancer's writes
    // wait meanwhile, and with `idle: 0s` they may wait without limit.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("response not finished")
        .unwrap();
    let head_end = find(&got, b"\r\n\r\n").expect("no head") + 4;
    assert_eq!(got.len() - head_end, PIECES * 0x10000, "body cut short");
}

/// An upstream that answers plain requests `200 ok` on kept-alive
/// connections and any `Upgrade` request with 101 and an echo; it
/// records, per upgrade, how many requests its connection had carried
/// before it (0: a fresh connection).
async fn keep_alive_or_upgrade() -> (SocketAddr, Arc<Mutex<Vec<usize>>>) {
    let upgrades = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&upgrades);
    let addr = raw_upstream(move |mut s| {
        let seen = Arc::clone(&seen);
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut served = 0;
            loop {
                while let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end + 4);
                    if head.contains("\r\nupgrade:") {
                        seen.lock().unwrap().push(served);
                        let head = b"HTTP/1.1 101 Switching Protocols\r\n\
                                     Connection: upgrade\r\nUpgrade: echo\r\n\r\n";
                        if s.write_all(head).await.is_err() || s.write_all(&buf).await.is_err() {
                            return;
                        }
                        while let Ok(n @ 1..) = s.read(&mut chunk).await {
                            if s.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    served += 1;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    })
    .await;
    (addr, upgrades)
}

#[tokio::test]
async fn an_upgrade_at_max_connections_gets_a_fresh_connection_not_an_idle_one() {
    let (up, upgrades) = keep_alive_or_upgrade().await;
    let lb = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(Group::new("g", &[up]).with("limits: { max_connections: 1 }"))
        .start()
        .await;
    // Leaves the target's one connection idle in the pool.
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!((res.status, res.body_text().as_str()), (200, "ok"));
    // The upgrade closes the idle connection to make room for its own.
    let mut s = TcpStream::connect(lb.listen_addr()).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    assert!(read_101(&mut s, 0).await.is_empty());
    echoes(&mut s, b"ping").await;
    assert_eq!(
        *upgrades.lock().unwrap(),
        [0],
        "the upgrade's connection had served requests before"
    );
}

#[tokio::test]
async fn an_h2c_upgrade_is_answered_over_http_1_1_not_tunnelled() {
    let (up, upgrades) = keep_alive_or_upgrade().await;
    let lb = Cfg::simple(&[up]).start().await;
    // What `curl --http2 http://...` sends. Tunnelled, every later request
    // on this connection would bypass routing; it is served as HTTP/1.1.
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    let offer: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    // The offer, then a plain request on the same (still HTTP/1.1) connection.
    for request in [offer, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"] {
        conn.send(request).await;
        let res = conn.response(WAIT).await.unwrap();
        assert_eq!(
            (res.status, res.body_text().as_str()),
            (200, "ok"),
            "{}",
            res.head
        );
    }
    assert!(
        upgrades.lock().unwrap().is_empty(),
        "the target was offered the upgrade"
    );
}

/// A balancer with one route to `up`, whose request timeout (30s) is far
/// beyond what the streaming tests wait.
async fn one_route_slow_timeout(up: SocketAddr) -> switchyard::Running {
    Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(Group::new("g", &[up]).with("timeouts: { request: 30s }"))
        .start()
        .await
}

/// Body bytes for the streaming tests: larger than every buffer on the way
/// (the early-answer buffer and both sockets' queues), so that an exchange
/// that wrote the whole request before reading would stall.
const STREAMED: usize = 32 * 1024 * 1024;

/// Writes a POST of `STREAMED` bytes (Content-Length) to the balancer from
/// a task of its own, and reads the answer meanwhile: (head, body length).
async fn post_streamed(lb: SocketAddr, path: &str) -> (String, usize) {
    let s = TcpStream::connect(lb).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {STREAMED}\r\n\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..STREAMED / block.len() {
            wr.write_all(&block).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let deadline = Instant::now() + WAIT * 2;
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (head, mut body_len, want) = loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let want = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no content-length: {head}"));
            break (head, got.len() - end - 4, want);
        }
        let n = tokio::time::timeout_at(deadline, rd.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no answer head; got {:?}", String::from_utf8_lossy(&got)))
            .unwrap();
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&chunk[..n]);
    };
    while body_len < want {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("body stalled at {body_len} of {want}"))
            .unwrap();
        if n == 0 {
            break;
        }
        body_len += n;
    }
    writer.abort();
    (head, body_len)
}

#[tokio::test]
async fn an_upstream_that_echoes_as_it_reads_gets_the_whole_body_and_its_echo_flows_back() {
    // Answers at once with the length it will echo, then echoes every byte
    // as it arrives: both directions stream at the same time.
    let up = raw_upstream(|mut s| async move {
        let Some(early) = read_head(&mut s).await else {
            return;
        };
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {STREAMED}\r\n\r\n");
        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&early).await.is_err() {
            return;
        }
        let mut left = STREAMED - early.len();
        let mut chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left = left.saturating_sub(n);
                }
            }
        }
    })
    .await;
    let lb = one_route_slow_timeout(up).await;
    let (head, echoed) = post_streamed(lb.listen_addr(), "/echo").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echoed, STREAMED);
}

#[tokio::test]
async fn a_whole_early_answer_still_gets_the_whole_body_to_the_target() {
    // Answers in full at once, then reads the body (as Node does after
    // `res.end()`): the target must get every byte, the client the answer.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(1);
    let up = raw_upstream(move |mut s| {
        let tx = tx.clone();
        async move {
            let Some(early) = read_head(&mut s).await else {
                return;
            };
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\naccepted")
                .await
                .is_err()
            {
                return;
            }
            let mut got = early.len();
            let mut chunk = vec![0u8; 64 * 1024];
            while got < STREAMED {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            let _ = tx.send(got).await;
        }
    })
    .await;
    let lb = one_route_slow_timeout(up).await;
    let (head, body) = post_streamed(lb.listen_addr(), "/x").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, 8);
    let got = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
    assert_eq!(got, Some(STREAMED), "the target's share of the body");
}

#[tokio::test]
async fn an_early_answer_may_pause_while_its_target_reads_a_slow_upload() {
    // The head at once, the body only once the whole upload is in. The
    // upload comes in pieces 100 ms apart, 1.2 s in all: the response waits
    // more than the 500 ms request timeout, but the target never stops
    // reading for that long, so it is not stalled.
    const PIECE: usize = 1024;
    const PIECES: usize = 12;
    let up = raw_upstream(|mut s| async move {
        let Some(early) = read_head(&mut s).await else {
            return;
        };
        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let mut got = early.len();
        let mut chunk = vec![0u8; 16 * 1024];
        while got < PIECE * PIECES {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let _ = s.write_all(b"done").await;
    })
    .await;
    let lb = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(Group::new("g", &[up]).with("timeouts: { request: 500ms }"))
        .start()
        .await;
    let mut s = TcpStream::connect(lb.listen_addr()).await.unwrap();
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        PIECE * PIECES
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..PIECES {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        s.write_all(&[b'u'; PIECE]).await.unwrap();
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    while !got.ends_with(b"done") {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            other => panic!(
                "no whole answer ({other:?}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}
