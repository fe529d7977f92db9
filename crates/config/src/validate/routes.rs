//! Routes of http/https listeners: match conditions and the one action
//! (forward, redirect or fixed_response).

use regex::Regex;

use crate::model::{
    FixedResponse, Forward, HostMatch, PathMatch, Redirect, Route, RouteAction, RouteMatch,
};
use crate::raw::{RawFixedResponse, RawMatch, RawRedirect, RawRoute};

use super::fields::{is_header_value, is_token, parse_host_match};
use super::forward::{forward, Forwarder};
use super::{Ctx, GroupIndex};

const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// `p` is the path of the `routes` key; `listener` names the listener.
pub(crate) fn validate_routes(
    ctx: &mut Ctx<'_>,
    raws: &[RawRoute],
    p: &str,
    listener: &str,
    groups: &GroupIndex,
) -> Vec<Route> {
    let routes = raws
        .iter()
        .enumerate()
        .map(|(r, raw)| route(ctx, raw, &format!("{p}.{r}"), listener, groups))
        .collect();
    let names: Vec<(String, String)> = raws
        .iter()
        .enumerate()
        .map(|(r, raw)| (raw.name.clone(), format!("{p}.{r}.name")))
        .collect();
    ctx.check_duplicates(&names, &format!("{listener}: "), "route name");
    routes
}

fn route(ctx: &mut Ctx<'_>, raw: &RawRoute, p: &str, listener: &str, groups: &GroupIndex) -> Route {
    if raw.name.is_empty() {
        ctx.error(
            &format!("{p}.name"),
            format!("{listener}: route name must not be empty"),
        );
    }
    let owner = format!("route \"{}\"", raw.name);
    let matcher = raw
        .matcher
        .as_ref()
        .map(|m| route_match(ctx, m, &format!("{p}.match"), &owner))
        .unwrap_or_default();

    // Every given action is validated, so that one run reports all problems.
    let mut actions: Vec<(&str, RouteAction)> = Vec::new();
    if let Some(f) = &raw.forward {
        let f = forward(
            ctx,
            f,
            &format!("{p}.forward"),
            &owner,
            groups,
            Forwarder::HttpRoute,
        );
        actions.push(("forward", RouteAction::Forward(f)));
    }
    if let Some(r) = &raw.redirect {
        let r = redirect(ctx, r, &format!("{p}.redirect"), &owner);
        actions.push(("redirect", RouteAction::Redirect(r)));
    }
    if let Some(f) = &raw.fixed_response {
        let f = fixed_response(ctx, f, &format!("{p}.fixed_response"), &owner);
        actions.push(("fixed_response", RouteAction::FixedResponse(f)));
    }
    if actions.len() > 1 {
        ctx.error(
            &format!("{p}.{}", actions[1].0),
            format!("{owner} has more than one of forward, redirect, fixed_response"),
        );
    }
    let action = match actions.into_iter().next() {
        Some((_, action)) => action,
        None => {
            ctx.error(
                p,
                format!("{owner} has no action: give one of forward, redirect, fixed_response"),
            );
            RouteAction::Forward(Forward {
                target_groups: Vec::new(),
                stickiness: None,
            })
        }
    };

    Route {
        name: raw.name.clone(),
        matcher,
        action,
    }
}

