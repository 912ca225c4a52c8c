//! The top-level `cache` and route `cache` through `config::load`: valid settings become typed
//! settings with their defaults, and every bad value is reported at its file, line and column.

mod common;

use std::time::Duration;

use common::{check_config_cases, load_files, ConfigCase};
use gatehouse::cache::settings::{CacheSettings, CacheStoreKind, RouteCache};
use gatehouse::config::Snapshot;
use http::HeaderName;

/// gateway.yaml whose `extra` starts at line 3.
fn gateway(extra: &str) -> String {
    format!("server:\n  listen: 127.0.0.1:0\n{extra}")
}

/// A routes file whose route `r` has `settings` from line 8 (after `upstream: a` at line 7).
fn route(settings: &str) -> String {
    format!(
        "upstreams:\n  a:\n    targets: [http://127.0.0.1:1]\nroutes:\n  - name: r\n    \
         match: {{path: /x}}\n    upstream: a\n{settings}"
    )
}

fn loads(files: &[(&str, &str)], env: &[(&str, &str)]) -> Snapshot {
    load_files(files, env).unwrap_or_else(|e| panic!("should load: {e:#?}"))
}

fn route_cache(snapshot: &Snapshot) -> Option<RouteCache> {
    let route = snapshot.router.routes().iter().find(|r| &*r.name == "r")?;
    route.cache.as_deref().cloned()
}

#[test]
fn cache_settings_load_with_defaults_and_env() {
    let snapshot = loads(&[("gateway.yaml", &gateway(""))], &[]);
    assert_eq!(snapshot.cache, CacheSettings::default());
    assert_eq!(snapshot.cache.default_ttl, Duration::from_secs(30));
    assert_eq!(snapshot.cache.max_entry_size, 1 << 20);
    assert_eq!(snapshot.cache.memory_capacity, 256 << 20);
    assert_eq!(&*snapshot.cache.key_prefix, "gwcache:");

    let yaml = gateway(
        "cache:\n  store: memory\n  default_ttl: ${GW_CACHE_TTL:-30s}\n  max_entry_size: 2MiB\n  \
         memory_capacity: 64MiB\n  key_prefix: \"edge:\"\n",
    );
    let snapshot = loads(&[("gateway.yaml", &yaml)], &[("GW_CACHE_TTL", "45s")]);
    assert_eq!(
        snapshot.cache,
        CacheSettings {
            store: CacheStoreKind::Memory,
            default_ttl: Duration::from_secs(45),
            max_entry_size: 2 << 20,
            memory_capacity: 64 << 20,
            key_prefix: "edge:".into(),
        }
    );
    let snapshot = loads(&[("gateway.yaml", &yaml)], &[]);
    assert_eq!(snapshot.cache.default_ttl, Duration::from_secs(30));
}

#[test]
fn route_cache_loads_with_its_defaults() {
    let gw = gateway("cache:\n  default_ttl: 1m\n");
    // An empty `cache: {}` is refused like every empty block: a setting says it is meant.
    let plain = route("    cache: {stale_if_error: 5s}\n");
    let snapshot = loads(&[("gateway.yaml", &gw), ("routes/r.yaml", &plain)], &[]);
    assert_eq!(
        route_cache(&snapshot),
        Some(RouteCache {
            ttl: Duration::from_secs(60),
            vary: Box::new([]),
            per_user: false,
            stale_if_error: Duration::from_secs(5),
        })
    );
    let full = route(
        "    cache:\n      ttl: 10s\n      vary: [Accept-Language, X-Tenant]\n      \
         stale_if_error: 1m\n",
    );
    let snapshot = loads(&[("gateway.yaml", &gw), ("routes/r.yaml", &full)], &[]);
    assert_eq!(
        route_cache(&snapshot),
        Some(RouteCache {
            ttl: Duration::from_secs(10),
            vary: Box::new([
                HeaderName::from_static("accept-language"),
                HeaderName::from_static("x-tenant")
            ]),
            per_user: false,
            stale_if_error: Duration::from_secs(60),
        })
    );
    let none = route("");
    let snapshot = loads(&[("gateway.yaml", &gw), ("routes/r.yaml", &none)], &[]);
    assert_eq!(route_cache(&snapshot), None);

    // On an authenticated route the key includes the user unless told otherwise.
    let jwt = gateway("jwt:\n  providers:\n    p:\n      algorithms: [HS256]\n      secret: s3cret-s3cret-s3cret-s3cret-s3cret!\n");
    for (cache, per_user) in [("{ttl: 5s}", true), ("{per_user: false}", false)] {
        let authed = route(&format!("    auth: {{jwt: p}}\n    cache: {cache}\n"));
        let snapshot = loads(&[("gateway.yaml", &jwt), ("routes/r.yaml", &authed)], &[]);
        assert_eq!(
            route_cache(&snapshot).map(|c| c.per_user),
            Some(per_user),
            "{cache}"
        );
    }
}

