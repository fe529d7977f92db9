//! Route rules: match conditions, the one action, forward shape, redirects
//! and fixed responses.

use super::{assert_error, assert_only_error, errors, parse_ok, with_groups};
use crate::{HostMatch, PathMatch, RouteAction};

/// One listener `l` whose routes follow from line 5 on.
fn routes(body: &str) -> String {
    with_groups(&format!(
        "\nlisteners:\n  - name: l\n    bind: 127.0.0.1:0\n    routes:\n{}",
        body.strip_prefix('\n').unwrap_or(body)
    ))
}

#[test]
fn match_with_more_than_one_path_condition() {
    assert_only_error(
        &routes(
            r#"
      - name: r
        match: { path_prefix: /a, path_regex: "^/b" }
        fixed_response: {}
"#,
        ),
        6,
        35,
        "route \"r\": match has more than one of path_prefix, path_exact, path_regex",
    );
}

#[test]
fn route_without_an_action() {
    assert_only_error(
        &routes("      - name: r\n        match: { path_exact: /a }\n"),
        5,
        9,
        "route \"r\" has no action: give one of forward, redirect, fixed_response",
    );
}

#[test]
fn route_with_two_actions() {
    assert_only_error(
        &routes(
            r#"
      - name: r
        forward: { target_group: web }
        fixed_response: { status: 503 }
"#,
        ),
        7,
        9,
        "route \"r\" has more than one of forward, redirect, fixed_response",
    );
}

