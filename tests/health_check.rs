//! Active health checks (upstream `health_check`) against real origins whose `/health` the test
//! switches between 200, 500, slow and gone: targets leave the rotation and come back, all
//! unhealthy is a 503, `/readyz` and the metrics show it, and reloads keep or stop the checks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::origin::{Answer, Origin};
use common::{eventually, get, metric, server_yaml, RefusingPort, TestGateway};

/// Probes every 100 ms, each allowed 100 ms; 2 failures take a target out, 2 successes bring it
/// back.
const HEALTH: &str = "{path: /health, interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2}";

/// Upstream `o` over `targets` with [`HEALTH`], and route `/lb` to it.
fn config(targets: &[String], health: &str, extra_routes: &str) -> String {
    format!(
        "{}upstreams:\n  o:\n    targets: [{}]\n    health_check: {health}\n\
         routes:\n  - name: r\n    match: {{path: /lb}}\n    upstream: o\n{extra_routes}",
        server_yaml(""),
        targets.join(", ")
    )
}

/// An origin answering `/health` with 200 and `/lb` with `name`.
async fn origin(name: &str) -> Origin {
    let origin = Origin::start().await;
    origin.set("/health", Answer::ok("ok", &[]));
    origin.set("/lb", Answer::ok(name, &[]));
    origin
}

/// `/readyz`'s `unhealthy` list for upstream `o`.
async fn unhealthy(gw: &TestGateway) -> Vec<String> {
    let ready = get(&gw.url("/readyz")).await.json();
    assert_eq!(ready["upstreams"]["o"]["health"], "checked", "{ready}");
    serde_json::from_value(ready["upstreams"]["o"]["unhealthy"].clone()).expect("a list")
}

