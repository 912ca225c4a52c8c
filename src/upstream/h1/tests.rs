use super::*;

fn head(raw: &str, method: &Method) -> Result<Option<ResponseHead>, ProtocolError> {
    let mut buf = BytesMut::from(raw);
    parse_response_head(&mut buf, method)
}

fn parsed(raw: &str) -> ResponseHead {
    head(raw, &Method::GET).unwrap().expect("a complete head")
}

#[test]
fn request_heads_carry_our_framing_not_the_clients() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("api.test"));
    headers.insert("content-length", HeaderValue::from_static("999"));
    headers.insert("transfer-encoding", HeaderValue::from_static("gzip"));
    headers.append("x-multi", HeaderValue::from_static("a"));
    headers.append("x-multi", HeaderValue::from_static("b"));
    let encode = |method: Method, exact: Option<u64>| {
        let mut out = Vec::new();
        let framing = RequestFraming::for_body(&method, exact);
        encode_request_head(&method, "/p?q=1", &headers, framing, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    };
    assert_eq!(
        encode(Method::GET, Some(0)),
        "GET /p?q=1 HTTP/1.1\r\nhost: api.test\r\nx-multi: a\r\nx-multi: b\r\n\r\n"
    );
    assert!(encode(Method::POST, Some(0)).ends_with("x-multi: b\r\ncontent-length: 0\r\n\r\n"));
    assert!(encode(Method::PUT, Some(12345)).ends_with("content-length: 12345\r\n\r\n"));
    assert!(encode(Method::POST, None).ends_with("transfer-encoding: chunked\r\n\r\n"));
    assert!(!encode(Method::POST, None).contains("999"));
}

#[test]
fn heads_arriving_in_pieces_parse_once_complete() {
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello";
    for cut in 0..raw.len() - 5 {
        let mut buf = BytesMut::from(&raw[..cut]);
        assert!(
            parse_response_head(&mut buf, &Method::GET)
                .unwrap()
                .is_none(),
            "cut at {cut}"
        );
        assert_eq!(buf.len(), cut, "a partial head is left in place");
    }
    let mut buf = BytesMut::from(raw);
    let head = parse_response_head(&mut buf, &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["x-a"], "1");
    assert_eq!(head.framing, BodyFraming::Length(5));
    assert!(head.keep_alive);
    assert_eq!(&buf[..], b"hello", "the body stays in the buffer");
}

#[test]
fn body_framing_follows_rfc_9112() {
    let cases = [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            BodyFraming::Length(7),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
            BodyFraming::Length(7),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            BodyFraming::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n",
            BodyFraming::Chunked,
            true,
        ),
        // Empty list elements mean nothing.
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: , chunked ,\r\n\r\n",
            BodyFraming::Chunked,
            true,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", BodyFraming::UntilClose, false),
        (
            "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
            BodyFraming::Empty,
            true,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            BodyFraming::Empty,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n",
            BodyFraming::Length(1),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
            BodyFraming::Length(1),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            BodyFraming::Length(1),
            true,
        ),
    ];
    for (raw, framing, keep_alive) in cases {
        let head = parsed(raw);
        assert_eq!(head.framing, framing, "{raw:?}");
        assert_eq!(head.keep_alive, keep_alive, "{raw:?}");
    }
    let to_head = head(
        "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
        &Method::HEAD,
    );
    let to_head = to_head.unwrap().unwrap();
    assert_eq!(to_head.framing, BodyFraming::Empty);
    assert_eq!(
        to_head.headers["content-length"], "7",
        "a HEAD answer keeps its length"
    );
}

#[test]
fn both_framing_headers_mean_chunked_no_length_and_no_reuse() {
    let head = parsed("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(head.framing, BodyFraming::Chunked);
    assert!(!head.headers.contains_key("content-length"));
    assert!(!head.keep_alive);
}

#[test]
fn bad_heads_are_protocol_errors() {
    let bad = [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            ProtocolError::ContentLength,
        ),
        (
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            ProtocolError::UnexpectedUpgrade,
        ),
    ];
    for (raw, error) in bad {
        assert_eq!(head(raw, &Method::GET).unwrap_err(), error, "{raw:?}");
    }
    assert!(matches!(
        head("HTTP/1.1 2x0 OK\r\n\r\n", &Method::GET),
        Err(ProtocolError::Head(_))
    ));
    assert!(matches!(
        head("SMTP ready\r\n\r\n", &Method::GET),
        Err(ProtocolError::Head(_))
    ));
    assert!(matches!(
        head("HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\n\r\n", &Method::GET),
        Err(ProtocolError::Head(_) | ProtocolError::Header)
    ));
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert!(matches!(
        head(&raw, &Method::GET),
        Err(ProtocolError::Head(_))
    ));
    let huge = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\n",
        "a".repeat(MAX_HEAD_BYTES)
    );
    assert_eq!(
        head(&huge, &Method::GET).unwrap_err(),
        ProtocolError::HeadTooLarge
    );
}

