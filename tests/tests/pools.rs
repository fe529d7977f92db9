//! Connections on both sides: upstream keep-alive pooling, client idle
//! timeout, header_read versus idle, and `max_connections`.

// Test helpers: a panic is how a failed expectation is reported.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard::Running;
use switchyard_testkit::{get, FakeUpstream, TestClient};
use switchyard_tests::{metric, must_get, raw_get, Cfg, Group, RawConn, Urls, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

async fn start(listener_extra: &str, up: &FakeUpstream) -> Running {
    Cfg::new()
        .listener_with(
            "web",
            listener_extra,
            "- name: all\n  forward: { target_group: g }",
        )
        .group(Group::new("g", &[up.addr()]))
        .start()
        .await
}

#[tokio::test]
async fn upstream_connections_are_reused_across_requests() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("", &up).await;
    let client = TestClient::new();
    for i in 0..50 {
        let res = client.get(&lb.url(&format!("/r{i}"))).await.unwrap();
        assert_eq!((res.status, res.body.as_str()), (200, "up"), "request {i}");
    }
    assert_eq!(up.requests(), 50);
    assert!(
        up.connections() <= 2,
        "{} upstream connections",
        up.connections()
    );
}

#[tokio::test]
async fn the_upstream_pool_is_shared_by_client_connections() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("", &up).await;
    // A new client connection per request: the upstream side still reuses.
    for i in 0..20 {
        assert_eq!(must_get(&lb.url("/")).await.status, 200, "request {i}");
    }
    assert!(
        up.connections() <= 2,
        "{} upstream connections",
        up.connections()
    );
}

#[tokio::test]
async fn bodies_of_all_sizes_stream_through_pooled_connections() {
    let up = FakeUpstream::builder("big")
        .body_size(300 * 1024)
        .start()
        .await;
    let lb = start("", &up).await;
    let client = TestClient::new();
    for _ in 0..5 {
        let res = client.get(&lb.url("/")).await.unwrap();
        assert_eq!(res.status, 200);
        assert_eq!(res.body.len(), 300 * 1024);
    }
    let payload = "p".repeat(200 * 1024);
    let res = client
        .request("POST", &lb.url("/echo"), &[], payload.clone())
        .await
        .unwrap();
    assert_eq!(res.body.len(), payload.len());
    assert!(
        up.connections() <= 2,
        "{} upstream connections",
        up.connections()
    );
}

#[tokio::test]
async fn upstream_closing_its_connection_is_not_an_error_for_the_next_request() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("", &up).await;
    let client = TestClient::new();
    // `/close` answers, then the upstream closes that connection; the next
    // request must not be sent on it.
    for i in 0..20 {
        let path = if i % 2 == 0 { "/close" } else { "/" };
        let res = client.get(&lb.url(path)).await.unwrap();
        assert_eq!(
            (res.status, res.body.as_str()),
            (200, "up"),
            "request {i} {path}"
        );
    }
    assert_eq!(up.requests(), 20);
    assert!(up.connections() >= 10, "closed connections were reused");
}

#[tokio::test]
async fn upstream_restart_is_survived_by_the_pool() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("", &up).await;
    let client = TestClient::new();
    assert_eq!(client.get(&lb.url("/")).await.unwrap().status, 200);
    // The pooled connection dies with the upstream; the next request finds
    // the upstream back on the same port.
    up.stop().await;
    up.restart().await;
    for i in 0..3 {
        let res = client.get(&lb.url("/")).await.unwrap();
        assert_eq!(res.status, 200, "request {i} after restart");
    }
    assert_eq!(up.requests(), 4);
}

#[tokio::test]
async fn idle_keep_alive_client_connection_is_closed_after_idle_timeout() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("timeouts: { header_read: 10s, idle: 500ms }", &up).await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(&raw_get("/")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);
    let took = conn.closed_within(WAIT).await.unwrap();
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    assert_eq!(conn.pending_text(), "");
}

#[tokio::test]
async fn header_read_does_not_apply_between_requests() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("timeouts: { header_read: 300ms, idle: 30s }", &up).await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(&raw_get("/one")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);
    // Idle between requests for well over header_read: that is `idle`'s
    // business (30s), so the connection stays.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    conn.send(&raw_get("/two")).await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(up.last_request().unwrap().uri, "/two");
}

#[tokio::test]
async fn a_slow_upstream_is_not_cut_by_the_client_timers() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("timeouts: { header_read: 300ms, idle: 300ms }", &up).await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(&raw_get("/sleep/1200")).await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!((res.status, res.body_text().as_str()), (200, "up"));
}

