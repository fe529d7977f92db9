//! HTTP/2 both ways and WebSocket pass-through: h2c to targets
//! (`protocol: http2`), many streams of one client connection split by
//! weight, and an HTTP/1.1 Upgrade tunnel that echoes and that a drain cuts
//! at its deadline.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard_testkit::{self as kit, FakeUpstream, TestClient};
use switchyard_tests::{live, start_balancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

fn yaml(groups: &str, routes: &str) -> String {
    format!(
        r#"admin: {{ bind: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
listeners:
  - name: web
    bind: "127.0.0.1:0"
    routes:
{routes}
target_groups:
{groups}"#
    )
}

#[tokio::test]
async fn h2c_to_targets_multiplexes_on_one_connection() {
    let up = FakeUpstream::builder("h2").start().await;
    let groups = format!(
        "  - name: g\n    protocol: http2\n    health_check: {{ protocol: none }}\n    targets: [ {{ address: \"{}\" }} ]\n",
        up.addr()
    );
    let routes = "      - name: all\n        forward: { target_group: g }\n";
    let lb = start_balancer(&yaml(&groups, routes)).await;
    let url = format!("http://{}/x?y=1", lb.addr("web").unwrap());
    // Concurrent requests from separate client connections.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { kit::get(&url).await }));
    }
    for t in tasks {
        let r = t.await.unwrap().expect("request");
        assert_eq!((r.status, r.body.as_str()), (200, "h2"));
    }
    let seen = up.last_request().expect("a request");
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.uri, "/x?y=1");
    // The client's Host goes as `:authority` alone: NGINX answers 400 to a
    // request with both ("duplicate host header").
    let lb_addr = lb.addr("web").unwrap().to_string();
    assert_eq!(seen.authority.as_deref(), Some(lb_addr.as_str()));
    assert_eq!(seen.header("host"), None);
    assert!(
        up.connections() <= 2,
        "h2c should share one connection, saw {}",
        up.connections()
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn many_h2_streams_on_one_client_connection_split_by_weight() {
    let blue = FakeUpstream::builder("blue").start().await;
    let green = FakeUpstream::builder("green").start().await;
    let groups = format!(
        "  - name: blue\n    health_check: {{ protocol: none }}\n    targets: [ {{ address: \"{}\" }} ]\n  - name: green\n    health_check: {{ protocol: none }}\n    targets: [ {{ address: \"{}\" }} ]\n",
        blue.addr(),
        green.addr()
    );
    let routes = "      - name: split\n        forward:\n          target_groups: [ { name: blue, weight: 3 }, { name: green, weight: 1 } ]\n";
    let lb = start_balancer(&yaml(&groups, routes)).await;
    let url = format!("http://{}/", lb.addr("web").unwrap());
    let client = TestClient::h2c();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move { client.get(&url).await }));
    }
    let mut green_n = 0;
    for t in tasks {
        let r = t.await.unwrap().expect("stream");
        assert_eq!(r.status, 200);
        if r.body == "green" {
            green_n += 1;
        }
    }
    // The split is per request (per stream), exact over 100.
    assert_eq!(green_n, 25);
    assert_eq!(blue.requests() + green.requests(), 100);
    lb.shutdown().await;
}

