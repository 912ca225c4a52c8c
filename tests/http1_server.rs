//! The gateway's own HTTP/1.x server, driven by raw clients: pipelining, persistence, framing of
//! responses, request heads and bodies it refuses, and what it does with bodies nobody read.

mod common;
use common::captured_log::CapturedLog;
use common::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway with `/` proxied to an echo upstream, `/fixed` answered by the gateway itself, and
/// `/private` behind a JWT provider (so requests to it are refused before their body is read).
async fn gateway(up: &EchoUpstream) -> TestGateway {
    let yaml = format!(
        "{}jwt:\n  providers:\n    p:\n      algorithms: [HS256]\n      secret: 0123456789abcdef0123456789abcdef\n\
         upstreams:\n  up:\n    targets: [{}]\nroutes:\n  \
         - name: fixed\n    match: {{path: /fixed}}\n    respond: {{body: fixed body}}\n  \
         - name: private\n    match: {{path: /private}}\n    upstream: up\n    auth: {{jwt: p}}\n  \
         - name: all\n    match: {{path: /}}\n    upstream: up\n",
        server_yaml(""),
        up.url()
    );
    TestGateway::start(&yaml).await
}

async fn connect(gw: &TestGateway) -> TcpStream {
    TcpStream::connect(gw.addr).await.expect("connect")
}

/// Reads one response head (status and lower-cased head text) and its Content-Length body.
async fn response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(stream.read(&mut byte)).await.expect("read");
        assert_eq!(
            n,
            1,
            "closed before a whole head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("length"));
    let mut body = vec![0u8; len];
    within(stream.read_exact(&mut body)).await.expect("body");
    (status, head, body)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    let mut stream = connect(&gw).await;
    stream
        .write_all(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, _, body) = response(&mut stream).await;
    assert_eq!(status, 200);
    let echo: Echo = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo.target, "/one");
    let (_, _, body) = response(&mut stream).await;
    let echo: Echo = serde_json::from_slice(&body).unwrap();
    assert_eq!((echo.target.as_str(), echo.body_len), ("/two", 5));
    let (_, _, body) = response(&mut stream).await;
    assert_eq!(body, b"fixed body");
    let (_, _, body) = response(&mut stream).await;
    let echo: Echo = serde_json::from_slice(&body).unwrap();
    assert_eq!((echo.target.as_str(), echo.body_len), ("/three", 3));
    // Still open for more.
    stream
        .write_all(b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut stream).await.0, 200);
}

#[tokio::test]
async fn http_1_0_clients_get_what_they_asked_for() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    // Without keep-alive: one response, then the gateway closes.
    let mut stream = connect(&gw).await;
    stream
        .write_all(b"GET /fixed HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = response(&mut stream).await;
    assert_eq!((status, body.as_slice()), (200, &b"fixed body"[..]));
    assert!(head.contains("connection: close"), "{head}");
    wait_for_close(&mut stream).await;
    // With keep-alive: said so, and the connection stays.
    let mut stream = connect(&gw).await;
    stream
        .write_all(b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (_, head, _) = response(&mut stream).await;
    assert!(head.contains("connection: keep-alive"), "{head}");
    stream
        .write_all(b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut stream).await.0, 200);
}

/// An upstream that answers every request with 100 000 pattern bytes in chunked coding, so
/// the gateway does not know the length when it starts its own response.
async fn chunked_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..at + 4);
                        let mut out =
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                        for piece in pattern(0, 100_000).chunks(30_000) {
                            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                            out.extend_from_slice(piece);
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"0\r\n\r\n");
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn bodies_of_unknown_length_are_chunked_for_http_1_1_and_close_delimited_for_1_0() {
    let (up, _task) = chunked_upstream().await;
    let yaml = format!(
        "{}upstreams:\n  up:\n    targets: [http://{up}]\nroutes:\n  - name: all\n    match: {{path: /}}\n    upstream: up\n",
        server_yaml("")
    );
    let gw = TestGateway::start(&yaml).await;
    let mut stream = connect(&gw).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    while !all.ends_with(b"\r\n0\r\n\r\n") {
        let mut buf = [0u8; 65536];
        let n = within(stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed mid-response");
        all.extend_from_slice(&buf[..n]);
    }
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..split]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        !head.contains("content-length") && !head.contains("connection: close"),
        "{head}"
    );
    let mut body = Vec::new();
    let mut rest = &all[split..];
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    assert_eq!(body, pattern(0, 100_000));

    let mut stream = connect(&gw).await;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    within(stream.read_to_end(&mut all)).await.unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..split]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding") && head.contains("connection: close"),
        "{head}"
    );
    assert_eq!(
        all[split..],
        pattern(0, 100_000)[..],
        "the body ends where the connection does"
    );
}

