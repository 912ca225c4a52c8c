//! State bound to one worker thread's runtime, one slot per worker.
//!
//! Each worker runs its own single-threaded runtime (see `server::workers`). Sockets and the
//! tasks that drive them belong to the runtime that made them: an idle upstream connection,
//! a Redis multiplexed connection (its driver task), an HTTP/2 sender. Such state is kept per
//! worker and reached through the calling thread's worker index, so a worker only ever uses
//! what it made itself and never waits on another worker's runtime.
//!
//! A thread that is not a worker (the control runtime, a test's own runtime) uses one more slot
//! shared by every such thread: it still gets a value, never one a worker made.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The most workers any gateway in this process started: how many worker slots a
/// [`PerWorker`] makes when first used.
static MOST_WORKERS: AtomicUsize = AtomicUsize::new(1);

/// Marks the calling thread as worker `index` for the rest of its life.
pub(crate) fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}

/// Notes that `count` workers are starting, before any of them runs, so values made from now
/// on have a slot for each.
pub(crate) fn expect_workers(count: usize) {
    MOST_WORKERS.fetch_max(count, Ordering::Relaxed);
}

/// Index of the worker thread running this code, or `None` off worker threads.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// One value per worker thread, each made on first use by the worker that needs it.
///
/// Worker slots are counted when the `PerWorker` is first used: the most workers any gateway
/// in the process had started by then. A worker whose index is beyond that (only when a later
/// gateway in the same process starts more workers than any before) shares slot
/// `index % workers`. Threads that are not workers share one slot of their own.
///
/// Values are `Sync` because a slot can still be reached from more than one thread: every
/// non-worker thread shares the outside slot, and [`iter`](Self::iter) visits all of them (for
/// sweeps and metrics). A value that changes holds its own lock or cell, which its worker
/// takes uncontended.
#[derive(Debug)]
pub struct PerWorker<T> {
    slots: OnceLock<Box<[Slot<T>]>>,
}

/// One worker's slot, alone on its cache lines so one worker's writes never slow another's
/// reads.
#[derive(Debug)]
#[repr(align(128))]
struct Slot<T>(OnceLock<T>);

impl<T> Default for PerWorker<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PerWorker<T> {
    /// No values yet; slots are counted at first use.
    pub const fn new() -> Self {
        PerWorker {
            slots: OnceLock::new(),
        }
    }

    /// The calling thread's value, made by `make` on this thread if it is the slot's first use.
    pub fn get_or_init(&self, make: impl FnOnce() -> T) -> &T {
        self.get_or_init_at(self.here(), make)
    }

    /// The calling thread's value if it was made.
    pub fn get(&self) -> Option<&T> {
        self.slots()[self.here()].0.get()
    }

    /// The index of the calling thread's slot. It stays the same for this thread, so a value
    /// can note it and later go back to the slot that made it (see
    /// [`get_or_init_at`](Self::get_or_init_at)).
    pub fn here(&self) -> usize {
        let outside = self.slots().len() - 1;
        current().map_or(outside, |worker| worker % outside)
    }

    /// The value of slot `index` (from [`here`](Self::here)), made by `make` if it is the
    /// slot's first use.
    ///
    /// # Panics
    /// If `index` did not come from `here` on this `PerWorker`.
    pub fn get_or_init_at(&self, index: usize, make: impl FnOnce() -> T) -> &T {
        self.slots()[index].0.get_or_init(make)
    }

    /// Every value made so far, on any thread.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots().iter().filter_map(|slot| slot.0.get())
    }

    fn slots(&self) -> &[Slot<T>] {
        self.slots.get_or_init(|| {
            // Every worker's slot, then the one that threads outside the workers share.
            let count = MOST_WORKERS.load(Ordering::Relaxed).max(1) + 1;
            (0..count).map(|_| Slot(OnceLock::new())).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread::{self, ThreadId};

    /// Runs `body` on threads acting as workers `indices`, all at once, and returns what each
    /// returned, in order.
    fn as_workers<R: Send + 'static>(
        indices: &[usize],
        body: impl Fn(usize) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let body = Arc::new(body);
        let barrier = Arc::new(Barrier::new(indices.len()));
        let threads: Vec<_> = indices
            .iter()
            .map(|&index| {
                let (body, barrier) = (Arc::clone(&body), Arc::clone(&barrier));
                thread::spawn(move || {
                    enter_worker(index);
                    barrier.wait();
                    body(index)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn each_worker_gets_its_own_value_made_on_its_thread() {
        expect_workers(4);
        let values: Arc<PerWorker<(usize, ThreadId)>> = Arc::new(PerWorker::new());
        let shared = Arc::clone(&values);
        let seen = as_workers(&[0, 1, 2, 3], move |index| {
            assert!(shared.get().is_none(), "nothing is made before first use");
            let made = *shared.get_or_init(|| (index, thread::current().id()));
            // A second use finds the value made first, whatever `make` would now say.
            let again = *shared.get_or_init(|| unreachable!("made once"));
            assert_eq!(made, again);
            assert_eq!(shared.get(), Some(&made));
            (made, thread::current().id())
        });
        for (index, ((worker, maker), thread)) in seen.iter().enumerate() {
            assert_eq!(*worker, index, "worker {index} got another worker's value");
            assert_eq!(maker, thread, "worker {index}'s value was made elsewhere");
        }
        let mut all: Vec<usize> = values.iter().map(|(worker, _)| *worker).collect();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3]);
    }

    #[test]
    fn threads_that_are_not_workers_share_one_slot_apart_from_the_workers() {
        expect_workers(2);
        let values: Arc<PerWorker<&'static str>> = Arc::new(PerWorker::new());
        let shared = Arc::clone(&values);
        as_workers(&[0], move |_| *shared.get_or_init(|| "worker 0"));
        assert_eq!(current(), None);
        assert_eq!(*values.get_or_init(|| "outside"), "outside");
        let other = Arc::clone(&values);
        let from_another_thread = thread::spawn(move || {
            assert_eq!(current(), None);
            *other.get_or_init(|| "a second outside value")
        });
        assert_eq!(from_another_thread.join().unwrap(), "outside");
        let mut all: Vec<&str> = values.iter().copied().collect();
        all.sort_unstable();
        assert_eq!(all, ["outside", "worker 0"]);
    }

    #[test]
    fn a_noted_slot_leads_back_to_the_value_that_made_it() {
        expect_workers(3);
        let values: Arc<PerWorker<usize>> = Arc::new(PerWorker::new());
        let shared = Arc::clone(&values);
        let noted = as_workers(&[1, 2], move |index| {
            shared.get_or_init(|| index);
            shared.here()
        });
        for (index, slot) in [1, 2].into_iter().zip(noted) {
            assert_eq!(*values.get_or_init_at(slot, || unreachable!()), index);
        }
    }

    #[test]
    fn a_worker_beyond_the_counted_slots_shares_a_worker_slot() {
        let values: Arc<PerWorker<usize>> = Arc::new(PerWorker::new());
        values.get_or_init(|| usize::MAX);
        let workers = values.slots().len() - 1;
        let shared = Arc::clone(&values);
        let slots = as_workers(&[0, workers], move |_| shared.here());
        assert_eq!(slots, [0, 0], "worker {workers} wraps to worker 0's slot");
        assert_eq!(
            values.here(),
            workers,
            "outside threads keep their own slot"
        );
    }
}
