//! A compiled target group: its targets and the precomputed tables that
//! pick one of them without a lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use switchyard_config::{Balance, HashOn, TargetGroup};

use crate::hash::hash64;
use crate::target::{Target, TargetState};
use crate::{maglev, wrr};

/// Which targets may take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    /// Only `healthy` targets: the normal case.
    Healthy,
    /// Everything but `draining`: fail_open.
    NotDraining,
}

impl Eligibility {
    fn admits(self, state: TargetState) -> bool {
        match self {
            Eligibility::Healthy => state == TargetState::Healthy,
            Eligibility::NotDraining => state != TargetState::Draining,
        }
    }
}

pub struct Group {
    pub spec: TargetGroup,
    pub targets: Vec<Arc<Target>>,
    /// Deregistered targets still finishing their work: listed (admin,
    /// metrics), never picked.
    pub draining: Vec<Arc<Target>>,
    /// Index into the snapshot's groups.
    pub failover: Option<usize>,
    /// Smooth-WRR sequence of target indices (target weights).
    table: Vec<u32>,
    next: AtomicUsize,
    /// Maglev lookup table, for consistent_hash only.
    ring: Vec<u32>,
    /// `switchyard_retries_total{target_group}`.
    pub retries: metrics::Counter,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.spec.name)
            .field("targets", &self.targets)
            .finish()
    }
}

