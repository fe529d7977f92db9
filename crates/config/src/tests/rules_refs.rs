//! References between objects: unknown groups, failover cycles, weights,
//! and which group protocols fit which forwarder.

use super::{assert_error, assert_only_error, errors, parse_ok, with_groups, yaml};

#[test]
fn route_forwarding_to_an_unknown_group() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: public
    bind: 127.0.0.1:0
    routes:
      - name: web
        forward:
          target_group: web-gren
"#,
        ),
        7,
        11,
        "route \"web\" forwards to unknown target group \"web-gren\"",
    );
}

#[test]
fn weighted_forward_to_an_unknown_group() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: public
    bind: 127.0.0.1:0
    routes:
      - name: web
        forward:
          target_groups:
            - { name: web, weight: 5 }
            - { name: nope, weight: 5 }
"#,
        ),
        9,
        17,
        "route \"web\" forwards to unknown target group \"nope\"",
    );
}

#[test]
fn tcp_listener_forwarding_to_an_unknown_group() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: db
    bind: 127.0.0.1:0
    protocol: tcp
    forward: { target_groups: [ { name: pgg } ] }
"#,
        ),
        5,
        35,
        "listener \"db\" forwards to unknown target group \"pgg\"",
    );
}

#[test]
fn failover_to_an_unknown_group() {
    assert_only_error(
        "target_groups:\n  - { name: a, failover: b }\n",
        2,
        16,
        "target group \"a\": failover to unknown target group \"b\"",
    );
}

#[test]
fn failover_to_itself() {
    assert_only_error(
        "target_groups:\n  - name: a\n    failover: a\n",
        3,
        5,
        "target group \"a\" fails over to itself",
    );
}

#[test]
fn failover_cycle_is_reported_once_at_its_first_group() {
    let text = yaml(
        r#"
target_groups:
  - { name: x, failover: a }
  - { name: a, failover: b }
  - { name: b, failover: c }
  - { name: c, failover: a }
"#,
    );
    assert_only_error(
        &text,
        3,
        16,
        "target group \"a\": failover cycle a -> b -> c -> a",
    );
}

#[test]
fn two_group_failover_cycle() {
    assert_only_error(
        "target_groups:\n  - { name: a, failover: b }\n  - { name: b, failover: a }\n",
        2,
        16,
        "failover cycle a -> b -> a",
    );
}

#[test]
fn failover_chains_without_cycles_are_fine() {
    let c = parse_ok(
        "target_groups:\n  - { name: a, failover: b }\n  - { name: b, failover: c }\n  - { name: c }\n",
    );
    assert_eq!(c.target_groups[0].failover.as_deref(), Some("b"));
}

#[test]
fn failover_must_stay_in_the_same_layer() {
    assert_only_error(
        "target_groups:\n  - { name: a, failover: b }\n  - { name: b, protocol: tcp }\n",
        2,
        16,
        "target group \"a\": failover target group \"b\" is a tcp group, but this is a http group",
    );
    // http and http2 both carry HTTP requests.
    parse_ok("target_groups:\n  - { name: a, failover: b }\n  - { name: b, protocol: http2 }\n");
}

#[test]
fn target_weight_out_of_range() {
    let text = yaml(
        r#"
target_groups:
  - name: g
    targets:
      - { address: 127.0.0.1:1, weight: 0 }
      - { address: 127.0.0.1:2, weight: 1001 }
      - { address: 127.0.0.1:3, weight: 1000 }
"#,
    );
    assert_error(
        &text,
        4,
        33,
        "target group \"g\": target 127.0.0.1:1 weight 0 is out of range 1..=1000",
    );
    assert_error(
        &text,
        5,
        33,
        "target 127.0.0.1:2 weight 1001 is out of range 1..=1000",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn forward_group_weight_out_of_range() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - name: r
        forward: { target_groups: [ { name: web, weight: 1001 }, { name: api, weight: 0 } ] }
"#,
        ),
        6,
        50,
        "route \"r\": weight 1001 of target group \"web\" is out of range 0..=1000",
    );
}

#[test]
fn all_zero_weights_are_rejected() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - name: r
        forward:
          target_groups: [ { name: web, weight: 0 }, { name: api, weight: 0 } ]
"#,
        ),
        7,
        11,
        "route \"r\": every target group weight is 0",
    );
}

#[test]
fn the_same_group_twice_in_one_forward() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - name: r
        forward: { target_groups: [ { name: web }, { name: web, weight: 3 } ] }
"#,
        ),
        6,
        54,
        "route \"r\": duplicate forward target group \"web\" (first defined at line 6)",
    );
}

#[test]
fn tcp_group_on_an_http_route() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - { name: r, forward: { target_group: pg } }
"#,
        ),
        5,
        31,
        "route \"r\" forwards to target group \"pg\", a tcp group; http routes need http or http2 groups",
    );
}

#[test]
fn http_groups_on_tcp_and_tls_listeners() {
    let text = with_groups(
        r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    protocol: tcp
    forward: { target_groups: [ { name: pg }, { name: web } ] }
"#,
    );
    assert_only_error(
        &text,
        5,
        49,
        "listener \"l\" forwards to target group \"web\", a http group; tcp listeners need tcp groups",
    );
    let dir = super::cert_dir();
    let text = with_groups(
        r#"
listeners:
  - name: s
    bind: 127.0.0.1:0
    protocol: tls
    tls: { certificates: [ { cert_file: certs/a.pem, key_file: certs/a.key } ] }
    forward: { target_group: api }
"#,
    );
    let errs = super::errors_in(&text, &dir);
    assert_eq!(errs.len(), 1, "{errs:?}");
    super::assert_error_in(
        &errs,
        6,
        16,
        "listener \"s\" forwards to target group \"api\", a http2 group; tls listeners need tcp groups",
    );
}
