//! The admin API: liveness, readiness, Prometheus metrics, target groups.
//!
//! The metrics recorder is process-wide and the tests in this file run in
//! one process, so every test uses listener and group names of its own and
//! asserts on exactly those series.

use std::time::Duration;

use switchyard_testkit::{eventually, refused_addr, FakeUpstream, TestClient};
use switchyard_tests::{metric, must_get, Cfg, Group, Urls, WAIT};

#[tokio::test]
async fn healthz_and_readyz_answer_200_once_started() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::simple(&[up.addr()]).start().await;
    let res = must_get(&lb.admin_url("/healthz")).await;
    assert_eq!((res.status, res.body.trim()), (200, "ok"));
    let res = must_get(&lb.admin_url("/readyz")).await;
    assert_eq!(res.status, 200);
    let res = must_get(&lb.admin_url("/nope")).await;
    assert_eq!(res.status, 404);
    // The admin API is not on the traffic listener and vice versa.
    assert_ne!(lb.admin_addr, lb.listen_addr());
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn metrics_count_requests_by_listener_route_group_and_class() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::new()
        .listener(
            "m-traffic",
            r#"
            - name: m-hello
              match: { path_regex: "^/(hello|status/)" }
              forward: { target_group: m-group }
            - name: m-fixed
              match: { path_prefix: /down }
              fixed_response: { status: 503, body: down }
            "#,
        )
        .group(Group::new("m-group", &[up.addr()]))
        .start()
        .await;
    // Three 2xx and one 5xx through the route, one fixed 503, one 404; each
    // on its own connection.
    for path in [
        "/hello",
        "/hello/a",
        "/hello/b",
        "/status/500",
        "/down",
        "/none",
    ] {
        must_get(&lb.url(path)).await;
    }
    let text = must_get(&lb.admin_url("/metrics")).await.body;
    let requests = |route: &str, group: &str, code: &str| {
        metric(
            &text,
            "switchyard_requests_total",
            &[
                ("listener", "m-traffic"),
                ("route", route),
                ("target_group", group),
                ("code", code),
            ],
        )
    };
    assert_eq!(requests("m-hello", "m-group", "2xx"), Some(3.0), "{text}");
    assert_eq!(requests("m-hello", "m-group", "5xx"), Some(1.0), "{text}");
    assert_eq!(requests("m-fixed", "", "5xx"), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "switchyard_requests_total",
            &[("listener", "m-traffic"), ("code", "4xx")]
        ),
        Some(1.0),
        "{text}"
    );
    let target = up.addr().to_string();
    let upstream = |code: &str| {
        metric(
            &text,
            "switchyard_upstream_requests_total",
            &[
                ("target_group", "m-group"),
                ("target", &target),
                ("code", code),
            ],
        )
    };
    assert_eq!(upstream("2xx"), Some(3.0), "{text}");
    assert_eq!(upstream("5xx"), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "switchyard_connections_total",
            &[("listener", "m-traffic")]
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_request_duration_seconds_count",
            &[
                ("listener", "m-traffic"),
                ("route", "m-hello"),
                ("target_group", "m-group")
            ]
        ),
        Some(4.0),
        "{text}"
    );
}

#[tokio::test]
async fn connection_gauge_follows_open_connections() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::new()
        .listener(
            "m-gauge",
            "- name: all\n  forward: { target_group: m-gauge-g }",
        )
        .group(Group::new("m-gauge-g", &[up.addr()]))
        .start()
        .await;
    let active = |text: &str| {
        metric(
            text,
            "switchyard_connections_active",
            &[("listener", "m-gauge")],
        )
    };
    let client = TestClient::new();
    for _ in 0..5 {
        assert_eq!(client.get(&lb.url("/")).await.unwrap().status, 200);
    }
    let text = must_get(&lb.admin_url("/metrics")).await.body;
    assert_eq!(active(&text), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "switchyard_connections_total",
            &[("listener", "m-gauge")]
        ),
        Some(1.0),
        "keep-alive: one connection for five requests"
    );
    drop(client);
    let admin = lb.admin_url("/metrics");
    eventually!(WAIT, {
        let text = must_get(&admin).await.body;
        active(&text) == Some(0.0)
    });
}

