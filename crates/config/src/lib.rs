//! switchyard-config: YAML text -> validated [`Config`].
//!
//! First stage of the data flow (YAML -> config -> routing::compile ->
//! Snapshot). Pure: no tokio, no hyper. `check`, `run` and reload all go
//! through [`load_file`] so that they can never disagree.
//!
//! Stages: serde_yaml reads the text into the raw structs (syntax, unknown
//! keys, wrong types, bad durations: one located error); yaml-rust2 walks the
//! same text for a [`SourceMap`]; validation turns raw into model and reports
//! every semantic problem at its key.

mod duration;
mod error;
mod matcher;
pub mod model;
mod raw;
mod source_map;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors, Location};
pub use model::*;
pub use source_map::SourceMap;

/// A validated configuration with what is needed to report on it later.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Where each key stands in the text, for errors found after loading
    /// (e.g. a bind that fails at startup).
    pub source: SourceMap,
    /// Hex FNV-1a 64-bit hash of the file bytes: same bytes, same version.
    pub version: String,
}

/// Reads and validates the file at `path`. Relative certificate, key and
/// log paths resolve against the file's directory. Errors name the file as
/// given.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one(&origin, None, format!("cannot read file: {e}")))?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_str(&text, &origin, base_dir)
}

/// Validates `text` as if read from a file named `origin` in `base_dir`.
pub fn parse_str(text: &str, origin: &str, base_dir: &Path) -> Result<Loaded, ConfigErrors> {
    // A byte order mark (Windows editors write one) is not YAML content:
    // serde_yaml takes it for a second document.
    // The version stays the hash of the bytes as read (the file watcher
    // compares it with the file's).
    let version = version_of(text.as_bytes());
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let source = SourceMap::build(text);
    if !source.has_content() {
        return Err(ConfigErrors::one(
            origin,
            None,
            "empty configuration".to_string(),
        ));
    }
    // Before serde, which reports a duplicate key at its mapping's start:
    // the error points at the second occurrence.
    if let Some((path, at)) = source.first_duplicate() {
        return Err(ConfigErrors::one(
            origin,
            Some(at),
            format!("duplicate key `{path}`"),
        ));
    }
    let raw = if source.has_merge_keys() {
        merged(text)
    } else {
        serde_yaml::from_str(text)
    };
    let raw: raw::RawConfig = raw.map_err(|e| {
        let mut err = error::from_yaml(origin, &e);
        if err.location.is_none() && source.has_merge_keys() {
            err.message
                .push_str(" (serde cannot say where in a file with `<<` merge keys)");
        }
        ConfigErrors(vec![err])
    })?;
    let config = validate::validate(&raw, &source, origin, base_dir).map_err(ConfigErrors)?;
    Ok(Loaded {
        config,
        source,
        version,
    })
}

/// A configuration with YAML 1.1 merge keys (`<<: *defaults`), which
/// serde_yaml 0.9 does not apply when deserializing typed structs: read as
/// a plain value, merged, then typed. Syntax errors keep their places;
/// type errors found after the merge have none.
fn merged(text: &str) -> Result<raw::RawConfig, serde_yaml::Error> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text)?;
    value.apply_merge()?;
    serde_yaml::from_value(value)
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms (unlike
/// `DefaultHasher`), which matters because the version is shown to users.
pub fn version_of(bytes: &[u8]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    format!("{hash:016x}")
}
