//! The generic cell rate algorithm: one number per bucket, the theoretical arrival time (TAT)
//! of the next request at the steady rate. A request is allowed while that time is no further
//! ahead of now than the tolerance (the whole allowance, `limit + burst` intervals), and each
//! allowed request pushes it one interval later. A TAT in the past means a full bucket, so such
//! a bucket carries no state and can be forgotten.
//!
//! Time is an integer count of some unit (nanoseconds in memory, microseconds in Redis, whose
//! `TIME` has that precision); `now + tolerance` is compared rather than `tat - tolerance`
//! so a clock that starts near zero never underflows.

use std::time::Duration;

/// The longest span a full bucket takes to refill that a limit may have: it bounds every time
/// the algorithm adds, and keeps Redis' microsecond values far below 2^53, where its Lua
/// numbers stop being exact.
pub const MAX_TOLERANCE: Duration = Duration::from_secs(366 * 86_400);
/// The shortest interval between requests at the steady rate: Redis keeps microseconds.
pub const MIN_INTERVAL: Duration = Duration::from_micros(1);

/// The parameters of one limit, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval_ns: u64,
    capacity: u64,
}

/// Why a limit cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcraError {
    /// `limit` is zero.
    #[error("`limit` must be at least 1")]
    ZeroLimit,
    /// `per` is zero.
    #[error("`per` must be greater than zero")]
    ZeroPer,
    /// `per / limit` is under [`MIN_INTERVAL`].
    #[error("`limit` is too high for `per`: at most one request per microsecond can be counted")]
    TooFast,
    /// Refilling the whole allowance would take longer than [`MAX_TOLERANCE`].
    #[error("`per` x (`limit` + `burst`) / `limit` must be at most 366d (the time a spent allowance takes to refill)")]
    TooSlow,
}

/// The outcome of one request against one limit, with what the RateLimit headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The most requests a full bucket allows at once: `limit + burst` (RateLimit-Limit).
    pub limit: u64,
    /// Requests still allowed at once after this one (RateLimit-Remaining).
    pub remaining: u64,
    /// Time until the bucket is full again (RateLimit-Reset).
    pub reset_after: Duration,
    /// Time until the next request would be allowed; zero when this one was (Retry-After).
    pub retry_after: Duration,
}

