//! Copying one L4 connection's bytes both ways, with half-close and an
//! inactivity timeout.
//!
//! Design choices:
//! - Both directions are driven by one future in one task (as tokio's
//!   `copy_bidirectional`), so that aborting that task (a draining
//!   target's deadline) closes both sockets at once, and no lock or
//!   channel sits between the halves.
//! - Half-close: when one side sends EOF, the other side's write half is
//!   shut down (TLS: close_notify, then FIN) and the other direction goes
//!   on until it ends too. A TLS client that closes without close_notify
//!   counts as EOF, as every TLS terminator treats it.
//! - Inactivity: the timer is not reset per chunk. Progress stores a
//!   timestamp; only when the timer fires is the real deadline (last
//!   progress + idle) checked and the timer re-armed: one clock read per
//!   wake-up instead of a timer-wheel update per chunk.
//! - Buffers start small (8 KiB per direction, fine for a database's
//!   chatter with thousands of idle connections) and double up to 64 KiB
//!   while reads keep filling them (bulk transfers: fewer syscalls).
//! - Bytes are counted per chunk read into the metrics counters.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

const START_BUF: usize = 8 * 1024;
const MAX_BUF: usize = 64 * 1024;

/// How a copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides sent EOF and every byte was delivered.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
}

/// One direction: read from one side, write to the other.
struct Pipe {
    buf: Vec<u8>,
    pos: usize,
    cap: usize,
    eof: bool,
    done: bool,
    need_flush: bool,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: vec![0; START_BUF],
            pos: 0,
            cap: 0,
            eof: false,
            done: false,
            need_flush: false,
        }
    }

    /// Moves bytes until the reader has nothing more for now (`Pending`)
    /// or has ended and the writer is shut down (`Ready(Ok)`). Sets
    /// `moved` when any byte was read or written.
    fn poll_pipe<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        counter: &Counter,
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.cap && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            counter.increment(n as u64);
                            *moved = true;
                            self.pos = 0;
                            self.cap = n;
                        }
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.eof = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing more to read for now: push out what was
                        // written (TLS buffers records until flushed).
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.need_flush = true;
                *moved = true;
            }
            if self.eof {
                // Shutdown flushes first.
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                self.buf = Vec::new();
                return Poll::Ready(Ok(()));
            }
            if self.cap == self.buf.len() && self.buf.len() < MAX_BUF {
                // The last read filled the buffer: a bulk transfer.
                self.buf = vec![0; self.buf.len() * 2];
            }
        }
    }
}

/// Relays an L4 connection: `splice(2)` when the client is plain TCP
/// (Linux), else (TLS, or another OS) `copy_both`. Splicing halved the
/// proxy's CPU per GB in `benches/compare.sh`'s tcp scenario (0.38 ->
/// 0.20 s/GB, 2026-11-21).
pub async fn relay<C>(
    client: &mut C,
    upstream: &mut TcpStream,
    idle: Duration,
    rx: &Counter,
    tx: &Counter,
) -> io::Result<Ended>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    #[cfg(target_os = "linux")]
    if let Some(tcp) = (client as &mut dyn std::any::Any).downcast_mut::<TcpStream>() {
        match crate::tcp_splice::Splicer::new() {
            Ok(splicer) => return splicer.run(tcp, upstream, idle, rx, tx).await,
            // Out of file descriptors for the pipes: copy instead.
            Err(e) => tracing::debug!(error = %e, "no pipe for splice: copying"),
        }
    }
    copy_both(client, upstream, idle, rx, tx).await
}

