//! `tcp` listeners: each connection goes to one target picked by group and
//! target weights (health and draining honoured), bytes are copied both
//! ways with half-close, an idle timeout and `max_connections`; a group's
//! `limits` cap each target's open connections (a connection at the cap
//! waits up to `timeouts.connect`, then is closed); a draining target's
//! open connections are cut at `deregistration_delay`; PROXY v2 headers
//! tell targets the client's address.

// Test helpers: a panic is how a failed expectation is reported.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use switchyard::Running;
use switchyard_testkit::{eventually, TcpEcho};
use switchyard_tests::l4::{closed_within, connect, echo, round_trip, tcp_listener};
use switchyard_tests::live::{deregister, target, wait_state};
use switchyard_tests::{metric, must_get, Cfg, Group, Urls, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A `protocol: tcp` group with weighted targets and no active checks.
fn tcp_group(name: &str, targets: &[(SocketAddr, u32)]) -> Group {
    Group::weighted(name, targets).with("protocol: tcp")
}

fn addr_of(lb: &Running, listener: &str) -> SocketAddr {
    lb.addr(listener)
        .unwrap_or_else(|| panic!("no listener {listener}"))
}

async fn metrics(lb: &Running) -> String {
    must_get(&lb.admin_url("/metrics")).await.body
}

#[tokio::test]
async fn weighted_targets_split_connections_exactly_and_each_echoes() {
    let a = TcpEcho::start().await;
    let b = TcpEcho::start().await;
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener("l4-weights", "", &[("weights", 1)]))
        .group(tcp_group("weights", &[(a.addr(), 3), (b.addr(), 1)]))
        .start()
        .await;
    let addr = addr_of(&lb, "l4-weights");
    let mut sent = 0;
    for i in 0..8 {
        let mut client = connect(addr).await;
        let payload = format!("hello {i}");
        echo(&mut client, payload.as_bytes()).await;
        sent += payload.len();
    }
    assert_eq!((a.connections(), b.connections()), (6, 2), "weights 3:1");

    let label = [("listener", "l4-weights")];
    let text = metrics(&lb).await;
    assert_eq!(
        metric(&text, "switchyard_connections_total", &label),
        Some(8.0)
    );
    let bytes = |direction| {
        metric(
            &text,
            "switchyard_tcp_bytes_total",
            &[("listener", "l4-weights"), ("direction", direction)],
        )
    };
    assert_eq!(bytes("rx"), Some(sent as f64), "client -> target");
    assert_eq!(bytes("tx"), Some(sent as f64), "target -> client");
    // Every connection has ended (the clients closed).
    eventually!(
        WAIT,
        metric(&metrics(&lb).await, "switchyard_connections_active", &label) == Some(0.0)
    );
}

#[tokio::test]
async fn group_weights_split_connections_between_groups() {
    let blue = TcpEcho::start().await;
    let green = TcpEcho::start().await;
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener("l4-groups", "", &[("blue", 3), ("green", 1)]))
        .group(tcp_group("blue", &[(blue.addr(), 1)]))
        .group(tcp_group("green", &[(green.addr(), 1)]))
        .start()
        .await;
    let addr = addr_of(&lb, "l4-groups");
    for _ in 0..8 {
        echo(&mut connect(addr).await, b"ping").await;
    }
    assert_eq!((blue.connections(), green.connections()), (6, 2));
}

#[tokio::test]
async fn a_stopped_target_is_ejected_by_tcp_checks() {
    let a = TcpEcho::start().await;
    let b = TcpEcho::start().await;
    // No retries: a connection sent to the stopped target would fail, so
    // only health ejection can make every connection below succeed.
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener("l4-health", "", &[("checked", 1)]))
        .group(
            tcp_group("checked", &[(a.addr(), 1), (b.addr(), 1)])
                .health_check("{ protocol: tcp, interval: 200ms, timeout: 100ms }")
                .with("retries: { attempts: 0 }"),
        )
        .start()
        .await;
    let (a_label, b_label) = (a.addr().to_string(), b.addr().to_string());
    wait_state(&lb, "checked", &a_label, "healthy", WAIT).await;
    wait_state(&lb, "checked", &b_label, "healthy", WAIT).await;
    let addr = addr_of(&lb, "l4-health");
    for _ in 0..2 {
        echo(&mut connect(addr).await, b"both up").await;
    }

    a.stop().await;
    wait_state(&lb, "checked", &a_label, "unhealthy", WAIT).await;
    for i in 0..6 {
        let mut client = connect(addr).await;
        if let Err(e) = round_trip(&mut client, b"only b", WAIT).await {
            panic!("connection {i} after a stopped: {e}");
        }
    }
}

