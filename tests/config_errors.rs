//! Every class of config error is reported with the file, line and column an operator must edit,
//! through the same `config::load` that `check`, `run` and reloads use.
//!
//! Cases are tables; a table reports every mismatching case at once, so one regression does not
//! hide the others.

mod common;

use common::{load_files, Found};
use gatehouse::config::snapshot::LogFormat;
use gatehouse::config::Snapshot;
use gatehouse::routing::route::RouteAction;

fn errors_of(files: &[(&str, &str)], env: &[(&str, &str)]) -> Vec<Found> {
    match load_files(files, env) {
        Ok(_) => panic!("config loaded, but errors were expected: {files:#?}"),
        Err(errors) => errors,
    }
}

const GATEWAY: &str = "server:\n  listen: 127.0.0.1:0\n";

/// gateway.yaml whose `extra` starts at line 3; server fields at column 3.
fn gateway(extra: &str) -> String {
    format!("{GATEWAY}{extra}")
}

const UPSTREAM_A: &str = "upstreams:\n  a:\n    targets: [http://127.0.0.1:1]\n";

/// A routes file whose route `r` (name at 5:11, `match:` at line 6) continues with `extra`
/// from line 7, keys at column 5.
fn route(extra: &str) -> String {
    format!("{UPSTREAM_A}routes:\n  - name: r\n    match: {{path: /x}}\n{extra}")
}

/// A routes file whose route has `match: <flow>`, the flow starting at 6:12.
fn route_matching(flow: &str) -> String {
    format!("{UPSTREAM_A}routes:\n  - name: r\n    match: {flow}\n    upstream: a\n")
}

/// A routes file whose upstream `a` (name at 2:3) has the settings `body` from line 3, keys at
/// column 5. No route uses it, so only the upstream's own errors are reported.
fn upstream(body: &str) -> String {
    format!("upstreams:\n  a:\n{body}")
}

/// [`upstream`] with one valid target at line 3, so `settings` start at line 4.
fn upstream_with(settings: &str) -> String {
    upstream(&format!("    targets: [http://127.0.0.1:1]\n{settings}"))
}

