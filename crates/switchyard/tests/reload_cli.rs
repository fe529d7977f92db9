//! `switchyard run` reloads its config file on SIGHUP, as operators and
//! `systemctl reload` use it: weights 100/0 rewritten to 0/100, `kill -HUP`,
//! requests move; the log says so; SIGTERM then exits 0.
//!
//! The process is bounded in time and killed if the test fails while it
//! runs; every port is ephemeral and read from the log.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{addr_field, temp_dir, Proc};
use switchyard_testkit::{eventually, FakeUpstream, TestClient};
use tokio::time::Instant;

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
    let dir = temp_dir("sighup");
    let path = dir.join("switchyard.yaml");
    let to_blue = config(&blue, &green, 100, 0);
    std::fs::write(&path, &to_blue).unwrap();
    let mut p = Proc::spawn(&["run", "-c", &path.to_string_lossy()]);
    let line = p
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
        .stderr_line_after(|l| l.contains("configuration reloaded"))
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
    let _ = std::fs::remove_dir_all(&dir);
}
