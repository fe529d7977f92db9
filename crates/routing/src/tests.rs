//! Snapshot-level tests: picking with target states, failover, fail_open,
//! identity across compiles. Configs are written as YAML and go through
//! the real config crate, as in production.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::{PickInput, Snapshot, TargetState};

fn compile(yaml: &str, prev: Option<&Snapshot>) -> Snapshot {
    let loaded = switchyard_config::parse_str(yaml, "test.yaml", Path::new(".")).unwrap();
    Snapshot::compile(loaded.config, prev).unwrap()
}

const GROUPS: &str = r#"
admin: { bind: "127.0.0.1:0" }
target_groups:
  - name: a
    targets:
      - { address: "127.0.0.1:1001", weight: 3 }
      - { address: "127.0.0.1:1002" }
  - name: b
    targets: [ { address: "127.0.0.1:2001" } ]
"#;

fn picks(s: &Snapshot, group: usize, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        if let Some((_, t)) = s.pick(group, PickInput::default(), &[]) {
            *out.entry(t.label().to_owned()).or_default() += 1;
        }
    }
    out
}

fn set_all(s: &Snapshot, group: usize, state: TargetState) {
    for t in &s.groups[group].targets {
        t.set_state(state);
    }
}

#[test]
fn round_robin_honours_target_weights_exactly() {
    let s = compile(GROUPS, None);
    set_all(&s, 0, TargetState::Healthy);
    let p = picks(&s, 0, 400);
    assert_eq!(p["127.0.0.1:1001"], 300);
    assert_eq!(p["127.0.0.1:1002"], 100);
}

#[test]
fn only_healthy_targets_get_traffic_when_any_is_healthy() {
    let s = compile(GROUPS, None);
    set_all(&s, 0, TargetState::Unhealthy);
    s.groups[0].targets[1].set_state(TargetState::Healthy);
    let p = picks(&s, 0, 50);
    assert_eq!(p.get("127.0.0.1:1002"), Some(&50));
}

#[test]
fn fail_open_uses_all_but_draining() {
    let s = compile(GROUPS, None);
    // Targets start `initial`: no healthy one, fail_open (default true).
    let p = picks(&s, 0, 40);
    assert_eq!(p.values().sum::<usize>(), 40);
    s.groups[0].targets[0].set_state(TargetState::Draining);
    let p = picks(&s, 0, 40);
    assert_eq!(p.get("127.0.0.1:1002"), Some(&40));
    set_all(&s, 0, TargetState::Draining);
    assert!(s.pick(0, PickInput::default(), &[]).is_none());
}

#[test]
fn fail_closed_gives_none() {
    let yaml = GROUPS.replace("  - name: b\n", "  - name: b\n    fail_open: false\n");
    let s = compile(&yaml, None);
    assert!(s.pick(1, PickInput::default(), &[]).is_none());
    assert!(!s.has_usable(1));
    set_all(&s, 1, TargetState::Healthy);
    assert!(s.pick(1, PickInput::default(), &[]).is_some());
}

#[test]
fn failover_wins_over_fail_open() {
    let yaml = GROUPS.replace("  - name: a\n", "  - name: a\n    failover: b\n");
    let s = compile(&yaml, None);
    set_all(&s, 1, TargetState::Healthy);
    let (g, t) = s.pick(0, PickInput::default(), &[]).unwrap();
    assert_eq!((g, t.label()), (1, "127.0.0.1:2001"));
    // Back on its own group as soon as one of its targets is healthy.
    s.groups[0].targets[0].set_state(TargetState::Healthy);
    assert_eq!(s.pick(0, PickInput::default(), &[]).unwrap().0, 0);
}

#[test]
fn avoid_list_moves_retries_to_another_target() {
    let s = compile(GROUPS, None);
    set_all(&s, 0, TargetState::Healthy);
    for _ in 0..10 {
        let (_, first) = s.pick(0, PickInput::default(), &[]).unwrap();
        let (_, second) = s
            .pick(0, PickInput::default(), &[Arc::clone(&first)])
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
    }
    // With one target, a retry reuses it rather than failing.
    set_all(&s, 1, TargetState::Healthy);
    let (_, only) = s.pick(1, PickInput::default(), &[]).unwrap();
    assert!(s.pick(1, PickInput::default(), &[only]).is_some());
}