struct Case {
    what: &'static str,
    files: Vec<(&'static str, String)>,
    env: Vec<(&'static str, String)>,
    at: (&'static str, usize, usize),
    says: Vec<&'static str>,
    lacks: Vec<&'static str>,
}

impl Case {
    fn also(mut self, phrase: &'static str) -> Self {
        self.says.push(phrase);
        self
    }

    fn lacks(mut self, phrase: &'static str) -> Self {
        self.lacks.push(phrase);
        self
    }

    fn env(mut self, name: &'static str, value: &str) -> Self {
        self.env.push((name, value.to_string()));
        self
    }
}

/// An error in gateway.yaml at `(line, column)` saying `says`; there is no routes folder.
fn g(what: &'static str, text: impl Into<String>, at: (usize, usize), says: &'static str) -> Case {
    Case {
        what,
        files: vec![("gateway.yaml", text.into())],
        env: Vec::new(),
        at: ("gateway.yaml", at.0, at.1),
        says: vec![says],
        lacks: Vec::new(),
    }
}

/// An error in routes/r.yaml, next to a valid gateway.yaml.
fn r(what: &'static str, text: impl Into<String>, at: (usize, usize), says: &'static str) -> Case {
    let mut case = g(what, GATEWAY, at, says);
    case.files.push(("routes/r.yaml", text.into()));
    case.at.0 = "routes/r.yaml";
    case
}

/// Each case must produce exactly its one error; every mismatch is listed before failing.
fn check(cases: Vec<Case>) {
    let mut wrong = Vec::new();
    for case in &cases {
        let files: Vec<(&str, &str)> = case.files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let env: Vec<(&str, &str)> = case.env.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let found = match load_files(&files, &env) {
            Ok(_) => {
                wrong.push(format!("{}: loaded without error", case.what));
                continue;
            }
            Err(found) => found,
        };
        let (file, line, column) = case.at;
        let ok = match found.as_slice() {
            [(f, l, c, message)] => {
                f == file
                    && (*l, *c) == (line, column)
                    && case.says.iter().all(|p| message.contains(p))
                    && !case.lacks.iter().any(|p| message.contains(p))
            }
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{}: expected one error at {file}:{line}:{column} saying {:?}{}; got {found:#?}",
                case.what,
                case.says,
                if case.lacks.is_empty() {
                    String::new()
                } else {
                    format!(" without {:?}", case.lacks)
                },
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n\n")
    );
}

#[rustfmt::skip]
#[test]
fn yaml_syntax_duplicates_documents_and_anchors() {
    let twice = upstream("    targets: [http://127.0.0.1:1]\n    targets: [http://127.0.0.1:2]\n");
    let anchored = "upstreams:\n  a: &t\n    targets: [http://127.0.0.1:1]\n  b: *t\n";
    check(vec![
        // The scanner stops at the token after the tab; the line and the message are what matter.
        r("tab indentation", "routes:\n\t- name: r\n", (2, 2), "invalid YAML"),
        r("mapping value inside a scalar", "routes:\n  - name: a: b\n", (2, 12), "invalid YAML"),
        r("duplicate key", twice, (4, 5), "duplicate key `targets` (first defined on line 3)"),
        r("second document", "routes: []\n---\nroutes: []\n", (2, 1), "second YAML document"),
        r("anchor", anchored, (2, 6), "anchors and aliases are not supported"),
    ]);
}

#[rustfmt::skip]
#[test]
fn unknown_fields_at_every_level() {
    let target = upstream("    targets:\n      - {url: http://127.0.0.1:1, wieght: 2}\n");
    check(vec![
        g("top-level, close", gateway("routse: []\n"), (3, 1), "unknown section `routse`; did you mean `routes`?"),
        g("top-level, far", gateway("plugins: []\n"), (3, 1), "unknown section `plugins`").lacks("did you mean"),
        g("server", gateway("  idle_timout: 5s\n"), (3, 3), "unknown field `idle_timout`; did you mean `idle_timeout`?"),
        r("route, close", route("    upstrem: a\n"), (7, 5), "unknown field `upstrem`; did you mean `upstream`?"),
        r("route, far", route("    upstream: a\n    colour: red\n"), (8, 5), "unknown field `colour`").lacks("did you mean"),
        r("match", route_matching("{pth: /x}"), (6, 13), "unknown field `pth`; did you mean `path`?"),
        r("upstream", upstream_with("    tiemout: 5s\n"), (4, 5), "unknown field `tiemout`; did you mean `timeout`?"),
        r("target map", target, (4, 35), "unknown field `wieght`; did you mean `weight`?"),
    ]);
}

#[rustfmt::skip]
#[test]
fn wrong_types_durations_and_sizes() {
    let methods = format!("{UPSTREAM_A}routes:\n  - name: r\n    match:\n      path: /x\n      methods: GET\n    upstream: a\n");
    check(vec![
        r("string for a list", methods, (8, 16), "expected a sequence"),
        r("list for a string", route("    upstream: [a]\n"), (7, 15), "expected a string"),
        r("word for a number", route("    respond: {status: ok}\n"), (7, 23), "expected a non-negative integer, found `ok`"),
        g("word for a bool", gateway("  security_headers: yes\n"), (3, 21), "expected true or false, found `yes`"),
        r("unknown duration unit", upstream_with("    timeout: 5x\n"), (4, 14), "invalid duration \"5x\""),
        g("duration without unit", gateway("  idle_timeout: 30\n"), (3, 17), "\"30\" has no unit; write 30s or 30ms"),
        g("bad size", gateway("  max_request_body: 10XB\n"), (3, 21), "invalid size \"10XB\"").also("unknown unit"),
    ]);
}

#[rustfmt::skip]
#[test]
fn references_and_route_actions() {
    let orders = "upstreams:\n  orders:\n    targets: [http://127.0.0.1:1]\nroutes:\n  - name: r\n    match: {path: /x}\n";
    check(vec![
        r("unknown upstream, close", format!("{orders}    upstream: ordrs\n"), (7, 15), "unknown upstream `ordrs`; did you mean `orders`?"),
        r("unknown upstream, far", format!("{orders}    upstream: billing\n"), (7, 15), "unknown upstream `billing`").lacks("did you mean"),
        r("neither upstream nor respond", route(""), (5, 11), "route `r` needs `upstream`").also("or `respond`"),
        r("both", route("    upstream: a\n    respond: {status: 200}\n"), (8, 14), "either `upstream` or `respond`, not both"),
    ]);
}

#[test]
fn duplicate_names_across_files_point_at_the_first() {
    let a = "upstreams:\n  a:\n    targets: [http://127.0.0.1:1]\nroutes:\n  - name: r\n    match: {path: /a}\n    upstream: a\n";
    let b = "upstreams:\n  a:\n    targets: [http://127.0.0.1:2]\nroutes:\n  - name: r\n    match: {path: /b}\n    upstream: a\n";
    let found = errors_of(
        &[
            ("gateway.yaml", GATEWAY),
            ("routes/a.yaml", a),
            ("routes/b.yaml", b),
        ],
        &[],
    );
    let expected = vec![
        (
            "routes/b.yaml".to_string(),
            2,
            3,
            "duplicate upstream `a` (first defined at routes/a.yaml:2:3)".to_string(),
        ),
        (
            "routes/b.yaml".to_string(),
            5,
            11,
            "duplicate route `r` (first defined at routes/a.yaml:5:11)".to_string(),
        ),
    ];
    assert_eq!(found, expected);

    // gateway.yaml may hold upstreams too; it is read first, so it holds the original.
    let gw = gateway("upstreams:\n  a:\n    targets: [http://127.0.0.1:3]\n");
    let found = errors_of(&[("gateway.yaml", &gw), ("routes/a.yaml", a)], &[]);
    assert_eq!(
        found,
        vec![(
            "routes/a.yaml".to_string(),
            2,
            3,
            "duplicate upstream `a` (first defined at gateway.yaml:4:3)".to_string()
        )]
    );
}

#[rustfmt::skip]
#[test]
fn invalid_matchers_headers_addresses_and_targets() {
    let targets = |list: &str| upstream(&format!("    targets: {list}\n"));
    let weight_0 = upstream("    targets:\n      - {url: http://127.0.0.1:1, weight: 0}\n");
    let header_value = route("    upstream: a\n    request_headers: {set: {X-A: \"a\\x01b\"}}\n");
    check(vec![
        r("invalid regex", route_matching("{path_regex: \"^/a([\"}"), (6, 25), "invalid path_regex `^/a([`"),
        r("path not normal", route_matching("{path: /a/../b}"), (6, 19), "not in normal form").also("write `/b`"),
        r("path without /", route_matching("{path: api}"), (6, 19), "`path` must start with `/`"),
        r("two path rules", route_matching("{path: /a, path_exact: /a}"), (6, 35), "`path_exact` conflicts with another path rule"),
        r("host with port", route_matching("{host: \"api.example.com:8080\"}"), (6, 19), "invalid host `api.example.com:8080`"),
        r("bad method", route_matching("{methods: [GET, \"BAD METHOD\"]}"), (6, 28), "invalid method `BAD METHOD`"),
        r("bad header name", route_matching("{headers: {\"X Bad\": v}}"), (6, 23), "invalid header name `X Bad`"),
        r("bad header value", header_value, (8, 34), "invalid header value"),
        g("listen not IP:port", "server:\n  listen: localhost:80\n", (2, 11), "invalid listen address `localhost:80`"),
        g("bad trusted proxy", gateway("  trusted_proxies: [10.0.0.0/33]\n"), (3, 21), "invalid trusted proxy `10.0.0.0/33`"),
        r("ftp target", targets("[ftp://127.0.0.1:1]"), (3, 15), "unsupported scheme `ftp`; use http:// or https://"),
        r("target with a path", targets("[http://127.0.0.1:1/api]"), (3, 15), "has a path or query"),
        r("target without scheme", targets("[127.0.0.1:1]"), (3, 15), "needs a scheme"),
        r("weight 0", weight_0, (4, 9), "weight must be between 1 and 10000"),
        r("no targets", targets("[]"), (2, 3), "upstream `a` has no targets"),
    ]);
}

#[rustfmt::skip]
#[test]
fn variables_and_file_placement() {
    check(vec![
        g("unset variable", "server:\n  listen: ${NOPE}\n", (2, 11), "variable NOPE is not set"),
        g("unreadable _FILE", "server:\n  listen: ${ADDR}\n", (2, 11), "ADDR_FILE")
            .env("ADDR_FILE", "/nonexistent/gatehouse-secret"),
        r("server in a routes file", "server:\n  listen: 127.0.0.1:1\n", (1, 1), "`server` belongs in gateway.yaml"),
    ]);
}

#[test]
fn defaults_and_secret_files_are_substituted() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let secret = secrets.path().join("greeting");
    std::fs::write(&secret, "hello secret\n").expect("write secret");
    let routes = "routes:\n  - name: hello\n    match: {path_exact: /hello}\n    respond: {body: \"${GREETING}\"}\n";
    let snapshot = load_files(
        &[
            (
                "gateway.yaml",
                "server:\n  listen: ${NOPE:-127.0.0.1:7001}\n",
            ),
            ("routes/r.yaml", routes),
        ],
        &[("GREETING_FILE", secret.to_str().expect("utf-8 path"))],
    )
    .unwrap_or_else(|e| panic!("should load: {e:#?}"));
    assert_eq!(snapshot.server.listen.to_string(), "127.0.0.1:7001");
    let RouteAction::Respond(fixed) = &snapshot.router.routes()[0].action else {
        panic!("hello is a respond route");
    };
    // The trailing newline a secret file usually ends with is not part of the value.
    assert_eq!(&fixed.body[..], b"hello secret");
}

/// A refused section is reported at its key: the key is what the operator must remove, and the
/// first line of its value may be anything.
#[rustfmt::skip]
#[test]
fn sections_not_supported_yet_are_refused_at_their_key() {
    let refused = |mut case: Case| { case.says = vec![case.what, "is not supported yet"]; case };
    let top = |what, text: &str| refused(g(what, gateway(text), (3, 1), ""));
    let in_upstream = |what, text: &str| refused(r(what, upstream_with(text), (4, 5), ""));
    check(vec![
        top("tracing", "tracing:\n  service_name: gatehouse\n"),
        r("max_requests 0", upstream_with("    circuit_breaker:\n      max_requests: 0\n"), (5, 21), "`max_requests` must be at least 1"),
        r("consecutive_failures 0", upstream_with("    outlier_detection:\n      consecutive_failures: 0\n"), (5, 29), "`consecutive_failures` must be at least 1"),
        r("ejection_time 0", upstream_with("    outlier_detection:\n      ejection_time: 0s\n"), (5, 22), "`ejection_time` must be greater than zero"),
        r("max_ejected_percent 101", upstream_with("    outlier_detection:\n      max_ejected_percent: 101\n"), (5, 28), "`max_ejected_percent` must be 1 to 100"),
        in_upstream("discovery", "    discovery:\n      dns: orders.internal:4003\n"),
        // For these the value, not the key, is what is refused.
        r("hash without hash_on", upstream_with("    balance: hash\n"), (4, 14), "`balance: hash` needs `hash_on`"),
        r("hash_on without hash", upstream_with("    hash_on: ip\n"), (4, 14), "`hash_on` applies with `balance: hash` only"),
        r("bad hash_on", upstream_with("    balance: hash\n    hash_on: query:x\n"), (5, 14), "invalid `hash_on` `query:x`"),
        r("bad cookie name", upstream_with("    balance: hash\n    hash_on: 'cookie:a;b'\n"), (5, 14), "invalid `hash_on`"),
    ]);
}

/// Upstream `tls:` files and settings are checked at load, each error where it is written; the
/// certificates are made by the test.
#[rustfmt::skip]
#[test]
fn upstream_tls_files_and_settings_are_checked() {
    let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
    let client = rcgen::generate_simple_self_signed(vec!["gateway".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
    let files = [
        ("ca.pem", ca.cert.pem()),
        ("empty.pem", "no certificate here\n".to_string()),
        ("gw.crt", client.cert.pem()),
        ("gw.key", client.signing_key.serialize_pem()),
        ("other.key", other.signing_key.serialize_pem()),
    ];
    // `tls:` at 4:5, its keys from line 5 at column 7.
    let https = |what, tls: &str, at, says| {
        let mut case = r(what, upstream(&format!("    targets: [https://127.0.0.1:1]\n    tls:\n{tls}")), at, says);
        case.files.extend(files.iter().cloned());
        case
    };
    check(vec![
        https("missing ca_file", "      ca_file: missing.pem\n", (5, 16), "cannot read ca_file `missing.pem`"),
        https("ca_file without certificates", "      ca_file: empty.pem\n", (5, 16), "ca_file `empty.pem` holds no PEM certificate"),
        https("ca_file and insecure_skip_verify", "      ca_file: ca.pem\n      insecure_skip_verify: true\n", (5, 16), "`ca_file` has no effect with `insecure_skip_verify: true`"),
        https("cert_file without key_file", "      cert_file: gw.crt\n", (5, 18), "`cert_file` needs `key_file`"),
        https("key_file without cert_file", "      key_file: gw.key\n", (5, 17), "`key_file` needs `cert_file`"),
        https("key of another certificate", "      cert_file: gw.crt\n      key_file: other.key\n", (5, 18), "key_file `other.key` does not match cert_file `gw.crt`"),
        https("missing cert_file", "      cert_file: missing.crt\n      key_file: gw.key\n", (5, 18), "cannot read `missing.crt`"),
        https("bad server_name", "      server_name: 'not a name'\n", (5, 20), "`not a name` is not a valid server name"),
        https("unknown key", "      ca_fle: ca.pem\n", (5, 7), "unknown field `ca_fle`"),
        r("tls with http targets only", upstream_with("    tls:\n      server_name: a.internal\n"), (4, 5), "`tls` applies to https:// targets"),
    ]);
    // A complete section loads; insecure_skip_verify loads with a warning where it is written.
    let mut ok: Vec<(&str, String)> = files.to_vec();
    ok.push(("gateway.yaml", GATEWAY.to_string()));
    ok.push(("routes/r.yaml", upstream("    targets: [https://127.0.0.1:1]\n    tls:\n      ca_file: ca.pem\n      server_name: a.internal\n      cert_file: gw.crt\n      key_file: gw.key\n")));
    let as_refs = |files: &[(&'static str, String)]| files.iter().map(|(n, t)| (*n, t.clone())).collect::<Vec<_>>();
    let load = |files: &[(&'static str, String)]| {
        let files = as_refs(files);
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        loads(&files)
    };
    assert!(load(&ok).warnings.is_empty());
    ok.pop();
    ok.push(("routes/r.yaml", upstream("    targets: [https://127.0.0.1:1]\n    tls:\n      insecure_skip_verify: true\n")));
    let warnings: Vec<String> = load(&ok)
        .warnings
        .iter()
        .map(|w| { let m = w.mark.unwrap(); format!("{}:{}: {}", m.line, m.column, w.message) })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("5:29: ") && warnings[0].contains("upstream `a`: insecure_skip_verify is true"), "{warnings:?}");
}

/// `retry` values are refused where they are written, with what to write instead.
#[rustfmt::skip]
#[test]
fn retry_settings_are_checked_where_they_are_written() {
    let retry = |what, text: &str, at, says| r(what, upstream_with(&format!("    retry:\n{text}")), at, says);
    check(vec![
        retry("attempts 0", "      attempts: 0\n", (5, 17), "`attempts` (extra tries after the first) must be 1 to 10"),
        retry("attempts 11", "      attempts: 11\n", (5, 17), "must be 1 to 10"),
        retry("backoff 0", "      backoff: 0s\n", (5, 16), "`backoff` must be greater than zero"),
        retry("max_backoff 0", "      max_backoff: 0s\n", (5, 20), "`max_backoff` must be greater than zero"),
        retry("max_backoff below backoff", "      backoff: 100ms\n      max_backoff: 50ms\n", (6, 20), "`max_backoff` (50ms) must be at least `backoff` (100ms)"),
        retry("max_backoff below the default backoff", "      max_backoff: 10ms\n", (5, 20), "must be at least `backoff` (25ms)"),
        retry("backoff above the default max", "      backoff: 1s\n", (5, 16), "`backoff` (1s) is above the default `max_backoff` (250ms); set `max_backoff` too"),
        retry("on empty", "      on: []\n", (5, 7), "`on` is empty, so nothing would be retried").also("connect_error, 502, 503, 504"),
        retry("on 404", "      on: [connect_error, 404]\n", (5, 27), "status 404 says the request itself is wrong").also("only 408 and 429"),
        retry("on 200", "      on: [200]\n", (5, 12), "status 200 is not a failure"),
        retry("on 600", "      on: [600]\n", (5, 12), "600 is not an HTTP status"),
        retry("on 5xx", "      on: [5xx]\n", (5, 12), "invalid retry condition `5xx`: write connect_error, timeout, reset, or a status code"),
        retry("on twice", "      on: [503, 503]\n", (5, 17), "`503` is listed twice in `on`"),
        retry("methods empty", "      methods: []\n", (5, 7), "`methods` is empty").also("GET, HEAD, OPTIONS, PUT, DELETE"),
        retry("methods CONNECT", "      methods: [GET, CONNECT]\n", (5, 22), "CONNECT cannot be retried"),
        retry("methods twice", "      methods: [GET, get]\n", (5, 22), "`get` is listed twice in `methods`"),
        retry("bad method", "      methods: ['G T']\n", (5, 17), "invalid method `G T`"),
        retry("budget percent", "      budget:\n        percent: 101\n", (6, 18), "`percent` must be 0 to 100"),
        retry("budget window short", "      budget:\n        window: 500ms\n", (6, 17), "`window` must be 1s to 1h"),
        retry("budget window long", "      budget:\n        window: 2h\n", (6, 17), "`window` must be 1s to 1h"),
        retry("budget of nothing", "      budget: {percent: 0, min_retries: 0}\n", (5, 7), "allows no retry at all"),
        retry("unknown key", "      attemps: 3\n", (5, 7), "did you mean `attempts`"),
    ]);
    let snapshot = loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &upstream_with("    retry:\n      attempts: 3\n      backoff: 10ms\n      max_backoff: 1s\n      on: [connect_error, timeout, 429, 500]\n      methods: [get, POST]\n      budget: {percent: 50, min_retries: 0, window: 30s}\n"))]);
    let upstream = &snapshot.upstreams[0];
    let policy = upstream.retry.as_ref().expect("retry is built");
    use gatehouse::upstream::retry::{BudgetSettings, RetryOn};
    use std::time::Duration;
    assert_eq!(policy.attempts, 3);
    assert_eq!((policy.backoff, policy.max_backoff), (Duration::from_millis(10), Duration::from_secs(1)));
    assert_eq!(&*policy.on, [RetryOn::ConnectError, RetryOn::Timeout, RetryOn::Status(429), RetryOn::Status(500)]);
    assert_eq!(&*policy.methods, [http::Method::GET, http::Method::POST]);
    let budget = BudgetSettings { percent: 50, min_retries: 0, window: Duration::from_secs(30) };
    assert_eq!(policy.budget, budget);
    assert_eq!(upstream.retry_budget.as_ref().expect("a budget with retry").settings(), budget);
    // Without `retry`, neither.
    let plain = loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &upstream_with(""))]);
    assert!(plain.upstreams[0].retry.is_none() && plain.upstreams[0].retry_budget.is_none());
}

/// JWT providers, auth, authorize and cors are checked at load with their positions: a policy
/// that cannot be enforced as written must never start serving.
#[rustfmt::skip]
#[test]
fn identity_settings_are_checked_where_they_are_written() {
    let provider = |body: &str| gateway(&format!("jwt:\n  providers:\n    default:\n{body}"));
    let secret = "      secret: abcdefghijklmnopqrstuvwxyz0123456789\n";
    check(vec![
        g("alg none", provider(&format!("      algorithms: [none]\n{secret}")), (6, 20), "`none` is never accepted"),
        g("unknown alg", provider(&format!("      algorithms: [HS257]\n{secret}")), (6, 20), "unknown algorithm `HS257`"),
        g("two key sources", provider(&format!("      algorithms: [HS256]\n{secret}      public_key_file: k.pem\n")), (8, 24), "exactly one of"),
        g("no key source", provider("      algorithms: [HS256]\n"), (5, 5), "needs one of `secret`"),
        g("short secret", provider("      algorithms: [HS256]\n      secret: short\n"), (5, 5), "at least 32 bytes"),
        g("missing key file", provider("      algorithms: [RS256]\n      public_key_file: missing.pem\n"), (7, 24), "cannot read public_key_file"),
        g("jwks_url scheme", provider("      algorithms: [RS256]\n      jwks_url: ftp://idp.example/jwks\n"), (7, 17), "jwks_url: `ftp://idp.example/jwks`: scheme `ftp` is not supported; use https://"),
        g("jwks_url relative", provider("      algorithms: [RS256]\n      jwks_url: /jwks.json\n"), (7, 17), "not an absolute URL"),
        g("jwks_url credentials", provider("      algorithms: [RS256]\n      jwks_url: https://me:pw@idp.example/jwks\n"), (7, 17), "carries credentials"),
        g("jwks_url and a file", provider("      algorithms: [RS256]\n      jwks_file: k.json\n      jwks_url: https://idp.example/jwks\n"), (8, 17), "`jwks_url` given together with another key source"),
        g("jwks_url with HS", provider("      algorithms: [HS256]\n      jwks_url: https://idp.example/jwks\n"), (5, 5), "algorithm confusion"),
        g("jwks_refresh without jwks_url", provider(&format!("      algorithms: [HS256]\n{secret}      jwks_refresh: 5m\n")), (8, 21), "`jwks_refresh` only applies with `jwks_url`"),
        g("jwks_refresh too short", provider("      algorithms: [RS256]\n      jwks_url: https://idp.example/jwks\n      jwks_refresh: 500ms\n"), (8, 21), "`jwks_refresh` must be between 1s and 1d"),
        g("reserved header", provider(&format!("      algorithms: [HS256]\n{secret}      forward_claims: {{sub: Host}}\n")), (8, 29), "cannot carry a claim"),
        r("unknown provider", route("    upstream: a\n    auth: {jwt: nope}\n"), (8, 17), "unknown jwt provider `nope`"),
        r("authorize without auth", route("    upstream: a\n    authorize:\n      - roles: [admin]\n"), (9, 7), "`authorize` needs `auth`"),
        r("cors star with credentials", route("    upstream: a\n    cors:\n      origins: ['*']\n      credentials: true\n"), (9, 7), "cannot be combined with credentials"),
    ]);
}

/// Checks made after parsing must still point at the value they are about, not at the route or
/// upstream name or nowhere; an error about a whole block mapping points where it starts.
#[rustfmt::skip]
#[test]
fn values_checked_after_parsing_keep_their_position() {
    let no_match = format!("{UPSTREAM_A}routes:\n  - name: r\n    upstream: a\n");
    check(vec![
        r("route without match", no_match, (5, 5), "missing field `match`"),
        g("missing routes_dir", gateway("routes_dir: missing\n"), (3, 13), "cannot read routes_dir"),
        g("max_header_bytes too small", gateway("  max_header_bytes: 100\n"), (3, 21), "max_header_bytes must be at least 1KiB"),
        r("bad rewrite prefix", route("    upstream: a\n    rewrite: {prefix: api, to: /v1}\n"), (8, 23), "`rewrite.prefix` must be"),
        r("timeout on a respond route", route("    respond: {status: 204}\n    timeout: 5s\n"), (8, 14), "`timeout` only applies"),
        r("route timeout zero", route("    upstream: a\n    timeout: 0s\n"), (8, 14), "`timeout` must be greater than zero"),
        r("upstream timeout zero", upstream_with("    timeout: 0s\n"), (4, 14), "must be greater than zero"),
    ]);
}

/// A route naming an upstream that is defined but invalid gets no second, false error: the
/// upstream is not "unknown", and a route timeout it inherits was not written on the route.
#[rustfmt::skip]
#[test]
fn an_invalid_upstream_is_reported_once() {
    let used = |settings: &str| format!("{}routes:\n  - name: r\n    match: {{path: /x}}\n    upstream: a\n", upstream(settings));
    let with_a_target = |setting: &str| used(&format!("    targets: [http://127.0.0.1:1]\n{setting}"));
    check(vec![
        r("ftp target", used("    targets: [ftp://127.0.0.1:1]\n"), (3, 15), "unsupported scheme `ftp`"),
        r("unknown field", with_a_target("    tiemout: 5s\n"), (4, 5), "unknown field `tiemout`"),
        r("zero timeout", with_a_target("    timeout: 0s\n"), (4, 14), "must be greater than zero"),
    ]);
}

#[test]
fn every_error_in_every_file_is_reported_in_order() {
    let gw = gateway("  idle_timeout: soon\n");
    // Route one fails only when names are resolved, after route three failed to parse: the
    // report must still read top to bottom.
    let a = "\
upstreams:
  a:
    targets: [http://127.0.0.1:1]
routes:
  - name: one
    match: {path: /one}
    upstream: b
  - name: two
    match: {path: /two}
    upstream: a
  - name: three
    match: {path: /three}
    upstream: a
    timout: 5s
";
    let b = "routes:\n  - name: four\n    match: {path: four}\n    upstream: a\n";
    let found = errors_of(
        &[
            ("gateway.yaml", &gw),
            ("routes/a.yaml", a),
            ("routes/b.yaml", b),
        ],
        &[],
    );
    let places: Vec<(&str, usize, usize)> = found
        .iter()
        .map(|(f, l, c, _)| (f.as_str(), *l, *c))
        .collect();
    assert_eq!(
        places,
        vec![
            ("gateway.yaml", 3, 17),
            ("routes/a.yaml", 7, 15),
            ("routes/a.yaml", 14, 5),
            ("routes/b.yaml", 3, 19),
        ],
        "{found:#?}"
    );
    let says = [
        "invalid duration \"soon\"",
        "unknown upstream `b`",
        "unknown field `timout`",
        "must start with `/`",
    ];
    for ((_, _, _, message), phrase) in found.iter().zip(says) {
        assert!(
            message.contains(phrase),
            "{message:?} should say {phrase:?}"
        );
    }
}

/// The config must load; returns the snapshot or fails listing the errors.
fn loads(files: &[(&str, &str)]) -> Snapshot {
    load_files(files, &[]).unwrap_or_else(|e| panic!("should load: {e:#?}"))
}

/// Upstream `circuit_breaker:` with the breaker's keys: each bad value at its position.
#[rustfmt::skip]
#[test]
fn circuit_breaker_values_are_checked_where_written() {
    let cb = |keys: &str| upstream_with(&format!("    circuit_breaker:\n{keys}"));
    check(vec![
        r("ratio 0", cb("      failure_ratio: 0\n"), (5, 22), "`failure_ratio` must be greater than 0 and at most 1"),
        r("ratio below 0", cb("      failure_ratio: -0.5\n"), (5, 22), "`failure_ratio` must be greater than 0"),
        r("ratio over 1", cb("      failure_ratio: 1.01\n"), (5, 22), "`failure_ratio` must be greater than 0 and at most 1"),
        r("ratio NaN", cb("      failure_ratio: NaN\n"), (5, 22), "`failure_ratio` must be greater than 0"),
        r("ratio word", cb("      failure_ratio: half\n"), (5, 22), "expected a number"),
        r("min_requests 0", cb("      min_requests: 0\n"), (5, 21), "`min_requests` must be at least 1"),
        r("consecutive_failures 0", cb("      consecutive_failures: 0\n"), (5, 29), "`consecutive_failures` must be at least 1"),
        r("half_open_requests 0", cb("      half_open_requests: 0\n"), (5, 27), "`half_open_requests` must be 1 to 10000"),
        r("half_open_requests 10001", cb("      half_open_requests: 10001\n"), (5, 27), "`half_open_requests` must be 1 to 10000"),
        r("window 0", cb("      window: 0s\n"), (5, 15), "`window` must be greater than zero"),
        r("window 9ms", cb("      window: 9ms\n"), (5, 15), "`window` must be at least 10ms"),
        r("open_for 0", cb("      open_for: 0ms\n"), (5, 17), "`open_for` must be greater than zero"),
        r("statuses empty", cb("      failure_statuses: []\n"), (5, 25), "`failure_statuses` is empty"),
        r("status 399", cb("      failure_statuses: [502, 399]\n"), (5, 31), "`failure_statuses`: 399 is not a 4xx or 5xx status"),
        r("status 600", cb("      failure_statuses: [600]\n"), (5, 26), "`failure_statuses`: 600 is not a 4xx or 5xx status"),
        r("status twice", cb("      failure_statuses: [502, 503, 502]\n"), (5, 36), "`failure_statuses` lists 502 twice"),
        r("status word", cb("      failure_statuses: [bad]\n"), (5, 26), "expected a non-negative integer"),
        r("max_requests 0 with a breaker", cb("      max_requests: 0\n      open_for: 1s\n"), (5, 21), "`max_requests` must be at least 1"),
    ]);
}

/// The breaker is on when `circuit_breaker` has a key besides `max_requests`; keys left out
/// take CONFIG.md's defaults, and the boundary values load.
#[test]
fn circuit_breaker_settings_and_defaults() {
    use gatehouse::upstream::breaker::BreakerSettings;
    use std::time::Duration;
    let breaker = |keys: &str| {
        let text = upstream_with(&format!("    circuit_breaker:\n{keys}"));
        let snapshot = loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &text)]);
        let upstream = &snapshot.upstreams[0];
        (
            upstream.breaker.as_ref().map(|b| b.settings().clone()),
            upstream.bulkhead.is_some(),
        )
    };
    assert_eq!(
        breaker("      max_requests: 10\n"),
        (None, true),
        "the bulkhead alone"
    );
    assert_eq!(
        breaker("      open_for: 5s\n"),
        (
            Some(BreakerSettings {
                open_for: Duration::from_secs(5),
                ..BreakerSettings::default()
            }),
            false
        )
    );
    let defaults = BreakerSettings::default();
    assert_eq!(
        (
            defaults.failure_ratio,
            defaults.min_requests,
            defaults.consecutive_failures,
            defaults.window,
            defaults.open_for,
            defaults.half_open_requests,
            &*defaults.failure_statuses,
        ),
        (
            0.5,
            20,
            5,
            Duration::from_secs(10),
            Duration::from_secs(30),
            3,
            &[502, 503, 504][..]
        )
    );
    let all = "      max_requests: 7\n      failure_ratio: 1\n      min_requests: 1\n      \
               consecutive_failures: 1\n      window: 10ms\n      open_for: 1ms\n      \
               half_open_requests: 10000\n      failure_statuses: [599, 400, 500]\n";
    assert_eq!(
        breaker(all),
        (
            Some(BreakerSettings {
                failure_ratio: 1.0,
                min_requests: 1,
                consecutive_failures: 1,
                window: Duration::from_millis(10),
                open_for: Duration::from_millis(1),
                half_open_requests: 10_000,
                failure_statuses: Box::new([400, 500, 599]),
            }),
            true
        )
    );
}

