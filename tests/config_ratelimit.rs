//! `redis`, the top-level `rate_limit` and route `rate_limit` through `config::load`: valid
//! settings become typed settings, every bad value is reported at its file, line and column,
//! and a route's valid limits load in order with their settings.

mod common;

use std::time::Duration;

use common::{check_config_cases, load_files, ConfigCase};
use gatehouse::config::Snapshot;
use gatehouse::ratelimit::{
    OnStoreError, RateLimitSettings, RedisSettings, RedisTarget, StoreKind,
};

/// gateway.yaml whose `extra` starts at line 3.
fn gateway(extra: &str) -> String {
    format!("server:\n  listen: 127.0.0.1:0\n{extra}")
}

fn loads(gateway_yaml: &str, env: &[(&str, &str)]) -> Snapshot {
    load_files(&[("gateway.yaml", gateway_yaml)], env)
        .unwrap_or_else(|e| panic!("should load: {e:#?}"))
}

/// A routes file whose route `r` has `rate_limit:` at 8:5 followed by `items` from line 9.
/// In an item written `      - by: X` the value of `by` is at column 13, and in the lines
/// below it (`        limit: N`) `limit` values are at column 16, `per` at 14, `burst` at 16.
fn route_limits(items: &str) -> String {
    format!(
        "upstreams:\n  a:\n    targets: [http://127.0.0.1:1]\nroutes:\n  - name: r\n    \
         match: {{path: /x}}\n    upstream: a\n    rate_limit:\n{items}"
    )
}

fn g(name: &'static str, extra: &str, at: (usize, usize), says: &'static str) -> ConfigCase {
    ConfigCase {
        name,
        files: vec![("gateway.yaml", gateway(extra))],
        at: ("gateway.yaml", at.0, at.1),
        says,
    }
}

fn r(name: &'static str, items: &str, at: (usize, usize), says: &'static str) -> ConfigCase {
    ConfigCase {
        name,
        files: vec![
            ("gateway.yaml", gateway("")),
            ("routes/r.yaml", route_limits(items)),
        ],
        at: ("routes/r.yaml", at.0, at.1),
        says,
    }
}

#[test]
fn redis_and_rate_limit_load_into_typed_settings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("redis-password");
    std::fs::write(&secret, "s3cret\n").expect("write secret");
    let yaml = gateway(
        "redis:\n  url: rediss://cache.internal:6380/2\n  password: ${REDIS_PASSWORD}\n  \
         connect_timeout: 1s\n  command_timeout: 100ms\n  reconnect_max_backoff: 5s\n\
         rate_limit:\n  store: redis\n  on_store_error: deny\n",
    );
    let snapshot = loads(
        &yaml,
        &[("REDIS_PASSWORD_FILE", secret.to_str().expect("utf-8 path"))],
    );
    assert_eq!(
        snapshot.redis,
        Some(RedisSettings {
            target: RedisTarget::Url("rediss://cache.internal:6380/2".into()),
            password: Some("s3cret".into()),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(100),
            reconnect_max_backoff: Duration::from_secs(5),
            ca_file: None,
        })
    );
    assert_eq!(
        snapshot.rate_limit,
        RateLimitSettings {
            store: StoreKind::Redis,
            on_store_error: OnStoreError::Deny,
        }
    );
    assert!(snapshot.warnings.is_empty(), "{:?}", snapshot.warnings);

    // Defaults; an empty password (the `${REDIS_PASSWORD:-}` of the docs) is no password.
    let snapshot = loads(
        &gateway(
            "redis:\n  cluster: [redis://10.0.0.1:7000, redis://10.0.0.2:7000]\n  \
             password: ${REDIS_PASSWORD:-}\nrate_limit:\n  store: redis\n",
        ),
        &[],
    );
    let redis = snapshot.redis.expect("redis settings");
    assert_eq!(
        redis.target,
        RedisTarget::Cluster(vec![
            "redis://10.0.0.1:7000".into(),
            "redis://10.0.0.2:7000".into()
        ])
    );
    assert_eq!(redis.password, None);
    assert_eq!(redis.connect_timeout, Duration::from_secs(2));
    assert_eq!(redis.command_timeout, Duration::from_millis(250));
    assert_eq!(redis.reconnect_max_backoff, Duration::from_secs(15));
    assert_eq!(snapshot.rate_limit.on_store_error, OnStoreError::Local);

    // Neither section: memory, and no Redis.
    let snapshot = loads(&gateway(""), &[]);
    assert_eq!(snapshot.rate_limit.store, StoreKind::Memory);
    assert_eq!(snapshot.redis, None);
    let snapshot = loads(&gateway("rate_limit:\n  store: memory\n"), &[]);
    assert_eq!(snapshot.rate_limit.store, StoreKind::Memory);
}

/// A `redis` section no store uses loads (the cache will use it too) but is a warning.
#[test]
fn an_unused_redis_section_is_a_warning() {
    let snapshot = loads(&gateway("redis:\n  url: redis://127.0.0.1:6379/0\n"), &[]);
    assert!(snapshot.redis.is_some());
    let warnings: Vec<String> = snapshot.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].ends_with("gateway.yaml:3:1: `redis` is not used: no store is set to redis"),
        "{warnings:?}"
    );
}

