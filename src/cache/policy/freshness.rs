//! Freshness (RFC 9111 4.2): how long a stored response stays fresh, how old it is, and when it
//! may be served fresh, stale, or only after revalidation.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, EXPIRES};
use http::{HeaderMap, HeaderValue};

use super::cache_control::{RequestCacheControl, ResponseCacheControl, Seconds};
use super::storable::{heuristically_cacheable, ResponseView};
use super::syntax::{date_field, delta_seconds, list_items, DateField, DELTA_SECONDS_CAP};

/// The longest duration kept anywhere in these calculations (RFC 9111 1.2.2: 2^31 seconds).
const CAP: Duration = Duration::from_secs(DELTA_SECONDS_CAP as u64);

/// Whether a response states its own lifetime: `max-age`, `s-maxage` or `Expires`, valid or
/// not (an invalid one is an explicit time in the past, RFC 9111 5.3).
pub fn has_explicit_freshness(headers: &HeaderMap, cc: &ResponseCacheControl) -> bool {
    cc.max_age.is_present() || cc.s_maxage.is_present() || headers.contains_key(EXPIRES)
}

/// The route settings freshness falls back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteDefaults {
    /// Route `ttl`: the lifetime of a response without explicit freshness whose status is
    /// heuristically cacheable (RFC 9111 4.2.2).
    pub ttl: Duration,
    /// Route `stale_if_error`: how long past its lifetime a response may be served when the
    /// upstream fails, unless the response gives its own `stale-if-error`.
    pub stale_if_error: Duration,
}

/// What a stored entry keeps to answer freshness questions later (RFC 9111 4.2.3 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When the request that produced the response was sent upstream.
    pub request_time: SystemTime,
    /// When the response was received.
    pub response_time: SystemTime,
    /// The response's `Date`, or `response_time` when it has none (RFC 9110 6.6.1).
    pub date_value: SystemTime,
    /// The response's `Age` (zero when absent or invalid, RFC 9111 5.1).
    pub age_value: Duration,
    /// The freshness lifetime (4.2.1), at most 2^31 seconds.
    pub lifetime: Duration,
    /// How long past its lifetime it may be served while a revalidation runs (RFC 5861 3).
    pub stale_while_revalidate: Duration,
    /// How long past its lifetime it may be served when the upstream fails (RFC 5861 4).
    pub stale_if_error: Duration,
    /// Never serve it stale (must-revalidate, proxy-revalidate, no-cache, s-maxage; 4.2.4).
    pub must_revalidate: bool,
    /// Never serve it without validating it first, fresh or not (`no-cache`, 5.2.2.4).
    pub no_cache: bool,
    /// `immutable` (RFC 8246): while fresh, a client's reload does not force revalidation.
    pub immutable: bool,
}

/// How a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    /// Fresh enough for this request: serve it.
    Fresh,
    /// Stale, but the client's `max-stale` accepts it: serve it (`X-Cache: STALE`).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve it and revalidate in the background.
    StaleWhileRevalidate,
    /// Validate it upstream first (with `only-if-cached`, answer 504 instead).
    Revalidate,
}

fn secs(s: Seconds) -> Option<Duration> {
    match s {
        Seconds::Valid(n) => Some(Duration::from_secs(u64::from(n))),
        // RFC 9111 4.2.1: invalid freshness information makes the response stale.
        Seconds::Invalid => Some(Duration::ZERO),
        Seconds::Absent => None,
    }
}

