//! The fetcher against real local servers: plain HTTP, and HTTPS with a CA made by the `openssl`
//! command at test time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderValue, Response};
use http_body_util::{combinators::BoxBody, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use super::*;
use crate::test_support::{openssl, RefusingPort};

type Body = BoxBody<Bytes, Infallible>;

#[test]
fn urls_are_checked() {
    let ok = JwksUrl::parse("https://idp.example/.well-known/jwks.json?v=2").unwrap();
    assert!(ok.is_https());
    assert_eq!(
        (ok.host.as_str(), ok.port, ok.authority.as_str()),
        ("idp.example", 443, "idp.example")
    );
    assert_eq!(ok.path_and_query, "/.well-known/jwks.json?v=2");
    let plain = JwksUrl::parse("http://127.0.0.1:8081").unwrap();
    assert!(!plain.is_https());
    assert_eq!((plain.port, plain.path_and_query.as_str()), (8081, "/"));
    let v6 = JwksUrl::parse("HTTP://[::1]:9/jwks").unwrap();
    assert_eq!(
        (v6.host.as_str(), v6.authority.as_str()),
        ("::1", "[::1]:9")
    );

    for (text, says) in [
        ("ftp://idp.example/jwks", "scheme `ftp` is not supported"),
        ("/jwks.json", "not an absolute URL"),
        ("idp.example/jwks", "not a valid URL"),
        ("https://user:pw@idp.example/jwks", "credentials"),
        ("https://idp.example/jwks#keys", "#fragment"),
        ("https://idp.example:0/jwks", "port 0"),
        ("https://idp.example:/jwks", "empty port"),
        ("https://idp exa mple/jwks", "not a valid URL"),
    ] {
        let err = JwksUrl::parse(text).unwrap_err();
        assert!(err.contains(says), "{text}: {err}");
    }
}

#[test]
fn max_age_is_read_from_cache_control() {
    let table: &[(&[&str], Option<u64>)] = &[
        (&[], None),
        (&["public, max-age=3600"], Some(3600)),
        (&["MAX-AGE=\"60\", must-revalidate"], Some(60)),
        (&["max-age=soon"], None),
        (&["max-age=-5"], None),
        (&["public", "max-age=90"], Some(90)),
        (&["no-cache"], Some(0)),
        (&["max-age=600, no-store"], Some(0)),
        (&["s-maxage=600"], None),
    ];
    for (values, want) in table {
        let mut headers = HeaderMap::new();
        for value in *values {
            headers.append(header::CACHE_CONTROL, HeaderValue::from_static(value));
        }
        assert_eq!(
            max_age(&headers),
            want.map(Duration::from_secs),
            "{values:?}"
        );
    }
}

/// What the test server saw of each request: target and Host.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A server on 127.0.0.1:0 answering by path; with `tls`, over that TLS config.
async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = Arc::clone(&log);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, Arc::clone(&log)));
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn answer(req: http::Request<Incoming>, seen: Seen) -> Result<Response<Body>, Infallible> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    seen.lock().unwrap().push((req.uri().to_string(), host));
    let full = |status: u16, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    };
    let response = match req.uri().path() {
        "/jwks" => {
            let mut response = full(200, r#"{"keys": []}"#);
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=120"),
            );
            response
        }
        "/moved" => {
            let mut response = full(302, "");
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/jwks"));
            response
        }
        "/error" => full(503, "down"),
        "/big" => {
            // Declares 2 MiB; the client must refuse on the header, before reading any of it.
            use futures_util::StreamExt;
            let start = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"{")))])
                .chain(futures_util::stream::pending());
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(start)));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(2u64 << 20));
            response
        }
        "/big-chunked" => {
            // 2 MiB in 64 KiB chunks with no declared length: the cap applies while reading.
            let chunks = (0..32).map(|_| Ok(Frame::data(Bytes::from(vec![b' '; 64 << 10]))));
            Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                chunks,
            ))))
        }
        "/exactly-1mib" => {
            Response::new(Full::new(Bytes::from(vec![b' '; MAX_BODY_BYTES])).boxed())
        }
        "/hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        _ => full(404, "no"),
    };
    Ok(response)
}

