//! switchyard-control: owns the one `ArcSwap<Snapshot>`.
//!
//! Third stage of the data flow (YAML -> config -> routing -> **control**
//! publishes the `Arc<Snapshot>` -> proxy reads it). Everything that changes
//! the running configuration comes through here: file reloads (watch,
//! SIGHUP, admin API), targets registered and deregistered through the API,
//! listeners added and removed, and the reapers that forget drained
//! targets. A change is all or nothing: validated, bound and compiled
//! before it is swapped in, else the running config stays.

pub mod drain;
pub mod watch;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use metrics::Counter;
use switchyard_config::{Address, Config, Listener, ListenerProtocol, TargetSpec};
use switchyard_health::HealthChecks;
use switchyard_proxy::tls::TlsConfigs;
use switchyard_proxy::{ListenerHandle, Shared};
use switchyard_routing::{Snapshot, Target, TargetState};
use tokio::net::TcpListener;

/// Why an API change was refused (mapped to 404 / 409 / 400 by admin).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
}

/// The outcome of the last reload, for `GET /api/v1/config`.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub ok: bool,
    pub at: SystemTime,
    pub error: Option<String>,
}

/// What `GET /api/v1/config` shows.
#[derive(Debug, Clone)]
pub struct Status {
    /// Hash of the file bytes in force.
    pub version: String,
    pub loaded_at: SystemTime,
    pub last_reload: Option<LastReload>,
}

/// Everything a change needs, behind one lock so changes never interleave.
struct State {
    /// The file's config in force (without API targets).
    yaml: Config,
    /// What is published: `yaml` with API registrations applied.
    current: Config,
    /// Registered through the API: (group, target); kept across reloads
    /// until deleted through the API.
    api_added: Vec<(String, TargetSpec)>,
    /// YAML targets deregistered through the API: (group, address). They
    /// stay out until the YAML stops listing them or the API adds them back.
    api_removed: Vec<(String, String)>,
    draining: Vec<(String, Arc<Target>)>,
    listeners: Vec<ListenerHandle>,
}

pub struct Control {
    path: Option<PathBuf>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub health: Arc<HealthChecks>,
    pub shared: Arc<Shared>,
    state: Mutex<State>,
    status: Mutex<Status>,
    reloads_ok: Counter,
    reloads_error: Counter,
    /// Serialises reloads (file watch, SIGHUP and API may coincide).
    reloading: tokio::sync::Mutex<()>,
    /// Version of the last file that failed to load, so the watcher does not
    /// retry the same broken file every poll.
    failed: Mutex<Option<String>>,
}

/// A listener's identity across reloads: same name, bind and protocol means
/// the same socket and connections.
fn same_listener(a: &Listener, b: &Listener) -> bool {
    a.name == b.name && a.bind == b.bind && a.protocol == b.protocol
}

async fn resolve(addr: &Address) -> Result<SocketAddr, String> {
    if let Some(a) = addr.socket_addr() {
        return Ok(a);
    }
    tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

/// Opens the access log `config` asks for: `None` when it is off. For
/// `run` and reload, so an unwritable path is an error placed at
/// `access_log.path` before anything depends on it.
pub fn open_access_log(
    config: &Config,
    origin: &str,
    source: Option<&switchyard_config::SourceMap>,
) -> Result<Option<switchyard_proxy::access_log::Output>, String> {
    if !config.access_log.enabled {
        return Ok(None);
    }
    switchyard_proxy::access_log::Output::open(&config.access_log.path)
        .map(Some)
        .map_err(|e| access_log_error(config, origin, source, &e))
}

/// `check`'s look at the access log: an existing file must open for
/// appending, a missing one needs its directory. Nothing is created:
/// `check` may run as another user than `run` (an init container as root),
/// and a file it made could then not be written.
pub fn check_access_log(
    config: &Config,
    origin: &str,
    source: Option<&switchyard_config::SourceMap>,
) -> Result<(), String> {
    let switchyard_config::LogPath::File(path) = &config.access_log.path else {
        return Ok(());
    };
    if !config.access_log.enabled {
        return Ok(());
    }
    let found = if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
    } else {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        switchyard_proxy::access_log::can_create_in(dir)
    };
    found.map_err(|e| access_log_error(config, origin, source, &e))
}

