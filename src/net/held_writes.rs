//! Writes held until the worker has run its current round of tasks.
//!
//! A worker that writes each answer the moment it is ready spreads its writes over the whole
//! round, so a peer that reads quickly (a client, a load generator, an upstream) goes back to
//! sleep between them and is woken once per write: a wake-up across cores that the kernel charges
//! to the writer, and a context switch for the reader. Held until the round is over, the writes of
//! one round leave back to back, and a peer woken by the first finds the others. Measured over
//! h2c, one worker (bench/RESULTS.md): the client slept 5-11 times less often, the origin 2-4
//! times less, and the worker spent 10-20% less CPU per request.
//!
//! A round is what tokio's current-thread scheduler runs between two looks at its sockets: the
//! tasks that are ready, then the socket events (epoll), then the tasks that asked to be woken
//! after the round (the mechanism behind `tokio::task::yield_now`). Under load the writes of a
//! round leave together, after the next look at the sockets has found more work; an idle
//! gateway pays one more `epoll_wait` and one more poll per answer (about a microsecond). Waking
//! the task at once instead (back of the queue, no look at the sockets) was cheaper when idle but
//! batched less under load: bench/RESULTS.md. Outside a runtime the wake-up is immediate, so
//! nothing waits for a round that never ends.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A write at least this long goes out at once (after what is held): it is a system call's worth
/// already, and holding it would mean copying it.
pub const HOLD_BELOW: usize = 16 << 10;

/// A hold buffer that grew past this is given back once written, so an idle connection keeps
/// at most this much.
pub const KEEP_AT_MOST: usize = 4 << 10;

/// Asks for the current task to be polled again once the worker has run the rest of its round
/// and looked at its sockets, rather than right away.
pub fn wake_after_round(cx: &mut Context<'_>) {
    let mut yielded = pin!(tokio::task::yield_now());
    // Its first poll registers the deferred wake-up and is always pending.
    let _ = yielded.as_mut().poll(cx);
}

/// A stream whose short writes are held, and written together when a flush is asked for after
/// the round is over. Reads pass through.
#[derive(Debug)]
pub struct HeldWrites<T> {
    inner: T,
    held: Vec<u8>,
    /// How much of `held` is written already.
    written: usize,
    /// A flush was asked for and put off to the end of the round.
    flush_put_off: bool,
}

impl<T> HeldWrites<T> {
    /// Holds the short writes to `inner`.
    pub fn new(inner: T) -> Self {
        HeldWrites {
            inner,
            held: Vec::new(),
            written: 0,
            flush_put_off: false,
        }
    }

    fn holds_something(&self) -> bool {
        self.written < self.held.len()
    }
}

impl<T: AsyncWrite + Unpin> HeldWrites<T> {
    /// Writes everything held, or waits until the stream takes more.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.holds_something() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.held.capacity() > KEEP_AT_MOST {
            self.held = Vec::new();
        } else {
            self.held.clear();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeldWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeldWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs
            .iter()
            .fold(0usize, |sum, b| sum.saturating_add(b.len()));
        if this.held.len().saturating_add(len) >= HOLD_BELOW {
            ready!(this.poll_write_held(cx))?;
            if len >= HOLD_BELOW {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.holds_something() {
            if !this.flush_put_off {
                this.flush_put_off = true;
                wake_after_round(cx);
                return Poll::Pending;
            }
            ready!(this.poll_write_held(cx))?;
        }
        this.flush_put_off = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
