//! Bounded waiting: [`wait_until`] and the [`eventually!`](crate::eventually) macro.
//!
//! Tests of asynchronous systems (health state flipping, a reload landing,
//! a connection draining) must wait for a condition rather than sleep a
//! fixed time; these helpers poll with an upper bound so a broken test fails
//! instead of hanging.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How often [`wait_until`] and [`eventually!`](crate::eventually) re-check
/// their condition: 20 ms.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Re-evaluates the async condition `f` every [`POLL_INTERVAL`] until it
/// returns `true` (then returns `true`) or `timeout` has elapsed (then
/// returns `false`).
///
/// The condition is always evaluated at least once, even with a zero
/// timeout. A single evaluation that does not finish before the deadline is
/// abandoned and counts as `false`, so the total wait stays bounded by
/// `timeout` (plus one poll interval at most). Uses tokio's clock, so it
/// follows a paused test clock.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Give the first check (and a check started just before the
        // deadline) a short grace period rather than none at all.
        let budget = remaining.max(POLL_INTERVAL);
        if let Ok(true) = tokio::time::timeout(budget, f()).await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Waits until a condition holds, re-checking it every 20 ms; panics if it
/// still does not hold after the timeout.
///
/// ```
/// # use std::time::Duration;
/// # use switchyard_testkit::{eventually, get, FakeUpstream};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let up = FakeUpstream::builder("blue-1").start().await;
/// let url = up.url("/");
/// eventually!(Duration::from_secs(5), get(&url).await.is_ok_and(|r| r.body == "blue-1"));
/// eventually!(Duration::from_secs(5), up.requests() == 1);
/// eventually!(Duration::from_secs(5), up.connections() == 1, "saw {}", up.connections());
/// # }
/// ```
///
/// The condition is a `bool` expression that is placed inside an `async`
/// block and re-evaluated on every poll, so it may contain `.await`; the
/// macro itself expands to an `.await` and can only be used inside async
/// code (a `#[tokio::test]`). Variables in the condition are borrowed, not
/// moved. Built on [`wait_until`](crate::wait_until), with the same bound.
///
/// The panic message names the condition's source text, the elapsed time
/// and the timeout, followed by the optional `format!`-style message.
#[macro_export]
macro_rules! eventually {
    ($timeout:expr, $cond:expr $(,)?) => {
        $crate::eventually!($timeout, $cond, "")
    };
    ($timeout:expr, $cond:expr, $($msg:tt)+) => {{
        let timeout: ::std::time::Duration = $timeout;
        let started = $crate::__private::Instant::now();
        if !$crate::wait_until(timeout, || async { $cond }).await {
            ::std::panic!(
                "eventually!: condition `{}` still false after {:?} (timeout {:?}) {}",
                ::std::stringify!($cond),
                started.elapsed(),
                timeout,
                ::std::format!($($msg)+),
            );
        }
    }};
}
