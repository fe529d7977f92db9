//! Access log: one JSON line per request, written off the request path.
//!
//! Requests hand a finished line to a bounded channel; one plain thread
//! writes it. When the writer falls behind (a full disk, a slow pipe),
//! lines are dropped and counted rather than slowing requests down.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_config::LogPath;

/// Lines buffered between requests and the writer thread.
const QUEUE: usize = 16_384;

/// The access log every connection of the process writes to. A reload
/// may turn it on or off or point it elsewhere (`reconfigure`): requests
/// see one flag, and the writer thread switches its output between lines.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: AtomicBool,
    /// The writer thread's queue, from the first time the log is on.
    tx: OnceLock<SyncSender<Msg>>,
    /// A new output for the writer, taken between lines. Not sent through
    /// the queue: a reload must never wait behind a full queue (a stalled
    /// log pipe is just when an operator reloads).
    next: Arc<NextOutput>,
    /// Registered when the log first opens, so the series exists at 0.
    dropped: OnceLock<metrics::Counter>,
}

#[derive(Default)]
struct NextOutput {
    pending: AtomicBool,
    output: Mutex<Option<Box<dyn Write + Send>>>,
}

impl NextOutput {
    fn take(&self) -> Option<Box<dyn Write + Send>> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return None;
        }
        self.output.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

enum Msg {
    Line(String),
    /// A new output waits in `NextOutput`.
    Wake,
}

/// Where the log goes, opened and ready to take lines: what a reload
/// prepares before it commits, so an unwritable path fails the reload.
pub struct Output(Box<dyn Write + Send>);

impl Output {
    /// Opens `path` for appending (a file is created if missing).
    pub fn open(path: &LogPath) -> std::io::Result<Output> {
        Ok(Output(match path {
            LogPath::Stdout => Box::new(std::io::stdout()),
            LogPath::Stderr => Box::new(std::io::stderr()),
            LogPath::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        }))
    }
}

/// Whether this process may create a file in `dir` (what `run` will do
/// with a missing access log); `check` asks without creating anything.
pub fn can_create_in(dir: &std::path::Path) -> std::io::Result<()> {
    use rustix::fs::{access, Access};
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    access(dir, Access::WRITE_OK | Access::EXEC_OK).map_err(std::io::Error::from)
}

impl Default for AccessLog {
    fn default() -> AccessLog {
        AccessLog::disabled()
    }
}

/// What one access log line says.
pub struct Entry<'a> {
    pub listener: &'a str,
    pub route: &'a str,
    pub target_group: &'a str,
    pub target: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub status: u16,
    pub duration_s: f64,
    pub client: &'a str,
    pub request_id: &'a str,
}

impl AccessLog {
    /// A log that discards everything (until reconfigured).
    pub fn disabled() -> AccessLog {
        AccessLog {
            inner: Arc::new(Inner {
                enabled: AtomicBool::new(false),
                tx: OnceLock::new(),
                next: Arc::default(),
                dropped: OnceLock::new(),
            }),
        }
    }

    /// From the next request on: lines go to `output`, or nowhere (`None`).
    /// The writer thread starts the first time there is an output.
    pub fn switch(&self, output: Option<Output>) -> std::io::Result<()> {
        let Some(Output(out)) = output else {
            self.inner.enabled.store(false, Ordering::Relaxed);
            return Ok(());
        };
        match self.inner.tx.get() {
            Some(tx) => {
                let next = &self.inner.next;
                *next.output.lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
                next.pending.store(true, Ordering::Release);
                // A full queue needs no wake: the writer is busy and looks
                // at `next` between batches anyway.
                let _ = tx.try_send(Msg::Wake);
            }
            None => {
                let tx = spawn_writer(out, Arc::clone(&self.inner.next))?;
                let _ = self.inner.tx.set(tx);
            }
        }
        self.inner
            .dropped
            .get_or_init(|| metrics::counter!("switchyard_access_log_dropped_total"));
        self.inner.enabled.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    pub fn log(&self, e: &Entry<'_>) {
        if !self.enabled() {
            return;
        }
        let Some(tx) = self.inner.tx.get() else {
            return;
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let line = serde_json::json!({
            "ts": ts,
            "listener": e.listener,
            "route": e.route,
            "target_group": e.target_group,
            "target": e.target,
            "method": e.method,
            "host": e.host,
            "path": e.path,
            "status": e.status,
            "duration_s": e.duration_s,
            "client": e.client,
            "request_id": e.request_id,
        });
        let mut text = line.to_string();
        text.push('\n');
        if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(text)) {
            if let Some(dropped) = self.inner.dropped.get() {
                dropped.increment(1);
            }
        }
    }
}

/// The writer thread: lines to the current output, flushed when the queue
/// is momentarily empty (batches under load, prompt lines when quiet); a
/// new output is taken up between batches.
///
/// A batch that fails to write (a full disk, a closed pipe) is let go:
/// its lines are counted in `switchyard_access_log_write_errors_total`
/// and a warning says why, at most once a minute; the next batch tries
/// afresh. Requests never wait for any of it.
fn spawn_writer(
    first: Box<dyn Write + Send>,
    next: Arc<NextOutput>,
) -> std::io::Result<SyncSender<Msg>> {
    let (tx, rx) = sync_channel::<Msg>(QUEUE);
    let errors = metrics::counter!("switchyard_access_log_write_errors_total");
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            let mut buf = std::io::BufWriter::new(first);
            let mut warned: Option<std::time::Instant> = None;
            while let Ok(msg) = rx.recv() {
                if let Some(out) = next.take() {
                    let _ = buf.flush();
                    buf = std::io::BufWriter::new(out);
                }
                let mut msg = Some(msg);
                let (mut lines, mut failed) = (0u64, None);
                while let Some(m) = msg.take().or_else(|| rx.try_recv().ok()) {
                    if let Msg::Line(line) = m {
                        lines += 1;
                        if failed.is_none() {
                            failed = buf.write_all(line.as_bytes()).err();
                        }
                    }
                }
                let Some(e) = failed.or_else(|| buf.flush().err()) else {
                    continue;
                };
                errors.increment(lines);
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(std::time::Instant::now());
                    tracing::warn!(error = %e, lines, "access log write failed, lines lost");
                }
                // What is still buffered was counted as lost: start clean
                // rather than retry it ahead of newer lines for ever.
                let (out, _) = buf.into_parts();
                buf = std::io::BufWriter::new(out);
            }
        })?;
    Ok(tx)
}

/// At most one warning this often for a failing access log.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
