//! gRPC through the gateway to a tonic server the test starts, over an h2c upstream: unary,
//! server-streaming and client-streaming calls, statuses in trailers (trailers-only errors
//! included) arriving intact, and gRPC calls on an HTTP/1.1 upstream refused as UNIMPLEMENTED.
//!
//! The messages and the service are written out as tonic's code generator would write them
//! (`prost::Message` structs, tonic's `server::Grpc` and `client::Grpc`), so no `protoc` is
//! needed.

mod common;
use common::*;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountRequest {
    #[prost(uint32, tag = "1")]
    count: u32,
    /// End the stream with DATA_LOSS after the replies instead of OK.
    #[prost(bool, tag = "2")]
    fail: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Number {
    #[prost(uint64, tag = "1")]
    value: u64,
}

/// A message the status must carry unchanged: spaces, a percent sign, non-ASCII.
const NOT_FOUND_MESSAGE: &str = "no greeting for “nobody” (100% sure)";

/// `test.Greeter/SayHello`: greets, or NOT_FOUND for `nobody` (a trailers-only answer).
struct SayHello;

impl tonic::server::UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = Ready<Result<Response<HelloReply>, Status>>;

    fn call(&mut self, request: Request<HelloRequest>) -> Self::Future {
        let name = request.into_inner().name;
        ready(if name == "nobody" {
            Err(Status::not_found(NOT_FOUND_MESSAGE))
        } else {
            Ok(Response::new(HelloReply {
                message: format!("hello {name}"),
            }))
        })
    }
}

type Replies = futures_util::stream::Iter<std::vec::IntoIter<Result<HelloReply, Status>>>;

/// `test.Greeter/Count`: `count` replies, then OK (or DATA_LOSS with `fail`).
struct Count;

impl tonic::server::ServerStreamingService<CountRequest> for Count {
    type Response = HelloReply;
    type ResponseStream = Replies;
    type Future = Ready<Result<Response<Replies>, Status>>;

    fn call(&mut self, request: Request<CountRequest>) -> Self::Future {
        let request = request.into_inner();
        let mut replies: Vec<Result<HelloReply, Status>> = (0..request.count)
            .map(|i| {
                Ok(HelloReply {
                    message: format!("reply {i}"),
                })
            })
            .collect();
        if request.fail {
            replies.push(Err(Status::data_loss("the stream broke")));
        }
        ready(Ok(Response::new(futures_util::stream::iter(replies))))
    }
}

/// `test.Greeter/Sum`: the sum of the numbers streamed in.
struct Sum;

impl tonic::server::ClientStreamingService<Number> for Sum {
    type Response = Number;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Number>, Status>> + Send>,
    >;

    fn call(&mut self, request: Request<Streaming<Number>>) -> Self::Future {
        Box::pin(async move {
            let mut numbers = request.into_inner();
            let mut sum = 0u64;
            while let Some(number) = numbers.message().await? {
                sum += number.value;
            }
            Ok(Response::new(Number { value: sum }))
        })
    }
}

/// The tonic service on hyper's HTTP/2 server, as tonic's transport serves it.
async fn greeter(
    request: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let path = request.uri().path().to_string();
    Ok(match path.as_str() {
        "/test.Greeter/SayHello" => {
            tonic::server::Grpc::new(ProstCodec::default())
                .unary(SayHello, request)
                .await
        }
        "/test.Greeter/Count" => {
            tonic::server::Grpc::new(ProstCodec::default())
                .server_streaming(Count, request)
                .await
        }
        "/test.Greeter/Sum" => {
            tonic::server::Grpc::new(ProstCodec::default())
                .client_streaming(Sum, request)
                .await
        }
        _ => Status::unimplemented("no such method").into_http(),
    })
}

/// Starts the tonic server (HTTP/2 only, h2c) and returns its address.
async fn start_greeter() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(greeter)),
            );
        }
    });
    addr
}

type Channel = Client<HttpConnector, tonic::body::Body>;

/// A tonic client calling through the gateway at `gateway` over h2c.
fn grpc_client(gateway: SocketAddr) -> tonic::client::Grpc<Channel> {
    let channel: Channel = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{gateway}").parse().unwrap();
    tonic::client::Grpc::with_origin(channel, origin)
}

