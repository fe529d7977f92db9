//! HTTP/1.1 Upgrade (WebSocket) pass-through.
//!
//! After the target answers 101, both sides' connections are handed over
//! by hyper and bytes are copied both ways until either side closes. The
//! tunnel holds the target's in-flight mark (a draining target waits for
//! it, and cuts it at `deregistration_delay`: the task is tracked by the
//! target's pool) and the client connection's mark (so the listener's
//! idle timeout does not close a quiet WebSocket).

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use switchyard_routing::InFlight;

use crate::guard::RequestMark;
use crate::pool::Pool;

/// Whether a request asks to switch protocols (`Connection: upgrade` and
/// an `Upgrade` header).
pub fn wants_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
        && headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Starts copying between the two upgraded connections.
pub fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    in_flight: InFlight,
    mark: RequestMark,
    pool: Option<&Pool>,
) {
    let task = tokio::spawn(async move {
        let _held = (in_flight, mark);
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(error = %e, "upgraded connection ended"),
        }
    });
    if let Some(pool) = pool {
        pool.track(task.abort_handle());
    }
}
