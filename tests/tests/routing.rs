//! Routing: host (exact, wildcard), path (prefix, exact, regex), method and
//! header conditions, first match wins, no match -> 404, h2c clients.

use std::net::SocketAddr;

use http::Version;
use switchyard_testkit::{get_with, request, FakeUpstream, TestClient};
use switchyard_tests::{must_get, Cfg, Group, Urls};

async fn upstream(name: &str) -> FakeUpstream {
    FakeUpstream::builder(name).start().await
}

/// The body of `GET path` with this `Host` header; upstreams answer their name.
async fn answer(url: &str, host: &str) -> String {
    let res = get_with(url, &[("host", host)])
        .await
        .unwrap_or_else(|e| panic!("GET {url} (Host {host}): {e}"));
    format!("{} {}", res.status, res.body)
}

#[tokio::test]
async fn host_exact_and_wildcard_match_case_insensitively_ignoring_port() {
    let (api, wild, web) = (
        upstream("api").await,
        upstream("wild").await,
        upstream("web").await,
    );
    let lb = Cfg::new()
        .listener(
            "web",
            r#"
            - name: api
              match: { host: api.example.com }
              forward: { target_group: api }
            - name: wild
              match: { host: "*.example.com" }
              forward: { target_group: wild }
            - name: rest
              forward: { target_group: web }
            "#,
        )
        .group(Group::new("api", &[api.addr()]))
        .group(Group::new("wild", &[wild.addr()]))
        .group(Group::new("web", &[web.addr()]))
        .start()
        .await;
    let url = lb.url("/");
    let cases = [
        ("api.example.com", "200 api"),
        ("API.Example.COM", "200 api"),
        ("api.example.com:8080", "200 api"),
        ("shop.example.com", "200 wild"),
        ("deep.shop.EXAMPLE.com:1", "200 wild"),
        // The wildcard is "any host ending in .example.com", not the apex.
        ("example.com", "200 web"),
        ("api.example.org", "200 web"),
        ("notexample.com", "200 web"),
    ];
    for (host, want) in cases {
        assert_eq!(answer(&url, host).await, want, "Host: {host}");
    }
    assert_eq!(api.requests(), 3);
    assert_eq!(wild.requests(), 2);
    assert_eq!(web.requests(), 3);
}

#[tokio::test]
async fn path_prefix_exact_and_regex() {
    let ups = [
        upstream("exact").await,
        upstream("api").await,
        upstream("versioned").await,
        upstream("web").await,
    ];
    let lb = Cfg::new()
        .listener(
            "web",
            r#"
            - name: exact
              match: { path_exact: /x }
              forward: { target_group: exact }
            - name: api
              match: { path_prefix: /api/ }
              forward: { target_group: api }
            - name: versioned
              match: { path_regex: "^/v[0-9]+/" }
              forward: { target_group: versioned }
            - name: rest
              match: { path_prefix: / }
              forward: { target_group: web }
            "#,
        )
        .group(Group::new("exact", &[ups[0].addr()]))
        .group(Group::new("api", &[ups[1].addr()]))
        .group(Group::new("versioned", &[ups[2].addr()]))
        .group(Group::new("web", &[ups[3].addr()]))
        .start()
        .await;
    let cases = [
        ("/x", "exact"),
        ("/x?debug=1", "exact"),
        ("/x/", "web"),
        ("/xy", "web"),
        ("/api/users", "api"),
        ("/api/", "api"),
        ("/api", "web"),
        ("/apix/users", "web"),
        ("/v2/things", "versioned"),
        ("/v10/", "versioned"),
        ("/vx/things", "web"),
        ("/a/v2/", "web"),
        ("/", "web"),
    ];
    for (path, want) in cases {
        let res = must_get(&lb.url(path)).await;
        assert_eq!((res.status, res.body.as_str()), (200, want), "path {path}");
    }
    // The path and query reach the upstream unchanged.
    assert_eq!(ups[0].requests_log()[1].uri, "/x?debug=1");
}