/// The first member of the first `Age` line, when it is a valid delta-seconds (RFC 9111 5.1).
fn age_value(headers: &HeaderMap) -> Duration {
    let first = headers
        .get(AGE)
        .and_then(|v| list_items(v.as_bytes()).next())
        .and_then(Result::ok)
        .and_then(delta_seconds);
    first.map_or(Duration::ZERO, |n| Duration::from_secs(u64::from(n)))
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

impl Freshness {
    /// The freshness facts of `response`, requested at `request_time` and received at
    /// `response_time`, on a route with `route` defaults.
    pub fn new(
        request_time: SystemTime,
        response_time: SystemTime,
        response: &ResponseView<'_>,
        route: RouteDefaults,
    ) -> Self {
        let cc = response.cache_control;
        let headers = response.headers;
        let date_value = date_field(headers, &DATE).valid().unwrap_or(response_time);
        // RFC 9111 4.2.1: s-maxage, then max-age, then Expires - Date, then a heuristic.
        let lifetime = secs(cc.s_maxage)
            .or_else(|| secs(cc.max_age))
            .or_else(|| match date_field(headers, &EXPIRES) {
                DateField::Absent => None,
                DateField::Valid(expires) => Some(since(expires, date_value)),
                // RFC 9111 5.3: an invalid date, "0" included, means already expired.
                DateField::Invalid => Some(Duration::ZERO),
            })
            .unwrap_or(if heuristically_cacheable(response.status) {
                route.ttl
            } else {
                Duration::ZERO
            })
            .min(CAP);
        let must_revalidate = cc.forbids_stale();
        let window = |s: Seconds| match s {
            Seconds::Valid(n) => Some(Duration::from_secs(u64::from(n))),
            // An unreadable window grants nothing.
            Seconds::Invalid => Some(Duration::ZERO),
            Seconds::Absent => None,
        };
        Freshness {
            request_time,
            response_time,
            date_value,
            age_value: age_value(headers),
            lifetime,
            stale_while_revalidate: window(cc.stale_while_revalidate).unwrap_or(Duration::ZERO),
            // The origin's own stale-if-error wins over the route default: it knows its data.
            stale_if_error: window(cc.stale_if_error)
                .unwrap_or(route.stale_if_error)
                .min(CAP),
            must_revalidate,
            no_cache: cc.no_cache,
            immutable: cc.immutable,
        }
    }

    /// The current age at `now` (RFC 9111 4.2.3), at most 2^31 seconds.
    pub fn age(&self, now: SystemTime) -> Duration {
        let apparent_age = since(self.response_time, self.date_value);
        let response_delay = since(self.response_time, self.request_time);
        let corrected_age_value = self.age_value.saturating_add(response_delay);
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        let resident_time = since(now, self.response_time);
        corrected_initial_age.saturating_add(resident_time).min(CAP)
    }

    /// Whether it is fresh at `now` (RFC 9111 4.2: lifetime > current age); a fresh `no-cache`
    /// response still needs validation, which [`Freshness::usable`] accounts for.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime > self.age(now)
    }

    /// How far past its lifetime it is at `now` (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }

    /// Whether it may be served at `now` because the upstream failed (RFC 5861 4, forbidden by
    /// must-revalidate and friends, RFC 9111 4.2.4).
    pub fn can_serve_stale_on_error(&self, now: SystemTime) -> bool {
        !self.must_revalidate && self.staleness(now) <= self.stale_if_error
    }

    /// Whether it may be served at `now` while it is revalidated in the background (RFC 5861 3).
    pub fn can_serve_stale_while_revalidate(&self, now: SystemTime) -> bool {
        !self.must_revalidate
            && !self.stale_while_revalidate.is_zero()
            && self.staleness(now) <= self.stale_while_revalidate
    }

    /// How it may answer a request with directives `request` at `now` (RFC 9111 4.2, 5.2.1).
    pub fn usable(&self, now: SystemTime, request: &RequestCacheControl) -> Usable {
        self.usable_at(self.age(now), now, request)
    }

    /// [`usable`](Self::usable) with the current age at `now` already worked out.
    pub fn usable_at(
        &self,
        age: Duration,
        now: SystemTime,
        request: &RequestCacheControl,
    ) -> Usable {
        let fresh = self.lifetime > age;
        if self.no_cache {
            return Usable::Revalidate;
        }
        // RFC 8246 2.1: an immutable response does not change while fresh, so a reload's
        // revalidation could only get 304.
        if request.wants_revalidation() && !(fresh && self.immutable) {
            return Usable::Revalidate;
        }
        if let Seconds::Valid(max_age) = request.max_age {
            if age > Duration::from_secs(u64::from(max_age)) {
                return Usable::Revalidate;
            }
        }
        let fresh_enough = match request.min_fresh {
            Seconds::Absent => fresh,
            Seconds::Valid(n) => {
                self.lifetime > age.saturating_add(Duration::from_secs(u64::from(n)))
            }
            // An unreadable min-fresh: nothing is fresh enough.
            Seconds::Invalid => false,
        };
        if fresh_enough {
            return Usable::Fresh;
        }
        if self.must_revalidate {
            return Usable::Revalidate;
        }
        if !fresh {
            let staleness = age.saturating_sub(self.lifetime);
            if let Seconds::Valid(n) = request.max_stale {
                if staleness <= Duration::from_secs(u64::from(n)) {
                    return Usable::StaleAccepted;
                }
            }
            if self.can_serve_stale_while_revalidate(now) {
                return Usable::StaleWhileRevalidate;
            }
        }
        Usable::Revalidate
    }
}

