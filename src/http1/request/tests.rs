use super::*;

const LIMIT: usize = 64 << 10;

fn parse(wire: &str) -> Result<Option<RequestHead>, HeadError> {
    parse_request_head(&mut BytesMut::from(wire.as_bytes()), LIMIT)
}

fn head(wire: &str) -> RequestHead {
    parse(wire).unwrap().expect("a whole head")
}

fn refused(wire: &str) -> HeadError {
    parse(wire).expect_err(wire)
}

#[test]
fn a_head_is_parsed_and_removed_from_the_buffer() {
    let mut buf = BytesMut::from(
        &b"POST /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabcGET"[..],
    );
    let head = parse_request_head(&mut buf, LIMIT).unwrap().unwrap();
    assert_eq!(&buf[..], b"abcGET", "the body and what follows stay");
    assert_eq!(head.parts.method, Method::POST);
    assert_eq!(head.parts.uri, "/a/b?c=d");
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.parts.headers["host"], "example.com:8080");
    let all: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
    assert_eq!(all, ["1", "2"]);
    assert_eq!(head.framing, RequestFraming::Length(3));
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
}

#[test]
fn partial_heads_wait_for_more() {
    let wire = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for end in 0..wire.len() {
        assert!(parse(&wire[..end]).unwrap().is_none(), "{end} bytes");
    }
    assert!(parse(wire).unwrap().is_some());
}

#[test]
fn persistence_follows_version_and_connection() {
    assert!(head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
    assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: x, CLOSE\r\n\r\n").keep_alive);
    assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
}

#[test]
fn expect_continue_only_on_http_1_1() {
    let wire = "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-Continue\r\n\r\n";
    assert!(head(wire).expect_continue);
    let wire = "PUT / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n";
    assert!(!head(wire).expect_continue);
}

#[test]
fn framing() {
    let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
    assert_eq!(head(chunked).framing, RequestFraming::Chunked);
    let zero = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(head(zero).framing, RequestFraming::None);
    assert_eq!(
        head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").framing,
        RequestFraming::None
    );
}

#[test]
fn ambiguous_framing_is_refused() {
    for wire in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        assert!(matches!(refused(wire), HeadError::Malformed(_)), "{wire:?}");
    }
}

#[test]
fn host_is_required_once_and_valid_on_http_1_1() {
    assert!(matches!(
        refused("GET / HTTP/1.1\r\n\r\n"),
        HeadError::Malformed(_)
    ));
    assert!(matches!(
        refused("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        HeadError::Malformed(_)
    ));
    for bad in [
        "a b", "user@a", "a:b:c", "a/b", "[::1", "a:99999x", "a:65536", "a:", ":80", "a%2e",
        "[::1]x", "[x]:1", "a:123456",
    ] {
        let wire = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert!(matches!(refused(&wire), HeadError::Malformed(_)), "{bad}");
    }
    for good in [
        "a",
        "a:80",
        "a:65535",
        "127.0.0.1:8080",
        "[::1]",
        "[::1]:8080",
        "xn--bcher-kva.example",
    ] {
        let wire = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        assert!(parse(&wire).unwrap().is_some(), "{good}");
    }
    // RFC 9112 §3.2: an empty Host is what a client sends when the target has no authority.
    assert!(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n").unwrap().is_some());
    assert!(parse("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
}

#[test]
fn targets() {
    assert_eq!(head("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").parts.uri, "*");
    assert_eq!(
        head("GET http://b/x HTTP/1.1\r\nHost: a\r\n\r\n").parts.uri,
        "http://b/x"
    );
    assert_eq!(
        head("CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n")
            .parts
            .uri,
        "b:443"
    );
    for wire in [
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET b:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(matches!(refused(wire), HeadError::Malformed(_)), "{wire:?}");
    }
}

#[test]
fn malformed_heads_are_refused() {
    for wire in [
        "GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "G\x7fT / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\r\n\r\n\r\n",
    ] {
        let error = parse(wire);
        assert!(
            matches!(error, Err(HeadError::Malformed(_))),
            "{wire:?}: {error:?}"
        );
    }
    assert_eq!(refused("GET / HTTP/2.0\r\n\r\n"), HeadError::Version);
    assert_eq!(refused("GET / HTTP/1.2\r\n\r\n"), HeadError::Version);
}

#[test]
fn size_limit_holds_at_its_boundary() {
    let base = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: \r\n\r\n".len();
    for (size, ok) in [(999, true), (1000, true), (1001, false)] {
        let wire = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(size - base)
        );
        assert_eq!(wire.len(), size);
        let result = parse_request_head(&mut BytesMut::from(wire.as_bytes()), 1000);
        assert_eq!(result.is_ok(), ok, "{size} bytes: {result:?}");
        if !ok {
            assert_eq!(result.unwrap_err(), HeadError::TooLarge);
        }
        // Arriving in pieces: refused once the bytes buffered pass the limit without a head.
        let partial = &wire.as_bytes()[..size - 1];
        let result = parse_request_head(&mut BytesMut::from(partial), 1000);
        assert_eq!(
            result.is_ok(),
            size - 1 < 1000,
            "{} bytes buffered",
            size - 1
        );
    }
}

#[test]
fn field_count_limit() {
    for (count, ok) in [
        (MAX_HEADERS - 1, true),
        (MAX_HEADERS, true),
        (MAX_HEADERS + 1, false),
    ] {
        let fields: String = (1..count).map(|i| format!("X-{i}: v\r\n")).collect();
        let wire = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        let result = parse(&wire);
        assert_eq!(result.is_ok(), ok, "{count} fields");
        if !ok {
            assert_eq!(result.unwrap_err(), HeadError::TooLarge);
        }
    }
}

#[test]
fn values_share_the_read_buffer() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n"[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let head = parse_request_head(&mut buf, LIMIT).unwrap().unwrap();
    let value = head.parts.headers["x-long"].as_bytes().as_ptr() as usize;
    assert!(range.contains(&value), "not copied");
}

#[test]
fn random_bytes_never_panic_and_whole_heads_never_overrun() {
    let mut rng = fastrand::Rng::with_seed(0x4ead_5eed);
    let pieces: [&[u8]; 16] = [
        b"GET ",
        b"POST ",
        b"/",
        b"*",
        b"http://a/",
        b" HTTP/1.1",
        b" HTTP/1.0",
        b"\r\n",
        b"\n",
        b"Host: a",
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        b":",
        b" ",
        b"\x00",
        b"\xff",
    ];
    for _ in 0..20_000 {
        let mut wire = Vec::new();
        for _ in 0..rng.usize(1..14) {
            wire.extend_from_slice(pieces[rng.usize(..pieces.len())]);
        }
        let mut buf = BytesMut::from(&wire[..]);
        if let Ok(Some(head)) = parse_request_head(&mut buf, 256) {
            assert!(wire.len() - buf.len() <= 256);
            // A head that parses names one framing at most.
            let h = &head.parts.headers;
            assert!(!(h.contains_key("content-length") && h.contains_key("transfer-encoding")));
        }
    }
}

#[test]
fn field_name_length_limit_holds_at_its_boundary() {
    for (len, ok) in [
        (MAX_HEADER_NAME - 1, true),
        (MAX_HEADER_NAME, true),
        (MAX_HEADER_NAME + 1, false),
    ] {
        let wire = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}: v\r\n\r\n",
            "n".repeat(len)
        );
        match parse(&wire) {
            Ok(Some(head)) if ok => assert_eq!(head.parts.headers.len(), 2),
            Err(HeadError::NameTooLong) if !ok => {}
            other => panic!("{len}-byte name: {other:?}"),
        }
    }
    // The head limit still comes first for a name that does not fit in it.
    let wire = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}: v\r\n\r\n",
        "n".repeat(2000)
    );
    let result = parse_request_head(&mut BytesMut::from(wire.as_bytes()), 1000);
    assert_eq!(result.unwrap_err(), HeadError::TooLarge);
}