fn access_log_error(
    config: &Config,
    origin: &str,
    source: Option<&switchyard_config::SourceMap>,
    e: &std::io::Error,
) -> String {
    let what = match &config.access_log.path {
        switchyard_config::LogPath::File(p) => p.display().to_string(),
        other => format!("{other:?}"),
    };
    switchyard_config::ConfigError::at(
        origin,
        source,
        "access_log.path",
        format!("cannot open the access log {what}: {e}"),
    )
    .to_string()
}

/// Binds the listeners of `config` that are not already running (same
/// name, bind and protocol in `current` and among `running`). Nothing is
/// left bound if one fails: the sockets drop with the error.
async fn bind_missing(
    config: &Config,
    current: &Config,
    running: &[String],
    origin: &str,
    source: Option<&switchyard_config::SourceMap>,
) -> Result<Vec<(Listener, TcpListener)>, String> {
    let mut out = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        // Placed at the listener's `bind` in the file, as config errors are.
        let located = |message: String| {
            switchyard_config::ConfigError::at(
                origin,
                source,
                &format!("listeners.{i}.bind"),
                message,
            )
            .to_string()
        };
        let kept = running.iter().any(|name| {
            current
                .listeners
                .iter()
                .any(|c| c.name == *name && same_listener(c, l))
        });
        if kept {
            continue;
        }
        let addr = resolve(&l.bind)
            .await
            .map_err(|e| located(format!("listener {:?}: {e}", l.name)))?;
        let sock = switchyard_proxy::bind(addr).map_err(|e| {
            located(format!(
                "listener {:?}: cannot bind {}: {e}",
                l.name, l.bind
            ))
        })?;
        out.push((l.clone(), sock));
    }
    Ok(out)
}

/// The TLS configs of every https and tls listener of `config`, read from
/// disk now (a reload picks up renewed certificates). Errors name the
/// config file (`origin`), the listener and the certificate/key files.
fn build_tls(
    config: &Config,
    origin: &str,
    source: Option<&switchyard_config::SourceMap>,
) -> Result<TlsConfigs, String> {
    switchyard_proxy::tls::server_configs(config).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.located(origin, source))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Starts serving one bound listener as its protocol says.
fn spawn_listener(
    sock: TcpListener,
    spec: &Listener,
    shared: &Arc<Shared>,
) -> Result<ListenerHandle, String> {
    let shared = Arc::clone(shared);
    let started = match spec.protocol {
        ListenerProtocol::Http => switchyard_proxy::spawn_http(sock, spec, shared),
        ListenerProtocol::Tcp => switchyard_proxy::spawn_tcp(sock, spec, shared, None),
        ListenerProtocol::Tls => {
            let Some(config) = shared.tls.get(&spec.name) else {
                return Err(format!("listener {:?}: no TLS configuration", spec.name));
            };
            switchyard_proxy::spawn_tcp(sock, spec, shared, Some(config))
        }
        ListenerProtocol::Https => switchyard_proxy::spawn_http(sock, spec, shared),
    };
    started.map_err(|e| format!("listener {:?}: {e}", spec.name))
}

/// `yaml` with the API's registrations applied. Suppressions whose target
/// the YAML no longer lists are dropped (they have done their job).
fn merge(
    yaml: &Config,
    added: &[(String, TargetSpec)],
    removed: &mut Vec<(String, String)>,
) -> Config {
    let mut merged = yaml.clone();
    removed.retain(|(g, a)| {
        yaml.group(g)
            .is_some_and(|grp| grp.targets.iter().any(|t| t.address.to_string() == *a))
    });
    for grp in &mut merged.target_groups {
        grp.targets.retain(|t| {
            !removed
                .iter()
                .any(|(g, a)| *g == grp.name && *a == t.address.to_string())
        });
        for (g, spec) in added {
            if *g == grp.name && !grp.targets.iter().any(|t| t.address == spec.address) {
                grp.targets.push(spec.clone());
            }
        }
    }
    merged
}