/// `compress` is off unless set to true.
#[test]
fn compress_is_read_from_upstream_routes() {
    let compress = |extra: &str| {
        let routes = route(&format!("    upstream: a\n{extra}"));
        let snapshot = loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &routes)]);
        snapshot.router.routes()[0].compress.is_some()
    };
    assert!(compress("    compress: true\n"));
    assert!(!compress("    compress: false\n"));
    assert!(!compress(""));
}

/// A framing or connection header set by configuration would make responses hang or lie
/// about the connection: each is refused where it is written, with the reason.
#[rustfmt::skip]
#[test]
fn framing_and_connection_headers_cannot_be_configured() {
    let set = |rules: &str, header: &str| route(&format!("    upstream: a\n    {rules}:\n      set: {{{header}: x}}\n"));
    let remove = |rules: &str, header: &str| route(&format!("    upstream: a\n    {rules}:\n      remove: [{header}]\n"));
    let respond = |header: &str| route(&format!("    respond:\n      headers: {{{header}: x}}\n"));
    check(vec![
        r("response Content-Length", set("response_headers", "Content-Length"), (9, 13), "`Content-Length` is not allowed in `response_headers.set`").also("frames every message"),
        r("request Transfer-Encoding", set("request_headers", "Transfer-Encoding"), (9, 13), "`Transfer-Encoding` is not allowed in `request_headers.set`"),
        r("response Connection", set("response_headers", "Connection"), (9, 13), "`Connection` is not allowed").also("one connection"),
        r("request Keep-Alive", set("request_headers", "keep-alive"), (9, 13), "`keep-alive` is not allowed"),
        r("response Upgrade", set("response_headers", "Upgrade"), (9, 13), "`Upgrade` is not allowed"),
        r("request TE", set("request_headers", "TE"), (9, 13), "`TE` is not allowed"),
        r("response Trailer", set("response_headers", "Trailer"), (9, 13), "`Trailer` is not allowed"),
        r("request Proxy-Connection", set("request_headers", "Proxy-Connection"), (9, 13), "`Proxy-Connection` is not allowed"),
        r("response Host", set("response_headers", "Host"), (9, 13), "`Host` is not allowed in `response_headers.set`").also("request header"),
        r("removing Content-Length", remove("response_headers", "Content-Length"), (9, 16), "not allowed in `response_headers.remove`"),
        r("removing Host upstream", remove("request_headers", "Host"), (9, 16), "always sends `Host`").also("preserve_host"),
        r("respond Content-Length", respond("Content-Length"), (8, 17), "`Content-Length` is not allowed in `respond.headers`"),
        r("respond Host", respond("Host"), (8, 17), "`Host` is not allowed in `respond.headers`"),
    ]);
    // Setting `Host` upstream is how a route names the virtual host it wants.
    loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &set("request_headers", "Host"))]);
}

