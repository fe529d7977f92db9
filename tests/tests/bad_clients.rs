//! Protection against bad clients, on raw sockets: malformed requests (400),
//! oversized heads (431), request smuggling (400, nothing forwarded),
//! slowloris and silent clients (closed within `header_read`). After each,
//! the balancer still serves normal requests.

use std::time::Duration;

use switchyard::Running;
use switchyard_testkit::FakeUpstream;
use switchyard_tests::{metric, must_get, raw_get, Cfg, RawConn, Urls, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// `header_read` is short so slow-client tests are quick; `idle` is long so
/// it cannot be what closes a connection in these tests.
async fn setup() -> (Running, FakeUpstream) {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::new()
        .listener_with(
            "web",
            "timeouts: { header_read: 500ms, idle: 30s }",
            "- name: all\n  forward: { target_group: g }",
        )
        .group(switchyard_tests::Group::new("g", &[up.addr()]))
        .start()
        .await;
    (lb, up)
}

/// A normal request through the balancer still works, and it is the only
/// new request the upstream sees.
async fn still_serves(lb: &Running, up: &FakeUpstream) {
    let before = up.requests();
    let res = must_get(&lb.url("/after")).await;
    assert_eq!((res.status, res.body.as_str()), (200, "up"));
    assert_eq!(up.requests(), before + 1);
    assert_eq!(up.last_request().map(|r| r.uri).as_deref(), Some("/after"));
}

/// Sends `bytes` on a fresh connection and reads the one response.
async fn exchange(lb: &Running, bytes: &[u8]) -> switchyard_tests::RawResponse {
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    // The balancer may answer and close before reading everything.
    let _ = conn.try_send(bytes).await;
    conn.response(WAIT)
        .await
        .unwrap_or_else(|e| panic!("no response to {:?}...: {e}", &bytes[..bytes.len().min(40)]))
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let (lb, up) = setup().await;
    let cases: [&[u8]; 5] = [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
    ];
    for bytes in cases {
        let res = exchange(&lb, bytes).await;
        // HTTP/9.9 may be refused as 505; everything else is a 400.
        assert!(
            res.status == 400 || (bytes.starts_with(b"GET / HTTP/9") && res.status == 505),
            "{:?} -> {}",
            String::from_utf8_lossy(bytes),
            res.head
        );
    }
    // Binary garbage: an error answer or a close, never a forward.
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    let _ = conn
        .try_send(&[0u8, 0xff, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n'])
        .await;
    conn.closed_within(WAIT).await.unwrap();
    assert!(
        conn.pending_text().is_empty() || conn.pending_text().starts_with("HTTP/1.1 400"),
        "{}",
        conn.pending_text()
    );
    assert_eq!(up.requests(), 0);
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn huge_header_gets_431() {
    let (lb, up) = setup().await;
    let big = "a".repeat(70 * 1024);
    let bytes = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let res = exchange(&lb, bytes.as_bytes()).await;
    assert_eq!(res.status, 431, "{}", res.head);
    // Just under the limit is fine.
    let ok = "b".repeat(60 * 1024);
    let bytes = format!("GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {ok}\r\nConnection: close\r\n\r\n");
    let res = exchange(&lb, bytes.as_bytes()).await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert_eq!(
        up.last_request().unwrap().header("x-big").map(str::len),
        Some(ok.len())
    );
    assert_eq!(up.requests(), 1);
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn too_many_header_lines_get_431() {
    let (lb, up) = setup().await;
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..300 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let res = exchange(&lb, head.as_bytes()).await;
    assert_eq!(res.status, 431, "{}", res.head);
    assert_eq!(up.requests(), 0);
    still_serves(&lb, &up).await;
}

/// A request whose body, read by Content-Length, hides a second request;
/// read as chunked, the body is empty and `/smuggled` would be next.
fn smuggling(cl_first: bool) -> Vec<u8> {
    let hidden = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let (first, second) = (
        format!("Content-Length: {}", hidden.len()),
        "Transfer-Encoding: chunked".to_owned(),
    );
    let (a, b) = if cl_first {
        (first, second)
    } else {
        (second, first)
    };
    format!("POST /front HTTP/1.1\r\nHost: x\r\n{a}\r\n{b}\r\n\r\n{hidden}").into_bytes()
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled() {
    let (lb, up) = setup().await;
    for cl_first in [true, false] {
        let mut conn = RawConn::connect(lb.listen_addr()).await;
        conn.send(&smuggling(cl_first)).await;
        let res = conn.response(WAIT).await.unwrap();
        assert_eq!(res.status, 400, "{}", res.head);
        // The connection is closed: nothing after that head is read.
        conn.closed_within(WAIT).await.unwrap();
        assert_eq!(conn.pending_text(), "", "a second response came back");
    }
    still_serves(&lb, &up).await;
    let seen: Vec<String> = up.requests_log().into_iter().map(|r| r.uri).collect();
    assert_eq!(seen, ["/after"]);
}

#[tokio::test]
async fn smuggling_attempt_after_a_good_request_on_the_same_connection() {
    let (lb, up) = setup().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    // A first, honest request with a body that looks like headers.
    let body = "Transfer-Encoding: chunked\r\n\r\n";
    conn.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!((res.status, res.body_text()), (200, body.to_owned()));
    // Then the attack, on the same keep-alive connection.
    conn.send(&smuggling(false)).await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!(res.status, 400, "{}", res.head);
    conn.closed_within(WAIT).await.unwrap();
    still_serves(&lb, &up).await;
    let seen: Vec<String> = up.requests_log().into_iter().map(|r| r.uri).collect();
    assert_eq!(seen, ["/echo", "/after"]);
}

/// Sends each request on a connection of its own: `status`, then the close.
async fn refused_and_closed(lb: &Running, cases: &[&[u8]], status: u16) {
    for bytes in cases {
        let mut conn = RawConn::connect(lb.listen_addr()).await;
        let _ = conn.try_send(bytes).await;
        let text = String::from_utf8_lossy(bytes);
        let res = (conn.response(WAIT).await).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(res.status, status, "{text:?}");
        (conn.closed_within(WAIT).await).unwrap_or_else(|e| panic!("{text:?} not closed: {e}"));
    }
}

#[tokio::test]
async fn conflicting_or_invalid_framing_headers_get_400_and_reach_no_upstream() {
    let (lb, up) = setup().await;
    let cases: [&[u8]; 9] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\ntransfer-encoding: CHUNKED\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ];
    refused_and_closed(&lb, &cases, 400).await;
    assert_eq!(up.requests(), 0);
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn a_transfer_coding_under_chunked_gets_501_and_reaches_no_upstream() {
    let (lb, up) = setup().await;
    // We re-frame request bodies as plain chunked, so the gzip label would
    // be lost on the way and the target would read gzip bytes as the body.
    let cases: [&[u8]; 2] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    refused_and_closed(&lb, &cases, 501).await;
    assert_eq!(up.requests(), 0);
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn a_malformed_request_body_gets_400_and_is_not_blamed_on_the_target() {
    let (lb, up) = setup().await;
    // The head is fine and goes to the target; the first chunk size is not
    // hex. The client is at fault: 400, and the target's error count stays.
    let res = exchange(
        &lb,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 400, "{}", res.head);
    let text = must_get(&lb.admin_url("/metrics")).await.body;
    let target = up.addr().to_string();
    let errors = metric(
        &text,
        "switchyard_upstream_requests_total",
        &[
            ("target_group", "g"),
            ("target", &target),
            ("code", "error"),
        ],
    );
    assert_eq!(errors, Some(0.0), "{text}");
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn ambiguous_or_missing_host_gets_400() {
    let (lb, up) = setup().await;
    // RFC 9112 3.2: more than one Host, or none on HTTP/1.1, is a 400. A
    // balancer that routes on one Host while the upstream reads the other
    // can be steered past its routes.
    // Also when the request-target names the host (absolute-form): 3.2
    // asks for exactly one Host of every HTTP/1.1 request.
    // A Host that is not host[:port], or userinfo in the target: URL
    // parsers behind us read `x@internal.test` as internal.test, and
    // `evil.test/.example.test` as evil.test, while routing saw another.
    let cases: [&[u8]; 16] = [
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nhost: a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n",
        b"GET http://a.test/ HTTP/1.1\r\nX-No-Host: 1\r\n\r\n",
        b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x@internal.example.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil.test/.example.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil.test?.example.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET http://x@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:8o\r\n\r\n",
        b"GET foo://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test:99999/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: \r\n\r\n",
    ];
    for bytes in cases {
        let res = exchange(&lb, bytes).await;
        assert_eq!(res.status, 400, "{:?}", String::from_utf8_lossy(bytes));
    }
    assert_eq!(up.requests(), 0);
    // Valid forms pass: a port, an IPv6 literal.
    for host in ["a.test:8080", "[::1]:80", "127.0.0.1"] {
        let req = format!("GET /ok HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let res = exchange(&lb, req.as_bytes()).await;
        assert_eq!(res.status, 200, "{host}");
        assert_eq!(up.last_request().unwrap().header("host"), Some(host));
    }
    // HTTP/1.0 needs no Host; the target, spoken to in HTTP/1.1, gets its
    // own address as Host (as NGINX sends its upstream's).
    let res = exchange(&lb, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(res.status, 200);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.uri, "/old");
    assert_eq!(seen.header("host"), Some(up.addr().to_string().as_str()));
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn host_reaches_the_target_even_if_connection_names_it() {
    let (lb, up) = setup().await;
    let res = exchange(
        &lb,
        b"GET /h HTTP/1.1\r\nHost: a.test\r\nConnection: host, x-secret\r\nX-Secret: 1\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("host"), Some("a.test"));
    assert_eq!(seen.header("x-secret"), None);
}

#[tokio::test]
async fn connect_gets_405_and_reaches_no_upstream() {
    let (lb, up) = setup().await;
    refused_and_closed(
        &lb,
        &[b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"],
        405,
    )
    .await;
    assert_eq!(up.requests(), 0);
    still_serves(&lb, &up).await;
}

/// What a connection closed on a slow client may have received: nothing, or
/// a 408.
fn closed_quietly_or_408(conn: &RawConn) {
    let got = conn.pending_text();
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408"),
        "unexpected answer: {got:?}"
    );
}

#[tokio::test]
async fn partial_head_then_silence_is_closed_within_header_read() {
    let (lb, up) = setup().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    let started = Instant::now();
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    conn.closed_within(WAIT).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    closed_quietly_or_408(&conn);
    assert_eq!(up.requests(), 0);
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn partial_second_head_on_a_keep_alive_connection_is_closed_within_header_read() {
    let (lb, up) = setup().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(&raw_get("/first")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);
    // idle is 30s: only header_read, from the head's first byte, can end this.
    let started = Instant::now();
    conn.send(b"GET /second HTTP/1.1\r\nHo").await;
    conn.closed_within(WAIT).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    closed_quietly_or_408(&conn);
    assert_eq!(up.requests(), 1);
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn silent_client_is_closed_within_header_read() {
    let (lb, up) = setup().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    let started = Instant::now();
    conn.closed_within(WAIT).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    closed_quietly_or_408(&conn);
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn dribbling_a_head_byte_by_byte_does_not_extend_header_read() {
    let (lb, up) = setup().await;
    let stream = TcpStream::connect(lb.listen_addr()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    // One byte every 50ms of a head that never ends: each byte is "progress"
    // but the whole head must still arrive within header_read.
    let writer = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Drip: ";
        for i in 0..200usize {
            let byte = head.get(i).copied().unwrap_or(b'a');
            if wr.write_all(&[byte]).await.is_err() {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        200
    });
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
    let sent = writer.await.unwrap();
    assert!(sent < 200, "the writer was never cut off");
    assert_eq!(up.requests(), 0);
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn a_slow_but_complete_head_within_header_read_is_served() {
    let (lb, up) = setup().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    // Three pieces over ~200ms, well inside the 500ms header_read.
    for part in [&b"GET /slow HTTP/1.1\r\n"[..], b"Host: x\r\n", b"\r\n"] {
        conn.send(part).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!((res.status, res.body_text().as_str()), (200, "up"));
    // And the connection is kept alive for the next request.
    conn.send(&raw_get("/again")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);
    assert_eq!(up.requests(), 2);
}

/// Sends `first` (a whole request, answered) unless empty, then drips a
/// head that never ends, one byte every 50 ms, on the same connection:
/// the balancer must close it within `header_read` of the head's first
/// byte (500 ms; `idle` is 30 s and every byte would reset it).
async fn dripped_head_is_cut(lb: &Running, first: &[u8], head: &'static [u8]) {
    let stream = TcpStream::connect(lb.listen_addr())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = [0u8; 4096];
    if !first.is_empty() {
        wr.write_all(first)
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(WAIT, rd.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                other => panic!("no answer to the first request: {other:?}"),
            }
        }
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "{:?} got {got}",
            String::from_utf8_lossy(first)
        );
    }
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..200usize {
            let byte = head.get(i).copied().unwrap_or(b'a');
            if wr.write_all(&[byte]).await.is_err() {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        200
    });
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let took = started.elapsed();
    let shown = String::from_utf8_lossy(first);
    assert!(closed.is_ok(), "after {shown:?}: still open after {took:?}");
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    let sent = writer.await.unwrap_or_else(|e| panic!("writer: {e}"));
    assert!(sent < 200, "after {shown:?}: the writer was never cut off");
}

#[tokio::test]
async fn header_read_bounds_heads_the_byte_tracker_cannot_follow() {
    let (lb, up) = setup().await;
    // A CONNECT head.
    dripped_head_is_cut(&lb, b"", b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\nX-A: ").await;
    // The next head after a request whose framing the tracker gave up on:
    // an Upgrade that was not taken, a Content-Length list, a
    // Content-Length line longer than the tracker keeps.
    let long_cl = format!(
        "GET /3 HTTP/1.1\r\nHost: a\r\nContent-Length:{}0\r\n\r\n",
        " ".repeat(100)
    );
    for first in [
        &b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"[..],
        b"GET /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\n\r\n",
        long_cl.as_bytes(),
    ] {
        dripped_head_is_cut(&lb, first, b"GET /next HTTP/1.1\r\nHost: a\r\nX-B: ").await;
    }
    still_serves(&lb, &up).await;
}

#[tokio::test]
async fn a_content_length_list_or_padding_goes_to_the_target_as_one_plain_value() {
    let (lb, up) = setup().await;
    for head in [
        &b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"[..],
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\nhello",
    ] {
        let res = exchange(&lb, head).await;
        let shown = String::from_utf8_lossy(head);
        assert_eq!(
            (res.status, res.body_text().as_str()),
            (200, "hello"),
            "{shown}"
        );
        let seen = up.last_request().unwrap();
        let lengths: Vec<_> = seen.headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["5"], "{shown}");
    }
}
