//! Access log: one JSON line per request, written off the request path.
//!
//! Requests hand a finished line to a bounded channel; one plain thread
//! writes it. When the writer falls behind (a full disk, a slow pipe),
//! lines are dropped and counted rather than slowing requests down.

use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_config::LogPath;

/// Lines buffered between requests and the writer thread.
const QUEUE: usize = 16_384;

#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    /// Registered when the log opens, so the series exists at 0.
    dropped: metrics::Counter,
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
    /// A log that discards everything.
    pub fn disabled() -> AccessLog {
        AccessLog {
            tx: None,
            dropped: metrics::Counter::noop(),
        }
    }

    /// Opens `path` (appending) and starts the writer thread.
    pub fn open(path: &LogPath) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = match path {
            LogPath::Stdout => Box::new(std::io::stdout()),
            LogPath::Stderr => Box::new(std::io::stderr()),
            LogPath::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = std::io::BufWriter::new(&mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buf.write_all(line.as_bytes());
                    // Flush when the queue is momentarily empty: batches
                    // under load, prompt lines when quiet.
                    let mut more = true;
                    while more {
                        match rx.try_recv() {
                            Ok(l) => {
                                let _ = buf.write_all(l.as_bytes());
                            }
                            Err(_) => more = false,
                        }
                    }
                    let _ = buf.flush();
                }
            })?;
        Ok(AccessLog {
            tx: Some(tx),
            dropped: metrics::counter!("switchyard_access_log_dropped_total"),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, e: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
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
        if let Err(TrySendError::Full(_)) = tx.try_send(text) {
            self.dropped.increment(1);
        }
    }
}
