//! Which route serves a request, and what path the upstream then sees: the routing table through
//! the library and over HTTP/1.1 and h2c, path rewrites, fixed responses, and normalisation with
//! every reject case.

mod common;
use common::*;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use gatehouse::config::MapEnv;
use gatehouse::error::GatewayError;
use gatehouse::proxy::pipeline::route_request;
use gatehouse::registry::Registries;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A 405 outcome as the table writes it: `405 ` and the `Allow` methods sorted, comma-joined.
fn not_allowed<'a>(methods: impl Iterator<Item = &'a str>) -> String {
    let mut methods: Vec<&str> = methods.collect();
    methods.sort_unstable();
    format!("405 {}", methods.join(","))
}

// Routes are declared so that file order alone would pick the wrong one wherever precedence
// matters: the winner is always defined after (or in a later file than) a loser it beats.
#[rustfmt::skip]
const GATEWAY_ROUTES: &[(&str, &str)] = &[
    ("api", "{path: /api}"),
    ("order-item-re", "{path_regex: '^/api/v1/orders/[0-9]+$'}"),
    ("orders-special-prefix", "{path: /api/v1/orders/special}"),
    ("orders", "{path: /api/v1/orders}"),
    ("orders-special", "{path_exact: /api/v1/orders/special}"),
    ("static", "{path: /static/}"),
    ("reports-re", "{path_regex: '^/reports/[0-9]{4}$'}"),
    ("export-re", "{path_regex: '/export/'}"),
    ("txt-gw", "{path_regex: '\\.txt$'}"),
    ("items-get", "{path: /items, methods: [GET]}"),
    ("items-post", "{path: /items, methods: [post, PUT]}"),
    ("tenant-any", "{path: /tenant}"),
    ("tenant-get", "{path: /tenant, methods: [GET]}"),
    ("tenant-acme", "{path: /tenant, headers: {X-Tenant: acme}}"),
    (
        "ops",
        "{path_exact: /ops, methods: [POST], headers: {X-Admin: 'yes'}}",
    ),
    ("api-exact", "{host: api.example.com, path: /api/v1/orders}"),
    (
        "api-items",
        "{host: api.example.com, path: /items, methods: [GET]}",
    ),
    ("wild", "{host: '*.example.com', path: /api/v1/orders}"),
    (
        "wild-deep",
        "{host: '*.eu.example.com', path: /api/v1/orders}",
    ),
    (
        "wild-only",
        "{host: '*.example.com', path: /wild-only, methods: [GET]}",
    ),
    ("catchall", "{host: catchall.test, path: /}"),
    ("dup-gw", "{path: /dup}"),
];
const B_ROUTES: &[(&str, &str)] = &[
    ("files-b", "{path_regex: '^/files/'}"),
    ("archive-b", "{path: /api/v1/orders/archive}"),
    ("dup2-b", "{path: /dup2}"),
];
const A_ROUTES: &[(&str, &str)] = &[
    ("files-a", "{path_regex: '^/files/.*\\.(log|txt)$'}"),
    ("dup-a", "{path: /dup}"),
    ("dup2-a", "{path: /dup2}"),
];

/// Each route answers by itself and names itself in `X-Route`, so HEAD requests show it too.
fn routes_yaml(routes: &[(&str, &str)]) -> String {
    let mut yaml = String::from("routes:\n");
    for (name, matcher) in routes {
        yaml.push_str(&format!(
            "  - name: {name}\n    match: {matcher}\n    respond: {{body: {name}, headers: {{X-Route: {name}}}}}\n"
        ));
    }
    yaml
}

fn table_gateway_yaml() -> String {
    server_yaml("") + &routes_yaml(GATEWAY_ROUTES)
}

