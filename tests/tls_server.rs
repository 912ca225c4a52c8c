//! The HTTPS listener (`server.tls`): certificates chosen by SNI, TLS 1.2 and 1.3 only, HTTP/2
//! and HTTP/1.1 by ALPN, `X-Forwarded-Proto: https` upstream, and certificates replaced while
//! the gateway runs. Certificates are made by the test with rcgen; clients are tokio-rustls.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::captured_log::CapturedLog;
use common::origin::{Answer, Origin};
use common::{self_signed_until, within, Echo, EchoUpstream, SelfSigned as Made, DEADLINE};
use gatehouse::tls::client;
use gatehouse::GatewayHandle;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `names`, valid until 2035.
fn make(names: &[&str]) -> Made {
    self_signed_until(names, (2035, 1, 1))
}

/// Writes `made` as `dir/{file}.crt` and `dir/{file}.key`.
fn write(dir: &Path, file: &str, made: &Made) {
    std::fs::write(dir.join(format!("{file}.crt")), &made.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{file}.key")), &made.key_pem).unwrap();
}

/// A gateway with an HTTPS listener serving `files` (by name, in order) in front of `up`.
struct TlsGateway {
    handle: GatewayHandle,
    /// The config folder, with the certificate files.
    dir: tempfile::TempDir,
}

impl TlsGateway {
    /// An echo upstream and a gateway serving one certificate for `a.test` (as `a`) in front of
    /// it.
    async fn for_a_test(server_extra: &str) -> (EchoUpstream, TlsGateway) {
        let up = EchoUpstream::start("up").await;
        let a = make(&["a.test"]);
        let gw = TlsGateway::start(&[("a", &a)], &up, server_extra).await;
        (up, gw)
    }

    async fn start(certs: &[(&str, &Made)], up: &EchoUpstream, server_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (file, made) in certs {
            write(dir.path(), file, made);
        }
        let stems: Vec<&str> = certs.iter().map(|(file, _)| *file).collect();
        Self::start_in(dir, &stems, up, server_extra).await
    }

    /// Starts with the certificates `dir/{stem}.crt` and keys `dir/{stem}.key` already there.
    async fn start_in(
        dir: tempfile::TempDir,
        stems: &[&str],
        up: &EchoUpstream,
        server_extra: &str,
    ) -> Self {
        let rest = format!(
            "upstreams:\n  up:\n    targets: [{}]\nroutes:\n  - name: r\n    match: {{path: /}}\n    upstream: up\n",
            up.url()
        );
        Self::start_with(dir, stems, server_extra, &rest).await
    }

    /// Starts with the certificates `dir/{stem}.crt` and keys `dir/{stem}.key` already there,
    /// and `rest` (upstreams and routes) after the server section.
    async fn start_with(
        dir: tempfile::TempDir,
        stems: &[&str],
        server_extra: &str,
        rest: &str,
    ) -> Self {
        let mut entries = String::new();
        for file in stems {
            entries.push_str(&format!(
                "      - cert: {file}.crt\n        key: {file}.key\n"
            ));
        }
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n{server_extra}  tls:\n    listen: 127.0.0.1:0\n    certificates:\n{entries}{rest}"
        );
        let handle = common::start_in(dir.path(), &yaml, &[], true).await;
        TlsGateway { handle, dir }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.tls_addr().expect("an HTTPS listener")
    }

    /// The value of `gatehouse_tls_certificate_expiry_seconds{name="<name>"}`, if exported.
    async fn expiry(&self, name: &str) -> Option<i64> {
        let text = common::get(&format!("http://{}/metrics", self.handle.local_addr()))
            .await
            .text();
        let series = format!("gatehouse_tls_certificate_expiry_seconds{{name=\"{name}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map(|v| v.trim().parse().unwrap())
    }
}

/// A client config offering `versions` and `alpn`, accepting any server certificate: the
/// tests look at which one was sent, not whether it is trusted.
fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    Arc::new(
        client::client_config_with_versions(versions, client::Trust::Anything, None, alpn).unwrap(),
    )
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Connects to `addr` with SNI `sni` (none for `None`: rustls sends no SNI for an IP address).
async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    within(TlsConnector::from(config).connect(name, tcp)).await
}

