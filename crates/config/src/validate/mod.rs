//! Semantic validation: raw serde structs -> the domain model.
//!
//! Collects every problem rather than stopping at the first, each located
//! with the [`SourceMap`] at the offending key and naming its object. The
//! model is built with placeholders where a field is wrong and thrown away
//! if anything was reported, so later checks still run on sane values.

mod fields;
mod forward;
mod group_parts;
mod groups;
mod listeners;
mod routes;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::error::{ConfigError, Location};
use crate::model::{AccessLog, Address, Admin, Config, GroupProtocol, LogPath, Shutdown};
use crate::raw::{RawConfig, RawGroupProtocol};
use crate::source_map::SourceMap;

pub(crate) use fields::parse_address;

/// Checks `raw` and turns it into a [`Config`], or returns every problem in
/// file order.
pub(crate) fn validate(
    raw: &RawConfig,
    sm: &SourceMap,
    origin: &str,
    base_dir: &Path,
) -> Result<Config, Vec<ConfigError>> {
    let mut ctx = Ctx {
        sm,
        origin,
        base_dir,
        errors: Vec::new(),
    };
    let raw_groups = raw.target_groups.as_deref().unwrap_or_default();
    let raw_listeners = raw.listeners.as_deref().unwrap_or_default();
    let index = GroupIndex::new(raw_groups);

    let admin = admin(&mut ctx, raw);
    let shutdown = Shutdown {
        drain_delay: dur(raw.shutdown.as_ref().and_then(|s| s.drain_delay), 0),
        timeout: dur(raw.shutdown.as_ref().and_then(|s| s.timeout), 30_000),
    };
    let access_log = access_log(&mut ctx, raw);
    let target_groups = groups::validate_groups(&mut ctx, raw_groups, &index);
    let listeners = listeners::validate_listeners(&mut ctx, raw_listeners, &index);
    listeners::check_binds(&mut ctx, raw, raw_listeners);

    if ctx.errors.is_empty() {
        Ok(Config {
            workers: raw.workers.unwrap_or(0),
            admin,
            shutdown,
            access_log,
            listeners,
            target_groups,
        })
    } else {
        let mut errors = ctx.errors;
        errors.sort_by_key(|e| e.location);
        Err(errors)
    }
}

/// What validation needs while it walks: where things are, and what it
/// has found wrong so far.
pub(crate) struct Ctx<'a> {
    sm: &'a SourceMap,
    origin: &'a str,
    pub base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    /// Reports `message` at the key (or list item) `path`.
    pub fn error(&mut self, path: &str, message: String) {
        self.errors.push(ConfigError {
            origin: self.origin.to_string(),
            location: self.sm.find_nearest(path),
            message,
        });
    }

    pub fn location(&self, path: &str) -> Option<Location> {
        self.sm.find_nearest(path)
    }

    /// "line N" of `path`, for "first defined at ..." notes.
    pub fn line_of(&self, path: &str) -> String {
        match self.sm.find_nearest(path) {
            Some(loc) => format!("line {}", loc.line),
            None => "an earlier entry".to_string(),
        }
    }

    /// Reports each entry whose key repeats an earlier one, at the later one.
    /// `entries` are (key, path of the key in the YAML); empty keys are
    /// skipped (they are reported on their own).
    pub fn check_duplicates(&mut self, entries: &[(String, String)], prefix: &str, what: &str) {
        let mut first: HashMap<&str, &str> = HashMap::new();
        for (key, path) in entries {
            if key.is_empty() {
                continue;
            }
            match first.get(key.as_str()) {
                Some(first_path) => {
                    let msg = format!(
                        "{prefix}duplicate {what} \"{key}\" (first defined at {})",
                        self.line_of(first_path)
                    );
                    self.error(path, msg);
                }
                None => {
                    first.insert(key, path);
                }
            }
        }
    }
}

/// Group name -> protocol, for resolving references before the groups
/// themselves are validated. The first of two same-named groups wins (the
/// second is reported as a duplicate).
pub(crate) struct GroupIndex {
    protocols: HashMap<String, GroupProtocol>,
}

impl GroupIndex {
    fn new(raw: &[crate::raw::RawTargetGroup]) -> Self {
        let mut protocols = HashMap::new();
        for g in raw {
            protocols
                .entry(g.name.clone())
                .or_insert_with(|| group_protocol(g.protocol));
        }
        GroupIndex { protocols }
    }

    pub fn protocol(&self, name: &str) -> Option<GroupProtocol> {
        self.protocols.get(name).copied()
    }
}

pub(crate) fn group_protocol(raw: Option<RawGroupProtocol>) -> GroupProtocol {
    match raw {
        None | Some(RawGroupProtocol::Http) => GroupProtocol::Http,
        Some(RawGroupProtocol::Http2) => GroupProtocol::Http2,
        Some(RawGroupProtocol::Tcp) => GroupProtocol::Tcp,
    }
}

pub(crate) fn group_protocol_name(p: GroupProtocol) -> &'static str {
    match p {
        GroupProtocol::Http => "http",
        GroupProtocol::Http2 => "http2",
        GroupProtocol::Tcp => "tcp",
    }
}

/// A given duration, or the default in milliseconds.
pub(crate) fn dur(given: Option<crate::duration::DurationStr>, default_ms: u64) -> Duration {
    given.map_or(Duration::from_millis(default_ms), |d| d.0)
}

pub(crate) const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9901";

fn default_admin_bind() -> Address {
    Address {
        host: "127.0.0.1".to_string(),
        port: 9901,
    }
}

fn admin(ctx: &mut Ctx<'_>, raw: &RawConfig) -> Admin {
    let Some(bind) = raw.admin.as_ref().and_then(|a| a.bind.as_deref()) else {
        return Admin {
            bind: default_admin_bind(),
        };
    };
    match parse_address(bind, 0) {
        Ok(bind) => Admin { bind },
        Err(e) => {
            ctx.error(
                "admin.bind",
                format!("admin: invalid bind address \"{bind}\": {e}"),
            );
            Admin {
                bind: default_admin_bind(),
            }
        }
    }
}

fn access_log(ctx: &mut Ctx<'_>, raw: &RawConfig) -> AccessLog {
    let enabled = raw
        .access_log
        .as_ref()
        .and_then(|a| a.enabled)
        .unwrap_or(true);
    let path = match raw.access_log.as_ref().and_then(|a| a.path.as_deref()) {
        None | Some("stdout") => LogPath::Stdout,
        Some("stderr") => LogPath::Stderr,
        Some("") => {
            ctx.error(
                "access_log.path",
                "access_log: path must not be empty (stdout, stderr or a file)".to_string(),
            );
            LogPath::Stdout
        }
        Some(p) => LogPath::File(fields::resolve(ctx.base_dir, p)),
    };
    AccessLog { enabled, path }
}
