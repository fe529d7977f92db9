//! Noticing that the config file changed.
//!
//! Polls the file (following symlinks) twice a second and compares its
//! content hash with the running version. Polling rather than inotify on
//! purpose: it sees every way a file gets replaced (in-place writes,
//! editors' write-and-rename, Kubernetes ConfigMaps where
//! `config.yaml -> ..data/config.yaml` and `..data` is a symlink swapped
//! atomically), works on network and overlay filesystems, and costs two
//! `stat` calls a second. A change is debounced: it must stay the same for
//! one more poll before it is loaded, so a half-written file is not.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Time between polls.
pub const POLL: Duration = Duration::from_millis(500);

/// What `stat` says about the file behind the path (symlinks followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&m),
    })
}

/// Polls between unconditional content checks, a safety net for
/// filesystems whose timestamps are too coarse to show a quick rewrite.
const RECHECK_EVERY: u32 = 10;

/// Watches `path`; calls `changed` (from the tokio task) when the file has
/// a new, stable stamp, and every few seconds regardless. `changed` decides
/// by content hash whether to reload.
pub async fn poll(path: PathBuf, mut changed: impl FnMut()) {
    let mut seen = stamp(&path);
    let mut pending: Option<Option<Stamp>> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polls = 0u32;
    loop {
        tick.tick().await;
        polls = polls.wrapping_add(1);
        let now = stamp(&path);
        if polls.is_multiple_of(RECHECK_EVERY) && pending.is_none() && now == seen {
            changed();
            continue;
        }
        match pending.take() {
            Some(candidate) if candidate == now => {
                // Stable for one poll: take it.
                seen = now;
                changed();
            }
            _ if now != seen => pending = Some(now),
            _ => {}
        }
    }
}
