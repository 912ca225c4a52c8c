//! JWT auth, RBAC, identity headers and CORS through the real gateway and a real upstream.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs_token(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, roles: &[&str]) -> serde_json::Value {
    serde_json::json!({"sub": sub, "roles": roles, "iss": "https://auth.test", "aud": "api", "exp": now() + 600, "iat": now()})
}

fn config(upstream: &EchoUpstream) -> String {
    let lines = [
        "jwt:",
        "  providers:",
        "    default:",
        "      algorithms: [HS256]",
        "      secret: ${JWT_SECRET}",
        "      issuer: https://auth.test",
        "      audience: [api]",
        "      forward_claims:",
        "        sub: X-User-Id",
        "        roles: X-User-Roles",
        "upstreams:",
        "  u:",
        "    targets: [UPSTREAM]",
        "routes:",
        "  - name: orders",
        "    match: {path: /orders}",
        "    upstream: u",
        "    auth: {jwt: default}",
        "    authorize:",
        "      - methods: [GET]",
        "        roles: [reader, admin]",
        "      - methods: [POST]",
        "        roles: [admin]",
        "        scopes: [orders:write]",
        "        claims: {tenant: acme}",
        "    cors:",
        "      origins: [https://app.test]",
        "      methods: [GET, POST]",
        "      headers: [Authorization, Content-Type]",
        "      credentials: true",
        "      max_age: 10m",
        "  - name: public",
        "    match: {path: /public}",
        "    upstream: u",
        "  - name: maybe",
        "    match: {path: /maybe}",
        "    upstream: u",
        "    auth: {jwt: default, optional: true}",
        "  - name: notoken",
        "    match: {path: /notoken}",
        "    upstream: u",
        "    auth: {jwt: default, forward_token: false}",
    ];
    server_yaml("") + &lines.join("\n").replace("UPSTREAM", &upstream.url()) + "\n"
}

async fn start(upstream: &EchoUpstream) -> TestGateway {
    TestGateway::start_with(&config(upstream), &[], &[("JWT_SECRET", SECRET)]).await
}

