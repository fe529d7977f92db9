//! Forwarding one request to a target group: pick, connect or reuse,
//! send, and retry where INTERFACE.md says it is safe.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Body;
use switchyard_config::{GroupProtocol, TargetGroup};
use switchyard_routing::{PickInput, Snapshot, Target, TargetState};

use switchyard_health::outlier::observe;

use crate::body::{ClientWait, ProxyBody, Replay, RequestBody, UpstreamBody};
use crate::error::ProxyError;
use crate::guard::RequestMark;
use crate::headers::strip_hop_by_hop;
use crate::pool::{self, Pool, ResponseFuture, SendError, Sender, UpBody};

/// Attempts at sending on a fresh connection after pooled ones turned out
/// closed before anything was written; these do not count as retries.
const STALE_REDOS: u32 = 3;

/// What a request carries besides its head and body.
#[derive(Default)]
pub struct Extras {
    /// The client's side of an HTTP/1.1 Upgrade (WebSocket), when asked.
    pub upgrade: Option<crate::h1_server::OnUpgrade>,
    /// The client sent `te: trailers` (gRPC): restored for h2c targets.
    pub te_trailers: bool,
    /// No Host and no authority (HTTP/1.0): HTTP/1.1 targets get theirs.
    pub host_missing: bool,
}

/// The outcome of a forward: the response or error, and the group that
/// actually served (failover may change it), for metrics.
pub struct Forwarded {
    pub result: Result<Response<ProxyBody>, ProxyError>,
    pub group: usize,
    pub target: Option<Arc<Target>>,
}

/// The upstream pool of `target`, created on first use.
pub fn pool_of<'a>(target: &'a Target, spec: &TargetGroup) -> Option<&'a Pool> {
    target
        .ext
        .get_or_init(|| Box::new(Pool::new(spec.timeouts.idle)))
        .downcast_ref::<Pool>()
}

pub(crate) fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Exponential backoff with full jitter: uniform in [base, base * 2^n].
fn backoff(base: Duration, retry: u32) -> Duration {
    let cap = base.saturating_mul(1u32 << retry.min(10));
    let extra = cap.saturating_sub(base);
    base + extra.mul_f64(fastrand::f64())
}

/// A copy of the request head kept for re-sending after the first send
/// consumed the original.
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Template {
    fn of(method: &Method, uri: &Uri, headers: &HeaderMap) -> Template {
        Template {
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
        }
    }

    fn build(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

enum Outcome {
    Response(Response<UpBody>),
    /// The connection was closed before the request went out: it is ours again.
    Unsent(Request<RequestBody>),
    /// An h2c target refused the stream unprocessed: see `SendError::Refused`.
    Refused {
        conn: u64,
        going_away: bool,
    },
    Failed(String),
    /// The client's request body failed: answered 400, the target is not
    /// blamed.
    Client(String),
    TimedOut,
}

/// A request at the upstream whose answer has not come yet. Dropped in
/// that state (the client went away, and the server dropped our future), an
/// HTTP/1.1 exchange goes to `pool::linger` so its connection can be
/// pooled; `settle` takes it back once the answer is in.
struct Pending<'a> {
    exchange: Option<ResponseFuture>,
    h1: bool,
    target: &'a Arc<Target>,
    linger: Duration,
}

impl Pending<'_> {
    /// Waits for the answer until `deadline`. Settled either way: a timed
    /// out connection closes (the upstream is too slow to keep).
    async fn settle(&mut self, deadline: tokio::time::Instant) -> Outcome {
        let Some(answer) = self.exchange.as_mut() else {
            return Outcome::Failed("exchange already settled".into());
        };
        let answered = tokio::time::timeout_at(deadline, answer).await;
        self.exchange = None;
        match answered {
            Err(_) => Outcome::TimedOut,
            Ok(Ok(resp)) => Outcome::Response(resp),
            Ok(Err(SendError::Unsent(req))) => Outcome::Unsent(*req),
            Ok(Err(SendError::Failed(why))) => Outcome::Failed(why),
            Ok(Err(SendError::Client(why))) => Outcome::Client(why),
            Ok(Err(SendError::Refused { conn, going_away })) => {
                Outcome::Refused { conn, going_away }
            }
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(answer) = self.exchange.take() {
            if self.h1 {
                pool::linger(Arc::clone(self.target), Some(answer), None, self.linger);
            }
        }
    }
}

/// Not an `async fn`, like `forward`: the request moves into the boxed
/// exchange here and is not kept in this future as well.
fn send(
    sender: Sender,
    req: Request<RequestBody>,
    timeout: Duration,
    target: &Arc<Target>,
) -> impl Future<Output = Outcome> + '_ {
    let h1 = matches!(sender, Sender::H1(_));
    let exchange = sender.send(req);
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pending = Pending {
            exchange: Some(exchange),
            h1,
            target,
            linger: timeout,
        };
        pending.settle(deadline).await
    }
}

