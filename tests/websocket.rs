//! WebSocket (HTTP/1.1 `Upgrade`) through the gateway: a tokio-tungstenite client on one side,
//! a tokio-tungstenite echo server (or a raw one, for what a library would not do) on the
//! other; over the plain listener and the TLS one.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::captured_log::CapturedLog;
use common::{bearer, read_request_head, read_response, server_yaml, within, TestGateway};
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

const SECRET: &str = "a-websocket-secret-that-is-long-enough";

/// A WebSocket echo server: every text and binary message comes back; it records the head of
/// each upgrade it accepted and counts the sessions that ended with a close handshake.
struct WsEcho {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<HeaderMap>>>,
    closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl WsEcho {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// An echo server speaking TLS with `acceptor`'s certificate when there is one.
    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let (seen, done) = (Arc::clone(&heads), Arc::clone(&closed));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => echo_websocket(stream, seen, done).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                echo_websocket(stream, seen, done).await;
                            }
                        }
                    }
                });
            }
        });
        WsEcho {
            addr,
            heads,
            closed,
            task,
        }
    }

    fn upgrades(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

/// Accepts a WebSocket on `stream` (noting its head in `seen`) and echoes its messages; a
/// close handshake is counted in `done`.
async fn echo_websocket<S>(stream: S, seen: Arc<Mutex<Vec<HeaderMap>>>, done: Arc<AtomicUsize>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The error type is tungstenite's own.
    #[allow(clippy::result_large_err)]
    let record = |request: &http::Request<()>, response| {
        seen.lock().unwrap().push(request.headers().clone());
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(_) | Message::Binary(_) => {
                let echoed = ws.send(message).await;
                if echoed.is_err() {
                    return;
                }
            }
            // tungstenite answers the close itself; the session is over.
            Message::Close(_) => {
                done.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw upstream: reads each request head and answers with `answer(head)`; counts connections
/// and requests.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    async fn start(answer: fn(&str) -> Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let reqs = Arc::clone(&reqs);
                tokio::spawn(async move {
                    while let Some(head) = read_request_head(&mut stream).await {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        if stream.write_all(&answer(&head)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawUpstream {
            addr,
            connections,
            requests,
            task,
        }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway with route `ws` (open) and route `private` (JWT) to `upstream`, plus `extra`
/// server settings.
async fn gateway(upstream: SocketAddr, extra: &str) -> TestGateway {
    let yaml = format!(
        "{}jwt:\n  providers:\n    default:\n      algorithms: [HS256]\n      secret: ${{JWT_SECRET}}\n\
         upstreams:\n  up:\n    targets: [http://{upstream}]\n\
         routes:\n  - name: private\n    match: {{path: /private}}\n    upstream: up\n    auth: {{jwt: default}}\n\
         \x20 - name: ws\n    match: {{path: /}}\n    upstream: up\n",
        server_yaml(extra)
    );
    TestGateway::start_with(&yaml, &[], &[("JWT_SECRET", SECRET)]).await
}

type Client = WebSocketStream<TcpStream>;

/// A WebSocket client connected through the gateway at `addr` to `path`.
async fn connect(addr: SocketAddr, path: &str, authorization: Option<&str>) -> Client {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = within(client_async(request, stream))
        .await
        .expect("the upgrade goes through");
    assert_eq!(response.status(), 101);
    ws
}

/// The next data message, within the deadline.
async fn next_message<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    within(ws.next())
        .await
        .expect("a message, not the end")
        .expect("a message, not an error")
}

/// Text, binary and 1 MiB messages round-trip through `ws`, then the close handshake ends it.
async fn echo_session<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_message(ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next_message(ws).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next_message(ws).await, Message::binary(big));
    ws.close(None).await.unwrap();
    // The server's close comes back, then the stream ends.
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(_))) => {}
            None => break,
            Some(Ok(other)) => panic!("after close: {other:?}"),
            Some(Err(e)) => panic!("after close: {e}"),
        }
    }
}

/// The value of the series `series` (name and labels, as exposed) in /metrics.
async fn metric(gw: &TestGateway, series: &str) -> Option<f64> {
    let text = common::get(&gw.url("/metrics")).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn websocket_messages_round_trip_and_the_close_handshake_ends_both_sides() {
    let upstream = WsEcho::start().await;
    let gw = gateway(upstream.addr, "").await;
    let mut ws = connect(gw.addr, "/chat?room=1", None).await;
    echo_session(&mut ws).await;
    // The upstream closed its side after the close handshake; the client closes its own.
    drop(ws);
    common::eventually("the upstream saw the close handshake", || async {
        upstream.closed.load(Ordering::SeqCst) == 1
    })
    .await;

    let heads = upstream.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    let head = &heads[0];
    assert!(head
        .get("connection")
        .is_some_and(|v| v.to_str().unwrap().eq_ignore_ascii_case("upgrade")));
    assert_eq!(head.get("upgrade").unwrap(), "websocket");
    assert!(head.contains_key("sec-websocket-key"));
    assert!(head.contains_key("x-forwarded-for"), "{head:?}");

    let switched =
        "gatehouse_upgrades_total{route=\"ws\",protocol=\"websocket\",outcome=\"switched\"}";
    assert_eq!(metric(&gw, switched).await, Some(1.0));
    common::eventually("the tunnel is counted closed, with its bytes", || async {
        let open = metric(&gw, "gatehouse_tunnels_open").await;
        let sent = metric(
            &gw,
            "gatehouse_tunnel_bytes_total{direction=\"client_to_upstream\"}",
        )
        .await;
        open == Some(0.0) && sent.is_some_and(|b| b > (1 << 20) as f64)
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_goes_through_the_request_filter() {
    let upstream = WsEcho::start().await;
    let gw = gateway(upstream.addr, "").await;

    let request = "GET /private HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 401);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "missing", "{json}");
    assert_eq!(
        upstream.upgrades(),
        0,
        "a refused upgrade never reaches the upstream"
    );

    let token = bearer(SECRET, "alice");
    let mut ws = connect(gw.addr, "/private", Some(&token)).await;
    ws.send(Message::text("with a token")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("with a token"));
    assert_eq!(upstream.upgrades(), 1);
}

/// An upstream that answers every request with 403 and a body, on a keep-alive connection.
fn forbidden(_head: &str) -> Vec<u8> {
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope".to_vec()
}

/// An upstream that answers every request with 200 and a body, on a keep-alive connection.
fn ok(_head: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
}

#[tokio::test]
async fn an_upstream_that_does_not_switch_gives_an_ordinary_answer() {
    let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    for (answer, status, body) in [
        (forbidden as fn(&str) -> Vec<u8>, 403, &b"nope"[..]),
        (ok, 200, b"ok"),
    ] {
        let upstream = RawUpstream::start(answer).await;
        let gw = gateway(upstream.addr, "").await;
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(upgrade.as_bytes()).await.unwrap();
        let (got, got_body) = read_response(&mut stream).await;
        assert_eq!((got, &got_body[..]), (status, body));
        // The client's connection carries on as usual; the upstream connection the upgrade
        // used is not reused.
        stream
            .write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (again, _) = read_response(&mut stream).await;
        assert_eq!(again, status);
        assert_eq!(upstream.requests.load(Ordering::SeqCst), 2);
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
        let refused =
            "gatehouse_upgrades_total{route=\"ws\",protocol=\"websocket\",outcome=\"refused\"}";
        assert_eq!(metric(&gw, refused).await, Some(1.0));
    }
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
    let upstream = WsEcho::start().await;
    let gw = gateway(upstream.addr, "idle_timeout: 1s").await;
    let mut ws = connect(gw.addr, "/", None).await;
    ws.send(Message::text("once")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("once"));
    let quiet = Instant::now();
    // No close frame: the gateway closes the connection under the WebSocket.
    match within(ws.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(message)) => panic!("expected the end, got {message:?}"),
    }
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    common::eventually("the tunnel is counted closed", || async {
        metric(&gw, "gatehouse_tunnels_open").await == Some(0.0)
    })
    .await;
}

/// An upstream that switches and sends a text frame in the same write as its 101 head.
fn switch_and_speak(head: &str) -> Vec<u8> {
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })
        .expect("a Sec-WebSocket-Key");
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes();
    // FIN + text, unmasked (server to client), 5 bytes.
    out.extend_from_slice(&[0x81, 5]);
    out.extend_from_slice(b"first");
    out
}

#[tokio::test]
async fn bytes_the_upstream_sends_with_its_101_arrive() {
    let upstream = RawUpstream::start(switch_and_speak).await;
    let gw = gateway(upstream.addr, "").await;
    let mut ws = connect(gw.addr, "/", None).await;
    assert_eq!(next_message(&mut ws).await, Message::text("first"));
}

/// A masked client text frame.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn bytes_the_client_sends_with_its_request_head_arrive() {
    let upstream = WsEcho::start().await;
    let gw = gateway(upstream.addr, "").await;
    let mut bytes = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    bytes.extend(masked_text(b"early"));
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    // The 101 head, then the echo of the frame that came with the request.
    let mut got = Vec::new();
    let mut tmp = [0u8; 1024];
    let want: &[u8] = &[0x81, 5, b'e', b'a', b'r', b'l', b'y'];
    while !got.ends_with(want) {
        let n = within(stream.read(&mut tmp)).await.unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 101 switching protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nconnection: upgrade\r\n"), "{text}");
    assert!(text.contains("\r\nupgrade: websocket\r\n"), "{text}");
    assert!(text.contains("\r\nx-request-id: "), "{text}");
}

#[tokio::test]
async fn malformed_upgrades_are_refused_with_400() {
    let upstream = WsEcho::start().await;
    let gw = gateway(upstream.addr, "").await;
    let ws = "Connection: upgrade\r\nUpgrade: websocket\r\n";
    let cases = [
        format!("GET / HTTP/1.0\r\nHost: x\r\n{ws}\r\n"),
        format!("POST / HTTP/1.1\r\nHost: x\r\n{ws}Content-Length: 0\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: x\r\n{ws}Content-Length: 2\r\n\r\nhi"),
        format!("GET / HTTP/1.1\r\nHost: x\r\n{ws}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: web socket\r\n\r\n".into(),
    ];
    for request in &cases {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(
            status,
            400,
            "{request:?}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(upstream.upgrades(), 0);
}

/// HTTP/2 has no Upgrade: an upgrade to an HTTP/2 upstream is refused before anything is sent.
#[tokio::test]
async fn an_upgrade_to_an_http2_upstream_is_refused_with_501() {
    // An h2c listener that only counts connections: none may arrive.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h2c = listener.local_addr().unwrap();
    let yaml = format!(
        "{}upstreams:\n  up:\n    targets: [http://{h2c}]\n    protocol: h2c\n\
         routes:\n  - name: ws\n    match: {{path: /}}\n    upstream: up\n",
        server_yaml("")
    );
    let gw = TestGateway::start_with(&yaml, &[], &[]).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 501, "{}", String::from_utf8_lossy(&body));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "upgrade_needs_http1", "{json}");
    // A connection would have been made before the answer: it would wait in the backlog now,
    // and the first accept (tried before the zero timeout is looked at) would take it.
    let accepted = tokio::time::timeout(Duration::ZERO, listener.accept()).await;
    assert!(accepted.is_err(), "the HTTP/2 upstream was contacted");
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_at_the_end_of_the_grace() {
    let upstream = WsEcho::start().await;
    let gw = gateway(upstream.addr, "").await;
    let mut ws = connect(gw.addr, "/", None).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("still here"));
    let started = Instant::now();
    let outcome = within(gw.handle.shutdown(Some(Duration::from_millis(500)))).await;
    assert!(
        matches!(outcome, gatehouse::server::ShutdownOutcome::Cut(1)),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(450));
    match within(ws.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(message)) => panic!("expected the end, got {message:?}"),
    }
}

mod tls {
    use super::*;
    use gatehouse::tls::client;
    use rustls::pki_types::ServerName;
    use tokio_rustls::TlsConnector;

    #[tokio::test]
    async fn websocket_over_the_tls_listener() {
        let upstream = WsEcho::start().await;
        let dir = tempfile::tempdir().unwrap();
        let made = common::self_signed_until(&["a.test"], (2035, 1, 1));
        std::fs::write(dir.path().join("a.crt"), &made.cert_pem).unwrap();
        std::fs::write(dir.path().join("a.key"), &made.key_pem).unwrap();
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n  tls:\n    listen: 127.0.0.1:0\n    certificates:\n\
             \x20     - cert: a.crt\n        key: a.key\n\
             upstreams:\n  up:\n    targets: [http://{}]\n\
             routes:\n  - name: ws\n    match: {{path: /}}\n    upstream: up\n",
            upstream.addr
        );
        let handle = common::start_in(dir.path(), &yaml, &[], false).await;
        let addr = handle.tls_addr().unwrap();

        let config = client::client_config_with_versions(
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            client::Trust::Anything,
            None,
            &[b"http/1.1"],
        )
        .unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .unwrap();
        let (mut ws, response) = within(client_async("wss://a.test/tls", tls))
            .await
            .expect("the upgrade goes through over TLS");
        assert_eq!(response.status(), 101);
        echo_session(&mut ws).await;
        let heads = upstream.heads.lock().unwrap().clone();
        assert_eq!(heads[0].get("x-forwarded-proto").unwrap(), "https");
        common::eventually("the upstream saw the close handshake", || async {
            upstream.closed.load(Ordering::SeqCst) == 1
        })
        .await;

        // HTTP/2 by ALPN, and the WebSocket over an extended CONNECT.
        let h2 = client::client_config_with_versions(
            &[&rustls::version::TLS13],
            client::Trust::Anything,
            None,
            &[b"h2"],
        )
        .unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(h2))
            .connect(ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut ws, send) = h2_websocket(tls, "https://a.test/chat").await;
        echo_session(&mut ws).await;
        drop((ws, send));
        common::eventually("the upstream saw the second close handshake", || async {
            upstream.closed.load(Ordering::SeqCst) == 2
        })
        .await;
    }
}

#[tokio::test]
async fn the_access_log_line_of_a_tunnel_is_written_when_it_ends() {
    let log = CapturedLog::install();
    let upstream = WsEcho::start().await;
    let yaml = format!(
        "{}logging:\n  access_log: true\nupstreams:\n  up:\n    targets: [http://{}]\n\
         routes:\n  - name: ws\n    match: {{path: /}}\n    upstream: up\n",
        server_yaml(""),
        upstream.addr
    );
    let gw = TestGateway::start(&yaml).await;
    let request = format!("ws://{}/logged", gw.addr)
        .into_client_request()
        .unwrap();
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut ws, response) = within(client_async(request, stream)).await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let opened = Instant::now();
    ws.send(Message::text("abc")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("abc"));
    assert!(log.find(&id).is_none(), "no line while the tunnel is open");
    echo_session(&mut ws).await;
    drop(ws);
    let held = opened.elapsed();
    let line = log.line(&id).await;
    assert_eq!(line["status"], 101, "{line}");
    assert_eq!(line["path"], "/logged", "{line}");
    assert_eq!(line["route"], "ws", "{line}");
    assert_eq!(line["completed"], true, "{line}");
    assert!(line["bytes_in"].as_u64().unwrap() > 1 << 20, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 1 << 20, "{line}");
    let duration = line["duration_ms"].as_f64().unwrap();
    assert!(
        duration >= held.as_secs_f64() * 1000.0 * 0.9,
        "{line}, held {held:?}"
    );
}

#[tokio::test]
async fn a_websocket_reaches_an_https_upstream() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key.into())
    .unwrap();
    let upstream =
        WsEcho::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
    let yaml = format!(
        "{}upstreams:\n  up:\n    targets: [https://localhost:{}]\n    tls:\n      insecure_skip_verify: true\n\
         routes:\n  - name: ws\n    match: {{path: /}}\n    upstream: up\n",
        server_yaml(""),
        upstream.addr.port()
    );
    let gw = TestGateway::start(&yaml).await;
    let mut ws = connect(gw.addr, "/", None).await;
    echo_session(&mut ws).await;
    drop(ws);
    common::eventually("the upstream saw the close handshake", || async {
        upstream.closed.load(Ordering::SeqCst) == 1
    })
    .await;
}

