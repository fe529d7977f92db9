//! Draining a deregistered target (removed from the YAML, or `DELETE`d
//! through the API): in-flight requests finish with their whole body, new
//! requests avoid it, it is forgotten as soon as nothing is in flight, and
//! at `deregistration_delay` whatever still runs is cut. Its idle pooled
//! connections close at once.

// Test helpers: a panic is how a failed expectation is reported.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard::Running;
use switchyard_testkit::{eventually, get, FakeUpstream, TestClient};
use switchyard_tests::live::{counts, deregister, reload_ok, tally, target, ConfigFile};
use switchyard_tests::{Cfg, Group, Urls, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Body size of the slow answers: big enough to be streamed in pieces.
const BODY: usize = 256 * 1024;

/// Listener `web` -> group `g` with `targets`, draining for `delay`.
fn config(targets: &[SocketAddr], delay: &str) -> String {
    Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(Group::new("g", targets).with(&format!("deregistration_delay: {delay}")))
        .yaml()
}

#[derive(Debug, Clone, Copy)]
enum Removal {
    /// Rewrite the file without it, then `POST /api/v1/reload`.
    Yaml,
    /// `DELETE /api/v1/target-groups/g/targets/{address}`.
    Api,
}

/// Takes `victim` out of group `g` of `lb`, the way `how` says; `keep` is
/// what the file lists afterwards.
async fn remove(
    lb: &Running,
    file: &ConfigFile,
    how: Removal,
    victim: SocketAddr,
    keep: &[SocketAddr],
    delay: &str,
) {
    match how {
        Removal::Yaml => {
            file.overwrite(&config(keep, delay));
            reload_ok(lb).await;
        }
        Removal::Api => {
            let (status, body) = deregister(lb, "g", &victim.to_string()).await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(body["state"], "draining", "{body}");
        }
    }
}

/// Two big-bodied upstreams a and b, and a balancer in front of both.
async fn two(tag: &str, delay: &str) -> (FakeUpstream, FakeUpstream, ConfigFile, Running) {
    let a = FakeUpstream::builder("a").body_size(BODY).start().await;
    let b = FakeUpstream::builder("b").body_size(BODY).start().await;
    let file = ConfigFile::new(tag, &config(&[a.addr(), b.addr()], delay));
    let lb = file.start().await;
    (a, b, file, lb)
}

/// Starts `GET path` in the background and waits until an upstream has it;
/// returns the request and (the one that has it, the other).
async fn in_flight<'u>(
    lb: &Running,
    a: &'u FakeUpstream,
    b: &'u FakeUpstream,
    path: &str,
) -> (
    tokio::task::JoinHandle<Result<switchyard_testkit::TestResponse, String>>,
    &'u FakeUpstream,
    &'u FakeUpstream,
) {
    let url = lb.url(path);
    let request = tokio::spawn(async move { get(&url).await });
    eventually!(WAIT, a.requests() + b.requests() == 1);
    if a.requests() == 1 {
        (request, a, b)
    } else {
        (request, b, a)
    }
}

async fn slow_request_finishes_while_new_ones_avoid_the_draining_target(how: Removal) {
    let delay = "30s";
    let (a, b, file, lb) = two("drain", delay).await;
    let (slow, victim, other) = in_flight(&lb, &a, &b, "/sleep/1500").await;
    let victim_addr = victim.addr().to_string();
    remove(&lb, &file, how, victim.addr(), &[other.addr()], delay).await;

    let t = target(&lb, "g", &victim_addr)
        .await
        .expect("listed while draining");
    assert_eq!(t["state"], "draining", "{how:?}: {t}");
    assert_eq!(t["reason"], "deregistered", "{how:?}: {t}");
    assert_eq!(t["in_flight"], 1, "{how:?}: {t}");
    // New requests all go to the remaining target.
    let client = TestClient::new();
    assert_eq!(
        tally(&client, &lb.url("/"), 10).await,
        counts(&[(other.name(), 10)]),
        "{how:?}"
    );
    assert_eq!(victim.requests(), 1, "{how:?}");
    assert!(
        !slow.is_finished(),
        "{how:?}: the in-flight request did not wait"
    );

    let res = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(res.status, 200, "{how:?}");
    assert_eq!(res.header("x-upstream"), Some(victim.name()), "{how:?}");
    assert_eq!(res.body.len(), BODY, "{how:?}: truncated body");
    assert!(res.body.bytes().all(|c| c == b'x'), "{how:?}");
    // Forgotten as soon as nothing is in flight, not after 30s.
    let ended = Instant::now();
    eventually!(
        WAIT,
        target(&lb, "g", &victim_addr).await.is_none(),
        "{how:?}"
    );
    println!(
        "{how:?}: drained target forgotten {:?} after its last request",
        ended.elapsed()
    );
    let o = target(&lb, "g", &other.addr().to_string()).await.unwrap();
    assert_eq!(o["state"], "healthy", "{how:?}: {o}");
    lb.shutdown().await;
}

#[tokio::test]
async fn removed_from_the_yaml_a_slow_request_finishes_and_new_ones_avoid_the_target() {
    slow_request_finishes_while_new_ones_avoid_the_draining_target(Removal::Yaml).await;
}

