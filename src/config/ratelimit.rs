//! The top-level `rate_limit` and route `rate_limit`, checked and built into the settings and
//! limits of [`crate::ratelimit`].

use std::path::Path;

use http::HeaderName;

use super::build::Errors;
use super::file::{
    did_you_mean, LimitSection, OnStoreErrorChoice, ParsedFile, RouteSection, Spanned, StoreChoice,
};
use super::redis::build_redis;
use super::units::format_duration;
use crate::ratelimit::{
    GcraError, KeyKind, OnStoreError, RateLimit, RateLimitSettings, RedisSettings, StoreKind,
};

const KEY_KINDS: &[&str] = &["ip", "user", "route", "header"];

/// The process-wide settings: `rate_limit` with defaults, and `redis` when written.
#[derive(Debug, Default)]
pub(super) struct StoreSettings {
    pub rate_limit: RateLimitSettings,
    pub redis: Option<RedisSettings>,
    /// `redis` is written but nothing uses it.
    pub redis_unused: bool,
}

/// Builds `redis:` and the top-level `rate_limit:` of gateway.yaml; `base` is the folder that
/// relative file paths start from.
pub(super) fn build_store_settings(
    file: &ParsedFile,
    base: &Path,
    e: &mut Errors,
) -> StoreSettings {
    let redis = file
        .redis
        .as_ref()
        .and_then(|r| build_redis(&r.value, r.mark, base, e));
    let section = file.rate_limit.as_ref();
    let store = match section.and_then(|s| s.store.as_ref()) {
        Some(choice) if choice.value == StoreChoice::Redis => {
            if file.redis.is_none() {
                e.at(
                    choice.mark,
                    "`store: redis` needs a `redis:` section with `url` or `cluster`",
                );
            }
            StoreKind::Redis
        }
        _ => StoreKind::Memory,
    };
    let on_store_error = match section.and_then(|s| s.on_store_error.as_ref()) {
        Some(choice) if store != StoreKind::Redis => {
            e.at(
                choice.mark,
                "`on_store_error` only applies with `store: redis` (the memory store cannot fail)",
            );
            OnStoreError::default()
        }
        Some(choice) => match choice.value {
            OnStoreErrorChoice::Local => OnStoreError::Local,
            OnStoreErrorChoice::Allow => OnStoreError::Allow,
            OnStoreErrorChoice::Deny => OnStoreError::Deny,
        },
        None => OnStoreError::default(),
    };
    StoreSettings {
        rate_limit: RateLimitSettings {
            store,
            on_store_error,
        },
        redis_unused: file.redis.is_some() && store != StoreKind::Redis,
        redis,
    }
}

/// Builds a route's `rate_limit:` list; limits with errors are reported and left out.
pub(super) fn build_route_limits(s: &RouteSection, e: &mut Errors) -> Vec<RateLimit> {
    let Some(list) = &s.rate_limit else {
        return Vec::new();
    };
    // Items with errors of their own are left out of the list, and reported; an emptied list
    // is not also an empty one.
    if list.value.is_empty() && !s.damaged.has("rate_limit") {
        e.at(
            list.mark,
            "`rate_limit` is empty; list limits (`- by: ip`, `limit`, `per`), or remove it",
        );
        return Vec::new();
    }
    let mut limits: Vec<RateLimit> = Vec::new();
    for item in &list.value {
        let Some(limit) = build_limit(&s.name.value, item, e) else {
            continue;
        };
        if limits.iter().any(|l| l.namespace == limit.namespace) {
            e.at(
                item.by.mark,
                "this limit repeats another of the route (same `by`, `limit`, `per` and `burst`); \
                 remove one",
            );
            continue;
        }
        limits.push(limit);
    }
    limits
}

fn build_limit(route: &str, s: &LimitSection, e: &mut Errors) -> Option<RateLimit> {
    let by = parse_by(&s.by, e);
    let burst = s.burst.as_ref().map_or(0, |b| b.value);
    let mut ok = true;
    if s.limit.value == 0 {
        e.at(s.limit.mark, "`limit` must be at least 1");
        ok = false;
    }
    if s.per.value.0.is_zero() {
        e.at(s.per.mark, "`per` must be greater than zero");
        ok = false;
    }
    let by = by?;
    if !ok {
        return None;
    }
    match RateLimit::new(route, by, s.limit.value, s.per.value.0, burst) {
        Ok(limit) => Some(limit),
        Err(err) => {
            let mark = match err {
                GcraError::TooFast | GcraError::ZeroLimit => s.limit.mark,
                GcraError::TooSlow | GcraError::ZeroPer => s.per.mark,
            };
            e.at(mark, err.to_string());
            None
        }
    }
}

fn parse_by(by: &Spanned<String>, e: &mut Errors) -> Option<KeyKind> {
    match by.as_str() {
        "ip" => return Some(KeyKind::Ip),
        "user" => return Some(KeyKind::User),
        "route" => return Some(KeyKind::Route),
        _ => {}
    }
    if let Some(name) = by.strip_prefix("header:") {
        if name.is_empty() {
            e.at(
                by.mark,
                "`header:` needs a header name, e.g. header:X-Api-Key",
            );
            return None;
        }
        return match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Some(KeyKind::Header(name)),
            Err(_) => {
                e.at(by.mark, format!("invalid header name `{name}` in `by`"));
                None
            }
        };
    }
    let word = by.split(':').next().unwrap_or_default();
    let hint = did_you_mean(word, KEY_KINDS)
        .map(|c| {
            let c = if c == "header" { "header:NAME" } else { c };
            format!("; did you mean `{c}`?")
        })
        .unwrap_or_default();
    e.at(
        by.mark,
        format!(
            "unknown `by` `{}`{hint} (expected ip, user, route or header:NAME)",
            by.value
        ),
    );
    None
}

/// `user: 100 per 1m, burst 20`.
pub fn describe(limit: &RateLimit) -> String {
    let burst = if limit.burst > 0 {
        format!(", burst {}", limit.burst)
    } else {
        String::new()
    };
    format!(
        "{}: {} per {}{burst}",
        limit.by.label(),
        limit.limit,
        format_duration(limit.per)
    )
}
