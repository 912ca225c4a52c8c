//! Upstream `retry` against real origins: a failed attempt goes to the other target with the
//! same `X-Request-Id`, only for the methods listed, within the retry budget and the overall
//! timeout, and a small body is sent again intact.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin::{Answer, Origin};
use common::{client, metric, send, server_yaml, EchoUpstream, RefusingPort, TestGateway};
use http::Request;
use http_body_util::Full;

/// A gateway with upstream `o` over `targets`, `retry` settings `retry` (a flow mapping), and
/// a route `/` to it; `route_extra` is added to the route (e.g. `timeout: 1s`).
async fn gateway(targets: &[String], retry: &str, route_extra: &str) -> TestGateway {
    let yaml = format!(
        "{}upstreams:\n  o:\n    targets: [{}]\n    retry: {retry}\n\
         routes:\n  - name: r\n    match: {{path: /}}\n    upstream: o\n{route_extra}",
        server_yaml(""),
        targets.join(", ")
    );
    TestGateway::start(&yaml).await
}

async fn retries(gw: &TestGateway) -> f64 {
    metric(gw, "gatehouse_upstream_retries_total{upstream=\"o\"}").await
}

async fn exhausted(gw: &TestGateway) -> f64 {
    metric(
        gw,
        "gatehouse_upstream_retry_budget_exhausted_total{upstream=\"o\"}",
    )
    .await
}

