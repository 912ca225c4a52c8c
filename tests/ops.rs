//! Operations: /readyz, /metrics, access logs, SIGHUP and graceful shutdown, on an in-process
//! gateway and on the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::Request;
use http_body_util::Full;

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_status_and_upstream_outcome() {
    let upstream = EchoUpstream::start("u").await;
    let config = format!(
        "{}upstreams:\n  u:\n    targets: [{}]\n  down:\n    targets: [http://127.0.0.1:1]\n\
         routes:\n  - name: api\n    match: {{path: /api}}\n    upstream: u\n    strip_prefix: /api\n\
         \x20 - name: hello\n    match: {{path_exact: /hello}}\n    respond: {{body: hi}}\n\
         \x20 - name: down\n    match: {{path: /down}}\n    upstream: down\n",
        server_yaml(""),
        upstream.url(),
    );
    let gw = TestGateway::start(&config).await;
    let client = client();
    for _ in 0..3 {
        let got = send(
            &client,
            Request::get(gw.url("/api/x?q=1"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(get(&gw.url("/hello")).await.status, 200);
    assert_eq!(get(&gw.url("/nope/secret-path")).await.status, 404);
    assert_eq!(get(&gw.url("/down")).await.status, 502);
    let put = Request::builder()
        .method("BREW")
        .uri(gw.url("/hello"))
        .body(Full::default())
        .unwrap();
    send(&client, put).await;

    let expected = [
        r#"gatehouse_requests_total{route="api",method="GET",status="2xx"} 3"#,
        r#"gatehouse_requests_total{route="hello",method="GET",status="2xx"} 1"#,
        r#"gatehouse_requests_total{route="hello",method="OTHER",status="2xx"} 1"#,
        r#"gatehouse_requests_total{route="_unmatched",method="GET",status="4xx"} 1"#,
        r#"gatehouse_requests_total{route="down",method="GET",status="5xx"} 1"#,
        r#"gatehouse_upstream_requests_total{upstream="u",outcome="response"} 3"#,
        r#"gatehouse_upstream_requests_total{upstream="down",outcome="connect_error"} 1"#,
        r#"gatehouse_request_duration_seconds_count{route="api"} 3"#,
        r#"gatehouse_upstream_duration_seconds_count{upstream="u"} 3"#,
        "gatehouse_config_version 1",
    ];
    // Requests are counted when their response body is finished, just after the client has it.
    let url = gw.url("/metrics");
    eventually("all requests counted", || async {
        let text = get(&url).await.text();
        expected.iter().all(|line| text.lines().any(|l| l == *line))
    })
    .await;
    let text = get(&url).await.text();
    assert!(
        text.contains(&format!(
            "gatehouse_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        sample(&text, "gatehouse_open_connections").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "gatehouse_requests_in_flight").is_some(),
        "{text}"
    );
    assert!(
        !text.contains("secret-path") && !text.contains("q=1"),
        "no raw paths:\n{text}"
    );
    promtool_check(&text);
}

/// `promtool check metrics` when it is installed (the test command installs it).
fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed; skipped the exposition-format lint");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n{text}"
    );
}

#[tokio::test]
async fn readyz_reports_the_config_and_turns_503_while_draining() {
    let upstream = EchoUpstream::start("u").await;
    let config = format!(
        "{}admin:\n  listen: 127.0.0.1:0\nupstreams:\n  u:\n    targets: [{}]\nroutes:\n  - name: all\n    match: {{path: /}}\n    upstream: u\n",
        server_yaml("shutdown_grace: 20s"),
        upstream.url()
    );
    let gw = TestGateway::start(&config).await;
    let admin = gw.handle.admin_addr().expect("admin listener");
    let readyz_url = format!("http://{admin}/readyz");
    let ready = get(&readyz_url).await;
    assert_eq!(ready.status, 200);
    let body = ready.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["config"]["version"], 1);
    assert_eq!(
        body["config"]["hash"],
        gw.handle.snapshot().content_hash.as_str()
    );
    assert!(
        body["config"]["loaded_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    assert_eq!(
        body["upstreams"]["u"]["targets"][0],
        upstream.url().as_str(),
        "{body}"
    );
    // Built-in endpoints live only on the admin listener when it is set.
    assert_eq!(get(&gw.url("/readyz")).await.echo().target, "/readyz");

    let slow_url = gw.url("/slow/1500");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    eventually("slow request reached the upstream", || async {
        upstream.requests() >= 2
    })
    .await;
    let addr = gw.addr;
    let shutdown = tokio::spawn(gw.handle.shutdown(None));
    eventually("readyz 503 while draining", || async {
        let got = get(&readyz_url).await;
        got.status == 503 && got.json()["status"] == "draining"
    })
    .await;
    eventually("main listener refuses new connections", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let slow = within(slow).await.unwrap();
    assert_eq!(slow.status, 200, "the in-flight request finished");
    assert_eq!(
        within(shutdown).await.unwrap(),
        gatehouse::server::ShutdownOutcome::Drained
    );
}

#[tokio::test]
async fn sigterm_finishes_the_slow_request_refuses_new_ones_and_exits_0() {
    let upstream = EchoUpstream::start("u").await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:PORT\n  shutdown_grace: 20s\nlogging:\n  format: json\n  level: info\n  access_log: true\n\
         upstreams:\n  u:\n    targets: [{}]\nroutes:\n  - name: all\n    match: {{path: /}}\n    upstream: u\n",
        upstream.url()
    );
    let mut gw = GatehouseProcess::start(&config, &[]).await;

    let slow_url = gw.url("/slow/1500?token=query-secret");
    let slow = tokio::spawn(async move {
        let request = Request::post(slow_url)
            .header("authorization", "Bearer header-secret")
            .header("cookie", "session=cookie-secret")
            .body(Full::new(bytes::Bytes::from_static(b"0123456789")))
            .unwrap();
        send(&client(), request).await
    });
    eventually("slow request reached the upstream", || async {
        upstream.requests() >= 1
    })
    .await;
    gw.signal("TERM");
    let addr = gw.addr;
    eventually("new connections refused", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let slow = within(slow).await.unwrap();
    assert_eq!(slow.status, 200, "in-flight request completed");
    let request_id = slow.header("x-request-id").unwrap().to_string();
    let status = gw.wait_exit().await;
    assert_eq!(status.code(), Some(0));

    let log = gw.stdout();
    for secret in ["query-secret", "header-secret", "cookie-secret"] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
    let lines = gw.log_lines();
    let access = lines
        .iter()
        .find(|l| l["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no access line for {request_id}:\n{log}"));
    assert_eq!(access["target"], "gatehouse::access", "{access}");
    assert_eq!(access["method"], "POST");
    assert_eq!(access["path"], "/slow/1500");
    assert_eq!(access["route"], "all");
    assert_eq!(access["upstream"], upstream.url().as_str());
    assert_eq!(access["status"], 200);
    assert_eq!(access["client_ip"], "127.0.0.1");
    assert_eq!(access["bytes_in"], 10);
    assert!(access["bytes_out"].as_u64().unwrap() > 0, "{access}");
    assert!(
        access["duration_ms"].as_f64().unwrap() >= 1000.0,
        "{access}"
    );
    assert!(
        access["upstream_ms"].as_f64().unwrap() >= 1000.0,
        "{access}"
    );
    assert_eq!(access["completed"], true);
    assert!(access["timestamp"].is_string(), "{access}");
}

#[tokio::test]
async fn sighup_reloads_when_file_watching_is_off() {
    let config = "server:\n  listen: 127.0.0.1:PORT\nlogging:\n  level: warn\n\
                  routes:\n  - name: a\n    match: {path_exact: /a}\n    respond: {body: one}\n";
    let mut gw = GatehouseProcess::start(config, &["--no-watch"]).await;
    assert_eq!(get(&gw.url("/a")).await.text(), "one");
    let port = gw.addr.port();
    std::fs::write(
        gw.config_path(),
        config
            .replace("PORT", &port.to_string())
            .replace("body: one", "body: two"),
    )
    .unwrap();
    gw.signal("HUP");
    let url = gw.url("/a");
    eventually("reloaded on SIGHUP", || async {
        get(&url).await.text() == "two"
    })
    .await;
    let ready = get(&gw.url("/readyz")).await.json();
    assert_eq!(ready["config"]["version"], 2, "{ready}");
    gw.signal("TERM");
    assert_eq!(gw.wait_exit().await.code(), Some(0));
}

/// A panic while serving one request closes that connection only: other HTTP/1.1 and HTTP/2
/// connections carry on, the panic is logged and counted, and the process keeps running.
#[tokio::test]
async fn a_panic_while_serving_closes_only_its_own_connection() {
    use tokio::io::AsyncWriteExt;
    let upstream = EchoUpstream::start("u").await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:PORT\nlogging:\n  format: json\n  level: info\n\
         upstreams:\n  u:\n    targets: [{}]\nroutes:\n  - name: all\n    match: {{path: /}}\n    upstream: u\n",
        upstream.url()
    );
    // The failpoint exists in debug builds only, which is what tests run.
    let mut gw =
        GatehouseProcess::start_env(&config, &[], &[("GATEHOUSE_DEBUG_PANIC_PATH", "/boom")]).await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");

    let mut bystander = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    bystander
        .write_all(request("/ok").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut bystander).await.0, 200);

    let mut victim = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    victim.write_all(request("/boom").as_bytes()).await.unwrap();
    wait_for_close(&mut victim).await;

    // The connection opened before the panic still serves, and new ones are accepted.
    bystander
        .write_all(request("/ok").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut bystander).await.0, 200);
    assert_eq!(get(&gw.url("/ok")).await.status, 200);

    // HTTP/2: the stream that panicked is reset; the connection's other streams carry on.
    let h2 = h2c_client();
    let boom =
        within(h2.request(Request::get(gw.url("/boom")).body(Full::default()).unwrap())).await;
    assert!(boom.is_err(), "a panicked stream got a response: {boom:?}");
    let ok = send(
        &h2,
        Request::get(gw.url("/ok")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);

    assert!(gw.child.try_wait().unwrap().is_none(), "the gateway exited");
    let metrics = get(&gw.url("/metrics")).await.text();
    assert!(
        metrics.lines().any(|l| l == "gatehouse_panics_total 2"),
        "panics not counted:\n{metrics}"
    );
    // The panicked connections are no longer counted as open: only the scrape's own is left.
    drop((bystander, h2));
    eventually("open connections back to the scrape's own", || async {
        let metrics = get(&gw.url("/metrics")).await.text();
        metrics.lines().any(|l| l == "gatehouse_open_connections 1")
    })
    .await;
    eventually("both panics logged", || async {
        gw.log_lines()
            .iter()
            .filter(|l| {
                l["panic"]
                    .as_str()
                    .is_some_and(|p| p.contains("debug failpoint reached for /boom"))
            })
            .count()
            == 2
    })
    .await;
}

/// The JSON log lines whose message starts with `message`.
fn lines_starting(lines: &[serde_json::Value], message: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn startup_sighup_and_upstream_failures_log_readable_lines() {
    let refusing = RefusingPort::new();
    let dead = refusing.port;
    let config = format!(
        "server:\n  listen: 127.0.0.1:PORT\nadmin:\n  listen: 127.0.0.1:0\n\
         logging:\n  format: json\n  level: info\n\
         upstreams:\n  down:\n    targets: [http://127.0.0.1:{dead}]\n\
         routes:\n  - name: a\n    match: {{path_exact: /a}}\n    respond: {{body: one}}\n\
         \x20 - name: down\n    match: {{path: /down}}\n    upstream: down\n\
         \x20 - name: health\n    match: {{path_exact: /health}}\n    respond: {{body: ok}}\n"
    );
    // With admin.listen, /health moves there; the `health` route answers on the main listener,
    // where GatehouseProcess::start waits for it.
    let mut gw = GatehouseProcess::start(&config, &["--no-watch"]).await;
    let written = std::fs::read_to_string(gw.config_path()).unwrap();

    // Waits for a line to appear: the logger writes from a background thread.
    async fn logged(gw: &GatehouseProcess, message: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let found = lines_starting(&gw.log_lines(), message);
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {message:?}:\n{}",
                gw.stdout()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let listening = logged(&gw, "gatehouse listening", 1).await;
    let admin = listening[0]["admin"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (ip, port) = admin.split_once(':').unwrap_or_default();
    assert!(
        ip == "127.0.0.1" && port.parse::<u16>().is_ok_and(|p| p != 0),
        "admin is the bound address: {}",
        listening[0]
    );

    // SIGHUP with nothing changed still says what it did.
    gw.signal("HUP");
    let unchanged = logged(&gw, "config files unchanged", 1).await;
    assert_eq!(unchanged[0]["trigger"], "SIGHUP", "{}", unchanged[0]);

    // A broken edit is rejected; putting the running file back is a recovery, logged so.
    std::fs::write(gw.config_path(), written.replace("respond:", "respnd:")).unwrap();
    gw.signal("HUP");
    let rejected = logged(&gw, "config reload rejected", 1).await;
    assert_eq!(rejected[0]["trigger"], "SIGHUP", "{}", rejected[0]);
    assert_eq!(rejected[0]["level"], "ERROR", "{}", rejected[0]);
    std::fs::write(gw.config_path(), &written).unwrap();
    gw.signal("HUP");
    let reloaded = logged(&gw, "config reloaded", 1).await;
    assert_eq!(reloaded[0]["trigger"], "SIGHUP", "{}", reloaded[0]);
    assert_eq!(reloaded[0]["level"], "INFO", "{}", reloaded[0]);
    assert_eq!(get(&gw.url("/a")).await.text(), "one");

    // The cause of an upstream failure appears once, not once per layer that carries it.
    assert_eq!(get(&gw.url("/down")).await.status, 502);
    let failed = logged(&gw, "upstream request failed", 1).await;
    let error = failed[0]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains(&format!("127.0.0.1:{dead}")),
        "{}",
        failed[0]
    );
    let parts: Vec<&str> = error.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "`{part}` repeated in one line: {error}"
        );
    }

    gw.signal("TERM");
    assert_eq!(gw.wait_exit().await.code(), Some(0));
}

/// Every metric family /metrics exposes, with its type, from the `# TYPE` lines.
fn exposed_families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn the_readme_metrics_table_lists_every_exported_family() {
    let upstream = EchoUpstream::start("u").await;
    // An HTTPS listener, for the certificate expiry family.
    let certs = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
    std::fs::write(certs.path().join("a.crt"), made.cert.pem()).unwrap();
    std::fs::write(certs.path().join("a.key"), made.signing_key.serialize_pem()).unwrap();
    let tls = format!(
        "tls:\n  listen: 127.0.0.1:0\n  certificates:\n    - cert: {0}/a.crt\n      key: {0}/a.key\n",
        certs.path().display()
    );
    let config = format!(
        "{}jwt:\n  providers:\n    default:\n      algorithms: [HS256]\n      secret: ${{JWT_SECRET}}\n\
         \x20   idp:\n      algorithms: [ES256]\n      jwks_url: {}/jwks\n\
         upstreams:\n  u:\n    targets: [{}]\n    health_check: {{path: /health}}\n    circuit_breaker: {{open_for: 30s}}\n\
         routes:\n  - name: api\n    match: {{path: /api}}\n    upstream: u\n    compress: true\n\
         \x20   cache: {{ttl: 30s}}\n\
         \x20 - name: private\n    match: {{path: /private}}\n    upstream: u\n    auth: {{jwt: default}}\n\
         \x20 - name: limited\n    match: {{path: /limited}}\n    upstream: u\n\
         \x20   rate_limit: [{{by: ip, limit: 100, per: 1m}}]\n",
        server_yaml(&tls),
        upstream.url(),
        upstream.url(),
    );
    // The `idp` provider's jwks_url answers with something that is not a JWKS: its fetch
    // fails, which is traffic for the jwks families too.
    let secret = "a-secret-that-is-long-enough-for-hs256-tokens";
    let gw = TestGateway::start_with(&config, &[], &[("JWT_SECRET", secret)]).await;
    assert_eq!(get(&gw.url("/api/x")).await.status, 200);
    assert_eq!(get(&gw.url("/private")).await.status, 401);
    assert_eq!(get(&gw.url("/nowhere")).await.status, 404);
    assert_eq!(get(&gw.url("/limited")).await.status, 200);
    // An upgrade the echo upstream does not take (gatehouse_upgrades_total).
    let upgrade =
        "GET /api/ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, upgrade.as_bytes())
        .await
        .unwrap();
    assert_eq!(common::read_response(&mut stream).await.0, 200);
    gw.handle.reload().await;
    let text = get(&gw.url("/metrics")).await.text();
    let families = exposed_families(&text);
    assert!(families.len() >= 10, "too few families parsed:\n{text}");

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    // Rows of the metrics table: | `name` | type | labels |
    let rows: Vec<(String, String)> = readme
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix("| `gatehouse_")?.split('|');
            let name = format!("gatehouse_{}", cells.next()?.trim().trim_end_matches('`'));
            Some((name, cells.next()?.trim().to_string()))
        })
        .collect();
    for (name, kind) in &families {
        let row = rows.iter().find(|(n, _)| n == name);
        assert!(
            row.is_some_and(|(_, k)| k == kind),
            "README's metrics table needs a row `| `{name}` | {kind} | ... |` (has {row:?})"
        );
    }
    for (name, _) in &rows {
        assert!(
            families.iter().any(|(n, _)| n == name),
            "README lists `{name}`, which /metrics does not expose"
        );
    }
}
