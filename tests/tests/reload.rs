//! Hot reload of the config file: by the file watcher (rewrite in place,
//! write-and-rename, Kubernetes ConfigMap symlink swap) and by
//! `POST /api/v1/reload`. All or nothing: a broken file keeps the old
//! config serving and reports file:line:col. Targets kept across a reload
//! keep their health state and pooled connections; listeners come and go.
//!
//! Each balancer runs from its own `test.yaml` in a fresh temp directory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard::Running;
use switchyard_config::version_of;
use switchyard_testkit::{eventually, get, FakeUpstream, TestClient};
use switchyard_tests::live::{
    config_status, counts, reload, reload_ok, start_file, state, tally, target, wait_state,
    ConfigFile, TempDir, FILE_NAME, WATCH_WAIT,
};
use switchyard_tests::{metric, must_get, raw_get, Cfg, Group, RawConn, Urls, WAIT};
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn upstream(name: &str) -> FakeUpstream {
    FakeUpstream::builder(name).start().await
}

/// Listener `web`: everything split between groups blue and green.
fn blue_green(blue: &FakeUpstream, green: &FakeUpstream, wb: u32, wg: u32) -> Cfg {
    Cfg::new()
        .listener(
            "web",
            &format!(
                "- name: split\n  forward:\n    target_groups:\n      - {{ name: blue, weight: {wb} }}\n      - {{ name: green, weight: {wg} }}"
            ),
        )
        .group(Group::new("blue", &[blue.addr()]))
        .group(Group::new("green", &[green.addr()]))
}

/// The answer to one GET comes from upstream `name`.
async fn answered_by(client: &TestClient, url: &str, name: &str) -> bool {
    client
        .get(url)
        .await
        .is_ok_and(|r| r.status == 200 && r.header("x-upstream") == Some(name))
}

async fn assert_version(lb: &Running, text: &str) {
    let status = config_status(lb).await;
    assert_eq!(status["version"], version_of(text.as_bytes()), "{status}");
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");
}

#[tokio::test]
async fn the_watcher_moves_weights_on_a_renamed_file_and_on_an_in_place_rewrite() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let to_blue = blue_green(&blue, &green, 100, 0).yaml();
    let to_green = blue_green(&blue, &green, 0, 100).yaml();
    let file = ConfigFile::new("watch", &to_blue);
    let lb = file.start().await;
    let (client, url) = (TestClient::new(), lb.url("/"));
    assert_eq!(tally(&client, &url, 10).await, counts(&[("blue", 10)]));

    // An editor's save: write a temporary file, rename it over.
    file.replace(&to_green);
    let started = Instant::now();
    eventually!(WATCH_WAIT, answered_by(&client, &url, "green").await);
    println!("rename seen after {:?}", started.elapsed());
    assert_eq!(tally(&client, &url, 20).await, counts(&[("green", 20)]));
    assert_version(&lb, &to_green).await;

    // In place: same inode, same length; only the content and mtime change.
    assert_eq!(to_blue.len(), to_green.len());
    file.overwrite(&to_blue);
    let started = Instant::now();
    eventually!(WATCH_WAIT, answered_by(&client, &url, "blue").await);
    println!("in-place rewrite seen after {:?}", started.elapsed());
    assert_eq!(tally(&client, &url, 20).await, counts(&[("blue", 20)]));
    assert_version(&lb, &to_blue).await;
    lb.shutdown().await;
}

#[tokio::test]
async fn post_reload_moves_weights_at_once_and_reports_the_new_version() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let to_blue = blue_green(&blue, &green, 100, 0).yaml();
    let to_green = blue_green(&blue, &green, 0, 100).yaml();
    let file = ConfigFile::new("api", &to_blue);
    let lb = file.start().await;
    let v0 = config_status(&lb).await["version"].clone();
    assert_eq!(v0, version_of(to_blue.as_bytes()));
    let (client, url) = (TestClient::new(), lb.url("/"));
    assert_eq!(tally(&client, &url, 10).await, counts(&[("blue", 10)]));

    file.overwrite(&to_green);
    let v1 = reload_ok(&lb).await;
    assert_ne!(v0, v1.as_str());
    assert_eq!(v1, version_of(to_green.as_bytes()));
    // The reload is in force when the answer comes: no waiting.
    assert_eq!(tally(&client, &url, 20).await, counts(&[("green", 20)]));

    file.overwrite(&to_blue);
    let v2 = reload_ok(&lb).await;
    assert_eq!(v2, v0);
    assert_eq!(tally(&client, &url, 20).await, counts(&[("blue", 20)]));
    assert_eq!((blue.requests(), green.requests()), (30, 20));
    lb.shutdown().await;
}

