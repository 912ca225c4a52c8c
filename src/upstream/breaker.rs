//! A circuit breaker per upstream: after enough failures the upstream is not called at all for
//! a while (requests fail fast), then a few trial calls decide whether it is back.
//!
//! The state machine is one atomic word (state, epoch, and the open time or the trial counts)
//! changed by compare-and-swap, so admitting a request while closed is one load and no request
//! takes a lock. The epoch moves on every transition, and a result counts only under the epoch
//! it was admitted in: a slow call admitted while closed cannot close a half-open breaker, and
//! an old trial cannot count in a later half-open round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::window::RollingWindow;
use crate::observability::metrics::{CircuitMetrics, CIRCUIT_STATES};

/// The most `half_open_requests` allowed: both trial counts share one atomic word.
pub const MAX_HALF_OPEN_REQUESTS: u32 = 10_000;

/// The shortest `window`: the rolling window slides in tenths of it, each at least 1 ms.
pub const MIN_WINDOW: Duration = Duration::from_millis(10);

/// Upstream `circuit_breaker:` keys other than `max_requests`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Open when at least this share of the calls in `window` failed (0 < ratio <= 1)...
    pub failure_ratio: f64,
    /// ...and at least this many calls were made in it.
    pub min_requests: u32,
    /// Or open after this many failures in a row.
    pub consecutive_failures: u32,
    /// How far back `failure_ratio` and `min_requests` look.
    pub window: Duration,
    /// How long the breaker stays open before trial calls.
    pub open_for: Duration,
    /// Trial calls admitted while half-open (at most [`MAX_HALF_OPEN_REQUESTS`]).
    pub half_open_requests: u32,
    /// Response statuses that count as failures, sorted (connect errors and timeouts always do).
    pub failure_statuses: Box<[u16]>,
}

impl Default for BreakerSettings {
    /// The defaults CONFIG.md documents.
    fn default() -> Self {
        BreakerSettings {
            failure_ratio: 0.5,
            min_requests: 20,
            consecutive_failures: 5,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            half_open_requests: 3,
            failure_statuses: Box::new([502, 503, 504]),
        }
    }
}

/// Where a breaker is; the discriminant is the `gatehouse_circuit_state` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through and are counted.
    Closed = 0,
    /// Calls are refused until `open_for` has passed.
    Open = 1,
    /// A few trial calls go through; the rest are refused.
    HalfOpen = 2,
}

impl BreakerState {
    /// The name used in logs and in the `to` label.
    pub fn as_str(self) -> &'static str {
        CIRCUIT_STATES[self as usize]
    }

    fn from_bits(bits: u64) -> Self {
        match bits {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }
}

/// A call refused because the breaker is open (or half-open with its trials taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct BreakerOpen {
    /// Until the breaker lets a trial call through; zero while half-open trials are under way.
    pub retry_after: Duration,
}

// The state word: 2 bits of state, 20 bits of epoch (wrapping), 42 bits of payload. Open: the
// millisecond it opened, since `base` (2^42 ms is over a century). Half-open: trials admitted
// and trials that succeeded, 21 bits each.
const STATE_SHIFT: u32 = 62;
const EPOCH_SHIFT: u32 = 42;
const EPOCH_MASK: u64 = (1 << 20) - 1;
const PAYLOAD_MASK: u64 = (1 << EPOCH_SHIFT) - 1;
const TRIAL_BITS: u32 = 21;
const TRIAL_MASK: u64 = (1 << TRIAL_BITS) - 1;

#[derive(Debug, Clone, Copy)]
struct Word {
    state: BreakerState,
    epoch: u64,
    payload: u64,
}

impl Word {
    fn load(bits: u64) -> Self {
        Word {
            state: BreakerState::from_bits(bits >> STATE_SHIFT),
            epoch: (bits >> EPOCH_SHIFT) & EPOCH_MASK,
            payload: bits & PAYLOAD_MASK,
        }
    }

    fn bits(self) -> u64 {
        (self.state as u64) << STATE_SHIFT
            | (self.epoch & EPOCH_MASK) << EPOCH_SHIFT
            | self.payload & PAYLOAD_MASK
    }

    /// The next state, in a new epoch.
    fn next(self, state: BreakerState, payload: u64) -> Self {
        Word {
            state,
            epoch: (self.epoch + 1) & EPOCH_MASK,
            payload,
        }
    }

    fn trials(self) -> (u64, u64) {
        (self.payload >> TRIAL_BITS, self.payload & TRIAL_MASK)
    }
}