/// An upstream that answers every request with 502.
fn bad_gateway(_head: &str) -> Vec<u8> {
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec()
}

#[tokio::test]
async fn an_upgrade_is_never_retried() {
    let upstream = RawUpstream::start(bad_gateway).await;
    let yaml = format!(
        "{}upstreams:\n  up:\n    targets: [http://{}]\n    retry: {{attempts: 2, backoff: 1ms, on: [502]}}\n\
         routes:\n  - name: ws\n    match: {{path: /}}\n    upstream: up\n",
        server_yaml(""),
        upstream.addr
    );
    let gw = TestGateway::start(&yaml).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 502);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);
    // A plain GET on the same route is retried: the retry settings are in force.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, 502);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 4);
}

/// An HTTP/2 connection's request handle, as extended CONNECTs are sent on it.
type H2Send = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An extended CONNECT (RFC 8441) for a WebSocket to `url`, over HTTP/2 on `io`: the answer,
/// and the connection's handle, which keeps the connection open.
async fn h2_connect<S>(io: S, url: &str) -> (http::Response<hyper::body::Incoming>, H2Send)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Its answer comes after the server's SETTINGS, which must allow extended CONNECT.
    let path = http::Uri::try_from(url).unwrap().path().to_owned();
    let first = http::Request::get(url.replace(&path, "/health"))
        .body(Empty::new())
        .unwrap();
    within(send.send_request(first)).await.unwrap();
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(url)
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = within(send.send_request(request)).await.unwrap();
    (response, send)
}