/// b.yaml is listed (and written) first so that only sorting by name can put a.yaml first.
fn table_route_files() -> [(&'static str, String); 2] {
    [
        ("b.yaml", routes_yaml(B_ROUTES)),
        ("a.yaml", routes_yaml(A_ROUTES)),
    ]
}

/// (method, Host or "" for none, raw path, one "Name: value" header or "", expected): the
/// expected outcome is the serving route's name, `404`, `400`, or `405` with the sorted `Allow`.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
const TABLE: &[Case] = &[
    // Prefixes match on segment boundaries; a longer prefix beats an earlier regex.
    ("GET", "", "/api/v1/orders", "", "orders"),
    ("GET", "", "/api/v1/orders/", "", "orders"),
    ("GET", "", "/api/v1/orders/7", "", "orders"),
    ("GET", "", "/api/v1/ordersX", "", "api"),
    ("GET", "", "/api/v1", "", "api"),
    ("GET", "", "/api", "", "api"),
    ("GET", "", "/apix", "", "404"),
    // A prefix ending in `/` needs something below it.
    ("GET", "", "/static/app.js", "", "static"),
    ("GET", "", "/static/", "", "static"),
    ("GET", "", "/static", "", "404"),
    ("GET", "", "/staticx/y", "", "404"),
    // path_exact beats an equal prefix defined earlier, and only the exact path.
    ("GET", "", "/api/v1/orders/special", "", "orders-special"),
    ("GET", "", "/api/v1/orders/special/", "", "orders-special-prefix"),
    ("GET", "", "/api/v1/orders/special/1", "", "orders-special-prefix"),
    ("GET", "", "/api/v1/orders/archive/1", "", "archive-b"),
    // Regexes: anchored ones need the whole path, others are searched.
    ("GET", "", "/reports/2024", "", "reports-re"),
    ("GET", "", "/reports/2024/x", "", "404"),
    ("GET", "", "/old/reports/2024", "", "404"),
    ("GET", "", "/a/export/b", "", "export-re"),
    ("GET", "", "/exports/x", "", "404"),
    ("GET", "", "/notes/readme.txt", "", "txt-gw"),
    // File order: gateway.yaml, then routes/*.yaml by name.
    ("GET", "", "/files/x.txt", "", "txt-gw"),
    ("GET", "", "/files/x.log", "", "files-a"),
    ("GET", "", "/files/x.bin", "", "files-b"),
    ("GET", "", "/dup/x", "", "dup-gw"),
    ("GET", "", "/dup2", "", "dup2-a"),
    // Exact host > longest wildcard suffix > host-less; Host port, case, trailing dot ignored.
    ("GET", "api.example.com", "/api/v1/orders/7", "", "api-exact"),
    ("GET", "API.Example.COM:8443", "/api/v1/orders", "", "api-exact"),
    ("GET", "api.example.com.", "/api/v1/orders", "", "api-exact"),
    ("GET", "a.example.com", "/api/v1/orders", "", "wild"),
    ("GET", "a.b.example.com", "/api/v1/orders", "", "wild"),
    ("GET", "x.eu.example.com", "/api/v1/orders", "", "wild-deep"),
    ("GET", "eu.example.com", "/api/v1/orders", "", "wild"),
    ("GET", "example.com", "/api/v1/orders", "", "orders"),
    ("GET", "badexample.com", "/api/v1/orders", "", "orders"),
    // Nothing in a host group matches: fall through to the next group.
    ("GET", "api.example.com", "/static/x", "", "static"),
    ("GET", "api.example.com", "/wild-only", "", "wild-only"),
    ("GET", "example.com", "/wild-only", "", "404"),
    ("POST", "a.example.com", "/wild-only", "", "405 GET,HEAD"),
    ("GET", "catchall.test", "/", "", "catchall"),
    ("GET", "catchall.test:80", "/anything/deep", "", "catchall"),
    ("GET", "other.test", "/anything", "", "404"),
    // Methods: GET implies HEAD; 405 lists the union of what the path allows.
    ("GET", "", "/items", "", "items-get"),
    ("HEAD", "", "/items", "", "items-get"),
    ("POST", "", "/items/1", "", "items-post"),
    ("PUT", "", "/items", "", "items-post"),
    ("DELETE", "", "/items", "", "405 GET,HEAD,POST,PUT"),
    ("GET", "api.example.com", "/items", "", "api-items"),
    ("POST", "api.example.com", "/items", "", "items-post"),
    ("DELETE", "api.example.com", "/items", "", "405 GET,HEAD,POST,PUT"),
    // Header conditions first, then methods, then file order.
    ("GET", "", "/tenant", "X-Tenant: acme", "tenant-acme"),
    ("POST", "", "/tenant", "x-tenant: acme", "tenant-acme"),
    ("GET", "", "/tenant", "X-Tenant: ACME", "tenant-get"),
    ("GET", "", "/tenant", "", "tenant-get"),
    ("POST", "", "/tenant", "", "tenant-any"),
    // 405 only once headers matched too.
    ("POST", "", "/ops", "X-Admin: yes", "ops"),
    ("GET", "", "/ops", "X-Admin: yes", "405 POST"),
    ("HEAD", "", "/ops", "X-Admin: yes", "405 POST"),
    ("POST", "", "/ops", "", "404"),
    ("POST", "", "/ops/", "X-Admin: yes", "404"),
    // Matching happens on the normalised path.
    ("GET", "", "/api/v1/./orders", "", "orders"),
    ("GET", "", "/static/../api/v1/orders/7", "", "orders"),
    ("GET", "", "//static//x", "", "static"),
    ("GET", "", "/%73tatic/x", "", "static"),
    ("GET", "", "/api/v1/ordersX/../orders/special", "", "orders-special"),
    ("GET", "", "/static/%2F", "", "400"),
];

/// The case as a request to `uri`, with its Host header unless HTTP/2 carries the host.
fn request(case: &Case, uri: String, host_header: bool) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(case.0).uri(uri);
    if host_header && !case.1.is_empty() {
        request = request.header("host", case.1);
    }
    if let Some((name, value)) = case.3.split_once(':') {
        request = request.header(name.trim(), value.trim());
    }
    request.body(Full::default()).unwrap()
}

