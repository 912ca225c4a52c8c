//! The response cache end to end, memory store: a real gateway in front of a scripted origin
//! that counts what reaches it. Each rule of RFC 9111 the cache applies has its own test, named
//! after its section; the origin's request count is the outcome (a hit never reaches it).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::origin::{Answer, Origin};
use common::{client, send, server_yaml, Got, TestGateway};
use http::Request;
use http_body_util::Full;

const SECRET: &str = "cache-test-secret-cache-test-secret!";

/// A gateway with one cached route `/c` (prefix) to `origin`, with `cache` settings `cache`
/// (YAML flow mapping) and `extra` route settings.
async fn gateway(origin: &Origin, cache: &str, extra: &str) -> TestGateway {
    let yaml = format!(
        "{}jwt:\n  providers:\n    p:\n      algorithms: [HS256]\n      secret: {SECRET}\n\
         upstreams:\n  o:\n    targets: [{}]\n\
         routes:\n  - name: c\n    match: {{path: /c}}\n    upstream: o\n    cache: {cache}\n{extra}",
        server_yaml(""),
        origin.url()
    );
    TestGateway::start(&yaml).await
}

async fn get(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Got {
    request(gw, "GET", path, headers).await
}

async fn request(gw: &TestGateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut builder = Request::builder().method(method).uri(gw.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(&client(), builder.body(Full::<Bytes>::default()).unwrap()).await
}

/// `count` GETs of `path` sent at once.
async fn concurrently(gw: &TestGateway, path: &str, count: usize) -> Vec<Got> {
    let client = client();
    let requests = (0..count).map(|_| {
        let request = Request::get(gw.url(path))
            .body(Full::<Bytes>::default())
            .unwrap();
        send(&client, request)
    });
    futures_util::future::join_all(requests).await
}

/// `gatehouse_cache_results_total` of `route` and `result`.
async fn results(gw: &TestGateway, route: &str, result: &str) -> f64 {
    let series = format!("gatehouse_cache_results_total{{route=\"{route}\",result=\"{result}\"}}");
    common::metric(gw, &series).await
}

fn x_cache(got: &Got) -> &str {
    got.header("x-cache").unwrap_or("<none>")
}

fn token(sub: &str) -> String {
    common::bearer(SECRET, sub)
}

/// RFC 9111 4: a fresh stored response answers without the origin, with `Age` and `X-Cache`.
#[tokio::test]
async fn rfc9111_4_a_fresh_response_is_served_from_the_cache() {
    let origin = Origin::start().await;
    origin.set(
        "/c/a",
        Answer::ok(
            "answer {n}",
            &[("cache-control", "max-age=60"), ("x-up", "1")],
        ),
    );
    let gw = gateway(&origin, "{ttl: 5s}", "").await;
    let first = get(&gw, "/c/a", &[]).await;
    assert_eq!((first.status.as_u16(), x_cache(&first)), (200, "MISS"));
    assert_eq!(first.text(), "answer 1");
    let mut ids = std::collections::HashSet::new();
    for _ in 0..3 {
        let hit = get(&gw, "/c/a", &[]).await;
        assert_eq!((hit.status.as_u16(), x_cache(&hit)), (200, "HIT"));
        assert_eq!(hit.text(), "answer 1");
        assert_eq!(hit.header("x-up"), Some("1"), "stored headers kept");
        let age: u64 = hit.header("age").expect("Age on a hit").parse().unwrap();
        assert!(age <= 60, "{age}");
        // Each of the fields the gateway sets on an answer from the cache is there once, with
        // this request's value.
        for name in ["age", "x-cache", "x-request-id"] {
            assert_eq!(hit.headers.get_all(name).iter().count(), 1, "{name}");
        }
        let id = hit
            .header("x-request-id")
            .expect("per-request headers still added");
        assert_eq!(id.len(), 32, "a generated request id: {id:?}");
        assert!(ids.insert(id.to_owned()), "a new id per hit");
    }
    let echoed = get(&gw, "/c/a", &[("x-request-id", "client-chosen-7")]).await;
    assert_eq!(x_cache(&echoed), "HIT");
    assert_eq!(echoed.header("x-request-id"), Some("client-chosen-7"));
    assert_eq!(origin.count("/c/a"), 1);
    assert_eq!(results(&gw, "c", "hit").await, 4.0);
    assert_eq!(results(&gw, "c", "miss").await, 1.0);
    assert!(common::metric(&gw, "gatehouse_cache_entries{store=\"memory\"}").await >= 1.0);
    // Another URL, another entry; the query is part of the key.
    origin.set(
        "/c/a?x=1",
        Answer::ok("q", &[("cache-control", "max-age=60")]),
    );
    assert_eq!(x_cache(&get(&gw, "/c/a?x=1", &[]).await), "MISS");
    assert_eq!(x_cache(&get(&gw, "/c/a?x=1", &[]).await), "HIT");
    assert_eq!(origin.count("/c/a?x=1"), 1);
}

/// RFC 9111 4.2.2: the route `ttl` is the lifetime of a response that states none, and only
/// for a heuristically cacheable status; with explicit freshness any final status may be
/// stored.
#[tokio::test]
async fn rfc9111_4_2_2_the_route_ttl_applies_only_without_explicit_freshness() {
    let origin = Origin::start().await;
    origin.set("/c/plain", Answer::ok("plain", &[]));
    origin.set("/c/gone", Answer::status(410, "gone", &[]));
    origin.set(
        "/c/found",
        Answer::status(302, "", &[("location", "/elsewhere")]),
    );
    origin.set(
        "/c/found-fresh",
        Answer::status(
            302,
            "",
            &[("location", "/x"), ("cache-control", "max-age=60")],
        ),
    );
    origin.set(
        "/c/expired",
        Answer::ok("old", &[("expires", "not a date")]),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    for (path, stored) in [
        ("/c/plain", true),
        ("/c/gone", true),
        ("/c/found", false),
        ("/c/found-fresh", true),
        ("/c/expired", false),
    ] {
        get(&gw, path, &[]).await;
        let second = get(&gw, path, &[]).await;
        assert_eq!(
            x_cache(&second),
            if stored { "HIT" } else { "MISS" },
            "{path}"
        );
        assert_eq!(origin.count(path), if stored { 1 } else { 2 }, "{path}");
    }
}

/// RFC 9111 3 and 5.2.2: what must never be stored.
#[tokio::test]
async fn rfc9111_3_responses_that_must_not_be_stored_are_not() {
    let origin = Origin::start().await;
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        (
            "/c/no-store",
            vec![("cache-control", "no-store, max-age=60")],
        ),
        ("/c/private", vec![("cache-control", "private, max-age=60")]),
        (
            "/c/cookie",
            vec![("cache-control", "max-age=60"), ("set-cookie", "id=1")],
        ),
        (
            "/c/vary-any",
            vec![("cache-control", "max-age=60"), ("vary", "*")],
        ),
        (
            "/c/partial",
            vec![
                ("cache-control", "max-age=60"),
                ("content-range", "bytes 0-0/2"),
            ],
        ),
    ];
    for (path, headers) in &cases {
        let status = if *path == "/c/partial" { 206 } else { 200 };
        origin.set(path, Answer::status(status, "x", headers));
    }
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    for (path, _) in &cases {
        get(&gw, path, &[]).await;
        get(&gw, path, &[]).await;
        assert_eq!(origin.count(path), 2, "{path} was stored");
    }
}

/// RFC 9111 3.5: a request with `Authorization` is stored only on a per-user route or when
/// the response says `public`, `s-maxage` or `must-revalidate`.
#[tokio::test]
async fn rfc9111_3_5_authorized_requests_are_stored_only_when_allowed() {
    let origin = Origin::start().await;
    origin.set(
        "/c/mine",
        Answer::ok("mine", &[("cache-control", "max-age=60")]),
    );
    origin.set(
        "/c/public",
        Answer::ok("pub", &[("cache-control", "public, max-age=60")]),
    );
    // Optional auth, not per user: the token is verified, the key is the URL.
    let gw = gateway(
        &origin,
        "{ttl: 60s, per_user: false}",
        "    auth: {jwt: p, optional: true}\n",
    )
    .await;
    let alice = token("alice");
    for _ in 0..2 {
        get(&gw, "/c/mine", &[("authorization", &alice)]).await;
        get(&gw, "/c/public", &[("authorization", &alice)]).await;
    }
    assert_eq!(
        origin.count("/c/mine"),
        2,
        "a private answer to an authorized request is not shared"
    );
    assert_eq!(origin.count("/c/public"), 1);
}

/// Per-user routes: user A never receives user B's cached body.
#[tokio::test]
async fn per_user_entries_never_cross_users() {
    let origin = Origin::start().await;
    origin.set(
        "/c/me",
        Answer::ok("profile {n}", &[("cache-control", "max-age=60")]),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "    auth: {jwt: p}\n").await;
    let (alice, bob) = (token("alice"), token("bob"));
    let a1 = get(&gw, "/c/me", &[("authorization", &alice)]).await;
    let b1 = get(&gw, "/c/me", &[("authorization", &bob)]).await;
    assert_eq!((a1.text(), x_cache(&a1)), ("profile 1".to_string(), "MISS"));
    assert_eq!((b1.text(), x_cache(&b1)), ("profile 2".to_string(), "MISS"));
    let a2 = get(&gw, "/c/me", &[("authorization", &alice)]).await;
    let b2 = get(&gw, "/c/me", &[("authorization", &bob)]).await;
    assert_eq!((a2.text(), x_cache(&a2)), ("profile 1".to_string(), "HIT"));
    assert_eq!((b2.text(), x_cache(&b2)), ("profile 2".to_string(), "HIT"));
    // The cache never skips auth: no token is 401, not a hit.
    assert_eq!(get(&gw, "/c/me", &[]).await.status, 401);
    assert_eq!(origin.count("/c/me"), 2);
}

/// RFC 9111 4.1: a response's `Vary` keeps variants apart; the route's `vary` does too.
#[tokio::test]
async fn rfc9111_4_1_vary_keeps_variants_apart() {
    let origin = Origin::start().await;
    origin.set(
        "/c/v",
        Answer::ok(
            "lang {n}",
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        ),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    let en = get(&gw, "/c/v", &[("accept-language", "en")]).await;
    let fr = get(&gw, "/c/v", &[("accept-language", "fr")]).await;
    assert_eq!((en.text(), fr.text()), ("lang 1".into(), "lang 2".into()));
    let en2 = get(&gw, "/c/v", &[("accept-language", "en")]).await;
    let fr2 = get(&gw, "/c/v", &[("accept-language", "fr")]).await;
    assert_eq!((en2.text(), x_cache(&en2)), ("lang 1".into(), "HIT"));
    assert_eq!((fr2.text(), x_cache(&fr2)), ("lang 2".into(), "HIT"));
    assert_eq!(origin.count("/c/v"), 2);

    let origin = Origin::start().await;
    origin.set(
        "/c/t",
        Answer::ok("tenant {n}", &[("cache-control", "max-age=60")]),
    );
    let gw = gateway(&origin, "{vary: [X-Tenant]}", "").await;
    assert_eq!(
        get(&gw, "/c/t", &[("x-tenant", "a")]).await.text(),
        "tenant 1"
    );
    assert_eq!(
        get(&gw, "/c/t", &[("x-tenant", "b")]).await.text(),
        "tenant 2"
    );
    assert_eq!(
        get(&gw, "/c/t", &[("x-tenant", "a")]).await.text(),
        "tenant 1"
    );
    assert_eq!(origin.count("/c/t"), 2);
}

/// RFC 9111 5.2.1: request directives. `no-store` bypasses, `no-cache` revalidates,
/// `only-if-cached` answers 504 when nothing stored can answer.
#[tokio::test]
async fn rfc9111_5_2_1_request_directives() {
    let origin = Origin::start().await;
    origin.set(
        "/c/r",
        Answer::ok(
            "r {n}",
            &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
        ),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    let miss = get(&gw, "/c/r", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(miss.status, 504);
    assert_eq!(miss.json()["error"], "not_cached");
    assert_eq!(x_cache(&miss), "MISS");
    assert_eq!(origin.count("/c/r"), 0);
    let bypass = get(&gw, "/c/r", &[("cache-control", "no-store")]).await;
    assert_eq!(x_cache(&bypass), "BYPASS");
    assert_eq!(
        x_cache(&get(&gw, "/c/r", &[]).await),
        "MISS",
        "no-store stored nothing"
    );
    assert_eq!(
        x_cache(&get(&gw, "/c/r", &[("cache-control", "only-if-cached")]).await),
        "HIT"
    );
    let before = origin.count("/c/r");
    let revalidated = get(&gw, "/c/r", &[("cache-control", "no-cache")]).await;
    assert_eq!(
        origin.count("/c/r"),
        before + 1,
        "no-cache goes to the origin"
    );
    let seen = origin.last("/c/r").unwrap();
    assert_eq!(
        seen.headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap()),
        Some("\"v1\"")
    );
    assert_eq!(revalidated.status, 200);
}

/// RFC 9111 4.3: a stale entry with validators is revalidated; a 304 refreshes the stored
/// headers (4.3.4) and the stored body answers.
#[tokio::test]
async fn rfc9111_4_3_stale_entries_are_revalidated_and_304_refreshes_them() {
    let origin = Origin::start().await;
    origin.set(
        "/c/e",
        Answer::ok(
            "etagged",
            &[
                ("cache-control", "max-age=0"),
                ("etag", "\"abc\""),
                ("x-v", "1"),
            ],
        ),
    );
    origin.set(
        "/c/lm",
        Answer::ok(
            "dated",
            &[
                ("cache-control", "max-age=0"),
                ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
        ),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    assert_eq!(get(&gw, "/c/e", &[]).await.text(), "etagged");
    origin.set(
        "/c/e",
        Answer::status(
            304,
            "",
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"abc\""),
                ("x-v", "2"),
            ],
        ),
    );
    let refreshed = get(&gw, "/c/e", &[]).await;
    let seen = origin.last("/c/e").unwrap();
    assert_eq!(seen.headers.get("if-none-match").unwrap(), "\"abc\"");
    assert_eq!(
        (refreshed.status.as_u16(), refreshed.text()),
        (200, "etagged".to_string())
    );
    assert_eq!(
        refreshed.header("x-v"),
        Some("2"),
        "headers updated from the 304"
    );
    // Now fresh for 60 s: no more requests.
    let hit = get(&gw, "/c/e", &[]).await;
    assert_eq!((x_cache(&hit), hit.text()), ("HIT", "etagged".to_string()));
    assert_eq!(origin.count("/c/e"), 2);

    get(&gw, "/c/lm", &[]).await;
    origin.set(
        "/c/lm",
        Answer::status(304, "", &[("cache-control", "max-age=60")]),
    );
    let again = get(&gw, "/c/lm", &[]).await;
    assert_eq!(again.text(), "dated");
    let seen = origin.last("/c/lm").unwrap();
    assert_eq!(
        seen.headers.get("if-modified-since").unwrap(),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
}

/// RFC 9110 13.1.2 and 13.1.3: a client's conditional request that matches a stored response
/// gets 304 from the cache.
#[tokio::test]
async fn rfc9110_13_client_conditionals_get_304_from_the_cache() {
    let origin = Origin::start().await;
    origin.set(
        "/c/cond",
        Answer::ok(
            "body",
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"t1\""),
                ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
        ),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    get(&gw, "/c/cond", &[]).await;
    let weak = get(&gw, "/c/cond", &[("if-none-match", "W/\"t1\", \"other\"")]).await;
    assert_eq!(weak.status, 304, "weak comparison");
    assert_eq!(weak.header("etag"), Some("\"t1\""));
    assert!(weak.body.is_empty());
    let other = get(&gw, "/c/cond", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(other.status, 200);
    let since = get(
        &gw,
        "/c/cond",
        &[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")],
    )
    .await;
    assert_eq!(since.status, 304);
    assert_eq!(origin.count("/c/cond"), 1);
}

/// RFC 9111 4.4: a successful unsafe request invalidates its URL (and a same-host `Location`).
#[tokio::test]
async fn rfc9111_4_4_unsafe_methods_invalidate() {
    let origin = Origin::start().await;
    origin.set(
        "/c/item",
        Answer::ok("item {n}", &[("cache-control", "max-age=60")]),
    );
    origin.set(
        "/c/other",
        Answer::ok("other {n}", &[("cache-control", "max-age=60")]),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    get(&gw, "/c/item", &[]).await;
    get(&gw, "/c/other", &[]).await;
    assert_eq!(x_cache(&get(&gw, "/c/item", &[]).await), "HIT");
    // A failed PUT changes nothing.
    origin.once("/c/item", Answer::status(500, "no", &[]));
    let failed = request(&gw, "PUT", "/c/item", &[]).await;
    assert_eq!(x_cache(&failed), "BYPASS");
    assert_eq!(x_cache(&get(&gw, "/c/item", &[]).await), "HIT");
    origin.once(
        "/c/item",
        Answer::status(204, "", &[("location", "/c/other")]),
    );
    assert_eq!(request(&gw, "PUT", "/c/item", &[]).await.status, 204);
    let after = get(&gw, "/c/item", &[]).await;
    assert_eq!(
        (x_cache(&after), after.text()),
        ("MISS", "item 4".to_string())
    );
    assert_eq!(
        x_cache(&get(&gw, "/c/other", &[]).await),
        "MISS",
        "Location invalidated"
    );
    origin.once("/c/item", Answer::status(200, "deleted", &[]));
    request(&gw, "DELETE", "/c/item", &[]).await;
    assert_eq!(x_cache(&get(&gw, "/c/item", &[]).await), "MISS");
}

/// Workers answer a hot entry from copies of their own; an invalidation by any of them, or a
/// newer response stored, is seen by every worker at once.
#[tokio::test]
async fn a_hot_entry_copied_by_every_worker_is_never_served_after_it_changed() {
    let origin = Origin::start().await;
    origin.set(
        "/c/hot",
        Answer::ok("hot {n}", &[("cache-control", "max-age=60")]),
    );
    let yaml = format!(
        "{}upstreams:\n  o:\n    targets: [{}]\n\
         routes:\n  - name: c\n    match: {{path: /c}}\n    upstream: o\n    cache: {{ttl: 60s}}\n",
        server_yaml("workers: 2"),
        origin.url()
    );
    let gw = TestGateway::start(&yaml).await;
    // Four kept-alive connections, shared out between the two workers.
    let clients: Vec<_> = (0..4).map(|_| client()).collect();
    let get_on = |i: usize| {
        let request = Request::get(gw.url("/c/hot"))
            .body(Full::<Bytes>::default())
            .unwrap();
        send(&clients[i], request)
    };
    for round in 0..5 {
        for i in 0..clients.len() {
            let got = get_on(i).await;
            assert_eq!(got.text(), "hot 1", "round {round}, connection {i}");
        }
    }
    assert_eq!(origin.count("/c/hot"), 1);
    origin.once("/c/hot", Answer::status(204, "", &[]));
    assert_eq!(request(&gw, "PUT", "/c/hot", &[]).await.status, 204);
    for round in 0..3 {
        for i in 0..clients.len() {
            let got = get_on(i).await;
            assert_eq!(
                got.text(),
                "hot 3",
                "after PUT: round {round}, connection {i}"
            );
        }
    }
    assert_eq!(origin.count("/c/hot"), 3);
}

/// HEAD is answered from a stored GET, with the GET's length and no body.
#[tokio::test]
async fn head_is_served_from_a_stored_get() {
    let origin = Origin::start().await;
    origin.set(
        "/c/h",
        Answer::ok("twelve bytes", &[("cache-control", "max-age=60")]),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    get(&gw, "/c/h", &[]).await;
    let head = request(&gw, "HEAD", "/c/h", &[]).await;
    assert_eq!((head.status.as_u16(), x_cache(&head)), (200, "HIT"));
    assert_eq!(head.header("content-length"), Some("12"));
    assert!(head.body.is_empty());
    assert_eq!(origin.count("/c/h"), 1);
}

/// 100 concurrent misses of one key make one upstream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_upstream_request() {
    let origin = Origin::start().await;
    origin.set(
        "/c/slow",
        Answer::ok("slow {n}", &[("cache-control", "max-age=60")])
            .after(Duration::from_millis(500)),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    let answers = concurrently(&gw, "/c/slow", 100).await;
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.text() == "slow 1"));
    assert_eq!(origin.count("/c/slow"), 1);
    let misses = answers.iter().filter(|a| x_cache(a) == "MISS").count();
    assert!(misses >= 1);
}

/// RFC 5861 4 (`stale-if-error`, here the route's): a stale entry answers while the origin
/// fails with 5xx or is gone.
#[tokio::test]
async fn stale_if_error_serves_a_stale_entry_while_the_origin_fails() {
    let origin = Origin::start().await;
    origin.set(
        "/c/s",
        Answer::ok("kept", &[("cache-control", "max-age=1")]),
    );
    let gw = gateway(&origin, "{stale_if_error: 60s}", "").await;
    assert_eq!(get(&gw, "/c/s", &[]).await.text(), "kept");
    origin.set("/c/s", Answer::status(503, "down", &[]));
    // Wait until the entry is stale: the answer then comes from the origin's failure.
    common::eventually("the entry goes stale", || async {
        let got = get(&gw, "/c/s", &[]).await;
        x_cache(&got) == "STALE"
    })
    .await;
    let stale = get(&gw, "/c/s", &[]).await;
    assert_eq!(
        (stale.status.as_u16(), stale.text()),
        (200, "kept".to_string())
    );
    origin.stop();
    let gone = get(&gw, "/c/s", &[]).await;
    assert_eq!(
        (gone.status.as_u16(), x_cache(&gone), gone.text()),
        (200, "STALE", "kept".to_string())
    );
}

/// `must-revalidate` forbids serving stale, also on error (RFC 9111 4.2.4).
#[tokio::test]
async fn must_revalidate_is_never_served_stale() {
    let origin = Origin::start().await;
    origin.set(
        "/c/m",
        Answer::ok("strict", &[("cache-control", "max-age=1, must-revalidate")]),
    );
    let gw = gateway(&origin, "{stale_if_error: 60s}", "").await;
    get(&gw, "/c/m", &[]).await;
    origin.set("/c/m", Answer::status(503, "down", &[]));
    common::eventually("the origin's error comes through", || async {
        get(&gw, "/c/m", &[]).await.status == 503
    })
    .await;
}

/// A body over `max_entry_size` streams through and is not stored.
#[tokio::test]
async fn bodies_over_max_entry_size_are_not_stored() {
    let origin = Origin::start().await;
    let big = "x".repeat(2048);
    origin.set(
        "/c/big",
        Answer::ok(&big, &[("cache-control", "max-age=60")]),
    );
    origin.set(
        "/c/fits",
        Answer::ok(&big[..1024], &[("cache-control", "max-age=60")]),
    );
    let yaml = format!(
        "{}cache:\n  max_entry_size: 1KiB\n  memory_capacity: 1MiB\nupstreams:\n  o:\n    targets: [{}]\n\
         routes:\n  - name: c\n    match: {{path: /c}}\n    upstream: o\n    cache: {{ttl: 60s}}\n",
        server_yaml(""),
        origin.url()
    );
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..2 {
        assert_eq!(get(&gw, "/c/big", &[]).await.body.len(), 2048);
        assert_eq!(get(&gw, "/c/fits", &[]).await.body.len(), 1024);
    }
    assert_eq!(origin.count("/c/big"), 2);
    assert_eq!(origin.count("/c/fits"), 1);
}

/// The cache stores the identity body; hits are compressed on the way out for clients that
/// accept it, and the stored copy serves every client whatever it accepts.
#[tokio::test]
async fn hits_are_compressed_on_the_way_out_from_one_identity_entry() {
    use std::io::Read;
    let origin = Origin::start().await;
    let body: String = (0..400).map(|i| format!("{{\"item\":{i}}},")).collect();
    origin.set(
        "/c/json",
        Answer::ok(
            &body,
            &[
                ("cache-control", "max-age=60"),
                ("content-type", "application/json"),
            ],
        ),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "    compress: true\n").await;
    let gunzip = |bytes: &[u8]| {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut out)
            .expect("gzip body");
        out
    };
    let miss = get(&gw, "/c/json", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (x_cache(&miss), miss.header("content-encoding")),
        ("MISS", Some("gzip"))
    );
    assert_eq!(gunzip(&miss.body), body);
    let plain = get(&gw, "/c/json", &[]).await;
    assert_eq!(
        (x_cache(&plain), plain.header("content-encoding")),
        ("HIT", None)
    );
    assert_eq!(plain.text(), body);
    let zipped = get(&gw, "/c/json", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (x_cache(&zipped), zipped.header("content-encoding")),
        ("HIT", Some("gzip"))
    );
    assert_eq!(gunzip(&zipped.body), body);
    assert!(zipped
        .header("vary")
        .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")));
    assert_eq!(origin.count("/c/json"), 1);
}

/// A reload that keeps the store settings keeps the entries; one that changes the store's
/// shape starts empty.
#[tokio::test]
async fn a_reload_keeps_the_entries_unless_the_store_changes() {
    let origin = Origin::start().await;
    origin.set(
        "/c/r",
        Answer::ok("kept {n}", &[("cache-control", "max-age=60")]),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    get(&gw, "/c/r", &[]).await;
    assert_eq!(x_cache(&get(&gw, "/c/r", &[]).await), "HIT");
    let path = gw.path("gateway.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    // Another route added: the cache route and the store are unchanged.
    let more =
        format!("{yaml}  - name: other\n    match: {{path: /other}}\n    respond: {{body: x}}\n");
    std::fs::write(&path, &more).unwrap();
    let _ = gw.handle.reload().await;
    assert_eq!(
        get(&gw, "/other", &[]).await.text(),
        "x",
        "the reload applied"
    );
    let kept = get(&gw, "/c/r", &[]).await;
    assert_eq!((x_cache(&kept), kept.text()), ("HIT", "kept 1".to_string()));
    // A smaller store is a new store.
    let smaller = more.replacen("jwt:", "cache:\n  memory_capacity: 64MiB\njwt:", 1);
    std::fs::write(&path, &smaller).unwrap();
    let _ = gw.handle.reload().await;
    let fresh = get(&gw, "/c/r", &[]).await;
    assert_eq!(
        (x_cache(&fresh), fresh.text()),
        ("MISS", "kept 2".to_string())
    );
}

/// RFC 5861 3 (`stale-while-revalidate`): a stale entry within the window answers at once
/// (`STALE`) while one request of the gateway's own refreshes it in the background.
#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let origin = Origin::start().await;
    origin.set(
        "/c/swr",
        Answer::ok(
            "v{n}",
            &[
                ("cache-control", "max-age=1, stale-while-revalidate=60"),
                ("etag", "\"e1\""),
            ],
        ),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    assert_eq!(get(&gw, "/c/swr", &[]).await.text(), "v1");
    // Slow from now on: an answer that waited for the origin would take a second.
    origin.set(
        "/c/swr",
        Answer::ok(
            "v{n}",
            &[("cache-control", "max-age=60"), ("etag", "\"e2\"")],
        )
        .after(Duration::from_millis(1000)),
    );
    let stale = loop {
        let got = get(&gw, "/c/swr", &[]).await;
        if x_cache(&got) == "STALE" {
            break got;
        }
        assert_eq!(x_cache(&got), "HIT");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stale.text(), "v1", "the stale body answers");
    common::eventually("the background refresh stored the new answer", || async {
        let got = get(&gw, "/c/swr", &[]).await;
        x_cache(&got) == "HIT" && got.text() == "v2"
    })
    .await;
    let refresh = origin.last("/c/swr").unwrap();
    assert_eq!(refresh.headers.get("if-none-match").unwrap(), "\"e1\"");
    // Stale answers while a refresh runs start none of their own, nor does one that found the
    // stale entry just before the refresh stored its answer.
    assert_eq!(
        origin.count("/c/swr"),
        2,
        "one refresh for however many stale answers"
    );
}

/// Concurrent requests for an entry that must be revalidated make one upstream request too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revalidations_of_one_entry_make_one_upstream_request() {
    let origin = Origin::start().await;
    origin.set(
        "/c/reval",
        Answer::ok(
            "first",
            &[("cache-control", "max-age=1"), ("etag", "\"r1\"")],
        ),
    );
    let gw = gateway(&origin, "{ttl: 60s}", "").await;
    get(&gw, "/c/reval", &[]).await;
    origin.set(
        "/c/reval",
        Answer::ok(
            "second",
            &[("cache-control", "max-age=60"), ("etag", "\"r2\"")],
        )
        .after(Duration::from_millis(300)),
    );
    // Wait for the entry to go stale without sending a request that would revalidate it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answers = concurrently(&gw, "/c/reval", 50).await;
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.text() == "second"));
    assert_eq!(
        origin.count("/c/reval"),
        2,
        "one revalidation for 50 requests"
    );
}

/// The gateway's own error on a cache route still says what the cache made of the request.
#[tokio::test]
async fn an_upstream_failure_on_a_cache_route_carries_x_cache() {
    // An upstream that refuses connections (its port held, never listening).
    let refusing = common::RefusingPort::new();
    let yaml = format!(
        "{}upstreams:\n  o:\n    targets: [http://127.0.0.1:{}]\n\
         routes:\n  - name: c\n    match: {{path: /c}}\n    upstream: o\n    cache: {{ttl: 60s}}\n",
        server_yaml(""),
        refusing.port
    );
    let gw = TestGateway::start(&yaml).await;
    let failed = get(&gw, "/c/gone", &[]).await;
    assert_eq!(failed.status, 502, "{:?}", failed.headers);
    assert_eq!(x_cache(&failed), "MISS");
    let bypass = get(&gw, "/c/gone", &[("cache-control", "no-store")]).await;
    assert_eq!((bypass.status.as_u16(), x_cache(&bypass)), (502, "BYPASS"));
}
