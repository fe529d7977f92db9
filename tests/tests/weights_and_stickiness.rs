//! Weighted splits between groups (exact), target balancing inside a group,
//! and group stickiness by cookie.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use switchyard::Running;
use switchyard_testkit::{eventually, get, FakeUpstream, TestClient};
use switchyard_tests::{Cfg, Group, Urls, WAIT};

async fn upstream(name: &str) -> FakeUpstream {
    FakeUpstream::builder(name).start().await
}

/// Sends `n` GETs over one keep-alive client and counts the answers by body.
async fn tally(client: &TestClient, url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let res = client
            .get(url)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(res.status, 200, "request {i}: {}", res.body);
        *seen.entry(res.body).or_insert(0) += 1;
    }
    seen
}

fn split(blue: u32, green: u32, extra: &str) -> String {
    format!(
        "- name: split\n  forward:\n    target_groups:\n      - {{ name: blue, weight: {blue} }}\n      - {{ name: green, weight: {green} }}\n{extra}"
    )
}

async fn blue_green(routes: &str) -> (Running, FakeUpstream, FakeUpstream) {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let lb = Cfg::new()
        .listener("web", routes)
        .group(Group::new("blue", &[blue.addr()]))
        .group(Group::new("green", &[green.addr()]))
        .start()
        .await;
    (lb, blue, green)
}

#[tokio::test]
async fn canary_95_5_gets_exactly_5_of_every_100() {
    let (lb, blue, green) = blue_green(&split(95, 5, "")).await;
    let client = TestClient::new();
    let seen = tally(&client, &lb.url("/"), 100).await;
    assert_eq!(seen.get("green"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("blue"), Some(&95), "{seen:?}");
    // And again for the next hundred: the split does not drift.
    let seen = tally(&client, &lb.url("/"), 100).await;
    assert_eq!(seen.get("green"), Some(&5), "{seen:?}");
    assert_eq!((blue.requests(), green.requests()), (190, 10));
}

#[tokio::test]
async fn split_90_10_over_1000_is_exactly_100() {
    let (lb, blue, green) = blue_green(&split(90, 10, "")).await;
    let client = TestClient::new();
    let seen = tally(&client, &lb.url("/"), 1000).await;
    assert_eq!(seen.get("green"), Some(&100), "{seen:?}");
    assert_eq!((blue.requests(), green.requests()), (900, 100));
}

#[tokio::test]
async fn smooth_split_spreads_the_canary_out() {
    // Smooth weighted round robin: 1 in 4 green means never two greens in
    // a row and never more than three blues in a row.
    let (lb, _blue, _green) = blue_green(&split(3, 1, "")).await;
    let client = TestClient::new();
    let mut order = String::new();
    for _ in 0..40 {
        let res = client.get(&lb.url("/")).await.unwrap();
        order.push(if res.body == "green" { 'g' } else { 'b' });
    }
    assert_eq!(order.matches('g').count(), 10, "{order}");
    assert!(!order.contains("gg"), "{order}");
    assert!(!order.contains("bbbb"), "{order}");
}

#[tokio::test]
async fn weight_zero_group_gets_nothing() {
    let (lb, blue, green) = blue_green(&split(0, 7, "")).await;
    let client = TestClient::new();
    let seen = tally(&client, &lb.url("/"), 30).await;
    assert_eq!(seen.get("green"), Some(&30), "{seen:?}");
    assert_eq!(blue.requests(), 0);
    assert_eq!(green.requests(), 30);
}

#[tokio::test]
async fn round_robin_honours_target_weights() {
    let (a, b, c) = (
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
    );
    let lb = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .listener("equal", "- name: all\n  forward: { target_group: eq }")
        .group(Group::weighted("g", &[(a.addr(), 3), (b.addr(), 1)]))
        .group(Group::new("eq", &[c.addr(), b.addr()]))
        .start()
        .await;
    let client = TestClient::new();
    let seen = tally(&client, &lb.url("/"), 40).await;
    assert_eq!(seen.get("a"), Some(&30), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
    // Equal weights alternate strictly.
    let mut last = String::new();
    for i in 0..10 {
        let res = client.get(&lb.url_on("equal", "/")).await.unwrap();
        assert_ne!(res.body, last, "request {i} went to the same target twice");
        last = res.body;
    }
    assert_eq!(c.requests(), 5);
}

#[tokio::test]
async fn least_request_avoids_the_busy_target() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let lb = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(Group::new("g", &[a.addr(), b.addr()]).with("balance: least_request"))
        .start()
        .await;
    // One slow request occupies one of the two targets...
    let slow_url = lb.url("/sleep/3000");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    eventually!(WAIT, a.requests() + b.requests() == 1);
    let (busy, idle) = if a.requests() == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // ... so every other request goes to the idle one.
    let client = TestClient::new();
    let seen = tally(&client, &lb.url("/"), 20).await;
    assert_eq!(seen.get(idle.name()), Some(&20), "{seen:?}");
    assert_eq!(busy.requests(), 1);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (200, busy.name()));
}

