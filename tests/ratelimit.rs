//! Rate limits through real gateways: the memory store, and a real `redis-server` that the
//! tests start on a free port, kill and restart. Exact counts and headers, burst, several limits
//! on one route, every key kind, X-Forwarded-For only from trusted peers, two instances sharing
//! one budget, every `on_store_error` while Redis is down, recovery without a restart, a
//! reload keeping a spent budget spent, `redis.password` (and in the URL; a wrong one is a store
//! error), `rediss://` refusing an untrusted certificate and trusting `redis.ca_file`, and
//! `redis.cluster` on 3 real nodes.

mod common;

use bytes::Bytes;
use common::redis::{RedisCluster, RedisOptions, RedisServer, TlsFiles};
use common::*;
use http::Request;
use http_body_util::Full;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

/// gateway.yaml with `server` (plus `server_extra`), `top` sections, an upstream `u` and the
/// `routes` lines.
fn config(upstream: &EchoUpstream, server_extra: &str, top: &str, routes: &str) -> String {
    format!(
        "{}{top}upstreams:\n  u:\n    targets: [{}]\nroutes:\n{routes}",
        server_yaml(server_extra),
        upstream.url()
    )
}

/// One route `r` at `/r` to upstream `u` with `limits` (lines under `rate_limit:`).
fn route(limits: &str) -> String {
    format!("  - name: r\n    match: {{path: /r}}\n    upstream: u\n    rate_limit:\n{limits}")
}

fn limit(by: &str, limit: u32, per: &str, burst: u32) -> String {
    format!("      - {{by: '{by}', limit: {limit}, per: {per}, burst: {burst}}}\n")
}

async fn call(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = Request::get(gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(Full::new(Bytes::new())).unwrap()).await
}

fn ratelimit_headers(got: &Got) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        got.header("ratelimit-limit"),
        got.header("ratelimit-remaining"),
        got.header("ratelimit-reset"),
    )
}

/// How many of `n` requests were allowed; panics on anything but 200 and 429.
async fn allowed_of(gw: &TestGateway, n: usize, headers: &[(&str, &str)]) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        let got = call(gw, "/r", headers).await;
        match got.status.as_u16() {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected {other}: {}", got.text()),
        }
    }
    allowed
}

#[tokio::test]
async fn ten_per_minute_the_eleventh_is_429_with_headers_and_never_reaches_the_upstream() {
    let upstream = EchoUpstream::start("u").await;
    let routes = route(&limit("route", 10, "1m", 0))
        + "  - name: free\n    match: {path: /free}\n    upstream: u\n";
    let gw = TestGateway::start(&config(&upstream, "", "", &routes)).await;
    for i in 1..=10u32 {
        let got = call(&gw, "/r", &[]).await;
        assert_eq!(got.status, 200, "request {i}: {}", got.text());
        let remaining = (10 - i).to_string();
        let reset = (i * 6).to_string();
        assert_eq!(
            ratelimit_headers(&got),
            (Some("10"), Some(remaining.as_str()), Some(reset.as_str())),
            "request {i}"
        );
    }
    let got = call(&gw, "/r", &[]).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.json()["error"], "rate_limited");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("retry-after"), Some("6"));
    assert_eq!(ratelimit_headers(&got), (Some("10"), Some("0"), Some("60")));
    assert!(got.header("x-request-id").is_some());
    assert_eq!(
        upstream.requests(),
        10,
        "the refused request never went upstream"
    );
    // A route without limits has no RateLimit headers.
    let free = call(&gw, "/free", &[]).await;
    assert_eq!(free.status, 200);
    assert_eq!(ratelimit_headers(&free), (None, None, None));
    let allowed = r#"gatehouse_rate_limit_decisions_total{route="r",result="allowed"}"#;
    let limited = r#"gatehouse_rate_limit_decisions_total{route="r",result="limited"}"#;
    assert_eq!(metric(&gw, allowed).await, 10.0);
    assert_eq!(metric(&gw, limited).await, 1.0);
}

