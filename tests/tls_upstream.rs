//! HTTPS upstreams: the gateway's TLS client against origins the test starts with certificates
//! it generates (rcgen): trusted roots from `ca_file`, `server_name`, `insecure_skip_verify`,
//! client certificates, and pooled TLS connections.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for `names` signed by this CA.
    fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What an origin saw.
#[derive(Default)]
struct Seen {
    /// TLS handshakes completed.
    handshakes: AtomicUsize,
    /// Connections it closed itself after the first answer.
    closed: AtomicUsize,
    /// TLS key updates it sent after the first answer.
    key_updates: AtomicUsize,
    /// Lets connection 0 send its key update (once the test has the first answer, so the
    /// update cannot arrive in one read with it).
    update_keys: tokio::sync::Notify,
    /// The SNI of each connection.
    sni: Mutex<Vec<Option<String>>>,
    /// Whether each connection's client presented a certificate.
    client_certs: Mutex<Vec<bool>>,
}

/// An HTTPS origin: answers each request with `conn{N}` (N: the connection's number, from 0).
struct Origin {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// Serves `leaf`; with `client_ca`, requires a client certificate from it; `then` says
    /// what connection 0 does after its first answer.
    async fn start(leaf: &Leaf, client_ca: Option<&Ca>, then: AfterFirst) -> Origin {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.der()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(leaf.chain(), leaf.key()).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        // A small receive buffer, so a large upload fills the gateway's socket while the origin
        // reads it slowly (see `read_request`).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 << 10).unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let listener = socket.listen(64).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let n = seen.handshakes.fetch_add(1, Ordering::SeqCst);
                    let (_, session) = tls.get_ref();
                    seen.sni
                        .lock()
                        .unwrap()
                        .push(session.server_name().map(str::to_string));
                    seen.client_certs
                        .lock()
                        .unwrap()
                        .push(session.peer_certificates().is_some());
                    let mut first = n == 0;
                    while let Some((path, received)) = read_request(&mut tls).await {
                        let body = match path.as_str() {
                            "/big" => vec![b'x'; BIG],
                            "/upload" => format!("conn{n} {}", fnv(&received)).into_bytes(),
                            _ => format!("conn{n}").into_bytes(),
                        };
                        let mut answer =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        answer.extend_from_slice(&body);
                        if tls.write_all(&answer).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                        match (std::mem::take(&mut first), then) {
                            (true, AfterFirst::Close) => {
                                let _ = tls.shutdown().await;
                                seen.closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            (true, AfterFirst::KeyUpdate) => {
                                seen.update_keys.notified().await;
                                tls.get_mut().1.refresh_traffic_keys().unwrap();
                                tls.flush().await.unwrap();
                                seen.key_updates.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        Origin { addr, seen, task }
    }

    fn handshakes(&self) -> usize {
        self.seen.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What connection 0 of an origin does after its first answer.
#[derive(Clone, Copy)]
enum AfterFirst {
    /// Keeps serving.
    Nothing,
    /// Sends close_notify and closes.
    Close,
    /// Sends a TLS 1.3 KeyUpdate (a record that is not application data) and keeps serving.
    KeyUpdate,
}

/// A body large enough to take many TLS records and reads: 1 MiB.
const BIG: usize = 1 << 20;

/// Reads one request: its path, and its Content-Length body (the gateway sends bodies of a
/// known length here). `None` at the end.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(String, Vec<u8>)> {
    let head = common::read_request_head(stream).await?;
    let path = head.split(' ').nth(1).unwrap().to_string();
    let length = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if length > BIG {
        // A slow reader: the gateway's writes keep meeting a full socket.
        for chunk in body.chunks_mut(64 << 10) {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            stream.read_exact(chunk).await.ok()?;
        }
    } else {
        stream.read_exact(&mut body).await.ok()?;
    }
    Some((path, body))
}

/// Writes `text` to `name` in `dir`; the absolute path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A one-worker gateway with upstream `up` at `target` and its `tls` lines (indented under
/// `tls:`, none for no section), routing everything there.
async fn gateway(target: &str, tls: &[String]) -> TestGateway {
    TestGateway::start(&config(target, tls, "workers: 1")).await
}

fn config(target: &str, tls: &[String], server_extra: &str) -> String {
    let mut upstream = format!("upstreams:\n  up:\n    targets: [{target}]\n    timeout: 5s\n");
    if !tls.is_empty() {
        upstream.push_str("    tls:\n");
        for line in tls {
            upstream.push_str(&format!("      {line}\n"));
        }
    }
    server_yaml(server_extra)
        + &upstream
        + "routes:\n  - name: r\n    match: {path: /}\n    upstream: up\n"
}

/// GET `path` through `gw` on `client`.
async fn fetch(c: &Client<HttpConnector, Full<Bytes>>, gw: &TestGateway, path: &str) -> Got {
    send(c, Request::get(gw.url(path)).body(Full::default()).unwrap()).await
}

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// An origin whose CA the gateway can trust: the CA, written to `ca.pem` in a temporary
/// directory, and the origin serving a certificate the test chose.
struct Trusted {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    origin: Origin,
}

impl Trusted {
    /// `ca` written to `ca.pem`, and an origin serving `leaf` (see `Origin::start`).
    async fn with(ca: &Ca, leaf: &Leaf, client_ca: Option<&Ca>, then: AfterFirst) -> Trusted {
        let dir = tempfile::tempdir().unwrap();
        let origin = Origin::start(leaf, client_ca, then).await;
        let ca_file = write(dir.path(), "ca.pem", &ca.pem());
        Trusted {
            dir,
            ca_file,
            origin,
        }
    }

    /// A fresh CA and an origin serving its certificate for `localhost`.
    async fn start(then: AfterFirst) -> Trusted {
        let ca = Ca::new("test ca");
        Trusted::with(&ca, &ca.leaf(&["localhost"]), None, then).await
    }

    /// The `tls:` line that trusts the CA.
    fn ca_line(&self) -> String {
        format!("ca_file: {}", self.ca_file.display())
    }

    /// The origin as an `https://localhost:PORT` target.
    fn localhost(&self) -> String {
        format!("https://localhost:{}", self.origin.addr.port())
    }

    /// A one-worker gateway reaching the origin at `localhost` and trusting the CA.
    async fn gateway(&self) -> TestGateway {
        gateway(&self.localhost(), &[self.ca_line()]).await
    }
}

#[tokio::test]
async fn a_target_signed_by_the_ca_file_is_trusted_and_its_connection_reused() {
    let t = Trusted::start(AfterFirst::Nothing).await;
    let gw = t.gateway().await;
    let c = client();
    for _ in 0..3 {
        let got = fetch(&c, &gw, "/").await;
        assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "conn0"));
    }
    // One TLS connection carried all three requests, although the origin sends TLS 1.3
    // session tickets after the handshake (records that are not application data).
    assert_eq!(t.origin.handshakes(), 1);
    assert_eq!(
        *t.origin.seen.sni.lock().unwrap(),
        vec![Some("localhost".to_string())]
    );
}

#[tokio::test]
async fn large_bodies_cross_a_tls_connection_both_ways() {
    let t = Trusted::start(AfterFirst::Nothing).await;
    let gw = t.gateway().await;
    let c = client();
    let got = fetch(&c, &gw, "/big").await;
    assert_eq!(got.status.as_u16(), 200);
    assert!(got.body.len() == BIG && got.body.iter().all(|&b| b == b'x'));
    let upload = pattern(0, 8 * BIG);
    let got = send(
        &c,
        Request::post(gw.url("/upload"))
            .body(Full::new(Bytes::from(upload.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(got.text(), format!("conn0 {}", fnv(&upload)));
    assert_eq!(t.origin.handshakes(), 1);
}

#[tokio::test]
async fn a_target_signed_by_an_unknown_ca_fails_with_502_and_a_log_line() {
    let other = Ca::new("other ca");
    let t = Trusted::with(
        &Ca::new("test ca"),
        &other.leaf(&["localhost"]),
        None,
        AfterFirst::Nothing,
    )
    .await;
    let yaml = config(&t.localhost(), &[t.ca_line()], "").replace("127.0.0.1:0", "127.0.0.1:PORT")
        + "logging:\n  format: json\n";
    let gw = GatehouseProcess::start(&yaml, &[]).await;
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status.as_u16(), 502, "{}", got.text());
    assert_eq!(
        got.json()["error"],
        "upstream_unreachable",
        "{}",
        got.text()
    );
    eventually("the failed handshake is logged", || async {
        gw.log_lines().iter().any(|l| {
            l["message"] == "upstream request failed"
                && l["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("TLS handshake") && e.contains("UnknownIssuer"))
        })
    })
    .await;
}

#[tokio::test]
async fn server_name_is_sent_in_sni_and_verified() {
    let ca = Ca::new("test ca");
    let t = Trusted::with(
        &ca,
        &ca.leaf(&["origin.internal"]),
        None,
        AfterFirst::Nothing,
    )
    .await;
    let target = format!("https://{}", t.origin.addr);
    // The target's host (an IP address) is not in the certificate.
    let gw = gateway(&target, &[t.ca_line()]).await;
    assert_eq!(get(&gw.url("/")).await.status.as_u16(), 502);
    let gw = gateway(
        &target,
        &[t.ca_line(), "server_name: origin.internal".into()],
    )
    .await;
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status.as_u16(), 200, "{}", got.text());
    assert!(
        t.origin
            .seen
            .sni
            .lock()
            .unwrap()
            .contains(&Some("origin.internal".to_string())),
        "{:?}",
        t.origin.seen.sni.lock().unwrap()
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_unknown_ca() {
    let origin = Origin::start(
        &Ca::new("unknown").leaf(&["elsewhere"]),
        None,
        AfterFirst::Nothing,
    )
    .await;
    let target = format!("https://{}", origin.addr);
    let gw = gateway(&target, &[]).await;
    assert_eq!(get(&gw.url("/")).await.status.as_u16(), 502);
    let gw = gateway(&target, &["insecure_skip_verify: true".into()]).await;
    let got = get(&gw.url("/")).await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "conn0"));
}

#[tokio::test]
async fn an_idle_tls_connection_the_origin_closed_is_not_reused() {
    let t = Trusted::start(AfterFirst::Close).await;
    let gw = t.gateway().await;
    let c = client();
    assert_eq!(fetch(&c, &gw, "/").await.text(), "conn0");
    eventually("the origin closed connection 0", || async {
        t.origin.seen.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    // A POST is never retried: sent on the closed connection, it would fail.
    let got = send(
        &c,
        Request::post(gw.url("/"))
            .body(Full::new(Bytes::from_static(b"once")))
            .unwrap(),
    )
    .await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "conn1"));
    assert_eq!(t.origin.handshakes(), 2);
}

#[tokio::test]
async fn tls_records_on_an_idle_connection_that_carry_no_data_leave_it_usable() {
    let t = Trusted::start(AfterFirst::KeyUpdate).await;
    let gw = t.gateway().await;
    let c = client();
    assert_eq!(fetch(&c, &gw, "/").await.text(), "conn0");
    t.origin.seen.update_keys.notify_one();
    eventually("the origin updated its keys", || async {
        t.origin.seen.key_updates.load(Ordering::SeqCst) == 1
    })
    .await;
    // Sweeper-independent: the check at checkout reads the KeyUpdate record, which is no
    // reason to drop the connection (a raw socket read would have taken a byte of it).
    let got = fetch(&c, &gw, "/").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "conn0"));
    assert_eq!(t.origin.handshakes(), 1);
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let ca = Ca::new("test ca");
    let clients = Ca::new("client ca");
    let t = Trusted::with(
        &ca,
        &ca.leaf(&["localhost"]),
        Some(&clients),
        AfterFirst::Nothing,
    )
    .await;
    let identity = clients.leaf(&["gateway"]);
    let cert_file = write(t.dir.path(), "gw.crt", &identity.cert_pem);
    let key_file = write(t.dir.path(), "gw.key", &identity.key_pem);
    let without = t.gateway().await;
    assert_eq!(get(&without.url("/")).await.status.as_u16(), 502);
    let gw = gateway(
        &t.localhost(),
        &[
            t.ca_line(),
            format!("cert_file: {}", cert_file.display()),
            format!("key_file: {}", key_file.display()),
        ],
    )
    .await;
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status.as_u16(), 200, "{}", got.text());
    assert_eq!(*t.origin.seen.client_certs.lock().unwrap(), vec![true]);
}

#[tokio::test]
async fn health_checks_of_https_targets_go_through_tls() {
    let t = Trusted::start(AfterFirst::Nothing).await;
    let yaml = config(&t.localhost(), &[t.ca_line()], "workers: 1");
    let yaml = yaml.replace(
        "    timeout: 5s\n",
        "    timeout: 5s\n    health_check:\n      path: /health\n      interval: 200ms\n      timeout: 200ms\n      unhealthy_threshold: 2\n",
    );
    let gw = TestGateway::start(&yaml).await;
    // A probe in plain HTTP would fail its handshake and take the only target out (503).
    eventually("probes completed TLS handshakes", || async {
        t.origin.handshakes() >= 2
    })
    .await;
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status.as_u16(), 200, "{}", got.text());
}

#[tokio::test]
async fn a_reload_after_the_ca_file_changed_makes_a_new_pool() {
    let t = Trusted::start(AfterFirst::Nothing).await;
    let yaml = config(&t.localhost(), &[t.ca_line()], "workers: 1");
    let gw = TestGateway::start(&yaml).await;
    let c = client();
    assert_eq!(fetch(&c, &gw, "/").await.status.as_u16(), 200);
    let reload = |mark: &'static str| {
        let before = gw.handle.snapshot();
        std::fs::write(gw.path("gateway.yaml"), format!("{yaml}# {mark}\n")).unwrap();
        let gw = &gw;
        async move {
            eventually("the reload applied", || async {
                !Arc::ptr_eq(&before, &gw.handle.snapshot())
            })
            .await;
            Arc::clone(&before.upstreams[0].pool)
        }
    };
    // The same files: the pool and its TLS connection stay.
    let pool = reload("same").await;
    assert!(Arc::ptr_eq(&pool, &gw.handle.snapshot().upstreams[0].pool));
    // The CA file now holds another CA: the new pool's client does not trust the origin, and
    // the connection made under the old one is not reused.
    write(t.dir.path(), "ca.pem", &Ca::new("other ca").pem());
    let pool = reload("other ca").await;
    assert!(!Arc::ptr_eq(&pool, &gw.handle.snapshot().upstreams[0].pool));
    let got = fetch(&c, &gw, "/").await;
    assert_eq!(got.status.as_u16(), 502, "{}", got.text());
    assert_eq!(t.origin.handshakes(), 1);
}