/// An upstream that reads until the client's EOF, then answers how many
/// bytes it got and closes: it only answers if half-close works.
async fn answers_after_eof() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).await.is_ok() {
                    let answer = format!("got {} bytes", got.len());
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn half_close_lets_the_target_answer_after_the_clients_eof() {
    let up = answers_after_eof().await;
    let echo_up = TcpEcho::start().await;
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener("l4-half", "", &[("after-eof", 1)]))
        .listener_yaml(&tcp_listener("l4-half-echo", "", &[("echo", 1)]))
        .group(tcp_group("after-eof", &[(up, 1)]))
        .group(tcp_group("echo", &[(echo_up.addr(), 1)]))
        .start()
        .await;

    let mut client = connect(addr_of(&lb, "l4-half")).await;
    client.write_all(b"hello world").await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, client.read_to_string(&mut answer))
        .await
        .expect("no answer after EOF")
        .unwrap();
    assert_eq!(answer, "got 11 bytes");

    // The echo case: shut down writing, still receive the echo, then EOF.
    let mut client = connect(addr_of(&lb, "l4-half-echo")).await;
    client.write_all(b"sent before EOF").await.unwrap();
    client.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut back))
        .await
        .expect("echo never ended")
        .unwrap();
    assert_eq!(back, b"sent before EOF");
}

#[tokio::test]
async fn idle_timeout_closes_an_inactive_connection_only() {
    let up = TcpEcho::start().await;
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener(
            "l4-idle",
            "timeouts: { idle: 500ms }",
            &[("idle", 1)],
        ))
        .group(tcp_group("idle", &[(up.addr(), 1)]))
        .start()
        .await;
    let addr = addr_of(&lb, "l4-idle");

    // Traffic every 100ms keeps a connection open well past 500ms.
    let mut busy = connect(addr).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        echo(&mut busy, b"tick").await;
    }

    let mut quiet = connect(addr).await;
    echo(&mut quiet, b"once").await;
    let closed = closed_within(&mut quiet, WAIT)
        .await
        .expect("idle connection not closed");
    // 500ms after the balancer last saw a byte, which was a little before
    // the client got its echo.
    assert!(
        closed >= Duration::from_millis(350),
        "closed after {closed:?}"
    );
}

#[tokio::test]
async fn max_connections_holds_further_connections_until_one_closes() {
    let up = TcpEcho::start().await;
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener("l4-max", "max_connections: 1", &[("max", 1)]))
        .group(tcp_group("max", &[(up.addr(), 1)]))
        .start()
        .await;
    let addr = addr_of(&lb, "l4-max");
    let mut first = connect(addr).await;
    echo(&mut first, b"first").await;

    // The kernel completes the second connection, but it is not served.
    let mut second = connect(addr).await;
    second.write_all(b"second").await.unwrap();
    let mut back = [0u8; 6];
    let early =
        tokio::time::timeout(Duration::from_millis(500), second.read_exact(&mut back)).await;
    assert!(
        early.is_err(),
        "second connection served while the first is open"
    );
    assert_eq!(up.connections(), 1);

    drop(first);
    tokio::time::timeout(WAIT, second.read_exact(&mut back))
        .await
        .expect("second connection never served")
        .unwrap();
    assert_eq!(&back, b"second");
    assert_eq!(up.connections(), 2);
}

/// Waits for the balancer to close `stream` without a byte coming back;
/// how long that took.
async fn closed_unserved(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
        Err(_) => panic!("still open after {WAIT:?}"),
        // EOF, or a reset: the balancer never read what the client sent.
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("served at the limit: got {:?}", &buf[..n]),
    }
}

