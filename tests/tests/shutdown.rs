//! Graceful shutdown of an in-process balancer (`Running::shutdown`, what
//! SIGTERM runs): /readyz 503 at once, drain_delay, stop accepting, in-flight
//! requests finish, idle connections close, `shutdown.timeout` bounds it.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_testkit::{eventually, get, FakeUpstream};
use switchyard_tests::{must_get, raw_get, Cfg, RawConn, Urls, WAIT};
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Err(_))
    )
}

/// One listener forwarding everything to `up`, with `timeouts` (YAML).
async fn with_timeouts(timeouts: &str, up: &FakeUpstream) -> switchyard::Running {
    Cfg::new()
        .listener_with(
            "web",
            timeouts,
            "- name: all\n  forward: { target_group: g }",
        )
        .group(switchyard_tests::Group::new("g", &[up.addr()]))
        .start()
        .await
}

/// Starts the graceful stop and returns once its connections have had a
/// moment to see it: the accept loop has ended (it sets their stop then),
/// plus 200 ms, well inside the 1 s grace. Nothing signals that a
/// connection has seen the stop; without the pause the tests of what
/// comes after it could pass by luck.
async fn stop_seen(lb: switchyard::Running, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let shutdown = tokio::spawn(lb.shutdown());
    eventually!(WAIT, refused(addr).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown
}

async fn readyz(url: &str) -> Option<u16> {
    get(url).await.ok().map(|r| r.status)
}

#[tokio::test]
async fn in_flight_request_finishes_while_readyz_turns_503_and_accepting_stops() {
    let up = FakeUpstream::builder("up")
        .delay(Duration::from_millis(2500))
        .start()
        .await;
    let lb = Cfg::simple(&[up.addr()]).start().await;
    let (addr, ready_url) = (lb.listen_addr(), lb.admin_url("/readyz"));
    assert_eq!(readyz(&ready_url).await, Some(200));

    let url = lb.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    eventually!(WAIT, up.requests() == 1);
    let started = Instant::now();
    let shutdown = tokio::spawn(lb.shutdown());

    eventually!(WAIT, readyz(&ready_url).await == Some(503));
    eventually!(WAIT, refused(addr).await, "still accepting during shutdown");
    assert!(!shutdown.is_finished(), "returned with a request in flight");

    let res = in_flight.await.unwrap().unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "up"));
    // HTTP/1: the response in progress at shutdown closes its connection.
    assert_eq!(res.header("connection"), Some("close"));
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown returns once nothing is in flight")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn idle_client_connections_do_not_hold_shutdown() {
    let up = FakeUpstream::builder("up").start().await;
    // Long idle timeout: only shutdown can close the idle connection.
    let lb = with_timeouts("timeouts: { idle: 60s }", &up).await;
    let mut conn = RawConn::connect(lb.listen_addr()).await;
    conn.send(&raw_get("/")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);

    let started = Instant::now();
    tokio::time::timeout(WAIT, lb.shutdown())
        .await
        .expect("shutdown waited on an idle connection");
    assert!(started.elapsed() < Duration::from_secs(3));
    conn.closed_within(WAIT).await.unwrap();
}

#[tokio::test]
async fn a_connection_that_sent_nothing_does_not_hold_shutdown() {
    let up = FakeUpstream::builder("up").start().await;
    // Long header_read: only shutdown can close the silent connection.
    let lb = with_timeouts("timeouts: { header_read: 60s, idle: 60s }", &up).await;
    let mut silent = RawConn::connect(lb.listen_addr()).await;
    // Served alongside: the listener has accepted (and is serving) both.
    let mut other = RawConn::connect(lb.listen_addr()).await;
    other.send(&raw_get("/")).await;
    assert_eq!(other.response(WAIT).await.unwrap().status, 200);

    let started = Instant::now();
    tokio::time::timeout(WAIT, lb.shutdown())
        .await
        .expect("shutdown waited on a connection that sent nothing");
    assert!(started.elapsed() < Duration::from_secs(3));
    silent.closed_within(WAIT).await.unwrap();
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_wait_for_long_requests() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::simple(&[up.addr()])
        .top("shutdown: { timeout: 500ms }")
        .start()
        .await;
    let url = lb.url("/sleep/20000");
    let _long = tokio::spawn(async move { get(&url).await });
    eventually!(WAIT, up.requests() == 1);
    let started = Instant::now();
    tokio::time::timeout(WAIT, lb.shutdown())
        .await
        .expect("shutdown ignored its timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "did not wait at all: {took:?}"
    );
}

#[tokio::test]
async fn drain_delay_keeps_serving_new_connections_first() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::simple(&[up.addr()])
        .top("shutdown: { drain_delay: 3s, timeout: 5s }")
        .start()
        .await;
    let (addr, url, ready_url) = (lb.listen_addr(), lb.url("/during"), lb.admin_url("/readyz"));
    let started = Instant::now();
    let shutdown = tokio::spawn(lb.shutdown());
    eventually!(WAIT, readyz(&ready_url).await == Some(503));
    // Not ready, but still serving new clients during the drain delay.
    let res = must_get(&url).await;
    assert_eq!((res.status, res.body.as_str()), (200, "up"));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "test too slow to see the delay"
    );
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(2900));
    assert!(refused(addr).await, "still accepting after shutdown");
}

#[tokio::test]
async fn a_request_head_begun_before_the_stop_is_answered_with_the_close() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = with_timeouts("timeouts: { header_read: 30s, idle: 60s }", &up).await;
    let addr = lb.listen_addr();
    let mut conn = RawConn::connect(addr).await;
    conn.send(&raw_get("/first")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);
    // Half a head, then the stop: this connection is not idle.
    conn.send(b"GET /second HTTP/1.1\r\nHost: t\r\n").await;
    let shutdown = stop_seen(lb, addr).await;
    conn.send(b"\r\n").await;
    let res = conn.response(WAIT).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.head);
    assert_eq!(res.header("connection"), Some("close"), "{}", res.head);
    conn.closed_within(WAIT).await.unwrap();
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown finished")
        .unwrap();
}

#[tokio::test]
async fn a_fresh_connection_may_send_its_first_request_just_after_the_stop() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = with_timeouts("timeouts: { header_read: 30s, idle: 60s }", &up).await;
    let addr = lb.listen_addr();
    let mut fresh = RawConn::connect(addr).await;
    // Served alongside: the listener has accepted (and is serving) both.
    let mut other = RawConn::connect(addr).await;
    other.send(&raw_get("/")).await;
    assert_eq!(other.response(WAIT).await.unwrap().status, 200);
    let shutdown = stop_seen(lb, addr).await;
    fresh.send(&raw_get("/late")).await;
    let res = fresh.response(WAIT).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.head);
    assert_eq!(res.header("connection"), Some("close"), "{}", res.head);
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown finished")
        .unwrap();
}