#[tokio::test]
async fn consistent_hash_keeps_each_key_on_one_target() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let lb = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(
            Group::new("g", &[a.addr(), b.addr()])
                .with("balance: consistent_hash\nhash_on: header:x-user"),
        )
        .start()
        .await;
    let client = TestClient::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..3 {
        for user in 0..30 {
            let id = format!("user-{user}");
            let res = client
                .get_with(&lb.url("/"), &[("x-user", &id)])
                .await
                .unwrap();
            assert_eq!(res.status, 200);
            let target = first.entry(id.clone()).or_insert(res.body.clone());
            assert_eq!(*target, res.body, "{id} moved in round {round}");
        }
    }
    let used: BTreeSet<&String> = first.values().collect();
    assert_eq!(used.len(), 2, "30 keys should spread over both targets");
    assert_eq!(a.requests() + b.requests(), 90);
}

#[tokio::test]
async fn consistent_hash_on_client_ip_and_cookie() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let lb = Cfg::new()
        .listener("ip", "- name: all\n  forward: { target_group: by-ip }")
        .listener(
            "cookie",
            "- name: all\n  forward: { target_group: by-cookie }",
        )
        .group(
            Group::new("by-ip", &[a.addr(), b.addr()])
                .with("balance: consistent_hash\nhash_on: client_ip"),
        )
        .group(
            Group::new("by-cookie", &[a.addr(), b.addr()])
                .with("balance: consistent_hash\nhash_on: cookie:session"),
        )
        .start()
        .await;
    let client = TestClient::new();
    // Every request comes from 127.0.0.1: one target takes them all.
    let seen = tally(&client, &lb.url_on("ip", "/"), 20).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..2 {
        for s in 0..20 {
            let cookie = format!("theme=dark; session=s{s}");
            let res = client
                .get_with(&lb.url_on("cookie", "/"), &[("cookie", &cookie)])
                .await
                .unwrap();
            let target = first.entry(cookie.clone()).or_insert(res.body.clone());
            assert_eq!(*target, res.body, "{cookie} moved in round {round}");
        }
    }
    let used: BTreeSet<&String> = first.values().collect();
    assert_eq!(used.len(), 2);
}

#[tokio::test]
async fn random_balance_uses_every_target() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let lb = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(Group::new("g", &[a.addr(), b.addr()]).with("balance: random"))
        .start()
        .await;
    let client = TestClient::new();
    tally(&client, &lb.url("/"), 100).await;
    // The chance that 100 fair draws all land on one side is 2^-99.
    assert!(a.requests() > 0 && b.requests() > 0);
    assert_eq!(a.requests() + b.requests(), 100);
}

#[tokio::test]
async fn target_stickiness_keeps_a_client_on_one_target() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let lb = Cfg::new()
        .listener("web", "- name: all\n  forward: { target_group: g }")
        .group(
            Group::new("g", &[a.addr(), b.addr()])
                .with("stickiness: { cookie: SWYD, duration: 1h }"),
        )
        .start()
        .await;
    let client = TestClient::new();
    let url = lb.url("/");
    let first = client.get(&url).await.unwrap();
    let cookie =
        set_cookie(&first, "SWYD").unwrap_or_else(|| panic!("no SWYD cookie: {:?}", first.headers));
    for i in 0..10 {
        let res = client.get_with(&url, &[("cookie", &cookie)]).await.unwrap();
        assert_eq!(res.body, first.body, "request {i} left the sticky target");
    }
    let (mine, other) = if first.body == "a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!((mine.requests(), other.requests()), (11, 0));
    // Without the cookie, round robin as usual.
    let seen = tally(&client, &url, 4).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// The `name=value` part of the `Set-Cookie` for `cookie`, if any.
