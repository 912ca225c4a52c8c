//! `redis`, the top-level `rate_limit` and route `rate_limit`, checked and built into the
//! settings and limits of [`crate::ratelimit`].

use std::time::Duration;

use http::HeaderName;

use super::build::{positive, Errors};
use super::file::{
    did_you_mean, LimitSection, OnStoreErrorChoice, ParsedFile, RedisSection, RouteSection,
    Spanned, StoreChoice,
};
use super::units::format_duration;
use crate::ratelimit::{
    GcraError, KeyKind, OnStoreError, RateLimit, RateLimitSettings, RedisSettings, RedisTarget,
    StoreKind,
};

/// Time to connect to Redis when `redis.connect_timeout` is not set.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one Redis command when `redis.command_timeout` is not set.
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest pause between reconnects when `redis.reconnect_max_backoff` is not set.
pub const DEFAULT_REDIS_RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(15);

const KEY_KINDS: &[&str] = &["ip", "user", "route", "header"];

/// The process-wide settings: `rate_limit` with defaults, and `redis` when written.
#[derive(Debug, Default)]
pub(super) struct StoreSettings {
    pub rate_limit: RateLimitSettings,
    pub redis: Option<RedisSettings>,
    /// `redis` is written but nothing uses it.
    pub redis_unused: bool,
}

/// Builds `redis:` and the top-level `rate_limit:` of gateway.yaml.
pub(super) fn build_store_settings(file: &ParsedFile, e: &mut Errors) -> StoreSettings {
    let redis = file
        .redis
        .as_ref()
        .and_then(|r| build_redis(&r.value, r.mark, e));
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

fn build_redis(s: &RedisSection, at: super::file::Mark, e: &mut Errors) -> Option<RedisSettings> {
    let before = e.list.len();
    let password = s
        .password
        .as_ref()
        .filter(|p| !p.value.is_empty())
        .map(|p| p.value.clone());
    let target = match (&s.url, &s.cluster) {
        (Some(_), Some(cluster)) => {
            e.at(
                cluster.mark,
                "use either `url` (one server) or `cluster` (Redis Cluster nodes), not both",
            );
            None
        }
        (None, None) if s.damaged.has("url") || s.damaged.has("cluster") => None,
        (None, None) => {
            e.at(
                at,
                "`redis` needs `url` (e.g. redis://127.0.0.1:6379/0) or `cluster` (a list of node URLs)",
            );
            None
        }
        (Some(url), None) => {
            check_redis_url(url, password.is_some(), e).then(|| RedisTarget::Url(url.value.clone()))
        }
        (None, Some(nodes)) if nodes.value.is_empty() => {
            e.at(nodes.mark, "`cluster` is empty; list at least one node URL");
            None
        }
        (None, Some(nodes)) => {
            let mut ok = true;
            for node in &nodes.value {
                ok &= check_redis_url(node, password.is_some(), e);
            }
            ok.then(|| RedisTarget::Cluster(nodes.value.iter().map(|n| n.value.clone()).collect()))
        }
    };
    let connect_timeout =
        positive(&s.connect_timeout, "connect_timeout", e).unwrap_or(DEFAULT_REDIS_CONNECT_TIMEOUT);
    let command_timeout =
        positive(&s.command_timeout, "command_timeout", e).unwrap_or(DEFAULT_REDIS_COMMAND_TIMEOUT);
    let reconnect_max_backoff = positive(&s.reconnect_max_backoff, "reconnect_max_backoff", e)
        .unwrap_or(DEFAULT_REDIS_RECONNECT_MAX_BACKOFF);
    if e.list.len() != before {
        return None;
    }
    Some(RedisSettings {
        target: target?,
        password,
        connect_timeout,
        command_timeout,
        reconnect_max_backoff,
    })
}

/// A `redis://` or `rediss://` URL the client can use; whether it is one.
fn check_redis_url(url: &Spanned<String>, password_key: bool, e: &mut Errors) -> bool {
    use redis::IntoConnectionInfo;
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        e.at(
            url.mark,
            format!(
                "invalid Redis URL `{}`: expected redis://host:port/db, or rediss:// for TLS",
                without_credentials(&url.value)
            ),
        );
        return false;
    }
    // The client reads `#insecure` as "skip certificate checks"; nothing after `#` may change
    // how it connects unseen.
    if url.contains('#') {
        e.at(
            url.mark,
            "a Redis URL takes no `#` fragment: certificate checks cannot be turned off",
        );
        return false;
    }
    match url.as_str().into_connection_info() {
        Ok(info) if password_key && info.redis_settings().password().is_some() => {
            e.at(
                url.mark,
                "the URL holds a password and so does `password`: give it once",
            );
            false
        }
        Ok(_) => true,
        Err(err) => {
            // Never echo the URL: it may hold a password.
            e.at(url.mark, format!("invalid Redis URL: {err}"));
            false
        }
    }
}

/// `url` with any user and password replaced by `***`, for error messages.
fn without_credentials(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
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