/// `(line, column)` out of `"{path}:L:C: message"`.
fn position(error: &str, path: &str) -> (usize, usize) {
    let rest = error
        .strip_prefix(&format!("{path}:"))
        .unwrap_or_else(|| panic!("error does not start with {path}: {error:?}"));
    let mut parts = rest.splitn(3, ':');
    let mut number = || {
        parts
            .next()
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no line:column after the path in {error:?}"))
    };
    (number(), number())
}

async fn reload_errors(lb: &Running) -> f64 {
    let text = must_get(&lb.admin_url("/metrics")).await.body;
    metric(
        &text,
        "switchyard_config_reloads_total",
        &[("result", "error")],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_config_serving_and_reports_file_line_column() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let to_blue = blue_green(&blue, &green, 100, 0).yaml();
    let to_green = blue_green(&blue, &green, 0, 100).yaml();
    let file = ConfigFile::new("broken", &to_blue);
    let lb = file.start().await;
    let path = file.path().display().to_string();
    // Before any reload, the load at start is the last one.
    let status = config_status(&lb).await;
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");
    assert!(status["last_reload"]["at"].is_string(), "{status}");
    let v0 = status["version"].clone();
    let (client, url) = (TestClient::new(), lb.url("/"));
    let errors_before = reload_errors(&lb).await;

    // A YAML syntax error (an unclosed flow sequence), and a semantic one:
    // the split names a group that does not exist.
    let syntax = format!("{to_green}  - name: oops\n    targets: [ {{ address: \"x:1\" }}\n");
    let unknown = to_green.replace("name: green, weight", "name: nope, weight");
    let unknown_line = unknown
        .lines()
        .position(|l| l.contains("nope"))
        .map(|i| i + 1)
        .unwrap();
    for (case, text) in [("syntax", &syntax), ("unknown group", &unknown)] {
        file.overwrite(text);
        let (status, body) = reload(&lb).await;
        assert_eq!(status, 400, "{case}: {body}");
        assert_eq!(body["result"], "error", "{case}: {body}");
        let error = body["error"].as_str().unwrap().to_owned();
        assert!(error.contains(FILE_NAME), "{case}: {error}");
        let (line, column) = position(&error, &path);
        println!("{case}: {error}");
        assert!(line > 0 && column > 0, "{case}: {error}");
        if case == "unknown group" {
            assert_eq!(line, unknown_line, "{error}");
            assert!(error.contains("\"nope\""), "{error}");
            assert!(error.contains("unknown target group"), "{error}");
        }
        // Exactly as before: every request still goes to blue.
        assert_eq!(
            tally(&client, &url, 10).await,
            counts(&[("blue", 10)]),
            "{case}"
        );
        let status = config_status(&lb).await;
        assert_eq!(status["version"], v0, "{case}: {status}");
        assert_eq!(status["last_reload"]["result"], "error", "{case}: {status}");
        assert_eq!(status["last_reload"]["error"], error, "{case}: {status}");
    }
    assert_eq!(green.requests(), 0);
    // The watcher may have tried the broken files too: at least ours count.
    let errors_after = reload_errors(&lb).await;
    assert!(
        errors_after >= errors_before + 2.0,
        "{errors_before} -> {errors_after}"
    );

    file.overwrite(&to_green);
    assert_eq!(reload_ok(&lb).await, version_of(to_green.as_bytes()));
    assert_eq!(tally(&client, &url, 10).await, counts(&[("green", 10)]));
    let status = config_status(&lb).await;
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");
    assert!(status["last_reload"]["error"].is_null(), "{status}");
    lb.shutdown().await;
}

#[tokio::test]
async fn the_watcher_clears_the_error_when_a_broken_file_is_put_back() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let good = blue_green(&blue, &green, 100, 0).yaml();
    let file = ConfigFile::new("revert", &good);
    let lb = file.start().await;
    let broken = good.replace("name: green, weight", "name: nope, weight");
    file.overwrite(&broken);
    eventually!(
        WATCH_WAIT,
        config_status(&lb).await["last_reload"]["result"] == "error"
    );
    // An operator undoing the bad edit: the file is the running config
    // again, and the status must stop reporting the edit's error.
    file.overwrite(&good);
    eventually!(
        WATCH_WAIT,
        config_status(&lb).await["last_reload"]["result"] == "ok"
    );
    assert_version(&lb, &good).await;
    let client = TestClient::new();
    assert_eq!(
        tally(&client, &lb.url("/"), 10).await,
        counts(&[("blue", 10)])
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_reloaded() {
    use std::os::unix::fs::symlink;
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    // The kubelet's layout: config.yaml -> ..data/config.yaml,
    // ..data -> ..<timestamp>, swapped by renaming a new symlink over it.
    let dir = TempDir::new("configmap");
    let d = dir.path();
    let to_blue = blue_green(&blue, &green, 100, 0).yaml();
    std::fs::create_dir(d.join("..2026_a")).unwrap();
    std::fs::write(d.join("..2026_a/config.yaml"), &to_blue).unwrap();
    symlink("..2026_a", d.join("..data")).unwrap();
    symlink("..data/config.yaml", d.join("config.yaml")).unwrap();
    let lb = start_file(&d.join("config.yaml")).await;
    let (client, url) = (TestClient::new(), lb.url("/"));
    assert_eq!(tally(&client, &url, 10).await, counts(&[("blue", 10)]));

    let to_green = blue_green(&blue, &green, 0, 100).yaml();
    std::fs::create_dir(d.join("..2026_b")).unwrap();
    std::fs::write(d.join("..2026_b/config.yaml"), &to_green).unwrap();
    symlink("..2026_b", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_a")).unwrap();

    let started = Instant::now();
    eventually!(WATCH_WAIT, answered_by(&client, &url, "green").await);
    println!("symlink swap seen after {:?}", started.elapsed());
    assert_eq!(tally(&client, &url, 20).await, counts(&[("green", 20)]));
    assert_version(&lb, &to_green).await;
    lb.shutdown().await;
}

const FAST_CHECKS: &str =
    "{ path: /health, interval: 200ms, timeout: 150ms, healthy_threshold: 2, unhealthy_threshold: 2 }";

/// Group `g` (health-checked: good, bad) behind route `main`; group
/// `other` (weight `w`) behind route `route` on `/other/`.
fn checked(
    good: &FakeUpstream,
    bad: &FakeUpstream,
    other: SocketAddr,
    route: &str,
    w: u32,
) -> String {
    Cfg::new()
        .listener(
            "web",
            &format!(
                "- name: {route}\n  match: {{ path_prefix: /other/ }}\n  forward: {{ target_group: other }}\n- name: main\n  forward: {{ target_group: g }}"
            ),
        )
        .group(Group::new("g", &[good.addr(), bad.addr()]).health_check(FAST_CHECKS))
        .group(Group::weighted("other", &[(other, w)]))
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_target_gets_not_one_request_across_reloads() {
    let good = upstream("good").await;
    let bad = upstream("bad").await;
    let other = upstream("other").await;
    bad.set_healthy(false);
    let file = ConfigFile::new("unhealthy", &checked(&good, &bad, other.addr(), "o-0", 1));
    let lb = file.start().await;
    let (good_addr, bad_addr) = (good.addr().to_string(), bad.addr().to_string());
    wait_state(&lb, "g", &bad_addr, "unhealthy", WAIT).await;
    wait_state(&lb, "g", &good_addr, "healthy", WAIT).await;

    // Requests to g all the time, across every reload.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (Arc::clone(&stop), lb.url("/"));
        tokio::spawn(async move {
            let client = TestClient::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) && answers.len() < 5000 && Instant::now() < deadline
            {
                let r = client.get(&url).await;
                answers
                    .push(r.map(|r| (r.status, r.header("x-upstream").unwrap_or("-").to_owned())));
            }
            answers
        })
    };
    for i in 1..=5 {
        // Another group's weight and another route's name change.
        file.overwrite(&checked(
            &good,
            &bad,
            other.addr(),
            &format!("o-{i}"),
            i + 1,
        ));
        reload_ok(&lb).await;
        let t = target(&lb, "g", &bad_addr).await.unwrap();
        assert_eq!(t["state"], "unhealthy", "right after reload {i}: {t}");
        assert_eq!(t["reason"], "health_check", "right after reload {i}: {t}");
        assert_eq!(bad.requests(), 0, "after reload {i}");
        let o = target(&lb, "other", &other.addr().to_string())
            .await
            .unwrap();
        assert_eq!(o["weight"], i + 1);
        // Let requests flow on this config before the next reload.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.unwrap();
    let wrong: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| !matches!(a, Ok((200, who)) if who == "good"))
        .collect();
    assert!(wrong.is_empty(), "of {}: {wrong:?}", answers.len());
    assert!(answers.len() >= 20, "too little traffic: {}", answers.len());
    println!(
        "{} requests across 5 reloads, none to the unhealthy target",
        answers.len()
    );
    assert_eq!(bad.requests(), 0);
    assert_eq!(
        state(&lb, "g", &bad_addr).await.as_deref(),
        Some("unhealthy")
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn kept_targets_keep_their_connections_and_new_weights_apply_to_the_next_request() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let yaml = |wa: u32, wb: u32| {
        Cfg::new()
            .listener("web", "- name: all\n  forward: { target_group: g }")
            .group(Group::weighted("g", &[(a.addr(), wa), (b.addr(), wb)]))
            .yaml()
    };
    let file = ConfigFile::new("identity", &yaml(1, 1));
    let lb = file.start().await;
    let (client, url) = (TestClient::new(), lb.url("/"));
    assert_eq!(
        tally(&client, &url, 10).await,
        counts(&[("a", 5), ("b", 5)])
    );
    assert_eq!((a.connections(), b.connections()), (1, 1));

    file.overwrite(&yaml(3, 1));
    reload_ok(&lb).await;
    // Exact from the first request after the reload: 3 of every 4 to a.
    assert_eq!(
        tally(&client, &url, 40).await,
        counts(&[("a", 30), ("b", 10)])
    );
    // Same targets, same pooled upstream connections: nothing reconnected.
    assert_eq!((a.connections(), b.connections()), (1, 1));
    let t = target(&lb, "g", &a.addr().to_string()).await.unwrap();
    assert_eq!(
        (t["weight"].as_u64(), t["state"].as_str()),
        (Some(3), Some("healthy"))
    );

    file.overwrite(&yaml(1, 4));
    reload_ok(&lb).await;
    assert_eq!(
        tally(&client, &url, 50).await,
        counts(&[("a", 10), ("b", 40)])
    );
    assert_eq!((a.connections(), b.connections()), (1, 1));
    lb.shutdown().await;
}

async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Err(_))
    )
}

