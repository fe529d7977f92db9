//! serde-level errors (syntax, unknown keys, types, durations), file
//! loading, versions, error display, and the small parsers.

use std::path::Path;
use std::time::Duration;

use super::{assert_only_error, errors, temp_dir, yaml};
use crate::*;

#[test]
fn unknown_key_is_located_and_named() {
    let text = yaml(
        r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - name: a
        match: { pathprefix: /x }
"#,
    );
    assert_only_error(
        &text,
        6,
        18,
        "listeners[0].routes[0].match: unknown field `pathprefix`, expected one of",
    );
    let errs = errors(&text);
    assert!(
        !errs[0].message.contains("at line"),
        "position is not repeated: {}",
        errs[0].message
    );
}

#[test]
fn unknown_top_level_key() {
    assert_only_error("workers: 1\nwrokers: 2\n", 2, 1, "unknown field `wrokers`");
}

#[test]
fn yaml_syntax_error_is_located() {
    let errs = errors("workers: 1\nadmin: { bind: 127.0.0.1:1\nlisteners: []\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].location.is_some(), "{errs:?}");
    assert_eq!(errs[0].location.unwrap().line, 3, "{errs:?}");
}

#[test]
fn wrong_type_is_located() {
    assert_only_error(
        "workers: many\n",
        1,
        10,
        "workers: invalid type: string \"many\", expected usize",
    );
    assert_only_error(
        "listeners: { a: 1 }\n",
        1,
        12,
        "listeners: invalid type: map, expected a sequence",
    );
    assert_only_error("- 1\n", 1, 1, "expected a mapping of configuration keys");
}

#[test]
fn missing_required_field_is_reported() {
    assert_only_error(
        "listeners:\n  - { name: a }\n",
        2,
        5,
        "listeners[0]: missing field `bind`",
    );
}

#[test]
fn bad_duration_is_located_at_the_value() {
    let text = yaml(
        r#"
target_groups:
  - name: g
    health_check: { interval: 5 }
"#,
    );
    assert_only_error(
        &text,
        3,
        31,
        "target_groups[0].health_check.interval: invalid duration \"5\": missing unit",
    );
    assert_only_error(
        "shutdown:\n  timeout: 1.5s\n",
        2,
        12,
        "fractions are not supported",
    );
}

#[test]
fn empty_configuration_is_an_error() {
    for text in ["", "\n\n", "# only a comment\n", "---\n", "~\n"] {
        let e = parse_str(text, "e.yaml", Path::new(".")).unwrap_err();
        assert_eq!(e.to_string(), "e.yaml: empty configuration", "{text:?}");
    }
}

#[test]
fn load_file_reads_names_and_resolves_against_the_file() {
    let dir = temp_dir("load");
    let path = dir.join("sw.yaml");
    std::fs::write(&path, "access_log: { path: access.log }\n").unwrap();
    let loaded = load_file(&path).unwrap();
    assert_eq!(
        loaded.config.access_log.path,
        LogPath::File(dir.join("access.log"))
    );

    std::fs::write(&path, "workers: x\n").unwrap();
    let e = load_file(&path).unwrap_err();
    assert_eq!(e.0[0].origin, path.display().to_string());
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:10: ", path.display())),
        "{e}"
    );

    let missing = dir.join("missing.yaml");
    let e = load_file(&missing).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].location, None);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read file: ", missing.display())),
        "{shown}"
    );
    assert!(shown.contains("No such file"), "{shown}");
}

#[test]
fn version_is_a_stable_hash_of_the_bytes() {
    let a = parse_str("workers: 1\n", "a", Path::new("."))
        .unwrap()
        .version;
    let b = parse_str("workers: 1\n", "b", Path::new("."))
        .unwrap()
        .version;
    let c = parse_str("workers: 2\n", "a", Path::new("."))
        .unwrap()
        .version;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 16);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    // FNV-1a 64 of the empty input is its offset basis; of "a", a known value.
    assert_eq!(crate::version_of(b""), "cbf29ce484222325");
    assert_eq!(crate::version_of(b"a"), "af63dc4c8601ec8c");
}

#[test]
fn errors_display_with_and_without_location() {
    let located = ConfigError {
        origin: "config/x.yaml".into(),
        location: Some(Location {
            line: 12,
            column: 7,
        }),
        message: "route \"web\" forwards to unknown target group \"web-gren\"".into(),
    };
    assert_eq!(
        located.to_string(),
        "config/x.yaml:12:7: route \"web\" forwards to unknown target group \"web-gren\""
    );
    let bare = ConfigError {
        origin: "x.yaml".into(),
        location: None,
        message: "boom".into(),
    };
    assert_eq!(bare.to_string(), "x.yaml: boom");
    let all = ConfigErrors(vec![located, bare]);
    assert_eq!(all.to_string().lines().count(), 2);
    let _: &dyn std::error::Error = &all;
}