#[tokio::test]
async fn max_connections_holds_back_the_next_client_until_one_closes() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start(
        "max_connections: 2\ntimeouts: { header_read: 30s, idle: 30s }",
        &up,
    )
    .await;
    let mut first = RawConn::connect(lb.listen_addr()).await;
    let mut second = RawConn::connect(lb.listen_addr()).await;
    for conn in [&mut first, &mut second] {
        conn.send(&raw_get("/")).await;
        assert_eq!(conn.response(WAIT).await.unwrap().status, 200);
    }
    // The third client is not served while two connections are open...
    let mut third = RawConn::connect(lb.listen_addr()).await;
    third.send(&raw_get("/third")).await;
    let early = third.response(Duration::from_millis(800)).await;
    assert!(early.is_err(), "served beyond max_connections: {early:?}");
    assert_eq!(up.requests(), 2);
    // ... and is served once one of them closes.
    let started = Instant::now();
    drop(first);
    let res = third.response(WAIT).await.unwrap();
    assert_eq!(res.status, 200);
    assert!(started.elapsed() < WAIT);
    assert_eq!(up.last_request().unwrap().uri, "/third");
    // The two open connections still work.
    second.send(&raw_get("/second-again")).await;
    assert_eq!(second.response(WAIT).await.unwrap().status, 200);
}

#[tokio::test]
async fn client_keep_alive_uses_one_connection() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::new()
        .listener("p-keepalive", "- name: all\n  forward: { target_group: g }")
        .group(Group::new("g", &[up.addr()]))
        .start()
        .await;
    let client = TestClient::new();
    for _ in 0..10 {
        assert_eq!(client.get(&lb.url("/")).await.unwrap().status, 200);
    }
    let text = get(&lb.admin_url("/metrics")).await.unwrap().body;
    assert_eq!(
        metric(
            &text,
            "switchyard_connections_total",
            &[("listener", "p-keepalive")]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("", &up).await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    // Three requests in one write; the first one is slow.
    conn.send(
        b"GET /sleep/300 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /status/202 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(conn.response(WAIT).await.unwrap().status);
    }
    assert_eq!(statuses, [200, 201, 202]);
}

/// Waits (bounded by [`WAIT`]) until the upstream has seen `n` requests.
async fn until_requests(up: &FakeUpstream, n: usize) {
    let start = Instant::now();
    while up.requests() < n {
        assert!(
            start.elapsed() < WAIT,
            "upstream saw {} of {n} requests",
            up.requests()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("", &up).await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(&raw_get("/sleep/200")).await;
    conn.shutdown_write().await;
    let resp = conn
        .response(WAIT)
        .await
        .expect("an answer after the half-close");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"up"[..]));
}

#[tokio::test]
async fn a_client_leaving_mid_request_does_not_cost_the_upstream_connection() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = start("", &up).await;
    // Warm: one pooled upstream connection.
    assert_eq!(must_get(&lb.url("/")).await.status, 200);
    assert_eq!(up.connections(), 1);
    // A client asks for a slow answer and leaves while it is on its way.
    let mut leaver = RawConn::connect(lb.listen_addr()).await;
    leaver.send(&raw_get("/sleep/300")).await;
    until_requests(&up, 2).await;
    drop(leaver);
    // The answer still arrives (300 ms) and is read in the background;
    // nothing outside shows when the connection is back in the pool, so
    // wait well past the answer.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let client = TestClient::new();
    for i in 0..5 {
        let res = client.get(&lb.url(&format!("/after{i}"))).await.unwrap();
        assert_eq!(res.status, 200, "request {i}");
    }
    assert_eq!(
        up.connections(),
        1,
        "the abandoned exchange closed its upstream connection"
    );
}

/// An upstream that closes a kept-alive connection, without a byte of
/// answer, when the first request for `/second` arrives on it: the race of
/// an upstream keep-alive timeout firing as the balancer reuses the
/// connection. Every other request gets `200 ok`.
async fn racy_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let raced = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let raced = Arc::clone(&raced);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut served = 0;
                // Body-less requests only: each head ends with a blank line.
                while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let second = buf.starts_with(b"GET /second ");
                        buf.drain(..end + 4);
                        if second && served > 0 && !raced.swap(true, Ordering::SeqCst) {
                            return;
                        }
                        served += 1;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_pooled_connection_closed_as_it_is_reused_costs_a_safe_request_nothing() {
    let (addr, accepted) = racy_upstream().await;
    let lb = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(Group::new("g", &[addr]))
        .start()
        .await;
    let client = TestClient::new();
    let first = client.get(&lb.url("/first")).await.unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "ok"));
    // Goes out on the pooled connection, which the upstream then closes
    // unanswered: a GET is repeated on a fresh connection.
    let second = client.get(&lb.url("/second")).await.unwrap();
    assert_eq!((second.status, second.body.as_str()), (200, "ok"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one fresh connection for the repeat"
    );
}
