//! Passive outlier detection (`outlier_detection`): a target whose real traffic failed
//! `consecutive_failures` times in a row leaves the rotation for `ejection_time`, longer each
//! time it is ejected again, while never more than `max_ejected_percent` of the targets are out.
//! Failures are connect errors, timeouts, broken exchanges and 5xx answers. State is atomics
//! per target: the request path only reads a clock and a few counters.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `outlier_detection:` as config builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Failures in a row that eject a target.
    pub consecutive_failures: u32,
    /// How long a first ejection lasts; the n-th lasts n times as long, up to 10 times.
    pub ejection_time: Duration,
    /// The largest share of targets out at once, in percent (1 to 100).
    pub max_ejected_percent: u8,
}

/// The most an ejection grows: ten times `ejection_time`.
pub const MAX_EJECTION_FACTOR: u32 = 10;

#[derive(Debug, Default)]
struct TargetState {
    consecutive: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since `Outliers::base` until which the target is out; 0: in.
    ejected_until: AtomicU64,
}

/// The outlier state of one upstream's targets.
#[derive(Debug)]
pub struct Outliers {
    settings: OutlierSettings,
    base: Instant,
    targets: Box<[TargetState]>,
}

impl Outliers {
    /// State for `count` targets, all in.
    pub fn new(settings: OutlierSettings, count: usize) -> Self {
        Outliers {
            settings,
            base: Instant::now(),
            targets: (0..count).map(|_| TargetState::default()).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `target` may take requests now.
    pub fn is_in(&self, target: usize) -> bool {
        let until = self.targets[target].ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ms()
    }

    /// Notes how a request to `target` went; ejects it when that completes a run of failures
    /// and the share of targets out allows, and then says so.
    pub fn record(&self, target: usize, failed: bool, upstream: &str) -> bool {
        let state = &self.targets[target];
        if !failed {
            state.consecutive.store(0, Ordering::Relaxed);
            return false;
        }
        let run = state
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if run < self.settings.consecutive_failures || !self.is_in(target) {
            return false;
        }
        let now = self.now_ms();
        let out = (0..self.targets.len()).filter(|&i| !self.is_in(i)).count();
        let allowed = self.targets.len() * usize::from(self.settings.max_ejected_percent) / 100;
        if out + 1 > allowed {
            return false;
        }
        let times = state
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
            .min(MAX_EJECTION_FACTOR);
        let length = self.settings.ejection_time.saturating_mul(times);
        let until = now.saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        state.ejected_until.store(until.max(1), Ordering::Relaxed);
        state.consecutive.store(0, Ordering::Relaxed);
        tracing::warn!(
            upstream,
            target,
            failures = run,
            ejected_for = ?length,
            "upstream target ejected after consecutive failures"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_ejected_percent: u8) -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(60),
            max_ejected_percent,
        }
    }

    #[test]
    fn a_run_of_failures_at_the_threshold_ejects() {
        let o = Outliers::new(settings(50), 2);
        o.record(0, true, "u");
        o.record(0, true, "u");
        assert!(o.is_in(0), "threshold - 1");
        o.record(0, false, "u");
        o.record(0, true, "u");
        o.record(0, true, "u");
        assert!(o.is_in(0), "a success resets the run");
        assert!(o.record(0, true, "u"), "ejected now");
        assert!(!o.is_in(0), "threshold");
        assert!(!o.record(0, true, "u"), "already out");
        assert!(o.is_in(1));
    }

    #[test]
    fn never_more_than_the_allowed_share_is_out() {
        let o = Outliers::new(settings(50), 2);
        for _ in 0..3 {
            o.record(0, true, "u");
        }
        for _ in 0..10 {
            o.record(1, true, "u");
        }
        assert!(!o.is_in(0));
        assert!(o.is_in(1), "50% of 2 targets: one may be out");
        let none = Outliers::new(settings(49), 2);
        for _ in 0..10 {
            none.record(0, true, "u");
        }
        assert!(none.is_in(0), "49% of 2 targets is none");
    }

    #[test]
    fn ejections_grow_on_repeat() {
        let grow = Outliers::new(settings(100), 1);
        for _ in 0..3 {
            grow.record(0, true, "u");
        }
        let first = grow.targets[0].ejected_until.load(Ordering::Relaxed);
        assert!(!grow.is_in(0));
        // Back in (as if the time passed), then ejected again: twice as long.
        grow.targets[0].ejected_until.store(0, Ordering::Relaxed);
        for _ in 0..3 {
            grow.record(0, true, "u");
        }
        let second = grow.targets[0].ejected_until.load(Ordering::Relaxed);
        assert!(second >= first + 60_000 - 1_000, "{first} then {second}");
    }
}