#[test]
fn forward_needs_exactly_one_of_target_group_and_target_groups() {
    let text = routes(
        r#"
      - name: both
        forward:
          target_group: web
          target_groups: [ { name: api } ]
      - name: neither
        forward: { stickiness: {} }
"#,
    );
    assert_error(
        &text,
        8,
        11,
        "route \"both\": forward has both target_group and target_groups; give one",
    );
    assert_error(
        &text,
        10,
        9,
        "route \"neither\": forward needs target_group or target_groups",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn empty_target_groups_list() {
    assert_only_error(
        &routes("      - { name: r, forward: { target_groups: [] } }\n"),
        5,
        31,
        "route \"r\": forward.target_groups is empty",
    );
}

#[test]
fn redirect_location_excludes_the_parts() {
    let text = routes(
        r#"
      - name: r
        redirect: { location: "https://x/", scheme: https, path: /y }
"#,
    );
    assert_error(
        &text,
        6,
        45,
        "route \"r\": redirect scheme does not apply together with location",
    );
    assert_error(
        &text,
        6,
        60,
        "route \"r\": redirect path does not apply together with location",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn redirect_that_changes_nothing() {
    assert_only_error(
        &routes("      - { name: r, redirect: { status: 302 } }\n"),
        5,
        20,
        "route \"r\": redirect needs location, or at least one of scheme, host, port, path",
    );
}

#[test]
fn redirect_status_and_scheme() {
    let text = routes(
        r#"
      - { name: a, redirect: { scheme: ftp } }
      - { name: b, redirect: { scheme: https, status: 200 } }
      - { name: c, redirect: { port: 0, path: x } }
"#,
    );
    assert_error(
        &text,
        5,
        32,
        "route \"a\": redirect scheme \"ftp\" must be http or https",
    );
    assert_error(
        &text,
        6,
        47,
        "route \"b\": redirect status 200 must be one of 301, 302, 303, 307, 308",
    );
    assert_error(&text, 7, 32, "route \"c\": redirect port must be 1..=65535");
    assert_error(
        &text,
        7,
        41,
        "route \"c\": redirect path \"x\" must start with /",
    );
    assert_eq!(errors(&text).len(), 4);
    for status in [301, 302, 303, 307, 308] {
        parse_ok(&routes(&format!(
            "      - {{ name: r, redirect: {{ host: h, status: {status} }} }}\n"
        )));
    }
}

#[test]
fn fixed_response_status_and_content_type() {
    let text = routes(
        r#"
      - { name: a, fixed_response: { status: 99 } }
      - { name: b, fixed_response: { status: 600 } }
      - { name: c, fixed_response: { content_type: "text/plain\r\nx: y" } }
"#,
    );
    assert_error(
        &text,
        5,
        38,
        "route \"a\": fixed_response status 99 must be 100..=599",
    );
    assert_error(
        &text,
        6,
        38,
        "route \"b\": fixed_response status 600 must be 100..=599",
    );
    assert_error(&text, 7, 38, "is not a valid header value");
    assert_eq!(errors(&text).len(), 3);
}

#[test]
fn path_regex_must_compile() {
    let text = routes(
        r#"
      - name: versioned
        match: { path_regex: "^/v[0-9+/" }
        fixed_response: {}
"#,
    );
    assert_only_error(
        &text,
        6,
        18,
        "route \"versioned\": invalid path_regex \"^/v[0-9+/\": unclosed character class",
    );
    let e = &errors(&text)[0];
    assert!(!e.message.contains('\n'), "one line: {e}");
}

#[test]
fn path_prefix_and_path_exact_must_start_with_a_slash() {
    let text = routes(
        r#"
      - { name: a, match: { path_prefix: api/ }, fixed_response: {} }
      - { name: b, match: { path_exact: x }, fixed_response: {} }
"#,
    );
    assert_error(
        &text,
        5,
        29,
        "route \"a\": path_prefix \"api/\" must start with /",
    );
    assert_error(
        &text,
        6,
        29,
        "route \"b\": path_exact \"x\" must start with /",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn methods_are_upper_cased_and_must_be_letters() {
    let c = parse_ok(&routes("      - { name: a, match: { method: get, path_regex: \"^/v[0-9]+/\" }, fixed_response: {} }\n"));
    let m = &c.listeners[0].routes[0].matcher;
    assert_eq!(m.method.as_deref(), Some("GET"));
    assert_eq!(m.path, Some(PathMatch::Regex("^/v[0-9]+/".into())));
    assert_only_error(
        &routes("      - { name: a, match: { method: \"GET POST\" }, fixed_response: {} }\n"),
        5,
        29,
        "route \"a\": method \"GET POST\" is not a method name",
    );
}

#[test]
fn host_matches_are_lower_cased_and_wildcards_only_lead() {
    let c = parse_ok(&routes(
        r#"
      - { name: a, match: { host: API.Example.com }, fixed_response: {} }
      - { name: b, match: { host: "*.Example.com" }, fixed_response: {} }
"#,
    ));
    let r = &c.listeners[0].routes;
    assert_eq!(
        r[0].matcher.host,
        Some(HostMatch::Exact("api.example.com".into()))
    );
    assert_eq!(
        r[1].matcher.host,
        Some(HostMatch::Suffix(".example.com".into()))
    );

    let text = routes(
        r#"
      - { name: a, match: { host: "api.*.com" }, fixed_response: {} }
      - { name: b, match: { host: "*" }, fixed_response: {} }
      - { name: c, match: { host: "*example.com" }, fixed_response: {} }
      - { name: d, match: { host: "*.*.com" }, fixed_response: {} }
"#,
    );
    for line in 5..=8 {
        assert_error(&text, line, 29, "`*` is allowed only as a leading `*.`");
    }
    assert_eq!(errors(&text).len(), 4);
}

#[test]
fn header_names_are_lower_cased_and_must_be_tokens() {
    let c = parse_ok(&routes(
        "      - { name: a, match: { headers: { X-Canary: always, x-n: 2 } }, fixed_response: {} }\n",
    ));
    assert_eq!(
        c.listeners[0].routes[0].matcher.headers,
        [
            ("x-canary".to_string(), "always".to_string()),
            ("x-n".to_string(), "2".to_string())
        ]
    );
    let text = routes(
        r#"
      - name: a
        match:
          headers: { "bad name": x, X-A: "1", x-a: "2" }
        fixed_response: {}
"#,
    );
    assert_error(
        &text,
        7,
        22,
        "route \"a\": \"bad name\" is not a header name",
    );
    assert_error(
        &text,
        7,
        47,
        "route \"a\": duplicate match header \"x-a\" (first defined at line 7)",
    );
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn match_all_and_actions_are_kept_in_order() {
    let c = parse_ok(&routes(
        "      - { name: a, redirect: { path: /b } }\n      - { name: b, forward: { target_group: api } }\n",
    ));
    let r = &c.listeners[0].routes;
    assert!(matches!(r[0].action, RouteAction::Redirect(_)));
    assert!(matches!(r[1].action, RouteAction::Forward(_)));
}