/// One echo target behind tcp listener `name`, in a group also called
/// `name` with more group keys `keys` (limits, timeouts), and a first
/// client connection already served and held open.
struct Capped {
    up: TcpEcho,
    lb: Running,
    addr: SocketAddr,
    first: TcpStream,
}

impl Capped {
    async fn start(name: &str, keys: &str) -> Capped {
        let up = TcpEcho::start().await;
        let lb = Cfg::new()
            .listener_yaml(&tcp_listener(name, "", &[(name, 1)]))
            .group(tcp_group(name, &[(up.addr(), 1)]).with(keys))
            .start()
            .await;
        let addr = addr_of(&lb, name);
        let mut first = connect(addr).await;
        echo(&mut first, b"first").await;
        Capped {
            up,
            lb,
            addr,
            first,
        }
    }
}

/// The connections to `up` that the balancer counts (waiting ones too).
async fn in_flight(lb: &Running, group: &str, up: &TcpEcho) -> u64 {
    let t = target(lb, group, &up.addr().to_string())
        .await
        .expect("target listed");
    t["in_flight"].as_u64().expect("in_flight is a number")
}

/// A group whose `limits` allow one connection per target: the first is
/// served and held, a second gets nothing and is closed after the 300ms
/// connect timeout, and once the first has ended a new one is served.
async fn one_connection_at_a_time(name: &str, limits: &str) {
    let keys = format!("limits: {limits}\ntimeouts: {{ connect: 300ms }}");
    let mut capped = Capped::start(name, &keys).await;

    let mut second = connect(capped.addr).await;
    second.write_all(b"second").await.unwrap();
    let waited = closed_unserved(&mut second).await;
    // It waited for the connect timeout (from a little before the
    // measurement began), not less, and not much more.
    assert!(
        waited >= Duration::from_millis(200),
        "closed after {waited:?}, before the 300ms wait"
    );
    assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    assert_eq!(capped.up.connections(), 1, "a second upstream connection");
    // The first is untouched.
    echo(&mut capped.first, b"still first").await;

    drop(capped.first);
    eventually!(WAIT, in_flight(&capped.lb, name, &capped.up).await == 0);
    let mut third = connect(capped.addr).await;
    echo(&mut third, b"third").await;
    assert_eq!(capped.up.connections(), 2);
}

#[tokio::test]
async fn max_connections_limit_closes_a_connection_that_waits_past_the_connect_timeout() {
    one_connection_at_a_time("l4-cap", "{ max_connections: 1 }").await;
}

#[tokio::test]
async fn max_requests_caps_tcp_connections_too_the_smaller_limit_winning() {
    one_connection_at_a_time("l4-cap-req", "{ max_connections: 3, max_requests: 1 }").await;
}

#[tokio::test]
async fn max_pending_closes_the_overflow_at_once_and_the_waiter_is_served() {
    let name = "l4-pending";
    let keys = "limits: { max_connections: 1, max_pending: 1 }\ntimeouts: { connect: 4s }";
    let capped = Capped::start(name, keys).await;

    // The second waits: counted in flight while it does.
    let mut second = connect(capped.addr).await;
    second.write_all(b"second").await.unwrap();
    eventually!(WAIT, in_flight(&capped.lb, name, &capped.up).await == 2);

    // max_pending (1) already wait: the third is closed without waiting.
    let mut third = connect(capped.addr).await;
    third.write_all(b"third").await.unwrap();
    let waited = closed_unserved(&mut third).await;
    assert!(
        waited < Duration::from_millis(2000),
        "closed after {waited:?}: it waited for the 4s connect timeout"
    );

    // The first ends: the waiting second gets its slot and is served.
    drop(capped.first);
    let mut back = [0u8; 6];
    tokio::time::timeout(WAIT, second.read_exact(&mut back))
        .await
        .expect("the waiting connection was never served")
        .unwrap();
    assert_eq!(&back, b"second");
    assert_eq!(capped.up.connections(), 2);
}

