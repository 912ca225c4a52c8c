//! Request size limits and connection timeouts: what a client over a limit gets, what the
//! upstream is spared, and when the gateway closes slow or idle connections.

mod common;
use common::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// An upstream that records how many requests and the most body bytes of any one request it
/// received, so a test can tell what got past the gateway. Answers with the body length.
struct CountingUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    max_body: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let max_body = Arc::new(AtomicU64::new(0));
        let (req_count, body_max) = (Arc::clone(&requests), Arc::clone(&max_body));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (req_count, body_max) = (Arc::clone(&req_count), Arc::clone(&body_max));
                let service = service_fn(move |request: Request<Incoming>| {
                    req_count.fetch_add(1, Ordering::SeqCst);
                    let body_max = Arc::clone(&body_max);
                    async move {
                        let mut body = request.into_body();
                        let mut seen = 0u64;
                        while let Some(Ok(frame)) = body.frame().await {
                            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                            body_max.fetch_max(seen, Ordering::SeqCst);
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(seen.to_string()))))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingUpstream {
            addr,
            requests,
            max_body,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn max_body(&self) -> u64 {
        self.max_body.load(Ordering::SeqCst)
    }
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway forwarding `/` (and `/big`, with `big_extra` route settings) to `target`.
async fn gateway(server_extra: &str, target: SocketAddr, big_extra: &str) -> TestGateway {
    let mut yaml = format!(
        "{}upstreams:\n  up:\n    targets: [http://{target}]\nroutes:\n  \
         - name: all\n    match: {{path: /}}\n    upstream: up\n  \
         - name: big\n    match: {{path: /big}}\n    upstream: up\n",
        server_yaml(server_extra)
    );
    for line in big_extra.lines() {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    TestGateway::start(&yaml).await
}

fn post(url: &str, len: usize) -> Request<Full<Bytes>> {
    Request::post(url)
        .body(Full::new(Bytes::from(pattern(0, len))))
        .unwrap()
}

fn assert_error(got: &Got, status: u16, code: &str) {
    assert_eq!(got.status, status, "{}", got.text());
    let json = got.json();
    assert_eq!(json["error"], code, "{json}");
    assert_eq!(
        json["request_id"],
        got.header("x-request-id").expect("x-request-id"),
        "{json}"
    );
}

type Streamed = BoxBody<Bytes, Infallible>;

/// POSTs `chunks` chunks of `size` bytes, paced so they arrive as separate chunks, with no
/// Content-Length (so chunked).
async fn post_chunked(addr: SocketAddr, path: &str, chunks: usize, size: usize) -> Got {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let data = Bytes::from(pattern((i * size) as u64, size));
        Some((Ok::<_, Infallible>(Frame::data(data)), i + 1))
    });
    let request: Request<Streamed> = Request::post(path)
        .header("host", addr.to_string())
        .body(StreamBody::new(stream).boxed())
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = within(sender.send_request(request))
        .await
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = within(body.collect()).await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

#[tokio::test]
async fn declared_body_over_the_limit_never_reaches_the_upstream() {
    let up = CountingUpstream::start().await;
    let gw = gateway("max_request_body: 1KiB", up.addr, "").await;
    let got = send(&client(), post(&gw.url("/upload"), 1025)).await;
    assert_error(&got, 413, "body_too_large");
    assert_eq!(up.requests(), 0, "the upstream was called");

    let got = send(&client(), post(&gw.url("/upload"), 1024)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "1024");
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_cut_off() {
    let up = CountingUpstream::start().await;
    let gw = gateway("max_request_body: 1KiB", up.addr, "").await;
    let got = post_chunked(gw.addr, "/upload", 8, 512).await;
    assert_error(&got, 413, "body_too_large");
    assert!(
        up.max_body() <= 1024,
        "the upstream saw {} bytes",
        up.max_body()
    );

    let got = post_chunked(gw.addr, "/upload", 2, 512).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "1024");
}

#[tokio::test]
async fn route_can_override_the_body_limit() {
    let up = CountingUpstream::start().await;
    let gw = gateway("max_request_body: 1KiB", up.addr, "max_request_body: 4KiB").await;
    let got = send(&client(), post(&gw.url("/big"), 3000)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "3000");
    assert_error(
        &send(&client(), post(&gw.url("/big"), 4097)).await,
        413,
        "body_too_large",
    );
    assert_error(
        &send(&client(), post(&gw.url("/other"), 3000)).await,
        413,
        "body_too_large",
    );
    assert_eq!(post_chunked(gw.addr, "/big", 6, 512).await.status, 200);
    assert_eq!(post_chunked(gw.addr, "/big", 12, 512).await.status, 413);
    assert!(
        up.max_body() <= 4096,
        "the upstream saw {} bytes",
        up.max_body()
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let up = CountingUpstream::start().await;
    let gw = gateway("max_header_bytes: 4KiB", up.addr, "").await;
    let big = "a".repeat(6 << 10);
    let request = Request::get(gw.url("/h"))
        .header("x-big", big)
        .body(Full::default())
        .unwrap();
    assert_error(&send(&client(), request).await, 431, "headers_too_large");

    // Far past the limit the HTTP parser refuses it before the gateway's own check can; raw,
    // so that a client library's handling of an early close cannot hide the status.
    let huge = format!(
        "GET /h HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let response = raw(gw.addr, huge.as_bytes(), DEADLINE).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:.200}");
    assert_eq!(up.requests(), 0, "the upstream was called");

    let got = get(&gw.url("/h")).await;
    assert_eq!(got.status, 200, "{}", got.text());
}

/// Reads one response (head and Content-Length body) off a connection that stays open.
#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway("request_header_timeout: 500ms", up.addr, "").await;

    let mut half = TcpStream::connect(gw.addr).await.unwrap();
    half.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let half_closed = tokio::spawn(async move { wait_for_close(&mut half).await });
    let silent_closed = tokio::spawn(async move { wait_for_close(&mut silent).await });

    // Others are served while those two hang.
    let got = get(&gw.url("/ok")).await;
    assert_eq!(got.status, 200, "{}", got.text());

    for (what, closed) in [("half a head", half_closed), ("nothing", silent_closed)] {
        let after = closed.await.unwrap();
        // Bounds around 500ms: not at once, and well before the 10s default.
        assert!(
            after >= Duration::from_millis(400),
            "{what}: closed after {after:?}"
        );
        assert!(
            after < Duration::from_secs(8),
            "{what}: closed after {after:?}"
        );
    }
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn idle_connections_close_after_the_response() {
    let up = EchoUpstream::start("a").await;
    let server = "idle_timeout: 500ms\nrequest_header_timeout: 5s";
    let gw = gateway(server, up.addr, "").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // Takes three times the idle timeout: an in-flight request is not idleness.
    stream
        .write_all(b"GET /slow/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let echo: Echo = serde_json::from_slice(&body).expect("a complete echo");
    assert_eq!(echo.target, "/slow/1500");

    let after = wait_for_close(&mut stream).await;
    // The idle clock, not the 5s head clock, is what closes it.
    assert!(
        after >= Duration::from_millis(400),
        "closed after {after:?}"
    );
    assert!(after < Duration::from_secs(4), "closed after {after:?}");
}

#[tokio::test]
async fn header_timeout_does_not_cut_idle_keep_alive_connections() {
    let up = EchoUpstream::start("a").await;
    let server = "idle_timeout: 5s\nrequest_header_timeout: 300ms";
    let gw = gateway(server, up.addr, "").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    for i in 0..2 {
        if i > 0 {
            // The idle gap under test: over three header timeouts, well within the idle one.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let request = format!("GET /n/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("connection still open");
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(
            status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(up.requests(), 2);
}
