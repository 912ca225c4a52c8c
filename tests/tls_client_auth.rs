//! Client certificates at the edge (`server.tls.client_ca`, `client_auth`): handshakes refused
//! or served by the certificate a client presents, `authorize` rules on the certificate's
//! subject and SANs, a CA file replaced while the gateway runs, and the config errors.
//! Certificates are made by the test with rcgen; clients are tokio-rustls.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{check_config_cases, self_signed_until, within, ConfigCase, EchoUpstream, DEADLINE};
use gatehouse::server::reload::ReloadOutcome;
use gatehouse::tls::client::{self, ClientIdentity};
use gatehouse::GatewayHandle;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::ServerName;
use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A test CA: its PEM certificate and what it needs to issue more.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate with common name `cn` and `sans`, valid until `not_after`.
    fn issue(&self, cn: &str, sans: Vec<SanType>, not_after: (i32, u8, u8)) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The billing service's certificate: CN, a DNS and a URI SAN.
    fn billing(&self) -> Leaf {
        self.issue(
            "billing-service",
            vec![
                SanType::DnsName("billing.internal".try_into().unwrap()),
                SanType::URI("spiffe://example.org/billing".try_into().unwrap()),
            ],
            (2035, 1, 1),
        )
    }
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Leaf {
    /// Writes the pair into `dir` as `{name}.crt` and `{name}.key` and reads it back as the
    /// identity a rustls client presents.
    fn identity(&self, dir: &Path, name: &str) -> ClientIdentity {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        ClientIdentity::read(cert, key).unwrap()
    }
}