#[tokio::test]
async fn burst_allows_limit_plus_burst_at_once() {
    let upstream = EchoUpstream::start("u").await;
    let gw = TestGateway::start(&config(&upstream, "", "", &route(&limit("ip", 2, "1m", 3)))).await;
    let first = call(&gw, "/r", &[]).await;
    assert_eq!(
        ratelimit_headers(&first),
        (Some("5"), Some("4"), Some("30"))
    );
    assert_eq!(allowed_of(&gw, 5, &[]).await, 4);
    let refused = call(&gw, "/r", &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("30"));
}

#[tokio::test]
async fn the_strictest_of_several_limits_decides_and_sends_its_headers() {
    let upstream = EchoUpstream::start("u").await;
    let limits = limit("ip", 5, "1m", 0) + &limit("header:X-Api-Key", 3, "1m", 0);
    let gw = TestGateway::start(&config(&upstream, "", "", &route(&limits))).await;
    let key_a = [("x-api-key", "a")];
    let got = call(&gw, "/r", &key_a).await;
    // Header limit: 2 left; ip limit: 4 left. The fewer remaining is sent.
    assert_eq!(ratelimit_headers(&got), (Some("3"), Some("2"), Some("20")));
    assert_eq!(allowed_of(&gw, 3, &key_a).await, 2);
    let refused = call(&gw, "/r", &key_a).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("20"));
    assert_eq!(refused.header("ratelimit-limit"), Some("3"));
    // Another key has its own header budget, but every request spent the address's: 5 of
    // them so far (every limit counts each request it allowed), so the ip limit refuses now.
    let key_b = [("x-api-key", "b")];
    let refused = call(&gw, "/r", &key_b).await;
    assert_eq!(refused.status, 429, "{:?}", refused.headers);
    assert_eq!(refused.header("retry-after"), Some("12"));
    assert_eq!(refused.header("ratelimit-limit"), Some("5"));
}

fn token(sub: &str) -> String {
    common::bearer(SECRET, sub)
}

#[tokio::test]
async fn every_key_kind_counts_its_own_clients() {
    let upstream = EchoUpstream::start("u").await;
    let top =
        "jwt:\n  providers:\n    p:\n      algorithms: [HS256]\n      secret: ${JWT_SECRET}\n";
    let routes = [
        ("user", "user", "    auth: {jwt: p, optional: true}\n"),
        ("header", "header:X-Key", ""),
        ("route", "route", ""),
        ("ip", "ip", ""),
    ]
    .map(|(name, by, extra)| {
        format!(
            "  - name: {name}\n    match: {{path: /{name}}}\n    upstream: u\n{extra}    \
             rate_limit:\n{}",
            limit(by, 2, "1m", 0)
        )
    })
    .concat();
    let yaml = config(&upstream, "trusted_proxies: [127.0.0.1/32]", top, &routes);
    let gw = TestGateway::start_with(&yaml, &[], &[("JWT_SECRET", SECRET)]).await;
    let count = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let gw = &gw;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let mut allowed = 0;
            for _ in 0..3 {
                let got = call(gw, path, &headers).await;
                match got.status.as_u16() {
                    200 => allowed += 1,
                    429 => assert_eq!(got.json()["error"], "rate_limited"),
                    other => panic!("{path}: unexpected {other}: {}", got.text()),
                }
            }
            allowed
        }
    };
    let xff = |ip: &str| ("x-forwarded-for", ip.to_string());
    // user: each `sub` its own bucket; anonymous callers count by address.
    assert_eq!(
        count("/user", vec![("authorization", token("alice"))]).await,
        2
    );
    assert_eq!(
        count("/user", vec![("authorization", token("bob"))]).await,
        2
    );
    assert_eq!(count("/user", vec![xff("10.0.0.1")]).await, 2);
    assert_eq!(count("/user", vec![xff("10.0.0.2")]).await, 2);
    // header: each value its own bucket; without the header, the address.
    assert_eq!(count("/header", vec![("x-key", "k1".into())]).await, 2);
    assert_eq!(count("/header", vec![("x-key", "k2".into())]).await, 2);
    assert_eq!(count("/header", vec![xff("10.0.0.1")]).await, 2);
    // A value that looks like an address does not share that address's bucket.
    assert_eq!(
        count("/header", vec![("x-key", "10.0.0.2".into())]).await,
        2
    );
    assert_eq!(count("/header", vec![xff("10.0.0.2")]).await, 2);
    // route: one bucket whoever calls.
    assert_eq!(count("/route", vec![xff("10.0.0.1")]).await, 2);
    assert_eq!(count("/route", vec![xff("10.0.0.2")]).await, 0);
    // ip: by the address X-Forwarded-For names, since the peer is trusted.
    assert_eq!(count("/ip", vec![xff("10.0.0.1")]).await, 2);
    assert_eq!(count("/ip", vec![xff("10.0.0.2")]).await, 2);
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_peers() {
    let upstream = EchoUpstream::start("u").await;
    let routes = route(&limit("ip", 1, "1m", 0));
    let trusting = TestGateway::start(&config(
        &upstream,
        "trusted_proxies: [127.0.0.1/32]",
        "",
        &routes,
    ))
    .await;
    let untrusting = TestGateway::start(&config(&upstream, "", "", &routes)).await;
    for (gw, second_client) in [(&trusting, 200), (&untrusting, 429)] {
        let first = call(gw, "/r", &[("x-forwarded-for", "203.0.113.1")]).await;
        assert_eq!(first.status, 200);
        let again = call(gw, "/r", &[("x-forwarded-for", "203.0.113.1")]).await;
        assert_eq!(again.status, 429);
        // Another client behind the proxy; from an untrusted peer, the header is a lie that
        // must not buy a fresh budget.
        let other = call(gw, "/r", &[("x-forwarded-for", "203.0.113.2")]).await;
        assert_eq!(other.status, second_client);
    }
}

