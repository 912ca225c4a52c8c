//! What the watchdog of an HTTP/2 connection (served by hyper) knows about it: when it last read,
//! how many requests are in flight, and the response body that ends each request.
//!
//! hyper has no notion of "idle for so long without a request"; like nginx, the gateway closes a
//! connection whose preface does not arrive within `request_header_timeout` (from accept) and one
//! without requests for `idle_timeout` (from the end of the last response). HTTP/1.x connections
//! keep their clocks in their own loop (`server::http1`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    /// When the head of the next request started arriving; 0 when none is pending.
    head_since: AtomicU64,
    is_h2: AtomicBool,
    saw_first_read: AtomicBool,
}

/// What the watchdog should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; look again after this long.
    Wait(Duration),
    /// A request head has been arriving for longer than `request_header_timeout`.
    SlowHeaders,
    /// No request for longer than `idle_timeout`.
    Idle,
}

impl Activity {
    /// A new connection: the clock for its first request head starts now.
    pub fn new() -> Arc<Self> {
        let now = now_ms();
        Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            last_active: AtomicU64::new(now),
            head_since: AtomicU64::new(now),
            is_h2: AtomicBool::new(false),
            saw_first_read: AtomicBool::new(false),
        })
    }

    fn on_read(&self, first_bytes: &[u8]) {
        let now = now_ms();
        self.last_active.store(now, Ordering::Relaxed);
        if !self.saw_first_read.swap(true, Ordering::Relaxed) && first_bytes.starts_with(b"PRI ") {
            // HTTP/2 has frames, not heads; its streams are bounded by h2's own limits.
            self.is_h2.store(true, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now, Ordering::Relaxed);
        }
    }

    /// A request head was parsed; the guard ends the request when its response body is done.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// Requests whose responses are still being sent.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Decides whether the connection has been idle or slow for too long.
    pub fn verdict(&self, header_timeout: Duration, idle_timeout: Duration) -> Verdict {
        let now = now_ms();
        let recheck = header_timeout.min(idle_timeout);
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Verdict::Wait(recheck);
        }
        let head = self.head_since.load(Ordering::Relaxed);
        if head != 0 && !self.is_h2.load(Ordering::Relaxed) {
            let deadline = head + header_timeout.as_millis() as u64;
            return if now >= deadline {
                Verdict::SlowHeaders
            } else {
                Verdict::Wait(Duration::from_millis(deadline - now))
            };
        }
        let deadline = self.last_active.load(Ordering::Relaxed) + idle_timeout.as_millis() as u64;
        if now >= deadline {
            Verdict::Idle
        } else {
            Verdict::Wait(Duration::from_millis(deadline - now).min(recheck))
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
    completion: Completion,
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
            completion,
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
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.completion.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.completion.completed = true;
                }
            }
            Poll::Ready(None) => this.completion.completed = true,
            _ => {}
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
            this.activity.on_read(&buf.filled()[before..]);
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
        let (header, idle) = (Duration::from_millis(0), Duration::from_secs(60));
        // Nothing received yet: the first head's clock runs from accept.
        assert_eq!(a.verdict(header, idle), Verdict::SlowHeaders);
        let guard = a.request_started();
        assert!(matches!(a.verdict(header, idle), Verdict::Wait(_)));
        drop(guard);
        assert!(matches!(a.verdict(header, idle), Verdict::Wait(_)));
        assert_eq!(a.verdict(header, Duration::ZERO), Verdict::Idle);
        a.on_read(b"GET / HT");
        assert_eq!(a.verdict(header, idle), Verdict::SlowHeaders);

        let h2 = Activity::new();
        h2.on_read(b"PRI * HTTP/2.0\r\n");
        assert!(matches!(h2.verdict(header, idle), Verdict::Wait(_)));
    }
}
