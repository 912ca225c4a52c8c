//! The gateway's HTTP/1.1 client against upstreams that answer with exactly the bytes a test
//! scripts: every way a response body can be delimited, interim answers, broken answers, early
//! answers, and keep-alive connections the upstream closes.

mod common;
use common::*;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// An upstream that runs a script on each connection it accepts, numbered from 0.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(n, stream));
            }
        });
        Scripted {
            addr,
            accepted,
            task,
        }
    }

    /// An upstream that answers every request on every connection with `answer`, until the
    /// gateway closes the connection.
    async fn answering(answer: &'static [u8]) -> Self {
        Self::start(move |_, mut stream| async move {
            while read_request_head(&mut stream).await.is_some() {
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        })
        .await
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A gateway with one worker in front of it, so every request may reuse its connections.
    async fn gateway(&self) -> TestGateway {
        self.gateway_with("", "").await
    }

    /// The config of [`Scripted::gateway`], with extra lines for the upstream and the route.
    fn config(&self, upstream_extra: &str, route_extra: &str) -> String {
        format!(
            "upstreams:\n  up:\n    targets: [http://{}]\n    timeout: 5s\n{upstream_extra}\
             routes:\n  - name: r\n    match: {{path: /}}\n    upstream: up\n{route_extra}",
            self.addr
        )
    }

    /// [`Scripted::gateway`] with extra lines for the upstream and the route.
    async fn gateway_with(&self, upstream_extra: &str, route_extra: &str) -> TestGateway {
        let yaml = server_yaml("workers: 1") + &self.config(upstream_extra, route_extra);
        TestGateway::start(&yaml).await
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request: its head, and its body as sent (Content-Length bytes, or the chunked
/// encoding up to its last chunk, with no trailers). `None` when the gateway closed first.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let head = read_request_head(stream).await?;
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        body.resize(len.trim().parse().unwrap(), 0);
        stream.read_exact(&mut body).await.ok()?;
    } else if lower.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"0\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.ok()?;
            body.push(byte[0]);
        }
    }
    Some((head, body))
}

