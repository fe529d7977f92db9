//! The `switchyard` command as users run it: `check`, `run` (serve, SIGTERM,
//! graceful exit), `status`, `demo`. Every process is bounded in time and
//! killed if a test fails while it runs; every port is ephemeral except the
//! demo's own choice (8080 when free), which the test reads from its output.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use common::{addr_field, drain, temp_dir, workspace_root, write, Proc, WAIT};
use switchyard_testkit::{eventually, get, FakeUpstream, TcpEcho, TestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
const INVALID: [(&str, &str, &[&str]); 4] = [
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
    // Valid YAML, but `run` could not open the access log: `check` says so.
    (
        r#"admin: { bind: "127.0.0.1:0" }
access_log: { path: no-such-dir/access.log }
"#,
        "2:15",
        &["cannot open the access log", "no-such-dir/access.log"],
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
async fn run_serves_a_tcp_group_with_limits() {
    let up = TcpEcho::start().await;
    let dir = temp_dir("tcp-limits");
    // Once refused by `run` (the L4 path did not count connections); every
    // limit key is now enforced for tcp groups too.
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
    limits: {{ max_connections: 4, max_pending: 10, max_requests: 8 }}
"#,
        up.addr()
    );
    let path = write(&dir, "switchyard.yaml", &text);
    let mut p = Proc::spawn(&["run", "-c", &path.to_string_lossy()]);
    let addr = p.listening("db").await;

    let mut client = tokio::time::timeout(WAIT, TcpStream::connect(&addr))
        .await
        .unwrap_or_else(|_| panic!("connect {addr}: timed out"))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    client.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(WAIT, client.read_exact(&mut back))
        .await
        .unwrap_or_else(|_| panic!("no echo; stderr:\n{}", p.stderr_text()))
        .unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(up.connections(), 1);
    // The process is killed when `p` drops.
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

    p.ready(&admin).await;
    // The access log's loss counters are there at 0 before any loss, so
    // an alert on their rate has a series to watch.
    let metrics = get(&format!("http://{admin}/metrics")).await.unwrap();
    for counter in ["dropped", "write_errors"] {
        let zero = format!("switchyard_access_log_{counter}_total 0");
        assert!(metrics.body.lines().any(|l| l == zero), "{}", metrics.body);
    }
    // A plain HTTP listener has no TLS handshakes to count.
    assert!(
        !metrics
            .body
            .contains("switchyard_tls_handshakes_total{listener=\"web\""),
        "{}",
        metrics.body
    );

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

/// A config whose startup logs far more than a pipe holds (64 KiB by
/// default on Linux): one `listening` line of about 1 KiB per listener.
fn many_listeners_config(listeners: usize) -> String {
    let mut text = String::from(
        "admin: { bind: \"127.0.0.1:0\" }\naccess_log: { enabled: false }\nlisteners:\n",
    );
    let long = "l".repeat(1000);
    for i in 0..listeners {
        text.push_str(&format!(
            "  - {{ name: {long}-{i}, bind: \"127.0.0.1:0\", \
             routes: [ {{ name: r, fixed_response: {{ status: 200 }} }} ] }}\n"
        ));
    }
    text
}

/// SIGTERM during startup (Kubernetes may send it at any time) must not
/// kill the process: it shuts down gracefully, exit 0, once started. The
/// signal is sent at the first log line while the test holds the process
/// in the middle of its startup: nobody reads its stderr, so it blocks
/// writing the `listening` lines of its 200 listeners until the test reads
/// on, after the signal. A process that installed its signal handlers only
/// after startup is killed by that SIGTERM.
#[tokio::test]
async fn sigterm_during_startup_shuts_down_gracefully() {
    let dir = temp_dir("early-term");
    let path = write(&dir, "switchyard.yaml", &many_listeners_config(200));
    let (mut p, err) = Proc::spawn_stderr_held(&["run", "-c", &path.to_string_lossy()]);
    let first = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(err);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        (read, line, reader)
    });
    let (read, first, rest) = tokio::time::timeout(WAIT, first)
        .await
        .unwrap_or_else(|_| panic!("no log line within {WAIT:?}"))
        .unwrap();
    assert!(
        matches!(read, Ok(n) if n > 0),
        "stderr closed before any log line: {read:?}"
    );
    p.sigterm();
    p.pump_stderr(rest);

    let exit = p.exit().await;
    let log = format!("{first}{}", drain(&mut p.stderr).await);
    // The log is 200 KiB of `listening` lines: show how far it got.
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    assert_eq!(
        exit.code(),
        Some(0),
        "{exit} after {} log lines; last: {tail:#?}",
        log.lines().count()
    );
    // The signal did land in the middle of startup: more was still to be
    // logged before the admin API came up than the pipe could hold.
    let startup = log
        .find("admin listening")
        .unwrap_or_else(|| panic!("startup never finished; stderr:\n{log}"));
    assert!(startup > 2 * 65536, "startup logged only {startup} bytes");
    assert!(log[startup..].contains("shutting down"), "{log}");
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

/// Sends GETs back to back on one connection until an answer carries
/// `Connection: close`: how many were answered, or what went wrong.
async fn back_to_back(
    addr: String,
    total: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> Result<u32, String> {
    let mut s = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut served = 0u32;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while tokio::time::Instant::now() < deadline {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .map_err(|e| format!("send after {served}: {e}"))?;
        // The answer is a fixed `ok`: its head and 2 bytes.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if buf.len() >= i + 4 + 2 {
                    break i;
                }
            }
            let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
                .await
                .map_err(|_| format!("no answer after {served}"))?
                .map_err(|e| format!("read after {served}: {e}"))?;
            if n == 0 {
                return Err(format!("closed unanswered after {served}"));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end + 4 + 2);
        served += 1;
        total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if head.contains("\r\nconnection: close") {
            return Ok(served);
        }
    }
    Err(format!("no close after {served}"))
}

#[tokio::test]
async fn sigterm_answers_clients_sending_back_to_back_with_the_close() {
    let dir = temp_dir("back-to-back");
    let text = r#"admin: { bind: "127.0.0.1:0" }
access_log: { enabled: false }
listeners:
  - name: web
    bind: "127.0.0.1:0"
    routes:
      - name: all
        fixed_response: { status: 200, body: "ok" }
"#;
    let path = write(&dir, "switchyard.yaml", text);
    let mut p = Proc::spawn(&["run", "-c", &path.to_string_lossy()]);
    let addr = p.listening("web").await;
    // A stop that closed a connection between two of its requests would
    // lose the next one: each client must end on an answer with the close.
    let total = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(back_to_back(addr.clone(), std::sync::Arc::clone(&total))))
        .collect();
    // Every client under way before the stop.
    eventually!(
        WAIT,
        total.load(std::sync::atomic::Ordering::Relaxed) >= 200
    );
    p.sigterm();
    for c in clients {
        let served = c.await.unwrap();
        assert!(served.is_ok(), "{served:?}");
    }
    assert_eq!(p.exit().await.code(), Some(0), "{}", p.stderr_text());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_log_format_json_even_a_fatal_error_is_a_json_line() {
    let dir = temp_dir("json-errors");
    let (text, at, _) = INVALID[0];
    let path = write(&dir, "bad.yaml", text);
    let shown = path.to_string_lossy();
    for args in [
        ["--log-format", "json", "check", "-c", &shown],
        ["--log-format", "json", "run", "-c", &shown],
    ] {
        let mut p = Proc::spawn(&args);
        let status = p.exit().await;
        let err = drain(&mut p.stderr).await;
        assert_eq!(status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?}: nothing on stderr");
        for line in err.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            assert_eq!(v["level"], "ERROR", "{line}");
        }
        let located = format!("{shown}:{at}");
        assert!(err.contains(&located), "{args:?}: {located} not in {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
