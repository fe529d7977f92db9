//! The sub-sections of a target group: health_check, outlier_detection,
//! retries, timeouts, limits. Each fills in its defaults.

use std::time::Duration;

use crate::model::{
    CheckProtocol, GroupProtocol, GroupTimeouts, HealthCheck, Limits, OutlierDetection, Retries,
    RetryOn, StatusMatcher,
};
use crate::raw::{
    RawCheckProtocol, RawGroupTimeouts, RawHealthCheck, RawLimits, RawOutlierDetection, RawRetries,
};

use super::{dur, Ctx};

pub(crate) const MAX_THRESHOLD: u32 = 10;
pub(crate) const MAX_RETRY_ATTEMPTS: u32 = 10;
const DEFAULT_MATCHER: (u16, u16) = (200, 399);

/// `p` is the path of the `health_check` key (which may be absent).
pub(crate) fn health_check(
    ctx: &mut Ctx<'_>,
    raw: Option<&RawHealthCheck>,
    p: &str,
    owner: &str,
    group: GroupProtocol,
) -> HealthCheck {
    let default_protocol = match group {
        GroupProtocol::Tcp => CheckProtocol::Tcp,
        GroupProtocol::Http | GroupProtocol::Http2 => CheckProtocol::Http,
    };
    let protocol = match raw.and_then(|r| r.protocol) {
        None => default_protocol,
        Some(RawCheckProtocol::Http) => CheckProtocol::Http,
        Some(RawCheckProtocol::Tcp) => CheckProtocol::Tcp,
        Some(RawCheckProtocol::Disabled) => CheckProtocol::None,
    };
    let mut check = HealthCheck {
        protocol,
        h2c: group == GroupProtocol::Http2,
        path: "/".to_string(),
        port: None,
        host: None,
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        healthy_threshold: 3,
        unhealthy_threshold: 3,
        matcher: StatusMatcher {
            ranges: vec![DEFAULT_MATCHER],
        },
    };
    let Some(raw) = raw else {
        return check;
    };

    // Keys that do not apply where they stand: http ones to tcp and none
    // checks; to a none check (nothing is probed) the timing ones too,
    // which would only mislead (and the timeout-under-interval rule would
    // complain about defaults).
    let kind = match protocol {
        CheckProtocol::Http => "http",
        CheckProtocol::Tcp => "tcp",
        CheckProtocol::None => "none",
    };
    // (key, given, whether only an http check uses it)
    let keys = [
        ("path", raw.path.is_some(), true),
        ("host", raw.host.is_some(), true),
        ("matcher", raw.matcher.is_some(), true),
        ("port", raw.port.is_some(), false),
        ("interval", raw.interval.is_some(), false),
        ("timeout", raw.timeout.is_some(), false),
        ("healthy_threshold", raw.healthy_threshold.is_some(), false),
        (
            "unhealthy_threshold",
            raw.unhealthy_threshold.is_some(),
            false,
        ),
    ];
    let not_applying = keys.iter().filter(|(_, given, http_only)| {
        *given
            && match protocol {
                CheckProtocol::Http => false,
                CheckProtocol::Tcp => *http_only,
                CheckProtocol::None => true,
            }
    });
    for (key, _, _) in not_applying {
        ctx.error(
            &format!("{p}.{key}"),
            format!("{owner}: health_check {key} does not apply to a {kind} check"),
        );
    }
    if protocol == CheckProtocol::None {
        return check;
    }

    if let Some(path) = &raw.path {
        if !path.starts_with('/') {
            ctx.error(
                &format!("{p}.path"),
                format!("{owner}: health_check path \"{path}\" must start with /"),
            );
        }
        check.path = path.clone();
    }
    if raw.port == Some(0) {
        ctx.error(
            &format!("{p}.port"),
            format!("{owner}: health_check port must be 1..=65535"),
        );
    }
    check.port = raw.port;
    // Another port is a management endpoint, which speaks HTTP/1.1 (an
    // actuator, a metrics port) even where the traffic port is h2c only.
    check.h2c = check.h2c && check.port.is_none();
    if let Some(host) = &raw.host {
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            ctx.error(
                &format!("{p}.host"),
                format!("{owner}: health_check host \"{host}\" is not a host name"),
            );
        }
        check.host = Some(host.clone());
    }

    check.interval = raw.interval.map_or(check.interval, |d| d.0);
    check.timeout = raw.timeout.map_or(check.timeout, |d| d.0);
    if check.interval.is_zero() {
        ctx.error(
            &format!("{p}.interval"),
            format!("{owner}: health_check interval must be more than 0s"),
        );
    }
    if check.timeout.is_zero() {
        ctx.error(
            &format!("{p}.timeout"),
            format!("{owner}: health_check timeout must be more than 0s"),
        );
    } else if check.timeout >= check.interval && !check.interval.is_zero() {
        // Point at whichever of the two the user wrote; mention defaults so
        // that `interval: 3s` alone does not produce a puzzling error.
        let at = if raw.timeout.is_some() {
            "timeout"
        } else {
            "interval"
        };
        let note = if raw.timeout.is_none() {
            " (timeout defaults to 5s)"
        } else if raw.interval.is_none() {
            " (interval defaults to 10s)"
        } else {
            ""
        };
        ctx.error(
            &format!("{p}.{at}"),
            format!(
                "{owner}: health_check timeout {:?} must be less than interval {:?}{note}",
                check.timeout, check.interval
            ),
        );
    }

    for (key, given, slot) in [
        (
            "healthy_threshold",
            raw.healthy_threshold,
            &mut check.healthy_threshold,
        ),
        (
            "unhealthy_threshold",
            raw.unhealthy_threshold,
            &mut check.unhealthy_threshold,
        ),
    ] {
        if let Some(n) = given {
            if !(1..=MAX_THRESHOLD).contains(&n) {
                ctx.error(
                    &format!("{p}.{key}"),
                    format!("{owner}: health_check {key} {n} is out of range 1..={MAX_THRESHOLD}"),
                );
            }
            *slot = n;
        }
    }

    if let Some(m) = &raw.matcher {
        match m.parse::<StatusMatcher>() {
            Ok(matcher) => check.matcher = matcher,
            Err(e) => ctx.error(
                &format!("{p}.matcher"),
                format!("{owner}: health_check {e}"),
            ),
        }
    }
    check
}