/// An upstream that answers `Upgrade: echo` with 101 and then echoes raw
/// bytes; it counts open tunnels.
async fn upgrade_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|mut req: http::Request<hyper::body::Incoming>| async move {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = on.await {
                            let mut io = TokioIo::new(up);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let resp = http::Response::builder()
                        .status(101)
                        .header("connection", "upgrade")
                        .header("upgrade", "echo")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Opens an upgraded connection through the balancer; returns the stream
/// after the 101 head.
async fn open_tunnel(lb: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(lb).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("101 in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the 101: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s
}

async fn echo_round_trip(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if buf == msg
    )
}

#[tokio::test]
async fn websocket_style_upgrade_echoes_and_is_cut_at_the_drain_deadline() {
    let echo = upgrade_echo().await;
    let other = FakeUpstream::builder("other").start().await;
    let text = |with_echo: bool| {
        let targets = if with_echo {
            format!(
                "{{ address: \"{echo}\" }}, {{ address: \"{}\" }}",
                other.addr()
            )
        } else {
            format!("{{ address: \"{}\" }}", other.addr())
        };
        yaml(
            &format!(
                "  - name: g\n    health_check: {{ protocol: none }}\n    deregistration_delay: 1s\n    targets: [ {targets} ]\n"
            ),
            "      - name: ws\n        match: { path_prefix: /ws }\n        forward: { target_group: g }\n      - name: rest\n        forward: { target_group: g }\n",
        )
    };
    let file = live::ConfigFile::new("edge-ws", &text(true));
    let lb = file.start().await;
    let addr = lb.addr("web").unwrap();
    // Round robin: the first upgrade goes to the echo target.
    let mut tunnel = open_tunnel(addr).await;
    assert!(echo_round_trip(&mut tunnel, b"hello through the balancer").await);
    assert!(echo_round_trip(&mut tunnel, b"and again").await);
    // The tunnel counts as in flight on its target.
    let t = live::target(&lb, "g", &echo.to_string())
        .await
        .expect("listed");
    assert_eq!(t["in_flight"], 1, "{t}");

    // Remove the echo target: the open tunnel drains, then is cut at ~1s.
    file.overwrite(&text(false));
    let started = tokio::time::Instant::now();
    live::reload_ok(&lb).await;
    assert_eq!(
        live::state(&lb, "g", &echo.to_string()).await.as_deref(),
        Some("draining")
    );
    assert!(echo_round_trip(&mut tunnel, b"still open while draining").await);
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(6), tunnel.read(&mut buf)).await;
    let took = started.elapsed();
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "tunnel not closed: {closed:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut after {took:?}, deregistration_delay is 1s"
    );
    lb.shutdown().await;
}

/// A body of ready frames: data, then trailers (what a gRPC answer is).
struct Frames(std::collections::VecDeque<hyper::body::Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// Serves `handler` over h2c (prior knowledge) on a fresh loopback port,
/// at most `streams` concurrent streams a connection (hyper's default when
/// `None`).
async fn serve_h2c<F, Fut, B>(streams: Option<u32>, handler: F) -> SocketAddr
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<http::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut builder =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                if let Some(n) = streams {
                    builder.max_concurrent_streams(n);
                }
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .await;
            });
        }
    });
    addr
}

/// An h2c upstream answering like a gRPC server: a body then trailers
/// (`grpc-status`), and echoing whether it saw `te: trailers`.
async fn grpc_like() -> SocketAddr {
    use hyper::body::Frame;
    serve_h2c(
        None,
        |req: http::Request<hyper::body::Incoming>| async move {
            let te = req
                .headers()
                .get("te")
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            trailers.insert("grpc-message", http::HeaderValue::from_static("ok"));
            let body = Frames(
                vec![
                    Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi")),
                    Frame::trailers(trailers),
                ]
                .into(),
            );
            let resp = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("x-seen-te", te)
                .body(body)
                .unwrap();
            Ok::<_, Infallible>(resp)
        },
    )
    .await
}

#[tokio::test]
async fn grpc_over_h2_passes_trailers_and_te_through() {
    let up = grpc_like().await;
    let groups = format!(
        "  - name: grpc\n    protocol: http2\n    health_check: {{ protocol: none }}\n    targets: [ {{ address: \"{up}\" }} ]\n"
    );
    let routes = "      - name: all\n        forward: { target_group: grpc }\n";
    let lb = start_balancer(&yaml(&groups, routes)).await;
    let stream = TcpStream::connect(lb.addr("web").unwrap()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/pkg.Svc/Method", lb.addr("web").unwrap()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x00")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-seen-te"],
        "trailers",
        "te: trailers must reach a gRPC target"
    );
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers forwarded");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    lb.shutdown().await;
}

