//! `switchyard check` builds the TLS configs as `run` does: a key that does
//! not match its certificate is an error naming both files (exit 1); a
//! matching pair is `ok`. Certificates are made here with rcgen.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Bound for `check` to exit.
const WAIT: Duration = Duration::from_secs(10);

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "switchyard-tls-cli-{}-{tag}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A self-signed certificate for `name` as `<stem>.pem` / `<stem>.key`.
fn cert(dir: &Path, stem: &str, name: &str) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .and_then(|p| p.self_signed(&key))
        .unwrap_or_else(|e| panic!("certificate: {e}"));
    write(&dir.join(format!("{stem}.pem")), &cert.pem());
    write(&dir.join(format!("{stem}.key")), &key.serialize_pem());
}

fn config(cert: &str, key: &str) -> String {
    format!(
        "admin: {{ bind: \"127.0.0.1:0\" }}
listeners:
  - name: edge
    bind: \"127.0.0.1:0\"
    protocol: tls
    tls:
      certificates:
        - {{ cert_file: {cert}, key_file: {key} }}
    forward:
      target_groups: [ {{ name: db, weight: 1 }} ]
target_groups:
  - name: db
    protocol: tcp
    targets: [ {{ address: \"127.0.0.1:5432\" }} ]
"
    )
}

/// Runs `switchyard check -c path`: (exit code, stdout, stderr).
fn check(path: &Path) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(["check", "-c", &path.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < WAIT => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                panic!("check did not exit within {WAIT:?}");
            }
            Err(e) => panic!("wait: {e}"),
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (status.code(), out, err)
}

#[test]
fn check_rejects_a_key_that_does_not_match_its_certificate_naming_both() {
    let dir = Dir::new("mismatch");
    cert(&dir.0, "a", "a.test");
    cert(&dir.0, "b", "b.test");
    let path = dir.0.join("edge.yaml");

    write(&path, &config("a.pem", "a.key"));
    let (code, out, err) = check(&path);
    assert_eq!(code, Some(0), "matching pair: {err}");
    assert_eq!(out.trim(), "ok");

    write(&path, &config("a.pem", "b.key"));
    let (code, out, err) = check(&path);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_ne!(out.trim(), "ok");
    // Placed at the pair's entry (line 8, its `{`), as other errors are.
    let want = format!(
        "error: {}:8:11: listener \"edge\": certificate {} and key {} do not match",
        path.display(),
        dir.0.join("a.pem").display(),
        dir.0.join("b.key").display()
    );
    assert!(err.lines().any(|l| l == want), "want {want:?} in:\n{err}");
}
