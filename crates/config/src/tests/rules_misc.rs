//! Certificates and key files, outlier detection, retries, stickiness,
//! connection limits.

use super::{
    assert_error, assert_error_in, assert_only_error, cert_dir, errors, errors_in, parse_in,
    parse_ok, with_groups, yaml,
};

const TLS_LISTENER: &str = r#"
listeners:
  - name: s
    bind: 127.0.0.1:0
    protocol: https
    tls:
      certificates:
        - cert_file: certs/a.pem
          key_file: certs/a.key
"#;

#[test]
fn unreadable_certificate_and_key_files_are_named_with_the_os_error() {
    let dir = super::temp_dir("missing");
    let errs = errors_in(&yaml(TLS_LISTENER), &dir);
    assert_eq!(errs.len(), 2, "{errs:?}");
    let cert = dir.join("certs/a.pem");
    let key = dir.join("certs/a.key");
    assert_error_in(
        &errs,
        7,
        11,
        &format!(
            "listener \"s\": cert_file cannot read \"{}\": No such file",
            cert.display()
        ),
    );
    assert_error_in(
        &errs,
        8,
        11,
        &format!(
            "listener \"s\": key_file cannot read \"{}\": No such file",
            key.display()
        ),
    );
}

#[test]
fn certificate_and_key_files_need_pem_blocks() {
    let dir = cert_dir();
    std::fs::write(dir.join("certs/a.pem"), "not a certificate\n").unwrap();
    std::fs::write(dir.join("certs/a.key"), super::CERT_PEM).unwrap();
    let errs = errors_in(&yaml(TLS_LISTENER), &dir);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_error_in(&errs, 7, 11, "has no -----BEGIN CERTIFICATE----- line");
    assert_error_in(&errs, 8, 11, "has no -----BEGIN ... PRIVATE KEY----- line");

    // Any private key flavour will do; absolute paths are taken as they are.
    std::fs::write(dir.join("certs/a.pem"), super::CERT_PEM).unwrap();
    std::fs::write(
        dir.join("certs/a.key"),
        "-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let c = parse_in(&yaml(TLS_LISTENER), &dir);
    assert_eq!(
        c.listeners[0].tls.as_ref().unwrap().certificates[0].key_file,
        dir.join("certs/a.key")
    );
    let absolute = yaml(TLS_LISTENER)
        .replace(
            "certs/a.pem",
            &dir.join("certs/a.pem").display().to_string(),
        )
        .replace(
            "certs/a.key",
            &dir.join("certs/a.key").display().to_string(),
        );
    parse_in(&absolute, std::path::Path::new("/elsewhere"));
}

#[test]
fn outlier_detection_ranges() {
    let text = yaml(
        r#"
target_groups:
  - name: g
    outlier_detection: { consecutive_failures: 0, max_ejected_percent: 101 }
"#,
    );
    assert_error(
        &text,
        3,
        26,
        "target group \"g\": outlier_detection consecutive_failures must be at least 1",
    );
    assert_error(
        &text,
        3,
        51,
        "target group \"g\": outlier_detection max_ejected_percent 101 is out of range 0..=100",
    );
    assert_eq!(errors(&text).len(), 2);
    parse_ok("target_groups: [ { name: g, outlier_detection: { consecutive_failures: 1, max_ejected_percent: 0 } } ]\n");
}

#[test]
fn retry_attempts_at_most_10() {
    assert_only_error(
        "target_groups:\n  - name: g\n    retries: { attempts: 11 }\n",
        3,
        16,
        "target group \"g\": retries attempts 11 is out of range 0..=10",
    );
    let c = parse_ok("target_groups: [ { name: g, retries: { attempts: 0 } }, { name: h, retries: { attempts: 10 } } ]\n");
    assert_eq!(c.target_groups[0].retries.attempts, 0);
}

#[test]
fn retry_conditions() {
    let c =
        parse_ok("target_groups: [ { name: g, retries: { on: [\"502\", 503, 503, reset] } } ]\n");
    let on = &c.target_groups[0].retries.on;
    assert_eq!(on.statuses, [502, 503]);
    assert!(on.reset && !on.connect_failure);

    let text = yaml(
        r#"
target_groups:
  - name: g
    retries:
      on: [timeout, 404, 600]
"#,
    );
    assert_error(&text, 4, 12, "target group \"g\": retries on \"timeout\" must be connect_failure, reset or a status 500..=599");
    assert_error(
        &text,
        4,
        21,
        "retries on status 404 is out of range 500..=599",
    );
    assert_error(
        &text,
        4,
        26,
        "retries on status 600 is out of range 500..=599",
    );
    assert_eq!(errors(&text).len(), 3);
}

#[test]
fn stickiness_cookie_names_must_be_tokens() {
    let text = with_groups(
        r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - name: r
        forward: { target_group: web, stickiness: { cookie: "a;b" } }
"#,
    );
    assert_only_error(
        &text,
        6,
        53,
        "route \"r\": stickiness cookie \"a;b\" is not a valid cookie name",
    );
    assert_only_error(
        "target_groups:\n  - { name: g, stickiness: { cookie: \"\" } }\n",
        2,
        30,
        "target group \"g\": stickiness cookie \"\" is not a valid cookie name",
    );
}

#[test]
fn stickiness_duration_above_zero() {
    assert_only_error(
        "target_groups:\n  - { name: g, stickiness: { duration: 0s } }\n",
        2,
        30,
        "target group \"g\": stickiness duration must be more than 0s",
    );
}

#[test]
fn max_connections_at_least_1() {
    assert_only_error(
        "listeners:\n  - { name: l, bind: 127.0.0.1:0, max_connections: 0 }\n",
        2,
        35,
        "listener \"l\": max_connections must be at least 1",
    );
}

#[test]
fn limits_at_least_1_when_given() {
    let text = "target_groups:\n  - name: g\n    limits: { max_connections: 0, max_pending: 0, max_requests: 1 }\n";
    assert_error(
        text,
        3,
        15,
        "target group \"g\": limits max_connections must be at least 1",
    );
    assert_error(
        text,
        3,
        35,
        "target group \"g\": limits max_pending must be at least 1",
    );
    assert_eq!(errors(text).len(), 2);
}

#[test]
fn access_log_path_must_not_be_empty() {
    assert_only_error(
        "access_log: { path: \"\" }\n",
        1,
        15,
        "access_log: path must not be empty",
    );
}
