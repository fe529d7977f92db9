//! Configuration this build validates but does not run yet.
//!
//! `check` accepts the whole INTERFACE.md schema, so configs can be written
//! ahead of the features. `run` must never silently ignore a key, so it
//! refuses a config that uses one of these, naming the key and its place.

use switchyard_config::{GroupProtocol, Loaded};

/// One message per unsupported use, `file:line:col: ...`.
pub fn unsupported(loaded: &Loaded, origin: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut refuse = |path: String, what: String| {
        let at = loaded
            .source
            .find(&path)
            .map(|l| format!("{origin}:{}:{}", l.line, l.column))
            .unwrap_or_else(|| origin.to_owned());
        out.push(format!("{at}: {what} is not supported by this build yet"));
    };
    let c = &loaded.config;
    for (i, g) in c.target_groups.iter().enumerate() {
        let name = &g.name;
        let key = |k: &str| format!("target_groups.{i}.{k}");
        // HTTP groups enforce limits in the upstream pool; the L4 path does
        // not count connections against them yet.
        if g.protocol == GroupProtocol::Tcp {
            for (k, set) in [
                ("max_pending", g.limits.max_pending.is_some()),
                ("max_connections", g.limits.max_connections.is_some()),
                ("max_requests", g.limits.max_requests.is_some()),
            ] {
                if set {
                    refuse(
                        key(&format!("limits.{k}")),
                        format!("tcp target group {name:?}: `limits.{k}`"),
                    );
                }
            }
        }
    }
    out
}