#[tokio::test]
async fn metrics_count_connect_errors_and_retries() {
    let dead = refused_addr().await;
    let lb = Cfg::new()
        .listener(
            "m-dead",
            "- name: all\n  forward: { target_group: m-dead-g }",
        )
        .group(Group::new("m-dead-g", &[dead]).with("retries: { attempts: 2, backoff: 1ms }"))
        .start()
        .await;
    assert_eq!(must_get(&lb.url("/")).await.status, 502);
    let text = must_get(&lb.admin_url("/metrics")).await.body;
    // Three tries (the first and two retries), none answered.
    assert_eq!(
        metric(
            &text,
            "switchyard_upstream_requests_total",
            &[
                ("target_group", "m-dead-g"),
                ("target", &dead.to_string()),
                ("code", "error")
            ]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_retries_total",
            &[("target_group", "m-dead-g")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_requests_total",
            &[
                ("listener", "m-dead"),
                ("target_group", "m-dead-g"),
                ("code", "5xx")
            ]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn target_groups_api_lists_groups_and_targets() {
    let (a, b) = (
        FakeUpstream::builder("a").start().await,
        FakeUpstream::builder("b").start().await,
    );
    let lb = Cfg::new()
        .listener("api", "- name: all\n  forward: { target_group: web-blue }")
        .group(Group::weighted("web-blue", &[(a.addr(), 3), (b.addr(), 1)]))
        .group(Group::new("web-green", &[b.addr()]))
        .start()
        .await;
    let res = must_get(&lb.admin_url("/api/v1/target-groups")).await;
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .is_some_and(|c| c.contains("json")));
    let json: serde_json::Value = serde_json::from_str(&res.body).unwrap();
    let groups = json["target_groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, ["web-blue", "web-green"]);
    let blue = groups[0]["targets"].as_array().unwrap();
    assert_eq!(blue.len(), 2);
    assert_eq!(blue[0]["address"], a.addr().to_string());
    assert_eq!(blue[0]["weight"], 3);
    assert_eq!(blue[1]["weight"], 1);
    for t in blue {
        // health_check: none -> healthy from the start.
        assert_eq!(t["state"], "healthy");
        assert_eq!(t["in_flight"], 0);
    }
}

#[tokio::test]
async fn in_flight_is_visible_while_a_request_runs() {
    let up = FakeUpstream::builder("up")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let lb = Cfg::simple(&[up.addr()]).start().await;
    let url = lb.url("/");
    let slow = tokio::spawn(async move { must_get(&url).await });
    let api = lb.admin_url("/api/v1/target-groups");
    eventually!(WAIT, {
        let json: serde_json::Value = serde_json::from_str(&must_get(&api).await.body).unwrap();
        json["target_groups"][0]["targets"][0]["in_flight"] == 1
    });
    assert_eq!(slow.await.unwrap().status, 200);
    let json: serde_json::Value = serde_json::from_str(&must_get(&api).await.body).unwrap();
    assert_eq!(json["target_groups"][0]["targets"][0]["in_flight"], 0);
}

#[tokio::test]
async fn an_admin_client_that_never_finishes_its_head_is_closed() {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::simple(&[up.addr()]).start().await;
    let started = tokio::time::Instant::now();
    let mut silent = switchyard_tests::RawConn::connect(lb.admin_addr).await;
    let mut partial = switchyard_tests::RawConn::connect(lb.admin_addr).await;
    partial.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    // Generous: the limit is 10s.
    let limit = switchyard_admin::ADMIN_HEADER_READ;
    for (name, conn) in [("silent", &mut silent), ("partial", &mut partial)] {
        (conn.closed_within(limit * 3).await).unwrap_or_else(|e| panic!("{name}: {e}"));
        let took = started.elapsed();
        assert!(took >= limit / 2, "{name} closed early: {took:?}");
    }
    // The admin API serves on.
    assert_eq!(must_get(&lb.admin_url("/healthz")).await.status, 200);
}

#[tokio::test]
async fn an_access_log_that_cannot_be_written_counts_its_lost_lines() {
    // /dev/full opens, and every write to it fails (ENOSPC), as a full
    // disk's would. The lines are counted, not lost without a word, and
    // requests are not held up.
    let up = FakeUpstream::builder("up").start().await;
    let yaml = Cfg::simple(&[up.addr()]).yaml().replace(
        "access_log: { enabled: false }",
        "access_log: { path: /dev/full }",
    );
    let lb = switchyard_tests::start_balancer(&yaml).await;
    for _ in 0..3 {
        assert_eq!(must_get(&lb.url("/")).await.status, 200);
    }
    let lost = || async {
        let text = must_get(&lb.admin_url("/metrics")).await.body;
        metric(&text, "switchyard_access_log_write_errors_total", &[])
    };
    eventually!(WAIT, lost().await == Some(3.0));
    lb.shutdown().await;
}
