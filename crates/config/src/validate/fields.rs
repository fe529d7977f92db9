//! Small field parsers shared by the validators: addresses, tokens, hosts,
//! file paths, PEM files. Each returns a message without the object's name;
//! the caller adds it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::model::{Address, HashOn, HostMatch};

impl Address {
    /// A target address as the YAML and the admin API take it: `IP:PORT`,
    /// `HOST:PORT` or `[v6]:PORT` with port 1..=65535. Host names are
    /// lower-cased.
    pub fn parse_target(s: &str) -> Result<Address, String> {
        parse_address(s, 1)
    }

    /// A bind address: like [`parse_target`](Self::parse_target), but port
    /// 0 (ephemeral) is allowed.
    pub fn parse_bind(s: &str) -> Result<Address, String> {
        parse_address(s, 0)
    }
}

/// `IP:PORT`, `HOST:PORT` or `[v6]:PORT`, with the port at least
/// `min_port` (binds accept 0 = ephemeral, targets need a real port).
pub(crate) fn parse_address(s: &str, min_port: u16) -> Result<Address, String> {
    if s.contains("://") {
        return Err("expected IP:PORT or HOST:PORT, without a scheme".to_string());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "missing `]` after the IPv6 address".to_string())?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("`{host}` is not an IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| "missing `:PORT` after `]`".to_string())?;
        (host.to_ascii_lowercase(), port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| "missing `:PORT` (expected IP:PORT or HOST:PORT)".to_string())?;
        if host.contains(':') {
            return Err("an IPv6 address needs brackets, e.g. [::1]:8080".to_string());
        }
        check_host(host)?;
        (host.to_ascii_lowercase(), port)
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|_| port.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| format!("port `{port}` is not a number 0..=65535"))?;
    if port < min_port {
        return Err(format!("port {port} is outside {min_port}..=65535"));
    }
    Ok(Address { host, port })
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("missing host before `:PORT`".to_string());
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        host.parse::<Ipv4Addr>()
            .map_err(|_| format!("`{host}` is not an IPv4 address"))?;
        return Ok(());
    }
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !valid || host.starts_with('.') || host.contains("..") {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    Ok(())
}

/// An HTTP token (RFC 9110 `tchar`): header names, cookie names.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Whether a header value can go on the wire as given (no control
/// characters: a CR or LF would otherwise fail only at request time).
pub(crate) fn is_header_value(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// `api.example.com` (exact) or `*.example.com` (suffix `.example.com`);
/// lower-cased. A `*` anywhere else is refused rather than guessed at.
pub(crate) fn parse_host_match(s: &str) -> Result<HostMatch, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("*.") {
        if rest.is_empty() || rest.contains('*') {
            return Err(format!(
                "host \"{s}\": `*` is allowed only as a leading `*.` before a domain"
            ));
        }
        return Ok(HostMatch::Suffix(format!(".{rest}")));
    }
    if lower.is_empty() {
        return Err("host must not be empty".to_string());
    }
    if lower.contains('*') {
        return Err(format!(
            "host \"{s}\": `*` is allowed only as a leading `*.` (e.g. \"*.example.com\")"
        ));
    }
    if lower.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("host \"{s}\" is not a host name"));
    }
    Ok(HostMatch::Exact(lower))
}

/// `header:NAME` (name lower-cased), `cookie:NAME` or `client_ip`.
pub(crate) fn parse_hash_on(s: &str) -> Result<HashOn, String> {
    if s == "client_ip" {
        return Ok(HashOn::ClientIp);
    }
    if let Some(name) = s.strip_prefix("header:") {
        if !is_token(name) {
            return Err(format!("hash_on \"{s}\": `{name}` is not a header name"));
        }
        return Ok(HashOn::Header(name.to_ascii_lowercase()));
    }
    if let Some(name) = s.strip_prefix("cookie:") {
        if !is_token(name) {
            return Err(format!("hash_on \"{s}\": `{name}` is not a cookie name"));
        }
        return Ok(HashOn::Cookie(name.to_string()));
    }
    Err(format!(
        "hash_on \"{s}\" must be header:NAME, cookie:NAME or client_ip"
    ))
}

/// Relative paths are taken from the config file's directory, not the
/// process's working directory, so a config means the same wherever it runs.
pub(crate) fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Pem {
    Certificate,
    PrivateKey,
}

/// Reads `path` now, so that a missing or wrong file fails `check` and a
/// reload instead of the first TLS handshake.
pub(crate) fn check_pem(path: &Path, kind: Pem) -> Result<(), String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().map(str::trim).any(|l| match kind {
        Pem::Certificate => l == "-----BEGIN CERTIFICATE-----",
        Pem::PrivateKey => l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----"),
    });
    if found {
        Ok(())
    } else {
        let want = match kind {
            Pem::Certificate => "-----BEGIN CERTIFICATE----- line",
            Pem::PrivateKey => "-----BEGIN ... PRIVATE KEY----- line",
        };
        Err(format!("\"{}\" has no {want}", path.display()))
    }
}
