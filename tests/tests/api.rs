//! The runtime target API: `POST /api/v1/target-groups/{group}/targets`
//! (201 / 409 / 404 / 400) and `DELETE .../targets/{address}` (202 / 404),
//! and how API changes live with YAML reloads: API-added targets stay until
//! deleted through the API; a YAML target deleted through the API stays out
//! while the YAML still lists it, until registered again.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard::Running;
use switchyard_testkit::{FakeUpstream, TestClient};
use switchyard_tests::live::{
    counts, deregister, register, reload_ok, tally, target, wait_state, ConfigFile,
};
use switchyard_tests::{Cfg, Group, Urls, WAIT};

async fn upstream(name: &str) -> FakeUpstream {
    FakeUpstream::builder(name).start().await
}

/// Listener `web` -> group `g` with `targets`; `checks` is the group's
/// `health_check` (flow YAML) or `None` for none. `note` lands in a
/// comment, to make a file with the same config but a new version.
fn config(targets: &[SocketAddr], checks: Option<&str>, note: &str) -> String {
    let mut g = Group::new("g", targets);
    if let Some(c) = checks {
        g = g.health_check(c);
    }
    let yaml = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(g)
        .yaml();
    format!("# {note}\n{yaml}")
}

fn body(address: SocketAddr, weight: u32) -> String {
    format!(r#"{{"address": "{address}", "weight": {weight}}}"#)
}

/// The addresses group `g` lists, in the admin API's order.
async fn listed(lb: &Running) -> Vec<String> {
    let (status, v) = switchyard_tests::live::admin(lb, "GET", "/api/v1/target-groups", "").await;
    assert_eq!(status, 200);
    v["target_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["name"] == "g")
        .flat_map(|g| g["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["address"].as_str().map(str::to_owned))
        .collect()
}

async fn gone(lb: &Running, address: SocketAddr) -> bool {
    target(lb, "g", &address.to_string()).await.is_none()
}

#[tokio::test]
async fn a_registered_target_starts_initial_is_checked_and_then_gets_traffic() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    // Slow checks so that `initial` lasts: a hanging check fails only at
    // its 800ms timeout, and two failures are needed for `unhealthy`.
    let checks = "{ path: /health, interval: 1s, timeout: 800ms, healthy_threshold: 2, unhealthy_threshold: 2 }";
    let file = ConfigFile::new("register", &config(&[a.addr()], Some(checks), "v1"));
    let lb = file.start().await;
    wait_state(&lb, "g", &a.addr().to_string(), "healthy", WAIT).await;

    b.set_hang_health(true);
    let (status, v) = register(&lb, "g", &body(b.addr(), 1)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["state"], "initial", "{v}");
    let t = target(&lb, "g", &b.addr().to_string())
        .await
        .expect("listed");
    assert_eq!(
        (t["state"].as_str(), t["weight"].as_u64()),
        (Some("initial"), Some(1)),
        "{t}"
    );
    // Not checked yet: no traffic (a is healthy, so fail_open does not apply).
    let client = TestClient::new();
    assert_eq!(tally(&client, &lb.url("/"), 10).await, counts(&[("a", 10)]));
    assert_eq!(b.requests(), 0);
    assert!(b.health_requests() >= 1, "the new target is not checked");

    b.set_hang_health(false);
    wait_state(
        &lb,
        "g",
        &b.addr().to_string(),
        "healthy",
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(
        tally(&client, &lb.url("/"), 10).await,
        counts(&[("a", 5), ("b", 5)])
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn register_answers_409_404_and_400_and_changes_nothing_when_refused() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let file = ConfigFile::new("register-codes", &config(&[a.addr()], None, "v1"));
    let lb = file.start().await;

    // Present in the YAML, then present through the API.
    let (status, v) = register(&lb, "g", &body(a.addr(), 1)).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(register(&lb, "g", &body(b.addr(), 2)).await.0, 201);
    let (status, v) = register(&lb, "g", &body(b.addr(), 2)).await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains(&b.addr().to_string())),
        "{v}"
    );

    let (status, v) = register(&lb, "nope", &body(b.addr(), 1)).await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{v}"
    );

    let free = "127.0.0.1:9";
    let bad_bodies = [
        ("not JSON", "address=127.0.0.1:9".to_owned()),
        ("empty", String::new()),
        ("missing address", r#"{"weight": 1}"#.to_owned()),
        (
            "address without port",
            r#"{"address": "127.0.0.1"}"#.to_owned(),
        ),
        (
            "address with scheme",
            r#"{"address": "http://127.0.0.1:9"}"#.to_owned(),
        ),
        ("address not a string", r#"{"address": 9}"#.to_owned()),
        (
            "weight 0",
            format!(r#"{{"address": "{free}", "weight": 0}}"#),
        ),
        (
            "weight 1001",
            format!(r#"{{"address": "{free}", "weight": 1001}}"#),
        ),
        (
            "negative weight",
            format!(r#"{{"address": "{free}", "weight": -1}}"#),
        ),
        (
            "unknown field",
            format!(r#"{{"address": "{free}", "wieght": 1}}"#),
        ),
    ];
    for (case, text) in &bad_bodies {
        let (status, v) = register(&lb, "g", text).await;
        assert_eq!(status, 400, "{case}: {v}");
        assert!(v["error"].is_string(), "{case}: {v}");
    }
    // Only the one good registration took.
    assert_eq!(
        listed(&lb).await,
        [a.addr().to_string(), b.addr().to_string()]
    );
    let t = target(&lb, "g", &b.addr().to_string()).await.unwrap();
    assert_eq!(
        (t["state"].as_str(), t["weight"].as_u64()),
        (Some("healthy"), Some(2)),
        "{t}"
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn deregister_answers_202_with_raw_or_percent_encoded_addresses_and_404_otherwise() {
    let (a, b, c) = (
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
    );
    let file = ConfigFile::new("deregister-codes", &config(&[a.addr()], None, "v1"));
    let lb = file.start().await;
    assert_eq!(register(&lb, "g", &body(b.addr(), 1)).await.0, 201);
    assert_eq!(register(&lb, "g", &body(c.addr(), 1)).await.0, 201);
    let client = TestClient::new();
    assert_eq!(
        tally(&client, &lb.url("/"), 9).await,
        counts(&[("a", 3), ("b", 3), ("c", 3)])
    );

    let encoded = format!("127.0.0.1%3A{}", b.addr().port());
    let (status, v) = deregister(&lb, "g", &encoded).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["state"], "draining", "{v}");
    let (status, v) = deregister(&lb, "g", &c.addr().to_string()).await;
    assert_eq!(status, 202, "{v}");
    // Nothing in flight: both are forgotten at once, not after 30s.
    switchyard_testkit::eventually!(WAIT, gone(&lb, b.addr()).await && gone(&lb, c.addr()).await);
    assert_eq!(tally(&client, &lb.url("/"), 6).await, counts(&[("a", 6)]));
    // Forgotten targets are in no state any more, not stuck at `draining`.
    let text = switchyard_tests::must_get(&lb.admin_url("/metrics"))
        .await
        .body;
    for gone_target in [b.addr(), c.addr()] {
        let label = gone_target.to_string();
        for state in ["initial", "healthy", "unhealthy", "draining"] {
            let v = switchyard_tests::metric(
                &text,
                "switchyard_target_state",
                &[("target_group", "g"), ("target", &label), ("state", state)],
            );
            assert_eq!(v, Some(0.0), "{label} {state}");
        }
    }

    for (case, group, address) in [
        ("already deleted", "g", encoded.clone()),
        ("never registered", "g", "127.0.0.1:9".to_owned()),
        ("not an address", "g", "nonsense".to_owned()),
        ("unknown group", "nope", a.addr().to_string()),
    ] {
        let (status, v) = deregister(&lb, group, &address).await;
        assert_eq!(status, 404, "{case}: {v}");
        assert!(v["error"].is_string(), "{case}: {v}");
    }
    assert_eq!(listed(&lb).await, [a.addr().to_string()]);
    lb.shutdown().await;
}

#[tokio::test]
async fn api_added_targets_survive_reloads_until_deleted_through_the_api() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let file = ConfigFile::new("api-survives", &config(&[a.addr()], None, "v1"));
    let lb = file.start().await;
    assert_eq!(register(&lb, "g", &body(b.addr(), 1)).await.0, 201);
    let client = TestClient::new();
    let url = lb.url("/");
    assert_eq!(
        tally(&client, &url, 10).await,
        counts(&[("a", 5), ("b", 5)])
    );

    for note in ["v2", "v3"] {
        // The YAML never lists b.
        file.overwrite(&config(&[a.addr()], None, note));
        reload_ok(&lb).await;
        assert_eq!(
            listed(&lb).await,
            [a.addr().to_string(), b.addr().to_string()],
            "{note}"
        );
        assert_eq!(
            tally(&client, &url, 10).await,
            counts(&[("a", 5), ("b", 5)]),
            "{note}"
        );
    }
    // Kept across the reloads, with its pooled connection.
    assert_eq!(b.connections(), 1);

    assert_eq!(deregister(&lb, "g", &b.addr().to_string()).await.0, 202);
    switchyard_testkit::eventually!(WAIT, gone(&lb, b.addr()).await);
    file.overwrite(&config(&[a.addr()], None, "v4"));
    reload_ok(&lb).await;
    assert_eq!(listed(&lb).await, [a.addr().to_string()]);
    let before = b.requests();
    assert_eq!(tally(&client, &url, 10).await, counts(&[("a", 10)]));
    assert_eq!(b.requests(), before);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_yaml_target_deleted_through_the_api_stays_out_across_reloads_until_registered_again() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let both = [a.addr(), b.addr()];
    let file = ConfigFile::new("api-removed", &config(&both, None, "v1"));
    let lb = file.start().await;
    let client = TestClient::new();
    let url = lb.url("/");

    assert_eq!(deregister(&lb, "g", &b.addr().to_string()).await.0, 202);
    switchyard_testkit::eventually!(WAIT, gone(&lb, b.addr()).await);
    let before = b.requests();
    for note in ["v2", "v3"] {
        // The YAML still lists b: our documented rule keeps it out.
        file.overwrite(&config(&both, None, note));
        reload_ok(&lb).await;
        assert_eq!(listed(&lb).await, [a.addr().to_string()], "{note}");
        assert_eq!(
            tally(&client, &url, 10).await,
            counts(&[("a", 10)]),
            "{note}"
        );
    }
    assert_eq!(b.requests(), before);

    // Registered again: back, and it stays across the next reload. The
    // YAML lists it, so the YAML's weight (1) stands, and the answer says
    // so rather than echoing the 3 asked for.
    let (status, v) = register(&lb, "g", &body(b.addr(), 3)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["weight"], 1, "{v}");
    assert_eq!(
        tally(&client, &url, 10).await,
        counts(&[("a", 5), ("b", 5)])
    );
    file.overwrite(&config(&both, None, "v4"));
    reload_ok(&lb).await;
    assert_eq!(
        tally(&client, &url, 10).await,
        counts(&[("a", 5), ("b", 5)])
    );
    lb.shutdown().await;
}