#[rustfmt::skip]
#[test]
fn log_levels_and_filters_are_checked() {
    let level = |value: &str| gateway(&format!("logging:\n  level: \"{value}\"\n"));
    check(vec![
        g("unknown word", level("verbose"), (4, 10), "invalid log level `verbose`: `verbose` is not a level").also("info,gatehouse=debug"),
        g("unknown level in a directive", level("info,gatehouse=verbose"), (4, 10), "`verbose` is not a level"),
        g("directive without target", level("info,=debug"), (4, 10), "`` is not a module path"),
        g("bad target", level("info,gate house=debug"), (4, 10), "`gate house` is not a module path"),
        g("empty directive", level("info,,debug"), (4, 10), "an empty directive"),
        g("empty", level(""), (4, 10), "an empty directive"),
    ]);
    for good in ["info", "WARN", "off", "info,gatehouse=debug", "hyper::proto=warn, debug"] {
        let snapshot = loads(&[("gateway.yaml", &level(good))]);
        assert_eq!(snapshot.logging.level, good);
    }
}

/// `logging.format` reaches the running config as written, and JSON when it is left out.
#[test]
fn log_format_is_carried_into_the_snapshot() {
    let format = |text: &str| loads(&[("gateway.yaml", &gateway(text))]).logging.format;
    assert_eq!(format("logging:\n  format: text\n"), LogFormat::Text);
    assert_eq!(format("logging:\n  format: json\n"), LogFormat::Json);
    assert_eq!(format(""), LogFormat::Json);
}

