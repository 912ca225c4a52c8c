//! The streams of one HTTP/2 connection, polled inside the connection's own task.
//!
//! hyper hands each stream's future to an executor. Spawning each as a tokio task costs a task
//! allocation, its scheduling and its join handle per request, and puts the stream's state far
//! from its connection's. Here the executor only queues the future; the task that drives the
//! connection polls the queued streams in the same poll, each with its own waker
//! ([`FuturesUnordered`]), so a stream waiting on its upstream still makes progress while the
//! connection itself has nothing to do, and is polled only when it was woken.
//!
//! A panic in one stream is contained to that stream, as it was when each stream was a task of
//! its own: the stream is dropped (h2 resets it) and the connection's other streams carry on.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt as _};

use crate::observability::panics;

/// A stream's future, boxed: hyper's stream future holds the whole request pipeline inline
/// (kilobytes), which would otherwise be moved into the set's node.
type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor handed to hyper for one connection: it queues the connection's new streams for
/// that connection's [`Streams`].
#[derive(Clone)]
pub(super) struct StreamExecutor {
    inbox: Arc<Mutex<Vec<StreamFuture>>>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        // Only the connection's task calls this: the connection's poll starts streams, a
        // stream's poll starts the data pump of an extended CONNECT tunnel. [`Streams::poll`]
        // follows both and takes the new future in, so no wake-up is needed here.
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(future));
    }
}

/// The running streams of one connection, polled by the task that drives it.
pub(super) struct Streams {
    inbox: Arc<Mutex<Vec<StreamFuture>>>,
    running: FuturesUnordered<Contained>,
}

impl Streams {
    /// An empty set and the executor that feeds it.
    pub(super) fn new() -> (Self, StreamExecutor) {
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let executor = StreamExecutor {
            inbox: Arc::clone(&inbox),
        };
        let streams = Streams {
            inbox,
            running: FuturesUnordered::new(),
        };
        (streams, executor)
    }

    /// Takes in the futures started since the last call; false if there were none.
    fn admit(&mut self) -> bool {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        if inbox.is_empty() {
            return false;
        }
        for future in inbox.drain(..) {
            self.running.push(Contained(Some(future)));
        }
        true
    }

    /// Takes in new streams and polls those that were woken (and the new ones) until none is
    /// ready; `cx`'s waker is woken when one of them can go on. Call it after each poll of the
    /// connection.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) {
        self.admit();
        loop {
            while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
            // A stream may have started another future (a tunnel's data pump) meanwhile.
            if !self.admit() {
                return;
            }
        }
    }

    /// Whether no stream is running.
    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

/// A stream's future that ends, instead of unwinding into its connection, when it panics.
struct Contained(Option<StreamFuture>);

impl Future for Contained {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(future) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        // Marked as serving, so the panic hook logs and counts the panic instead of aborting.
        let polled =
            panics::serving(|| catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))));
        match polled {
            Ok(poll) => poll,
            Err(_) => {
                // Dropped now, like a panicked task's future: h2 resets the stream. Its drop
                // may panic too; that is contained the same way.
                let future = self.0.take();
                let _ = panics::serving(|| catch_unwind(AssertUnwindSafe(|| drop(future))));
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::test_support::CountingWaker;

    #[test]
    fn a_panicking_stream_ends_alone_and_the_others_go_on() {
        let (mut streams, executor) = Streams::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        executor.execute(async { panic!("stream bug") });
        let waiting = Arc::clone(&finished);
        executor.execute(async move {
            let _ = rx.await;
            waiting.fetch_add(1, Ordering::SeqCst);
        });
        let (task, waker) = CountingWaker::pair();
        let mut cx = Context::from_waker(&waker);

        streams.poll(&mut cx);
        // The panicked stream is gone; the other waits, not woken yet.
        assert_eq!(streams.running.len(), 1);
        assert_eq!(finished.load(Ordering::SeqCst), 0);

        // Its wake-up reaches the connection's task, and the next poll finishes it.
        let wakes = task.0.load(Ordering::SeqCst);
        tx.send(()).unwrap();
        assert!(task.0.load(Ordering::SeqCst) > wakes);
        streams.poll(&mut cx);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert!(streams.is_empty());
    }

    #[test]
    fn a_future_started_by_a_stream_runs_in_the_same_poll() {
        let (mut streams, executor) = Streams::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let pump_ran = Arc::clone(&ran);
        let inner = executor.clone();
        executor.execute(async move {
            // As hyper does for an extended CONNECT's data pump.
            inner.execute(async move {
                pump_ran.fetch_add(1, Ordering::SeqCst);
            });
        });
        let (_task, waker) = CountingWaker::pair();
        streams.poll(&mut Context::from_waker(&waker));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert!(streams.is_empty());
    }
}
