//! The circuit breaker per upstream, against real upstream servers the tests control: it opens
//! on the failure ratio and on consecutive failures, refuses at once while open without the
//! upstream seeing a call, half-opens after `open_for` and closes or opens again, keeps its
//! state over a reload that leaves it alone, and lets the cache answer stale while open.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::origin::{Answer, Origin};
use common::{get, server_yaml, Got, TestGateway};
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A gateway with upstream `o` at `target` under `breaker` (the `circuit_breaker` flow
/// mapping), routes `/` to it, plus `extra` routes.
fn config(target: &str, breaker: &str, extra: &str) -> String {
    format!(
        "{}upstreams:\n  o:\n    targets: [{target}]\n    connect_timeout: 1s\n    \
         circuit_breaker: {breaker}\n\
         routes:\n{extra}  - name: all\n    match: {{path: /}}\n    upstream: o\n",
        server_yaml("")
    )
}

async fn metric(gw: &TestGateway, series: &str) -> f64 {
    common::metric(gw, series).await
}

const STATE: &str = "gatehouse_circuit_state{upstream=\"o\"}";

fn transitions(to: &str) -> String {
    format!("gatehouse_circuit_transitions_total{{upstream=\"o\",to=\"{to}\"}}")
}

fn is_circuit_open(got: &Got) -> bool {
    got.status == 503 && got.json()["error"] == "circuit_open"
}

#[tokio::test]
async fn opens_after_consecutive_failures_and_then_fails_fast() {
    let origin = Origin::start().await;
    origin.set("/x", Answer::status(503, "down", &[]));
    let yaml = config(
        &origin.url(),
        "{consecutive_failures: 3, min_requests: 1000, open_for: 60s}",
        "",
    );
    let gw = TestGateway::start(&yaml).await;
    for n in 1..=2 {
        let got = get(&gw.url("/x")).await;
        assert_eq!((got.status.as_u16(), got.text()), (503, "down".into()));
        assert_eq!(metric(&gw, STATE).await, 0.0, "closed after {n} failures");
    }
    // The third failure in a row is relayed, and opens the breaker.
    assert_eq!(get(&gw.url("/x")).await.text(), "down");
    assert_eq!(metric(&gw, STATE).await, 1.0);
    let ready = get(&gw.url("/readyz")).await.json();
    assert_eq!(ready["upstreams"]["o"]["circuit"], "open", "{ready}");
    for _ in 0..3 {
        let refused = get(&gw.url("/x")).await;
        assert!(is_circuit_open(&refused), "{refused:?}");
        let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((59..=60).contains(&retry_after), "{retry_after}");
    }
    assert_eq!(
        origin.count("/x"),
        3,
        "the upstream sees no call while open"
    );
    assert_eq!(metric(&gw, &transitions("open")).await, 1.0);
    assert_eq!(metric(&gw, &transitions("half_open")).await, 0.0);
    let refused = "gatehouse_upstream_requests_total{upstream=\"o\",outcome=\"circuit_open\"}";
    assert_eq!(metric(&gw, refused).await, 3.0);
}

#[tokio::test]
async fn a_success_breaks_the_run_and_the_ratio_opens_at_min_requests() {
    let origin = Origin::start().await;
    origin.set("/x", Answer::ok("fine", &[]));
    for status in [502, 502, 200, 504] {
        origin.once("/x", Answer::status(status, "scripted", &[]));
    }
    let yaml = config(
        &origin.url(),
        "{consecutive_failures: 3, failure_ratio: 0.6, min_requests: 5, window: 30s, open_for: 60s}",
        "",
    );
    let gw = TestGateway::start(&yaml).await;
    let statuses: Vec<u16> = {
        let mut all = Vec::new();
        for _ in 0..4 {
            all.push(get(&gw.url("/x")).await.status.as_u16());
        }
        all
    };
    assert_eq!(statuses, [502, 502, 200, 504]);
    assert_eq!(
        metric(&gw, STATE).await,
        0.0,
        "3 of 4 failed, but below min_requests; the run was 2 then 1"
    );
    // The fifth call reaches min_requests: 3 of 5 failed is the ratio, though it succeeded.
    assert_eq!(get(&gw.url("/x")).await.text(), "fine");
    assert_eq!(metric(&gw, STATE).await, 1.0);
    assert!(is_circuit_open(&get(&gw.url("/x")).await));
    assert_eq!(origin.count("/x"), 5);
}

/// A port that refuses connections until [`listen`](Flapping::listen) makes it answer 200,
/// counting the requests it answers.
struct Flapping {
    socket: Option<tokio::net::TcpSocket>,
    port: u16,
    answered: Arc<AtomicUsize>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Flapping {
    fn refusing() -> Flapping {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let port = socket.local_addr().expect("addr").port();
        Flapping {
            socket: Some(socket),
            port,
            answered: Arc::default(),
            server: None,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn listen(&mut self) {
        let listener = self
            .socket
            .take()
            .expect("once")
            .listen(64)
            .expect("listen");
        let answered = Arc::clone(&self.answered);
        self.server = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let answered = Arc::clone(&answered);
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        answered.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("back")))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }
}

impl Drop for Flapping {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

#[tokio::test]
async fn half_opens_after_open_for_then_opens_again_or_closes() {
    let mut upstream = Flapping::refusing();
    let yaml = config(
        &upstream.url(),
        "{consecutive_failures: 2, min_requests: 1000, open_for: 300ms, half_open_requests: 2}",
        "",
    );
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..2 {
        let got = get(&gw.url("/")).await;
        assert_eq!(got.json()["error"], "upstream_unreachable");
    }
    let refused = get(&gw.url("/")).await;
    assert!(is_circuit_open(&refused), "{refused:?}");
    assert_eq!(
        refused.header("retry-after"),
        Some("1"),
        "300 ms, rounded up"
    );

    // After open_for one trial goes through; it fails, and the breaker opens again.
    common::eventually("a trial call reaches the refusing upstream", || async {
        let got = get(&gw.url("/")).await;
        if !is_circuit_open(&got) {
            assert_eq!(got.json()["error"], "upstream_unreachable");
            return true;
        }
        false
    })
    .await;
    assert!(
        is_circuit_open(&get(&gw.url("/")).await),
        "open again at once"
    );
    assert_eq!(metric(&gw, &transitions("half_open")).await, 1.0);
    assert_eq!(metric(&gw, &transitions("open")).await, 2.0);
    assert_eq!(metric(&gw, STATE).await, 1.0);

    // The upstream comes back: after open_for, two successful trials close the breaker.
    upstream.listen();
    common::eventually("a trial call succeeds", || async {
        let got = get(&gw.url("/")).await;
        got.status == 200
    })
    .await;
    assert_eq!(
        metric(&gw, STATE).await,
        2.0,
        "half-open: one of two trials done"
    );
    assert_eq!(get(&gw.url("/")).await.text(), "back");
    assert_eq!(metric(&gw, STATE).await, 0.0);
    assert_eq!(metric(&gw, &transitions("closed")).await, 1.0);
    assert_eq!(metric(&gw, &transitions("half_open")).await, 2.0);
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(upstream.answered.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn an_open_breaker_survives_a_reload_that_leaves_it_alone() {
    let origin = Origin::start().await;
    origin.set("/x", Answer::status(503, "down", &[]));
    let breaker = "{consecutive_failures: 1, open_for: 60s}";
    let yaml = |breaker: &str, extra: &str| config(&origin.url(), breaker, extra);
    let gw = TestGateway::start(&yaml(breaker, "")).await;
    assert_eq!(get(&gw.url("/x")).await.text(), "down");
    assert!(is_circuit_open(&get(&gw.url("/x")).await));

    // A reload that adds a route keeps the upstream's breaker, open.
    let extra = "  - name: s\n    match: {path: /s}\n    respond: {status: 204}\n";
    std::fs::write(gw.path("gateway.yaml"), yaml(breaker, extra)).unwrap();
    let _ = gw.handle.reload().await;
    assert_eq!(get(&gw.url("/s")).await.status, 204, "the reload is live");
    assert!(is_circuit_open(&get(&gw.url("/x")).await));
    assert_eq!(metric(&gw, STATE).await, 1.0);
    assert_eq!(origin.count("/x"), 1);

    // A changed breaker setting starts a new, closed breaker: the next call is made.
    let changed = "{consecutive_failures: 1, open_for: 50s}";
    std::fs::write(gw.path("gateway.yaml"), yaml(changed, extra)).unwrap();
    let _ = gw.handle.reload().await;
    common::eventually("the changed breaker is live", || async {
        metric(&gw, STATE).await == 0.0
    })
    .await;
    assert_eq!(get(&gw.url("/x")).await.text(), "down");
    assert_eq!(origin.count("/x"), 2);
    let refused = get(&gw.url("/x")).await;
    assert!(is_circuit_open(&refused));
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (49..=50).contains(&retry_after),
        "the new open_for: {retry_after}"
    );

    // Without a breaker the series go away and calls are made.
    std::fs::write(gw.path("gateway.yaml"), yaml("{max_requests: 100}", extra)).unwrap();
    let _ = gw.handle.reload().await;
    assert_eq!(get(&gw.url("/x")).await.text(), "down");
    let text = get(&gw.url("/metrics")).await.text();
    assert!(!text.contains("gatehouse_circuit_state{"), "{text}");
}

#[tokio::test]
async fn the_cache_answers_stale_while_the_circuit_is_open() {
    let origin = Origin::start().await;
    origin.set(
        "/c/s",
        Answer::ok("kept", &[("cache-control", "max-age=1")]),
    );
    origin.set("/x", Answer::status(503, "down", &[]));
    let cached = "  - name: c\n    match: {path: /c}\n    upstream: o\n    \
                  cache: {stale_if_error: 60s}\n";
    let yaml = config(
        &origin.url(),
        "{consecutive_failures: 1, open_for: 60s}",
        cached,
    );
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(get(&gw.url("/c/s")).await.text(), "kept");
    // A failure elsewhere on the upstream opens its breaker.
    assert_eq!(get(&gw.url("/x")).await.text(), "down");
    assert!(is_circuit_open(&get(&gw.url("/x")).await));
    common::eventually("the entry goes stale and is served so", || async {
        let got = get(&gw.url("/c/s")).await;
        assert_eq!((got.status.as_u16(), got.text()), (200, "kept".into()));
        got.header("x-cache") == Some("STALE")
    })
    .await;
    assert_eq!(origin.count("/c/s"), 1, "the open circuit was not called");
    // Without a stored entry the open circuit answers for itself.
    assert!(is_circuit_open(&get(&gw.url("/c/other")).await));
}
