//! A light HTTP/1.1 request-framing tracker over the raw client bytes.
//!
//! It tells the connection guard whether a request head is partly
//! received, for the header-read timeout. To know where heads start it
//! follows each request's framing (head, then fixed or chunked body), and
//! so it also sees `Content-Length` and `Transfer-Encoding` in one head,
//! the classic smuggling probe. Our server (`h1_server`) refuses those
//! itself; this tracker's flag, which the service also turns into 400 +
//! close, is a second, independent check of the same rule.
//!
//! When anything looks unusual (HTTP/2 preface, CONNECT, Upgrade, a line it
//! cannot follow) it stops tracking for the rest of the connection: the
//! server still parses and rejects malformed input itself.

/// Bytes of each header line kept for inspection; names we care about and
/// their values fit easily.
const LINE_KEEP: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size line (and ignoring extensions) up to LF.
    Size { value: u64, digits: u8, ext: bool },
    /// Skipping `remaining` data bytes.
    Data(u64),
    /// Skipping the CRLF after data, up to LF.
    DataEnd,
    /// Trailer lines after the last chunk; `empty` = line so far is empty.
    Trailer { empty: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Fixed(u64),
    Chunked(Chunk),
    /// Not tracking any more.
    Off,
}

#[derive(Debug)]
pub struct Framing {
    state: State,
    line: [u8; LINE_KEEP],
    line_len: usize,
    line_overflow: bool,
    /// Bytes of the current head seen so far (0 = between requests).
    head_bytes: usize,
    request_line_seen: bool,
    cl: Option<u64>,
    te: bool,
    te_chunked: bool,
    upgrade: bool,
    /// Set once a head had both Content-Length and Transfer-Encoding.
    pub smuggling: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            state: State::Head,
            line: [0; LINE_KEEP],
            line_len: 0,
            line_overflow: false,
            head_bytes: 0,
            request_line_seen: false,
            cl: None,
            te: false,
            te_chunked: false,
            upgrade: false,
            smuggling: false,
        }
    }
}

impl Framing {
    /// True while part of a request head has arrived but not all of it.
    pub fn head_in_progress(&self) -> bool {
        self.state == State::Head && self.head_bytes > 0
    }