/// Writes `pieces` as separate writes, so the gateway may see them in separate reads.
async fn write_pieces(stream: &mut TcpStream, pieces: &[&[u8]]) -> std::io::Result<()> {
    for piece in pieces {
        stream.write_all(piece).await?;
        stream.flush().await?;
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Sends a request through `gw`. Tests use one keep-alive client throughout, so every request
/// is served by the same worker and can reuse that worker's upstream connection.
async fn request(client: &Client, gw: &TestGateway, method: &str, path: &str, body: Bytes) -> Got {
    let request = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .body(Full::new(body))
        .unwrap();
    send(client, request).await
}

#[tokio::test]
async fn chunked_answers_arrive_whole_and_the_connection_is_reused() {
    let up = Scripted::start(|_, mut stream| async move {
        while read_request_head(&mut stream).await.is_some() {
            let pieces: [&[u8]; 7] = [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n",
                b"5\r\nhel",
                b"lo\r\n",
                b"7;name=\"ext\"\r\n, world\r\n",
                b"0\r\n",
                b"X-Checksum: abc\r\n",
                b"\r\n",
            ];
            if write_pieces(&mut stream, &pieces).await.is_err() {
                return;
            }
        }
    })
    .await;
    let gw = up.gateway().await;
    let c = client();
    for _ in 0..3 {
        let got = request(&c, &gw, "GET", "/c", Bytes::new()).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.text(), "hello, world");
        assert_eq!(got.header("x-up"), Some("1"));
    }
    assert_eq!(
        up.accepted(),
        1,
        "the connection was kept after chunked answers"
    );
}

#[tokio::test]
async fn answers_without_a_length_end_at_close_and_their_connection_is_not_reused() {
    let up = Scripted::start(|n, mut stream| async move {
        if read_request_head(&mut stream).await.is_some() {
            let body = format!("until close {n}");
            let _ = write_pieces(&mut stream, &[b"HTTP/1.1 200 OK\r\n\r\n", body.as_bytes()]).await;
        }
    })
    .await;
    let gw = up.gateway().await;
    let c = client();
    for n in 0..2 {
        let got = request(&c, &gw, "GET", "/", Bytes::new()).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), format!("until close {n}"));
    }
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn interim_answers_are_skipped_and_bodiless_answers_keep_the_connection() {
    let up = Scripted::start(|_, mut stream| async move {
        while let Some((head, _)) = read_request(&mut stream).await {
            let answer: &[u8] = if head.starts_with("HEAD ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
            } else if head.starts_with("GET /none") {
                b"HTTP/1.1 204 No Content\r\n\r\n"
            } else if head.starts_with("GET /same") {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
            } else {
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated"
            };
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let gw = up.gateway().await;
    let c = client();
    let got = request(&c, &gw, "POST", "/make", Bytes::from_static(b"{}")).await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (201, "created"));
    let got = request(&c, &gw, "HEAD", "/", Bytes::new()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-length"), Some("1234"));
    assert!(got.body.is_empty());
    assert_eq!(
        request(&c, &gw, "GET", "/none", Bytes::new()).await.status,
        204
    );
    let got = request(&c, &gw, "GET", "/same", Bytes::new()).await;
    assert_eq!(got.status, 304);
    assert_eq!(got.header("etag"), Some("\"x\""));
    let got = request(&c, &gw, "GET", "/again", Bytes::new()).await;
    assert_eq!(got.status, 201);
    assert_eq!(
        up.accepted(),
        1,
        "answers without a body left the connection usable"
    );
}

#[tokio::test]
async fn broken_answers_are_502_and_never_reach_the_client() {
    let up = Scripted::start(|_, mut stream| async move {
        let Some(head) = read_request_head(&mut stream).await else {
            return;
        };
        let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(70 << 10));
        let answer: Vec<u8> = match head.split(' ').nth(1).unwrap() {
            "/two-lengths" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc".to_vec()
            }
            "/not-http" => b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(),
            "/upgrade" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".to_vec(),
            "/huge-head" => big.into_bytes(),
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
        };
        let _ = stream.write_all(&answer).await;
        // Close only once the gateway has given up on the connection.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    })
    .await;
    let gw = up.gateway().await;
    let c = client();
    for path in ["/two-lengths", "/not-http", "/upgrade", "/huge-head"] {
        let got = request(&c, &gw, "GET", path, Bytes::new()).await;
        assert_eq!(got.status, 502, "{path}: {}", got.text());
        assert_eq!(got.json()["error"], "upstream_failed", "{path}");
    }
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_is_cut_short_for_the_client() {
    let up = Scripted::start(|_, mut stream| async move {
        if read_request_head(&mut stream).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
                .await;
        }
    })
    .await;
    let gw = up.gateway().await;
    // Body bytes came, so the answer is relayed: the head and the five bytes go out, then the
    // connection closes without the rest, so the client sees a truncated answer.
    let answer = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", DEADLINE).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 10\r\n"),
        "{answer:?}"
    );
    assert!(answer.ends_with("\r\n\r\nshort"), "{answer:?}");
    eventually("the broken body is counted", || async {
        metric(&gw, BODY_ERRORS).await == 1.0
    })
    .await;
}

const BODY_ERRORS: &str = "gatehouse_upstream_body_errors_total{upstream=\"up\"}";

/// Connection 0 answers one request, then reads the next head and closes without answering,
/// as a server whose keep-alive timeout fired just then does. Later connections answer.
async fn closing_after_one_answer() -> Scripted {
    Scripted::start(|n, mut stream| async move {
        let answer: &[u8] = if n == 0 { b"one" } else { b"two" };
        while read_request_head(&mut stream).await.is_some() {
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
            if write_pieces(&mut stream, &[head, answer]).await.is_err() {
                return;
            }
            if n == 0 {
                let _ = read_request_head(&mut stream).await;
                return;
            }
        }
    })
    .await
}

/// Through a one-worker gateway in front of `up`: a GET whose answer must be `first`, then
/// `method` with `body` on the same client connection (so the same worker and pool); the second
/// response.
async fn first_get_then(up: &Scripted, first: &str, method: &str, body: &'static [u8]) -> Got {
    let gw = up.gateway().await;
    let c = client();
    assert_eq!(
        request(&c, &gw, "GET", "/", Bytes::new()).await.text(),
        first
    );
    request(&c, &gw, method, "/", Bytes::from_static(body)).await
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    // Connection 0 answers once (keep-alive) and closes right away, as a server with a short
    // keep-alive timeout does; the gateway must notice before it sends the next request there,
    // or this POST (which is never retried) would fail.
    let up = Scripted::start(|n, mut stream| async move {
        while read_request(&mut stream).await.is_some() {
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nconn{n}");
            if stream.write_all(answer.as_bytes()).await.is_err() || n == 0 {
                return;
            }
        }
    })
    .await;
    let got = first_get_then(&up, "conn0", "POST", b"once").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "conn1"));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn idempotent_requests_are_retried_when_a_reused_connection_was_closed() {
    let up = closing_after_one_answer().await;
    let got = first_get_then(&up, "one", "GET", b"").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "two"));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn other_requests_are_not_retried_on_a_closed_reused_connection() {
    let up = closing_after_one_answer().await;
    let got = first_get_then(&up, "one", "POST", b"pay").await;
    assert_eq!(
        got.status,
        502,
        "the upstream may have acted on it: {}",
        got.text()
    );
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_reaches_the_client() {
    let up = Scripted::start(|_, mut stream| async move {
        if read_request_head(&mut stream).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
                .await;
            // Read what arrives until the gateway gives up, so closing does not reset the answer.
            let mut sink = vec![0u8; 64 << 10];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
    })
    .await;
    let gw = up.gateway().await;
    let c = client();
    let got = request(&c, &gw, "POST", "/upload", Bytes::from(vec![b'x'; 8 << 20])).await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (413, "big!"));
    // A new client: the first one's connection may be closed after an answer whose request
    // body was not read to the end. The upstream connection was not reused either.
    let got = request(
        &client(),
        &gw,
        "POST",
        "/upload",
        Bytes::from_static(b"small"),
    )
    .await;
    assert_eq!(got.status, 413);
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn request_bodies_are_framed_by_length_or_chunked() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    let up = Scripted::start(move |_, mut stream| {
        let log = Arc::clone(&log);
        async move {
            while let Some((head, body)) = read_request(&mut stream).await {
                let lower = head.to_ascii_lowercase();
                log.lock().unwrap().push(format!(
                    "{}|{}",
                    lower.lines().next().unwrap(),
                    String::from_utf8_lossy(&body)
                ));
                let framing = if lower.contains("transfer-encoding: chunked") {
                    "chunked"
                } else if lower.contains("content-length:") {
                    "length"
                } else {
                    "none"
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{framing}",
                    framing.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let gw = up.gateway().await;
    let c = client();
    assert_eq!(
        request(&c, &gw, "GET", "/g", Bytes::new()).await.text(),
        "none"
    );
    assert_eq!(
        request(&c, &gw, "POST", "/p", Bytes::from_static(b"hello"))
            .await
            .text(),
        "length"
    );
    assert_eq!(
        request(&c, &gw, "POST", "/e", Bytes::new()).await.text(),
        "length"
    );
    // A body of unknown length from the client goes upstream chunked.
    let chunks = futures_util::stream::iter(
        ["ab", "cde"]
            .map(|s| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(s)))),
    );
    let stream = TcpStream::connect(gw.handle.local_addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let streamed = Request::post("/s")
        .header("host", "gw.test")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let response = within(sender.send_request(streamed)).await.unwrap();
    let text = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&text[..], b"chunked");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "get /g http/1.1|",
            "post /p http/1.1|hello",
            "post /e http/1.1|",
            "post /s http/1.1|2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n",
        ]
    );
    assert_eq!(up.accepted(), 1);
}

/// Sends a raw request on a new connection to the gateway and returns the connection.
async fn raw_request(gw: &TestGateway, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads a response head, lower-cased, within the deadline.
async fn read_response_head(stream: &mut TcpStream) -> String {
    let head = within(read_request_head(stream))
        .await
        .expect("a response head");
    head.to_ascii_lowercase()
}

/// An upstream whose every connection answers each request with `head` followed by `body`,
/// then waits without sending more until the gateway closes; `closed` is set when it does.
async fn stalling(head: &'static str, body: &'static str, closed: Arc<AtomicBool>) -> Scripted {
    Scripted::start(move |_, mut stream| {
        let closed = Arc::clone(&closed);
        async move {
            if read_request_head(&mut stream).await.is_none() {
                return;
            }
            let _ = write_pieces(&mut stream, &[head.as_bytes(), body.as_bytes()]).await;
            let mut sink = [0u8; 1024];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            closed.store(true, Ordering::SeqCst);
        }
    })
    .await
}

#[tokio::test]
async fn a_body_that_stalls_midway_is_cut_after_read_timeout() {
    for (head, body) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            "0123456789",
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "a\r\n0123456789\r\n",
        ),
        // Read until close, and the upstream never closes.
        ("HTTP/1.1 200 OK\r\n\r\n", "0123456789"),
    ] {
        let closed = Arc::new(AtomicBool::new(false));
        let up = stalling(head, body, Arc::clone(&closed)).await;
        let gw = up.gateway_with("    read_timeout: 200ms\n", "").await;
        let started = Instant::now();
        let response =
            within(client().request(Request::get(gw.url("/")).body(Full::default()).unwrap()))
                .await
                .unwrap();
        assert_eq!(response.status(), 200, "{head:?}");
        let body = within(response.into_body().collect()).await;
        assert!(
            body.is_err(),
            "{head:?}: a stalled body must not look complete"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200),
            "{head:?}: cut after {took:?}"
        );
        // The upstream connection is closed, never pooled.
        eventually("the gateway closed the upstream connection", || async {
            closed.load(Ordering::SeqCst)
        })
        .await;
        assert_eq!(metric(&gw, BODY_ERRORS).await, 1.0, "{head:?}");
    }
}