#[test]
fn interim_responses_are_skipped() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    let head = parse_response_head(&mut buf, &Method::POST)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, 201);
    assert!(!head.headers.contains_key("link"));
    assert!(buf.is_empty());
    // Only the interim head has arrived: it is consumed, the final one awaited.
    let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2");
    assert!(parse_response_head(&mut buf, &Method::POST)
        .unwrap()
        .is_none());
    assert_eq!(&buf[..], b"HTTP/1.1 2");
}

#[test]
fn connection_only_fields_are_not_kept_for_relaying() {
    let head = parsed(
        "HTTP/1.1 200 OK\r\nCONNECTION: keep-alive\r\nKeep-Alive: timeout=5\r\n\
         Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
    );
    assert_eq!(head.framing, BodyFraming::Chunked);
    assert!(head.keep_alive);
    let names: Vec<&str> = head.headers.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-a"]);

    // Connection naming another field stays, so the relay knows to remove that field too.
    let head = parsed(
        "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(!head.keep_alive);
    assert_eq!(head.headers["connection"], "close, X-Hop");
    assert_eq!(head.headers["x-hop"], "1");
    assert_eq!(head.headers["content-length"], "0");
}

#[test]
fn transfer_codings_other_than_one_chunked_are_refused() {
    for coding in [
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked, gzip",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked;q=1",
        "Transfer-Encoding: identity",
        "Transfer-Encoding: ,",
        "Transfer-Encoding: gzip\r\nContent-Length: 3",
    ] {
        let raw = format!("HTTP/1.1 200 OK\r\n{coding}\r\n\r\n");
        assert_eq!(
            head(&raw, &Method::GET).unwrap_err(),
            ProtocolError::TransferEncoding,
            "{coding:?}"
        );
        // An answer without a body has nothing to decode: its codings are only dropped.
        let to_head = head(&raw, &Method::HEAD).unwrap().unwrap();
        assert_eq!(to_head.framing, BodyFraming::Empty, "{coding:?}");
        assert!(!to_head.headers.contains_key("transfer-encoding"));
    }
}

#[test]
fn http10_answers_with_transfer_encoding_are_decoded_and_never_reused() {
    for raw in [
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ] {
        let head = parsed(raw);
        assert_eq!(head.framing, BodyFraming::Chunked, "{raw:?}");
        assert!(!head.keep_alive, "{raw:?}");
        assert!(!head.headers.contains_key("content-length"), "{raw:?}");
    }
    let to_head = head(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        &Method::HEAD,
    )
    .unwrap()
    .unwrap();
    assert!(!to_head.keep_alive);
}

#[test]
fn identical_lengths_are_relayed_as_one() {
    for (raw, method) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 10, 10\r\n\r\n",
            Method::GET,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: 1\r\ncontent-length:10 , 10\r\n\r\n",
            Method::GET,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 10,10\r\n\r\n",
            Method::HEAD,
        ),
    ] {
        let head = head(raw, &method).unwrap().unwrap();
        let lengths: Vec<_> = head.headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["10"], "{raw:?}");
    }
    // A single plain value is relayed as it came, sharing the read buffer.
    let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
    let range = buf.as_ptr_range();
    let head = parse_response_head(&mut buf, &Method::GET)
        .unwrap()
        .unwrap();
    assert!(range.contains(&head.headers["content-length"].as_bytes().as_ptr()));
    // Disagreeing lengths are refused even where no body follows.
    assert_eq!(
        head_err(
            "HTTP/1.1 200 OK\r\nContent-Length: 10, 11\r\n\r\n",
            &Method::HEAD
        ),
        ProtocolError::ContentLength
    );
}

fn head_err(raw: &str, method: &Method) -> ProtocolError {
    head(raw, method).unwrap_err()
}

#[test]
fn head_answers_with_chunked_get_no_length() {
    let head = head(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &Method::HEAD,
    )
    .unwrap()
    .unwrap();
    assert_eq!(head.framing, BodyFraming::Empty);
    assert!(head.keep_alive);
    assert!(!head.headers.contains_key("content-length"));
}

/// What feeding a response to the codec produced.
#[derive(Debug)]
struct Fed {
    status: StatusCode,
    framing: BodyFraming,
    body: Vec<u8>,
    /// The body ended only because the input did.
    by_close: bool,
    /// Bytes left after the body.
    rest: Vec<u8>,
}

/// Most bytes the codec may hold while it waits for more: a head just under its limit, or a
/// chunk line or trailer section just under theirs.
const BUFFER_BOUND: usize = MAX_HEAD_BYTES;