/// `p` is the path of the `match` key.
fn route_match(ctx: &mut Ctx<'_>, raw: &RawMatch, p: &str, owner: &str) -> RouteMatch {
    let given: Vec<(&str, &String)> = [
        ("path_prefix", &raw.path_prefix),
        ("path_exact", &raw.path_exact),
        ("path_regex", &raw.path_regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    if given.len() > 1 {
        ctx.error(
            &format!("{p}.{}", given[1].0),
            format!("{owner}: match has more than one of path_prefix, path_exact, path_regex"),
        );
    }
    let mut path = None;
    for (key, value) in given {
        let at = format!("{p}.{key}");
        let m = match key {
            "path_regex" => {
                if let Err(e) = Regex::new(value) {
                    ctx.error(
                        &at,
                        format!(
                            "{owner}: invalid path_regex \"{value}\": {}",
                            regex_reason(&e)
                        ),
                    );
                }
                PathMatch::Regex(value.clone())
            }
            _ => {
                if !value.starts_with('/') {
                    ctx.error(&at, format!("{owner}: {key} \"{value}\" must start with /"));
                }
                if key == "path_prefix" {
                    PathMatch::Prefix(value.clone())
                } else {
                    PathMatch::Exact(value.clone())
                }
            }
        };
        path.get_or_insert(m);
    }

    let host = raw.host.as_ref().map(|h| {
        parse_host_match(h).unwrap_or_else(|e| {
            ctx.error(&format!("{p}.host"), format!("{owner}: {e}"));
            HostMatch::Exact(String::new())
        })
    });

    let method = raw.method.as_ref().map(|m| {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic()) {
            ctx.error(
                &format!("{p}.method"),
                format!("{owner}: method \"{m}\" is not a method name (letters only, e.g. GET)"),
            );
        }
        m.to_ascii_uppercase()
    });

    let mut headers: Vec<(String, String)> = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    for (name, value) in raw.headers.iter().flat_map(|h| h.0.iter()) {
        let at = format!("{p}.headers.{name}");
        if !is_token(name) {
            ctx.error(&at, format!("{owner}: \"{name}\" is not a header name"));
        }
        if !is_header_value(value) {
            ctx.error(
                &at,
                format!("{owner}: header \"{name}\" value contains control characters"),
            );
        }
        let lower = name.to_ascii_lowercase();
        names.push((lower.clone(), at));
        headers.push((lower, value.clone()));
    }
    ctx.check_duplicates(&names, &format!("{owner}: "), "match header");

    RouteMatch {
        host,
        path,
        method,
        headers,
    }
}

/// The regex crate's syntax errors span several lines (pattern, caret,
/// reason); an error line needs only the reason.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `p` is the path of the `redirect` key.
fn redirect(ctx: &mut Ctx<'_>, raw: &RawRedirect, p: &str, owner: &str) -> Redirect {
    let parts = [
        ("scheme", raw.scheme.is_some()),
        ("host", raw.host.is_some()),
        ("port", raw.port.is_some()),
        ("path", raw.path.is_some()),
    ];
    match &raw.location {
        Some(location) => {
            if location.is_empty() {
                ctx.error(
                    &format!("{p}.location"),
                    format!("{owner}: redirect location must not be empty"),
                );
            }
            for (key, _) in parts.iter().filter(|(_, given)| *given) {
                ctx.error(
                    &format!("{p}.{key}"),
                    format!("{owner}: redirect {key} does not apply together with location"),
                );
            }
        }
        // A redirect that replaces nothing would send the client back to
        // the very URL it asked for, forever.
        None if !parts.iter().any(|(_, given)| *given) => ctx.error(
            p,
            format!(
                "{owner}: redirect needs location, or at least one of scheme, host, port, path"
            ),
        ),
        None => {}
    }

    let scheme = raw.scheme.as_ref().map(|s| {
        let lower = s.to_ascii_lowercase();
        if lower != "http" && lower != "https" {
            ctx.error(
                &format!("{p}.scheme"),
                format!("{owner}: redirect scheme \"{s}\" must be http or https"),
            );
        }
        lower
    });
    if let Some(h) = &raw.host {
        if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/') {
            ctx.error(
                &format!("{p}.host"),
                format!("{owner}: redirect host \"{h}\" is not a host name"),
            );
        }
    }
    if raw.port == Some(0) {
        ctx.error(
            &format!("{p}.port"),
            format!("{owner}: redirect port must be 1..=65535"),
        );
    }
    if let Some(path) = &raw.path {
        if !path.starts_with('/') {
            ctx.error(
                &format!("{p}.path"),
                format!("{owner}: redirect path \"{path}\" must start with /"),
            );
        }
    }
    let status = raw.status.unwrap_or(301);
    if !REDIRECT_STATUSES.contains(&status) {
        ctx.error(
            &format!("{p}.status"),
            format!("{owner}: redirect status {status} must be one of 301, 302, 303, 307, 308"),
        );
    }
    Redirect {
        location: raw.location.clone(),
        scheme,
        host: raw.host.clone(),
        port: raw.port,
        path: raw.path.clone(),
        status,
    }
}

/// `p` is the path of the `fixed_response` key.
fn fixed_response(
    ctx: &mut Ctx<'_>,
    raw: &RawFixedResponse,
    p: &str,
    owner: &str,
) -> FixedResponse {
    let status = raw.status.unwrap_or(200);
    if !(100..=599).contains(&status) {
        ctx.error(
            &format!("{p}.status"),
            format!("{owner}: fixed_response status {status} must be 100..=599"),
        );
    }
    let content_type = raw
        .content_type
        .clone()
        .unwrap_or_else(|| "text/plain".to_string());
    if content_type.is_empty() || !is_header_value(&content_type) {
        ctx.error(
            &format!("{p}.content_type"),
            format!("{owner}: fixed_response content_type \"{content_type}\" is not a valid header value"),
        );
    }
    FixedResponse {
        status,
        content_type,
        body: raw.body.clone().unwrap_or_default(),
    }
}
