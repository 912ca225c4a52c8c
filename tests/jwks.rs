//! `jwks_url` through the real gateway: a local JWKS server the tests change and take down,
//! EC keys made by the `openssl` command, tokens signed with them, and an echo upstream.
//!
//! Every wait is a poll with a deadline; request counts at the JWKS server are the measure of
//! how often the gateway fetched.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use gatehouse::auth::jwks::UNKNOWN_KID_MIN_GAP;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::net::TcpListener;

/// What the JWKS server answers.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    cache_control: Option<&'static str>,
}

/// A JWKS endpoint on 127.0.0.1:0 at `/jwks`; its answer can be changed and it can be stopped
/// (closing the listener, so connections are refused).
struct JwksServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(answer: Answer) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let (shared, count) = (Arc::clone(&answer), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (shared, count) = (Arc::clone(&shared), Arc::clone(&count));
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let answer = shared.lock().unwrap().clone();
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(answer.body)));
                            *response.status_mut() = StatusCode::from_u16(answer.status).unwrap();
                            if let Some(cc) = answer.cache_control {
                                response
                                    .headers_mut()
                                    .insert("cache-control", cc.parse().unwrap());
                            }
                            if req.uri().path() != "/jwks" {
                                *response.status_mut() = StatusCode::NOT_FOUND;
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            answer,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Closes the listener: from now on connections are refused.
    async fn stop(&self) {
        self.task.abort();
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok(body: String) -> Answer {
    Answer {
        status: 200,
        body,
        cache_control: None,
    }
}

/// An EC P-256 key pair made by openssl: the PKCS#8 private PEM and its public JWK.
struct Key {
    kid: String,
    private: Vec<u8>,
    jwk: serde_json::Value,
}

impl Key {
    fn generate(dir: &Path, kid: &str) -> Key {
        let file = format!("{kid}.key");
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &file,
            ],
        );
        // `pub:` is the uncompressed point 04 || x || y, as colon-separated hex lines.
        let text = openssl(dir, &["pkey", "-in", &file, "-text_pub", "-noout"]);
        let hex: String = text
            .lines()
            .skip_while(|l| l.trim() != "pub:")
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .flat_map(|l| l.trim().split(':'))
            .collect();
        let point: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
        Key {
            kid: kid.to_string(),
            private: std::fs::read(dir.join(&file)).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
            }),
        }
    }

    /// A token signed with this key, naming `kid` (its own unless another is given).
    fn token_as(&self, kid: &str, sub: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_string());
        let claims = json!({"sub": sub, "iss": "https://idp.test", "exp": now + 600, "iat": now});
        encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(&self.private).unwrap(),
        )
        .unwrap()
    }

    fn token(&self, sub: &str) -> String {
        self.token_as(&self.kid, sub)
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// gateway.yaml with provider `idp` on `jwks_url` (plus `extra` provider lines) and route `/r`.
fn config(jwks_url: &str, extra: &str, upstream: &EchoUpstream) -> String {
    let mut provider = String::new();
    for line in extra.lines() {
        provider.push_str(&format!("      {line}\n"));
    }
    format!(
        "{}jwt:\n  providers:\n    idp:\n      algorithms: [ES256]\n      jwks_url: {jwks_url}\n      issuer: https://idp.test\n{provider}upstreams:\n  u:\n    targets: [{}]\nroutes:\n  - name: r\n    match: {{path: /r}}\n    upstream: u\n    auth: {{jwt: idp}}\n",
        server_yaml(""),
        upstream.url()
    )
}

async fn call(gw: &TestGateway, token: &str) -> Got {
    send(
        &client(),
        Request::get(gw.url("/r/x"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

const SUCCESSES: &str = "gatehouse_jwks_refreshes_total{provider=\"idp\",result=\"success\"}";
const FAILURES: &str = "gatehouse_jwks_refreshes_total{provider=\"idp\",result=\"failure\"}";
const KEYS: &str = "gatehouse_jwks_keys{provider=\"idp\"}";
const CACHE_HITS: &str = "gatehouse_jwt_cache_hits_total{provider=\"idp\"}";
const CACHE_MISSES: &str = "gatehouse_jwt_cache_misses_total{provider=\"idp\"}";

/// Runs the gatehouse binary off the runtime's thread, so servers in this test keep answering.
async fn gatehouse(args: Vec<String>) -> (std::process::Output, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = Command::new(gatehouse_bin()).args(&args).output().unwrap();
        (out, started.elapsed())
    })
    .await
    .unwrap()
}

/// A gateway whose provider fetches from a JWKS server that publishes one key, `a`.
struct OneKey {
    dir: tempfile::TempDir,
    a: Key,
    idp: JwksServer,
    upstream: EchoUpstream,
    gw: TestGateway,
}

impl OneKey {
    /// `provider_extra`: more settings for the provider (one line, e.g. `jwks_refresh: 1s`).
    async fn start(provider_extra: &str) -> OneKey {
        let dir = tempfile::tempdir().unwrap();
        let a = Key::generate(dir.path(), "a");
        let idp = JwksServer::start(ok(jwks(&[&a]))).await;
        let upstream = EchoUpstream::start("u").await;
        let gw = TestGateway::start(&config(&idp.url(), provider_extra, &upstream)).await;
        OneKey {
            dir,
            a,
            idp,
            upstream,
            gw,
        }
    }
}

#[tokio::test]
async fn tokens_verify_with_keys_fetched_from_jwks_url() {
    let OneKey { a, idp, gw, .. } = &OneKey::start("").await;

    // The first fetch happens before the gateway serves, so the very first token works.
    assert_eq!(idp.requests(), 1);
    let got = call(gw, &a.token("alice")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.echo().server, "u");
    assert_eq!(metric(gw, SUCCESSES).await, 1.0);
    assert_eq!(metric(gw, FAILURES).await, 0.0);
    assert_eq!(metric(gw, KEYS).await, 1.0);

    // A token signed with the right key but naming a kid the set lacks is refused.
    let got = call(gw, &a.token_as("not-a", "alice")).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "unknown_kid");

    // `explain` fetches once by itself to show the decision.
    let config = gw.path("gateway.yaml").display().to_string();
    let auth = format!("Authorization: Bearer {}", a.token("alice"));
    let args = ["explain", "GET", "/r/x", "-H", &auth, "-c", &config];
    let (out, _) = gatehouse(args.iter().map(|s| s.to_string()).collect()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("valid token for sub alice"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_when_its_kid_first_appears() {
    let OneKey {
        dir, a, idp, gw, ..
    } = &OneKey::start("").await;
    let b = Key::generate(dir.path(), "b");
    // The same token twice: verified once, then found in the provider's cache.
    let token_a = a.token("alice");
    assert_eq!(call(gw, &token_a).await.status, 200);
    assert_eq!(call(gw, &token_a).await.status, 200);
    assert_eq!(metric(gw, CACHE_MISSES).await, 1.0);
    assert_eq!(metric(gw, CACHE_HITS).await, 1.0);
    assert_eq!(idp.requests(), 1);

    // The IdP rotates to b. The first token naming b triggers a fetch (the scheduled one is
    // ten minutes away); it may itself be refused, but b is accepted well within the deadline.
    idp.set(ok(jwks(&[&b])));
    let token_b = b.token("bob");
    eventually("a token signed with the rotated key is accepted", || {
        let (gw, token) = (&gw, &token_b);
        async move { call(gw, token).await.status == 200 }
    })
    .await;
    assert_eq!(idp.requests(), 2, "one fetch for the new kid");
    assert_eq!(metric(gw, SUCCESSES).await, 2.0);

    // a is no longer in the set: the token cached while it was is refused too.
    let got = call(gw, &token_a).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "unknown_kid");
    let got = call(gw, &a.token("alice")).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "unknown_kid");
}

#[tokio::test]
async fn a_failing_idp_keeps_the_last_good_keys() {
    let OneKey { a, idp, gw, .. } = &OneKey::start("jwks_refresh: 1s").await;
    let token = a.token("alice");
    assert_eq!(call(gw, &token).await.status, 200);

    let failing = [
        (
            "an error status",
            Answer {
                status: 503,
                body: "down".into(),
                cache_control: None,
            },
        ),
        ("not JSON", ok("<html>".into())),
        (
            "no usable key",
            ok(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#.into()),
        ),
        ("no keys", ok(r#"{"keys": []}"#.into())),
    ];
    for (what, answer) in failing {
        idp.set(answer);
        let before = metric(gw, FAILURES).await;
        eventually(&format!("a refresh failing on {what}"), || {
            let gw = &gw;
            async move { metric(gw, FAILURES).await > before }
        })
        .await;
        let got = call(gw, &token).await;
        assert_eq!(got.status, 200, "after {what}: {}", got.text());
        assert_eq!(metric(gw, KEYS).await, 1.0, "after {what}");
    }

    // The IdP goes away entirely: connections are refused, the gateway keeps verifying.
    idp.stop().await;
    let before = metric(gw, FAILURES).await;
    eventually("a refresh failing on a refused connection", || {
        let gw = &gw;
        async move { metric(gw, FAILURES).await > before }
    })
    .await;
    let got = call(gw, &token).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(metric(gw, KEYS).await, 1.0);
    assert_eq!(metric(gw, SUCCESSES).await, 1.0);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_gap() {
    let OneKey { a, idp, gw, .. } = &OneKey::start("").await;
    assert_eq!(idp.requests(), 1);

    let started = Instant::now();
    let client = client();
    for batch in 0..10 {
        let calls = (0..20).map(|i| {
            let token = a.token_as(&format!("random-{batch}-{i}-{}", fastrand::u64(..)), "x");
            let request = Request::get(gw.url("/r/x"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            send(&client, request)
        });
        for got in futures_util::future::join_all(calls).await {
            assert_eq!(got.status, 401);
            assert_eq!(got.json()["error"], "unknown_kid");
        }
    }
    // The first unknown kid fetches at once; the other 199 fall within the gap.
    eventually("the unknown-kid fetch", || async { idp.requests() >= 2 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gaps = (started.elapsed().as_secs_f64() / UNKNOWN_KID_MIN_GAP.as_secs_f64()) as usize;
    let allowed = 2 + gaps;
    assert!(
        idp.requests() <= allowed,
        "{} fetches for 200 unknown kids in {:?}; at most {allowed} allowed",
        idp.requests(),
        started.elapsed()
    );
    assert_eq!(call(gw, &a.token("alice")).await.status, 200);
}

#[tokio::test]
async fn a_reload_keeps_fetched_keys_without_refetching() {
    let OneKey {
        a,
        idp,
        upstream,
        gw,
        ..
    } = &OneKey::start("").await;
    let base = config(&idp.url(), "", upstream);
    let token = a.token("alice");
    assert_eq!(idp.requests(), 1);

    let reload_to = |yaml: String, route: &'static str| {
        let gw = &gw;
        async move {
            std::fs::write(gw.path("gateway.yaml"), yaml).unwrap();
            gw.handle.reload().await;
            assert!(
                gw.handle
                    .snapshot()
                    .router
                    .routes()
                    .iter()
                    .any(|r| &*r.name == route),
                "the edit with route {route} is live"
            );
        }
    };
    let with_route = |yaml: &str, name: &str| {
        format!("{yaml}  - name: {name}\n    match: {{path: /{name}}}\n    upstream: u\n")
    };

    // Same provider settings: the same key set, no new fetch, no second refresher.
    reload_to(with_route(&base, "extra1"), "extra1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        idp.requests(),
        1,
        "a reload with the same provider refetched"
    );
    assert_eq!(call(gw, &token).await.status, 200);

    // With the IdP gone, a further reload still verifies: the keys came through the reload,
    // not from a new fetch (which would fail).
    idp.stop().await;
    reload_to(with_route(&base, "extra2"), "extra2").await;
    let got = call(gw, &token).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(metric(gw, FAILURES).await, 0.0, "nothing was fetched");

    // Changed key settings make a new key set, fetched before it goes live; here that fetch
    // fails, so the changed provider starts empty and refuses the token.
    let changed = config(&idp.url(), "jwks_refresh: 1h", upstream);
    reload_to(with_route(&changed, "extra3"), "extra3").await;
    assert!(metric(gw, FAILURES).await >= 1.0);
    let got = call(gw, &token).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "unknown_kid");
}

#[tokio::test]
async fn a_failed_first_fetch_does_not_stop_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let a = Key::generate(dir.path(), "a");
    let idp = JwksServer::start(Answer {
        status: 500,
        body: String::new(),
        cache_control: None,
    })
    .await;
    let upstream = EchoUpstream::start("u").await;
    // Retries after failures back off from 5s up to the refresh interval: 2s keeps this short.
    let gw = TestGateway::start(&config(&idp.url(), "jwks_refresh: 2s", &upstream)).await;
    let token = a.token("alice");
    let got = call(&gw, &token).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "unknown_kid");
    assert!(metric(&gw, FAILURES).await >= 1.0);
    assert_eq!(metric(&gw, KEYS).await, 0.0);

    // Once the IdP answers, keys arrive by the next retry (the token above already used up the
    // unknown-kid fetch allowed per gap) and the same token is accepted.
    idp.set(Answer {
        status: 200,
        body: jwks(&[&a]),
        cache_control: Some("public, max-age=86400"),
    });
    eventually("keys arrive once the IdP answers", || {
        let (gw, token) = (&gw, &token);
        async move { call(gw, token).await.status == 200 }
    })
    .await;
    assert_eq!(metric(&gw, KEYS).await, 1.0);
}

#[tokio::test]
async fn check_never_contacts_the_idp_and_explain_waits_at_most_the_fetch_timeout() {
    // An IdP that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            open.push(stream);
        }
    });
    let upstream = EchoUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let a = Key::generate(dir.path(), "a");
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(
        &config_path,
        config(&format!("http://{silent_addr}/jwks"), "", &upstream),
    )
    .unwrap();
    let config_path = config_path.display().to_string();

    let (out, _) = gatehouse(vec!["check".into(), "-c".into(), config_path.clone()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0, "check fetched");

    let auth = format!("Authorization: Bearer {}", a.token("alice"));
    let args = ["explain", "GET", "/r/x", "-H", &auth, "-c", &config_path];
    let (out, took) = gatehouse(args.iter().map(|s| s.to_string()).collect()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        took < Duration::from_secs(60),
        "explain hung for {took:?} (fetch timeout 5s)"
    );
    assert!(
        took >= Duration::from_secs(4),
        "explain gave up before the timeout: {took:?}"
    );
    assert!(stderr.contains("cannot fetch"), "{stderr}");
    assert!(stdout.contains("token rejected: unknown_kid"), "{stdout}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    held.abort();
}