/// Feeds `wire` to the head parser and body decoder in pieces of random sizes, as the exchange
/// does with reads, and checks on every step that nothing panics, that the buffer never holds
/// more than [`BUFFER_BOUND`] plus one read while the codec waits, and that every step makes
/// progress (so nothing can spin).
fn feed(
    wire: &[u8],
    method: &Method,
    max_read: usize,
    rng: &mut fastrand::Rng,
) -> Result<Fed, String> {
    let mut input = wire;
    let mut buf = BytesMut::new();
    let mut read = |buf: &mut BytesMut| -> bool {
        if input.is_empty() {
            return false;
        }
        let n = rng.usize(1..=max_read).min(input.len());
        buf.extend_from_slice(&input[..n]);
        input = &input[n..];
        true
    };
    let mut steps = 0usize;
    let mut step = || {
        steps += 1;
        assert!(steps <= 4 * wire.len() + 16, "no progress");
    };
    let head = loop {
        step();
        if !buf.is_empty() {
            if let Some(head) = parse_response_head(&mut buf, method).map_err(|e| e.to_string())? {
                break head;
            }
            if buf.len() >= MAX_HEAD_BYTES {
                return Err("head too large".into());
            }
        }
        assert!(buf.len() < BUFFER_BOUND, "head buffer {}", buf.len());
        if !read(&mut buf) {
            return Err("closed before the head".into());
        }
    };
    let mut decoder = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    let mut by_close = false;
    loop {
        step();
        match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            Decoded::Data(data) => {
                assert!(!data.is_empty(), "empty data would make the relay spin");
                body.extend_from_slice(&data);
            }
            Decoded::End => break,
            Decoded::NeedMore => {
                let bound = crate::http1::chunked::MAX_TRAILER_BYTES
                    .max(crate::http1::chunked::MAX_CHUNK_LINE);
                assert!(buf.len() < bound, "body buffer {}", buf.len());
                if !read(&mut buf) {
                    decoder.closed().map_err(|e| e.to_string())?;
                    by_close = true;
                }
            }
        }
    }
    let mut rest = buf.to_vec();
    rest.extend_from_slice(input);
    Ok(Fed {
        status: head.status,
        framing: head.framing,
        body,
        by_close,
        rest,
    })
}

/// A valid response to `method` and the body a client should get from it.
fn valid_response(method: &Method, rng: &mut fastrand::Rng) -> (Vec<u8>, Vec<u8>, BodyFraming) {
    let mut wire = Vec::new();
    let http11 = rng.u8(..4) != 0;
    if http11 {
        for _ in 0..rng.usize(0..3) {
            let interim: &[u8] = match rng.u8(..3) {
                0 => b"HTTP/1.1 100 Continue\r\n\r\n",
                1 => b"HTTP/1.1 102 Processing\r\n\r\n",
                _ => b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
            };
            wire.extend_from_slice(interim);
        }
    }
    let status = [200u16, 201, 204, 304, 404, 500][rng.usize(..6)];
    let version = if http11 { "HTTP/1.1" } else { "HTTP/1.0" };
    wire.extend_from_slice(format!("{version} {status} Whatever\r\n").as_bytes());
    for i in 0..rng.usize(0..6) {
        let value = "v".repeat(rng.usize(0..200));
        wire.extend_from_slice(format!("X-Field-{i}: {value}\r\n").as_bytes());
    }
    let len = if rng.u8(..8) == 0 {
        rng.usize(4000..20_000)
    } else {
        rng.usize(0..600)
    };
    let body: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let bodiless = *method == Method::HEAD || status == 204 || status == 304;
    let framing = match rng.u8(..3) {
        0 if http11 => "chunked",
        1 => "length",
        _ => "close",
    };
    let mut expected = BodyFraming::UntilClose;
    match framing {
        "chunked" => {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            expected = BodyFraming::Chunked;
        }
        "length" => {
            let value = match rng.u8(..3) {
                0 => format!("Content-Length: {len}\r\n"),
                1 => format!("Content-Length: {len}, {len}\r\n"),
                _ => format!("content-length: {len}\r\nCONTENT-LENGTH: {len}\r\n"),
            };
            wire.extend_from_slice(value.as_bytes());
            wire.extend_from_slice(b"\r\n");
            expected = BodyFraming::Length(len as u64);
        }
        _ => wire.extend_from_slice(b"\r\n"),
    }
    if bodiless {
        return (wire, Vec::new(), BodyFraming::Empty);
    }
    match framing {
        "chunked" => {
            let mut at = 0;
            while at < body.len() {
                let n = rng.usize(1..2000).min(body.len() - at);
                wire.extend_from_slice(format!("{n:x}").as_bytes());
                if rng.u8(..4) == 0 {
                    wire.extend_from_slice(b";ext=\"a b\"");
                }
                wire.extend_from_slice(if rng.u8(..8) == 0 { b"\n" } else { b"\r\n" });
                wire.extend_from_slice(&body[at..at + n]);
                wire.extend_from_slice(b"\r\n");
                at += n;
            }
            wire.extend_from_slice(b"0\r\n");
            for i in 0..rng.usize(0..3) {
                wire.extend_from_slice(format!("X-Trailer-{i}: t\r\n").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
        }
        _ => wire.extend_from_slice(&body),
    }
    (wire, body, expected)
}

#[test]
fn random_valid_answers_decode_whatever_the_read_sizes() {
    let mut rng = fastrand::Rng::with_seed(0x0b57_2ea3);
    for _ in 0..1500 {
        let method = if rng.u8(..5) == 0 {
            Method::HEAD
        } else {
            Method::GET
        };
        let (mut wire, body, framing) = valid_response(&method, &mut rng);
        // What follows a delimited body (a pipelined answer) must stay unread.
        let next = b"HTTP/1.1 204 No Content\r\n\r\n";
        let delimited = framing != BodyFraming::UntilClose;
        if delimited {
            wire.extend_from_slice(next);
        }
        let max_read = [1, 7, 100, 4096][rng.usize(..4)];
        let fed = feed(&wire, &method, max_read, &mut rng)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&wire)));
        assert_eq!(fed.framing, framing);
        assert_eq!(fed.body, body);
        assert_eq!(fed.by_close, !delimited);
        assert_eq!(fed.rest, if delimited { &next[..] } else { &[][..] });
        assert!(fed.status.as_u16() >= 200);
    }
}

