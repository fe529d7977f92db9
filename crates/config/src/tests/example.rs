//! The complete example of INTERFACE.md parses and means what it documents.

use std::time::Duration;

use super::cert_dir;
use crate::*;

/// Copied verbatim from /work/shared/INTERFACE.md; line 1 is `workers: 0`.
const EXAMPLE: &str = r##"workers: 0                      # runtime worker threads; 0 = one per CPU core

admin:
  bind: 127.0.0.1:9901          # admin API, /healthz, /readyz, /metrics

shutdown: { drain_delay: 0s, timeout: 30s }

access_log: { enabled: true, path: stdout }   # JSON lines; path may be a file

listeners:
  - name: public
    bind: 0.0.0.0:8080
    protocol: http               # http | https | tcp | tls
    timeouts: { header_read: 10s, idle: 60s }
    max_connections: 10000
    routes:                      # evaluated in order, first match wins
      - name: to-https
        match: { host: "*.example.com", path_prefix: /secure/ }
        redirect: { scheme: https, status: 301 }   # keeps host, path and query
      - name: api
        match:                   # every given condition must hold; `match` omitted = match all
          host: api.example.com  # exact, or "*.example.com" (any host ending in .example.com,
                                 #   not example.com itself); case-insensitive; port ignored
          path_prefix: /api/     # or path_exact: /x, or path_regex: "^/v[0-9]+/"
          method: GET
          headers: { x-canary: "always" }     # exact values, names case-insensitive
        forward:
          target_group: api      # one group ...
      - name: moved
        match: { path_prefix: /old/ }
        redirect: { location: "https://example.com/new/", status: 301 }
      - name: maintenance
        match: { path_prefix: /down }
        fixed_response: { status: 503, content_type: text/plain, body: "down for maintenance" }
      - name: web
        match: { path_prefix: / }
        forward:
          target_groups:         # ... or several, weighted (weights 0..=1000, not all 0)
            - { name: web-blue,  weight: 95 }
            - { name: web-green, weight: 5 }
          stickiness: { duration: 1h, cookie: SWYG }   # group stickiness; cookie default SWYG
    # no route matched -> 404 with a short body

  - name: secure
    bind: 0.0.0.0:8443
    protocol: https
    tls:                         # required for https and tls listeners, refused elsewhere
      certificates:              # chosen by SNI against each cert's names; first is the default
        - { cert_file: certs/a.pem, key_file: certs/a.key }
      alpn: [h2, http/1.1]       # https only
    routes:
      - name: all
        forward: { target_group: api }

  - name: postgres
    bind: 127.0.0.1:6432
    protocol: tcp                # tcp and tls listeners have forward instead of routes
    forward:
      target_groups: [ { name: pg, weight: 1 } ]

target_groups:
  - name: web-blue
    protocol: http               # http (HTTP/1.1) | http2 (h2c) | tcp
    balance: round_robin         # round_robin | least_request | random | consistent_hash
    targets:
      - { address: 127.0.0.1:9001, weight: 1 }   # weight 1..=1000, default 1
      - { address: 127.0.0.1:9002 }
    health_check:
      protocol: http             # http | tcp | none (none = always healthy)
      path: /health              # default /
      port: 9101                 # default: the target's own port
      host: web.internal         # Host header of the check, default the target address
      interval: 5s
      timeout: 2s                # must be < interval
      healthy_threshold: 2       # consecutive passes: unhealthy -> healthy
      unhealthy_threshold: 2     # consecutive failures: healthy or initial -> unhealthy
      matcher: "200-399"         # "200", "200,204", "200-299"
    outlier_detection:           # passive: real traffic ejects failing targets
      consecutive_failures: 5    # 5xx answers or connect/reset errors in a row
      ejection: 30s              # base; doubles on each repeat ejection, capped at 10x
      max_ejected_percent: 50
    deregistration_delay: 30s    # draining time, see "Target states"
    slow_start: 0s               # ramp a newly healthy target's share linearly over this time
    fail_open: true              # no healthy target: true = use all non-draining targets, false = 503
    failover: web-green          # no healthy target: send to this group instead (wins over fail_open)
    stickiness: { cookie: SWYD, duration: 1h }   # target stickiness, http only
    retries: { attempts: 2, backoff: 25ms, on: [connect_failure, reset, 502, 503, 504] }
    timeouts: { connect: 2s, request: 30s, idle: 90s }
    limits: { max_connections: 1024, max_pending: 256, max_requests: 4096 }

  - name: web-green
    targets: [ { address: 127.0.0.1:9011 }, { address: 127.0.0.1:9012 } ]

  - name: api
    balance: consistent_hash
    hash_on: header:x-user       # consistent_hash only: header:NAME | cookie:NAME | client_ip
    targets: [ { address: 127.0.0.1:9021 }, { address: 127.0.0.1:9022 } ]

  - name: pg
    protocol: tcp
    targets: [ { address: 127.0.0.1:5432 } ]
    proxy_protocol: v2           # tcp groups only: send a PROXY v2 header with the client address