/// A key written with nothing after it (or `{}`) is refused with what to write: read as
/// absent it would, for `auth:`, make the route public.
#[rustfmt::skip]
#[test]
fn a_key_left_empty_is_an_error_not_an_absent_key() {
    let in_route = |what, text: &str, says| r(what, route(&format!("    upstream: a\n{text}")), (8, 5), says);
    let provider = |body: &str| gateway(&format!("jwt:\n  providers:\n    default:\n      algorithms: [HS256]\n      secret: abcdefghijklmnopqrstuvwxyz0123456789\n{body}"));
    check(vec![
        in_route("auth with a comment", "    auth:\n      # jwt: default\n", "`auth` is empty; write its settings, or remove `auth`").also("`jwt`, `optional`, `forward_token`"),
        in_route("auth {}", "    auth: {}\n", "`auth` is empty"),
        in_route("auth ~", "    auth: ~\n", "`auth` is empty"),
        in_route("cors", "    cors:\n", "`cors` is empty"),
        in_route("request_headers", "    request_headers:\n", "`request_headers` is empty"),
        in_route("authorize", "    authorize:\n", "`authorize` has no value"),
        in_route("timeout", "    timeout:\n", "`timeout` has no value"),
        in_route("rate_limit", "    rate_limit:\n", "`rate_limit` has no value"),
        in_route("cache", "    cache:\n", "`cache` is empty").also("`ttl`, `vary`, `per_user`, `stale_if_error`"),
        in_route("compress", "    compress:\n", "`compress` has no value"),
        r("retry", upstream_with("    retry:\n"), (4, 5), "`retry` is empty; write its settings, or remove `retry`").also("`attempts`, `backoff`, `max_backoff`, `on`, `methods`, `budget`"),
        r("retry.budget", upstream_with("    retry:\n      budget: {}\n"), (5, 7), "`budget` is empty").also("`percent`, `min_retries`, `window`"),
        r("circuit_breaker", upstream_with("    circuit_breaker: {}\n"), (4, 5), "`circuit_breaker` is empty").also("`max_requests`"),
        r("health_check", upstream_with("    health_check:\n"), (4, 5), "`health_check` is empty; write its settings, or remove `health_check`").also("`path`, `interval`, `timeout`, `healthy_threshold`, `unhealthy_threshold`"),
        r("health_check {}", upstream_with("    health_check: {}\n"), (4, 5), "`health_check` is empty"),
        r("upstream tls", upstream_with("    tls:\n      # ca_file: ca.pem\n"), (4, 5), "`tls` is empty").also("`ca_file`, `server_name`, `insecure_skip_verify`, `cert_file`, `key_file`"),
        g("server tls", gateway("  tls:\n"), (3, 3), "`tls` is empty; write its settings, or remove `tls`"),
        r("targets", upstream("    targets:\n"), (3, 5), "`targets` has no value").lacks("no targets"),
        r("match", format!("{UPSTREAM_A}routes:\n  - name: r\n    match: {{}}\n    upstream: a\n"), (6, 5), "`match` is empty"),
        g("issuer", provider("      issuer:\n"), (8, 7), "`issuer` has no value"),
        g("audience", provider("      audience: ~\n"), (8, 7), "`audience` has no value"),
        g("server", "server:\n  # listen: 127.0.0.1:1\n", (1, 1), "`server` is empty"),
        g("jwt", gateway("jwt:\n"), (3, 1), "`jwt` is empty"),
        g("routes_dir", gateway("routes_dir:\n"), (3, 1), "`routes_dir` has no value"),
    ]);
    // A file may hold no upstreams or routes yet.
    loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", "upstreams:\nroutes: []\n")]);
}