#[tokio::test]
async fn head_requests_get_the_length_and_no_body() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    let mut stream = connect(&gw).await;
    stream
        .write_all(b"HEAD /fixed HTTP/1.1\r\nHost: x\r\n\r\nGET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        within(stream.read_exact(&mut byte)).await.unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(text.contains("content-length: 10\r\n"), "{text}");
    // The next bytes are the second response, not a body.
    let (status, _, body) = response(&mut stream).await;
    assert_eq!((status, body.as_slice()), (200, &b"fixed body"[..]));
}

/// Sends `request` on a new connection; returns the response's status and JSON error code, and
/// checks that the gateway then closed the connection.
async fn refused_and_closed(gw: &TestGateway, request: &[u8]) -> (u16, String) {
    let mut stream = connect(gw).await;
    stream.write_all(request).await.unwrap();
    let (status, head, body) = response(&mut stream).await;
    assert!(
        head.contains("connection: close"),
        "{head}{}",
        String::from_utf8_lossy(&body)
    );
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
    assert!(json["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    wait_for_close(&mut stream).await;
    (
        status,
        json["error"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn ambiguous_or_invalid_request_heads_get_400_and_close() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    for request in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
    ] {
        let (status, code) = refused_and_closed(&gw, request).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "bad_request"),
            "{:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(up.requests(), 0, "nothing refused reached the upstream");
    let (status, code) = refused_and_closed(&gw, b"GET / HTTP/1.2\r\nHost: x\r\n\r\n").await;
    assert_eq!((status, code.as_str()), (505, "http_version_not_supported"));
}

#[tokio::test]
async fn broken_chunked_bodies_are_the_clients_fault() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    for body in [
        &b"zz\r\nabc\r\n0\r\n\r\n"[..],
        b"3\r\nabcX\r\n0\r\n\r\n",
        b" 3\r\nabc\r\n0\r\n\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b"FFFFFFFFFFFFFFFFF\r\n",
        b"3\nabc\r\n0\r\n\r\n",
    ] {
        let mut request =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let (status, code) = refused_and_closed(&gw, &request).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "bad_request"),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn unread_bodies_are_skipped_when_small_and_close_the_connection_when_large() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    // Refused before its body is read (no token): the small body is read past, and the
    // connection serves the next request.
    let mut stream = connect(&gw).await;
    stream
        .write_all(b"POST /private HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = response(&mut stream).await;
    assert_eq!(status, 401);
    assert!(!head.contains("connection: close"), "{head}");
    let (status, _, body) = response(&mut stream).await;
    assert_eq!((status, body.as_slice()), (200, &b"fixed body"[..]));

    // Announced as larger than is worth reading: answered, then closed.
    let mut stream = connect(&gw).await;
    stream
        .write_all(b"POST /private HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nsome")
        .await
        .unwrap();
    let (status, _, _) = response(&mut stream).await;
    assert_eq!(status, 401);
    wait_for_close(&mut stream).await;
}

#[tokio::test]
async fn a_client_waiting_for_continue_gets_the_answer_and_a_close_instead() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    let mut stream = connect(&gw).await;
    stream
        .write_all(b"POST /private HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = response(&mut stream).await;
    assert_eq!(status, 401, "no 100 Continue for a body nobody wants");
    assert!(head.contains("connection: close"), "{head}");
    wait_for_close(&mut stream).await;
}

#[tokio::test]
async fn an_invalid_http2_preface_gets_goaway_protocol_error_and_a_close() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    for opening in [
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nsm\r\n\r\n",
        b"PRI / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/1.1\r\n",
    ] {
        let mut stream = connect(&gw).await;
        stream.write_all(opening).await.unwrap();
        let mut got = Vec::new();
        within(stream.read_to_end(&mut got))
            .await
            .expect("read until the gateway closes");
        let what = String::from_utf8_lossy(opening);
        // Frames: a 9-byte header (24-bit length, type, flags, 31-bit stream id), then payload.
        let mut frames = Vec::new();
        let mut rest = &got[..];
        while rest.len() >= 9 {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            assert!(
                rest.len() >= 9 + len,
                "{what:?}: cut-short frame in {got:?}"
            );
            frames.push((rest[3], rest[4], &rest[5..9], &rest[9..9 + len]));
            rest = &rest[9 + len..];
        }
        assert!(rest.is_empty(), "{what:?}: not frames: {got:?}");
        let [settings, goaway] = frames[..] else {
            panic!("{what:?}: expected SETTINGS and GOAWAY, got {got:?}");
        };
        assert_eq!(settings, (0x4, 0, &[0u8; 4][..], &[][..]), "{what:?}");
        let (kind, flags, stream_id, payload) = goaway;
        assert_eq!(
            (kind, flags, stream_id),
            (0x7, 0, &[0u8; 4][..]),
            "{what:?}"
        );
        assert_eq!(payload.len(), 8, "{what:?}");
        assert_eq!(&payload[..4], [0, 0, 0, 0], "{what:?}: last stream id");
        assert_eq!(&payload[4..], [0, 0, 0, 1], "{what:?}: PROTOCOL_ERROR");
    }
    assert_eq!(up.requests(), 0);
    // The valid preface still opens HTTP/2.
    let got = send(
        &h2c_client(),
        http::Request::get(gw.url("/fixed"))
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn an_early_answer_survives_a_client_that_keeps_sending() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    let stream = connect(&gw).await;
    let (mut reader, mut writer) = stream.into_split();
    // Refused before its body is read, and too large to read past: answered, then closed. The
    // client sends its whole body regardless, as clients do; closing with those bytes unread
    // would reset the connection and could destroy the answer before the client reads it.
    let body_len = 8 << 20;
    let sending = tokio::spawn(async move {
        writer
            .write_all(
                format!("POST /private HTTP/1.1\r\nHost: x\r\nContent-Length: {body_len}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..body_len / chunk.len() {
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await
    });
    within(sending)
        .await
        .unwrap()
        .expect("the gateway reads the whole body before closing");
    let mut answer = Vec::new();
    within(reader.read_to_end(&mut answer))
        .await
        .expect("the answer is not reset");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        text.ends_with("}\n") && text.contains("\"error\":\"missing\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_field_name_over_1_kib_gets_431_on_http_1_1_and_http_2() {
    let up = EchoUpstream::start("a").await;
    let gw = gateway(&up).await;
    for (len, status) in [(1023, 200), (1024, 200), (1025, 431)] {
        let name = "n".repeat(len);
        let mut stream = connect(&gw).await;
        let request = format!("GET / HTTP/1.1\r\nHost: x\r\n{name}: v\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (got, _, body) = response(&mut stream).await;
        assert_eq!(got, status, "HTTP/1.1, {len}-byte name");
        if status == 431 {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], "headers_too_large", "{json}");
            wait_for_close(&mut stream).await;
        }

        let request = http::Request::get(gw.url("/"))
            .header(name.as_str(), "v")
            .body(http_body_util::Full::default())
            .unwrap();
        let got = send(&h2c_client(), request).await;
        assert_eq!(got.status, status, "HTTP/2, {len}-byte name");
        if status == 431 {
            assert_eq!(got.json()["error"], "headers_too_large");
        }
    }
    assert_eq!(
        up.requests(),
        4,
        "only the names within the limit were forwarded"
    );
}

/// The `X-Request-Id` of a raw response.
fn request_id_of(response: &str) -> String {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no X-Request-Id: {response:?}"))
}

#[tokio::test]
async fn refused_and_unrouted_requests_log_their_path() {
    let log = CapturedLog::install();
    let up = EchoUpstream::start("a").await;
    let yaml = format!(
        "{}upstreams:\n  up:\n    targets: [{}]\nroutes:\n  \
         - name: api\n    match: {{path: /api, methods: [GET]}}\n    upstream: up\n",
        server_yaml(""),
        up.url()
    );
    let gw = TestGateway::start(&yaml).await;
    let long_name = "n".repeat(1025);
    // (request, status, path, raw_path): the normalised path when there is one, else the path
    // as received (never the query), marked as raw.
    let cases = [
        (
            "GET /nope/x/../y?secret=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                .to_string(),
            404,
            "/nope/y",
            None,
        ),
        (
            "POST /api/./v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_string(),
            405,
            "/api/v1",
            None,
        ),
        (
            "GET /api/%252e%252e/x?secret=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                .to_string(),
            400,
            "",
            Some("/api/%252e%252e/x"),
        ),
        (
            "GET /api/a/../b?secret=1 HTTP/1.1\r\nHost: x y\r\n\r\n".to_string(),
            400,
            "",
            Some("/api/a/../b"),
        ),
        (
            format!("GET /api/a?secret=1 HTTP/1.1\r\nHost: x\r\n{long_name}: v\r\n\r\n"),
            431,
            "",
            Some("/api/a"),
        ),
    ];
    for (request, status, path, raw_path) in cases {
        let response = raw(gw.addr, request.as_bytes(), DEADLINE).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{response}"
        );
        let line = log.line(&request_id_of(&response)).await;
        assert_eq!(line["target"], "gatehouse::access", "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["path"], path, "{line}");
        assert_eq!(line["raw_path"].as_str(), raw_path, "{line}");
        assert_eq!(line["route"], "", "{line}");
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
        assert!(!line.to_string().contains("secret"), "{line}");
    }
    // HTTP/2 heads are held to the name limit in the pipeline, after the path is known.
    let request = http::Request::get(gw.url("/api/./h2?secret=1"))
        .header(long_name.as_str(), "v")
        .body(http_body_util::Full::default())
        .unwrap();
    let got = send(&h2c_client(), request).await;
    assert_eq!(got.status, 431);
    let line = log.line(got.header("x-request-id").unwrap()).await;
    assert_eq!(line["path"], "/api/h2", "{line}");
    assert_eq!(up.requests(), 0);
}
