//! What the upstream and the client see of a proxied exchange: headers, ids, pooling, errors,
//! and large bodies streamed through the real binary.

mod common;
use common::*;

use std::convert::Infallible;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One upstream `up` at `target`, plus `routes` (YAML list items from [`route`]).
fn config(server_extra: &str, target: &str, routes: &str) -> String {
    format!(
        "{}upstreams:\n  up:\n    targets: [{target}]\nroutes:\n{routes}",
        server_yaml(server_extra)
    )
}

/// A route to `up` on a path prefix, with extra settings (one per line).
fn route(name: &str, path: &str, extra: &str) -> String {
    let mut yaml = format!("  - name: {name}\n    match: {{path: {path}}}\n    upstream: up\n");
    for line in extra.lines() {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

async fn echo_gateway(server_extra: &str, route_extra: &str) -> (EchoUpstream, TestGateway) {
    let up = EchoUpstream::start("a").await;
    let yaml = config(server_extra, &up.url(), &route("r", "/", route_extra));
    let gw = TestGateway::start(&yaml).await;
    (up, gw)
}

fn get_with(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::default()).unwrap()
}

/// GET `url` with `headers` on a fresh client; what the echo upstream saw.
async fn echoed(url: &str, headers: &[(&str, &str)]) -> Echo {
    send(&client(), get_with(url, headers)).await.echo()
}

/// Asserts that none of the space-separated header `names` reached the upstream.
fn assert_not_forwarded(echo: &Echo, names: &str) {
    for name in names.split(' ') {
        let headers = &echo.headers;
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {headers:?}"
        );
    }
}

