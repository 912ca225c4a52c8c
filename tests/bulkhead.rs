//! `circuit_breaker.max_requests`: requests beyond the limit in flight to one upstream get 503
//! at once without reaching it; a request's slot is held until its answer's body is done.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin::{Answer, Origin};
use common::{client, send, server_yaml, TestGateway};
use http::Request;
use http_body_util::Full;

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
    let get = |path: &str| {
        let request = Request::get(gw.url(path))
            .body(Full::<Bytes>::default())
            .unwrap();
        send(&client, request)
    };
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
