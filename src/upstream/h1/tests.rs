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
        let mut out = BytesMut::new();
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
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
            BodyFraming::Chunked,
            true,
        ),
        // The last coding is not chunked: only the close ends it.
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            BodyFraming::UntilClose,
            false,
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