const ROUTES: &str = "\
routes:
  - name: open
    match: {path: /open}
    upstream: up
  - name: billing
    match: {path: /billing}
    upstream: up
    authorize:
      - claims: {client_cert.cn: billing-service}
  - name: by-dns
    match: {path: /by-dns}
    upstream: up
    authorize:
      - claims: {client_cert.dns: Billing.Internal}
  - name: by-uri
    match: {path: /by-uri}
    upstream: up
    authorize:
      - claims: {client_cert.uri: spiffe://example.org/billing}
  - name: other-cn
    match: {path: /other-cn}
    upstream: up
    authorize:
      - claims: {client_cert.cn: orders-service}
  - name: other-dns
    match: {path: /other-dns}
    upstream: up
    authorize:
      - claims: {client_cert.dns: orders.internal}
";

/// A gateway with an HTTPS listener checking client certificates against `ca.pem` in `mode`.
struct MtlsGateway {
    handle: GatewayHandle,
    dir: tempfile::TempDir,
    _up: EchoUpstream,
}

impl MtlsGateway {
    async fn start(ca_pem: &str, mode: &str) -> MtlsGateway {
        let up = EchoUpstream::start("up").await;
        let dir = tempfile::tempdir().unwrap();
        let server = self_signed_until(&["a.test"], (2035, 1, 1));
        std::fs::write(dir.path().join("a.crt"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("a.key"), &server.key_pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n  tls:\n    listen: 127.0.0.1:0\n    certificates:\n\
             \x20     - cert: a.crt\n        key: a.key\n    client_ca: ca.pem\n    client_auth: {mode}\n\
             upstreams:\n  up:\n    targets: [{}]\n{ROUTES}",
            up.url()
        );
        let handle = common::start_in(dir.path(), &yaml, &[], true).await;
        MtlsGateway {
            handle,
            dir,
            _up: up,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.tls_addr().expect("an HTTPS listener")
    }

    /// GET `path` over a new TLS connection presenting `identity`: status and body.
    async fn get(&self, identity: Option<&ClientIdentity>, path: &str) -> (u16, String) {
        self.try_get(identity, path).await.expect("served")
    }

    /// [`Self::get`], or why the connection failed.
    async fn try_get(
        &self,
        identity: Option<&ClientIdentity>,
        path: &str,
    ) -> Result<(u16, String), String> {
        let stream = connect(self.addr(), identity)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let request = Request::get(path)
            .header("host", "a.test")
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = within(sender.send_request(request))
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let body = within(response.into_body().collect())
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        drop(sender);
        let _ = task.await;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// The alert the gateway ends the handshake of a client presenting `identity` with.
    async fn refused(&self, identity: Option<&ClientIdentity>) -> AlertDescription {
        refusal(self.addr(), identity).await
    }
}

async fn connect(
    addr: SocketAddr,
    identity: Option<&ClientIdentity>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    // The tests look at the client side of the check; the server's certificate is not the
    // point, so any is accepted.
    let config = client::client_config(client::Trust::Anything, identity, &[b"http/1.1"]).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("a.test").unwrap();
    within(TlsConnector::from(Arc::new(config)).connect(name, tcp)).await
}

/// Under TLS 1.3 the client finishes its side before the server has looked at its certificate,
/// so the refusal can arrive on the first read rather than in the handshake.
async fn refusal(addr: SocketAddr, identity: Option<&ClientIdentity>) -> AlertDescription {
    let error = match connect(addr, identity).await {
        Err(e) => e,
        Ok(mut stream) => {
            let _ = stream
                .write_all(b"GET /open HTTP/1.1\r\nhost: a.test\r\n\r\n")
                .await;
            let mut buf = vec![0u8; 4096];
            match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
                Ok(Err(e)) => e,
                other => panic!("the gateway served a refused client: {other:?}"),
            }
        }
    };
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        _ => panic!("not a TLS alert: {error:?}"),
    }
}

#[tokio::test]
async fn required_refuses_clients_without_a_good_certificate_and_serves_those_with_one() {
    let ca = Ca::new("clients");
    let gw = MtlsGateway::start(&ca.pem, "required").await;
    let dir = gw.dir.path();
    let good = ca.billing().identity(dir, "good");
    let foreign = Ca::new("someone else").billing().identity(dir, "foreign");
    let expired = ca
        .issue("billing-service", vec![], (2021, 1, 1))
        .identity(dir, "expired");

    assert_eq!(
        gw.refused(None).await,
        AlertDescription::CertificateRequired
    );
    assert_eq!(
        gw.refused(Some(&foreign)).await,
        AlertDescription::UnknownCA
    );
    assert_eq!(
        gw.refused(Some(&expired)).await,
        AlertDescription::CertificateExpired
    );
    let (status, body) = gw.get(Some(&good), "/open").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.get(Some(&good), "/billing").await.0, 200);
}

#[tokio::test]
async fn optional_serves_clients_without_a_certificate_but_not_routes_that_need_one() {
    let ca = Ca::new("clients");
    let gw = MtlsGateway::start(&ca.pem, "optional").await;
    let dir = gw.dir.path();
    let good = ca.billing().identity(dir, "good");
    let foreign = Ca::new("someone else").billing().identity(dir, "foreign");

    assert_eq!(gw.get(None, "/open").await.0, 200);
    let (status, body) = gw.get(None, "/billing").await;
    assert_eq!(status, 401, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "client_certificate_required");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("client certificate is required"),
        "{body}"
    );
    // A certificate that is presented must be good, even where none is needed.
    assert_eq!(
        gw.refused(Some(&foreign)).await,
        AlertDescription::UnknownCA
    );
    assert_eq!(gw.get(Some(&good), "/open").await.0, 200);
    // The plain listener never has a client certificate.
    let plain = common::get(&format!("http://{}/billing", gw.handle.local_addr())).await;
    assert_eq!(plain.status, 401);
}

#[tokio::test]
async fn authorize_rules_match_the_common_name_and_the_sans() {
    let ca = Ca::new("clients");
    let gw = MtlsGateway::start(&ca.pem, "optional").await;
    let good = ca.billing().identity(gw.dir.path(), "good");
    for (path, want) in [
        ("/billing", 200),
        ("/by-dns", 200),
        ("/by-uri", 200),
        ("/other-cn", 403),
        ("/other-dns", 403),
    ] {
        let (status, body) = gw.get(Some(&good), path).await;
        assert_eq!(status, want, "{path}: {body}");
        if want == 403 {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["error"], "claim_mismatch", "{path}");
        }
    }
    // A certificate whose CN is a DNS SAN of the billing certificate is someone else.
    let impostor = ca
        .issue("billing.internal", vec![], (2035, 1, 1))
        .identity(gw.dir.path(), "impostor");
    assert_eq!(gw.get(Some(&impostor), "/by-dns").await.0, 403);
    assert_eq!(gw.get(Some(&impostor), "/billing").await.0, 403);
}

