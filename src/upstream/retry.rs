//! Retries (`retry:`): which failed attempts are tried again, for which methods, how long to wait
//! before each, and the budget that keeps retries from multiplying the load on an upstream that
//! is already failing.
//!
//! The waits are exponential with full jitter (a uniform draw between zero and the exponential
//! cap), so clients that failed together do not come back together. The budget is per upstream
//! and shared by every worker: retries in the last `window` may be at most `percent` of the
//! requests in it, or `min_retries`, whichever is more, so a quiet upstream can still retry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;

use super::window::RollingWindow;

/// Extra tries after the first, when `attempts` is not written.
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// The wait before the first retry, when `backoff` is not written.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
/// The longest wait, when `max_backoff` is not written.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_millis(250);
/// The most `attempts` may be: every retry goes to another target where one is left, and more
/// tries than this only hold a client on an upstream that is down.
pub const MAX_ATTEMPTS: u32 = 10;

/// An outcome of one attempt that `retry.on` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// No connection could be made (refused, unreachable, `connect_timeout`): the request was
    /// never sent, so any method could be tried again; `methods` still decides.
    ConnectError,
    /// No response headers within the timeout.
    Timeout,
    /// The connection broke after the request was sent and before a response head (reset,
    /// closed, or a malformed head): opt-in, since the upstream may have acted on it.
    Reset,
    /// The upstream answered with this status.
    Status(u16),
}

impl RetryOn {
    /// The default `on`: failures to connect and the statuses of a proxy or target that
    /// cannot serve right now.
    pub const DEFAULT: [RetryOn; 4] = [
        RetryOn::ConnectError,
        RetryOn::Status(502),
        RetryOn::Status(503),
        RetryOn::Status(504),
    ];

    /// Reads one entry of `retry.on`: `connect_error`, `timeout`, or a status code of 408,
    /// 429 or 500 to 599.
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        match text.trim() {
            "connect_error" => return Ok(RetryOn::ConnectError),
            "timeout" => return Ok(RetryOn::Timeout),
            "reset" => return Ok(RetryOn::Reset),
            _ => {}
        }
        let Ok(code) = text.trim().parse::<u16>() else {
            return Err(format!(
                "invalid retry condition `{text}`: write connect_error, timeout, reset, or a \
                 status code (408, 429, 500 to 599)"
            ));
        };
        match code {
            408 | 429 | 500..=599 => Ok(RetryOn::Status(code)),
            100..=399 => Err(format!(
                "status {code} is not a failure; retries are for 408, 429 and 500 to 599"
            )),
            400..=499 => Err(format!(
                "status {code} says the request itself is wrong, and another target would say \
                 the same; of the 4xx statuses only 408 and 429 can be retried"
            )),
            _ => Err(format!(
                "{code} is not an HTTP status; retries are for 408, 429 and 500 to 599"
            )),
        }
    }
}

/// `retry:` as config builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra tries after the first (1 to [`MAX_ATTEMPTS`]).
    pub attempts: u32,
    /// The cap of the wait before the first retry; it doubles for each retry after.
    pub backoff: Duration,
    /// The largest cap of any wait (at least `backoff`).
    pub max_backoff: Duration,
    /// The outcomes that are retried; never empty, no duplicates.
    pub on: Box<[RetryOn]>,
    /// The methods that are retried; never empty, no duplicates.
    pub methods: Box<[Method]>,
    /// How many retries the upstream may take.
    pub budget: BudgetSettings,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            on: RetryOn::DEFAULT.into(),
            methods: default_methods().into(),
            budget: BudgetSettings::default(),
        }
    }
}

/// The methods retried when `methods` is not written: the idempotent ones (RFC 9110 9.2.2),
/// for which a second try cannot do what the first did twice. TRACE is idempotent too but
/// only echoes the request, and a gateway's answer to it is not worth a second target.
pub fn default_methods() -> [Method; 5] {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
    ]
}