fn url(text: String) -> JwksUrl {
    JwksUrl::parse(&text).unwrap()
}

#[tokio::test]
async fn http_answers_statuses_caps_and_timeouts() {
    let (addr, seen) = serve(None).await;
    let fetcher = Fetcher::default();
    let get = |path: &str| {
        let fetcher = fetcher.clone();
        let url = url(format!("http://{addr}{path}"));
        async move { fetcher.get(&url, FETCH_TIMEOUT).await }
    };

    let ok = get("/jwks?tenant=a").await.unwrap();
    assert_eq!(&ok.body[..], br#"{"keys": []}"#);
    assert_eq!(ok.max_age, Some(Duration::from_secs(120)));
    assert_eq!(
        seen.lock().unwrap()[0],
        ("/jwks?tenant=a".to_string(), addr.to_string()),
        "origin-form target and the authority as Host"
    );

    let moved = get("/moved").await;
    assert!(
        matches!(moved, Err(FetchError::Status(StatusCode::FOUND))),
        "{moved:?}"
    );
    let error = get("/error").await;
    assert!(
        matches!(
            error,
            Err(FetchError::Status(StatusCode::SERVICE_UNAVAILABLE))
        ),
        "{error:?}"
    );
    let big = get("/big").await;
    assert!(matches!(big, Err(FetchError::TooLarge)), "{big:?}");
    let big_chunked = get("/big-chunked").await;
    assert!(
        matches!(big_chunked, Err(FetchError::TooLarge)),
        "{big_chunked:?}"
    );
    let exact = get("/exactly-1mib").await;
    assert_eq!(
        exact
            .as_ref()
            .map(|f| f.body.len())
            .map_err(|e| e.to_string()),
        Ok(MAX_BODY_BYTES)
    );

    let hang = url(format!("http://{addr}/hang"));
    let started = std::time::Instant::now();
    let result = fetcher.get(&hang, Duration::from_millis(300)).await;
    assert!(matches!(result, Err(FetchError::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let closed = RefusingPort::new();
    let refused = fetcher
        .get(
            &url(format!("http://127.0.0.1:{}/jwks", closed.port)),
            FETCH_TIMEOUT,
        )
        .await;
    assert!(
        matches!(refused, Err(FetchError::Connect(_))),
        "{refused:?}"
    );
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
fn test_pki(dir: &Path) -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=gatehouse-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
    let ca = CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap();
    let leaf = CertificateDer::from_pem_file(dir.join("leaf.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf, ca.clone()], key)
    .unwrap();
    (ca, Arc::new(server))
}

#[tokio::test]
async fn https_verifies_the_server_against_the_trusted_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, server) = test_pki(dir.path());
    let (addr, seen) = serve(Some(server)).await;
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let trusting = Fetcher::with_roots(roots);
    let port = addr.port();

    for text in [
        format!("https://localhost:{port}/jwks"),
        format!("https://127.0.0.1:{port}/jwks"),
    ] {
        let fetched = trusting.get(&url(text.clone()), FETCH_TIMEOUT).await;
        let fetched = fetched.unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&fetched.body[..], br#"{"keys": []}"#);
    }
    assert_eq!(seen.lock().unwrap().len(), 2);

    // The built-in (public) roots do not trust the test CA: the handshake fails and no request
    // is sent.
    let public = Fetcher::default()
        .get(
            &url(format!("https://localhost:{port}/jwks")),
            FETCH_TIMEOUT,
        )
        .await;
    assert!(matches!(public, Err(FetchError::Tls(_))), "{public:?}");
    assert_eq!(seen.lock().unwrap().len(), 2);

    // Plain HTTP to a TLS port is an HTTP error, not a hang.
    let plain = trusting
        .get(&url(format!("http://127.0.0.1:{port}/jwks")), FETCH_TIMEOUT)
        .await;
    assert!(plain.is_err());
}
