//! Weighted splits between target groups, and group stickiness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};

use crate::cookie;

/// One forward's groups, with the smooth-WRR table over their weights.
#[derive(Debug)]
pub struct Split {
    /// (snapshot group index, weight, cookie-safe group name).
    entries: Vec<(usize, u32, Box<str>)>,
    table: Vec<u32>,
    next: AtomicUsize,
    pub sticky: Option<Sticky>,
}

/// A stickiness cookie: `NAME=<value>:<unix expiry>`.
#[derive(Debug, Clone)]
pub struct Sticky {
    pub cookie: Box<str>,
    pub duration: Duration,
}

impl Split {
    pub(crate) fn new(entries: Vec<(usize, u32, &str)>, sticky: Option<Sticky>) -> Split {
        let weights: Vec<u32> = entries.iter().map(|e| e.1).collect();
        Split {
            table: crate::wrr::smooth_table(&weights),
            entries: entries
                .into_iter()
                .map(|(g, w, name)| (g, w, cookie_safe(name).into()))
                .collect(),
            next: AtomicUsize::new(0),
            sticky,
        }
    }

    /// The next group by weight (one relaxed `fetch_add`), as a snapshot
    /// group index. `None` only when every weight is 0.
    pub fn choose(&self) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.table.len();
        self.entries.get(self.table[i] as usize).map(|e| e.0)
    }

    /// A group by weight among those `ok` accepts: a random draw, not the
    /// rotation (for the rare re-pick of a sticky client whose group
    /// cannot serve it). `None` when `ok` accepts no weighted group.
    pub fn choose_among(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let admitted = || self.entries.iter().filter(|e| e.1 > 0 && ok(e.0));
        let total: u64 = admitted().map(|e| u64::from(e.1)).sum();
        if total == 0 {
            return None;
        }
        let mut r = fastrand::u64(..total);
        for e in admitted() {
            if r < u64::from(e.1) {
                return Some(e.0);
            }
            r -= u64::from(e.1);
        }
        None
    }

    /// The groups of this split with their weights.
    pub fn groups(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.entries.iter().map(|e| (e.0, e.1))
    }

    /// The group a valid, unexpired stickiness cookie names, if it is still
    /// part of this split with a non-zero weight.
    pub fn sticky_group(&self, headers: &HeaderMap, now: SystemTime) -> Option<usize> {
        let sticky = self.sticky.as_ref()?;
        let value = cookie::find(headers, &sticky.cookie)?;
        let name = parse_unexpired(value, now)?;
        self.entries
            .iter()
            .find(|e| e.1 > 0 && &*e.2 == name)
            .map(|e| e.0)
    }

    /// The `Set-Cookie` value binding a client to group `group`.
    pub fn set_cookie(&self, group: usize, now: SystemTime) -> Option<HeaderValue> {
        let sticky = self.sticky.as_ref()?;
        let entry = self.entries.iter().find(|e| e.0 == group)?;
        set_cookie_value(&sticky.cookie, &entry.2, sticky.duration, now)
    }
}

/// `value:expiry` -> `value` when `expiry` is in the future.
pub fn parse_unexpired(cookie_value: &str, now: SystemTime) -> Option<&str> {
    let (name, exp) = cookie_value.rsplit_once(':')?;
    let exp: u64 = exp.parse().ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (exp > now).then_some(name)
}

/// Builds `NAME=value:expiry; Max-Age=..; Path=/; HttpOnly; SameSite=Lax`.
pub fn set_cookie_value(
    cookie: &str,
    value: &str,
    duration: Duration,
    now: SystemTime,
) -> Option<HeaderValue> {
    let exp = now.duration_since(UNIX_EPOCH).ok()?.as_secs() + duration.as_secs();
    HeaderValue::from_str(&format!(
        "{cookie}={value}:{exp}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
        duration.as_secs()
    ))
    .ok()
}

/// Group names are free text; cookie values are not. Percent-encode
/// everything outside a conservative set so any name round-trips.
pub fn cookie_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'[' | b']') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_follows_weights_exactly() {
        let s = Split::new(vec![(7, 95, "blue"), (9, 5, "green")], None);
        let mut green = 0;
        for _ in 0..100 {
            if s.choose() == Some(9) {
                green += 1;
            }
        }
        assert_eq!(green, 5);
    }

    #[test]
    fn sticky_cookie_round_trip_and_expiry() {
        let s = Split::new(
            vec![(0, 1, "web blue"), (1, 0, "web-green")],
            Some(Sticky {
                cookie: "SWYG".into(),
                duration: Duration::from_secs(3600),
            }),
        );
        let now = SystemTime::now();
        let set = s.set_cookie(0, now).unwrap();
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_str(&pair).unwrap());
        assert_eq!(s.sticky_group(&h, now), Some(0));
        // Expired.
        let later = now + Duration::from_secs(7200);
        assert_eq!(s.sticky_group(&h, later), None);
        // Weight 0 group is not honoured.
        let mut h = HeaderMap::new();
        let exp = now.duration_since(UNIX_EPOCH).unwrap().as_secs() + 60;
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("SWYG=web-green:{exp}")).unwrap(),
        );
        assert_eq!(s.sticky_group(&h, now), None);
    }
}
