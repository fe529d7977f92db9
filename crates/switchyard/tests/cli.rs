//! The `switchyard` command as users run it: `check`, `run` (serve, SIGTERM,
//! graceful exit), `status`, `demo`. Every process is bounded in time and
//! killed if a test fails while it runs; every port is ephemeral except the
//! demo's own choice (8080 when free), which the test reads from its output.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_testkit::{eventually, get, FakeUpstream, TestClient};
use tokio::sync::mpsc;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Bound for a process to start, answer or exit.
const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir for this test's files.
fn temp_dir(tag: &str) -> PathBuf {
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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `switchyard` child with its output collected line by line.
/// Killed on drop if still running.
struct Proc {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
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
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(workspace_root())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stderr_all = Arc::new(Mutex::new(String::new()));
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            panic!("stdout and stderr are piped");
        };
        let stdout = pump(out, None);
        let stderr = pump(err, Some(Arc::clone(&stderr_all)));
        Proc {
            child,
            stdout,
            stderr,
            stderr_all,
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr_all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first line from `rx` that satisfies `want`, within `WAIT`.
    async fn line(
        rx: &mut mpsc::UnboundedReceiver<String>,
        want: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) if want(&line) => return Some(line),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    async fn stderr_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        match Proc::line(&mut self.stderr, want).await {
            Some(l) => l,
            None => panic!(
                "expected log line not seen; stderr:\n{}",
                self.stderr_text()
            ),
        }
    }

    async fn stdout_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        match Proc::line(&mut self.stdout, want).await {
            Some(l) => l,
            None => panic!("expected output not seen; stderr:\n{}", self.stderr_text()),
        }
    }

    /// The address in the `listening listener=NAME addr=...` log line.
    async fn listening(&mut self, listener: &str) -> String {
        let tag = format!("listener={listener}");
        let line = self
            .stderr_line(|l| l.contains(" listening") && l.contains(&tag))
            .await;
        addr_field(&line)
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the exit, polling so the test's own tasks (fake upstreams)
    /// keep running meanwhile.
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

/// Everything left on `rx` until its pipe closes (bounded).
async fn drain(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    let mut text = String::new();
    while let Ok(Some(line)) = tokio::time::timeout(WAIT, rx.recv()).await {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Runs `check -c path` to completion: (exit status, stdout, stderr).
async fn check(path: &Path) -> (ExitStatus, String, String) {
    let mut p = Proc::spawn(&["check", "-c", &path.to_string_lossy()]);
    let status = p.exit().await;
    let out = drain(&mut p.stdout).await;
    let err = drain(&mut p.stderr).await;
    (status, out, err)
}

#[tokio::test]
async fn check_accepts_every_shipped_config() {
    let dir = workspace_root().join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no config files in {}", dir.display());
    for file in files {
        // As a user would type it, from the workspace root.
        let relative = Path::new("config").join(file.file_name().unwrap_or_default());
        let (status, out, err) = check(&relative).await;
        assert_eq!(out.trim(), "ok", "{}: {err}", relative.display());
        assert_eq!(status.code(), Some(0), "{}: {err}", relative.display());
    }
}

/// (file text, line and column of the fault, words the message must contain)
const INVALID: [(&str, &str, &[&str]); 3] = [
    (
        r#"admin: { bind: "127.0.0.1:0" }
listeners:
  - name: public
    bind: "127.0.0.1:0"
    routes:
      - name: web
        forward:
          target_group: web-gren
target_groups:
  - name: web-green
    targets: [ { address: "127.0.0.1:9" } ]
"#,
        "8:11",
        &["\"web\"", "\"web-gren\"", "unknown target group"],
    ),
    (
        r#"admin: { bind: "127.0.0.1:0" }
listeners:
  - name: public
    bind: "127.0.0.1:0"
    routes:
      - name: web
        forward: { target_group: web }
target_groups:
  - name: web
    targets: [ { address: "127.0.0.1:9" } ]
  - name: web
    targets: [ { address: "127.0.0.1:10" } ]
"#,
        "11:5",
        &["\"web\"", "duplicate"],
    ),
    (
        r#"admin: { bind: "127.0.0.1:0" }
listeners:
  - name: public
    bind: "127.0.0.1:0"
    routes:
      - name: web
        forward: { target_group: web }
target_groups:
  - name: web
    balance: round_robin
    targets: [ { address: "127.0.0.1:9" } ]
    retires: { attempts: 1 }
"#,
        "12:5",
        &["retires"],
    ),
];

#[tokio::test]
async fn check_reports_file_line_column_and_object() {
    let dir = temp_dir("check");
    for (i, (text, at, words)) in INVALID.iter().enumerate() {
        let path = write(&dir, &format!("bad-{i}.yaml"), text);
        let (status, out, err) = check(&path).await;
        assert_eq!(status.code(), Some(1), "case {i}: {err}");
        assert_ne!(out.trim(), "ok", "case {i}");
        let prefix = format!("error: {}:{at}: ", path.display());
        let first = err
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("case {i}: no `{prefix}` line in:\n{err}"));
        for w in *words {
            assert!(first.contains(w), "case {i}: {w:?} not in {first:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn check_on_a_missing_file_exits_1_naming_it() {
    let path = temp_dir("missing").join("nope.yaml");
    let (status, out, err) = check(&path).await;
    assert_eq!(status.code(), Some(1));
    assert_ne!(out.trim(), "ok");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

/// A valid config for `run`: listener `web` in front of `upstream`, admin
/// and listener on ephemeral ports.
fn run_config(upstream: &FakeUpstream, extra_group_keys: &str) -> String {
    format!(
        r#"admin: {{ bind: "127.0.0.1:0" }}
access_log: {{ enabled: true, path: stdout }}
listeners:
  - name: web
    bind: "127.0.0.1:0"
    protocol: http
    routes:
      - name: all
        forward: {{ target_group: app }}
target_groups:
  - name: app
    health_check: {{ protocol: none }}
    targets: [ {{ address: "{}" }} ]
{extra_group_keys}"#,
        upstream.addr()
    )
}

#[tokio::test]
async fn run_refuses_a_feature_this_build_cannot_run_naming_the_key() {
    let up = FakeUpstream::builder("up").start().await;
    let dir = temp_dir("refuse");
    // Connection limits are enforced for HTTP groups; the L4 path does not
    // count them yet, so a tcp group with limits is refused.
    let text = format!(
        r#"admin: {{ bind: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
listeners:
  - name: db
    bind: "127.0.0.1:0"
    protocol: tcp
    forward:
      target_groups: [ {{ name: pg, weight: 1 }} ]
target_groups:
  - name: pg
    protocol: tcp
    health_check: {{ protocol: none }}
    targets: [ {{ address: "{}" }} ]
    limits: {{ max_pending: 10 }}
"#,
        up.addr()
    );
    let path = write(&dir, "switchyard.yaml", &text);
    // `check` accepts the whole schema...
    assert_eq!(check(&path).await.0.code(), Some(0));
    // ... `run` will not silently ignore a key it cannot honour.
    let mut p = Proc::spawn(&["run", "-c", &path.to_string_lossy()]);
    let status = p.exit().await;
    assert_eq!(status.code(), Some(1));
    let line = p
        .stderr_line(|l| l.contains("max_pending") && l.starts_with("error: "))
        .await;
    assert!(
        line.starts_with(&format!("error: {}:14:", path.display())),
        "no file:line in {line:?}"
    );
    assert_eq!(up.requests(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn run_serves_logs_access_and_exits_0_on_sigterm() {
    let up = FakeUpstream::builder("up").start().await;
    let dir = temp_dir("run");
    let path = write(&dir, "switchyard.yaml", &run_config(&up, ""));
    let mut p = Proc::spawn(&["run", "-c", &path.to_string_lossy(), "--workers", "2"]);
    let addr = p.listening("web").await;
    let admin = addr_field(&p.stderr_line(|l| l.contains("admin listening")).await);

    let res = get(&format!("http://{addr}/via-cli?x=1")).await.unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "up"));
    assert_eq!(up.last_request().unwrap().uri, "/via-cli?x=1");
    // The access log: one JSON line on stdout per request.
    let line = p.stdout_line(|l| l.contains("/via-cli")).await;
    let entry: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["path"], "/via-cli");
    assert_eq!(entry["route"], "all");
    assert_eq!(entry["target_group"], "app");
    assert_eq!(entry["method"], "GET");

    let ready = get(&format!("http://{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status, 200);

    // `status` reads the same admin API.
    let mut status = Proc::spawn(&["status", "--admin", &admin]);
    assert_eq!(
        status.exit().await.code(),
        Some(0),
        "{}",
        status.stderr_text()
    );
    let table = status
        .stdout_line(|l| l.contains(&up.addr().to_string()))
        .await;
    assert!(
        table.contains("app") && table.contains("healthy"),
        "{table}"
    );

    p.sigterm();
    let exit = p.exit().await;
    assert_eq!(exit.code(), Some(0), "{}", p.stderr_text());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let up = FakeUpstream::builder("slow")
        .delay(Duration::from_secs(1))
        .start()
        .await;
    let dir = temp_dir("graceful");
    let path = write(&dir, "switchyard.yaml", &run_config(&up, ""));
    let mut p = Proc::spawn(&["run", "-c", &path.to_string_lossy()]);
    let addr = p.listening("web").await;

    let url = format!("http://{addr}/in-flight");
    let in_flight = tokio::spawn(async move { get(&url).await });
    eventually!(Duration::from_secs(5), up.requests() == 1);
    p.sigterm();
    let res = in_flight.await.unwrap().unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "slow"));
    let exit = p.exit().await;
    assert_eq!(exit.code(), Some(0), "{}", p.stderr_text());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn demo_runs_without_files_and_splits_90_10() {
    let mut p = Proc::spawn(&["demo"]);
    let line = p
        .stdout_line(|l| l.trim_start().starts_with("balancer") && l.contains("http://"))
        .await;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    let client = TestClient::new();
    let (mut blue, mut green) = (0, 0);
    for i in 0..20 {
        let res = client
            .get(&format!("{url}/"))
            .await
            .unwrap_or_else(|e| panic!("demo request {i}: {e}"));
        assert_eq!(res.status, 200);
        if res.body.starts_with("blue-") {
            blue += 1;
        } else if res.body.starts_with("green-") {
            green += 1;
        } else {
            panic!("unexpected demo answer {:?}", res.body);
        }
    }
    assert_eq!((blue, green), (18, 2));
    // The other things the demo tells users to try.
    let res = client
        .get_with(&format!("{url}/"), &[("x-canary", "always")])
        .await
        .unwrap();
    assert!(res.body.starts_with("green-"), "{}", res.body);
    let res = client.get(&format!("{url}/old/page")).await.unwrap();
    assert_eq!(res.status, 302);
    let res = client.get(&format!("{url}/maintenance")).await.unwrap();
    assert_eq!(res.status, 503);

    p.sigterm();
    let exit = p.exit().await;
    assert_eq!(exit.code(), Some(0), "{}", p.stderr_text());
}
