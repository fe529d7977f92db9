//! Errors the loader reports: each names the file, the line and column where
//! the YAML has them, and the object that is wrong.
//!
//! Every stage (reading, YAML syntax, serde shape, semantic validation) ends
//! in the same [`ConfigError`], so `check`, `run` and reload print alike.

use std::fmt;

/// A position in the configuration text; both fields are 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in one configuration file.
///
/// Displays as `{origin}:{line}:{column}: {message}`, or `{origin}: {message}`
/// when there is no position (an unreadable file, a problem with a default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as the caller gave it.
    pub origin: String,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(loc) => write!(f, "{}:{}: {}", self.origin, loc, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl ConfigError {
    /// An error found after loading (a certificate, a bind), placed at the
    /// key or list item at `path` (`listeners.0.bind`) when `source` maps
    /// the file, or at the closest recorded ancestor.
    pub fn at(
        origin: &str,
        source: Option<&crate::SourceMap>,
        path: &str,
        message: String,
    ) -> ConfigError {
        ConfigError {
            origin: origin.to_owned(),
            location: source.and_then(|s| s.find_nearest(path)),
            message,
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything wrong with a file: validation collects all problems rather
/// than stopping at the first, so that one `check` run shows them all.
/// Displays one error per line. Never empty when returned as an `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn one(origin: &str, location: Option<Location>, message: String) -> Self {
        ConfigErrors(vec![ConfigError {
            origin: origin.to_string(),
            location,
            message,
        }])
    }

    /// The errors in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Turns a serde_yaml error into ours. serde_yaml appends " at line L column
/// C" to its text; we carry the position separately, so that suffix goes.
pub(crate) fn from_yaml(origin: &str, err: &serde_yaml::Error) -> ConfigError {
    let location = err.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    let mut message = err.to_string();
    if let Some(loc) = location {
        let suffix = format!(" at line {} column {}", loc.line, loc.column);
        if let Some(pos) = message.find(&suffix) {
            message.replace_range(pos..pos + suffix.len(), "");
        }
    }
    ConfigError {
        origin: origin.to_string(),
        location,
        message,
    }
}