fn set_cookie(res: &switchyard_testkit::TestResponse, cookie: &str) -> Option<String> {
    res.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{cookie}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn sticky_cookie_keeps_a_client_on_its_group() {
    let sticky = "    stickiness: { duration: 1h }";
    let (lb, blue, green) = blue_green(&split(1, 1, sticky)).await;
    let client = TestClient::new();
    let url = lb.url("/");
    // Without the cookie, 50/50 alternates.
    let seen = tally(&client, &url, 4).await;
    assert_eq!((seen.get("blue"), seen.get("green")), (Some(&2), Some(&2)));

    let first = client.get(&url).await.unwrap();
    let full = first.header("set-cookie").unwrap().to_owned();
    assert!(full.contains("Max-Age=3600"), "{full}");
    let cookie = set_cookie(&first, "SWYG").unwrap_or_else(|| panic!("no SWYG cookie: {full}"));
    for i in 0..10 {
        let res = client
            .get_with(&url, &[("cookie", &format!("other=1; {cookie}"))])
            .await
            .unwrap();
        assert_eq!(res.body, first.body, "request {i} left the sticky group");
        assert!(res.header("set-cookie").is_none(), "honoured cookie re-set");
    }
    let (mine, other) = if first.body == "blue" {
        (&blue, &green)
    } else {
        (&green, &blue)
    };
    assert_eq!((mine.requests(), other.requests()), (13, 2));
}

#[tokio::test]
async fn sticky_cookie_name_is_configurable() {
    let sticky = "    stickiness: { duration: 90s, cookie: CANARY }";
    let (lb, _blue, _green) = blue_green(&split(1, 1, sticky)).await;
    let res = get(&lb.url("/")).await.unwrap();
    let cookie = set_cookie(&res, "CANARY").unwrap_or_else(|| panic!("{:?}", res.headers));
    assert!(set_cookie(&res, "SWYG").is_none());
    let again = switchyard_testkit::get_with(&lb.url("/"), &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(again.body, res.body);
}

#[tokio::test]
async fn sticky_cookie_for_a_group_weighted_zero_or_absent_is_repicked() {
    let (blue, green, purple) = (
        upstream("blue").await,
        upstream("green").await,
        upstream("purple").await,
    );
    let sticky = "    stickiness: { duration: 1h }";
    let lb = Cfg::new()
        .listener("both", &split(1, 1, sticky))
        .listener("blue-off", &split(0, 1, sticky))
        .listener(
            "no-blue",
            &format!(
                "- name: split\n  forward:\n    target_groups: [ {{ name: purple, weight: 1 }} ]\n{sticky}"
            ),
        )
        .group(Group::new("blue", &[blue.addr()]))
        .group(Group::new("green", &[green.addr()]))
        .group(Group::new("purple", &[purple.addr()]))
        .start()
        .await;
    let client = TestClient::new();
    // A cookie that names blue, from the listener where blue takes traffic.
    let mut blue_cookie = None;
    for _ in 0..4 {
        let res = client.get(&lb.url_on("both", "/")).await.unwrap();
        if res.body == "blue" {
            blue_cookie = set_cookie(&res, "SWYG");
            break;
        }
    }
    let blue_cookie = blue_cookie.unwrap();
    let honoured = client
        .get_with(&lb.url_on("both", "/"), &[("cookie", &blue_cookie)])
        .await
        .unwrap();
    assert_eq!(honoured.body, "blue");

    // Where blue is weighted 0 the client is re-picked and re-cookied...
    let res = client
        .get_with(&lb.url_on("blue-off", "/"), &[("cookie", &blue_cookie)])
        .await
        .unwrap();
    assert_eq!(res.body, "green");
    let green_cookie = set_cookie(&res, "SWYG").expect("cookie re-set");
    assert_ne!(green_cookie, blue_cookie);
    // ... and the new cookie holds where both groups take traffic.
    for _ in 0..4 {
        let res = client
            .get_with(&lb.url_on("both", "/"), &[("cookie", &green_cookie)])
            .await
            .unwrap();
        assert_eq!(res.body, "green");
    }
    // Where blue is not part of the split at all, the same.
    let res = client
        .get_with(&lb.url_on("no-blue", "/"), &[("cookie", &blue_cookie)])
        .await
        .unwrap();
    assert_eq!(res.body, "purple");
    assert!(set_cookie(&res, "SWYG").is_some_and(|c| c != blue_cookie));
}

#[tokio::test]
async fn a_client_stuck_to_a_group_that_cannot_serve_is_repicked_among_those_that_can() {
    let blue = upstream("blue").await;
    let refused = switchyard_testkit::refused_addr().await;
    let sticky = "    stickiness: { duration: 1h }";
    // green: no healthy target (its only one refuses) and no fail_open.
    let lb = Cfg::new()
        .listener("web", &split(1, 1, sticky))
        .group(Group::new("blue", &[blue.addr()]))
        .group(
            Group::new("green", &[refused])
                .health_check("{ protocol: tcp, interval: 1s, timeout: 500ms }")
                .with("fail_open: false"),
        )
        .start()
        .await;
    let client = TestClient::new();
    for i in 0..6 {
        let res = client
            .get_with(&lb.url("/"), &[("cookie", "SWYG=green:9999999999")])
            .await
            .unwrap();
        assert_eq!(
            (res.status, res.body.as_str()),
            (200, "blue"),
            "request {i}"
        );
        let cookie = set_cookie(&res, "SWYG").unwrap_or_default();
        assert!(cookie.starts_with("SWYG=blue:"), "request {i}: {cookie:?}");
    }
}

#[tokio::test]
async fn expired_sticky_cookie_is_repicked() {
    let sticky = "    stickiness: { duration: 1s }";
    let (lb, _blue, _green) = blue_green(&split(1, 1, sticky)).await;
    let client = TestClient::new();
    let url = lb.url("/");
    let first = client.get(&url).await.unwrap();
    let cookie = set_cookie(&first, "SWYG").unwrap();
    let fresh = client.get_with(&url, &[("cookie", &cookie)]).await.unwrap();
    assert!(fresh.header("set-cookie").is_none());
    // The cookie's lifetime is whole seconds: wait it out.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let stale = client.get_with(&url, &[("cookie", &cookie)]).await.unwrap();
    let renewed = set_cookie(&stale, "SWYG").expect("an expired cookie is replaced");
    assert_ne!(renewed, cookie);
}