/// Shapes a request for the group's upstream protocol: HTTP/1.1 keeps
/// origin-form with Host; h2c carries the authority (the client's Host) as
/// `:authority` instead of Host, and `te: trailers` back (gRPC requires it;
/// it was stripped as hop-by-hop).
fn for_protocol(req: &mut Request<RequestBody>, h2: bool, extras: &Extras, target: &Target) {
    if !h2 {
        *req.version_mut() = Version::HTTP_11;
        // Every HTTP/1.1 request carries a Host (RFC 9112 3.2). None here:
        // shaped for h2c before (a request handed back unsent: the URI
        // has it), or an HTTP/1.0 client sent none (the target's address,
        // as NGINX sends its upstream's). Only those two look.
        if (extras.host_missing || req.uri().authority().is_some())
            && !req.headers().contains_key(http::header::HOST)
        {
            let host = req.uri().authority().map_or(target.label(), |a| a.as_str());
            if let Ok(v) = http::HeaderValue::from_str(host) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
        return;
    }
    *req.version_mut() = Version::HTTP_2;
    // The client's Host, or for a request without one (HTTP/1.0) the
    // target's address, as towards HTTP/1.1 targets.
    let host = if extras.host_missing {
        Some(target.label())
    } else {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    };
    let authority = host.and_then(|h| h.parse::<http::uri::Authority>().ok());
    if let Some(authority) = authority {
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
            // RFC 9113 8.3.1: `:authority` rather than Host. NGINX answers
            // 400 ("duplicate host header") to a request with both.
            req.headers_mut().remove(http::header::HOST);
        }
    }
    if extras.te_trailers {
        req.headers_mut()
            .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
}

/// A new connection to `target` for a request no pooled one could take,
/// within the group's `max_connections` and `max_pending`; at the cap, an
/// idle connection that comes free is taken instead if `reuse`.
async fn connect_for(
    target: &Target,
    spec: &TargetGroup,
    pool: Option<&Pool>,
    h2: bool,
    reuse: bool,
) -> Result<Sender, ConnectFailure> {
    let Some(p) = pool else {
        return pool::connect(target.label(), spec.timeouts.connect, None, h2, None)
            .await
            .map_err(ConnectFailure::Connect);
    };
    if h2 {
        return p
            .h2_or_connect(
                target.label(),
                spec.timeouts.connect,
                spec.limits.max_connections,
            )
            .await
            .map_err(ConnectFailure::Connect);
    }
    let limits = &spec.limits;
    let slot = match p.try_slot(limits.max_connections) {
        Some(slot) => slot,
        // At max_connections: wait for one to come free.
        None => match p
            .wait_for_connection(
                limits.max_connections,
                limits.max_pending,
                spec.timeouts.connect,
                reuse,
            )
            .await
        {
            Ok(Ok(sender)) => return Ok(sender),
            Ok(Err(slot)) => slot,
            Err(e) => return Err(ConnectFailure::Limit(e)),
        },
    };
    pool::connect(target.label(), spec.timeouts.connect, pool, h2, Some(slot))
        .await
        .map_err(ConnectFailure::Connect)
}

/// Why `connect_for` has no connection.
enum ConnectFailure {
    Connect(pool::ConnectError),
    /// `max_pending` or the wait for a free connection: no retry.
    Limit(pool::LimitError),
}

/// Forwards `req` (head already rewritten) to group `group`.
///
/// A plain function returning the future, not an `async fn`: one of these
/// futures lives in every client connection's task while its request is
/// at the target, and an `async fn` would keep its arguments (the request
/// among them) twice (rust-lang/rust#62958). Work done before the first
/// await is done here, outside the future.
pub fn forward<'a>(
    snap: &'a Snapshot,
    group: usize,
    req: Request<RequestBody>,
    input_ip: Option<std::net::IpAddr>,
    mark: RequestMark,
    prefer: Option<&'a str>,
    extras: Extras,
) -> impl Future<Output = Forwarded> + 'a {
    let (parts, body) = req.into_parts();
    let bodyless = body.is_end_stream();
    let safe = bodyless && is_idempotent(&parts.method);
    // Only uploads pay for knowing whether they wait on their client.
    let (body, client_wait) = if bodyless {
        (body, None)
    } else {
        let wait = Arc::new(ClientWait::default());
        (
            RequestBody::Watched(Box::new(body), Arc::clone(&wait)),
            Some(wait),
        )
    };
    let first_spec = snap.groups.get(group).map(|g| &g.spec);
    let wants_template = first_spec.is_some_and(|s| {
        s.retries.attempts > 0 && (s.retries.on.reset || !s.retries.on.statuses.is_empty())
    });
    // Only requests that may be re-sent after a response pay for a copy
    // (and requests to h2c targets, below).
    let mut template =
        (safe && wants_template).then(|| Template::of(&parts.method, &parts.uri, &parts.headers));
    let mut pending = Some(Request::from_parts(parts, body));
    async move {
        let mut tried: Vec<Arc<Target>> = Vec::new();
        let mut last_err = ProxyError::Unavailable("no healthy target\n");
        let mut last_group = group;
        let mut retry = 0u32;
        let mut stale = 0u32;
        // An upload to an h2c target, back from a refused exchange.
        let mut comeback: Option<tokio::sync::oneshot::Receiver<Box<Replay>>> = None;
        // The backoff before a retry, slept at the top of the loop where
        // nothing of the last attempt is held any more.
        let mut pause: Option<Duration> = None;
        loop {
            if let Some(pause) = pause.take() {
                tokio::time::sleep(pause).await;
            }
            // Hash keys come from whichever copy of the request we hold.
            let headers = pending.as_ref().map(|r| r.headers());
            // A sticky client's target, while it is healthy and untried.
            let sticky = prefer.filter(|_| tried.is_empty()).and_then(|label| {
                let t = snap.groups.get(group)?.target(label)?;
                (t.state() == TargetState::Healthy).then(|| (group, Arc::clone(t)))
            });
            let pick = sticky.or_else(|| {
                snap.pick(
                    group,
                    PickInput {
                        headers: headers.or(template.as_ref().map(|t| &t.headers)),
                        client_ip: input_ip,
                    },
                    &tried,
                )
            });
            let Some((g, target)) = pick else {
                return Forwarded {
                    result: Err(last_err),
                    group: last_group,
                    target: None,
                };
            };
            last_group = g;
            let spec = &snap.groups[g].spec;
            let retries = &spec.retries;
            if let Some(max) = spec.limits.max_requests {
                if target.in_flight() >= max as usize {
                    return Forwarded {
                        result: Err(ProxyError::Unavailable("target at max_requests\n")),
                        group: g,
                        target: Some(target),
                    };
                }
            }
            let in_flight = target.begin();
            let pool = pool_of(&target, spec);
            let h2 = spec.protocol == GroupProtocol::Http2;
            // An upgrade takes its connection for good: never a pooled one.
            // Nor does a redo after a stale one (the next may be as stale).
            let reuse = stale == 0 && extras.upgrade.is_none();
            let pooled = if reuse {
                pool.and_then(|p| p.take(h2))
            } else {
                None
            };
            // Connecting is boxed: rare (pooled connections serve most
            // requests), and inline its state would size every request's
            // future (one lives in each client connection's task).
            let sender = match pooled {
                Some(s) => s,
                None => match Box::pin(connect_for(&target, spec, pool, h2, reuse)).await {
                    Ok(s) => s,
                    Err(ConnectFailure::Limit(e)) => {
                        let why = match e {
                            pool::LimitError::Pending => "target at max_pending\n",
                            pool::LimitError::Timeout => "target at max_connections\n",
                        };
                        return Forwarded {
                            result: Err(ProxyError::Unavailable(why)),
                            group: g,
                            target: Some(target),
                        };
                    }
                    Err(ConnectFailure::Connect(e)) => {
                        target.upstream.error();
                        observe(&snap.groups[g], &target, true);
                        tracing::debug!(target = %target.label(), error = %e, "upstream connect failed");
                        // A connect that timed out is an upstream timeout:
                        // 504, as NGINX answers; refused or failed, 502.
                        last_err = if matches!(e, pool::ConnectError::Timeout) {
                            ProxyError::Timeout {
                                target: target.label().to_owned(),
                            }
                        } else {
                            ProxyError::Connect {
                                target: target.label().to_owned(),
                                reason: e.to_string(),
                            }
                        };
                        drop(in_flight);
                        tried.push(target);
                        // Nothing was sent: safe to retry whatever the request.
                        if retries.on.connect_failure && retry < retries.attempts {
                            retry += 1;
                            snap.groups[g].retries.increment(1);
                            pause = Some(backoff(retries.backoff, retry));
                            continue;
                        }
                        return Forwarded {
                            result: Err(last_err),
                            group: g,
                            target: None,
                        };
                    }
                },
            };
            // In a block: the request moves into the exchange and its place
            // here ends before the await.
            let outcome = {
                // An h2c target may refuse the stream unprocessed (a
                // GOAWAY as it closes the connection, NGINX's after
                // `keepalive_requests`): the request, whatever its method,
                // then goes again, from this copy of its head and its
                // upload kept as it goes (see `Replay`).
                if h2 && template.is_none() {
                    template = pending
                        .as_ref()
                        .map(|r| Template::of(r.method(), r.uri(), r.headers()));
                }
                let mut req = match pending.take() {
                    Some(r) => r,
                    None => match &template {
                        Some(t) => t.build(),
                        None => {
                            return Forwarded {
                                result: Err(last_err),
                                group: g,
                                target: None,
                            };
                        }
                    },
                };
                if h2 && !bodyless {
                    let (back, comes) = tokio::sync::oneshot::channel();
                    req = req.map(|body| Replay::wrap(body, back));
                    comeback = Some(comes);
                }
                for_protocol(&mut req, h2, &extras, &target);
                send(sender, req, spec.timeouts.request, &target)
            }
            .await;
            match outcome {
                Outcome::Unsent(req) if stale < STALE_REDOS => {
                    // A pooled connection the upstream had closed: same target,
                    // fresh connection, not a retry.
                    stale += 1;
                    pending = Some(req);
                    continue;
                }
                Outcome::Unsent(_) => {
                    target.upstream.error();
                    observe(&snap.groups[g], &target, true);
                    last_err = ProxyError::Upstream {
                        target: target.label().to_owned(),
                        reason: "connection closed before the request was sent".into(),
                    };
                    return Forwarded {
                        result: Err(last_err),
                        group: g,
                        target: Some(target),
                    };
                }
                Outcome::Refused { conn, going_away } => {
                    if going_away {
                        if let Some(p) = pool {
                            p.retire_h2(conn);
                        }
                    }
                    // The target's graceful close, not its failure: the
                    // same target again on a fresh stream, not a retry,
                    // as a stale HTTP/1.1 connection. An upload comes back
                    // once hyper lets go of it (at once, or when its
                    // stream's sending task sees the refusal).
                    let body = match comeback.take() {
                        _ if stale >= STALE_REDOS => None,
                        None => bodyless.then_some(RequestBody::Empty),
                        Some(comes) => tokio::time::timeout(spec.timeouts.request, comes)
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .map(RequestBody::Replay),
                    };
                    if let (Some(body), Some(t)) = (body, &template) {
                        let mut req = t.build();
                        *req.body_mut() = body;
                        pending = Some(req);
                        stale += 1;
                        continue;
                    }
                    // An upload too long to keep went into the refused
                    // exchange. Not the target's fault: no ejection.
                    tracing::debug!(target = %target.label(), "h2c target refused the stream");
                    target.upstream.error();
                    return Forwarded {
                        result: Err(ProxyError::Upstream {
                            target: target.label().to_owned(),
                            reason: "target refused the stream (GOAWAY or REFUSED_STREAM) and the request could not be sent again".into(),
                        }),
                        group: g,
                        target: Some(target),
                    };
                }
                Outcome::Client(reason) => {
                    tracing::debug!(target = %target.label(), %reason, "client request body failed");
                    return Forwarded {
                        result: Err(ProxyError::BadRequest(
                            "malformed or incomplete request body\n",
                        )),
                        group: g,
                        target: Some(target),
                    };
                }
                Outcome::TimedOut if client_wait.as_ref().is_some_and(|w| w.waiting()) => {
                    // The upload was waiting on the client, not the target:
                    // a client that stops sending must not get targets
                    // ejected (outlier detection) or counted as failing.
                    tracing::debug!(target = %target.label(), "client held back its request body");
                    return Forwarded {
                        result: Err(ProxyError::ClientTimeout),
                        group: g,
                        target: Some(target),
                    };
                }
                Outcome::TimedOut => {
                    target.upstream.error();
                    observe(&snap.groups[g], &target, true);
                    return Forwarded {
                        result: Err(ProxyError::Timeout {
                            target: target.label().to_owned(),
                        }),
                        group: g,
                        target: Some(target),
                    };
                }
                Outcome::Failed(reason) => {
                    target.upstream.error();
                    observe(&snap.groups[g], &target, true);
                    tracing::debug!(target = %target.label(), %reason, "upstream failed");
                    last_err = ProxyError::Upstream {
                        target: target.label().to_owned(),
                        reason,
                    };
                    drop(in_flight);
                    if retries.on.reset && safe && template.is_some() && retry < retries.attempts {
                        retry += 1;
                        stale = 0;
                        snap.groups[g].retries.increment(1);
                        tried.push(target);
                        pause = Some(backoff(retries.backoff, retry));
                        continue;
                    }
                    return Forwarded {
                        result: Err(last_err),
                        group: g,
                        target: None,
                    };
                }
                Outcome::Response(resp) => {
                    let status = resp.status().as_u16();
                    if status == 101 {
                        if let Some(client) = extras.upgrade {
                            target.upstream.status(status);
                            let (parts, body) = resp.into_parts();
                            let upstream = match body {
                                UpBody::H1(b) => b.into_upgraded(),
                                UpBody::H2(..) => None,
                            };
                            if let Some(upstream) = upstream {
                                mark.set_upgraded();
                                crate::upgrade::tunnel(client, upstream, in_flight, mark, pool);
                            }
                            return Forwarded {
                                result: Ok(Response::from_parts(parts, ProxyBody::empty())),
                                group: g,
                                target: Some(target),
                            };
                        }
                    }
                    if !(200..=599).contains(&status) {
                        // An interim status as the answer (a 101 nobody
                        // asked for) would leave the client waiting for the
                        // final one, and HTTP has no status beyond 599: the
                        // target spoke bad HTTP.
                        target.upstream.error();
                        observe(&snap.groups[g], &target, true);
                        tracing::debug!(target = %target.label(), status, "not a final status");
                        return Forwarded {
                            result: Err(ProxyError::Upstream {
                                target: target.label().to_owned(),
                                reason: format!("status {status} as the final answer"),
                            }),
                            group: g,
                            target: Some(target),
                        };
                    }
                    target.upstream.status(status);
                    observe(&snap.groups[g], &target, status >= 500);
                    if safe
                        && template.is_some()
                        && retry < retries.attempts
                        && retries.on.statuses.contains(&status)
                    {
                        retry += 1;
                        stale = 0;
                        snap.groups[g].retries.increment(1);
                        drop(resp);
                        drop(in_flight);
                        tried.push(target);
                        pause = Some(backoff(retries.backoff, retry));
                        continue;
                    }
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    if status == 204 {
                        // RFC 9110 8.6: never in a 204 (HTTP/2 clients
                        // treat it as a protocol error).
                        parts.headers.remove(http::header::CONTENT_LENGTH);
                    }
                    let body = UpstreamBody::new(
                        body,
                        in_flight,
                        mark,
                        spec.timeouts.request,
                        client_wait.clone(),
                    );
                    return Forwarded {
                        result: Ok(Response::from_parts(parts, ProxyBody::Upstream(body))),
                        group: g,
                        target: Some(target),
                    };
                }
            }
        }
    }
}