/// `p` is the path of the `outlier_detection` key. Defaults apply only when
/// the section is present; without it detection is off.
pub(crate) fn outlier_detection(
    ctx: &mut Ctx<'_>,
    raw: &RawOutlierDetection,
    p: &str,
    owner: &str,
) -> OutlierDetection {
    let consecutive_failures = raw.consecutive_failures.unwrap_or(5);
    if consecutive_failures == 0 {
        ctx.error(
            &format!("{p}.consecutive_failures"),
            format!("{owner}: outlier_detection consecutive_failures must be at least 1"),
        );
    }
    let max_ejected_percent = raw.max_ejected_percent.unwrap_or(50);
    if max_ejected_percent > 100 {
        ctx.error(
            &format!("{p}.max_ejected_percent"),
            format!("{owner}: outlier_detection max_ejected_percent {max_ejected_percent} is out of range 0..=100"),
        );
    }
    OutlierDetection {
        consecutive_failures,
        ejection: dur(raw.ejection, 30_000),
        max_ejected_percent,
    }
}

/// `p` is the path of the `retries` key (which may be absent).
pub(crate) fn retries(
    ctx: &mut Ctx<'_>,
    raw: Option<&RawRetries>,
    p: &str,
    owner: &str,
    tcp: bool,
) -> Retries {
    let attempts = raw.and_then(|r| r.attempts).unwrap_or(2);
    if attempts > MAX_RETRY_ATTEMPTS {
        ctx.error(
            &format!("{p}.attempts"),
            format!(
                "{owner}: retries attempts {attempts} is out of range 0..={MAX_RETRY_ATTEMPTS}"
            ),
        );
    }
    let backoff = dur(raw.and_then(|r| r.backoff), 25);
    let mut on = RetryOn::default();
    match raw.and_then(|r| r.on.as_ref()) {
        None => on.connect_failure = true,
        Some(list) => {
            for (k, item) in list.iter().enumerate() {
                let at = format!("{p}.on.{k}");
                match item.as_str() {
                    "connect_failure" => on.connect_failure = true,
                    "reset" => on.reset = true,
                    s if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
                        match s.parse::<u16>() {
                            Ok(code) if (500..=599).contains(&code) => {
                                if tcp {
                                    ctx.error(
                                        &at,
                                        format!("{owner}: retries on status {code} does not apply to a tcp group"),
                                    );
                                }
                                if !on.statuses.contains(&code) {
                                    on.statuses.push(code);
                                }
                            }
                            _ => ctx.error(
                                &at,
                                format!("{owner}: retries on status {s} is out of range 500..=599"),
                            ),
                        }
                    }
                    s => ctx.error(
                        &at,
                        format!("{owner}: retries on \"{s}\" must be connect_failure, reset or a status 500..=599"),
                    ),
                }
            }
        }
    }
    Retries {
        attempts,
        backoff,
        on,
    }
}

pub(crate) fn timeouts(raw: Option<&RawGroupTimeouts>) -> GroupTimeouts {
    GroupTimeouts {
        connect: dur(raw.and_then(|t| t.connect), 5_000),
        request: dur(raw.and_then(|t| t.request), 60_000),
        idle: dur(raw.and_then(|t| t.idle), 90_000),
    }
}

/// `p` is the path of the `limits` key (which may be absent).
pub(crate) fn limits(ctx: &mut Ctx<'_>, raw: Option<&RawLimits>, p: &str, owner: &str) -> Limits {
    let Some(raw) = raw else {
        return Limits::default();
    };
    for (key, value) in [
        ("max_connections", raw.max_connections),
        ("max_pending", raw.max_pending),
        ("max_requests", raw.max_requests),
    ] {
        if value == Some(0) {
            ctx.error(
                &format!("{p}.{key}"),
                format!("{owner}: limits {key} must be at least 1"),
            );
        }
    }
    Limits {
        max_connections: raw.max_connections,
        max_pending: raw.max_pending,
        max_requests: raw.max_requests,
    }
}