#[tokio::test]
async fn an_upstream_silent_before_its_first_body_byte_gets_504_after_the_route_read_timeout() {
    let closed = Arc::new(AtomicBool::new(false));
    let up = stalling(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        "",
        Arc::clone(&closed),
    )
    .await;
    // The route's read_timeout overrides the upstream's, which would hold the client for 60 s.
    let gw = up
        .gateway_with("    read_timeout: 60s\n", "    read_timeout: 200ms\n")
        .await;
    let started = Instant::now();
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status, 504, "{}", got.text());
    assert_eq!(got.json()["error"], "upstream_timeout");
    assert!(started.elapsed() >= Duration::from_millis(200));
    eventually("the gateway closed the upstream connection", || async {
        closed.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn a_body_broken_before_its_first_byte_is_a_502_and_counted() {
    let up = Scripted::start(|_, mut stream| async move {
        let Some(head) = read_request_head(&mut stream).await else {
            return;
        };
        let answer: &[u8] = if head.starts_with("GET /bad-chunk ") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        };
        let _ = stream.write_all(answer).await;
    })
    .await;
    let gw = up.gateway().await;
    for path in ["/cut", "/bad-chunk"] {
        let got = get(&gw.url(path)).await;
        assert_eq!(got.status, 502, "{path}: {}", got.text());
        assert_eq!(got.json()["error"], "upstream_failed", "{path}");
    }
    assert_eq!(metric(&gw, BODY_ERRORS).await, 2.0);
}

#[tokio::test]
async fn http10_answers_with_transfer_encoding_are_read_chunked_and_not_reused() {
    let up = Scripted::answering(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let gw = up.gateway().await;
    let c = client();
    for _ in 0..2 {
        let got = request(&c, &gw, "GET", "/", Bytes::new()).await;
        assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "hello"));
    }
    assert_eq!(
        up.accepted(),
        2,
        "an HTTP/1.0 answer with Transfer-Encoding closes"
    );
}

