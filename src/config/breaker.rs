//! Upstream `circuit_breaker:`: the concurrency limit (`max_requests`) and the circuit breaker,
//! checked and built into [`BreakerSettings`]. The breaker is on when any key besides
//! `max_requests` is written; the keys left out take CONFIG.md's defaults.

use super::build::{positive, Errors};
use super::file::CircuitBreakerSection;
use crate::upstream::breaker::{BreakerSettings, MAX_HALF_OPEN_REQUESTS, MIN_WINDOW};

/// What an upstream's `circuit_breaker:` asks for.
#[derive(Debug, Default)]
pub(super) struct CircuitBreaker {
    /// `max_requests`: the bulkhead's limit.
    pub max_requests: Option<u32>,
    /// The breaker, when configured and valid.
    pub breaker: Option<BreakerSettings>,
}

/// Checks `circuit_breaker:`, reporting every bad value at its position.
pub(super) fn build_circuit_breaker(cb: &CircuitBreakerSection, e: &mut Errors) -> CircuitBreaker {
    let max_requests = cb.max_requests.as_ref().and_then(|max| {
        if max.value == 0 {
            e.at(max.mark, "`max_requests` must be at least 1");
            return None;
        }
        Some(max.value)
    });
    CircuitBreaker {
        max_requests,
        breaker: build_breaker(cb, e),
    }
}

fn build_breaker(cb: &CircuitBreakerSection, e: &mut Errors) -> Option<BreakerSettings> {
    let on = cb.failure_ratio.is_some()
        || cb.min_requests.is_some()
        || cb.consecutive_failures.is_some()
        || cb.window.is_some()
        || cb.open_for.is_some()
        || cb.half_open_requests.is_some()
        || cb.failure_statuses.is_some();
    if !on {
        return None;
    }
    let before = e.list.len();
    let mut settings = BreakerSettings::default();
    if let Some(ratio) = &cb.failure_ratio {
        // Written so that NaN is refused too.
        if ratio.value > 0.0 && ratio.value <= 1.0 {
            settings.failure_ratio = ratio.value;
        } else {
            e.at(
                ratio.mark,
                "`failure_ratio` must be greater than 0 and at most 1 (the share of calls that failed, e.g. 0.5)",
            );
        }
    }
    let at_least_one = |value: &Option<super::file::Spanned<u32>>, what: &str, e: &mut Errors| {
        let v = value.as_ref()?;
        if v.value == 0 {
            e.at(v.mark, format!("`{what}` must be at least 1"));
            return None;
        }
        Some(v.value)
    };
    if let Some(n) = at_least_one(&cb.min_requests, "min_requests", e) {
        settings.min_requests = n;
    }
    if let Some(n) = at_least_one(&cb.consecutive_failures, "consecutive_failures", e) {
        settings.consecutive_failures = n;
    }
    if let Some(n) = &cb.half_open_requests {
        if n.value == 0 || n.value > MAX_HALF_OPEN_REQUESTS {
            e.at(
                n.mark,
                format!("`half_open_requests` must be 1 to {MAX_HALF_OPEN_REQUESTS}"),
            );
        } else {
            settings.half_open_requests = n.value;
        }
    }
    if let Some(window) = positive(&cb.window, "window", e) {
        if window < MIN_WINDOW {
            if let Some(w) = &cb.window {
                e.at(
                    w.mark,
                    "`window` must be at least 10ms (it slides in tenths of its length)",
                );
            }
        } else {
            settings.window = window;
        }
    }
    if let Some(open_for) = positive(&cb.open_for, "open_for", e) {
        settings.open_for = open_for;
    }
    if let Some(list) = &cb.failure_statuses {
        // A list whose items were all refused already has its errors.
        if list.value.is_empty() && !cb.damaged.has("failure_statuses") {
            e.at(
                list.mark,
                "`failure_statuses` is empty; list the statuses that count as failures, e.g. [502, 503, 504]",
            );
        }
        let mut statuses: Vec<u16> = Vec::with_capacity(list.value.len());
        for status in &list.value {
            if !(400..=599).contains(&status.value) {
                e.at(
                    status.mark,
                    format!(
                        "`failure_statuses`: {} is not a 4xx or 5xx status (connect errors and timeouts always count)",
                        status.value
                    ),
                );
            } else if statuses.contains(&status.value) {
                e.at(
                    status.mark,
                    format!("`failure_statuses` lists {} twice", status.value),
                );
            } else {
                statuses.push(status.value);
            }
        }
        statuses.sort_unstable();
        settings.failure_statuses = statuses.into();
    }
    (e.list.len() == before).then_some(settings)
}
