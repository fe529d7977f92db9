//! Zero failed requests under churn: several keep-alive clients send GETs
//! for several seconds while the config is reloaded again and again, a
//! target is removed from the YAML (and later added back), and one upstream
//! is killed abruptly and restarted. Every single request must get 200.
//!
//! This is the promise of the live-configuration work: an operator changes
//! canary weights, adds and removes targets, loses a machine, and no
//! client ever sees an error. Retries (on connect failures, resets, 502 and
//! 503) and fast health checks are what make it hold.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard::Running;
use switchyard_testkit::{eventually, FakeUpstream, TestClient};
use switchyard_tests::live::{reload_ok, state, wait_ready, ConfigFile};
use switchyard_tests::{metric, must_get, Cfg, Group, Urls};
use tokio::time::Instant;

const CLIENTS: usize = 6;
/// Bounds on each client's loop: requests and time.
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;
const MAX_RUN: Duration = Duration::from_secs(20);

const CHECKS: &str = "{ path: /health, interval: 200ms, timeout: 150ms, healthy_threshold: 2, unhealthy_threshold: 2 }";
const RETRIES: &str =
    "retries: { attempts: 2, backoff: 10ms, on: [connect_failure, reset, 502, 503] }";

fn config(blue: &[SocketAddr], green: &[SocketAddr], wb: u32, wg: u32) -> String {
    let group = |name: &str, targets: &[SocketAddr]| {
        Group::new(name, targets)
            .health_check(CHECKS)
            .with(RETRIES)
            .with("deregistration_delay: 5s")
    };
    Cfg::new()
        .listener(
            "web",
            &format!(
                "- name: split\n  forward:\n    target_groups:\n      - {{ name: blue, weight: {wb} }}\n      - {{ name: green, weight: {wg} }}"
            ),
        )
        .group(group("blue", blue))
        .group(group("green", green))
        .yaml()
}

/// One request that did not get 200: which, when, and what came back.
#[derive(Debug)]
struct Failure {
    client: usize,
    request: usize,
    at: Duration,
    outcome: String,
}

/// What the test did and when, to line failures up against.
struct Timeline {
    started: Instant,
    events: Vec<String>,
}

impl Timeline {
    fn note(&mut self, what: impl std::fmt::Display) {
        let line = format!("{:>7.3}s  {what}", self.started.elapsed().as_secs_f64());
        println!("{line}");
        self.events.push(line);
    }
}

/// Sends GETs over one keep-alive connection until `stop` (or its bounds);
/// returns (requests sent, failures).
async fn client(
    id: usize,
    url: String,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<Failure>) {
    let client = TestClient::new().with_timeout(Duration::from_secs(10));
    let mut failures = Vec::new();
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed)
        && sent < MAX_REQUESTS_PER_CLIENT
        && started.elapsed() < MAX_RUN
    {
        // Half the clients ask for slow answers, so that requests are in
        // flight at every reload, removal and kill.
        let path = if id % 2 == 1 {
            format!("{url}/sleep/20?c{id}r{sent}")
        } else {
            format!("{url}/c{id}/r{sent}")
        };
        let outcome = match client.get(&path).await {
            Ok(r) if r.status == 200 => None,
            Ok(r) => Some(format!(
                "status {} from {:?}: {:?}",
                r.status,
                r.header("x-upstream"),
                r.body
            )),
            Err(e) => Some(format!("error: {e}")),
        };
        if let Some(outcome) = outcome {
            failures.push(Failure {
                client: id,
                request: sent,
                at: started.elapsed(),
                outcome,
            });
        }
        sent += 1;
    }
    (sent, failures)
}