fn request(method: &str, url: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_get_answered_503_is_retried_on_the_other_target_with_the_same_request_id() {
    let (failing, good) = (Origin::start().await, Origin::start().await);
    failing.set("/r", Answer::status(503, "down", &[]));
    good.set("/r", Answer::ok("up", &[]));
    let gw = gateway(
        &[failing.url(), good.url()],
        "{backoff: 1ms, max_backoff: 5ms, budget: {percent: 100}}",
        "",
    )
    .await;
    let client = client();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let got = send(&client, request("GET", &gw.url("/r"), Bytes::new())).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.text(), "up");
        ids.push(got.header("x-request-id").unwrap().to_string());
    }
    let (to_failing, to_good) = (failing.seen(), good.seen());
    assert_eq!(to_good.len(), 6, "every request ended at the good target");
    assert!(
        !to_failing.is_empty(),
        "round robin sent some to the failing one first"
    );
    let id =
        |seen: &common::origin::Seen| seen.headers["x-request-id"].to_str().unwrap().to_string();
    let good_ids: Vec<String> = to_good.iter().map(id).collect();
    assert_eq!(
        good_ids, ids,
        "the client's answers carry the ids the target saw"
    );
    for tried in &to_failing {
        assert!(
            good_ids.contains(&id(tried)),
            "the retry of {} carried the same X-Request-Id",
            id(tried)
        );
    }
    assert_eq!(retries(&gw).await, to_failing.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_connection_is_retried_on_the_other_target() {
    let refusing = RefusingPort::new();
    let good = Origin::start().await;
    good.set("/r", Answer::ok("up", &[]));
    let gw = gateway(
        &[format!("http://127.0.0.1:{}", refusing.port), good.url()],
        "{backoff: 1ms, max_backoff: 5ms, budget: {percent: 100}}",
        "",
    )
    .await;
    let client = client();
    for _ in 0..4 {
        let got = send(&client, request("GET", &gw.url("/r"), Bytes::new())).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(good.count("/r"), 4);
    let connect_errors = metric(
        &gw,
        "gatehouse_upstream_requests_total{upstream=\"o\",outcome=\"connect_error\"}",
    )
    .await;
    assert!(
        connect_errors >= 1.0,
        "round robin tried the refusing target"
    );
    assert_eq!(
        retries(&gw).await,
        connect_errors,
        "each refusal was retried"
    );
}

/// Both targets fail, so every request is sent as often as it is tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_is_not_retried_unless_listed() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    for origin in [&a, &b] {
        origin.set("/r", Answer::status(503, "down", &[]));
    }
    let targets = [a.url(), b.url()];
    let calls = || a.count("/r") + b.count("/r");
    let client = client();

    let gw = gateway(&targets, "{attempts: 1, backoff: 1ms}", "").await;
    let got = send(&client, request("POST", &gw.url("/r"), "order".into())).await;
    assert_eq!(got.status, 503, "the upstream's answer, as it was");
    assert_eq!(calls(), 1, "a POST is sent once");
    let got = send(&client, request("PATCH", &gw.url("/r"), "order".into())).await;
    assert_eq!(got.status, 503);
    assert_eq!(calls(), 2, "a PATCH is sent once");
    let got = send(&client, request("PUT", &gw.url("/r"), "order".into())).await;
    assert_eq!(got.status, 503);
    assert_eq!(calls(), 4, "a PUT is retried once");
    drop(gw);

    let gw = gateway(&targets, "{attempts: 1, backoff: 1ms, methods: [POST]}", "").await;
    let before = calls();
    let got = send(&client, request("POST", &gw.url("/r"), "order".into())).await;
    assert_eq!(got.status, 503);
    assert_eq!(calls() - before, 2, "listed: a POST is retried");
    let got = send(&client, request("GET", &gw.url("/r"), Bytes::new())).await;
    assert_eq!(got.status, 503);
    assert_eq!(calls() - before, 3, "and a GET, no longer listed, is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_budget_stops_retries_under_sustained_failure() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    for origin in [&a, &b] {
        origin.set("/r", Answer::status(503, "down", &[]));
    }
    // The default budget: 20% of the requests in 10 s, at least 3.
    let gw = gateway(&[a.url(), b.url()], "{attempts: 2, backoff: 1ms}", "").await;
    let client = client();
    for _ in 0..20 {
        let got = send(&client, request("GET", &gw.url("/r"), Bytes::new())).await;
        assert_eq!(got.status, 503);
    }
    // Without a budget: 20 requests and 40 retries. With it, at most 3 (the floor) until 20%
    // of the requests is more: the first request retried twice, the second once and was
    // refused its second retry, the next 17 were refused their first, and the 20th (20% of
    // 20 requests is 4) retried once and was refused its second.
    let calls = a.count("/r") + b.count("/r");
    assert_eq!(calls, 24, "20 requests and 4 retries");
    assert_eq!(retries(&gw).await, 4.0);
    assert_eq!(exhausted(&gw).await, 19.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_overall_timeout_bounds_the_retries() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    for origin in [&a, &b] {
        origin.set(
            "/r",
            Answer::status(503, "down", &[]).after(Duration::from_millis(200)),
        );
    }
    // Ten retries of 200 ms each would take over 2 s; the route allows 500 ms in all.
    let gw = gateway(
        &[a.url(), b.url()],
        "{attempts: 10, backoff: 1ms, max_backoff: 1ms, budget: {percent: 100, min_retries: 100}}",
        "    timeout: 500ms\n",
    )
    .await;
    let started = Instant::now();
    let got = send(&client(), request("GET", &gw.url("/r"), Bytes::new())).await;
    let took = started.elapsed();
    assert_eq!(got.status, 504, "{}", got.text());
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_millis(1200), "{took:?}");
    let calls = a.count("/r") + b.count("/r");
    assert!((2..=3).contains(&calls), "{calls} attempts in 500 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timeout_is_retried_when_listed_with_time_left_for_it() {
    let (slow, fast) = (Origin::start().await, Origin::start().await);
    slow.set("/r", Answer::ok("slow", &[]).after(Duration::from_secs(3)));
    fast.set("/r", Answer::ok("fast", &[]));
    // 900 ms in all and one retry: each attempt gets half of what is left.
    let gw = gateway(
        &[slow.url(), fast.url()],
        "{attempts: 1, backoff: 1ms, on: [timeout], budget: {percent: 100}}",
        "    timeout: 900ms\n",
    )
    .await;
    let client = client();
    for _ in 0..2 {
        let started = Instant::now();
        let got = send(&client, request("GET", &gw.url("/r"), Bytes::new())).await;
        assert_eq!(got.text(), "fast");
        assert!(started.elapsed() < Duration::from_millis(900));
    }
    assert_eq!(
        slow.count("/r"),
        1,
        "round robin tried the slow target once"
    );
    assert_eq!(retries(&gw).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_put_body_is_replayed_intact_and_a_larger_one_is_not_retried() {
    let refusing = RefusingPort::new();
    let echo = EchoUpstream::start("echo").await;
    let gw = gateway(
        &[format!("http://127.0.0.1:{}", refusing.port), echo.url()],
        "{backoff: 1ms, max_backoff: 5ms, budget: {percent: 100}}",
        "",
    )
    .await;
    let client = client();
    // Round robin alternates, so of two requests one goes to the refusing target first.
    for size in [10 * 1024, 64 * 1024] {
        for n in 0..2u64 {
            let body = Bytes::from(common::pattern(n * 7, size));
            let got = send(&client, request("PUT", &gw.url("/put"), body.clone())).await;
            assert_eq!(got.status, 200, "{size} bytes: {}", got.text());
            let echoed = got.echo();
            assert_eq!(echoed.method, "PUT");
            assert_eq!(echoed.body_len, size as u64);
            assert_eq!(
                echoed.body_fnv,
                common::fnv(&body),
                "{size} bytes, request {n}"
            );
        }
    }
    assert_eq!(echo.requests(), 4);
    assert_eq!(retries(&gw).await, 2.0, "one of each pair was retried");
    // One byte over the kept size: streamed, so a refusal is answered as it is.
    let mut statuses = Vec::new();
    for n in 0..2u64 {
        let body = Bytes::from(common::pattern(n, 64 * 1024 + 1));
        let got = send(&client, request("PUT", &gw.url("/put"), body)).await;
        statuses.push(got.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(retries(&gw).await, 2.0);
}

/// A reload that leaves an upstream's budget settings alone keeps what the budget spent;
/// changed settings start a fresh one, and an upstream that stops retrying drops it.
#[test]
fn the_budget_survives_a_reload_of_unchanged_settings() {
    use gatehouse::config::MapEnv;
    use gatehouse::registry::{LiveNames, Registries};
    let registries = Registries::default();
    let load = |retry: &str| {
        let upstream = format!(
            "server:\n  listen: 127.0.0.1:0\nupstreams:\n  o:\n    targets: [http://127.0.0.1:1]\n{retry}"
        );
        let dir = common::config_dir(&[("gateway.yaml", &upstream)]);
        gatehouse::config::load(
            &dir.path().join("gateway.yaml"),
            &MapEnv(Default::default()),
            &registries,
        )
        .expect("loads")
    };
    let first = load("    retry: {attempts: 1}\n");
    let budget = Arc::clone(first.upstreams[0].retry_budget.as_ref().unwrap());
    let now = Instant::now();
    assert!((0..3).all(|_| budget.try_spend(now)), "the floor of 3");
    // Other retry settings, same budget settings: the same budget, already spent.
    let second = load("    retry: {attempts: 2, backoff: 10ms}\n");
    let kept = second.upstreams[0].retry_budget.as_ref().unwrap();
    assert!(Arc::ptr_eq(&budget, kept));
    assert!(!kept.try_spend(now), "still spent after the reload");
    registries.retain_for(&LiveNames::of(&second));
    assert_eq!(registries.retry_budgets.len(), 1);
    // Changed budget settings: a fresh budget.
    let third = load("    retry: {budget: {min_retries: 5}}\n");
    let fresh = third.upstreams[0].retry_budget.as_ref().unwrap();
    assert!(!Arc::ptr_eq(&budget, fresh));
    assert!(fresh.try_spend(now));
    // No retry: no budget, and the registry forgets it once that config is live.
    let fourth = load("");
    assert!(fourth.upstreams[0].retry_budget.is_none());
    registries.retain_for(&LiveNames::of(&fourth));
    assert_eq!(registries.retry_budgets.len(), 0);
}

/// Every attempt is a call the circuit breaker admits and learns from: once the failures of a
/// request's own attempts open it, the retries stop with the last answer instead of going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_stop_when_the_attempts_open_the_circuit() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    a.set("/r", Answer::status(503, "down a", &[]));
    b.set("/r", Answer::status(503, "down b", &[]));
    let yaml = format!(
        "{}upstreams:\n  o:\n    targets: [{}, {}]\n\
         \x20   retry: {{attempts: 5, backoff: 1ms, max_backoff: 2ms, budget: {{percent: 100, min_retries: 10}}}}\n\
         \x20   circuit_breaker: {{consecutive_failures: 2, open_for: 60s}}\n\
         routes:\n  - name: r\n    match: {{path: /}}\n    upstream: o\n",
        server_yaml(""),
        a.url(),
        b.url()
    );
    let gw = TestGateway::start(&yaml).await;
    let client = client();
    let got = send(&client, request("GET", &gw.url("/r"), Bytes::new())).await;
    assert_eq!(got.status, 503);
    assert!(
        got.text().starts_with("down"),
        "the last attempt's answer: {}",
        got.text()
    );
    assert_eq!(
        a.count("/r") + b.count("/r"),
        2,
        "two attempts opened the circuit"
    );
    assert_eq!(retries(&gw).await, 1.0);
    // The next request is refused at once.
    let refused = send(&client, request("GET", &gw.url("/r"), Bytes::new())).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "circuit_open");
    assert_eq!(a.count("/r") + b.count("/r"), 2);
}

/// A target that reads each request and closes the connection without answering; counts them.
async fn hanging_up() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                if common::read_request_head(&mut stream).await.is_some() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (url, seen)
}

/// `reset` (a connection that broke after the request was sent, before any answer) is retried
/// only when listed in `on`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_closed_before_the_answer_is_retried_only_with_reset() {
    let good = Origin::start().await;
    good.set("/r", Answer::ok("up", &[]));
    let (hanging, seen) = hanging_up().await;
    let targets = [hanging, good.url()];
    let client = client();

    let plain = gateway(&targets, "{backoff: 1ms, budget: {percent: 100}}", "").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            send(&client, request("GET", &plain.url("/r"), Bytes::new()))
                .await
                .status
                .as_u16(),
        );
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 502, 502], "not retried by default");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);

    let with_reset = gateway(
        &targets,
        "{backoff: 1ms, on: [connect_error, reset, 503], budget: {percent: 100}}",
        "",
    )
    .await;
    for _ in 0..4 {
        let got = send(&client, request("GET", &with_reset.url("/r"), Bytes::new())).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "two more reached it, then were retried"
    );
    // A POST is still not retried unless listed in `methods`: of two in a row, round robin
    // sends one to each target, and the one that reached the hanging target fails.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let post = request("POST", &with_reset.url("/r"), Bytes::from_static(b"x"));
        statuses.push(send(&client, post).await.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 5);
}