#[tokio::test]
async fn a_reload_keeps_a_spent_budget_unless_the_limit_changed() {
    let upstream = EchoUpstream::start("u").await;
    let routes = route(&limit("route", 2, "1m", 0));
    let gw = TestGateway::start(&config(&upstream, "", "", &routes)).await;
    assert_eq!(allowed_of(&gw, 3, &[]).await, 2);
    // Another route added: r's limit is unchanged, and so is its spent budget.
    let more = routes.clone() + "  - name: other\n    match: {path: /other}\n    upstream: u\n";
    std::fs::write(gw.path("gateway.yaml"), config(&upstream, "", "", &more)).unwrap();
    assert!(matches!(
        gw.handle.reload().await,
        gatehouse::server::reload::ReloadOutcome::Applied { .. }
    ));
    assert_eq!(call(&gw, "/other", &[]).await.status, 200);
    assert_eq!(call(&gw, "/r", &[]).await.status, 429, "still spent");
    // A changed limit starts fresh.
    let changed = route(&limit("route", 3, "1m", 0));
    std::fs::write(gw.path("gateway.yaml"), config(&upstream, "", "", &changed)).unwrap();
    assert!(matches!(
        gw.handle.reload().await,
        gatehouse::server::reload::ReloadOutcome::Applied { .. }
    ));
    assert_eq!(allowed_of(&gw, 4, &[]).await, 3);
}

/// gateway.yaml keeping limits in `redis` with `on_store_error`, one route limited by route.
fn redis_config(
    upstream: &EchoUpstream,
    redis: &RedisServer,
    on_store_error: &str,
    limits: &str,
) -> String {
    let url = format!("url: {}", redis.url());
    store_config(upstream, &url, on_store_error, limits)
}

/// [`redis_config`] with `where_` (the lines under `redis:` that say where and how to log in)
/// instead of a plain server's URL.
fn store_config(
    upstream: &EchoUpstream,
    where_: &str,
    on_store_error: &str,
    limits: &str,
) -> String {
    let where_: String = where_.lines().map(|l| format!("  {l}\n")).collect();
    let top = format!(
        "redis:\n{where_}  connect_timeout: 500ms\n  command_timeout: 250ms\n  reconnect_max_backoff: 200ms\n\
         rate_limit:\n  store: redis\n  on_store_error: {on_store_error}\n"
    );
    config(upstream, "", &top, &route(limits))
}

