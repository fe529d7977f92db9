//! The `switchyard` command: run, check, demo, status.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of glibc malloc: per-request allocations (header maps,
/// bodies' bookkeeping) are small and short-lived, and at 1,000 connections
/// glibc's arenas fragment. Measured with benches/compare.sh (see
/// benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Layer 4/7 load balancer for blue/green and canary releases"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer from a config file.
    Run {
        #[arg(short, long, default_value = "config/switchyard.yaml")]
        config: PathBuf,
        /// Runtime worker threads (overrides `workers`; 0 = one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file fully; prints `ok` or the errors.
    Check {
        #[arg(short, long, default_value = "config/switchyard.yaml")]
        config: PathBuf,
    },
    /// Start demo upstreams and the balancer on loopback; no files needed.
    Demo,
    /// Print target groups and targets from a running balancer's admin API.
    Status {
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
}

/// Logs to stderr. `RUST_LOG` sets levels as `level` and `target=level`
/// pairs (e.g. `debug` or `info,switchyard_proxy=debug`); unset or
/// unreadable, `info` with rustls's per-handshake warnings quietened.
/// A `Targets` filter rather than `EnvFilter`: the same syntax for what
/// operators use, without compiling regexes at startup (EnvFilter parses
/// with them: about 0.3 MiB more resident memory for a whole run).
fn init_logs(format: LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("rustls", LevelFilter::ERROR)
        });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Human => registry.with(layer.with_filter(filter)).init(),
        LogFormat::Json => registry.with(layer.json().with_filter(filter)).init(),
    }
}

/// The async runtime. One worker runs a current-thread runtime: with a
/// single worker, work stealing only adds atomics and wake-ups (measured:
/// see benches/README.md); more workers share work through tokio's
/// multi-thread scheduler.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if workers > 0 {
            b.worker_threads(workers);
        }
        b
    };
    b.enable_all().build().context("cannot start the runtime")
}

/// `--log-format` as given: fatal errors follow it too.
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A fatal error on stderr: `error: ...` for people, or a JSON line like
/// every other log line under `--log-format json`.
fn report(message: &str) {
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!("{message}");
    } else {
        eprintln!("error: {message}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    JSON_ERRORS.store(
        matches!(cli.log_format, LogFormat::Json),
        std::sync::atomic::Ordering::Relaxed,
    );
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run { config, workers } => run(&config, workers),
        Command::Demo => demo(),
        Command::Status { admin } => status(&admin),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match switchyard_config::load_file(path) {
        Ok(loaded) => {
            // The certificates as `run` and reload build them: a key that
            // does not match its certificate fails here, not at startup.
            let origin = path.display().to_string();
            let mut problems: Vec<String> = switchyard_proxy::tls::check_tls(&loaded, &origin)
                .iter()
                .map(ToString::to_string)
                .collect();
            // The access log: openable by `run` (nothing is created).
            if let Err(e) =
                switchyard_control::check_access_log(&loaded.config, &origin, Some(&loaded.source))
            {
                problems.push(e);
            }
            if !problems.is_empty() {
                for e in &problems {
                    report(&e.to_string());
                }
                return ExitCode::FAILURE;
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors.iter() {
                report(&e.to_string());
            }
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, workers: Option<usize>) -> anyhow::Result<()> {
    // Loaded before the runtime exists: `workers` sizes it.
    let loaded = match switchyard_config::load_file(path) {
        Ok(l) => l,
        Err(errors) => {
            for e in errors.iter() {
                report(&e.to_string());
            }
            anyhow::bail!("{}: invalid configuration", path.display());
        }
    };
    let workers = workers.unwrap_or(loaded.config.workers);
    serve(runtime(workers)?, switchyard::start_loaded(loaded, path))
}

/// `run` and `demo`: installs the signal handlers, then awaits `start`
/// (which binds and logs `listening`: nothing runs before it is awaited),
/// then serves until SIGTERM/SIGINT. Handlers first: a SIGTERM during
/// startup must not kill the process but shut it down gracefully once
/// started.
fn serve(
    rt: tokio::runtime::Runtime,
    start: impl std::future::Future<Output = anyhow::Result<switchyard::Running>>,
) -> anyhow::Result<()> {
    rt.block_on(async {
        let signals = switchyard::Signals::install()?;
        let running = start.await?;
        switchyard::run_until_signal(running, signals).await
    })
}

fn demo() -> anyhow::Result<()> {
    use switchyard::demo::{config_yaml, demo_upstream, free_or_ephemeral};
    serve(runtime(0)?, async {
        let blue = [
            demo_upstream("blue-1").await?,
            demo_upstream("blue-2").await?,
        ];
        let green = [
            demo_upstream("green-1").await?,
            demo_upstream("green-2").await?,
        ];
        let listen = free_or_ephemeral("127.0.0.1:8080");
        let admin = free_or_ephemeral("127.0.0.1:9901");
        let yaml = config_yaml(&listen, &admin, blue, green);
        let loaded = switchyard_config::parse_str(&yaml, "<demo>", std::path::Path::new("."))
            .map_err(|e| anyhow::anyhow!("embedded demo config is invalid: {e}"))?;
        let running = switchyard::start(loaded.config).await?;
        // Print the URLs once the first health checks have answered, so the
        // first curl already sees healthy targets.
        for _ in 0..100 {
            if running.health.ready(&running.shared.snapshot.load()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let url = running
            .addr("demo")
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        let admin = running.admin_addr;
        println!(
            "\nswitchyard demo is running.\n\
             \n  balancer   {url}/   (blue 90% / green 10%)\
             \n  admin      http://{admin}/metrics\n\
             \nTry:\
             \n  for i in $(seq 20); do curl -s {url}/; done | sort | uniq -c\
             \n  curl -s -H 'x-canary: always' {url}/          # always green\
             \n  curl -si {url}/old/page                       # 302 redirect to /\
             \n  curl -si {url}/maintenance                    # fixed 503 response\
             \n  curl -s http://{admin}/api/v1/target-groups   # health of each target\
             \n  curl -s http://{admin}/metrics | grep switchyard_requests_total\
             \n\nPress Ctrl-C to stop.\n"
        );
        Ok(running)
    })
}

fn status(admin: &str) -> anyhow::Result<()> {
    runtime(1)?.block_on(async {
        let json = switchyard::status::admin_get(admin, "/api/v1/target-groups").await?;
        print!("{}", switchyard::status::table(&json)?);
        Ok(())
    })
}
