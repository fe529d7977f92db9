//! Request and response header rewriting for forwarding.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::Version;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 7.6.1) that never cross a proxy. As
/// `HeaderName`s: standard names then compare as enum tags, and removing
/// one hashes no text.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `Connection` tokens that name no header to remove besides the fixed
/// ones (removed anyway): checked before parsing a token as a header
/// name. (`close` is handled apart.)
fn is_fixed_token(token: &[u8]) -> bool {
    token.is_empty()
        || HOP_BY_HOP
            .iter()
            .any(|h| token.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// A field named by the `close` token: rare (RFC 9110 18.4 reserves the
/// name so that nobody uses it), so looked for rather than removed blindly.
static CLOSE: HeaderName = HeaderName::from_static("close");

/// Whether `name` is one of the fixed hop-by-hop headers.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.iter().any(|h| h == name)
}

/// Removes from a trailer section what has no place there (RFC 9110
/// 6.5.1): framing (`Content-Length`, `Transfer-Encoding`), routing
/// (`Host`) and connection fields. A target would otherwise get framing
/// after the body, and an HTTP/2 client refuses such trailers.
pub fn strip_trailer_fields(trailers: &mut HeaderMap) {
    let bad = |n: &HeaderName| is_hop_by_hop(n) || n == header::CONTENT_LENGTH || n == header::HOST;
    if trailers.keys().any(bad) {
        let names: Vec<HeaderName> = trailers.keys().filter(|n| bad(n)).cloned().collect();
        for name in names {
            trailers.remove(name);
        }
    }
}

/// Removes hop-by-hop headers, including every header the `Connection`
/// header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first, noting which fixed ones are present
    // (and a field named `Close`): most messages carry none or only
    // `Connection`, and only those present are then looked up to be
    // removed.
    let mut present = 0u8;
    let mut close_field = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if *name == CLOSE {
            close_field = true;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // The names `Connection` lists, other than the fixed ones (removed
        // below) and `close` (a field only if there is one). Collected
        // first: they borrow from the map we remove from; the usual
        // `keep-alive`, `close` or `upgrade` collect nothing and allocate
        // nothing.
        let mut close_listed = false;
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close_listed = true;
                } else if !is_fixed_token(token) && !token.eq_ignore_ascii_case(b"host") {
                    // Never Host, even if named: every HTTP/1.1 request
                    // carries it (RFC 9112 3.2), and the target must see
                    // the one routed.
                    if let Ok(name) = HeaderName::from_bytes(token) {
                        named.push(name);
                    }
                }
            }
        }
        if close_listed && close_field {
            named.push(CLOSE.clone());
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Whether a comma-separated header (`Connection`, ...) lists `token`,
/// case-insensitively.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| value_has_token(v, token))
}

/// Whether one comma-separated value lists `token`. The usual value is
/// the token alone (`keep-alive`, `close`): answered without splitting.
fn value_has_token(value: &HeaderValue, token: &str) -> bool {
    let bytes = value.as_bytes();
    if !bytes.contains(&b',') {
        return bytes.trim_ascii().eq_ignore_ascii_case(token.as_bytes());
    }
    bytes
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Per-connection values computed once at accept.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Client IP as text, for X-Forwarded-For.
    pub ip_value: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
}

impl ClientInfo {
    pub fn new(ip: std::net::IpAddr, proto: &'static str) -> ClientInfo {
        // Formatted on the stack: one allocation (the value's) per
        // connection rather than a growing String and then the value.
        let mut text = [0u8; 64];
        let len = ip_text(ip, &mut text);
        ClientInfo {
            // An IP's text form is always a valid header value.
            ip_value: HeaderValue::from_bytes(&text[..len])
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(proto),
        }
    }
}

/// Writes `ip` as text into `out`, returning the length. IPv4 by hand:
/// `fmt` cost about 800 instructions per address, a tenth of what a new
/// connection costs us in user space besides its request.
fn ip_text(ip: std::net::IpAddr, out: &mut [u8; 64]) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    out[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    out[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                out[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut out[..]);
            match std::io::Write::write_fmt(&mut cursor, format_args!("{ip}")) {
                Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
                Err(_) => 0,
            }
        }
    }
}

/// Header fields `prepare_request` may add (X-Forwarded-For, -Proto,
/// -Host, X-Request-Id): room a parsed request's map is made with, so
/// that forwarding does not grow (copy) it.
pub const FORWARD_FIELDS: usize = 4;