#[tokio::test]
async fn method_and_header_conditions() {
    let (canary, reads, web) = (
        upstream("canary").await,
        upstream("reads").await,
        upstream("web").await,
    );
    let lb = Cfg::new()
        .listener(
            "web",
            r#"
            - name: canary
              match: { headers: { x-canary: "always" } }
              forward: { target_group: canary }
            - name: reads
              match: { method: GET }
              forward: { target_group: reads }
            - name: rest
              forward: { target_group: web }
            "#,
        )
        .group(Group::new("canary", &[canary.addr()]))
        .group(Group::new("reads", &[reads.addr()]))
        .group(Group::new("web", &[web.addr()]))
        .start()
        .await;
    let url = lb.url("/");
    let send = |method: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let url = url.clone();
        async move {
            let res = request(method, &url, &headers, "").await.unwrap();
            assert_eq!(res.status, 200);
            res.body
        }
    };
    assert_eq!(send("GET", vec![]).await, "reads");
    assert_eq!(send("HEAD", vec![]).await, "");
    assert_eq!(send("POST", vec![]).await, "web");
    assert_eq!(send("DELETE", vec![]).await, "web");
    // Header names are case-insensitive, values exact.
    assert_eq!(send("GET", vec![("X-Canary", "always")]).await, "canary");
    assert_eq!(send("POST", vec![("x-canary", "always")]).await, "canary");
    assert_eq!(send("GET", vec![("x-canary", "Always")]).await, "reads");
    assert_eq!(send("GET", vec![("x-canary", "always-not")]).await, "reads");
    assert_eq!(send("GET", vec![("x-canary-2", "always")]).await, "reads");
    assert_eq!(canary.requests(), 2);
    // GET, and the GETs whose header did not match exactly; HEAD went to web.
    assert_eq!(reads.requests(), 4);
    assert_eq!(web.requests(), 3);
}

#[tokio::test]
async fn every_condition_of_a_match_must_hold() {
    let (a, web) = (upstream("a").await, upstream("web").await);
    let lb = Cfg::new()
        .listener(
            "web",
            r#"
            - name: a
              match: { host: a.test, path_prefix: /a/, method: GET, headers: { x-k: v } }
              forward: { target_group: a }
            - name: rest
              forward: { target_group: web }
            "#,
        )
        .group(Group::new("a", &[a.addr()]))
        .group(Group::new("web", &[web.addr()]))
        .start()
        .await;
    let all = [("host", "a.test"), ("x-k", "v")];
    let res = get_with(&lb.url("/a/1"), &all).await.unwrap();
    assert_eq!(res.body, "a");
    // Drop one condition at a time: each miss falls through to `rest`.
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let misses: [(&str, &str, Headers); 4] = [
        ("GET", "/a/1", &[("host", "b.test"), ("x-k", "v")]),
        ("GET", "/b/1", &all),
        ("GET", "/a/1", &[("host", "a.test")]),
        ("PUT", "/a/1", &all),
    ];
    for (method, path, headers) in misses {
        let res = request(method, &lb.url(path), headers, "").await.unwrap();
        assert_eq!(res.body, "web", "{method} {path} {headers:?}");
    }
    assert_eq!(a.requests(), 1);
    assert_eq!(web.requests(), 4);
}

#[tokio::test]
async fn first_matching_route_wins_in_config_order() {
    let (api, web) = (upstream("api").await, upstream("web").await);
    // Same two routes on two listeners, in opposite orders.
    let lb = Cfg::new()
        .listener(
            "specific-first",
            r#"
            - name: api
              match: { path_prefix: /api/ }
              forward: { target_group: api }
            - name: all
              match: { path_prefix: / }
              forward: { target_group: web }
            "#,
        )
        .listener(
            "general-first",
            r#"
            - name: all
              match: { path_prefix: / }
              forward: { target_group: web }
            - name: api
              match: { path_prefix: /api/ }
              forward: { target_group: api }
            "#,
        )
        .group(Group::new("api", &[api.addr()]))
        .group(Group::new("web", &[web.addr()]))
        .start()
        .await;
    let res = must_get(&lb.url_on("specific-first", "/api/x")).await;
    assert_eq!(res.body, "api");
    let res = must_get(&lb.url_on("general-first", "/api/x")).await;
    assert_eq!(res.body, "web");
    assert_eq!((api.requests(), web.requests()), (1, 1));
}