/// Copies `client` -> `upstream` (counted in `rx`) and `upstream` ->
/// `client` (counted in `tx`) until both directions have ended, or until
/// nothing moved either way for `idle`. An I/O error on either side ends
/// both. The streams are left to the caller to drop (which closes them).
pub async fn copy_both<C, U>(
    client: &mut C,
    upstream: &mut U,
    idle: Duration,
    rx: &Counter,
    tx: &Counter,
) -> io::Result<Ended>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Pipe::new();
    let mut down = Pipe::new();
    drive(idle, |cx, moved| {
        if !up.done {
            let (c, u) = (Pin::new(&mut *client), Pin::new(&mut *upstream));
            if let Poll::Ready(r) = up.poll_pipe(cx, c, u, rx, moved) {
                r?;
            }
        }
        if !down.done {
            let (u, c) = (Pin::new(&mut *upstream), Pin::new(&mut *client));
            if let Poll::Ready(r) = down.poll_pipe(cx, u, c, tx, moved) {
                r?;
            }
        }
        Ok(up.done && down.done)
    })
    .await
}

/// Runs a relay: `step` moves what it can both ways, sets `moved` when a
/// byte moved and says whether both directions have ended; in between,
/// the inactivity timer (shared by the copy and the splice relays).
pub(crate) async fn drive<F>(idle: Duration, mut step: F) -> io::Result<Ended>
where
    F: FnMut(&mut Context<'_>, &mut bool) -> io::Result<bool>,
{
    let mut last = Instant::now();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    std::future::poll_fn(|cx| {
        let mut moved = false;
        if step(cx, &mut moved)? {
            return Poll::Ready(Ok(Ended::Closed));
        }
        if moved {
            last = Instant::now();
        }
        poll_idle(cx, timer.as_mut(), last, idle)
    })
    .await
}

/// `Ready(Idle)` once `idle` has passed since `last`; otherwise re-arms
/// the timer for the real deadline.
fn poll_idle(
    cx: &mut Context<'_>,
    mut timer: Pin<&mut Sleep>,
    last: Instant,
    idle: Duration,
) -> Poll<io::Result<Ended>> {
    while timer.as_mut().poll(cx).is_ready() {
        // An idle timeout too large to add is no timeout.
        let Some(deadline) = last.checked_add(idle) else {
            return Poll::Pending;
        };
        if Instant::now() >= deadline {
            return Poll::Ready(Ok(Ended::Idle));
        }
        timer.as_mut().reset(deadline);
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn counters() -> (Counter, Counter) {
        (Counter::noop(), Counter::noop())
    }

    #[tokio::test]
    async fn copies_both_ways_and_half_closes() {
        let (mut client, mut lb_client) = tokio::io::duplex(1024);
        let (mut lb_upstream, mut upstream) = tokio::io::duplex(1024);
        let (rx, tx) = counters();
        let copy = tokio::spawn(async move {
            copy_both(
                &mut lb_client,
                &mut lb_upstream,
                Duration::from_secs(5),
                &rx,
                &tx,
            )
            .await
        });
        // More than one buffer's worth each way.
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
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
        assert_eq!(got, data, "client -> upstream, then EOF");
        // The upstream answers after the client's EOF: half-close.
        upstream.write_all(b"late answer").await.unwrap();
        upstream.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"late answer");
        assert_eq!(copy.await.unwrap().unwrap(), Ended::Closed);
    }

    #[tokio::test]
    async fn idle_ends_the_copy_but_traffic_keeps_it_alive() {
        let (mut client, mut lb_client) = tokio::io::duplex(1024);
        let (mut lb_upstream, mut upstream) = tokio::io::duplex(1024);
        let (rx, tx) = counters();
        let idle = Duration::from_millis(300);
        let copy = tokio::spawn(async move {
            copy_both(&mut lb_client, &mut lb_upstream, idle, &rx, &tx).await
        });
        // Traffic every 150ms keeps it open past several idle periods.
        let mut buf = [0u8; 1];
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"x").await.unwrap();
            upstream.read_exact(&mut buf).await.unwrap();
        }
        assert!(!copy.is_finished(), "closed while traffic flowed");
        let quiet = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), copy)
            .await
            .expect("idle timeout never fired")
            .unwrap()
            .unwrap();
        assert_eq!(ended, Ended::Idle);
        let took = quiet.elapsed();
        // Timer resolution is 1ms; a loaded machine adds some.
        assert!(took <= Duration::from_millis(450), "{took:?}");
        assert!(took >= Duration::from_millis(100), "{took:?}");
    }
}