/// `uri` with the dot segments of its path resolved (`/a/./b/../c` ->
/// `/a/c`; never above the root), or `None` when it has none.
pub fn without_dot_segments(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    if !path.starts_with('/') || !path.contains("/.") {
        return None;
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut dotted = false;
    for seg in path[1..].split('/') {
        match seg {
            "." => dotted = true,
            ".." => {
                dotted = true;
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    if !dotted {
        return None;
    }
    let mut clean = String::with_capacity(path.len());
    for s in &kept {
        clean.push('/');
        clean.push_str(s);
    }
    // `/a/..` and `/a/.` name a directory: keep the trailing slash.
    if clean.is_empty() || path.ends_with("/.") || path.ends_with("/..") {
        clean.push('/');
    }
    if let Some(q) = uri.query() {
        clean.push('?');
        clean.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(clean).ok()?);
    Uri::from_parts(parts).ok()
}

/// Whether a Host value is `host[:port]` as RFC 9110 7.2 has it: the
/// characters of a reg-name, an IPv4 address or a bracketed IPv6 literal,
/// and a port. Not empty: an http URI has a host (RFC 9110 4.2.1), and
/// NGINX refuses an empty Host too.
pub fn valid_host(v: &[u8]) -> bool {
    // Every request's Host comes here: one pass over a table. A name or
    // IPv4 address (no `:`, `[`, `]` in it), then `:port` if any.
    match v.first() {
        None | Some(b':') => return false,
        Some(b'[') => return valid_ip_literal(v),
        Some(_) => {}
    }
    match v.iter().position(|&b| !NAME_BYTE[usize::from(b)]) {
        None => true,
        Some(i) => v[i] == b':' && valid_port(&v[i + 1..]),
    }
}

/// `[IPv6]` with an optional `:port` (rare: a path of its own).
fn valid_ip_literal(v: &[u8]) -> bool {
    let Some(end) = v.iter().position(|&b| b == b']') else {
        return false;
    };
    let inside = &v[1..end];
    if !inside
        .iter()
        .all(|&b| b == b':' || NAME_BYTE[usize::from(b)])
    {
        return false;
    }
    match &v[end + 1..] {
        [] => true,
        [b':', port @ ..] => valid_port(port),
        _ => false,
    }
}

/// Digits, at most 65535 (empty is allowed: `host:`). `+80` is not.
fn valid_port(p: &[u8]) -> bool {
    p.len() <= 5
        && p.iter().all(u8::is_ascii_digit)
        && p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// The bytes of a reg-name or IPv4 address: unreserved, pct-encoded,
/// sub-delims (RFC 3986 3.2.2).
static NAME_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    t
};

/// The host and port a request-target names (absolute-form, or h2's
/// :authority), without any userinfo; `None` for origin-form.
pub fn uri_host(uri: &Uri) -> Option<&str> {
    let a = uri.authority()?.as_str();
    Some(a.rsplit('@').next().unwrap_or(a)).filter(|h| !h.is_empty())
}

/// Rewrites a client request's head for an HTTP/1.1 upstream. False when
/// it has no host at all (an HTTP/1.0 request without Host): the target's
/// address is then sent (`forward::for_protocol`).
pub fn prepare_request(
    headers: &mut HeaderMap,
    uri: &mut Uri,
    version: &mut Version,
    client: &ClientInfo,
    request_id: &HeaderValue,
) -> bool {
    // X-Forwarded-Host is the host the client asked for: the request
    // target's authority when it has one (absolute-form, h2), which then
    // replaces any Host sent (RFC 9112 3.2.2), else Host.
    let from_uri = uri_host(uri).and_then(|a| HeaderValue::from_str(a).ok());
    let host = match from_uri {
        Some(h) => {
            headers.insert(header::HOST, h.clone());
            Some(h)
        }
        None => headers.get(header::HOST).cloned(),
    };
    strip_hop_by_hop(headers);
    if let Some(h) = &host {
        headers.insert(X_FORWARDED_HOST.clone(), h.clone());
    }
    append_forwarded_for(headers, &client.ip_value);
    headers.insert(X_FORWARDED_PROTO.clone(), client.proto.clone());
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    }
    if *version == Version::HTTP_2 {
        join_cookie_crumbs(headers);
    }
    // Origin-form for the upstream; absolute-form arrives from h2 clients
    // and proxies' clients.
    if uri.scheme().is_some() || uri.authority().is_some() {
        let pq = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *uri = Uri::from(pq);
    }
    *version = Version::HTTP_11;
    host.is_some()
}

/// HTTP/2 clients may split `Cookie` into one field per cookie; towards
/// HTTP/1.1 they are joined with "; " (RFC 9113 8.2.3), as many servers
/// read only the first `Cookie` line.
fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    if crumbs.next().is_some() && crumbs.next().is_some() {
        join_values(headers, &header::COOKIE, b"; ", None);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    // One lookup (its name is hashed byte by byte) in the usual case.
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(e) => {
            e.insert(ip.clone());
        }
        header::Entry::Occupied(_) => join_values(headers, &X_FORWARDED_FOR, b", ", Some(ip)),
    }
}

/// Replaces every `name` field by one: their values joined by `sep`, and
/// `last` after them.
fn join_values(headers: &mut HeaderMap, name: &HeaderName, sep: &[u8], last: Option<&HeaderValue>) {
    let mut joined = Vec::with_capacity(128);
    for part in headers.get_all(name).iter().chain(last) {
        if !joined.is_empty() {
            joined.extend_from_slice(sep);
        }
        joined.extend_from_slice(part.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(name.clone(), v);
    }
}

/// The request's id: the client's `X-Request-Id` if it sent one, else a
/// fresh random 128-bit hex id.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        return v.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for b in buf.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_host_and_port() {
        for ok in [
            "a.test",
            "a.test:80",
            "a.test:",
            "127.0.0.1:65535",
            "[::1]",
            "[::1]:80",
            "xn--bcher-kva.test",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "a.test:65536",
            "a.test:+80",
            "a:b:80",
            "a]b",
            "[x",
            "[::1]x",
            "a b",
            "a@b",
            "a/b",
            "a?b",
            "[[::1]]",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn dot_segments_are_resolved_and_other_paths_left_alone() {
        let clean =
            |u: &str| without_dot_segments(&u.parse::<Uri>().unwrap()).map(|u| u.to_string());
        assert_eq!(clean("/web/../admin").as_deref(), Some("/admin"));
        assert_eq!(
            clean("/a/./b/../c?x=/../y").as_deref(),
            Some("/a/c?x=/../y")
        );
        assert_eq!(clean("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(clean("/a/./").as_deref(), Some("/a/"));
        assert_eq!(clean("/../../etc").as_deref(), Some("/etc"));
        assert_eq!(clean("/..").as_deref(), Some("/"));
        assert_eq!(
            clean("http://h.test/a/../b").as_deref(),
            Some("http://h.test/b")
        );
        for untouched in ["/", "/a/b", "/.well-known/x", "/a/.../b", "/a..b/c.", "*"] {
            assert_eq!(clean(untouched), None, "{untouched}");
        }
    }

    fn client() -> ClientInfo {
        ClientInfo {
            ip_value: HeaderValue::from_static("10.1.2.3"),
            proto: HeaderValue::from_static("http"),
        }
    }

    #[test]
    fn forwarded_headers_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("app.example.com:8080"),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("s"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        let mut uri: Uri = "/p?q=1".parse().unwrap();
        let mut v = Version::HTTP_11;
        let id = request_id(&h);
        prepare_request(&mut h, &mut uri, &mut v, &client(), &id);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com:8080");
        assert_eq!(h["host"], "app.example.com:8080");
        assert_eq!(h["x-request-id"].len(), 32);
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(uri, "/p?q=1");
    }

    #[test]
    fn client_ip_text_matches_the_standard_form() {
        let ips = [
            "0.0.0.0",
            "255.255.255.255",
            "10.1.2.3",
            "100.10.0.9",
            "127.0.0.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.128",
        ];
        for text in ips {
            let ip: std::net::IpAddr = text.parse().unwrap();
            assert_eq!(
                ClientInfo::new(ip, "http").ip_value,
                ip.to_string().as_str()
            );
        }
    }

    #[test]
    fn fixed_hop_by_hop_headers_go_without_connection_and_named_ones_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-sum"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "1");

        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Close, X-Other,Transfer-Encoding"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-more"));
        h.insert("x-other", HeaderValue::from_static("o"));
        h.insert("x-more", HeaderValue::from_static("m"));
        h.insert("close", HeaderValue::from_static("c"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "1");

        // A `Close` field stays unless `Connection` names it; a token that
        // is not a header name (here obs-text) does not hide the others.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("close", HeaderValue::from_static("c"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, caf\xe9").unwrap(),
        );
        h.insert("x-secret", HeaderValue::from_static("s"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn request_id_is_kept_and_absolute_uri_becomes_origin_form() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        let mut uri: Uri = "http://h.example/x?y".parse().unwrap();
        let mut v = Version::HTTP_2;
        let id = request_id(&h);
        prepare_request(&mut h, &mut uri, &mut v, &client(), &id);
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["host"], "h.example");
        assert_eq!(uri, "/x?y");
        assert_eq!(v, Version::HTTP_11);
    }
}
