//! health_check rules: timeout < interval, both > 0, thresholds, matcher,
//! and http-only keys on tcp/none checks.

use super::{assert_error, assert_only_error, errors, parse_ok, yaml};

#[test]
fn timeout_must_be_less_than_interval() {
    let text = yaml(
        r#"
target_groups:
  - name: g
    health_check:
      interval: 5s
      timeout: 5s
"#,
    );
    assert_only_error(
        &text,
        5,
        7,
        "target group \"g\": health_check timeout 5s must be less than interval 5s",
    );
    parse_ok("target_groups: [ { name: g, health_check: { interval: 5s, timeout: 4999ms } } ]\n");
}

#[test]
fn a_short_interval_against_the_default_timeout_says_so() {
    assert_only_error(
        "target_groups: [ { name: g, health_check: { interval: 3s } } ]\n",
        1,
        45,
        "health_check timeout 5s must be less than interval 3s (timeout defaults to 5s)",
    );
}

#[test]
fn interval_and_timeout_must_be_above_zero() {
    let text = yaml(
        r#"
target_groups:
  - name: g
    health_check: { interval: 0s }
  - name: h
    health_check: { timeout: 0ms }
"#,
    );
    assert_error(
        &text,
        3,
        21,
        "target group \"g\": health_check interval must be more than 0s",
    );
    assert_error(
        &text,
        5,
        21,
        "target group \"h\": health_check timeout must be more than 0s",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn thresholds_must_be_1_to_10() {
    let text = yaml(
        r#"
target_groups:
  - name: g
    health_check:
      healthy_threshold: 0
      unhealthy_threshold: 11
  - name: h
    health_check: { healthy_threshold: 1, unhealthy_threshold: 10 }
"#,
    );
    assert_error(
        &text,
        4,
        7,
        "target group \"g\": health_check healthy_threshold 0 is out of range 1..=10",
    );
    assert_error(
        &text,
        5,
        7,
        "health_check unhealthy_threshold 11 is out of range 1..=10",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn http_keys_do_not_apply_to_tcp_or_none_checks() {
    let text = yaml(
        r#"
target_groups:
  - name: t
    health_check:
      protocol: tcp
      path: /health
      host: x
      matcher: "200"
  - name: n
    health_check: { protocol: none, path: /x, interval: 5s }
  - name: p
    protocol: tcp
    health_check: { matcher: "200" }
"#,
    );
    assert_error(
        &text,
        5,
        7,
        "target group \"t\": health_check path does not apply to a tcp check",
    );
    assert_error(
        &text,
        6,
        7,
        "target group \"t\": health_check host does not apply to a tcp check",
    );
    assert_error(
        &text,
        7,
        7,
        "target group \"t\": health_check matcher does not apply to a tcp check",
    );
    assert_error(
        &text,
        9,
        37,
        "target group \"n\": health_check path does not apply to a none check",
    );
    // Nor timing: with the default timeout of 5s, `interval: 5s` used to
    // be reported as a timeout not under the interval.
    assert_error(
        &text,
        9,
        47,
        "target group \"n\": health_check interval does not apply to a none check",
    );
    // A tcp group's checks default to tcp, so `matcher` does not apply there either.
    assert_error(
        &text,
        12,
        21,
        "target group \"p\": health_check matcher does not apply to a tcp check",
    );
    assert_eq!(errors(&text).len(), 6);
}

#[test]
fn a_tcp_group_may_use_http_checks() {
    let c = parse_ok(
        "target_groups: [ { name: p, protocol: tcp, health_check: { protocol: http, port: 8008, path: /ready } } ]\n",
    );
    assert_eq!(c.target_groups[0].health_check.port, Some(8008));
}

#[test]
fn bad_matcher_is_located() {
    assert_only_error(
        "target_groups:\n  - name: g\n    health_check: { matcher: \"200-1000\" }\n",
        3,
        21,
        "target group \"g\": health_check invalid status matcher \"200-1000\": status 1000 is outside 100..=599",
    );
}

#[test]
fn check_path_must_start_with_a_slash_and_port_must_be_real() {
    let text = "target_groups:\n  - name: g\n    health_check: { path: health, port: 0 }\n";
    assert_error(
        text,
        3,
        21,
        "target group \"g\": health_check path \"health\" must start with /",
    );
    assert_error(
        text,
        3,
        35,
        "target group \"g\": health_check port must be 1..=65535",
    );
}