#[tokio::test]
async fn two_gateways_sharing_one_redis_enforce_one_combined_limit() {
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start("u").await;
    let yaml = redis_config(&upstream, &redis, "local", &limit("route", 10, "1m", 0));
    let one = TestGateway::start(&yaml).await;
    let two = TestGateway::start(&yaml).await;
    let mut allowed = 0;
    for i in 0..30 {
        let gw = if i % 2 == 0 { &one } else { &two };
        let got = call(gw, "/r", &[]).await;
        match got.status.as_u16() {
            200 => allowed += 1,
            429 => assert!(got.header("retry-after").is_some()),
            other => panic!("unexpected {other}: {}", got.text()),
        }
    }
    assert_eq!(allowed, 10, "one budget across both instances");
    assert_eq!(upstream.requests(), 10);
    assert_eq!(metric(&one, "gatehouse_redis_up").await, 1.0);
    let timed = metric(&one, "gatehouse_redis_command_duration_seconds_count").await
        + metric(&two, "gatehouse_redis_command_duration_seconds_count").await;
    assert_eq!(timed, 30.0, "every decision's round trip is timed");
}

/// Spends requests until Redis is seen down, then returns the answers of `n` more.
async fn after_redis_dies(gw: &TestGateway, redis: &mut RedisServer, n: usize) -> Vec<Got> {
    redis.kill();
    let mut answers = Vec::new();
    for _ in 0..n {
        let got = call(gw, "/r", &[]).await;
        assert_ne!(got.status.as_u16(), 500, "{}", got.text());
        answers.push(got);
    }
    answers
}

