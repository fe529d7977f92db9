//! The per-request path: route -> action -> forward, as one straight-line
//! async fn called by our HTTP/1.1 server and hyper's HTTP/2 one.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use std::time::Instant;
use switchyard_routing::{Action, RequestInfo, RequestUrl, Snapshot};

use crate::access_log::Entry;
use crate::body::{ProxyBody, RequestBody};
use crate::error::{text_response, ProxyError};
use crate::forward::{forward, Extras, Forwarded};
use crate::guard::ConnState;
use crate::headers::{prepare_request, request_id, ClientInfo};
use crate::Shared;

/// What every request of one client connection shares.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub listener: Arc<str>,
    pub client: ClientInfo,
    pub client_ip: IpAddr,
    pub state: Arc<ConnState>,
    /// `http` or `https`: how the client reached us.
    pub scheme: &'static str,
    /// Set when a reload removed this listener (see `ListenerHandle::retire`).
    pub retired: Arc<arc_swap::ArcSwapOption<Snapshot>>,
}

/// What the access log and metrics need after the response is made.
struct Outcome<'a> {
    route: &'a str,
    group: &'a str,
    target: Option<Arc<switchyard_routing::Target>>,
    request_id: Option<HeaderValue>,
}

impl<'a> Outcome<'a> {
    /// A request answered here (no route, fixed response, redirect).
    fn answered_by(route: &'a str) -> Outcome<'a> {
        Outcome {
            route,
            group: "",
            target: None,
            request_id: None,
        }
    }
}

/// Answers one request. Not an `async fn` (nor is `forward_split`): an
/// `async fn` keeps its arguments twice (rust-lang/rust#62958), and this
/// future lives in the client connection's task for as long as the
/// request is at the target.
#[allow(clippy::manual_async_fn)] // see the comment above
pub fn handle(
    mut req: Request<RequestBody>,
    ctx: Arc<ConnCtx>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> {
    // Dot segments are resolved before routing, and the resolved path is
    // what the target gets (RFC 3986 5.2.4, as NGINX does): `/web/../admin`
    // must not pass a route for `/web/` and then be read by the target as
    // `/admin`. Paths without them are left alone, at no cost.
    if let Some(clean) = crate::headers::without_dot_segments(req.uri()) {
        *req.uri_mut() = clean;
    }
    async move {
        let started = Instant::now();
        let mark = ctx.state.begin();
        let http1 = req.version() <= Version::HTTP_11;
        if ctx.state.smuggling.load(Ordering::Relaxed) {
            // Content-Length and Transfer-Encoding together: refuse, and close
            // so that nothing after this head is ever read as a request.
            let resp =
                ProxyError::BadRequest("both content-length and transfer-encoding").into_response();
            return Ok(closing(resp, true));
        }
        if let Some(why) = host_problem(&req) {
            // Routing reads the Host (or the target's authority); a target
            // reading it otherwise could be steered past the routes.
            return Ok(closing(ProxyError::BadRequest(why).into_response(), http1));
        }
        if req.method() == Method::CONNECT {
            // A reverse proxy: no tunnels to arbitrary places (as NGINX,
            // 405 since 1.21.1).
            let resp = text_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
            return Ok(closing(resp, http1));
        }
        let current = ctx.shared.snapshot.load_full();
        let found = match current.listener_index(&ctx.listener) {
            Some(i) => Some((current, i)),
            // A reload removed this listener; its connections drain on the
            // last config that had it.
            None => ctx
                .retired
                .load_full()
                .and_then(|last| last.listener_index(&ctx.listener).map(|i| (last, i))),
        };
        let Some((snap, index)) = found else {
            return Ok(text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "listener removed\n",
            ));
        };
        let table = &snap.listeners[index];
        // The request-target's authority wins over Host when there is one
        // (absolute-form, RFC 9112 3.2.2; h2's :authority, RFC 9113 8.3.1):
        // routing and the Host sent on (`prepare_request`) must agree.
        let host = crate::headers::uri_host(req.uri()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        // Copied only when logging: the request is moved into the forward.
        let logged = ctx.shared.access_log.enabled().then(|| {
            (
                req.method().as_str().to_owned(),
                req.uri().path().to_owned(),
                host.unwrap_or("").to_owned(),
            )
        });
        let info = RequestInfo {
            host,
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        };
        let (resp, outcome, metrics) = match table.route(&info) {
            None => (
                ProxyError::NoRoute.into_response(),
                Outcome::answered_by(""),
                &table.unmatched,
            ),
            Some(route) => match &route.action {
                Action::Fixed(f) => {
                    let mut resp = Response::new(ProxyBody::full(f.body.clone()));
                    *resp.status_mut() = f.status;
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, f.content_type.clone());
                    (resp, Outcome::answered_by(&route.name), &route.metrics)
                }
                Action::Redirect(r) => {
                    let url = RequestUrl {
                        scheme: ctx.scheme,
                        host,
                        path: req.uri().path(),
                        query: req.uri().query(),
                    };
                    let resp = match r.location(&url) {
                        Some(loc) => {
                            let mut resp = Response::new(ProxyBody::empty());
                            *resp.status_mut() = r.status;
                            resp.headers_mut().insert(header::LOCATION, loc);
                            resp
                        }
                        None => ProxyError::BadRequest("cannot build redirect").into_response(),
                    };
                    (resp, Outcome::answered_by(&route.name), &route.metrics)
                }
                Action::Forward(split) => {
                    let (resp, group, target, id) =
                        forward_split(&snap, split, req, &ctx, mark).await;
                    let group_name = snap.groups.get(group).map_or("", |g| g.name());
                    (
                        resp,
                        Outcome {
                            route: &route.name,
                            group: group_name,
                            target,
                            request_id: Some(id),
                        },
                        route.metrics_for(group),
                    )
                }
            },
        };
        let resp = closing(
            resp,
            http1 && ctx.shared.shutting_down.load(Ordering::Relaxed),
        );
        let status = resp.status().as_u16();
        metrics.record(status, started);
        if let Some((method, path, host)) = &logged {
            let client = ctx.client.ip_value.to_str().unwrap_or("");
            let target = outcome.target.as_ref().map_or("", |t| t.label());
            let id = outcome
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            ctx.shared.access_log.log(&Entry {
                listener: &ctx.listener,
                route: outcome.route,
                target_group: outcome.group,
                target,
                method,
                path,
                host,
                status,
                duration_s: started.elapsed().as_secs_f64(),
                client,
                request_id: id,
            });
        }
        Ok(resp)
    }
}

/// `resp`, saying `Connection: close` if `close` (HTTP/1.1: the
/// connection ends after it).
fn closing(mut resp: Response<ProxyBody>, close: bool) -> Response<ProxyBody> {
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Why the request's host is not one routing can trust, if it is not
/// (RFC 9112 3.2, RFC 9113 8.3.1, RFC 9110 4.2.4): more than one Host; none
/// on HTTP/1.1, or neither Host nor `:authority` on HTTP/2; a Host value
/// that is not `host[:port]` (`a@b`, `a/b`, `a?b` read as other hosts by
/// URL parsers behind us); userinfo in the request target. One Host is
/// asked of absolute-form HTTP/1.1 requests too (3.2), though the target's
/// host is then the one used (3.2.2).
fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Some("repeated host");
    }
    if first.is_some_and(|h| !crate::headers::valid_host(h.as_bytes())) {
        return Some("invalid host");
    }
    let authority = req.uri().authority();
    // An absolute-form target names an http(s) resource, or nothing we
    // route (`foo://a/`).
    if req
        .uri()
        .scheme_str()
        .is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https"))
    {
        return Some("request target scheme is not http or https");
    }
    // Userinfo (`http://x@a/`) included: RFC 9110 4.2.4.
    if authority.is_some_and(|a| !crate::headers::valid_host(a.as_str().as_bytes())) {
        return Some("invalid host in the request target");
    }
    let missing = match req.version() {
        Version::HTTP_2 => first.is_none() && authority.is_none(),
        v => first.is_none() && v >= Version::HTTP_11,
    };
    missing.then_some("missing host")
}

