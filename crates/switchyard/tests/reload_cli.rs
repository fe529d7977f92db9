//! `switchyard run` reloads its config file on SIGHUP, as operators and
//! `systemctl reload` use it: weights 100/0 rewritten to 0/100, `kill -HUP`,
//! requests move; the log says so; SIGTERM then exits 0.
//!
//! The process is bounded in time and killed if the test fails while it
//! runs; every port is ephemeral and read from the log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_testkit::{eventually, FakeUpstream, TestClient};
use tokio::sync::mpsc;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Bound for the process to start, answer or exit.
const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "switchyard-reload-cli-{}-{tag}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `switchyard` child; stderr collected line by line (stdout,
/// the access log, is discarded). Killed on drop if still running.
struct Proc {
    child: Child,
    stderr: mpsc::UnboundedReceiver<String>,
    stderr_all: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let Some(err) = child.stderr.take() else {
            panic!("stderr is piped");
        };
        let stderr_all = Arc::new(Mutex::new(String::new()));
        let (tx, stderr) = mpsc::unbounded_channel();
        let all = Arc::clone(&stderr_all);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut all) = all.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        Proc {
            child,
            stderr,
            stderr_all,
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr_all
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The next stderr line that satisfies `want`, within `WAIT`; the
    /// lines passed over on the way are returned too.
    async fn stderr_line(&mut self, want: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.stderr.recv()).await {
                Ok(Some(line)) if want(&line) => return (line, skipped),
                Ok(Some(line)) => skipped.push(line),
                Ok(None) | Err(_) => panic!(
                    "expected log line not seen; stderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the exit, polling so the test's own tasks keep running.
    async fn exit(&mut self) -> ExitStatus {
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
fn addr_field(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(|a| a.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
}

fn config(blue: &FakeUpstream, green: &FakeUpstream, wb: u32, wg: u32) -> String {
    format!(
        r#"admin: {{ bind: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
listeners:
  - name: web
    bind: "127.0.0.1:0"
    routes:
      - name: split
        forward:
          target_groups:
            - {{ name: blue, weight: {wb} }}
            - {{ name: green, weight: {wg} }}
target_groups:
  - name: blue
    health_check: {{ protocol: none }}
    targets: [ {{ address: "{}" }} ]
  - name: green
    health_check: {{ protocol: none }}
    targets: [ {{ address: "{}" }} ]
"#,
        blue.addr(),
        green.addr()
    )
}

/// Rewrites `path` in place and puts its modification time back, so the
/// file watcher's stat sees nothing new (same inode, length and mtime):
/// only SIGHUP can make this reload happen promptly.
fn rewrite_unseen(path: &Path, text: &str) {
    let done = (|| {
        let meta = std::fs::metadata(path)?;
        assert_eq!(
            meta.len(),
            text.len() as u64,
            "the rewrite must keep the length"
        );
        let mtime = meta.modified()?;
        std::fs::write(path, text)?;
        std::fs::File::options()
            .write(true)
            .open(path)?
            .set_modified(mtime)
    })();
    if let Err(e) = done {
        panic!("rewrite {}: {e}", path.display());
    }
}

async fn answered_by(client: &TestClient, url: &str, name: &str) -> bool {
    client
        .get(url)
        .await
        .is_ok_and(|r| r.status == 200 && r.body == name)
}

#[tokio::test]
async fn sighup_reloads_the_file_and_requests_move() {
    let blue = FakeUpstream::builder("blue").start().await;
    let green = FakeUpstream::builder("green").start().await;
    let dir = TempDir::new("sighup");
    let path = dir.0.join("switchyard.yaml");
    let to_blue = config(&blue, &green, 100, 0);
    std::fs::write(&path, &to_blue).unwrap();
    let mut p = Proc::spawn(&["run", "-c", &path.to_string_lossy()]);
    let (line, _) = p
        .stderr_line(|l| l.contains(" listening") && l.contains("listener=web"))
        .await;
    let url = format!("http://{}/", addr_field(&line));
    let client = TestClient::new();
    for i in 0..10 {
        assert!(answered_by(&client, &url, "blue").await, "request {i}");
    }

    let to_green = config(&blue, &green, 0, 100);
    rewrite_unseen(&path, &to_green);
    let hup = Instant::now();
    p.signal("HUP");
    let (reloaded, passed) = p
        .stderr_line(|l| l.contains("configuration reloaded"))
        .await;
    assert!(
        passed.iter().any(|l| l.contains("SIGHUP")),
        "no SIGHUP line before {reloaded:?}: {passed:?}"
    );
    assert!(
        !passed.iter().any(|l| l.contains("config file changed")),
        "the file watcher, not SIGHUP, reloaded: {passed:?}"
    );
    let version = switchyard_config::version_of(to_green.as_bytes());
    assert!(
        reloaded.contains(&version),
        "{reloaded:?} lacks version {version}"
    );
    eventually!(
        Duration::from_secs(5),
        answered_by(&client, &url, "green").await
    );
    println!("moved {:?} after SIGHUP", hup.elapsed());
    let before = blue.requests();
    for i in 0..10 {
        assert!(answered_by(&client, &url, "green").await, "request {i}");
    }
    assert_eq!(blue.requests(), before);

    p.signal("TERM");
    let exit = p.exit().await;
    assert_eq!(exit.code(), Some(0), "{}", p.stderr_text());
}
