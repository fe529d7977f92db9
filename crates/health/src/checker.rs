//! One checker task per (group, target), kept in step with the published
//! snapshot by [`HealthChecks::sync`].
//!
//! Targets are keyed by `Arc<Target>` identity: a target that survives a
//! reload keeps its checker (and its counters), so a reload never resets
//! health. Parameter changes reach the running task through a watch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use switchyard_config::{CheckProtocol, HealthCheck};
use switchyard_routing::target::LastCheck;
use switchyard_routing::{Snapshot, Target, TargetState};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::machine::{self, Counters, Thresholds};
use crate::probe;

struct Checker {
    params: watch::Sender<Arc<HealthCheck>>,
    task: JoinHandle<()>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The set of running checkers.
#[derive(Default)]
pub struct HealthChecks {
    checkers: Mutex<HashMap<usize, Checker>>,
    /// Latched once every target of the first snapshot had its first
    /// check answered: readiness does not flap when targets are added later.
    ready: AtomicBool,
    /// The checked targets of the first snapshot: readiness waits for
    /// these only, whenever it is asked, so a target added later never
    /// turns `/readyz` to 503. Weak: a removed one is not kept alive, and
    /// its address cannot be taken for a later target's while it is held.
    initial: Mutex<Option<Vec<Weak<Target>>>>,
}

impl HealthChecks {
    pub fn new() -> Arc<HealthChecks> {
        Arc::new(HealthChecks::default())
    }

    /// Starts checkers for targets new in `snap`, updates the parameters
    /// of kept ones, and stops those whose target is gone. Must run inside
    /// a tokio runtime.
    pub fn sync(&self, snap: &Snapshot) {
        let mut checkers = self.checkers.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = Vec::new();
        for group in &snap.groups {
            let spec = &group.spec.health_check;
            for target in &group.targets {
                let key = Arc::as_ptr(target) as usize;
                if spec.protocol == CheckProtocol::None {
                    // Always healthy; no task. (A group switched to `none`
                    // by a reload makes its targets healthy at once.)
                    checkers.remove(&key);
                    target.set_check_state(TargetState::Healthy);
                    continue;
                }
                seen.push(key);
                match checkers.get(&key) {
                    Some(c) => {
                        c.params.send_if_modified(|p| {
                            let changed = **p != *spec;
                            if changed {
                                *p = Arc::new(spec.clone());
                            }
                            changed
                        });
                    }
                    None => {
                        let (tx, rx) = watch::channel(Arc::new(spec.clone()));
                        let task = tokio::spawn(run(Arc::clone(target), rx));
                        checkers.insert(key, Checker { params: tx, task });
                    }
                }
            }
        }
        checkers.retain(|k, _| seen.contains(k));
        let mut initial = self.initial.lock().unwrap_or_else(|p| p.into_inner());
        if initial.is_none() {
            *initial = Some(
                snap.groups
                    .iter()
                    .filter(|g| g.spec.health_check.protocol != CheckProtocol::None)
                    .flat_map(|g| g.targets.iter().map(Arc::downgrade))
                    .collect(),
            );
        }
    }

    /// Stops every checker (shutdown).
    pub fn stop_all(&self) {
        self.checkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// True once every checked target of the first snapshot that `snap`
    /// still checks has had its first check answered (pass, fail or
    /// timeout); then stays true.
    pub fn ready(&self, snap: &Snapshot) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let initial = self.initial.lock().unwrap_or_else(|p| p.into_inner());
        let Some(initial) = initial.as_ref() else {
            return false;
        };
        // Targets since added are not waited for; initial ones since
        // removed, or no longer checked, are not either.
        let checked: HashSet<*const Target> = snap
            .groups
            .iter()
            .filter(|g| g.spec.health_check.protocol != CheckProtocol::None)
            .flat_map(|g| g.targets.iter().map(Arc::as_ptr))
            .collect();
        let done = initial
            .iter()
            .filter_map(Weak::upgrade)
            .all(|t| !checked.contains(&Arc::as_ptr(&t)) || t.first_check_done());
        if done {
            self.ready.store(true, Ordering::Relaxed);
        }
        done
    }
}

/// A jittered interval: +-10%, so hundreds of checks do not fire in step.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// The checker loop: check, apply the state machine, publish, wait.
/// At most one check in flight per target: the next starts only after the
/// previous has answered or timed out.
async fn run(target: Arc<Target>, params: watch::Receiver<Arc<HealthCheck>>) {
    let group = target.group().to_owned();
    let label = target.label().to_owned();
    let counter = |result: &'static str| {
        metrics::counter!(
            "switchyard_health_checks_total",
            "target_group" => group.clone(),
            "target" => label.clone(),
            "result" => result
        )
    };
    let results = [
        counter("pass"),
        counter("fail"),
        counter("timeout"),
        counter("error"),
    ];
    let ejections = metrics::counter!(
        "switchyard_ejections_total",
        "target_group" => group.clone(),
        "reason" => "health"
    );
    let mut counters = Counters::default();
    let mut prober = probe::Prober::default();
    loop {
        // An Arc: no per-check copy of the parameters.
        let spec = Arc::clone(&params.borrow());
        let started = tokio::time::Instant::now();
        let outcome = prober.check(&spec, target.address()).await;
        let idx = match outcome.label() {
            "pass" => 0,
            "fail" => 1,
            "timeout" => 2,
            _ => 3,
        };
        results[idx].increment(1);
        let detail = outcome.detail(spec.timeout);
        target.record_check(LastCheck {
            result: outcome.label(),
            at: SystemTime::now(),
            detail: detail.clone(),
        });
        let thresholds = Thresholds {
            healthy: spec.healthy_threshold,
            unhealthy: spec.unhealthy_threshold,
        };
        let current = target.check_state();
        let next = machine::next(current, &mut counters, outcome.passed(), thresholds);
        if next != current {
            target.set_check_state(next);
            if current == TargetState::Healthy && next == TargetState::Unhealthy {
                ejections.increment(1);
            }
            tracing::info!(
                target_group = %group, target = %label, from = %current, to = %next,
                check = outcome.label(), %detail, "target health changed"
            );
        }
        let wait = jittered(spec.interval).saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
    }
}
