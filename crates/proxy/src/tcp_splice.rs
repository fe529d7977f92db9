//! Zero-copy relay between two plain TCP sockets with `splice(2)`.
//!
//! A `tcp` listener (no TLS) copies bytes the kernel already holds: with
//! `read`/`write` every byte crosses into user space and back. `splice`
//! moves socket pages into a pipe and from the pipe into the other socket
//! without touching them, which is most of the CPU a bulk L4 relay spends
//! (how HAProxy's `option splice-*` and Envoy's io_uring paths save it).
//!
//! Same contract as `tcp_copy::copy_both` (half-close, inactivity timer,
//! byte counters, both directions in one future so one abort closes
//! both); the callers pick this one when both sides are plain TCP.
//!
//! Readiness: each splice runs inside `TcpStream::try_io`, so a
//! `WouldBlock` clears tokio's readiness for that socket and the next
//! `poll_*_ready` registers the waker. A pipe is only filled when empty
//! (and with at most its capacity), so the pipe end can never be the
//! reason for a `WouldBlock` that tokio would blame on the socket.

use std::io;
use std::os::fd::OwnedFd;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use metrics::Counter;
use rustix::net::Shutdown;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::tcp_copy::{drive, Ended};

/// Bytes moved per splice call: the default pipe capacity (16 pages).
/// Larger pipes were no faster on loopback and pin more kernel memory.
const CHUNK: usize = 64 * 1024;

/// One direction's pipe and state.
struct Direction {
    read_end: OwnedFd,
    write_end: OwnedFd,
    /// Bytes in the pipe, not yet spliced to the destination.
    in_pipe: usize,
    eof: bool,
    done: bool,
}

impl Direction {
    fn new() -> io::Result<Direction> {
        let (read_end, write_end) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Direction {
            read_end,
            write_end,
            in_pipe: 0,
            eof: false,
            done: false,
        })
    }

    /// Moves bytes `src` -> `dst` until `src` has nothing more for now
    /// (`Pending`) or has ended and `dst`'s write half is shut down
    /// (`Ready(Ok)`). Sets `moved` when any byte moved.
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        counter: &Counter,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        loop {
            while self.in_pipe > 0 {
                ready!(dst.poll_write_ready(cx))?;
                let n = match dst.try_io(Interest::WRITABLE, || {
                    rustix::pipe::splice(&self.read_end, None, dst, None, self.in_pipe, flags)
                        .map_err(io::Error::from)
                }) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                self.in_pipe -= n;
                *moved = true;
            }
            if self.eof {
                rustix::net::shutdown(dst, Shutdown::Write).map_err(io::Error::from)?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            ready!(src.poll_read_ready(cx))?;
            match src.try_io(Interest::READABLE, || {
                rustix::pipe::splice(src, None, &self.write_end, None, CHUNK, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    counter.increment(n as u64);
                    self.in_pipe = n;
                    *moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// The two pipes of one relay, made before anything moves so that a
/// process out of file descriptors falls back to copying.
pub struct Splicer {
    up: Direction,
    down: Direction,
}

impl Splicer {
    pub fn new() -> io::Result<Splicer> {
        Ok(Splicer {
            up: Direction::new()?,
            down: Direction::new()?,
        })
    }

    /// Relays `client` -> `upstream` (counted in `rx`) and back (counted
    /// in `tx`) until both directions have ended, or nothing moved for
    /// `idle`. An I/O error on either side ends both.
    pub async fn run(
        self,
        client: &TcpStream,
        upstream: &TcpStream,
        idle: Duration,
        rx: &Counter,
        tx: &Counter,
    ) -> io::Result<Ended> {
        let Splicer { mut up, mut down } = self;
        drive(idle, |cx, moved| {
            if !up.done {
                if let Poll::Ready(r) = up.poll_move(cx, client, upstream, rx, moved) {
                    r?;
                }
            }
            if !down.done {
                if let Poll::Ready(r) = down.poll_move(cx, upstream, client, tx, moved) {
                    r?;
                }
            }
            Ok(up.done && down.done)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected loopback pair: (our end, the peer's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// The relay between the balancer's two sockets, on a task.
    fn spawn_splice(
        lb_client: TcpStream,
        lb_upstream: TcpStream,
        idle: Duration,
    ) -> tokio::task::JoinHandle<std::io::Result<Ended>> {
        tokio::spawn(async move {
            let (rx, tx) = (Counter::noop(), Counter::noop());
            Splicer::new()
                .unwrap()
                .run(&lb_client, &lb_upstream, idle, &rx, &tx)
                .await
        })
    }

    #[tokio::test]
    async fn splices_both_ways_and_half_closes() {
        let (mut client, lb_client) = pair().await;
        let (lb_upstream, mut upstream) = pair().await;
        let copy = spawn_splice(lb_client, lb_upstream, Duration::from_secs(5));
        // Several pipes' worth.
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "client -> upstream bytes differ");
        // The upstream answers after the client's EOF: half-close.
        upstream.write_all(b"late answer").await.unwrap();
        upstream.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"late answer");
        assert_eq!(copy.await.unwrap().unwrap(), Ended::Closed);
    }

    #[tokio::test]
    async fn idle_ends_the_splice() {
        let (mut client, lb_client) = pair().await;
        let (lb_upstream, mut upstream) = pair().await;
        let copy = spawn_splice(lb_client, lb_upstream, Duration::from_millis(300));
        client.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        upstream.read_exact(&mut buf).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), copy)
            .await
            .expect("idle timeout never fired")
            .unwrap()
            .unwrap();
        assert_eq!(ended, Ended::Idle);
    }

    #[tokio::test]
    async fn a_reset_upstream_ends_the_splice_with_an_error_or_eof() {
        let (mut client, lb_client) = pair().await;
        let (lb_upstream, upstream) = pair().await;
        let copy = spawn_splice(lb_client, lb_upstream, Duration::from_secs(5));
        drop(upstream);
        client.shutdown().await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), copy)
            .await
            .expect("the relay outlived both peers")
            .unwrap();
        // A close is EOF then (on the write) a reset: either ends it.
        assert!(matches!(ended, Ok(Ended::Closed) | Err(_)), "{ended:?}");
    }
}
