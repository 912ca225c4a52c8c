//! HTTP/2 upstreams (`protocol: h2c` with prior knowledge, `protocol: h2` over TLS with ALPN):
//! the gateway against hyper HTTP/2 servers the test starts, reached from HTTP/1.1 and HTTP/2
//! clients. One multiplexed connection per worker and target, a new one after GOAWAY, bodies
//! and trailers streamed both ways, and the call's breaker and retries around it.

mod common;
use common::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

type OutBody = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A body of these frames.
fn frames(frames: Vec<Frame<Bytes>>) -> OutBody {
    StreamBody::new(futures_util::stream::iter(frames.into_iter().map(Ok)).boxed())
}

/// A body of these frames that then never ends.
fn stalling(frames: Vec<Frame<Bytes>>) -> OutBody {
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok));
    StreamBody::new(stream.chain(futures_util::stream::pending()).boxed())
}

/// An HTTP/2-only origin (hyper's server), counting the connections it accepted.
///
/// - `/echo`: answers JSON describing what arrived (version, authority, `te`, body length,
///   the request trailer `x-checksum`) and ends with the trailer `x-origin: done`.
/// - `/wait`: answers once `barrier` has as many waiters as it was made for.
/// - `/goaway`: answers, then closes its connection gracefully (GOAWAY).
/// - `/slow`: answers after 5 s.
/// - `/silent`: sends its head, then nothing; `/stall`: its head and a chunk, then nothing.
/// - anything else: `origin NAME`.
struct H2Origin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

#[derive(Clone)]
struct OriginState {
    name: &'static str,
    barrier: Arc<Barrier>,
    served: Arc<AtomicUsize>,
}