/// Chooses the group (stickiness first, else by weight), rewrites the head
/// and forwards. Returns the response, the group used, the target and the
/// request id.
#[allow(clippy::manual_async_fn)] // see the comment above
fn forward_split<'a>(
    snap: &'a Snapshot,
    split: &'a switchyard_routing::Split,
    mut req: Request<RequestBody>,
    ctx: &'a ConnCtx,
    mark: crate::guard::RequestMark,
) -> impl Future<
    Output = (
        Response<ProxyBody>,
        usize,
        Option<Arc<switchyard_routing::Target>>,
        HeaderValue,
    ),
> + 'a {
    async move {
        let id = request_id(req.headers());
        let http1 = req.version() <= Version::HTTP_11;
        let now = split.sticky.as_ref().map(|_| SystemTime::now());
        let sticky = now.and_then(|now| split.sticky_group(req.headers(), now));
        let (group, set_cookie) = match sticky {
            Some(g) if snap.has_usable(g) => (Some(g), false),
            // Re-picked, among the groups that can serve.
            Some(_) => (snap.choose_usable_group(split), true),
            None => (snap.choose_group(split), now.is_some()),
        };
        let Some(group) = group else {
            return (
                ProxyError::Unavailable("no target group has weight\n").into_response(),
                usize::MAX,
                None,
                id,
            );
        };
        // Target stickiness: the group's own cookie names a target.
        let target_sticky = snap.groups[group].spec.stickiness.as_ref();
        let wanted: Option<Box<str>> = match (
            target_sticky,
            now.or_else(|| target_sticky.map(|_| SystemTime::now())),
        ) {
            (Some(s), Some(now)) => switchyard_routing::cookie::find(req.headers(), &s.cookie)
                .and_then(|v| switchyard_routing::split::parse_unexpired(v, now))
                .map(Into::into),
            _ => None,
        };
        // What hop-by-hop stripping would lose but the target must see.
        let upgrade_to = crate::upgrade::wants_upgrade(req.headers())
            .then(|| req.headers().get(header::UPGRADE).cloned())
            .flatten();
        let te_trailers = req
            .headers()
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        let mut extras = Extras {
            upgrade: upgrade_to
                .as_ref()
                .and_then(|_| req.extensions_mut().remove::<crate::h1_server::OnUpgrade>()),
            te_trailers,
            host_missing: false,
        };
        let (parts, body) = {
            let (mut parts, body) = req.into_parts();
            extras.host_missing = !prepare_request(
                &mut parts.headers,
                &mut parts.uri,
                &mut parts.version,
                &ctx.client,
                &id,
            );
            if let Some(proto) = upgrade_to {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, proto);
            }
            (parts, body)
        };
        req = Request::from_parts(parts, body);
        let Forwarded {
            result,
            group: used,
            target,
        } = forward(
            snap,
            group,
            req,
            Some(ctx.client_ip),
            mark,
            wanted.as_deref(),
            extras,
        )
        .await;
        let mut resp = result.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "request failed");
            // A stalled upload's rest will not be read: the connection
            // closes after this, and says so (whoever holds the body).
            let client_stalled = matches!(e, ProxyError::ClientTimeout);
            closing(e.into_response(), client_stalled && http1)
        });
        if set_cookie {
            // The cookie names the group the split chose, even when failover
            // served this one request elsewhere.
            if let Some(v) = now.and_then(|now| split.set_cookie(group, now)) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        if let (Some(s), Some(t)) = (target_sticky, &target) {
            if wanted.as_deref() != Some(t.label()) {
                let cookie = switchyard_routing::split::set_cookie_value(
                    &s.cookie,
                    t.label(),
                    s.duration,
                    SystemTime::now(),
                );
                if let Some(v) = cookie {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
            }
        }
        (resp, used, target, id)
    }
}