/// The `Age` value sent with a stored response (RFC 9111 5.1): whole seconds, at most 2^31.
pub fn age_header(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs().min(u64::from(DELTA_SECONDS_CAP)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CACHE_CONTROL;
    use http::StatusCode;
    use std::time::UNIX_EPOCH;

    const T0: u64 = 1_700_000_000;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0 + s)
    }

    fn date(s: u64) -> String {
        httpdate::fmt_http_date(at(s))
    }

    fn fresh_of(status: u16, headers: &[(&str, &str)], route: RouteDefaults) -> Freshness {
        fresh_times(status, headers, route, at(0), at(0))
    }

    fn fresh_times(
        status: u16,
        headers: &[(&str, &str)],
        route: RouteDefaults,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Freshness {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let cc = ResponseCacheControl::parse(&h);
        Freshness::new(
            request_time,
            response_time,
            &ResponseView {
                status: StatusCode::from_u16(status).unwrap(),
                headers: &h,
                cache_control: &cc,
            },
            route,
        )
    }

    fn route(ttl: u64, sie: u64) -> RouteDefaults {
        RouteDefaults {
            ttl: Duration::from_secs(ttl),
            stale_if_error: Duration::from_secs(sie),
        }
    }

    fn req(cc: &str) -> RequestCacheControl {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, cc.parse().unwrap());
        RequestCacheControl::parse(&h)
    }

    #[test]
    fn rfc9111_4_2_1_s_maxage_over_max_age_over_expires_over_heuristic() {
        let d = date(0);
        let e = date(500);
        let all = [
            ("cache-control", "max-age=100, s-maxage=50"),
            ("date", d.as_str()),
            ("expires", e.as_str()),
        ];
        assert_eq!(fresh_of(200, &all, route(30, 0)).lifetime.as_secs(), 50);
        assert_eq!(
            fresh_of(200, &all[1..], route(30, 0)).lifetime.as_secs(),
            500
        );
        let max_age = [("cache-control", "max-age=100"), ("expires", e.as_str())];
        assert_eq!(
            fresh_of(200, &max_age, route(30, 0)).lifetime.as_secs(),
            100
        );
        assert_eq!(fresh_of(200, &[], route(30, 0)).lifetime.as_secs(), 30);
    }

    #[test]
    fn rfc9111_4_2_1_invalid_or_duplicated_freshness_is_stale() {
        let bad = [("cache-control", "max-age=10, max-age=20")];
        let f = fresh_of(200, &bad, route(30, 0));
        assert_eq!(f.lifetime, Duration::ZERO);
        assert!(!f.is_fresh(at(0)));
        let f = fresh_of(
            200,
            &[("cache-control", "s-maxage=x, max-age=60")],
            route(30, 0),
        );
        assert_eq!(f.lifetime, Duration::ZERO);
    }

    #[test]
    fn rfc9111_5_3_invalid_expires_is_already_expired_and_max_age_overrides_it() {
        for bad in ["0", "-1", "tomorrow", "Sun, 06 Nov 1994 08:49:37"] {
            let f = fresh_of(200, &[("expires", bad)], route(30, 0));
            assert_eq!(f.lifetime, Duration::ZERO, "{bad}");
        }
        let f = fresh_of(
            200,
            &[("expires", "0"), ("cache-control", "max-age=9")],
            route(30, 0),
        );
        assert_eq!(f.lifetime.as_secs(), 9);
    }

    #[test]
    fn rfc9111_4_2_1_expires_minus_date_or_response_time_without_date() {
        let e = date(120);
        let f = fresh_times(200, &[("expires", e.as_str())], route(0, 0), at(0), at(20));
        assert_eq!(f.lifetime.as_secs(), 100);
        assert_eq!(f.date_value, at(20));
        let past = date(0);
        let later = date(50);
        let f = fresh_of(
            200,
            &[("expires", past.as_str()), ("date", later.as_str())],
            route(0, 0),
        );
        assert_eq!(f.lifetime, Duration::ZERO);
    }

    #[test]
    fn rfc9111_4_2_2_heuristic_only_for_heuristic_statuses() {
        assert_eq!(fresh_of(404, &[], route(30, 0)).lifetime.as_secs(), 30);
        assert_eq!(fresh_of(500, &[], route(30, 0)).lifetime, Duration::ZERO);
    }

    #[test]
    fn rfc9111_4_2_3_age_calculation() {
        // Sent at 0, received at 10, Date says 2 (apparent age 8), Age: 5 (+10 delay = 15).
        let d = date(2);
        let f = fresh_times(
            200,
            &[
                ("date", d.as_str()),
                ("age", "5"),
                ("cache-control", "max-age=60"),
            ],
            route(0, 0),
            at(0),
            at(10),
        );
        assert_eq!(f.age_value.as_secs(), 5);
        assert_eq!(f.age(at(10)).as_secs(), 15);
        assert_eq!(f.age(at(40)).as_secs(), 45);
        // The apparent age wins when larger: Date 100 s before receipt.
        let d = date(0);
        let f = fresh_times(200, &[("date", d.as_str())], route(60, 0), at(99), at(100));
        assert_eq!(f.age(at(100)).as_secs(), 100);
        // A Date in the future and a clock going backwards never give a negative age.
        let d = date(1000);
        let f = fresh_times(200, &[("date", d.as_str())], route(60, 0), at(10), at(5));
        assert_eq!(f.age(at(0)), Duration::ZERO);
    }

    #[test]
    fn rfc9111_5_1_age_header_first_member_and_invalid_ignored() {
        let f = |v: &str| {
            fresh_of(200, &[("age", v)], route(0, 0))
                .age_value
                .as_secs()
        };
        assert_eq!(f("7, 9"), 7);
        assert_eq!(f("x"), 0);
        assert_eq!(f("-3"), 0);
        assert_eq!(f("99999999999"), u64::from(DELTA_SECONDS_CAP));
    }

    #[test]
    fn rfc9111_4_2_fresh_while_lifetime_exceeds_age() {
        let f = fresh_of(200, &[("cache-control", "max-age=10")], route(0, 0));
        assert!(f.is_fresh(at(9)));
        assert!(f.is_fresh(at(9) + Duration::from_millis(999)));
        assert!(!f.is_fresh(at(10)));
        assert!(!f.is_fresh(at(11)));
    }

    #[test]
    fn rfc9111_1_2_2_ages_and_lifetimes_cap_at_2_pow_31() {
        let f = fresh_of(
            200,
            &[("cache-control", "max-age=99999999999")],
            route(0, 0),
        );
        assert_eq!(f.lifetime, CAP);
        assert_eq!(f.age(at(0) + Duration::from_secs(u64::MAX / 4)), CAP);
        assert_eq!(age_header(Duration::from_secs(u64::MAX)), "2147483648");
        assert_eq!(age_header(Duration::from_millis(1999)), "1");
        assert_eq!(age_header(Duration::ZERO), "0");
    }

    #[test]
    fn rfc5861_4_stale_if_error_window_from_response_or_route() {
        let f = fresh_of(200, &[("cache-control", "max-age=10")], route(0, 60));
        assert!(f.can_serve_stale_on_error(at(70)));
        assert!(!f.can_serve_stale_on_error(at(71)));
        let f = fresh_of(
            200,
            &[("cache-control", "max-age=10, stale-if-error=5")],
            route(0, 60),
        );
        assert!(f.can_serve_stale_on_error(at(15)));
        assert!(!f.can_serve_stale_on_error(at(16)));
    }

    #[test]
    fn rfc9111_4_2_4_and_5_2_2_2_revalidate_directives_forbid_stale_even_on_error() {
        for cc in [
            "max-age=10, must-revalidate, stale-if-error=60",
            "max-age=10, proxy-revalidate",
            "max-age=10, no-cache",
            "s-maxage=10, stale-while-revalidate=60",
        ] {
            let f = fresh_of(200, &[("cache-control", cc)], route(0, 60));
            assert!(!f.can_serve_stale_on_error(at(11)), "{cc}");
            assert!(!f.can_serve_stale_while_revalidate(at(11)), "{cc}");
            assert_eq!(
                f.usable(at(11), &req("max-stale")),
                Usable::Revalidate,
                "{cc}"
            );
        }
    }

    #[test]
    fn rfc5861_3_stale_while_revalidate_window() {
        let f = fresh_of(
            200,
            &[("cache-control", "max-age=10, stale-while-revalidate=5")],
            route(0, 0),
        );
        assert_eq!(f.usable(at(5), &req("x")), Usable::Fresh);
        assert_eq!(f.usable(at(12), &req("x")), Usable::StaleWhileRevalidate);
        assert_eq!(f.usable(at(15), &req("x")), Usable::StaleWhileRevalidate);
        assert_eq!(f.usable(at(16), &req("x")), Usable::Revalidate);
        let none = fresh_of(200, &[("cache-control", "max-age=10")], route(0, 0));
        assert!(!none.can_serve_stale_while_revalidate(at(10)));
    }

    #[test]
    fn rfc9111_5_2_2_4_no_cache_response_always_revalidates() {
        let f = fresh_of(
            200,
            &[("cache-control", "no-cache, max-age=60")],
            route(0, 0),
        );
        assert_eq!(f.usable(at(0), &req("x")), Usable::Revalidate);
    }

    #[test]
    fn rfc9111_5_2_1_request_directives() {
        let f = fresh_of(200, &[("cache-control", "max-age=100")], route(0, 0));
        // 5.2.1.4 no-cache and 5.2.1.1 max-age=0: revalidate.
        assert_eq!(f.usable(at(10), &req("no-cache")), Usable::Revalidate);
        assert_eq!(f.usable(at(0), &req("max-age=0")), Usable::Revalidate);
        // 5.2.1.1 max-age=N: no older than N.
        assert_eq!(f.usable(at(20), &req("max-age=20")), Usable::Fresh);
        assert_eq!(f.usable(at(21), &req("max-age=20")), Usable::Revalidate);
        // 5.2.1.3 min-fresh=N: fresh for N more seconds.
        assert_eq!(f.usable(at(89), &req("min-fresh=10")), Usable::Fresh);
        assert_eq!(f.usable(at(90), &req("min-fresh=10")), Usable::Revalidate);
        assert_eq!(f.usable(at(0), &req("min-fresh=x")), Usable::Revalidate);
        // 5.2.1.2 max-stale[=N].
        assert_eq!(
            f.usable(at(110), &req("max-stale=10")),
            Usable::StaleAccepted
        );
        assert_eq!(f.usable(at(111), &req("max-stale=10")), Usable::Revalidate);
        assert_eq!(
            f.usable(at(100_000), &req("max-stale")),
            Usable::StaleAccepted
        );
        assert_eq!(f.usable(at(101), &req("max-stale=x")), Usable::Revalidate);
    }

    #[test]
    fn rfc8246_immutable_skips_reload_revalidation_while_fresh() {
        let f = fresh_of(
            200,
            &[("cache-control", "max-age=100, immutable")],
            route(0, 0),
        );
        assert_eq!(f.usable(at(10), &req("no-cache")), Usable::Fresh);
        assert_eq!(f.usable(at(100), &req("no-cache")), Usable::Revalidate);
    }

    #[test]
    fn random_times_keep_the_age_invariants() {
        let mut rng = fastrand::Rng::with_seed(0xf7e5);
        for _ in 0..20_000 {
            let request_time = at(rng.u64(..1_000));
            let response_time = at(rng.u64(..1_000));
            let d = date(rng.u64(..2_000));
            let age = rng.u64(..1 << 33).to_string();
            let max_age = format!("max-age={}", rng.u64(..1 << 33));
            let f = fresh_times(
                200,
                &[
                    ("date", d.as_str()),
                    ("age", age.as_str()),
                    ("cache-control", max_age.as_str()),
                ],
                route(30, 30),
                request_time,
                response_time,
            );
            let now = at(rng.u64(..1 << 34));
            let later = now + Duration::from_secs(rng.u64(..1_000));
            assert!(f.age(now) <= CAP);
            assert!(f.age(later) >= f.age(now));
            assert!(
                f.is_fresh(now) || f.staleness(now) > Duration::ZERO || f.lifetime == f.age(now)
            );
            if !f.is_fresh(now) {
                assert!(!f.is_fresh(later));
            }
        }
    }
}