/// `health_check` values are checked where they are written.
#[rustfmt::skip]
#[test]
fn health_check_settings_are_checked() {
    let hc = |what, text: &str, at, says| r(what, upstream_with(&format!("    health_check:\n{text}")), at, says);
    check(vec![
        hc("relative path", "      path: health\n", (5, 13), "health check `path` `health` must start with `/`"),
        hc("absolute URL", "      path: http://x/health\n", (5, 13), "must start with `/`"),
        hc("space in path", "      path: '/a b'\n", (5, 13), "use visible ASCII without `#`"),
        hc("fragment", "      path: '/a#b'\n", (5, 13), "use visible ASCII without `#`"),
        hc("interval 0", "      interval: 0s\n", (5, 17), "`interval` must be greater than zero"),
        hc("timeout 0", "      timeout: 0s\n", (5, 16), "`timeout` must be greater than zero"),
        hc("timeout over interval", "      interval: 2s\n      timeout: 3s\n", (6, 16), "health check `timeout` (3s) must not exceed `interval` (2s)"),
        hc("interval under the default timeout", "      interval: 500ms\n", (5, 17), "shorter than the default `timeout` (1s)"),
        hc("healthy_threshold 0", "      healthy_threshold: 0\n", (5, 26), "`healthy_threshold` must be 1 to 100"),
        hc("unhealthy_threshold 101", "      unhealthy_threshold: 101\n", (5, 28), "`unhealthy_threshold` must be 1 to 100"),
        hc("unknown key", "      port: 8081\n", (5, 7), "unknown field `port`"),
    ]);
}