fn describe(case: &Case) -> String {
    format!(
        "{} {}{} [{}] want {}",
        case.0, case.1, case.2, case.3, case.4
    )
}

#[test]
fn routing_table_picks_the_documented_route() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), table_gateway_yaml()).unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    for (name, yaml) in table_route_files() {
        std::fs::write(dir.path().join("routes").join(name), yaml).unwrap();
    }
    let env = MapEnv(HashMap::new());
    let snapshot = gatehouse::config::load(
        &dir.path().join("gateway.yaml"),
        &env,
        &Registries::default(),
    )
    .unwrap_or_else(|e| panic!("table config must load:\n{e}"));
    assert!(TABLE.len() >= 30);

    let mut failures = Vec::new();
    for case in TABLE {
        let (parts, _) = request(case, case.2.to_string(), true).into_parts();
        let seen = match route_request(&snapshot, &parts) {
            Ok(routed) => routed.route.name.to_string(),
            Err(GatewayError::NoRoute) => "404".into(),
            Err(GatewayError::MethodNotAllowed { allow }) => {
                not_allowed(allow.iter().map(http::Method::as_str))
            }
            Err(GatewayError::InvalidPath(_)) => "400".into(),
            Err(other) => panic!("{}: unexpected {other:?}", describe(case)),
        };
        if seen != case.4 {
            failures.push(format!("{}: got {seen}", describe(case)));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Reduces a response to the table's outcome, checking the error contract on the way.
fn seen_on_wire(method: &str, got: &Got) -> String {
    if let Some(route) = got.header("x-route") {
        assert_eq!(got.status, 200, "route {route}");
        if method != "HEAD" {
            assert_eq!(got.text(), route, "body of route {route}");
        }
        return route.to_string();
    }
    let (seen, code) = match got.status.as_u16() {
        404 => ("404".to_string(), "no_route"),
        400 => ("400".to_string(), "invalid_path"),
        405 => {
            let allow = got.header("allow").expect("405 without Allow");
            (not_allowed(allow.split(", ")), "method_not_allowed")
        }
        other => panic!("unexpected status {other}: {}", got.text()),
    };
    let id = got.header("x-request-id").expect("x-request-id");
    assert!(!id.is_empty());
    if method != "HEAD" {
        assert_eq!(got.header("content-type"), Some("application/json"));
        let json = got.json();
        assert_eq!(json["error"], code, "{json}");
        assert_eq!(json["request_id"], id, "{json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    seen
}

type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An h2c connection to `addr` whose requests may name any authority: `h2c_client()` would
/// connect to the host in the URI, and HTTP/2 routes by that authority, not by a Host header.
async fn h2_connect(addr: SocketAddr) -> H2 {
    let stream = within(TcpStream::connect(addr)).await.expect("connect");
    let handshake =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream));
    let (sender, conn) = within(handshake).await.expect("h2c handshake");
    tokio::spawn(conn);
    sender
}

async fn h2_send(sender: &mut H2, request: Request<Full<Bytes>>) -> Got {
    h2_try_send(sender, request)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`h2_send`], but a reset stream is reported instead of panicking.
async fn h2_try_send(sender: &mut H2, request: Request<Full<Bytes>>) -> Result<Got, String> {
    within(sender.ready()).await.expect("h2c connection ready");
    let response = within(sender.send_request(request))
        .await
        .map_err(|e| format!("h2c request failed: {e:?}"))?;
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (parts, body) = response.into_parts();
    let body = within(body.collect())
        .await
        .map_err(|e| format!("h2c body failed: {e:?}"))?
        .to_bytes();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[tokio::test]
async fn live_http1_and_h2c_requests_route_like_the_table() {
    let files = table_route_files();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let gw = TestGateway::start_with(&table_gateway_yaml(), &files, &[]).await;
    let h1 = client();
    let mut h2 = h2_connect(gw.addr).await;
    let own_authority = gw.addr.to_string();

    let mut failures = Vec::new();
    for case in TABLE {
        let got = send(&h1, request(case, gw.url(case.2), true)).await;
        let seen = seen_on_wire(case.0, &got);
        if seen != case.4 {
            failures.push(format!("h1 {}: got {seen}", describe(case)));
        }

        // HEAD over h2c has its own test (`head_over_h2c_sends_no_body`): a failure there
        // resets the stream and would hide every other row here.
        if case.0 == "HEAD" {
            continue;
        }
        let authority = if case.1.is_empty() {
            own_authority.as_str()
        } else {
            case.1
        };
        let uri = format!("http://{authority}{}", case.2);
        let got = h2_send(&mut h2, request(case, uri, false)).await;
        let seen = seen_on_wire(case.0, &got);
        if seen != case.4 {
            failures.push(format!("h2c {}: got {seen}", describe(case)));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn upstream_yaml(ups: &[&EchoUpstream]) -> String {
    let mut yaml = String::from("upstreams:\n");
    for up in ups {
        yaml.push_str(&format!("  {}:\n    targets: [{}]\n", up.name, up.url()));
    }
    yaml
}

/// GETs `url` and returns which echo upstream answered and the target it received.
async fn served_by(client: &Client, url: String) -> (String, String) {
    let got = send(client, Request::get(&url).body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200, "{url}: {}", got.text());
    let echo = got.echo();
    (echo.server, echo.target)
}

/// GETs each `(path, server, target)` on the gateway: the upstream named `server` must answer,
/// having received exactly `target`.
async fn assert_routed(client: &Client, gw: &TestGateway, cases: &[(&str, &str, &str)]) {
    for &(path, server, target) in cases {
        let (got_server, got_target) = served_by(client, gw.url(path)).await;
        assert_eq!(
            (got_server.as_str(), got_target.as_str()),
            (server, target),
            "{path}"
        );
    }
}

#[tokio::test]
async fn strip_prefix_and_rewrite_change_only_the_path_the_upstream_sees() {
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let yaml = server_yaml("")
        + &upstream_yaml(&[&a, &b])
        + "routes:
  - name: strip
    match: {path: /svc/a}
    upstream: a
    strip_prefix: /svc/a
  - name: rewrite
    match: {path: /api/v1}
    upstream: b
    rewrite: {prefix: /api/v1, to: /v2}
  - name: rewrite-slash
    match: {path: /old/}
    upstream: b
    rewrite: {prefix: /old/, to: /new/}
  - name: keep
    match: {path: /}
    upstream: a
";
    let gw = TestGateway::start(&yaml).await;
    let h1 = client();
    // (request path and query, upstream that must answer, target it must receive)
    let cases = [
        ("/svc/a/x/y?q=1&r=%2F", "a", "/x/y?q=1&r=%2F"),
        ("/svc/a", "a", "/"),
        ("/svc/a/", "a", "/"),
        ("/svc/a?only=query", "a", "/?only=query"),
        ("/svc/ab/c", "a", "/svc/ab/c"),
        ("/api/v1/users?id=3", "b", "/v2/users?id=3"),
        ("/api/v1", "b", "/v2"),
        ("/api/v1/./x/../users", "b", "/v2/users"),
        ("/api/v10/users", "a", "/api/v10/users"),
        ("/old/thing?k=v", "b", "/new/thing?k=v"),
        ("/plain/%7euser?x=%7e", "a", "/plain/~user?x=%7e"),
    ];
    assert_routed(&h1, &gw, &cases).await;
    assert_eq!((a.requests(), b.requests()), (7, 4));

    // h2c clients are routed and rewritten the same way; the upstream still gets HTTP/1.1.
    let mut h2 = h2_connect(gw.addr).await;
    let request = Request::get("http://svc.test/svc/a/x?q=1")
        .body(Full::default())
        .unwrap();
    let echo = h2_send(&mut h2, request).await.echo();
    assert_eq!(
        (echo.server.as_str(), echo.target.as_str()),
        ("a", "/x?q=1")
    );
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.header("host"), Some("svc.test"));
}

#[tokio::test]
async fn respond_routes_answer_without_an_upstream() {
    let up = EchoUpstream::start("up").await;
    let yaml = server_yaml("")
        + &upstream_yaml(&[&up])
        + "routes:
  - name: created
    match: {path_exact: /hello}
    respond:
      status: 201
      body: \"hi\\n\"
      headers: {X-Custom: yes-really, Content-Type: application/x-demo}
  - name: plain
    match: {path_exact: /plain}
    respond: {body: plain body}
  - name: empty
    match: {path_exact: /empty}
    respond: {status: 204}
  - name: rest
    match: {path: /}
    upstream: up
";
    let gw = TestGateway::start(&yaml).await;
    let h1 = client();

    for method in ["GET", "POST"] {
        let request = Request::builder().method(method).uri(gw.url("/hello"));
        let got = send(&h1, request.body(Full::from("ignored")).unwrap()).await;
        assert_eq!(got.status, 201, "{method}");
        assert_eq!(got.text(), "hi\n");
        assert_eq!(got.header("x-custom"), Some("yes-really"));
        assert_eq!(got.header("content-type"), Some("application/x-demo"));
        assert!(got.header("x-request-id").is_some_and(|id| !id.is_empty()));
    }

    let got = get(&gw.url("/plain")).await;
    assert_eq!(
        (got.status.as_u16(), got.text().as_str()),
        (200, "plain body")
    );
    let content_type = got.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");

    let head = Request::head(gw.url("/plain"))
        .body(Full::default())
        .unwrap();
    let got = send(&h1, head).await;
    assert_eq!((got.status.as_u16(), got.body.len()), (200, 0));

    let got = get(&gw.url("/empty")).await;
    assert_eq!((got.status.as_u16(), got.body.len()), (204, 0));

    // Exact paths only: the catch-all upstream gets everything else, and nothing above.
    assert_eq!(up.requests(), 0);
    let echo = get(&gw.url("/hello/")).await.echo();
    assert_eq!(echo.target, "/hello/");
    assert_eq!(up.requests(), 1);
}

/// Status and JSON body of a raw HTTP/1.1 response read to the end of the connection.
fn parse_raw(response: &str) -> (u16, serde_json::Value) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {response:?}"));
    (status, json)
}

/// Sends each whitespace-separated path, with `query` after it, raw over HTTP/1.1 (no client
/// tidies it first) and expects a 400 `invalid_path`.
async fn assert_invalid_paths(gw: &TestGateway, paths: &str, query: &str) {
    for path in paths.split_whitespace() {
        let request =
            format!("GET {path}{query} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let response = raw(gw.addr, request.as_bytes(), DEADLINE).await;
        let (status, json) = parse_raw(&response);
        assert_eq!(status, 400, "{path}: {response}");
        assert_eq!(json["error"], "invalid_path", "{path}: {json}");
    }
}

/// Upstreams `admin` and `public`, each routed to by its own path prefix and then by
/// `more_routes`: a path that reaches the wrong one has escaped its prefix.
async fn admin_and_public(more_routes: &str) -> (EchoUpstream, EchoUpstream, TestGateway) {
    let admin = EchoUpstream::start("admin").await;
    let public = EchoUpstream::start("public").await;
    let yaml = server_yaml("")
        + &upstream_yaml(&[&admin, &public])
        + "routes:
  - {name: admin, match: {path: /admin}, upstream: admin}
  - {name: public, match: {path: /public}, upstream: public}
" + more_routes;
    let gw = TestGateway::start(&yaml).await;
    (admin, public, gw)
}

#[tokio::test]
async fn upstreams_see_the_normalised_path_and_bad_paths_never_leave_the_gateway() {
    let api = "  - {name: api, match: {path: /api}, upstream: public}\n";
    let (admin, public, gw) = admin_and_public(api).await;

    // Written raw: clients may refuse or rewrite some of these (a backslash, `..`).
    let rejected = "/api/%2F /api/a%2fb /public/..%2fadmin /api/%5C /api/%5c /api/a\\b /api/%00 \
        /.. /a/../.. /api/../../admin /%2e%2e/x /..;/x /public/..;/admin /public/%2e%2e;/admin \
        /api/%zz /api/%4 /api/a%";
    assert_invalid_paths(&gw, rejected, "?q=1").await;
    // HTTP/2 paths go through the same check.
    let mut h2 = h2_connect(gw.addr).await;
    let request = Request::get("http://gw.test/public/..%2Fadmin")
        .body(Full::default())
        .unwrap();
    let got = h2_send(&mut h2, request).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["error"], "invalid_path");
    assert_eq!((admin.requests(), public.requests()), (0, 0));

    // (request, upstream that must answer, exactly what it must receive)
    let cases = [
        (
            "/api/./a//b/../c?x=/../&y=%2f",
            "public",
            "/api/a/c?x=/../&y=%2f",
        ),
        ("/api/%7e%41?q=%7e", "public", "/api/~A?q=%7e"),
        ("/api/%3a%c3%a9", "public", "/api/%3A%C3%A9"),
        ("/public/../admin", "admin", "/admin"),
        ("/public/%2e%2e/admin", "admin", "/admin"),
        ("/public/%2E%2E/admin/./panel", "admin", "/admin/panel"),
        ("/%61dmin", "admin", "/admin"),
        ("/admin/../public/x", "public", "/public/x"),
        ("/public/x/../admin", "public", "/public/admin"),
        ("/public/admin/..", "public", "/public/"),
        ("/adminx/../public", "public", "/public"),
    ];
    let h1 = client();
    assert_routed(&h1, &gw, &cases).await;
    // Nothing reached an upstream besides the requests above.
    assert_eq!((admin.requests(), public.requests()), (4, 7));

    // A path that normalises to nothing routable is a 404, not a guess.
    let got = get(&gw.url("/public/../adminx")).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.json()["error"], "no_route");
    assert_eq!((admin.requests(), public.requests()), (4, 7));
}

#[tokio::test]
async fn head_over_h2c_sends_no_body() {
    let up = EchoUpstream::start("up").await;
    let yaml = server_yaml("")
        + &upstream_yaml(&[&up])
        + "routes:
  - {name: fixed, match: {path_exact: /fixed}, respond: {body: fixed body}}
  - {name: only-post, match: {path_exact: /only-post, methods: [POST]}, respond: {body: x}}
  - {name: proxied, match: {path: /up}, upstream: up}
";
    let gw = TestGateway::start(&yaml).await;
    // A HEAD response carries no content (RFC 9110 9.3.2); an HTTP/2 client treats DATA
    // frames on one as a protocol error and resets the stream.
    let mut failures = Vec::new();
    for (path, status) in [
        ("/fixed", 200),
        ("/missing", 404),
        ("/only-post", 405),
        ("/up/x", 200),
    ] {
        // A reset may leave a connection unusable, so each request gets its own.
        let mut h2 = h2_connect(gw.addr).await;
        let request = Request::head(format!("http://gw.test{path}"))
            .body(Full::default())
            .unwrap();
        match h2_try_send(&mut h2, request).await {
            Ok(got) if got.status == status && got.body.is_empty() => {}
            Ok(got) => failures.push(format!("HEAD {path}: {} {:?}", got.status, got.body)),
            Err(e) => failures.push(format!("HEAD {path}: {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn double_encoded_separators_and_broken_utf8_never_reach_an_upstream() {
    let (admin, public, gw) = admin_and_public("").await;
    // Each is `/public/...` to the gateway, and `/admin` (or a `..` or `/` in a file name) to a
    // backend that decodes twice or decodes leniently.
    let rejected = "/public/%252e%252e/admin /public/%252E%252E/admin /public/..%252fadmin \
        /public/..%252Fadmin /public/x%255cadmin /public/x%255Cadmin /public/%25%32%65%25%32%65/admin \
        /public/%c0%ae%c0%ae/admin /public/%C0%AE%C0%AE%C0%AFadmin /public/%e0%80%ae%e0%80%ae/admin \
        /public/%80 /public/a%bf /public/%c3 /public/%e2%82 /public/%c3/x";
    assert_invalid_paths(&gw, rejected, "").await;
    let mut h2 = h2_connect(gw.addr).await;
    for path in ["/public/%252e%252e/admin", "/public/%c0%ae%c0%ae/admin"] {
        let request = Request::get(format!("http://gw.test{path}"))
            .body(Full::default())
            .unwrap();
        let got = h2_send(&mut h2, request).await;
        assert_eq!(got.status, 400, "{path}");
        assert_eq!(got.json()["error"], "invalid_path", "{path}");
    }
    assert_eq!((admin.requests(), public.requests()), (0, 0));

    // A lone `%25` and well-formed UTF-8 are forwarded as they are.
    let h1 = client();
    let cases = [
        ("/public/100%25off", "public", "/public/100%25off"),
        ("/public/%e2%82%ac", "public", "/public/%E2%82%AC"),
    ];
    assert_routed(&h1, &gw, &cases).await;
    assert_eq!((admin.requests(), public.requests()), (0, 2));
}

#[tokio::test]
async fn an_absolute_form_target_routes_on_its_own_host() {
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let yaml = server_yaml("")
        + &upstream_yaml(&[&a, &b])
        + "routes:
  - {name: a, match: {host: a.example}, upstream: a}
  - {name: b, match: {host: b.example}, upstream: b}
";
    let gw = TestGateway::start(&yaml).await;
    // RFC 9112 §3.2.2: the target's authority wins over Host, for routing and for the Host the
    // upstream is sent.
    let request =
        "GET http://a.example/x?q=1 HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    let response = raw(gw.addr, request.as_bytes(), DEADLINE).await;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let echo: Echo = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
    assert_eq!(echo.server, "a");
    assert_eq!(echo.target, "/x?q=1", "origin-form upstream");
    assert_eq!(echo.headers["host"], ["a.example"]);
    assert_eq!(echo.headers["x-forwarded-host"], ["a.example"]);
    assert_eq!((a.requests(), b.requests()), (1, 0));

    // User information in the target is refused, never passed on as part of a Host.
    let request =
        "GET http://user:pw@b.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    let response = raw(gw.addr, request.as_bytes(), DEADLINE).await;
    let (status, json) = parse_raw(&response);
    assert_eq!((status, json["error"].as_str()), (400, Some("bad_request")));
    assert_eq!((a.requests(), b.requests()), (1, 0));
}