impl Decision {
    /// `reset_after` in whole seconds, rounded up: a client that waits that long finds a full
    /// bucket.
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }

    /// `retry_after` in whole seconds, rounded up, so a client that obeys it is let through.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after)
    }

    /// The one of two decisions (for the same request, by different limits) whose headers are
    /// sent: a refusal over an allowance, then the later retry, then the fewer remaining.
    pub fn stricter(self, other: Decision) -> Decision {
        match (self.allowed, other.allowed) {
            (true, false) => other,
            (false, true) => self,
            (false, false) if other.retry_after > self.retry_after => other,
            (false, false) => self,
            (true, true) if other.remaining < self.remaining => other,
            (true, true) => self,
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Gcra {
    /// `limit` requests per `per`, plus `burst` at once.
    pub fn new(limit: u32, per: Duration, burst: u32) -> Result<Gcra, GcraError> {
        if limit == 0 {
            return Err(GcraError::ZeroLimit);
        }
        if per.is_zero() {
            return Err(GcraError::ZeroPer);
        }
        let interval = per / limit;
        if interval < MIN_INTERVAL {
            return Err(GcraError::TooFast);
        }
        let capacity = u64::from(limit) + u64::from(burst);
        // u128: an interval of up to 366 days in ns times up to 2^33 cannot overflow it.
        let tolerance = interval.as_nanos() * u128::from(capacity);
        if tolerance > MAX_TOLERANCE.as_nanos() {
            return Err(GcraError::TooSlow);
        }
        Ok(Gcra {
            interval_ns: u64::try_from(interval.as_nanos()).expect("below MAX_TOLERANCE"),
            capacity,
        })
    }

    /// Time between two requests at the steady rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// Requests a full bucket allows at once (`limit + burst`).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The interval in units of `unit_ns` nanoseconds (1000: microseconds), at least 1.
    pub fn interval_in(&self, unit_ns: u64) -> u64 {
        (self.interval_ns / unit_ns).max(1)
    }

    /// The tolerance (`capacity` intervals) in units of `unit_ns` nanoseconds.
    pub fn tolerance_in(&self, unit_ns: u64) -> u64 {
        self.interval_in(unit_ns) * self.capacity
    }

    /// Decides one request at `now` (nanoseconds on any clock that does not go back) for a
    /// bucket whose stored TAT is `tat`; returns the decision and the TAT to store when the
    /// request was allowed.
    pub fn decide(&self, tat: Option<u64>, now: u64) -> (Decision, Option<u64>) {
        let interval = self.interval_ns;
        let tolerance = interval * self.capacity;
        let tat = tat.map_or(now, |t| t.max(now));
        let new_tat = tat + interval;
        let horizon = now + tolerance;
        if new_tat > horizon {
            let decision = Decision {
                allowed: false,
                limit: self.capacity,
                remaining: 0,
                reset_after: Duration::from_nanos(tat - now),
                retry_after: Duration::from_nanos(new_tat - horizon),
            };
            return (decision, None);
        }
        let decision = Decision {
            allowed: true,
            limit: self.capacity,
            remaining: (horizon - new_tat) / interval,
            reset_after: Duration::from_nanos(new_tat - now),
            retry_after: Duration::ZERO,
        };
        (decision, Some(new_tat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MINUTE: Duration = Duration::from_secs(60);

    /// A bucket driven by hand: the stored TAT and a clock.
    struct Bucket {
        gcra: Gcra,
        tat: Option<u64>,
        now: u64,
    }

    impl Bucket {
        fn new(limit: u32, per: Duration, burst: u32) -> Self {
            Bucket {
                gcra: Gcra::new(limit, per, burst).expect("valid limit"),
                tat: None,
                // Far from zero, as a real clock is, and also checked at zero below.
                now: 1_000 * SEC,
            }
        }

        fn hit(&mut self) -> Decision {
            let (decision, tat) = self.gcra.decide(self.tat, self.now);
            if let Some(tat) = tat {
                self.tat = Some(tat);
            }
            decision
        }

        fn allowed_in_a_row(&mut self) -> u64 {
            let mut n = 0;
            while self.hit().allowed {
                n += 1;
                assert!(n < 1_000_000, "never limited");
            }
            n
        }
    }

    #[test]
    fn ten_per_minute_limits_the_eleventh() {
        let mut b = Bucket::new(10, MINUTE, 0);
        for i in 1..=10u64 {
            let d = b.hit();
            assert!(d.allowed, "request {i} is within the limit");
            assert_eq!(d.limit, 10);
            assert_eq!(d.remaining, 10 - i, "remaining after request {i}");
            assert_eq!(d.retry_after, Duration::ZERO);
            assert_eq!(
                d.reset_after,
                Duration::from_secs(6 * i),
                "reset after request {i}"
            );
        }
        let d = b.hit();
        assert!(!d.allowed, "request 11 is over the limit");
        assert_eq!(d.remaining, 0);
        // One interval (60 s / 10) until a request fits again; a full refill takes a minute.
        assert_eq!(d.retry_after, Duration::from_secs(6));
        assert_eq!(d.retry_after_secs(), 6);
        assert_eq!(d.reset_after, MINUTE);
        assert_eq!(d.reset_secs(), 60);
        // A refused request spends nothing.
        assert_eq!(b.hit(), d);
    }

    #[test]
    fn burst_adds_to_what_a_full_bucket_allows_at_once() {
        let mut b = Bucket::new(10, MINUTE, 5);
        let first = b.hit();
        assert_eq!((first.limit, first.remaining), (15, 14));
        assert_eq!(1 + b.allowed_in_a_row(), 15);
        // The steady rate is still 10 per minute: one request every 6 s.
        b.now += 6 * SEC - 1;
        assert!(!b.hit().allowed, "1 ns before the interval has passed");
        b.now += 1;
        assert!(b.hit().allowed);
        assert!(!b.hit().allowed);
    }

    #[test]
    fn retry_after_is_exact_and_obeying_it_is_allowed() {
        let mut b = Bucket::new(3, Duration::from_secs(1), 0);
        assert_eq!(b.allowed_in_a_row(), 3);
        b.now += 100_000_000; // 100 ms later
        let d = b.hit();
        assert!(!d.allowed);
        let third = SEC / 3;
        assert_eq!(d.retry_after, Duration::from_nanos(third - 100_000_000));
        assert_eq!(d.retry_after_secs(), 1, "rounded up to whole seconds");
        b.now += d.retry_after.as_nanos() as u64 - 1;
        assert!(!b.hit().allowed, "1 ns early");
        b.now += 1;
        let d = b.hit();
        assert!(d.allowed, "exactly when retry_after said");
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn time_moving_refills_one_request_per_interval_and_no_more_than_full() {
        let mut b = Bucket::new(10, MINUTE, 0);
        assert_eq!(b.allowed_in_a_row(), 10);
        // 30 s refill 5 requests.
        b.now += 30 * SEC;
        assert_eq!(b.allowed_in_a_row(), 5);
        // An hour idle refills to the full 10, not 600.
        b.now += 3_600 * SEC;
        assert_eq!(b.allowed_in_a_row(), 10);
        // The steady rate over a long run: requests every 6 s are all allowed, every 5 s not.
        let mut b = Bucket::new(10, MINUTE, 0);
        for _ in 0..100 {
            assert!(b.hit().allowed);
            b.now += 6 * SEC;
        }
        let mut b = Bucket::new(10, MINUTE, 0);
        let mut allowed = 0;
        for _ in 0..120 {
            allowed += u32::from(b.hit().allowed);
            b.now += 5 * SEC;
        }
        // 600 s at 10/min is 100, plus the 10 a full bucket starts with, minus rounding at the end.
        assert!((109..=110).contains(&allowed), "allowed {allowed}");
    }

    #[test]
    fn a_clock_starting_at_zero_does_not_underflow() {
        let gcra = Gcra::new(2, Duration::from_secs(1), 0).expect("valid");
        let (d, tat) = gcra.decide(None, 0);
        assert!(d.allowed);
        let (d, tat) = gcra.decide(tat, 0);
        assert!(d.allowed);
        let (d, _) = gcra.decide(tat, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(500));
    }

    #[test]
    fn a_stale_tat_is_a_full_bucket() {
        let gcra = Gcra::new(5, MINUTE, 0).expect("valid");
        let now = 10_000 * SEC;
        assert_eq!(gcra.decide(Some(now - 1), now), gcra.decide(None, now));
        assert_eq!(gcra.decide(Some(now), now), gcra.decide(None, now));
    }

    #[test]
    fn limits_that_cannot_be_kept_are_refused() {
        assert_eq!(Gcra::new(0, MINUTE, 0), Err(GcraError::ZeroLimit));
        assert_eq!(Gcra::new(1, Duration::ZERO, 0), Err(GcraError::ZeroPer));
        // One per microsecond is the finest Redis can count; one more is refused.
        assert!(Gcra::new(1_000_000, Duration::from_secs(1), 0).is_ok());
        assert_eq!(
            Gcra::new(1_000_001, Duration::from_secs(1), 0),
            Err(GcraError::TooFast)
        );
        let day = Duration::from_secs(86_400);
        assert!(Gcra::new(1, day, 365).is_ok());
        assert_eq!(Gcra::new(1, day, 366), Err(GcraError::TooSlow));
        assert!(Gcra::new(u32::MAX, day * 183, u32::MAX).is_ok());
    }

    #[test]
    fn units_for_redis_are_whole_and_consistent() {
        let gcra = Gcra::new(10, MINUTE, 2).expect("valid");
        assert_eq!(gcra.interval_in(1_000), 6_000_000);
        assert_eq!(gcra.tolerance_in(1_000), 72_000_000);
        let odd = Gcra::new(7, MINUTE, 0).expect("valid");
        assert_eq!(odd.interval_in(1_000), 8_571_428);
        assert_eq!(odd.tolerance_in(1_000), 7 * 8_571_428);
    }

    #[test]
    fn the_stricter_decision_wins() {
        let allowed = |remaining| Decision {
            allowed: true,
            limit: 10,
            remaining,
            reset_after: Duration::ZERO,
            retry_after: Duration::ZERO,
        };
        let limited = |secs| Decision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_secs(secs),
            ..allowed(0)
        };
        assert_eq!(allowed(5).stricter(allowed(2)), allowed(2));
        assert_eq!(allowed(2).stricter(allowed(5)), allowed(2));
        assert_eq!(allowed(0).stricter(limited(1)), limited(1));
        assert_eq!(limited(1).stricter(allowed(0)), limited(1));
        assert_eq!(limited(1).stricter(limited(9)), limited(9));
        assert_eq!(limited(9).stricter(limited(1)), limited(9));
    }
}