fn trials(admitted: u64, succeeded: u64) -> u64 {
    (admitted & TRIAL_MASK) << TRIAL_BITS | succeeded & TRIAL_MASK
}

/// One upstream's circuit breaker, shared by every worker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    upstream: Arc<str>,
    metrics: CircuitMetrics,
    base: Instant,
    open_for_ms: u64,
    half_open_requests: u64,
    word: AtomicU64,
    /// Calls and failures while closed.
    window: RollingWindow,
    /// Failures in a row while closed.
    run: AtomicU64,
}

/// One admitted call; report how it went with [`finish`](Self::finish). Dropped unfinished (the
/// client went away, the call was never made), it gives back its half-open trial slot and
/// counts nothing.
#[derive(Debug)]
#[must_use = "a permit reports its call's result with finish"]
pub struct BreakerPermit {
    breaker: Arc<Breaker>,
    epoch: u64,
    trial: bool,
    finished: bool,
}

impl BreakerPermit {
    /// Counts the call's result: `failed` for a connect error, a timeout or a failure status.
    pub fn finish(self, failed: bool) {
        self.finish_at(failed, Instant::now());
    }

    fn finish_at(mut self, failed: bool, now: Instant) {
        self.finished = true;
        self.breaker.record(self.epoch, failed, now);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.finished && self.trial {
            self.breaker.release_trial(self.epoch);
        }
    }
}

