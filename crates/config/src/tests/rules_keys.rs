//! Keys that do not apply where they stand (and keys that must be there).

use super::{
    assert_error, assert_only_error, cert_dir, errors, errors_in, parse_ok, with_groups, yaml,
};

#[test]
fn hash_on_without_consistent_hash() {
    let text = yaml(
        r#"
target_groups:
  - name: a
    hash_on: client_ip
  - name: b
    balance: random
    hash_on: header:x-user
"#,
    );
    assert_error(
        &text,
        3,
        5,
        "target group \"a\": hash_on applies only with balance: consistent_hash",
    );
    assert_error(
        &text,
        6,
        5,
        "target group \"b\": hash_on applies only with balance: consistent_hash",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn consistent_hash_without_hash_on() {
    assert_only_error(
        "target_groups:\n  - name: a\n    balance: consistent_hash\n",
        3,
        5,
        "target group \"a\": balance consistent_hash needs hash_on",
    );
}

#[test]
fn hash_on_forms() {
    let c = parse_ok(&yaml(
        r#"
target_groups:
  - { name: a, balance: consistent_hash, hash_on: header:X-User }
  - { name: b, balance: consistent_hash, hash_on: cookie:Session }
  - { name: c, balance: consistent_hash, hash_on: client_ip, protocol: tcp }
"#,
    ));
    use crate::{Balance, HashOn};
    assert_eq!(
        c.target_groups[0].balance,
        Balance::ConsistentHash(HashOn::Header("x-user".into()))
    );
    assert_eq!(
        c.target_groups[1].balance,
        Balance::ConsistentHash(HashOn::Cookie("Session".into()))
    );
    assert_eq!(
        c.target_groups[2].balance,
        Balance::ConsistentHash(HashOn::ClientIp)
    );

    let text = yaml(
        r#"
target_groups:
  - { name: a, balance: consistent_hash, hash_on: ip }
  - { name: b, balance: consistent_hash, hash_on: "header:" }
  - { name: c, balance: consistent_hash, hash_on: "header:x-user", protocol: tcp }
"#,
    );
    assert_error(
        &text,
        2,
        42,
        "target group \"a\": hash_on \"ip\" must be header:NAME, cookie:NAME or client_ip",
    );
    assert_error(&text, 3, 42, "hash_on \"header:\": `` is not a header name");
    assert_error(
        &text,
        4,
        42,
        "target group \"c\": hash_on \"header:x-user\" does not apply to a tcp group",
    );
}

#[test]
fn tls_on_http_and_tcp_listeners() {
    let text = with_groups(
        r#"
listeners:
  - name: h
    bind: 127.0.0.1:0
    tls: { certificates: [] }
  - name: t
    bind: 127.0.0.1:0
    protocol: tcp
    forward: { target_group: pg }
    tls: { certificates: [] }
"#,
    );
    assert_error(
        &text,
        4,
        5,
        "listener \"h\": tls does not apply to protocol http",
    );
    assert_error(
        &text,
        9,
        5,
        "listener \"t\": tls does not apply to protocol tcp",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn tls_missing_on_https_and_tls_listeners() {
    let text = with_groups(
        r#"
listeners:
  - name: s
    bind: 127.0.0.1:0
    protocol: https
  - name: t
    bind: 127.0.0.1:0
    protocol: tls
    forward: { target_group: pg }
"#,
    );
    assert_error(&text, 4, 5, "listener \"s\": protocol https requires tls");
    assert_error(&text, 7, 5, "listener \"t\": protocol tls requires tls");
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn tls_needs_certificates() {
    assert_only_error(
        "listeners:\n  - { name: s, bind: 127.0.0.1:0, protocol: https, tls: { certificates: [] } }\n",
        2,
        59,
        "listener \"s\": tls needs at least one entry in certificates",
    );
}

#[test]
fn alpn_on_a_tls_listener_and_unsupported_alpn() {
    let dir = cert_dir();
    let text = yaml(
        r#"
listeners:
  - name: t
    bind: 127.0.0.1:0
    protocol: tls
    forward: { target_group: pg }
    tls:
      certificates: [ { cert_file: certs/a.pem, key_file: certs/a.key } ]
      alpn: [h2]
  - name: s
    bind: 127.0.0.1:0
    protocol: https
    tls:
      certificates: [ { cert_file: certs/a.pem, key_file: certs/a.key } ]
      alpn: [h2, h3]
target_groups: [ { name: pg, protocol: tcp } ]
"#,
    );
    let errs = errors_in(&text, &dir);
    assert_eq!(errs.len(), 2, "{errs:?}");
    super::assert_error_in(
        &errs,
        8,
        7,
        "listener \"t\": alpn does not apply to protocol tls",
    );
    super::assert_error_in(
        &errs,
        14,
        18,
        "listener \"s\": alpn protocol \"h3\" is not supported",
    );
}

#[test]
fn routes_on_tcp_and_tls_listeners() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: t
    bind: 127.0.0.1:0
    protocol: tcp
    forward: { target_group: pg }
    routes: []
"#,
        ),
        6,
        5,
        "listener \"t\": routes do not apply to protocol tcp; use forward",
    );
    let dir = cert_dir();
    let text = with_groups(
        r#"
listeners:
  - name: s
    bind: 127.0.0.1:0
    protocol: tls
    tls: { certificates: [ { cert_file: certs/a.pem, key_file: certs/a.key } ] }
    routes: [ { name: r, forward: { target_group: pg } } ]
    forward: { target_group: pg }
"#,
    );
    let errs = errors_in(&text, &dir);
    assert_eq!(errs.len(), 1, "{errs:?}");
    super::assert_error_in(
        &errs,
        6,
        5,
        "listener \"s\": routes do not apply to protocol tls; use forward",
    );
}

#[test]
fn forward_on_http_listeners() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: h
    bind: 127.0.0.1:0
    forward: { target_group: web }
"#,
        ),
        4,
        5,
        "listener \"h\": forward does not apply to protocol http; use routes",
    );
}

