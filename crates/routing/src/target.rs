//! `Target`: one (group, address), shared by every snapshot that lists it.
//!
//! `compile` hands the same `Arc<Target>` to the next snapshot when the
//! target persists, so its health state, in-flight count, metrics handles
//! and upstream pool survive reloads. The health subsystem writes `state`;
//! the data plane reads it with one atomic load.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::Counter;
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

    fn from_u8(v: u8) -> TargetState {
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

pub struct Target {
    group: Arc<str>,
    address: Address,
    /// `address` as text: metrics label, API key, stickiness cookie value.
    label: Arc<str>,
    weight: AtomicU32,
    state: AtomicU8,
    in_flight: AtomicUsize,
    pub upstream: UpstreamCounters,
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
        Target {
            upstream: UpstreamCounters::register(group, &label),
            group: Arc::from(group),
            address,
            label,
            weight: AtomicU32::new(weight),
            state: AtomicU8::new(state as u8),
            in_flight: AtomicUsize::new(0),
            ext: OnceLock::new(),
        }
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

    pub fn state(&self) -> TargetState {
        TargetState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: TargetState) {
        self.state.store(state as u8, Ordering::Relaxed);
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