impl H2Origin {
    async fn start(name: &'static str, tls: Option<TlsAcceptor>, waiters: usize) -> H2Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let state = OriginState {
            name,
            barrier: Arc::new(Barrier::new(waiters.max(1))),
            served: Arc::clone(&served),
        };
        let accept = {
            let (accepted, tasks) = (Arc::clone(&accepted), Arc::clone(&tasks));
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (tls, state) = (tls.clone(), state.clone());
                    let task = tokio::spawn(async move {
                        match tls {
                            None => serve(TokioIo::new(tcp), state).await,
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(tcp).await {
                                    serve(TokioIo::new(stream), state).await;
                                }
                            }
                        }
                    });
                    tasks.lock().unwrap().push(task);
                }
            })
        };
        tasks.lock().unwrap().push(accept);
        H2Origin {
            addr,
            accepted,
            served,
            tasks,
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every connection at once, as a crashed process would.
    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Serves one connection, closing it gracefully when a request asks.
async fn serve<I>(io: I, state: OriginState)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let goaway = Arc::new(Notify::new());
    let service = {
        let goaway = Arc::clone(&goaway);
        service_fn(move |request| handle(request, state.clone(), Arc::clone(&goaway)))
    };
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = goaway.notified() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

async fn handle(
    request: Request<Incoming>,
    state: OriginState,
    goaway: Arc<Notify>,
) -> Result<Response<OutBody>, Infallible> {
    state.served.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_string();
    let response = match path.as_str() {
        "/echo" => {
            let version = format!("{:?}", request.version());
            let authority = request.uri().authority().map(|a| a.to_string());
            let scheme = request.uri().scheme_str().map(str::to_string);
            let te = header(request.headers(), "te");
            let host = header(request.headers(), "host");
            let collected = request.into_body().collect().await.unwrap();
            let checksum = collected.trailers().and_then(|t| header(t, "x-checksum"));
            let body = collected.to_bytes();
            let json = serde_json::json!({
                "version": version,
                "authority": authority,
                "scheme": scheme,
                "host": host,
                "te": te,
                "body_len": body.len(),
                "checksum": checksum,
                "origin": state.name,
            });
            let mut trailers = HeaderMap::new();
            trailers.insert("x-origin", HeaderValue::from_static("done"));
            Response::new(frames(vec![
                Frame::data(Bytes::from(json.to_string())),
                Frame::trailers(trailers),
            ]))
        }
        "/wait" => {
            state.barrier.wait().await;
            Response::new(frames(vec![Frame::data(Bytes::from_static(b"waited"))]))
        }
        "/slow" => {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Response::new(frames(vec![Frame::data(Bytes::from_static(b"late"))]))
        }
        "/silent" => Response::new(stalling(vec![])),
        "/stall" => Response::new(stalling(vec![Frame::data(Bytes::from_static(b"first"))])),
        "/goaway" => {
            goaway.notify_one();
            Response::new(frames(vec![Frame::data(Bytes::from_static(b"going away"))]))
        }
        _ => Response::new(frames(vec![Frame::data(Bytes::from(format!(
            "origin {}",
            state.name
        )))])),
    };
    Ok(response)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A gateway with one worker (so one upstream connection per target) and `upstreams`, routing
/// `/NAME/...` to upstream NAME with the prefix stripped.
async fn gateway(upstreams: &str, names: &[&str]) -> TestGateway {
    let mut yaml = format!(
        "{}upstreams:\n{upstreams}routes:\n",
        server_yaml("workers: 1")
    );
    for name in names {
        yaml.push_str(&format!(
            "  - name: {name}\n    match: {{path: /{name}}}\n    upstream: {name}\n    strip_prefix: /{name}\n"
        ));
    }
    TestGateway::start(&yaml).await
}

/// POSTs `body` to `/a/echo` from an HTTP/2 client asking for trailers: a 200 whose trailers
/// the upstream set (`x-origin: done`) arrive with it.
async fn echo_over_h2(gw: &TestGateway, body: &'static [u8]) -> http_body_util::Collected<Bytes> {
    let response = within(
        h2c_client().request(
            Request::post(gw.url("/a/echo"))
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(body)))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let collected = within(response.into_body().collect()).await.unwrap();
    assert_eq!(
        collected.trailers().and_then(|t| t.get("x-origin")),
        Some(&HeaderValue::from_static("done")),
        "the upstream's trailers arrive"
    );
    collected
}

#[tokio::test]
async fn h2c_upstream_gets_requests_from_http1_and_http2_clients_on_one_connection() {
    const CONCURRENT: usize = 24;
    let origin = H2Origin::start("a", None, CONCURRENT).await;
    let upstreams = format!(
        "  a:\n    targets: [{}]\n    protocol: h2c\n",
        origin.url("http")
    );
    let gw = gateway(&upstreams, &["a"]).await;

    // Many requests at once, from both kinds of client, as the first ones: the origin only
    // answers when all are in flight together, and they share the one connection the first of
    // them made (the others waited for it rather than opening their own).
    let h2 = h2c_client();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT {
        let url = gw.url("/a/wait");
        let client = if i % 2 == 0 { h2.clone() } else { client() };
        calls.spawn(async move {
            let got = send(&client, Request::get(url).body(Full::default()).unwrap()).await;
            (got.status.as_u16(), got.text())
        });
    }
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.unwrap(), (200, "waited".to_string()));
    }
    assert_eq!(
        origin.accepted(),
        1,
        "every request multiplexed on one connection"
    );

    // From HTTP/1.1: the body goes up as HTTP/2, the Host as :authority; the answer's
    // trailers cannot go on to an HTTP/1.1 client and are dropped, the body arrives whole.
    let body = pattern(0, 100_000);
    let got = send(
        &client(),
        Request::post(gw.url("/a/echo"))
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let json = got.json();
    assert_eq!(json["version"], "HTTP/2.0");
    assert_eq!(json["scheme"], "http");
    assert_eq!(json["authority"], gw.addr.to_string(), "preserve_host");
    assert_eq!(
        json["host"],
        serde_json::Value::Null,
        "no Host beside :authority"
    );
    assert_eq!(json["body_len"], 100_000);

    // From HTTP/2: the answer's trailers reach the client.
    let collected = echo_over_h2(&gw, b"hello").await;
    let json: serde_json::Value = serde_json::from_slice(&collected.to_bytes()).unwrap();
    assert_eq!(
        json["te"], "trailers",
        "te: trailers goes on to an h2 upstream"
    );
    assert_eq!(json["body_len"], 5);
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test]
async fn request_bodies_stream_up_with_their_trailers() {
    let origin = H2Origin::start("a", None, 1).await;
    let upstreams = format!(
        "  a:\n    targets: [{}]\n    protocol: h2c\n",
        origin.url("http")
    );
    let gw = gateway(&upstreams, &["a"]).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
    let body = frames(vec![
        Frame::data(Bytes::from_static(b"part one, ")),
        Frame::data(Bytes::from_static(b"part two")),
        Frame::trailers(trailers),
    ]);
    let client: hyper_util::client::legacy::Client<_, OutBody> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let response = within(
        client.request(
            Request::post(gw.url("/a/echo"))
                .header("te", "trailers")
                .body(body)
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["body_len"], 18);
    assert_eq!(
        json["checksum"], "abc123",
        "the client's trailers reach the upstream"
    );
}

#[tokio::test]
async fn after_goaway_new_requests_go_to_a_new_connection() {
    let origin = H2Origin::start("a", None, 1).await;
    let upstreams = format!(
        "  a:\n    targets: [{}]\n    protocol: h2c\n",
        origin.url("http")
    );
    let gw = gateway(&upstreams, &["a"]).await;
    let client = client();
    let got = get(&gw.url("/a/first")).await;
    assert_eq!((got.status.as_u16(), got.text()), (200, "origin a".into()));
    let got = send(
        &client,
        Request::get(gw.url("/a/goaway"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "the request in flight finishes");
    // Whether a request comes before or after the gateway read the GOAWAY, it succeeds, and
    // soon requests go to a second connection.
    let mut requests = 0;
    eventually("a second upstream connection", || {
        requests += 1;
        let url = gw.url("/a/after");
        let client = client.clone();
        let accepted = origin.accepted();
        async move {
            let got = send(&client, Request::get(url).body(Full::default()).unwrap()).await;
            assert_eq!(got.status, 200, "{}", got.text());
            accepted == 2
        }
    })
    .await;
    assert!(requests >= 1);
    let before = origin.accepted();
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/a/again")).await.status, 200);
    }
    assert_eq!(
        origin.accepted(),
        before,
        "the new connection is kept and shared"
    );
}

#[tokio::test]
async fn a_killed_upstream_is_a_502_and_retries_and_the_breaker_still_apply() {
    let a = H2Origin::start("a", None, 1).await;
    let b = H2Origin::start("b", None, 1).await;
    let upstreams = format!(
        "  single:\n    targets: [{a}]\n    protocol: h2c\n\
         \x20   circuit_breaker:\n      consecutive_failures: 3\n      open_for: 1m\n\
         \x20 pair:\n    targets: [{a}, {b}]\n    protocol: h2c\n\
         \x20   retry:\n      attempts: 1\n      backoff: 1ms\n      on: [connect_error, reset]\n",
        a = a.url("http"),
        b = b.url("http"),
    );
    let gw = gateway(&upstreams, &["single", "pair"]).await;
    assert_eq!(get(&gw.url("/single/x")).await.text(), "origin a");
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/pair/x")).await.status, 200);
    }
    a.kill();

    // Each request to the dead target fails (502) until the breaker has seen enough and
    // answers for it (503) without trying.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let got = get(&gw.url("/single/x")).await;
        statuses.push(got.status.as_u16());
    }
    assert_eq!(
        statuses,
        [502, 502, 502, 503],
        "connect errors, then the open breaker"
    );
    let got = get(&gw.url("/single/x")).await;
    assert_eq!(got.json()["error"], "circuit_open");

    // With two targets, a request that meets the dead one is retried on the other.
    let served_before = b.served.load(Ordering::SeqCst);
    for _ in 0..6 {
        let got = get(&gw.url("/pair/x")).await;
        assert_eq!((got.status.as_u16(), got.text()), (200, "origin b".into()));
    }
    assert_eq!(b.served.load(Ordering::SeqCst) - served_before, 6);
}

#[tokio::test]
async fn timeout_and_read_timeout_bound_h2_calls() {
    let origin = H2Origin::start("a", None, 1).await;
    let upstreams = format!(
        "  a:\n    targets: [{}]\n    protocol: h2c\n    timeout: 300ms\n    read_timeout: 300ms\n",
        origin.url("http")
    );
    let gw = gateway(&upstreams, &["a"]).await;
    // No head within `timeout`.
    let got = get(&gw.url("/a/slow")).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["error"], "upstream_timeout");
    // A head, then no body byte within `read_timeout`: still answered with an error status.
    let got = get(&gw.url("/a/silent")).await;
    assert_eq!(got.status, 504);
    // A head and a chunk, then silence: the body is cut after `read_timeout`.
    let response = within(
        h2c_client().request(
            Request::get(gw.url("/a/stall"))
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        within(response.into_body().collect()).await.is_err(),
        "the body is cut"
    );
    // Each was one stream: the connection carries on.
    assert_eq!(get(&gw.url("/a/x")).await.text(), "origin a");
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test]
async fn a_reload_keeps_the_h2_connections_while_their_settings_stay() {
    let origin = H2Origin::start("a", None, 1).await;
    let upstream = |extra: &str| {
        format!(
            "  a:\n    targets: [{}]\n    protocol: h2c\n{extra}",
            origin.url("http")
        )
    };
    let gw = gateway(&upstream(""), &["a"]).await;
    assert_eq!(get(&gw.url("/a/x")).await.status, 200);
    let client_before = gw.handle.snapshot().upstreams[0].h2.clone().unwrap();
    let yaml = |extra: &str| {
        format!(
            "{}upstreams:\n{}routes:\n  - name: a\n    match: {{path: /a}}\n    upstream: a\n    strip_prefix: /a\n\
             \x20 - name: b\n    match: {{path: /b}}\n    upstream: a\n    strip_prefix: /b\n",
            server_yaml("workers: 1"),
            upstream(extra)
        )
    };

    // Another route, the upstream as it was: the same client and connection.
    std::fs::write(gw.path("gateway.yaml"), yaml("")).unwrap();
    gw.handle.reload().await;
    eventually("the reload applied", || async {
        get(&gw.url("/b/x")).await.status == 200
    })
    .await;
    let client_after = gw.handle.snapshot().upstreams[0].h2.clone().unwrap();
    assert!(Arc::ptr_eq(&client_before, &client_after));
    assert_eq!(get(&gw.url("/b/x")).await.text(), "origin a");
    assert_eq!(origin.accepted(), 1);

    // A changed connect_timeout makes a new client, and so a new connection.
    std::fs::write(gw.path("gateway.yaml"), yaml("    connect_timeout: 3s\n")).unwrap();
    gw.handle.reload().await;
    eventually("the reload applied", || async {
        gw.handle.snapshot().upstreams[0].connect_timeout == std::time::Duration::from_secs(3)
    })
    .await;
    assert_eq!(get(&gw.url("/b/x")).await.text(), "origin a");
    assert_eq!(origin.accepted(), 2);
}

/// A CA and a server certificate for `localhost` signed by it, as PEM, and a TLS acceptor
/// offering `alpn`.
fn tls_origin(alpn: &[&[u8]]) -> (String, TlsAcceptor) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (ca.pem(), TlsAcceptor::from(Arc::new(config)))
}

