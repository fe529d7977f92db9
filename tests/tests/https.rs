//! `https` listeners: TLS terminated by SNI in front of the HTTP data
//! plane; ALPN `h2` gives HTTP/2, `http/1.1` HTTP/1.1; forwarded requests
//! carry `X-Forwarded-Proto: https`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_testkit::FakeUpstream;
use switchyard_tests::certs::{client_config, served_cert, Leaf, TestCa, Verify};
use switchyard_tests::live::TempDir;
use switchyard_tests::{start_balancer, WAIT};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

fn config(certs: &[&Leaf], upstream: SocketAddr, alpn: Option<&str>) -> String {
    let certs: Vec<String> = certs.iter().map(|c| c.yaml()).collect();
    let alpn = alpn
        .map(|a| format!("\n      alpn: {a}"))
        .unwrap_or_default();
    format!(
        r#"admin: {{ bind: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
listeners:
  - name: secure
    bind: "127.0.0.1:0"
    protocol: https
    tls:
      certificates: [ {} ]{alpn}
    routes:
      - name: all
        forward: {{ target_group: g }}
target_groups:
  - name: g
    health_check: {{ protocol: none }}
    targets: [ {{ address: "{upstream}" }} ]
"#,
        certs.join(", ")
    )
}

async fn tls(addr: SocketAddr, ca: &TestCa, sni: &str, alpn: &[&str]) -> TlsStream<TcpStream> {
    let config = client_config(Some(sni), Verify::Ca(ca), alpn);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

fn get(host: &str, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("https://{host}{path}"))
        .header(http::header::HOST, host)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let dir = TempDir::new("https-sni");
    let ca = TestCa::new();
    let a = ca.issue(dir.path(), "a", &["a.test"]);
    let b = ca.issue(dir.path(), "b", &["b.test", "*.b.test"]);
    let up = FakeUpstream::builder("up").start().await;
    let lb = start_balancer(&config(&[&a, &b], up.addr(), None)).await;
    let addr = lb.addr("secure").unwrap();
    assert_eq!(served_cert(addr, Some("a.test")).await, a.der);
    assert_eq!(served_cert(addr, Some("b.test")).await, b.der);
    assert_eq!(served_cert(addr, Some("x.b.test")).await, b.der);
    assert_eq!(served_cert(addr, Some("other.test")).await, a.der);
    assert_eq!(served_cert(addr, None).await, a.der);
    lb.shutdown().await;
}

#[tokio::test]
async fn http1_over_tls_is_proxied_with_forwarded_proto_https() {
    let dir = TempDir::new("https-h1");
    let ca = TestCa::new();
    let a = ca.issue(dir.path(), "a", &["a.test"]);
    let up = FakeUpstream::builder("up").start().await;
    let lb = start_balancer(&config(&[&a], up.addr(), None)).await;
    let stream = tls(lb.addr("secure").unwrap(), &ca, "a.test", &["http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let resp = send.send_request(get("a.test", "/p")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"up");
    }
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("host"), Some("a.test"));
    lb.shutdown().await;
}

#[tokio::test]
async fn alpn_h2_multiplexes_many_requests_over_one_tls_connection() {
    let dir = TempDir::new("https-h2");
    let ca = TestCa::new();
    let a = ca.issue(dir.path(), "a", &["a.test"]);
    let up = FakeUpstream::builder("up").start().await;
    let lb = start_balancer(&config(&[&a], up.addr(), None)).await;
    let stream = tls(
        lb.addr("secure").unwrap(),
        &ca,
        "a.test",
        &["h2", "http/1.1"],
    )
    .await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let resp = send
                .send_request(get("a.test", &format!("/s{i}")))
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!((status.as_u16(), &body[..]), (200, &b"up"[..]));
    }
    assert_eq!(up.requests(), 20);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("a.test"));
    lb.shutdown().await;
}

#[tokio::test]
async fn alpn_limited_to_http1_refuses_h2() {
    let dir = TempDir::new("https-alpn");
    let ca = TestCa::new();
    let a = ca.issue(dir.path(), "a", &["a.test"]);
    let up = FakeUpstream::builder("up").start().await;
    let lb = start_balancer(&config(&[&a], up.addr(), Some("[http/1.1]"))).await;
    let stream = tls(
        lb.addr("secure").unwrap(),
        &ca,
        "a.test",
        &["h2", "http/1.1"],
    )
    .await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    lb.shutdown().await;
}
