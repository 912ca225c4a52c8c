//! The response cache in Redis, end to end: real gateways in front of a scripted origin, with a
//! real `redis-server` the test starts, kills and restarts.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin::{Answer, Origin};
use common::redis::RedisServer;
use common::{client, send, server_yaml, Got, TestGateway, DEADLINE};
use http::Request;
use http_body_util::Full;

async fn gateway(origin: &Origin, redis: &RedisServer, route_cache: &str) -> TestGateway {
    let yaml = format!(
        "{}redis:\n  url: {}\n  command_timeout: 250ms\ncache:\n  store: redis\n\
         upstreams:\n  o:\n    targets: [{}]\n\
         routes:\n  - name: c\n    match: {{path: /c}}\n    upstream: o\n    cache: {route_cache}\n",
        server_yaml(""),
        redis.url(),
        origin.url()
    );
    TestGateway::start(&yaml).await
}

async fn get(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut builder = Request::get(gw.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(&client(), builder.body(Full::<Bytes>::default()).unwrap()).await
}

fn x_cache(got: &Got) -> &str {
    got.header("x-cache").unwrap_or("<none>")
}

/// Two instances share one Redis cache: what one stored, the other serves.
#[tokio::test]
async fn two_gateways_share_one_redis_cache() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    origin.set(
        "/c/shared",
        Answer::ok("shared {n}", &[("cache-control", "max-age=60")]),
    );
    origin.set(
        "/c/lang",
        Answer::ok(
            "lang {n}",
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        ),
    );
    let a = gateway(&origin, &redis, "{ttl: 30s}").await;
    let b = gateway(&origin, &redis, "{ttl: 30s}").await;
    let first = get(&a, "/c/shared", &[]).await;
    assert_eq!(
        (x_cache(&first), first.text()),
        ("MISS", "shared 1".to_string())
    );
    // The store is written once the body is complete, in the background: wait for it in Redis
    // (a request to the other instance before that would be a miss of its own).
    common::eventually("the entry is in redis", || async {
        redis.integer("EXISTS gwcache:127.0.0.1/c/shared") == 1
    })
    .await;
    let hit = get(&b, "/c/shared", &[]).await;
    assert_eq!((x_cache(&hit), hit.text()), ("HIT", "shared 1".to_string()));
    assert!(hit.header("age").is_some());
    assert_eq!(origin.count("/c/shared"), 1);
    // The entry expires in Redis with its freshness.
    let ttl = redis.integer("PTTL gwcache:127.0.0.1/c/shared");
    assert!((1..=60_000).contains(&ttl), "PTTL {ttl}");

    // Variants go through a directory: each instance finds the other's. Stored then: the
    // shared entry, the URL's directory and the en variant.
    get(&a, "/c/lang", &[("accept-language", "en")]).await;
    common::eventually("the variant is in redis", || async {
        redis.integer("DBSIZE") == 3
    })
    .await;
    let en = get(&b, "/c/lang", &[("accept-language", "en")]).await;
    assert_eq!((x_cache(&en), en.text()), ("HIT", "lang 1".to_string()));
    let fr = get(&b, "/c/lang", &[("accept-language", "fr")]).await;
    assert_eq!((x_cache(&fr), fr.text()), ("MISS", "lang 2".to_string()));
    assert_eq!(origin.count("/c/lang"), 2);
}

/// Redis down: requests are served from the origin at once (`X-Cache: BYPASS`), `/readyz`
/// shows the cache degraded but stays 200; Redis back: caching resumes without a restart.
#[tokio::test]
async fn a_redis_outage_bypasses_the_cache_and_recovers() {
    let mut redis = RedisServer::start();
    let origin = Origin::start().await;
    origin.set(
        "/c/o",
        Answer::ok("o {n}", &[("cache-control", "max-age=60")]),
    );
    let gw = gateway(&origin, &redis, "{ttl: 30s}").await;
    get(&gw, "/c/o", &[]).await;
    common::eventually("stored", || async {
        x_cache(&get(&gw, "/c/o", &[]).await) == "HIT"
    })
    .await;

    redis.kill();
    let before = origin.count("/c/o");
    for _ in 0..3 {
        let started = Instant::now();
        let got = get(&gw, "/c/o", &[]).await;
        assert_eq!((got.status.as_u16(), x_cache(&got)), (200, "BYPASS"));
        // command_timeout is 250 ms; a loaded machine gets a generous bound.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(origin.count("/c/o"), before + 3);
    let ready = get(&gw, "/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    let body = ready.json();
    assert_eq!(body["cache"]["store"], "redis");
    assert_eq!(body["cache"]["state"], "down");
    assert_eq!(body["cache"]["degraded"], true);
    let errors = common::metric(
        &gw,
        "gatehouse_cache_results_total{route=\"c\",result=\"store_error\"}",
    )
    .await;
    assert!(errors >= 3.0, "{errors}");

    assert!(redis.spawn(), "redis restarts on port {}", redis.port);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = get(&gw, "/c/o", &[]).await;
        if x_cache(&got) == "HIT" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caching did not resume: {:?}",
            got.headers
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&gw, "/readyz", &[]).await.json()["cache"]["state"],
        "up"
    );
}

/// A value under a cache key that this gateway did not write is a miss, never served.
#[tokio::test]
async fn values_that_do_not_decode_are_misses() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    origin.set(
        "/c/x",
        Answer::ok("real", &[("cache-control", "max-age=60")]),
    );
    let gw = gateway(&origin, &redis, "{ttl: 30s}").await;
    assert_eq!(
        redis
            .command("SET gwcache:127.0.0.1/c/x GWCE-not-an-entry")
            .as_deref(),
        Some("+OK\r\n")
    );
    let got = get(&gw, "/c/x", &[]).await;
    assert_eq!((x_cache(&got), got.text()), ("MISS", "real".to_string()));
    common::eventually("the real entry replaces it", || async {
        let got = get(&gw, "/c/x", &[]).await;
        x_cache(&got) == "HIT" && got.text() == "real"
    })
    .await;
}