fn g(name: &'static str, extra: &str, at: (usize, usize), says: &'static str) -> ConfigCase {
    ConfigCase {
        name,
        files: vec![("gateway.yaml", gateway(extra))],
        at: ("gateway.yaml", at.0, at.1),
        says,
    }
}

fn r(name: &'static str, settings: &str, at: (usize, usize), says: &'static str) -> ConfigCase {
    ConfigCase {
        name,
        files: vec![
            ("gateway.yaml", gateway("")),
            ("routes/r.yaml", route(settings)),
        ],
        at: ("routes/r.yaml", at.0, at.1),
        says,
    }
}

#[rustfmt::skip]
#[test]
fn bad_cache_settings_are_reported_where_written() {
    check_config_cases(vec![
        g("store redis without redis", "cache:\n  store: redis\n", (4, 10), "`store: redis` needs a `redis:` section"),
        g("unknown store", "cache:\n  store: disk\n", (4, 10), "disk"),
        g("zero ttl", "cache:\n  default_ttl: 0s\n", (4, 16), "`default_ttl` must be greater than zero"),
        g("zero entry size", "cache:\n  max_entry_size: 0\n", (4, 19), "`max_entry_size` must be greater than zero"),
        g("entry size over the cap", "cache:\n  max_entry_size: 65MiB\n", (4, 19), "at most 64MiB"),
        g("capacity under entry size", "cache:\n  max_entry_size: 2MiB\n  memory_capacity: 1MiB\n", (5, 20), "must be at least `max_entry_size`"),
        g("capacity with redis", "redis:\n  url: redis://h:1\ncache:\n  store: redis\n  memory_capacity: 1MiB\n", (7, 20), "applies to `store: memory`"),
        g("empty prefix", "cache:\n  key_prefix: \"\"\n", (4, 15), "`key_prefix` must be 1 to 64"),
        g("brace in prefix", "cache:\n  key_prefix: \"a{b\"\n", (4, 15), "without `{` or `}`"),
        g("unknown key", "cache:\n  ttl: 1s\n", (4, 3), "ttl"),
    ]);
}

#[rustfmt::skip]
#[test]
fn bad_route_cache_is_reported_where_written() {
    check_config_cases(vec![
        r("zero ttl", "    cache:\n      ttl: 0s\n", (9, 12), "`ttl` must be greater than zero"),
        r("zero stale_if_error", "    cache:\n      stale_if_error: 0s\n", (9, 23), "`stale_if_error` must be greater than zero"),
        r("empty vary", "    cache:\n      vary: []\n", (9, 13), "`vary` is empty"),
        r("bad vary name", "    cache:\n      vary: [\"bad name\"]\n", (9, 14), "not a valid header name"),
        r("vary twice", "    cache:\n      vary: [X-A, x-a]\n", (9, 19), "listed twice"),
        r("per_user without auth", "    cache:\n      per_user: true\n", (9, 17), "`per_user` needs `auth`"),
        r("unknown key", "    cache:\n      max_age: 1s\n", (9, 7), "max_age"),
        ConfigCase {
            name: "respond route",
            files: vec![("gateway.yaml", gateway("")), ("routes/r.yaml", "routes:\n  - name: r\n    match: {path: /x}\n    respond: {body: hi}\n    cache: {ttl: 1s}\n".into())],
            at: ("routes/r.yaml", 5, 5),
            says: "`cache` needs an `upstream`",
        },
        ConfigCase {
            name: "no GET or HEAD",
            files: vec![("gateway.yaml", gateway("")), ("routes/r.yaml", "upstreams:\n  a:\n    targets: [http://127.0.0.1:1]\nroutes:\n  - name: r\n    match: {path: /x, methods: [POST]}\n    upstream: a\n    cache: {ttl: 1s}\n".into())],
            at: ("routes/r.yaml", 6, 12),
            says: "GET and HEAD only",
        },
    ]);
}

/// `redis` used by the cache alone is not reported unused.
#[test]
fn a_redis_used_by_the_cache_is_not_a_warning() {
    let snapshot = loads(
        &[(
            "gateway.yaml",
            &gateway("redis:\n  url: redis://127.0.0.1:6379/0\ncache:\n  store: redis\n"),
        )],
        &[],
    );
    assert_eq!(snapshot.cache.store, CacheStoreKind::Redis);
    assert!(snapshot.warnings.is_empty(), "{:?}", snapshot.warnings);
}
