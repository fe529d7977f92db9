//! Duration strings (`250ms`, `5s`, `1m`, `1h`) as the YAML writes them.
//!
//! Parsed while serde reads the file, so that a bad duration is reported by
//! serde_yaml with the line and column of the value.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

const UNITS: &str = "ms, s, m or h";

/// Parses a whole number followed by a unit: `ms`, `s`, `m` or `h`.
/// `0` alone is accepted (zero needs no unit). No fractions, no signs, no
/// spaces, no compound forms such as `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err(format!(
            "invalid duration \"\": expected a number followed by {UNITS}"
        ));
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "invalid duration \"{s}\": expected a whole number followed by {UNITS}"
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration \"{s}\": number too large"))?;
    let millis_per_unit: u64 = match unit {
        "" if value == 0 => 0,
        "" => return Err(format!("invalid duration \"{s}\": missing unit ({UNITS})")),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ if unit.starts_with('.') => {
            return Err(format!(
                "invalid duration \"{s}\": fractions are not supported, use a smaller unit (e.g. 1500ms)"
            ))
        }
        _ => {
            return Err(format!(
                "invalid duration \"{s}\": unknown unit \"{unit}\" (use {UNITS})"
            ))
        }
    };
    let millis = value
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("invalid duration \"{s}\": too large"))?;
    Ok(Duration::from_millis(millis))
}

/// A duration read from a YAML string; the error carries serde_yaml's
/// location of the offending value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationStr(pub Duration);

impl<'de> de::Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl Visitor<'_> for V {
            type Value = DurationStr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a duration such as 250ms, 5s, 1m or 1h")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationStr, E> {
                parse_duration(v).map(DurationStr).map_err(E::custom)
            }

            // A bare YAML integer reaches us as a number, not a string.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationStr, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationStr, E> {
                self.visit_str(&v.to_string())
            }
        }

        deserializer.deserialize_str(V)
    }
}