#[test]
fn all_semantic_errors_are_reported_in_file_order() {
    let errs = errors(&yaml(
        r#"
target_groups:
  - { name: a, failover: nope }
  - { name: b, targets: [ { address: nohost } ] }
  - { name: a }
"#,
    ));
    let lines: Vec<usize> = errs.iter().map(|e| e.location.unwrap().line).collect();
    assert_eq!(lines, [2, 3, 4], "{errs:?}");
}

#[test]
fn durations_parse() {
    let ok = [
        ("250ms", Duration::from_millis(250)),
        ("5s", Duration::from_secs(5)),
        ("1m", Duration::from_secs(60)),
        ("1h", Duration::from_secs(3600)),
        ("0s", Duration::ZERO),
        ("0", Duration::ZERO),
        ("90s", Duration::from_secs(90)),
    ];
    for (s, d) in ok {
        assert_eq!(parse_duration(s), Ok(d), "{s}");
    }
}

#[test]
fn bad_durations_say_why() {
    let bad = [
        ("", "expected a number"),
        ("5", "missing unit"),
        ("s", "expected a whole number"),
        ("-5s", "expected a whole number"),
        ("5x", "unknown unit \"x\""),
        ("5 s", "unknown unit \" s\""),
        ("1.5s", "fractions are not supported"),
        ("1m30s", "unknown unit \"m30s\""),
        ("99999999999999999999s", "number too large"),
        ("9999999999999999h", "too large"),
    ];
    for (s, why) in bad {
        let e = parse_duration(s).unwrap_err();
        assert!(e.contains(why), "{s:?}: {e}");
        assert!(e.starts_with(&format!("invalid duration \"{s}\"")), "{e}");
    }
}

#[test]
fn status_matchers_parse() {
    let m: StatusMatcher = "200".parse().unwrap();
    assert_eq!(m.ranges, [(200, 200)]);
    let m: StatusMatcher = "200,204".parse().unwrap();
    assert_eq!(m.ranges, [(200, 200), (204, 204)]);
    let m: StatusMatcher = "200-299".parse().unwrap();
    assert_eq!(m.ranges, [(200, 299)]);
    let m: StatusMatcher = "200-299, 301 ,404-404".parse().unwrap();
    assert_eq!(m.ranges, [(200, 299), (301, 301), (404, 404)]);
}

#[test]
fn bad_status_matchers_say_why() {
    for (s, why) in [
        ("", "empty item"),
        ("200,", "empty item"),
        ("abc", "\"abc\" is not a status code"),
        ("+200", "\"+200\" is not a status code"),
        ("99", "status 99 is outside 100..=599"),
        ("600", "status 600 is outside 100..=599"),
        ("200-", "\"\" is not a status code"),
        ("299-200", "range 299-200 is reversed"),
        ("200-300-400", "is not a status code"),
    ] {
        let e = s.parse::<StatusMatcher>().unwrap_err();
        assert!(e.contains(why), "{s:?}: {e}");
    }
}

#[test]
fn status_matcher_matches() {
    let m: StatusMatcher = "200-299,304".parse().unwrap();
    for s in [200, 250, 299, 304] {
        assert!(m.matches(s), "{s}");
    }
    for s in [199, 300, 303, 305, 500] {
        assert!(!m.matches(s), "{s}");
    }
}

#[test]
fn matcher_written_as_a_yaml_integer_is_accepted() {
    let c = super::parse_ok("target_groups: [ { name: g, health_check: { matcher: 204 } } ]\n");
    assert_eq!(c.target_groups[0].health_check.matcher.ranges, [(204, 204)]);
}

#[test]
fn a_duplicate_key_is_placed_at_its_second_occurrence() {
    // serde alone places it at the start of the mapping that holds it.
    assert_only_error(
        "admin: { bind: 127.0.0.1:0 }\nworkers: 1\nworkers: 2\n",
        3,
        1,
        "duplicate key `workers`",
    );
    assert_only_error(
        "admin: { bind: 127.0.0.1:0, bind: 127.0.0.1:1 }\n",
        1,
        29,
        "duplicate key `admin.bind`",
    );
    let text = yaml(
        r#"
target_groups:
  - name: g
    balance: random
    balance: round_robin
    targets: [ { address: "127.0.0.1:1" } ]
"#,
    );
    let line = text
        .lines()
        .position(|l| l.contains("round_robin"))
        .map_or(0, |i| i + 1);
    assert_only_error(&text, line, 5, "duplicate key `target_groups.0.balance`");
}

#[test]
fn a_byte_order_mark_is_not_content() {
    let text = "\u{feff}admin: { bind: 127.0.0.1:0 }\nworkers: 2\n";
    let loaded = parse_str(text, "bom.yaml", Path::new(".")).unwrap();
    assert_eq!(loaded.config.workers, 2);
    // The version is the file's bytes, as the watcher hashes them.
    assert_eq!(loaded.version, version_of(text.as_bytes()));
}