#[tokio::test]
async fn identical_content_lengths_reach_the_client_as_one() {
    let up = Scripted::start(|_, mut stream| async move {
        while let Some(head) = read_request_head(&mut stream).await {
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n";
            let body = if head.starts_with("HEAD ") {
                ""
            } else {
                "hello"
            };
            if stream
                .write_all((answer.to_string() + body).as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await;
    let gw = up.gateway().await;
    let mut stream = raw_request(&gw, "HEAD / HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let head = read_response_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let lengths: Vec<&str> = head
        .lines()
        .filter(|l| l.starts_with("content-length:"))
        .collect();
    assert_eq!(lengths, ["content-length: 5"], "{head}");
    let h2 = h2c_client();
    let got = send(
        &h2,
        Request::get(gw.url("/")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(got.text(), "hello");
    let lengths: Vec<_> = got.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, ["5"]);
}

#[tokio::test]
async fn transfer_codings_other_than_one_chunked_are_502() {
    let up = Scripted::start(|_, mut stream| async move {
        let Some(head) = read_request_head(&mut stream).await else {
            return;
        };
        let coding = match head.split(' ').nth(1).unwrap() {
            "/gzip" => "gzip",
            "/gzip-chunked" => "gzip, chunked",
            "/twice" => "chunked, chunked",
            _ => "chunked\r\nTransfer-Encoding: chunked",
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    })
    .await;
    let gw = up.gateway().await;
    for path in ["/gzip", "/gzip-chunked", "/twice", "/two-fields"] {
        let got = get(&gw.url(path)).await;
        assert_eq!(got.status, 502, "{path}: {}", got.text());
        assert_eq!(got.json()["error"], "upstream_failed", "{path}");
    }
}

#[tokio::test]
async fn a_head_answered_chunked_gets_no_invented_length() {
    let up =
        Scripted::answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n")
            .await;
    let gw = up.gateway().await;
    let mut stream = raw_request(&gw, "HEAD / HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let head = read_response_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-up: 1"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let h2 = h2c_client();
    let got = send(
        &h2,
        Request::head(gw.url("/")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-up"), Some("1"));
    assert_eq!(got.header("content-length"), None);
    assert_eq!(
        up.accepted(),
        1,
        "a HEAD answer leaves the connection usable"
    );
}

#[tokio::test]
async fn an_interim_answer_then_a_close_on_a_reused_connection_is_not_sent_again() {
    let heads = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&heads);
    let up = Scripted::start(move |n, mut stream| {
        let count = Arc::clone(&count);
        async move {
            while read_request_head(&mut stream).await.is_some() {
                let seen = count.fetch_add(1, Ordering::SeqCst);
                if n == 0 && seen == 1 {
                    // The second request on the first connection: an interim answer, then gone.
                    let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let gw = up.gateway().await;
    let c = client();
    assert_eq!(
        request(&c, &gw, "GET", "/", Bytes::new()).await.text(),
        "ok"
    );
    let got = request(&c, &gw, "GET", "/", Bytes::new()).await;
    assert_eq!(
        got.status,
        502,
        "the upstream saw the request: {}",
        got.text()
    );
    assert_eq!(heads.load(Ordering::SeqCst), 2, "the request was sent once");
    assert_eq!(up.accepted(), 1);
}

#[test]
fn read_timeout_is_checked_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let load = |yaml: &str| {
        std::fs::write(&path, yaml).unwrap();
        let env = gatehouse::config::MapEnv(Default::default());
        let registries = gatehouse::registry::Registries::default();
        gatehouse::config::load(&path, &env, &registries)
    };
    let server = "server:\n  listen: 127.0.0.1:0\n";
    let upstream = "upstreams:\n  up:\n    targets: [http://127.0.0.1:9]\n";
    let good = format!(
        "{server}{upstream}    read_timeout: 2s\nroutes:\n  - name: r\n    match: {{path: /}}\n    upstream: up\n"
    );
    let snapshot = load(&good).expect("valid");
    let proxy = |snapshot: &gatehouse::config::Snapshot| match &snapshot.router.routes()[0].action {
        gatehouse::routing::route::RouteAction::Proxy(p) => p.read_timeout,
        _ => unreachable!(),
    };
    assert_eq!(proxy(&snapshot), Duration::from_secs(2));
    let snapshot = load(&(good.clone() + "    read_timeout: 250ms\n")).expect("valid");
    assert_eq!(proxy(&snapshot), Duration::from_millis(250));
    let default = format!(
        "{server}{upstream}routes:\n  - name: r\n    match: {{path: /}}\n    upstream: up\n"
    );
    assert_eq!(proxy(&load(&default).unwrap()), Duration::from_secs(60));
    for (yaml, line, says) in [
        (format!("{server}{upstream}    read_timeout: 0s\n"), 6, "read_timeout"),
        (
            format!("{server}routes:\n  - name: r\n    match: {{path: /}}\n    respond: {{status: 200}}\n    read_timeout: 1s\n"),
            7,
            "`read_timeout` only applies to routes with `upstream`",
        ),
    ] {
        let errors = load(&yaml).expect_err("refused").0;
        let found = errors.iter().any(|e| e.mark.is_some_and(|m| m.line == line) && e.message.contains(says));
        assert!(found, "{yaml}: {errors:?}");
    }
}

/// The access-log line of the request to `path`, once the child has written it.
async fn access_line(gw: &GatehouseProcess, path: &str) -> serde_json::Value {
    let mut found = None;
    eventually("the access log line", || {
        found = gw
            .log_lines()
            .into_iter()
            .find(|l| l["target"] == "gatehouse::access" && l["path"] == path);
        std::future::ready(found.is_some())
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn a_broken_upstream_body_is_logged_with_its_reason() {
    let up = Scripted::start(|_, mut stream| async move {
        let Some(head) = read_request_head(&mut stream).await else {
            return;
        };
        let answer: &[u8] = if head.starts_with("GET /late ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        };
        let _ = write_pieces(&mut stream, &[answer]).await;
    })
    .await;
    let config = "server:\n  listen: 127.0.0.1:PORT\nlogging:\n  format: json\n  access_log: true\n"
        .to_string() + &up.config("", "");
    let gw = GatehouseProcess::start(&config, &[]).await;
    let got = get(&format!("http://{}/early", gw.addr)).await;
    assert_eq!(got.status, 502);
    let early = access_line(&gw, "/early").await;
    assert_eq!(early["status"], 502, "{early}");
    assert_eq!(early["error"], "upstream_body_error", "{early}");
    let request = Request::get(format!("http://{}/late", gw.addr))
        .body(Full::default())
        .unwrap();
    if let Ok(response) = within(client().request(request)).await {
        assert!(within(response.into_body().collect()).await.is_err());
    }
    let late = access_line(&gw, "/late").await;
    assert_eq!(late["status"], 200, "{late}");
    assert_eq!(late["completed"], false, "{late}");
    assert_eq!(late["error"], "upstream_body_error", "{late}");
}