#[tokio::test]
async fn reloads_add_and_remove_listeners_and_keep_the_unchanged_one() {
    let up = upstream("up").await;
    let one = Cfg::simple(&[up.addr()]);
    let two = one
        .clone()
        .listener("new", "- name: all-new\n  forward: { target_group: g }");
    let file = ConfigFile::new("listeners", &one.yaml());
    let lb = file.start().await;
    let web = lb.addr("web").unwrap();
    assert_eq!(lb.addr("new"), None);
    // A keep-alive client connection on the unchanged listener.
    let mut conn = RawConn::connect(web).await;
    conn.send(&raw_get("/")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);

    file.overwrite(&two.yaml());
    reload_ok(&lb).await;
    let new = lb.addr("new").expect("the new listener is bound");
    assert_ne!(new.port(), 0);
    let res = must_get(&format!("http://{new}/hello")).await;
    assert_eq!((res.status, res.body.as_str()), (200, "up"));
    // The unchanged listener kept its socket and its connections.
    assert_eq!(lb.addr("web"), Some(web));
    conn.send(&raw_get("/again")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);

    // A slow request in flight on the listener that is about to go.
    let before = up.requests();
    let slow = tokio::spawn(async move { get(&format!("http://{new}/sleep/1500")).await });
    eventually!(WAIT, up.requests() == before + 1);
    file.overwrite(&one.yaml());
    reload_ok(&lb).await;
    assert_eq!(lb.addr("new"), None);
    eventually!(WAIT, refused(new).await, "removed listener still accepting");
    assert!(!slow.is_finished(), "the in-flight request was cut");
    let res = slow
        .await
        .unwrap()
        .expect("in-flight request on a removed listener");
    assert_eq!((res.status, res.body.as_str()), (200, "up"));
    conn.send(&raw_get("/still")).await;
    assert_eq!(conn.response(WAIT).await.unwrap().status, 200);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_new_listener_that_cannot_bind_fails_the_whole_reload() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let to_blue = blue_green(&blue, &green, 100, 0).yaml();
    let file = ConfigFile::new("clash", &to_blue);
    let lb = file.start().await;
    let v0 = config_status(&lb).await["version"].clone();
    let (client, url) = (TestClient::new(), lb.url("/"));

    // A port we hold: the new listener cannot have it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let clashing = blue_green(&blue, &green, 0, 100)
        .listener_on(
            "clash",
            &format!("127.0.0.1:{port}"),
            "",
            "- name: all\n  forward: { target_group: green }",
        )
        .yaml();
    file.overwrite(&clashing);
    let (status, body) = reload(&lb).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["result"], "error", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("clash") && error.contains("cannot bind"),
        "{error}"
    );
    // At the clashing listener's `bind` in the file.
    let bind_line = clashing
        .lines()
        .position(|l| l.contains(&format!("127.0.0.1:{port}")))
        .map_or(0, |i| i + 1);
    let (line, _) = position(error, &file.path().display().to_string());
    assert_eq!(line, bind_line, "{error}");
    // Nothing of the new file applies: not the listener, not the weights.
    assert_eq!(lb.addr("clash"), None);
    assert_eq!(tally(&client, &url, 10).await, counts(&[("blue", 10)]));
    let status = config_status(&lb).await;
    assert_eq!(status["version"], v0, "{status}");
    assert_eq!(status["last_reload"]["result"], "error", "{status}");

    // Once the port is free the same file loads.
    drop(held);
    reload_ok(&lb).await;
    assert_eq!(lb.addr("clash").map(|a| a.port()), Some(port));
    assert_eq!(tally(&client, &url, 10).await, counts(&[("green", 10)]));
    lb.shutdown().await;
}

