//! Upstream `retry:`, checked and built into a [`RetryPolicy`].

use http::Method;

use super::build::{positive, Errors};
use super::file::{AtKey, RetryBudgetSection, RetrySection, Spanned};
use super::units::format_duration;
use crate::upstream::retry::{
    default_methods, BudgetSettings, RetryOn, RetryPolicy, DEFAULT_ATTEMPTS, DEFAULT_BACKOFF,
    DEFAULT_BUDGET_MIN_RETRIES, DEFAULT_BUDGET_PERCENT, DEFAULT_BUDGET_WINDOW, DEFAULT_MAX_BACKOFF,
    MAX_ATTEMPTS, MAX_BUDGET_WINDOW, MIN_BUDGET_WINDOW,
};

/// Builds `retry:`; `None` when it has errors (each reported where it was written).
pub(super) fn build_retry(section: &AtKey<RetrySection>, e: &mut Errors) -> Option<RetryPolicy> {
    let s = &section.value;
    let before = e.list.len();
    let attempts = match &s.attempts {
        Some(n) if n.value == 0 || n.value > MAX_ATTEMPTS => {
            e.at(
                n.mark,
                format!(
                    "`attempts` (extra tries after the first) must be 1 to {MAX_ATTEMPTS}; \
                     remove `retry` to not retry"
                ),
            );
            DEFAULT_ATTEMPTS
        }
        Some(n) => n.value,
        None => DEFAULT_ATTEMPTS,
    };
    let backoff = positive(&s.backoff, "backoff", e).unwrap_or(DEFAULT_BACKOFF);
    let max_backoff = positive(&s.max_backoff, "max_backoff", e);
    match (&s.backoff, &s.max_backoff, max_backoff) {
        (_, Some(written), Some(max)) if max < backoff => e.at(
            written.mark,
            format!(
                "`max_backoff` ({}) must be at least `backoff` ({})",
                format_duration(max),
                format_duration(backoff)
            ),
        ),
        (Some(written), None, None) if backoff > DEFAULT_MAX_BACKOFF => e.at(
            written.mark,
            format!(
                "`backoff` ({}) is above the default `max_backoff` ({}); set `max_backoff` too",
                format_duration(backoff),
                format_duration(DEFAULT_MAX_BACKOFF)
            ),
        ),
        _ => {}
    }
    let on = match &s.on {
        Some(list) => build_on(list, e),
        None => RetryOn::DEFAULT.to_vec(),
    };
    let methods = match &s.methods {
        Some(list) => build_methods(list, e),
        None => default_methods().to_vec(),
    };
    let budget = match &s.budget {
        Some(budget) => build_budget(budget, e),
        None => BudgetSettings::default(),
    };
    (e.list.len() == before).then(|| RetryPolicy {
        attempts,
        backoff,
        max_backoff: max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF),
        on: on.into(),
        methods: methods.into(),
        budget,
    })
}

/// Reports an empty list at its key, and a repeated entry at the repeat.
fn check_list<T: PartialEq>(
    list: &AtKey<Vec<Spanned<String>>>,
    key: &str,
    default: &str,
    e: &mut Errors,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    if list.value.is_empty() {
        e.at(
            list.mark,
            format!("`{key}` is empty, so nothing would be retried; remove it for the default ({default}), or remove `retry`"),
        );
    }
    let mut parsed = Vec::new();
    for entry in &list.value {
        match parse(entry) {
            Ok(value) if parsed.contains(&value) => {
                e.at(
                    entry.mark,
                    format!("`{}` is listed twice in `{key}`", entry.value),
                );
            }
            Ok(value) => parsed.push(value),
            Err(message) => e.at(entry.mark, message),
        }
    }
    parsed
}

fn build_on(list: &AtKey<Vec<Spanned<String>>>, e: &mut Errors) -> Vec<RetryOn> {
    check_list(
        list,
        "on",
        "connect_error, 502, 503, 504",
        e,
        RetryOn::parse,
    )
}

fn build_methods(list: &AtKey<Vec<Spanned<String>>>, e: &mut Errors) -> Vec<Method> {
    check_list(
        list,
        "methods",
        "GET, HEAD, OPTIONS, PUT, DELETE",
        e,
        |name| {
            let upper = name.trim().to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(Method::CONNECT) => Err(
                    "CONNECT cannot be retried: what went through the tunnel cannot be sent again"
                        .to_string(),
                ),
                Ok(method) if !upper.is_empty() => Ok(method),
                _ => Err(format!("invalid method `{name}`")),
            }
        },
    )
}

fn build_budget(section: &AtKey<RetryBudgetSection>, e: &mut Errors) -> BudgetSettings {
    let b = &section.value;
    let percent = match &b.percent {
        Some(p) if p.value > 100 => {
            e.at(p.mark, "`percent` must be 0 to 100");
            DEFAULT_BUDGET_PERCENT
        }
        Some(p) => u8::try_from(p.value).unwrap_or(DEFAULT_BUDGET_PERCENT),
        None => DEFAULT_BUDGET_PERCENT,
    };
    let min_retries = b
        .min_retries
        .as_ref()
        .map_or(DEFAULT_BUDGET_MIN_RETRIES, |n| n.value);
    let window = match &b.window {
        Some(w) if !(MIN_BUDGET_WINDOW..=MAX_BUDGET_WINDOW).contains(&w.value.0) => {
            e.at(
                w.mark,
                format!(
                    "`window` must be {} to {}",
                    format_duration(MIN_BUDGET_WINDOW),
                    format_duration(MAX_BUDGET_WINDOW)
                ),
            );
            DEFAULT_BUDGET_WINDOW
        }
        Some(w) => w.value.0,
        None => DEFAULT_BUDGET_WINDOW,
    };
    if percent == 0 && min_retries == 0 {
        e.at(
            section.mark,
            "a budget of 0 percent and 0 `min_retries` allows no retry at all; remove `retry` \
             to not retry",
        );
    }
    BudgetSettings {
        percent,
        min_retries,
        window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = RetryPolicy::default();
        assert_eq!(p.attempts, 2);
        assert_eq!(p.backoff, Duration::from_millis(25));
        assert_eq!(p.max_backoff, Duration::from_millis(250));
        assert_eq!(
            &*p.on,
            [
                RetryOn::ConnectError,
                RetryOn::Status(502),
                RetryOn::Status(503),
                RetryOn::Status(504)
            ]
        );
        assert_eq!(
            &*p.methods,
            [
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE
            ]
        );
        assert_eq!(
            p.budget,
            BudgetSettings {
                percent: 20,
                min_retries: 3,
                window: Duration::from_secs(10)
            }
        );
    }
}
