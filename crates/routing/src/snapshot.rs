//! `compile(&Config, previous) -> Snapshot`: the one immutable value the
//! data plane reads per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use metrics::{Counter, Histogram};
use switchyard_config::{CheckProtocol, Config, Listener, RouteAction};

use crate::action::{Fixed, RedirectAction};
use crate::group::{hash_key, Eligibility, Group};
use crate::matcher::{Matcher, RequestInfo};
use crate::split::{Split, Sticky};
use crate::target::{Target, TargetState};
use crate::CompileError;

/// Per (listener, route, target group) request metrics, registered at
/// compile time so the hot path only touches atomics.
#[derive(Clone)]
pub struct RequestMetrics {
    codes: [Counter; 5],
    pub duration: Histogram,
}

impl RequestMetrics {
    fn register(listener: &str, route: &str, group: &str) -> RequestMetrics {
        let c = |code: &'static str| {
            metrics::counter!(
                "switchyard_requests_total",
                "listener" => listener.to_owned(),
                "route" => route.to_owned(),
                "target_group" => group.to_owned(),
                "code" => code
            )
        };
        RequestMetrics {
            codes: [c("1xx"), c("2xx"), c("3xx"), c("4xx"), c("5xx")],
            duration: metrics::histogram!(
                "switchyard_request_duration_seconds",
                "listener" => listener.to_owned(),
                "route" => route.to_owned(),
                "target_group" => group.to_owned()
            ),
        }
    }

    /// Counts one answered request and its duration.
    pub fn record(&self, status: u16, started: Instant) {
        let i = usize::from(status / 100).clamp(1, 5) - 1;
        self.codes[i].increment(1);
        self.duration.record(started.elapsed().as_secs_f64());
    }
}

pub enum Action {
    Forward(Split),
    Redirect(RedirectAction),
    Fixed(Fixed),
}

pub struct Route {
    pub name: Arc<str>,
    matcher: Matcher,
    pub action: Action,
    /// For redirects and fixed responses (target_group label empty).
    pub metrics: RequestMetrics,
    /// For forwards: by snapshot group index, every group the route can
    /// reach (its split and their failover chains).
    group_metrics: Vec<(usize, RequestMetrics)>,
}

impl Route {
    /// Metrics for requests this route sent to group `group`.
    pub fn metrics_for(&self, group: usize) -> &RequestMetrics {
        self.group_metrics
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, m)| m)
            .unwrap_or(&self.metrics)
    }
}

pub struct ListenerTable {
    pub spec: Listener,
    pub routes: Vec<Route>,
    /// tcp/tls listeners.
    pub forward: Option<Split>,
    /// Requests no route matched (404).
    pub unmatched: RequestMetrics,
}

impl ListenerTable {
    /// First matching route, in order.
    #[inline]
    pub fn route(&self, req: &RequestInfo<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }
}

/// What a pick needs to know about the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickInput<'a> {
    pub headers: Option<&'a HeaderMap>,
    pub client_ip: Option<IpAddr>,
}

pub struct Snapshot {
    pub config: Arc<Config>,
    /// Same order as `config.listeners`.
    pub listeners: Vec<ListenerTable>,
    /// Same order as `config.target_groups`.
    pub groups: Vec<Group>,
}

