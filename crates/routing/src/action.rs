//! Route actions other than forward, precomputed per snapshot.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use switchyard_config::{FixedResponse, Redirect};

use crate::CompileError;

/// `fixed_response`: everything but the per-request date is ready to send.
#[derive(Debug, Clone)]
pub struct Fixed {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub body: Bytes,
}

impl Fixed {
    pub fn compile(f: &FixedResponse) -> Result<Fixed, CompileError> {
        Ok(Fixed {
            status: StatusCode::from_u16(f.status)
                .map_err(|_| CompileError::Invalid(format!("status {}", f.status)))?,
            content_type: HeaderValue::from_str(&f.content_type)
                .map_err(|_| CompileError::Invalid(format!("content_type {:?}", f.content_type)))?,
            body: Bytes::from(f.body.clone()),
        })
    }
}

/// `redirect`: a fixed `location`, or the request's URL with parts replaced.
#[derive(Debug, Clone)]
pub struct RedirectAction {
    pub status: StatusCode,
    fixed: Option<HeaderValue>,
    scheme: Option<Box<str>>,
    host: Option<Box<str>>,
    port: Option<u16>,
    path: Option<Box<str>>,
}

/// The parts of the request a redirect keeps.
#[derive(Debug, Clone, Copy)]
pub struct RequestUrl<'a> {
    /// `http` or `https`: how the client reached us.
    pub scheme: &'a str,
    /// Host header as sent, possibly with a port.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl RedirectAction {
    pub fn compile(r: &Redirect) -> Result<RedirectAction, CompileError> {
        let fixed = match &r.location {
            Some(l) => Some(
                HeaderValue::from_str(l)
                    .map_err(|_| CompileError::Invalid(format!("location {l:?}")))?,
            ),
            None => None,
        };
        Ok(RedirectAction {
            status: StatusCode::from_u16(r.status)
                .map_err(|_| CompileError::Invalid(format!("status {}", r.status)))?,
            fixed,
            scheme: r.scheme.as_deref().map(Into::into),
            host: r.host.as_deref().map(Into::into),
            port: r.port,
            path: r.path.as_deref().map(Into::into),
        })
    }

    /// The Location for a request. Built per request on purpose: only
    /// redirected requests pay for it.
    pub fn location(&self, req: &RequestUrl<'_>) -> Option<HeaderValue> {
        if let Some(fixed) = &self.fixed {
            return Some(fixed.clone());
        }
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let (req_host, req_port) = split_host_port(req.host.unwrap_or(""));
        let host = self.host.as_deref().unwrap_or(req_host);
        // A request port only makes sense for the scheme it was sent with.
        let port = match self.port {
            Some(p) => Some(p),
            None if scheme.eq_ignore_ascii_case(req.scheme) => req_port,
            None => None,
        };
        let port = port.filter(|&p| !is_default_port(scheme, p));
        let path = self.path.as_deref().unwrap_or(req.path);
        let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        if let Some(p) = port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        out.push_str(path);
        if let Some(q) = req.query {
            out.push('?');
            out.push_str(q);
        }
        HeaderValue::from_str(&out).ok()
    }
}

fn is_default_port(scheme: &str, port: u16) -> bool {
    (scheme.eq_ignore_ascii_case("http") && port == 80)
        || (scheme.eq_ignore_ascii_case("https") && port == 443)
}

fn split_host_port(host: &str) -> (&str, Option<u16>) {
    let bare = crate::matcher::strip_port(host);
    let port = host
        .get(bare.len() + 1..)
        .and_then(|p| p.parse::<u16>().ok());
    (bare, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(scheme: Option<&str>, port: Option<u16>, path: Option<&str>) -> RedirectAction {
        RedirectAction::compile(&Redirect {
            location: None,
            scheme: scheme.map(Into::into),
            host: None,
            port,
            path: path.map(Into::into),
            status: 301,
        })
        .unwrap()
    }

    fn url<'a>(host: &'a str, path: &'a str, query: Option<&'a str>) -> RequestUrl<'a> {
        RequestUrl {
            scheme: "http",
            host: Some(host),
            path,
            query,
        }
    }

    #[test]
    fn https_upgrade_keeps_host_path_query_and_drops_port() {
        let r = redirect(Some("https"), None, None);
        let loc = r.location(&url("a.example.com:8080", "/secure/x", Some("q=1")));
        assert_eq!(loc.unwrap(), "https://a.example.com/secure/x?q=1");
    }

    #[test]
    fn same_scheme_keeps_request_port() {
        let r = redirect(None, None, Some("/new"));
        let loc = r.location(&url("h:8080", "/old", None)).unwrap();
        assert_eq!(loc, "http://h:8080/new");
    }

    #[test]
    fn explicit_port_unless_default() {
        let r = redirect(Some("https"), Some(8443), None);
        assert_eq!(r.location(&url("h", "/", None)).unwrap(), "https://h:8443/");
        let r = redirect(Some("https"), Some(443), None);
        assert_eq!(r.location(&url("h:80", "/", None)).unwrap(), "https://h/");
    }

    #[test]
    fn fixed_location_is_used_as_given() {
        let r = RedirectAction::compile(&Redirect {
            location: Some("https://example.com/new/".into()),
            scheme: None,
            host: None,
            port: None,
            path: None,
            status: 302,
        })
        .unwrap();
        assert_eq!(
            r.location(&url("h", "/old/x", Some("a=b"))).unwrap(),
            "https://example.com/new/"
        );
        assert_eq!(r.status, 302);
    }
}
