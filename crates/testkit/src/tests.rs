//! Tests of the kit itself: the fakes must be right before any proxy test
//! can trust them.

use std::time::Duration;

use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let up = FakeUpstream::builder("blue-1").start().await;
    let client = TestClient::new();
    for _ in 0..2 {
        let res = client.get(&up.url("/a?b=1")).await.unwrap();
        assert_eq!(res.status, 200);
        assert_eq!(res.body, "blue-1");
        assert_eq!(res.header("x-upstream"), Some("blue-1"));
        assert_eq!(res.header("content-type"), Some("text/plain"));
    }
    assert_eq!(up.connections(), 1);
    assert_eq!(up.requests(), 2);
    let last = up.last_request().unwrap();
    assert_eq!(last.method, http::Method::GET);
    assert_eq!(last.uri, "/a?b=1");
    assert_eq!(last.version, Version::HTTP_11);
    assert_eq!(up.requests_log().len(), 2);
    assert_eq!(up.name(), "blue-1");
    assert!(up.addr().ip().is_loopback());
}

#[tokio::test]
async fn free_functions_open_a_connection_each() {
    let up = FakeUpstream::builder("u").start().await;
    get(&up.url("/")).await.unwrap();
    get(&up.url("/")).await.unwrap();
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn h2c_on_the_same_port() {
    let up = FakeUpstream::builder("h2").start().await;
    let client = TestClient::h2c();
    for _ in 0..3 {
        let res = client.get(&up.url("/")).await.unwrap();
        assert_eq!(res.body, "h2");
    }
    assert_eq!(up.connections(), 1);
    assert_eq!(up.requests(), 3);
    assert_eq!(up.last_request().unwrap().version, Version::HTTP_2);
}

#[tokio::test]
async fn health_path_follows_set_healthy_and_is_counted_apart() {
    let up = FakeUpstream::builder("u").start().await;
    let res = get(&up.url("/health")).await.unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "ok"));
    up.set_healthy(false);
    assert_eq!(get(&up.url("/health")).await.unwrap().status, 503);
    up.set_healthy(true);
    assert_eq!(get(&up.url("/health")).await.unwrap().status, 200);
    assert_eq!(up.health_requests(), 3);
    assert_eq!(up.requests(), 0);
    assert!(up.last_request().is_none());
    assert_eq!(up.last_health_request().unwrap().uri, "/health");
}

#[tokio::test]
async fn custom_health_path_and_status() {
    let up = FakeUpstream::builder("u")
        .health_path("/h")
        .status(502)
        .start()
        .await;
    assert_eq!(get(&up.url("/h")).await.unwrap().status, 200);
    assert_eq!(get(&up.url("/health")).await.unwrap().status, 502);
    up.set_status(204);
    assert_eq!(get(&up.url("/")).await.unwrap().status, 204);
    assert_eq!((up.health_requests(), up.requests()), (1, 2));
}

#[tokio::test]
async fn hung_health_never_answers_and_stop_still_returns() {
    let up = FakeUpstream::builder("u").hang_health(true).start().await;
    let client = TestClient::new().with_timeout(Duration::from_millis(200));
    let err = client.get(&up.url("/health")).await.unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    up.set_hang_health(false);
    // A generous bound for the answer: the short one is for the hang.
    let patient = TestClient::new().with_timeout(WAIT);
    assert_eq!(patient.get(&up.url("/health")).await.unwrap().status, 200);
    up.set_hang_health(true);
    let h2 = TestClient::h2c().with_timeout(Duration::from_millis(200));
    assert!(h2.get(&up.url("/health")).await.is_err());
    tokio::time::timeout(WAIT, up.stop()).await.unwrap();
}

