//! `limits` on HTTP groups: `max_connections` caps open upstream
//! connections per target (requests wait for one to come free, up to
//! `timeouts.connect`), `max_pending` caps how many may wait (beyond: 503).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use switchyard_testkit::{self as kit, FakeUpstream};
use switchyard_tests::start_balancer;

fn config(upstream: std::net::SocketAddr, limits: &str, connect: &str) -> String {
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
    health_check: {{ protocol: none }}
    targets: [ {{ address: "{upstream}" }} ]
    limits: {limits}
    timeouts: {{ connect: {connect} }}
"#
    )
}

async fn burst(url: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            kit::get(&url).await.map(|r| r.status)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().expect("answer"));
    }
    out.sort_unstable();
    out
}

#[tokio::test]
async fn max_connections_queues_requests_on_the_open_connections() {
    let up = FakeUpstream::builder("up")
        .delay(Duration::from_millis(150))
        .start()
        .await;
    let lb = start_balancer(&config(up.addr(), "{ max_connections: 2 }", "5s")).await;
    let url = format!("http://{}/", lb.addr("web").unwrap());
    // Six concurrent requests, two connections: they take turns.
    let started = tokio::time::Instant::now();
    assert_eq!(burst(&url, 6).await, vec![200; 6]);
    assert!(
        up.connections() <= 2,
        "opened {} upstream connections",
        up.connections()
    );
    assert_eq!(up.requests(), 6);
    // Three rounds of 150 ms at least: they really waited for each other.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn max_pending_turns_the_overflow_away_with_503() {
    let up = FakeUpstream::builder("up")
        .delay(Duration::from_millis(400))
        .start()
        .await;
    let lb = start_balancer(&config(
        up.addr(),
        "{ max_connections: 1, max_pending: 1 }",
        "5s",
    ))
    .await;
    let url = format!("http://{}/", lb.addr("web").unwrap());
    // One on the connection, one waiting, the rest refused at once.
    let statuses = burst(&url, 4).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(up.connections(), 1);
    lb.shutdown().await;
}

#[tokio::test]
async fn waiting_longer_than_the_connect_timeout_gives_503() {
    let up = FakeUpstream::builder("up")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let lb = start_balancer(&config(up.addr(), "{ max_connections: 1 }", "200ms")).await;
    let url = format!("http://{}/", lb.addr("web").unwrap());
    let statuses = burst(&url, 2).await;
    assert_eq!(statuses, vec![200, 503]);
    lb.shutdown().await;
}