#[tokio::test]
async fn http2_connections_carry_the_client_certificate_too() {
    let ca = Ca::new("clients");
    let gw = MtlsGateway::start(&ca.pem, "optional").await;
    let good = ca.billing().identity(gw.dir.path(), "good");
    for (identity, want) in [(Some(&good), 200), (None, 401)] {
        let config = client::client_config(client::Trust::Anything, identity, &[b"h2"]).unwrap();
        let tcp = TcpStream::connect(gw.addr()).await.unwrap();
        let name = ServerName::try_from("a.test").unwrap();
        let stream = within(TlsConnector::from(Arc::new(config)).connect(name, tcp))
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        let task = tokio::spawn(conn);
        // Two streams on the one connection: the identity is the connection's, read once.
        for _ in 0..2 {
            let request = Request::get("https://a.test/billing")
                .body(Full::<Bytes>::default())
                .unwrap();
            let response = within(sender.send_request(request)).await.unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2);
            assert_eq!(response.status().as_u16(), want);
        }
        drop(sender);
        let _ = within(task).await;
    }
}

#[tokio::test]
async fn a_replaced_ca_file_applies_to_new_handshakes_and_a_broken_one_keeps_the_old() {
    let (old, new) = (Ca::new("old clients"), Ca::new("new clients"));
    let gw = MtlsGateway::start(&old.pem, "required").await;
    let dir = gw.dir.path();
    let from_old = old.billing().identity(dir, "from-old");
    let from_new = new.billing().identity(dir, "from-new");
    assert_eq!(gw.get(Some(&from_old), "/billing").await.0, 200);
    assert_eq!(
        gw.refused(Some(&from_new)).await,
        AlertDescription::UnknownCA
    );

    // A CA file that holds no certificate: refused, and the old CA keeps being trusted.
    std::fs::write(dir.join("ca.pem"), "not a certificate\n").unwrap();
    match gw.handle.reload().await {
        ReloadOutcome::Rejected(errors) => {
            let text = errors.to_string();
            assert!(
                text.contains("ca.pem") && text.contains("holds no PEM certificate"),
                "{text}"
            );
        }
        other => panic!("a broken CA file was accepted: {other:?}"),
    }
    assert_eq!(gw.get(Some(&from_old), "/billing").await.0, 200);

    // The new CA replaces the file: the watcher reloads it for the next handshakes.
    let tmp = dir.join("ca.pem.tmp");
    std::fs::write(&tmp, &new.pem).unwrap();
    std::fs::rename(&tmp, dir.join("ca.pem")).unwrap();
    common::eventually("the new CA is trusted", || async {
        gw.try_get(Some(&from_new), "/billing").await.map(|r| r.0) == Ok(200)
    })
    .await;
    assert_eq!(
        gw.refused(Some(&from_old)).await,
        AlertDescription::UnknownCA
    );
}