    /// True once tracking stopped (h2, upgrade, or confusion).
    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Feeds bytes read from the client, in order.
    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match self.state {
                State::Off => return,
                State::Head => {
                    let nl = buf.iter().position(|&b| b == b'\n');
                    let take = nl.map_or(buf.len(), |i| i + 1);
                    self.head_bytes += take;
                    let part = &buf[..nl.unwrap_or(buf.len())];
                    self.keep(part);
                    buf = &buf[take..];
                    if nl.is_some() {
                        self.end_of_line();
                    }
                }
                State::Fixed(n) => {
                    let skip = (buf.len() as u64).min(n);
                    buf = &buf[skip as usize..];
                    self.state = if n == skip {
                        State::Head
                    } else {
                        State::Fixed(n - skip)
                    };
                }
                State::Chunked(c) => {
                    buf = self.chunked(c, buf);
                }
            }
        }
    }

    fn keep(&mut self, part: &[u8]) {
        let room = LINE_KEEP - self.line_len;
        let n = part.len().min(room);
        self.line[self.line_len..self.line_len + n].copy_from_slice(&part[..n]);
        self.line_len += n;
        if part.len() > n {
            self.line_overflow = true;
        }
    }

    fn end_of_line(&mut self) {
        let mut len = self.line_len;
        if len > 0 && self.line[len - 1] == b'\r' {
            len -= 1;
        }
        let overflow = self.line_overflow;
        self.line_len = 0;
        self.line_overflow = false;
        if len == 0 && !overflow {
            if !self.request_line_seen {
                // Stray CRLF before a request line is tolerated (RFC 9112 2.2).
                self.head_bytes = 0;
                return;
            }
            self.end_of_head();
            return;
        }
        let line = self.line;
        let line = &line[..len];
        if !self.request_line_seen {
            self.request_line_seen = true;
            if line.starts_with(b"PRI ") || line.starts_with(b"CONNECT ") {
                self.state = State::Off;
            }
            return;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Obsolete line folding: hyper rejects it; stop following.
            self.state = State::Off;
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            self.state = State::Off;
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            if overflow {
                self.state = State::Off;
                return;
            }
            match parse_decimal(value) {
                Some(n) if self.cl.is_none_or(|prev| prev == n) => self.cl = Some(n),
                _ => self.state = State::Off,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.te = true;
            // The last coding decides; a long list we cannot see whole is
            // judged by hyper.
            self.te_chunked = !overflow && last_token_is_chunked(value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
    }

    fn end_of_head(&mut self) {
        let (cl, te, chunked, upgrade) = (self.cl, self.te, self.te_chunked, self.upgrade);
        self.head_bytes = 0;
        self.request_line_seen = false;
        self.cl = None;
        self.te = false;
        self.te_chunked = false;
        self.upgrade = false;
        self.state = if te && cl.is_some() {
            self.smuggling = true;
            State::Off
        } else if upgrade || (te && !chunked) {
            State::Off
        } else if te {
            State::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
                ext: false,
            })
        } else {
            match cl {
                Some(n) if n > 0 => State::Fixed(n),
                _ => State::Head,
            }
        };
    }

    fn chunked<'a>(&mut self, c: Chunk, buf: &'a [u8]) -> &'a [u8] {
        match c {
            Chunk::Data(n) => {
                let skip = (buf.len() as u64).min(n);
                self.state = State::Chunked(if n == skip {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(n - skip)
                });
                &buf[skip as usize..]
            }
            Chunk::DataEnd => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.state = State::Chunked(Chunk::Size {
                        value: 0,
                        digits: 0,
                        ext: false,
                    });
                    &buf[i + 1..]
                }
                None => &[],
            },
            Chunk::Size {
                mut value,
                mut digits,
                mut ext,
            } => {
                for (i, &b) in buf.iter().enumerate() {
                    if b == b'\n' {
                        self.state = State::Chunked(if digits == 0 {
                            // Not a chunk size: let hyper reject it.
                            self.state = State::Off;
                            return &[];
                        } else if value == 0 {
                            Chunk::Trailer { empty: true }
                        } else {
                            Chunk::Data(value)
                        });
                        return &buf[i + 1..];
                    }
                    if ext || b == b'\r' {
                        continue;
                    }
                    if b == b';' || b == b' ' || b == b'\t' {
                        ext = true;
                        continue;
                    }
                    let Some(d) = (b as char).to_digit(16) else {
                        self.state = State::Off;
                        return &[];
                    };
                    if digits >= 15 {
                        self.state = State::Off;
                        return &[];
                    }
                    value = value * 16 + u64::from(d);
                    digits += 1;
                }
                self.state = State::Chunked(Chunk::Size { value, digits, ext });
                &[]
            }
            Chunk::Trailer { mut empty } => {
                for (i, &b) in buf.iter().enumerate() {
                    match b {
                        b'\n' if empty => {
                            self.state = State::Head;
                            return &buf[i + 1..];
                        }
                        b'\n' => empty = true,
                        b'\r' => {}
                        _ => empty = false,
                    }
                }
                self.state = State::Chunked(Chunk::Trailer { empty });
                &[]
            }
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn last_token_is_chunked(v: &[u8]) -> bool {
    let last = v.rsplit(|&b| b == b',').next().map(trim).unwrap_or(&[]);
    last.eq_ignore_ascii_case(b"chunked")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(parts: &[&[u8]]) -> Framing {
        let mut f = Framing::default();
        for p in parts {
            f.feed(p);
        }
        f
    }

    #[test]
    fn cl_and_te_together_are_flagged_in_either_order() {
        let a = fed(&[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"]);
        assert!(a.smuggling);
        let b =
            fed(&[b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n"]);
        assert!(b.smuggling);
    }

    #[test]
    fn flagged_even_when_split_byte_by_byte() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut f = Framing::default();
        for b in req.iter() {
            f.feed(std::slice::from_ref(b));
        }
        assert!(f.smuggling);
    }

    #[test]
    fn keep_alive_sequence_with_bodies_is_followed() {
        let mut f = Framing::default();
        f.feed(b"POST /a HTTP/1.1\r\nContent-Length: 30\r\n\r\n");
        assert!(!f.head_in_progress());
        // A body that *looks like* a smuggling head must not be read as one.
        f.feed(b"Transfer-Encoding: chunked\r\n\r\n");
        assert!(!f.smuggling);
        f.feed(b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        f.feed(b"1e\r\nContent-Length: 5\r\n\r\nxxxxxxxxx\r\n0\r\n\r\n");
        assert!(!f.smuggling);
        f.feed(b"GET /c HTTP/1.1\r\nHo");
        assert!(f.head_in_progress());
        f.feed(b"st: x\r\n\r\n");
        assert!(!f.head_in_progress());
        assert!(!f.is_off());
        f.feed(b"POST /d HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(f.smuggling);
    }

    #[test]
    fn chunked_with_trailers_and_extensions() {
        let mut f = Framing::default();
        f.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        f.feed(b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n");
        f.feed(b"GET / HTTP/1.1\r\n");
        assert!(f.head_in_progress());
        assert!(!f.is_off());
    }

    #[test]
    fn h2_preface_and_upgrade_stop_tracking() {
        assert!(fed(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).is_off());
        assert!(fed(&[b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"]).is_off());
    }
}