/// The upstreams section of an h2 upstream at `origin` (as `localhost`) trusting `ca.pem`.
fn h2_upstream(origin: &H2Origin) -> String {
    format!(
        "  a:\n    targets: ['https://localhost:{}']\n    protocol: h2\n    tls:\n      ca_file: ca.pem\n",
        origin.addr.port()
    )
}

/// A gateway for `upstreams` with `ca_pem` in a file of its own folder (kept with it).
async fn tls_gateway(upstreams: &str, ca_pem: &str) -> (TestGateway, tempfile::TempDir) {
    let yaml = format!(
        "{}upstreams:\n{upstreams}routes:\n  - name: a\n    match: {{path: /a}}\n    upstream: a\n    strip_prefix: /a\n",
        server_yaml("workers: 1")
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let yaml = yaml.replace("ca_file: ca.pem", &format!("ca_file: {}", ca.display()));
    (TestGateway::start(&yaml).await, dir)
}

#[tokio::test]
async fn h2_upstream_over_tls_is_reached_by_alpn() {
    let (ca_pem, acceptor) = tls_origin(&[b"h2"]);
    let origin = H2Origin::start("tls", Some(acceptor), 1).await;
    let (gw, _ca) = tls_gateway(&h2_upstream(&origin), &ca_pem).await;
    let collected = echo_over_h2(&gw, b"over tls").await;
    let json: serde_json::Value = serde_json::from_slice(&collected.to_bytes()).unwrap();
    assert_eq!(json["version"], "HTTP/2.0");
    assert_eq!(json["scheme"], "https");
    assert_eq!(json["body_len"], 8);
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/a/x")).await.text(), "origin tls");
    }
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test]
async fn an_h2_upstream_that_does_not_agree_on_h2_is_a_connect_error() {
    // The origin offers only http/1.1 by ALPN: the handshake cannot agree on h2.
    let (ca_pem, acceptor) = tls_origin(&[b"http/1.1"]);
    let origin = H2Origin::start("tls", Some(acceptor), 1).await;
    let (gw, _ca) = tls_gateway(&h2_upstream(&origin), &ca_pem).await;
    let got = get(&gw.url("/a/x")).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.json()["error"], "upstream_unreachable");
    // A server without ALPN (it would take anything) is refused by the gateway itself, which
    // says why in its log.
    let (ca_pem, acceptor) = tls_origin(&[]);
    let origin = H2Origin::start("tls", Some(acceptor), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:PORT\nlogging:\n  format: json\nupstreams:\n{}\
         routes:\n  - name: a\n    match: {{path: /}}\n    upstream: a\n",
        h2_upstream(&origin).replace("ca_file: ca.pem", &format!("ca_file: {}", ca.display()))
    );
    let gw = GatehouseProcess::start(&yaml, &[]).await;
    let got = get(&gw.url("/x")).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.json()["error"], "upstream_unreachable");
    assert_eq!(origin.served.load(Ordering::SeqCst), 0);
    eventually("the refused protocol is logged", || async {
        gw.log_lines().iter().any(|l| {
            l["message"] == "upstream request failed"
                && l["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("did not agree on HTTP/2 by ALPN"))
        })
    })
    .await;
}

