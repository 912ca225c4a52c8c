//! What the watchdog of an HTTP/2 connection (served by hyper) knows about it: when it last read,
//! how many requests are in flight, and the response body that ends each request.
//!
//! hyper has no notion of "idle for so long without a request"; like nginx, the gateway closes an
//! HTTP/2 connection without requests for `idle_timeout` (from the end of the last response).
//! `request_header_timeout` bounds the wait for its first bytes, which say it is HTTP/2
//! (`server::http1`), or for its TLS handshake; after that HTTP/2 has frames, not heads, and its
//! streams are bounded by h2's own limits. HTTP/1.x connections keep their clocks in their own
//! loop.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::observability::access_log::Completion;

/// Milliseconds since the first call, as a cheap monotonic clock shared through atomics.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What the connection watchdog needs to know, updated by reads and by the request path.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicU32,
    last_active: AtomicU64,
}

/// What the watchdog should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; look again after this long.
    Wait(Duration),
    /// No request for longer than `idle_timeout`.
    Idle,
}

impl Activity {
    /// A new connection, active as of now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            last_active: AtomicU64::new(now_ms()),
        })
    }

    fn on_read(&self) {
        self.last_active.store(now_ms(), Ordering::Relaxed);
    }

    /// A request started; the guard ends it when its response body is done.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// Decides whether the connection has been idle for too long.
    pub fn verdict(&self, idle_timeout: Duration) -> Verdict {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Verdict::Wait(idle_timeout);
        }
        let now = now_ms();
        let deadline = self.last_active.load(Ordering::Relaxed) + idle_timeout.as_millis() as u64;
        if now >= deadline {
            Verdict::Idle
        } else {
            Verdict::Wait(Duration::from_millis(deadline - now))
        }
    }
}

/// Marks one request as finished when dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.last_active.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its request (for the idle clock, metrics and the access log) when
/// fully sent or dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    /// `None` for a `101` head, whose accounting goes on with its tunnel.
    completion: Option<Completion>,
    _guard: RequestGuard,
}

impl<B> TrackedBody<B> {
    /// Wraps `inner`, holding `guard` and `completion` until the body is gone.
    pub fn new(inner: B, guard: RequestGuard, mut completion: Completion) -> Self
    where
        B: Body,
    {
        // hyper never polls a body that is empty from the start.
        completion.completed = inner.is_end_stream();
        TrackedBody {
            inner,
            completion: Some(completion),
            _guard: guard,
        }
    }

    /// Wraps `inner` holding only `guard`: the request is accounted for elsewhere.
    pub fn without_completion(inner: B, guard: RequestGuard) -> Self {
        TrackedBody {
            inner,
            completion: None,
            _guard: guard,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(completion) = this.completion.as_mut() else {
            return polled;
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    completion.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    completion.completed = true;
                }
            }
            Poll::Ready(None) => completion.completed = true,
            Poll::Ready(Some(Err(_))) => completion.body_failed(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that reports reads to its connection's `Activity`, and first replays bytes that
/// were read from it before (to tell its protocol).
#[derive(Debug)]
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    replay: Bytes,
}

impl<T> TrackedIo<T> {
    /// Wraps a socket from which `already_read` was read.
    pub fn new(inner: T, already_read: Bytes, activity: Arc<Activity>) -> Self {
        TrackedIo {
            inner,
            activity,
            replay: already_read,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = if this.replay.is_empty() {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            Poll::Ready(Ok(()))
        };
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let a = Activity::new();
        let idle = Duration::from_secs(60);
        assert!(matches!(a.verdict(idle), Verdict::Wait(_)));
        let guard = a.request_started();
        // A request in flight is never idle, however long it takes.
        assert!(matches!(a.verdict(Duration::ZERO), Verdict::Wait(_)));
        drop(guard);
        assert!(matches!(a.verdict(idle), Verdict::Wait(_)));
        assert_eq!(a.verdict(Duration::ZERO), Verdict::Idle);
        a.on_read();
        assert!(matches!(a.verdict(idle), Verdict::Wait(_)));
    }
}