#[tokio::test]
async fn a_draining_targets_open_connection_is_cut_at_the_deadline() {
    let a = TcpEcho::start().await;
    let b = TcpEcho::start().await;
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener("l4-drain", "", &[("drain", 1)]))
        .group(tcp_group("drain", &[(a.addr(), 1), (b.addr(), 1)]).with("deregistration_delay: 2s"))
        .start()
        .await;
    let addr = addr_of(&lb, "l4-drain");
    let mut open = connect(addr).await;
    echo(&mut open, b"before").await;
    let (victim, other) = if a.connections() == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let victim_label = victim.addr().to_string();

    let (status, body) = deregister(&lb, "drain", &victim_label).await;
    assert_eq!(status, 202, "{body}");
    let removed = Instant::now();

    // The open connection goes on while draining and counts as in flight.
    echo(&mut open, b"while draining").await;
    let t = target(&lb, "drain", &victim_label)
        .await
        .expect("listed while draining");
    assert_eq!(t["state"], "draining", "{t}");
    assert_eq!(t["in_flight"], 1, "{t}");
    // New connections avoid the draining target.
    for _ in 0..4 {
        echo(&mut connect(addr).await, b"new").await;
    }
    assert_eq!((victim.connections(), other.connections()), (1, 4));

    // Cut at deregistration_delay, then forgotten.
    closed_within(&mut open, WAIT)
        .await
        .expect("open connection not cut at the deadline");
    let at = removed.elapsed();
    // The deadline runs from the drain's start, a little before the 202.
    assert!(
        at >= Duration::from_millis(1500),
        "cut after {at:?}, before the 2s deadline"
    );
    eventually!(WAIT, target(&lb, "drain", &victim_label).await.is_none());
}

#[tokio::test]
async fn proxy_protocol_v2_header_carries_the_client_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 28];
        stream.read_exact(&mut header).await.unwrap();
        let _ = header_tx.send(header.to_vec());
        // Then echo, so the client sees its bytes came through after it.
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener("l4-pp", "", &[("pp", 1)]))
        .group(tcp_group("pp", &[(up, 1)]).with("proxy_protocol: v2"))
        .start()
        .await;
    let lb_addr = addr_of(&lb, "l4-pp");
    let mut client = connect(lb_addr).await;
    echo(&mut client, b"payload after the header").await;
    let client_addr = client.local_addr().unwrap();

    let header = tokio::time::timeout(WAIT, header_rx)
        .await
        .expect("no header")
        .unwrap();
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    want.extend_from_slice(&[127, 0, 0, 1]); // source: the client
    want.extend_from_slice(&[127, 0, 0, 1]); // destination: the listener
    want.extend_from_slice(&client_addr.port().to_be_bytes());
    want.extend_from_slice(&lb_addr.port().to_be_bytes());
    assert_eq!(header, want);
}

#[tokio::test]
async fn a_refused_target_is_skipped_and_counted_as_an_upstream_error() {
    let up = TcpEcho::start().await;
    let refused = switchyard_testkit::refused_addr().await;
    let lb = Cfg::new()
        .listener_yaml(&tcp_listener("l4-refused", "", &[("refusing", 1)]))
        .group(tcp_group("refusing", &[(refused, 1), (up.addr(), 1)]))
        .start()
        .await;
    let addr = addr_of(&lb, "l4-refused");
    for i in 0..4 {
        let mut client = connect(addr).await;
        echo(&mut client, format!("try {i}").as_bytes()).await;
    }
    assert_eq!(up.connections(), 4);
    // Round robin: every other connection tried the refusing target first.
    let text = metrics(&lb).await;
    let refused_label = refused.to_string();
    let errors = metric(
        &text,
        "switchyard_upstream_requests_total",
        &[
            ("target_group", "refusing"),
            ("target", &refused_label),
            ("code", "error"),
        ],
    );
    assert_eq!(errors, Some(2.0), "{text}");
    let retries = metric(
        &text,
        "switchyard_retries_total",
        &[("target_group", "refusing")],
    );
    assert_eq!(retries, Some(2.0), "{text}");
}
