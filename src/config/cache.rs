//! The top-level `cache` and route `cache`, checked and built into [`crate::cache::settings`].

use http::{HeaderName, Method};

use super::build::{positive, Errors};
use super::file::{CacheSection, Mark, ParsedFile, RouteCacheSection, Spanned, StoreChoice};
use crate::cache::settings::{CacheSettings, CacheStoreKind, RouteCache};

/// The largest `cache.max_entry_size`: a response is held whole while it is stored.
pub const MAX_ENTRY_SIZE_LIMIT: u64 = 64 << 20;

/// The longest `cache.key_prefix`.
pub const MAX_KEY_PREFIX: usize = 64;

/// Builds the top-level `cache:` of gateway.yaml (defaults when it is not written).
pub(super) fn build_cache_settings(file: &ParsedFile, e: &mut Errors) -> CacheSettings {
    let Some(section) = &file.cache else {
        return CacheSettings::default();
    };
    let s: &CacheSection = &section.value;
    let defaults = CacheSettings::default();
    let store = match &s.store {
        Some(choice) if choice.value == StoreChoice::Redis => {
            if file.redis.is_none() {
                e.at(
                    choice.mark,
                    "`store: redis` needs a `redis:` section with `url` or `cluster`",
                );
            }
            CacheStoreKind::Redis
        }
        _ => CacheStoreKind::Memory,
    };
    let default_ttl = positive(&s.default_ttl, "default_ttl", e).unwrap_or(defaults.default_ttl);
    let max_entry_size = match &s.max_entry_size {
        Some(size) if size.value.0 == 0 => {
            e.at(size.mark, "`max_entry_size` must be greater than zero");
            defaults.max_entry_size
        }
        Some(size) if size.value.0 > MAX_ENTRY_SIZE_LIMIT => {
            e.at(
                size.mark,
                format!(
                    "`max_entry_size` is at most 64MiB ({MAX_ENTRY_SIZE_LIMIT} bytes): a response \
                     is held whole while it is stored"
                ),
            );
            defaults.max_entry_size
        }
        Some(size) => size.value.0,
        None => defaults.max_entry_size,
    };
    let memory_capacity = match &s.memory_capacity {
        Some(size) if store == CacheStoreKind::Redis => {
            e.at(
                size.mark,
                "`memory_capacity` applies to `store: memory`; with `store: redis` Redis' own \
                 `maxmemory` bounds the cache",
            );
            defaults.memory_capacity
        }
        Some(size) if size.value.0 < max_entry_size => {
            e.at(
                size.mark,
                format!(
                    "`memory_capacity` ({} bytes) must be at least `max_entry_size` ({max_entry_size} bytes)",
                    size.value.0
                ),
            );
            defaults.memory_capacity
        }
        Some(size) => size.value.0,
        None => defaults.memory_capacity.max(max_entry_size),
    };
    let key_prefix = match &s.key_prefix {
        Some(prefix) => {
            let ok = !prefix.value.is_empty()
                && prefix.value.len() <= MAX_KEY_PREFIX
                && prefix
                    .value
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
            if !ok {
                e.at(
                    prefix.mark,
                    format!(
                        "`key_prefix` must be 1 to {MAX_KEY_PREFIX} visible ASCII characters \
                         without `{{` or `}}` (braces would move a Redis Cluster hash tag)"
                    ),
                );
            }
            prefix.value.as_str().into()
        }
        None => defaults.key_prefix,
    };
    CacheSettings {
        store,
        default_ttl,
        max_entry_size,
        memory_capacity,
        key_prefix,
    }
}

/// What a route's `cache` is checked against besides itself.
pub(super) struct RouteFacts<'a> {
    /// The route answers by itself (`respond:`).
    pub responds: bool,
    /// The route verifies tokens.
    pub has_auth: bool,
    /// The route's `methods`, when written.
    pub methods: Option<&'a [Spanned<String>]>,
    /// Where the route's `methods` are written.
    pub methods_mark: Mark,
}

/// Builds a route's `cache:`; `None` when it is not written or is invalid (errors recorded).
pub(super) fn build_route_cache(
    section: &RouteCacheSection,
    at: Mark,
    facts: &RouteFacts<'_>,
    settings: &CacheSettings,
    e: &mut Errors,
) -> Option<RouteCache> {
    let before = e.list.len();
    if facts.responds {
        e.at(
            at,
            "`cache` needs an `upstream`: a `respond` route's answer is already fixed",
        );
    }
    if let Some(methods) = facts.methods {
        let reads = |m: &Spanned<String>| {
            m.value.eq_ignore_ascii_case(Method::GET.as_str())
                || m.value.eq_ignore_ascii_case(Method::HEAD.as_str())
        };
        if !methods.iter().any(reads) {
            e.at(
                facts.methods_mark,
                "`cache` applies to GET and HEAD only, and this route matches neither",
            );
        }
    }
    let ttl = positive(&section.ttl, "ttl", e).unwrap_or(settings.default_ttl);
    let stale_if_error = positive(&section.stale_if_error, "stale_if_error", e).unwrap_or_default();
    let mut vary: Vec<HeaderName> = Vec::new();
    if let Some(list) = &section.vary {
        if list.value.is_empty() {
            e.at(
                list.mark,
                "`vary` is empty; remove it to key on the URL alone",
            );
        }
        for name in &list.value {
            match HeaderName::from_bytes(name.value.as_bytes()) {
                Ok(parsed) if vary.contains(&parsed) => {
                    e.at(
                        name.mark,
                        format!("`{}` is listed twice in `vary`", name.value),
                    );
                }
                Ok(parsed) => vary.push(parsed),
                Err(_) => e.at(
                    name.mark,
                    format!("`{}` is not a valid header name", name.value),
                ),
            }
        }
    }
    let per_user = match &section.per_user {
        Some(flag) if flag.value && !facts.has_auth => {
            e.at(
                flag.mark,
                "`per_user` needs `auth` on the route: without a verified token there is no \
                 user to key by",
            );
            false
        }
        Some(flag) => flag.value,
        None => facts.has_auth,
    };
    if e.list.len() != before {
        return None;
    }
    Some(RouteCache {
        ttl,
        vary: vary.into(),
        per_user,
        stale_if_error,
    })
}
