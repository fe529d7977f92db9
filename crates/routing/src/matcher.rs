//! Route conditions compiled for matching without allocation.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;
use switchyard_config::{HostMatch, PathMatch, RouteMatch};

use crate::CompileError;

/// What a route looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// `Host` header or URI authority, possibly with a port.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

#[derive(Debug)]
enum PathCond {
    Prefix(Box<str>),
    Exact(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
pub struct Matcher {
    host: Option<HostMatch>,
    path: Option<PathCond>,
    method: Option<Method>,
    headers: Box<[(HeaderName, HeaderValue)]>,
}

impl Matcher {
    pub fn compile(m: &RouteMatch) -> Result<Matcher, CompileError> {
        let path = match &m.path {
            None => None,
            Some(PathMatch::Prefix(p)) => Some(PathCond::Prefix(p.as_str().into())),
            Some(PathMatch::Exact(p)) => Some(PathCond::Exact(p.as_str().into())),
            Some(PathMatch::Regex(r)) => {
                Some(PathCond::Regex(Regex::new(r).map_err(|e| {
                    CompileError::Invalid(format!("path_regex {r:?}: {e}"))
                })?))
            }
        };
        let method = match &m.method {
            None => None,
            Some(s) => Some(
                Method::from_bytes(s.as_bytes())
                    .map_err(|_| CompileError::Invalid(format!("method {s:?}")))?,
            ),
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for (name, value) in &m.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| CompileError::Invalid(format!("header name {name:?}")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| CompileError::Invalid(format!("header value {value:?}")))?;
            headers.push((n, v));
        }
        Ok(Matcher {
            host: m.host.clone(),
            path,
            method,
            headers: headers.into(),
        })
    }

    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        if let Some(method) = &self.method {
            if method != req.method {
                return false;
            }
        }
        if let Some(host) = &self.host {
            let Some(h) = req.host.map(strip_port) else {
                return false;
            };
            if !host_matches(host, h) {
                return false;
            }
        }
        if let Some(path) = &self.path {
            let ok = match path {
                PathCond::Prefix(p) => req.path.starts_with(&**p),
                PathCond::Exact(p) => req.path == &**p,
                PathCond::Regex(r) => r.is_match(req.path),
            };
            if !ok {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
    }
}

fn host_matches(cond: &HostMatch, host: &str) -> bool {
    // A trailing dot names the same host (FQDN form).
    let host = host.strip_suffix('.').unwrap_or(host);
    match cond {
        HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
        HostMatch::Suffix(s) => {
            host.len() > s.len()
                && host.is_char_boundary(host.len() - s.len())
                && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
        }
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host: Option<HostMatch>, path: Option<PathMatch>) -> Matcher {
        Matcher::compile(&RouteMatch {
            host,
            path,
            ..RouteMatch::default()
        })
        .unwrap()
    }

    fn req<'a>(host: Option<&'a str>, path: &'a str, h: &'a HeaderMap) -> RequestInfo<'a> {
        RequestInfo {
            host,
            path,
            method: &Method::GET,
            headers: h,
        }
    }

    #[test]
    fn exact_host_is_case_insensitive_and_ignores_port() {
        let h = HeaderMap::new();
        let x = m(Some(HostMatch::Exact("api.example.com".into())), None);
        assert!(x.matches(&req(Some("API.Example.com:8080"), "/", &h)));
        assert!(x.matches(&req(Some("api.example.com."), "/", &h)));
        assert!(!x.matches(&req(Some("www.example.com"), "/", &h)));
        assert!(!x.matches(&req(None, "/", &h)));
    }

    #[test]
    fn wildcard_host_matches_subdomains_only() {
        let h = HeaderMap::new();
        let x = m(Some(HostMatch::Suffix(".example.com".into())), None);
        assert!(x.matches(&req(Some("a.example.com"), "/", &h)));
        assert!(x.matches(&req(Some("a.b.EXAMPLE.com:1"), "/", &h)));
        assert!(!x.matches(&req(Some("example.com"), "/", &h)));
        assert!(!x.matches(&req(Some("badexample.com"), "/", &h)));
    }

    #[test]
    fn paths() {
        let h = HeaderMap::new();
        let p = m(None, Some(PathMatch::Prefix("/api/".into())));
        assert!(p.matches(&req(None, "/api/x", &h)));
        assert!(!p.matches(&req(None, "/api", &h)));
        let e = m(None, Some(PathMatch::Exact("/x".into())));
        assert!(e.matches(&req(None, "/x", &h)));
        assert!(!e.matches(&req(None, "/x/", &h)));
        let r = m(None, Some(PathMatch::Regex("^/v[0-9]+/".into())));
        assert!(r.matches(&req(None, "/v2/users", &h)));
        assert!(!r.matches(&req(None, "/vx/users", &h)));
    }

    #[test]
    fn method_and_headers() {
        let x = Matcher::compile(&RouteMatch {
            method: Some("POST".into()),
            headers: vec![("x-canary".into(), "always".into())],
            ..RouteMatch::default()
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("X-Canary", HeaderValue::from_static("always"));
        let post = RequestInfo {
            host: None,
            path: "/",
            method: &Method::POST,
            headers: &h,
        };
        assert!(x.matches(&post));
        assert!(!x.matches(&RequestInfo {
            method: &Method::GET,
            ..post
        }));
        let mut other = HeaderMap::new();
        other.insert("x-canary", HeaderValue::from_static("never"));
        assert!(!x.matches(&RequestInfo {
            headers: &other,
            ..post
        }));
    }

    #[test]
    fn empty_match_matches_all() {
        let h = HeaderMap::new();
        assert!(m(None, None).matches(&req(None, "/anything", &h)));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
