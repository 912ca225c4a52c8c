//! `compress: true` end to end: a real gateway in front of a scripted upstream, real clients,
//! and the bodies decoded with flate2 and brotli and compared with what the upstream sent.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use common::scripted::{Reply, ScriptedUpstream, Sent};
use common::{client, fnv, h2c_client, metric, send, within, Got, TestGateway};
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;

const JSON: (&str, &str) = ("content-type", "application/json");

/// A gateway whose route `c` compresses everything under `/` of `upstream`, and whose route
/// `plain` (under `/plain/`) does not.
async fn gateway(upstream: &ScriptedUpstream) -> TestGateway {
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n\
         upstreams:\n  o:\n    targets: [{}]\n\
         routes:\n\
         \x20 - name: plain\n    match: {{path: /plain}}\n    upstream: o\n\
         \x20 - name: c\n    match: {{path: /}}\n    upstream: o\n    compress: true\n",
        upstream.url()
    );
    TestGateway::start(&yaml).await
}

/// Text that compresses like a JSON API answer: repetitive keys, varying values.
fn json_body(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(len as u64);
    let mut out = Vec::with_capacity(len + 64);
    out.push(b'[');
    while out.len() < len {
        let item = format!(
            "{{\"id\":{},\"status\":\"{}\",\"total\":{}}},",
            rng.u32(..100_000),
            ["paid", "shipped", "open"][rng.usize(..3)],
            rng.u32(..10_000)
        );
        out.extend_from_slice(item.as_bytes());
    }
    out.truncate(len);
    out
}

fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip"),
        "br" => brotli::Decompressor::new(data, 4096)
            .read_to_end(&mut out)
            .expect("valid brotli"),
        other => panic!("unexpected coding {other}"),
    };
    out
}

async fn fetch(gw: &TestGateway, method: &str, path: &str, accept: Option<&str>) -> Got {
    let mut request = Request::builder().method(method).uri(gw.url(path));
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    send(&client(), request.body(Full::default()).unwrap()).await
}

fn vary(got: &Got) -> Vec<String> {
    got.headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn gzip_and_br_round_trip_with_weak_etags_and_counted_bytes() {
    let upstream = ScriptedUpstream::start().await;
    let body = json_body(100_000);
    upstream.set(
        "/orders",
        Reply::ok(
            &[JSON, ("etag", "\"v7\""), ("accept-ranges", "bytes")],
            body.clone(),
        ),
    );
    let gw = gateway(&upstream).await;
    for (accept, coding) in [
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("br;q=0.5, gzip", "gzip"),
        ("*", "br"),
    ] {
        let got = fetch(&gw, "GET", "/orders", Some(accept)).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("content-encoding"), Some(coding), "{accept}");
        assert_eq!(vary(&got), ["Accept-Encoding"]);
        assert_eq!(got.header("etag"), Some("W/\"v7\""));
        assert_eq!(got.header("content-length"), None);
        assert_eq!(got.header("accept-ranges"), None);
        assert!(
            got.body.len() < body.len() / 2,
            "{accept}: {}",
            got.body.len()
        );
        assert_eq!(fnv(&decode(coding, &got.body)), fnv(&body), "{accept}");
    }
    // HTTP/2 clients get the same.
    let request = Request::get(gw.url("/orders"))
        .header("accept-encoding", "gzip")
        .body(Full::default())
        .unwrap();
    let got = send(&h2c_client(), request).await;
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(fnv(&decode("gzip", &got.body)), fnv(&body));

    let series = |name: &str, coding: &str| format!("{name}{{route=\"c\",encoding=\"{coding}\"}}");
    let responses = "gatehouse_compressed_responses_total";
    assert_eq!(metric(&gw, &series(responses, "br")).await, 2.0);
    assert_eq!(metric(&gw, &series(responses, "gzip")).await, 3.0);
    let bytes_in = metric(&gw, &series("gatehouse_compression_in_bytes_total", "gzip")).await;
    assert_eq!(bytes_in, 3.0 * body.len() as f64);
    let bytes_out = metric(
        &gw,
        &series("gatehouse_compression_out_bytes_total", "gzip"),
    )
    .await;
    assert!(bytes_out > 0.0 && bytes_out < bytes_in / 2.0, "{bytes_out}");
}