#[tokio::test]
async fn stop_refuses_and_restart_listens_on_the_same_port() {
    let up = FakeUpstream::builder("u").start().await;
    let addr = up.addr();
    let client = TestClient::new();
    assert_eq!(client.get(&up.url("/")).await.unwrap().status, 200);
    up.stop().await;
    up.stop().await; // idempotent
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(get(&up.url("/")).await.is_err());
    up.restart().await;
    up.restart().await; // no-op while running
    assert_eq!(up.addr(), addr);
    assert_eq!(get(&up.url("/")).await.unwrap().body, "u");
    assert_eq!(up.requests(), 2);
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn stop_drops_open_connections() {
    let up = FakeUpstream::builder("u").start().await;
    let pending = {
        let url = up.url("/sleep/5000");
        tokio::spawn(async move { get(&url).await })
    };
    eventually!(WAIT, up.requests() == 1);
    up.stop().await;
    let result = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn status_path_answers_that_status() {
    let up = FakeUpstream::builder("u").start().await;
    let res = get(&up.url("/status/503")).await.unwrap();
    assert_eq!((res.status, res.body.as_str()), (503, "u"));
    assert_eq!(get(&up.url("/status/nope")).await.unwrap().status, 400);
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn echo_returns_the_body() {
    let up = FakeUpstream::builder("u").start().await;
    let res = request(
        "POST",
        &up.url("/echo"),
        &[("content-type", "application/x-test")],
        "hello body",
    )
    .await
    .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "hello body");
    assert_eq!(res.header("content-type"), Some("application/x-test"));
    let last = up.last_request().unwrap();
    assert_eq!(last.method, http::Method::POST);
    assert_eq!(&last.body[..], b"hello body");
}

#[tokio::test]
async fn headers_path_answers_json() {
    let up = FakeUpstream::builder("u").start().await;
    let res = get_with(
        &up.url("/headers"),
        &[("X-Multi", "a"), ("x-multi", "b"), ("host", "example.test")],
    )
    .await
    .unwrap();
    assert_eq!(res.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&res.body).unwrap();
    assert_eq!(json["x-multi"], "a, b");
    assert_eq!(json["host"], "example.test");
}

#[tokio::test]
async fn close_path_closes_the_connection() {
    let up = FakeUpstream::builder("u").start().await;
    let client = TestClient::new();
    let res = client.get(&up.url("/close")).await.unwrap();
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.body, "u");
    client.get(&up.url("/")).await.unwrap();
    assert_eq!(up.connections(), 2);

    let raw = raw_exchange(
        up.addr(),
        b"GET /close HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.ends_with('u'), "{raw}");
}

#[tokio::test]
async fn reset_path_drops_without_answer() {
    let up = FakeUpstream::builder("u").start().await;
    assert!(get(&up.url("/reset")).await.is_err());
    let raw = raw_exchange(
        up.addr(),
        b"GET /reset HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw, "");
    // And it is a reset, not a clean close.
    let mut stream = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
    stream
        .write_all(b"GET /reset HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(up.requests(), 3);
    // The upstream survives and keeps answering.
    assert_eq!(get(&up.url("/")).await.unwrap().status, 200);
}

#[tokio::test]
async fn delay_and_sleep_hold_the_answer() {
    let up = FakeUpstream::builder("u")
        .delay(Duration::from_millis(150))
        .start()
        .await;
    let started = Instant::now();
    get(&up.url("/")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    up.set_delay(Duration::ZERO);
    let started = Instant::now();
    get(&up.url("/sleep/150")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(get(&up.url("/sleep/x")).await.unwrap().status, 400);
}

#[tokio::test]
async fn body_size_replaces_the_name() {
    let up = FakeUpstream::builder("u").body_size(10_000).start().await;
    let res = get(&up.url("/")).await.unwrap();
    assert_eq!(res.body.len(), 10_000);
    assert_eq!(res.header("x-upstream"), Some("u"));
}

#[tokio::test]
async fn request_log_is_bounded() {
    let up = FakeUpstream::builder("u").start().await;
    let client = TestClient::new();
    for i in 0..REQUEST_LOG_LIMIT + 5 {
        client.get(&up.url(&format!("/{i}"))).await.unwrap();
    }
    let log = up.requests_log();
    assert_eq!(log.len(), REQUEST_LOG_LIMIT);
    assert_eq!(log[0].uri, "/5");
    assert_eq!(up.requests(), REQUEST_LOG_LIMIT + 5);
}

#[tokio::test]
async fn raw_exchange_reads_until_close() {
    let up = FakeUpstream::builder("raw").start().await;
    let raw = raw_exchange(
        up.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.contains("x-upstream: raw\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\nraw"), "{raw}");
}

#[tokio::test]
async fn tcp_echo_echoes_and_stops() {
    let echo = TcpEcho::start().await;
    let back = raw_exchange(echo.addr(), b"ping", Duration::from_millis(200)).await;
    assert_eq!(back, "ping");
    assert_eq!(echo.connections(), 1);
    echo.stop().await;
    assert!(tokio::net::TcpStream::connect(echo.addr()).await.is_err());
}

#[tokio::test]
async fn ports_are_ephemeral_and_refused() {
    assert_ne!(free_port(), 0);
    let addr = refused_addr().await;
    assert!(addr.ip().is_loopback());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let err = get(&format!("http://{addr}/")).await.unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

#[tokio::test]
async fn bad_arguments_are_errors_not_panics() {
    assert!(get("not a url").await.is_err());
    assert!(request("BAD METHOD", "http://127.0.0.1:1/", &[], "")
        .await
        .is_err());
    assert!(get_with("http://127.0.0.1:1/", &[("bad name", "v")])
        .await
        .is_err());
}

#[tokio::test]
async fn wait_until_is_bounded() {
    let started = Instant::now();
    assert!(!wait_until(Duration::from_millis(100), || async { false }).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    // A check that never finishes still cannot outlive the bound.
    let started = Instant::now();
    let never = wait_until(Duration::from_millis(100), std::future::pending::<bool>).await;
    assert!(!never);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(wait_until(Duration::ZERO, || async { true }).await);
}

#[tokio::test]
async fn eventually_accepts_async_conditions() {
    let up = FakeUpstream::builder("u").start().await;
    let url = up.url("/");
    eventually!(WAIT, get(&url).await.is_ok_and(|r| r.status == 200));
    eventually!(WAIT, up.requests() == 1, "requests = {}", up.requests());
}

#[tokio::test]
#[should_panic(expected = "condition `1 + 1 == 3` still false after")]
async fn eventually_panics_naming_the_condition() {
    eventually!(Duration::from_millis(50), 1 + 1 == 3);
}

#[tokio::test]
async fn close_path_on_h2_sends_goaway() {
    let up = FakeUpstream::builder("u").start().await;
    let client = TestClient::h2c();
    assert_eq!(client.get(&up.url("/close")).await.unwrap().body, "u");
    eventually!(WAIT, client.get(&up.url("/")).await.is_ok());
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn dropping_the_upstream_closes_the_port() {
    let up = FakeUpstream::builder("u").start().await;
    let addr = up.addr();
    drop(up);
    eventually!(WAIT, tokio::net::TcpStream::connect(addr).await.is_err());
}
