//! Absent fields get the defaults documented in model.rs and INTERFACE.md.

use std::time::Duration;

use super::{cert_dir, parse_in, parse_ok, yaml};
use crate::*;

#[test]
fn minimal_config_gets_every_default() {
    let c = parse_ok(&yaml(
        r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - name: r
        forward: { target_group: g }
target_groups:
  - name: g
    targets: [ { address: 127.0.0.1:9001 } ]
"#,
    ));
    assert_eq!(c.workers, 0);
    assert_eq!(
        c.admin.bind,
        Address {
            host: "127.0.0.1".into(),
            port: 9901
        }
    );
    assert_eq!(
        c.shutdown,
        Shutdown {
            drain_delay: Duration::ZERO,
            timeout: Duration::from_secs(30)
        }
    );
    assert_eq!(
        c.access_log,
        AccessLog {
            enabled: true,
            path: LogPath::Stdout
        }
    );

    let l = &c.listeners[0];
    assert_eq!(
        l.protocol,
        ListenerProtocol::Http,
        "protocol defaults to http"
    );
    assert_eq!(
        l.timeouts,
        ListenerTimeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60)
        }
    );
    assert_eq!(l.max_connections, 10000);
    assert_eq!(l.tls, None);
    assert_eq!(l.forward, None);
    assert_eq!(l.routes[0].matcher, RouteMatch::default());

    let g = &c.target_groups[0];
    assert_eq!(g.protocol, GroupProtocol::Http);
    assert_eq!(g.balance, Balance::RoundRobin);
    assert_eq!(g.targets[0].weight, 1);
    assert_eq!(
        g.health_check,
        HealthCheck {
            protocol: CheckProtocol::Http,
            h2c: false,
            path: "/".into(),
            port: None,
            host: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            matcher: StatusMatcher {
                ranges: vec![(200, 399)]
            },
        }
    );
    assert_eq!(g.outlier_detection, None);
    assert_eq!(g.deregistration_delay, Duration::from_secs(30));
    assert_eq!(g.slow_start, Duration::ZERO);
    assert!(g.fail_open);
    assert_eq!(g.failover, None);
    assert_eq!(g.stickiness, None);
    assert_eq!(
        g.retries,
        Retries {
            attempts: 2,
            backoff: Duration::from_millis(25),
            on: RetryOn {
                connect_failure: true,
                reset: false,
                statuses: vec![]
            },
        }
    );
    assert_eq!(
        g.timeouts,
        GroupTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    );
    assert_eq!(g.limits, Limits::default());
    assert_eq!(g.proxy_protocol, None);
}

#[test]
fn zero_listeners_is_valid() {
    let c = parse_ok("admin: { bind: 127.0.0.1:0 }\n");
    assert!(c.listeners.is_empty() && c.target_groups.is_empty());
}

#[test]
fn tcp_groups_default_to_tcp_checks_and_sections_fill_their_defaults() {
    let c = parse_ok(&yaml(
        r#"
target_groups:
  - { name: t, protocol: tcp, health_check: { interval: 20s } }
  - name: h
    protocol: http2
    health_check: { healthy_threshold: 1 }
    outlier_detection: {}
    stickiness: {}
    retries: { on: [reset] }
    limits: { max_pending: 1 }
"#,
    ));
    let t = &c.target_groups[0];
    assert_eq!(t.health_check.protocol, CheckProtocol::Tcp);
    assert_eq!(t.health_check.interval, Duration::from_secs(20));
    assert_eq!(t.health_check.timeout, Duration::from_secs(5));
    let h = &c.target_groups[1];
    assert_eq!(h.health_check.protocol, CheckProtocol::Http);
    // An http2 group's checks speak its protocol on the traffic port.
    assert!(h.health_check.h2c);
    assert!(!t.health_check.h2c);
    let c = parse_ok(&yaml(
        "target_groups:\n  - { name: m, protocol: http2, health_check: { port: 9090 } }\n",
    ));
    assert!(
        !c.target_groups[0].health_check.h2c,
        "a management port is HTTP/1.1"
    );
    assert_eq!(h.health_check.healthy_threshold, 1);
    assert_eq!(h.health_check.unhealthy_threshold, 3);
    assert_eq!(
        h.outlier_detection,
        Some(OutlierDetection {
            consecutive_failures: 5,
            ejection: Duration::from_secs(30),
            max_ejected_percent: 50,
        })
    );
    assert_eq!(
        h.stickiness,
        Some(Stickiness {
            cookie: "SWYD".into(),
            duration: Duration::from_secs(3600)
        })
    );
    assert_eq!(h.retries.attempts, 2);
    assert_eq!(
        h.retries.on,
        RetryOn {
            connect_failure: false,
            reset: true,
            statuses: vec![]
        },
        "a given `on` replaces the default list"
    );
    assert_eq!(
        h.limits,
        Limits {
            max_connections: None,
            max_pending: Some(1),
            max_requests: None
        }
    );
}

