//! Ephemeral loopback ports, so no test hard-codes a port number.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};

/// Returns a TCP port on `127.0.0.1` that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0`, reading the port the kernel
/// chose and dropping the listener. There is a small race: another process
/// (or another test in this one) may take the port before the caller binds
/// it. Prefer binding `:0` yourself and reading the address back whenever
/// the code under test allows it; use this only when a port must be written
/// into a config before anything listens on it.
///
/// # Panics
///
/// If binding an ephemeral loopback port fails (the machine is out of ports
/// or file descriptors), which no test can recover from.
pub fn free_port() -> u16 {
    match StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("testkit: cannot bind an ephemeral port on 127.0.0.1: {e}"),
    }
}

/// Returns an address on `127.0.0.1` where nothing listens, so connecting to
/// it is refused (a dead upstream).
///
/// Same method and same small race as [`free_port`]: the port is bound,
/// read and released, so it is very likely, not certain, to stay unused.
///
/// # Panics
///
/// If binding an ephemeral loopback port fails.
pub async fn refused_addr() -> SocketAddr {
    match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .and_then(|l| l.local_addr())
    {
        Ok(addr) => addr,
        Err(e) => panic!("testkit: cannot bind an ephemeral port on 127.0.0.1: {e}"),
    }
}