#[test]
fn mutated_and_hostile_answers_never_panic_spin_or_buffer_without_bound() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0013);
    let alphabet = b"0123456789abcdefABCDEF:;,=\" \t\r\n\0xX-+HTTP/1.chunkedContent-Length";
    for _ in 0..3000 {
        let method = if rng.u8(..5) == 0 {
            Method::HEAD
        } else {
            Method::GET
        };
        let (mut wire, _, _) = valid_response(&method, &mut rng);
        for _ in 0..rng.usize(1..5) {
            if wire.is_empty() {
                break;
            }
            let at = rng.usize(..wire.len());
            match rng.u8(..4) {
                0 => wire[at] = alphabet[rng.usize(..alphabet.len())],
                1 => {
                    wire.remove(at);
                }
                2 => wire.insert(at, alphabet[rng.usize(..alphabet.len())]),
                _ => wire.truncate(at.max(1)),
            }
        }
        let max_read = [1, 13, 512, 8192][rng.usize(..4)];
        if let Ok(fed) = feed(&wire, &method, max_read, &mut rng) {
            assert!(fed.body.len() <= wire.len());
        }
    }
    // Streams that never end a line or a section: each is refused once its limit is passed,
    // never buffered further.
    let endless = |prefix: &str, filler: &[u8]| {
        let mut wire = prefix.as_bytes().to_vec();
        while wire.len() < 1 << 20 {
            wire.extend_from_slice(filler);
        }
        wire
    };
    let hostile = [
        endless("HTTP/1.1 200 OK\r\nX-Long: ", b"a"),
        endless(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1",
            b"0",
        ),
        endless(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;",
            b"e",
        ),
        endless(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: ",
            b"t",
        ),
        endless(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            b"a: b\r\n",
        ),
        endless("HTTP/1.1 100 Continue\r\n\r\n", b" "),
        endless(
            "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
            b"b",
        ),
        endless(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            b"c",
        ),
    ];
    for wire in hostile {
        for max_read in [1 << 10, 64 << 10] {
            // Ends in an error, or (bodies with a length) short of the end when the input ran out.
            let result = feed(&wire, &Method::GET, max_read, &mut rng);
            assert!(
                result.is_err(),
                "{:?}",
                String::from_utf8_lossy(&wire[..60])
            );
        }
    }
}

#[test]
fn a_101_to_an_upgrade_is_the_answer_and_leaves_what_follows() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
           Content-Length: 5\r\n\r\n\x81\x02hi"[..],
    );
    let head = parse_upgrade_response_head(&mut buf, &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(head.headers["upgrade"], "websocket");
    assert_eq!(head.framing, BodyFraming::Empty);
    assert!(!head.keep_alive);
    assert_eq!(
        &buf[..],
        b"\x81\x02hi",
        "the new protocol's bytes stay unread"
    );

    let mut without = BytesMut::from(&b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..]);
    assert!(matches!(
        parse_upgrade_response_head(&mut without, &Method::GET),
        Err(ProtocolError::Head(_))
    ));
    // Other interim answers are still skipped; other answers are ordinary ones.
    let mut other = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 No\r\n\r\n"[..]);
    let head = parse_upgrade_response_head(&mut other, &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, StatusCode::FORBIDDEN);
}