"##;

#[test]
fn interface_example_is_valid_and_means_what_it_says() {
    let dir = cert_dir();
    let loaded = parse_str(EXAMPLE, "example.yaml", &dir).unwrap();
    let c = &loaded.config;

    assert_eq!(c.workers, 0);
    assert_eq!(c.admin.bind.to_string(), "127.0.0.1:9901");
    assert_eq!(c.shutdown.drain_delay, Duration::ZERO);
    assert_eq!(c.shutdown.timeout, Duration::from_secs(30));
    assert_eq!(
        c.access_log,
        AccessLog {
            enabled: true,
            path: LogPath::Stdout
        }
    );
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.target_groups.len(), 4);

    let public = &c.listeners[0];
    assert_eq!(public.name, "public");
    assert_eq!(
        public.bind,
        Address {
            host: "0.0.0.0".into(),
            port: 8080
        }
    );
    assert_eq!(public.protocol, ListenerProtocol::Http);
    assert_eq!(public.timeouts.header_read, Duration::from_secs(10));
    assert_eq!(public.timeouts.idle, Duration::from_secs(60));
    assert_eq!(public.max_connections, 10000);
    assert!(public.tls.is_none() && public.forward.is_none());
    let names: Vec<&str> = public.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["to-https", "api", "moved", "maintenance", "web"]);

    let to_https = &public.routes[0];
    assert_eq!(
        to_https.matcher.host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
    assert_eq!(
        to_https.matcher.path,
        Some(PathMatch::Prefix("/secure/".into()))
    );
    assert_eq!(
        to_https.action,
        RouteAction::Redirect(Redirect {
            location: None,
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: None,
            status: 301,
        })
    );

    let api = &public.routes[1];
    assert_eq!(
        api.matcher,
        RouteMatch {
            host: Some(HostMatch::Exact("api.example.com".into())),
            path: Some(PathMatch::Prefix("/api/".into())),
            method: Some("GET".into()),
            headers: vec![("x-canary".into(), "always".into())],
        }
    );
    assert_eq!(
        api.action,
        RouteAction::Forward(Forward {
            target_groups: vec![WeightedGroup {
                name: "api".into(),
                weight: 1
            }],
            stickiness: None,
        })
    );

    let RouteAction::Redirect(moved) = &public.routes[2].action else {
        panic!("moved is a redirect");
    };
    assert_eq!(moved.location.as_deref(), Some("https://example.com/new/"));
    assert_eq!(moved.status, 301);

    assert_eq!(
        public.routes[3].action,
        RouteAction::FixedResponse(FixedResponse {
            status: 503,
            content_type: "text/plain".into(),
            body: "down for maintenance".into(),
        })
    );

    assert_eq!(
        public.routes[4].action,
        RouteAction::Forward(Forward {
            target_groups: vec![
                WeightedGroup {
                    name: "web-blue".into(),
                    weight: 95
                },
                WeightedGroup {
                    name: "web-green".into(),
                    weight: 5
                },
            ],
            stickiness: Some(Stickiness {
                cookie: "SWYG".into(),
                duration: Duration::from_secs(3600)
            }),
        })
    );

    let secure = &c.listeners[1];
    assert_eq!(secure.protocol, ListenerProtocol::Https);
    let tls = secure.tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates,
        vec![CertificatePair {
            cert_file: dir.join("certs/a.pem"),
            key_file: dir.join("certs/a.key")
        }]
    );
    assert_eq!(tls.alpn, ["h2", "http/1.1"]);
    assert_eq!(secure.routes.len(), 1);
    assert_eq!(secure.routes[0].matcher, RouteMatch::default());

    let pg_listener = &c.listeners[2];
    assert_eq!(pg_listener.protocol, ListenerProtocol::Tcp);
    assert!(pg_listener.routes.is_empty());
    assert_eq!(
        pg_listener.forward,
        Some(Forward {
            target_groups: vec![WeightedGroup {
                name: "pg".into(),
                weight: 1
            }],
            stickiness: None
        })
    );

    let blue = c.group("web-blue").unwrap();
    assert_eq!(blue.protocol, GroupProtocol::Http);
    assert_eq!(blue.balance, Balance::RoundRobin);
    assert_eq!(
        blue.targets,
        vec![
            TargetSpec {
                address: Address {
                    host: "127.0.0.1".into(),
                    port: 9001
                },
                weight: 1
            },
            TargetSpec {
                address: Address {
                    host: "127.0.0.1".into(),
                    port: 9002
                },
                weight: 1
            },
        ]
    );
    assert_eq!(
        blue.health_check,
        HealthCheck {
            protocol: CheckProtocol::Http,
            h2c: false,
            path: "/health".into(),
            port: Some(9101),
            host: Some("web.internal".into()),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            matcher: StatusMatcher {
                ranges: vec![(200, 399)]
            },
        }
    );
    assert_eq!(
        blue.outlier_detection,
        Some(OutlierDetection {
            consecutive_failures: 5,
            ejection: Duration::from_secs(30),
            max_ejected_percent: 50
        })
    );
    assert_eq!(blue.deregistration_delay, Duration::from_secs(30));
    assert_eq!(blue.slow_start, Duration::ZERO);
    assert!(blue.fail_open);
    assert_eq!(blue.failover.as_deref(), Some("web-green"));
    assert_eq!(
        blue.stickiness,
        Some(Stickiness {
            cookie: "SWYD".into(),
            duration: Duration::from_secs(3600)
        })
    );
    assert_eq!(
        blue.retries,
        Retries {
            attempts: 2,
            backoff: Duration::from_millis(25),
            on: RetryOn {
                connect_failure: true,
                reset: true,
                statuses: vec![502, 503, 504]
            },
        }
    );
    assert_eq!(
        blue.timeouts,
        GroupTimeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(90)
        }
    );
    assert_eq!(
        blue.limits,
        Limits {
            max_connections: Some(1024),
            max_pending: Some(256),
            max_requests: Some(4096)
        }
    );
    assert_eq!(blue.proxy_protocol, None);

    let green = c.group("web-green").unwrap();
    assert_eq!(green.targets.len(), 2);
    assert_eq!(green.health_check.protocol, CheckProtocol::Http);
    assert_eq!(green.failover, None);

    let api = c.group("api").unwrap();
    assert_eq!(
        api.balance,
        Balance::ConsistentHash(HashOn::Header("x-user".into()))
    );

    let pg = c.group("pg").unwrap();
    assert_eq!(pg.protocol, GroupProtocol::Tcp);
    assert_eq!(pg.proxy_protocol, Some(ProxyProtocol::V2));
    assert_eq!(pg.health_check.protocol, CheckProtocol::Tcp);
    assert_eq!(pg.stickiness, None);

    // The source map answers for the example's own keys.
    assert_eq!(
        loaded.source.find("workers"),
        Some(Location { line: 1, column: 1 })
    );
    assert_eq!(
        loaded
            .source
            .find("listeners.0.routes.4.forward.target_groups.1"),
        Some(Location {
            line: 40,
            column: 15
        })
    );
    assert_eq!(
        loaded.source.find("target_groups.3.proxy_protocol"),
        Some(Location {
            line: 102,
            column: 5
        })
    );
    assert_eq!(loaded.version.len(), 16);
}

#[test]
fn interface_example_without_certificate_files_names_them() {
    let dir = super::temp_dir("nocerts");
    let errs = super::errors_in(EXAMPLE, &dir);
    assert_eq!(errs.len(), 2, "{errs:?}");
    super::assert_error_in(&errs, 49, 13, "cert_file cannot read");
    super::assert_error_in(&errs, 49, 37, "key_file cannot read");
}
