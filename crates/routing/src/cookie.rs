//! Reading cookies from request headers without allocating.

use http::header::COOKIE;
use http::HeaderMap;

/// The value of cookie `name` in the request's `Cookie` header(s).
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    for value in headers.get_all(COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let pair = pair.trim_start();
            if let Some(rest) = pair.strip_prefix(name) {
                if let Some(v) = rest.strip_prefix('=') {
                    return Some(v.trim_end());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn finds_among_several() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; SWYG=web-blue:99"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(find(&h, "SWYG"), Some("web-blue:99"));
        assert_eq!(find(&h, "b"), Some("2"));
        assert_eq!(find(&h, "SWY"), None);
        assert_eq!(find(&h, "c"), None);
    }
}