impl RetryPolicy {
    /// The cap of the wait before retry number `retry` (1 for the first):
    /// `backoff * 2^(retry-1)`, at most `max_backoff`. Retry 0 is taken as the first.
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1);
        1u32.checked_shl(doublings)
            .and_then(|factor| self.backoff.checked_mul(factor))
            .map_or(self.max_backoff, |wait| wait.min(self.max_backoff))
    }

    /// The wait before retry number `retry`, with full jitter: `random` (from `[0, 1)`) of
    /// [`backoff_cap`](Self::backoff_cap). A `random` outside that range (or NaN) counts as 0.
    pub fn backoff(&self, retry: u32, random: f64) -> Duration {
        let random = if (0.0..1.0).contains(&random) {
            random
        } else {
            0.0
        };
        let cap = self.backoff_cap(retry);
        // In floating point the product can round a few nanoseconds past the cap (or, for a cap
        // near Duration::MAX, past what a Duration holds): it is held to the cap.
        Duration::try_from_secs_f64(cap.as_secs_f64() * random).map_or(cap, |wait| wait.min(cap))
    }

    /// [`backoff`](Self::backoff) with a fresh random draw.
    pub fn jittered_backoff(&self, retry: u32) -> Duration {
        self.backoff(retry, fastrand::f64())
    }

    /// Whether requests with `method` may be tried again.
    pub fn retries_method(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// Whether an attempt that ended with `outcome` may be tried again.
    pub fn retries_on(&self, outcome: RetryOn) -> bool {
        self.on.contains(&outcome)
    }
}

/// `retry.budget:` as config builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Retries may be this share of the requests in `window`, in percent (0 to 100).
    pub percent: u8,
    /// Retries allowed in `window` however few requests there were.
    pub min_retries: u32,
    /// How far back requests and retries are counted.
    pub window: Duration,
}

/// Default `retry.budget.percent`.
pub const DEFAULT_BUDGET_PERCENT: u8 = 20;
/// Default `retry.budget.min_retries`.
pub const DEFAULT_BUDGET_MIN_RETRIES: u32 = 3;
/// Default `retry.budget.window`.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// The shortest `retry.budget.window`: the window slides in tenths, and shorter ones would let
/// one burst of failures spend the allowance again and again.
pub const MIN_BUDGET_WINDOW: Duration = Duration::from_secs(1);
/// The longest `retry.budget.window`.
pub const MAX_BUDGET_WINDOW: Duration = Duration::from_secs(3600);

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            percent: DEFAULT_BUDGET_PERCENT,
            min_retries: DEFAULT_BUDGET_MIN_RETRIES,
            window: DEFAULT_BUDGET_WINDOW,
        }
    }
}

/// One upstream's retry budget, shared by every worker and kept over reloads that leave its
/// settings alone. Lock-free: a few atomic words per request.
#[derive(Debug)]
pub struct RetryBudget {
    settings: BudgetSettings,
    /// First: requests; second: retries counted (including ones taken back below).
    counts: RollingWindow,
    /// First: retries counted and then taken back because they found the budget spent.
    refunds: RollingWindow,
    /// Retries refused since the budget was made, for tests and logs.
    refused: AtomicU64,
}

impl RetryBudget {
    /// An unspent budget.
    pub fn new(settings: BudgetSettings) -> Self {
        RetryBudget {
            settings,
            counts: RollingWindow::new(settings.window),
            refunds: RollingWindow::new(settings.window),
            refused: AtomicU64::new(0),
        }
    }

    /// The settings it was made from.
    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    /// Counts a request (its first attempt) at `now`.
    pub fn note_request(&self, now: Instant) {
        self.counts.add(now, 1, 0);
    }

    /// The retries allowed in the window ending at `now`, given the requests in it.
    fn allowance(&self, requests: u64) -> u64 {
        let share = requests.saturating_mul(u64::from(self.settings.percent)) / 100;
        share.max(u64::from(self.settings.min_retries))
    }

