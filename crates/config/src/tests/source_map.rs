//! SourceMap lookups in block and flow style, and robustness against
//! anchors, aliases, merges and complex keys.

use super::{parse_ok, yaml};
use crate::{Location, SourceMap};

fn at(line: usize, column: usize) -> Option<Location> {
    Some(Location { line, column })
}

#[test]
fn block_style_keys_and_items() {
    let sm = SourceMap::build(&yaml(
        r#"
workers: 2
listeners:
  - name: a
    routes:
      - name: r
        forward:
          target_group: g
target_groups:
- name: g
"#,
    ));
    assert_eq!(sm.find("workers"), at(1, 1));
    assert_eq!(sm.find("listeners"), at(2, 1));
    assert_eq!(
        sm.find("listeners.0"),
        at(3, 5),
        "an item starts at its first key"
    );
    assert_eq!(sm.find("listeners.0.name"), at(3, 5));
    assert_eq!(sm.find("listeners.0.routes.0"), at(5, 9));
    assert_eq!(sm.find("listeners.0.routes.0.forward"), at(6, 9));
    assert_eq!(
        sm.find("listeners.0.routes.0.forward.target_group"),
        at(7, 11)
    );
    assert_eq!(sm.find("target_groups.0"), at(9, 3));
    assert_eq!(sm.find("target_groups.0.name"), at(9, 3));
    assert_eq!(sm.find("target_groups.1"), None);
    assert_eq!(sm.find("nothing"), None);
}

#[test]
fn flow_style_keys_and_items() {
    let sm = SourceMap::build(&yaml(
        r#"
shutdown: { drain_delay: 0s, timeout: 30s }
target_groups: [ { name: a, targets: [ { address: "127.0.0.1:1" }, { address: x } ] },
                 { name: b } ]
listeners:
  - { name: l, routes: [ { name: r, forward: { target_groups: [ { name: a, weight: 1 } ] } } ] }
"#,
    ));
    assert_eq!(sm.find("shutdown.drain_delay"), at(1, 13));
    assert_eq!(sm.find("shutdown.timeout"), at(1, 30));
    assert_eq!(sm.find("target_groups.0"), at(2, 18));
    assert_eq!(sm.find("target_groups.0.targets.0"), at(2, 40));
    assert_eq!(sm.find("target_groups.0.targets.0.address"), at(2, 42));
    assert_eq!(sm.find("target_groups.0.targets.1.address"), at(2, 70));
    assert_eq!(sm.find("target_groups.1"), at(3, 18));
    assert_eq!(sm.find("target_groups.1.name"), at(3, 20));
    assert_eq!(sm.find("listeners.0"), at(5, 5));
    assert_eq!(
        sm.find("listeners.0.routes.0.forward.target_groups.0.weight"),
        at(5, 76)
    );
}

#[test]
fn scalars_inside_sequences_are_items() {
    let sm = SourceMap::build("on: [connect_failure, 502]\nalpn:\n  - h2\n  - http/1.1\n");
    assert_eq!(sm.find("on.1"), at(1, 23));
    assert_eq!(sm.find("alpn.0"), at(3, 5));
    assert_eq!(sm.find("alpn.1"), at(4, 5));
}

#[test]
fn find_nearest_falls_back_to_an_ancestor() {
    let sm = SourceMap::build("admin:\n  bind: x\n");
    assert_eq!(sm.find_nearest("admin.bind.deeper.0"), at(2, 3));
    assert_eq!(sm.find_nearest("shutdown.timeout"), None);
}

#[test]
fn anchors_aliases_and_merges_do_not_confuse_the_walk() {
    let text = yaml(
        r#"
x: &x a
target_groups:
  - &base
    name: a
    targets: [ { address: "127.0.0.1:1" } ]
  - <<: *base
    name: b
  - { name: c, failover: *x }
"#,
    );
    let sm = SourceMap::build(&text);
    assert_eq!(sm.find("x"), at(1, 1));
    assert_eq!(sm.find("target_groups.0.name"), at(4, 5));
    assert_eq!(sm.find("target_groups.1.<<"), at(6, 5));
    assert_eq!(sm.find("target_groups.1.name"), at(7, 5));
    assert_eq!(sm.find("target_groups.2.failover"), at(8, 16));
}

#[test]
fn complex_keys_do_not_shift_later_paths() {
    let sm = SourceMap::build("? [a, b]\n: 1\n? { c: d }\n: 2\nworkers: 3\n");
    assert_eq!(sm.find("workers"), at(5, 1));
}

#[test]
fn aliases_load_and_merge_keys_apply() {
    let c = parse_ok(&yaml(
        r#"
target_groups:
  - { name: &a first, targets: &t [ { address: "127.0.0.1:1" } ] }
  - { name: second, targets: *t, failover: *a }
"#,
    ));
    assert_eq!(c.target_groups[1].targets.len(), 1);
    assert_eq!(c.target_groups[1].failover.as_deref(), Some("first"));
    // YAML 1.1 merge keys, which serde_yaml 0.9 leaves to the caller: the
    // keys of the merged mapping, overridden by the item's own, one or a
    // list of several merged.
    let c = parse_ok(&yaml(
        r#"
target_groups:
  - &base
    name: a
    health_check: &hc { path: /ready, interval: 20s }
    targets: [ { address: "127.0.0.1:1" } ]
  - <<: *base
    name: b
  - <<: [ *base, { slow_start: 10s } ]
    name: c
    health_check: { <<: *hc, path: /live }
"#,
    ));
    let g = &c.target_groups;
    assert_eq!(
        g.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(g[1].health_check.path, "/ready");
    assert_eq!(g[1].targets.len(), 1);
    assert_eq!(g[2].slow_start, std::time::Duration::from_secs(10));
    assert_eq!(g[2].health_check.path, "/live");
    assert_eq!(
        g[2].health_check.interval,
        std::time::Duration::from_secs(20)
    );
    // A `<<` that is quoted is an ordinary key, and unknown.
    super::assert_only_error(
        "target_groups:\n  - &base { name: a }\n  - \"<<\": *base\n    name: b\n",
        3,
        5,
        "unknown field `<<`",
    );
}

#[test]
fn errors_in_a_file_with_merge_keys_still_say_what_and_near_where() {
    // A type error found after the merge: serde has no place for it.
    let errs = super::errors(&yaml(
        r#"
target_groups:
  - &base { name: a, health_check: { interval: soon } }
  - <<: *base
    name: b
"#,
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].location, None);
    assert!(errs[0].message.contains("soon"), "{}", errs[0].message);
    assert!(
        errs[0].message.contains("merge keys"),
        "{}",
        errs[0].message
    );
    // A rule broken by a merged key points at the item that merged it.
    super::assert_error(
        &yaml(
            r#"
target_groups:
  - &base { name: a }
  - <<: *base
"#,
        ),
        3,
        5,
        "duplicate",
    );
}
