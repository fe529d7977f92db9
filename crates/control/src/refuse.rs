//! Configuration this build validates but does not run yet.
//!
//! `check` accepts the whole INTERFACE.md schema, so configs can be written
//! ahead of the features. `run` must never silently ignore a key, so it
//! refuses a config that uses one of these, naming the key and its place.

use switchyard_config::Loaded;

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
        if g.limits.max_pending.is_some() {
            refuse(
                key("limits.max_pending"),
                format!("target group {name:?}: `limits.max_pending`"),
            );
        }
        if g.limits.max_connections.is_some() {
            refuse(
                key("limits.max_connections"),
                format!("target group {name:?}: `limits.max_connections`"),
            );
        }
    }
    out
}
