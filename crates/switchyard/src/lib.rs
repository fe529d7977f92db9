//! switchyard: wiring. Builds the snapshot from a validated config, binds
//! listeners and the admin API, and runs until told to stop.
//!
//! The binary (`main.rs`) is the CLI around this; integration tests call
//! [`start`] directly to run a real balancer on loopback in-process.

pub mod demo;
pub mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_admin::AdminState;
use switchyard_config::{Address, Config};
use switchyard_control::Control;
use switchyard_health::HealthChecks;
use switchyard_proxy::{AccessLog, Shared};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// Histogram buckets for request durations, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use. Tests run
/// several balancers in one process; they share it.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("switchyard_request_duration_seconds".into()),
                    &DURATION_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// A running balancer.
pub struct Running {
    pub admin_addr: SocketAddr,
    /// (listener name, bound address) at start, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    pub control: Arc<Control>,
    pub shared: Arc<Shared>,
    pub admin: Arc<AdminState>,
    pub health: Arc<HealthChecks>,
    admin_stop: watch::Sender<bool>,
}

async fn resolve(addr: &Address) -> anyhow::Result<SocketAddr> {
    if let Some(a) = addr.socket_addr() {
        return Ok(a);
    }
    tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

fn open_access_log(
    config: &Config,
    path: Option<&Path>,
    source: Option<&switchyard_config::SourceMap>,
) -> anyhow::Result<AccessLog> {
    let origin = path.map_or_else(|| "<config>".to_owned(), |p| p.display().to_string());
    let output =
        switchyard_control::open_access_log(config, &origin, source).map_err(|e| anyhow!(e))?;
    let log = AccessLog::disabled();
    log.switch(output)
        .context("cannot start the access log writer")?;
    Ok(log)
}

/// Starts a balancer from an embedded config (reloads are refused).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with(config, String::new(), None, None).await
}

/// Starts a balancer from the file at `path`, as `switchyard run` does:
/// validated through the `check` path, then watched and reloaded on change.
pub async fn start_file(path: &Path) -> anyhow::Result<Running> {
    let loaded =
        switchyard_config::load_file(path).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
    start_loaded(loaded, path).await
}

/// Starts from a config already loaded from `path` and checked by the
/// caller (as `run` does before the runtime exists), then watches the file.
pub async fn start_loaded(
    loaded: switchyard_config::Loaded,
    path: &Path,
) -> anyhow::Result<Running> {
    let running = start_with(
        loaded.config,
        loaded.version,
        Some(path.to_path_buf()),
        Some(&loaded.source),
    )
    .await?;
    running.control.watch_file();
    Ok(running)
}

/// Binds every listener and the admin API (all or nothing), publishes the
/// snapshot and starts serving. Must run inside a tokio runtime.
/// `source` places errors found while starting (certificates) in the file.
pub async fn start_with(
    config: Config,
    version: String,
    path: Option<PathBuf>,
    source: Option<&switchyard_config::SourceMap>,
) -> anyhow::Result<Running> {
    let prometheus = metrics_handle();
    let admin_bind = resolve(&config.admin.bind).await?;
    let access_log = open_access_log(&config, path.as_deref(), source)?;
    // The admin socket first: a clash there fails before any listener runs.
    let admin_sock = switchyard_proxy::bind(admin_bind)
        .with_context(|| format!("admin: cannot bind {}", config.admin.bind))?;
    let control = Control::start(config, version, path, source, access_log)
        .await
        .map_err(|e| anyhow!(e))?;
    let admin = Arc::new(AdminState::new(Arc::clone(&control), prometheus.clone()));
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let admin_addr = switchyard_admin::spawn(admin_sock, Arc::clone(&admin), admin_stop_rx)?;
    tracing::info!(addr = %admin_addr, "admin listening");

    // Housekeeping off the request path: idle upstream connections and the
    // Prometheus histograms' buffers.
    let housekeeping = Arc::clone(&control.snapshot);
    let mut stop_rx = admin_stop.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                _ = tick.tick() => {}
            }
            switchyard_proxy::prune_idle_pools(&housekeeping.load());
            if let Some(p) = &prometheus {
                p.run_upkeep();
            }
        }
    });
    admin.ready.store(true, Ordering::Relaxed);
    Ok(Running {
        admin_addr,
        listeners: control.listener_addrs(),
        shared: Arc::clone(&control.shared),
        health: Arc::clone(&control.health),
        control,
        admin,
        admin_stop,
    })
}

impl Running {
    /// The bound address of listener `name` (as running now: reloads may
    /// add listeners).
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.control
            .listener_addrs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Graceful shutdown as INTERFACE.md describes: /readyz 503 at once,
    /// keep serving for `drain_delay`, stop accepting, let in-flight
    /// requests finish within `timeout`. Returns as soon as nothing is in
    /// flight (or at the timeout).
    pub async fn shutdown(self) {
        self.admin.shutting_down.store(true, Ordering::Relaxed);
        let shutdown = self.control.snapshot.load().config.shutdown.clone();
        if !shutdown.drain_delay.is_zero() {
            tracing::info!(delay = ?shutdown.drain_delay, "draining before stop");
            tokio::time::sleep(shutdown.drain_delay).await;
        }
        if tokio::time::timeout(shutdown.timeout, self.control.stop_listeners())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?shutdown.timeout, "shutdown timeout: closing remaining connections");
        }
        self.health.stop_all();
        let _ = self.admin_stop.send(true);
    }
}

/// The signals `run` and `demo` act on: SIGTERM and SIGINT (graceful
/// shutdown) and SIGHUP (reload).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Registers the handlers. Call it before starting anything: from here
    /// on these signals no longer kill the process (their default action),
    /// and one that arrives before [`run_until_signal`] waits is kept and
    /// acted on then, so a SIGTERM during startup is a graceful shutdown
    /// as soon as startup is done. Must run inside a tokio runtime.
    pub fn install() -> anyhow::Result<Signals> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot install the {name} handler"))
        };
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully. SIGHUP
/// reloads the config file. `signals` were installed before `running`
/// was started (see [`Signals::install`]).
pub async fn run_until_signal(running: Running, mut signals: Signals) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                // Errors are logged and kept by reload itself.
                let _ = running.control.reload().await;
            }
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
