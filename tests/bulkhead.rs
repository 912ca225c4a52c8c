//! `circuit_breaker.max_requests`: requests beyond the limit in flight to one upstream get 503
//! at once without reaching it; a request's slot is held until its answer's body is done.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin::{Answer, Origin};
use common::{client, send, server_yaml, Got, TestGateway};
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// One GET of `path` through the gateway, on `client`'s pooled connections.
async fn send_get(
    client: &Client<HttpConnector, Full<Bytes>>,
    gw: &TestGateway,
    path: &str,
) -> Got {
    let request = Request::get(gw.url(path))
        .body(Full::<Bytes>::default())
        .unwrap();
    send(client, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_max_requests_get_503_at_once() {
    let origin = Origin::start().await;
    origin.set(
        "/slow",
        Answer::ok("slow", &[]).after(Duration::from_millis(800)),
    );
    origin.set("/fast", Answer::ok("fast", &[]));
    let yaml = format!(
        "{}upstreams:\n  o:\n    targets: [{}]\n    circuit_breaker: {{max_requests: 2}}\n\
         routes:\n  - name: r\n    match: {{path: /}}\n    upstream: o\n",
        server_yaml(""),
        origin.url()
    );
    let gw = TestGateway::start(&yaml).await;
    let client = client();
    let get = |path| send_get(&client, &gw, path);
    // Two slow requests take both slots; a third is answered while they are still in flight.
    let slow = async {
        let answers = futures_util::future::join(get("/slow"), get("/slow")).await;
        (answers, Instant::now())
    };
    let refused = async {
        common::eventually("both slow requests reached the origin", || async {
            origin.count("/slow") == 2
        })
        .await;
        let got = get("/fast").await;
        (got, Instant::now())
    };
    let (((a, b), slow_done), (refused, refused_at)) =
        futures_util::future::join(slow, refused).await;
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "upstream_overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused_at < slow_done,
        "refused at once, not queued behind the slow ones"
    );
    assert_eq!(
        origin.count("/fast"),
        0,
        "a refused request never reaches the upstream"
    );
    // The slots are free again once the answers are done.
    assert_eq!(get("/fast").await.status, 200);
    let overloaded = common::metric(
        &gw,
        "gatehouse_upstream_requests_total{upstream=\"o\",outcome=\"overloaded\"}",
    )
    .await;
    assert_eq!(overloaded, 1.0);
}

/// Requests admitted before a reload still count against `max_requests` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_in_flight_still_count_after_a_reload() {
    let origin = Origin::start().await;
    origin.set(
        "/slow",
        Answer::ok("slow", &[]).after(Duration::from_millis(1500)),
    );
    origin.set("/fast", Answer::ok("fast", &[]));
    let yaml = |extra_route: &str| {
        format!(
            "{}upstreams:\n  o:\n    targets: [{}]\n    circuit_breaker: {{max_requests: 1}}\n\
             routes:\n  - name: r\n    match: {{path: /}}\n    upstream: o\n{extra_route}",
            server_yaml(""),
            origin.url()
        )
    };
    let gw = TestGateway::start(&yaml("")).await;
    let client = client();
    let get = |path| send_get(&client, &gw, path);
    let slow = get("/slow");
    let reloaded_then_refused = async {
        common::eventually("the slow request reached the origin", || async {
            origin.count("/slow") == 1
        })
        .await;
        let extra = "  - name: s\n    match: {path: /s}\n    respond: {status: 204}\n";
        std::fs::write(gw.path("gateway.yaml"), yaml(extra)).unwrap();
        let _ = gw.handle.reload().await;
        assert_eq!(get("/s").await.status, 204, "the reload is live");
        get("/fast").await
    };
    let (slow, refused) = futures_util::future::join(slow, reloaded_then_refused).await;
    assert_eq!(slow.status, 200);
    assert_eq!(
        refused.status, 503,
        "the slot taken before the reload is still taken"
    );
    assert_eq!(refused.json()["error"], "upstream_overloaded");
    assert_eq!(
        get("/fast").await.status,
        200,
        "and free once its answer is done"
    );
}