/// The body of a raw HTTP/1.1 response read to the end of the connection.
fn raw_body(response: &str) -> &str {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").expect("a complete head");
    body
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let (_up, gw) = echo_gateway("", "").await;
    // Raw bytes, so no client library can drop or rewrite these headers before the gateway does.
    let request = format!(
        "GET /h HTTP/1.1\r\nHost: {}\r\nConnection: close, X-Foo\r\nX-Foo: secret\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-Checksum\r\nUpgrade: websocket\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n\
         X-Kept: yes\r\n\r\n",
        gw.addr
    );
    let response = raw(gw.addr, request.as_bytes(), DEADLINE).await;
    let echo: Echo = serde_json::from_str(raw_body(&response)).expect("echo JSON");
    let hop_by_hop = "connection x-foo keep-alive te trailer upgrade proxy-authorization";
    assert_not_forwarded(&echo, &format!("{hop_by_hop} proxy-connection"));
    assert_eq!(echo.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn expect_is_answered_by_the_gateway_and_not_forwarded() {
    let (_up, gw) = echo_gateway("", "").await;
    let request = format!(
        "POST /e HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\
         Connection: close\r\n\r\nhello",
        gw.addr
    );
    let response = raw(gw.addr, request.as_bytes(), DEADLINE).await;
    // The gateway may confirm with an interim 100 before the answer; the body is streamed.
    let response = match response.strip_prefix("HTTP/1.1 100 Continue\r\n\r\n") {
        Some(rest) => rest,
        None => &response,
    };
    let echo: Echo = serde_json::from_str(raw_body(response)).expect("echo JSON");
    assert_not_forwarded(&echo, "expect");
    assert_eq!(echo.body_len, 5);
}

/// An upstream that answers every request on a connection with the same raw bytes.
async fn fixed_upstream(response: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        head.clear();
                        if stream.write_all(response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_returned() {
    // Raw bytes, so the upstream sends exactly these headers whatever a server library thinks.
    let (addr, task) = fixed_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Bar\r\nX-Bar: secret\r\n\
          Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-Checksum\r\n\
          Upgrade: websocket\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\nok",
    )
    .await;
    let yaml = config("", &format!("http://{addr}"), &route("r", "/", ""));
    let gw = TestGateway::start(&yaml).await;
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "ok");
    for name in
        "connection x-bar keep-alive proxy-authenticate trailer upgrade proxy-connection".split(' ')
    {
        assert!(
            !got.headers.contains_key(name),
            "{name} reached the client: {:?}",
            got.headers
        );
    }
    assert_eq!(got.header("x-kept"), Some("yes"));
    task.abort();
}

const SPOOFED: [(&str, &str); 6] = [
    ("x-forwarded-for", "1.2.3.4"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("forwarded", "for=1.2.3.4"),
    ("x-real-ip", "1.2.3.4"),
    ("via", "1.0 edge"),
];

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let (_up, gw) = echo_gateway("", "").await;
    let echo = echoed(&gw.url("/f"), &SPOOFED).await;
    assert_eq!(echo.headers["x-forwarded-for"], ["127.0.0.1"]);
    assert_eq!(echo.headers["x-forwarded-proto"], ["http"]);
    assert_eq!(echo.headers["x-forwarded-host"], [gw.addr.to_string()]);
    assert_not_forwarded(&echo, "forwarded x-real-ip");
    assert_eq!(echo.headers["via"], ["1.0 edge, 1.1 gatehouse"]);
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_extended() {
    let (_up, gw) = echo_gateway("trusted_proxies: [127.0.0.1/32]", "").await;
    let echo = echoed(&gw.url("/f"), &SPOOFED).await;
    assert_eq!(echo.headers["x-forwarded-for"], ["1.2.3.4, 127.0.0.1"]);
    assert_eq!(echo.headers["x-forwarded-proto"], ["https"]);
    assert_eq!(echo.headers["x-forwarded-host"], ["evil.example"]);
    assert_eq!(echo.headers["via"], ["1.0 edge, 1.1 gatehouse"]);
}

#[tokio::test]
async fn via_names_http2_for_h2c_clients() {
    let (_up, gw) = echo_gateway("", "").await;
    let got = send(
        &h2c_client(),
        get_with(&gw.url("/f"), &[("via", "1.1 edge")]),
    )
    .await;
    assert_eq!(got.echo().headers["via"], ["1.1 edge, 2 gatehouse"]);
    let got = send(&h2c_client(), get_with(&gw.url("/f"), &[])).await;
    assert_eq!(got.echo().headers["via"], ["2 gatehouse"]);
}

#[tokio::test]
async fn host_is_preserved_unless_the_route_says_otherwise() {
    let up = EchoUpstream::start("a").await;
    let routes = route("keep", "/keep", "") + &route("target", "/target", "preserve_host: false");
    let gw = TestGateway::start(&config("", &up.url(), &routes)).await;
    let host = [("host", "api.example.com")];
    let echo = echoed(&gw.url("/keep"), &host).await;
    assert_eq!(echo.headers["host"], ["api.example.com"]);
    let echo = echoed(&gw.url("/target"), &host).await;
    assert_eq!(echo.headers["host"], [up.addr.to_string()]);
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn request_id_is_kept_when_safe_and_generated_otherwise() {
    let (_up, gw) = echo_gateway("", "").await;
    let client = client();
    let got = send(
        &client,
        get_with(&gw.url("/id"), &[("x-request-id", "abc-123")]),
    )
    .await;
    assert_eq!(got.header("x-request-id"), Some("abc-123"));
    assert_eq!(got.echo().headers["x-request-id"], ["abc-123"]);

    let too_long = "a".repeat(129);
    for sent in [None, Some("bad\"id{}"), Some(too_long.as_str())] {
        let headers: Vec<_> = sent.map(|id| ("x-request-id", id)).into_iter().collect();
        let got = send(&client, get_with(&gw.url("/id"), &headers)).await;
        let returned = got
            .header("x-request-id")
            .expect("an id is returned")
            .to_string();
        assert!(
            is_generated_id(&returned),
            "sent {sent:?}, got {returned:?}"
        );
        assert_eq!(
            got.echo().headers["x-request-id"],
            [returned],
            "sent {sent:?}"
        );
    }
}

#[tokio::test]
async fn header_rules_and_security_headers_apply() {
    let up = EchoUpstream::start("a").await;
    let (framing, task) =
        fixed_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Frame-Options: DENY\r\n\r\nok")
            .await;
    let rules = "request_headers:\n  set: {X-Gateway: gatehouse}\n  remove: [X-Internal-Debug]\n\
                 response_headers:\n  set: {X-Served-By: gw}\n  remove: [Server]\n\
                 security_headers: true";
    let routes = route("rules", "/rules", rules) + &route("plain", "/plain", "");
    let mut yaml = config("", &up.url(), &routes);
    yaml = yaml.replace(
        "routes:\n",
        &format!("  framing:\n    targets: [http://{framing}]\nroutes:\n"),
    );
    yaml.push_str(
        "  - name: framing\n    match: {path: /framing}\n    upstream: framing\n    security_headers: true\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let client = client();

    let sent = [("x-internal-debug", "1"), ("x-gateway", "spoofed")];
    let got = send(&client, get_with(&gw.url("/rules"), &sent)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let echo = got.echo();
    assert_not_forwarded(&echo, "x-internal-debug");
    assert_eq!(echo.headers["x-gateway"], ["gatehouse"]);
    assert_eq!(got.header("server"), None);
    assert_eq!(got.header("x-served-by"), Some("gw"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(got.header("x-frame-options"), Some("SAMEORIGIN"));
    assert!(got.header("referrer-policy").is_some(), "{:?}", got.headers);

    // Off by default: the rules of one route do not leak to another.
    let got = send(&client, get_with(&gw.url("/plain"), &sent)).await;
    assert_eq!(got.header("server"), Some("echo-upstream"));
    assert_eq!(got.header("x-content-type-options"), None);
    assert_eq!(got.echo().headers["x-internal-debug"], ["1"]);

    let got = send(&client, get_with(&gw.url("/framing"), &[])).await;
    assert_eq!(got.headers.get_all("x-frame-options").iter().count(), 1);
    assert_eq!(got.header("x-frame-options"), Some("DENY"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    task.abort();
}

/// A TCP relay that counts the connections made through it.
struct CountingRelay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        CountingRelay {
            addr,
            accepted,
            task,
        }
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn sequential_requests_reuse_upstream_connections() {
    let up = EchoUpstream::start("a").await;
    let relay = CountingRelay::start(up.addr).await;
    let yaml = config("", &format!("http://{}", relay.addr), &route("r", "/", ""));
    let gw = TestGateway::start(&yaml).await;
    let client = client();
    for i in 0..50 {
        let got = send(&client, get_with(&gw.url(&format!("/n/{i}")), &[])).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(up.requests(), 50);
    let connections = relay.accepted.load(Ordering::SeqCst);
    assert!(
        connections <= 2,
        "50 sequential requests used {connections} upstream connections"
    );
}

#[tokio::test]
async fn several_workers_serve_concurrent_connections_and_reuse_upstream_connections() {
    let up = EchoUpstream::start("a").await;
    let relay = CountingRelay::start(up.addr).await;
    let yaml = config(
        "workers: 3",
        &format!("http://{}", relay.addr),
        &route("r", "/", ""),
    );
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(gw.handle.snapshot().server.workers, Some(3));
    // Nine client connections at once, ten requests each on the same connection: the workers
    // accept them between them, and each request reuses an upstream connection of its worker.
    let clients = (0..9).map(|c| {
        let addr = gw.handle.local_addr();
        tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            for i in 0..10 {
                let request = Request::get(format!("/c{c}/{i}"))
                    .header("host", "gw.test")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let echo: Echo = serde_json::from_slice(&body).unwrap();
                assert_eq!(echo.target, format!("/c{c}/{i}"));
            }
        })
    });
    for client in futures_util::future::join_all(clients).await {
        client.unwrap();
    }
    assert_eq!(up.requests(), 90);
    let connections = relay.accepted.load(Ordering::SeqCst);
    assert!(
        connections <= 9,
        "9 client connections used {connections} upstream connections"
    );
    eventually("the workers see every client connection closed", || async {
        gw.handle.open_connections() == 0
    })
    .await;
}

fn assert_error(got: &Got, status: u16, code: &str) {
    assert_eq!(got.status, status, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/json"));
    let json = got.json();
    assert_eq!(json["error"], code, "{json}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    let id = got
        .header("x-request-id")
        .expect("x-request-id on an error");
    assert_eq!(json["request_id"], id, "{json}");
}

#[tokio::test]
async fn unreachable_upstream_is_a_502() {
    // A port that was just ours and is now closed refuses connections.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = config("", &format!("http://{dead}"), &route("r", "/", ""));
    let gw = TestGateway::start(&yaml).await;
    let got = get(&gw.url("/x")).await;
    assert_error(&got, 502, "upstream_unreachable");
    assert!(is_generated_id(got.header("x-request-id").unwrap()));
}

#[tokio::test]
async fn slow_upstream_is_a_504_after_the_route_timeout() {
    let (up, gw) = echo_gateway("", "timeout: 200ms").await;
    let started = Instant::now();
    let got = send(
        &client(),
        get_with(&gw.url("/slow/5000"), &[("x-request-id", "t-504")]),
    )
    .await;
    assert_error(&got, 504, "upstream_timeout");
    assert_eq!(got.header("x-request-id"), Some("t-504"));
    // Well before the upstream would have answered, so the route's timeout is what fired.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn errors_made_by_the_gateway_carry_the_request_id() {
    let up = EchoUpstream::start("a").await;
    let gw = TestGateway::start(&config("", &up.url(), &route("r", "/api", ""))).await;
    assert_error(&get(&gw.url("/elsewhere")).await, 404, "no_route");
    assert_error(&get(&gw.url("/api/../../etc")).await, 400, "invalid_path");
    let got = send(
        &client(),
        get_with(&gw.url("/none"), &[("x-request-id", "mine")]),
    )
    .await;
    assert_error(&got, 404, "no_route");
    assert_eq!(got.header("x-request-id"), Some("mine"));
    assert_eq!(up.requests(), 0);
}

/// The real binary as a child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// Starts `gatehouse run` on `dir/gateway.yaml` and returns it with the address it listens on,
/// read from its startup log line (the config asks for port 0).
async fn spawn_gateway(dir: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Child(
        Command::new(gatehouse_bin())
            .args(["run", "-c"])
            .arg(dir.join("gateway.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gatehouse"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps reading after the address is found so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("\"listen\":\"").nth(1) {
                let _ = tx.send(rest.split('"').next().unwrap_or_default().to_string());
            }
        }
    });
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(DEADLINE))
        .await
        .unwrap()
        .expect("gatehouse logged no listen address");
    let addr: SocketAddr = addr.parse().expect("listen address");
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "gatehouse never accepted on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

type Streamed = BoxBody<Bytes, Infallible>;

async fn h1_request(addr: SocketAddr, mut request: Request<Streamed>) -> http::Response<Incoming> {
    // hyper's connection-level client sends no Host of its own; HTTP/1.1 requires one.
    let host = http::HeaderValue::from_str(&addr.to_string()).unwrap();
    request.headers_mut().insert(http::header::HOST, host);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(request).await.expect("request")
}

const PERIOD: usize = PATTERN_PERIOD;
const CHUNK: usize = 64 << 10;

/// The body size streamed each way: 1 GiB as the issue asks, or `GATEHOUSE_TEST_LARGE_MIB`.
fn large_body_size() -> u64 {
    let mib = std::env::var("GATEHOUSE_TEST_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok());
    mib.unwrap_or(1024u64) << 20
}

/// For a whole large transfer, on a machine shared with other test binaries.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    let large = large_body_size();
    assert_eq!(
        large % PERIOD as u64,
        0,
        "the size must be a multiple of 2 MiB"
    );
    let period = pattern_period();
    assert_eq!(
        pattern(5 * PERIOD as u64 + 7, 64),
        period[7..71],
        "pattern is not periodic"
    );
    let hasher = {
        let period = period.clone();
        tokio::task::spawn_blocking(move || {
            let mut hash = Fnv::default();
            for _ in 0..large / PERIOD as u64 {
                hash.update(&period);
            }
            hash.hex()
        })
    };

    let up = EchoUpstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        "max_request_body: 2GiB",
        &up.url(),
        &route("r", "/", "timeout: 10m"),
    ) + "logging:\n  format: json\n  access_log: false\n";
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
    let (child, addr) = spawn_gateway(dir.path()).await;

    let started = Instant::now();
    let chunks = futures_util::stream::iter((0..large / CHUNK as u64).map(move |i| {
        let at = (i as usize * CHUNK) % PERIOD;
        Ok::<_, Infallible>(Frame::data(period.slice(at..at + CHUNK)))
    }));
    let request = Request::post("/upload")
        .body(StreamBody::new(chunks).boxed())
        .unwrap();
    let upload = async {
        let response = h1_request(addr, request).await;
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap().to_bytes()
    };
    let body = tokio::time::timeout(TRANSFER_DEADLINE, upload)
        .await
        .expect("upload timed out");
    let echo: Echo = serde_json::from_slice(&body).unwrap();
    let upload_time = started.elapsed();
    let expected = hasher.await.unwrap();
    assert_eq!(echo.body_len, large);
    assert_eq!(echo.body_fnv, expected);
    assert_eq!(echo.header("transfer-encoding"), Some("chunked"));

    let started = Instant::now();
    let request = Request::get(format!("/bytes/{large}"))
        .body(Streamed::default())
        .unwrap();
    let response = within(h1_request(addr, request)).await;
    assert_eq!(response.status(), 200);
    // Hashing on another thread keeps a debug-build FNV from slowing the download itself.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let received = tokio::task::spawn_blocking(move || {
        let (mut rx, mut len, mut hash) = (rx, 0u64, Fnv::default());
        while let Some(data) = rx.blocking_recv() {
            len += data.len() as u64;
            hash.update(&data);
        }
        (len, hash.hex())
    });
    let mut body = response.into_body();
    while let Some(frame) = within(body.frame()).await {
        if let Ok(data) = frame.expect("download interrupted").into_data() {
            tx.send(data).await.unwrap();
        }
    }
    drop(tx);
    let (len, fnv) = within(received).await.unwrap();
    let download_time = started.elapsed();
    assert_eq!(len, large);
    assert_eq!(fnv, expected);

    let rss = child.peak_rss_kib();
    eprintln!(
        "{large} bytes: upload {upload_time:?}, download {download_time:?}, peak RSS {rss} KiB"
    );
    assert!(
        rss < 64 << 10,
        "gateway peak RSS {rss} KiB after streaming {large} bytes each way"
    );
}
