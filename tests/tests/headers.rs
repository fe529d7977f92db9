//! What a forwarded request carries: Host kept, X-Forwarded-*, X-Request-Id,
//! hop-by-hop headers removed; path, query and body unchanged; upstream
//! answers passed back.

use std::collections::BTreeSet;

use switchyard_testkit::{get_with, request, FakeUpstream, TestClient};
use switchyard_tests::{Cfg, RawConn, Urls, WAIT};

async fn setup() -> (switchyard::Running, FakeUpstream) {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::simple(&[up.addr()]).start().await;
    (lb, up)
}

#[tokio::test]
async fn forwarded_headers_are_added_and_host_is_kept() {
    let (lb, up) = setup().await;
    let res = get_with(&lb.url("/p"), &[("host", "app.example.com:8080")])
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("host"), Some("app.example.com:8080"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some("app.example.com:8080")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
}

#[tokio::test]
async fn x_forwarded_for_appends_the_client_address() {
    let (lb, up) = setup().await;
    get_with(&lb.url("/"), &[("x-forwarded-for", "203.0.113.7")])
        .await
        .unwrap();
    let seen = up.last_request().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    // Two header lines from the client: both kept, in order, then ours.
    get_with(
        &lb.url("/"),
        &[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ],
    )
    .await
    .unwrap();
    let seen = up.last_request().unwrap();
    let all: Vec<&str> = seen
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(all.join(", "), "198.51.100.1, 198.51.100.2, 127.0.0.1");
}

#[tokio::test]
async fn x_forwarded_proto_and_host_replace_client_values() {
    let (lb, up) = setup().await;
    get_with(
        &lb.url("/"),
        &[
            ("host", "real.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
        ],
    )
    .await
    .unwrap();
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("real.example"));
    assert_eq!(seen.headers.get_all("x-forwarded-host").iter().count(), 1);
}

#[tokio::test]
async fn request_id_is_kept_or_generated() {
    let (lb, up) = setup().await;
    get_with(&lb.url("/"), &[("x-request-id", "abc-123")])
        .await
        .unwrap();
    assert_eq!(
        up.last_request().unwrap().header("x-request-id"),
        Some("abc-123")
    );

    let client = TestClient::new();
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        client.get(&lb.url("/")).await.unwrap();
        let id = up
            .last_request()
            .unwrap()
            .header("x-request-id")
            .map(str::to_owned)
            .expect("a generated x-request-id");
        assert!(id.len() >= 16, "too short to be unique: {id:?}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 5, "ids repeat: {ids:?}");
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed() {
    let (lb, up) = setup().await;
    // Raw bytes, so that no client library touches these headers.
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(
        b"GET /hop HTTP/1.1\r\n\
          Host: test\r\n\
          Connection: keep-alive, X-Secret, x-other\r\n\
          X-Secret: s3cret\r\n\
          X-Other: o\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: trailers\r\n\
          Trailer: x-checksum\r\n\
          X-Kept: yes\r\n\
          \r\n",
    )
    .await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!(res.status, 200);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.uri, "/hop");
    for gone in [
        "connection",
        "x-secret",
        "x-other",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
    ] {
        assert!(
            seen.header(gone).is_none(),
            "{gone} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn method_path_query_and_body_pass_through() {
    let (lb, up) = setup().await;
    let res = request(
        "POST",
        &lb.url("/echo?x=1&y=two%20words"),
        &[("content-type", "application/json")],
        r#"{"hello":"world"}"#,
    )
    .await
    .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.body, r#"{"hello":"world"}"#);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let seen = up.last_request().unwrap();
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.uri, "/echo?x=1&y=two%20words");

    // A chunked request body arrives whole.
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(
        b"PUT /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!((res.status, res.body_text().as_str()), (200, "hello world"));
    assert_eq!(up.last_request().unwrap().body.as_ref(), b"hello world");
}

#[tokio::test]
async fn upstream_status_headers_and_body_come_back() {
    let (lb, _up) = setup().await;
    let res = switchyard_tests::must_get(&lb.url("/status/418")).await;
    assert_eq!(res.status, 418);
    assert_eq!(res.body, "up");
    assert_eq!(res.header("x-upstream"), Some("up"));
    let res = switchyard_tests::must_get(&lb.url("/status/500")).await;
    assert_eq!((res.status, res.body.as_str()), (500, "up"));
    let res = switchyard_tests::must_get(&lb.url("/headers")).await;
    let json: serde_json::Value = serde_json::from_str(&res.body).unwrap();
    assert_eq!(json["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn upstream_connection_close_does_not_close_the_client_connection() {
    let (lb, up) = setup().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    // The upstream answers /close with `Connection: close` and hangs up:
    // that is its hop, not the client's.
    conn.send(&switchyard_tests::raw_get("/close")).await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!(res.status, 200);
    assert_ne!(
        res.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "{}",
        res.head
    );
    for _ in 0..3 {
        conn.send(&switchyard_tests::raw_get("/")).await;
        let res = conn.response(WAIT).await.unwrap();
        assert_eq!((res.status, res.body_text().as_str()), (200, "up"));
    }
    assert_eq!(up.requests(), 4);
}

#[tokio::test]
async fn absolute_form_request_target_reaches_the_upstream_in_origin_form() {
    let (lb, up) = setup().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(b"GET http://app.test/abs/path?q=1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.uri, "/abs/path?q=1");
    assert_eq!(seen.header("host"), Some("app.test"));
}

#[tokio::test]
async fn expect_100_continue_gets_continue_then_the_answer() {
    let (lb, up) = setup().await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    // The client waits for 100 before sending its body.
    let interim = conn.response(WAIT).await.unwrap();
    assert_eq!(interim.status, 100);
    conn.send(b"hello").await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!((res.status, res.body_text().as_str()), (200, "hello"));
    assert_eq!(up.last_request().unwrap().body.as_ref(), b"hello");
}
