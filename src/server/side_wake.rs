//! Waking a connection task for its side futures without polling them on every wake-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Lets a connection task poll its rarely-ready side futures (the phase watch and the
/// watchdog) only after they woke it, instead of on every wake-up of the connection. Polling
/// the watch takes a mutex that every connection of the gateway shares, which on every request
/// would bounce between the worker threads' caches.
pub(super) struct SideWake {
    inner: Arc<SideWakeInner>,
    waker: Waker,
}

struct SideWakeInner {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for SideWakeInner {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl SideWake {
    /// A side waker that asks for one poll of the side futures first.
    pub(super) fn new() -> Self {
        let inner = Arc::new(SideWakeInner {
            woken: AtomicBool::new(true),
            task: futures_util::task::AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&inner));
        SideWake { inner, waker }
    }

    /// New or reset side futures must be polled once to register their wakers.
    pub(super) fn rearm(&self) {
        self.inner.woken.store(true, Ordering::Release);
    }

    /// Runs `poll_side` with a context that wakes this task through the side waker, if the
    /// side waker fired since the last time.
    pub(super) fn poll_if_woken<T>(
        &self,
        cx: &mut Context<'_>,
        poll_side: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.inner.task.register(cx.waker());
        if !self.inner.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        poll_side(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::CountingWaker;

    #[test]
    fn side_futures_are_polled_only_after_they_woke_the_task() {
        let (task, task_waker) = CountingWaker::pair();
        let mut cx = Context::from_waker(&task_waker);
        let side = SideWake::new();
        let polls = std::cell::Cell::new(0);
        let registered = std::cell::RefCell::new(None);
        let poll = |cx: &mut Context<'_>| {
            side.poll_if_woken(cx, |side_cx| {
                polls.set(polls.get() + 1);
                *registered.borrow_mut() = Some(side_cx.waker().clone());
                Poll::<()>::Pending
            })
        };

        assert!(poll(&mut cx).is_pending());
        assert!(poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 1, "polled once to register, then left alone");

        let side_waker = registered.borrow_mut().take().unwrap();
        side_waker.wake();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "a side wake-up wakes the task"
        );
        assert!(poll(&mut cx).is_pending());
        assert!(poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 2, "polled again once after its wake-up");

        side.rearm();
        assert!(poll(&mut cx).is_pending());
        assert_eq!(
            polls.get(),
            3,
            "a reset side future is polled to register again"
        );
    }
}
