//! Layer 4 test helpers: `tcp` and `tls` listener YAML for [`crate::Cfg`],
//! and client-side byte exchanges bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{indent, WAIT};

/// A `tcp` listener on `127.0.0.1:0` forwarding to `groups` (name,
/// weight), with more listener keys in `extra` (YAML, e.g. `timeouts`).
pub fn tcp_listener(name: &str, extra: &str, groups: &[(&str, u32)]) -> String {
    listener(name, "tcp", extra, groups)
}

/// A `tls` listener like [`tcp_listener`]; `extra` carries the `tls:` key.
pub fn tls_listener(name: &str, extra: &str, groups: &[(&str, u32)]) -> String {
    listener(name, "tls", extra, groups)
}

fn listener(name: &str, protocol: &str, extra: &str, groups: &[(&str, u32)]) -> String {
    let groups: Vec<String> = groups
        .iter()
        .map(|(g, w)| format!("{{ name: {g}, weight: {w} }}"))
        .collect();
    format!(
        "- name: {name}\n  bind: \"127.0.0.1:0\"\n  protocol: {protocol}\n{}  forward:\n    target_groups: [ {} ]\n",
        indent(extra, 2),
        groups.join(", ")
    )
}

/// The `tls:` key of a listener with these certificates (flow YAML from
/// [`crate::certs::Leaf::yaml`]), the first being the default.
pub fn tls_key(certificates: &[String]) -> String {
    format!("tls:\n  certificates: [ {} ]\n", certificates.join(", "))
}

/// Connects to `addr` (bounded by [`WAIT`]).
///
/// # Panics
///
/// If the connection cannot be made.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = match tokio::time::timeout(WAIT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => panic!("connect {addr}: {e}"),
        Err(_) => panic!("connect {addr}: timed out"),
    };
    let _ = stream.set_nodelay(true);
    stream
}

/// Writes `payload` and reads the same number of bytes back within
/// `within`; `Err` with what happened otherwise.
pub async fn round_trip<S>(
    stream: &mut S,
    payload: &[u8],
    within: Duration,
) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        stream
            .write_all(payload)
            .await
            .map_err(|e| format!("write: {e}"))?;
        stream.flush().await.map_err(|e| format!("flush: {e}"))?;
        let mut back = vec![0u8; payload.len()];
        stream
            .read_exact(&mut back)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(back)
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| format!("no echo within {within:?}"))?
}

/// Asserts that `payload` comes back unchanged on `stream`.
///
/// # Panics
///
/// If it does not within [`WAIT`].
pub async fn echo<S>(stream: &mut S, payload: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match round_trip(stream, payload, WAIT).await {
        Ok(back) => assert_eq!(back, payload, "echo differs"),
        Err(e) => panic!("echo of {} bytes: {e}", payload.len()),
    }
}

/// Waits for the peer to close `stream` (EOF or reset), discarding any
/// bytes. `Ok(elapsed)` once closed, `Err` if still open after `within`.
pub async fn closed_within<S>(stream: &mut S, within: Duration) -> Result<Duration, String>
where
    S: AsyncRead + Unpin,
{
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + within, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {within:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}