#[tokio::test]
async fn a_reload_moves_the_access_log_and_turns_it_off_and_on() {
    let up = upstream("up").await;
    let base = Cfg::simple(&[up.addr()]).yaml();
    let with = |log: &str| base.replace("access_log: { enabled: false }", log);
    let file = ConfigFile::new("access-log", &with("access_log: { path: a.log }"));
    let lb = file.start().await;
    let (a, b, c) = (
        file.dir().join("a.log"),
        file.dir().join("b.log"),
        file.dir().join("c.log"),
    );
    let logged = |f: &std::path::Path, path: &str| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains(&format!("\"path\":\"{path}\""))
    };
    assert_eq!(must_get(&lb.url("/one")).await.status, 200);
    eventually!(WAIT, logged(&a, "/one"));

    file.overwrite(&with("access_log: { path: b.log }"));
    reload_ok(&lb).await;
    assert_eq!(must_get(&lb.url("/two")).await.status, 200);
    eventually!(WAIT, logged(&b, "/two"));
    assert!(!logged(&a, "/two"));

    file.overwrite(&with("access_log: { enabled: false }"));
    reload_ok(&lb).await;
    assert_eq!(must_get(&lb.url("/three")).await.status, 200);

    file.overwrite(&with("access_log: { path: c.log }"));
    reload_ok(&lb).await;
    assert_eq!(must_get(&lb.url("/four")).await.status, 200);
    eventually!(WAIT, logged(&c, "/four"));
    // Lines are written in order: had /three been logged, it would be in
    // b.log before anything reached c.log.
    for f in [&a, &b, &c] {
        assert!(!logged(f, "/three"), "{}", f.display());
    }

    // An access log that cannot be opened fails the reload; the old one stays.
    file.overwrite(&with("access_log: { path: no-such-dir/d.log }"));
    let (status, v) = reload(&lb).await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("cannot open the access log"), "{v}");
    assert_eq!(must_get(&lb.url("/five")).await.status, 200);
    eventually!(WAIT, logged(&c, "/five"));
    lb.shutdown().await;
}