#[rustfmt::skip]
#[test]
fn bad_store_settings_are_reported_where_written() {
    check_config_cases(vec![
        g("store redis without redis", "rate_limit:\n  store: redis\n", (4, 10), "`store: redis` needs a `redis:` section"),
        g("unknown store", "rate_limit:\n  store: disk\n", (4, 10), "disk"),
        g("unknown on_store_error", "redis:\n  url: redis://h:1\nrate_limit:\n  store: redis\n  on_store_error: maybe\n", (7, 19), "maybe"),
        g("on_store_error with memory", "rate_limit:\n  on_store_error: deny\n", (4, 19), "only applies with `store: redis`"),
        g("unknown rate_limit key", "rate_limit:\n  stor: memory\n", (4, 3), "did you mean `store`"),
        g("redis without target", "redis:\n  command_timeout: 1s\nrate_limit:\n  store: redis\n", (3, 1), "`redis` needs `url`"),
        g("url and cluster", "redis:\n  url: redis://h:1\n  cluster: [redis://h:2]\n", (5, 12), "not both"),
        g("http url", "redis:\n  url: http://h:6379\n", (4, 8), "invalid Redis URL `http://h:6379`"),
        g("unix url", "redis:\n  url: unix:///tmp/redis.sock\n", (4, 8), "expected redis://"),
        g("bad port", "redis:\n  url: redis://h:notaport\n", (4, 8), "invalid Redis URL"),
        g("empty cluster", "redis:\n  cluster: []\n", (4, 12), "`cluster` is empty"),
        g("bad cluster node", "redis:\n  cluster:\n    - redis://h:1\n    - tcp://h:2\n", (6, 7), "invalid Redis URL `tcp://h:2`"),
        g("zero command_timeout", "redis:\n  url: redis://h:1\n  command_timeout: 0s\n", (5, 20), "`command_timeout` must be greater than zero"),
        g("zero connect_timeout", "redis:\n  url: redis://h:1\n  connect_timeout: 0ms\n", (5, 20), "`connect_timeout` must be greater than zero"),
        g("zero backoff", "redis:\n  url: redis://h:1\n  reconnect_max_backoff: 0s\n", (5, 26), "`reconnect_max_backoff` must be greater than zero"),
        g("bare number timeout", "redis:\n  url: redis://h:1\n  command_timeout: 250\n", (5, 20), "has no unit"),
        g("misspelled key", "redis:\n  urll: redis://h:1\n", (4, 3), "did you mean `url`"),
        g("password twice", "redis:\n  url: redis://:pw@h:1\n  password: other\n", (4, 8), "give it once"),
        g("insecure fragment", "redis:\n  url: rediss://h:1#insecure\n", (4, 8), "certificate checks cannot be turned off"),
        g("credentials not echoed", "redis:\n  url: http://user:secret@h:1/0\n", (4, 8), "invalid Redis URL `http://***@h:1/0`"),
    ]);
}

/// [`g`] with a `ca.pem` next to gateway.yaml holding `pem`.
fn with_ca(
    name: &'static str,
    extra: &str,
    pem: &str,
    at: (usize, usize),
    says: &'static str,
) -> ConfigCase {
    let mut case = g(name, extra, at, says);
    case.files.push(("ca.pem", pem.to_string()));
    case
}

/// `ca_file` is read and checked at load: a file the TLS client could not use, or a target
/// without TLS that would ignore it, is an error at the `ca_file` value (5:12) naming the file.
#[rustfmt::skip]
#[test]
fn bad_ca_files_are_reported_where_written() {
    let tls = "redis:\n  url: rediss://h:1\n  ca_file: ca.pem\n";
    let cert = |body: &str| format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
    check_config_cases(vec![
        g("missing ca_file", "redis:\n  url: rediss://h:1\n  ca_file: missing.pem\n", (5, 12), "cannot read ca_file `missing.pem`"),
        with_ca("no certificate", tls, "not a certificate\n", (5, 12), "ca_file `ca.pem` holds no PEM certificate"),
        with_ca("only a key", tls, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", (5, 12), "holds no PEM certificate"),
        with_ca("bad base64", tls, &cert("!!not base64!!"), (5, 12), "ca_file `ca.pem` has an invalid certificate"),
        with_ca("not a certificate inside", tls, &cert("AAAA"), (5, 12), "ca_file `ca.pem` has an invalid certificate"),
        g("ca_file without TLS", "redis:\n  url: redis://h:1\n  ca_file: ca.pem\n", (5, 12), "`ca_file` needs TLS"),
        g("ca_file with a plain cluster node", "redis:\n  cluster: [rediss://h:1, redis://h:2]\n  ca_file: ca.pem\n", (5, 12), "`ca_file` needs TLS"),
    ]);
}

/// A readable CA file loads with its content; the same path with another content is other
/// settings (so a reload makes new connections), and is part of the config's content hash.
#[test]
fn a_ca_file_loads_with_its_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = common::redis::TlsFiles::generate(dir.path());
    let other = tempfile::tempdir().expect("temp dir");
    let second = common::redis::TlsFiles::generate(other.path());
    let pem = std::fs::read(&first.ca).expect("CA");
    let yaml = gateway(&format!(
        "redis:\n  cluster: [rediss://10.0.0.1:7000, rediss://10.0.0.2:7000]\n  ca_file: {}\n\
         rate_limit:\n  store: redis\n",
        first.ca.display()
    ));
    let snapshot = loads(&yaml, &[]);
    let redis = snapshot.redis.clone().expect("redis settings");
    let ca = redis.ca_file.clone().expect("ca_file");
    assert_eq!(ca.path, first.ca);
    assert_eq!(&*ca.pem, &pem[..]);

    std::fs::copy(&second.ca, &first.ca).expect("replace the CA");
    let changed = loads(&yaml, &[]);
    let changed_redis = changed.redis.clone().expect("redis settings");
    assert_ne!(changed_redis, redis, "new content, other settings");
    assert_ne!(changed.content_hash, snapshot.content_hash);
}