/// A target that reads a request head, says so, and then reads nothing
/// more, holding the connection for 30 s.
async fn never_reads() -> (SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = tx.send(()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn an_upload_to_a_target_that_stopped_reading_does_not_stall_the_other_streams() {
    // One stream uploads 32 MiB to a target that reads none of it: what
    // the sockets on the way cannot hold waits in the balancer. The other
    // streams of the same client connection must still get their bodies
    // through (HTTP/2 flow control: one stream must not take the whole
    // connection's window).
    let (stuck, mut heard) = never_reads().await;
    let echo = FakeUpstream::builder("echo").start().await;
    let groups = format!(
        "  - name: stuck\n    health_check: {{ protocol: none }}\n    timeouts: {{ request: 30s }}\n    targets: [ {{ address: \"{stuck}\" }} ]\n\
         \x20 - name: echo\n    health_check: {{ protocol: none }}\n    targets: [ {{ address: \"{}\" }} ]\n",
        echo.addr()
    );
    let routes = "      - name: stuck\n        match: { path_prefix: /stuck }\n        forward: { target_group: stuck }\n\
                  \x20     - name: echo\n        forward: { target_group: echo }\n";
    let lb = start_balancer(&yaml(&groups, routes)).await;
    let base = format!("http://{}", lb.addr("web").unwrap());
    let client = TestClient::h2c().with_timeout(Duration::from_secs(40));
    let upload = {
        let (client, url) = (client.clone(), format!("{base}/stuck"));
        tokio::spawn(async move {
            client
                .request("POST", &url, &[], vec![b's'; 32 << 20])
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("the stuck target never got its request");
    // Several uploads on the same connection, one after another.
    let quick = client.clone().with_timeout(Duration::from_secs(10));
    for i in 0..4 {
        let body = vec![b'0' + i as u8; 256 * 1024];
        let res = quick
            .request("POST", &format!("{base}/echo"), &[], body.clone())
            .await
            .unwrap_or_else(|e| panic!("upload {i} beside the stuck one: {e}"));
        assert_eq!(res.status, 200);
        assert_eq!(res.body.len(), body.len(), "upload {i}");
    }
    upload.abort();
}

#[tokio::test]
async fn clients_that_stop_reading_do_not_stall_others_on_a_shared_h2c_target_connection() {
    // Every client of an http2 group shares one connection to the target.
    // Three clients ask for 32 MiB each and read none of it: what their
    // sockets cannot hold waits in the balancer. Other clients' answers on
    // the same target connection must still come (one stream must not
    // take the connection's whole window).
    let up = FakeUpstream::builder("h2")
        .body_size(32 << 20)
        .start()
        .await;
    let groups = format!(
        "  - name: g\n    protocol: http2\n    health_check: {{ protocol: none }}\n    targets: [ {{ address: \"{}\" }} ]\n",
        up.addr()
    );
    let routes = "      - name: all\n        forward: { target_group: g }\n";
    let lb = start_balancer(&yaml(&groups, routes)).await;
    let addr = lb.addr("web").unwrap();
    let mut idle_readers = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        // Only the first bytes: the head has come, the body is flowing.
        let mut first = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut first))
            .await
            .expect("no answer to a big GET")
            .unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        idle_readers.push(s);
    }
    let quick = TestClient::new().with_timeout(Duration::from_secs(5));
    for i in 0..5 {
        let res = quick
            .get(&format!("http://{addr}/headers"))
            .await
            .unwrap_or_else(|e| panic!("request {i} beside the stalled readers: {e}"));
        // A small answer (a JSON object of the request's headers).
        assert_eq!(res.status, 200);
        assert!(res.body.starts_with('{'), "request {i}");
    }
    drop(idle_readers);
}

#[tokio::test]
async fn http2_cookie_crumbs_reach_an_http1_target_as_one_cookie() {
    let up = FakeUpstream::builder("up").start().await;
    let groups = format!(
        "  - name: g\n    health_check: {{ protocol: none }}\n    targets: [ {{ address: \"{}\" }} ]\n",
        up.addr()
    );
    let routes = "      - name: all\n        forward: { target_group: g }\n";
    let lb = start_balancer(&yaml(&groups, routes)).await;
    let url = format!("http://{}/c", lb.addr("web").unwrap());
    let res = TestClient::h2c()
        .get_with(&url, &[("cookie", "a=1"), ("cookie", "b=2")])
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_11);
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
}

/// A body fed through a channel: each message one data frame; the end
/// when the sender drops.
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// An h2c target that answers at once (the head), reads the whole upload,
/// and only then sends its body: `read N` (as a gRPC server summing a
/// client stream).
async fn answers_after_reading() -> SocketAddr {
    serve_h2c(
        None,
        |req: http::Request<hyper::body::Incoming>| async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                let got = req.into_body().collect().await.map(|b| b.to_bytes().len());
                let _ = tx
                    .send(Bytes::from(format!("read {}", got.unwrap_or(0))))
                    .await;
            });
            Ok::<_, Infallible>(http::Response::new(ChanBody(rx)))
        },
    )
    .await
}