#[tokio::test]
async fn no_matching_route_is_404_and_reaches_no_upstream() {
    let api = upstream("api").await;
    let lb = Cfg::new()
        .listener(
            "web",
            r#"
            - name: api
              match: { path_prefix: /api/ }
              forward: { target_group: api }
            "#,
        )
        .group(Group::new("api", &[api.addr()]))
        .start()
        .await;
    for path in ["/", "/other", "/ap", "/API/x"] {
        let res = must_get(&lb.url(path)).await;
        assert_eq!(res.status, 404, "{path}");
        assert!(
            !res.body.is_empty() && res.body.len() < 100,
            "short body: {:?}",
            res.body
        );
        assert_ne!(res.header("x-upstream"), Some("api"));
    }
    assert_eq!(api.requests(), 0);
    assert_eq!(must_get(&lb.url("/api/ok")).await.status, 200);
    assert_eq!(api.requests(), 1);
}

#[tokio::test]
async fn h2c_prior_knowledge_client_is_routed_by_authority() {
    let up = upstream("h2-ok").await;
    let lb = Cfg::new()
        .listener(
            "web",
            r#"
            - name: local
              match: { host: 127.0.0.1, path_prefix: /h2/ }
              forward: { target_group: g }
            "#,
        )
        .group(Group::new("g", &[up.addr()]))
        .start()
        .await;
    let client = TestClient::h2c();
    for _ in 0..3 {
        let res = client.get(&lb.url("/h2/x?q=1")).await.unwrap();
        assert_eq!((res.status, res.body.as_str()), (200, "h2-ok"));
    }
    let res = client.get(&lb.url("/nope")).await.unwrap();
    assert_eq!(res.status, 404);
    assert_eq!(up.requests(), 3);
    // Upstreams are spoken to in HTTP/1.1 with a Host header from the
    // client's authority.
    let seen = up.last_request().unwrap();
    let addr: SocketAddr = lb.listen_addr();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri, "/h2/x?q=1");
    assert_eq!(seen.header("host"), Some(addr.to_string().as_str()));
}

#[tokio::test]
async fn an_absolute_form_request_is_routed_and_sent_on_by_its_own_host() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let lb = Cfg::new()
        .listener(
            "web",
            r#"
            - name: a
              match: { host: a.test }
              forward: { target_group: a }
            - name: b
              match: { host: b.test }
              forward: { target_group: b }
            "#,
        )
        .group(Group::new("a", &[a.addr()]))
        .group(Group::new("b", &[b.addr()]))
        .start()
        .await;
    // RFC 9112 3.2.2: the request-target's host wins and replaces Host, so
    // the balancer and the target agree on which host was asked for.
    let mut conn = switchyard_tests::RawConn::connect(lb.listen_addr()).await;
    conn.send(b"GET http://b.test/x?y=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await;
    let res = conn.response(switchyard_tests::WAIT).await.unwrap();
    assert_eq!(
        (res.status, res.body_text().as_str()),
        (200, "b"),
        "{}",
        res.head
    );
    assert_eq!(a.requests(), 0);
    let seen = b.last_request().unwrap();
    assert_eq!(seen.uri, "/x?y=1");
    assert_eq!(seen.header("host"), Some("b.test"));
    assert_eq!(seen.header("x-forwarded-host"), Some("b.test"));
}

#[tokio::test]
async fn dot_segments_cannot_carry_a_request_past_its_route() {
    let web = upstream("web").await;
    let lb = Cfg::new()
        .listener(
            "web",
            r#"
            - name: admin-closed
              match: { path_prefix: /admin }
              fixed_response: { status: 403, body: "closed" }
            - name: web
              match: { path_prefix: /web/ }
              forward: { target_group: web }
            "#,
        )
        .group(Group::new("web", &[web.addr()]))
        .start()
        .await;
    // Sent raw: clients would resolve the dots themselves.
    for (path, status) in [("/web/../admin/x", 403), ("/web/./a/../b?q=1", 200)] {
        let mut conn = switchyard_tests::RawConn::connect(lb.listen_addr()).await;
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let res = conn.response(switchyard_tests::WAIT).await.unwrap();
        assert_eq!(res.status, status, "{path}: {}", res.head);
    }
    assert_eq!(web.requests(), 1);
    assert_eq!(web.last_request().unwrap().uri, "/web/b?q=1");
}
