//! switchyard-admin: the operator's side door.
//!
//! Serves `/healthz` (liveness), `/readyz` (readiness), `/metrics`
//! (Prometheus text) and the JSON API under `/api/v1/` on `admin.bind`.
//! Reads the published snapshot and counters; never touches the data path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use switchyard_control::Control;

pub mod api;
pub mod time;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin API reads.
pub struct AdminState {
    pub control: Arc<Control>,
    pub prometheus: Option<PrometheusHandle>,
    /// Listeners bound.
    pub ready: AtomicBool,
    /// SIGTERM seen: /readyz answers 503 from then on.
    pub shutting_down: AtomicBool,
}

impl AdminState {
    pub fn new(control: Arc<Control>, prometheus: Option<PrometheusHandle>) -> AdminState {
        AdminState {
            control,
            prometheus,
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }
}

type AdminBody = Full<Bytes>;

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<AdminBody> {
    let mut text = value.to_string();
    text.push('\n');
    reply(status, "application/json", text)
}

fn not_allowed() -> Response<AdminBody> {
    reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        "method not allowed\n",
    )
}

/// Reads a request body of at most `api::MAX_BODY` bytes.
async fn read_body(body: Incoming) -> Result<Bytes, Response<AdminBody>> {
    let limited = Limited::new(body, api::MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": "body unreadable or over 64 KiB" }),
        )),
    }
}

/// The answer to one admin request.
pub async fn route(req: Request<Incoming>, state: &AdminState) -> Response<AdminBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let control = &state.control;
    match path.as_str() {
        "/healthz" => match method {
            Method::GET | Method::HEAD => reply(StatusCode::OK, "text/plain", "ok\n"),
            _ => not_allowed(),
        },
        "/readyz" => match method {
            Method::GET | Method::HEAD => readyz(state),
            _ => not_allowed(),
        },
        "/metrics" => match (&method, &state.prometheus) {
            (&Method::GET, Some(p)) => {
                reply(StatusCode::OK, "text/plain; version=0.0.4", p.render())
            }
            (&Method::GET, None) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "metrics recorder not installed\n",
            ),
            _ => not_allowed(),
        },
        "/api/v1/target-groups" => match method {
            Method::GET => json(
                StatusCode::OK,
                &api::target_groups(&control.snapshot.load()),
            ),
            _ => not_allowed(),
        },
        "/api/v1/config" => match method {
            Method::GET => json(StatusCode::OK, &api::config_status(control)),
            _ => not_allowed(),
        },
        "/api/v1/reload" => match method {
            Method::POST => {
                let (status, v) = api::reload(control).await;
                json(status, &v)
            }
            _ => not_allowed(),
        },
        p if p.starts_with("/api/v1/target-groups/") => {
            let rest = &p["/api/v1/target-groups/".len()..];
            let parts: Vec<&str> = rest.split('/').collect();
            match (parts.as_slice(), &method) {
                ([group, "targets"], &Method::POST) => {
                    let Some(group) = api::percent_decode(group) else {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({ "error": "bad group name encoding" }),
                        );
                    };
                    let body = match read_body(req.into_body()).await {
                        Ok(b) => b,
                        Err(resp) => return resp,
                    };
                    let (status, v) = api::register(control, &group, &body);
                    json(status, &v)
                }
                ([group, "targets", address], &Method::DELETE) => {
                    let (Some(group), Some(address)) =
                        (api::percent_decode(group), api::percent_decode(address))
                    else {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({ "error": "bad percent-encoding" }),
                        );
                    };
                    let (status, v) = api::deregister(control, &group, &address);
                    json(status, &v)
                }
                ([_, "targets"], _) | ([_, "targets", _], _) => not_allowed(),
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn readyz(state: &AdminState) -> Response<AdminBody> {
    if state.shutting_down.load(Ordering::Relaxed) {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        )
    } else if !state.ready.load(Ordering::Relaxed) {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "listeners not bound\n",
        )
    } else if !state.control.health.ready(&state.control.snapshot.load()) {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "first health checks pending\n",
        )
    } else {
        reply(StatusCode::OK, "text/plain", "ready\n")
    }
}

/// How long an admin client may take to send a request head.
pub const ADMIN_HEADER_READ: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the admin API on `listener` until `stop` turns true.
pub fn spawn(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that never finishes its request head (or sends nothing)
        // is closed, as on the listeners: otherwise each would hold a
        // socket for good.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(ADMIN_HEADER_READ);
        let builder = Arc::new(builder);
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.changed() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let state = Arc::clone(&state);
            let builder = Arc::clone(&builder);
            tokio::spawn(async move {
                // hyper's header timer starts once the version is detected,
                // which waits for bytes: a client that sends none is
                // closed here.
                let mut first = [0u8; 1];
                match tokio::time::timeout(ADMIN_HEADER_READ, stream.peek(&mut first)).await {
                    Ok(Ok(1..)) => {}
                    _ => return,
                }
                let svc = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(route(req, &state).await) }
                });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}
