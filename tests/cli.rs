//! The `gatehouse` binary as an operator runs it: exit codes, what goes to stdout and stderr,
//! and a real `run` that is probed by `healthcheck` and stopped by SIGTERM.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{
    command, config_dir, free_port, gatehouse, path_str, stderr, stdout, Running, DEADLINE,
};

const GATEWAY: &str = "server:\n  listen: 127.0.0.1:0\n";

const API_ROUTES: &str = "\
upstreams:
  orders:
    targets: [http://127.0.0.1:4003]
routes:
  - name: orders-read
    match:
      host: api.example.com
      path: /api/v1/orders
      methods: [GET]
      headers: {X-Tenant: acme}
    upstream: orders
    strip_prefix: /api/v1
  - name: orders-v2
    match: {host: api.example.com, path: /api/v2}
    upstream: orders
    rewrite: {prefix: /api/v2, to: /internal/v2}
  - name: hello
    match: {path_exact: /hello}
    respond: {status: 200, body: \"hi\\n\"}
";

#[test]
fn check_accepts_a_valid_config_with_one_summary_line() {
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/api.yaml", API_ROUTES)]);
    let config = dir.path().join("gateway.yaml");
    let output = gatehouse(&["check", "-c", path_str(&config)]);
    assert!(output.status.success(), "{output:?}");
    let out = stdout(&output);
    assert_eq!(out.lines().count(), 1, "one summary line: {out:?}");
    assert!(out.contains("ok"), "{out}");
    assert!(
        out.contains("2 file(s), 3 route(s), 1 upstream(s)"),
        "{out}"
    );
}

#[test]
fn check_prints_every_error_from_every_file_and_exits_1() {
    let gateway = format!("{GATEWAY}  idle_timeout: soon\n");
    let routes = "routes:\n  - name: r\n    match: {path: /r}\n    upstream: nowhere\n";
    let dir = config_dir(&[("gateway.yaml", &gateway), ("routes/a.yaml", routes)]);
    let config = dir.path().join("gateway.yaml");
    let output = gatehouse(&["check", "-c", path_str(&config)]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stdout(&output).is_empty(),
        "no summary for an invalid config: {output:?}"
    );
    let err = stderr(&output);
    let first = format!("{}:3:17: invalid duration \"soon\"", config.display());
    let second = format!(
        "{}:4:15: unknown upstream `nowhere`",
        dir.path().join("routes/a.yaml").display()
    );
    let at = |line: &str| {
        err.find(line)
            .unwrap_or_else(|| panic!("stderr lacks {line:?}:\n{err}"))
    };
    assert!(at(&first) < at(&second), "errors in file order:\n{err}");
}

#[test]
fn check_names_a_missing_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.yaml");
    let output = gatehouse(&["check", "-c", path_str(&missing)]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains(path_str(&missing)), "{output:?}");
}

#[test]
fn check_accepts_the_repository_config() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml");
    let output = command(&["check", "-c", path_str(&config)])
        .env_remove("GATEHOUSE_LISTEN")
        .env_remove("GATEHOUSE_LOG_FORMAT")
        .env_remove("GATEHOUSE_LOG_LEVEL")
        .output()
        .expect("run gatehouse");
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains("ok"), "{output:?}");
}

