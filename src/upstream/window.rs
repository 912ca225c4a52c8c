//! A rolling count of two things over a time window (calls and failures for a circuit breaker,
//! requests and retries for a retry budget), lock-free: the window is a ring of buckets, and
//! each bucket is one atomic word holding its own time stamp and both counts, so a bucket that
//! rolls over is reset and counted into by one compare-and-swap, never half of each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buckets per window: the window slides in steps of a tenth of its length.
pub const BUCKETS: usize = 10;

/// Bits of a bucket word holding each count; a bucket saturates at `COUNT_MAX`.
const COUNT_BITS: u32 = 20;
/// The most one bucket counts of either thing (1,048,575): one tenth of a window at over a
/// million calls per second, beyond what one upstream takes from one gateway.
pub const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
/// Bits of a bucket word holding the bucket's step number (modulo 2^24): a bucket left
/// untouched for 2^24 steps could be mistaken for a current one, ~194 days with 1 s steps.
const STAMP_BITS: u32 = 64 - 2 * COUNT_BITS;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

/// Counts of two things over the last `window`.
#[derive(Debug)]
pub struct RollingWindow {
    base: Instant,
    step: Duration,
    buckets: [AtomicU64; BUCKETS],
}

/// What a window counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// The first count (calls, requests).
    pub first: u64,
    /// The second count (failures, retries).
    pub second: u64,
}

fn pack(stamp: u64, first: u64, second: u64) -> u64 {
    (stamp & STAMP_MASK) << (2 * COUNT_BITS)
        | first.min(COUNT_MAX) << COUNT_BITS
        | second.min(COUNT_MAX)
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (2 * COUNT_BITS),
        (word >> COUNT_BITS) & COUNT_MAX,
        word & COUNT_MAX,
    )
}

impl RollingWindow {
    /// An empty window of `window` (at least 10 ms, so a step is at least 1 ms).
    pub fn new(window: Duration) -> Self {
        let step = (window / BUCKETS as u32).max(Duration::from_millis(1));
        RollingWindow {
            base: Instant::now(),
            step,
            buckets: Default::default(),
        }
    }

    /// The step `now` falls in.
    fn step_at(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since / self.step.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts `first` and `second` more at `now`.
    pub fn add(&self, now: Instant, first: u64, second: u64) {
        let step = self.step_at(now);
        let stamp = step & STAMP_MASK;
        let bucket = &self.buckets[(step % BUCKETS as u64) as usize];
        let _ = bucket.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let (old_stamp, a, b) = unpack(word);
            Some(if old_stamp == stamp && word != 0 {
                pack(stamp, a.saturating_add(first), b.saturating_add(second))
            } else {
                pack(stamp, first, second)
            })
        });
    }

    /// What was counted in the window that ends at `now`.
    pub fn totals(&self, now: Instant) -> Totals {
        let step = self.step_at(now);
        let mut totals = Totals::default();
        for back in 0..BUCKETS as u64 {
            let Some(wanted) = step.checked_sub(back) else {
                break;
            };
            let word = self.buckets[(wanted % BUCKETS as u64) as usize].load(Ordering::Acquire);
            let (stamp, a, b) = unpack(word);
            if word != 0 && stamp == wanted & STAMP_MASK {
                totals.first += a;
                totals.second += b;
            }
        }
        totals
    }

    /// Forgets everything counted.
    pub fn clear(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_window_and_forgets_what_slid_out() {
        let w = RollingWindow::new(Duration::from_secs(10));
        let t0 = w.base;
        w.add(t0, 1, 0);
        w.add(t0 + Duration::from_millis(500), 1, 1);
        w.add(t0 + Duration::from_secs(5), 3, 2);
        assert_eq!(
            w.totals(t0 + Duration::from_secs(5)),
            Totals {
                first: 5,
                second: 3
            }
        );
        // 9.99 s after the start the first step is still inside; at 10 s it slides out.
        assert_eq!(w.totals(t0 + Duration::from_millis(9_999)).first, 5);
        assert_eq!(
            w.totals(t0 + Duration::from_secs(10)),
            Totals {
                first: 3,
                second: 2
            }
        );
        assert_eq!(w.totals(t0 + Duration::from_secs(15)), Totals::default());
        // A bucket reused a whole window later starts from zero.
        w.add(t0 + Duration::from_secs(20), 1, 1);
        assert_eq!(
            w.totals(t0 + Duration::from_secs(20)),
            Totals {
                first: 1,
                second: 1
            }
        );
        w.clear();
        assert_eq!(w.totals(t0 + Duration::from_secs(20)), Totals::default());
    }

    #[test]
    fn a_bucket_saturates_instead_of_spilling_into_its_neighbour() {
        let w = RollingWindow::new(Duration::from_secs(10));
        let t0 = w.base;
        w.add(t0, COUNT_MAX - 1, 0);
        w.add(t0, 1, 0);
        assert_eq!(
            w.totals(t0),
            Totals {
                first: COUNT_MAX,
                second: 0
            }
        );
        w.add(t0, 1, 5);
        assert_eq!(
            w.totals(t0),
            Totals {
                first: COUNT_MAX,
                second: 5
            }
        );
        w.add(t0, 0, u64::MAX);
        assert_eq!(
            w.totals(t0),
            Totals {
                first: COUNT_MAX,
                second: COUNT_MAX
            }
        );
    }

    #[test]
    fn concurrent_adds_are_all_counted() {
        let w = std::sync::Arc::new(RollingWindow::new(Duration::from_secs(3600)));
        let now = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        w.add(now, 1, i % 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            w.totals(now),
            Totals {
                first: 40_000,
                second: 20_000
            }
        );
    }
}
