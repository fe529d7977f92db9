//! The process-level test harness shared by the CLI tests: runs the real
//! `switchyard` binary, collects its output line by line, bounds every wait.

#![allow(dead_code)] // each test file uses its own part of the harness

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Bound for a process to start, answer or exit.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir for this test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-cli-{}-{tag}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `switchyard` child with its output collected line by line.
/// Killed on drop if still running.
pub struct Proc {
    child: Child,
    pub stdout: mpsc::UnboundedReceiver<String>,
    pub stderr: mpsc::UnboundedReceiver<String>,
    /// Everything seen on stderr so far, for failure messages.
    stderr_all: Arc<Mutex<String>>,
}

fn pump(
    stream: impl Read + Send + 'static,
    all: Option<Arc<Mutex<String>>>,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(all) = &all {
                let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
                all.push_str(&line);
                all.push('\n');
            }
            let _ = tx.send(line);
        }
    });
    rx
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        let (mut p, err) = Proc::spawn_stderr_held(args);
        p.pump_stderr(err);
        p
    }

    /// Like `spawn`, but nobody reads the child's stderr: it is handed to
    /// the caller, who passes it (or what is left of it) to `pump_stderr`.
    /// Until then the child blocks at its next log line once the pipe's
    /// buffer (64 KiB by default on Linux) is full.
    pub fn spawn_stderr_held(args: &[&str]) -> (Proc, ChildStderr) {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(workspace_root())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            panic!("stdout and stderr are piped");
        };
        let stdout = pump(out, None);
        let proc = Proc {
            child,
            stdout,
            // Replaced by `pump_stderr`.
            stderr: mpsc::unbounded_channel().1,
            stderr_all: Arc::new(Mutex::new(String::new())),
        };
        (proc, err)
    }

    /// Starts collecting stderr from `stream` (the child's stderr, or a
    /// reader over what the caller has not consumed of it).
    pub fn pump_stderr(&mut self, stream: impl Read + Send + 'static) {
        self.stderr = pump(stream, Some(Arc::clone(&self.stderr_all)));
    }

    pub fn stderr_text(&self) -> String {
        self.stderr_all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first line from `rx` that satisfies `want`, within `WAIT`,
    /// with the lines passed over on the way.
    async fn line(
        rx: &mut mpsc::UnboundedReceiver<String>,
        want: impl Fn(&str) -> bool,
    ) -> Option<(String, Vec<String>)> {
        let deadline = Instant::now() + WAIT;
        let mut passed = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) if want(&line) => return Some((line, passed)),
                Ok(Some(line)) => passed.push(line),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    pub async fn stderr_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        self.stderr_line_after(want).await.0
    }

    /// Like `stderr_line`, also returning the stderr lines passed over.
    pub async fn stderr_line_after(
        &mut self,
        want: impl Fn(&str) -> bool,
    ) -> (String, Vec<String>) {
        match Proc::line(&mut self.stderr, want).await {
            Some(found) => found,
            None => panic!(
                "expected log line not seen; stderr:\n{}",
                self.stderr_text()
            ),
        }
    }

    pub async fn stdout_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        match Proc::line(&mut self.stdout, want).await {
            Some((l, _)) => l,
            None => panic!("expected output not seen; stderr:\n{}", self.stderr_text()),
        }
    }

    /// The address in the `listening listener=NAME addr=...` log line.
    pub async fn listening(&mut self, listener: &str) -> String {
        let tag = format!("listener={listener}");
        let line = self
            .stderr_line(|l| l.contains(" listening") && l.contains(&tag))
            .await;
        addr_field(&line)
    }

    /// Waits until the admin API at `admin` answers `/readyz` 200. The
    /// `admin listening` line comes before the process marks its listeners
    /// bound, and the first health checks come after, so `/readyz` may
    /// rightly answer 503 for a while after it: poll, every 20 ms, at most
    /// `WAIT`.
    pub async fn ready(&self, admin: &str) {
        let url = format!("http://{admin}/readyz");
        let deadline = Instant::now() + WAIT;
        loop {
            let last = switchyard_testkit::get(&url)
                .await
                .map(|r| (r.status, r.body));
            if matches!(last, Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} not 200 within {WAIT:?}, last: {last:?}; stderr:\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits for the exit, polling so the test's own tasks (fake upstreams)
    /// keep running meanwhile.
    pub async fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => panic!(
                    "still running after {WAIT:?}; stderr:\n{}",
                    self.stderr_text()
                ),
                Err(e) => panic!("wait: {e}"),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `addr=127.0.0.1:PORT` out of a log line.
pub fn addr_field(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(|a| a.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
}

/// Everything left on `rx` until its pipe closes (bounded).
pub async fn drain(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    let mut text = String::new();
    while let Ok(Some(line)) = tokio::time::timeout(WAIT, rx.recv()).await {
        text.push_str(&line);
        text.push('\n');
    }
    text
}