#[tokio::test]
async fn an_h2c_target_reading_a_long_upload_is_not_cut_as_silent() {
    // The target's head comes at once and its body only after the upload,
    // which the client streams for 1.2 s: longer than the request timeout
    // (500 ms) with no answer bytes, but the target reads all along.
    let up = answers_after_reading().await;
    let groups = format!(
        "  - name: g\n    protocol: http2\n    health_check: {{ protocol: none }}\n    timeouts: {{ request: 500ms }}\n    targets: [ {{ address: \"{up}\" }} ]\n"
    );
    let routes = "      - name: all\n        forward: { target_group: g }\n";
    let lb = start_balancer(&yaml(&groups, routes)).await;
    let stream = TcpStream::connect(lb.addr("web").unwrap()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = http::Request::post(format!("http://{}/sum", lb.addr("web").unwrap()))
        .body(ChanBody(rx))
        .unwrap();
    let feeder = tokio::spawn(async move {
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tx.send(Bytes::from_static(&[b'u'; 1024])).await.is_err() {
                return;
            }
        }
    });
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("no answer head")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("answer body hung")
        .expect("answer body cut");
    assert_eq!(body.to_bytes(), Bytes::from("read 12288"));
    feeder.await.unwrap();
}

/// How `refusing_h2c_target` refuses a stream on its first connection.
#[derive(Clone)]
enum Refuse {
    /// Waits for two requests, then answers the first and sends a GOAWAY
    /// whose last stream id is the first's, as NGINX closes a connection
    /// after `keepalive_requests`.
    GoAway,
    /// Waits for two requests, answers the first and resets the second
    /// with REFUSED_STREAM.
    Reset,
    /// Allows one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1) and
    /// tells `first` when the client has both that setting and a first
    /// request, so that a second request waits in the client to open; on
    /// `go`, answers the first and sends the GOAWAY, which ends the wait.
    GoAwayWhileWaiting { first: Arc<Notify>, go: Arc<Notify> },
}

/// An h2c target speaking frames by hand, to refuse a stream on cue as
/// hyper's server cannot be made to (see `Refuse`). Every other stream,
/// and every stream of later connections, gets a 200 with `x-conn`: the
/// connection's number, from 1.
async fn refusing_h2c_target(how: Refuse) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0u8;
        while let Ok((stream, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(refusing_h2c_conn(stream, n, how.clone()));
        }
    });
    addr
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