#[tokio::test]
async fn redis_down_local_limits_per_instance_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start();
    let upstream = EchoUpstream::start("u").await;
    let yaml = redis_config(&upstream, &redis, "local", &limit("route", 3, "1m", 0));
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(allowed_of(&gw, 2, &[]).await, 2);
    let answers = after_redis_dies(&gw, &mut redis, 5).await;
    let statuses: Vec<u16> = answers.iter().map(|g| g.status.as_u16()).collect();
    // The local fallback counts from a fresh bucket at the configured limit.
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // 20 s a request at the steady rate, less the time the fallback took: a worker whose
    // connection was first made while Redis was down waited up to `connect_timeout` for it.
    let retry: u64 = answers[3].header("retry-after").unwrap().parse().unwrap();
    assert!((18..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(answers[3].header("ratelimit-limit"), Some("3"));
    assert!(
        metric(
            &gw,
            r#"gatehouse_rate_limit_store_errors_total{store="redis",kind="failed"}"#
        )
        .await
            + metric(
                &gw,
                r#"gatehouse_rate_limit_store_errors_total{store="redis",kind="disconnected"}"#
            )
            .await
            >= 5.0
    );
    assert_eq!(
        metric(&gw, r#"gatehouse_rate_limit_store_fallback{store="redis"}"#).await,
        1.0
    );
    assert_eq!(metric(&gw, "gatehouse_redis_up").await, 0.0);
    let ready = get(&gw.url("/readyz")).await;
    assert_eq!(ready.status, 200, "degraded but ready: {}", ready.text());
    assert_eq!(ready.json()["rate_limit"]["state"], "down");
    // Redis back on the same port, empty: shared limiting resumes with no restart.
    assert!(redis.spawn(), "redis restarts on port {}", redis.port);
    eventually("decisions go to redis again", || async {
        let got = call(&gw, "/r", &[]).await;
        assert_ne!(got.status.as_u16(), 500);
        metric(&gw, "gatehouse_redis_up").await == 1.0
    })
    .await;
    let keys = redis.command("KEYS gatehouse:rl:*").expect("KEYS");
    assert!(keys.starts_with("*1\r\n"), "one bucket in redis: {keys}");
    assert_eq!(
        metric(&gw, r#"gatehouse_rate_limit_store_fallback{store="redis"}"#).await,
        0.0
    );
    let ready = get(&gw.url("/readyz")).await;
    assert_eq!(ready.json()["rate_limit"]["state"], "up");
}

#[tokio::test]
async fn redis_down_deny_answers_503_and_is_not_ready() {
    let mut redis = RedisServer::start();
    let upstream = EchoUpstream::start("u").await;
    let yaml = redis_config(&upstream, &redis, "deny", &limit("route", 100, "1m", 0));
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(allowed_of(&gw, 1, &[]).await, 1);
    let before = upstream.requests();
    for got in after_redis_dies(&gw, &mut redis, 3).await {
        assert_eq!(got.status, 503, "{}", got.text());
        assert_eq!(got.json()["error"], "rate_limit_store_unavailable");
    }
    assert_eq!(
        upstream.requests(),
        before,
        "refused requests never go upstream"
    );
    let ready = get(&gw.url("/readyz")).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["rate_limit"]["state"], "down");
}

#[tokio::test]
async fn redis_down_allow_lets_requests_through() {
    let mut redis = RedisServer::start();
    let upstream = EchoUpstream::start("u").await;
    let yaml = redis_config(&upstream, &redis, "allow", &limit("route", 1, "1m", 0));
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(allowed_of(&gw, 2, &[]).await, 1);
    for got in after_redis_dies(&gw, &mut redis, 3).await {
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(ratelimit_headers(&got), (None, None, None));
    }
    let ready = get(&gw.url("/readyz")).await;
    assert_eq!(ready.status, 200);
}

/// An outage is one warning when it starts and one line when it ends, however many requests
/// meet it, from the binary as an operator runs it.
#[tokio::test]
async fn store_outage_and_recovery_are_logged_once_each() {
    let mut redis = RedisServer::start();
    let upstream = EchoUpstream::start("u").await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:PORT\n  workers: 2\nlogging:\n  format: json\n  level: info\n\
         redis:\n  url: {}\n  connect_timeout: 500ms\n  command_timeout: 250ms\n  \
         reconnect_max_backoff: 200ms\nrate_limit:\n  store: redis\n  on_store_error: local\n\
         upstreams:\n  u:\n    targets: [{}]\nroutes:\n{}",
        redis.url(),
        upstream.url(),
        route(&limit("ip", 1000, "1m", 0))
    );
    let gw = GatehouseProcess::start(&config, &[]).await;
    let url = gw.url("/r");
    assert_eq!(get(&url).await.status, 200);
    redis.kill();
    for _ in 0..20 {
        assert_eq!(get(&url).await.status, 200, "local fallback serves");
    }
    assert!(redis.spawn(), "redis restarts on port {}", redis.port);
    let recovered = |gw: &GatehouseProcess| {
        gw.log_lines()
            .iter()
            .filter(|l| l.to_string().contains("rate-limit store recovered"))
            .count()
    };
    eventually("recovery logged", || async {
        assert_eq!(get(&url).await.status, 200);
        recovered(&gw) >= 1
    })
    .await;
    for _ in 0..20 {
        assert_eq!(get(&url).await.status, 200);
    }
    let lines = gw.log_lines();
    let count = |text: &str| {
        lines
            .iter()
            .filter(|l| l.to_string().contains(text))
            .count()
    };
    assert_eq!(count("rate-limit store unavailable"), 1, "{lines:#?}");
    assert_eq!(count("rate-limit store recovered"), 1, "{lines:#?}");
}

/// `explain` counts a caller with a valid token by its `sub`, and an anonymous one by address.
#[test]
fn explain_names_the_sub_a_user_limit_counts() {
    let yaml = "server:\n  listen: 127.0.0.1:0\njwt:\n  providers:\n    p:\n      \
                algorithms: [HS256]\n      secret: ${JWT_SECRET}\nroutes:\n  - name: r\n    \
                match: {path: /r}\n    respond: {body: hi}\n    auth: {jwt: p, optional: true}\n    \
                rate_limit: [{by: user, limit: 100, per: 1m}]\n";
    let dir = config_dir(&[("gateway.yaml", yaml)]);
    let config = dir.path().join("gateway.yaml");
    let explain = |headers: &[&str]| {
        let mut args = vec!["explain", "-c", path_str(&config), "GET", "/r"];
        for header in headers {
            args.extend(["-H", header]);
        }
        let out = gatehouse_with_env(&args, &[("JWT_SECRET", SECRET)]);
        assert!(out.status.success(), "{out:?}");
        stdout(&out)
    };
    let auth = format!("Authorization: {}", token("dana"));
    let out = explain(&[&auth]);
    assert!(
        out.contains("  limit:    user: 100 per 1m -> key: sub dana\n"),
        "{out}"
    );
    let out = explain(&[]);
    assert!(
        out.contains("-> key: anonymous: the client address"),
        "{out}"
    );
}

fn password_options() -> RedisOptions {
    RedisOptions {
        password: Some("s3cret-pw".into()),
        ..RedisOptions::default()
    }
}

/// `redis.password`, and a password in the URL, log in to a `--requirepass` Redis: two
/// gateways, one of each, spend one budget there. `deny` turns any store error into a 503,
/// which `allowed_of` would not let pass.
#[tokio::test]
async fn a_password_protected_redis_admits_exactly_the_limit() {
    let redis = RedisServer::start_with(password_options());
    let upstream = EchoUpstream::start("u").await;
    let five = limit("route", 5, "1m", 0);
    let by_key = format!("url: {}\npassword: s3cret-pw", redis.url());
    let by_url = format!("url: redis://:s3cret-pw@127.0.0.1:{}/0", redis.port);
    let one = TestGateway::start(&store_config(&upstream, &by_key, "deny", &five)).await;
    let two = TestGateway::start(&store_config(&upstream, &by_url, "deny", &five)).await;
    assert_eq!(allowed_of(&one, 3, &[]).await, 3);
    assert_eq!(allowed_of(&two, 4, &[]).await, 2);
    assert_eq!(allowed_of(&one, 2, &[]).await, 0);
    assert_eq!(upstream.requests(), 5);
    assert_eq!(redis.integer("DBSIZE"), 1, "one bucket, in redis");
    assert_eq!(metric(&one, "gatehouse_redis_up").await, 1.0);
}

/// Every request of a gateway that cannot use its store is answered by `on_store_error` at
/// once: with `deny`, 503 `rate_limit_store_unavailable` (never a 500), and not ready.
async fn deny_answers_503_promptly(gw: &TestGateway, upstream: &EchoUpstream) {
    for i in 0..4 {
        let started = std::time::Instant::now();
        let got = call(gw, "/r", &[]).await;
        // The first request of a worker may wait for its connection (connect_timeout 500 ms).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "request {i} took {:?}",
            started.elapsed()
        );
        assert_eq!(got.status, 503, "request {i}: {}", got.text());
        assert_eq!(got.json()["error"], "rate_limit_store_unavailable");
    }
    assert_eq!(upstream.requests(), 0, "refused requests never go upstream");
    assert_eq!(metric(gw, "gatehouse_redis_up").await, 0.0);
    let ready = get(&gw.url("/readyz")).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["rate_limit"]["state"], "down");
}

