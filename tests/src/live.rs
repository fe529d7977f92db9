//! Live configuration: a balancer started from a config FILE with
//! [`switchyard::start_file`] (watched and reloaded as `switchyard run`
//! does), the ways tests change that file, and the admin API calls that
//! reload it and register or deregister targets.
//!
//! Every file lives in a [`TempDir`] of its own under the system temp dir,
//! removed when the value drops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard::Running;

use crate::kit::{self, TestClient};
use crate::Urls;

/// The name of the config file in its directory: reload errors name it.
pub const FILE_NAME: &str = "test.yaml";

/// A fresh directory under `std::env::temp_dir()`, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// # Panics
    ///
    /// If the directory cannot be created.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "switchyard-live-{}-{tag}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path`.
///
/// # Panics
///
/// If writing fails.
pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `dir/test.yaml`, rewritten as an operator would.
#[derive(Debug)]
pub struct ConfigFile {
    dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `text` to a new `test.yaml` in a fresh directory.
    pub fn new(tag: &str, text: &str) -> ConfigFile {
        let dir = TempDir::new(tag);
        let path = dir.path().join(FILE_NAME);
        write(&path, text);
        ConfigFile { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the file in place (same inode), as `echo > file` does.
    pub fn overwrite(&self, text: &str) {
        write(&self.path, text);
    }

    /// Writes a temporary file next to it and renames it over the file, as
    /// editors and `kubectl cp`-style tools do (a new inode, atomically).
    ///
    /// # Panics
    ///
    /// If writing or renaming fails.
    pub fn replace(&self, text: &str) {
        let tmp = self.dir.path().join(format!(".{FILE_NAME}.swp"));
        write(&tmp, text);
        std::fs::rename(&tmp, &self.path).unwrap_or_else(|e| {
            panic!("rename {} over {}: {e}", tmp.display(), self.path.display())
        });
    }

    /// Starts a balancer from this file; see [`start_file`].
    pub async fn start(&self) -> Running {
        start_file(&self.path).await
    }
}

/// Starts a balancer from the config file at `path`, watched for changes.
///
/// # Panics
///
/// If the file is invalid or the balancer cannot start.
pub async fn start_file(path: &Path) -> Running {
    switchyard::start_file(path).await.unwrap_or_else(|e| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        panic!(
            "balancer did not start from {}: {e:#}\n--- config ---\n{text}",
            path.display()
        )
    })
}

/// Any admin request on a fresh connection: (status, body as JSON, or
/// `Value::String` of the body when it is not JSON).
///
/// # Panics
///
/// If no answer comes.
pub async fn admin(lb: &Running, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let url = lb.admin_url(path);
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("content-type", "application/json")]
    };
    let res = kit::request(method, &url, headers, body.to_owned())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let value = serde_json::from_str(&res.body)
        .unwrap_or_else(|_| serde_json::Value::String(res.body.clone()));
    (res.status, value)
}

/// `POST /api/v1/reload`: (status, JSON answer).
pub async fn reload(lb: &Running) -> (u16, serde_json::Value) {
    admin(lb, "POST", "/api/v1/reload", "").await
}

/// `POST /api/v1/reload`, which must succeed; returns the new version.
///
/// # Panics
///
/// If the answer is not 200 `{"result": "ok", "version": ...}`.
pub async fn reload_ok(lb: &Running) -> String {
    let (status, body) = reload(lb).await;
    assert_eq!(status, 200, "reload refused: {body}");
    assert_eq!(body["result"], "ok", "{body}");
    body["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no version in {body}"))
        .to_owned()
}

/// `GET /api/v1/config`.
pub async fn config_status(lb: &Running) -> serde_json::Value {
    let (status, body) = admin(lb, "GET", "/api/v1/config", "").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The admin API's entry for `address` in group `group`, if listed.
///
/// # Panics
///
/// If the admin API does not answer with the documented shape.
pub async fn target(lb: &Running, group: &str, address: &str) -> Option<serde_json::Value> {
    let (status, body) = admin(lb, "GET", "/api/v1/target-groups", "").await;
    assert_eq!(status, 200, "{body}");
    let groups = body["target_groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no target_groups in {body}"));
    let g = groups.iter().find(|g| g["name"] == group)?;
    g["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["address"] == address)
        .cloned()
}

/// The admin API's state for `address` in `group`; `None` when not listed.
pub async fn state(lb: &Running, group: &str, address: &str) -> Option<String> {
    target(lb, group, address)
        .await
        .and_then(|t| t["state"].as_str().map(str::to_owned))
}

/// Waits (up to `within`) until the admin API shows `address` in `group`
/// in state `want`.
///
/// # Panics
///
/// If it does not within `within`.
pub async fn wait_state(lb: &Running, group: &str, address: &str, want: &str, within: Duration) {
    let reached = kit::wait_until(within, || async {
        state(lb, group, address).await.as_deref() == Some(want)
    })
    .await;
    if !reached {
        panic!(
            "{group}/{address} not {want} within {within:?}: {:?}",
            target(lb, group, address).await
        );
    }
}

/// Waits until `/readyz` answers 200 (every target has had its first check).
///
/// # Panics
///
/// If it does not within 10 s.
pub async fn wait_ready(lb: &Running) {
    let url = lb.admin_url("/readyz");
    let ready = kit::wait_until(Duration::from_secs(10), || async {
        kit::get(&url).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(ready, "/readyz never answered 200");
}

/// `POST /api/v1/target-groups/{group}/targets` with `body`.
pub async fn register(lb: &Running, group: &str, body: &str) -> (u16, serde_json::Value) {
    admin(
        lb,
        "POST",
        &format!("/api/v1/target-groups/{group}/targets"),
        body,
    )
    .await
}

/// `DELETE /api/v1/target-groups/{group}/targets/{address}`; `address` is
/// put in the path as given (raw or percent-encoded).
pub async fn deregister(lb: &Running, group: &str, address: &str) -> (u16, serde_json::Value) {
    admin(
        lb,
        "DELETE",
        &format!("/api/v1/target-groups/{group}/targets/{address}"),
        "",
    )
    .await
}

/// Sends `n` GETs to `url` over `client`, one after another; each must be
/// answered 200. Counts the answers by their `x-upstream` header.
///
/// # Panics
///
/// On an error or a status other than 200.
pub async fn tally(client: &TestClient, url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let res = client
            .get(url)
            .await
            .unwrap_or_else(|e| panic!("request {i} of {n}: {e}"));
        assert_eq!(res.status, 200, "request {i} of {n}: {}", res.body);
        let who = res.header("x-upstream").unwrap_or("-").to_owned();
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

/// `[(name, count)]` as the map [`tally`] returns, for exact comparisons.
pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Upper bound on a reload picked up by the file watcher: it polls every
/// 500 ms and waits one more poll for the file to settle, and rechecks
/// content every 5 s; doubled for a loaded machine.
pub const WATCH_WAIT: Duration = Duration::from_secs(10);