async fn refusing_h2c_conn(mut stream: TcpStream, conn: u8, how: Refuse) {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    // `:status: 200` (static table 8), then `x-conn` and `x-len` (the
    // request body's length) as literals.
    let answer = |id: u32, len: usize| {
        let mut block = vec![0x88];
        for (name, value) in [("x-conn", conn.to_string()), ("x-len", len.to_string())] {
            block.extend([0, name.len() as u8]);
            block.extend(name.as_bytes());
            block.push(value.len() as u8);
            block.extend(value.as_bytes());
        }
        h2_frame(HEADERS, 0x5, id, &block)
    };
    let go_away = |last: u32| {
        let mut payload = last.to_be_bytes().to_vec();
        payload.extend(0u32.to_be_bytes());
        h2_frame(GOAWAY, 0, 0, &payload)
    };
    let mut preface = [0u8; 24];
    if stream.read_exact(&mut preface).await.is_err() {
        return;
    }
    let settings: &[u8] = match (&how, conn) {
        (Refuse::GoAwayWhileWaiting { .. }, 1) => &[0, 3, 0, 0, 0, 1],
        _ => &[],
    };
    let _ = stream.write_all(&h2_frame(SETTINGS, 0, 0, settings)).await;
    // Body bytes by stream, and the complete requests held back.
    let mut got: std::collections::HashMap<u32, usize> = Default::default();
    let mut held: Vec<u32> = Vec::new();
    let mut acked = false;
    let mut refused = false;
    loop {
        if let (Refuse::GoAwayWhileWaiting { first, go }, 1, [id]) = (&how, conn, &held[..]) {
            if acked && !refused {
                refused = true;
                first.notify_one();
                go.notified().await;
                let mut out = go_away(*id);
                out.extend(answer(*id, got[id]));
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
        let mut head = [0u8; 9];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        acked |= kind == SETTINGS && flags & 1 == 1;
        let bytes = got.entry(id).or_default();
        if kind == DATA {
            *bytes += len;
        }
        let complete = (kind == HEADERS || kind == DATA) && flags & 1 == 1;
        let out = match (kind, &how) {
            (SETTINGS, _) if flags & 1 == 0 => h2_frame(SETTINGS, 1, 0, &[]),
            (PING, _) if flags & 1 == 0 => h2_frame(PING, 1, 0, &payload),
            _ if !complete => continue,
            (_, Refuse::GoAwayWhileWaiting { .. }) if conn == 1 && held.is_empty() => {
                held.push(id);
                continue;
            }
            (_, Refuse::GoAway | Refuse::Reset) if conn == 1 && !refused => {
                held.push(id);
                if held.len() < 2 {
                    continue;
                }
                refused = true;
                // A GOAWAY refuses the streams above its last one.
                let (first, second) = (held[0].min(held[1]), held[0].max(held[1]));
                let mut out = match how {
                    Refuse::Reset => h2_frame(RST_STREAM, 0, second, &7u32.to_be_bytes()),
                    _ => go_away(first),
                };
                out.extend(answer(first, got[&first]));
                out
            }
            _ => answer(id, *bytes),
        };
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn streams_an_h2c_target_refuses_unprocessed_go_again() {
    // RFC 9113 8.7: a stream above a GOAWAY's last stream id, one still
    // waiting to open when the GOAWAY came, or one reset with
    // REFUSED_STREAM was never processed. A bodyless request on it, POST
    // included, goes again (on a new connection after a GOAWAY) instead
    // of becoming a 502 that counts against the target.
    let (first, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let waiting = Refuse::GoAwayWhileWaiting {
        first: Arc::clone(&first),
        go: Arc::clone(&go),
    };
    // Uploads where the refused request is one (the waiting one is the
    // second; a GOAWAY refuses whichever opened second).
    let upload = "twelve bytes";
    let cases = [
        ("goaway", Refuse::GoAway, ["", ""], ["1", "2"]),
        (
            "goaway, uploads",
            Refuse::GoAway,
            [upload, upload],
            ["1", "2"],
        ),
        ("reset", Refuse::Reset, ["", ""], ["1", "1"]),
        (
            "reset, uploads",
            Refuse::Reset,
            [upload, upload],
            ["1", "1"],
        ),
        ("waiting, upload", waiting, ["", upload], ["1", "2"]),
    ];
    for (case, how, bodies, want) in cases {
        let up = refusing_h2c_target(how).await;
        let groups = format!(
            "  - name: g\n    protocol: http2\n    health_check: {{ protocol: none }}\n    outlier_detection: {{ consecutive_failures: 1 }}\n    targets: [ {{ address: \"{up}\" }} ]\n"
        );
        let routes = "      - name: all\n        forward: { target_group: g }\n";
        let lb = start_balancer(&yaml(&groups, routes)).await;
        let url = format!("http://{}/", lb.addr("web").unwrap());
        let post = |url: String, body: &'static str| {
            tokio::spawn(async move { kit::request("POST", &url, &[], body).await })
        };
        let waits = case.starts_with("waiting");
        let a = post(url.clone(), bodies[0]);
        if waits {
            tokio::time::timeout(Duration::from_secs(10), first.notified())
                .await
                .expect("first request never reached the target");
        }
        let b = post(url, bodies[1]);
        if waits {
            // Both requests at the target, the second waiting for a
            // stream, before the target sends its GOAWAY.
            let addr = up.to_string();
            let mut both = false;
            for _ in 0..200 {
                let t = live::target(&lb, "g", &addr).await.expect("target listed");
                if t["in_flight"] == 2 {
                    both = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(both, "two requests never reached the target");
            go.notify_one();
        }
        let mut conns = Vec::new();
        for (r, body) in [(a.await.unwrap(), bodies[0]), (b.await.unwrap(), bodies[1])] {
            let r = r.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(r.status, 200, "{case}: {}", r.body);
            // The whole upload reached the target, also when it went again.
            let len = body.len().to_string();
            assert_eq!(r.header("x-len"), Some(len.as_str()), "{case}");
            conns.push(r.header("x-conn").unwrap_or_default().to_owned());
        }
        conns.sort();
        assert_eq!(conns, want, "{case}");
        // Not a failure of the target: it was not ejected.
        let state = live::state(&lb, "g", &up.to_string()).await;
        assert_eq!(state.as_deref(), Some("healthy"), "{case}");
        lb.shutdown().await;
    }
}

/// A body without end, made as fast as it is read.
struct Endless;

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            &CHUNK,
        )))))
    }
}