#[test]
fn targets_keep_identity_and_state_across_compiles() {
    let s1 = compile(GROUPS, None);
    s1.groups[0].targets[1].set_state(TargetState::Unhealthy);
    let changed = GROUPS.replace("\"127.0.0.1:1002\" }", "\"127.0.0.1:1002\", weight: 7 }");
    let s2 = compile(&changed, Some(&s1));
    let (old, new) = (&s1.groups[0].targets[1], &s2.groups[0].targets[1]);
    assert!(Arc::ptr_eq(old, new));
    assert_eq!(new.state(), TargetState::Unhealthy);
    assert_eq!(new.weight(), 7);
    // A target only in the new config is new and starts `initial`.
    let added = GROUPS.replace(
        "[ { address: \"127.0.0.1:2001\" } ]",
        "[ { address: \"127.0.0.1:2001\" }, { address: \"127.0.0.1:2002\" } ]",
    );
    let s3 = compile(&added, Some(&s2));
    assert_eq!(s3.groups[1].targets[1].state(), TargetState::Initial);
}

#[test]
fn health_check_none_targets_start_healthy() {
    let yaml = GROUPS.replace(
        "  - name: b\n",
        "  - name: b\n    health_check: { protocol: none }\n",
    );
    let s = compile(&yaml, None);
    assert_eq!(s.groups[1].targets[0].state(), TargetState::Healthy);
    assert_eq!(s.groups[0].targets[0].state(), TargetState::Initial);
}

fn hashed_group(n: usize) -> String {
    let targets: Vec<String> = (0..n)
        .map(|i| format!("{{ address: \"127.0.0.1:{}\" }}", 3000 + i))
        .collect();
    format!(
        "admin: {{ bind: \"127.0.0.1:0\" }}\ntarget_groups:\n  - name: h\n    balance: consistent_hash\n    hash_on: header:x-user\n    health_check: {{ protocol: none }}\n    targets: [ {} ]\n",
        targets.join(", ")
    )
}

fn owner(s: &Snapshot, user: &str) -> String {
    let mut h = HeaderMap::new();
    h.insert("x-user", HeaderValue::from_str(user).unwrap());
    let input = PickInput {
        headers: Some(&h),
        client_ip: None,
    };
    s.pick(0, input, &[]).unwrap().1.label().to_owned()
}

#[test]
fn consistent_hash_is_stable_and_moves_about_one_nth() {
    let s10 = compile(&hashed_group(10), None);
    let users: Vec<String> = (0..5000).map(|i| format!("user-{i}")).collect();
    let before: Vec<String> = users.iter().map(|u| owner(&s10, u)).collect();
    // Same key, same target, every time.
    assert!(users.iter().zip(&before).all(|(u, o)| owner(&s10, u) == *o));
    let s11 = compile(&hashed_group(11), None);
    let moved = users
        .iter()
        .zip(&before)
        .filter(|(u, o)| owner(&s11, u) != **o)
        .count();
    assert!(
        (300..=800).contains(&moved),
        "moved {moved} of 5000 (ideal ~455)"
    );
    // An unhealthy owner's keys go elsewhere; the others stay put.
    let victim = before[0].clone();
    s10.groups[0]
        .target(&victim)
        .unwrap()
        .set_state(TargetState::Unhealthy);
    assert_ne!(owner(&s10, &users[0]), victim);
    let unaffected = users
        .iter()
        .zip(&before)
        .filter(|(_, o)| **o != victim)
        .all(|(u, o)| owner(&s10, u) == *o);
    assert!(unaffected);
}

#[test]
fn least_request_prefers_the_idle_target() {
    let yaml = GROUPS.replace("  - name: a\n", "  - name: a\n    balance: least_request\n");
    let s = compile(&yaml, None);
    set_all(&s, 0, TargetState::Healthy);
    let busy = &s.groups[0].targets[0];
    let _held: Vec<_> = (0..50).map(|_| busy.begin()).collect();
    let p = picks(&s, 0, 200);
    // The idle target wins every comparison it takes part in.
    assert!(p.get("127.0.0.1:1002").copied().unwrap_or(0) > 100, "{p:?}");
}

#[test]
fn random_spreads_by_weight() {
    let yaml = GROUPS.replace("  - name: a\n", "  - name: a\n    balance: random\n");
    let s = compile(&yaml, None);
    set_all(&s, 0, TargetState::Healthy);
    let p = picks(&s, 0, 4000);
    let heavy = p["127.0.0.1:1001"];
    assert!((2700..=3300).contains(&heavy), "{p:?}");
}