#[test]
fn health_check_defaults_and_values_reach_the_upstream() {
    let load = |text: &str| {
        let yaml = upstream_with(text);
        let snapshot = loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &yaml)]);
        let upstream = &snapshot.upstreams[0];
        upstream.health.as_ref().map(|h| h.settings().clone())
    };
    assert_eq!(load(""), None);
    let defaults = load("    health_check:\n      path: /health\n").unwrap();
    assert_eq!(
        defaults,
        gatehouse::upstream::health::HealthSettings::default()
    );
    assert_eq!(&*defaults.path, "/health");
    assert_eq!(defaults.interval, std::time::Duration::from_secs(5));
    assert_eq!(defaults.timeout, std::time::Duration::from_secs(1));
    assert_eq!(
        (defaults.healthy_threshold, defaults.unhealthy_threshold),
        (2, 3)
    );
    let set = load(
        "    health_check:\n      path: /status?deep=1\n      interval: 2s\n      timeout: 2s\n      healthy_threshold: 1\n      unhealthy_threshold: 100\n",
    )
    .unwrap();
    assert_eq!(&*set.path, "/status?deep=1");
    assert_eq!(
        (set.interval, set.timeout),
        (
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(2)
        )
    );
    assert_eq!((set.healthy_threshold, set.unhealthy_threshold), (1, 100));
}

#[rustfmt::skip]
#[test]
fn rewrites_that_never_apply_and_bodies_that_cannot_be_sent() {
    let matching = |rule: &str, rest: &str| format!("{UPSTREAM_A}routes:\n  - name: r\n    match: {{{rule}}}\n    upstream: a\n{rest}");
    check(vec![
        r("strip beside the prefix", route("    upstream: a\n    strip_prefix: /y\n"), (8, 19), "`strip_prefix` `/y` can never apply: the route matches path prefix /x"),
        r("strip on a shorter segment", route("    upstream: a\n    strip_prefix: /xy\n"), (8, 19), "can never apply"),
        r("rewrite beside the prefix", route("    upstream: a\n    rewrite: {prefix: /y, to: /z}\n"), (8, 23), "`rewrite.prefix` `/y` can never apply"),
        r("strip beside the exact path", matching("path_exact: /a/b", "    strip_prefix: /a/c\n"), (8, 19), "the route matches exact path /a/b"),
        r("204 with a body", route("    respond: {status: 204, body: hi}\n"), (7, 34), "a 204 response has no body"),
        r("304 with a body", route("    respond: {status: 304, body: hi}\n"), (7, 34), "a 304 response has no body"),
        r("1xx", route("    respond: {status: 101}\n"), (7, 23), "expected 200 to 599"),
        r("compress on a respond route", route("    respond: {body: hi}\n    compress: true\n"), (8, 15), "`compress` only applies to routes with `upstream`"),
        r("compress not a bool", route("    upstream: a\n    compress: gzip\n"), (8, 15), "expected true or false, found `gzip`"),
    ]);
    for (rule, rest) in [
        ("path: /x", "    strip_prefix: /x/v1\n"),
        ("path: /x/v1", "    strip_prefix: /x\n"),
        ("path_exact: /a/b", "    strip_prefix: /a\n"),
        ("path_regex: \"^/q\"", "    strip_prefix: /anything\n"),
    ] {
        loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &matching(rule, rest))]);
    }
    loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &route("    respond: {status: 204}\n"))]);
}

/// Places and messages of every error, for tests that expect several.
fn all_errors(files: &[(&str, &str)]) -> Vec<(String, usize, usize, String)> {
    errors_of(files, &[])
}

fn places(found: &[Found]) -> Vec<(&str, usize, usize)> {
    found
        .iter()
        .map(|(f, l, c, _)| (f.as_str(), *l, *c))
        .collect()
}