/// An h2c target allowing `streams` concurrent streams a connection (NGINX:
/// 128): `/endless` streams without end, anything else answers `ok`.
async fn endless_h2c_target(streams: u32) -> SocketAddr {
    serve_h2c(
        Some(streams),
        |req: http::Request<hyper::body::Incoming>| async move {
            let body = if req.uri().path() == "/endless" {
                http_body_util::Either::Left(Endless)
            } else {
                http_body_util::Either::Right(Full::new(Bytes::from_static(b"ok")))
            };
            Ok::<_, Infallible>(http::Response::new(body))
        },
    )
    .await
}

#[tokio::test]
async fn clients_that_stop_reading_do_not_take_every_stream_of_an_h2c_target() {
    // 128 downloads that their client stops reading hold 128 streams to
    // the target, as many as it allows on a connection. Another client's
    // request must not wait behind them: it goes on another connection.
    let up = endless_h2c_target(128).await;
    let groups = format!(
        "  - name: g\n    protocol: http2\n    health_check: {{ protocol: none }}\n    timeouts: {{ request: 2s }}\n    targets: [ {{ address: \"{up}\" }} ]\n"
    );
    let routes = "      - name: all\n        forward: { target_group: g }\n";
    let lb = start_balancer(&yaml(&groups, routes)).await;
    let web = lb.addr("web").unwrap();
    // One client connection whose streams take 64 KiB each before they
    // stop, so 128 of them cost little memory anywhere.
    let stream = TcpStream::connect(web).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(16 << 20)
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut held = Vec::new();
    for _ in 0..128 {
        let mut sender = sender.clone();
        let req = http::Request::get(format!("http://{web}/endless"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        held.push(tokio::spawn(async move { sender.send_request(req).await }));
    }
    // Kept, unread: their streams stay open.
    let mut unread = Vec::new();
    for h in held {
        let resp = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("a download never started")
            .unwrap()
            .expect("download");
        assert_eq!(resp.status(), 200);
        unread.push(resp);
    }
    let res = kit::get(&format!("http://{web}/small"))
        .await
        .expect("answer");
    assert_eq!((res.status, res.body.as_str()), (200, "ok"));
    drop((unread, sender));
    lb.shutdown().await;
}