#[rustfmt::skip]
#[test]
fn bad_route_limits_are_reported_where_written() {
    let item = |by: &str, rest: &str| format!("      - by: {by}\n{rest}");
    let per_minute = |by: &str| item(by, "        limit: 10\n        per: 1m\n");
    check_config_cases(vec![
        r("limit 0", &item("ip", "        limit: 0\n        per: 1m\n"), (10, 16), "`limit` must be at least 1"),
        r("per 0", &item("ip", "        limit: 1\n        per: 0s\n"), (11, 14), "`per` must be greater than zero"),
        r("negative limit", &item("ip", "        limit: -1\n        per: 1m\n"), (10, 16), "-1"),
        r("unknown by", &per_minute("client"), (9, 13), "unknown `by` `client`"),
        r("misspelled by", &per_minute("usr"), (9, 13), "did you mean `user`?"),
        r("header without name", &per_minute("'header:'"), (9, 13), "`header:` needs a header name"),
        r("bad header name", &per_minute("'header:x api'"), (9, 13), "invalid header name `x api`"),
        r("missing per", "      - by: ip\n        limit: 1\n", (9, 9), "`per`"),
        r("missing by", "      - limit: 1\n        per: 1m\n", (9, 9), "`by`"),
        r("misspelled burst", &item("ip", "        limit: 1\n        per: 1m\n        burts: 2\n"), (12, 9), "did you mean `burst`"),
        r("too fast", &item("ip", "        limit: 2000000\n        per: 1s\n"), (10, 16), "at most one request per microsecond"),
        r("too slow", &item("ip", "        limit: 1\n        per: 400d\n"), (11, 14), "at most 366d"),
        r("empty list", "      []\n", (8, 5), "`rate_limit` is empty"),
        r("no value", "", (8, 5), "`rate_limit` has no value"),
        r("duplicate", &format!("{}{}", per_minute("ip"), per_minute("ip")), (12, 13), "repeats another"),
        r("not a list", "      by: ip\n", (9, 7), "sequence"),
    ]);
}

/// Every mistake in the route's limits is reported in one run.
#[test]
fn every_bad_limit_of_a_route_is_reported_at_once() {
    let items = "      - by: nobody\n        limit: 0\n        per: 1m\n      - by: ip\n        \
                 limit: 5\n        per: 0s\n";
    let errors = load_files(
        &[
            ("gateway.yaml", &gateway("")),
            ("routes/r.yaml", &route_limits(items)),
        ],
        &[],
    )
    .expect_err("bad limits");
    let at: Vec<(usize, usize)> = errors.iter().map(|(_, l, c, _)| (*l, *c)).collect();
    assert_eq!(at, vec![(9, 13), (10, 16), (14, 14)], "{errors:#?}");
}

/// Valid limits load, in order, with their settings; the route is served with them.
#[test]
fn valid_route_limits_load_with_their_settings() {
    let items = "      - by: user\n        limit: 100\n        per: 1m\n        burst: 20\n      \
                 - by: header:X-Api-Key\n        limit: 5\n        per: 1s\n      - by: route\n        \
                 limit: 1000\n        per: 1m30s\n";
    let gateway_yaml = gateway(
        "redis:\n  url: redis://127.0.0.1:6379/0\nrate_limit:\n  store: redis\n  \
         on_store_error: allow\n",
    );
    let snapshot = load_files(
        &[
            ("gateway.yaml", &gateway_yaml),
            ("routes/r.yaml", &route_limits(items)),
        ],
        &[],
    )
    .unwrap_or_else(|e| panic!("valid limits load: {e:#?}"));
    let route = &snapshot.router.routes()[0];
    let got: Vec<String> = route
        .rate_limits
        .iter()
        .map(gatehouse::config::describe_limit)
        .collect();
    assert_eq!(
        got,
        [
            "user: 100 per 1m, burst 20",
            "header:x-api-key: 5 per 1s",
            "route: 1000 per 1m30s"
        ]
    );
    assert!(
        snapshot.limiter.redis().is_some(),
        "limits are kept in redis"
    );
    assert_eq!(snapshot.limiter.on_store_error(), OnStoreError::Allow);
}