async fn call(gw: &TestGateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = Request::builder().method(method).uri(gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(Full::new(Bytes::new())).unwrap()).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn tokens_are_required_verified_and_never_echoed() {
    let upstream = EchoUpstream::start("u").await;
    let gw = start(&upstream).await;

    let got = call(&gw, "GET", "/orders/1", &[]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.header("www-authenticate"), Some("Bearer"));
    assert_eq!(got.json()["error"], "missing");

    let mut bad = hs_token(claims("alice", &["reader"]));
    bad.push('x');
    let got = call(&gw, "GET", "/orders/1", &[("authorization", &bearer(&bad))]).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        got.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(got.json()["error"], "bad_signature");
    assert!(
        !got.text().contains(&bad[..20]),
        "token echoed: {}",
        got.text()
    );

    let mut expired = claims("alice", &["reader"]);
    expired["exp"] = (now() - 3600).into();
    let got = call(
        &gw,
        "GET",
        "/orders/1",
        &[("authorization", &bearer(&hs_token(expired)))],
    )
    .await;
    assert_eq!(got.json()["error"], "expired");

    let mut wrong_aud = claims("alice", &["reader"]);
    wrong_aud["aud"] = "other".into();
    let got = call(
        &gw,
        "GET",
        "/orders/1",
        &[("authorization", &bearer(&hs_token(wrong_aud)))],
    )
    .await;
    assert_eq!(got.json()["error"], "bad_audience");

    let token = hs_token(claims("alice", &["reader"]));
    let got = send(
        &client(),
        Request::get(gw.url("/orders/1"))
            .header("authorization", bearer(&token))
            .header("authorization", bearer(&token))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 401, "two Authorization headers");
    assert_eq!(got.json()["error"], "malformed");

    let got = call(
        &gw,
        "GET",
        "/orders/1",
        &[("authorization", &format!("bearer {token}"))],
    )
    .await;
    assert_eq!(got.status, 200, "scheme is case-insensitive");
    assert_eq!(
        upstream.requests(),
        1,
        "only the valid request reached the upstream"
    );

    let metrics = get(&gw.url("/metrics")).await.text();
    for reason in [
        "missing",
        "bad_signature",
        "expired",
        "bad_audience",
        "malformed",
    ] {
        let line =
            format!("gatehouse_auth_failures_total{{route=\"orders\",reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn rbac_decides_per_method_and_names_the_missing_requirement() {
    let upstream = EchoUpstream::start("u").await;
    let gw = start(&upstream).await;
    let reader = hs_token(claims("alice", &["reader"]));
    let admin_no_scope = hs_token(claims("root", &["admin"]));
    let mut full = claims("root", &["admin"]);
    full["scope"] = "orders:read orders:write".into();
    full["tenant"] = "acme".into();
    let admin = hs_token(full.clone());
    full["tenant"] = "umbrella".into();
    let other_tenant = hs_token(full);

    let cases = [
        ("GET", &reader, 200, None),
        ("HEAD", &reader, 200, None),
        ("POST", &reader, 403, Some("missing_role")),
        ("POST", &admin_no_scope, 403, Some("missing_scope")),
        ("POST", &other_tenant, 403, Some("claim_mismatch")),
        ("POST", &admin, 200, None),
        ("DELETE", &admin, 403, Some("no_matching_rule")),
    ];
    for (method, token, status, code) in cases {
        let got = call(
            &gw,
            method,
            "/orders/7",
            &[("authorization", &bearer(token))],
        )
        .await;
        assert_eq!(got.status, status, "{method}: {}", got.text());
        if let Some(code) = code {
            let body = got.json();
            assert_eq!(body["error"], code, "{method}");
            assert!(!got.text().contains("umbrella"), "no claim values in 403s");
        }
    }
}

#[tokio::test]
async fn identity_headers_come_only_from_verified_tokens() {
    let upstream = EchoUpstream::start("u").await;
    let gw = start(&upstream).await;
    let spoof = [("x-user-id", "mallory"), ("x-user-roles", "admin")];

    // A public route cannot be used to smuggle identity headers to the backend.
    let echo = call(&gw, "GET", "/public", &spoof).await.echo();
    assert_eq!(echo.header("x-user-id"), None);
    assert_eq!(echo.header("x-user-roles"), None);

    let token = hs_token(claims("alice", &["reader", "auditor"]));
    let auth = bearer(&token);
    let mut headers = spoof.to_vec();
    headers.push(("authorization", &auth));
    let echo = call(&gw, "GET", "/orders/1", &headers).await.echo();
    assert_eq!(echo.headers["x-user-id"], vec!["alice"]);
    assert_eq!(echo.headers["x-user-roles"], vec!["reader,auditor"]);
    assert_eq!(
        echo.header("authorization"),
        Some(auth.as_str()),
        "forwarded by default"
    );

    let echo = call(&gw, "GET", "/notoken", &[("authorization", &auth)])
        .await
        .echo();
    assert_eq!(echo.header("authorization"), None, "forward_token: false");
    assert_eq!(echo.header("x-user-id"), Some("alice"));

    // Optional auth: anonymous passes without identity; a bad token is still refused.
    let echo = call(&gw, "GET", "/maybe", &spoof).await.echo();
    assert_eq!(echo.header("x-user-id"), None);
    let got = call(
        &gw,
        "GET",
        "/maybe",
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(got.status, 401);
}

#[tokio::test]
async fn cors_preflight_is_answered_before_auth_and_responses_carry_allow_origin() {
    let upstream = EchoUpstream::start("u").await;
    let gw = start(&upstream).await;
    let preflight = [
        ("origin", "https://app.test"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    let got = call(&gw, "OPTIONS", "/orders", &preflight).await;
    assert_eq!(got.status, 204);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(got.header("access-control-max-age"), Some("600"));
    assert_eq!(
        upstream.requests(),
        0,
        "preflight never reaches the upstream"
    );

    let evil = [
        ("origin", "https://evil.test"),
        ("access-control-request-method", "POST"),
    ];
    let got = call(&gw, "OPTIONS", "/orders", &evil).await;
    assert_eq!(got.status, 204);
    assert_eq!(
        got.header("access-control-allow-origin"),
        None,
        "never reflected"
    );

    // Error answers carry CORS headers too, so the page can read the 401.
    let got = call(&gw, "GET", "/orders", &[("origin", "https://app.test")]).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert!(
        got.header("vary").unwrap_or("").contains("Origin"),
        "{:?}",
        got.headers
    );

    let token = hs_token(claims("alice", &["reader"]));
    let got = call(
        &gw,
        "GET",
        "/orders",
        &[
            ("origin", "https://evil.test"),
            ("authorization", &bearer(&token)),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn public_keys_verify_and_cannot_be_used_as_hmac_secrets() {
    let upstream = EchoUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    rsa_key_pair(dir.path(), "rsa.key", "rsa.pub");
    let config = format!(
        "{}jwt:\n  providers:\n    rsa:\n      algorithms: [RS256]\n      public_key_file: {}\nroutes:\n  - name: r\n    match: {{path: /r}}\n    upstream: u\n    auth: {{jwt: rsa}}\nupstreams:\n  u:\n    targets: [{}]\n",
        server_yaml(""),
        dir.path().join("rsa.pub").display(),
        upstream.url()
    );
    let gw = TestGateway::start(&config).await;
    let private = std::fs::read(dir.path().join("rsa.key")).unwrap();
    let public = std::fs::read(dir.path().join("rsa.pub")).unwrap();
    let body = serde_json::json!({"sub": "svc", "exp": now() + 600});
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &body,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let got = call(&gw, "GET", "/r", &[("authorization", &bearer(&rs))]).await;
    assert_eq!(got.status, 200, "{}", got.text());

    // Algorithm confusion: HS256 signed with the public key bytes as the HMAC secret.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &body,
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let got = call(&gw, "GET", "/r", &[("authorization", &bearer(&forged))]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "alg_not_allowed");

    let out = Command::new(gatehouse_bin())
        .args([
            "token",
            "-c",
            gw.path("gateway.yaml").to_str().unwrap(),
            "--provider",
            "rsa",
            "--sub",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("give the private key of the pair with --key"),
        "{out:?}"
    );
}

#[tokio::test]
async fn the_token_command_mints_what_the_gateway_accepts_and_explain_shows_the_decision() {
    let upstream = EchoUpstream::start("u").await;
    let gw = start(&upstream).await;
    let config = gw.path("gateway.yaml");
    let run = |args: &[&str]| {
        Command::new(gatehouse_bin())
            .args(args)
            .arg("-c")
            .arg(&config)
            .env("JWT_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let out = run(&[
        "token",
        "--sub",
        "carol",
        "--roles",
        "admin",
        "--scopes",
        "orders:write",
        "--claim",
        "tenant=acme",
        "--ttl",
        "5m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let got = call(
        &gw,
        "POST",
        "/orders",
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.echo().header("x-user-id"), Some("carol"));

    let auth = format!("Authorization: Bearer {token}");
    let out = run(&["explain", "POST", "/orders", "-H", &auth]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("valid token for sub carol"), "{text}");
    assert!(text.contains("authorize:  allowed by rule 2"), "{text}");
    assert!(
        !text.contains(&token),
        "explain never prints the token:\n{text}"
    );

    let out = run(&["explain", "DELETE", "/orders"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("result:     401 missing"), "{text}");
}

#[tokio::test]
async fn a_reused_token_is_verified_once_until_a_reload_changes_the_secret() {
    const HITS: &str = "gatehouse_jwt_cache_hits_total{provider=\"default\"}";
    const MISSES: &str = "gatehouse_jwt_cache_misses_total{provider=\"default\"}";
    let upstream = EchoUpstream::start("u").await;
    let gw = start(&upstream).await;
    let token = bearer(&hs_token(claims("alice", &["reader"])));
    let auth = [("authorization", token.as_str())];
    for _ in 0..3 {
        let got = call(&gw, "GET", "/orders", &auth).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.echo().header("x-user-id"), Some("alice"));
    }
    assert_eq!(metric(&gw, MISSES).await, 1.0);
    assert_eq!(metric(&gw, HITS).await, 2.0);

    // A reload with another secret builds a new provider, with an empty cache: the token that
    // was cached is checked against the new secret and refused.
    let other = config(&upstream).replace(
        "${JWT_SECRET}",
        "another-secret-that-is-long-enough-for-hs256",
    );
    std::fs::write(gw.path("gateway.yaml"), other).unwrap();
    gw.handle.reload().await;
    let got = call(&gw, "GET", "/orders", &auth).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "bad_signature");
    assert_eq!(metric(&gw, MISSES).await, 2.0);
    assert_eq!(metric(&gw, HITS).await, 2.0);
}

#[tokio::test]
async fn basic_credentials_on_a_jwt_route_are_a_missing_bearer_token() {
    let upstream = EchoUpstream::start("u").await;
    let gw = start(&upstream).await;
    let basic = "Basic YWxpY2U6c2VjcmV0";
    for path in ["/orders/1", "/maybe"] {
        let got = call(&gw, "GET", path, &[("authorization", basic)]).await;
        assert_eq!(got.status, 401, "{path}: {}", got.text());
        assert_eq!(got.json()["error"], "missing", "{path}");
        assert_eq!(
            got.json()["message"],
            "a bearer token is required",
            "{path}"
        );
        // RFC 6750 §3.1: no error code when the request carried no bearer token.
        assert_eq!(got.header("www-authenticate"), Some("Bearer"), "{path}");
    }
    assert_eq!(upstream.requests(), 0, "nothing reached the upstream");
    let metrics = get(&gw.url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"gatehouse_auth_failures_total{route="orders",reason="missing"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"reason="malformed""#), "{metrics}");

    let config = gw.path("gateway.yaml");
    let out = Command::new(gatehouse_bin())
        .args([
            "explain",
            "GET",
            "/orders/1",
            "-H",
            &format!("Authorization: {basic}"),
        ])
        .arg("-c")
        .arg(&config)
        .env("JWT_SECRET", SECRET)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("missing bearer token"), "{out:?}");
    assert!(text.contains("result:     401 missing"), "{out:?}");
}

#[tokio::test]
async fn the_token_command_signs_with_private_keys_for_rsa_and_ec_providers() {
    let upstream = EchoUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        (
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
        (
            "ec",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        (
            "other",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
    ] {
        let out = format!("{name}.key");
        let mut genpkey = vec!["genpkey"];
        genpkey.extend_from_slice(args);
        genpkey.extend_from_slice(&["-out", &out]);
        openssl(dir.path(), &genpkey);
        openssl(
            dir.path(),
            &[
                "pkey",
                "-in",
                &out,
                "-pubout",
                "-out",
                &format!("{name}.pub"),
            ],
        );
    }
    let key = |name: &str| dir.path().join(name).display().to_string();
    let config = format!(
        "{}jwt:\n  providers:\n\
         \x20   rsa:\n      algorithms: [RS256]\n      public_key_file: {}\n      issuer: https://idp.test\n\
         \x20   ec:\n      algorithms: [ES256]\n      public_key_file: {}\n      audience: [api]\n\
         routes:\n\
         \x20 - name: r\n    match: {{path: /r}}\n    upstream: u\n    auth: {{jwt: rsa}}\n\
         \x20 - name: e\n    match: {{path: /e}}\n    upstream: u\n    auth: {{jwt: ec}}\n\
         upstreams:\n  u:\n    targets: [{}]\n",
        server_yaml(""),
        key("rsa.pub"),
        key("ec.pub"),
        upstream.url()
    );
    let gw = TestGateway::start(&config).await;
    let mint = |provider: &str, key_file: &str| {
        Command::new(gatehouse_bin())
            .args(["token", "--provider", provider, "--sub", "svc", "--key"])
            .arg(key(key_file))
            .arg("-c")
            .arg(gw.path("gateway.yaml"))
            .output()
            .unwrap()
    };
    let header_alg = |token: &str| jsonwebtoken::decode_header(token).unwrap().alg;

    for (provider, key_file, path, alg) in [
        ("rsa", "rsa.key", "/r", Algorithm::RS256),
        ("ec", "ec.key", "/e", Algorithm::ES256),
    ] {
        let out = mint(provider, key_file);
        assert!(out.status.success(), "{provider}: {out:?}");
        assert!(out.stderr.is_empty(), "{provider}: no warning: {out:?}");
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(header_alg(&token), alg, "{token}");
        let got = call(&gw, "GET", path, &[("authorization", &bearer(&token))]).await;
        assert_eq!(got.status, 200, "{provider}: {}", got.text());
        // The other provider's route refuses it: the signature is what was checked.
        let other = if path == "/r" { "/e" } else { "/r" };
        let got = call(&gw, "GET", other, &[("authorization", &bearer(&token))]).await;
        assert_eq!(got.status, 401, "{provider} token on {other}");
    }

    // A key that is not the pair of the provider's public key: minted, with a warning, and
    // refused by the gateway as the warning said.
    let out = mint("rsa", "other.key");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would refuse this token: bad signature"),
        "{out:?}"
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let got = call(&gw, "GET", "/r", &[("authorization", &bearer(&token))]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "bad_signature");

    // A key of the wrong kind is refused before anything is printed.
    let out = mint("ec", "rsa.key");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("an RSA private key cannot sign with ES256"),
        "{out:?}"
    );
}
