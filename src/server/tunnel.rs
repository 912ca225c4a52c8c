//! The bytes of an upgraded connection (a WebSocket, say), copied both ways between the client
//! and the upstream until either side is done, over any pair of streams: plain TCP or TLS on
//! either side, the gateway's own HTTP/1.1 server or hyper's on the client's.
//!
//! A side that closes its sending half (EOF) has the other side's sending half shut in turn,
//! and the copy the other way goes on until that side closes too. When no byte moves either
//! way for the idle timeout, both are closed. Bytes that either side sent right after the heads
//! (read with them) go first.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed.
    Closed,
    /// No byte moved either way for the idle timeout.
    Idle,
    /// Reading or writing one side failed.
    Failed(io::Error),
}

/// What a tunnel carried, and how it ended.
#[derive(Debug)]
pub struct Carried {
    /// Bytes from the client to the upstream.
    pub to_upstream: u64,
    /// Bytes from the upstream to the client.
    pub to_client: u64,
    /// Why it ended.
    pub end: End,
}

/// Copies both ways between `client` and `upstream` (after what each already sent,
/// `client_read` and `upstream_read`) until both are closed, one fails, or nothing moves for
/// `idle_timeout`. Dropping the returned future closes nothing by itself: the caller drops the
/// streams.
pub async fn run<C, U>(
    client: C,
    client_read: Bytes,
    upstream: U,
    upstream_read: Bytes,
    idle_timeout: Duration,
) -> Carried
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    // Nanoseconds from `started` to the last byte read or written either way.
    let last = AtomicU64::new(0);
    let (to_upstream, to_client) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut client = Watched {
        inner: client,
        early: client_read,
        started,
        last: &last,
        read: &to_upstream,
    };
    let mut upstream = Watched {
        inner: upstream,
        early: upstream_read,
        started,
        last: &last,
        read: &to_client,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let idle = async {
        loop {
            let quiet_since = started + Duration::from_nanos(last.load(Ordering::Relaxed));
            let deadline = quiet_since + idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let end = tokio::select! {
        copied = copy => match copied {
            Ok(_) => End::Closed,
            Err(error) => End::Failed(error),
        },
        () = idle => End::Idle,
    };
    Carried {
        to_upstream: to_upstream.load(Ordering::Relaxed),
        to_client: to_client.load(Ordering::Relaxed),
        end,
    }
}

/// One side of a tunnel: its early bytes are read first, and every byte read or written moves
/// the idle clock.
struct Watched<'a, S> {
    inner: S,
    early: Bytes,
    started: Instant,
    last: &'a AtomicU64,
    /// Bytes read from this side.
    read: &'a AtomicU64,
}

impl<S> Watched<'_, S> {
    fn moved(&self) {
        let since = Instant::now().saturating_duration_since(self.started);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
        } else {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        }
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read.fetch_add(n as u64, Ordering::Relaxed);
            this.moved();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if n > 0 {
            this.moved();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn early_bytes_go_first_and_half_closes_pass_on() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let tunnel = tokio::spawn(run(
            client,
            Bytes::from_static(b"early-c "),
            upstream,
            Bytes::from_static(b"early-u "),
            Duration::from_secs(30),
        ));
        client_peer.write_all(b"hello").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"early-c hello");
        // The client's half-close reached the upstream; the other way still carries bytes.
        upstream_peer.write_all(b"bye").await.unwrap();
        upstream_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"early-u bye");
        let carried = tunnel.await.unwrap();
        assert!(matches!(carried.end, End::Closed), "{carried:?}");
        assert_eq!((carried.to_upstream, carried.to_client), (13, 11));
    }

    #[tokio::test]
    async fn silence_ends_it_and_traffic_keeps_it() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let idle = Duration::from_millis(400);
        let tunnel = tokio::spawn(run(client, Bytes::new(), upstream, Bytes::new(), idle));
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client_peer.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            upstream_peer.read_exact(&mut one).await.unwrap();
        }
        assert!(
            !tunnel.is_finished(),
            "traffic more often than the timeout keeps it open"
        );
        let carried = tokio::time::timeout(Duration::from_secs(20), tunnel)
            .await
            .expect("a silent tunnel ends")
            .unwrap();
        assert!(matches!(carried.end, End::Idle), "{carried:?}");
    }
}
