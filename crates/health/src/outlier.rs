//! Passive outlier detection: real traffic ejects failing targets.
//!
//! The proxy reports every upstream attempt. `consecutive_failures` 5xx
//! answers or connect/reset/timeout errors in a row eject the target (state
//! `unhealthy`, reason `outlier`) for `ejection`, doubled on each repeat and
//! capped at 10x, never ejecting more than `max_ejected_percent` of the
//! group at once. When the time is up the ejection bit clears and the
//! active-check state shows through again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use switchyard_routing::target::now_ms;
use switchyard_routing::{Group, Target};

/// Records one upstream attempt's outcome. Cheap when the group has no
/// outlier detection (one branch) or the attempt succeeded (one store).
pub fn observe(group: &Group, target: &Arc<Target>, failed: bool) {
    let Some(od) = &group.spec.outlier_detection else {
        return;
    };
    if !failed {
        if target.consecutive_failures.load(Ordering::Relaxed) != 0 {
            target.consecutive_failures.store(0, Ordering::Relaxed);
        }
        return;
    }
    let n = target.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n < od.consecutive_failures || target.is_ejected() {
        return;
    }
    let total = group.targets.len();
    let ejected = group.targets.iter().filter(|t| t.is_ejected()).count();
    if (ejected + 1) * 100 > od.max_ejected_percent as usize * total {
        // Ejecting this one would leave too little capacity: keep serving.
        return;
    }
    target.set_ejected(true);
    target.consecutive_failures.store(0, Ordering::Relaxed);
    let duration = ejection_time(target, od.ejection);
    metrics::counter!(
        "switchyard_ejections_total",
        "target_group" => group.spec.name.clone(),
        "reason" => "outlier"
    )
    .increment(1);
    tracing::warn!(
        target_group = %group.spec.name, target = %target.label(), failures = n,
        ejection = ?duration, "target ejected by outlier detection"
    );
    let target = Arc::clone(target);
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        target.set_ejected(false);
        tracing::info!(target = %target.label(), "outlier ejection over");
    });
}

/// `base * 2^(n-1)`, capped at `10 * base`. The count starts over once the
/// target has gone twice the capped time without an ejection.
fn ejection_time(target: &Target, base: Duration) -> Duration {
    let cap = base.saturating_mul(10);
    let now = now_ms();
    let last = target.last_ejection.swap(now, Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) > 2 * cap.as_millis() as u64 {
        target.ejections.store(0, Ordering::Relaxed);
    }
    let n = target.ejections.fetch_add(1, Ordering::Relaxed);
    base.saturating_mul(1u32 << n.min(10)).min(cap)
}
