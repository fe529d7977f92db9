//! switchyard: wiring. Builds the snapshot from a validated config, binds
//! listeners and the admin API, and runs until told to stop.
//!
//! The binary (`main.rs`) is the CLI around this; integration tests call
//! [`start`] directly to run a real balancer on loopback in-process.

pub mod demo;
pub mod refuse;
pub mod status;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_admin::AdminState;
use switchyard_config::{Address, Config, LogPath, Shutdown};
use switchyard_health::HealthChecks;
use switchyard_proxy::{AccessLog, ListenerHandle, Shared};
use switchyard_routing::Snapshot;
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
    /// (listener name, bound address), in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    pub shared: Arc<Shared>,
    pub admin: Arc<AdminState>,
    pub health: Arc<HealthChecks>,
    handles: Vec<ListenerHandle>,
    admin_stop: watch::Sender<bool>,
    shutdown: Shutdown,
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

fn open_access_log(config: &Config) -> anyhow::Result<AccessLog> {
    if !config.access_log.enabled {
        return Ok(AccessLog::disabled());
    }
    AccessLog::open(&config.access_log.path).with_context(|| match &config.access_log.path {
        LogPath::File(p) => format!("cannot open access log {}", p.display()),
        _ => "cannot open access log".to_owned(),
    })
}

/// Compiles `config`, binds every listener and the admin API (all or
/// nothing), and starts serving. Must run inside a tokio runtime.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let prometheus = metrics_handle();
    let shutdown = config.shutdown.clone();
    let admin_bind = resolve(&config.admin.bind).await?;
    let access_log = open_access_log(&config)?;
    let mut bound = Vec::with_capacity(config.listeners.len());
    // Bind everything before serving anything: a port clash fails the start
    // cleanly instead of leaving half a balancer up.
    for l in &config.listeners {
        let addr = resolve(&l.bind).await?;
        let sock = switchyard_proxy::bind(addr)
            .with_context(|| format!("listener {:?}: cannot bind {}", l.name, l.bind))?;
        bound.push((l.clone(), sock));
    }
    let admin_sock = switchyard_proxy::bind(admin_bind)
        .with_context(|| format!("admin: cannot bind {}", config.admin.bind))?;

    let snapshot = Snapshot::compile(config, None).context("compiling the configuration")?;
    let swap = Arc::new(ArcSwap::from_pointee(snapshot));
    let shared = Arc::new(Shared::new(Arc::clone(&swap), access_log));
    // Checks start at once: targets begin `initial` and /readyz waits for
    // every first answer.
    let health = HealthChecks::new();
    health.sync(&swap.load());
    let admin = Arc::new(AdminState::new(
        Arc::clone(&swap),
        prometheus.clone(),
        Arc::clone(&health),
    ));

    let mut handles = Vec::new();
    let mut listeners = Vec::new();
    for (spec, sock) in bound {
        let h = switchyard_proxy::spawn_http(sock, &spec, Arc::clone(&shared))?;
        tracing::info!(listener = %spec.name, addr = %h.local_addr, "listening");
        listeners.push((spec.name.clone(), h.local_addr));
        handles.push(h);
    }
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let admin_addr = switchyard_admin::spawn(admin_sock, Arc::clone(&admin), admin_stop_rx)?;
    tracing::info!(addr = %admin_addr, "admin listening");

    // Housekeeping off the request path: idle upstream connections and the
    // Prometheus histograms' buffers.
    let housekeeping = Arc::clone(&swap);
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
        listeners,
        shared,
        admin,
        health,
        handles,
        admin_stop,
        shutdown,
    })
}

impl Running {
    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Graceful shutdown as INTERFACE.md describes: /readyz 503 at once,
    /// keep serving for `drain_delay`, stop accepting, let in-flight
    /// requests finish within `timeout`. Returns as soon as nothing is in
    /// flight (or at the timeout).
    pub async fn shutdown(self) {
        self.admin.shutting_down.store(true, Ordering::Relaxed);
        if !self.shutdown.drain_delay.is_zero() {
            tracing::info!(delay = ?self.shutdown.drain_delay, "draining before stop");
            tokio::time::sleep(self.shutdown.drain_delay).await;
        }
        self.shared.begin_shutdown();
        for h in &self.handles {
            h.signal_stop();
        }
        let all = futures_join(self.handles);
        if tokio::time::timeout(self.shutdown.timeout, all)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.shutdown.timeout, "shutdown timeout: closing remaining connections");
        }
        self.health.stop_all();
        let _ = self.admin_stop.send(true);
    }
}

async fn futures_join(handles: Vec<ListenerHandle>) {
    for h in handles {
        h.join().await;
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run_until_signal(running: Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // Reload lands with the live-configuration work; until then
                // SIGHUP must not kill the process (its default action).
                tracing::warn!("SIGHUP: configuration reload is not supported by this build yet; ignored");
            }
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