#[tokio::test]
async fn identity_when_the_client_does_not_accept_a_coding() {
    let upstream = ScriptedUpstream::start().await;
    let body = json_body(20_000);
    upstream.set("/x", Reply::ok(&[JSON, ("etag", "\"v1\"")], body.clone()));
    let gw = gateway(&upstream).await;
    for accept in [
        None,
        Some("identity"),
        Some("gzip;q=0, br;q=0"),
        Some("*;q=0"),
        Some("deflate"),
        Some("gzip;q=2"),
        Some(""),
    ] {
        let got = fetch(&gw, "GET", "/x", accept).await;
        assert_eq!(got.header("content-encoding"), None, "{accept:?}");
        assert_eq!(got.body, body, "{accept:?}");
        assert_eq!(got.header("content-length"), Some("20000"), "{accept:?}");
        assert_eq!(got.header("etag"), Some("\"v1\""), "{accept:?}");
        // Caches downstream must still keep this apart from the compressed variant.
        assert_eq!(vary(&got), ["Accept-Encoding"], "{accept:?}");
    }
}

#[tokio::test]
async fn responses_that_must_not_be_compressed_pass_unchanged() {
    let upstream = ScriptedUpstream::start().await;
    let body = json_body(8_000);
    let mut pre = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    pre.write_all(&body).unwrap();
    let pre = pre.finish().unwrap();
    let cases: Vec<(&str, Reply)> = vec![
        (
            "/encoded",
            Reply::ok(&[JSON, ("content-encoding", "gzip")], pre.clone()),
        ),
        (
            "/partial",
            Reply::ok(
                &[JSON, ("content-range", "bytes 0-7999/9000")],
                body.clone(),
            )
            .status(206),
        ),
        (
            "/no-transform",
            Reply::ok(
                &[JSON, ("cache-control", "public, no-transform")],
                body.clone(),
            ),
        ),
        (
            "/png",
            Reply::ok(&[("content-type", "image/png")], body.clone()),
        ),
        ("/untyped", Reply::ok(&[], body.clone())),
        ("/small", Reply::ok(&[JSON], body[..1023].to_vec())),
        ("/plain/route", Reply::ok(&[JSON], body.clone())),
    ];
    for (path, reply) in &cases {
        upstream.set(path, reply.clone());
    }
    let gw = gateway(&upstream).await;
    for (path, reply) in &cases {
        let got = fetch(&gw, "GET", path, Some("gzip, br")).await;
        let common::scripted::Sent::Whole(sent) = &reply.body else {
            unreachable!()
        };
        assert_eq!(got.status.as_u16(), reply.status, "{path}");
        assert_eq!(&got.body, sent, "{path}: body changed");
        assert!(vary(&got).is_empty(), "{path}: {:?}", vary(&got));
        let encoding = got.header("content-encoding");
        let expected = (*path == "/encoded").then_some("gzip");
        assert_eq!(encoding, expected, "{path}");
    }
    // The gzip the upstream made reaches the client once, still decodable.
    let got = fetch(&gw, "GET", "/encoded", Some("gzip")).await;
    assert_eq!(decode("gzip", &got.body), body);
}

#[tokio::test]
async fn the_minimum_length_is_one_kibibyte_and_unknown_lengths_compress() {
    let upstream = ScriptedUpstream::start().await;
    let body = json_body(1025);
    for len in [1023, 1024, 1025] {
        upstream.set(
            &format!("/len/{len}"),
            Reply::ok(&[JSON], body[..len].to_vec()),
        );
    }
    upstream.set(
        "/chunked",
        Reply::ok(&[JSON], Bytes::new()).sent(Sent::Chunks(vec![
            Bytes::from_static(b"[1,"),
            Bytes::from_static(b"2]"),
        ])),
    );
    let gw = gateway(&upstream).await;
    for (len, compressed) in [(1023, false), (1024, true), (1025, true)] {
        let got = fetch(&gw, "GET", &format!("/len/{len}"), Some("gzip")).await;
        let encoding = got.header("content-encoding");
        assert_eq!(encoding.is_some(), compressed, "{len}");
        let decoded = if compressed {
            decode("gzip", &got.body)
        } else {
            got.body.to_vec()
        };
        assert_eq!(decoded, &body[..len], "{len}");
    }
    let got = fetch(&gw, "GET", "/chunked", Some("br")).await;
    assert_eq!(got.header("content-encoding"), Some("br"));
    assert_eq!(decode("br", &got.body), b"[1,2]");
}

#[tokio::test]
async fn head_requests_get_the_identity_headers() {
    let upstream = ScriptedUpstream::start().await;
    let body = json_body(5_000);
    upstream.set("/h", Reply::ok(&[JSON, ("etag", "\"h\"")], body));
    let gw = gateway(&upstream).await;
    let got = fetch(&gw, "HEAD", "/h", Some("gzip, br")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.header("content-length"), Some("5000"));
    assert_eq!(got.header("etag"), Some("\"h\""));
    assert_eq!(vary(&got), ["Accept-Encoding"]);
    assert!(got.body.is_empty());
}

