//! Redirects (fixed `location`, or the request's URL with parts replaced)
//! and fixed responses: answered by the balancer, never forwarded.

use switchyard::Running;
use switchyard_testkit::{get_with, request, FakeUpstream};
use switchyard_tests::{Cfg, Group, Urls};

const ROUTES: &str = r#"
- name: moved
  match: { path_prefix: /old/ }
  redirect: { location: "https://example.com/new/", status: 301 }
- name: to-https
  match: { path_prefix: /secure/ }
  redirect: { scheme: https, status: 301 }
- name: to-https-port
  match: { path_prefix: /alt/ }
  redirect: { scheme: https, port: 8443, status: 302 }
- name: https-default-port
  match: { path_prefix: /d443/ }
  redirect: { scheme: https, port: 443, status: 308 }
- name: new-path
  match: { path_prefix: /p/ }
  redirect: { path: /landing, status: 307 }
- name: other-host
  match: { path_prefix: /h/ }
  redirect: { host: www.example.org, status: 301 }
- name: maintenance
  match: { path_prefix: /down }
  fixed_response: { status: 503, content_type: text/plain, body: "down for maintenance" }
- name: json
  match: { path_exact: /json }
  fixed_response: { status: 200, content_type: application/json, body: '{"ok":true}' }
- name: gone
  match: { path_exact: /gone }
  fixed_response: { status: 410, body: "gone" }
- name: rest
  forward: { target_group: g }
"#;

async fn setup() -> (Running, FakeUpstream) {
    let up = FakeUpstream::builder("up").start().await;
    let lb = Cfg::new()
        .listener("web", ROUTES)
        .group(Group::new("g", &[up.addr()]))
        .start()
        .await;
    (lb, up)
}

/// (status, Location) of `GET path` sent with this Host header.
async fn redirect(lb: &Running, host: &str, path: &str) -> (u16, String) {
    let res = get_with(&lb.url(path), &[("host", host)])
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let location = res.header("location").unwrap_or("<none>").to_owned();
    (res.status, location)
}

#[tokio::test]
async fn fixed_location_is_used_as_given() {
    let (lb, up) = setup().await;
    assert_eq!(
        redirect(&lb, "shop.example.com:8080", "/old/page?q=1").await,
        (301, "https://example.com/new/".to_owned())
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn scheme_change_keeps_host_path_and_query_and_drops_the_port() {
    let (lb, up) = setup().await;
    let host = "shop.example.com:8080";
    assert_eq!(
        redirect(&lb, host, "/secure/a?b=1&c=2").await,
        (301, "https://shop.example.com/secure/a?b=1&c=2".to_owned())
    );
    assert_eq!(
        redirect(&lb, "shop.example.com", "/secure/").await,
        (301, "https://shop.example.com/secure/".to_owned())
    );
    // An explicit port is used; the scheme's default port is left out.
    assert_eq!(
        redirect(&lb, host, "/alt/x?y").await,
        (302, "https://shop.example.com:8443/alt/x?y".to_owned())
    );
    assert_eq!(
        redirect(&lb, host, "/d443/x").await,
        (308, "https://shop.example.com/d443/x".to_owned())
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn path_or_host_replacement_keeps_the_rest() {
    let (lb, up) = setup().await;
    // Same scheme: the request's port stays, the query too.
    assert_eq!(
        redirect(&lb, "shop.example.com:8080", "/p/anything?k=v").await,
        (307, "http://shop.example.com:8080/landing?k=v".to_owned())
    );
    // A default port in the request is left out.
    assert_eq!(
        redirect(&lb, "shop.example.com:80", "/p/x").await,
        (307, "http://shop.example.com/landing".to_owned())
    );
    assert_eq!(
        redirect(&lb, "shop.example.com", "/h/z?a=b").await,
        (301, "http://www.example.org/h/z?a=b".to_owned())
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn redirect_answers_every_method_without_a_body_reaching_upstream() {
    let (lb, up) = setup().await;
    let res = request(
        "POST",
        &lb.url("/secure/form"),
        &[("host", "a.test")],
        "x=1",
    )
    .await
    .unwrap();
    assert_eq!(res.status, 301);
    assert_eq!(res.header("location"), Some("https://a.test/secure/form"));
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn fixed_responses_have_the_configured_status_type_and_body() {
    let (lb, up) = setup().await;
    let res = switchyard_tests::must_get(&lb.url("/down/for/now")).await;
    assert_eq!(res.status, 503);
    assert_eq!(res.body, "down for maintenance");
    assert_eq!(res.header("content-type"), Some("text/plain"));

    let res = switchyard_tests::must_get(&lb.url("/json")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&res.body).unwrap();
    assert_eq!(json["ok"], true);

    // content_type defaults to text/plain.
    let res = switchyard_tests::must_get(&lb.url("/gone")).await;
    assert_eq!((res.status, res.body.as_str()), (410, "gone"));
    assert_eq!(res.header("content-type"), Some("text/plain"));

    // path_exact: /json/x is not /json and is forwarded.
    let res = switchyard_tests::must_get(&lb.url("/json/x")).await;
    assert_eq!((res.status, res.body.as_str()), (200, "up"));
    assert_eq!(up.requests(), 1);
}