async fn healthy_gauge(gw: &TestGateway, target: &Origin) -> f64 {
    let series = format!(
        r#"gatehouse_upstream_target_healthy{{upstream="o",target="{}"}}"#,
        target.url()
    );
    metric(gw, &series).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_leaves_the_rotation_and_comes_back() {
    let (a, b) = (origin("a").await, origin("b").await);
    let gw = TestGateway::start(&config(&[a.url(), b.url()], HEALTH, "")).await;
    eventually("both targets probed", || async {
        a.count("/health") > 0 && b.count("/health") > 0
    })
    .await;
    assert_eq!(healthy_gauge(&gw, &b).await, 1.0);

    b.set("/health", Answer::status(500, "down", &[]));
    let before = b.count("/health");
    eventually("b listed unhealthy", || async {
        unhealthy(&gw).await == [b.url()]
    })
    .await;
    assert!(
        b.count("/health") - before >= 2,
        "out only after unhealthy_threshold failed probes"
    );
    assert_eq!(healthy_gauge(&gw, &b).await, 0.0);
    let failed = format!(
        r#"gatehouse_health_checks_total{{upstream="o",target="{}",result="failed"}}"#,
        b.url()
    );
    assert!(metric(&gw, &failed).await >= 2.0);

    let to_b = b.count("/lb");
    for _ in 0..20 {
        let got = get(&gw.url("/lb")).await;
        assert_eq!((got.status.as_u16(), got.text()), (200, "a".to_string()));
    }
    assert_eq!(b.count("/lb"), to_b, "an unhealthy target gets no traffic");

    b.set("/health", Answer::ok("ok", &[]));
    let before = b.count("/health");
    eventually("b readmitted", || async { unhealthy(&gw).await.is_empty() }).await;
    assert!(
        b.count("/health") - before >= 2,
        "back only after healthy_threshold good probes"
    );
    assert_eq!(healthy_gauge(&gw, &b).await, 1.0);
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(get(&gw.url("/lb")).await.text());
    }
    assert!(answers.iter().any(|t| t == "b"), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_gone_and_refusing_targets_leave_and_all_unhealthy_is_a_503() {
    let (slow, gone) = (origin("slow").await, origin("gone").await);
    let refusing = RefusingPort::new();
    let refusing_url = format!("http://127.0.0.1:{}", refusing.port);
    let targets = [slow.url(), gone.url(), refusing_url.clone()];
    let gw = TestGateway::start(&config(&targets, HEALTH, "")).await;
    // Beyond the probe's timeout, though the answer is a 200.
    slow.set(
        "/health",
        Answer::ok("ok", &[]).after(Duration::from_secs(2)),
    );
    // Accepts and closes at once, as a crashed process behind a live port would.
    gone.stop();
    eventually("every target listed unhealthy", || async {
        let mut out = unhealthy(&gw).await;
        out.sort();
        let mut all = targets.to_vec();
        all.sort();
        out == all
    })
    .await;

    let got = get(&gw.url("/lb")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), Some("1"));
    assert_eq!(got.json()["error"], "no_healthy_upstream", "{}", got.text());
    assert_eq!(slow.count("/lb"), 0, "no fail-open to unhealthy targets");
}

/// A stale cache entry still answers while every target is out: the 503 counts as an upstream
/// failure for `stale_if_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_while_no_target_is_healthy() {
    let a = origin("a").await;
    a.set(
        "/c/s",
        Answer::ok("kept", &[("cache-control", "max-age=1")]),
    );
    let cached =
        "  - name: c\n    match: {path: /c}\n    upstream: o\n    cache: {stale_if_error: 60s}\n";
    let gw = TestGateway::start(&config(&[a.url()], HEALTH, cached)).await;
    assert_eq!(get(&gw.url("/c/s")).await.text(), "kept");
    a.set("/health", Answer::status(503, "down", &[]));
    eventually("a listed unhealthy", || async {
        unhealthy(&gw).await == [a.url()]
    })
    .await;
    eventually("the entry served stale", || async {
        let got = get(&gw.url("/c/s")).await;
        got.header("x-cache") == Some("STALE")
    })
    .await;
    let stale = get(&gw.url("/c/s")).await;
    assert_eq!((stale.status.as_u16(), stale.text()), (200, "kept".into()));
    let uncached = get(&gw.url("/lb")).await;
    assert_eq!(uncached.json()["error"], "no_healthy_upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_upstreams_health_and_restarts_a_changed_one() {
    let (a, b) = (origin("a").await, origin("b").await);
    let targets = [a.url(), b.url()];
    let gw = TestGateway::start(&config(&targets, HEALTH, "")).await;
    b.set("/health", Answer::status(500, "down", &[]));
    eventually("b listed unhealthy", || async {
        unhealthy(&gw).await == [b.url()]
    })
    .await;
    let checker = |gw: &TestGateway| {
        Arc::clone(
            gw.handle.snapshot().upstreams[0]
                .health
                .as_ref()
                .expect("checked"),
        )
    };
    let before = checker(&gw);

    // Another route: the upstream is unchanged.
    let more = "  - name: other\n    match: {path: /other}\n    respond: {body: x}\n";
    std::fs::write(gw.path("gateway.yaml"), config(&targets, HEALTH, more)).unwrap();
    gw.handle.reload().await;
    eventually("the new route live", || async {
        get(&gw.url("/other")).await.status == 200
    })
    .await;
    let kept = checker(&gw);
    assert!(Arc::ptr_eq(&before, &kept), "the same checker and task");
    // A fresh checker would start with every target healthy; this one needs no probe to know.
    assert!(!kept.is_healthy(1));
    assert_eq!(unhealthy(&gw).await, [b.url()]);
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/lb")).await.text(), "a");
    }

    // A changed interval makes a new checker, with its own task.
    let changed = HEALTH.replace("interval: 100ms", "interval: 150ms");
    std::fs::write(gw.path("gateway.yaml"), config(&targets, &changed, more)).unwrap();
    gw.handle.reload().await;
    eventually("the changed checker live", || async {
        !Arc::ptr_eq(&before, &checker(&gw))
    })
    .await;
    assert_eq!(checker(&gw).settings().interval, Duration::from_millis(150));
    drop((before, kept));
    // The new checker probes too, and finds b failing on its own.
    eventually("b out again", || async {
        unhealthy(&gw).await == [b.url()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_upstream_stops_its_probes() {
    let (a, c) = (origin("a").await, origin("c").await);
    let checked = format!(
        "  c:\n    targets: [{}]\n    health_check: {HEALTH}\n",
        c.url()
    );
    let yaml = |with_c: bool| {
        format!(
            "{}upstreams:\n  o:\n    targets: [{}]\n{}routes:\n  - name: r\n    match: {{path: /lb}}\n    upstream: o\n{}",
            server_yaml(""),
            a.url(),
            if with_c { checked.as_str() } else { "" },
            if with_c {
                "  - name: rc\n    match: {path: /c}\n    upstream: c\n"
            } else {
                ""
            }
        )
    };
    let gw = TestGateway::start(&yaml(true)).await;
    eventually("c probed", || async { c.count("/health") >= 2 }).await;
    let series = format!(
        r#"gatehouse_upstream_target_healthy{{upstream="c",target="{}"}}"#,
        c.url()
    );
    assert!(get(&gw.url("/metrics")).await.text().contains(&series));

    std::fs::write(gw.path("gateway.yaml"), yaml(false)).unwrap();
    gw.handle.reload().await;
    eventually("the route to c gone", || async {
        get(&gw.url("/c")).await.status == 404
    })
    .await;
    // Probes every 100 ms: none for 500 ms means the task has ended (a probe in flight at
    // the reload may still land first).
    eventually("c's probes stopped", || async {
        let seen = c.count("/health");
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.count("/health") == seen
    })
    .await;
    assert_eq!(
        gw.handle.state().registries.health.len(),
        0,
        "the registry forgot c's checker"
    );
    assert!(!get(&gw.url("/metrics")).await.text().contains(&series));
}

/// Outlier detection's "all ejected, all serve" rule applies among the healthy targets only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_never_brings_back_an_unhealthy_target() {
    let (a, b) = (origin("a").await, origin("b").await);
    let yaml = config(&[a.url(), b.url()], HEALTH, "").replace(
        "    health_check:",
        "    outlier_detection: {consecutive_failures: 1, max_ejected_percent: 100}\n    health_check:",
    );
    let gw = TestGateway::start(&yaml).await;
    a.set("/health", Answer::status(500, "down", &[]));
    eventually("a listed unhealthy", || async {
        unhealthy(&gw).await == [a.url()]
    })
    .await;
    // b fails real traffic: ejected after one failure, leaving no healthy target in.
    b.set("/lb", Answer::status(503, "b failing", &[]));
    assert_eq!(get(&gw.url("/lb")).await.status, 503);
    let ready = get(&gw.url("/readyz")).await.json();
    assert_eq!(
        ready["upstreams"]["o"]["ejected"],
        serde_json::json!([b.url()]),
        "{ready}"
    );
    for _ in 0..6 {
        let got = get(&gw.url("/lb")).await;
        assert_eq!(
            got.text(),
            "b failing",
            "the ejected healthy target serves, not the unhealthy one"
        );
    }
    assert_eq!(a.count("/lb"), 0);
}
