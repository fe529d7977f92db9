//! Names: duplicates (reported at the second occurrence) and empty names.

use super::{assert_error, assert_only_error, errors, parse_ok, with_groups, yaml};

#[test]
fn duplicate_listener_name_points_at_the_second() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - { name: pub, bind: 127.0.0.1:0 }
  - name: other
    bind: 127.0.0.1:0
  - name: pub
    bind: 127.0.0.1:0
"#,
        ),
        5,
        5,
        "duplicate listener name \"pub\" (first defined at line 2)",
    );
}

#[test]
fn duplicate_target_group_name_points_at_the_second() {
    assert_only_error(
        &yaml(
            r#"
target_groups:
  - name: api
  - name: web
  - { name: api, protocol: tcp }
"#,
        ),
        4,
        7,
        "duplicate target group name \"api\" (first defined at line 2)",
    );
}

#[test]
fn duplicate_route_name_within_a_listener() {
    assert_only_error(
        &with_groups(
            r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - { name: r, forward: { target_group: web } }
      - { name: s, forward: { target_group: web } }
      - { name: r, fixed_response: {} }
"#,
        ),
        7,
        11,
        "listener \"l\": duplicate route name \"r\" (first defined at line 5)",
    );
}

#[test]
fn same_route_name_in_two_listeners_is_fine() {
    parse_ok(&with_groups(
        r#"
listeners:
  - { name: a, bind: 127.0.0.1:0, routes: [ { name: r, forward: { target_group: web } } ] }
  - { name: b, bind: 127.0.0.1:0, routes: [ { name: r, forward: { target_group: web } } ] }
"#,
    ));
}

#[test]
fn duplicate_target_address_within_a_group() {
    let text = yaml(
        r#"
target_groups:
  - name: g
    targets:
      - { address: 127.0.0.1:9001 }
      - { address: 127.0.0.1:9002 }
      - { address: 127.0.0.1:9001, weight: 5 }
  - name: h
    targets: [ { address: 127.0.0.1:9001 } ]
"#,
    );
    assert_only_error(
        &text,
        6,
        11,
        "target group \"g\": duplicate target \"127.0.0.1:9001\" (first defined at line 4)",
    );
}

#[test]
fn duplicate_targets_compare_normalised_addresses() {
    assert_only_error(
        "target_groups: [ { name: g, targets: [ { address: Web:80 }, { address: web:80 } ] } ]\n",
        1,
        63,
        "duplicate target \"web:80\"",
    );
}

#[test]
fn names_must_not_be_empty() {
    let text = with_groups(
        r#"
listeners:
  - name: ""
    bind: 127.0.0.1:0
    routes:
      - { name: "", fixed_response: {} }
  - { name: x, bind: 127.0.0.1:0 }
"#,
    ) + "  - { name: '' }\n";
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    super::assert_error_in(&errs, 2, 5, "listener name must not be empty");
    super::assert_error_in(&errs, 5, 11, "listener \"\": route name must not be empty");
    super::assert_error_in(&errs, 12, 7, "target group name must not be empty");
}

#[test]
fn several_duplicates_each_reported() {
    let text = yaml(
        r#"
target_groups:
  - name: a
  - name: a
  - name: a
"#,
    );
    assert_error(
        &text,
        3,
        5,
        "duplicate target group name \"a\" (first defined at line 2)",
    );
    assert_error(
        &text,
        4,
        5,
        "duplicate target group name \"a\" (first defined at line 2)",
    );
    assert_eq!(errors(&text).len(), 2);
}