#[test]
fn route_action_defaults() {
    let c = parse_ok(&super::with_groups(
        r#"
listeners:
  - name: l
    bind: 127.0.0.1:0
    routes:
      - { name: a, forward: { target_group: web, stickiness: {} } }
      - { name: b, forward: { target_groups: [ { name: web }, { name: api, weight: 0 } ] } }
      - { name: c, redirect: { scheme: HTTPS } }
      - { name: d, fixed_response: {} }
"#,
    ));
    let routes = &c.listeners[0].routes;
    assert_eq!(
        routes[0].action,
        RouteAction::Forward(Forward {
            target_groups: vec![WeightedGroup {
                name: "web".into(),
                weight: 1
            }],
            stickiness: Some(Stickiness {
                cookie: "SWYG".into(),
                duration: Duration::from_secs(3600)
            }),
        })
    );
    assert_eq!(
        routes[1].action,
        RouteAction::Forward(Forward {
            target_groups: vec![
                WeightedGroup {
                    name: "web".into(),
                    weight: 1
                },
                WeightedGroup {
                    name: "api".into(),
                    weight: 0
                },
            ],
            stickiness: None,
        })
    );
    let RouteAction::Redirect(r) = &routes[2].action else {
        panic!("redirect")
    };
    assert_eq!(r.status, 301);
    assert_eq!(r.scheme.as_deref(), Some("https"), "scheme is lower-cased");
    assert_eq!(
        routes[3].action,
        RouteAction::FixedResponse(FixedResponse {
            status: 200,
            content_type: "text/plain".into(),
            body: String::new(),
        })
    );
}

#[test]
fn tls_alpn_defaults_depend_on_the_protocol() {
    let dir = cert_dir();
    let c = parse_in(
        &yaml(
            r#"
listeners:
  - name: s
    bind: 127.0.0.1:0
    protocol: https
    tls: { certificates: [ { cert_file: certs/a.pem, key_file: certs/a.key } ] }
  - name: t
    bind: 127.0.0.1:0
    protocol: tls
    tls: { certificates: [ { cert_file: certs/a.pem, key_file: certs/a.key } ] }
    forward: { target_group: pg }
target_groups: [ { name: pg, protocol: tcp } ]
"#,
        ),
        &dir,
    );
    assert_eq!(
        c.listeners[0].tls.as_ref().unwrap().alpn,
        ["h2", "http/1.1"]
    );
    assert!(c.listeners[1].tls.as_ref().unwrap().alpn.is_empty());
}

#[test]
fn access_log_paths() {
    let dir = super::temp_dir("log");
    let c = parse_in("access_log: { path: stderr, enabled: false }\n", &dir);
    assert_eq!(
        c.access_log,
        AccessLog {
            enabled: false,
            path: LogPath::Stderr
        }
    );
    let c = parse_in("access_log: { path: logs/access.json }\n", &dir);
    assert_eq!(
        c.access_log.path,
        LogPath::File(dir.join("logs/access.json"))
    );
    let c = parse_in("access_log: { path: /var/log/a.json }\n", &dir);
    assert_eq!(c.access_log.path, LogPath::File("/var/log/a.json".into()));
}