impl Breaker {
    /// A closed breaker for `upstream`, exporting its state through `metrics`.
    pub fn new(settings: BreakerSettings, upstream: Arc<str>, metrics: CircuitMetrics) -> Self {
        let open_for_ms = u64::try_from(settings.open_for.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        let half_open_requests =
            u64::from(settings.half_open_requests.clamp(1, MAX_HALF_OPEN_REQUESTS));
        metrics.set_state(BreakerState::Closed as usize);
        Breaker {
            // Made before `base`, so the window's clock never starts later than the breaker's.
            window: RollingWindow::new(settings.window.max(MIN_WINDOW)),
            settings,
            upstream,
            metrics,
            base: Instant::now(),
            open_for_ms,
            half_open_requests,
            word: AtomicU64::new(0),
            run: AtomicU64::new(0),
        }
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Whether an upstream's answer with `status` counts as a failure.
    pub fn is_failure_status(&self, status: StatusCode) -> bool {
        self.settings
            .failure_statuses
            .binary_search(&status.as_u16())
            .is_ok()
    }

    /// The state now; an open breaker whose `open_for` has passed stays open until the next
    /// call is admitted as its first trial.
    pub fn state(&self) -> BreakerState {
        Word::load(self.word.load(Ordering::Acquire)).state
    }

    /// Admits a call, or refuses it at once while the breaker is open.
    pub fn admit(self: &Arc<Self>) -> Result<BreakerPermit, BreakerOpen> {
        self.admit_at(Instant::now())
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis())
            .unwrap_or(u64::MAX)
            .min(PAYLOAD_MASK)
    }

    fn permit(self: &Arc<Self>, word: Word) -> BreakerPermit {
        BreakerPermit {
            breaker: Arc::clone(self),
            epoch: word.epoch,
            trial: word.state == BreakerState::HalfOpen,
            finished: false,
        }
    }

    fn admit_at(self: &Arc<Self>, now: Instant) -> Result<BreakerPermit, BreakerOpen> {
        let mut bits = self.word.load(Ordering::Acquire);
        loop {
            let word = Word::load(bits);
            let next = match word.state {
                BreakerState::Closed => return Ok(self.permit(word)),
                BreakerState::Open => {
                    let now_ms = self.ms(now);
                    let until = word.payload.saturating_add(self.open_for_ms);
                    if now_ms < until {
                        return Err(BreakerOpen {
                            retry_after: Duration::from_millis(until - now_ms),
                        });
                    }
                    word.next(BreakerState::HalfOpen, trials(1, 0))
                }
                BreakerState::HalfOpen => {
                    let (admitted, succeeded) = word.trials();
                    if admitted >= self.half_open_requests {
                        return Err(BreakerOpen {
                            retry_after: Duration::ZERO,
                        });
                    }
                    Word {
                        payload: trials(admitted + 1, succeeded),
                        ..word
                    }
                }
            };
            match self.swap(bits, next) {
                Ok(()) => {
                    if word.state == BreakerState::Open {
                        self.entered(word.state, next.state, "open_for elapsed".into());
                    }
                    return Ok(self.permit(next));
                }
                Err(actual) => bits = actual,
            }
        }
    }

    fn swap(&self, current: u64, next: Word) -> Result<(), u64> {
        self.word
            .compare_exchange(current, next.bits(), Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
    }

    /// Counts a call admitted in `epoch`; a result from an epoch that has passed is dropped.
    fn record(&self, epoch: u64, failed: bool, now: Instant) {
        let mut bits = self.word.load(Ordering::Acquire);
        loop {
            let word = Word::load(bits);
            if word.epoch != epoch {
                return;
            }
            let (next, why) = match word.state {
                BreakerState::Closed => {
                    if let Some(why) = self.record_closed(failed, now) {
                        let next = word.next(BreakerState::Open, self.ms(now));
                        // While closed the word changes only by a transition; losing this race
                        // means another call already moved the breaker on.
                        if self.swap(bits, next).is_ok() {
                            self.entered(word.state, next.state, why);
                        }
                    }
                    return;
                }
                // No call is admitted while open, so no permit carries an open epoch.
                BreakerState::Open => return,
                BreakerState::HalfOpen => {
                    let (admitted, succeeded) = word.trials();
                    if failed {
                        let why = "a half-open trial call failed".to_string();
                        (word.next(BreakerState::Open, self.ms(now)), why)
                    } else if succeeded + 1 >= self.half_open_requests {
                        let why = format!("all {} trial calls succeeded", self.half_open_requests);
                        (word.next(BreakerState::Closed, 0), why)
                    } else {
                        let next = Word {
                            payload: trials(admitted, succeeded + 1),
                            ..word
                        };
                        (next, String::new())
                    }
                }
            };
            match self.swap(bits, next) {
                Ok(()) => {
                    if next.state != word.state {
                        self.entered(word.state, next.state, why);
                    }
                    return;
                }
                Err(actual) => bits = actual,
            }
        }
    }

    /// Counts a closed-state result; why the breaker must open, if it must.
    fn record_closed(&self, failed: bool, now: Instant) -> Option<String> {
        self.window.add(now, 1, u64::from(failed));
        let s = &self.settings;
        if failed {
            let run = self.run.fetch_add(1, Ordering::AcqRel).saturating_add(1);
            if run >= u64::from(s.consecutive_failures) {
                return Some(format!("{run} consecutive failures"));
            }
        } else {
            self.run.store(0, Ordering::Release);
        }
        // Checked after successes too: the call that reaches `min_requests` may be one.
        let totals = self.window.totals(now);
        let tripped = totals.first >= u64::from(s.min_requests)
            && totals.second as f64 / totals.first as f64 >= s.failure_ratio;
        tripped.then(|| {
            format!(
                "{} of {} calls failed in {:?} (failure_ratio {})",
                totals.second, totals.first, s.window, s.failure_ratio
            )
        })
    }

    /// Gives back a half-open trial slot whose call reported nothing.
    fn release_trial(&self, epoch: u64) {
        let mut bits = self.word.load(Ordering::Acquire);
        loop {
            let word = Word::load(bits);
            if word.epoch != epoch || word.state != BreakerState::HalfOpen {
                return;
            }
            let (admitted, succeeded) = word.trials();
            let next = Word {
                payload: trials(admitted.saturating_sub(1), succeeded),
                ..word
            };
            match self.swap(bits, next) {
                Ok(()) => return,
                Err(actual) => bits = actual,
            }
        }
    }

    /// Logs and exports a transition this thread made.
    fn entered(&self, from: BreakerState, to: BreakerState, why: String) {
        // Counts from before a transition start over: a closed breaker judges only calls made
        // since it closed.
        if to != BreakerState::Closed {
            self.window.clear();
            self.run.store(0, Ordering::Release);
        }
        self.metrics.transition(to as usize);
        let upstream = &*self.upstream;
        let (from, to) = (from.as_str(), to.as_str());
        if to == BreakerState::Open.as_str() {
            tracing::warn!(upstream, from, to, why, "circuit breaker opened");
        } else {
            tracing::info!(upstream, from, to, why, "circuit breaker state changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::metrics::Metrics;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_ratio: 0.5,
            min_requests: 4,
            consecutive_failures: 100,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            half_open_requests: 2,
            failure_statuses: Box::new([502, 503, 504]),
        }
    }

    fn breaker(settings: BreakerSettings) -> Arc<Breaker> {
        Arc::new(Breaker::new(
            settings,
            "u".into(),
            CircuitMetrics::default(),
        ))
    }

    /// Admits and finishes one call at `at`.
    fn call(b: &Arc<Breaker>, at: Instant, failed: bool) {
        b.admit_at(at).expect("admitted").finish_at(failed, at);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A breaker opened at its base + 1 s by consecutive failures, and that instant.
    fn opened() -> (Arc<Breaker>, Instant) {
        let b = breaker(BreakerSettings {
            consecutive_failures: 1,
            ..settings()
        });
        let t = b.base + Duration::from_secs(1);
        call(&b, t, true);
        assert_eq!(b.state(), BreakerState::Open);
        (b, t)
    }

    #[test]
    fn opens_on_the_failure_ratio_once_min_requests_were_made() {
        let b = breaker(settings());
        let t = b.base;
        call(&b, t, true);
        call(&b, t, false);
        call(&b, t, true);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "2 of 3: below min_requests"
        );
        // The fourth call, a success, reaches min_requests with half of them failed.
        call(&b, t, false);
        assert_eq!(b.state(), BreakerState::Open);

        let below = breaker(settings());
        for failed in [true, false, false, false, false, true, false] {
            call(&below, t, failed);
        }
        assert_eq!(below.state(), BreakerState::Closed, "2 of 7 is below 0.5");
        call(&below, t, true);
        assert_eq!(below.state(), BreakerState::Closed, "3 of 8");
        call(&below, t, true);
        assert_eq!(below.state(), BreakerState::Closed, "4 of 9");
        call(&below, t, true);
        assert_eq!(below.state(), BreakerState::Open, "5 of 10");
    }

    #[test]
    fn failures_that_slid_out_of_the_window_do_not_count() {
        let b = breaker(settings());
        let t = b.base;
        call(&b, t, true);
        call(&b, t, true);
        call(&b, t, true);
        let later = t + Duration::from_secs(10);
        call(&b, later, false);
        call(&b, later, false);
        call(&b, later, false);
        assert_eq!(b.state(), BreakerState::Closed, "0 of 3 in the window");
        call(&b, later, true);
        assert_eq!(b.state(), BreakerState::Closed, "1 of 4");
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_run() {
        let b = breaker(BreakerSettings {
            consecutive_failures: 3,
            min_requests: 1_000,
            ..settings()
        });
        let t = b.base;
        call(&b, t, true);
        call(&b, t, true);
        call(&b, t, false);
        call(&b, t, true);
        call(&b, t, true);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a run of 2 after a success"
        );
        call(&b, t, true);
        assert_eq!(b.state(), BreakerState::Open, "a run of 3");
    }

    #[test]
    fn refuses_while_open_with_the_time_left() {
        let (b, t) = opened();
        let refused = b.admit_at(t + Duration::from_secs(10)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        let refused = b.admit_at(t + ms(29_999)).unwrap_err();
        assert_eq!(refused.retry_after, ms(1));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn half_opens_after_open_for_and_admits_only_the_trials() {
        let (b, t) = opened();
        let t = t + Duration::from_secs(30);
        let first = b.admit_at(t).expect("open_for passed: a trial");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let second = b.admit_at(t).expect("the second trial");
        let refused = b.admit_at(t).unwrap_err();
        assert_eq!(refused.retry_after, Duration::ZERO);
        // A trial whose client went away frees its slot without counting.
        drop(second);
        let second = b.admit_at(t).expect("a freed slot");
        assert!(b.admit_at(t).is_err());
        first.finish_at(false, t);
        assert_eq!(b.state(), BreakerState::HalfOpen, "one of two trials done");
        assert!(b.admit_at(t).is_err(), "a finished trial keeps its slot");
        second.finish_at(false, t);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn closing_starts_the_counts_afresh() {
        let b = breaker(BreakerSettings {
            consecutive_failures: 3,
            ..settings()
        });
        let t = b.base;
        call(&b, t, false);
        call(&b, t, true);
        call(&b, t, true);
        call(&b, t, true);
        assert_eq!(b.state(), BreakerState::Open);
        let t = t + Duration::from_secs(30);
        call(&b, t, false);
        call(&b, t, false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.window.totals(t), Default::default());
        // Neither the old run nor the old ratio carry over.
        call(&b, t, true);
        call(&b, t, true);
        call(&b, t, false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn one_failed_trial_opens_again_for_a_full_open_for() {
        let (b, t) = opened();
        let t = t + Duration::from_secs(30);
        let trial = b.admit_at(t).unwrap();
        let other = b.admit_at(t).unwrap();
        let failed_at = t + ms(1_500);
        trial.finish_at(true, failed_at);
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.admit_at(failed_at).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        // The other trial, finishing late, belongs to a round that is over.
        other.finish_at(false, failed_at);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit_at(failed_at + ms(29_999)).is_err());
        assert!(b.admit_at(failed_at + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn results_of_calls_admitted_before_a_transition_are_dropped() {
        let b = breaker(BreakerSettings {
            consecutive_failures: 2,
            half_open_requests: 1,
            ..settings()
        });
        let t = b.base;
        let slow = b.admit_at(t).unwrap();
        let slow_failure = b.admit_at(t).unwrap();
        call(&b, t, true);
        call(&b, t, true);
        assert_eq!(b.state(), BreakerState::Open);
        let t = t + Duration::from_secs(30);
        let trial = b.admit_at(t).unwrap();
        // A success from the closed days does not close the half-open breaker...
        slow.finish_at(false, t);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        trial.finish_at(false, t);
        assert_eq!(b.state(), BreakerState::Closed);
        // ...and an old failure does not count in the new closed period.
        slow_failure.finish_at(true, t);
        call(&b, t, true);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "one failure in the new run"
        );
    }

    #[test]
    fn failure_statuses_are_looked_up_exactly() {
        let b = breaker(settings());
        assert!(b.is_failure_status(StatusCode::BAD_GATEWAY));
        assert!(b.is_failure_status(StatusCode::GATEWAY_TIMEOUT));
        assert!(!b.is_failure_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!b.is_failure_status(StatusCode::OK));
    }

    #[test]
    fn transitions_are_exported() {
        let metrics = Metrics::new();
        let b = Arc::new(Breaker::new(
            BreakerSettings {
                consecutive_failures: 1,
                half_open_requests: 1,
                ..settings()
            },
            "orders".into(),
            metrics.circuit("orders"),
        ));
        let line = |name: &str| {
            let out = metrics.encode();
            out.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        let state = r#"gatehouse_circuit_state{upstream="orders"}"#;
        let to = |s: &str| {
            format!(r#"gatehouse_circuit_transitions_total{{upstream="orders",to="{s}"}}"#)
        };
        assert_eq!(line(state), "0");
        assert_eq!(line(&to("open")), "0");
        let t = b.base;
        call(&b, t, true);
        assert_eq!(line(state), "1");
        let t = t + Duration::from_secs(30);
        let trial = b.admit_at(t).unwrap();
        assert_eq!(line(state), "2");
        assert_eq!(line(&to("half_open")), "1");
        trial.finish_at(false, t);
        assert_eq!(line(state), "0");
        assert_eq!(line(&to("open")), "1");
        assert_eq!(line(&to("closed")), "1");
    }

    #[test]
    fn concurrent_calls_keep_the_counts() {
        // Closed: every result from every thread is counted.
        let b = breaker(BreakerSettings {
            min_requests: 1_000_000,
            ..settings()
        });
        let t = b.base;
        std::thread::scope(|s| {
            for i in 0..4 {
                let b = &b;
                s.spawn(move || {
                    for n in 0..2_000 {
                        call(b, t, (n + i) % 4 == 0);
                    }
                });
            }
        });
        let totals = b.window.totals(t);
        assert_eq!((totals.first, totals.second), (8_000, 2_000));
        assert_eq!(b.state(), BreakerState::Closed);

        // Half-open: threads racing for trials never hold more than the limit at once, and
        // once every trial succeeded the breaker is closed.
        let (b, t) = opened();
        let t = t + Duration::from_secs(30);
        let held = AtomicU64::new(0);
        let most = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (b, held, most) = (&b, &held, &most);
                s.spawn(move || {
                    for _ in 0..2_000 {
                        if let Ok(permit) = b.admit_at(t) {
                            let (admitted, _) = Word::load(b.word.load(Ordering::SeqCst)).trials();
                            assert!(admitted <= 2, "{admitted} trials admitted");
                            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            held.fetch_sub(1, Ordering::SeqCst);
                            // Give the slot back without a result, so the race goes on.
                            drop(permit);
                        }
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2, "{most:?}");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let word = Word::load(b.word.load(Ordering::SeqCst));
        assert_eq!(word.trials(), (0, 0), "every slot given back");
        std::thread::scope(|s| {
            for _ in 0..2 {
                let b = &b;
                s.spawn(move || b.admit_at(t).unwrap().finish_at(false, t));
            }
        });
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
