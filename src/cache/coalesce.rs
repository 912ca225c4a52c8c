//! Coalescing of concurrent misses: while one request for a key is on its way upstream, other
//! requests for the same key, from any worker of the process, wait for it instead of going
//! upstream too.
//!
//! The pipeline, on a miss:
//!
//! 1. [`Coalescer::join`] the key. The first becomes [`Role::Leader`]: it calls the upstream,
//!    stores the response if it may, and calls [`LeaderGuard::finish`] whatever the response
//!    was (stored or not).
//! 2. The others get [`Role::Waiter`] and [`Waiter::wait_until`] a deadline (the route's
//!    timeout): on [`Wake::Finished`] they look the store up again, and on a miss there (the
//!    response was not storable) go upstream themselves; on [`Wake::TimedOut`] they go upstream
//!    themselves.
//! 3. A leader that never finishes (its client went away, the handler panicked or returned
//!    early) drops its guard, which ends the flight and wakes every waiter with
//!    [`Wake::Abandoned`]. They join again with the same deadline: the first to do so is the
//!    new leader and the others wait for it, so one failed leader does not send every waiter
//!    upstream at once, and no waiter waits past its deadline.
//!
//! The flights are in a map split into shards by a keyed hash of the key, each behind its own
//! lock held only to look up, insert or remove one flight; a flight leaves the map when its
//! leader finishes or drops its guard, so the map holds only requests in flight. Waking uses
//! `tokio::sync::watch`, which works across the workers' separate runtimes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

/// Shards of the flight map; a power of two well above any worker count.
const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Finished,
    Abandoned,
}

type Flights = HashMap<Bytes, Arc<watch::Sender<State>>>;

// Own cache line per shard, so two workers on neighbouring shards do not contend.
#[repr(align(64))]
struct Shard(Mutex<Flights>);

struct Inner {
    shards: Box<[Shard]>,
    hasher: std::hash::RandomState,
}

/// The flights of the process, shared by every worker; cheap to clone.
#[derive(Clone)]
pub struct Coalescer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// What a request that missed does for its key.
#[derive(Debug)]
pub enum Role {
    /// Go upstream; the guard ends the flight.
    Leader(LeaderGuard),
    /// Wait for the leader.
    Waiter(Waiter),
}

/// Held by the leader of a flight; ends the flight when finished or dropped.
#[derive(Debug)]
pub struct LeaderGuard {
    coalescer: Coalescer,
    key: Bytes,
    flight: Arc<watch::Sender<State>>,
    finished: bool,
}

/// A request waiting for the leader of its key's flight.
#[derive(Debug)]
pub struct Waiter {
    rx: watch::Receiver<State>,
}

/// Why a waiter stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The leader has its answer: look the store up again.
    Finished,
    /// The leader went away without an answer: join again.
    Abandoned,
    /// The deadline passed first: go upstream.
    TimedOut,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    /// No flights.
    pub fn new() -> Coalescer {
        Coalescer {
            inner: Arc::new(Inner {
                shards: (0..SHARDS)
                    .map(|_| Shard(Mutex::new(HashMap::new())))
                    .collect(),
                hasher: Default::default(),
            }),
        }
    }

    /// Leads the flight for `key` if none is in flight, or waits for the one that is.
    pub fn join(&self, key: &Bytes) -> Role {
        let mut flights = self.shard(key);
        if let Some(flight) = flights.get(key) {
            return Role::Waiter(Waiter {
                rx: flight.subscribe(),
            });
        }
        let flight = Arc::new(watch::Sender::new(State::Running));
        flights.insert(key.clone(), Arc::clone(&flight));
        Role::Leader(LeaderGuard {
            coalescer: self.clone(),
            key: key.clone(),
            flight,
            finished: false,
        })
    }

    /// Flights in progress (a gauge; zero when no miss is being fetched).
    pub fn in_flight(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Flights> {
        let hash = self.inner.hasher.hash_one(key);
        lock(&self.inner.shards[(hash >> 58) as usize % SHARDS])
    }
}

fn lock(shard: &Shard) -> MutexGuard<'_, Flights> {
    // Nothing panics while the lock is held; recovering keeps the shard usable regardless.
    shard.0.lock().unwrap_or_else(|p| p.into_inner())
}

impl LeaderGuard {
    /// Ends the flight with an answer: the response is in the store, or was not storable.
    pub fn finish(mut self) {
        self.finished = true;
    }

    /// Requests waiting for this flight now.
    pub fn waiters(&self) -> usize {
        self.flight.receiver_count()
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        {
            let mut flights = self.coalescer.shard(&self.key);
            // Only this flight: the key cannot have another while this one is in the map, but
            // comparing costs nothing and keeps the removal exact.
            if flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.key);
            }
        }
        // Out of the map before waking: a woken waiter that joins again starts a new flight.
        self.flight.send_replace(if self.finished {
            State::Finished
        } else {
            State::Abandoned
        });
    }
}

impl Waiter {
    /// Waits until the leader ends the flight or `deadline` passes. Needs a tokio runtime
    /// with time enabled (any worker's).
    pub async fn wait_until(mut self, deadline: Instant) -> Wake {
        let ended = self.rx.wait_for(|s| *s != State::Running);
        match tokio::time::timeout_at(deadline, ended).await {
            Ok(Ok(state)) if *state == State::Finished => Wake::Finished,
            // The sender always sends before it can be dropped, so a closed channel is not
            // expected; treating it as abandoned makes the waiter lead instead of hang.
            Ok(_) => Wake::Abandoned,
            Err(_) => Wake::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests;
