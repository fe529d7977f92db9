//! HTTP/1.1 Upgrade (WebSocket) pass-through.
//!
//! After the target answers 101, the client's connection is handed over by
//! our server (`h1_server`) and the target's socket by our client (`h1`),
//! and bytes are
//! copied both ways until either side closes. The
//! tunnel holds the target's in-flight mark (a draining target waits for
//! it, and cuts it at `deregistration_delay`: the task is tracked by the
//! target's pool) and the client connection's mark (so the listener's
//! idle timeout does not close a quiet WebSocket).

use bytes::Bytes;
use switchyard_routing::InFlight;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::guard::RequestMark;
use crate::h1_server::OnUpgrade;
use crate::pool::Pool;

/// Whether a request asks to switch protocols (`Connection: upgrade` and
/// an `Upgrade` header) to something other than h2c.
///
/// `Upgrade: h2c` (what `curl --http2` sends over cleartext) is not passed
/// on: a target accepting it would turn the connection into a tunnel, and
/// every later request on it would bypass routing, weights and health. The
/// request is served over HTTP/1.1 instead, as RFC 9113 3.1 lets a server
/// do (clients that want HTTP/2 use prior knowledge, which we speak).
pub fn wants_upgrade(headers: &http::HeaderMap) -> bool {
    let Some(offer) = headers.get(http::header::UPGRADE) else {
        return false;
    };
    let h2c = offer
        .as_bytes()
        .split(|&b| b == b',')
        .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    !h2c && crate::headers::has_token(headers, &http::header::CONNECTION, "upgrade")
}

/// Starts copying between the client's upgraded connection and the
/// target's socket (`upstream`: the socket and any bytes the target sent
/// right after its 101).
pub fn tunnel(
    client: OnUpgrade,
    upstream: (TcpStream, Bytes),
    in_flight: InFlight,
    mark: RequestMark,
    pool: Option<&Pool>,
) {
    let task = tokio::spawn(async move {
        let _held = (in_flight, mark);
        let (mut upstream, early) = upstream;
        let client = match client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let read_ahead = client.read_ahead;
        let mut client = client.io;
        // What the client sent after its request head is the target's.
        if !read_ahead.is_empty() {
            if let Err(e) = upstream.write_all(&read_ahead).await {
                tracing::debug!(error = %e, "upgraded connection ended");
                return;
            }
        }
        if !early.is_empty() {
            if let Err(e) = client.write_all(&early).await {
                tracing::debug!(error = %e, "upgraded connection ended");
                return;
            }
        }
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(error = %e, "upgraded connection ended"),
        }
    });
    if let Some(pool) = pool {
        pool.track(task.abort_handle());
    }
}