#[tokio::test]
async fn a_wrong_redis_password_is_a_store_error_and_deny_answers_503() {
    let redis = RedisServer::start_with(password_options());
    let upstream = EchoUpstream::start("u").await;
    let where_ = format!("url: {}\npassword: not-the-password", redis.url());
    let yaml = store_config(&upstream, &where_, "deny", &limit("route", 5, "1m", 0));
    let gw = TestGateway::start(&yaml).await;
    deny_answers_503_promptly(&gw, &upstream).await;
    assert_eq!(redis.integer("DBSIZE"), 0);
}

/// `rediss://` trusts only the built-in Mozilla roots when `ca_file` is not set, so a Redis
/// whose certificate a private CA signed is a store error, never a silent plain or unverified
/// connection.
#[tokio::test]
async fn rediss_with_an_untrusted_certificate_is_a_store_error_and_deny_answers_503() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start_with(RedisOptions {
        tls: Some(TlsFiles::generate(dir.path())),
        ..RedisOptions::default()
    });
    let upstream = EchoUpstream::start("u").await;
    let yaml = redis_config(&upstream, &redis, "deny", &limit("route", 5, "1m", 0));
    assert!(yaml.contains("url: rediss://127.0.0.1:"), "{yaml}");
    let gw = TestGateway::start(&yaml).await;
    deny_answers_503_promptly(&gw, &upstream).await;
}

