//! `Target`: one (group, address), shared by every snapshot that lists it.
//!
//! `compile` hands the same `Arc<Target>` to the next snapshot when the
//! target persists, so its health state, in-flight count, metrics handles
//! and upstream pool survive reloads. The health subsystem writes `state`;
//! the data plane reads it with one atomic load.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge};
use switchyard_config::Address;

/// Target states as INTERFACE.md names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TargetState {
    Initial = 0,
    Healthy = 1,
    Unhealthy = 2,
    Draining = 3,
}

impl TargetState {
    pub const ALL: [TargetState; 4] = [
        TargetState::Initial,
        TargetState::Healthy,
        TargetState::Unhealthy,
        TargetState::Draining,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Draining => "draining",
        }
    }

    pub fn from_u8(v: u8) -> TargetState {
        match v {
            1 => TargetState::Healthy,
            2 => TargetState::Unhealthy,
            3 => TargetState::Draining,
            _ => TargetState::Initial,
        }
    }
}

impl fmt::Display for TargetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `switchyard_upstream_requests_total{target_group,target,code}` handles,
/// registered once per target rather than looked up per request.
pub struct UpstreamCounters {
    /// 1xx..5xx, then `error` (no answer came).
    by_class: [Counter; 6],
}

impl UpstreamCounters {
    fn register(group: &str, target: &str) -> UpstreamCounters {
        let make = |code: &'static str| {
            metrics::counter!(
                "switchyard_upstream_requests_total",
                "target_group" => group.to_owned(),
                "target" => target.to_owned(),
                "code" => code
            )
        };
        UpstreamCounters {
            by_class: [
                make("1xx"),
                make("2xx"),
                make("3xx"),
                make("4xx"),
                make("5xx"),
                make("error"),
            ],
        }
    }

    /// Counts one upstream answer by status class.
    pub fn status(&self, status: u16) {
        let i = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[i].increment(1);
    }

    /// Counts one attempt that got no answer.
    pub fn error(&self) {
        self.by_class[5].increment(1);
    }
}

/// Milliseconds since the process's first use of this clock: a compact,
/// monotonic timestamp that fits an atomic.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    Instant::now().duration_since(epoch).as_millis() as u64 + 1
}

/// The result of a target's most recent active check, for the admin API.
#[derive(Debug, Clone)]
pub struct LastCheck {
    /// `pass`, `fail`, `timeout` or `error`.
    pub result: &'static str,
    pub at: SystemTime,
    /// The status code, or what went wrong.
    pub detail: String,
}

// The health word: bits 0-1 the active-check state (Initial, Healthy,
// Unhealthy), bit 2 ejected by outlier detection, bit 3 draining. Each
// writer owns its bits; the data plane derives the state from one load.
const CHECK_MASK: u8 = 0b0011;
const EJECTED: u8 = 0b0100;
const DRAINING: u8 = 0b1000;

pub struct Target {
    group: Arc<str>,
    address: Address,
    /// `address` as text: metrics label, API key, stickiness cookie value.
    label: Arc<str>,
    weight: AtomicU32,
    health: AtomicU8,
    in_flight: AtomicUsize,
    /// When the target last became healthy (`now_ms`), for slow start;
    /// 0 = long ago.
    healthy_since: AtomicU64,
    /// Passive outlier detection: failures in a row from real traffic.
    pub consecutive_failures: AtomicU32,
    /// Ejections so far (the ejection time doubles with each) and when
    /// the last one began (`now_ms`), to forget old ones.
    pub ejections: AtomicU32,
    pub last_ejection: AtomicU64,
    /// Set once the first active check has answered (pass, fail, timeout).
    first_check_done: AtomicBool,
    last_check: Mutex<Option<LastCheck>>,
    pub upstream: UpstreamCounters,
    state_gauges: [Gauge; 4],
    /// Data-plane attachment (the proxy's connection pool), created on first
    /// use. Kept here so that it lives exactly as long as the target.
    pub ext: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("group", &self.group)
            .field("address", &self.label)
            .field("state", &self.state())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Target {
    pub fn new(group: &str, address: Address, weight: u32, state: TargetState) -> Target {
        let label: Arc<str> = Arc::from(address.to_string());
        let gauge = |s: TargetState| {
            metrics::gauge!(
                "switchyard_target_state",
                "target_group" => group.to_owned(),
                "target" => label.to_string(),
                "state" => s.as_str()
            )
        };
        let t = Target {
            upstream: UpstreamCounters::register(group, &label),
            state_gauges: TargetState::ALL.map(gauge),
            group: Arc::from(group),
            address,
            label,
            weight: AtomicU32::new(weight),
            health: AtomicU8::new(TargetState::Initial as u8),
            in_flight: AtomicUsize::new(0),
            healthy_since: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            last_ejection: AtomicU64::new(0),
            first_check_done: AtomicBool::new(false),
            last_check: Mutex::new(None),
            ext: OnceLock::new(),
        };
        t.set_state(state);
        t
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address as text, e.g. `127.0.0.1:9001`.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// The state the data plane acts on: one atomic load.
    pub fn state(&self) -> TargetState {
        let w = self.health.load(Ordering::Relaxed);
        if w & DRAINING != 0 {
            TargetState::Draining
        } else if w & EJECTED != 0 {
            TargetState::Unhealthy
        } else {
            TargetState::from_u8(w & CHECK_MASK)
        }
    }

    /// Why the target is not healthy: `outlier`, `health_check`,
    /// `deregistered`; `None` when healthy or not yet checked.
    pub fn reason(&self) -> Option<&'static str> {
        let w = self.health.load(Ordering::Relaxed);
        if w & DRAINING != 0 {
            Some("deregistered")
        } else if w & EJECTED != 0 {
            Some("outlier")
        } else if w & CHECK_MASK == TargetState::Unhealthy as u8 {
            Some("health_check")
        } else {
            None
        }
    }

    /// The active-check state alone (what the checker last decided).
    pub fn check_state(&self) -> TargetState {
        TargetState::from_u8(self.health.load(Ordering::Relaxed) & CHECK_MASK)
    }

    fn update(&self, f: impl Fn(u8) -> u8) -> (TargetState, TargetState) {
        let before = self.state();
        let _ = self
            .health
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| Some(f(w)));
        let after = self.state();
        if before != after {
            if after == TargetState::Healthy {
                self.healthy_since.store(now_ms(), Ordering::Relaxed);
            }
            self.publish_gauges(after);
        }
        (before, after)
    }