/// The leaf certificate the server presented for `sni`.
async fn served(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    let stream = connect(addr, sni, client_config(BOTH, &[])).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// An HTTP/2 client on `stream`, and the task driving its connection.
async fn http2(
    stream: TlsStream<TcpStream>,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

/// GET `path` over HTTP/1.1 on `stream`; what the echo upstream saw.
async fn get_http1(stream: TlsStream<TcpStream>, path: &str) -> Echo {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let echo = send_echo(&mut |r| sender.send_request(r), path).await;
    drop(sender);
    let _ = task.await;
    echo
}

async fn send_echo<F, Fut>(send: &mut F, path: &str) -> Echo
where
    F: FnMut(Request<Full<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
{
    let request = Request::get(path)
        .header("host", "a.test")
        .body(Full::default())
        .unwrap();
    let response = within(send(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("not an echo ({e}): {body:?}"))
}

#[tokio::test]
async fn sni_picks_the_certificate_and_no_sni_or_an_unknown_name_gets_the_first() {
    let up = EchoUpstream::start("up").await;
    let (a, b, c) = (
        make(&["a.test"]),
        make(&["*.b.test"]),
        make(&["exact.b.test"]),
    );
    let gw = TlsGateway::start(&[("a", &a), ("b", &b), ("c", &c)], &up, "").await;
    let addr = gw.addr();
    assert_eq!(served(addr, Some("a.test")).await, a.der);
    assert_eq!(served(addr, Some("shop.b.test")).await, b.der);
    assert_eq!(
        served(addr, Some("exact.b.test")).await,
        c.der,
        "exact beats wildcard"
    );
    assert_eq!(served(addr, Some("other.test")).await, a.der);
    assert_eq!(served(addr, None).await, a.der);
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served_and_1_1_is_refused_with_an_alert() {
    let (_up, gw) = TlsGateway::for_a_test("").await;
    let addr = gw.addr();
    for (only, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let stream = connect(addr, Some("a.test"), client_config(&[only], &[]))
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
    }
    // rustls clients cannot speak TLS 1.1, so this is a TLS 1.1 ClientHello written out: legacy
    // version 3.2 and no supported_versions extension, but suites, groups and signature schemes
    // the server has, so only the version can make it refuse.
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[7; 32]); // random
    hello.push(0); // session id
                   // ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-CBC-SHA
    hello.extend_from_slice(&[0, 6, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x09]);
    hello.extend_from_slice(&[1, 0]); // compression: null
    let extensions: &[u8] = &[
        0x00, 0x0a, 0, 4, 0, 2, 0x00, 0x17, // supported_groups: secp256r1
        0x00, 0x0b, 0, 2, 1, 0, // ec_point_formats: uncompressed
        0x00, 0x0d, 0, 4, 0, 2, 0x04, 0x03, // signature_algorithms: ecdsa_secp256r1_sha256
    ];
    hello.extend_from_slice(&[0, extensions.len() as u8]);
    hello.extend_from_slice(extensions);
    let mut handshake = vec![1, 0, 0, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02, 0, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut answer = Vec::new();
    within(tcp.read_to_end(&mut answer)).await.unwrap();
    // One alert record: fatal (2), protocol_version (70); then the server closed.
    assert!(answer.len() >= 7, "answer: {answer:?}");
    assert_eq!(answer[0], 0x15, "an alert record: {answer:?}");
    assert_eq!(
        &answer[5..7],
        &[2, 70],
        "a fatal protocol_version alert: {answer:?}"
    );
}

#[tokio::test]
async fn http1_over_tls_forwards_x_forwarded_proto_https() {
    let (_up, gw) = TlsGateway::for_a_test("").await;
    let config = client_config(BOTH, &[b"http/1.1"]);
    let stream = connect(gw.addr(), Some("a.test"), config).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let echo = get_http1(stream, "/one").await;
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    // Without ALPN the client speaks HTTP/1.1 too.
    let stream = connect(gw.addr(), Some("a.test"), client_config(BOTH, &[]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let echo = get_http1(stream, "/two").await;
    assert_eq!(echo.target, "/two");
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    // The plain listener still says http.
    let plain = common::get(&format!("http://{}/three", gw.handle.local_addr())).await;
    assert_eq!(plain.echo().header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn h2_is_chosen_by_alpn() {
    let (_up, gw) = TlsGateway::for_a_test("").await;
    let config = client_config(BOTH, &[b"h2", b"http/1.1"]);
    let stream = connect(gw.addr(), Some("a.test"), config).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, task) = http2(stream).await;
    // Two requests on the one connection; each is an HTTP/2 stream.
    for path in ["/h2/one", "/h2/two"] {
        let request = Request::get(format!("https://a.test{path}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = within(sender.send_request(request)).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = within(response.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        let echo: Echo = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo.target, path);
        assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    }
    drop(sender);
    let _ = within(task).await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_cut_after_request_header_timeout() {
    let (_up, gw) = TlsGateway::for_a_test("  request_header_timeout: 300ms\n").await;
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

/// An HTTP/1.1 connection kept open across a certificate change.
struct KeptConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    served: CertificateDer<'static>,
}

impl KeptConnection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = connect(addr, Some("a.test"), client_config(BOTH, &[]))
            .await
            .unwrap();
        let served = stream.get_ref().1.peer_certificates().unwrap()[0]
            .clone()
            .into_owned();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeptConnection { sender, served }
    }

    async fn get(&mut self, path: &str) -> Echo {
        within(self.sender.ready()).await.unwrap();
        let sender = &mut self.sender;
        send_echo(&mut |r| sender.send_request(r), path).await
    }
}

#[tokio::test]
async fn a_kubernetes_secret_swap_is_served_to_new_connections_while_old_ones_keep_working() {
    // A Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/.
    let up = EchoUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let version = |name: &str, made: &Made| {
        std::fs::create_dir(certs.join(name)).unwrap();
        write(&certs.join(name), "tls", made);
    };
    let (old, new) = (
        self_signed_until(&["a.test"], (2031, 5, 17)),
        self_signed_until(&["a.test"], (2032, 6, 1)),
    );
    version("..2026_01", &old);
    std::os::unix::fs::symlink("..2026_01", certs.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), certs.join(file)).unwrap();
    }
    let gw = TlsGateway::start_in(dir, &["certs/tls"], &up, "").await;
    let addr = gw.addr();
    assert_eq!(gw.expiry("a.test").await, Some(1_936_742_400));
    let mut kept = KeptConnection::open(addr).await;
    assert_eq!(kept.served, old.der);
    assert_eq!(kept.get("/before").await.target, "/before");

    // What the kubelet does: new folder, new symlink, rename it over ..data.
    version("..2026_02", &new);
    std::os::unix::fs::symlink("..2026_02", certs.join("..data_tmp")).unwrap();
    std::fs::rename(certs.join("..data_tmp"), certs.join("..data")).unwrap();
    std::fs::remove_dir_all(certs.join("..2026_01")).unwrap();
    common::eventually("the new certificate is served", || async {
        served(addr, Some("a.test")).await == new.der
    })
    .await;
    assert_eq!(gw.expiry("a.test").await, Some(1_969_660_800));
    // The connection made before the swap still serves requests.
    assert_eq!(kept.get("/after").await.target, "/after");
    drop(gw.dir);
}

#[tokio::test]
async fn a_broken_pair_keeps_the_running_certificate_until_a_good_one_arrives() {
    let up = EchoUpstream::start("up").await;
    let (old, other, new) = (make(&["a.test"]), make(&["b.test"]), make(&["a.test"]));
    let gw = TlsGateway::start(&[("a", &old)], &up, "").await;
    let addr = gw.addr();
    // The key of another certificate: the reload is refused and the old pair stays in use.
    std::fs::write(gw.dir.path().join("a.key"), &other.key_pem).unwrap();
    match gw.handle.reload().await {
        gatehouse::server::reload::ReloadOutcome::Rejected(errors) => {
            let text = errors.to_string();
            assert!(text.contains("does not match the certificate"), "{text}");
        }
        outcome => panic!("expected a rejected reload, got {outcome:?}"),
    }
    assert_eq!(served(addr, Some("a.test")).await, old.der);
    // A good pair written in place (files in the config folder) is picked up by the watcher.
    std::fs::write(gw.dir.path().join("a.crt"), &new.cert_pem).unwrap();
    std::fs::write(gw.dir.path().join("a.key"), &new.key_pem).unwrap();
    common::eventually("the new certificate is served", || async {
        served(addr, Some("a.test")).await == new.der
    })
    .await;
}

#[tokio::test]
async fn rsa_keys_in_pkcs1_and_ec_keys_in_sec1_are_served() {
    let up = EchoUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    // openssl writes the keys (rcgen with ring cannot make RSA keys); rcgen signs with them.
    common::rsa_private_key(path, "rsa8.pem");
    common::openssl(
        path,
        &["rsa", "-in", "rsa8.pem", "-traditional", "-out", "rsa.key"],
    );
    common::openssl(
        path,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ],
    );
    // A certificate for `name` signed with the PKCS#8 key in `pkcs8`, written to `file`.
    let self_signed = |pkcs8: &str, name: &str, file: &str| {
        let pem = std::fs::read_to_string(path.join(pkcs8)).unwrap();
        let key = rcgen::KeyPair::from_pem(&pem).unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(path.join(file), cert.pem()).unwrap();
        cert.der().clone()
    };
    common::openssl(
        path,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "ec.key", "-out", "ec8.pem",
        ],
    );
    let rsa = self_signed("rsa8.pem", "rsa.test", "rsa.crt");
    let ec = self_signed("ec8.pem", "ec.test", "ec.crt");
    let rsa_key = std::fs::read_to_string(path.join("rsa.key")).unwrap();
    let ec_key = std::fs::read_to_string(path.join("ec.key")).unwrap();
    assert!(
        rsa_key.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "PKCS#1: {rsa_key}"
    );
    assert!(
        ec_key.starts_with("-----BEGIN EC PRIVATE KEY-----"),
        "SEC1: {ec_key}"
    );
    let gw = TlsGateway::start_in(dir, &["rsa", "ec"], &up, "").await;
    assert_eq!(served(gw.addr(), Some("rsa.test")).await, rsa);
    assert_eq!(served(gw.addr(), Some("ec.test")).await, ec);
}

#[tokio::test]
async fn an_idle_https_connection_waits_for_idle_timeout_not_request_header_timeout() {
    let extra = "  request_header_timeout: 200ms\n  idle_timeout: 30s\n";
    let (_up, gw) = TlsGateway::for_a_test(extra).await;
    let mut kept = KeptConnection::open(gw.addr()).await;
    assert_eq!(kept.get("/first").await.target, "/first");
    // Idle for several times the head timeout: the connection is still usable.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(kept.get("/second").await.target, "/second");
}

#[tokio::test]
async fn a_request_head_over_https_must_arrive_within_request_header_timeout() {
    let extra = "  request_header_timeout: 300ms\n  idle_timeout: 30s\n";
    let (_up, gw) = TlsGateway::for_a_test(extra).await;
    for first in [true, false] {
        let mut stream = connect(gw.addr(), Some("a.test"), client_config(BOTH, &[]))
            .await
            .unwrap();
        if !first {
            // One full request and response, then a slow second head.
            stream
                .write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
                .await
                .unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("\"server\"") {
                let n = within(stream.read(&mut buf)).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
            // Idle for longer than the head timeout first: that is not head time.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        stream
            .write_all(b"GET /y HTTP/1.1\r\nHost: a")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        let read = within(stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "first: {first}, read: {read:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "first: {first}, closed after {waited:?}"
        );
    }
}

#[tokio::test]
async fn shutdown_closes_idle_https_connections_and_drains() {
    let (_up, gw) = TlsGateway::for_a_test("  idle_timeout: 60s\n").await;
    let addr = gw.addr();
    let mut h1 = KeptConnection::open(addr).await;
    assert_eq!(h1.get("/x").await.target, "/x");
    let h2 = connect(addr, Some("a.test"), client_config(BOTH, &[b"h2"]))
        .await
        .unwrap();
    let (_sender, h2_task) = http2(h2).await;
    common::eventually("both connections counted", || async {
        gw.handle.open_connections() == 2
    })
    .await;
    let outcome = within(gw.handle.shutdown(Some(DEADLINE))).await;
    assert_eq!(outcome, gatehouse::server::ShutdownOutcome::Drained);
    // The HTTP/2 connection was sent GOAWAY and ended.
    within(h2_task).await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the HTTPS listener is closed"
    );
}

/// Reloads `gw` and asserts the reload was not refused: applied, or unchanged when the file
/// watcher was first.
async fn reload_not_rejected(gw: &TlsGateway) {
    let outcome = gw.handle.reload().await;
    assert!(
        !matches!(
            outcome,
            gatehouse::server::reload::ReloadOutcome::Rejected(_)
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_reload_that_moves_the_https_listener_serves_the_new_certificate_there() {
    let up = EchoUpstream::start("up").await;
    let (old, new) = (make(&["a.test"]), make(&["a.test"]));
    let gw = TlsGateway::start(&[("a", &old)], &up, "").await;
    let addr = gw.addr();
    let yaml_path = gw.dir.path().join("gateway.yaml");
    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    // A new listen address and a new certificate in one reload (tests/tls_listener_reload.rs
    // has the listener's moves on their own).
    write(gw.dir.path(), "a", &new);
    let port = common::free_port();
    let moved = yaml.replacen(
        "    listen: 127.0.0.1:0\n",
        &format!("    listen: 127.0.0.1:{port}\n"),
        1,
    );
    std::fs::write(&yaml_path, &moved).unwrap();
    reload_not_rejected(&gw).await;
    let moved_addr = gw.addr();
    assert_ne!(moved_addr, addr);
    assert_eq!(moved_addr.port(), port);
    assert_eq!(served(moved_addr, Some("a.test")).await, new.der);
}

/// A whole response: its head and its body.
type Whole = http::Response<Bytes>;

async fn collect(response: http::Response<hyper::body::Incoming>) -> Whole {
    let (parts, body) = response.into_parts();
    let body = within(body.collect()).await.unwrap().to_bytes();
    http::Response::from_parts(parts, body)
}

/// Sends `request` over HTTP/1.1 on a new TLS connection to `addr` with SNI `sni`.
async fn fetch_http1(addr: SocketAddr, sni: Option<&str>, request: Request<Full<Bytes>>) -> Whole {
    let stream = connect(addr, sni, client_config(BOTH, &[b"http/1.1"]))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let response = collect(within(sender.send_request(request)).await.unwrap()).await;
    drop(sender);
    let _ = task.await;
    response
}

/// Sends `request` (with an absolute URI) over HTTP/2 on a new TLS connection to `addr`.
async fn fetch_h2(addr: SocketAddr, request: Request<Full<Bytes>>) -> Whole {
    let config = client_config(BOTH, &[b"h2"]);
    let stream = connect(addr, Some("a.test"), config).await.unwrap();
    let (mut sender, task) = http2(stream).await;
    let response = collect(within(sender.send_request(request)).await.unwrap()).await;
    assert_eq!(response.version(), http::Version::HTTP_2);
    drop(sender);
    let _ = within(task).await;
    response
}

/// GET `uri` with `x-request-id: id`.
fn get_with_id(uri: &str, id: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("host", "a.test")
        .header("x-request-id", id)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn the_access_log_says_which_requests_came_over_tls_and_with_which_sni_name() {
    let log = CapturedLog::install();
    let (_up, gw) = TlsGateway::for_a_test("").await;
    let addr = gw.addr();
    fetch_http1(addr, Some("a.test"), get_with_id("/l", "tls-h1-sni")).await;
    fetch_http1(addr, None, get_with_id("/l", "tls-h1-no-sni")).await;
    fetch_h2(addr, get_with_id("https://a.test/l", "tls-h2-sni")).await;
    let plain = format!("http://{}/l", gw.handle.local_addr());
    common::send(&common::client(), get_with_id(&plain, "plain-h1")).await;
    assert_eq!(log.line("tls-h1-sni").await["tls"], "a.test");
    assert_eq!(log.line("tls-h1-no-sni").await["tls"], "");
    assert_eq!(log.line("tls-h2-sni").await["tls"], "a.test");
    let line = log.line("plain-h1").await;
    assert!(line.get("tls").is_none(), "{line}");
}

#[tokio::test]
async fn hsts_goes_on_answers_over_tls_only_unless_the_upstream_set_it_or_the_route_is_off() {
    let origin = Origin::start().await;
    origin.set("/app", Answer::ok("app", &[]));
    origin.set("/off", Answer::ok("off", &[]));
    let own = "max-age=60; includeSubDomains";
    origin.set(
        "/own",
        Answer::ok("own", &[("strict-transport-security", own)]),
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", &make(&["a.test"]));
    let rest = format!(
        "upstreams:\n  up:\n    targets: [{}]\nroutes:\n  \
         - name: off\n    match: {{path: /off}}\n    upstream: up\n    security_headers: false\n  \
         - name: app\n    match: {{path: /}}\n    upstream: up\n",
        origin.url()
    );
    let gw = TlsGateway::start_with(dir, &["a"], "  security_headers: true\n", &rest).await;
    let addr = gw.addr();
    let hsts = |r: &Whole| {
        r.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let over_h1 = fetch_http1(addr, Some("a.test"), get_with_id("/app", "h1")).await;
    assert_eq!(over_h1.status(), 200);
    assert_eq!(hsts(&over_h1).as_deref(), Some("max-age=31536000"));
    assert_eq!(over_h1.headers()["x-content-type-options"], "nosniff");
    let over_h2 = fetch_h2(addr, get_with_id("https://a.test/app", "h2")).await;
    assert_eq!(hsts(&over_h2).as_deref(), Some("max-age=31536000"));
    // The same route on the plain listener of the same gateway: the other security headers,
    // never HSTS (RFC 6797 §7.2).
    let plain = common::get(&format!("http://{}/app", gw.handle.local_addr())).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(plain.header("strict-transport-security"), None);
    // The upstream's own value wins.
    let upstream_set = fetch_http1(addr, Some("a.test"), get_with_id("/own", "own")).await;
    assert_eq!(hsts(&upstream_set).as_deref(), Some(own));
    // A route with `security_headers: false` gets none of them.
    let off = fetch_http1(addr, Some("a.test"), get_with_id("/off", "off")).await;
    assert_eq!(off.status(), 200);
    assert_eq!(hsts(&off), None);
    assert!(!off.headers().contains_key("x-content-type-options"));
}

/// A raw HTTP/1.1 client connection over TLS (ALPN `http/1.1`), for bytes a library client
/// would not send.
async fn raw_tls(gw: &TlsGateway) -> TlsStream<TcpStream> {
    let config = client_config(BOTH, &[b"http/1.1"]);
    connect(gw.addr(), Some("a.test"), config).await.unwrap()
}

/// The head of a raw response as text, lower-cased.
fn head_of(stream_bytes: &[u8]) -> String {
    let end = stream_bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(stream_bytes.len(), |at| at + 4);
    String::from_utf8_lossy(&stream_bytes[..end]).to_ascii_lowercase()
}

#[tokio::test]
async fn http1_over_tls_refuses_broken_framing_like_the_plain_listener() {
    let (up, gw) = TlsGateway::for_a_test("").await;
    let cases: [(&str, &[u8], u16, &str); 4] = [
        (
            "a chunk size that is not hex",
            b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "Transfer-Encoding with Content-Length",
            b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "two Host fields",
            b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "HTTP/2.0 in a request line",
            b"GET /x HTTP/2.0\r\nHost: a.test\r\n\r\n",
            505,
            "http_version_not_supported",
        ),
    ];
    for (what, request, status, error) in cases {
        let mut stream = raw_tls(&gw).await;
        stream.write_all(request).await.unwrap();
        let (got, body) = common::read_response(&mut stream).await;
        assert_eq!(got, status, "{what}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], error, "{what}: {json}");
        common::wait_for_close(&mut stream).await;
    }
    // The broken chunk is only seen once its request went upstream (as on the plain
    // listener: the upstream connection is then not reused); the others never left.
    assert!(up.requests() <= 1, "{}", up.requests());
}

#[tokio::test]
async fn http1_over_tls_answers_431_to_a_field_name_over_1_kib() {
    let (up, gw) = TlsGateway::for_a_test("").await;
    for (len, status) in [(1023, 200), (1024, 200), (1025, 431)] {
        let mut stream = raw_tls(&gw).await;
        let name = "x".repeat(len);
        let request = format!("GET /n HTTP/1.1\r\nHost: a.test\r\n{name}: v\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (got, body) = common::read_response(&mut stream).await;
        assert_eq!(got, status, "{len}-byte name");
        if status == 431 {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], "headers_too_large");
            common::wait_for_close(&mut stream).await;
        }
    }
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn http1_over_tls_keeps_the_connection_for_several_and_pipelined_requests() {
    let (up, gw) = TlsGateway::for_a_test("").await;
    let mut stream = raw_tls(&gw).await;
    for i in 0..3 {
        let request = format!("GET /k/{i} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, body) = common::read_response(&mut stream).await;
        assert_eq!(status, 200);
        let echo: Echo = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo.target, format!("/k/{i}"));
        assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    }
    // Two at once, and a body announced with Expect: 100-continue, whose interim answer must
    // leave the TLS session at once (the client waits for it before sending the body).
    stream
        .write_all(
            b"GET /p/1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /p/2 HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .await
        .unwrap();
    for i in 1..=2 {
        let (status, body) = common::read_response(&mut stream).await;
        assert_eq!(status, 200);
        let echo: Echo = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo.target, format!("/p/{i}"));
    }
    stream
        .write_all(b"POST /c HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut interim = vec![0u8; 25];
    within(stream.read_exact(&mut interim)).await.unwrap();
    assert_eq!(&interim[..], b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let (status, body) = common::read_response(&mut stream).await;
    assert_eq!(status, 200);
    let echo: Echo = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo.body_len, 5);
    assert_eq!(up.requests(), 6, "one connection carried them all");
}

#[tokio::test]
async fn http1_over_tls_streams_large_bodies_both_ways_unchanged() {
    let (_up, gw) = TlsGateway::for_a_test("  max_request_body: 64MiB\n").await;
    let mut stream = raw_tls(&gw).await;
    // 6 MiB up, once with a length and once chunked in uneven pieces.
    let size = 6 << 20;
    let body = common::pattern(0, size);
    let head = format!("POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: {size}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let (writer, reader) = (&body[..], &mut stream);
    // The gateway may answer only once the whole body is through, so write while reading.
    // tokio-rustls' write can return with the last records still queued in the session (the
    // socket was full), and its reads never send them: without the flush the gateway waits for
    // the end of the body and the client for the answer.
    let (mut rd, mut wr) = tokio::io::split(reader);
    let (written, (status, answer)) = tokio::join!(
        async {
            wr.write_all(writer).await.unwrap();
            wr.flush().await.unwrap();
            wr
        },
        common::read_response(&mut rd)
    );
    let stream = rd.unsplit(written);
    assert_eq!(status, 200);
    let echo: Echo = serde_json::from_slice(&answer).unwrap();
    assert_eq!(echo.body_len, size as u64);
    assert_eq!(echo.body_fnv, common::fnv(&body));

    let mut chunked =
        b"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(100_003) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (written, (status, answer)) = tokio::join!(
        async {
            wr.write_all(&chunked).await.unwrap();
            wr.flush().await.unwrap();
            wr
        },
        common::read_response(&mut rd)
    );
    let mut stream = rd.unsplit(written);
    assert_eq!(status, 200);
    let echo: Echo = serde_json::from_slice(&answer).unwrap();
    assert_eq!(echo.body_len, size as u64);
    assert_eq!(echo.body_fnv, common::fnv(&body));

    // 9 MiB down, on the same connection.
    let size = 9 << 20;
    let request = format!("GET /bytes/{size} HTTP/1.1\r\nHost: a.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let (status, got) = common::read_response(&mut stream).await;
    assert_eq!(status, 200);
    assert_eq!(got.len(), size);
    assert_eq!(common::fnv(&got), common::fnv(&common::pattern(0, size)));
}

#[tokio::test]
async fn a_tls_client_that_says_close_notify_gets_a_clean_end() {
    let (_up, gw) = TlsGateway::for_a_test("  idle_timeout: 60s\n").await;
    // After a request: the client's close_notify ends the connection, with the gateway's own
    // close_notify (a read sees a clean end of stream, not a truncation).
    let mut stream = raw_tls(&gw).await;
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = common::read_response(&mut stream).await;
    assert_eq!(status, 200);
    stream.shutdown().await.unwrap();
    let waited = common::wait_for_close(&mut stream).await;
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Before any request.
    let mut stream = raw_tls(&gw).await;
    stream.shutdown().await.unwrap();
    common::wait_for_close(&mut stream).await;
    common::eventually("both connections closed", || async {
        gw.handle.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn a_tls_client_asking_for_connection_close_gets_close_notify_after_the_answer() {
    let (_up, gw) = TlsGateway::for_a_test("").await;
    let mut stream = raw_tls(&gw).await;
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    // read_to_end fails on a close without close_notify.
    within(stream.read_to_end(&mut all)).await.unwrap();
    let head = head_of(&all);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}

#[tokio::test]
async fn an_http2_preface_on_an_http1_tls_connection_gets_goaway() {
    let (up, gw) = TlsGateway::for_a_test("").await;
    let mut stream = raw_tls(&gw).await;
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let _ = within(stream.read_to_end(&mut all)).await;
    // An empty SETTINGS frame, then GOAWAY(PROTOCOL_ERROR).
    assert_eq!(&all[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0], "{all:?}");
    assert_eq!(all[12], 7, "GOAWAY: {all:?}");
    assert_eq!(&all[all.len() - 4..], &[0, 0, 0, 1], "{all:?}");
    assert_eq!(up.requests(), 0);
}