/// A TLS-only Redis whose certificate the test CA signed, and that CA's PEM file.
fn tls_redis(dir: &std::path::Path) -> (RedisServer, std::path::PathBuf) {
    let tls = TlsFiles::generate(dir);
    let ca = tls.ca.clone();
    let redis = RedisServer::start_with(RedisOptions {
        tls: Some(tls),
        ..RedisOptions::default()
    });
    (redis, ca)
}

/// `redis.ca_file` naming the private CA: the limit is enforced through the TLS Redis, and
/// `deny` (any store error a 503) shows every decision came from there.
#[tokio::test]
async fn rediss_with_ca_file_enforces_the_limit_through_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (redis, ca) = tls_redis(dir.path());
    let upstream = EchoUpstream::start("u").await;
    let where_ = format!("url: {}\nca_file: {}", redis.url(), common::path_str(&ca));
    let yaml = store_config(&upstream, &where_, "deny", &limit("route", 5, "1m", 0));
    assert!(yaml.contains("url: rediss://127.0.0.1:"), "{yaml}");
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(allowed_of(&gw, 8, &[]).await, 5);
    assert_eq!(upstream.requests(), 5);
    assert_eq!(metric(&gw, "gatehouse_redis_up").await, 1.0);
}

/// A reload after `ca_file`'s content changed (same path) makes new connections that trust
/// the new certificates: a wrong CA is a store error until the right one is written.
#[tokio::test]
async fn a_reload_with_a_changed_ca_file_reconnects_trusting_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (redis, ca) = tls_redis(dir.path());
    let other = tempfile::tempdir().expect("temp dir");
    let wrong_ca = TlsFiles::generate(other.path()).ca;
    let upstream = EchoUpstream::start("u").await;
    let ca_file = other.path().join("trusted.pem");
    std::fs::copy(&wrong_ca, &ca_file).expect("copy CA");
    let where_ = format!(
        "url: {}\nca_file: {}",
        redis.url(),
        common::path_str(&ca_file)
    );
    let yaml = store_config(&upstream, &where_, "deny", &limit("route", 5, "1m", 0));
    let gw = TestGateway::start(&yaml).await;
    deny_answers_503_promptly(&gw, &upstream).await;

    std::fs::copy(&ca, &ca_file).expect("copy CA");
    assert!(matches!(
        gw.handle.reload().await,
        gatehouse::server::reload::ReloadOutcome::Applied { .. }
    ));
    assert_eq!(allowed_of(&gw, 8, &[]).await, 5);
    assert_eq!(upstream.requests(), 5);
}

/// `redis.cluster`: buckets hash-tagged by client land on all three nodes, and each client
/// gets exactly its limit through the gateway.
#[tokio::test]
async fn a_gateway_on_a_redis_cluster_admits_exactly_the_limit_per_client() {
    let cluster = RedisCluster::start().await;
    let upstream = EchoUpstream::start("u").await;
    let where_ = format!("cluster: [{}]", cluster.urls().join(", "));
    let yaml = store_config(
        &upstream,
        &where_,
        "deny",
        &limit("header:X-Client", 3, "1m", 0),
    );
    let gw = TestGateway::start(&yaml).await;
    // Each of 30 buckets misses a given node with probability 2/3: all three get some.
    for client in 0..30 {
        let id = format!("client-{client}");
        let allowed = allowed_of(&gw, 5, &[("x-client", id.as_str())]).await;
        assert_eq!(allowed, 3, "{id}");
    }
    assert_eq!(upstream.requests(), 90);
    let keys_per_node = cluster.keys_per_node();
    assert_eq!(keys_per_node.iter().sum::<i64>(), 30, "{keys_per_node:?}");
    assert!(
        keys_per_node.iter().all(|&n| n > 0),
        "spread over every node: {keys_per_node:?}"
    );
}