    /// A forgotten target: every state gauge at 0, so that no series says
    /// it is in any state (the exporter cannot remove a series).
    pub fn clear_state_gauges(&self) {
        for g in &self.state_gauges {
            g.set(0.0);
        }
    }

    fn publish_gauges(&self, state: TargetState) {
        for (g, s) in self.state_gauges.iter().zip(TargetState::ALL) {
            g.set(if s == state { 1.0 } else { 0.0 });
        }
    }

    /// Sets the state as a whole: `Draining` marks draining; the others
    /// set the active-check state and clear ejection and draining. Returns
    /// (before, after) effective states. Used by tests and by compile.
    pub fn set_state(&self, state: TargetState) -> (TargetState, TargetState) {
        let (before, after) = self.update(|_| match state {
            TargetState::Draining => DRAINING,
            s => s as u8,
        });
        self.publish_gauges(after);
        (before, after)
    }

    /// The health checker's verdict. Ejection and draining still win.
    pub fn set_check_state(&self, state: TargetState) -> (TargetState, TargetState) {
        let bits = match state {
            TargetState::Draining => return (self.state(), self.state()),
            s => s as u8,
        };
        self.update(|w| (w & !CHECK_MASK) | bits)
    }

    /// Outlier ejection on or off. Returns (before, after).
    pub fn set_ejected(&self, ejected: bool) -> (TargetState, TargetState) {
        self.update(|w| if ejected { w | EJECTED } else { w & !EJECTED })
    }

    pub fn is_ejected(&self) -> bool {
        self.health.load(Ordering::Relaxed) & EJECTED != 0
    }

    /// Deregistered: no new work from now on.
    pub fn set_draining(&self) -> (TargetState, TargetState) {
        self.update(|w| w | DRAINING)
    }

    /// Registered again while draining: takes traffic again as its checks
    /// allow.
    pub fn undrain(&self) -> (TargetState, TargetState) {
        self.update(|w| w & !DRAINING)
    }

    /// The share multiplier under slow start: 0.1 at the start of the ramp,
    /// rising linearly to 1.0 at `slow_start`.
    pub fn ramp(&self, slow_start: Duration) -> f64 {
        let since = self.healthy_since.load(Ordering::Relaxed);
        let window = slow_start.as_millis() as u64;
        if since == 0 || window == 0 {
            return 1.0;
        }
        let elapsed = now_ms().saturating_sub(since);
        if elapsed >= window {
            return 1.0;
        }
        0.1 + 0.9 * (elapsed as f64 / window as f64)
    }

    /// Records an active check's result for the admin API.
    pub fn record_check(&self, check: LastCheck) {
        self.first_check_done.store(true, Ordering::Relaxed);
        if let Ok(mut g) = self.last_check.lock() {
            *g = Some(check);
        }
    }

    pub fn last_check(&self) -> Option<LastCheck> {
        self.last_check.lock().ok().and_then(|g| g.clone())
    }

    /// Whether the first active check has answered.
    pub fn first_check_done(&self) -> bool {
        self.first_check_done.load(Ordering::Relaxed)
    }

    /// Requests (or TCP connections) currently using this target.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks one request as in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// Holds a target's in-flight count up; drop releases it.
pub struct InFlight(Arc<Target>);

impl InFlight {
    pub fn target(&self) -> &Arc<Target> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