#[test]
fn version_comes_from_cargo_toml() {
    let output = gatehouse(&["--version"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout(&output).trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `gatehouse explain -c <dir>/gateway.yaml args...`, which must succeed; returns stdout.
fn explain(dir: &Path, args: &[&str]) -> String {
    let config = dir.join("gateway.yaml");
    let mut all = vec!["explain", "-c", path_str(&config)];
    all.extend(args);
    let output = gatehouse(&all);
    assert!(output.status.success(), "{output:?}");
    stdout(&output)
}

fn assert_lines(out: &str, expected: &[&str]) {
    for line in expected {
        assert!(
            out.lines().any(|l| l == *line),
            "missing line {line:?} in:\n{out}"
        );
    }
}

#[test]
fn explain_shows_how_a_request_is_forwarded() {
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/api.yaml", API_ROUTES)]);
    let routes_file = dir.path().join("routes/api.yaml");
    let url = "http://api.example.com/api/v1/../v1/orders/7?x=1";
    let out = explain(dir.path(), &["GET", url, "-H", "X-Tenant: acme"]);
    assert_lines(
        &out,
        &[
            "host:       api.example.com",
            "path:       /api/v1/orders/7 (normalised from /api/v1/../v1/orders/7)",
            &format!("route:      orders-read ({}:5)", routes_file.display()),
            "matched on: host api.example.com; path prefix /api/v1/orders; methods GET, HEAD; header x-tenant = \"acme\"",
            "would call: GET http://127.0.0.1:4003/orders/7?x=1",
            "result:     forwarded upstream",
        ],
    );

    let out = explain(
        dir.path(),
        &["GET", "http://api.example.com/api/v2/items?page=2"],
    );
    assert_lines(
        &out,
        &[
            &format!("route:      orders-v2 ({}:13)", routes_file.display()),
            "would call: GET http://127.0.0.1:4003/internal/v2/items?page=2",
        ],
    );
}

#[test]
fn explain_shows_the_answers_the_gateway_gives_itself() {
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/api.yaml", API_ROUTES)]);
    let routes_file = dir.path().join("routes/api.yaml");

    let out = explain(
        dir.path(),
        &["GET", "http://other.example.com/api/v1/orders"],
    );
    assert!(out.contains("result:     404 no_route"), "{out}");

    let out = explain(
        dir.path(),
        &[
            "POST",
            "http://api.example.com/api/v1/orders",
            "-H",
            "X-Tenant: acme",
        ],
    );
    assert_lines(&out, &["allow:      GET, HEAD"]);
    assert!(out.contains("result:     405 method_not_allowed"), "{out}");

    let out = explain(dir.path(), &["GET", "http://api.example.com/%2F"]);
    assert!(out.contains("result:     400 invalid_path"), "{out}");
    assert!(
        !out.contains("route:"),
        "a rejected path matches no route:\n{out}"
    );

    let out = explain(dir.path(), &["GET", "/hello"]);
    assert_lines(
        &out,
        &[
            &format!("route:      hello ({}:17)", routes_file.display()),
            "result:     200 answered by the gateway (3 byte body)",
        ],
    );
    assert!(!out.contains("would call"), "{out}");
}

fn serving_config(port: u16) -> tempfile::TempDir {
    let gateway = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  shutdown_grace: 5s\nlogging:\n  format: text\n  level: warn\n\
         routes:\n  - name: hello\n    match: {{path_exact: /hello}}\n    respond: {{body: hi}}\n"
    );
    config_dir(&[("gateway.yaml", &gateway)])
}

/// Runs `probe` until it passes, and returns its output; `None` when `running` exits first
/// because its port was taken after [`free_port`] chose it (any other early exit fails).
fn until_healthy(running: &mut Running, probe: impl Fn() -> Output) -> Option<Output> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = running.child.try_wait().expect("try_wait") {
            let log = running.stderr();
            assert!(
                log.contains("in use"),
                "gatehouse run exited early ({status}):\n{log}"
            );
            return None;
        }
        let output = probe();
        if output.status.success() {
            return Some(output);
        }
        assert!(
            Instant::now() < deadline,
            "healthcheck never passed; last: {output:?}\nlog:\n{}",
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `gatehouse run` and waits until `healthcheck` on the same config passes. The port is
/// free when chosen but may be taken before the child binds it, so a failed bind is retried.
fn start_healthy() -> (tempfile::TempDir, Running) {
    for _ in 0..3 {
        let dir = serving_config(free_port());
        let config = dir.path().join("gateway.yaml");
        let mut running = Running::spawn(&config, &[], &[]);
        let probe = || gatehouse(&["healthcheck", "-c", path_str(&config), "--timeout", "2"]);
        if until_healthy(&mut running, probe).is_some() {
            return (dir, running);
        }
    }
    panic!("could not bind a free port in three tries");
}

#[test]
fn run_serves_until_sigterm_then_exits_0() {
    let (_dir, mut running) = start_healthy();
    running.signal("TERM");
    let status = running.wait_until(Instant::now() + DEADLINE);
    let log = running.stderr();
    let status =
        status.unwrap_or_else(|| panic!("still running {DEADLINE:?} after SIGTERM:\n{log}"));
    assert_eq!(
        status.code(),
        Some(0),
        "an idle gateway drains cleanly:\n{log}"
    );
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = free_port();
    let dir = serving_config(port);
    let config = dir.path().join("gateway.yaml");
    let output = gatehouse(&["healthcheck", "-c", path_str(&config), "--timeout", "2"]);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        stderr(&output).contains(&format!("127.0.0.1:{port}")),
        "{output:?}"
    );
}

#[test]
fn explain_on_a_404_names_the_routes_that_nearly_matched() {
    let dir = config_dir(&[("gateway.yaml", GATEWAY), ("routes/api.yaml", API_ROUTES)]);
    let routes_file = dir.path().join("routes/api.yaml");

    // Right path, wrong host, method and header: every unmet condition is named.
    let out = explain(
        dir.path(),
        &[
            "POST",
            "http://other.example.com/api/v1/orders/7",
            "-H",
            "X-Tenant: globex",
        ],
    );
    assert!(out.contains("result:     404 no_route"), "{out}");
    assert_lines(
        &out,
        &[&format!(
            "near miss:  orders-read ({}:5) needs host api.example.com (request host: \
             other.example.com); methods GET, HEAD (request method: POST); header x-tenant = \
             \"acme\" (request has \"globex\")",
            routes_file.display()
        )],
    );

    // Only the header is missing: that one route, needing only it.
    let out = explain(dir.path(), &["GET", "http://api.example.com/api/v1/orders"]);
    assert_lines(
        &out,
        &[&format!(
            "near miss:  orders-read ({}:5) needs header x-tenant = \"acme\" (request has none)",
            routes_file.display()
        )],
    );
    assert_eq!(out.matches("near miss:").count(), 1, "{out}");

    // A typo in the path, like a misspelt name: the closest route is suggested.
    let out = explain(dir.path(), &["GET", "http://localhost/helo"]);
    assert_lines(
        &out,
        &[&format!(
            "near miss:  hello ({}:17) needs exact path /hello (request path: /helo)",
            routes_file.display()
        )],
    );

    // Nothing close: said so, rather than a list of unrelated routes.
    let out = explain(dir.path(), &["GET", "http://localhost/zzz"]);
    assert_lines(
        &out,
        &["near miss:  none (no route matches this path, even nearly)"],
    );
}

#[test]
fn healthcheck_reads_only_the_listen_address_and_prints_ok() {
    const SECRET_VAR: &str = "GATEHOUSE_TEST_HC_JWT_SECRET";
    const PORT_VAR: &str = "GATEHOUSE_TEST_HC_ADMIN_PORT";
    let secret = "a-secret-that-is-long-enough-for-hs256-tokens";
    // The provider's secret comes from a variable healthcheck does not have; the admin port
    // from one it does.
    for _ in 0..3 {
        let (main_port, admin_port) = (free_port(), free_port());
        let gateway = format!(
            "server:\n  listen: 127.0.0.1:{main_port}\n  shutdown_grace: 5s\n\
             admin:\n  listen: \"127.0.0.1:${{{PORT_VAR}}}\"\n\
             logging:\n  format: text\n  level: warn\n\
             jwt:\n  providers:\n    default:\n      algorithms: [HS256]\n      secret: ${{{SECRET_VAR}}}\n\
             routes:\n  - name: hello\n    match: {{path_exact: /hello}}\n    respond: {{body: hi}}\n    auth: {{jwt: default}}\n"
        );
        let dir = config_dir(&[("gateway.yaml", &gateway)]);
        let config = dir.path().join("gateway.yaml");
        let admin = admin_port.to_string();
        let env = [(SECRET_VAR, secret), (PORT_VAR, admin.as_str())];
        let mut running = Running::spawn(&config, &[], &env);
        let probe = |with_port: bool| {
            let mut probe = command(&["healthcheck", "-c", path_str(&config), "--timeout", "2"]);
            probe.env_remove(SECRET_VAR).env_remove(PORT_VAR);
            if with_port {
                probe.env(PORT_VAR, &admin);
            }
            probe.output().expect("run healthcheck")
        };
        let healthy = until_healthy(&mut running, || probe(true));
        let Some(output) = healthy else {
            continue; // a port was taken before the gateway bound it
        };
        assert_eq!(stdout(&output), "ok\n", "{output:?}");

        // Without the variable the admin address needs, it does not guess: it names it.
        let output = probe(false);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(stdout(&output).is_empty(), "{output:?}");
        assert!(
            stderr(&output).contains(&format!("admin.listen: environment variable {PORT_VAR}")),
            "{output:?}"
        );
        return;
    }
    panic!("could not bind free ports in three tries");
}

#[test]
fn explain_shows_the_rate_limits_that_apply_and_their_keys() {
    let gateway = "server:\n  listen: 127.0.0.1:0\nroutes:\n  - name: limited\n    \
                   match: {path: /limited}\n    respond: {body: hi}\n    rate_limit:\n      \
                   - {by: ip, limit: 10, per: 1m}\n      \
                   - {by: user, limit: 100, per: 1m, burst: 20}\n      \
                   - {by: 'header:X-Api-Key', limit: 5, per: 1s}\n      \
                   - {by: route, limit: 1000, per: 1m30s}\n";
    let dir = config_dir(&[("gateway.yaml", gateway)]);
    let address = "the client address (X-Forwarded-For believed only from trusted_proxies)";
    let out = explain(
        dir.path(),
        &["GET", "/limited", "-H", "X-Api-Key: secret-key-1"],
    );
    assert_lines(
        &out,
        &[
            "rate limits: 4 limit(s), store memory (this instance); all apply, the strictest decides",
            &format!("  limit:    ip: 10 per 1m -> key: {address}"),
            &format!("  limit:    user: 100 per 1m, burst 20 -> key: anonymous: {address}"),
            "  limit:    header:x-api-key: 5 per 1s -> key: the request's x-api-key value (not shown)",
            "  limit:    route: 1000 per 1m30s -> key: one bucket for the whole route",
        ],
    );
    assert!(
        !out.contains("secret-key-1"),
        "header values are not printed:\n{out}"
    );
    let out = explain(dir.path(), &["GET", "/limited"]);
    assert_lines(
        &out,
        &[&format!(
            "  limit:    header:x-api-key: 5 per 1s -> key: no x-api-key header: {address}"
        )],
    );
}

#[test]
fn explain_prints_the_cache_key_a_request_would_use() {
    let gateway = "server:\n  listen: 127.0.0.1:0\ncache:\n  key_prefix: 'edge:'\n\
                   jwt:\n  providers:\n    p:\n      algorithms: [HS256]\n      \
                   secret: explain-secret-explain-secret-explain!\n\
                   upstreams:\n  a:\n    targets: [http://127.0.0.1:1]\nroutes:\n  - name: items\n    \
                   match: {path: /items}\n    upstream: a\n    auth: {jwt: p, optional: true}\n    \
                   cache: {ttl: 45s, vary: [Accept-Language], stale_if_error: 2m}\n";
    let dir = config_dir(&[("gateway.yaml", gateway)]);
    let out = explain(
        dir.path(),
        &["GET", "http://API.example.com:8080/items/../items/7?page=2"],
    );
    assert_lines(
        &out,
        &[
            "cache:      store memory (this instance); ttl 45s when the response states no freshness; stale_if_error 2m",
            "  key:      edge:api.example.com/items/7?page=2",
            "  variants: by accept-language, the caller's sub (per_user), the request headers the response's own Vary names",
        ],
    );
    let out = explain(dir.path(), &["DELETE", "http://api.example.com/items/7"]);
    assert_lines(
        &out,
        &["  DELETE:    not cached; a 2xx or 3xx answer invalidates edge:api.example.com/items/7"],
    );
}

#[test]
fn explain_says_whether_a_request_would_be_compressed() {
    let gateway = "server:\n  listen: 127.0.0.1:0\nupstreams:\n  a:\n    targets: [http://127.0.0.1:1]\n\
                   routes:\n  - name: docs\n    match: {path: /docs}\n    upstream: a\n    compress: true\n";
    let dir = config_dir(&[("gateway.yaml", gateway)]);
    let out = explain(
        dir.path(),
        &["GET", "/docs/a", "-H", "Accept-Encoding: gzip;q=0.5, br"],
    );
    assert_lines(
        &out,
        &["compress:   gzip or br for compressible answers the upstream did not encode; this request accepts br"],
    );
    let out = explain(dir.path(), &["GET", "/docs/a"]);
    assert_lines(
        &out,
        &["compress:   gzip or br for compressible answers the upstream did not encode; this request gets identity (no acceptable coding)"],
    );
}
