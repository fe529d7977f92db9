//! Tests for the whole loader: one per validation rule, each asserting the
//! message and the line:column; plus the INTERFACE.md example, defaults,
//! serde-level errors, durations, matchers and the source map.
//!
//! YAML is written at column 0 inside raw strings (after a leading newline
//! that [`yaml`] drops), so the line numbers in assertions can be read off
//! the test source.

mod defaults;
mod example;
mod rules_binds;
mod rules_health;
mod rules_keys;
mod rules_misc;
mod rules_names;
mod rules_refs;
mod rules_routes;
mod source_map;
mod syntax;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{parse_str, Config, ConfigError, Location};

/// Drops the newline that follows `r#"` so that the first YAML line is line 1.
pub(crate) fn yaml(s: &str) -> String {
    s.strip_prefix('\n').unwrap_or(s).to_string()
}

/// Groups appended at the END of a test's YAML, so they do not shift its
/// line numbers: `web` (http, one target), `api` (http2), `pg` (tcp).
pub(crate) const GROUPS: &str = "
target_groups:
  - { name: web, targets: [ { address: 127.0.0.1:9001 } ] }
  - { name: api, protocol: http2 }
  - { name: pg, protocol: tcp }
";

pub(crate) fn with_groups(s: &str) -> String {
    format!("{}{GROUPS}", yaml(s))
}

pub(crate) fn parse_ok(text: &str) -> Config {
    parse_in(text, Path::new("/nonexistent-base"))
}

pub(crate) fn parse_in(text: &str, base: &Path) -> Config {
    match parse_str(text, "t.yaml", base) {
        Ok(l) => l.config,
        Err(e) => panic!("expected a valid config, got:\n{e}\n--- text:\n{text}"),
    }
}

pub(crate) fn errors_in(text: &str, base: &Path) -> Vec<ConfigError> {
    match parse_str(text, "t.yaml", base) {
        Ok(_) => panic!("expected errors, the config is valid:\n{text}"),
        Err(e) => e.0,
    }
}

pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
    errors_in(text, Path::new("/nonexistent-base"))
}

/// Asserts that some error contains `needle` and stands at `line:column`.
pub(crate) fn assert_error(text: &str, line: usize, column: usize, needle: &str) {
    assert_error_in(&errors(text), line, column, needle);
}

pub(crate) fn assert_error_in(errs: &[ConfigError], line: usize, column: usize, needle: &str) {
    let all = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let matching: Vec<&ConfigError> = errs.iter().filter(|e| e.message.contains(needle)).collect();
    assert!(
        !matching.is_empty(),
        "no error contains {needle:?}; errors:\n{all}"
    );
    let want = Some(Location { line, column });
    assert!(
        matching.iter().any(|e| e.location == want),
        "error {needle:?} is not at {line}:{column}; errors:\n{all}"
    );
}

/// Asserts exactly one error, containing `needle`, at `line:column`.
pub(crate) fn assert_only_error(text: &str, line: usize, column: usize, needle: &str) {
    let errs = errors(text);
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got:\n{}",
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_error_in(&errs, line, column, needle);
}

/// A fresh directory for one test (no temp-dir crate needed), removed
/// when dropped.
pub(crate) struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn temp_dir(tag: &str) -> TempDir {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-config-{tag}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

pub(crate) const CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUfake\n-----END CERTIFICATE-----\n";
pub(crate) const KEY_PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49fake\n-----END PRIVATE KEY-----\n";

/// A directory holding `certs/a.pem` and `certs/a.key` with PEM headers.
pub(crate) fn cert_dir() -> TempDir {
    let dir = temp_dir("certs");
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join("certs/a.pem"), CERT_PEM).unwrap();
    std::fs::write(dir.join("certs/a.key"), KEY_PEM).unwrap();
    dir
}