#[test]
fn a_retry_does_not_take_a_round_robin_turn() {
    let yaml = r#"
admin: { bind: "127.0.0.1:0" }
target_groups:
  - name: two
    targets: [ { address: "127.0.0.1:3001" }, { address: "127.0.0.1:3002" } ]
"#;
    let s = compile(yaml, None);
    set_all(&s, 0, TargetState::Healthy);
    // 3001 refuses every connection (no health checks to notice): each
    // request that picks it first retries on the other target.
    let mut dead_first = 0;
    for _ in 0..10 {
        let Some((_, first)) = s.pick(0, PickInput::default(), &[]) else {
            panic!("no pick");
        };
        if first.label() == "127.0.0.1:3001" {
            dead_first += 1;
            let retry = s.pick(0, PickInput::default(), &[Arc::clone(&first)]);
            assert_eq!(
                retry.map(|(_, t)| t.label().to_owned()).as_deref(),
                Some("127.0.0.1:3002")
            );
        }
    }
    // Round robin still alternates; with the retry taking a turn too, all
    // ten requests tried the dead target first.
    assert_eq!(dead_first, 5);
}

/// A group `g` of targets 127.0.0.1:4001.. with the given weights.
fn weighted_group(weights: &[u32]) -> Snapshot {
    let targets: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{ address: \"127.0.0.1:{}\", weight: {w} }}", 4001 + i))
        .collect();
    compile(
        &format!(
            "admin: {{ bind: \"127.0.0.1:0\" }}\ntarget_groups:\n  - name: g\n    targets: [ {} ]\n",
            targets.join(", ")
        ),
        None,
    )
}

/// Picks per target, in target order.
fn shares(s: &Snapshot, n: usize) -> Vec<usize> {
    let p = picks(s, 0, n);
    (0..s.groups[0].targets.len())
        .map(|i| {
            p.get(&format!("127.0.0.1:{}", 4001 + i))
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

#[test]
fn fail_open_spreads_by_weight_when_no_target_is_healthy() {
    // Every target unhealthy: the healthy pass finds none and must not
    // take a turn, or with two targets one of them would get everything.
    let s = weighted_group(&[1, 1]);
    set_all(&s, 0, TargetState::Unhealthy);
    assert_eq!(shares(&s, 12), [6, 6]);
    let s = weighted_group(&[1, 1, 1, 3]);
    set_all(&s, 0, TargetState::Unhealthy);
    assert_eq!(shares(&s, 12), [2, 2, 2, 6]);
}

#[test]
fn an_unhealthy_targets_turn_is_shared_not_handed_to_its_neighbour() {
    let s = weighted_group(&[1, 1, 1, 1]);
    set_all(&s, 0, TargetState::Healthy);
    s.groups[0].targets[1].set_state(TargetState::Unhealthy);
    assert_eq!(shares(&s, 12), [4, 0, 4, 4]);
    // With weights 2:1:1:3, the second target's turns go around: 2:1:3.
    let s = weighted_group(&[2, 1, 1, 3]);
    set_all(&s, 0, TargetState::Healthy);
    s.groups[0].targets[1].set_state(TargetState::Unhealthy);
    assert_eq!(shares(&s, 60), [20, 0, 10, 30]);
}

#[test]
fn the_shipped_edge_routing_example_reaches_every_route() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/edge-routing.yaml");
    let loaded = switchyard_config::load_file(&path).unwrap();
    let s = Snapshot::compile(loaded.config, None).unwrap();
    let table = &s.listeners[0];
    let headers = HeaderMap::new();
    let route = |host: &str, path: &str| {
        let info = crate::RequestInfo {
            host: Some(host),
            path,
            method: &http::Method::GET,
            headers: &headers,
        };
        table.route(&info).map(|r| r.name.to_string())
    };
    // First match wins: each specific route is listed before the wildcard
    // that would otherwise take its requests.
    assert_eq!(
        route("admin.example.com", "/").as_deref(),
        Some("admin-to-https")
    );
    assert_eq!(
        route("api.example.com", "/v1/x").as_deref(),
        Some("api-v1-moved")
    );
    assert_eq!(route("api.example.com", "/v2/x").as_deref(), Some("api"));
    assert_eq!(
        route("t1.example.com", "/status").as_deref(),
        Some("status")
    );
    assert_eq!(route("www.example.com", "/").as_deref(), Some("www"));
    assert_eq!(route("t1.example.com", "/x").as_deref(), Some("tenants"));
    assert_eq!(route("example.org", "/x"), None);
}