#[tokio::test]
async fn vary_is_merged_with_the_upstreams() {
    let upstream = ScriptedUpstream::start().await;
    let body = json_body(5_000);
    upstream.set("/v", Reply::ok(&[JSON, ("vary", "Origin")], body.clone()));
    upstream.set(
        "/v2",
        Reply::ok(
            &[JSON, ("vary", "Cookie"), ("vary", "Accept-Encoding")],
            body,
        ),
    );
    let gw = gateway(&upstream).await;
    for accept in [Some("gzip"), None] {
        let got = fetch(&gw, "GET", "/v", accept).await;
        assert_eq!(vary(&got), ["Origin, Accept-Encoding"], "{accept:?}");
        let got = fetch(&gw, "GET", "/v2", accept).await;
        assert_eq!(vary(&got), ["Cookie", "Accept-Encoding"], "{accept:?}");
    }
}

/// The first chunk of a body reaches the client, compressed and decodable, while the upstream
/// still holds the rest.
#[tokio::test]
async fn a_streaming_body_is_compressed_as_it_streams() {
    let upstream = ScriptedUpstream::start().await;
    let gw = gateway(&upstream).await;
    for coding in ["gzip", "br"] {
        let release = Arc::new(Notify::new());
        let first = Bytes::from(format!("data: {{\"event\":1,\"coding\":\"{coding}\"}}\n\n"));
        let rest = Bytes::from(json_body(50_000));
        upstream.set(
            "/events",
            Reply::ok(&[("content-type", "text/event-stream")], Bytes::new()).sent(Sent::Held {
                first: first.clone(),
                rest: rest.clone(),
                release: Arc::clone(&release),
            }),
        );
        let request = Request::get(gw.url("/events"))
            .header("accept-encoding", coding)
            .body(Full::default())
            .unwrap();
        let response = within(client().request(request)).await.unwrap();
        assert_eq!(response.headers()["content-encoding"], coding);
        let mut body = response.into_body();
        let mut received = Vec::new();
        // Each frame is decoded as it comes: the first chunk must appear before the release.
        let mut partial = PartialDecoder::new(coding);
        while partial.decoded() < first.len() {
            let frame = within(body.frame())
                .await
                .expect("the body ended before the first chunk was decodable")
                .expect("body error");
            if let Some(data) = frame.data_ref() {
                received.extend_from_slice(data);
                partial.feed(data);
            }
        }
        assert_eq!(partial.output(), &first[..]);
        release.notify_one();
        let tail = within(body.collect()).await.unwrap().to_bytes();
        received.extend_from_slice(&tail);
        let mut expected = first.to_vec();
        expected.extend_from_slice(&rest);
        assert_eq!(fnv(&decode(coding, &received)), fnv(&expected), "{coding}");
    }
}

/// Decodes a stream as far as the bytes received so far allow.
enum PartialDecoder {
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
    Br(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl PartialDecoder {
    fn new(coding: &str) -> Self {
        match coding {
            "gzip" => PartialDecoder::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new()))),
            _ => PartialDecoder::Br(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
        }
    }

    fn feed(&mut self, data: &[u8]) {
        match self {
            PartialDecoder::Gzip(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
            }
            PartialDecoder::Br(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
            }
        }
    }

    fn output(&self) -> &[u8] {
        match self {
            PartialDecoder::Gzip(d) => d.get_ref(),
            PartialDecoder::Br(d) => d.get_ref(),
        }
    }

    fn decoded(&self) -> usize {
        self.output().len()
    }
}

#[tokio::test]
async fn a_large_body_round_trips() {
    let upstream = ScriptedUpstream::start().await;
    let body = Bytes::from(json_body(5 << 20));
    let chunks: Vec<Bytes> = body.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    upstream.set("/big", Reply::ok(&[JSON], body.clone()));
    upstream.set(
        "/big-chunked",
        Reply::ok(&[JSON], Bytes::new()).sent(Sent::Chunks(chunks)),
    );
    let gw = gateway(&upstream).await;
    for (path, coding) in [("/big", "gzip"), ("/big-chunked", "br")] {
        let got = fetch(&gw, "GET", path, Some(coding)).await;
        assert_eq!(got.header("content-encoding"), Some(coding));
        assert!(got.body.len() < body.len() / 2);
        assert_eq!(fnv(&decode(coding, &got.body)), fnv(&body), "{path}");
    }
}