#[test]
fn protocols_must_fit_their_targets_schemes() {
    let config = |targets: &str, protocol: &str| {
        format!(
            "server:\n  listen: 127.0.0.1:0\nupstreams:\n  u:\n    targets: [{targets}]\n    protocol: {protocol}\n\
             routes:\n  - name: r\n    match: {{path: /}}\n    upstream: u\n"
        )
    };
    check_config_cases(vec![
        ConfigCase {
            name: "h2 with http",
            files: vec![("gateway.yaml", config("http://127.0.0.1:1", "h2"))],
            at: ("gateway.yaml", 5, 15),
            says: "`protocol: h2` is HTTP/2 over TLS: target `http://127.0.0.1:1` must be https://",
        },
        ConfigCase {
            name: "h2c with https",
            files: vec![("gateway.yaml", config("'https://localhost:1'", "h2c"))],
            at: ("gateway.yaml", 5, 15),
            says: "`protocol: h2c` is cleartext HTTP/2 with prior knowledge: target `https://localhost:1` must be http://",
        },
        ConfigCase {
            name: "h2 with one http target among https",
            files: vec![(
                "gateway.yaml",
                config("'https://localhost:1', http://127.0.0.1:2", "h2"),
            )],
            at: ("gateway.yaml", 5, 38),
            says: "target `http://127.0.0.1:2` must be https://",
        },
    ]);
}
