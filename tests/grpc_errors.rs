//! Errors the gateway makes itself, answered to gRPC calls as gRPC statuses: a trailers-only
//! response (HTTP 200, `grpc-status`, `grpc-message`) over HTTP/2, while other requests keep the
//! JSON form.

mod common;

use bytes::Bytes;
use common::{h2c_client, send, server_yaml, RefusingPort, TestGateway};
use http::Request;
use http_body_util::Full;

fn grpc_call(url: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // One empty length-prefixed message: flag 0, length 0.
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap()
}

#[tokio::test]
async fn gateway_errors_reach_grpc_clients_as_grpc_statuses() {
    let refusing = RefusingPort::new();
    let yaml = format!(
        "{}upstreams:\n  down:\n    targets: [http://127.0.0.1:{}]\n    protocol: h2c\n\
         routes:\n\
         \x20 - name: down\n    match: {{path: /svc.Down/}}\n    upstream: down\n\
         \x20 - name: limited\n    match: {{path: /svc.Limited/}}\n    respond: {{status: 200}}\n\
         \x20   rate_limit:\n      - {{by: route, limit: 1, per: 1m}}\n",
        server_yaml(""),
        refusing.port
    );
    let gw = TestGateway::start(&yaml).await;
    let client = h2c_client();

    // No route: UNIMPLEMENTED, as a gRPC server says of a method it does not have.
    let got = send(&client, grpc_call(&gw.url("/svc.Missing/Call"))).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/grpc"));
    assert_eq!(got.header("grpc-status"), Some("12"));
    assert_eq!(
        got.header("grpc-message"),
        Some("no route matches this request")
    );
    assert!(got.body.is_empty(), "trailers-only: no body");
    assert!(got.header("x-request-id").is_some());

    // An upstream that refuses connections: UNAVAILABLE, which gRPC clients may retry.
    let got = send(&client, grpc_call(&gw.url("/svc.Down/Call"))).await;
    assert_eq!(
        (got.status.as_u16(), got.header("grpc-status")),
        (200, Some("14"))
    );
    assert_eq!(
        got.header("grpc-message"),
        Some("could not connect to upstream down")
    );

    // A rate limit: RESOURCE_EXHAUSTED, with the Retry-After the JSON form carries.
    let first = send(&client, grpc_call(&gw.url("/svc.Limited/Call"))).await;
    assert_eq!(
        first.header("grpc-status"),
        None,
        "allowed: the route's own answer"
    );
    let got = send(&client, grpc_call(&gw.url("/svc.Limited/Call"))).await;
    assert_eq!(
        (got.status.as_u16(), got.header("grpc-status")),
        (200, Some("8"))
    );
    assert!(got.header("retry-after").is_some());

    // The same errors for other requests stay JSON.
    let plain = Request::post(gw.url("/svc.Missing/Call"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let got = send(&client, plain).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.header("grpc-status"), None);
    assert_eq!(got.json()["error"], "no_route");
}
