//! Draining a deregistered target: no new work, in-flight work finishes,
//! the rest is cut at `deregistration_delay`.

use std::sync::Arc;
use std::time::Duration;

use switchyard_proxy::pool::Pool;
use switchyard_routing::{Target, TargetState};
use tokio::time::Instant;

/// How often a draining target's in-flight count is looked at.
const TICK: Duration = Duration::from_millis(50);

/// Marks `target` draining and closes its idle pooled connections at once.
pub fn begin(target: &Target) {
    target.set_draining();
    if let Some(pool) = target.ext.get().and_then(|p| p.downcast_ref::<Pool>()) {
        pool.clear();
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Nothing was in flight any more (before the deadline).
    Idle,
    /// The deadline came: remaining connections were closed.
    Cut,
    /// Registered again while draining.
    Revived,
}

/// Waits until nothing is in flight or `delay` has passed (then cuts what
/// remains). Ends early if the target is registered again.
pub async fn wait(target: &Arc<Target>, delay: Duration) -> Ended {
    let deadline = Instant::now() + delay;
    loop {
        if target.state() != TargetState::Draining {
            return Ended::Revived;
        }
        if target.in_flight() == 0 {
            return Ended::Idle;
        }
        let now = Instant::now();
        if now >= deadline {
            if let Some(pool) = target.ext.get().and_then(|p| p.downcast_ref::<Pool>()) {
                pool.cut_all();
            }
            return Ended::Cut;
        }
        tokio::time::sleep(TICK.min(deadline - now)).await;
    }
}