#[test]
fn client_auth_config_errors_name_the_place() {
    let ca = Ca::new("clients");
    let server = self_signed_until(&["a.test"], (2035, 1, 1));
    let tls = |extra: &str| {
        format!(
            "server:\n  listen: 127.0.0.1:0\n  tls:\n    listen: 127.0.0.1:0\n    certificates:\n\
             \x20     - cert: a.crt\n        key: a.key\n{extra}\
             upstreams:\n  up:\n    targets: [http://127.0.0.1:1]\n\
             routes:\n  - name: r\n    match: {{path: /}}\n    upstream: up\n"
        )
    };
    let files = |gateway: String, ca_pem: &str| {
        vec![
            ("gateway.yaml", gateway),
            ("a.crt", server.cert_pem.clone()),
            ("a.key", server.key_pem.clone()),
            ("ca.pem", ca_pem.to_string()),
        ]
    };
    let case = |name, extra: &str, ca_pem: &str, at: (usize, usize), says| ConfigCase {
        name,
        files: files(tls(extra), ca_pem),
        at: ("gateway.yaml", at.0, at.1),
        says,
    };
    let route = |rule: &str| {
        let gateway = tls("    client_ca: ca.pem\n    client_auth: optional\n")
            + &format!("    authorize:\n      - {rule}\n");
        files(gateway, &ca.pem)
    };
    let no_ca_route = tls("") + "    authorize:\n      - claims: {client_cert.cn: x}\n";
    check_config_cases(vec![
        case(
            "client_ca without client_auth",
            "    client_ca: ca.pem\n",
            &ca.pem,
            (8, 16),
            "`client_ca` needs `client_auth: optional` or `client_auth: required`",
        ),
        case(
            "client_auth without client_ca",
            "    client_auth: required\n",
            &ca.pem,
            (8, 18),
            "`client_auth` needs `client_ca`",
        ),
        case(
            "bad mode",
            "    client_ca: ca.pem\n    client_auth: sometimes\n",
            &ca.pem,
            (9, 18),
            "sometimes",
        ),
        case(
            "missing CA file",
            "    client_ca: nowhere.pem\n    client_auth: required\n",
            &ca.pem,
            (8, 16),
            "cannot read ca_file `nowhere.pem`",
        ),
        case(
            "empty CA file",
            "    client_ca: ca.pem\n    client_auth: required\n",
            "",
            (8, 16),
            "ca_file `ca.pem` holds no PEM certificate",
        ),
        ConfigCase {
            name: "unknown certificate claim",
            files: route("claims: {client_cert.common_name: x}"),
            at: ("gateway.yaml", 18, 18),
            says: "unknown client certificate claim `client_cert.common_name` (expected one of client_cert.subject",
        },
        ConfigCase {
            name: "roles without auth",
            files: route("{roles: [admin], claims: {client_cert.cn: x}}"),
            at: ("gateway.yaml", 18, 17),
            says: "`roles` come from a token: they need `auth`",
        },
        ConfigCase {
            name: "token claim without auth",
            files: route("claims: {tenant: acme, client_cert.cn: x}"),
            at: ("gateway.yaml", 18, 18),
            says: "claim `tenant` comes from a token",
        },
        ConfigCase {
            name: "unknown certificate claim without client_ca",
            files: files(
                tls("") + "    authorize:\n      - claims: {client_cert.serial: x}\n",
                &ca.pem,
            ),
            at: ("gateway.yaml", 16, 18),
            says: "unknown client certificate claim `client_cert.serial`",
        },
        ConfigCase {
            name: "bare client_cert claim",
            files: route("claims: {client_cert: x}"),
            at: ("gateway.yaml", 18, 18),
            says: "`client_cert` needs a field: one of client_cert.subject",
        },
        ConfigCase {
            name: "certificate claim without client_ca",
            files: files(no_ca_route, &ca.pem),
            at: ("gateway.yaml", 16, 18),
            says: "claim `client_cert.cn` needs `server.tls.client_ca`",
        },
    ]);
}

#[test]
fn explain_shows_that_a_certificate_rule_refuses_a_request_without_one() {
    let ca = Ca::new("clients");
    let server = self_signed_until(&["a.test"], (2035, 1, 1));
    let gateway = format!(
        "server:\n  listen: 127.0.0.1:0\n  tls:\n    listen: 127.0.0.1:0\n    certificates:\n\
         \x20     - cert: a.crt\n        key: a.key\n    client_ca: ca.pem\n    client_auth: optional\n\
         upstreams:\n  up:\n    targets: [http://127.0.0.1:1]\n{ROUTES}"
    );
    let snapshot = common::load_files(
        &[
            ("gateway.yaml", &gateway),
            ("a.crt", &server.cert_pem),
            ("a.key", &server.key_pem),
            ("ca.pem", &ca.pem),
        ],
        &[],
    )
    .expect("loads");
    let out = gatehouse::explain::explain(&snapshot, "GET", "http://a.test/billing", &[]).unwrap();
    assert!(
        out.contains("authorize:  denied by rule 1: client_certificate_required"),
        "{out}"
    );
    assert!(
        out.contains("result:     401 client_certificate_required"),
        "{out}"
    );
    let out = gatehouse::explain::explain(&snapshot, "GET", "http://a.test/open", &[]).unwrap();
    assert!(!out.contains("authorize:"), "{out}");
}