impl Group {
    pub(crate) fn new(spec: TargetGroup, targets: Vec<Arc<Target>>) -> Group {
        let weights: Vec<u32> = targets.iter().map(|t| t.weight().max(1)).collect();
        let table = wrr::smooth_table(&weights);
        let ring = if matches!(spec.balance, Balance::ConsistentHash(_)) {
            let names: Vec<&str> = targets.iter().map(|t| t.label()).collect();
            maglev::build(&names, &weights)
        } else {
            Vec::new()
        };
        Group {
            draining: Vec::new(),
            retries: metrics::counter!("switchyard_retries_total", "target_group" => spec.name.clone()),
            spec,
            targets,
            failover: None,
            table,
            next: AtomicUsize::new(0),
            ring,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The target called `label` (its address text), if listed.
    pub fn target(&self, label: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.label() == label)
    }

    /// Whether any target is admitted by `elig`.
    pub fn has(&self, elig: Eligibility) -> bool {
        self.targets.iter().any(|t| elig.admits(t.state()))
    }

    /// What consistent_hash hashes on, when this group uses it.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.spec.balance {
            Balance::ConsistentHash(on) => Some(on),
            _ => None,
        }
    }

    /// Picks a target admitted by `elig`, preferring ones not in `avoid`
    /// (targets already tried by this request). `key` is the
    /// consistent-hash key when the group hashes and the request has one.
    pub fn pick(
        &self,
        elig: Eligibility,
        key: Option<u64>,
        avoid: &[Arc<Target>],
    ) -> Option<&Arc<Target>> {
        if self.targets.is_empty() {
            return None;
        }
        let slow = self.spec.slow_start;
        if !slow.is_zero() {
            // Slow start: a ramping target is passed over with probability
            // 1 - ramp, which scales its share by about its ramp. If every
            // candidate was passed over, pick without the ramp.
            let ramped = |t: &Arc<Target>| {
                let r = t.ramp(slow);
                r >= 1.0 || fastrand::f64() < r
            };
            if let Some(t) = self.pick_with(elig, key, avoid, &ramped) {
                return Some(t);
            }
        }
        self.pick_with(elig, key, avoid, &|_| true)
    }

    fn pick_with<R: Fn(&Arc<Target>) -> bool>(
        &self,
        elig: Eligibility,
        key: Option<u64>,
        avoid: &[Arc<Target>],
        ramp: &R,
    ) -> Option<&Arc<Target>> {
        let fresh = |t: &Arc<Target>| {
            elig.admits(t.state()) && !avoid.iter().any(|a| Arc::ptr_eq(a, t)) && ramp(t)
        };
        let found = match (&self.spec.balance, key) {
            (Balance::ConsistentHash(_), Some(k)) if !self.ring.is_empty() => {
                self.walk(&self.ring, (k % self.ring.len() as u64) as usize, &fresh)
            }
            (Balance::Random, _) => {
                self.walk(&self.table, fastrand::usize(..self.table.len()), &fresh)
            }
            (Balance::LeastRequest, _) => self.power_of_two(&fresh),
            _ => self.round_robin(avoid.is_empty(), &fresh),
        };
        // Every admitted target was already tried: reuse one rather than fail.
        found.or_else(|| {
            if avoid.is_empty() {
                None
            } else {
                self.pick_with(elig, key, &[], ramp)
            }
        })
    }

    /// The group's share multiplier under slow start: the mean ramp of its
    /// healthy targets (1.0 without slow start). A group whose targets are
    /// all new ramps as a whole.
    pub fn ramp(&self) -> f64 {
        let slow = self.spec.slow_start;
        if slow.is_zero() {
            return 1.0;
        }
        let (mut sum, mut n) = (0.0, 0u32);
        for t in &self.targets {
            if t.state() == TargetState::Healthy {
                sum += t.ramp(slow);
                n += 1;
            }
        }
        if n == 0 {
            1.0
        } else {
            sum / f64::from(n)
        }
    }

    /// The next target of the weighted rotation that `ok` accepts. Each
    /// request takes one turn; the turns of targets it passes over are
    /// taken too, so that a target that cannot serve hands its share
    /// around the rotation rather than all to the target after it. A pass
    /// that finds nothing gives its turn back: a request that falls back
    /// from healthy targets to fail_open (or from the slow-start ramp to
    /// none) takes one turn, not two, which with two targets would send
    /// every request to the same one. A retry (`take` false) walks on from
    /// the current turn without taking any: otherwise each failed attempt
    /// would move the rotation twice, and the same dead target would be
    /// tried first by every request.
    fn round_robin<F: Fn(&Arc<Target>) -> bool>(&self, take: bool, ok: &F) -> Option<&Arc<Target>> {
        let len = self.table.len();
        if !take {
            let start = self.next.load(Ordering::Relaxed);
            return self.walk(&self.table, start % len, ok);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        match self.walk_at(&self.table, start % len, ok) {
            Some((t, passed)) => {
                if passed > 0 {
                    self.next.fetch_add(passed, Ordering::Relaxed);
                }
                Some(t)
            }
            None => {
                self.next.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Walks `table` from `start` for the first target `ok` accepts. Only
    /// the first few entries are looked at in the table order; after that a
    /// linear pass over the targets bounds the cost when most are down.
    fn walk<F: Fn(&Arc<Target>) -> bool>(
        &self,
        table: &[u32],
        start: usize,
        ok: &F,
    ) -> Option<&Arc<Target>> {
        self.walk_at(table, start, ok).map(|(t, _)| t)
    }

    /// [`walk`](Self::walk), with the number of table entries passed over
    /// before the target found (0 when the linear pass found it).
    fn walk_at<F: Fn(&Arc<Target>) -> bool>(
        &self,
        table: &[u32],
        start: usize,
        ok: &F,
    ) -> Option<(&Arc<Target>, usize)> {
        let probes = table.len().min(2 * self.targets.len() + 2);
        for i in 0..probes {
            let idx = table[(start + i) % table.len()] as usize;
            if let Some(t) = self.targets.get(idx) {
                if ok(t) {
                    return Some((t, i));
                }
            }
        }
        let n = self.targets.len();
        (0..n)
            .map(|i| &self.targets[(start + i) % n])
            .find(|t| ok(t))
            .map(|t| (t, 0))
    }

    /// least_request: two random candidates (drawn by weight), the one with
    /// fewer requests in flight wins.
    fn power_of_two<F: Fn(&Arc<Target>) -> bool>(&self, ok: &F) -> Option<&Arc<Target>> {
        let len = self.table.len();
        let a = self.walk(&self.table, fastrand::usize(..len), ok)?;
        // A distinct second candidate when there is one: comparing a target
        // with itself would hand a busy heavy target every tie.
        let other = |t: &Arc<Target>| ok(t) && !Arc::ptr_eq(t, a);
        let Some(b) = self.walk(&self.table, fastrand::usize(..len), &other) else {
            return Some(a);
        };
        // Compare in_flight / weight by cross-multiplying: no division.
        let la = a.in_flight() as u64 * u64::from(b.weight().max(1));
        let lb = b.in_flight() as u64 * u64::from(a.weight().max(1));
        Some(if lb < la { b } else { a })
    }
}

/// The consistent-hash key of a request for `on`, if the request has one.
pub fn hash_key(
    on: &HashOn,
    headers: &http::HeaderMap,
    client_ip: Option<std::net::IpAddr>,
) -> Option<u64> {
    match on {
        HashOn::Header(name) => headers.get(name.as_str()).map(|v| hash64(v.as_bytes())),
        HashOn::Cookie(name) => crate::cookie::find(headers, name).map(|v| hash64(v.as_bytes())),
        HashOn::ClientIp => client_ip.map(|ip| match ip {
            std::net::IpAddr::V4(v4) => hash64(&v4.octets()),
            std::net::IpAddr::V6(v6) => hash64(&v6.octets()),
        }),
    }
}