#[test]
fn tcp_listener_without_forward() {
    assert_only_error(
        "listeners:\n  - name: t\n    bind: 127.0.0.1:0\n    protocol: tcp\n",
        4,
        5,
        "listener \"t\": protocol tcp requires forward",
    );
}

#[test]
fn http_listener_without_routes_is_allowed() {
    let c = parse_ok("listeners:\n  - { name: h, bind: 127.0.0.1:0 }\n  - { name: i, bind: 127.0.0.1:0, routes: [] }\n");
    assert!(c.listeners.iter().all(|l| l.routes.is_empty()));
}

#[test]
fn proxy_protocol_on_http_groups() {
    let text = "target_groups:\n  - { name: a, proxy_protocol: v2 }\n  - { name: b, protocol: http2, proxy_protocol: v2 }\n";
    assert_error(
        text,
        2,
        16,
        "target group \"a\": proxy_protocol does not apply to a http group; tcp groups only",
    );
    assert_error(
        text,
        3,
        33,
        "target group \"b\": proxy_protocol does not apply to a http2 group",
    );
    assert_eq!(errors(text).len(), 2);
}

#[test]
fn stickiness_on_tcp_groups() {
    assert_only_error(
        "target_groups:\n  - name: a\n    protocol: tcp\n    stickiness: { cookie: X }\n",
        4,
        5,
        "target group \"a\": stickiness does not apply to a tcp group",
    );
}

#[test]
fn stickiness_on_a_tcp_listeners_forward() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: t
    bind: 127.0.0.1:0
    protocol: tcp
    forward:
      target_group: pg
      stickiness: { cookie: X }
"#,
        ),
        7,
        7,
        "listener \"t\": stickiness does not apply to the forward of a tcp listener",
    );
}

#[test]
fn retry_statuses_on_tcp_groups() {
    let text = yaml(
        r#"
target_groups:
  - name: p
    protocol: tcp
    retries: { on: [connect_failure, reset, 502] }
"#,
    );
    assert_only_error(
        &text,
        4,
        45,
        "target group \"p\": retries on status 502 does not apply to a tcp group",
    );
}

#[test]
fn request_and_idle_timeouts_on_tcp_groups() {
    let text = "target_groups:\n  - name: a\n    protocol: tcp\n    timeouts: { connect: 1s, request: 1s, idle: 5s }\n";
    assert_error(
        text,
        4,
        30,
        "target group \"a\": timeouts.request does not apply to a tcp group; only connect does",
    );
    assert_error(
        text,
        4,
        43,
        "target group \"a\": timeouts.idle does not apply to a tcp group; only connect does",
    );
    assert_eq!(errors(text).len(), 2);
}

#[test]
fn header_read_on_tcp_listeners() {
    let tcp = "listeners:\n  - name: t\n    bind: 127.0.0.1:0\n    protocol: tcp\n    timeouts: { header_read: 1s, idle: 5s }\n    forward: { target_group: g }\ntarget_groups:\n  - { name: g, protocol: tcp }\n";
    assert_only_error(
        tcp,
        5,
        17,
        "listener \"t\": timeouts.header_read does not apply to protocol tcp",
    );
}
