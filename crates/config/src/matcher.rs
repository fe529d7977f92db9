//! Health-check status matchers: `"200"`, `"200,204"`, `"200-299"`, mixes.

use std::str::FromStr;

use crate::model::StatusMatcher;

impl FromStr for StatusMatcher {
    type Err = String;

    /// Comma-separated codes or inclusive `lo-hi` ranges of codes
    /// 100..=599; spaces around items are allowed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!(
                    "invalid status matcher \"{s}\": empty item (expected e.g. \"200\", \"200,204\" or \"200-299\")"
                ));
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (code(s, lo.trim())?, code(s, hi.trim())?),
                None => {
                    let c = code(s, item)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(format!(
                    "invalid status matcher \"{s}\": range {lo}-{hi} is reversed"
                ));
            }
            ranges.push((lo, hi));
        }
        Ok(StatusMatcher { ranges })
    }
}

fn code(whole: &str, s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) && s.chars().all(|c| c.is_ascii_digit()) => Ok(c),
        Ok(c) if s.chars().all(|c| c.is_ascii_digit()) => Err(format!(
            "invalid status matcher \"{whole}\": status {c} is outside 100..=599"
        )),
        _ => Err(format!(
            "invalid status matcher \"{whole}\": \"{s}\" is not a status code"
        )),
    }
}