impl Control {
    /// Binds every listener of `config` (all or nothing), publishes its
    /// snapshot, starts health checks and serving. `path` is the file that
    /// reloads read (none: reloads are refused).
    pub async fn start(
        config: Config,
        version: String,
        path: Option<PathBuf>,
        source: Option<&switchyard_config::SourceMap>,
        shared_access_log: switchyard_proxy::AccessLog,
    ) -> Result<Arc<Control>, String> {
        let origin = path
            .as_deref()
            .map_or_else(|| "<config>".to_owned(), |p| p.display().to_string());
        // Certificates before sockets: a bad pair fails the start cleanly.
        let tls = build_tls(&config, &origin, source)?;
        let bound = bind_missing(&config, &config, &[], &origin, source).await?;
        let snapshot = Snapshot::compile(config.clone(), None).map_err(|e| e.to_string())?;
        let swap = Arc::new(ArcSwap::from_pointee(snapshot));
        let shared = Arc::new(Shared::new(Arc::clone(&swap), shared_access_log));
        shared.tls.replace(tls);
        let health = HealthChecks::new();
        health.sync(&swap.load());
        let mut listeners = Vec::new();
        for (spec, sock) in bound {
            let h = spawn_listener(sock, &spec, &shared)?;
            tracing::info!(listener = %spec.name, addr = %h.local_addr, "listening");
            listeners.push(h);
        }
        Ok(Arc::new(Control {
            path,
            snapshot: swap,
            health,
            shared,
            state: Mutex::new(State {
                yaml: config.clone(),
                current: config,
                api_added: Vec::new(),
                api_removed: Vec::new(),
                draining: Vec::new(),
                listeners,
            }),
            // The load at start counts as the last one: `last_reload` is
            // an object from the first answer on, as INTERFACE.md shows it.
            status: Mutex::new(Status {
                version,
                loaded_at: SystemTime::now(),
                last_reload: Some(LastReload {
                    ok: true,
                    at: SystemTime::now(),
                    error: None,
                }),
            }),
            reloads_ok: metrics::counter!("switchyard_config_reloads_total", "result" => "ok"),
            reloads_error: metrics::counter!("switchyard_config_reloads_total", "result" => "error"),
            reloading: tokio::sync::Mutex::new(()),
            failed: Mutex::new(None),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn config_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// (name, bound address) of every running listener.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.state()
            .listeners
            .iter()
            .map(|h| (h.name.clone(), h.local_addr))
            .collect()
    }

    /// Re-reads the config file through exactly the `check` path and
    /// applies it. On any error the running config stays; the error is
    /// logged, counted and kept for `GET /api/v1/config`.
    pub async fn reload(self: &Arc<Self>) -> Result<String, String> {
        let result = self.try_reload().await;
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(version) => {
                self.reloads_ok.increment(1);
                status.version = version.clone();
                status.loaded_at = SystemTime::now();
                status.last_reload = Some(LastReload {
                    ok: true,
                    at: SystemTime::now(),
                    error: None,
                });
                tracing::info!(%version, "configuration reloaded");
            }
            Err(e) => {
                self.reloads_error.increment(1);
                status.last_reload = Some(LastReload {
                    ok: false,
                    at: SystemTime::now(),
                    error: Some(e.clone()),
                });
                tracing::error!(error = %e, "reload failed; the running configuration stays in force");
            }
        }
        result
    }

    async fn try_reload(self: &Arc<Self>) -> Result<String, String> {
        let Some(path) = &self.path else {
            return Err("no configuration file to reload (started from an embedded config)".into());
        };
        // One reload at a time, and the file is read under that lock: two
        // reloads racing (watcher, SIGHUP, API) must not apply an older
        // read of the file after a newer one. Binding (which may resolve
        // names) happens before the state lock is taken, so API calls
        // never wait on DNS.
        let _one = self.reloading.lock().await;
        let loaded =
            switchyard_config::load_file(path).map_err(|e| e.to_string().trim_end().to_owned())?;
        let tls = build_tls(
            &loaded.config,
            &path.display().to_string(),
            Some(&loaded.source),
        )?;
        let (current, running) = {
            let st = self.state();
            let names: Vec<String> = st.listeners.iter().map(|h| h.name.clone()).collect();
            (st.current.clone(), names)
        };
        let origin = path.display().to_string();
        // A changed access log is opened now (an unwritable path fails the
        // reload) and switched to once the rest has applied.
        let log = (loaded.config.access_log != current.access_log)
            .then(|| open_access_log(&loaded.config, &origin, Some(&loaded.source)))
            .transpose()?;
        if loaded.config.workers != current.workers {
            tracing::warn!(
                was = current.workers,
                asked = loaded.config.workers,
                "workers changed in the file: it takes effect at the next start"
            );
        }
        if loaded.config.admin.bind != current.admin.bind {
            tracing::warn!(
                running = %current.admin.bind,
                asked = %loaded.config.admin.bind,
                "admin.bind changed: it takes effect at the next start; the admin API stays where it is"
            );
        }
        let bound = bind_missing(
            &loaded.config,
            &current,
            &running,
            &origin,
            Some(&loaded.source),
        )
        .await?;
        let mut guard = self.state();
        let st = &mut *guard;
        let merged = merge(&loaded.config, &st.api_added, &mut st.api_removed);
        self.apply(st, merged, bound, Some(tls))?;
        st.yaml = loaded.config;
        drop(guard);
        if let Some(output) = log {
            if let Err(e) = self.shared.access_log.switch(output) {
                tracing::error!(error = %e, "cannot start the access log writer");
            }
        }
        Ok(loaded.version)
    }

    /// Publishes `next` (already merged): compile, swap, TLS configs (a
    /// reload's, `None` when the file was not re-read), listeners, drains,
    /// health checks. Nothing changes if compiling fails.
    fn apply(
        self: &Arc<Self>,
        st: &mut State,
        next: Config,
        bound: Vec<(Listener, TcpListener)>,
        tls: Option<TlsConfigs>,
    ) -> Result<(), String> {
        let old = self.snapshot.load_full();
        // Targets the new config no longer lists start draining. Found
        // before compiling, so that one compile both drops them from
        // picking and lists them as draining.
        let listed: HashSet<(&str, &switchyard_config::Address)> = next
            .target_groups
            .iter()
            .flat_map(|g| g.targets.iter().map(move |t| (g.name.as_str(), &t.address)))
            .collect();
        let removed: Vec<(&switchyard_routing::Group, &Arc<Target>)> = old
            .groups
            .iter()
            .flat_map(|g| g.targets.iter().map(move |t| (g, t)))
            .filter(|(g, t)| !listed.contains(&(g.name(), t.address())))
            .collect();
        let mut draining = st.draining.clone();
        draining.extend(
            removed
                .iter()
                .map(|(g, t)| (g.name().to_owned(), Arc::clone(t))),
        );
        let snap = Snapshot::compile_with(next.clone(), Some(&old), &draining)
            .map_err(|e| e.to_string())?;
        for (_, t) in &removed {
            drain::begin(t);
        }
        let snap = Arc::new(snap);
        self.snapshot.store(Arc::clone(&snap));
        // Before new listeners start; kept ones use it from their next
        // handshake on.
        if let Some(tls) = tls {
            self.shared.tls.replace(tls);
        }

        // Listeners: keep the unchanged, retire the removed, start the new.
        let mut kept = Vec::new();
        for h in std::mem::take(&mut st.listeners) {
            let was = st.current.listeners.iter().find(|l| l.name == h.name);
            let now = next.listeners.iter().find(|l| l.name == h.name);
            match (was, now) {
                (Some(w), Some(n)) if same_listener(w, n) => {
                    if w.max_connections != n.max_connections {
                        h.set_max_connections(n.max_connections);
                    }
                    kept.push(h);
                }
                _ => {
                    tracing::info!(listener = %h.name, "listener removed: no longer accepting, draining its connections");
                    h.retire(Arc::clone(&old));
                    tokio::spawn(h.join());
                }
            }
        }
        for (spec, sock) in bound {
            match spawn_listener(sock, &spec, &self.shared) {
                Ok(h) => {
                    tracing::info!(listener = %spec.name, addr = %h.local_addr, "listening");
                    kept.push(h);
                }
                Err(e) => {
                    tracing::error!(listener = %spec.name, error = %e, "cannot start listener")
                }
            }
        }
        st.listeners = kept;

        // Draining targets the new config lists again were revived by
        // compile; the removed ones get their reaper.
        let live: HashSet<usize> = snap
            .groups
            .iter()
            .flat_map(|g| g.targets.iter())
            .map(|t| Arc::as_ptr(t) as usize)
            .collect();
        draining.retain(|(_, t)| !live.contains(&(Arc::as_ptr(t) as usize)));
        for (g, t) in &removed {
            self.spawn_reaper(
                g.name().to_owned(),
                Arc::clone(t),
                g.spec.deregistration_delay,
            );
        }
        st.draining = draining;
        self.health.sync(&snap);
        st.current = next;
        Ok(())
    }

    fn spawn_reaper(
        self: &Arc<Self>,
        group: String,
        target: Arc<Target>,
        delay: std::time::Duration,
    ) {
        let control = Arc::clone(self);
        tokio::spawn(async move {
            let ended = drain::wait(&target, delay).await;
            tracing::info!(target_group = %group, target = %target.label(), ?ended, "drain finished");
            if ended == drain::Ended::Revived {
                return;
            }
            control.forget(&target);
        });
    }

    /// Drops a drained target from the published snapshot.
    fn forget(self: &Arc<Self>, target: &Arc<Target>) {
        let mut st = self.state();
        let before = st.draining.len();
        st.draining.retain(|(_, t)| !Arc::ptr_eq(t, target));
        if st.draining.len() == before {
            return;
        }
        let old = self.snapshot.load_full();
        match Snapshot::compile_with(st.current.clone(), Some(&old), &st.draining) {
            Ok(s) => self.snapshot.store(Arc::new(s)),
            Err(e) => tracing::error!(error = %e, "cannot republish after a drain"),
        }
        let snap = self.snapshot.load();
        // Its series share their labels with a target of the same address
        // added back since: those stay as that target set them.
        let listed = snap
            .groups
            .iter()
            .any(|g| g.name() == target.group() && g.target(target.label()).is_some());
        if !listed {
            target.clear_state_gauges();
        }
        self.health.sync(&snap);
    }

    /// `POST /api/v1/target-groups/{group}/targets`.
    pub fn register(
        self: &Arc<Self>,
        group: &str,
        address: &str,
        weight: u32,
    ) -> Result<(TargetState, u32), ApiError> {
        let addr = Address::parse_target(address).map_err(ApiError::BadRequest)?;
        if !(1..=1000).contains(&weight) {
            return Err(ApiError::BadRequest(format!(
                "weight {weight} out of range 1..=1000"
            )));
        }
        let mut st = self.state();
        let Some(grp) = st.current.group(group) else {
            return Err(ApiError::NotFound(format!(
                "unknown target group {group:?}"
            )));
        };
        if grp.targets.iter().any(|t| t.address == addr) {
            return Err(ApiError::Conflict(format!(
                "target {addr} is already registered in {group:?}"
            )));
        }
        let label = addr.to_string();
        st.api_removed.retain(|(g, a)| !(g == group && *a == label));
        let yaml_weight = st
            .yaml
            .group(group)
            .and_then(|g| g.targets.iter().find(|t| t.address == addr))
            .map(|t| t.weight);
        if yaml_weight.is_none() {
            st.api_added.push((
                group.to_owned(),
                TargetSpec {
                    address: addr,
                    weight,
                },
            ));
        }
        let st = &mut *st;
        let merged = merge(&st.yaml, &st.api_added, &mut st.api_removed);
        self.apply(st, merged, Vec::new(), None)
            .map_err(ApiError::BadRequest)?;
        // `initial` for a new target; a draining one registered again is
        // revived with the state it had. The weight is the YAML's for a
        // target the YAML lists (it stays the source of that target).
        let snap = self.snapshot.load();
        let state = snap
            .groups
            .iter()
            .find(|g| g.name() == group)
            .and_then(|g| g.target(&label))
            .map_or(TargetState::Initial, |t| t.state());
        Ok((state, yaml_weight.unwrap_or(weight)))
    }

    /// `DELETE /api/v1/target-groups/{group}/targets/{address}`: the target
    /// starts draining.
    pub fn deregister(self: &Arc<Self>, group: &str, address: &str) -> Result<(), ApiError> {
        let mut st = self.state();
        let Some(grp) = st.current.group(group) else {
            return Err(ApiError::NotFound(format!(
                "unknown target group {group:?}"
            )));
        };
        let Some(t) = grp.targets.iter().find(|t| {
            t.address.to_string() == address
                || Address::parse_target(address).is_ok_and(|a| a == t.address)
        }) else {
            return Err(ApiError::NotFound(format!(
                "no target {address} in {group:?}"
            )));
        };
        let label = t.address.to_string();
        let before = st.api_added.len();
        st.api_added
            .retain(|(g, s)| !(g == group && s.address.to_string() == label));
        if st.api_added.len() == before {
            st.api_removed.push((group.to_owned(), label));
        }
        let st = &mut *st;
        let merged = merge(&st.yaml, &st.api_added, &mut st.api_removed);
        self.apply(st, merged, Vec::new(), None)
            .map_err(ApiError::BadRequest)
    }

    /// Starts watching the config file; a changed file (by content) is
    /// reloaded.
    pub fn watch_file(self: &Arc<Self>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let control = Arc::clone(self);
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
            tokio::spawn(watch::poll(path.clone(), move || {
                let _ = tx.try_send(());
            }));
            while rx.recv().await.is_some() {
                // A small file read; not worth a blocking-pool hop.
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let version = switchyard_config::version_of(&bytes);
                let status = control.status();
                let failed_same =
                    control.last_failed_version().as_deref() == Some(version.as_str());
                // A broken file put back to the running version: reloaded
                // once more, so the last reload's error does not outlive
                // the file that caused it.
                let reverted =
                    version == status.version && status.last_reload.as_ref().is_some_and(|r| !r.ok);
                if (version != status.version || reverted) && !failed_same {
                    tracing::info!(path = %path.display(), "config file changed");
                    if control.reload().await.is_err() {
                        control.remember_failed(version);
                    }
                }
            }
        });
    }

    fn last_failed_version(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    fn remember_failed(&self, version: String) {
        if let Ok(mut f) = self.failed.lock() {
            *f = Some(version);
        }
    }

    /// Graceful stop of every listener: stop accepting, let connections
    /// finish (HTTP/1 `Connection: close`, HTTP/2 GOAWAY). Returns when all
    /// connections are done.
    pub async fn stop_listeners(&self) {
        self.shared.begin_shutdown();
        let handles = std::mem::take(&mut self.state().listeners);
        for h in &handles {
            h.signal_stop();
        }
        for h in handles {
            h.join().await;
        }
    }
}
