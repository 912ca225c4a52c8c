//! Upstream `health_check:`, checked and built into [`HealthSettings`].

use super::build::{positive, Errors};
use super::file::{AtKey, HealthCheckSection, Spanned};
use crate::upstream::health::{check_path, HealthSettings};

/// Most failures or successes in a row a threshold may ask for: beyond it a target would take
/// hours to change state at any sensible interval.
pub const MAX_THRESHOLD: u32 = 100;

/// Builds `health_check:`; `None` when any of it is wrong (each error reported at its value).
pub(super) fn build_health_check(
    section: &AtKey<HealthCheckSection>,
    e: &mut Errors,
) -> Option<HealthSettings> {
    let s = &section.value;
    let before = e.list.len();
    let defaults = HealthSettings::default();
    let path = match &s.path {
        Some(path) => {
            if let Err(message) = check_path(&path.value) {
                e.at(path.mark, message);
            }
            path.value.as_str().into()
        }
        None => defaults.path,
    };
    let interval = positive(&s.interval, "interval", e).unwrap_or(defaults.interval);
    let timeout = positive(&s.timeout, "timeout", e).unwrap_or(defaults.timeout);
    if let Some(t) = &s.timeout {
        if timeout > interval {
            e.at(
                t.mark,
                format!(
                    "health check `timeout` ({}) must not exceed `interval` ({}): a probe \
                     must end before the next one starts",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            );
        }
    } else if timeout > interval {
        // Only `interval` was written, shorter than the default timeout: say so at it.
        if let Some(i) = &s.interval {
            e.at(
                i.mark,
                format!(
                    "health check `interval` ({}) is shorter than the default `timeout` (1s); \
                     set `timeout` to at most the interval",
                    humantime::format_duration(interval)
                ),
            );
        }
    }
    let healthy_threshold = threshold(&s.healthy_threshold, "healthy_threshold", e)
        .unwrap_or(defaults.healthy_threshold);
    let unhealthy_threshold = threshold(&s.unhealthy_threshold, "unhealthy_threshold", e)
        .unwrap_or(defaults.unhealthy_threshold);
    (e.list.len() == before).then_some(HealthSettings {
        path,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        tls: None,
    })
}

/// A threshold of 1 to [`MAX_THRESHOLD`]; `None` when absent (or wrong, reported).
fn threshold(value: &Option<Spanned<u32>>, what: &str, e: &mut Errors) -> Option<u32> {
    let v = value.as_ref()?;
    if v.value == 0 || v.value > MAX_THRESHOLD {
        e.at(v.mark, format!("`{what}` must be 1 to {MAX_THRESHOLD}"));
        return None;
    }
    Some(v.value)
}
