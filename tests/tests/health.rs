//! Active health checks, readiness, fail_open / failover, outlier
//! ejection and slow start, against fake upstreams whose health can be
//! switched. Timing bounds follow INTERFACE.md (interval x threshold +
//! timeout) with generous slack for a shared 2-core machine; the measured
//! times are printed (`cargo test -- --nocapture` shows them).

// Test helpers: a panic is how a failed expectation is reported.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use switchyard::Running;
use switchyard_testkit::{self as kit, eventually, FakeUpstream};
use switchyard_tests::start_balancer;
use tokio::time::Instant;

/// Slack on top of the contract's bound, for a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

fn url(r: &Running, path: &str) -> String {
    format!("http://{}{path}", r.addr("web").expect("listener web"))
}

fn admin(r: &Running, path: &str) -> String {
    format!("http://{}{path}", r.admin_addr)
}

/// One listener `web` forwarding everything to group `g`, whose targets
/// and extra keys are given. Checks every 200ms unless `group_extra`
/// overrides `health_check`.
fn config(targets: &[SocketAddr], group_extra: &str, more_groups: &str) -> String {
    let t: Vec<String> = targets
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!(
        r#"admin: {{ bind: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
listeners:
  - name: web
    bind: "127.0.0.1:0"
    routes:
      - name: all
        forward: {{ target_group: g }}
target_groups:
  - name: g
    targets: [ {} ]
{group_extra}
{more_groups}"#,
        t.join(", ")
    )
}

const FAST_CHECKS: &str = "    health_check: { path: /health, interval: 200ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }";

/// The state the admin API reports for `target`.
async fn state_of(r: &Running, target: SocketAddr) -> (String, Option<String>, serde_json::Value) {
    let body = kit::get(&admin(r, "/api/v1/target-groups"))
        .await
        .expect("admin")
        .body;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    for g in v["target_groups"].as_array().into_iter().flatten() {
        for t in g["targets"].as_array().into_iter().flatten() {
            if t["address"] == target.to_string() {
                return (
                    t["state"].as_str().unwrap_or("").to_owned(),
                    t["reason"].as_str().map(str::to_owned),
                    t["last_check"].clone(),
                );
            }
        }
    }
    panic!("target {target} not in {body}");
}

async fn wait_state(r: &Running, target: SocketAddr, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if state_of(r, target).await.0 == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{target} not {want} within {within:?}: {:?}",
        state_of(r, target).await
    );
}

async fn wait_ready(r: &Running) {
    eventually!(
        Duration::from_secs(10),
        async { kit::get(&admin(r, "/readyz")).await.map(|x| x.status) == Ok(200) }.await
    );
}