    /// Spends one retry at `now` if, with it, the retries in the window stay within the
    /// allowance; `false` (nothing spent) otherwise.
    ///
    /// The retry is counted first and checked after, and taken back when it went over: two
    /// workers spending the last retry at once may then both be refused, but can never both
    /// be allowed, which reading first and counting after would let happen. (While the window
    /// slides, old retries leave it between reads, which can only free allowance they held.)
    pub fn try_spend(&self, now: Instant) -> bool {
        self.counts.add(now, 0, 1);
        // Refunds are read before the counts: every refund read then belongs to a retry that
        // was counted before it, so the difference never leaves out a retry that was allowed.
        // (Read the other way round, another spender's retry and its refund could land between
        // the two reads, and its refund would pass for one of the retries counted here.)
        let refunded = self.refunds.totals(now).first;
        let totals = self.counts.totals(now);
        let retries = totals.second.saturating_sub(refunded);
        if retries <= self.allowance(totals.first) {
            return true;
        }
        // Taken back at the same instant, so the refund leaves the window with the retry.
        self.refunds.add(now, 1, 0);
        self.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Retries refused since the budget was made.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    fn policy(backoff: Duration, max_backoff: Duration) -> RetryPolicy {
        RetryPolicy {
            backoff,
            max_backoff,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_for_every_retry_number() {
        let p = RetryPolicy::default();
        let caps: Vec<u64> = (1..=6)
            .map(|r| p.backoff_cap(r).as_millis() as u64)
            .collect();
        assert_eq!(caps, [25, 50, 100, 200, 250, 250]);
        assert_eq!(p.backoff_cap(0), p.backoff_cap(1), "retry 0 is the first");
        // Never above the cap, for every retry number there is.
        for retry in (0..=200).chain([u32::MAX - 1, u32::MAX]) {
            for random in [
                0.0,
                0.25,
                0.5,
                0.999_999_9,
                f64::from_bits(0x3FEF_FFFF_FFFF_FFFF),
            ] {
                let wait = p.backoff(retry, random);
                assert!(
                    wait <= p.backoff_cap(retry),
                    "retry {retry}, random {random}"
                );
                assert!(wait <= p.max_backoff, "retry {retry}, random {random}");
            }
        }
    }

    #[test]
    fn full_jitter_uses_the_whole_range() {
        let p = RetryPolicy::default();
        for retry in 1..=8 {
            let cap = p.backoff_cap(retry);
            assert_eq!(p.backoff(retry, 0.0), Duration::ZERO, "retry {retry}");
            let top = p.backoff(retry, f64::from_bits(0x3FEF_FFFF_FFFF_FFFF));
            assert!(
                cap - top <= Duration::from_micros(1),
                "retry {retry}: {top:?} of {cap:?}"
            );
            let half = p.backoff(retry, 0.5);
            assert!(
                half.abs_diff(cap / 2) <= Duration::from_micros(1),
                "retry {retry}"
            );
        }
        // Drawn at random, the waits spread over the whole range: each tenth of it is hit.
        let mut tenths = [0u32; 10];
        for _ in 0..2_000 {
            let wait = p.jittered_backoff(3);
            assert!(wait < p.backoff_cap(3));
            let tenth = (wait.as_secs_f64() / p.backoff_cap(3).as_secs_f64() * 10.0) as usize;
            tenths[tenth] += 1;
        }
        assert!(tenths.iter().all(|&n| n > 100), "{tenths:?}");
    }

    #[test]
    fn backoff_never_overflows() {
        let half = Duration::from_secs(1 << 63);
        let huge = policy(half, Duration::MAX);
        assert_eq!(huge.backoff_cap(1), half);
        assert_eq!(
            huge.backoff_cap(2),
            Duration::MAX,
            "the doubling overflows: the cap"
        );
        assert_eq!(huge.backoff_cap(64), Duration::MAX);
        assert_eq!(huge.backoff_cap(u32::MAX), Duration::MAX);
        let below_one = f64::from_bits(0x3FEF_FFFF_FFFF_FFFF);
        for random in [0.5, 0.999, below_one] {
            let wait = huge.backoff(64, random);
            assert!(wait > Duration::MAX / 4, "{random}: {wait:?}");
        }
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_cap(33), p.max_backoff, "2^32 does not fit a u32");
        assert_eq!(p.backoff_cap(64), p.max_backoff);
        // Out-of-range draws are taken as 0 rather than panicking or going past the cap.
        for random in [1.0, 1.5, -0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(p.backoff(2, random), Duration::ZERO, "{random}");
        }
        let flat = policy(Duration::from_millis(100), Duration::from_millis(100));
        assert!((1..70).all(|r| flat.backoff_cap(r) == Duration::from_millis(100)));
        let zero = policy(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.backoff(5, 0.9), Duration::ZERO);
    }

    #[test]
    fn only_listed_methods_are_retried() {
        let p = RetryPolicy::default();
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(p.retries_method(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT, Method::TRACE] {
            assert!(!p.retries_method(&method), "{method}");
        }
        let posts = RetryPolicy {
            methods: [Method::GET, Method::POST].into(),
            ..RetryPolicy::default()
        };
        assert!(posts.retries_method(&Method::POST));
        assert!(
            !posts.retries_method(&Method::HEAD),
            "a list is taken as written"
        );
    }

    #[test]
    fn only_listed_outcomes_are_retried() {
        let p = RetryPolicy::default();
        assert!(p.retries_on(RetryOn::ConnectError));
        for code in [502, 503, 504] {
            assert!(p.retries_on(RetryOn::Status(code)), "{code}");
        }
        for code in [200, 408, 429, 500, 501, 505] {
            assert!(!p.retries_on(RetryOn::Status(code)), "{code}");
        }
        assert!(!p.retries_on(RetryOn::Timeout), "not by default");
    }

    #[test]
    fn conditions_parse_to_failures_only() {
        assert_eq!(RetryOn::parse("connect_error"), Ok(RetryOn::ConnectError));
        assert_eq!(RetryOn::parse("timeout"), Ok(RetryOn::Timeout));
        assert_eq!(RetryOn::parse("reset"), Ok(RetryOn::Reset));
        for code in [408, 429, 500, 503, 599] {
            assert_eq!(RetryOn::parse(&code.to_string()), Ok(RetryOn::Status(code)));
        }
        for (bad, says) in [
            ("200", "is not a failure"),
            ("304", "is not a failure"),
            ("99", "is not an HTTP status"),
            ("404", "only 408 and 429"),
            ("407", "only 408 and 429"),
            ("430", "only 408 and 429"),
            ("499", "only 408 and 429"),
            ("600", "is not an HTTP status"),
            ("70000", "invalid retry condition"),
            ("5xx", "invalid retry condition"),
            ("connect-error", "invalid retry condition"),
            ("", "invalid retry condition"),
        ] {
            let err = RetryOn::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn budget(percent: u8, min_retries: u32) -> RetryBudget {
        RetryBudget::new(BudgetSettings {
            percent,
            min_retries,
            window: Duration::from_secs(10),
        })
    }

    fn spend_all(b: &RetryBudget, now: Instant) -> u32 {
        let mut spent = 0;
        while b.try_spend(now) {
            spent += 1;
            assert!(spent <= 1_000_000, "the budget never ran out");
        }
        spent
    }

    #[test]
    fn retries_are_a_share_of_requests() {
        let b = budget(20, 3);
        let now = Instant::now();
        for _ in 0..100 {
            b.note_request(now);
        }
        assert_eq!(spend_all(&b, now), 20, "20% of 100");
        assert_eq!(b.refused(), 1);
        // Each request adds a fifth of a retry.
        for _ in 0..4 {
            b.note_request(now);
        }
        assert!(!b.try_spend(now), "104 requests: still 20");
        b.note_request(now);
        assert!(b.try_spend(now), "105 requests: 21");
        assert!(!b.try_spend(now));
    }

    #[test]
    fn a_quiet_upstream_still_gets_min_retries() {
        let b = budget(20, 3);
        let now = Instant::now();
        assert_eq!(spend_all(&b, now), 3, "no requests at all");
        let b = budget(20, 3);
        for _ in 0..10 {
            b.note_request(now);
        }
        assert_eq!(spend_all(&b, now), 3, "20% of 10 is 2, below the floor");
        let b = budget(0, 5);
        for _ in 0..1_000 {
            b.note_request(now);
        }
        assert_eq!(spend_all(&b, now), 5, "percent 0: the floor only");
        let b = budget(100, 0);
        assert_eq!(spend_all(&b, now), 0);
        b.note_request(now);
        assert_eq!(spend_all(&b, now), 1);
    }

    #[test]
    fn spent_retries_slide_out_with_the_window() {
        let b = budget(20, 3);
        let t0 = Instant::now();
        for _ in 0..50 {
            b.note_request(t0);
        }
        assert_eq!(spend_all(&b, t0), 10);
        // Half a window later the requests and retries still count.
        assert!(!b.try_spend(t0 + Duration::from_secs(5)));
        // A whole window later both slid out: the floor again, then the new requests' share.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(spend_all(&b, later), 3);
        for _ in 0..100 {
            b.note_request(later);
        }
        assert_eq!(spend_all(&b, later), 17, "20 of 100, 3 already spent");
        // Refused retries were taken back and slide out with the rest: nothing is owed after.
        let much_later = t0 + Duration::from_secs(30);
        assert_eq!(spend_all(&b, much_later), 3);
    }

    #[test]
    fn concurrent_spends_never_exceed_the_allowance() {
        for round in 0..100 {
            let b = Arc::new(budget(10, 0));
            let start = Arc::new(std::sync::Barrier::new(4));
            let now = Instant::now();
            for _ in 0..1_000 {
                b.note_request(now);
            }
            let spent = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (b, spent, start) = (b.clone(), spent.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        for _ in 0..200 {
                            if b.try_spend(now) {
                                spent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let spent = spent.load(Ordering::Relaxed);
            assert!(
                spent <= 100,
                "round {round}: {spent} retries of 100 allowed"
            );
            // Racing spenders may refuse each other at the edge, never starve: most went through.
            assert!(spent >= 90, "round {round}: only {spent} of 100");
        }
    }
}