async fn gateway_to(greeter: SocketAddr, protocol: &str) -> TestGateway {
    let yaml = format!(
        "{}upstreams:\n  greeter:\n    targets: [http://{greeter}]\n    protocol: {protocol}\n\
         routes:\n  - name: greeter\n    match: {{path: /test.Greeter/}}\n    upstream: greeter\n",
        server_yaml("")
    );
    TestGateway::start(&yaml).await
}

async fn say_hello(
    client: &mut tonic::client::Grpc<Channel>,
    name: &str,
) -> Result<Response<HelloReply>, Status> {
    within(client.ready()).await.unwrap();
    within(client.unary(
        Request::new(HelloRequest { name: name.into() }),
        PathAndQuery::from_static("/test.Greeter/SayHello"),
        ProstCodec::default(),
    ))
    .await
}

/// Calls `test.Greeter/Count`: the replies, and how the stream ended.
async fn count(
    client: &mut tonic::client::Grpc<Channel>,
    count: u32,
    fail: bool,
) -> (Vec<String>, Result<(), Status>) {
    let call = client.server_streaming(
        Request::new(CountRequest { count, fail }),
        PathAndQuery::from_static("/test.Greeter/Count"),
        ProstCodec::<CountRequest, HelloReply>::default(),
    );
    let mut stream = within(call).await.unwrap().into_inner();
    let mut replies = Vec::new();
    loop {
        match within(stream.message()).await {
            Ok(Some(reply)) => replies.push(reply.message),
            Ok(None) => return (replies, Ok(())),
            Err(status) => return (replies, Err(status)),
        }
    }
}

#[tokio::test]
async fn unary_calls_and_trailers_only_errors_pass_through() {
    let greeter = start_greeter().await;
    let gw = gateway_to(greeter, "h2c").await;
    let mut client = grpc_client(gw.addr);

    let reply = say_hello(&mut client, "gatehouse").await.unwrap();
    assert_eq!(reply.get_ref().message, "hello gatehouse");
    assert!(
        reply.metadata().get("x-request-id").is_some(),
        "the gateway's headers come with the upstream's"
    );

    // The upstream's own status (trailers-only), not a gateway error: code and message intact.
    let status = say_hello(&mut client, "nobody").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), NOT_FOUND_MESSAGE);
}

#[tokio::test]
async fn server_streaming_calls_end_with_the_upstreams_status() {
    let greeter = start_greeter().await;
    let gw = gateway_to(greeter, "h2c").await;
    let mut client = grpc_client(gw.addr);

    within(client.ready()).await.unwrap();
    let (replies, end) = count(&mut client, 5, false).await;
    assert_eq!(
        replies,
        ["reply 0", "reply 1", "reply 2", "reply 3", "reply 4"]
    );
    assert!(end.is_ok(), "{end:?}");

    // A status after data arrives in the trailers.
    within(client.ready()).await.unwrap();
    let (replies, end) = count(&mut client, 2, true).await;
    assert_eq!(replies, ["reply 0", "reply 1"]);
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss);
    assert_eq!(status.message(), "the stream broke");
}

#[tokio::test]
async fn client_streaming_calls_stream_their_messages_up() {
    let greeter = start_greeter().await;
    let gw = gateway_to(greeter, "h2c").await;
    let mut client = grpc_client(gw.addr);
    within(client.ready()).await.unwrap();
    let numbers = futures_util::stream::iter(1..=100u64).map(|value| Number { value });
    let sum = within(client.client_streaming(
        Request::new(numbers),
        PathAndQuery::from_static("/test.Greeter/Sum"),
        ProstCodec::<Number, Number>::default(),
    ))
    .await
    .unwrap();
    assert_eq!(sum.into_inner().value, 5050);
}

#[tokio::test]
async fn grpc_calls_to_an_http1_upstream_are_refused_as_unimplemented() {
    let greeter = start_greeter().await;
    let gw = gateway_to(greeter, "http1").await;
    let mut client = grpc_client(gw.addr);
    let status = say_hello(&mut client, "gatehouse").await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(
        status.message(),
        "upstream greeter is HTTP/1.1 and cannot carry gRPC; it needs protocol h2 or h2c"
    );
}