#[test]
fn every_mistake_in_a_block_is_reported() {
    let server = "server:\n  listen: localhost:80\n  idle_timout: 5s\n  max_request_body: 10XB\n  workers: 0\n";
    let found = all_errors(&[("gateway.yaml", server)]);
    assert_eq!(
        places(&found),
        vec![
            ("gateway.yaml", 2, 11),
            ("gateway.yaml", 3, 3),
            ("gateway.yaml", 4, 21),
            ("gateway.yaml", 5, 12)
        ],
        "{found:#?}"
    );

    let routes = format!("{UPSTREAM_A}routes:\n  - name: r\n    match: {{path: x}}\n    upstream: a\n    colour: red\n    timeout: 5x\n");
    let found = all_errors(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", &routes)]);
    assert_eq!(
        places(&found),
        vec![
            ("routes/r.yaml", 6, 19),
            ("routes/r.yaml", 8, 5),
            ("routes/r.yaml", 9, 14)
        ],
        "{found:#?}"
    );
    assert!(found[1].3.contains("unknown field `colour`"), "{found:#?}");
    assert!(found[2].3.contains("invalid duration"), "{found:#?}");

    // The first copy of a name has an error of its own; the second is still a duplicate.
    let a = route("    upstream: a\n    colour: red\n");
    let b = "routes:\n  - name: r\n    match: {path: /b}\n    upstream: a\n";
    let found = all_errors(&[
        ("gateway.yaml", GATEWAY),
        ("routes/a.yaml", &a),
        ("routes/b.yaml", b),
    ]);
    assert_eq!(
        places(&found),
        vec![("routes/a.yaml", 8, 5), ("routes/b.yaml", 2, 11)],
        "{found:#?}"
    );
    assert!(
        found[1]
            .3
            .contains("duplicate route `r` (first defined at routes/a.yaml:5:11)"),
        "{found:#?}"
    );
}

/// An error is reported once, where it is; what merely follows from it is not a second mistake.
#[rustfmt::skip]
#[test]
fn follow_on_errors_are_not_reported() {
    let provider = |body: &str, route_extra: &str| {
        let gw = gateway(&format!("jwt:\n  providers:\n    default:\n{body}"));
        let mut case = g("", gw, (0, 0), "");
        case.files.push(("routes/r.yaml", route(&format!("    upstream: a\n    auth: {{jwt: default}}\n{route_extra}"))));
        case
    };
    let at = |mut case: Case, what, line, column, says| {
        case.what = what;
        case.at = ("gateway.yaml", line, column);
        case.says = vec![says];
        case
    };
    check(vec![
        at(provider("      algorithms: [HS256]\n      secret: short\n", ""), "invalid provider used by a route", 5, 5, "at least 32 bytes"),
        at(provider("      algoritms: [HS256]\n      secret: abcdefghijklmnopqrstuvwxyz0123456789\n", ""), "misspelled algorithms", 6, 7, "did you mean `algorithms`?"),
        at(provider("      algorithms: [HS256]\n      secret: ${NOPE}\n", ""), "unset secret", 7, 15, "variable NOPE is not set"),
        r("upstream of the wrong type", route("    upstream: [a]\n"), (7, 15), "expected a string"),
        r("misspelled targets", upstream("    targts: [http://127.0.0.1:1]\n"), (3, 5), "did you mean `targets`?"),
        r("target of the wrong type", upstream("    targets: [[http://127.0.0.1:1]]\n"), (3, 15), "a URL"),
        r("auth of the wrong type", route("    upstream: a\n    auth: {jwt: [x]}\n    authorize:\n      - roles: [admin]\n"), (8, 17), "expected a string"),
        r("auth left empty", route("    upstream: a\n    auth:\n    authorize:\n      - roles: [admin]\n"), (8, 5), "`auth` is empty"),
    ]);
}

#[test]
fn a_route_that_can_never_be_chosen_is_a_warning_naming_both() {
    let two = |first: &str, second: &str| {
        format!(
            "{UPSTREAM_A}routes:\n  - name: first\n    match: {{{first}}}\n    upstream: a\n  - name: second\n    match: {{{second}}}\n    upstream: a\n"
        )
    };
    let warnings = |text: &str| -> Vec<String> {
        let snapshot = loads(&[("gateway.yaml", GATEWAY), ("routes/r.yaml", text)]);
        let dir_free = |w: &gatehouse::config::ConfigError| {
            let file = w.file.file_name().unwrap().to_string_lossy().to_string();
            let m = w.mark.expect("a warning has a position");
            format!("{file}:{}:{}: {}", m.line, m.column, w.message)
        };
        snapshot.warnings.iter().map(dir_free).collect()
    };
    let shadowed = warnings(&two("path: /x", "path: /x"));
    assert_eq!(shadowed.len(), 1, "{shadowed:?}");
    assert!(
        shadowed[0].starts_with(
            "r.yaml:8:11: warning: route `second` can never be chosen: route `first` ("
        ),
        "{shadowed:?}"
    );
    assert!(shadowed[0].contains("r.yaml:5:11)"), "{shadowed:?}");
    for (first, second) in [
        ("path: /x, methods: [GET, POST]", "path: /x, methods: [GET]"),
        (
            "path: /x, headers: {X-A: '1'}",
            "path: /x, headers: {X-A: '1', X-B: '2'}",
        ),
        (
            "path_exact: /x, host: a.example",
            "host: a.example, path_exact: /x",
        ),
    ] {
        assert_eq!(warnings(&two(first, second)).len(), 1, "{first} / {second}");
    }
    for (first, second) in [
        ("path: /x", "path: /y"),
        ("path: /x", "path_exact: /x"),
        ("path: /x, methods: [GET]", "path: /x, methods: [POST]"),
        // Routes with methods or headers are tried before those without.
        ("path: /x", "path: /x, methods: [GET]"),
        ("path: /x", "path: /x, headers: {X-A: '1'}"),
        ("path: /x, host: a.example", "path: /x, host: b.example"),
    ] {
        assert_eq!(
            warnings(&two(first, second)),
            Vec::<String>::new(),
            "{first} / {second}"
        );
    }
}

#[rustfmt::skip]
#[test]
fn an_empty_list_is_not_a_way_to_switch_a_check_off() {
    let with_provider = |body: &str| gateway(&format!("jwt:\n  providers:\n    default:\n      algorithms: [HS256]\n      secret: abcdefghijklmnopqrstuvwxyz0123456789\n{body}"));
    let rule = |rule: &str| route(&format!("    upstream: a\n    auth: {{jwt: default, optional: true}}\n    authorize:\n      - {rule}\n"));
    let authorize = |what, text: &str, at, says| {
        let mut case = r(what, rule(text), at, says);
        case.files[0].1 = with_provider("");
        case
    };
    check(vec![
        g("audience", with_provider("      audience: []\n"), (8, 17), "`audience: []` accepts no audience"),
        authorize("roles", "roles: []", (10, 16), "`roles: []` requires nothing"),
        authorize("scopes", "scopes: []", (10, 17), "`scopes: []` requires nothing"),
    ]);
    loads(&[("gateway.yaml", &with_provider("      audience: [api]\n")), ("routes/r.yaml", &rule("roles: [admin]"))]);
}

/// A certificate for `name` and its key, as PEM.
fn certificate(name: &str) -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// The certificates entry of [`tls_gateway`], for cases that write the rest themselves.
const CERTS: &str = "    certificates:\n      - cert: certs/a.crt\n        key: certs/a.key\n";

/// gateway.yaml with `server.tls` (key at 3:3): `listen` at 4:13, and one certificates entry
/// whose `cert` value is at 6:15 and `key` value at 7:14.
fn tls_gateway(cert: &str, key: &str) -> String {
    gateway(&format!(
        "  tls:\n    listen: 127.0.0.1:0\n    certificates:\n      - cert: {cert}\n        key: {key}\n"
    ))
}

/// `server.tls`: files that cannot be read or used, and a key of another certificate, are
/// reported at the entry's `cert` or `key`, naming the files.
#[rustfmt::skip]
#[test]
fn tls_settings_and_files_are_checked_where_they_are_written() {
    let (a_cert, a_key) = certificate("a.test");
    let (_, b_key) = certificate("b.test");
    let with = |what, files: &[(&'static str, &str)], cert: &str, key: &str, at, says| {
        let mut case = g(what, tls_gateway(cert, key), at, says);
        case.files.extend(files.iter().map(|(n, t)| (*n, t.to_string())));
        case
    };
    let with_text = |what, files: &[(&'static str, &str)], text: String, at, says| {
        let mut case = g(what, text, at, says);
        case.files.extend(files.iter().map(|(n, t)| (*n, t.to_string())));
        case
    };
    let pair = [("certs/a.crt", a_cert.as_str()), ("certs/a.key", a_key.as_str())];
    let all = [pair[0], pair[1], ("certs/b.key", b_key.as_str()), ("certs/junk.pem", "not PEM\n")];
    check(vec![
        with("missing cert", &pair, "certs/none.crt", "certs/a.key", (6, 15), "cannot read `certs/none.crt`"),
        with("missing key", &pair, "certs/a.crt", "certs/none.key", (7, 14), "cannot read `certs/none.key`"),
        with("cert not PEM", &all, "certs/junk.pem", "certs/a.key", (6, 15), "`certs/junk.pem` holds no PEM certificate"),
        with("key not PEM", &all, "certs/a.crt", "certs/junk.pem", (7, 14), "`certs/junk.pem` holds no usable PEM private key"),
        with("certificate as key", &all, "certs/a.crt", "certs/a.crt", (7, 14), "holds no usable PEM private key"),
        with("mismatched key", &all, "certs/a.crt", "certs/b.key", (6, 15), "the key in `certs/b.key` does not match the certificate in `certs/a.crt`"),
        g("empty certificates", gateway("  tls:\n    listen: 127.0.0.1:0\n    certificates: []\n"), (5, 19), "`certificates` is empty"),
        g("no certificates", gateway("  tls:\n    listen: 127.0.0.1:0\n"), (3, 3), "`tls` needs `certificates`"),
        with_text("no listen", &pair, gateway(&format!("  tls:\n{CERTS}")), (3, 3), "`tls` needs `listen`"),
        with_text("same port as server.listen", &pair, format!("server:\n  listen: 127.0.0.1:8443\n  tls:\n    listen: 127.0.0.1:8443\n{CERTS}"), (4, 13), "server.tls.listen must differ from server.listen"),
        with_text("client_ca", &pair, format!("{}    client_ca: certs/a.crt\n", tls_gateway("certs/a.crt", "certs/a.key")), (8, 16), "`client_ca` needs `client_auth: optional` or `client_auth: required`"),
        with_text("client_auth", &pair, format!("{}    client_auth: required\n", tls_gateway("certs/a.crt", "certs/a.key")), (8, 18), "`client_auth` needs `client_ca`"),
    ]);
}

#[test]
fn tls_loads_with_its_certificates() {
    let (a_cert, a_key) = certificate("a.test");
    let snapshot = loads(&[
        ("gateway.yaml", &tls_gateway("certs/a.crt", "certs/a.key")),
        ("certs/a.crt", &a_cert),
        ("certs/a.key", &a_key),
    ]);
    let tls = snapshot.server.tls.expect("server.tls is loaded");
    assert_eq!(tls.resolver.certificates()[0].names, ["a.test"]);
    assert_eq!(tls.files.len(), 2);
}