impl Snapshot {
    /// Compiles `config`. Targets that `previous` already had (same group
    /// name, same address) are reused, keeping their state, counters and
    /// connections; weight changes apply to them at once.
    pub fn compile(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, CompileError> {
        Snapshot::compile_with(config, previous, &[])
    }

    /// [`Snapshot::compile`], also listing `draining` targets (by group
    /// name) in their groups, where they are shown but never picked. A
    /// draining target that `config` lists again is revived.
    pub fn compile_with(
        config: Config,
        previous: Option<&Snapshot>,
        draining: &[(String, Arc<Target>)],
    ) -> Result<Snapshot, CompileError> {
        let mut known: HashMap<(&str, &str), &Arc<Target>> = HashMap::new();
        if let Some(prev) = previous {
            for g in &prev.groups {
                for t in g.targets.iter().chain(&g.draining) {
                    known.insert((g.name(), t.label()), t);
                }
            }
        }
        for (g, t) in draining {
            known.insert((g.as_str(), t.label()), t);
        }
        let index: HashMap<&str, usize> = config
            .target_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.as_str(), i))
            .collect();
        let group_index = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| CompileError::UnknownGroup(name.to_owned()))
        };

        let mut groups = Vec::with_capacity(config.target_groups.len());
        for spec in &config.target_groups {
            let initial = if spec.health_check.protocol == CheckProtocol::None {
                TargetState::Healthy
            } else {
                TargetState::Initial
            };
            let targets = spec
                .targets
                .iter()
                .map(|t| {
                    let label = t.address.to_string();
                    match known.get(&(spec.name.as_str(), label.as_str())) {
                        Some(existing) => {
                            existing.set_weight(t.weight);
                            if existing.state() == TargetState::Draining {
                                existing.undrain();
                            }
                            Arc::clone(existing)
                        }
                        None => Arc::new(Target::new(
                            &spec.name,
                            t.address.clone(),
                            t.weight,
                            initial,
                        )),
                    }
                })
                .collect();
            let mut group = Group::new(spec.clone(), targets);
            group.failover = spec.failover.as_deref().map(group_index).transpose()?;
            group.draining = draining
                .iter()
                .filter(|(g, t)| {
                    *g == spec.name && !group.targets.iter().any(|x| Arc::ptr_eq(x, t))
                })
                .map(|(_, t)| Arc::clone(t))
                .collect();
            groups.push(group);
        }

        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let mut routes = Vec::with_capacity(l.routes.len());
            for r in &l.routes {
                let (action, reach) = match &r.action {
                    RouteAction::Forward(f) => {
                        let split = compile_split(f, &group_index)?;
                        let reach = reachable(&split, &groups);
                        (Action::Forward(split), reach)
                    }
                    RouteAction::Redirect(x) => {
                        (Action::Redirect(RedirectAction::compile(x)?), vec![])
                    }
                    RouteAction::FixedResponse(x) => (Action::Fixed(Fixed::compile(x)?), vec![]),
                };
                routes.push(Route {
                    name: Arc::from(r.name.as_str()),
                    matcher: Matcher::compile(&r.matcher)?,
                    metrics: RequestMetrics::register(&l.name, &r.name, ""),
                    group_metrics: reach
                        .into_iter()
                        .map(|g| {
                            (
                                g,
                                RequestMetrics::register(&l.name, &r.name, groups[g].name()),
                            )
                        })
                        .collect(),
                    action,
                });
            }
            let forward = l
                .forward
                .as_ref()
                .map(|f| compile_split(f, &group_index))
                .transpose()?;
            listeners.push(ListenerTable {
                unmatched: RequestMetrics::register(&l.name, "", ""),
                spec: l.clone(),
                routes,
                forward,
            });
        }
        Ok(Snapshot {
            config: Arc::new(config),
            listeners,
            groups,
        })
    }

    /// Index of the listener called `name` in `listeners`.
    #[inline]
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| l.spec.name == name)
    }

    /// The compiled listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerTable> {
        self.listener_index(name).map(|i| &self.listeners[i])
    }

    /// Picks a target for a request sent to group `group`: a healthy one;
    /// if the group has none, its `failover` chain; at the end of the chain
    /// `fail_open` (any non-draining target); else `None` (503).
    /// Returns the group actually used with the target.
    pub fn pick(
        &self,
        group: usize,
        input: PickInput<'_>,
        avoid: &[Arc<Target>],
    ) -> Option<(usize, Arc<Target>)> {
        let mut g = group;
        // The chain is acyclic (validated); the bound guards anyway.
        for _ in 0..=self.groups.len() {
            let grp = self.groups.get(g)?;
            let key = self.key_for(grp, input);
            if let Some(t) = grp.pick(Eligibility::Healthy, key, avoid) {
                return Some((g, Arc::clone(t)));
            }
            match grp.failover {
                Some(next) => g = next,
                None if grp.spec.fail_open => {
                    return grp
                        .pick(Eligibility::NotDraining, key, avoid)
                        .map(|t| (g, Arc::clone(t)));
                }
                None => return None,
            }
        }
        None
    }

    /// The next group of `split` by weight, scaled down for groups in slow
    /// start (a whole new group ramps up instead of taking its full share
    /// at once).
    pub fn choose_group(&self, split: &Split) -> Option<usize> {
        let mut g = split.choose()?;
        // Bounded re-draws; with no ramping group this is one draw.
        for _ in 0..4 {
            let r = self.groups.get(g).map_or(1.0, Group::ramp);
            if r >= 1.0 || fastrand::f64() < r {
                return Some(g);
            }
            g = split.choose()?;
        }
        Some(g)
    }

    /// A group of `split` for a client whose sticky group has no usable
    /// target: as [`choose_group`](Self::choose_group), but never a group
    /// without a usable target while another has one, so that the client
    /// is not pinned again to a group that cannot serve it.
    pub fn choose_usable_group(&self, split: &Split) -> Option<usize> {
        let g = self.choose_group(split)?;
        if self.has_usable(g) {
            return Some(g);
        }
        split.choose_among(|g| self.has_usable(g)).or(Some(g))
    }

    /// Whether a request sent to `group` would find a target (following
    /// failover and fail_open exactly as `pick` does).
    pub fn has_usable(&self, group: usize) -> bool {
        let mut g = group;
        for _ in 0..=self.groups.len() {
            let Some(grp) = self.groups.get(g) else {
                return false;
            };
            if grp.has(Eligibility::Healthy) {
                return true;
            }
            match grp.failover {
                Some(next) => g = next,
                None => return grp.spec.fail_open && grp.has(Eligibility::NotDraining),
            }
        }
        false
    }

    fn key_for(&self, grp: &Group, input: PickInput<'_>) -> Option<u64> {
        let on = grp.hash_on()?;
        match input.headers {
            Some(h) => hash_key(on, h, input.client_ip),
            None => hash_key(on, &HeaderMap::new(), input.client_ip),
        }
    }
}

fn compile_split(
    f: &switchyard_config::Forward,
    group_index: &impl Fn(&str) -> Result<usize, CompileError>,
) -> Result<Split, CompileError> {
    let mut entries = Vec::with_capacity(f.target_groups.len());
    for wg in &f.target_groups {
        entries.push((group_index(&wg.name)?, wg.weight, wg.name.as_str()));
    }
    let sticky = f.stickiness.as_ref().map(|s| Sticky {
        cookie: s.cookie.as_str().into(),
        duration: s.duration,
    });
    Ok(Split::new(entries, sticky))
}

/// Groups a split can send to, following failover chains.
fn reachable(split: &Split, groups: &[Group]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for (start, _) in split.groups() {
        let mut g = Some(start);
        while let Some(i) = g {
            if out.contains(&i) {
                break;
            }
            out.push(i);
            g = groups.get(i).and_then(|x| x.failover);
        }
    }
    out
}
