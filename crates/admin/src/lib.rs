//! switchyard-admin: the operator's side door.
//!
//! Serves `/healthz` (liveness), `/readyz` (readiness), `/metrics`
//! (Prometheus text) and the JSON API under `/api/v1/` on `admin.bind`.
//! Reads the published snapshot and counters; never touches the data path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use switchyard_health::HealthChecks;
use switchyard_routing::Snapshot;

pub mod time;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin API reads.
pub struct AdminState {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub prometheus: Option<PrometheusHandle>,
    pub health: Arc<HealthChecks>,
    /// Listeners bound.
    pub ready: AtomicBool,
    /// SIGTERM seen: /readyz answers 503 from then on.
    pub shutting_down: AtomicBool,
}

impl AdminState {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        prometheus: Option<PrometheusHandle>,
        health: Arc<HealthChecks>,
    ) -> AdminState {
        AdminState {
            snapshot,
            prometheus,
            health,
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

/// The answer to one admin request.
pub fn route(req: &Request<Incoming>, state: &AdminState) -> Response<AdminBody> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
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
            } else if !state.health.ready(&state.snapshot.load()) {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "first health checks pending\n",
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ready\n")
            }
        }
        (&Method::GET, "/metrics") => match &state.prometheus {
            Some(p) => reply(StatusCode::OK, "text/plain; version=0.0.4", p.render()),
            None => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "metrics recorder not installed\n",
            ),
        },
        (&Method::GET, "/api/v1/target-groups") => {
            json(StatusCode::OK, &target_groups(&state.snapshot.load()))
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/api/v1/target-groups") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `GET /api/v1/target-groups`, shaped as INTERFACE.md shows.
pub fn target_groups(snap: &Snapshot) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = snap
        .groups
        .iter()
        .map(|g| {
            let targets: Vec<serde_json::Value> = g
                .targets
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "address": t.label(),
                        "weight": t.weight(),
                        "state": t.state().as_str(),
                        "reason": t.reason(),
                        "in_flight": t.in_flight(),
                        "last_check": t.last_check().map(|c| serde_json::json!({
                            "result": c.result,
                            "at": time::rfc3339(c.at),
                            "detail": c.detail,
                        })),
                    })
                })
                .collect();
            serde_json::json!({ "name": g.name(), "targets": targets })
        })
        .collect();
    serde_json::json!({ "target_groups": groups })
}

/// Serves the admin API on `listener` until `stop` turns true.
pub fn spawn(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
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
                let svc = service_fn(move |req| {
                    let resp = route(&req, &state);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}