/// Sends `n` GETs and counts answers by `x-upstream`.
async fn spread(r: &Running, n: usize) -> std::collections::HashMap<String, usize> {
    let mut out = std::collections::HashMap::new();
    for _ in 0..n {
        let resp = kit::get(&url(r, "/")).await.expect("request");
        let who = resp.header("x-upstream").unwrap_or("-").to_owned();
        *out.entry(format!("{}:{}", resp.status, who)).or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn ejection_and_readmission_happen_within_the_contract_bounds() {
    let a = FakeUpstream::builder("a").start().await;
    let b = FakeUpstream::builder("b").start().await;
    let r = start_balancer(&config(&[a.addr(), b.addr()], FAST_CHECKS, "")).await;
    wait_ready(&r).await;
    wait_state(&r, a.addr(), "healthy", Duration::from_secs(5)).await;

    a.set_healthy(false);
    // interval x unhealthy_threshold + timeout = 200ms x 2 + 100ms.
    let bound = Duration::from_millis(500) + SLACK;
    let took = wait_state(&r, a.addr(), "unhealthy", bound).await;
    println!("ejection took {took:?} (contract bound 500ms + slack)");
    let (_, reason, last) = state_of(&r, a.addr()).await;
    assert_eq!(reason.as_deref(), Some("health_check"));
    assert_eq!(last["result"], "fail");
    assert_eq!(last["detail"], "503");

    // While a is unhealthy, every request goes to b.
    let before = a.requests();
    let seen = spread(&r, 20).await;
    assert_eq!(seen.get("200:b"), Some(&20), "{seen:?}");
    assert_eq!(a.requests(), before);

    a.set_healthy(true);
    // interval x healthy_threshold = 200ms x 2.
    let took = wait_state(&r, a.addr(), "healthy", Duration::from_millis(400) + SLACK).await;
    println!("readmission took {took:?} (contract bound 400ms + slack)");
    let seen = spread(&r, 20).await;
    assert_eq!(seen.get("200:a"), Some(&10), "round robin again: {seen:?}");
    r.shutdown().await;
}

#[tokio::test]
async fn a_hanging_health_endpoint_is_a_failure() {
    let a = FakeUpstream::builder("a").start().await;
    let r = start_balancer(&config(&[a.addr()], FAST_CHECKS, "")).await;
    wait_state(&r, a.addr(), "healthy", Duration::from_secs(5)).await;
    a.set_hang_health(true);
    wait_state(
        &r,
        a.addr(),
        "unhealthy",
        Duration::from_millis(500) + SLACK,
    )
    .await;
    let (_, _, last) = state_of(&r, a.addr()).await;
    assert_eq!(last["result"], "timeout", "{last}");
    r.shutdown().await;
}

#[tokio::test]
async fn tcp_checks_follow_an_upstream_that_stops_and_starts() {
    let a = FakeUpstream::builder("a").start().await;
    let tcp = "    health_check: { protocol: tcp, interval: 200ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }";
    let r = start_balancer(&config(&[a.addr()], tcp, "")).await;
    wait_state(&r, a.addr(), "healthy", Duration::from_secs(5)).await;
    a.stop().await;
    wait_state(
        &r,
        a.addr(),
        "unhealthy",
        Duration::from_millis(500) + SLACK,
    )
    .await;
    a.restart().await;
    wait_state(&r, a.addr(), "healthy", Duration::from_millis(400) + SLACK).await;
    // TCP checks never send HTTP.
    assert_eq!(a.health_requests(), 0);
    r.shutdown().await;
}

#[tokio::test]
async fn readyz_waits_for_the_first_round_and_a_failing_target_gets_no_traffic() {
    let good = FakeUpstream::builder("good").start().await;
    let bad = FakeUpstream::builder("bad").start().await;
    bad.set_healthy(false);
    let slow_first = "    health_check: { path: /health, interval: 1s, timeout: 800ms, healthy_threshold: 2, unhealthy_threshold: 2 }";
    good.set_hang_health(true);
    let r = start_balancer(&config(&[good.addr(), bad.addr()], slow_first, "")).await;
    // good's first check hangs: not ready until it times out.
    let readyz = kit::get(&admin(&r, "/readyz")).await.expect("readyz");
    assert_eq!(readyz.status, 503, "{}", readyz.body);
    good.set_hang_health(false);
    wait_ready(&r).await;
    wait_state(&r, good.addr(), "healthy", Duration::from_secs(10)).await;
    let before = bad.requests();
    let seen = spread(&r, 30).await;
    assert_eq!(seen.get("200:good"), Some(&30), "{seen:?}");
    assert_eq!(
        bad.requests(),
        before,
        "a target that never passed got traffic"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn no_healthy_target_fail_open_serves_fail_closed_503_failover_elsewhere() {
    let a = FakeUpstream::builder("a").start().await;
    a.set_healthy(false);
    let spare = FakeUpstream::builder("spare").start().await;

    // fail_open (default true): unhealthy targets still serve.
    let r = start_balancer(&config(&[a.addr()], FAST_CHECKS, "")).await;
    wait_state(&r, a.addr(), "unhealthy", Duration::from_secs(5)).await;
    assert_eq!(spread(&r, 5).await.get("200:a"), Some(&5));
    r.shutdown().await;

    // fail_open: false: 503 with a clear body.
    let closed = format!("{FAST_CHECKS}\n    fail_open: false");
    let r = start_balancer(&config(&[a.addr()], &closed, "")).await;
    wait_state(&r, a.addr(), "unhealthy", Duration::from_secs(5)).await;
    let resp = kit::get(&url(&r, "/")).await.expect("request");
    assert_eq!(resp.status, 503);
    assert!(resp.body.contains("no healthy target"), "{}", resp.body);
    r.shutdown().await;

    // failover wins over fail_open.
    let with_failover = format!("{FAST_CHECKS}\n    failover: spare");
    let spare_group = format!(
        "  - name: spare\n    health_check: {{ protocol: none }}\n    targets: [ {{ address: \"{}\" }} ]\n",
        spare.addr()
    );
    let r = start_balancer(&config(&[a.addr()], &with_failover, &spare_group)).await;
    wait_state(&r, a.addr(), "unhealthy", Duration::from_secs(5)).await;
    assert_eq!(spread(&r, 5).await.get("200:spare"), Some(&5));
    // And back when a recovers.
    a.set_healthy(true);
    wait_state(&r, a.addr(), "healthy", Duration::from_secs(5)).await;
    assert_eq!(spread(&r, 5).await.get("200:a"), Some(&5));
    r.shutdown().await;
}

#[tokio::test]
async fn outlier_detection_ejects_a_target_that_fails_real_traffic() {
    let sick = FakeUpstream::builder("sick").status(500).start().await;
    let ok = FakeUpstream::builder("ok").start().await;
    let extra = format!(
        "{FAST_CHECKS}\n    outlier_detection: {{ consecutive_failures: 3, ejection: 30s, max_ejected_percent: 50 }}"
    );
    let r = start_balancer(&config(&[sick.addr(), ok.addr()], &extra, "")).await;
    wait_state(&r, sick.addr(), "healthy", Duration::from_secs(5)).await;
    wait_state(&r, ok.addr(), "healthy", Duration::from_secs(5)).await;
    // Round robin: sick answers every other request until its third 500.
    let seen = spread(&r, 6).await;
    assert_eq!(seen.get("500:sick"), Some(&3), "{seen:?}");
    let (state, reason, last) = state_of(&r, sick.addr()).await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("unhealthy", Some("outlier"))
    );
    // Its health endpoint still says 200: ejection holds anyway.
    assert_eq!(last["result"], "pass");
    let seen = spread(&r, 20).await;
    assert_eq!(seen.get("200:ok"), Some(&20), "{seen:?}");
    let metrics = kit::get(&admin(&r, "/metrics"))
        .await
        .expect("metrics")
        .body;
    assert!(
        metrics.contains("switchyard_ejections_total{target_group=\"g\",reason=\"outlier\"} 1"),
        "{metrics}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn outlier_ejection_ends_and_respects_max_ejected_percent() {
    let a = FakeUpstream::builder("a").status(502).start().await;
    let b = FakeUpstream::builder("b").status(502).start().await;
    let extra = format!(
        "{FAST_CHECKS}\n    outlier_detection: {{ consecutive_failures: 2, ejection: 2s, max_ejected_percent: 50 }}"
    );
    let r = start_balancer(&config(&[a.addr(), b.addr()], &extra, "")).await;
    wait_state(&r, a.addr(), "healthy", Duration::from_secs(5)).await;
    wait_state(&r, b.addr(), "healthy", Duration::from_secs(5)).await;
    spread(&r, 8).await;
    // Both failed enough, but only half the group may be ejected.
    let ejected = [a.addr(), b.addr()];
    let mut reasons = Vec::new();
    for t in ejected {
        reasons.push(state_of(&r, t).await.1);
    }
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.as_deref() == Some("outlier"))
            .count(),
        1,
        "{reasons:?}"
    );
    // After the ejection time the target is back (its checks pass).
    let victim = if reasons[0].is_some() {
        a.addr()
    } else {
        b.addr()
    };
    let took = wait_state(&r, victim, "healthy", Duration::from_secs(2) + SLACK).await;
    println!("ejection of 2s ended after {took:?}");
    r.shutdown().await;
}

#[tokio::test]
async fn slow_start_ramps_a_newly_healthy_target() {
    let old = FakeUpstream::builder("old").start().await;
    let new = FakeUpstream::builder("new").start().await;
    new.set_healthy(false);
    let extra = format!("{FAST_CHECKS}\n    slow_start: 4s");
    let r = start_balancer(&config(&[old.addr(), new.addr()], &extra, "")).await;
    wait_state(&r, new.addr(), "unhealthy", Duration::from_secs(5)).await;
    // Let old's own ramp (it became healthy at startup) finish.
    tokio::time::sleep(Duration::from_secs(4)).await;
    new.set_healthy(true);
    wait_state(&r, new.addr(), "healthy", Duration::from_secs(5)).await;
    let early = spread(&r, 100).await;
    let early_new = early.get("200:new").copied().unwrap_or(0);
    println!("first 100 requests after readmission: {early:?}");
    // Ramp starts at ~10%: far below the 50% an equal target gets.
    assert!((1..=35).contains(&early_new), "{early:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = spread(&r, 100).await;
    let later_new = later.get("200:new").copied().unwrap_or(0);
    println!("100 requests after the ramp: {later:?}");
    assert!((40..=60).contains(&later_new), "{later:?}");
    r.shutdown().await;
}

#[tokio::test]
async fn health_metrics_are_exported() {
    let a = FakeUpstream::builder("a").start().await;
    let r = start_balancer(&config(&[a.addr()], FAST_CHECKS, "")).await;
    wait_state(&r, a.addr(), "healthy", Duration::from_secs(5)).await;
    let m = kit::get(&admin(&r, "/metrics"))
        .await
        .expect("metrics")
        .body;
    let t = a.addr().to_string();
    for line in [
        format!("switchyard_target_state{{target_group=\"g\",target=\"{t}\",state=\"healthy\"}} 1"),
        format!("switchyard_target_state{{target_group=\"g\",target=\"{t}\",state=\"initial\"}} 0"),
    ] {
        assert!(m.contains(&line), "missing {line} in\n{m}");
    }
    assert!(
        m.contains(&format!(
            "switchyard_health_checks_total{{target_group=\"g\",target=\"{t}\",result=\"pass\"}}"
        )),
        "{m}"
    );
    r.shutdown().await;
}

/// A target that speaks h2c only (as gRPC servers and NGINX's cleartext
/// `http2` listeners do), answering `/health` with the status in `status`
/// and recording each check's `:authority`.
async fn h2_only_target(
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    authorities: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (status, authorities) = (status.clone(), authorities.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let code = status.load(std::sync::atomic::Ordering::SeqCst);
                    if let Some(a) = req.uri().authority() {
                        authorities
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(a.to_string());
                    }
                    async move {
                        let mut resp = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from("h2"),
                        ));
                        *resp.status_mut() = hyper::StatusCode::from_u16(code).expect("a status");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn checks_of_an_http2_group_speak_h2c_to_targets_that_speak_nothing_else() {
    let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
    let authorities = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = h2_only_target(status.clone(), authorities.clone()).await;
    let extra = format!("    protocol: http2\n{FAST_CHECKS}");
    let r = start_balancer(&config(&[a], &extra, "")).await;
    wait_state(&r, a, "healthy", Duration::from_secs(5)).await;
    let res = kit::get(&url(&r, "/")).await.expect("request");
    assert_eq!((res.status, res.body.as_str()), (200, "h2"));
    status.store(503, std::sync::atomic::Ordering::SeqCst);
    wait_state(&r, a, "unhealthy", Duration::from_millis(500) + SLACK).await;
    let (_, _, last) = state_of(&r, a).await;
    assert_eq!(last["detail"], "503", "{last}");
    status.store(200, std::sync::atomic::Ordering::SeqCst);
    wait_state(&r, a, "healthy", Duration::from_millis(400) + SLACK).await;
    // The check's Host (by default the target's address) is its authority.
    let seen = authorities
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(seen.iter().any(|x| *x == a.to_string()), "{seen:?}");
    r.shutdown().await;
}

#[tokio::test]
async fn readyz_stays_200_for_a_target_added_after_start_however_late_it_is_first_asked() {
    let a = FakeUpstream::builder("a").start().await;
    let b = FakeUpstream::builder("b").start().await;
    // Group `slow` gives a hanging check 5 s before it counts as answered:
    // time enough for the question below, however slow the machine.
    let slow = format!(
        "  - name: slow\n    targets: [ {{ address: \"{}\" }} ]\n    health_check: {{ path: /health, interval: 10s, timeout: 5s }}\n",
        b.addr()
    );
    let r = start_balancer(&config(&[a.addr()], FAST_CHECKS, &slow)).await;
    // Started and checked, but /readyz not asked yet.
    wait_state(&r, a.addr(), "healthy", Duration::from_secs(5)).await;
    wait_state(&r, b.addr(), "healthy", Duration::from_secs(5)).await;
    // A target whose checks hang joins through the API.
    let late = FakeUpstream::builder("late")
        .hang_health(true)
        .start()
        .await;
    let res = kit::request(
        "POST",
        &admin(&r, "/api/v1/target-groups/slow/targets"),
        &[("content-type", "application/json")],
        format!("{{\"address\": \"{}\"}}", late.addr()),
    )
    .await
    .expect("register");
    assert_eq!(res.status, 201, "{}", res.body);
    let readyz = kit::get(&admin(&r, "/readyz")).await.expect("readyz");
    assert_eq!(readyz.status, 200, "{}", readyz.body);
    r.shutdown().await;
}