#[tokio::test]
async fn deregistered_through_the_api_a_slow_request_finishes_and_new_ones_avoid_the_target() {
    slow_request_finishes_while_new_ones_avoid_the_draining_target(Removal::Api).await;
}

#[tokio::test]
async fn a_request_still_running_at_deregistration_delay_is_cut_then() {
    let delay = "1s";
    let (a, b, file, lb) = two("cut", delay).await;
    let (long, victim, other) = in_flight(&lb, &a, &b, "/sleep/10000").await;
    let victim_addr = victim.addr().to_string();
    let removed = Instant::now();
    remove(
        &lb,
        &file,
        Removal::Yaml,
        victim.addr(),
        &[other.addr()],
        delay,
    )
    .await;
    assert_eq!(
        target(&lb, "g", &victim_addr)
            .await
            .map(|t| t["state"].clone()),
        Some("draining".into())
    );

    let outcome = tokio::time::timeout(Duration::from_secs(8), long)
        .await
        .expect("the request outlived its deregistration_delay")
        .unwrap();
    let took = removed.elapsed();
    println!(
        "request cut {took:?} after removal: {:?}",
        outcome.as_ref().map(|r| r.status)
    );
    // A 502, or a broken connection: either way not the answer.
    if let Ok(res) = &outcome {
        assert_eq!(res.status, 502, "{}", res.body);
    }
    assert!(
        took >= Duration::from_millis(900),
        "cut before the deregistration delay: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "cut far too late: {took:?}");
    eventually!(WAIT, target(&lb, "g", &victim_addr).await.is_none());
    lb.shutdown().await;
}

/// A keep-alive HTTP/1.1 upstream on raw sockets that notices when the
/// proxy closes a connection (which `FakeUpstream` does not report).
struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

async fn raw_upstream(name: &'static str) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (acc, clo) = (Arc::clone(&accepted), Arc::clone(&closed));
    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-upstream: {name}\r\n\r\nok");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            acc.fetch_add(1, Ordering::Relaxed);
            let (clo, answer) = (Arc::clone(&clo), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Body-less requests only: each head ends with a blank line.
                while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                }
                clo.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    RawUpstream {
        addr,
        accepted,
        closed,
    }
}

#[tokio::test]
async fn idle_pooled_connections_of_a_drained_target_close_at_once() {
    for how in [Removal::Yaml, Removal::Api] {
        let (r1, r2) = (raw_upstream("r1").await, raw_upstream("r2").await);
        // 30s draining and the default 90s upstream idle timeout: only
        // draining can close these connections within the test.
        let delay = "30s";
        let file = ConfigFile::new("idle", &config(&[r1.addr, r2.addr], delay));
        let lb = file.start().await;
        let client = TestClient::new();
        assert_eq!(
            tally(&client, &lb.url("/"), 6).await,
            counts(&[("r1", 3), ("r2", 3)])
        );
        // One pooled connection each, idle and open.
        assert_eq!(r1.accepted.load(Ordering::Relaxed), 1, "{how:?}");
        assert_eq!(r2.accepted.load(Ordering::Relaxed), 1, "{how:?}");
        assert_eq!(r1.closed.load(Ordering::Relaxed), 0, "{how:?}");

        let removed = Instant::now();
        remove(&lb, &file, how, r1.addr, &[r2.addr], delay).await;
        eventually!(WAIT, r1.closed.load(Ordering::Relaxed) == 1, "{how:?}");
        println!(
            "{how:?}: idle connection closed {:?} after removal",
            removed.elapsed()
        );
        // The kept target's connection stays pooled and in use.
        assert_eq!(tally(&client, &lb.url("/"), 4).await, counts(&[("r2", 4)]));
        assert_eq!(r2.accepted.load(Ordering::Relaxed), 1, "{how:?}");
        assert_eq!(r2.closed.load(Ordering::Relaxed), 0, "{how:?}");
        lb.shutdown().await;
    }
}

#[tokio::test]
async fn registered_again_while_draining_a_target_is_revived_with_its_state() {
    let (a, b, _file, lb) = two("revive", "30s").await;
    let (slow, victim, other) = in_flight(&lb, &a, &b, "/sleep/1500").await;
    let victim_addr = victim.addr().to_string();
    let (status, v) = deregister(&lb, "g", &victim_addr).await;
    assert_eq!(
        (status, v["state"].as_str()),
        (202, Some("draining")),
        "{v}"
    );
    let body = format!(r#"{{"address": "{victim_addr}", "weight": 1}}"#);
    let (status, v) = switchyard_tests::live::register(&lb, "g", &body).await;
    // The answer tells the state it is back in: its own, not `initial`.
    assert_eq!((status, v["state"].as_str()), (201, Some("healthy")), "{v}");
    let t = target(&lb, "g", &victim_addr).await.expect("listed");
    assert_eq!(t["state"], "healthy", "{t}");
    let client = TestClient::new();
    assert_eq!(
        tally(&client, &lb.url("/"), 4).await,
        counts(&[(victim.name(), 2), (other.name(), 2)])
    );
    assert_eq!(slow.await.unwrap().map(|r| r.status), Ok(200));
}