#[test]
fn an_absolute_form_target_names_the_host() {
    // RFC 9112 §3.2.2: the target's authority wins over Host, and replaces it.
    for (wire, host) in [
        (
            "GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n",
            "a.example",
        ),
        (
            "GET https://a.example:8443/x HTTP/1.1\r\nHost: b\r\n\r\n",
            "a.example:8443",
        ),
        (
            "GET HTTP://[::1]:8080 HTTP/1.1\r\nHost: b\r\n\r\n",
            "[::1]:8080",
        ),
        ("GET http://a.example/x HTTP/1.0\r\n\r\n", "a.example"),
    ] {
        let head = head(wire);
        let hosts: Vec<_> = head.parts.headers.get_all("host").iter().collect();
        assert_eq!(hosts, [host], "{wire:?}");
        assert_eq!(head.parts.uri.authority().unwrap().as_str(), host);
    }
    for wire in [
        "GET http://user@a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET http://u:p@a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET ftp://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET http://a%2eexample/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET http://a.example:99999/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET http://a.example/x HTTP/1.1\r\n\r\n",
    ] {
        assert!(matches!(refused(wire), HeadError::Malformed(_)), "{wire:?}");
    }
}

#[test]
fn the_path_of_a_refused_head_for_its_log_line() {
    for (buf, path) in [
        (
            &b"GET /a/b?token=x HTTP/1.1\r\nHost"[..],
            Some(&b"/a/b"[..]),
        ),
        (b"GET /%252e HTTP/1.1\r\n", Some(b"/%252e")),
        (b"GET http://a/x HTTP/1.1", Some(b"http://a/x")),
        (b"GET /no-version-yet", None),
        (b"GET ?q HTTP/1.1\r\n", None),
        (b"GET  / HTTP/1.1\r\n", None),
        (b"", None),
    ] {
        assert_eq!(
            raw_target_path(buf),
            path,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn a_refused_head_stays_in_the_buffer() {
    for wire in [
        &b"GET / HTTP/1.1\r\nHost: a b\r\n\r\nrest"[..],
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\nrest",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nrest",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\nrest",
    ] {
        let mut buf = BytesMut::from(wire);
        assert!(parse_request_head(&mut buf, LIMIT).is_err());
        assert_eq!(&buf[..], wire);
    }
}
