//! `switchyard demo`: a whole blue/green setup on loopback, no files.
//!
//! Four tiny upstreams (blue-1, blue-2, green-1, green-2) answer with their
//! own name; the balancer splits 90/10 between the blue and green groups.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Starts one demo upstream answering `name` on an ephemeral port.
pub async fn demo_upstream(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let body =
                            format!("{name} answered {} {}\n", req.method(), req.uri().path());
                        let resp = http::Response::builder()
                            .header("content-type", "text/plain")
                            .header("x-upstream", name)
                            .body(Full::new(Bytes::from(body)));
                        Ok::<_, Infallible>(
                            resp.unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()))),
                        )
                    },
                );
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The embedded config: 90/10 between blue and green, plus a header
/// override, a redirect and a fixed response to try.
pub fn config_yaml(
    listen: &str,
    admin: &str,
    blue: [SocketAddr; 2],
    green: [SocketAddr; 2],
) -> String {
    format!(
        r#"admin: {{ bind: "{admin}" }}
access_log: {{ enabled: false }}
listeners:
  - name: demo
    bind: "{listen}"
    protocol: http
    routes:
      - name: canary-override
        match: {{ headers: {{ x-canary: "always" }} }}
        forward: {{ target_group: green }}
      - name: old-path
        match: {{ path_prefix: /old }}
        redirect: {{ path: /, status: 302 }}
      - name: maintenance
        match: {{ path_exact: /maintenance }}
        fixed_response: {{ status: 503, body: "down for maintenance\n" }}
      - name: split
        forward:
          target_groups:
            - {{ name: blue, weight: 90 }}
            - {{ name: green, weight: 10 }}
target_groups:
  - name: blue
    health_check: {{ path: /health, interval: 2s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2 }}
    targets: [ {{ address: "{b0}" }}, {{ address: "{b1}" }} ]
  - name: green
    health_check: {{ path: /health, interval: 2s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2 }}
    targets: [ {{ address: "{g0}" }}, {{ address: "{g1}" }} ]
"#,
        b0 = blue[0],
        b1 = blue[1],
        g0 = green[0],
        g1 = green[1],
    )
}

/// `addr` if it can be bound now, else an ephemeral port on loopback.
pub fn free_or_ephemeral(addr: &str) -> String {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => {
            drop(l);
            addr.to_owned()
        }
        Err(_) => "127.0.0.1:0".to_owned(),
    }
}