/// A WebSocket over HTTP/2 (RFC 8441) on `io`, opened with an extended CONNECT to `url`; the
/// connection's handle comes along, to keep the connection open.
async fn h2_websocket<S>(
    io: S,
    url: &str,
) -> (
    WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
    H2Send,
)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut response, send) = h2_connect(io, url).await;
    assert_eq!(response.status(), 200);
    let upgraded = within(hyper::upgrade::on(&mut response)).await.unwrap();
    let ws = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    (ws, send)
}

#[tokio::test]
async fn a_websocket_over_http2_reaches_an_http1_upstream() {
    let upstream = WsEcho::start().await;
    let gw = gateway(upstream.addr, "").await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut ws, send) = h2_websocket(tcp, &format!("http://{}/chat", gw.addr)).await;
    echo_session(&mut ws).await;
    drop((ws, send));
    let heads = upstream.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].get("upgrade").unwrap(), "websocket");
    assert_eq!(heads[0].get("sec-websocket-version").unwrap(), "13");
    common::eventually("the upstream saw the close handshake", || async {
        upstream.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    let switched =
        "gatehouse_upgrades_total{route=\"ws\",protocol=\"websocket\",outcome=\"switched\"}";
    assert_eq!(metric(&gw, switched).await, Some(1.0));
    // Counted with its own method once the tunnel ended.
    let counted = "gatehouse_requests_total{route=\"ws\",method=\"CONNECT\",status=\"2xx\"}";
    common::eventually("the request is counted as a CONNECT", || async {
        metric(&gw, counted).await == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn an_http2_websocket_goes_through_the_request_filter() {
    let upstream = WsEcho::start().await;
    let gw = gateway(upstream.addr, "").await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (response, _send) = h2_connect(tcp, &format!("http://{}/private", gw.addr)).await;
    assert_eq!(response.status(), 401);
    assert_eq!(upstream.upgrades(), 0);
}

/// An upstream that switches with a `Sec-WebSocket-Accept` that answers no key.
fn switch_with_a_wrong_accept(_head: &str) -> Vec<u8> {
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
      Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        .to_vec()
}

#[tokio::test]
async fn an_http2_websocket_whose_upstream_accept_is_wrong_gets_502() {
    let upstream = RawUpstream::start(switch_with_a_wrong_accept).await;
    let gw = gateway(upstream.addr, "").await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (response, _send) = h2_connect(tcp, &format!("http://{}/chat", gw.addr)).await;
    assert_eq!(response.status(), 502);
    let failed = "gatehouse_upgrades_total{route=\"ws\",protocol=\"websocket\",outcome=\"failed\"}";
    assert_eq!(metric(&gw, failed).await, Some(1.0));
}