async fn reload_to(lb: &Running, file: &ConfigFile, text: &str) {
    file.overwrite(text);
    reload_ok(lb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_failed_requests_under_churn() {
    let mut ups = Vec::new();
    for name in ["blue-1", "blue-2", "green-1", "green-2"] {
        ups.push(FakeUpstream::builder(name).start().await);
    }
    let [b1, b2, g1, g2] = [0, 1, 2, 3].map(|i| ups[i].addr());
    let file = ConfigFile::new("churn", &config(&[b1, b2], &[g1, g2], 90, 10));
    let lb = file.start().await;
    wait_ready(&lb).await;
    for (group, addr) in [("blue", b1), ("blue", b2), ("green", g1), ("green", g2)] {
        let a = addr.to_string();
        eventually!(
            Duration::from_secs(5),
            state(&lb, group, &a).await.as_deref() == Some("healthy")
        );
    }

    let started = Instant::now();
    let mut timeline = Timeline {
        started,
        events: Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                format!("http://{}", lb.listen_addr()),
                started,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    timeline.note("clients started; blue 90 / green 10");

    // Traffic flowing during each step is the point of the pauses.
    pause(300).await;
    reload_to(&lb, &file, &config(&[b1, b2], &[g1, g2], 50, 50)).await;
    timeline.note("reloaded: 50 / 50");
    pause(400).await;
    reload_to(&lb, &file, &config(&[b1, b2], &[g1, g2], 10, 90)).await;
    timeline.note("reloaded: 10 / 90");
    pause(400).await;
    reload_to(&lb, &file, &config(&[b1, b2], &[g1], 20, 80)).await;
    timeline.note("reloaded: green-2 removed from the YAML; 20 / 80");
    pause(400).await;
    reload_to(&lb, &file, &config(&[b1, b2], &[g1], 70, 30)).await;
    timeline.note("reloaded: 70 / 30");
    pause(200).await;
    ups[0].stop().await;
    timeline.note("blue-1 killed");
    pause(300).await;
    reload_to(&lb, &file, &config(&[b1, b2], &[g1], 60, 40)).await;
    timeline.note("reloaded while blue-1 is down: 60 / 40");
    pause(700).await;
    ups[0].restart().await;
    timeline.note("blue-1 restarted");
    let at_restart = ups[0].requests();
    eventually!(
        Duration::from_secs(5),
        state(&lb, "blue", &b1.to_string()).await.as_deref() == Some("healthy")
    );
    timeline.note("blue-1 healthy again");
    reload_to(&lb, &file, &config(&[b1, b2], &[g1, g2], 50, 50)).await;
    timeline.note("reloaded: green-2 back; 50 / 50");
    pause(600).await;
    let b1_after_restart = ups[0].requests() - at_restart;
    reload_to(&lb, &file, &config(&[b1, b2], &[g1, g2], 0, 100)).await;
    timeline.note("reloaded: 0 / 100");
    pause(400).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut failures = Vec::new();
    for c in clients {
        let (sent, failed) = c.await.unwrap();
        total += sent;
        failures.extend(failed);
    }
    timeline.note(format!("clients stopped: {total} requests"));
    let per_upstream: Vec<_> = ups
        .iter()
        .map(|u| (u.name().to_owned(), u.requests()))
        .collect();
    let metrics = must_get(&lb.admin_url("/metrics")).await.body;
    let retries = ["blue", "green"].map(|g| {
        let n = metric(&metrics, "switchyard_retries_total", &[("target_group", g)]);
        (g, n.unwrap_or(0.0))
    });
    println!(
        "{total} requests from {CLIENTS} clients; upstreams {per_upstream:?}; retries {retries:?}"
    );

    assert!(
        failures.is_empty(),
        "{} of {total} requests failed (the first 50):\n{}\ntimeline:\n{}",
        failures.len(),
        failures
            .iter()
            .take(50)
            .map(|f| format!(
                "  {:>7.3}s client {} request {}: {}",
                f.at.as_secs_f64(),
                f.client,
                f.request,
                f.outcome
            ))
            .collect::<Vec<_>>()
            .join("\n"),
        timeline.events.join("\n")
    );
    // Enough traffic to mean something, through every phase.
    assert!(total >= 300, "only {total} requests");
    assert!(b1_after_restart > 0, "blue-1 got nothing after its restart");
    lb.shutdown().await;
}
