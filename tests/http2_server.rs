//! The gateway's HTTP/2 server seen on the wire: frames and HPACK read by hand.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frame: type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// Reads frames until the HEADERS frame of `stream`, and returns its header block.
async fn response_headers(conn: &mut TcpStream, stream: u32) -> Vec<u8> {
    loop {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.unwrap();
        if kind == 4 && flags & 1 == 0 {
            conn.write_all(&frame(4, 1, 0, &[])).await.unwrap();
        }
        if kind == 1 && id == stream {
            assert_eq!(flags & 0x2c, 0x04, "one unpadded HEADERS frame: {flags:#x}");
            return payload;
        }
    }
}

/// How a header field was sent (RFC 7541 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Indexed,
    Incremental,
    WithoutIndexing,
    NeverIndexed,
    SizeUpdate,
}

/// An HPACK integer with an `n`-bit prefix, from `block` at `*at`.
fn integer(block: &[u8], at: &mut usize, n: u32) -> usize {
    let max = (1usize << n) - 1;
    let mut value = usize::from(block[*at]) & max;
    *at += 1;
    if value == max {
        let mut shift = 0;
        loop {
            let b = block[*at];
            *at += 1;
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    value
}

/// Skips an HPACK string literal (Huffman-coded or not).
fn skip_string(block: &[u8], at: &mut usize) {
    let len = integer(block, at, 7);
    *at += len;
}

/// The kinds of the fields in a header block, in order.
fn representations(block: &[u8]) -> Vec<Kind> {
    let mut kinds = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let b = block[at];
        let (kind, prefix) = match b {
            _ if b & 0x80 != 0 => (Kind::Indexed, 7),
            _ if b & 0xc0 == 0x40 => (Kind::Incremental, 6),
            _ if b & 0xe0 == 0x20 => (Kind::SizeUpdate, 5),
            _ if b & 0xf0 == 0x10 => (Kind::NeverIndexed, 4),
            _ => (Kind::WithoutIndexing, 4),
        };
        let name = integer(block, &mut at, prefix);
        if !matches!(kind, Kind::Indexed | Kind::SizeUpdate) {
            if name == 0 {
                skip_string(block, &mut at);
            }
            skip_string(block, &mut at);
        }
        kinds.push(kind);
    }
    assert_eq!(at, block.len(), "header block ends inside a field");
    kinds
}

/// A gateway whose one route forwards everything to an echo upstream.
async fn gateway_to_an_echo_upstream() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start("u").await;
    let yaml = format!(
        "{}upstreams:\n  u:\n    targets: [{}]\nroutes:\n  - name: all\n    match: {{path: /}}\n    upstream: u\n",
        server_yaml(""),
        upstream.url()
    );
    let gw = TestGateway::start(&yaml).await;
    (upstream, gw)
}

/// The request id is new on every response: it goes out as a "never indexed" literal rather
/// than filling each connection's HPACK table; the other fields are still indexed.
#[tokio::test]
async fn the_request_id_goes_out_never_indexed() {
    let (_upstream, gw) = gateway_to_an_echo_upstream().await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    for stream in [1u32, 3, 5] {
        // :method GET, :scheme http, :path / from the static table; :authority "t" literal.
        let block = [0x82, 0x86, 0x84, 0x01, 0x01, b't'];
        // END_STREAM | END_HEADERS
        conn.write_all(&frame(1, 0x05, stream, &block))
            .await
            .unwrap();
        let block = within(response_headers(&mut conn, stream)).await;
        let kinds = representations(&block);
        assert_eq!(
            kinds.iter().filter(|k| **k == Kind::NeverIndexed).count(),
            1,
            "stream {stream}: {kinds:?}"
        );
        if stream > 1 {
            // Fields that repeat are sent as references to the table.
            assert!(kinds.contains(&Kind::Indexed), "stream {stream}: {kinds:?}");
        }
    }
}

/// Many streams on one connection whose answers mix short frames (held until the end of the
/// worker's round) with full 16 KiB DATA frames (written at once): every body arrives whole and
/// in order, at lengths around the hold limit and far beyond it.
#[tokio::test]
async fn concurrent_streams_of_short_and_long_answers_arrive_whole() {
    let (upstream, gw) = gateway_to_an_echo_upstream().await;
    let client = h2c_client();
    let lengths = [
        0usize,
        1,
        100,
        16_383,
        16_384,
        16_385,
        16_393,
        65_536,
        300_000,
        1 << 20,
    ];
    let requests = lengths
        .iter()
        .cycle()
        .take(40)
        .enumerate()
        .map(|(i, &len)| {
            let client = client.clone();
            let url = gw.url(&format!("/bytes/{len}?n={i}"));
            async move {
                let request = http::Request::get(url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                (len, send(&client, request).await)
            }
        });
    let answers = within(futures_util::future::join_all(requests)).await;
    for (len, got) in answers {
        assert_eq!(got.status, 200, "{len} bytes");
        assert_eq!(got.body.len(), len, "{len} bytes");
        assert_eq!(fnv(&got.body), fnv(&pattern(0, len)), "{len} bytes");
    }
    assert_eq!(upstream.requests(), 40);
}
