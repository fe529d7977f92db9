//! Addresses: parsing of binds and targets, and bind clashes between
//! listeners and the admin API.

use super::{assert_error, assert_only_error, errors, parse_ok, yaml};
use crate::validate::parse_address;
use crate::Address;

fn addr(host: &str, port: u16) -> Address {
    Address {
        host: host.into(),
        port,
    }
}

#[test]
fn the_same_bind_twice() {
    assert_only_error(
        &yaml(
            r#"
listeners:
  - { name: a, bind: 127.0.0.1:8080 }
  - name: b
    bind: 127.0.0.1:8080
"#,
        ),
        4,
        5,
        "listener \"b\": bind address 127.0.0.1:8080 clashes with listener \"a\" bound to 127.0.0.1:8080 (line 2)",
    );
}

#[test]
fn a_wildcard_bind_clashes_with_any_host_on_its_port() {
    let text = yaml(
        r#"
listeners:
  - { name: a, bind: 10.0.0.1:8080 }
  - { name: b, bind: 0.0.0.0:8080 }
  - { name: c, bind: "[::]:8081" }
  - { name: d, bind: "[::1]:8081" }
  - { name: e, bind: 10.0.0.2:8080 }
"#,
    );
    assert_error(
        &text,
        3,
        16,
        "listener \"b\": bind address 0.0.0.0:8080 clashes with listener \"a\"",
    );
    assert_error(
        &text,
        5,
        16,
        "listener \"d\": bind address [::1]:8081 clashes with listener \"c\"",
    );
    assert_error(
        &text,
        6,
        16,
        "listener \"e\": bind address 10.0.0.2:8080 clashes with listener \"b\"",
    );
    assert_eq!(errors(&text).len(), 3);
    parse_ok(
        "listeners:\n  - { name: a, bind: 10.0.0.1:80 }\n  - { name: b, bind: 10.0.0.2:80 }\n",
    );
}

#[test]
fn a_listener_on_the_default_admin_bind() {
    assert_only_error(
        "listeners:\n  - { name: a, bind: 127.0.0.1:9901 }\n",
        2,
        16,
        "listener \"a\": bind address 127.0.0.1:9901 clashes with admin bound to 127.0.0.1:9901 (the default)",
    );
}

#[test]
fn the_admin_bind_after_a_listener_is_the_second() {
    assert_only_error(
        "listeners:\n  - { name: a, bind: 0.0.0.0:7000 }\nadmin:\n  bind: 127.0.0.1:7000\n",
        4,
        3,
        "admin: bind address 127.0.0.1:7000 clashes with listener \"a\" bound to 0.0.0.0:7000 (line 2)",
    );
}

#[test]
fn port_zero_never_clashes() {
    parse_ok(&yaml(
        r#"
admin: { bind: 127.0.0.1:0 }
listeners:
  - { name: a, bind: 127.0.0.1:0 }
  - { name: b, bind: 0.0.0.0:0 }
"#,
    ));
}

#[test]
fn bad_addresses_name_their_field() {
    let text = yaml(
        r#"
admin: { bind: "localhost" }
listeners:
  - { name: a, bind: "1.2.3:80" }
target_groups:
  - name: g
    targets: [ { address: "127.0.0.1:0" }, { address: "::1:80" } ]
"#,
    );
    assert_error(
        &text,
        1,
        10,
        "admin: invalid bind address \"localhost\": missing `:PORT`",
    );
    assert_error(
        &text,
        3,
        16,
        "listener \"a\": invalid bind address \"1.2.3:80\": `1.2.3` is not an IPv4 address",
    );
    assert_error(
        &text,
        6,
        18,
        "target group \"g\": invalid target address \"127.0.0.1:0\": port 0 is outside 1..=65535",
    );
    assert_error(
        &text,
        6,
        46,
        "invalid target address \"::1:80\": an IPv6 address needs brackets",
    );
    assert_eq!(errors(&text).len(), 4);
}

#[test]
fn address_forms() {
    assert_eq!(parse_address("127.0.0.1:80", 1), Ok(addr("127.0.0.1", 80)));
    assert_eq!(
        parse_address("Example.COM:443", 1),
        Ok(addr("example.com", 443))
    );
    assert_eq!(parse_address("[::1]:8080", 1), Ok(addr("::1", 8080)));
    assert_eq!(
        parse_address("[::1]:8080", 1).unwrap().to_string(),
        "[::1]:8080"
    );
    assert_eq!(parse_address("0.0.0.0:0", 0), Ok(addr("0.0.0.0", 0)));
    assert_eq!(
        parse_address("my_host-1.internal:65535", 1),
        Ok(addr("my_host-1.internal", 65535))
    );
    assert_eq!(
        Address::parse_target("10.0.0.1:9003"),
        Ok(addr("10.0.0.1", 9003))
    );
    assert!(Address::parse_target("10.0.0.1:0").is_err());
    assert_eq!(Address::parse_bind("[::]:0"), Ok(addr("::", 0)));
    for (bad, why) in [
        ("127.0.0.1", "missing `:PORT`"),
        (":80", "missing host"),
        ("127.0.0.1:", "is not a number"),
        ("127.0.0.1:65536", "is not a number"),
        ("127.0.0.1:-1", "is not a number"),
        ("127.0.0.1:+80", "is not a number"),
        ("127.0.0.1:0", "port 0 is outside 1..=65535"),
        ("[::1]", "missing `:PORT` after `]`"),
        ("[::1:80", "missing `]`"),
        ("[nope]:80", "is not an IPv6 address"),
        ("::1:80", "needs brackets"),
        ("300.1.1.1:80", "is not an IPv4 address"),
        ("bad host:80", "is not a host name"),
        ("a..b:80", "is not a host name"),
        ("http://x:80", "without a scheme"),
    ] {
        let e = parse_address(bad, 1).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}
